//! Session state machine tests: every reply shape, driven packet by packet.

use super::*;
use crate::column::encode_column_count;
use crate::eof::EofPacket;
use crate::err::Progress;
use crate::execute::{ParamValue, flags};
use crate::handshake::tests::greeting_with;
use crate::handshake::{HandshakeResponse, SslRequest};
use crate::local_infile::LocalInfileRequest;
use crate::row_binary::BinaryRow;
use crate::row_text::TextRow;
use crate::value::{BinaryType, ColumnType, Value};

const BASE: Capabilities = Capabilities::from_bits(
    Capabilities::PROTOCOL_41.bits()
        | Capabilities::SECURE_CONNECTION.bits()
        | Capabilities::PLUGIN_AUTH.bits()
        | Capabilities::TRANSACTIONS.bits()
        | Capabilities::MULTI_STATEMENTS.bits()
        | Capabilities::MULTI_RESULTS.bits()
        | Capabilities::PS_MULTI_RESULTS.bits()
        | Capabilities::SESSION_TRACK.bits()
        | Capabilities::LOCAL_FILES.bits()
        | Capabilities::CONNECT_WITH_DB.bits()
        | Capabilities::MARIADB_PROGRESS.bits(),
);

fn response(caps: Capabilities) -> Vec<u8> {
    let r = HandshakeResponse {
        head: SslRequest {
            capabilities: caps,
            max_packet_size: 1 << 24,
            collation: 45,
            filler: [0; 23],
        },
        user: Bytes::from_static(b"root"),
        auth_data: Bytes::from_static(&[9; 20]),
        database: Some(Bytes::from_static(b"shop")),
        auth_plugin: Some(Bytes::from_static(b"mysql_native_password")),
        plugin_terminated: true,
        attributes: None,
        zstd_level: None,
    };
    r.encode().unwrap().to_vec()
}

/// A session in the command phase with `caps` agreed.
fn ready(caps: Capabilities) -> Session {
    let mut s = Session::new(SessionConfig {
        track_columns: true,
    });
    let greeting = greeting_with(
        b"5.5.5-10.11.19-MariaDB",
        caps.without(Capabilities::LONG_PASSWORD),
    );
    assert_eq!(
        s.server_packet(0, &greeting).unwrap().packet,
        ServerPacket::Greeting
    );
    s.client_hello(1, &response(caps)).unwrap();
    let ok = OkPacket::simple(0, 0, StatusFlags(2), 0, caps).encode();
    assert_eq!(
        s.server_packet(2, &ok).unwrap().packet,
        ServerPacket::AuthOk
    );
    assert_eq!(s.phase(), Phase::Command);
    s
}

fn ok(status: u16, caps: Capabilities) -> Bytes {
    OkPacket::simple(0, 0, StatusFlags(status), 0, caps).encode()
}

/// The end of rows in the form `caps` select.
fn end(status: u16, caps: Capabilities) -> Bytes {
    if caps.contains(Capabilities::DEPRECATE_EOF) {
        OkPacket::simple(0xFE, 0, StatusFlags(status), 0, caps).encode()
    } else {
        eof(status)
    }
}

fn eof(status: u16) -> Bytes {
    EofPacket {
        warnings: 0,
        status: StatusFlags(status),
    }
    .encode()
}

fn column(name: &str, ty: ColumnType) -> Bytes {
    let mut c = crate::column::tests::column(name, ty, 0);
    c.org_table = Bytes::from_static(b"customers");
    c.encode(false)
}

fn query(sql: &[u8]) -> Command<'_> {
    Command::Query {
        sql,
        attributes: None,
    }
}

/// Feeds server packets from `seq` on; returns the events.
fn feed(s: &mut Session, seq: u8, packets: &[Bytes]) -> Vec<ServerEvent> {
    packets
        .iter()
        .enumerate()
        .map(|(i, p)| {
            s.server_packet(seq + i as u8, p)
                .unwrap_or_else(|e| panic!("packet {i}: {e}"))
        })
        .collect()
}

#[test]
fn connection_phase_with_tls_and_an_auth_switch() {
    let caps = BASE | Capabilities::SSL | Capabilities::COMPRESS;
    let mut s = Session::new(SessionConfig::default());
    let greeting = greeting_with(
        b"5.5.5-10.11.19-MariaDB-0+deb12u1",
        caps.without(Capabilities::LONG_PASSWORD),
    );
    assert!(
        s.server_packet(1, &greeting).is_err(),
        "the greeting is seq 0"
    );
    let mut s = Session::new(SessionConfig::default());
    s.server_packet(0, &greeting).unwrap();
    assert_eq!(s.thread_id(), 42);
    assert!(s.server_version().unwrap().mariadb);
    let client = caps.without(Capabilities::COMPRESS);
    let resp = response(client);
    let ssl = HandshakeResponse::parse(&resp)
        .unwrap()
        .ssl_request()
        .encode();
    assert!(matches!(
        s.client_hello(1, &ssl).unwrap(),
        ClientHello::SslRequest(_)
    ));
    assert_eq!(s.phase(), Phase::TlsHandshake);
    assert!(
        s.client_hello(1, &resp).is_err(),
        "the response after TLS is seq 2"
    );
    let mut s = Session::new(SessionConfig::default());
    s.server_packet(0, &greeting).unwrap();
    s.client_hello(1, &ssl).unwrap();
    s.client_hello(2, &resp).unwrap();
    assert_eq!(s.phase(), Phase::Authenticating);
    assert!(s.awaiting_client_data());
    let switch = crate::auth::AuthSwitchRequest {
        plugin: Bytes::from_static(b"client_ed25519"),
        data: Bytes::from_static(&[1; 32]),
        old_form: false,
    }
    .encode()
    .unwrap();
    assert_eq!(
        s.server_packet(3, &switch).unwrap().packet,
        ServerPacket::AuthSwitch
    );
    assert_eq!(s.client_data(4, 64).unwrap(), ClientData::AuthData);
    assert_eq!(s.expected_server_seq(), Some(5));
    let e = s.server_packet(5, &ok(2, client)).unwrap();
    assert_eq!(e.packet, ServerPacket::AuthOk);
    assert_eq!(s.phase(), Phase::Command);
    assert!(!s.capabilities().contains(Capabilities::COMPRESS));
    assert!(s.capabilities().contains(Capabilities::MARIADB_PROGRESS));
    assert_eq!(s.user(), Some(&b"root"[..]));
    assert_eq!(s.schema(), Some(&b"shop"[..]));
    assert_eq!(s.character_set_client(), Some("utf8mb4"));
}

#[test]
fn refused_logins_and_errors_instead_of_greetings_close() {
    let mut s = Session::new(SessionConfig::default());
    let e = s
        .server_packet(0, b"\xff\x10\x04Too many connections")
        .unwrap();
    assert_eq!(e.packet, ServerPacket::GreetingError);
    assert_eq!(s.phase(), Phase::Closed);
    assert!(s.server_packet(1, b"\x00").is_err());

    let mut s = Session::new(SessionConfig::default());
    s.server_packet(
        0,
        &greeting_with(b"8.0.36", BASE | Capabilities::LONG_PASSWORD),
    )
    .unwrap();
    s.client_hello(1, &response(BASE)).unwrap();
    let e = s
        .server_packet(2, b"\xff\x15\x04#28000Access denied")
        .unwrap();
    assert_eq!(e.packet, ServerPacket::AuthError);
    assert_eq!(s.phase(), Phase::Closed);
    assert!(s.client_command(0, 5, &Command::Ping).is_err());
}

fn multi_statement(caps: Capabilities) {
    let mut s = ready(caps);
    let sql = b"SELECT ssn FROM customers; UPDATE t SET a=1; SELECT id, ssn FROM customers";
    assert_eq!(s.client_command(0, sql.len() + 1, &query(sql)).unwrap(), 0);
    let deprecate = caps.contains(Capabilities::DEPRECATE_EOF);
    let mut packets = vec![
        encode_column_count(1),
        column("ssn", ColumnType::VAR_STRING),
    ];
    if !deprecate {
        packets.push(eof(0x02));
    }
    packets.push(TextRow::encode([Some(&b"123-45-6789"[..])]));
    packets.push(TextRow::encode([None]));
    packets.push(end(0x0A, caps));
    packets.push(ok(0x0A, caps));
    packets.push(encode_column_count(2));
    packets.push(column("id", ColumnType::LONG));
    packets.push(column("ssn", ColumnType::VAR_STRING));
    if !deprecate {
        packets.push(eof(0x02));
    }
    packets.push(TextRow::encode([Some(&b"1"[..]), Some(&b"x"[..])]));
    packets.push(end(0x02, caps));
    let mut index_seen = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let e = s.server_packet(1 + i as u8, p).unwrap();
        let r = e.reply.unwrap();
        index_seen.push(r.statement_index);
        assert!(!r.binary_rows);
        if e.packet == ServerPacket::Row {
            assert!(e.columns_complete);
            let cols = s.result_columns().unwrap();
            let row = TextRow::parse(p, cols.len()).unwrap();
            assert_eq!(row.len(), cols.len());
            if r.statement_index == 0 {
                assert_eq!(&cols[0].org_name[..], b"ssn");
            }
        }
        if i == packets.len() - 1 {
            assert!(e.completes_reply);
            assert_eq!(
                e.packet,
                ServerPacket::EndOfRows {
                    more_results: false,
                    cursor_opened: false
                }
            );
        } else {
            assert!(!e.completes_reply, "packet {i}");
        }
    }
    let first_ok = packets.iter().position(|p| p[0] == 0).unwrap();
    assert_eq!(index_seen[first_ok], 1, "the UPDATE's OK is statement 1");
    assert_eq!(*index_seen.last().unwrap(), 2);
    assert!(s.is_idle());
}

#[test]
fn multi_statement_results_with_classic_eof() {
    multi_statement(BASE);
}

#[test]
fn multi_statement_results_with_deprecate_eof() {
    multi_statement(BASE | Capabilities::DEPRECATE_EOF);
}

#[test]
fn an_error_in_the_middle_of_rows_ends_the_reply() {
    let caps = BASE;
    let mut s = ready(caps);
    s.client_command(0, 20, &query(b"SELECT SLEEP(100) FROM t"))
        .unwrap();
    let ev = feed(
        &mut s,
        1,
        &[
            encode_column_count(1),
            column("x", ColumnType::LONGLONG),
            eof(2),
            TextRow::encode([Some(&b"0"[..])]),
            Bytes::from_static(b"\xff\x25\x05#70100Query execution was interrupted"),
        ],
    );
    assert_eq!(ev[3].packet, ServerPacket::Row);
    assert_eq!(
        (ev[4].packet, ev[4].completes_reply),
        (ServerPacket::Error, true)
    );
    assert!(s.is_idle());
}

/// Statement 8 (no parameters, one column) prepared, and an EXECUTE of it
/// sent: the session waits for its reply.
fn executing(s: &mut Session, caps: Capabilities) {
    prepared(s, 8, caps);
    let exec = StmtExecute::encode(8, 0, None, &[]).unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    s.client_command(0, exec.len(), &Command::StmtExecute(e))
        .unwrap();
}

#[test]
fn call_results_end_with_an_ok_in_both_protocols() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    executing(&mut s, caps);
    let bt = [BinaryType {
        column_type: ColumnType::VAR_STRING,
        unsigned: false,
    }];
    let row = BinaryRow::encode(&bt, &[Value::Bytes(b"x")]).unwrap();
    // Two result sets, then the CALL's own OK.
    let events = feed(
        &mut s,
        1,
        &[
            encode_column_count(1),
            column("a", ColumnType::VAR_STRING),
            row.clone(),
            end(0x0A, caps),
            encode_column_count(1),
            column("b", ColumnType::VAR_STRING),
            row,
            end(0x0A, caps),
            ok(0x02, caps),
        ],
    );
    let indexes: Vec<usize> = events
        .iter()
        .map(|e| e.reply.unwrap().statement_index)
        .collect();
    assert_eq!(indexes, [0, 0, 0, 0, 1, 1, 1, 1, 2]);
    assert!(events[8].completes_reply);
}

#[test]
fn a_classic_eof_answers_set_option_under_deprecate_eof() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    s.client_command(0, 3, &Command::SetOption { option: 1 })
        .unwrap();
    let e = s.server_packet(1, &eof(2)).unwrap();
    assert_eq!((e.packet, e.completes_reply), (ServerPacket::Eof, true));
    s.client_command(0, 3, &Command::SetOption { option: 0 })
        .unwrap();
    let e = s.server_packet(1, &end(2, caps)).unwrap();
    assert!(e.completes_reply);
    assert!(s.multi_statements());
}

#[test]
fn an_error_ends_a_multi_statement_reply() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    s.client_command(0, 20, &query(b"SELECT 1; SELEKT 2; SELECT 3"))
        .unwrap();
    let ev = feed(
        &mut s,
        1,
        &[
            encode_column_count(1),
            column("1", ColumnType::LONGLONG),
            TextRow::encode([Some(&b"1"[..])]),
            end(0x0A, caps),
            Bytes::from_static(b"\xff\x28\x04#42000You have an error"),
        ],
    );
    let last = ev.last().unwrap();
    assert_eq!(
        (last.packet, last.completes_reply),
        (ServerPacket::Error, true)
    );
    assert_eq!(last.reply.unwrap().statement_index, 1);
    assert!(s.is_idle());
    assert!(s.server_packet(6, &ok(2, caps)).is_err(), "nothing owed");
}

fn prepare_then_execute(caps: Capabilities) {
    let deprecate = caps.contains(Capabilities::DEPRECATE_EOF);
    let mut s = ready(caps);
    let sql = b"SELECT id, ssn FROM customers WHERE id = ? AND ssn <> ?";
    s.client_command(0, 1 + sql.len(), &Command::StmtPrepare { sql })
        .unwrap();
    // Pipelined: EXECUTE of "the last prepared statement" before PREPARE_OK.
    let types = [
        ParamType {
            column_type: ColumnType::LONGLONG,
            flags: 0,
        },
        ParamType {
            column_type: ColumnType::VAR_STRING,
            flags: 0,
        },
    ];
    let exec = StmtExecute::encode(
        LAST_PREPARED,
        0,
        Some(&types),
        &[
            ParamValue::Value(Value::I64(1)),
            ParamValue::Value(Value::Bytes(b"x")),
        ],
    )
    .unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    assert_eq!(s.execute_params(&e).unwrap(), None, "not confirmed yet");
    s.client_command(0, exec.len(), &Command::StmtExecute(e))
        .unwrap();
    assert!(s.statement(7).is_none(), "recorded only when confirmed");

    let prepare_ok = PrepareOk {
        statement_id: 7,
        columns: 2,
        params: 2,
        reserved: 0,
        warnings: Some(0),
        metadata_follows: None,
    }
    .encode();
    let mut packets = vec![
        prepare_ok,
        column("?", ColumnType::VAR_STRING),
        column("?", ColumnType::VAR_STRING),
    ];
    if !deprecate {
        packets.push(eof(2));
    }
    packets.push(column("id", ColumnType::LONG));
    packets.push(column("ssn", ColumnType::VAR_STRING));
    if !deprecate {
        packets.push(eof(2));
    }
    let events = feed(&mut s, 1, &packets);
    assert!(events.last().unwrap().completes_reply);
    assert_eq!(
        events[0].packet,
        ServerPacket::PrepareOk {
            statement_id: 7,
            params: 2,
            columns: 2
        }
    );
    assert_eq!(events[1].packet, ServerPacket::ParamDefinition(0));
    let st = s.statement(7).unwrap();
    assert_eq!(
        (st.param_count, st.params.len(), st.columns.len()),
        (2, 2, 2)
    );
    assert_eq!(&st.sql[..], sql);
    // The pipelined EXECUTE's types were learnt from its own packet.
    assert_eq!(s.param_types.get(&7).unwrap(), &types);
    assert_eq!(s.current_reply().unwrap().statement_id, Some(7));

    let mut packets = vec![
        encode_column_count(2),
        column("id", ColumnType::LONG),
        column("ssn", ColumnType::VAR_STRING),
    ];
    if !deprecate {
        packets.push(eof(2));
    }
    let bt = [
        BinaryType {
            column_type: ColumnType::LONG,
            unsigned: false,
        },
        BinaryType {
            column_type: ColumnType::VAR_STRING,
            unsigned: false,
        },
    ];
    packets.push(BinaryRow::encode(&bt, &[Value::I32(1), Value::Null]).unwrap());
    packets.push(end(2, caps));
    let events = feed(&mut s, 1, &packets);
    let row = events
        .iter()
        .find(|e| e.packet == ServerPacket::Row)
        .unwrap();
    assert!(row.reply.unwrap().binary_rows);
    assert!(row.columns_complete);
    assert!(events.last().unwrap().completes_reply);
    assert!(s.is_idle());

    // Types not repeated: the parameters decode with the ones bound before.
    let exec = StmtExecute::encode(
        7,
        0,
        None,
        &[ParamValue::Value(Value::I64(2)), ParamValue::Null],
    )
    .unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    let p = s.execute_params(&e).unwrap().unwrap();
    assert_eq!(
        p.values,
        vec![ParamValue::Value(Value::I64(2)), ParamValue::Null]
    );
    let unknown = StmtExecute::parse_body(&[9, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
    assert_eq!(
        s.execute_params(&unknown),
        Err(SessionError::UnknownStatement(9))
    );

    // An EXECUTE of the confirmed statement that binds other types: they
    // are what the next one that does not repeat them is read with.
    let rebound = [
        ParamType {
            column_type: ColumnType::LONG,
            flags: 0,
        },
        ParamType {
            column_type: ColumnType::BLOB,
            flags: 0,
        },
    ];
    let exec = StmtExecute::encode(
        7,
        0,
        Some(&rebound),
        &[ParamValue::Value(Value::I32(3)), ParamValue::Null],
    )
    .unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    s.client_command(0, exec.len(), &Command::StmtExecute(e))
        .unwrap();
    assert_eq!(s.param_types.get(&7).unwrap(), &rebound);
    feed(&mut s, 1, &[ok(2, caps)]);
    let exec = StmtExecute::encode(
        7,
        0,
        None,
        &[ParamValue::Value(Value::I32(4)), ParamValue::Null],
    )
    .unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    assert_eq!(
        s.execute_params(&e).unwrap().unwrap().values,
        vec![ParamValue::Value(Value::I32(4)), ParamValue::Null]
    );
    s.client_command(0, exec.len(), &Command::StmtExecute(e))
        .unwrap();
    assert_eq!(s.param_types.get(&7).unwrap(), &rebound, "not rebound");
}

#[test]
fn pipelined_prepare_and_execute_with_classic_eof() {
    prepare_then_execute(BASE);
}

#[test]
fn pipelined_prepare_and_execute_with_deprecate_eof() {
    prepare_then_execute(BASE | Capabilities::DEPRECATE_EOF);
}

#[test]
fn a_failed_prepare_records_nothing() {
    let mut s = ready(BASE);
    s.client_command(0, 5, &Command::StmtPrepare { sql: b"SELEKT" })
        .unwrap();
    let e = s.server_packet(1, b"\xff\x28\x04#42000syntax").unwrap();
    assert!(e.completes_reply);
    assert_eq!(s.statements().count(), 0);
}

fn prepared(s: &mut Session, id: u32, caps: Capabilities) {
    s.client_command(
        0,
        10,
        &Command::StmtPrepare {
            sql: b"SELECT ssn FROM customers",
        },
    )
    .unwrap();
    let mut packets = vec![
        PrepareOk {
            statement_id: id,
            columns: 1,
            params: 0,
            reserved: 0,
            warnings: Some(0),
            metadata_follows: None,
        }
        .encode(),
        column("ssn", ColumnType::VAR_STRING),
    ];
    if !caps.contains(Capabilities::DEPRECATE_EOF) {
        packets.push(eof(2));
    }
    assert!(feed(s, 1, &packets).last().unwrap().completes_reply);
}

fn cursor(caps: Capabilities, track: bool) {
    let mut s = ready(caps);
    // A cursor's columns are kept even when nothing else's are.
    s.set_track_columns(track);
    prepared(&mut s, 3, caps);
    let exec = StmtExecute::encode(3, flags::READ_ONLY, None, &[]).unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    assert!(e.wants_cursor());
    s.client_command(0, exec.len(), &Command::StmtExecute(e))
        .unwrap();
    let events = feed(
        &mut s,
        1,
        &[
            encode_column_count(1),
            column("ssn", ColumnType::VAR_STRING),
            end(0x42, caps),
        ],
    );
    let last = events.last().unwrap();
    assert_eq!(
        last.packet,
        ServerPacket::EndOfRows {
            more_results: false,
            cursor_opened: true
        }
    );
    assert!(last.completes_reply);
    s.client_command(
        0,
        9,
        &Command::StmtFetch {
            statement_id: 3,
            rows: 2,
        },
    )
    .unwrap();
    assert_eq!(&s.result_columns().unwrap()[0].name[..], b"ssn");
    let bt = [BinaryType {
        column_type: ColumnType::VAR_STRING,
        unsigned: false,
    }];
    let row = BinaryRow::encode(&bt, &[Value::Bytes(b"123")]).unwrap();
    let events = feed(&mut s, 1, &[row.clone(), row.clone(), end(0x42, caps)]);
    assert!(events[0].reply.unwrap().binary_rows);
    assert!(events[2].completes_reply);
    s.client_command(
        0,
        9,
        &Command::StmtFetch {
            statement_id: 3,
            rows: 2,
        },
    )
    .unwrap();
    feed(&mut s, 1, &[row, end(0xC2, caps)]);
    assert!(s.statement(3).unwrap().cursor_exhausted);
}

/// MariaDB's FETCH of 0xFFFFFFFF is the cursor of the statement prepared
/// last: its columns are the ones the EXECUTE opened the cursor with.
#[test]
fn fetch_of_the_statement_prepared_last_finds_its_cursor_columns() {
    let caps = BASE;
    let mut s = ready(caps);
    prepared(&mut s, 3, caps);
    let exec = StmtExecute::encode(3, flags::READ_ONLY, None, &[]).unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    s.client_command(0, exec.len(), &Command::StmtExecute(e))
        .unwrap();
    feed(
        &mut s,
        1,
        &[
            encode_column_count(1),
            column("ssn", ColumnType::VAR_STRING),
            end(0x42, caps),
        ],
    );
    s.client_command(
        0,
        9,
        &Command::StmtFetch {
            statement_id: u32::MAX,
            rows: 1,
        },
    )
    .unwrap();
    assert_eq!(&s.result_columns().unwrap()[0].name[..], b"ssn");
    let bt = [BinaryType {
        column_type: ColumnType::VAR_STRING,
        unsigned: false,
    }];
    let row = BinaryRow::encode(&bt, &[Value::Bytes(b"123")]).unwrap();
    let events = feed(&mut s, 1, &[row, end(0xC2, caps)]);
    assert_eq!(events[0].reply.unwrap().statement_id, Some(3));
    assert!(s.statement(3).unwrap().cursor_exhausted);
}

#[test]
fn cursor_and_fetch_with_classic_eof() {
    cursor(BASE, true);
    cursor(BASE, false);
}

#[test]
fn cursor_and_fetch_with_deprecate_eof() {
    cursor(BASE | Capabilities::DEPRECATE_EOF, true);
    cursor(BASE | Capabilities::DEPRECATE_EOF, false);
}

/// Without column tracking, definitions are still validated (a malformed
/// one ends the session's trust in the reply) but none is kept; turning it
/// on applies from the next command.
#[test]
fn untracked_replies_validate_definitions_and_keep_none() {
    for caps in [BASE, BASE | Capabilities::DEPRECATE_EOF] {
        let mut s = ready(caps);
        s.set_track_columns(false);
        let result = |caps: Capabilities| {
            let mut p = vec![
                encode_column_count(2),
                column("id", ColumnType::LONG),
                column("ssn", ColumnType::VAR_STRING),
            ];
            if !caps.contains(Capabilities::DEPRECATE_EOF) {
                p.push(eof(2));
            }
            p.push(TextRow::encode([Some(&b"1"[..]), Some(b"x")]));
            p.push(end(2, caps));
            p
        };
        s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
        let packets = result(caps);
        let rows_at = packets.len() - 2;
        for (i, p) in packets[..rows_at].iter().enumerate() {
            s.server_packet(1 + i as u8, p).unwrap();
        }
        assert_eq!(s.result_columns().map(<[_]>::len), Some(0));
        let events = feed(&mut s, 1 + rows_at as u8, &packets[rows_at..]);
        assert_eq!(events[0].packet, ServerPacket::Row);
        assert!(events[1].completes_reply);

        // A malformed definition is refused all the same.
        s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
        s.server_packet(1, &encode_column_count(1)).unwrap();
        let good = column("id", ColumnType::LONG);
        assert!(s.server_packet(2, &good[..good.len() - 1]).is_err());

        let mut s = ready(caps);
        s.set_track_columns(false);
        s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
        s.set_track_columns(true);
        feed(&mut s, 1, &result(caps)[..3]);
        assert_eq!(s.result_columns().map(<[_]>::len), Some(0), "not this one");
        feed(&mut s, 4, &result(caps)[3..]);
        s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
        feed(&mut s, 1, &result(caps)[..3]);
        assert_eq!(&s.result_columns().unwrap()[1].name[..], b"ssn");
    }
}

#[test]
fn local_infile_exchange() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    s.client_command(
        0,
        40,
        &query(b"LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t"),
    )
    .unwrap();
    let req = LocalInfileRequest {
        filename: Bytes::from_static(b"/tmp/x"),
    }
    .encode();
    assert_eq!(
        s.server_packet(1, &req).unwrap().packet,
        ServerPacket::LocalInfileRequest
    );
    assert!(s.awaiting_client_data());
    assert!(
        s.server_packet(2, &ok(2, caps)).is_err(),
        "the client's turn"
    );
    assert!(s.client_command(0, 5, &Command::Ping).is_err());
    assert_eq!(s.client_data(2, 100).unwrap(), ClientData::InfileData);
    assert!(s.client_data(4, 100).is_err(), "out of order");
    let mut s = ready(caps);
    s.client_command(
        0,
        40,
        &query(b"LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t"),
    )
    .unwrap();
    s.server_packet(1, &req).unwrap();
    s.client_data(2, 100).unwrap();
    s.client_data(3, 100).unwrap();
    assert_eq!(s.client_data(4, 0).unwrap(), ClientData::InfileEnd);
    assert!(!s.awaiting_client_data());
    let e = s.server_packet(5, &ok(2, caps)).unwrap();
    assert!(e.completes_reply);
}

#[test]
fn progress_reports_are_not_terminal() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    s.client_command(0, 30, &query(b"ALTER TABLE t ADD COLUMN c INT"))
        .unwrap();
    let progress = Progress {
        stage: 1,
        max_stage: 2,
        progress: 25_000,
        info: Bytes::from_static(b"copy to tmp table"),
    }
    .encode();
    let events = feed(&mut s, 1, &[progress.clone(), progress, ok(2, caps)]);
    assert_eq!(events[0].packet, ServerPacket::Progress);
    assert!(!events[1].completes_reply);
    assert!(events[2].completes_reply);
}

#[test]
fn reply_less_commands_and_effects() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    prepared(&mut s, 4, caps);
    // EXECUTE then CLOSE, back to back: the statement lives until the
    // EXECUTE's reply is complete.
    let exec = StmtExecute::encode(4, 0, None, &[]).unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    s.client_command(0, exec.len(), &Command::StmtExecute(e))
        .unwrap();
    s.client_command(0, 5, &Command::StmtClose { statement_id: 4 })
        .unwrap();
    assert!(s.statement(4).is_some());
    feed(
        &mut s,
        1,
        &[
            encode_column_count(1),
            column("ssn", ColumnType::VAR_STRING),
            end(2, caps),
        ],
    );
    assert!(s.statement(4).is_none(), "closed once the reply ended");
    assert!(s.is_idle());

    // Long data: the parameter's value is not in the EXECUTE.
    s.client_command(
        0,
        10,
        &Command::StmtPrepare {
            sql: b"INSERT INTO t VALUES (?)",
        },
    )
    .unwrap();
    let mut packets = vec![
        PrepareOk {
            statement_id: 5,
            columns: 0,
            params: 1,
            reserved: 0,
            warnings: Some(0),
            metadata_follows: None,
        }
        .encode(),
        column("?", ColumnType::BLOB),
    ];
    packets.truncate(2);
    feed(&mut s, 1, &packets);
    s.client_command(
        0,
        12,
        &Command::StmtSendLongData {
            statement_id: 5,
            param_id: 0,
            data: b"big",
        },
    )
    .unwrap();
    assert!(s.is_idle(), "long data has no reply");
    let blob = [ParamType {
        column_type: ColumnType::BLOB,
        flags: 0,
    }];
    let exec = StmtExecute::encode(5, 0, Some(&blob), &[ParamValue::LongData]).unwrap();
    let Command::StmtExecute(e) = Command::parse(&exec, caps).unwrap() else {
        panic!("an execute");
    };
    assert_eq!(
        s.execute_params(&e).unwrap().unwrap().values,
        vec![ParamValue::LongData]
    );
    s.client_command(0, exec.len(), &Command::StmtExecute(e))
        .unwrap();
    feed(&mut s, 1, &[ok(2, caps)]);

    s.client_command(0, 1, &Command::Quit).unwrap();
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn change_user_reruns_auth_and_resets_the_session() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    prepared(&mut s, 1, caps);
    let cu = crate::command::ChangeUser {
        user: b"app",
        auth_data: &[1; 20],
        database: b"other",
        collation: Some(8),
        auth_plugin: Some(b"mysql_native_password"),
        attributes: None,
    };
    s.client_command(0, 40, &Command::ChangeUser(cu)).unwrap();
    let switch = crate::auth::AuthSwitchRequest {
        plugin: Bytes::from_static(b"mysql_native_password"),
        data: Bytes::from_static(b"01234567890123456789\0"),
        old_form: false,
    }
    .encode()
    .unwrap();
    assert_eq!(
        s.server_packet(1, &switch).unwrap().packet,
        ServerPacket::AuthSwitch
    );
    assert!(s.awaiting_client_data());
    assert_eq!(s.client_data(2, 20).unwrap(), ClientData::AuthData);
    let e = s.server_packet(3, &ok(2, caps)).unwrap();
    assert_eq!((e.packet, e.completes_reply), (ServerPacket::AuthOk, true));
    assert_eq!(s.user(), Some(&b"app"[..]));
    assert_eq!(s.schema(), Some(&b"other"[..]));
    assert_eq!(s.client_collation(), 8);
    assert_eq!(s.character_set_client(), Some("latin1"));
    assert_eq!(s.statements().count(), 0);
}

#[test]
fn simple_commands_field_list_and_statistics() {
    let caps = BASE;
    let mut s = ready(caps);
    s.client_command(0, 6, &Command::InitDb { schema: b"sales" })
        .unwrap();
    feed(&mut s, 1, &[ok(2, caps)]);
    assert_eq!(s.schema(), Some(&b"sales"[..]));

    s.client_command(
        0,
        3,
        &Command::SetOption {
            option: set_option::MULTI_STATEMENTS_OFF,
        },
    )
    .unwrap();
    let e = feed(&mut s, 1, &[eof(2)]);
    assert_eq!(e[0].packet, ServerPacket::Eof);
    assert!(!s.multi_statements());

    s.client_command(
        0,
        4,
        &Command::FieldList {
            table: b"t",
            wildcard: b"",
        },
    )
    .unwrap();
    let mut c = crate::column::tests::column("a", ColumnType::LONG, 0);
    c.default_value = Some(Bytes::from_static(b"0"));
    let events = feed(&mut s, 1, &[c.encode(true), c.encode(true), eof(2)]);
    assert_eq!(events[1].packet, ServerPacket::ColumnDefinition(1));
    assert!(events[2].completes_reply);

    s.client_command(0, 1, &Command::Statistics).unwrap();
    let e = feed(&mut s, 1, &[Bytes::from_static(b"Uptime: 5  Threads: 1")]);
    assert_eq!(
        (e[0].packet, e[0].completes_reply),
        (ServerPacket::Statistics, true)
    );

    s.client_command(0, 1, &Command::Ping).unwrap();
    s.client_command(0, 1, &Command::Ping).unwrap();
    assert_eq!(s.owed().count(), 2);
    feed(&mut s, 1, &[ok(2, caps)]);
    feed(&mut s, 1, &[ok(2, caps)]);
    assert!(s.is_idle());
}

#[test]
fn session_tracking_and_status_flags() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    s.client_command(0, 20, &query(b"SET NAMES latin1; USE x"))
        .unwrap();
    let mut state = Vec::new();
    let mut var = Vec::new();
    crate::wire::put_lenenc_bytes(&mut var, b"character_set_client");
    crate::wire::put_lenenc_bytes(&mut var, b"latin1");
    state.push(crate::ok::track::SYSTEM_VARIABLES);
    crate::wire::put_lenenc_bytes(&mut state, &var);
    let mut schema = Vec::new();
    crate::wire::put_lenenc_bytes(&mut schema, b"x");
    state.push(crate::ok::track::SCHEMA);
    crate::wire::put_lenenc_bytes(&mut state, &schema);
    // IN_TRANS | AUTOCOMMIT | NO_BACKSLASH_ESCAPES | ANSI_QUOTES | SESSION_STATE_CHANGED
    let status: u16 = 0x0001 | 0x0002 | 0x0200 | 0x8000 | 0x4000;
    let mut raw = vec![0, 0, 0];
    raw.extend_from_slice(&status.to_le_bytes());
    raw.extend_from_slice(&[0, 0, 0]);
    crate::wire::put_lenenc_bytes(&mut raw, &state);
    let e = s.server_packet(1, &raw).unwrap();
    assert_eq!(e.transaction, TransactionStatus::InTransaction);
    assert_eq!(s.character_set_client(), Some("latin1"));
    assert_eq!(s.schema(), Some(&b"x"[..]));
    assert!(s.no_backslash_escapes());
    assert_eq!(s.ansi_quotes(), Some(true));
}

#[test]
fn sequence_errors_unsolicited_errors_and_injected_commands() {
    let caps = BASE;
    let mut s = ready(caps);
    s.client_command(0, 1, &Command::Ping).unwrap();
    assert!(matches!(
        s.server_packet(2, &ok(2, caps)),
        Err(SessionError::Sequence(_))
    ));
    let mut s = ready(caps);
    assert!(
        s.client_command(1, 1, &Command::Ping).is_err(),
        "commands start at 0"
    );
    // A big command takes several ids: the reply starts after them.
    let big = vec![b'x'; MAX_CHUNK + 10];
    s.client_command(0, big.len(), &query(&big)).unwrap();
    assert_eq!(s.expected_server_seq(), Some(2));
    feed(&mut s, 2, &[ok(2, caps)]);

    let id = s.injected_command(1, &Command::Ping).unwrap();
    let e = s.server_packet(1, &ok(2, caps)).unwrap();
    let r = e.reply.unwrap();
    assert_eq!((r.id, r.origin), (id, Origin::Hoop));

    // The server closing an idle connection with an ERR nobody asked for.
    let e = s
        .server_packet(0, b"\xff\xa3\x0f#HY000The client was disconnected")
        .unwrap();
    assert_eq!((e.packet, e.reply), (ServerPacket::Error, None));
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn huge_rows_can_be_accounted_from_their_head() {
    let caps = BASE | Capabilities::DEPRECATE_EOF;
    let mut s = ready(caps);
    s.client_command(0, 10, &query(b"SELECT big")).unwrap();
    feed(
        &mut s,
        1,
        &[encode_column_count(1), column("big", ColumnType::LONG_BLOB)],
    );
    // A 20 MiB row starts with 0xFE (an 8-byte length) and spans two chunks.
    let len = 20 << 20;
    let e = s
        .server_packet_head(3, len, &[0xFE, 0, 0, 0x40, 1])
        .unwrap();
    assert_eq!(e.packet, ServerPacket::Row);
    assert_eq!(s.expected_server_seq(), Some(5), "two chunks");
    assert!(
        s.server_packet_head(5, 100, &[0xFF]).is_err(),
        "an ERR must be whole"
    );
    let e = s.server_packet(5, &end(2, caps)).unwrap();
    assert!(e.completes_reply);
}

#[test]
fn opaque_protocols_stop_attribution() {
    let mut s = ready(BASE);
    s.client_command(0, 2, &Command::Clone { data: b"\x01" })
        .unwrap();
    assert_eq!(s.phase(), Phase::Opaque);
    let e = s.server_packet(1, b"anything").unwrap();
    assert_eq!(e.packet, ServerPacket::Opaque);
}

/// `packets` framed from sequence id `seq` on.
fn framed(seq: u8, packets: &[Bytes]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    let mut seq = seq;
    for p in packets {
        seq = crate::frame::encode_packet(&mut out, seq, p);
    }
    out.to_vec()
}

/// Feeds the framed packets of `raw` one at a time; the last event.
fn feed_framed(s: &mut Session, raw: &[u8]) -> Result<Option<ServerEvent>, SessionError> {
    let mut at = 0;
    let mut last = None;
    while let Some((seq, payload)) = single_packet(&raw[at..], usize::MAX) {
        last = Some(s.server_packet(seq, payload)?);
        at += crate::frame::HEADER_LEN + payload.len();
    }
    assert_eq!(at, raw.len(), "whole packets");
    Ok(last)
}

/// A one-result reply: count, definitions, (EOF), rows, end with `status`.
fn one_result(caps: Capabilities, status: u16, rows: usize) -> Vec<Bytes> {
    let mut p = vec![
        encode_column_count(2),
        column("id", ColumnType::LONG),
        column("ssn", ColumnType::VAR_STRING),
    ];
    if !caps.contains(Capabilities::DEPRECATE_EOF) {
        p.push(eof(2));
    }
    for _ in 0..rows {
        p.push(TextRow::encode([Some(&b"1"[..]), Some(b"x")]));
    }
    p.push(end(status, caps));
    p
}

#[test]
fn plain_runs_account_as_packet_by_packet_and_leave_what_needs_a_look() {
    for caps in [BASE, BASE | Capabilities::DEPRECATE_EOF] {
        let head_len = if caps.contains(Capabilities::DEPRECATE_EOF) {
            3
        } else {
            4
        };
        let untracked = |caps| {
            let mut s = ready(caps);
            s.set_track_columns(false);
            s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
            s
        };
        // A whole reply in one run: the status of its end is the session's.
        let packets = one_result(caps, 0x03, 3);
        let raw = framed(1, &packets);
        let mut s = untracked(caps);
        let run = s.plain_run(&raw, usize::MAX);
        assert_eq!(
            run,
            PlainRun {
                bytes: raw.len(),
                packets: packets.len(),
                completes_reply: true,
                in_rows: false,
            }
        );
        assert!(s.is_idle());
        assert_eq!(s.transaction(), TransactionStatus::InTransaction);

        // Cut anywhere: a run ends at a packet's end, never inside the
        // head, and the packets after it account as usual.
        let head_end = framed(1, &packets[..head_len]).len();
        for cut in 0..=raw.len() {
            let mut s = untracked(caps);
            let run = s.plain_run(&raw[..cut], usize::MAX);
            assert!(run.bytes <= cut);
            assert!(
                run.bytes == 0 || run.bytes >= head_end,
                "cut {cut}: {run:?}"
            );
            assert_eq!(run.in_rows, run.bytes >= head_end && !run.completes_reply);
            let last = feed_framed(&mut s, &raw[run.bytes..]).unwrap();
            assert!(run.completes_reply || last.is_some_and(|e| e.completes_reply));
            assert!(s.is_idle(), "cut {cut}");
            assert_eq!(s.transaction(), TransactionStatus::InTransaction);
        }

        // What needs a look stops the run before it, and is then taken
        // packet by packet as before.
        // (`true`: all but the last packet are a run; `false`: none is,
        // the last packet being part of the head.)
        let classic = !caps.contains(Capabilities::DEPRECATE_EOF);
        let stops: Vec<(&str, Vec<Bytes>, bool)> = vec![
            ("an OK", vec![ok(2, caps)], true),
            ("more results", one_result(caps, 0x0A, 1), true),
            (
                "a cursor",
                {
                    let mut p = one_result(caps, 0x42, 0);
                    if classic {
                        p.truncate(head_len);
                        p[head_len - 1] = eof(0x42);
                    }
                    p
                },
                !classic,
            ),
            (
                "an ERR in the rows",
                {
                    let mut p = one_result(caps, 2, 1);
                    let last = p.len() - 1;
                    p[last] =
                        Bytes::from_static(b"\xff\x25\x05#70100Query execution was interrupted");
                    p
                },
                true,
            ),
        ];
        for (what, reply, taken) in stops {
            let mut s = untracked(caps);
            let raw = framed(1, &reply);
            let run = s.plain_run(&raw, usize::MAX);
            assert!(!run.completes_reply, "{what}");
            let taken = if taken { reply.len() - 1 } else { 0 };
            assert_eq!(run.packets, taken, "{what}");
            let last = feed_framed(&mut s, &raw[run.bytes..]).unwrap();
            assert!(
                last.is_some_and(|e| e.completes_reply) || what == "more results",
                "{what}"
            );
        }

        // A malformed definition or a sequence gap: nothing of the head is
        // taken, and the packet-by-packet path refuses it as before.
        let good = column("ssn", ColumnType::VAR_STRING);
        let mut bad = one_result(caps, 2, 1);
        bad[2] = good.slice(..good.len() - 1);
        let mut s = untracked(caps);
        let raw = framed(1, &bad);
        assert_eq!(s.plain_run(&raw, usize::MAX).packets, 0);
        assert!(feed_framed(&mut s, &raw).is_err());
        let mut s = untracked(caps);
        let mut raw = framed(1, &packets);
        raw[3] = 2;
        assert_eq!(s.plain_run(&raw, usize::MAX).packets, 0);
        assert!(feed_framed(&mut s, &raw).is_err());
        // Rows whose end is out of sequence: the rows are taken, not it.
        let mut s = untracked(caps);
        let mut raw = framed(1, &packets);
        let end_at = raw.len() - crate::frame::HEADER_LEN - packets[packets.len() - 1].len();
        raw[end_at + 3] = 0;
        assert_eq!(s.plain_run(&raw, usize::MAX).packets, packets.len() - 1);

        // A reply that keeps its definitions, or a payload over the limit,
        // is not a run.
        let mut s = ready(caps);
        s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
        assert_eq!(s.plain_run(&framed(1, &packets), usize::MAX).packets, 0);
        let mut s = untracked(caps);
        assert_eq!(s.plain_run(&framed(1, &packets), 1).packets, 0);
    }
}

#[test]
fn a_plain_run_may_start_in_the_rows_and_end_the_reply() {
    for caps in [BASE, BASE | Capabilities::DEPRECATE_EOF] {
        let mut s = ready(caps);
        s.set_track_columns(false);
        s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
        let packets = one_result(caps, 0x03, 2);
        let raw = framed(1, &packets);
        let end_at = raw.len() - crate::frame::HEADER_LEN - packets[packets.len() - 1].len();
        let row_at = end_at - crate::frame::HEADER_LEN - packets[packets.len() - 2].len();
        // Up to the last row, then the rest (a row and the end) in a run of
        // its own, then nothing.
        let first = s.plain_run(&raw[..row_at], usize::MAX);
        assert!(first.in_rows && !first.completes_reply);
        let second = s.plain_run(&raw[first.bytes..], usize::MAX);
        assert_eq!((second.packets, second.completes_reply), (2, true));
        assert!(s.is_idle());
        assert_eq!(s.transaction(), TransactionStatus::InTransaction);
        // The end alone.
        s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
        let first = s.plain_run(&raw[..end_at], usize::MAX);
        assert!(first.in_rows);
        let second = s.plain_run(&raw[end_at..], usize::MAX);
        assert_eq!((second.packets, second.completes_reply), (1, true));
        assert!(s.is_idle());
    }
}

/// A small deterministic generator (xorshift) for the differential test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random reply to a COM_QUERY: well formed or not, whole or cut.
fn random_reply(r: &mut Rng, caps: Capabilities) -> Vec<u8> {
    let deprecate = caps.contains(Capabilities::DEPRECATE_EOF);
    let status = |r: &mut Rng| -> u16 {
        [0x02, 0x03, 0x0A, 0x42, 0x22, 0x4002][usize::try_from(r.below(6)).unwrap()]
    };
    let mut packets: Vec<Bytes> = Vec::new();
    for _ in 0..=r.below(3) {
        match r.below(8) {
            0 => packets.push(ok(status(r), caps)),
            1 => packets.push(Bytes::from_static(
                b"\xff\xff\xff\x01\x01\x00\x00\x00\x00\x04stage",
            )),
            _ => {
                let count = 1 + r.below(3);
                packets.push(encode_column_count(count));
                for i in 0..count {
                    packets.push(column(&format!("c{i}"), ColumnType::VAR_STRING));
                }
                if !deprecate {
                    packets.push(eof(status(r)));
                }
                for _ in 0..r.below(4) {
                    let values: Vec<Option<&[u8]>> = (0..count).map(|_| Some(&b"v"[..])).collect();
                    packets.push(TextRow::encode(values));
                }
                packets.push(end(status(r), caps));
            }
        }
    }
    // Damage: a byte of a payload, an ERR instead of a packet, or nothing.
    match r.below(5) {
        0 => {
            let i = usize::try_from(r.below(packets.len() as u64)).unwrap();
            let mut p = packets[i].to_vec();
            let at = usize::try_from(r.below(p.len() as u64)).unwrap();
            p[at] = [0x00, 0xFB, 0xFC, 0xFE, 0xFF, 0x0C][usize::try_from(r.below(6)).unwrap()];
            packets[i] = Bytes::from(p);
        }
        1 => {
            let i = usize::try_from(r.below(packets.len() as u64)).unwrap();
            packets[i] = Bytes::from_static(b"\xff\x25\x05#70100Query execution was interrupted");
        }
        _ => {}
    }
    let mut raw = framed(1, &packets);
    match r.below(6) {
        // A sequence id off.
        0 => {
            let mut at = 0;
            let target = r.below(packets.len() as u64);
            for (i, p) in packets.iter().enumerate() {
                if i as u64 == target {
                    raw[at + 3] = raw[at + 3].wrapping_add(1);
                }
                at += crate::frame::HEADER_LEN + p.len();
            }
        }
        // Cut anywhere.
        1 => raw.truncate(usize::try_from(r.below(raw.len() as u64 + 1)).unwrap()),
        _ => {}
    }
    raw
}

/// Packet by packet: the session afterwards and how far it got.
fn packet_by_packet(s: &mut Session, raw: &[u8]) -> (usize, bool) {
    let mut at = 0;
    while let Some((seq, payload)) = single_packet(&raw[at..], usize::MAX) {
        if s.is_idle() {
            break;
        }
        if s.server_packet(seq, payload).is_err() {
            return (at, true);
        }
        at += crate::frame::HEADER_LEN + payload.len();
    }
    (at, false)
}

/// As the relay does: runs, and the packet path for what a run leaves.
fn by_runs(s: &mut Session, raw: &[u8]) -> (usize, bool) {
    let mut at = 0;
    loop {
        if s.is_idle() {
            return (at, false);
        }
        let run = s.plain_run(&raw[at..], usize::MAX);
        at += run.bytes;
        if run.completes_reply {
            return (at, false);
        }
        let Some((seq, payload)) = single_packet(&raw[at..], usize::MAX) else {
            return (at, false);
        };
        if s.server_packet(seq, payload).is_err() {
            return (at, true);
        }
        at += crate::frame::HEADER_LEN + payload.len();
    }
}

#[test]
fn plain_runs_end_where_packet_by_packet_ends_on_random_replies() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for case in 0..20_000 {
        let caps = if r.below(2) == 0 {
            BASE
        } else {
            BASE | Capabilities::DEPRECATE_EOF
        };
        let raw = random_reply(&mut r, caps);
        // A COM_QUERY's reply or a COM_STMT_EXECUTE's (whose rows the
        // session does not read either).
        let execute = r.below(2) == 0;
        let start = || {
            let mut s = ready(caps);
            s.set_track_columns(false);
            if execute {
                executing(&mut s, caps);
            } else {
                s.client_command(0, 9, &query(b"SELECT 1")).unwrap();
            }
            s
        };
        let (mut a, mut b) = (start(), start());
        let by_packet = packet_by_packet(&mut a, &raw);
        let run = by_runs(&mut b, &raw);
        assert_eq!(by_packet, run, "case {case}: {raw:02x?}");
        assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "case {case}: {raw:02x?}"
        );
    }
}
