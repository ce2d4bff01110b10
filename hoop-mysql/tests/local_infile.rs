//! LOAD DATA LOCAL INFILE against a fake server that asks for whatever
//! file it likes (a real server asks only for the file the statement
//! names, so the malicious request needs a server of our own). hoop sits
//! in between as in production (`hoop_mysql::serve`); the client is raw
//! packets, so every byte it receives is checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hoop_core::SessionIdentity;
use hoop_mysql::MysqlProxyContext;
use hoop_relay::dial::Dialer;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::timeout,
};

const T: Duration = Duration::from_secs(10);

const LONG_PASSWORD: u32 = 1;
const CONNECT_WITH_DB: u32 = 8;
const LOCAL_FILES: u32 = 0x80;
const PROTOCOL_41: u32 = 0x200;
const TRANSACTIONS: u32 = 0x2000;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 1 << 19;
const SERVER_CAPS: u32 = LONG_PASSWORD
    | CONNECT_WITH_DB
    | LOCAL_FILES
    | PROTOCOL_41
    | TRANSACTIONS
    | SECURE_CONNECTION
    | PLUGIN_AUTH;

async fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let mut out = vec![len[0], len[1], len[2], seq];
    out.extend_from_slice(payload);
    s.write_all(&out).await.unwrap();
}

async fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 4];
    timeout(T, s.read_exact(&mut head))
        .await
        .expect("a packet in time")
        .expect("a packet");
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut payload = vec![0u8; len];
    timeout(T, s.read_exact(&mut payload))
        .await
        .expect("a payload in time")
        .expect("a payload");
    (head[3], payload)
}

fn greeting() -> Vec<u8> {
    let mut g = vec![10u8];
    g.extend_from_slice(b"8.0.36-fake\0");
    g.extend_from_slice(&7u32.to_le_bytes());
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&(SERVER_CAPS as u16).to_le_bytes());
    g.push(45);
    g.extend_from_slice(&2u16.to_le_bytes());
    g.extend_from_slice(&((SERVER_CAPS >> 16) as u16).to_le_bytes());
    g.push(21);
    g.extend_from_slice(&[0u8; 10]);
    g.extend_from_slice(b"ijklmnopqrst\0");
    g.extend_from_slice(b"mysql_native_password\0");
    g
}

fn ok() -> Vec<u8> {
    vec![0, 0, 0, 2, 0, 0, 0]
}

fn caps_of(payload: &[u8]) -> u32 {
    u32::from_le_bytes(payload[..4].try_into().unwrap())
}

/// What the fake server saw.
#[derive(Debug, Default)]
struct ServerLog {
    /// The capabilities of the client's response as forwarded by hoop.
    client_caps: u32,
    /// The packets after the file request: (seq, payload).
    file_packets: Vec<(u8, Vec<u8>)>,
    /// The command after (a ping, to show the session goes on).
    next_command: Vec<u8>,
}

/// A server that answers the first COM_QUERY with a request for `asked`,
/// reads the client's file up to its empty packet, answers OK, then
/// answers one more command with OK.
/// `results_before` results (OKs with MORE_RESULTS_EXISTS) come first, as
/// for the earlier statements of a multi-statement text.
async fn fake_server(listener: TcpListener, asked: &'static [u8], results_before: u8) -> ServerLog {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut log = ServerLog::default();
    write_packet(&mut s, 0, &greeting()).await;
    let (seq, response) = read_packet(&mut s).await;
    assert_eq!(seq, 1);
    log.client_caps = caps_of(&response);
    write_packet(&mut s, 2, &ok()).await;
    // hoop reads the catalog (base tables, views) before the client's
    // first command: this server has none to show.
    for _ in 0..2 {
        let (seq, query) = read_packet(&mut s).await;
        assert_eq!((seq, query[0]), (0, 3), "hoop's catalog query");
        write_packet(&mut s, 1, b"\xFF\x7A\x04#42000no catalog here").await;
    }
    let (seq, query) = read_packet(&mut s).await;
    assert_eq!((seq, query[0]), (0, 3), "a COM_QUERY");
    for i in 0..results_before {
        // OK, status AUTOCOMMIT | MORE_RESULTS_EXISTS.
        write_packet(&mut s, 1 + i, &[0, 0, 0, 0x0A, 0, 0, 0]).await;
    }
    let mut request = vec![0xFB];
    request.extend_from_slice(asked);
    write_packet(&mut s, 1 + results_before, &request).await;
    let mut next = 2 + results_before;
    loop {
        let (seq, payload) = read_packet(&mut s).await;
        assert_eq!(seq, next, "the server leg is numbered on from the request");
        next = next.wrapping_add(1);
        let end = payload.is_empty();
        log.file_packets.push((seq, payload));
        if end {
            break;
        }
    }
    write_packet(&mut s, next, &ok()).await;
    let (seq, command) = read_packet(&mut s).await;
    assert_eq!(seq, 0);
    log.next_command = command;
    write_packet(&mut s, 1, &ok()).await;
    log
}

struct Run {
    /// The packets the client received in reply to the query.
    reply: Vec<(u8, Vec<u8>)>,
    /// The client's reply to the command after.
    after: (u8, Vec<u8>),
    /// The greeting's capabilities as hoop relayed them.
    greeting_caps: u32,
    server: ServerLog,
}

/// Runs one session: `sql` through hoop to a server asking for `asked`;
/// the client offers CLIENT_LOCAL_FILES when `client_offers`, and answers a
/// file request with `file` (then the empty packet).
async fn run(
    local_infile: bool,
    client_offers: bool,
    sql: &str,
    asked: &'static [u8],
    file: &[u8],
) -> Run {
    run_multi(local_infile, client_offers, sql, asked, file, 0).await
}

async fn run_multi(
    local_infile: bool,
    client_offers: bool,
    sql: &str,
    asked: &'static [u8],
    file: &[u8],
    results_before: u8,
) -> Run {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr: SocketAddr = upstream.local_addr().unwrap();
    let server: JoinHandle<ServerLog> = tokio::spawn(fake_server(upstream, asked, results_before));
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let mut ctx = MysqlProxyContext::new(Dialer::default());
    ctx.local_infile = local_infile;
    let ctx = Arc::new(ctx);
    let proxy = tokio::spawn(async move {
        let (client, _) = front.accept().await.unwrap();
        hoop_mysql::serve(ctx, client, SessionIdentity::default(), upstream_addr).await
    });

    let mut c = TcpStream::connect(front_addr).await.unwrap();
    let (seq, g) = read_packet(&mut c).await;
    assert_eq!(seq, 0);
    // Capabilities: the lower half after the version, the thread id and
    // the first 8+1 scramble bytes; the upper half after charset and status.
    let nul = g.iter().position(|&b| b == 0).unwrap();
    let at = nul + 1 + 4 + 9;
    let lower = u32::from(u16::from_le_bytes([g[at], g[at + 1]]));
    let upper = u32::from(u16::from_le_bytes([g[at + 5], g[at + 6]]));
    let greeting_caps = lower | upper << 16;
    let mut caps = LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH;
    if client_offers {
        caps |= LOCAL_FILES;
    }
    let mut response = caps.to_le_bytes().to_vec();
    response.extend_from_slice(&(16u32 << 20).to_le_bytes());
    response.push(45);
    response.extend_from_slice(&[0u8; 23]);
    response.extend_from_slice(b"root\0");
    response.push(0);
    response.extend_from_slice(b"mysql_native_password\0");
    write_packet(&mut c, 1, &response).await;
    let (seq, auth) = read_packet(&mut c).await;
    assert_eq!((seq, auth[0]), (2, 0), "authenticated");

    let mut query = vec![3u8];
    query.extend_from_slice(sql.as_bytes());
    write_packet(&mut c, 0, &query).await;
    let mut reply = Vec::new();
    loop {
        let (seq, payload) = read_packet(&mut c).await;
        let first = payload[0];
        reply.push((seq, payload));
        if first == 0 && payload_more_results(&reply) {
            continue;
        }
        if first == 0xFB {
            write_packet(&mut c, seq + 1, file).await;
            write_packet(&mut c, seq + 2, &[]).await;
            continue;
        }
        break;
    }
    write_packet(&mut c, 0, &[0x0E]).await; // COM_PING
    let after = read_packet(&mut c).await;
    let server = timeout(T, server).await.expect("server done").unwrap();
    drop(c);
    let _ = timeout(T, proxy).await;
    Run {
        reply,
        after,
        greeting_caps,
        server,
    }
}

/// Whether the last packet received is an OK with MORE_RESULTS_EXISTS.
fn payload_more_results(reply: &[(u8, Vec<u8>)]) -> bool {
    reply
        .last()
        .is_some_and(|(_, p)| p.len() >= 4 && p[3] & 0x08 != 0)
}

fn refused(run: &Run, why: &str) {
    assert_eq!(run.reply.len(), 1, "only an ERR: {:?}", run.reply);
    let (seq, err) = &run.reply[0];
    assert_eq!(*seq, 1);
    assert_eq!(err[0], 0xFF, "an ERR");
    let message = String::from_utf8_lossy(err);
    assert!(
        message.contains("LOAD DATA LOCAL INFILE file request was refused"),
        "{message}"
    );
    assert!(message.contains(why), "{message}");
    // The server got an empty file, nothing else.
    assert_eq!(run.server.file_packets, vec![(2, Vec::new())]);
    // The session goes on.
    assert_eq!(run.server.next_command, vec![0x0E]);
    assert_eq!(run.after, (1, ok()));
}

#[tokio::test]
async fn a_request_for_another_file_than_the_statement_names_is_refused() {
    let run = run(
        true,
        true,
        "LOAD DATA LOCAL INFILE '/tmp/a' INTO TABLE t",
        b"/etc/passwd",
        b"root:x:0:0\n",
    )
    .await;
    refused(
        &run,
        "the server asked for '/etc/passwd', but the statement names '/tmp/a'",
    );
}

#[tokio::test]
async fn a_request_in_reply_to_another_statement_is_refused() {
    let r = run(true, true, "SELECT 1", b"/etc/passwd", b"root:x:0:0\n").await;
    refused(&r, "not LOAD DATA LOCAL INFILE naming that file");
    // A file name inside a string of another statement does not count.
    let r = run(
        true,
        true,
        "SELECT 'LOAD DATA LOCAL INFILE ''/etc/passwd'''",
        b"/etc/passwd",
        b"root:x:0:0\n",
    )
    .await;
    refused(&r, "not LOAD DATA LOCAL INFILE naming that file");
}

#[tokio::test]
async fn a_request_is_refused_when_disabled_or_the_client_did_not_offer_local_files() {
    let r = run(
        false,
        true,
        "LOAD DATA LOCAL INFILE '/tmp/a' INTO TABLE t",
        b"/tmp/a",
        b"1\n",
    )
    .await;
    refused(&r, "mysql.local_infile: false");
    assert_eq!(r.greeting_caps & LOCAL_FILES, 0, "cleared in the greeting");
    assert_eq!(r.server.client_caps & LOCAL_FILES, 0, "cleared upstream");

    let r = run(
        true,
        false,
        "LOAD DATA LOCAL INFILE '/tmp/a' INTO TABLE t",
        b"/tmp/a",
        b"1\n",
    )
    .await;
    refused(&r, "CLIENT_LOCAL_FILES");
    assert_ne!(r.greeting_caps & LOCAL_FILES, 0, "offered when enabled");
    assert_eq!(r.server.client_caps & LOCAL_FILES, 0, "the client did not");
}

#[tokio::test]
async fn the_named_file_is_relayed_and_renumbered() {
    let r = run(
        true,
        true,
        "LOAD DATA LOCAL INFILE '/tmp/a' INTO TABLE t",
        b"/tmp/a",
        b"1\tone\n2\ttwo\n",
    )
    .await;
    assert_eq!(r.server.client_caps & LOCAL_FILES, LOCAL_FILES);
    // The client saw the request, then the server's OK.
    assert_eq!(r.reply.len(), 2, "{:?}", r.reply);
    assert_eq!(r.reply[0], (1, b"\xFB/tmp/a".to_vec()));
    assert_eq!(r.reply[1], (4, ok()));
    assert_eq!(
        r.server.file_packets,
        vec![(2, b"1\tone\n2\ttwo\n".to_vec()), (3, Vec::new())]
    );
    assert_eq!(r.after, (1, ok()));
}

#[tokio::test]
async fn in_a_multi_statement_text_the_request_must_match_the_statement_it_answers() {
    // Statement 0 names the file, but the request comes in result 1, which
    // answers a SELECT: refused.
    let r = run_multi(
        true,
        true,
        "LOAD DATA LOCAL INFILE '/tmp/a' INTO TABLE t; SELECT 1",
        b"/tmp/a",
        b"1\n",
        1,
    )
    .await;
    assert_eq!(r.reply.len(), 2, "{:?}", r.reply);
    assert_eq!(r.reply[0].1[0], 0, "the first result's OK");
    let err = String::from_utf8_lossy(&r.reply[1].1).into_owned();
    assert_eq!(r.reply[1].1[0], 0xFF, "{err}");
    assert!(
        err.contains("not LOAD DATA LOCAL INFILE naming that file"),
        "{err}"
    );
    assert_eq!(r.server.file_packets, vec![(3, Vec::new())]);
    assert_eq!(r.after, (1, ok()));

    // The second statement names it and the request answers it: relayed.
    let r = run_multi(
        true,
        true,
        "SELECT 1; LOAD DATA LOCAL INFILE '/tmp/a' INTO TABLE t",
        b"/tmp/a",
        b"1\n",
        1,
    )
    .await;
    assert_eq!(r.reply.len(), 3, "{:?}", r.reply);
    assert_eq!(r.reply[1], (2, b"\xFB/tmp/a".to_vec()));
    assert_eq!(r.reply[2], (5, ok()));
    assert_eq!(
        r.server.file_packets,
        vec![(3, b"1\n".to_vec()), (4, Vec::new())]
    );
}
