//! Client → server: a byte stream of client packets through the frame
//! decoder, the handshake-response and command parsers, COM_STMT_EXECUTE's
//! parameter decoding, and the session state machine (with confirmed
//! prepared statements, so parameters decode). Nothing may panic; what
//! parses must re-encode to something that parses the same.
#![no_main]

use bytes::{Bytes, BytesMut};
use hoop_proto_mysql::capabilities::{Capabilities, HOOP_CLEARED};
use hoop_proto_mysql::command::Command;
use hoop_proto_mysql::execute::{ParamType, StmtExecute};
use hoop_proto_mysql::frame::{ChunkDecoder, Direction, PacketDecoder, renumber};
use hoop_proto_mysql::handshake::{ClientHello, Greeting, HandshakeResponse, SslRequest};
use hoop_proto_mysql::ok::OkPacket;
use hoop_proto_mysql::prepare::PrepareOk;
use hoop_proto_mysql::session::{Phase, Session, SessionConfig};
use hoop_proto_mysql::status::StatusFlags;
use hoop_proto_mysql::value::ColumnType;
use libfuzzer_sys::fuzz_target;

fn caps_for(mode: u8) -> Capabilities {
    let mut caps =
        Capabilities::PROTOCOL_41 | Capabilities::TRANSACTIONS | Capabilities::DEPRECATE_EOF;
    for (bit, cap) in [
        (0, Capabilities::SECURE_CONNECTION),
        (1, Capabilities::PLUGIN_AUTH),
        (2, Capabilities::CONNECT_ATTRS),
        (3, Capabilities::QUERY_ATTRIBUTES),
        (4, Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA),
        (5, Capabilities::CONNECT_WITH_DB),
        (6, Capabilities::ZSTD_COMPRESSION_ALGORITHM),
    ] {
        if mode & (1 << bit) != 0 {
            caps = caps | cap;
        }
    }
    caps
}

/// A session in the command phase with statements 1 (two parameters) and
/// 2 (none) confirmed.
fn ready(caps: Capabilities) -> Session {
    let mut s = Session::new(SessionConfig {
        track_columns: true,
    });
    let greeting = Greeting {
        protocol_version: 10,
        server_version: Bytes::from_static(b"8.0.36"),
        thread_id: 1,
        scramble_1: [1; 8],
        filler: 0,
        capabilities: caps | Capabilities::LONG_PASSWORD,
        collation: 45,
        status: 2,
        auth_data_len: 21,
        reserved: [0; 10],
        scramble_2: Bytes::from_static(&[2; 13]),
        auth_plugin: caps
            .contains(Capabilities::PLUGIN_AUTH)
            .then(|| Bytes::from_static(b"mysql_native_password")),
        plugin_terminated: true,
    }
    .encode()
    .expect("greeting");
    let _ = s.server_packet(0, &greeting);
    let response = HandshakeResponse {
        head: SslRequest {
            capabilities: caps,
            max_packet_size: 1 << 24,
            collation: 45,
            filler: [0; 23],
        },
        user: Bytes::from_static(b"u"),
        auth_data: Bytes::new(),
        database: None,
        auth_plugin: None,
        plugin_terminated: true,
        attributes: None,
        zstd_level: None,
    }
    .encode()
    .expect("response");
    let _ = s.client_hello(1, &response);
    let ok = OkPacket::simple(0, 0, StatusFlags(2), 0, caps).encode();
    let _ = s.server_packet(2, &ok);
    for (id, params) in [(1u32, 2u16), (2, 0)] {
        let prep = Command::StmtPrepare {
            sql: b"SELECT ?, ?",
        };
        let _ = s.client_command(0, 12, &prep);
        let ok = PrepareOk {
            statement_id: id,
            columns: 0,
            params,
            reserved: 0,
            warnings: Some(0),
            metadata_follows: None,
        }
        .encode();
        let _ = s.server_packet(1, &ok);
        let column = hoop_proto_mysql::column::ColumnDefinition {
            catalog: Bytes::from_static(b"def"),
            schema: Bytes::new(),
            table: Bytes::new(),
            org_table: Bytes::new(),
            name: Bytes::from_static(b"?"),
            org_name: Bytes::new(),
            extended: None,
            collation: 63,
            column_length: 0,
            column_type: ColumnType::VAR_STRING,
            flags: hoop_proto_mysql::column::ColumnFlags(0),
            decimals: 0,
            filler: [0; 2],
            default_value: None,
        }
        .encode(false);
        for k in 0..params {
            let _ = s.server_packet(2 + k as u8, &column);
        }
    }
    assert_eq!(s.phase(), Phase::Command);
    assert!(s.is_idle());
    s
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let caps = caps_for(mode);

    // The connection phase's parsers on the whole input.
    if let Ok(hello) = ClientHello::parse(rest) {
        match hello {
            ClientHello::SslRequest(r) => assert_eq!(&r.encode()[..], rest),
            ClientHello::Response(r) => {
                let encoded = r.encode().expect("a parsed response encodes");
                let again = HandshakeResponse::parse(&encoded).expect("re-parses");
                assert_eq!(again, *r);
                if let Ok(cleared) = r.with_cleared(HOOP_CLEARED) {
                    let c = HandshakeResponse::parse(&cleared).expect("a cleared response parses");
                    assert!(!c.capabilities().intersects(HOOP_CLEARED));
                    assert_eq!((c.user, c.auth_data), (r.user.clone(), r.auth_data.clone()));
                }
                let _ = r.ssl_request().encode();
            }
        }
    }

    // Framing both ways, and renumbering of what was framed.
    let mut chunks = ChunkDecoder::new(Direction::ClientToServer, 1 << 20);
    let mut cbuf = BytesMut::from(rest);
    while let Ok(Some(c)) = chunks.decode(&mut cbuf) {
        assert_eq!(c.raw.len(), c.payload().len() + 4);
    }

    let mut s = ready(caps);
    let decoder = PacketDecoder::new(Direction::ClientToServer, 1 << 20);
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(p)) = decoder.decode(&mut buf) {
        let mut raw = BytesMut::from(&p.raw[..]);
        assert_eq!(
            renumber(&mut raw, 0).expect("whole packets"),
            (p.chunks % 256) as u8
        );
        let Ok(cmd) = Command::parse(&p.payload, caps) else {
            continue;
        };
        let _ = cmd.name();
        let _ = cmd.refused_by_default();
        if let Ok(encoded) = cmd.encode(caps) {
            let again = Command::parse(&encoded, caps).expect("an encoded command parses");
            assert_eq!(again.code(), cmd.code());
            assert_eq!(again.encode(caps).expect("encodes"), encoded);
        }
        if let Command::StmtExecute(e) = &cmd {
            if let Ok(Some(params)) = s.execute_params(e) {
                assert_eq!(params.values.len(), params.types.len());
                let again = StmtExecute::encode(
                    e.statement_id,
                    e.flags,
                    params.new_params_bound.then_some(&params.types[..]),
                    &params.values,
                );
                if let Ok(again) = again {
                    let e2 = StmtExecute::parse_body(&again[1..]).expect("head");
                    let previous = (!params.new_params_bound).then_some(&params.types[..]);
                    let long = |i: usize| {
                        matches!(
                            params.values.get(i),
                            Some(hoop_proto_mysql::execute::ParamValue::LongData)
                        )
                    };
                    let p2 = e2
                        .params(params.values.len(), previous, &long, false)
                        .expect("re-encoded parameters parse");
                    assert_eq!(format!("{:?}", p2.values), format!("{:?}", params.values));
                }
            }
            for count in [0usize, 1, 3, 64] {
                let types = [ParamType {
                    column_type: ColumnType::LONG,
                    flags: 0,
                }]
                .repeat(count);
                let _ = e.params(
                    count,
                    Some(&types),
                    &|i| i == 1,
                    caps.contains(Capabilities::QUERY_ATTRIBUTES),
                );
            }
        }
        if let Command::StmtBulkExecute { flags, data, .. } = &cmd {
            for count in [0usize, 1, 3] {
                let types = [ParamType {
                    column_type: ColumnType::VAR_STRING,
                    flags: 0,
                }]
                .repeat(count);
                if let Ok((t, rows)) = hoop_proto_mysql::execute::parse_bulk_rows(
                    *flags,
                    data,
                    count,
                    Some(&types[..]),
                ) {
                    assert_eq!(t.len(), count);
                    assert!(rows.iter().all(|r| r.len() == count));
                }
            }
        }
        let _ = s.client_command(0, p.payload.len(), &cmd);
        if s.phase() != Phase::Command {
            s = ready(caps);
        }
    }
});
