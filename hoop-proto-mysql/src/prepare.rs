//! COM_STMT_PREPARE_OK (S)
//!
//! `0x00 statement_id:u32 columns:u16 params:u16 0x00 warnings:u16`, then
//! `params` parameter definitions and `columns` column definitions, each
//! block followed by an EOF unless `DEPRECATE_EOF` (MySQL 8 with
//! `OPTIONAL_RESULTSET_METADATA`, cleared by hoop, adds a metadata-follows
//! byte). The statement exists only once the server sent this.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{MessageError, Reader};

/// The first byte of a PREPARE_OK.
pub const PREPARE_OK_HEADER: u8 = 0x00;

/// COM_STMT_PREPARE_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    /// The statement id the client names in EXECUTE, FETCH, CLOSE…
    pub statement_id: u32,
    /// Result columns.
    pub columns: u16,
    /// Parameters (`?` placeholders).
    pub params: u16,
    /// The reserved byte (0).
    pub reserved: u8,
    /// Warning count, when sent.
    pub warnings: Option<u16>,
    /// MySQL 8's metadata-follows byte, when sent.
    pub metadata_follows: Option<u8>,
}

impl PrepareOk {
    /// Parses the payload.
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let header = r.u8("PREPARE_OK header")?;
        if header != PREPARE_OK_HEADER {
            return Err(MessageError::UnexpectedHeader {
                message: "PREPARE_OK",
                expected: PREPARE_OK_HEADER,
                found: header,
            });
        }
        let statement_id = r.u32("PREPARE_OK statement id")?;
        let columns = r.u16("PREPARE_OK column count")?;
        let params = r.u16("PREPARE_OK parameter count")?;
        let reserved = r.u8("PREPARE_OK reserved")?;
        let warnings = if r.is_empty() {
            None
        } else {
            Some(r.u16("PREPARE_OK warnings")?)
        };
        let metadata_follows = if r.is_empty() {
            None
        } else {
            Some(r.u8("PREPARE_OK metadata follows")?)
        };
        r.finish("PREPARE_OK")?;
        Ok(Self {
            statement_id,
            columns,
            params,
            reserved,
            warnings,
            metadata_follows,
        })
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(13);
        out.put_u8(PREPARE_OK_HEADER);
        out.put_u32_le(self.statement_id);
        out.put_u16_le(self.columns);
        out.put_u16_le(self.params);
        out.put_u8(self.reserved);
        if let Some(w) = self.warnings {
            out.put_u16_le(w);
            if let Some(m) = self.metadata_follows {
                out.put_u8(m);
            }
        }
        out.freeze()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ok = PrepareOk {
            statement_id: 9,
            columns: 3,
            params: 2,
            reserved: 0,
            warnings: Some(0),
            metadata_follows: None,
        };
        let raw = ok.encode();
        assert_eq!(raw.len(), 12);
        assert_eq!(PrepareOk::parse(&raw).unwrap(), ok);
        assert!(PrepareOk::parse(&raw[..9]).is_err());
        assert!(PrepareOk::parse(&raw[..11]).is_err());
        assert_eq!(PrepareOk::parse(&raw[..10]).unwrap().warnings, None);
        let mut longer = raw.to_vec();
        longer.extend_from_slice(&[1, 2]);
        assert!(PrepareOk::parse(&longer).is_err());
    }
}
