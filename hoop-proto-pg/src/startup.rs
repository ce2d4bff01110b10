//! StartupMessage, SSLRequest, GSSENCRequest, CancelRequest (F, untagged)
//!
//! The first message(s) of a connection carry no type byte; the 32-bit code
//! after the length tells them apart.

use super::wire::{MessageBuilder, MessageError, Reader};
use bytes::Bytes;

/// Protocol 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The SSLRequest code.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The GSSENCRequest code.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The CancelRequest code.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// Longest cancel secret accepted (protocol 3.2 allows up to 256 bytes).
const MAX_CANCEL_SECRET: usize = 256;

/// A startup-phase message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    /// A StartupMessage: protocol version and parameters.
    Startup(StartupMessage<'a>),
    /// SSLRequest: the client asks for TLS.
    SslRequest,
    /// GSSENCRequest: the client asks for GSSAPI encryption.
    GssEncRequest,
    /// CancelRequest: cancel the query running on another connection.
    Cancel(CancelRequest<'a>),
}

/// A StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage<'a> {
    /// Major version in the high 16 bits, minor in the low 16.
    pub protocol: i32,
    /// Parameters in the order sent (`user`, `database`, `options`, GUCs…).
    pub params: Vec<(&'a str, &'a str)>,
}

impl StartupMessage<'_> {
    /// The major protocol version.
    pub fn major(&self) -> i32 {
        self.protocol >> 16
    }

    /// A parameter by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// `user`.
    pub fn user(&self) -> Option<&str> {
        self.param("user")
    }

    /// `database`, defaulting to the user as the server does.
    pub fn database(&self) -> Option<&str> {
        self.param("database").or_else(|| self.user())
    }

    /// `application_name`.
    pub fn application_name(&self) -> Option<&str> {
        self.param("application_name")
    }

    /// `options` (command-line options for the backend).
    pub fn options(&self) -> Option<&str> {
        self.param("options")
    }

    /// Encodes the message (length, protocol, parameters, terminator).
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::untagged();
        b.i32(self.protocol);
        for (name, value) in &self.params {
            b.cstr(name).cstr(value);
        }
        b.u8(0);
        b.finish()
    }
}

/// A CancelRequest: the key of the backend to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelRequest<'a> {
    /// The backend's process id.
    pub pid: i32,
    /// The secret key (4 bytes in protocol 3.0, up to 256 in 3.2).
    pub secret: &'a [u8],
}

impl CancelRequest<'_> {
    /// Encodes a CancelRequest with this key.
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::untagged();
        b.i32(CANCEL_REQUEST_CODE).i32(self.pid).bytes(self.secret);
        b.finish()
    }
}

/// Encodes an SSLRequest (sent upstream by the proxy).
pub fn ssl_request() -> Bytes {
    let mut b = MessageBuilder::untagged();
    b.i32(SSL_REQUEST_CODE);
    b.finish()
}

impl<'a> StartupPacket<'a> {
    /// Parses the body of an untagged message (after the length).
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let code = r.i32("startup code")?;
        match code {
            SSL_REQUEST_CODE => {
                r.finish("SSLRequest")?;
                Ok(Self::SslRequest)
            }
            GSSENC_REQUEST_CODE => {
                r.finish("GSSENCRequest")?;
                Ok(Self::GssEncRequest)
            }
            CANCEL_REQUEST_CODE => {
                let pid = r.i32("CancelRequest pid")?;
                let secret = r.rest();
                if secret.len() < 4 || secret.len() > MAX_CANCEL_SECRET {
                    return Err(MessageError::InvalidLength {
                        field: "CancelRequest secret",
                        value: secret.len() as i64,
                    });
                }
                Ok(Self::Cancel(CancelRequest { pid, secret }))
            }
            protocol if protocol >> 16 == 3 => {
                let mut params = Vec::new();
                loop {
                    let key = r.cstr("startup parameter name")?;
                    if key.is_empty() {
                        break;
                    }
                    let value = r.cstr("startup parameter value")?;
                    params.push((key, value));
                }
                r.finish("StartupMessage")?;
                Ok(Self::Startup(StartupMessage { protocol, params }))
            }
            other => Err(MessageError::InvalidValue {
                field: "startup protocol version",
                value: i64::from(other),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_startup_message_params() {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0application_name\0psql\0\0");
        let StartupPacket::Startup(m) = StartupPacket::parse(&body).unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.user(), m.database(), m.application_name()),
            (Some("alice"), Some("alice"), Some("psql"))
        );
        assert_eq!(m.major(), 3);
        let encoded = m.encode();
        assert_eq!(&encoded[4..], &body[..]);
        assert_eq!(
            u32::from_be_bytes([encoded[0], encoded[1], encoded[2], encoded[3]]) as usize,
            encoded.len()
        );
    }

    #[test]
    fn parses_requests_and_rejects_garbage() {
        assert_eq!(
            StartupPacket::parse(&SSL_REQUEST_CODE.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            StartupPacket::parse(&GSSENC_REQUEST_CODE.to_be_bytes()).unwrap(),
            StartupPacket::GssEncRequest
        );
        let cancel = CancelRequest {
            pid: 42,
            secret: &[1, 2, 3, 4],
        }
        .encode();
        let StartupPacket::Cancel(c) = StartupPacket::parse(&cancel[4..]).unwrap() else {
            panic!()
        };
        assert_eq!((c.pid, c.secret), (42, &[1u8, 2, 3, 4][..]));
        assert!(StartupPacket::parse(&[0, 2, 0, 0]).is_err());
        let mut unterminated = PROTOCOL_3_0.to_be_bytes().to_vec();
        unterminated.extend_from_slice(b"user\0x");
        assert!(StartupPacket::parse(&unterminated).is_err());
        assert_eq!(&ssl_request()[..], &[0, 0, 0, 8, 4, 210, 22, 47]);
    }
}
