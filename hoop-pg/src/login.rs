//! Logging in upstream with an injected credential.
//!
//! When a `credentials:` entry matches a session, the client is never asked
//! for a password: hoop sends the server the client's StartupMessage with
//! `user` replaced by the entry's role and `database` set to the entry's
//! database, then answers the server's own authentication request as
//! libpq would: SCRAM-SHA-256 ([`scram`]), md5 ([`md5`]), or cleartext —
//! the latter refused over an upstream leg without TLS unless the entry
//! sets `allow_cleartext_without_tls` (fail closed: a downgrade by whoever
//! sits between hoop and the server must not reveal the secret). The
//! server's AuthenticationOk, and everything after it, then goes to the
//! client as the server sent it; so the client sees the exchange of a
//! server that trusts it, and the session continues as any other.
//!
//! A SCRAM exchange must end with the server's signature verified: a
//! server that answers AuthenticationOk without proving it knows the
//! password is refused.

pub mod md5;
pub mod scram;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use hoop_core::{CredentialFailure, InjectedCredential};
use hoop_proto_pg::{
    Direction, FrameDecoder, FrameError, MessageError, Peek,
    auth::{Authentication, password_message, sasl_initial_response, sasl_response},
    notice::NoticeFields,
    startup::StartupMessage,
};
use hoop_relay::Stream;

use scram::{ClientFinal, SCRAM_SHA_256, ScramClient, ScramError};

/// At most this many messages (notices, NegotiateProtocolVersion) are
/// kept for the client before the server's AuthenticationOk.
const MAX_EARLY_MESSAGES: usize = 64;

/// Why the injected login failed. No variant holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The server refused the login with an ErrorResponse.
    #[error("{message}")]
    Rejected {
        /// Its SQLSTATE (`28P01` for a wrong password).
        sqlstate: String,
        /// Its message (PostgreSQL's never carries the password).
        message: String,
    },
    /// The server asked for a method hoop cannot answer.
    #[error(
        "the server asked for {0} authentication, which hoop cannot answer for an injected credential"
    )]
    Unsupported(String),
    /// The server asked for the password in cleartext over a leg without TLS.
    #[error(
        "the server asked for the password in cleartext and the connection to it is not TLS, \
         so hoop refused to send it"
    )]
    CleartextRefused,
    /// The SCRAM exchange failed (including a server that cannot prove it
    /// knows the password).
    #[error(transparent)]
    Scram(#[from] ScramError),
    /// The server accepted the login without completing SCRAM.
    #[error("the server ended SCRAM authentication without proving it knows the password")]
    ScramIncomplete,
    /// A server message was malformed or came out of order.
    #[error("unexpected {0} from the server while logging in")]
    Unexpected(&'static str),
    /// A server message was malformed.
    #[error("malformed message from the server: {0}")]
    Message(#[from] MessageError),
    /// A server frame had an invalid length.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The connection to the server failed.
    #[error("the connection to the server failed: {0}")]
    Io(#[from] std::io::Error),
}

impl LoginError {
    /// The `reason` of `hoop_credential_errors_total`.
    pub fn failure(&self) -> CredentialFailure {
        match self {
            Self::Rejected { .. } | Self::Scram(ScramError::ServerError(_)) => {
                CredentialFailure::UpstreamRejected
            }
            Self::Unsupported(_) => CredentialFailure::UnsupportedMethod,
            Self::CleartextRefused => CredentialFailure::CleartextRefused,
            Self::Scram(ScramError::SignatureMismatch) | Self::ScramIncomplete => {
                CredentialFailure::ServerUnverified
            }
            Self::Scram(_) | Self::Unexpected(_) | Self::Message(_) | Self::Frame(_) => {
                CredentialFailure::ServerProtocol
            }
            Self::Io(_) => CredentialFailure::ConnectionLost,
        }
    }

    /// The SQLSTATE the client is told.
    pub fn sqlstate(&self) -> &str {
        match self {
            Self::Rejected { sqlstate, .. } => sqlstate,
            Self::Io(_) => "08006",
            Self::Unexpected(_) | Self::Message(_) | Self::Frame(_) => "08P01",
            // invalid_authorization_specification
            _ => "28000",
        }
    }
}

/// Where the exchange is.
enum Step {
    /// Nothing sent but the StartupMessage.
    Started,
    /// A password (cleartext or md5) was sent.
    PasswordSent,
    /// SCRAM's first message was sent.
    ScramStarted(ScramClient),
    /// SCRAM's final message was sent; the server must prove itself.
    ScramFinal(ClientFinal),
    /// The server's SCRAM signature verified.
    ScramVerified,
}

/// The StartupMessage hoop sends upstream: the client's parameters in
/// their order, with `user` the injected role and `database` the entry's.
pub fn injected_startup(client: &StartupMessage<'_>, credential: &InjectedCredential) -> Bytes {
    let mut params: Vec<(&str, &str)> = client
        .params
        .iter()
        .filter(|(name, _)| !matches!(*name, "user" | "database"))
        .copied()
        .collect();
    params.insert(0, ("user", &credential.role));
    params.insert(1, ("database", &credential.database));
    StartupMessage {
        protocol: client.protocol,
        params,
    }
    .encode()
}

/// Logs in on `server` with `credential`, sending `startup` (see
/// [`injected_startup`]). Returns the server's bytes from its
/// AuthenticationOk on (preceded by any notice or NegotiateProtocolVersion
/// it sent first), for the relay to forward to the client.
pub async fn log_in(
    server: &mut Stream,
    startup: &Bytes,
    credential: &InjectedCredential,
    upstream_tls: bool,
    max_message_size: usize,
) -> Result<BytesMut, LoginError> {
    server.write_all(startup).await?;
    server.flush().await?;
    let decoder = FrameDecoder::new(Direction::Backend, max_message_size);
    let mut buf = BytesMut::with_capacity(1024);
    let mut early = BytesMut::new();
    let mut early_messages = 0;
    let mut step = Step::Started;
    loop {
        let (tag, len) = match decoder.peek(&buf)? {
            Peek::Complete { tag, len } => (tag, len),
            Peek::Incomplete { len } => {
                if let Some(len) = len {
                    buf.reserve(len.saturating_sub(buf.len()));
                }
                if server.read_buf(&mut buf).await? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
                continue;
            }
        };
        let frame = buf.split_to(len).freeze();
        let body = &frame[5..];
        match tag {
            b'R' => {
                let reply = match (Authentication::parse(body)?, step) {
                    (
                        Authentication::Ok,
                        Step::Started | Step::PasswordSent | Step::ScramVerified,
                    ) => {
                        early.extend_from_slice(&frame);
                        early.extend_from_slice(&buf);
                        return Ok(early);
                    }
                    (Authentication::Ok, _) => return Err(LoginError::ScramIncomplete),
                    (Authentication::CleartextPassword, Step::Started) => {
                        if !upstream_tls && !credential.allow_cleartext_without_tls {
                            return Err(LoginError::CleartextRefused);
                        }
                        step = Step::PasswordSent;
                        password_message(credential.secret.expose())
                    }
                    (Authentication::Md5Password { salt }, Step::Started) => {
                        step = Step::PasswordSent;
                        password_message(&md5::md5_password(
                            credential.role.as_bytes(),
                            credential.secret.expose(),
                            salt,
                        ))
                    }
                    (Authentication::Sasl(mechanisms), Step::Started) => {
                        if !mechanisms.contains(&SCRAM_SHA_256) {
                            return Err(LoginError::Unsupported(format!(
                                "SASL ({})",
                                mechanisms.join(", ")
                            )));
                        }
                        let client = ScramClient::new();
                        let first = sasl_initial_response(SCRAM_SHA_256, &client.client_first());
                        step = Step::ScramStarted(client);
                        first
                    }
                    (Authentication::SaslContinue(data), Step::ScramStarted(client)) => {
                        let first = client.server_first(data)?;
                        let secret = credential.secret.clone();
                        let (salt, iterations) = (first.salt.clone(), first.iterations);
                        // Thousands of HMAC rounds: off the runtime's threads.
                        let salted = tokio::task::spawn_blocking(move || {
                            scram::salted_password(secret.expose(), &salt, iterations)
                        })
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                        let last = client.client_final(&first, &salted);
                        let reply = sasl_response(&last.message);
                        step = Step::ScramFinal(last);
                        reply
                    }
                    (Authentication::SaslFinal(data), Step::ScramFinal(last)) => {
                        last.verify_server_final(data)?;
                        step = Step::ScramVerified;
                        continue;
                    }
                    (Authentication::KerberosV5, _) => {
                        return Err(LoginError::Unsupported("Kerberos V5".into()));
                    }
                    (Authentication::Gss | Authentication::GssContinue(_), _) => {
                        return Err(LoginError::Unsupported("GSSAPI".into()));
                    }
                    (Authentication::Sspi, _) => {
                        return Err(LoginError::Unsupported("SSPI".into()));
                    }
                    _ => return Err(LoginError::Unexpected("authentication request")),
                };
                server.write_all(&reply).await?;
                server.flush().await?;
            }
            b'E' => {
                let fields = NoticeFields::parse(body)?;
                return Err(LoginError::Rejected {
                    sqlstate: fields.code().unwrap_or("28000").to_owned(),
                    message: fields
                        .message()
                        .unwrap_or("the server refused the login")
                        .to_owned(),
                });
            }
            // Notices and NegotiateProtocolVersion are the client's: kept,
            // and sent ahead of AuthenticationOk.
            b'N' | b'v' => {
                early_messages += 1;
                if early_messages > MAX_EARLY_MESSAGES {
                    return Err(LoginError::Unexpected("flood of notices"));
                }
                early.extend_from_slice(&frame);
            }
            _ => return Err(LoginError::Unexpected("message")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hoop_core::{ClientAuth, Secret};
    use hoop_proto_pg::startup::{PROTOCOL_3_0, StartupPacket};

    #[test]
    fn the_startup_message_names_the_role_and_database_and_keeps_the_rest() {
        let credential = InjectedCredential {
            entry: "reporting".into(),
            role: "reporting_ro".into(),
            database: "reports".into(),
            secret: Secret::new(b"hunter2".to_vec()),
            client_auth: ClientAuth::Any,
            allow_cleartext_without_tls: false,
        };
        let client = StartupMessage {
            protocol: PROTOCOL_3_0,
            params: vec![
                ("user", "root"),
                ("application_name", "psql"),
                ("client_encoding", "UTF8"),
            ],
        };
        let sent = injected_startup(&client, &credential);
        let StartupPacket::Startup(m) = StartupPacket::parse(&sent[4..]).unwrap() else {
            panic!("not a StartupMessage")
        };
        assert_eq!(m.protocol, PROTOCOL_3_0);
        assert_eq!(
            m.params,
            [
                ("user", "reporting_ro"),
                ("database", "reports"),
                ("application_name", "psql"),
                ("client_encoding", "UTF8"),
            ]
        );
        assert!(!sent.windows(7).any(|w| w == b"hunter2"));
    }
}
