//! The one YAML file: interception, admin API, TLS, recording and policy.
//!
//! Loading is strict: unknown keys are errors, and every error names the file,
//! line and column. Names here are the operator-facing contract in
//! `../shared/DESIGN.md`: extend them, never rename them.
//!
//! YAML is read with `serde_yaml_ng`: `serde_yaml` is archived (unmaintained
//! since 2024) and `serde_yaml_ng` is its maintained, API-compatible fork.
//! Key positions for diagnostics come from a second, event-level parser (see
//! [`source`]), because a `serde_yaml_ng::Value` keeps none.
//!
//! Loading is parse → check every section key by key (all errors, each with
//! file:line:column and key path) → compile the policy. The policy compiler
//! is the caller's (`hoop_policy::load_checked` passes it), so this crate
//! depends on no governance crate.

#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use hoop_core::Protocol;
use serde::Deserialize;

pub mod checked;
pub mod diagnostic;
pub mod source;

use checked::deserialize_checked;
pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use source::{KeyPath, Location, SourceMap};

/// A whole hoop configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which connections are redirected to the proxy.
    #[serde(default)]
    pub intercept: InterceptConfig,
    /// The admin HTTP listener (`/metrics`, `/healthz`, `/api/holds`) and who may use it.
    #[serde(default)]
    pub admin: AdminConfig,
    /// TLS on the client leg (termination) and the upstream leg.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Session recordings.
    #[serde(default)]
    pub recording: RecordingConfig,
    /// Protocol limits.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// MySQL/MariaDB driver options.
    #[serde(default)]
    pub mysql: MysqlConfig,
    /// Masking, guardrails and holds. Kept as raw YAML here; `policy` compiles it.
    #[serde(default)]
    pub policy: serde_yaml_ng::Value,
    /// Database credentials hoop injects by workload identity
    /// (`client_auth`, `entries[]` with `name`, `when`, `destination`,
    /// `role`, `password_file` | `password_env`). Kept as raw YAML here,
    /// like `policy:`: `hoop-credentials` compiles it, reusing the policy's
    /// `when:` selectors (see docs/credentials.md).
    #[serde(default)]
    pub credentials: serde_yaml_ng::Value,
    /// Pod discovery on Kubernetes (`enabled`, `mode`, `node_name`,
    /// `cgroup_root`, `exclude_namespaces`, `resync_interval`, `pin_dir`).
    /// Kept as raw YAML here: `hoop-k8s` parses it, and the binary checks it
    /// with the rest of the file (see docs/kubernetes.md).
    #[serde(default)]
    pub kubernetes: serde_yaml_ng::Value,
}

/// `intercept:`: which destinations are redirected, and for which cgroups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptConfig {
    /// Destination TCP ports whose connections are redirected (default `[5432]`).
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    /// The wire protocol spoken on each intercepted destination port
    /// (default `{5432: postgres}`). A port in `ports` without an entry
    /// speaks `postgres`, hoop's first protocol.
    #[serde(default = "default_protocols")]
    pub protocols: BTreeMap<u16, Protocol>,
    /// cgroup v2 directories `hoop agent` governs (absolute, or relative to the cgroup2 mount).
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// Where the proxy listens for redirected IPv4 connections (default `127.0.0.1:0`, any free port).
    #[serde(default = "default_listen_v4")]
    pub listen_v4: SocketAddr,
    /// Where the proxy listens for redirected IPv6 connections (default `[::1]:0`).
    #[serde(default = "default_listen_v6")]
    pub listen_v6: SocketAddr,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            ports: default_ports(),
            protocols: default_protocols(),
            cgroups: Vec::new(),
            listen_v4: default_listen_v4(),
            listen_v6: default_listen_v6(),
        }
    }
}

fn default_ports() -> Vec<u16> {
    vec![5432]
}

fn default_protocols() -> BTreeMap<u16, Protocol> {
    BTreeMap::from([(3306, Protocol::Mysql), (5432, Protocol::Postgres)])
}

/// The protocols hoop has a driver for.
pub const SUPPORTED_PROTOCOLS: &[Protocol] = &[Protocol::Postgres, Protocol::Mysql];

impl InterceptConfig {
    /// The protocol spoken on destination `port`.
    pub fn protocol(&self, port: u16) -> Protocol {
        self.protocols
            .get(&port)
            .copied()
            .unwrap_or(Protocol::Postgres)
    }
}

fn default_listen_v4() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn default_listen_v6() -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
}

/// `admin:`: the HTTP API and its authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address (default `127.0.0.1:9464`). Port 0 picks a free port.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// A YAML list of `{token_sha256, identity, groups}` for static bearer tokens.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Name of an environment variable holding the same YAML list (for secrets injected by the platform).
    #[serde(default)]
    pub tokens_env: Option<String>,
    /// OIDC verification of approvers' tokens.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Webhook notified when a hold is created (`format: json`, the default,
    /// or `format: slack` for a Block Kit message with buttons).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Slack's interactive buttons: the signing secret that authenticates
    /// their callbacks, and who each Slack user is.
    #[serde(default)]
    pub slack: Option<SlackConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            tokens_file: None,
            tokens_env: None,
            oidc: None,
            webhook: None,
            slack: None,
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// `admin.oidc:`: verify bearer tokens as OIDC JWTs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// A local JWKS file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (fetched at start and on an unknown `kid`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The claim holding the caller's groups (default `groups`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The OAuth client id of the approvals page (`/ui/`). Set, it enables
    /// the page's "Sign in with OIDC" (authorization code with PKCE), and
    /// ID tokens issued to this client (`aud` = this id) are accepted as
    /// bearer tokens, as Kubernetes does with `--oidc-client-id`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Scopes the page asks for (default `[openid, email, profile]`; add the
    /// one your issuer needs to put groups in the ID token, e.g. `groups`).
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(str::to_owned).to_vec()
}

/// `admin.webhook:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL POSTed to when a hold is created.
    pub url: String,
    /// Request timeout (default 5s).
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The body's shape (default `json`).
    #[serde(default)]
    pub format: WebhookFormat,
}

/// `admin.webhook.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"text": "<one line>", "hold": <the hold as the API shows it>}`:
    /// for scripts, and readable in any chat that takes `text`.
    #[default]
    Json,
    /// A Slack Block Kit message: the hold's details, Approve and Deny
    /// buttons (answered at `POST /api/slack/actions`, see `admin.slack`),
    /// and a link to the approvals page.
    Slack,
}

/// `admin.slack:`: authenticates Slack's button callbacks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// A file holding the Slack app's signing secret (it must not be
    /// readable by group or others).
    #[serde(default)]
    pub signing_secret_file: Option<PathBuf>,
    /// The name of an environment variable holding the signing secret.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// Slack user id → hoop identity. A bare identity takes its groups from
    /// the token list entries of that identity; `{identity, groups}` names
    /// them here (for OIDC-only setups, where hoop has no list).
    #[serde(default)]
    pub users: std::collections::BTreeMap<String, SlackUser>,
    /// The approvals page as Slack users reach it (`https://hoop.example.com/ui/`),
    /// linked from every message.
    #[serde(default)]
    pub ui_url: Option<String>,
}

/// One entry of `admin.slack.users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    /// The hoop identity (as a token list or OIDC names it).
    pub identity: String,
    /// Groups given here, if any (otherwise those of the identity's tokens).
    pub groups: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for SlackUser {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The long form, strict about its keys.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Detailed {
            identity: String,
            groups: Vec<String>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SlackUser;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an identity, or {identity, groups}")
            }
            fn visit_str<E: serde::de::Error>(self, identity: &str) -> Result<SlackUser, E> {
                Ok(SlackUser {
                    identity: identity.to_owned(),
                    groups: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SlackUser, A::Error> {
                let detailed =
                    Detailed::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SlackUser {
                    identity: detailed.identity,
                    groups: Some(detailed.groups),
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `mysql:`: options of the MySQL/MariaDB driver.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Let clients send local files for `LOAD DATA LOCAL INFILE` (default
    /// `false`: `CLIENT_LOCAL_FILES` is cleared on both legs and a server's
    /// file request is refused). When `true`, a file request is honoured
    /// only in reply to an allowed statement naming the same file.
    #[serde(default)]
    pub local_infile: bool,
}

/// `tls:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain presented to clients that send SSLRequest.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// TLS towards the server (default `prefer`).
    #[serde(default)]
    pub upstream: UpstreamTls,
    /// CA bundle (PEM) for `upstream: verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `tls.upstream`: libpq's sslmode names, with the same meaning.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plaintext otherwise (certificate not verified).
    #[default]
    Prefer,
    /// TLS or fail (certificate not verified).
    Require,
    /// TLS, certificate chain verified against `ca_file`, host name checked.
    VerifyFull,
}

/// `recording:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Set to false to record nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Directory of recordings, one append-only file per session (default `./recordings`).
    #[serde(default = "default_recording_dir")]
    pub dir: PathBuf,
    /// How much of result rows to record: `none | summary | full` (default `summary`).
    #[serde(default)]
    pub rows: RecordRows,
    /// Largest row (after masking) recorded in full; larger rows are cut and marked (default 64 KiB).
    #[serde(default = "default_max_row_bytes")]
    pub max_row_bytes: usize,
    /// Upper bound on the time between a write and its flush (default 200ms).
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// What to do when a recording cannot be written: `close_session | continue` (default `close_session`).
    #[serde(default)]
    pub on_error: RecordingOnError,
    /// Delete recordings older than this many days.
    #[serde(default)]
    pub retain_days: Option<u64>,
    /// Delete the oldest recordings when the directory grows past this many bytes.
    #[serde(default)]
    pub max_total_bytes: Option<u64>,
    /// Environment variable holding the HMAC key for the trailer.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// File holding the HMAC key for the trailer.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
    /// Object store the recordings are shipped to (`s3://bucket/prefix`, `gs://…`,
    /// `az://…`, `file:///path`); `dir` is then a bounded spool. Credentials come
    /// from the standard environment and instance sources, never from the URL.
    #[serde(default)]
    pub store: Option<String>,
    /// How often the spool of live sessions is shipped to `store` (default 10s);
    /// a session's last segment ships when it closes.
    #[serde(default = "default_ship_interval", with = "humantime_serde")]
    pub ship_interval: Duration,
    /// Most bytes the spool holds not yet shipped (default 1 GiB); past it a
    /// session's recording fails and `on_error` applies.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: default_recording_dir(),
            rows: RecordRows::default(),
            max_row_bytes: default_max_row_bytes(),
            flush_interval: default_flush_interval(),
            on_error: RecordingOnError::default(),
            retain_days: None,
            max_total_bytes: None,
            hmac_key_env: None,
            hmac_key_file: None,
            store: None,
            ship_interval: default_ship_interval(),
            spool_max_bytes: default_spool_max_bytes(),
        }
    }
}

fn default_ship_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_spool_max_bytes() -> u64 {
    1 << 30
}

fn default_true() -> bool {
    true
}

fn default_recording_dir() -> PathBuf {
    PathBuf::from("./recordings")
}

fn default_max_row_bytes() -> usize {
    64 * 1024
}

fn default_flush_interval() -> Duration {
    Duration::from_millis(200)
}

/// `recording.rows`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordRows {
    /// No row data; statements, verdicts and summaries only.
    None,
    /// Row counts and command tags (the default).
    #[default]
    Summary,
    /// Every result row, after masking.
    Full,
}

/// `recording.on_error`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingOnError {
    /// Close the session with an error (fail closed; the default).
    #[default]
    CloseSession,
    /// Keep proxying, log and count the failure.
    Continue,
}

/// `proxy.event_loop`: what drives established plaintext sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLoopKind {
    /// hoop's relay loop (`hoop_relay::event_loop`).
    #[default]
    Hoop,
    /// The tokio runtime.
    Tokio,
}

/// `proxy:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Largest protocol message accepted from either side, in bytes (default 64 MiB).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// How long to wait for the original destination to accept a connection (default 5s).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Threads running the proxy (0, the default: one for `hoop exec`, one per CPU for `hoop agent`).
    #[serde(default)]
    pub worker_threads: usize,
    /// What drives established plaintext sessions: `hoop` (the default),
    /// hoop's own event loop, one thread per worker thread; or `tokio`, the
    /// runtime that runs everything else. TLS sessions always use tokio.
    #[serde(default)]
    pub event_loop: EventLoopKind,
    /// Whether bulk transfers on hoop's relay loop coalesce their reads
    /// (default true): after 1 MiB from one leg with nothing from the other,
    /// that leg is read 64 KiB at a time, and the last bytes of the transfer
    /// can wait up to 1 ms. `false` reads every leg as its bytes arrive.
    #[serde(default = "default_true")]
    pub coalesce_bulk_reads: bool,
    /// How often a client waiting on a hold is reminded (default 30s).
    #[serde(default = "default_hold_reminder", with = "humantime_serde")]
    pub hold_reminder_interval: Duration,
    /// Role hoop uses for its catalog lookups (resolving result columns to
    /// their tables for masking). Default: the session's own user.
    #[serde(default)]
    pub catalog_user: Option<String>,
    /// Environment variable holding the catalog role's password (needed when
    /// the server does not trust hoop's address). Never put the password here.
    #[serde(default)]
    pub catalog_password_env: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_message_size: default_max_message_size(),
            connect_timeout: default_connect_timeout(),
            hold_reminder_interval: default_hold_reminder(),
            worker_threads: 0,
            event_loop: EventLoopKind::default(),
            coalesce_bulk_reads: true,
            catalog_user: None,
            catalog_password_env: None,
        }
    }
}

fn default_hold_reminder() -> Duration {
    Duration::from_secs(30)
}

fn default_max_message_size() -> usize {
    64 * 1024 * 1024
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// A configuration file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML, does not fit the schema, or holds an invalid
    /// policy. Every problem found is listed, each with file, line, column and key.
    #[error("{}", display_all(diagnostics))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error (and warning) found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

fn display_all(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The diagnostics, for an invalid file; a read error has none.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { diagnostics, .. } => diagnostics,
        }
    }
}

/// A configuration file that passed every check, with its compiled policy
/// (`P` is the policy compiler's output).
#[derive(Debug)]
pub struct Loaded<P> {
    /// The configuration.
    pub config: Config,
    /// The compiled `policy:` section.
    pub policy: P,
    /// Findings that do not reject the file.
    pub warnings: Vec<Diagnostic>,
    /// The SHA-256 (lowercase hex) of the text it was loaded from: what
    /// `hoop_policy_info{sha256}` and `/healthz` report, so nodes that
    /// enforce different files can be told apart.
    pub sha256: String,
}

/// The lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Compiles the `policy:` section (its value and key path), recording every
/// problem; `None` when it has errors.
pub type PolicyCompiler<'f, P> =
    &'f dyn Fn(&serde_yaml_ng::Value, &KeyPath, &mut Diagnostics<'_>) -> Option<P>;

/// Compiles the sections this crate keeps as raw YAML (`policy:`,
/// `credentials:`) from the whole document, recording every problem;
/// `None` when they have errors.
pub type DocumentCompiler<'f, P> =
    &'f dyn Fn(&serde_yaml_ng::Value, &mut Diagnostics<'_>) -> Option<P>;

impl Config {
    /// Reads a configuration file and compiles its policy with `compile`,
    /// reporting every problem in the file at once.
    pub fn load_with<P>(
        path: &Path,
        compile: PolicyCompiler<'_, P>,
    ) -> Result<Loaded<P>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_with(path, &text, compile)
    }

    /// Reads and checks a configuration file without compiling its policy
    /// (for tools that only need the other sections).
    pub fn load_sections(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &|_, _, _| Some(())).map(|loaded| loaded.config)
    }

    /// Parses configuration text and compiles its policy with `compile`,
    /// reporting every problem at once; `path` only names the file in
    /// errors. A YAML syntax error stops early (nothing after it can be
    /// trusted); unknown keys, bad values and policy errors are all reported.
    pub fn parse_with<P>(
        path: &Path,
        text: &str,
        compile: PolicyCompiler<'_, P>,
    ) -> Result<Loaded<P>, ConfigError> {
        Self::parse_document_with(path, text, &|document, diags| {
            let empty = serde_yaml_ng::Value::Null;
            let policy_value = document.get("policy").unwrap_or(&empty);
            compile(policy_value, &KeyPath::root().key("policy"), diags)
        })
    }

    /// Reads a configuration file and compiles its raw sections with
    /// `compile`, given the whole document, reporting every problem in the
    /// file at once.
    pub fn load_document_with<P>(
        path: &Path,
        compile: DocumentCompiler<'_, P>,
    ) -> Result<Loaded<P>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_document_with(path, &text, compile)
    }

    /// As [`Config::parse_with`], with a compiler that reads the whole
    /// document (for callers that compile more than `policy:`, such as the
    /// credentials, whose `when:` selectors are the policy's).
    pub fn parse_document_with<P>(
        path: &Path,
        text: &str,
        compile: DocumentCompiler<'_, P>,
    ) -> Result<Loaded<P>, ConfigError> {
        let source = SourceMap::new(path, text);
        let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                let location = e.location().map(|l| Location {
                    line: l.line(),
                    column: l.column(),
                });
                let diagnostic = Diagnostic {
                    severity: Severity::Error,
                    file: path.to_owned(),
                    location,
                    path: KeyPath::root(),
                    message: format!("invalid YAML: {e}"),
                    hint: Some(
                        "check indentation, quoting and that every key appears once".to_owned(),
                    ),
                };
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    diagnostics: vec![diagnostic],
                });
            }
        };
        let mut diags = Diagnostics::new(&source);
        let config = Self::from_value(&value, &mut diags);
        let policy = compile(&value, &mut diags);
        let has_errors = diags.has_errors();
        let found = diags.into_vec();
        match (config, policy) {
            (Some(config), Some(policy)) if !has_errors => Ok(Loaded {
                config,
                policy,
                warnings: found,
                sha256: sha256_hex(text),
            }),
            _ => Err(ConfigError::Invalid {
                path: path.to_owned(),
                diagnostics: found,
            }),
        }
    }

    /// Deserializes a whole document, recording every unknown key and bad
    /// value (the `policy:` section is left to the policy compiler).
    fn from_value(value: &serde_yaml_ng::Value, diags: &mut Diagnostics<'_>) -> Option<Self> {
        fn section<T: serde::de::DeserializeOwned>(
            value: &serde_yaml_ng::Value,
            path: &KeyPath,
            diags: &mut Diagnostics<'_>,
        ) {
            let _ = deserialize_checked::<T>(value, path, diags, &[]);
        }
        fn admin(value: &serde_yaml_ng::Value, path: &KeyPath, diags: &mut Diagnostics<'_>) {
            let admin = deserialize_checked::<AdminConfig>(
                value,
                path,
                diags,
                &[
                    ("oidc", &oidc),
                    ("webhook", &section::<WebhookConfig>),
                    ("slack", &slack),
                ],
            );
            if let Some(admin) = admin {
                check_admin(&admin, path, diags);
            }
        }
        fn oidc(value: &serde_yaml_ng::Value, path: &KeyPath, diags: &mut Diagnostics<'_>) {
            let _ = deserialize_checked::<OidcConfig>(value, path, diags, &[]);
            check_oidc_login(value, path, diags);
        }
        fn slack(value: &serde_yaml_ng::Value, path: &KeyPath, diags: &mut Diagnostics<'_>) {
            let _ =
                deserialize_checked::<SlackConfig>(value, path, diags, &[("users", &slack_users)]);
            // Read from the YAML itself, so these are reported even when
            // another key of the section is wrong.
            check_slack(value, path, diags);
        }
        /// Each user on its own, so a mistake points at that user.
        fn slack_users(value: &serde_yaml_ng::Value, path: &KeyPath, diags: &mut Diagnostics<'_>) {
            let serde_yaml_ng::Value::Mapping(users) = value else {
                if let Err(e) = serde_yaml_ng::from_value::<
                    std::collections::BTreeMap<String, SlackUser>,
                >(value.clone())
                {
                    checked::report_serde(diags, path, &e);
                }
                return;
            };
            for (user, entry) in users {
                let at = match user.as_str() {
                    Some(user) => path.key(user),
                    None => path.clone(),
                };
                match serde_yaml_ng::from_value::<SlackUser>(entry.clone()) {
                    Ok(parsed) => {
                        check_slack_user(user.as_str().unwrap_or("?"), &parsed, &at, diags);
                    }
                    Err(e) => checked::report_serde(diags, &at, &e),
                }
            }
        }
        /// Left to the compiler the caller passes (`policy:`, `credentials:`).
        fn raw(_: &serde_yaml_ng::Value, _: &KeyPath, _: &mut Diagnostics<'_>) {}
        let config = deserialize_checked::<Self>(
            value,
            &KeyPath::root(),
            diags,
            &[
                ("intercept", &section::<InterceptConfig>),
                ("admin", &admin),
                ("tls", &section::<TlsConfig>),
                ("recording", &section::<RecordingConfig>),
                ("proxy", &section::<ProxyConfig>),
                ("mysql", &section::<MysqlConfig>),
                ("policy", &raw),
                ("credentials", &raw),
            ],
        )?;
        let protocols = KeyPath::root().key("intercept").key("protocols");
        let mut ok = true;
        for (port, protocol) in &config.intercept.protocols {
            if !SUPPORTED_PROTOCOLS.contains(protocol) {
                diags.error(
                    &protocols.key(&port.to_string()),
                    format!("hoop has no driver for protocol `{protocol}` yet"),
                    Some("supported: postgres, mysql".to_owned()),
                );
                ok = false;
            }
        }
        ok.then_some(config)
    }
}

/// What only the whole `admin:` section can say: a Slack webhook needs
/// `admin.slack` (reported once every key of the section parses).
fn check_admin(admin: &AdminConfig, path: &KeyPath, diags: &mut Diagnostics<'_>) {
    if let Some(webhook) = &admin.webhook
        && webhook.format == WebhookFormat::Slack
        && admin.slack.is_none()
    {
        diags.error(
            &path.key("webhook").key("format"),
            "`format: slack` sends Approve and Deny buttons, but admin.slack is not set",
            Some(
                "add admin.slack with signing_secret_file or signing_secret_env, \
                 so hoop can verify the buttons' callbacks"
                    .to_owned(),
            ),
        );
    }
}

/// `admin.oidc` with a `client_id` (the page's login): the client id and
/// usable scopes, `openid` among them.
fn check_oidc_login(value: &serde_yaml_ng::Value, at: &KeyPath, diags: &mut Diagnostics<'_>) {
    let Some(client_id) = value.get("client_id") else {
        return;
    };
    if client_id.as_str().is_some_and(|c| c.trim().is_empty()) {
        diags.error(&at.key("client_id"), "the client id is empty", None);
    }
    let Some(scopes) = value
        .get("scopes")
        .and_then(serde_yaml_ng::Value::as_sequence)
    else {
        return;
    };
    let scopes: Vec<&str> = scopes
        .iter()
        .filter_map(serde_yaml_ng::Value::as_str)
        .collect();
    if !scopes.contains(&"openid") {
        diags.error(
            &at.key("scopes"),
            "an OIDC login needs the `openid` scope",
            Some("e.g. scopes: [openid, email, profile]".to_owned()),
        );
    }
    if let Some(bad) = scopes.iter().find(|s| {
        s.is_empty()
            || s.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    }) {
        diags.error(
            &at.key("scopes"),
            format!("{bad:?} is not a scope (one word per entry)"),
            None,
        );
    }
}

/// `admin.slack`: one secret source, and a usable `ui_url`.
fn check_slack(value: &serde_yaml_ng::Value, at: &KeyPath, diags: &mut Diagnostics<'_>) {
    let file = value.get("signing_secret_file");
    let env = value.get("signing_secret_env");
    match (file, env) {
        (Some(_), None) | (None, Some(_)) => {}
        (None, None) => diags.push(
            Severity::Error,
            at,
            diagnostic::At::Key,
            "the Slack signing secret is not configured",
            Some(
                "set signing_secret_file (a file only hoop can read) or signing_secret_env; \
                 the secret itself never goes in this file"
                    .to_owned(),
            ),
        ),
        (Some(_), Some(_)) => diags.error(
            &at.key("signing_secret_env"),
            "set only one of signing_secret_file and signing_secret_env",
            None,
        ),
    }
    if env
        .and_then(serde_yaml_ng::Value::as_str)
        .is_some_and(|v| v.trim().is_empty())
    {
        diags.error(
            &at.key("signing_secret_env"),
            "the environment variable's name is empty",
            None,
        );
    }
    if let Some(url) = value.get("ui_url").and_then(serde_yaml_ng::Value::as_str)
        && !is_absolute_http_url(url)
    {
        diags.error(
            &at.key("ui_url"),
            format!("`{url}` is not an absolute http:// or https:// URL"),
            Some("e.g. https://hoop.example.com/ui/".to_owned()),
        );
    }
}

/// One `admin.slack.users` entry: a member id, and a hoop identity.
fn check_slack_user(user: &str, entry: &SlackUser, at: &KeyPath, diags: &mut Diagnostics<'_>) {
    if !is_slack_user_id(user) {
        diags.push(
            Severity::Error,
            at,
            diagnostic::At::Key,
            format!("`{user}` is not a Slack user id"),
            Some(
                "use the member id (U… or W…, from the user's profile → Copy member ID), \
                 not a display name"
                    .to_owned(),
            ),
        );
    }
    if entry.identity.trim().is_empty() {
        diags.error(at, "the hoop identity is empty", None);
    }
}

/// Slack member ids: `U` (or `W`, Enterprise Grid) and upper-case letters and digits.
fn is_slack_user_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('U' | 'W'))
        && id.len() >= 3
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn is_absolute_http_url(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|h| !h.is_empty())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(path, text, &|_, _, _| Some(())).map(|l| l.config)
    }

    fn diagnostics(yaml: &str) -> Vec<String> {
        match Config::parse_with(Path::new("/etc/hoop/hoop.yaml"), yaml, &|_, _, _| Some(())) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_are_kept() {
        let config = parse(Path::new("x.yaml"), "").unwrap();
        assert_eq!(config.intercept.ports, [5432]);
        assert_eq!(config.admin.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(config.recording.dir, PathBuf::from("./recordings"));
        assert_eq!(config.proxy.connect_timeout, Duration::from_secs(5));
        let config = parse(Path::new("x.yaml"), "admin:\nrecording: {rows: full}\n").unwrap();
        assert_eq!(config.recording.rows, RecordRows::Full);
    }

    #[test]
    fn every_section_error_is_reported_at_once_with_location_and_key() {
        let yaml = "\
intercept:
  ports: [5432, notaport]
  prots: [1]
admin:
  listen: 127.0.0.1:9464
  oidc:
    issuer: x
    audiance: y
recording:
  rows: everything
  flush_interval: soon
bogus: 1
";
        let found = diagnostics(yaml);
        let expect = [
            "/etc/hoop/hoop.yaml:2:10: error: intercept.ports: invalid type: string \"notaport\", expected u16",
            "/etc/hoop/hoop.yaml:3:3: error: intercept.prots: unknown key `prots` (hint: did you mean \"ports\"?)",
            "/etc/hoop/hoop.yaml:6:3: error: admin.oidc: missing field `audience`",
            "/etc/hoop/hoop.yaml:8:5: error: admin.oidc.audiance: unknown key `audiance` (hint: did you mean \"audience\"?)",
            "/etc/hoop/hoop.yaml:10:9: error: recording.rows: unknown variant `everything`, expected one of `none`, `summary`, `full`",
            "/etc/hoop/hoop.yaml:11:19: error: recording.flush_interval: ",
            "/etc/hoop/hoop.yaml:12:1: error: bogus: unknown key `bogus`",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e}\nin:\n{}",
                found.join("\n")
            );
        }
        assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));
    }

    #[test]
    fn slack_and_the_page_login_are_read() {
        let yaml = "\
admin:
  oidc:
    issuer: https://idp.example.com
    audience: hoop-api
    jwks_url: https://idp.example.com/jwks
    client_id: hoop-ui
    scopes: [openid, email, groups]
  webhook: {url: https://hooks.slack.com/services/T0/B0/x, format: slack}
  slack:
    signing_secret_file: /etc/hoop/slack-signing-secret
    users:
      U024BE7LH: alice@example.com
      W0BOB: {identity: bob@example.com, groups: [dba]}
    ui_url: https://hoop.example.com/ui/
";
        let config = parse(Path::new("x.yaml"), yaml).unwrap();
        let admin = &config.admin;
        assert_eq!(admin.webhook.as_ref().unwrap().format, WebhookFormat::Slack);
        let oidc = admin.oidc.as_ref().unwrap();
        assert_eq!(oidc.client_id.as_deref(), Some("hoop-ui"));
        assert_eq!(oidc.scopes, ["openid", "email", "groups"]);
        let slack = admin.slack.as_ref().unwrap();
        assert_eq!(
            slack.users["U024BE7LH"],
            SlackUser {
                identity: "alice@example.com".to_owned(),
                groups: None
            }
        );
        assert_eq!(
            slack.users["W0BOB"].groups.as_deref(),
            Some(&["dba".to_owned()][..])
        );
        assert_eq!(
            slack.ui_url.as_deref(),
            Some("https://hoop.example.com/ui/")
        );
        // Defaults: the JSON webhook, the standard scopes, no page login.
        let config = parse(
            Path::new("x.yaml"),
            "admin:\n  webhook: {url: http://127.0.0.1:1/x}\n  oidc: {issuer: i, audience: a, jwks_file: /j}\n",
        )
        .unwrap();
        assert_eq!(config.admin.webhook.unwrap().format, WebhookFormat::Json);
        let oidc = config.admin.oidc.unwrap();
        assert_eq!(oidc.scopes, ["openid", "email", "profile"]);
        assert!(oidc.client_id.is_none());
    }

    #[test]
    fn slack_and_login_mistakes_are_reported_with_their_location() {
        let yaml = "\
admin:
  oidc:
    issuer: i
    audience: a
    jwks_file: /j
    client_id: hoop-ui
    scopes: [email]
  webhook: {url: https://hooks.slack.com/x, format: slak}
  slack:
    signing_secret: inline-secrets-are-refused
    users:
      alice: alice@example.com
      U0BOB: {identity: bob@example.com, group: [dba]}
      U0CAROL: ''
    ui_url: hoop.example.com/ui/
";
        let found = diagnostics(yaml);
        let expect = [
            "/etc/hoop/hoop.yaml:7:13: error: admin.oidc.scopes: an OIDC login needs the `openid` scope",
            "/etc/hoop/hoop.yaml:8:53: error: admin.webhook.format: unknown variant `slak`, expected `json` or `slack` (hint: did you mean \"slack\"?)",
            "/etc/hoop/hoop.yaml:10:5: error: admin.slack.signing_secret: unknown key `signing_secret`",
            "/etc/hoop/hoop.yaml:12:7: error: admin.slack.users.alice: `alice` is not a Slack user id",
            "/etc/hoop/hoop.yaml:13:14: error: admin.slack.users.U0BOB: unknown field `group`, expected `identity` or `groups`",
            "/etc/hoop/hoop.yaml:14:16: error: admin.slack.users.U0CAROL: the hoop identity is empty",
            "/etc/hoop/hoop.yaml:15:13: error: admin.slack.ui_url: `hoop.example.com/ui/` is not an absolute http:// or https:// URL",
            "/etc/hoop/hoop.yaml:9:3: error: admin.slack: the Slack signing secret is not configured",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e}\nin:\n{}",
                found.join("\n")
            );
        }
        assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));

        // Once every key parses: what only the whole section can say.
        let yaml = "\
admin:
  webhook: {url: https://hooks.slack.com/x, format: slack}
";
        let found = diagnostics(yaml);
        assert!(
            found[0].starts_with("/etc/hoop/hoop.yaml:2:53: error: admin.webhook.format: `format: slack` sends Approve and Deny buttons, but admin.slack is not set"),
            "{found:?}"
        );
        let yaml = "\
admin:
  oidc: {issuer: i, audience: a, jwks_file: /j, client_id: hoop-ui, scopes: [email, 'two words']}
  slack:
    users:
      alice: alice@example.com
      U0CAROL: ' '
    ui_url: hoop.example.com/ui/
";
        let found = diagnostics(yaml);
        let expect = [
            "/etc/hoop/hoop.yaml:2:77: error: admin.oidc.scopes: an OIDC login needs the `openid` scope",
            "/etc/hoop/hoop.yaml:2:77: error: admin.oidc.scopes: \"two words\" is not a scope",
            "/etc/hoop/hoop.yaml:3:3: error: admin.slack: the Slack signing secret is not configured",
            "/etc/hoop/hoop.yaml:5:7: error: admin.slack.users.alice: `alice` is not a Slack user id",
            "/etc/hoop/hoop.yaml:6:16: error: admin.slack.users.U0CAROL: the hoop identity is empty",
            "/etc/hoop/hoop.yaml:7:13: error: admin.slack.ui_url: `hoop.example.com/ui/` is not an absolute http:// or https:// URL",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e}\nin:\n{}",
                found.join("\n")
            );
        }
        assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));
        let both = "admin:\n  slack:\n    signing_secret_file: /s\n    signing_secret_env: S\n";
        let found = diagnostics(both);
        assert!(
            found[0].starts_with(
                "/etc/hoop/hoop.yaml:4:25: error: admin.slack.signing_secret_env: set only one of"
            ),
            "{found:?}"
        );
    }

    #[test]
    fn the_event_loop_is_hoops_unless_set_to_tokio() {
        let parse = |yaml: &str| parse(Path::new("x.yaml"), yaml).map(|c| c.proxy.event_loop);
        assert_eq!(parse("").ok(), Some(EventLoopKind::Hoop));
        assert_eq!(
            parse("proxy: {event_loop: tokio}").ok(),
            Some(EventLoopKind::Tokio)
        );
        assert_eq!(
            parse("proxy: {event_loop: hoop}").ok(),
            Some(EventLoopKind::Hoop)
        );
        let found = diagnostics("proxy:\n  event_loop: epoll\n");
        assert!(
            found[0]
                .contains("proxy.event_loop: unknown variant `epoll`, expected `hoop` or `tokio`"),
            "{found:?}"
        );
    }

    #[test]
    fn bulk_reads_coalesce_unless_turned_off() {
        let parse =
            |yaml: &str| parse(Path::new("x.yaml"), yaml).map(|c| c.proxy.coalesce_bulk_reads);
        assert_eq!(parse("").ok(), Some(true));
        assert_eq!(
            parse("proxy: {coalesce_bulk_reads: false}").ok(),
            Some(false)
        );
        assert_eq!(parse("proxy: {coalesce_bulk_reads: true}").ok(), Some(true));
        let found = diagnostics(
            "proxy:
  coalesce_bulk_reads: sometimes
",
        );
        assert!(
            found[0].contains("proxy.coalesce_bulk_reads: invalid type"),
            "{found:?}"
        );
    }

    #[test]
    fn syntax_errors_stop_early_with_a_location() {
        let found = diagnostics("intercept:\n  ports: [5432\nadmin: {}\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("/etc/hoop/hoop.yaml:3:"), "{found:?}");
        assert!(found[0].contains("error: invalid YAML"));
        let found = diagnostics("a: 1\na: 2\n");
        assert!(found[0].contains("duplicate"), "{found:?}");
    }

    #[test]
    fn load_reads_files_and_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoop.yaml");
        std::fs::write(&path, "proxy:\n  max_message_size: -1\n").unwrap();
        let err = Config::load_sections(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "{}:2:21: error: proxy.max_message_size:",
                path.display()
            )),
            "{text}"
        );
        assert!(matches!(
            Config::load_sections(&dir.path().join("none.yaml")),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn ports_map_to_protocols_postgres_by_default() {
        let config = parse(Path::new("x.yaml"), "intercept:\n  ports: [5432, 6432]\n").unwrap();
        assert_eq!(config.intercept.protocol(5432), Protocol::Postgres);
        assert_eq!(config.intercept.protocol(6432), Protocol::Postgres);
        let config = parse(
            Path::new("x.yaml"),
            "intercept:\n  ports: [6432]\n  protocols: {6432: postgres}\n",
        )
        .unwrap();
        assert_eq!(config.intercept.protocol(6432), Protocol::Postgres);
        // MySQL is served on 3306 by default, and on any port mapped to it.
        let config = parse(Path::new("x.yaml"), "intercept:\n  ports: [3306]\n").unwrap();
        assert_eq!(config.intercept.protocol(3306), Protocol::Mysql);
        let config = parse(
            Path::new("x.yaml"),
            "intercept:\n  ports: [3307]\n  protocols: {3307: mysql}\n",
        )
        .unwrap();
        assert_eq!(config.intercept.protocol(3307), Protocol::Mysql);
        let found = diagnostics("intercept:\n  protocols: {3306: oracle}\n");
        assert!(found[0].contains("unknown variant `oracle`"), "{found:?}");
    }

    #[test]
    fn mysql_local_infile_is_off_unless_set() {
        let config = parse(Path::new("x.yaml"), "proxy: {}\n").unwrap();
        assert!(!config.mysql.local_infile);
        let config = parse(Path::new("x.yaml"), "mysql:\n  local_infile: true\n").unwrap();
        assert!(config.mysql.local_infile);
        let found = diagnostics("mysql:\n  local_infle: true\n");
        assert!(found[0].contains("local_infle"), "{found:?}");
    }
}
