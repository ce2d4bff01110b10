//! Server → client: a byte stream of server packets through the frame
//! decoder, every reply parser, and the session state machine, which is
//! kept owing replies of every kind (query, prepare, execute with and
//! without a cursor, fetch, field list, change user, statistics, ping,
//! LOAD DATA LOCAL). Nothing may panic; what parses must re-encode to
//! something that parses the same.
#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use hoop_proto_mysql::auth::AuthReply;
use hoop_proto_mysql::capabilities::Capabilities;
use hoop_proto_mysql::column::{
    ColumnDefinition, ColumnDefinitionRef, ColumnOptions, parse_column_count,
};
use hoop_proto_mysql::command::{ChangeUser, Command};
use hoop_proto_mysql::eof::EofPacket;
use hoop_proto_mysql::err::{ErrPacket, Progress};
use hoop_proto_mysql::execute::{LAST_PREPARED, StmtExecute, flags};
use hoop_proto_mysql::frame::{Direction, PacketDecoder};
use hoop_proto_mysql::handshake::{Greeting, HandshakeResponse, ServerHello, SslRequest};
use hoop_proto_mysql::local_infile::LocalInfileRequest;
use hoop_proto_mysql::ok::OkPacket;
use hoop_proto_mysql::prepare::PrepareOk;
use hoop_proto_mysql::row_binary::BinaryRow;
use hoop_proto_mysql::row_text::TextRow;
use hoop_proto_mysql::session::{Phase, Session, SessionConfig};
use hoop_proto_mysql::value::{BinaryType, Value};
use libfuzzer_sys::fuzz_target;

fn caps_for(mode: u8) -> Capabilities {
    let mut caps = Capabilities::PROTOCOL_41
        | Capabilities::SECURE_CONNECTION
        | Capabilities::PLUGIN_AUTH
        | Capabilities::TRANSACTIONS
        | Capabilities::MULTI_STATEMENTS
        | Capabilities::MULTI_RESULTS
        | Capabilities::PS_MULTI_RESULTS
        | Capabilities::LOCAL_FILES
        | Capabilities::MARIADB_PROGRESS;
    if mode & 1 != 0 {
        caps = caps | Capabilities::DEPRECATE_EOF;
    }
    if mode & 2 != 0 {
        caps = caps | Capabilities::SESSION_TRACK;
    }
    if mode & 4 != 0 {
        caps = caps | Capabilities::MARIADB_EXTENDED_METADATA;
    }
    caps
}

fn greeting(caps: Capabilities) -> Bytes {
    Greeting {
        protocol_version: 10,
        server_version: Bytes::from_static(b"5.5.5-10.11.19-MariaDB"),
        thread_id: 7,
        scramble_1: *b"abcdefgh",
        filler: 0,
        capabilities: caps,
        collation: 45,
        status: 2,
        auth_data_len: 21,
        reserved: [0; 10],
        scramble_2: Bytes::from_static(b"ijklmnopqrst\0"),
        auth_plugin: Some(Bytes::from_static(b"mysql_native_password")),
        plugin_terminated: true,
    }
    .encode()
    .expect("a greeting")
}

fn response(caps: Capabilities) -> Bytes {
    HandshakeResponse {
        head: SslRequest {
            capabilities: caps,
            max_packet_size: 1 << 24,
            collation: 45,
            filler: [0; 23],
        },
        user: Bytes::from_static(b"root"),
        auth_data: Bytes::new(),
        database: None,
        auth_plugin: Some(Bytes::from_static(b"mysql_native_password")),
        plugin_terminated: true,
        attributes: None,
        zstd_level: None,
    }
    .encode()
    .expect("a response")
}

/// Queues command `n` (of a cycle covering every reply shape).
fn queue(s: &mut Session, caps: Capabilities, n: usize) {
    let execute = |id, f| StmtExecute::encode(id, f, None, &[]).expect("an execute");
    let exec_plain = execute(1, 0);
    let exec_last = execute(LAST_PREPARED, 0);
    let exec_cursor = execute(1, flags::READ_ONLY);
    let commands: Vec<Bytes> = vec![
        Command::Query {
            sql: b"SELECT 1; SELECT 2",
            attributes: None,
        }
        .encode(caps)
        .expect("encode"),
        Command::StmtPrepare { sql: b"SELECT ?" }
            .encode(caps)
            .expect("encode"),
        exec_plain,
        exec_last,
        exec_cursor,
        Command::StmtFetch {
            statement_id: 1,
            rows: 5,
        }
        .encode(caps)
        .expect("encode"),
        Command::FieldList {
            table: b"t",
            wildcard: b"",
        }
        .encode(caps)
        .expect("encode"),
        Command::ChangeUser(ChangeUser {
            user: b"u",
            auth_data: b"",
            database: b"d",
            collation: Some(8),
            auth_plugin: Some(b"mysql_native_password"),
            attributes: None,
        })
        .encode(caps)
        .expect("encode"),
        Command::Statistics.encode(caps).expect("encode"),
        Command::Ping.encode(caps).expect("encode"),
        Command::InitDb { schema: b"x" }
            .encode(caps)
            .expect("encode"),
        Command::StmtReset { statement_id: 1 }
            .encode(caps)
            .expect("encode"),
        Command::SetOption { option: 0 }
            .encode(caps)
            .expect("encode"),
        Command::Query {
            sql: b"LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
            attributes: None,
        }
        .encode(caps)
        .expect("encode"),
        Command::BinlogDump {
            position: 4,
            flags: 1,
            server_id: 2,
            filename: b"b",
        }
        .encode(caps)
        .expect("encode"),
    ];
    let raw = &commands[n % commands.len()];
    if let Ok(cmd) = Command::parse(raw, caps) {
        let _ = s.client_command(0, raw.len(), &cmd);
    }
}

/// Every parser that could apply to a server payload.
fn parse_all(payload: &Bytes, caps: Capabilities, s: &Session) {
    if let Ok(ok) = OkPacket::parse(payload, caps) {
        let again = ok.encode();
        let ok2 = OkPacket::parse(&again, caps).expect("an encoded OK parses");
        assert_eq!(ok2.encode(), again);
        let _ = ok.session_changes();
    }
    if let Ok(e) = ErrPacket::parse(payload) {
        let again = ErrPacket::parse(&e.encode()).expect("an encoded ERR parses");
        assert_eq!(again.code, e.code);
    }
    if let Ok(p) = Progress::parse(payload) {
        assert_eq!(
            Progress::parse(&p.encode()).expect("progress"),
            Progress {
                progress: p.progress.min(100_000),
                ..p
            }
        );
    }
    if let Ok(e) = EofPacket::parse(payload) {
        assert_eq!(&e.encode()[..], &payload[..]);
    }
    if let Ok(p) = PrepareOk::parse(payload) {
        assert_eq!(&p.encode()[..], &payload[..]);
    }
    if let Ok(r) = LocalInfileRequest::parse(payload) {
        assert_eq!(&r.encode()[..], &payload[..]);
    }
    let _ = parse_column_count(payload);
    let _ = AuthReply::parse(payload, caps);
    if let Ok(ServerHello::Greeting(g)) = ServerHello::parse(payload) {
        let encoded = g.encode().expect("a parsed greeting encodes");
        assert_eq!(&encoded[..], &payload[..]);
        let cleared = g
            .with_cleared(hoop_proto_mysql::capabilities::HOOP_CLEARED)
            .expect("cleared");
        assert_eq!(cleared.len(), payload.len());
        let _ = g.scramble();
        let _ = g.server();
    }
    for options in [
        ColumnOptions::default(),
        ColumnOptions {
            field_list: true,
            extended_metadata: false,
        },
        ColumnOptions {
            field_list: false,
            extended_metadata: true,
        },
    ] {
        // The relay's quick check accepts exactly what the parser does.
        assert_eq!(
            ColumnDefinitionRef::is_valid(payload, options),
            ColumnDefinitionRef::validate(payload, options).is_ok()
        );
        if let Ok(c) = ColumnDefinition::parse(payload, options) {
            let again = c.encode(options.field_list);
            assert_eq!(
                ColumnDefinition::parse(&again, options).expect("an encoded column parses"),
                c
            );
        }
    }
    if let Some(columns) = s.result_columns() {
        if let Ok(row) = TextRow::parse(payload, columns.len()) {
            let values: Vec<Option<&[u8]>> = row.values().collect();
            assert_eq!(values.len(), columns.len());
            let again = TextRow::encode(values.iter().copied());
            let row2 = TextRow::parse(&again, columns.len()).expect("an encoded row parses");
            assert!(row2.values().eq(values.iter().copied()));
        }
        let types: Vec<BinaryType> = columns.iter().map(|c| c.binary_type()).collect();
        if let Ok(row) = BinaryRow::parse(payload, &types) {
            let values: Vec<Value<'_>> = row.values(&types).collect();
            assert_eq!(values.len(), types.len());
            let again = BinaryRow::encode(&types, &values).expect("decoded values fit");
            // Value encodings are canonical except for length-encoded
            // strings; the re-encoded row parses to the same values.
            let row2 = BinaryRow::parse(&again, &types).expect("an encoded row parses");
            let v2: Vec<Value<'_>> = row2.values(&types).collect();
            assert_eq!(format!("{values:?}"), format!("{v2:?}"));
            for v in &values {
                let _ = v.to_string();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let caps = caps_for(mode);
    let mut s = Session::new(SessionConfig {
        track_columns: mode & 8 != 0,
    });
    // Either the fuzzer drives the connection phase itself, or it starts
    // in the command phase with commands owed.
    let fuzz_login = mode & 0x10 != 0;
    let mut next_command = usize::from(mode >> 5);
    if !fuzz_login {
        let _ = s.server_packet(0, &greeting(caps.without(Capabilities::LONG_PASSWORD)));
        let _ = s.client_hello(1, &response(caps));
        let ok = OkPacket::simple(0, 0, hoop_proto_mysql::status::StatusFlags(2), 0, caps).encode();
        let _ = s.server_packet(2, &ok);
        assert_eq!(s.phase(), Phase::Command);
        for _ in 0..3 {
            queue(&mut s, caps, next_command);
            next_command += 1;
        }
    }
    let decoder = PacketDecoder::new(Direction::ServerToClient, 1 << 20);
    let mut buf = BytesMut::from(rest);
    loop {
        // Now and then the relay's way: a run of plain packets accounted in
        // one pass (it must never take a packet the session then refuses,
        // nor end a reply the session still owes).
        if buf.len() % 3 == 0 {
            let before = s.owed().count();
            let run = s.plain_run(&buf, 1 << 20);
            assert!(run.bytes <= buf.len());
            assert!(run.packets <= run.bytes / 4);
            if run.completes_reply {
                assert!(s.owed().count() < before);
            }
            buf.advance(run.bytes);
            if s.is_idle() && s.phase() == Phase::Command {
                queue(&mut s, caps, next_command);
                next_command += 1;
            }
        }
        let Ok(Some(p)) = decoder.decode(&mut buf) else {
            break;
        };
        assert_eq!(p.raw.len(), p.payload.len() + 4 * p.chunks);
        parse_all(&p.payload, caps, &s);
        // Mostly follow the expected ids, so replies get deep.
        let seq = if p.seq & 0x80 == 0 {
            s.expected_server_seq().unwrap_or(p.seq)
        } else {
            p.seq
        };
        let before = s.owed().count();
        let result = s.server_packet(seq, &p.payload);
        if let Ok(e) = result {
            if e.completes_reply {
                assert!(s.owed().count() < before || before == 0);
            }
            if let Some(r) = e.reply {
                let _ = r.statement_index;
            }
        }
        if s.awaiting_client_data() {
            let next = s.expected_server_seq().unwrap_or(0);
            let _ = s.client_data(next, usize::from(p.seq));
            let _ = s.client_data(next.wrapping_add(1), 0);
        }
        if s.is_idle() && s.phase() == Phase::Command {
            queue(&mut s, caps, next_command);
            next_command += 1;
        }
        let _ = s.result_columns();
        let _ = s.character_set_client();
        let _ = s.ansi_quotes();
    }
});
