//! AuthSwitchRequest, AuthMoreData, AuthNextFactor (S), and the auth-phase
//! classification of server packets.
//!
//! After the client's response (and again after COM_CHANGE_USER) the server
//! answers with one of:
//! - `0x00` OK: authenticated;
//! - `0xFF` ERR: refused (the connection ends);
//! - `0xFE` AuthSwitchRequest: use another plugin, with new plugin data
//!   (a fresh scramble); a bare `0xFE` asks for the pre-4.1 `mysql_old_password`;
//! - `0x01` AuthMoreData: plugin-specific data (caching_sha2's fast-auth
//!   result, an RSA public key, ed25519/parsec salts…);
//! - `0x02` AuthNextFactor: the next factor of multi-factor authentication
//!   (MySQL 8.0.27+).
//!
//! The client's packets in this exchange carry no header: they are plugin
//! data, relayed byte for byte. hoop never computes or holds a password:
//! the server's OK or ERR decides.

use bytes::{BufMut, Bytes, BytesMut};

use crate::capabilities::Capabilities;
use crate::err::{ERR_HEADER, ErrPacket};
use crate::ok::{OK_HEADER, OkPacket};
use crate::wire::{MessageError, Reader, put_cstr};

/// The first byte of an AuthSwitchRequest.
pub const AUTH_SWITCH_HEADER: u8 = 0xFE;
/// The first byte of an AuthMoreData packet.
pub const AUTH_MORE_DATA_HEADER: u8 = 0x01;
/// The first byte of an AuthNextFactor packet.
pub const AUTH_NEXT_FACTOR_HEADER: u8 = 0x02;
/// The plugin a bare AuthSwitchRequest (`0xFE` alone) asks for.
pub const OLD_PASSWORD_PLUGIN: &[u8] = b"mysql_old_password";

/// Strips the NUL some plugins append to their data (mysql_native_password's
/// 20-byte scramble is sent with one).
pub fn without_trailing_nul(data: &[u8]) -> &[u8] {
    match data.split_last() {
        Some((0, head)) => head,
        _ => data,
    }
}

/// AuthSwitchRequest (S).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    /// The plugin the client must use.
    pub plugin: Bytes,
    /// The plugin's data (usually a fresh scramble, NUL-terminated).
    pub data: Bytes,
    /// A bare `0xFE`: the pre-4.1 switch to `mysql_old_password`.
    pub old_form: bool,
}

impl AuthSwitchRequest {
    /// Parses the payload.
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        expect_header(&mut r, AUTH_SWITCH_HEADER, "AuthSwitchRequest")?;
        if r.is_empty() {
            return Ok(Self {
                plugin: Bytes::from_static(OLD_PASSWORD_PLUGIN),
                data: Bytes::new(),
                old_form: true,
            });
        }
        let plugin = Bytes::copy_from_slice(r.cstr("AuthSwitchRequest plugin")?);
        Ok(Self {
            plugin,
            data: Bytes::copy_from_slice(r.take_rest()),
            old_form: false,
        })
    }

    /// The scramble in the plugin data (without a trailing NUL).
    pub fn scramble(&self) -> &[u8] {
        without_trailing_nul(&self.data)
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Result<Bytes, MessageError> {
        let mut out = BytesMut::with_capacity(2 + self.plugin.len() + self.data.len());
        out.put_u8(AUTH_SWITCH_HEADER);
        if !self.old_form {
            put_cstr(&mut out, &self.plugin, "AuthSwitchRequest plugin")?;
            out.put_slice(&self.data);
        }
        Ok(out.freeze())
    }
}

/// AuthMoreData (S): `0x01` then plugin data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMoreData {
    /// The plugin data.
    pub data: Bytes,
}

impl AuthMoreData {
    /// Parses the payload.
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        expect_header(&mut r, AUTH_MORE_DATA_HEADER, "AuthMoreData")?;
        Ok(Self {
            data: Bytes::copy_from_slice(r.take_rest()),
        })
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + self.data.len());
        out.put_u8(AUTH_MORE_DATA_HEADER);
        out.put_slice(&self.data);
        out.freeze()
    }
}

/// AuthNextFactor (S): `0x02`, the next factor's plugin and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthNextFactor {
    /// The plugin of the next factor.
    pub plugin: Bytes,
    /// Its data.
    pub data: Bytes,
}

impl AuthNextFactor {
    /// Parses the payload.
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        expect_header(&mut r, AUTH_NEXT_FACTOR_HEADER, "AuthNextFactor")?;
        let plugin = Bytes::copy_from_slice(r.cstr("AuthNextFactor plugin")?);
        Ok(Self {
            plugin,
            data: Bytes::copy_from_slice(r.take_rest()),
        })
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Result<Bytes, MessageError> {
        let mut out = BytesMut::with_capacity(2 + self.plugin.len() + self.data.len());
        out.put_u8(AUTH_NEXT_FACTOR_HEADER);
        put_cstr(&mut out, &self.plugin, "AuthNextFactor plugin")?;
        out.put_slice(&self.data);
        Ok(out.freeze())
    }
}

fn expect_header(
    r: &mut Reader<'_>,
    expected: u8,
    message: &'static str,
) -> Result<(), MessageError> {
    let found = r.peek().ok_or(MessageError::Empty { message })?;
    if found != expected {
        return Err(MessageError::UnexpectedHeader {
            message,
            expected,
            found,
        });
    }
    r.skip(1, message)
}

/// A server packet during authentication, classified by its first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply<'a> {
    /// Authenticated.
    Ok(OkPacket<'a>),
    /// Refused.
    Error(ErrPacket),
    /// Switch plugin.
    Switch(AuthSwitchRequest),
    /// Plugin data.
    MoreData(AuthMoreData),
    /// Next authentication factor.
    NextFactor(AuthNextFactor),
}

impl<'a> AuthReply<'a> {
    /// Classifies and parses a server packet of the auth exchange.
    pub fn parse(payload: &'a [u8], caps: Capabilities) -> Result<Self, MessageError> {
        match payload.first() {
            None => Err(MessageError::Empty {
                message: "auth reply",
            }),
            Some(&OK_HEADER) => OkPacket::parse(payload, caps).map(Self::Ok),
            Some(&ERR_HEADER) => ErrPacket::parse(payload).map(Self::Error),
            Some(&AUTH_SWITCH_HEADER) => AuthSwitchRequest::parse(payload).map(Self::Switch),
            Some(&AUTH_MORE_DATA_HEADER) => AuthMoreData::parse(payload).map(Self::MoreData),
            Some(&AUTH_NEXT_FACTOR_HEADER) => AuthNextFactor::parse(payload).map(Self::NextFactor),
            Some(&other) => Err(MessageError::InvalidValue {
                field: "auth reply header",
                value: u64::from(other),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn switch_more_data_and_next_factor_round_trip() {
        let s = AuthSwitchRequest {
            plugin: Bytes::from_static(b"mysql_native_password"),
            data: Bytes::from_static(b"01234567890123456789\0"),
            old_form: false,
        };
        let raw = s.encode().unwrap();
        assert_eq!(AuthSwitchRequest::parse(&raw).unwrap(), s);
        assert_eq!(s.scramble(), b"01234567890123456789");
        let old = AuthSwitchRequest::parse(b"\xfe").unwrap();
        assert!(old.old_form);
        assert_eq!(&old.encode().unwrap()[..], b"\xfe");
        assert!(AuthSwitchRequest::parse(b"\xfeplugin-without-nul").is_err());

        let m = AuthMoreData {
            data: Bytes::from_static(b"\x03"),
        };
        assert_eq!(AuthMoreData::parse(&m.encode()).unwrap(), m);
        let n = AuthNextFactor {
            plugin: Bytes::from_static(b"authentication_fido_client"),
            data: Bytes::from_static(b"xyz"),
        };
        assert_eq!(AuthNextFactor::parse(&n.encode().unwrap()).unwrap(), n);
    }

    #[test]
    fn classification() {
        let caps = Capabilities::PROTOCOL_41;
        assert!(matches!(
            AuthReply::parse(b"\x00\x00\x00\x02\x00\x00\x00", caps),
            Ok(AuthReply::Ok(_))
        ));
        assert!(matches!(
            AuthReply::parse(b"\xff\x15\x04#28000Access denied", caps),
            Ok(AuthReply::Error(e)) if e.code == 1045
        ));
        assert!(matches!(
            AuthReply::parse(b"\x01\x04", caps),
            Ok(AuthReply::MoreData(_))
        ));
        assert!(matches!(
            AuthReply::parse(b"\xfeclient_ed25519\0abc", caps),
            Ok(AuthReply::Switch(_))
        ));
        assert!(AuthReply::parse(b"\x05", caps).is_err());
        assert!(AuthReply::parse(b"", caps).is_err());
    }
}
