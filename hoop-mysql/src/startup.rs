//! The connection phase: dial upstream, relay the server's own greeting
//! with the capability bits hoop cannot handle cleared, clear the same bits
//! in the client's response, relay the authentication exchange byte for
//! byte, and learn the catalog before the client's first command.

use std::{net::SocketAddr, sync::Arc};

use hoop_core::SessionIdentity;
use hoop_proto_mysql::{
    capabilities::{Capabilities, hoop_cleared, relayed},
    command::Command,
    err::ErrPacket,
    frame::Direction,
    handshake::{ClientHello, Greeting},
    row_text::TextRow,
    session::{Origin, ServerPacket, Session, SessionConfig},
};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::{
    MysqlProxyContext, SessionError,
    catalog::{BASE_TABLES_QUERY, SessionCatalog, VIEWS_QUERY},
    leg::{Leg, ReadError},
};

/// An authenticated session, ready for commands.
pub(crate) struct Connected {
    pub client: Leg,
    pub server: Leg,
    pub session: Session,
    pub catalog: Arc<SessionCatalog>,
}

pub(crate) fn client_read_error(e: ReadError) -> SessionError {
    match e {
        ReadError::Io(e) => SessionError::ClientIo(e),
        ReadError::Frame(e) => SessionError::ClientFrame(e),
    }
}

pub(crate) fn server_read_error(e: ReadError) -> SessionError {
    match e {
        ReadError::Io(e) => SessionError::ServerIo(e),
        ReadError::Frame(e) => SessionError::ServerFrame(e),
    }
}

fn eof() -> std::io::Error {
    std::io::ErrorKind::UnexpectedEof.into()
}

/// Tells the client why its connection ends (best effort).
pub(crate) async fn tell_client(client: &mut Leg, seq: u8, error: &SessionError) {
    if let Some(err) = error.client_error() {
        client.queue_packet(seq, &err.encode());
        let _ = client.flush().await;
    }
}

/// Runs the connection phase. `Ok(None)`: it ended without a session (the
/// server refused the login or sent an error instead of its greeting; the
/// client was told).
pub(crate) async fn connect(
    ctx: &MysqlProxyContext,
    client: TcpStream,
    identity: &mut SessionIdentity,
    upstream: SocketAddr,
) -> Result<Option<Connected>, SessionError> {
    let mut client = Leg::new(client, Direction::ClientToServer, ctx.max_packet_size);
    let server = match ctx.dialer.connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            let e = SessionError::Dial(e);
            warn!(session = %identity, %upstream, error = %e, "could not connect upstream");
            tell_client(&mut client, 0, &e).await;
            return Err(e);
        }
    };
    let server = Leg::new(server, Direction::ServerToClient, ctx.max_packet_size);
    let mut seq_to_client = 0;
    let result = tokio::time::timeout(
        ctx.startup_timeout,
        handshake(&mut client, server, identity, &mut seq_to_client),
    )
    .await
    .unwrap_or(Err(SessionError::StartupTimeout));
    match result {
        Ok(Some((server, session, catalog))) => Ok(Some(Connected {
            client,
            server,
            session,
            catalog,
        })),
        Ok(None) => Ok(None),
        Err(e) => {
            warn!(session = %identity, error = %e, "mysql connection phase failed");
            tell_client(&mut client, seq_to_client, &e).await;
            Err(e)
        }
    }
}

type Handshaken = Option<(Leg, Session, Arc<SessionCatalog>)>;

async fn handshake(
    client: &mut Leg,
    mut server: Leg,
    identity: &mut SessionIdentity,
    seq_to_client: &mut u8,
) -> Result<Handshaken, SessionError> {
    let mut session = Session::new(SessionConfig {
        track_columns: true,
    });
    // 1. The server's greeting, relayed with the bits hoop cannot handle
    //    cleared. TLS is not offered: hoop does not terminate it for MySQL
    //    yet, and a client that requires it gets a clear error from its own
    //    library.
    let greeting = server
        .read()
        .await
        .map_err(server_read_error)?
        .ok_or_else(|| SessionError::ServerIo(eof()))?;
    if greeting.payload.first() == Some(&hoop_proto_mysql::err::ERR_HEADER) {
        // Host blocked, too many connections: relayed, and the end.
        session
            .server_packet(greeting.seq, &greeting.payload)
            .map_err(SessionError::State)?;
        client.queue(&greeting.raw);
        client.flush().await.map_err(SessionError::ClientIo)?;
        return Ok(None);
    }
    let parsed = Greeting::parse(&greeting.payload).map_err(SessionError::ServerMessage)?;
    let kept = relayed(
        parsed.capabilities,
        false,
        parsed.capabilities.has_mariadb_extensions(),
    )
    .without(Capabilities::SSL);
    let relayed_greeting = parsed
        .with_capabilities(kept)
        .map_err(SessionError::ServerMessage)?;
    session
        .server_packet(greeting.seq, &relayed_greeting)
        .map_err(SessionError::State)?;
    identity.server_session_id = Some(parsed.thread_id);
    *seq_to_client = client.queue_packet(greeting.seq, &relayed_greeting);
    client.flush().await.map_err(SessionError::ClientIo)?;

    // 2. The client's response, with the same bits cleared.
    let hello = client
        .read()
        .await
        .map_err(client_read_error)?
        .ok_or_else(|| SessionError::ClientIo(eof()))?;
    *seq_to_client = hello.next_seq();
    let response = match ClientHello::parse(&hello.payload).map_err(SessionError::ClientMessage)? {
        ClientHello::SslRequest(_) => {
            return Err(SessionError::Unsupported(
                "the client asked for TLS, which hoop does not offer on MySQL connections yet \
                 (connect without TLS, e.g. --ssl=0 or ssl-mode=DISABLED)"
                    .into(),
            ));
        }
        ClientHello::Response(r) => r,
    };
    let forwarded = response
        .with_cleared(hoop_cleared(false).union(Capabilities::SSL))
        .map_err(SessionError::ClientMessage)?;
    session
        .client_hello(hello.seq, &forwarded)
        .map_err(SessionError::State)?;
    identity.user = Some(String::from_utf8_lossy(&response.user).into_owned());
    identity.database = response
        .database
        .as_ref()
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).into_owned());
    identity.application_name = response
        .attributes
        .as_ref()
        .and_then(|a| a.get("program_name"))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    server.queue_packet(hello.seq, &forwarded);
    server.flush().await.map_err(SessionError::ServerIo)?;

    // 3. The auth exchange, byte for byte, until the server's OK or ERR.
    loop {
        tokio::select! {
            packet = server.read() => {
                let packet = packet
                    .map_err(server_read_error)?
                    .ok_or_else(|| SessionError::ServerIo(eof()))?;
                let event = session
                    .server_packet(packet.seq, &packet.payload)
                    .map_err(SessionError::State)?;
                *seq_to_client = packet.next_seq();
                match event.packet {
                    ServerPacket::AuthOk => {
                        // The catalog is read before the client can send
                        // anything: the OK is held until then.
                        let catalog = SessionCatalog::new();
                        if let Err(e) = refresh_catalog(&mut server, &mut session, &catalog).await {
                            warn!(session = %identity, error = %e, "cannot read the catalog; column names from the server are not trusted");
                        }
                        client.queue(&packet.raw);
                        client.flush().await.map_err(SessionError::ClientIo)?;
                        return Ok(Some((server, session, catalog)));
                    }
                    ServerPacket::AuthError => {
                        debug!(session = %identity, "the server refused the login");
                        client.queue(&packet.raw);
                        client.flush().await.map_err(SessionError::ClientIo)?;
                        return Ok(None);
                    }
                    _ => {
                        client.queue(&packet.raw);
                        client.flush().await.map_err(SessionError::ClientIo)?;
                    }
                }
            }
            packet = client.read() => {
                let packet = packet
                    .map_err(client_read_error)?
                    .ok_or_else(|| SessionError::ClientIo(eof()))?;
                session
                    .client_data(packet.seq, packet.payload.len())
                    .map_err(SessionError::State)?;
                server.queue(&packet.raw);
                server.flush().await.map_err(SessionError::ServerIo)?;
            }
        }
    }
}

/// Reads the base tables and views on the session's own connection (while
/// the client waits for nothing: between commands). An error leaves the
/// catalog as it was.
pub(crate) async fn refresh_catalog(
    server: &mut Leg,
    session: &mut Session,
    catalog: &SessionCatalog,
) -> Result<(), SessionError> {
    let tables = injected_query(server, session, BASE_TABLES_QUERY).await?;
    let views = injected_query(server, session, VIEWS_QUERY).await?;
    let (Some(tables), Some(views)) = (tables, views) else {
        return Ok(());
    };
    let text = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    catalog.load(
        tables
            .iter()
            .filter(|r| r.len() == 2)
            .map(|r| (text(&r[0]), text(&r[1])))
            .collect(),
        views
            .iter()
            .filter(|r| r.len() == 3)
            .map(|r| (text(&r[0]), text(&r[1]), text(&r[2])))
            .collect(),
    );
    Ok(())
}

type Rows = Vec<Vec<Option<Vec<u8>>>>;

/// Runs a query of hoop's own and returns its rows (`None` when the server
/// answered ERR). Its reply never reaches the client.
async fn injected_query(
    server: &mut Leg,
    session: &mut Session,
    sql: &str,
) -> Result<Option<Rows>, SessionError> {
    let command = Command::Query {
        sql: sql.as_bytes(),
        attributes: None,
    };
    let payload = command
        .encode(session.capabilities())
        .map_err(SessionError::ClientMessage)?;
    session
        .injected_command(payload.len(), &command)
        .map_err(SessionError::State)?;
    server.queue_packet(0, &payload);
    server.flush().await.map_err(SessionError::ServerIo)?;
    let mut rows = Vec::new();
    let mut failed = false;
    loop {
        let packet = server
            .read()
            .await
            .map_err(server_read_error)?
            .ok_or_else(|| SessionError::ServerIo(eof()))?;
        let event = session
            .server_packet(packet.seq, &packet.payload)
            .map_err(SessionError::State)?;
        debug_assert!(event.reply.is_none_or(|r| r.origin == Origin::Hoop));
        match event.packet {
            ServerPacket::Row => {
                let n = session.result_columns().map_or(0, <[_]>::len);
                let row =
                    TextRow::parse(&packet.payload, n).map_err(SessionError::ServerMessage)?;
                rows.push(row.values().map(|v| v.map(<[u8]>::to_vec)).collect());
            }
            ServerPacket::Error => {
                if let Ok(e) = ErrPacket::parse(&packet.payload) {
                    debug!(code = e.code, message = %String::from_utf8_lossy(&e.message), "hoop's catalog query failed");
                }
                failed = true;
            }
            _ => {}
        }
        if event.completes_reply {
            return Ok((!failed).then_some(rows));
        }
    }
}
