//! Credential injection: the port through which a driver asks which
//! database credential hoop holds for a session ([`CredentialSource`]), and
//! the secret that answers it ([`Secret`]).
//!
//! The workload connects with no password; when a `credentials:` entry
//! matches its identity and destination, the driver answers the client's
//! authentication itself and logs in upstream as [`InjectedCredential::role`]
//! with the secret. What matches, and where secrets come from, is
//! `hoop-credentials`' business; the driver only speaks its protocol's
//! authentication.

use std::{fmt, sync::Arc};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::SessionIdentity;

/// A database secret held by hoop. It never prints: `Debug` shows
/// `Secret(<redacted>)`, and there is no `Display` and no `Serialize`, so a
/// secret cannot reach a log line, a recording or an error message by
/// accident. Its bytes are wiped when the last clone is dropped.
#[derive(Clone)]
pub struct Secret(Arc<Zeroizing<Vec<u8>>>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Arc::new(Zeroizing::new(bytes)))
    }

    /// The secret's bytes, for the one place that authenticates with them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `credentials.client_auth`: how hoop answers the client's own
/// authentication on a session it injects credentials into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// The client may present any password, or none: whatever it has is
    /// never checked (PostgreSQL: hoop answers AuthenticationOk without
    /// asking for one, so a password the workload still carries never
    /// leaves it).
    Any,
    /// The client must present no password (the default). PostgreSQL
    /// clients only send a password when asked, and hoop never asks, so
    /// on PostgreSQL this is the same exchange as `any`; protocols whose
    /// clients volunteer credentials in their handshake (MySQL) refuse a
    /// client that sends one.
    #[default]
    None,
}

impl ClientAuth {
    /// The configuration's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::None => "none",
        }
    }
}

/// The credential hoop logs in with on a session's behalf.
#[derive(Debug, Clone)]
pub struct InjectedCredential {
    /// The `credentials.entries[].name` that matched: what errors, logs and
    /// recordings name (never the secret).
    pub entry: String,
    /// The database role hoop logs in as.
    pub role: String,
    /// The database the session opens (the entry's `destination.database`).
    pub database: String,
    /// The role's password.
    pub secret: Secret,
    /// How the client's own authentication is answered.
    pub client_auth: ClientAuth,
    /// Whether the secret may be sent in cleartext over an upstream leg
    /// without TLS, when the server asks for it that way
    /// (`allow_cleartext_without_tls`, default false: refused).
    pub allow_cleartext_without_tls: bool,
}

/// Why a credential could not be used: the bounded `reason` label of
/// `hoop_credential_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialFailure {
    /// The entry's secret could not be read (file missing, unreadable,
    /// readable by group or others, empty; variable unset).
    SecretUnavailable,
    /// The server refused the injected role's login (wrong secret, no
    /// such role or database, no `pg_hba` line…).
    UpstreamRejected,
    /// The server asked for an authentication method hoop cannot answer
    /// (GSSAPI, SSPI, Kerberos, an unknown SASL mechanism).
    UnsupportedMethod,
    /// The server asked for the password in cleartext over an upstream
    /// leg without TLS, and the entry does not allow it.
    CleartextRefused,
    /// The server could not prove it knows the password (SCRAM server
    /// signature mismatch): possibly not the real server.
    ServerUnverified,
    /// The server's authentication messages were malformed or out of order.
    ServerProtocol,
    /// The connection to the server failed while logging in.
    ConnectionLost,
}

impl CredentialFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretUnavailable => "secret_unavailable",
            Self::UpstreamRejected => "upstream_rejected",
            Self::UnsupportedMethod => "unsupported_method",
            Self::CleartextRefused => "cleartext_refused",
            Self::ServerUnverified => "server_unverified",
            Self::ServerProtocol => "server_protocol",
            Self::ConnectionLost => "connection_lost",
        }
    }

    /// Counts one failure in `hoop_credential_errors_total{reason}`.
    pub fn count(self) {
        crate::metrics::metrics()
            .credential_errors_total
            .with_label_values(&[self.as_str()])
            .inc();
    }
}

/// An entry matched a session, but its secret cannot be used. The message
/// names the entry and what is wrong, never the secret (nor the file or
/// variable it comes from: a secret pasted there by mistake stays unsaid).
#[derive(Debug, Clone, thiserror::Error)]
#[error("credential entry `{entry}`: {problem}")]
pub struct CredentialUnavailable {
    /// The entry's name.
    pub entry: String,
    /// What is wrong, for the operator (and the client).
    pub problem: String,
}

/// Which credential, if any, hoop injects into a session. Implemented by
/// `hoop-credentials`' live store; asked once per session, after the
/// protocol's start-up message filled in the database, user and
/// application name.
pub trait CredentialSource: Send + Sync {
    /// The credential of the first entry that matches `session` (its
    /// workload, original destination, database and user asked for);
    /// `Ok(None)` when none does, so authentication passes through.
    fn credential_for(
        &self,
        session: &SessionIdentity,
    ) -> Result<Option<InjectedCredential>, CredentialUnavailable>;

    /// The credential a session already injected with was given, by its
    /// entry's name (for side connections such as catalog lookups, which
    /// log in as the session's role); `None` once the entry is gone.
    fn credential_named(&self, entry: &str) -> Option<InjectedCredential>;
}

/// No credentials: every session authenticates itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCredentials;

impl CredentialSource for NoCredentials {
    fn credential_for(
        &self,
        _: &SessionIdentity,
    ) -> Result<Option<InjectedCredential>, CredentialUnavailable> {
        Ok(None)
    }

    fn credential_named(&self, _: &str) -> Option<InjectedCredential> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::new(b"hunter2".to_vec());
        let credential = InjectedCredential {
            entry: "reporting".into(),
            role: "reporting_ro".into(),
            database: "reports".into(),
            secret: secret.clone(),
            client_auth: ClientAuth::Any,
            allow_cleartext_without_tls: false,
        };
        let shown = format!("{credential:?} {credential:#?} {secret:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Secret(<redacted>)"));
        assert_eq!(secret.expose(), b"hunter2");
    }

    #[test]
    fn failure_labels_are_bounded_and_distinct() {
        let all = [
            CredentialFailure::SecretUnavailable,
            CredentialFailure::UpstreamRejected,
            CredentialFailure::UnsupportedMethod,
            CredentialFailure::CleartextRefused,
            CredentialFailure::ServerUnverified,
            CredentialFailure::ServerProtocol,
            CredentialFailure::ConnectionLost,
        ];
        let labels: std::collections::HashSet<&str> = all.iter().map(|f| f.as_str()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
