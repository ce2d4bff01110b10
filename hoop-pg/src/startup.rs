//! The startup phase: SSLRequest / GSSENCRequest / CancelRequest /
//! StartupMessage from the client, and the upstream connection.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use hoop_config::UpstreamTls;
use hoop_core::SessionIdentity;
use hoop_proto_pg::{
    Direction, Frame, FrameDecoder,
    notice::ErrorSpec,
    startup::{StartupPacket, ssl_request},
};
use hoop_relay::{Stream, tls::UpstreamTlsPolicy};

use super::{PgProxyContext, SessionError};

/// PostgreSQL's own limit on a startup packet.
const MAX_STARTUP_PACKET: usize = 10_000;

/// A client that sent its StartupMessage.
pub(super) struct Accepted {
    pub(super) client: Stream,
    /// Bytes the client sent after the StartupMessage.
    pub(super) buffer: BytesMut,
    /// The StartupMessage, as received.
    pub(super) startup: Frame,
}

/// Sends a final error to the client, best effort.
pub(super) async fn tell_client(client: &mut Stream, spec: Option<ErrorSpec>) {
    if let Some(spec) = spec {
        let _ = client.write_all(&spec.encode()).await;
        let _ = client.flush().await;
    }
}

/// Runs the client's startup phase. `None`: nothing more to do (a cancel
/// request, or the client left).
pub(super) async fn accept(
    ctx: &PgProxyContext,
    tcp: TcpStream,
    identity: &mut SessionIdentity,
) -> Result<Option<Accepted>, SessionError> {
    let decoder = FrameDecoder::new(
        Direction::Frontend,
        ctx.max_message_size.min(MAX_STARTUP_PACKET),
    );
    let mut client = Stream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let frame = loop {
            match decoder.decode_startup(&mut buf) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => {
                    let e = SessionError::Frame(e);
                    tell_client(&mut client, e.client_error()).await;
                    return Err(e);
                }
            }
            if client
                .read_buf(&mut buf)
                .await
                .map_err(SessionError::ClientIo)?
                == 0
            {
                return Ok(None);
            }
        };
        let packet = match StartupPacket::parse(frame.body()) {
            Ok(p) => p,
            Err(e) => {
                let e = match e {
                    hoop_proto_pg::MessageError::InvalidValue {
                        field: "startup protocol version",
                        value,
                    } => SessionError::UnsupportedProtocol {
                        major: (value >> 16) as i32,
                        minor: (value & 0xffff) as i32,
                    },
                    e => SessionError::ClientMessage(e),
                };
                tell_client(&mut client, e.client_error()).await;
                return Err(e);
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                if !buf.is_empty() {
                    return Err(SessionError::DataAfterSslRequest);
                }
                client = match (client, &ctx.client_tls) {
                    (Stream::Plain(mut tcp), Some(acceptor)) => {
                        tcp.write_all(b"S").await.map_err(SessionError::ClientIo)?;
                        let tls = acceptor
                            .accept(tcp)
                            .await
                            .map_err(SessionError::ClientTls)?;
                        identity.client_tls = true;
                        Stream::ServerTls(Box::new(tls))
                    }
                    (mut other, _) => {
                        other
                            .write_all(b"N")
                            .await
                            .map_err(SessionError::ClientIo)?;
                        other
                    }
                };
            }
            StartupPacket::GssEncRequest => {
                if !buf.is_empty() {
                    return Err(SessionError::DataAfterSslRequest);
                }
                client
                    .write_all(b"N")
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
            StartupPacket::Cancel(cancel) => {
                let outcome = ctx
                    .cancels
                    .cancel(cancel.pid, cancel.secret, frame.raw.clone(), &ctx.dialer)
                    .await;
                debug!(session = %identity, pid = cancel.pid, ?outcome, "cancel request");
                return Ok(None);
            }
            StartupPacket::Startup(message) => {
                identity.user = message.user().map(str::to_owned);
                identity.database = message.database().map(str::to_owned);
                identity.application_name = message.application_name().map(str::to_owned);
                debug!(session = %identity, protocol = message.protocol, "startup message");
                drop(message);
                return Ok(Some(Accepted {
                    client,
                    buffer: buf,
                    startup: frame,
                }));
            }
        }
    }
}

/// Connects to the server and negotiates TLS per `tls.upstream`.
pub(super) async fn connect_upstream(
    ctx: &PgProxyContext,
    addr: std::net::SocketAddr,
    identity: &mut SessionIdentity,
) -> Result<Stream, SessionError> {
    let mut tcp = ctx.dialer.connect(addr).await?;
    let Some(connector) = ctx.upstream_tls.connector() else {
        return Ok(Stream::Plain(tcp));
    };
    tcp.write_all(&ssl_request())
        .await
        .map_err(SessionError::ServerIo)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(SessionError::ServerIo)?;
    match answer[0] {
        b'S' => {
            let tls = connector
                .connect(UpstreamTlsPolicy::server_name(addr), tcp)
                .await
                .map_err(SessionError::UpstreamTls)?;
            identity.upstream_tls = true;
            Ok(Stream::ClientTls(Box::new(tls)))
        }
        b'N' if ctx.upstream_tls.mode == UpstreamTls::Prefer => Ok(Stream::Plain(tcp)),
        _ => Err(SessionError::UpstreamRefusedTls),
    }
}
