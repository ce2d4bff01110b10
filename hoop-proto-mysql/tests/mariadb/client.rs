//! A minimal blocking MySQL client built on the codec, for the tests: it
//! speaks to the real MariaDB over a plain TCP socket and feeds every packet
//! it sends and receives through the session state machine, which must
//! attribute each one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::{Bytes, BytesMut};
use hoop_proto_mysql::capabilities::{Capabilities, relayed};
use hoop_proto_mysql::column::ColumnDefinition;
use hoop_proto_mysql::command::Command;
use hoop_proto_mysql::err::ErrPacket;
use hoop_proto_mysql::execute::{ParamType, ParamValue, StmtExecute};
use hoop_proto_mysql::frame::{Direction, LogicalPacket, PacketDecoder, encode_packet};
use hoop_proto_mysql::handshake::{
    ConnectAttributes, Greeting, HandshakeResponse, ServerHello, SslRequest,
};
use hoop_proto_mysql::ok::OkPacket;
use hoop_proto_mysql::row_binary::BinaryRow;
use hoop_proto_mysql::row_text::TextRow;
use hoop_proto_mysql::session::{ServerEvent, ServerPacket, Session, SessionConfig};
use hoop_proto_mysql::value::{BinaryType, Value};
use sha1::{Digest, Sha1};

/// Where the test server listens: 127.0.0.1:3306, or `HOOP_TEST_MYSQL_ADDR`.
pub fn addr() -> String {
    std::env::var("HOOP_TEST_MYSQL_ADDR").unwrap_or_else(|_| "127.0.0.1:3306".to_owned())
}

/// Whether MariaDB is reachable; under `CI=true` its absence fails the test
/// instead of skipping it.
pub fn server_available() -> bool {
    let addr = addr();
    if TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(3)).is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "MariaDB is not reachable on {addr} (CI=true: this test must run)"
    );
    eprintln!("skipping: MariaDB is not reachable on {addr}");
    false
}

/// mysql_native_password: SHA1(pw) XOR SHA1(scramble || SHA1(SHA1(pw))).
pub fn native_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha1::digest(password);
    let h2 = Sha1::digest(h1);
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(h2);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// The server refused the login (its error code).
#[derive(Debug, thiserror::Error)]
#[error("login refused with error {0}")]
pub struct LoginRefused(pub u16);

/// One packet from the server and what the session made of it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The logical payload.
    pub payload: Bytes,
    /// How many chunks it came in.
    pub chunks: usize,
    /// The session's account of it.
    pub event: ServerEvent,
}

/// One result of a reply, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// OK: affected rows.
    Ok(u64),
    /// ERR: code and SQLSTATE.
    Err(u16, String),
    /// A result set: column names and rows as text (`None` = NULL).
    Rows(Vec<String>, Vec<Vec<Option<String>>>),
}

/// A connected client.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PacketDecoder,
    /// The state machine, fed every packet.
    pub session: Session,
    /// The agreed capabilities.
    pub caps: Capabilities,
    /// The server's greeting.
    pub greeting: Greeting,
    /// Every packet received (kept for assertions).
    pub received: Vec<Received>,
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Capabilities the client asks for (intersected with the server's and
    /// with what hoop relays).
    pub caps: Capabilities,
    /// Schema to start in.
    pub database: Option<String>,
    /// Let LOCAL INFILE through.
    pub local_infile: bool,
    /// User name.
    pub user: String,
    /// Password (mysql_native_password).
    pub password: Vec<u8>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            caps: Capabilities::LONG_FLAG
                | Capabilities::PROTOCOL_41
                | Capabilities::TRANSACTIONS
                | Capabilities::SECURE_CONNECTION
                | Capabilities::MULTI_STATEMENTS
                | Capabilities::MULTI_RESULTS
                | Capabilities::PS_MULTI_RESULTS
                | Capabilities::PLUGIN_AUTH
                | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | Capabilities::CONNECT_ATTRS
                | Capabilities::SESSION_TRACK
                | Capabilities::DEPRECATE_EOF
                | Capabilities::CONNECT_WITH_DB
                | Capabilities::MARIADB_PROGRESS
                // Asked for and cleared on the way, as hoop does.
                | Capabilities::COMPRESS
                | Capabilities::MARIADB_CACHE_METADATA
                | Capabilities::MARIADB_EXTENDED_METADATA,
            database: None,
            local_infile: false,
            user: "root".to_owned(),
            password: Vec::new(),
        }
    }
}

impl Client {
    /// Connects as root (empty password) and logs in.
    pub fn connect(options: &Options) -> Result<Self> {
        let stream = TcpStream::connect(addr()).context("connecting to MariaDB")?;
        stream.set_read_timeout(Some(Duration::from_mins(1)))?;
        stream.set_nodelay(true)?;
        let mut session = Session::new(SessionConfig {
            track_columns: true,
        });
        let mut c = Self {
            stream,
            buf: BytesMut::new(),
            decoder: PacketDecoder::new(Direction::ServerToClient, 64 << 20),
            session: Session::default(),
            caps: Capabilities::NONE,
            greeting: placeholder_greeting(),
            received: Vec::new(),
        };
        let packet = c.read_packet()?;
        ensure!(packet.seq == 0, "the greeting is seq 0");
        let event = session.server_packet(packet.seq, &packet.payload)?;
        ensure!(event.packet == ServerPacket::Greeting);
        let ServerHello::Greeting(greeting) = ServerHello::parse(&packet.payload)? else {
            bail!("an ERR instead of a greeting");
        };
        // What hoop would leave in the greeting, and the client's answer
        // masked the same way.
        let offered = relayed(
            greeting.capabilities,
            options.local_infile,
            greeting.capabilities.has_mariadb_extensions(),
        );
        let asked = if options.local_infile {
            options.caps | Capabilities::LOCAL_FILES
        } else {
            options.caps
        };
        let mut client_caps = asked.intersection(offered);
        if options.database.is_none() {
            client_caps = client_caps.without(Capabilities::CONNECT_WITH_DB);
        }
        let scramble = greeting.scramble();
        let response = HandshakeResponse {
            head: SslRequest {
                capabilities: client_caps,
                max_packet_size: 1 << 30,
                collation: 45,
                filler: [0; 23],
            },
            user: Bytes::from(options.user.clone()),
            auth_data: Bytes::from(native_password(&options.password, &scramble)),
            database: options.database.clone().map(Bytes::from),
            auth_plugin: Some(Bytes::from_static(b"mysql_native_password")),
            plugin_terminated: true,
            attributes: Some(ConnectAttributes {
                pairs: vec![
                    (
                        Bytes::from_static(b"_client_name"),
                        Bytes::from_static(b"hoop-proto-mysql-test"),
                    ),
                    (
                        Bytes::from_static(b"_pid"),
                        Bytes::from(std::process::id().to_string()),
                    ),
                ],
            }),
            zstd_level: None,
        };
        // The client asks for more than was offered; hoop masks it.
        let unmasked = HandshakeResponse {
            head: SslRequest {
                capabilities: asked,
                ..response.head
            },
            ..response.clone()
        };
        let payload = unmasked.with_capabilities(client_caps)?;
        ensure!(
            payload == response.encode()?,
            "masking re-encodes byte for byte"
        );
        c.write_packet(1, &payload)?;
        session.client_hello(1, &payload)?;
        loop {
            let packet = c.read_packet()?;
            let event = session.server_packet(packet.seq, &packet.payload)?;
            let seq = packet.next_seq();
            match event.packet {
                ServerPacket::AuthOk => break,
                ServerPacket::AuthError => {
                    let e = ErrPacket::parse(&packet.payload)?;
                    return Err(LoginRefused(e.code).into());
                }
                ServerPacket::AuthSwitch => {
                    let switch = hoop_proto_mysql::auth::AuthSwitchRequest::parse(&packet.payload)?;
                    ensure!(&switch.plugin[..] == b"mysql_native_password");
                    let answer = native_password(&options.password, switch.scramble());
                    c.write_packet(seq, &answer)?;
                    session.client_data(seq, answer.len())?;
                }
                other => bail!("unexpected {other:?} during login"),
            }
        }
        c.session = session;
        c.caps = c.session.capabilities();
        c.greeting = *greeting;
        Ok(c)
    }

    fn read_packet(&mut self) -> Result<LogicalPacket> {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf)? {
                return Ok(p);
            }
            let mut chunk = vec![0u8; 1 << 16];
            let n = self.stream.read(&mut chunk)?;
            ensure!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The socket, for writing pipelined commands by hand.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Writes `payload` as packets from `seq`.
    pub fn write_packet(&mut self, seq: u8, payload: &[u8]) -> Result<()> {
        let mut out = BytesMut::new();
        encode_packet(&mut out, seq, payload);
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// Sends a command and tells the session.
    pub fn send(&mut self, command: &Command<'_>) -> Result<u64> {
        let payload = command.encode(self.caps)?;
        self.send_raw(&payload)
    }

    /// Sends an encoded command and tells the session.
    pub fn send_raw(&mut self, payload: &[u8]) -> Result<u64> {
        let command = Command::parse(payload, self.caps)?;
        self.write_packet(0, payload)?;
        Ok(self.session.client_command(0, payload.len(), &command)?)
    }

    /// Reads one server packet through the session.
    pub fn receive(&mut self) -> Result<Received> {
        let p = self.read_packet()?;
        let event = self
            .session
            .server_packet(p.seq, &p.payload)
            .with_context(|| {
                format!(
                    "server packet seq {} {:?}",
                    p.seq,
                    &p.payload[..p.payload.len().min(16)]
                )
            })?;
        let r = Received {
            payload: p.payload,
            chunks: p.chunks,
            event,
        };
        self.received.push(r.clone());
        Ok(r)
    }

    /// Reads packets until the current reply is complete.
    pub fn reply(&mut self) -> Result<Vec<Received>> {
        let mut out = Vec::new();
        loop {
            let r = self.receive()?;
            let done = r.event.completes_reply;
            out.push(r);
            if done {
                return Ok(out);
            }
        }
    }

    /// Runs a COM_QUERY and decodes every result of its reply, checking
    /// that the session numbered them.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Outcome>> {
        self.send(&Command::Query {
            sql: sql.as_bytes(),
            attributes: None,
        })?;
        self.outcomes(false)
    }

    /// Decodes a reply's results (text or binary rows).
    pub fn outcomes(&mut self, binary: bool) -> Result<Vec<Outcome>> {
        let mut out: Vec<Outcome> = Vec::new();
        let mut columns: Vec<ColumnDefinition> = Vec::new();
        let mut rows = Vec::new();
        loop {
            let r = self.receive()?;
            let e = r.event;
            let reply = e.reply.context("a reply context")?;
            ensure!(
                reply.statement_index == out.len(),
                "statement index {} for result {}",
                reply.statement_index,
                out.len()
            );
            match e.packet {
                ServerPacket::Ok { .. } => {
                    let ok = OkPacket::parse(&r.payload, self.caps)?;
                    out.push(Outcome::Ok(ok.affected_rows));
                }
                ServerPacket::Error => {
                    let err = ErrPacket::parse(&r.payload)?;
                    out.push(Outcome::Err(
                        err.code,
                        err.sql_state_str().unwrap_or_default().to_owned(),
                    ));
                }
                ServerPacket::ColumnCount(_) => {
                    columns.clear();
                    rows = Vec::new();
                }
                ServerPacket::ColumnDefinition(i) => {
                    let tracked = self.session.result_columns().context("columns")?;
                    ensure!(tracked.len() as u64 == i + 1);
                    if e.columns_complete {
                        columns = tracked.iter().map(|c| (**c).clone()).collect();
                    }
                }
                ServerPacket::Row => {
                    ensure!(e.columns_complete, "rows come after complete columns");
                    rows.push(if binary {
                        let types: Vec<BinaryType> = self
                            .session
                            .result_columns()
                            .context("binary columns")?
                            .iter()
                            .map(|c| c.binary_type())
                            .collect();
                        let row = BinaryRow::parse(&r.payload, &types)?;
                        let values: Vec<Value<'_>> = row.values(&types).collect();
                        let encoded = BinaryRow::encode(&types, &values)?;
                        ensure!(encoded == r.payload, "binary rows re-encode byte for byte");
                        values
                            .iter()
                            .map(|v| match v {
                                Value::Null => None,
                                v => Some(v.to_string()),
                            })
                            .collect()
                    } else {
                        let row = TextRow::parse(&r.payload, columns.len())?;
                        let values: Vec<Option<&[u8]>> = row.values().collect();
                        ensure!(
                            TextRow::encode(values.iter().copied()) == r.payload,
                            "text rows re-encode byte for byte"
                        );
                        values
                            .iter()
                            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                            .collect()
                    });
                }
                ServerPacket::EndOfRows { .. } => {
                    let names = columns
                        .iter()
                        .map(|c| String::from_utf8_lossy(&c.name).into_owned())
                        .collect();
                    out.push(Outcome::Rows(names, std::mem::take(&mut rows)));
                }
                ServerPacket::ColumnsEof | ServerPacket::Progress => {}
                other => bail!("unexpected {other:?} in a result"),
            }
            if e.completes_reply {
                return Ok(out);
            }
        }
    }

    /// Prepares `sql`; returns the statement id and the reply's packets.
    pub fn prepare(&mut self, sql: &str) -> Result<(u32, Vec<Received>)> {
        self.send(&Command::StmtPrepare {
            sql: sql.as_bytes(),
        })?;
        let packets = self.reply()?;
        let ServerPacket::PrepareOk { statement_id, .. } = packets[0].event.packet else {
            bail!(
                "PREPARE failed: {:?}",
                ErrPacket::parse(&packets[0].payload).ok()
            );
        };
        Ok((statement_id, packets))
    }

    /// Executes a prepared statement with parameters.
    pub fn execute(
        &mut self,
        statement_id: u32,
        flags: u8,
        types: Option<&[ParamType]>,
        values: &[ParamValue<'_>],
    ) -> Result<Vec<Outcome>> {
        let payload = StmtExecute::encode(statement_id, flags, types, values)?;
        self.send_raw(&payload)?;
        self.outcomes(true)
    }
}

/// A greeting to fill the field before the real one is read.
fn placeholder_greeting() -> Greeting {
    Greeting {
        protocol_version: 10,
        server_version: Bytes::new(),
        thread_id: 0,
        scramble_1: [0; 8],
        filler: 0,
        capabilities: Capabilities::NONE,
        collation: 0,
        status: 0,
        auth_data_len: 0,
        reserved: [0; 10],
        scramble_2: Bytes::new(),
        auth_plugin: None,
        plugin_terminated: false,
    }
}

/// A scratch database, dropped when the guard goes.
pub struct Scratch {
    /// Its name.
    pub name: String,
}

impl Scratch {
    /// Creates (afresh) database `name`.
    pub fn new(name: &str) -> Result<Self> {
        let mut c = Client::connect(&Options::default())?;
        let r = c.query(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        ))?;
        ensure!(
            matches!(&r[..], [Outcome::Ok(_), Outcome::Ok(1)]),
            "creating {name}: {r:?}"
        );
        Ok(Self {
            name: name.to_owned(),
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&Options::default()) {
            let _ = c.query(&format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}
