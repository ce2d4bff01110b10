//! Authentication* (B), PasswordMessage / SASLInitialResponse / SASLResponse (F)
//!
//! hoop relays every exchange unchanged except one: it removes
//! `SCRAM-SHA-256-PLUS` from AuthenticationSASL. Channel binding ties SCRAM
//! to the TLS session between client and server; hoop terminates TLS, so the
//! client's binding (to hoop's certificate) could never match the server's.
//! Offering only `SCRAM-SHA-256` makes clients with `channel_binding=prefer`
//! (libpq's default) authenticate without binding; clients that *require*
//! channel binding fail, as they should behind a TLS-terminating proxy.

use super::wire::{MessageBuilder, MessageError, Reader};
use bytes::Bytes;

/// The mechanism hoop removes from AuthenticationSASL.
pub const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// An Authentication* message (type `R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// AuthenticationOk.
    Ok,
    /// AuthenticationKerberosV5.
    KerberosV5,
    /// AuthenticationCleartextPassword.
    CleartextPassword,
    /// AuthenticationMD5Password with its salt.
    Md5Password {
        /// The 4-byte salt.
        salt: [u8; 4],
    },
    /// AuthenticationGSS.
    Gss,
    /// AuthenticationGSSContinue.
    GssContinue(&'a [u8]),
    /// AuthenticationSSPI.
    Sspi,
    /// AuthenticationSASL with the mechanisms offered.
    Sasl(Vec<&'a str>),
    /// AuthenticationSASLContinue.
    SaslContinue(&'a [u8]),
    /// AuthenticationSASLFinal.
    SaslFinal(&'a [u8]),
}

impl<'a> Authentication<'a> {
    /// Parses an `R` body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let code = r.i32("Authentication code")?;
        let msg = match code {
            0 => Self::Ok,
            2 => Self::KerberosV5,
            3 => Self::CleartextPassword,
            5 => {
                let s = r.bytes(4, "AuthenticationMD5Password salt")?;
                Self::Md5Password {
                    salt: [s[0], s[1], s[2], s[3]],
                }
            }
            7 => Self::Gss,
            8 => return Ok(Self::GssContinue(r.rest())),
            9 => Self::Sspi,
            10 => {
                let mut mechanisms = Vec::new();
                loop {
                    let m = r.cstr("AuthenticationSASL mechanism")?;
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(m);
                }
                Self::Sasl(mechanisms)
            }
            11 => return Ok(Self::SaslContinue(r.rest())),
            12 => return Ok(Self::SaslFinal(r.rest())),
            other => {
                return Err(MessageError::InvalidValue {
                    field: "Authentication code",
                    value: i64::from(other),
                });
            }
        };
        r.finish("Authentication")?;
        Ok(msg)
    }
}

/// Encodes an AuthenticationSASL offering `mechanisms`.
pub fn authentication_sasl<'m>(mechanisms: impl IntoIterator<Item = &'m str>) -> Bytes {
    let mut b = MessageBuilder::new(b'R');
    b.i32(10);
    for m in mechanisms {
        b.cstr(m);
    }
    b.u8(0);
    b.finish()
}

/// Encodes an AuthenticationOk.
pub fn authentication_ok() -> Bytes {
    let mut b = MessageBuilder::new(b'R');
    b.i32(0);
    b.finish()
}

/// Encodes a PasswordMessage carrying `password` (cleartext, or md5's
/// `md5…` hex): what hoop sends upstream when it logs in with an
/// injected credential. `password` holds no NUL (checked when the secret
/// is read).
pub fn password_message(password: &[u8]) -> Bytes {
    let mut b = MessageBuilder::new(b'p');
    b.bytes(password).u8(0);
    b.finish()
}

/// Encodes a SASLInitialResponse choosing `mechanism`, with `data`.
pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Bytes {
    let mut b = MessageBuilder::new(b'p');
    b.cstr(mechanism).value(Some(data));
    b.finish()
}

/// Encodes a SASLResponse carrying `data`.
pub fn sasl_response(data: &[u8]) -> Bytes {
    let mut b = MessageBuilder::new(b'p');
    b.bytes(data);
    b.finish()
}

/// If `body` is an AuthenticationSASL that offers `SCRAM-SHA-256-PLUS`,
/// returns the message rebuilt without it; otherwise `None` (forward as is).
pub fn strip_channel_binding(body: &[u8]) -> Result<Option<Bytes>, MessageError> {
    match Authentication::parse(body)? {
        Authentication::Sasl(mechs) if mechs.contains(&SCRAM_PLUS) => Ok(Some(
            authentication_sasl(mechs.into_iter().filter(|m| *m != SCRAM_PLUS)),
        )),
        _ => Ok(None),
    }
}

/// PasswordMessage (F): a cleartext or MD5-hashed password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordMessage<'a> {
    /// The password (cleartext or `md5…`).
    pub password: &'a [u8],
}

impl<'a> PasswordMessage<'a> {
    /// Parses a `p` body sent in reply to a cleartext or MD5 request.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let password = r.cstr_bytes("PasswordMessage")?;
        r.finish("PasswordMessage")?;
        Ok(Self { password })
    }
}

/// SASLInitialResponse (F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    /// The mechanism chosen.
    pub mechanism: &'a str,
    /// The initial client response (`None` if absent).
    pub data: Option<&'a [u8]>,
}

impl<'a> SaslInitialResponse<'a> {
    /// Parses a `p` body sent in reply to AuthenticationSASL.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let mechanism = r.cstr("SASLInitialResponse mechanism")?;
        let data = r.value("SASLInitialResponse data")?;
        r.finish("SASLInitialResponse")?;
        Ok(Self { mechanism, data })
    }
}

/// SASLResponse (F): the whole body is mechanism data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslResponse<'a> {
    /// Mechanism-specific data.
    pub data: &'a [u8],
}

impl<'a> SaslResponse<'a> {
    /// Parses a `p` body sent in reply to AuthenticationSASLContinue.
    pub fn parse(body: &'a [u8]) -> Self {
        Self { data: body }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strips_scram_plus_only() {
        let both = authentication_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
        let stripped = strip_channel_binding(&both[5..]).unwrap().unwrap();
        assert_eq!(
            Authentication::parse(&stripped[5..]).unwrap(),
            Authentication::Sasl(vec!["SCRAM-SHA-256"])
        );
        let plain = authentication_sasl(["SCRAM-SHA-256"]);
        assert_eq!(strip_channel_binding(&plain[5..]).unwrap(), None);
    }

    #[test]
    fn parses_codes() {
        assert_eq!(
            Authentication::parse(&[0, 0, 0, 0]).unwrap(),
            Authentication::Ok
        );
        assert_eq!(
            Authentication::parse(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(),
            Authentication::Md5Password { salt: [1, 2, 3, 4] }
        );
        assert!(Authentication::parse(&[0, 0, 0, 5, 1]).is_err());
        assert!(Authentication::parse(&[0, 0, 0, 99]).is_err());
        let init = SaslInitialResponse::parse(b"SCRAM-SHA-256\0\0\0\0\x02hi").unwrap();
        assert_eq!(init.data, Some(&b"hi"[..]));
    }

    #[test]
    fn encoders_round_trip_through_the_parsers() {
        assert_eq!(
            Authentication::parse(&authentication_ok()[5..]).unwrap(),
            Authentication::Ok
        );
        let m = password_message(b"md5abc");
        assert_eq!(m[0], b'p');
        assert_eq!(PasswordMessage::parse(&m[5..]).unwrap().password, b"md5abc");
        let m = sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc");
        let init = SaslInitialResponse::parse(&m[5..]).unwrap();
        assert_eq!(
            (init.mechanism, init.data),
            ("SCRAM-SHA-256", Some(&b"n,,n=,r=abc"[..]))
        );
        let m = sasl_response(b"c=biws");
        assert_eq!(SaslResponse::parse(&m[5..]).data, b"c=biws");
        assert_eq!(i32::from_be_bytes([m[1], m[2], m[3], m[4]]), 4 + 6);
    }
}
