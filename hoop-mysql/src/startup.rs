//! The connection phase: dial upstream, relay the server's own greeting
//! with the capability bits hoop cannot handle cleared, clear the same bits
//! in the client's response, relay the authentication exchange byte for
//! byte, and learn the catalog before the client's first command.

use std::{net::SocketAddr, sync::Arc};

use hoop_config::UpstreamTls;
use hoop_core::SessionIdentity;
use hoop_proto_mysql::{
    auth::{AUTH_MORE_DATA_HEADER, AUTH_SWITCH_HEADER, AuthSwitchRequest},
    caching_sha2::{self, ClientMessage, ServerSignal},
    capabilities::{Capabilities, hoop_cleared, relayed},
    command::Command,
    err::ErrPacket,
    frame::{Direction, LogicalPacket},
    handshake::{ClientHello, Greeting},
    row_text::TextRow,
    session::{Origin, ServerPacket, Session, SessionConfig},
};
use hoop_relay::{Stream, tls::UpstreamTlsPolicy};
use tokio::net::TcpStream;
use tracing::{debug, warn};
use zeroize::{Zeroize as _, Zeroizing};

use crate::{
    MysqlProxyContext, SessionError,
    catalog::{BASE_TABLES_QUERY, SessionCatalog, VIEWS_QUERY},
    full_auth::{self, HoopKey, TranslationError},
    leg::{Leg, ReadError},
};

/// An authenticated session, ready for commands.
pub(crate) struct Connected {
    pub client: Leg,
    pub server: Leg,
    pub session: Session,
    pub catalog: Arc<SessionCatalog>,
    /// The greeting's scramble (COM_CHANGE_USER authenticates against it).
    pub scramble: Vec<u8>,
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
    let mut client = Leg::new(
        Stream::Plain(client),
        Direction::ClientToServer,
        ctx.max_packet_size,
    );
    let server = match ctx.dialer.connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            let e = SessionError::Dial(e);
            warn!(session = %identity, %upstream, error = %e, "could not connect upstream");
            tell_client(&mut client, 0, &e).await;
            return Err(e);
        }
    };
    let server = Leg::new(
        Stream::Plain(server),
        Direction::ServerToClient,
        ctx.max_packet_size,
    );
    let mut seq_to_client = 0;
    let result = tokio::time::timeout(
        ctx.startup_timeout,
        handshake(
            ctx,
            &mut client,
            server,
            identity,
            upstream,
            &mut seq_to_client,
        ),
    )
    .await
    .unwrap_or(Err(SessionError::StartupTimeout));
    match result {
        Ok(Some((server, session, catalog, scramble))) => Ok(Some(Connected {
            client,
            server,
            session,
            catalog,
            scramble,
        })),
        Ok(None) => Ok(None),
        Err(e) => {
            warn!(session = %identity, error = %e, "mysql connection phase failed");
            tell_client(&mut client, seq_to_client, &e).await;
            Err(e)
        }
    }
}

type Handshaken = Option<(Leg, Session, Arc<SessionCatalog>, Vec<u8>)>;

/// Takes a plaintext leg's socket to start TLS on it; bytes already read
/// after the SSLRequest (sent before the TLS handshake) are refused.
fn plain_socket(leg: &mut Leg, who: &str) -> Result<TcpStream, SessionError> {
    if leg.has_buffered() {
        return Err(SessionError::Unsupported(format!(
            "the {who} sent unencrypted data after asking for TLS"
        )));
    }
    match leg.take_stream() {
        Some(Stream::Plain(s)) => Ok(s),
        Some(other) => {
            leg.set_stream(other);
            Err(SessionError::Unsupported(format!(
                "the {who} asked for TLS twice"
            )))
        }
        None => Err(SessionError::Unsupported(format!(
            "the {who} connection is gone"
        ))),
    }
}

/// Gives rustls the TLS bytes read before the handshake started; `false`
/// when they did not all fit (or were not TLS).
fn feed_tls(tls: &mut tokio_rustls::rustls::ServerConnection, mut early: &[u8]) -> bool {
    while !early.is_empty() {
        match tls.read_tls(&mut early) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {
                if tls.process_new_packets().is_err() {
                    return false;
                }
            }
        }
    }
    true
}

/// Whether an auth packet asks for the password in clear, which hoop
/// would forward from a TLS leg to a plaintext one. (caching_sha2 full
/// authentication and sha256_password are translated instead.)
pub(crate) fn asks_for_password(payload: &[u8]) -> bool {
    match payload.first() {
        Some(&AUTH_SWITCH_HEADER) => AuthSwitchRequest::parse(payload).is_ok_and(|s| {
            matches!(
                s.plugin.as_ref(),
                b"mysql_clear_password" | b"dialog" | b"auth_gssapi_client"
            )
        }),
        _ => false,
    }
}

/// Whether the client's first auth data is a password in clear: plugins
/// whose first answer is the password itself when the client's leg is
/// secure (sha256_password sends `0x01` to ask for a key otherwise).
pub(crate) fn first_answer_is_password(plugin: Option<&[u8]>, auth_data: &[u8]) -> bool {
    let clear_first = matches!(
        plugin,
        Some(b"sha256_password" | b"mysql_clear_password" | b"dialog")
    );
    clear_first && !auth_data.is_empty() && auth_data != [caching_sha2::SHA256_REQUEST_PUBLIC_KEY]
}

/// Which leg is encrypted when caching_sha2 full authentication must be
/// translated (the legs differ in TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Translation {
    /// Client over TLS, server in clear: hoop RSA-encrypts for the server.
    ToPlainServer,
    /// Client in clear, server over TLS: hoop decrypts with its own key.
    ToTlsServer,
}

/// Where caching_sha2 full authentication stands on a translated
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullAuth {
    /// Not asked for (yet): packets are relayed.
    Idle,
    /// The server sent `0x01 0x04` (caching_sha2), or switched to
    /// sha256_password: the client's next packet is its password
    /// (cleartext, a key request or a ciphertext).
    PasswordNext {
        /// sha256_password, whose key request is `0x01`.
        sha256: bool,
    },
    /// hoop sent the client its public key: the client's next packet is a
    /// ciphertext under it.
    CiphertextNext,
}

impl Translation {
    /// The translation legs in these TLS states need, if any.
    pub(crate) fn between(client_tls: bool, upstream_tls: bool) -> Option<Self> {
        match (client_tls, upstream_tls) {
            (true, false) => Some(Self::ToPlainServer),
            (false, true) => Some(Self::ToTlsServer),
            _ => None,
        }
    }
}

/// Follows a server auth packet being relayed: an AuthSwitchRequest sets
/// the scramble; `0x01 0x04` (caching_sha2) or a switch to sha256_password
/// on translated legs makes the client's next packet its password.
pub(crate) fn after_server_auth_packet(
    payload: &[u8],
    translation: Option<Translation>,
    scramble: &mut Vec<u8>,
) -> FullAuth {
    let mut switched_to_sha256 = false;
    if payload.first() == Some(&AUTH_SWITCH_HEADER)
        && let Ok(switch) = AuthSwitchRequest::parse(payload)
    {
        *scramble = full_auth::scramble_of(&switch.data);
        switched_to_sha256 = switch.plugin.as_ref() == caching_sha2::SHA256_PLUGIN;
    }
    let full_authentication = payload
        == [
            AUTH_MORE_DATA_HEADER,
            caching_sha2::PERFORM_FULL_AUTHENTICATION,
        ];
    if translation.is_some() && (full_authentication || switched_to_sha256) {
        FullAuth::PasswordNext {
            sha256: switched_to_sha256,
        }
    } else {
        FullAuth::Idle
    }
}

/// A packet read from either leg during authentication.
enum AuthPacket {
    Server(LogicalPacket),
    Client(LogicalPacket),
}

/// Drops a packet that carried a password, zeroing its bytes when hoop
/// holds the only reference to them (best effort: the leg's read buffer
/// may share them).
fn wipe(packet: LogicalPacket) {
    let LogicalPacket { raw, payload, .. } = packet;
    for bytes in [raw, payload] {
        if let Ok(mut owned) = bytes.try_into_mut() {
            owned.as_mut().zeroize();
        }
    }
}

async fn handshake(
    ctx: &MysqlProxyContext,
    client: &mut Leg,
    mut server: Leg,
    identity: &mut SessionIdentity,
    upstream: SocketAddr,
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
    let mut kept = relayed(
        parsed.capabilities,
        ctx.local_infile,
        parsed.capabilities.has_mariadb_extensions(),
    )
    .without(Capabilities::SSL);
    if ctx.client_tls.is_some() {
        // hoop offers TLS whenever it has a certificate, whatever the
        // server does.
        kept = kept.union(Capabilities::SSL);
    }
    let server_offers_tls = parsed.capabilities.contains(Capabilities::SSL);
    let upstream_tls = match ctx.upstream_tls.mode {
        UpstreamTls::Disable => false,
        UpstreamTls::Prefer => server_offers_tls,
        UpstreamTls::Require | UpstreamTls::VerifyFull => {
            if !server_offers_tls {
                return Err(SessionError::UpstreamRefusedTls);
            }
            true
        }
    };
    let relayed_greeting = parsed
        .with_capabilities(kept)
        .map_err(SessionError::ServerMessage)?;
    session
        .server_packet(greeting.seq, &relayed_greeting)
        .map_err(SessionError::State)?;
    identity.server_session_id = Some(parsed.thread_id);
    *seq_to_client = client.queue_packet(greeting.seq, &relayed_greeting);
    client.flush().await.map_err(SessionError::ClientIo)?;

    // 2. The client's response (after TLS, if it asks), with the same bits
    //    cleared. Sequence ids: the SSLRequest takes one on a TLS leg, so
    //    each leg is numbered with its own offset until authentication ends.
    let mut hello = client
        .read()
        .await
        .map_err(client_read_error)?
        .ok_or_else(|| SessionError::ClientIo(eof()))?;
    *seq_to_client = hello.next_seq();
    let mut client_shift = 0u8;
    if let ClientHello::SslRequest(_) =
        ClientHello::parse(&hello.payload).map_err(SessionError::ClientMessage)?
    {
        let Some(acceptor) = ctx.client_tls.clone() else {
            return Err(SessionError::Unsupported(
                "the client asked for TLS, which hoop does not offer without tls.cert and tls.key \
                 (connect without TLS, or configure hoop's certificate)"
                    .into(),
            ));
        };
        // A client starts TLS right after its SSLRequest without waiting
        // for an answer, so the start of its ClientHello may already be
        // read: it goes to rustls, never to the packet decoder (anything
        // but TLS records there fails the handshake).
        let early = client.take_buffered();
        let socket = plain_socket(client, "client")?;
        let mut early_left = false;
        let tls = acceptor
            .accept_with(socket, |tls| early_left = !feed_tls(tls, &early))
            .await
            .map_err(SessionError::ClientTls)?;
        if early_left {
            return Err(SessionError::Unsupported(
                "the client sent more before its TLS handshake than a ClientHello".into(),
            ));
        }
        client.set_stream(Stream::ServerTls(Box::new(tls)));
        identity.client_tls = true;
        client_shift = 1;
        hello = client
            .read()
            .await
            .map_err(client_read_error)?
            .ok_or_else(|| SessionError::ClientIo(eof()))?;
        *seq_to_client = hello.next_seq();
    }
    let response = match ClientHello::parse(&hello.payload).map_err(SessionError::ClientMessage)? {
        ClientHello::SslRequest(_) => {
            return Err(SessionError::Unsupported("a second SSLRequest".into()));
        }
        ClientHello::Response(r) => r,
    };
    let mut forwarded_caps = response
        .capabilities()
        .without(hoop_cleared(ctx.local_infile))
        .without(Capabilities::SSL);
    let server_shift = u8::from(upstream_tls);
    if upstream_tls {
        forwarded_caps = forwarded_caps.union(Capabilities::SSL);
        let mut request = response.ssl_request();
        request.capabilities = forwarded_caps;
        let payload = request.encode();
        session
            .client_hello(1, &payload)
            .map_err(SessionError::State)?;
        server.queue_packet(1, &payload);
        server.flush().await.map_err(SessionError::ServerIo)?;
        let Some(connector) = ctx.upstream_tls.connector().cloned() else {
            return Err(SessionError::UpstreamRefusedTls);
        };
        let socket = plain_socket(&mut server, "server")?;
        let tls = connector
            .connect(UpstreamTlsPolicy::server_name(upstream), socket)
            .await
            .map_err(SessionError::UpstreamTls)?;
        server.set_stream(Stream::ClientTls(Box::new(tls)));
        identity.upstream_tls = true;
    }
    let forwarded = response
        .with_capabilities(forwarded_caps)
        .map_err(SessionError::ClientMessage)?;
    // Server seq = client seq + `shift` (mod 256) until authentication
    // ends: the SSLRequest takes one id on its leg, and each packet hoop
    // exchanges on one leg only (translation) moves the shift by one.
    let mut shift = server_shift.wrapping_sub(client_shift);
    session
        .client_hello(hello.seq.wrapping_add(shift), &forwarded)
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
    // A password must not cross from a TLS leg onto a plaintext one.
    let guard_password = identity.client_tls && !identity.upstream_tls;
    if guard_password
        && first_answer_is_password(response.auth_plugin.as_deref(), &response.auth_data)
    {
        return Err(SessionError::Unsupported(
            "the client sent its password in clear (sha256_password or a cleartext plugin) \
             over TLS, and hoop does not forward a password over a plaintext server leg; set \
             tls.upstream so the server leg is TLS too"
                .into(),
        ));
    }
    server.queue_packet(hello.seq.wrapping_add(shift), &forwarded);
    server.flush().await.map_err(SessionError::ServerIo)?;
    let translation = Translation::between(identity.client_tls, identity.upstream_tls);
    // The nonce caching_sha2 XORs the password with: the greeting's, or
    // the last AuthSwitchRequest's.
    let mut scramble = full_auth::scramble_of(&parsed.scramble());
    let mut full = FullAuth::Idle;
    let mut pending: Option<LogicalPacket> = None;

    // 3. The auth exchange, byte for byte, until the server's OK or ERR;
    //    caching_sha2 full authentication is translated when the legs
    //    differ in TLS.
    loop {
        let next = if let Some(p) = pending.take() {
            AuthPacket::Server(p)
        } else {
            tokio::select! {
                packet = server.read() => AuthPacket::Server(packet
                    .map_err(server_read_error)?
                    .ok_or_else(|| SessionError::ServerIo(eof()))?),
                packet = client.read() => AuthPacket::Client(packet
                    .map_err(client_read_error)?
                    .ok_or_else(|| SessionError::ClientIo(eof()))?),
            }
        };
        match next {
            AuthPacket::Server(packet) => {
                let event = session
                    .server_packet(packet.seq, &packet.payload)
                    .map_err(SessionError::State)?;
                let seq = packet.seq.wrapping_sub(shift);
                // Refused, this packet is not relayed: hoop's ERR takes
                // its sequence id.
                *seq_to_client = seq;
                if guard_password && asks_for_password(&packet.payload) {
                    return Err(SessionError::Unsupported(
                        "the server asks for the password in clear (mysql_clear_password, dialog, \
                         GSSAPI), and hoop does not send a password from a TLS \
                         client leg over a plaintext server leg; set tls.upstream so the server \
                         leg is TLS too"
                            .into(),
                    ));
                }
                full = after_server_auth_packet(&packet.payload, translation, &mut scramble);
                *seq_to_client = seq.wrapping_add((packet.chunks % 256) as u8);
                let raw = packet.with_first_seq(seq);
                match event.packet {
                    ServerPacket::AuthOk => {
                        // The catalog is read before the client can send
                        // anything: the OK is held until then.
                        let catalog = SessionCatalog::new();
                        if let Err(e) = refresh_catalog(&mut server, &mut session, &catalog).await {
                            warn!(session = %identity, error = %e, "cannot read the catalog; column names from the server are not trusted");
                        }
                        client.queue(&raw);
                        client.flush().await.map_err(SessionError::ClientIo)?;
                        let greeting_scramble = full_auth::scramble_of(&parsed.scramble());
                        return Ok(Some((server, session, catalog, greeting_scramble)));
                    }
                    ServerPacket::AuthError => {
                        debug!(session = %identity, "the server refused the login");
                        client.queue(&raw);
                        client.flush().await.map_err(SessionError::ClientIo)?;
                        return Ok(None);
                    }
                    _ => {
                        client.queue(&raw);
                        client.flush().await.map_err(SessionError::ClientIo)?;
                    }
                }
            }
            AuthPacket::Client(packet) => {
                *seq_to_client = packet.next_seq();
                let state = std::mem::replace(&mut full, FullAuth::Idle);
                match (translation, state) {
                    // The cleartext is encrypted for the server. (A key
                    // request is relayed: the plaintext server honours it.)
                    (Some(Translation::ToPlainServer), FullAuth::PasswordNext { sha256 })
                        if caching_sha2::classify_client(&packet.payload, true, sha256)
                            != ClientMessage::PublicKeyRequest =>
                    {
                        let key_request = if sha256 {
                            caching_sha2::SHA256_REQUEST_PUBLIC_KEY
                        } else {
                            caching_sha2::REQUEST_PUBLIC_KEY
                        };
                        let answer = encrypt_upstream(
                            &mut server,
                            &mut session,
                            packet,
                            shift,
                            &scramble,
                            key_request,
                        )
                        .await?;
                        match answer {
                            Upstream::Sent => shift = shift.wrapping_add(2),
                            // The server refused the key request: its
                            // answer goes to the client.
                            Upstream::Refused(reply) => pending = Some(reply),
                        }
                        continue;
                    }
                    // (An empty packet is an empty password: relayed.)
                    (Some(Translation::ToTlsServer), FullAuth::PasswordNext { sha256 })
                        if !packet.payload.is_empty() =>
                    {
                        let key = ctx
                            .hoop_key
                            .get()
                            .await
                            .map_err(SessionError::AuthTranslation)?;
                        if let ClientMessage::PublicKeyRequest =
                            caching_sha2::classify_client(&packet.payload, false, sha256)
                        {
                            let next = client.queue_packet(
                                packet.next_seq(),
                                &caching_sha2::more_data(key.public_pem()),
                            );
                            client.flush().await.map_err(SessionError::ClientIo)?;
                            *seq_to_client = next;
                            shift = shift.wrapping_sub(2);
                            full = FullAuth::CiphertextNext;
                        } else {
                            decrypt_upstream(
                                &mut server,
                                &mut session,
                                &key,
                                packet,
                                shift,
                                &scramble,
                            )
                            .await?;
                        }
                        continue;
                    }
                    (Some(Translation::ToTlsServer), FullAuth::CiphertextNext) => {
                        let key = ctx
                            .hoop_key
                            .get()
                            .await
                            .map_err(SessionError::AuthTranslation)?;
                        decrypt_upstream(&mut server, &mut session, &key, packet, shift, &scramble)
                            .await?;
                        continue;
                    }
                    _ => {}
                }
                let seq = packet.seq.wrapping_add(shift);
                session
                    .client_data(seq, packet.payload.len())
                    .map_err(SessionError::State)?;
                server.queue(&packet.with_first_seq(seq));
                server.flush().await.map_err(SessionError::ServerIo)?;
            }
        }
    }
}

/// What came of sending the password to a plaintext server.
pub(crate) enum Upstream {
    /// The ciphertext went upstream; the server's verdict follows.
    Sent,
    /// The server answered the key request with something other than its
    /// key (an ERR): that answer, for the client.
    Refused(LogicalPacket),
}

/// Client over TLS, server in clear: the client's cleartext `packet` goes
/// upstream as `key_request` (`0x02`, sha256_password `0x01`), then the RSA
/// ciphertext under the key the server returns. Two packets more on the
/// server leg.
pub(crate) async fn encrypt_upstream(
    server: &mut Leg,
    session: &mut Session,
    packet: LogicalPacket,
    shift: u8,
    scramble: &[u8],
    key_request: u8,
) -> Result<Upstream, SessionError> {
    let password = Zeroizing::new(
        packet
            .payload
            .strip_suffix(&[0])
            .unwrap_or(&packet.payload)
            .to_vec(),
    );
    let seq = packet.seq.wrapping_add(shift);
    wipe(packet);
    let request = [key_request];
    session
        .client_data(seq, request.len())
        .map_err(SessionError::State)?;
    server.queue_packet(seq, &request);
    server.flush().await.map_err(SessionError::ServerIo)?;
    let reply = server
        .read()
        .await
        .map_err(server_read_error)?
        .ok_or_else(|| SessionError::ServerIo(eof()))?;
    let pem = match reply.payload.split_first() {
        Some((&AUTH_MORE_DATA_HEADER, data)) => match caching_sha2::classify_server(data) {
            Some(ServerSignal::PublicKey(pem)) => pem.to_vec(),
            _ => {
                return Err(SessionError::AuthTranslation(TranslationError::ServerKey(
                    "the server answered the key request without a PEM key".into(),
                )));
            }
        },
        _ => return Ok(Upstream::Refused(reply)),
    };
    session
        .server_packet(reply.seq, &reply.payload)
        .map_err(SessionError::State)?;
    let key = full_auth::parse_server_key(&pem).map_err(SessionError::AuthTranslation)?;
    let ciphertext = full_auth::encrypt_for_server(&key, &password, scramble)
        .map_err(SessionError::AuthTranslation)?;
    let seq = reply.next_seq();
    session
        .client_data(seq, ciphertext.len())
        .map_err(SessionError::State)?;
    server.queue_packet(seq, &ciphertext);
    server.flush().await.map_err(SessionError::ServerIo)?;
    Ok(Upstream::Sent)
}

/// Client in clear, server over TLS: the client's ciphertext `packet`
/// (under hoop's key) is decrypted and the password goes upstream in
/// clear, inside TLS, in its place.
pub(crate) async fn decrypt_upstream(
    server: &mut Leg,
    session: &mut Session,
    key: &HoopKey,
    packet: LogicalPacket,
    shift: u8,
    scramble: &[u8],
) -> Result<(), SessionError> {
    let password = key
        .decrypt_password(&packet.payload, scramble)
        .map_err(SessionError::AuthTranslation)?;
    let seq = packet.seq.wrapping_add(shift);
    let cleartext = Zeroizing::new(caching_sha2::cleartext_packet(&password));
    drop(password);
    session
        .client_data(seq, cleartext.len())
        .map_err(SessionError::State)?;
    server.queue_packet(seq, &cleartext);
    server.flush().await.map_err(SessionError::ServerIo)?;
    Ok(())
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
    let (Ok(tables), Ok(views)) = (tables, views) else {
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

/// A text row of a query of hoop's own, its values as bytes: a value in a
/// wide character set (`character_set_results` set to `utf16` by the
/// client, say) decoded to UTF-8 by its column's collation (hoop's own
/// replies always keep their column definitions).
pub(crate) fn internal_row(
    session: &Session,
    payload: &[u8],
) -> Result<Vec<Option<Vec<u8>>>, SessionError> {
    let columns = session.result_columns().unwrap_or_default();
    let row = TextRow::parse(payload, columns.len()).map_err(SessionError::ServerMessage)?;
    let mariadb = session.server_version().is_none_or(|v| v.mariadb);
    Ok(row
        .values()
        .zip(columns)
        .map(|(v, c)| {
            v.map(|v| {
                match hoop_proto_mysql::wide::WideCharset::of_collation(c.collation, mariadb) {
                    Some(set) => {
                        let mut out = Vec::with_capacity(v.len());
                        set.decode_into(v, &mut out);
                        out
                    }
                    None => v.to_vec(),
                }
            })
        })
        .collect())
}

/// A server packet the session cannot account for.
pub(crate) fn server_state(e: hoop_proto_mysql::session::SessionError) -> SessionError {
    match e {
        hoop_proto_mysql::session::SessionError::Message(m) => SessionError::ServerMessage(m),
        hoop_proto_mysql::session::SessionError::Sequence(f) => SessionError::ServerFrame(f),
        other => SessionError::State(other),
    }
}

/// Runs a query of hoop's own and returns its rows, or the payload of the
/// server's ERR. Its reply never reaches the client.
pub(crate) async fn injected_query(
    server: &mut Leg,
    session: &mut Session,
    sql: &str,
) -> Result<Result<Rows, bytes::Bytes>, SessionError> {
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
    let mut error = None;
    loop {
        let packet = server
            .read()
            .await
            .map_err(server_read_error)?
            .ok_or_else(|| SessionError::ServerIo(eof()))?;
        let event = session
            .server_packet(packet.seq, &packet.payload)
            .map_err(server_state)?;
        debug_assert!(event.reply.is_none_or(|r| r.origin == Origin::Hoop));
        match event.packet {
            ServerPacket::Row => rows.push(internal_row(session, &packet.payload)?),
            ServerPacket::Error => {
                if let Ok(e) = ErrPacket::parse(&packet.payload) {
                    debug!(code = e.code, message = %String::from_utf8_lossy(&e.message), "hoop's own query failed");
                }
                error = Some(packet.payload.clone());
            }
            _ => {}
        }
        if event.completes_reply {
            return Ok(error.map_or(Ok(rows), Err));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legs_that_differ_in_tls_are_translated() {
        assert_eq!(
            Translation::between(true, false),
            Some(Translation::ToPlainServer)
        );
        assert_eq!(
            Translation::between(false, true),
            Some(Translation::ToTlsServer)
        );
        assert_eq!(Translation::between(true, true), None);
        assert_eq!(Translation::between(false, false), None);
    }

    #[test]
    fn full_authentication_and_sha256_switches_make_the_next_client_packet_the_password() {
        let mut scramble = b"greeting scramble 20".to_vec();
        let t = Some(Translation::ToPlainServer);
        assert_eq!(
            after_server_auth_packet(b"\x01\x04", t, &mut scramble),
            FullAuth::PasswordNext { sha256: false }
        );
        // Fast auth success, a PEM, OK: nothing to translate.
        for p in [
            &b"\x01\x03"[..],
            b"\x01-----BEGIN PUBLIC KEY-----",
            b"\x00\x00\x00\x02\x00\x00\x00",
        ] {
            assert_eq!(
                after_server_auth_packet(p, t, &mut scramble),
                FullAuth::Idle
            );
        }
        // Same TLS state on both legs: relayed.
        assert_eq!(
            after_server_auth_packet(b"\x01\x04", None, &mut scramble),
            FullAuth::Idle
        );
        // A switch to sha256_password sets its scramble (without the NUL).
        let switch = b"\xfesha256_password\0ABCDEFGHIJKLMNOPQRST\0";
        assert_eq!(
            after_server_auth_packet(switch, Some(Translation::ToTlsServer), &mut scramble),
            FullAuth::PasswordNext { sha256: true }
        );
        assert_eq!(scramble, b"ABCDEFGHIJKLMNOPQRST");
        // A switch to caching_sha2 sets the scramble; full authentication
        // comes later.
        let switch = b"\xfecaching_sha2_password\x0001234567890123456789\0";
        assert_eq!(
            after_server_auth_packet(switch, t, &mut scramble),
            FullAuth::Idle
        );
        assert_eq!(scramble, b"01234567890123456789");
    }

    #[test]
    fn cleartext_first_answers_are_recognised() {
        assert!(first_answer_is_password(Some(b"sha256_password"), b"pw\0"));
        assert!(first_answer_is_password(
            Some(b"mysql_clear_password"),
            b"pw\0"
        ));
        assert!(!first_answer_is_password(Some(b"sha256_password"), b"\x01"));
        assert!(!first_answer_is_password(Some(b"sha256_password"), b""));
        assert!(!first_answer_is_password(
            Some(b"caching_sha2_password"),
            &[7; 32]
        ));
        assert!(!first_answer_is_password(None, b"pw\0"));
    }
}
