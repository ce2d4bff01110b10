//! The `credentials:` section as written: the operator-facing schema.
//!
//! Shape only. `when:` stays raw YAML here (the policy compiles it), and
//! so do `password_file` and `password_env`: serde's own type errors quote
//! the value they reject, and a secret pasted there by mistake must never
//! be printed back, so [`super::compile`] checks them itself.

use serde::Deserialize;
use serde_yaml_ng::Value;

use hoop_core::ClientAuth;

/// `credentials:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSpec {
    /// How hoop answers the client's own authentication on an injected
    /// session: `any | none` (default `none`).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The credentials, tried in file order; the first that matches a
    /// session is injected.
    #[serde(default)]
    pub entries: Vec<EntrySpec>,
}

/// `credentials.entries[N]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// The entry's name: errors, logs, metrics and recordings name it (never the secret).
    pub name: String,
    /// Which workloads get it: the same selectors as a policy rule's `when:`
    /// (default: every governed workload).
    #[serde(default)]
    pub when: Value,
    /// Which connections get it: where the client meant to connect, and
    /// the database (and user) it asks for.
    pub destination: DestinationSpec,
    /// The database role hoop logs in as.
    pub role: String,
    /// A file holding the role's password (readable by hoop only: mode 0600 or 0400).
    #[serde(default)]
    pub password_file: Value,
    /// The name of an environment variable holding the role's password.
    #[serde(default)]
    pub password_env: Value,
    /// Send the password in cleartext when the server asks for it that way
    /// over an upstream leg without TLS (default false: the login is refused).
    #[serde(default)]
    pub allow_cleartext_without_tls: bool,
}

/// `credentials.entries[N].destination`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// The server's address as the client dials it: an IP address, or a
    /// host name hoop resolves (and re-resolves) itself.
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// The database the client asks for (PostgreSQL: the start-up
    /// `database`, which defaults to the user name). The session opens it.
    pub database: String,
    /// Only when the client asks for this user (default: any user).
    #[serde(default)]
    pub user: Option<String>,
}
