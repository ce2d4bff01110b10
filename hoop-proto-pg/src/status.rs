//! ParameterStatus, BackendKeyData, ReadyForQuery, NegotiateProtocolVersion (B)
//!
//! Session-level status the server reports: run-time parameters, the cancel
//! key, readiness with the transaction status, and protocol negotiation.

use super::wire::{MessageBuilder, MessageError, Reader};
use bytes::Bytes;

/// ParameterStatus (B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterStatus<'a> {
    /// Parameter name.
    pub name: &'a str,
    /// Its current value.
    pub value: &'a str,
}

impl<'a> ParameterStatus<'a> {
    /// Parses a ParameterStatus body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let name = r.cstr("ParameterStatus name")?;
        let value = r.cstr("ParameterStatus value")?;
        r.finish("ParameterStatus")?;
        Ok(Self { name, value })
    }
}

/// BackendKeyData (B): the key a client uses to cancel this backend's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKeyData<'a> {
    /// The backend's process id.
    pub pid: i32,
    /// The secret (4 bytes in protocol 3.0, up to 256 in 3.2).
    pub secret: &'a [u8],
}

impl<'a> BackendKeyData<'a> {
    /// Parses a BackendKeyData body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let pid = r.i32("BackendKeyData pid")?;
        let secret = r.rest();
        if secret.len() < 4 || secret.len() > 256 {
            return Err(MessageError::InvalidLength {
                field: "BackendKeyData secret",
                value: secret.len() as i64,
            });
        }
        Ok(Self { pid, secret })
    }
}

/// The transaction status in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    #[default]
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (statements rejected until rollback).
    Failed,
}

impl TransactionStatus {
    /// The status byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }
}

/// ReadyForQuery (B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyForQuery {
    /// Transaction status.
    pub status: TransactionStatus,
}

impl ReadyForQuery {
    /// Parses a ReadyForQuery body.
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let status = match r.u8("ReadyForQuery status")? {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            other => {
                return Err(MessageError::InvalidValue {
                    field: "ReadyForQuery status",
                    value: i64::from(other),
                });
            }
        };
        r.finish("ReadyForQuery")?;
        Ok(Self { status })
    }

    /// Encodes a ReadyForQuery.
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(b'Z');
        b.u8(self.status.byte());
        b.finish()
    }
}

/// NegotiateProtocolVersion (B).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiateProtocolVersion<'a> {
    /// Newest minor version the server supports.
    pub newest_minor: i32,
    /// Protocol options the server did not recognise.
    pub unrecognized: Vec<&'a str>,
}

impl<'a> NegotiateProtocolVersion<'a> {
    /// Parses a NegotiateProtocolVersion body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let newest_minor = r.i32("NegotiateProtocolVersion minor")?;
        let n = r.i32("NegotiateProtocolVersion option count")?;
        let n = usize::try_from(n).map_err(|_| MessageError::InvalidLength {
            field: "NegotiateProtocolVersion option count",
            value: i64::from(n),
        })?;
        if n > r.remaining() {
            return Err(MessageError::InvalidLength {
                field: "NegotiateProtocolVersion option count",
                value: n as i64,
            });
        }
        let mut unrecognized = Vec::with_capacity(n);
        for _ in 0..n {
            unrecognized.push(r.cstr("NegotiateProtocolVersion option")?);
        }
        r.finish("NegotiateProtocolVersion")?;
        Ok(Self {
            newest_minor,
            unrecognized,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_messages() {
        let z = ReadyForQuery {
            status: TransactionStatus::Failed,
        }
        .encode();
        assert_eq!(
            ReadyForQuery::parse(&z[5..]).unwrap().status,
            TransactionStatus::Failed
        );
        assert!(ReadyForQuery::parse(b"X").is_err());
        assert_eq!(
            ParameterStatus::parse(b"application_name\0psql\0")
                .unwrap()
                .value,
            "psql"
        );
        assert_eq!(
            BackendKeyData::parse(&[0, 0, 0, 7, 1, 2, 3, 4])
                .unwrap()
                .pid,
            7
        );
        assert!(BackendKeyData::parse(&[0, 0, 0, 7, 1]).is_err());
        assert!(NegotiateProtocolVersion::parse(&[0, 0, 0, 0, 0x7f, 0, 0, 0]).is_err());
    }
}
