//! The MySQL/MariaDB session driver: one task per client connection.
//!
//! - [`startup`](self): connect upstream first, relay the server's own
//!   greeting with the capability bits hoop cannot handle cleared (the same
//!   bits cleared in the client's response, so both legs agree), then relay
//!   the authentication exchange byte for byte: the server's OK or ERR
//!   decides, and hoop never holds a password.
//! - [`relay`]: the command phase. Commands are read one at a time; each is
//!   judged (COM_QUERY, COM_STMT_PREPARE) or refused (what hoop cannot
//!   govern) before anything of it goes upstream, and its reply is relayed
//!   packet by packet, rows rewritten where governance asks (rows nothing
//!   rewrites go straight from the server leg's read buffer). Once the
//!   connection phase is over, a session whose legs are both plaintext runs
//!   on hoop's relay loop (`proxy.event_loop: hoop`, the default), as
//!   PostgreSQL sessions do.
//! - [`catalog`]: which tables are base tables (so that a column
//!   definition's `org_table`/`org_name` may be trusted) and which tables
//!   each view reads, fetched in-band on the session's own connection.
//! - [`refusal`]: a [`hoop_core::Refusal`] as an ERR packet.
//!
//! - [`infile`](self): LOAD DATA LOCAL INFILE, off unless
//!   `mysql.local_infile` is set (`CLIENT_LOCAL_FILES` cleared). When on, a
//!   server's file request is relayed only after an allowed statement that
//!   names the same file; any other is answered with an empty file and the
//!   client gets an ERR.
//!
//! Not yet handled, and refused or cleared instead (fail closed):
//! compression, COM_STMT_BULK_EXECUTE, binlog dump, register-slave and
//! clone.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod full_auth;
mod infile;
pub mod kill;
mod leg;
pub mod refusal;
mod relay;
mod startup;

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use hoop_config::{Config, EventLoopKind};
use hoop_core::{AllowAll, DenyHolds, GovernorFactory, HoldBroker, Refusal, SessionIdentity};
use hoop_proto_mysql::{
    err::{ErrPacket, codes},
    frame::FrameError,
    session::SessionError as StateError,
    wire::MessageError,
};
use hoop_relay::{
    Stream,
    dial::{DialError, Dialer},
    event_loop::{self, LoopStream},
    tls::{self, TlsError, UpstreamTlsPolicy},
};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

/// Everything a MySQL session needs, shared by all sessions (cloned per
/// pod in node mode, with a dialer that leaves from the pod).
#[derive(Clone)]
pub struct MysqlProxyContext {
    /// Largest logical packet accepted from either side.
    pub max_packet_size: usize,
    /// Makes each session's governor.
    pub governors: Arc<dyn GovernorFactory>,
    /// Registers holds and delivers decisions.
    pub holds: Arc<dyn HoldBroker>,
    /// Opens upstream connections (`SO_MARK`, connect timeout).
    pub dialer: Dialer,
    /// How often a held client that shows MariaDB progress reports is
    /// reminded that it is waiting.
    pub hold_reminder_interval: Duration,
    /// How long the connection phase (greeting to the server's OK) may take.
    pub startup_timeout: Duration,
    /// Sessions whose statement is held, for `KILL`.
    pub kills: Arc<kill::KillRegistry>,
    /// TLS for clients that ask for it (`tls.cert`/`tls.key`; `None`: hoop
    /// does not offer TLS, and clears `CLIENT_SSL` in the greeting).
    pub client_tls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS towards the server (`tls.upstream`).
    pub upstream_tls: UpstreamTlsPolicy,
    /// `mysql.local_infile`: keep `CLIENT_LOCAL_FILES` and honour a LOAD
    /// DATA LOCAL INFILE file request that follows an allowed statement
    /// naming the same file (default `false`: the bit is cleared and every
    /// request refused).
    pub local_infile: bool,
    /// hoop's RSA key for caching_sha2 full authentication when the client
    /// leg is plaintext and the server leg TLS: the TLS key when it is RSA,
    /// else generated on first use (memory only).
    pub hoop_key: Arc<full_auth::HoopKeySlot>,
    /// `proxy.event_loop`: what drives a session once its connection phase
    /// is over and both legs are plaintext (hoop's relay loop by default;
    /// TLS sessions stay on tokio).
    pub event_loop: EventLoopKind,
    /// `proxy.coalesce_bulk_reads`: whether bulk transfers on the relay loop
    /// coalesce their reads.
    pub coalesce_bulk_reads: bool,
}

impl std::fmt::Debug for MysqlProxyContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlProxyContext")
            .field("max_packet_size", &self.max_packet_size)
            .field("dialer", &self.dialer)
            .field("hold_reminder_interval", &self.hold_reminder_interval)
            .finish_non_exhaustive()
    }
}

impl MysqlProxyContext {
    /// A context with safe defaults: 64 MiB packets, allow-all governance,
    /// holds denied, reminders every 30 s.
    pub fn new(dialer: Dialer) -> Self {
        Self {
            max_packet_size: 64 * 1024 * 1024,
            governors: Arc::new(AllowAll),
            holds: Arc::new(DenyHolds),
            dialer,
            hold_reminder_interval: Duration::from_secs(30),
            startup_timeout: Duration::from_mins(1),
            kills: kill::KillRegistry::new(),
            client_tls: None,
            upstream_tls: UpstreamTlsPolicy::disabled(),
            local_infile: false,
            hoop_key: Arc::new(full_auth::HoopKeySlot::default()),
            event_loop: EventLoopKind::Hoop,
            coalesce_bulk_reads: true,
        }
    }

    /// A context from the configuration file's `proxy:` and `tls:`
    /// sections.
    pub fn from_config(
        config: &Config,
        mark: Option<u32>,
        governors: Arc<dyn GovernorFactory>,
        holds: Arc<dyn HoldBroker>,
    ) -> Result<Self, TlsError> {
        let client_tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(tls::acceptor_from_pem(cert, key)?),
            _ => None,
        };
        let hoop_key = Arc::new(
            config
                .tls
                .key
                .as_deref()
                .and_then(full_auth::HoopKey::from_tls_key_file)
                .map(full_auth::HoopKeySlot::with_key)
                .unwrap_or_default(),
        );
        Ok(Self {
            client_tls,
            hoop_key,
            upstream_tls: UpstreamTlsPolicy::new(
                config.tls.upstream,
                config.tls.ca_file.as_deref(),
            )?,
            max_packet_size: config.proxy.max_message_size,
            governors,
            holds,
            dialer: Dialer::from_config(&config.proxy, mark),
            hold_reminder_interval: config.proxy.hold_reminder_interval,
            local_infile: config.mysql.local_infile,
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
    /// A packet from the client had an invalid length or sequence id.
    #[error("invalid packet from the client: {0}")]
    ClientFrame(#[source] FrameError),
    /// A packet from the server had an invalid length or sequence id.
    #[error("invalid packet from the server: {0}")]
    ServerFrame(#[source] FrameError),
    /// A client packet was malformed.
    #[error("malformed packet from the client: {0}")]
    ClientMessage(#[source] MessageError),
    /// A server packet was malformed.
    #[error("malformed packet from the server: {0}")]
    ServerMessage(#[source] MessageError),
    /// The packets of either side did not match the session's state.
    #[error("the session is out of step: {0}")]
    State(#[source] StateError),
    /// The client asked for something hoop cannot relay on this connection.
    #[error("{0}")]
    Unsupported(String),
    /// caching_sha2 full authentication could not be translated between a
    /// TLS leg and a plaintext one.
    #[error("caching_sha2 full authentication could not be translated: {0}")]
    AuthTranslation(#[source] full_auth::TranslationError),
    /// The TLS handshake with the client failed.
    #[error("TLS handshake with the client failed: {0}")]
    ClientTls(#[source] io::Error),
    /// The TLS handshake with the server failed.
    #[error("TLS handshake with the server failed: {0}")]
    UpstreamTls(#[source] io::Error),
    /// `tls.upstream` requires TLS and the server does not offer it.
    #[error("the server does not offer TLS, and tls.upstream requires it")]
    UpstreamRefusedTls,
    /// The connection phase did not finish in time.
    #[error("the connection phase did not finish in time")]
    StartupTimeout,
    /// Governance ended the session (its recording failed).
    #[error("governance ended the session: {}", .0.message)]
    Governance(Refusal),
    /// Governance refused a row that could not be made safe.
    #[error("a result row was refused: {}", .0.message)]
    RowRefused(Refusal),
    /// The session's relay task panicked (a bug); its sockets were closed.
    #[error("the session's relay failed unexpectedly")]
    RelayPanicked,
    /// The server ended the session between commands (`KILL`,
    /// `wait_timeout`, a shutdown); the client's connection was closed the
    /// same way, after the ERR the server sent, if any.
    #[error("the server closed the connection between commands")]
    ServerClosed,
    /// The server sent something other than an ERR between commands.
    #[error("the server sent a packet between commands that was not an error")]
    Unsolicited,
}

impl SessionError {
    /// The bounded `reason` label of `hoop_connection_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClientIo(_) => "client_gone",
            Self::ServerIo(_) | Self::ServerClosed => "server_gone",
            Self::Dial(_) => "upstream_connect",
            Self::ClientFrame(_)
            | Self::ClientMessage(_)
            | Self::Unsupported(_)
            | Self::AuthTranslation(_) => "client_protocol",
            Self::ServerFrame(_) | Self::ServerMessage(_) | Self::State(_) | Self::Unsolicited => {
                "server_protocol"
            }
            Self::StartupTimeout => "startup_timeout",
            Self::ClientTls(_) | Self::UpstreamTls(_) | Self::UpstreamRefusedTls => "tls",
            Self::Governance(_) => "governance",
            Self::RowRefused(_) => "row_refused",
            Self::RelayPanicked => "internal",
        }
    }

    /// What the client is told when the session ends on this error (`None`:
    /// the client is gone).
    pub fn client_error(&self) -> Option<ErrPacket> {
        Some(match self {
            // After `ServerClosed` the client has what the server sent.
            Self::ClientIo(_) | Self::ClientTls(_) | Self::RelayPanicked | Self::ServerClosed => {
                return None;
            }
            Self::UpstreamTls(_) | Self::UpstreamRefusedTls => ErrPacket::new(
                2026,
                *b"HY000",
                format!(
                    "hoop could not establish TLS to the database server: {self} (check tls.upstream)"
                ),
            ),
            Self::ServerIo(_) => ErrPacket::new(
                2013,
                *b"08S01",
                "hoop lost the connection to the database server",
            ),
            Self::Dial(e) => ErrPacket::new(
                2003,
                *b"08S01",
                format!("hoop could not connect to the database server: {e}"),
            ),
            Self::ClientFrame(_) | Self::ClientMessage(_) | Self::State(_) => ErrPacket::new(
                1047,
                *b"08S01",
                format!("hoop closed the connection: {self}"),
            ),
            Self::ServerFrame(_) | Self::ServerMessage(_) | Self::Unsolicited => ErrPacket::new(
                2027,
                *b"08S01",
                format!("hoop closed the connection: {self}"),
            ),
            Self::AuthTranslation(_) => ErrPacket::new(1045, *b"28000", format!("hoop: {self}")),
            Self::Unsupported(m) => {
                ErrPacket::from_code(codes::NOT_SUPPORTED, format!("hoop: {m}"))
            }
            Self::StartupTimeout => ErrPacket::new(
                2013,
                *b"08S01",
                "hoop closed the connection: the connection phase did not finish in time",
            ),
            Self::Governance(r) | Self::RowRefused(r) => refusal::err(r),
        })
    }
}

/// Moves a session whose legs are both plaintext onto hoop's relay loop
/// (`true`), where bulk transfers coalesce their reads when `coalesce`;
/// TLS legs stay with tokio (`false`). Bytes a leg has read and not yet
/// decoded stay in its buffer.
fn onto_loop(connected: &mut startup::Connected, coalesce: bool) -> Result<bool, SessionError> {
    let (client, server) = (&mut connected.client, &mut connected.server);
    match (client.take_stream(), server.take_stream()) {
        (Some(Stream::Plain(c)), Some(Stream::Plain(s))) => {
            client.set_stream(Stream::Loop(
                LoopStream::from_tokio(c).map_err(SessionError::ClientIo)?,
            ));
            server.set_stream(Stream::Loop(
                LoopStream::from_tokio(s).map_err(SessionError::ServerIo)?,
            ));
            client.coalesce_bulk_reads(coalesce);
            server.coalesce_bulk_reads(coalesce);
            Ok(true)
        }
        (c, s) => {
            if let Some(c) = c {
                client.set_stream(c);
            }
            if let Some(s) = s {
                server.set_stream(s);
            }
            Ok(false)
        }
    }
}

/// Serves one intercepted client connection to completion.
///
/// `identity` carries the network part; the database part is filled from
/// the handshake. `upstream` is where to connect.
pub async fn serve(
    ctx: Arc<MysqlProxyContext>,
    client: TcpStream,
    mut identity: SessionIdentity,
    upstream: SocketAddr,
) -> Result<(), SessionError> {
    let _ = client.set_nodelay(true);
    let result = startup::connect(&ctx, client, &mut identity, upstream).await;
    let Some(connected) = result? else {
        return Ok(());
    };
    debug!(session = %identity, %upstream, "mysql session authenticated");
    let mut connected = connected;
    let on_loop = match ctx.event_loop {
        EventLoopKind::Hoop if event_loop::available() => {
            onto_loop(&mut connected, ctx.coalesce_bulk_reads)?
        }
        // `proxy.event_loop: tokio`, or no relay loop could be started.
        EventLoopKind::Hoop | EventLoopKind::Tokio => false,
    };
    let relay = relay::Relay::new(ctx, identity.clone(), connected);
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
        Err(SessionError::ServerClosed) => {
            info!(session = %identity, "session ended: the server closed it between commands");
        }
        Err(e) => warn!(session = %identity, error = %e, "session ended on error"),
    }
    result
}
