//! The PostgreSQL session driver: one task per client connection, speaking
//! protocol 3.0 on both legs.
//!
//! - [`startup`](self): SSLRequest/GSSENCRequest/CancelRequest handling, TLS
//!   termination, the upstream connection (with `SO_MARK` and upstream TLS);
//! - `relay`: after the StartupMessage, one loop that reads both legs into
//!   long-lived buffers, decodes every complete frame, forwards untouched
//!   runs as slices of the read buffer (no per-message copy), writes each
//!   batch with one vectored write, and consults governance only at the few
//!   messages that need it. Both directions are driven from one task, which
//!   avoids cross-task wake-ups, and every write is part of the same poll, so
//!   a pipelining client can never deadlock against a server blocked on
//!   output. A leg is only read while the queue towards the other leg is
//!   below a high-water mark: a slow client slows the server.
//!
//! Errors are decided in one place ([`SessionError::client_error`]): what the
//! client is told (a FATAL ErrorResponse with a SQLSTATE) when a session ends
//! on an error.

#![forbid(unsafe_code)]

mod cancel;
pub mod catalog;
pub mod columns;
pub mod copy;
pub mod login;
pub mod refusal;
mod relay;
mod startup;

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpStream;
use tracing::{debug, warn};

pub use cancel::{CancelOutcome, CancelRegistry};
pub use catalog::CatalogStore;

use bytes::BytesMut;
use hoop_config::{Config, EventLoopKind};
use hoop_core::{
    AllowAll, CredentialSource, CredentialUnavailable, DenyHolds, GovernorFactory, HoldBroker,
    InjectedCredential, NoCredentials, Refusal, SessionIdentity, metrics::metrics,
};
use hoop_proto_pg::{
    FrameError, MessageError, notice::ErrorSpec, session::SessionError as StateError,
    startup::StartupPacket,
};
use hoop_relay::{
    Stream,
    dial::{DialError, Dialer},
    event_loop::{self, LoopStream},
    tls::{self, TlsError, UpstreamTlsPolicy},
};

/// Everything a PostgreSQL session needs, shared by all sessions. Cloned
/// (cheaply: shared parts are `Arc`s) where one group of sessions needs
/// another dialer, e.g. a Kubernetes pod's, dialed from its namespace.
#[derive(Clone)]
pub struct PgProxyContext {
    /// Largest message accepted from either side.
    pub max_message_size: usize,
    /// TLS for clients that send SSLRequest (`None` answers `N`).
    pub client_tls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS towards the server.
    pub upstream_tls: UpstreamTlsPolicy,
    /// Cancel keys of live sessions.
    pub cancels: Arc<CancelRegistry>,
    /// Makes each session's governor.
    pub governors: Arc<dyn GovernorFactory>,
    /// The catalog that names result columns by their table OID and
    /// attribute number, lists view dependencies, and gives tables' column
    /// order for COPY (`None`: nothing is resolved, so masking treats every
    /// column it cannot prove clean from SQL as unknown).
    pub catalog: Option<Arc<CatalogStore>>,
    /// Registers holds and delivers decisions.
    pub holds: Arc<dyn HoldBroker>,
    /// Opens upstream connections (`SO_MARK`, connect timeout).
    pub dialer: Dialer,
    /// How often a held client is reminded that it is waiting.
    pub hold_reminder_interval: Duration,
    /// How long a client may take to send its StartupMessage (and finish TLS).
    pub startup_timeout: Duration,
    /// What drives established plaintext sessions.
    pub event_loop: EventLoopKind,
    /// Whether bulk transfers on the relay loop coalesce their reads
    /// (`proxy.coalesce_bulk_reads`).
    pub coalesce_bulk_reads: bool,
    /// The credentials hoop injects (`credentials:`); a session no entry
    /// matches authenticates itself, byte for byte.
    pub credentials: Arc<dyn CredentialSource>,
}

impl std::fmt::Debug for PgProxyContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgProxyContext")
            .field("max_message_size", &self.max_message_size)
            .field("client_tls", &self.client_tls.is_some())
            .field("upstream_tls", &self.upstream_tls.mode)
            .field("dialer", &self.dialer)
            .field("hold_reminder_interval", &self.hold_reminder_interval)
            .field("event_loop", &self.event_loop)
            .field("coalesce_bulk_reads", &self.coalesce_bulk_reads)
            .finish_non_exhaustive()
    }
}

impl PgProxyContext {
    /// A context with safe defaults: 64 MiB messages, no client TLS,
    /// plaintext upstream, allow-all governance, holds denied, reminders
    /// every 30 s, plaintext sessions on hoop's relay loop with bulk reads
    /// coalesced, no credentials injected.
    pub fn new(dialer: Dialer) -> Self {
        Self {
            max_message_size: 64 * 1024 * 1024,
            client_tls: None,
            upstream_tls: UpstreamTlsPolicy::disabled(),
            cancels: CancelRegistry::new(),
            governors: Arc::new(AllowAll),
            catalog: None,
            holds: Arc::new(DenyHolds),
            dialer,
            hold_reminder_interval: Duration::from_secs(30),
            startup_timeout: Duration::from_mins(1),
            event_loop: EventLoopKind::Hoop,
            coalesce_bulk_reads: true,
            credentials: Arc::new(NoCredentials),
        }
    }

    /// A context from the configuration file's `proxy:` and `tls:` sections.
    /// `mark` is the `SO_MARK` for upstream sockets.
    pub fn from_config(
        config: &Config,
        mark: Option<u32>,
        governors: Arc<dyn GovernorFactory>,
        catalog: Option<Arc<CatalogStore>>,
        holds: Arc<dyn HoldBroker>,
    ) -> Result<Self, TlsError> {
        let client_tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(tls::acceptor_from_pem(cert, key)?),
            _ => None,
        };
        Ok(Self {
            max_message_size: config.proxy.max_message_size,
            client_tls,
            upstream_tls: UpstreamTlsPolicy::new(
                config.tls.upstream,
                config.tls.ca_file.as_deref(),
            )?,
            governors,
            catalog,
            holds,
            dialer: Dialer::from_config(&config.proxy, mark),
            event_loop: config.proxy.event_loop,
            coalesce_bulk_reads: config.proxy.coalesce_bulk_reads,
            ..Self::new(Dialer::default())
        })
    }
}

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading from or writing to the client failed.
    #[error("client connection failed")]
    ClientIo(#[source] io::Error),
    /// Reading from or writing to the server failed.
    #[error("server connection failed")]
    ServerIo(#[source] io::Error),
    /// The upstream connection could not be made.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The TLS handshake with the client failed.
    #[error("TLS handshake with the client failed: {0}")]
    ClientTls(#[source] io::Error),
    /// The TLS handshake with the server failed.
    #[error("TLS handshake with the server failed: {0}")]
    UpstreamTls(#[source] io::Error),
    /// `tls.upstream` requires TLS and the server refused it.
    #[error("the server does not accept TLS, and tls.upstream requires it")]
    UpstreamRefusedTls,
    /// A frame from either side had an invalid length.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A client message was malformed.
    #[error("malformed message from the client")]
    ClientMessage(#[source] MessageError),
    /// A server message was malformed.
    #[error("malformed message from the server")]
    ServerMessage(#[source] MessageError),
    /// The server's replies did not match the requests.
    #[error("server replies are out of step with the session")]
    ServerState(#[source] StateError),
    /// The client asked for a protocol other than 3.x.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol {
        /// Major version.
        major: i32,
        /// Minor version.
        minor: i32,
    },
    /// The client sent bytes after SSLRequest before the TLS handshake
    /// (a buffered-data injection attempt, CVE-2021-23222 style).
    #[error("client sent unencrypted data after SSLRequest")]
    DataAfterSslRequest,
    /// The client did not complete its startup in time.
    #[error("client did not send a startup message in time")]
    StartupTimeout,
    /// Result rows arrived that hoop could not attribute to a statement
    /// while governance inspects rows (fail closed).
    #[error("result rows could not be attributed to a statement")]
    UnattributedRows,
    /// The server confirmed a change to a named prepared statement or
    /// cursor in a statement hoop cannot read (fail closed: hoop would no
    /// longer know what the name means).
    #[error("the server confirmed {tag} for a statement hoop cannot read")]
    UnreadableObjectChange {
        /// The command tag.
        tag: String,
    },
    /// Governance ended the session (e.g. its recording failed).
    #[error("governance ended the session: {}", .0.message)]
    Governance(Refusal),
    /// Governance refused a row that could not be made safe.
    #[error("a result row was refused: {}", .0.message)]
    RowRefused(Refusal),
    /// The session's relay task panicked (a bug); its sockets were closed.
    #[error("the session's relay failed unexpectedly")]
    RelayPanicked,
    /// A credential entry matched the session, but its secret cannot be
    /// used (the session is refused rather than passed through).
    #[error(transparent)]
    Credential(CredentialUnavailable),
    /// hoop could not log in upstream with the injected credential.
    #[error("cannot log in as role {role:?} with credential entry `{entry}`: {error}")]
    Login {
        /// The entry.
        entry: String,
        /// The role.
        role: String,
        /// What failed (never the secret).
        #[source]
        error: login::LoginError,
    },
}

impl SessionError {
    /// The bounded `reason` label of `hoop_connection_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClientIo(_) => "client_gone",
            Self::ServerIo(_) => "server_gone",
            Self::ClientTls(_) | Self::UpstreamTls(_) | Self::UpstreamRefusedTls => "tls",
            Self::ClientMessage(_)
            | Self::UnsupportedProtocol { .. }
            | Self::DataAfterSslRequest => "client_protocol",
            Self::ServerMessage(_)
            | Self::ServerState(_)
            | Self::UnattributedRows
            | Self::UnreadableObjectChange { .. } => "server_protocol",
            Self::Frame(_) => "protocol",
            Self::StartupTimeout => "startup_timeout",
            Self::Governance(_) => "governance",
            Self::RowRefused(_) => "row_refused",
            Self::Dial(_) => "upstream_connect",
            Self::RelayPanicked => "internal",
            Self::Credential(_) | Self::Login { .. } => "credential",
        }
    }

    /// What the client is told when the session ends on this error
    /// (`None`: the client is gone or must not be answered).
    pub fn client_error(&self) -> Option<ErrorSpec> {
        let spec = match self {
            Self::ClientIo(_)
            | Self::ClientTls(_)
            | Self::DataAfterSslRequest
            | Self::RelayPanicked => return None,
            Self::ServerIo(_) => {
                ErrorSpec::fatal("08006", "hoop lost the connection to the database server")
            }
            Self::Dial(e) => ErrorSpec::fatal(
                "08001",
                format!("hoop could not connect to the database server: {e}"),
            )
            .with_hint("Check that the server is reachable from the hoop proxy."),
            Self::UpstreamTls(_) | Self::UpstreamRefusedTls => ErrorSpec::fatal(
                "08001",
                format!("hoop could not establish TLS to the database server: {self}"),
            )
            .with_hint("Check tls.upstream in the hoop configuration."),
            Self::Frame(e) => ErrorSpec::fatal("08P01", format!("protocol violation: {e}")),
            Self::ClientMessage(e) => ErrorSpec::fatal(
                "08P01",
                format!("protocol violation: invalid message from the client: {e}"),
            ),
            Self::ServerMessage(e) => ErrorSpec::fatal(
                "08P01",
                format!("protocol violation: invalid message from the server: {e}"),
            ),
            Self::ServerState(e) => ErrorSpec::fatal("08P01", format!("protocol violation: {e}")),
            Self::UnsupportedProtocol { major, minor } => ErrorSpec::fatal(
                "0A000",
                format!("unsupported frontend protocol {major}.{minor}: hoop supports protocol 3"),
            ),
            Self::StartupTimeout => {
                ErrorSpec::fatal("08P01", "timed out waiting for the startup message")
            }
            Self::UnattributedRows => ErrorSpec::fatal(
                "XX000",
                "hoop could not attribute result rows to a statement, so it cannot apply masking",
            )
            .with_hint(
                "hoop cannot see cursors that server-side code opens; for any other statement this is a bug in hoop. The session was closed to keep data safe.",
            ),
            Self::UnreadableObjectChange { tag } => ErrorSpec::fatal(
                "0A000",
                format!(
                    "hoop could not read the statement the server confirmed as {tag}, so it no longer knows what its prepared statement or cursor names mean"
                ),
            )
            .with_hint("Name prepared statements and cursors with plain or double-quoted identifiers."),
            // Both end the session: sent as FATAL.
            Self::Governance(refusal) | Self::RowRefused(refusal) => refusal::fatal(refusal),
            Self::Credential(e) => ErrorSpec::fatal(
                "28000",
                format!("hoop cannot log in to the database for this session: {e}"),
            )
            .with_hint("hoop holds this workload's database credential; its operator must fix it (see hoop's credentials configuration)."),
            Self::Login { entry, role, error } => ErrorSpec::fatal(
                error.sqlstate(),
                format!(
                    "hoop could not log in to the database server as role \"{role}\" with credential entry \"{entry}\": {error}"
                ),
            )
            .with_hint(login_hint(error)),
        };
        Some(spec)
    }
}

/// What the client is advised when an injected login fails.
fn login_hint(error: &login::LoginError) -> &'static str {
    use login::LoginError as E;
    match error.failure() {
        hoop_core::CredentialFailure::UpstreamRejected => {
            "Check the credential entry's secret and the role's password (and pg_hba.conf) on the server; a rotated secret is used from the next connection."
        }
        hoop_core::CredentialFailure::CleartextRefused => {
            "Use TLS to the server (tls.upstream: require or verify-full) or scram-sha-256 on the server; or, knowingly, set allow_cleartext_without_tls on the entry."
        }
        hoop_core::CredentialFailure::UnsupportedMethod => {
            "Have the server check this role with scram-sha-256, md5 or password."
        }
        hoop_core::CredentialFailure::ServerUnverified => {
            "hoop may not be talking to the real server: check the network path to it, and use tls.upstream: verify-full."
        }
        _ if matches!(error, E::Io(_)) => {
            "The database server closed the connection or did not answer in time."
        }
        _ => "The database server's authentication messages were not understood.",
    }
}

/// Moves a session whose legs are both plaintext onto hoop's relay loop
/// (`true`); TLS legs stay with tokio (`false`).
fn onto_loop(client: Stream, server: Stream) -> Result<(Stream, Stream, bool), SessionError> {
    match (client, server) {
        (Stream::Plain(client), Stream::Plain(server)) => Ok((
            Stream::Loop(LoopStream::from_tokio(client).map_err(SessionError::ClientIo)?),
            Stream::Loop(LoopStream::from_tokio(server).map_err(SessionError::ServerIo)?),
            true,
        )),
        (client, server) => Ok((client, server, false)),
    }
}

/// Serves one intercepted client connection to completion.
///
/// `identity` carries the network part (id, workload, client, original
/// destination); the database part is filled from the StartupMessage,
/// ParameterStatus and BackendKeyData. `upstream` is where to connect
/// (normally the original destination).
pub async fn serve(
    ctx: Arc<PgProxyContext>,
    client: TcpStream,
    mut identity: SessionIdentity,
    upstream: SocketAddr,
) -> Result<(), SessionError> {
    let _ = client.set_nodelay(true);
    let accepted = match tokio::time::timeout(
        ctx.startup_timeout,
        startup::accept(&ctx, client, &mut identity),
    )
    .await
    {
        Ok(Ok(Some(accepted))) => accepted,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => {
            warn!(session = %identity, error = %e, "session startup failed");
            return Err(e);
        }
        Err(_) => {
            warn!(session = %identity, "client did not complete startup in time");
            return Err(SessionError::StartupTimeout);
        }
    };
    let mut client = accepted.client;
    let credential = match injected(&ctx, &accepted.startup, &mut identity) {
        Ok(credential) => credential,
        Err(e) => {
            record_refused(&ctx, &identity, &e);
            startup::tell_client(&mut client, e.client_error()).await;
            return Err(e);
        }
    };
    let mut server = match startup::connect_upstream(&ctx, upstream, &mut identity).await {
        Ok(server) => server,
        Err(e) => {
            warn!(session = %identity, %upstream, error = %e, "could not connect upstream");
            startup::tell_client(&mut client, e.client_error()).await;
            return Err(e);
        }
    };
    debug!(session = %identity, %upstream, "upstream connected");
    // With an injected credential hoop has logged in already: the relay
    // starts at the server's AuthenticationOk. Otherwise it starts by
    // forwarding the client's StartupMessage, and the authentication
    // exchange passes through untouched.
    let (startup_to_send, server_buf) = match credential {
        None => (Some(accepted.startup.raw.clone()), BytesMut::new()),
        Some((credential, message)) => {
            match log_in(&ctx, &mut server, &message, &credential, &identity).await {
                Ok(buf) => (None, buf),
                Err(e) => {
                    record_refused(&ctx, &identity, &e);
                    startup::tell_client(&mut client, e.client_error()).await;
                    return Err(e);
                }
            }
        }
    };
    let (client, server, on_loop) = match ctx.event_loop {
        EventLoopKind::Hoop if event_loop::available() => onto_loop(client, server)?,
        // `proxy.event_loop: tokio`, or no relay loop could be started.
        EventLoopKind::Hoop | EventLoopKind::Tokio => (client, server, false),
    };
    let relay = relay::Relay::new(
        ctx,
        identity.clone(),
        upstream,
        (client, accepted.buffer),
        (server, server_buf),
        startup_to_send,
    );
    let result = if on_loop {
        event_loop::spawn(relay.run())
            .await
            .unwrap_or(Err(SessionError::RelayPanicked))
    } else {
        relay.run().await
    };
    match &result {
        Ok(()) => debug!(session = %identity, "session ended"),
        Err(SessionError::ClientIo(e)) => {
            debug!(session = %identity, error = %e, "client connection closed");
        }
        Err(e) => warn!(session = %identity, error = %e, "session ended on error"),
    }
    result
}

/// The credential to inject into this session, if an entry matches it,
/// with the StartupMessage to send upstream in place of the client's.
/// Fills in the identity's injected role and credential entry.
fn injected(
    ctx: &PgProxyContext,
    startup: &hoop_proto_pg::Frame,
    identity: &mut SessionIdentity,
) -> Result<Option<(InjectedCredential, bytes::Bytes)>, SessionError> {
    let credential = match ctx.credentials.credential_for(identity) {
        Ok(Some(credential)) => credential,
        Ok(None) => return Ok(None),
        Err(e) => return Err(SessionError::Credential(e)),
    };
    // Parsed once already by `startup::accept`; a StartupMessage it is.
    let Ok(StartupPacket::Startup(client)) = StartupPacket::parse(startup.body()) else {
        return Ok(None);
    };
    let message = login::injected_startup(&client, &credential);
    identity.injected_role = Some(credential.role.clone());
    identity.credential = Some(credential.entry.clone());
    identity.database = Some(credential.database.clone());
    Ok(Some((credential, message)))
}

/// Records a session whose injected login failed: who tried, with which
/// entry and role, and why (never the secret). It ends before it started,
/// so the recording holds its identity and the reason only.
fn record_refused(ctx: &PgProxyContext, identity: &SessionIdentity, error: &SessionError) {
    let mut governor = ctx
        .governors
        .session(identity, Arc::new(hoop_core::NoCatalog));
    let reason = error.to_string();
    governor.observe(hoop_core::SessionEvent::Ended { reason: &reason });
}

/// Logs in upstream with an injected credential, within the start-up
/// timeout, counting and logging a failure (never the secret).
async fn log_in(
    ctx: &PgProxyContext,
    server: &mut Stream,
    startup: &bytes::Bytes,
    credential: &InjectedCredential,
    identity: &SessionIdentity,
) -> Result<BytesMut, SessionError> {
    let upstream_tls = identity.upstream_tls;
    let result = tokio::time::timeout(
        ctx.startup_timeout,
        login::log_in(
            server,
            startup,
            credential,
            upstream_tls,
            ctx.max_message_size,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(login::LoginError::Io(std::io::Error::new(
            io::ErrorKind::TimedOut,
            "the server did not finish authentication in time",
        )))
    });
    match result {
        Ok(buf) => {
            metrics()
                .credential_injections_total
                .with_label_values(&[credential.entry.as_str()])
                .inc();
            debug!(session = %identity, credential = %credential.entry, role = %credential.role, "logged in upstream with an injected credential");
            Ok(buf)
        }
        Err(error) => {
            error.failure().count();
            warn!(session = %identity, credential = %credential.entry, role = %credential.role, error = %error, "injected login failed");
            Err(SessionError::Login {
                entry: credential.entry.clone(),
                role: credential.role.clone(),
                error,
            })
        }
    }
}
