//! Protocol tests: login, text and binary results, prepared statements,
//! cursors, LOCAL INFILE, COM_CHANGE_USER, packets over 16 MiB.

use anyhow::{Context, Result, ensure};
use hoop_proto_mysql::capabilities::Capabilities;
use hoop_proto_mysql::command::Command;
use hoop_proto_mysql::execute::{LAST_PREPARED, ParamType, ParamValue, StmtExecute, flags};
use hoop_proto_mysql::frame::MAX_CHUNK;
use hoop_proto_mysql::local_infile::LocalInfileRequest;
use hoop_proto_mysql::session::{ClientData, ServerPacket};
use hoop_proto_mysql::status::TransactionStatus;
use hoop_proto_mysql::value::{ColumnType, DateTime, Time, Value};

use crate::client::{Client, Options, Outcome, Scratch, server_available};

fn rows(names: &[&str], rows: &[&[Option<&str>]]) -> Outcome {
    Outcome::Rows(
        names.iter().map(|s| (*s).to_owned()).collect(),
        rows.iter()
            .map(|r| r.iter().map(|v| v.map(str::to_owned)).collect())
            .collect(),
    )
}

fn in_db(db: &Scratch) -> Options {
    Options {
        database: Some(db.name.clone()),
        ..Options::default()
    }
}

#[test]
fn login_text_results_and_simple_commands() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_proto_text")?;
    for deprecate_eof in [true, false] {
        let mut options = in_db(&db);
        if !deprecate_eof {
            options.caps = options.caps.without(Capabilities::DEPRECATE_EOF);
        }
        let mut c = Client::connect(&options)?;

        // The server's own greeting: MariaDB's replication prefix, its
        // extended capabilities, and what hoop clears is cleared.
        ensure!(c.greeting.server_version.starts_with(b"5.5.5-"));
        let version = c.session.server_version().context("a version")?;
        ensure!(version.mariadb && version.version_id() >= 100_000);
        ensure!(c.greeting.capabilities.has_mariadb_extensions());
        ensure!(
            c.greeting
                .capabilities
                .contains(Capabilities::MARIADB_PROGRESS)
        );
        ensure!(c.greeting.capabilities.contains(Capabilities::COMPRESS));
        for gone in [
            Capabilities::COMPRESS,
            Capabilities::MARIADB_CACHE_METADATA,
            Capabilities::MARIADB_EXTENDED_METADATA,
            Capabilities::LOCAL_FILES,
        ] {
            ensure!(!c.caps.contains(gone), "{gone:?} agreed");
        }
        ensure!(c.caps.contains(Capabilities::DEPRECATE_EOF) == deprecate_eof);
        ensure!(c.session.schema() == Some(db.name.as_bytes()));
        ensure!(c.session.user() == Some(&b"root"[..]));

        // Multi-statements with multiple results, NULLs, and the thread id
        // the greeting announced.
        let r = c.query(
            "DROP TABLE IF EXISTS t; \
             CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), note TEXT); \
             INSERT INTO t VALUES (1, 'a', NULL), (2, NULL, 'x;y'); \
             SELECT id, name, note FROM t ORDER BY id; \
             SELECT CONNECTION_ID() AS cid",
        )?;
        let tid = c.greeting.thread_id.to_string();
        ensure!(
            r == [
                Outcome::Ok(0),
                Outcome::Ok(0),
                Outcome::Ok(2),
                rows(
                    &["id", "name", "note"],
                    &[
                        &[Some("1"), Some("a"), None],
                        &[Some("2"), None, Some("x;y")]
                    ]
                ),
                rows(&["cid"], &[&[Some(&tid)]]),
            ],
            "{r:?}"
        );
        ensure!(c.session.thread_id() == c.greeting.thread_id);

        // Errors: alone, and ending a multi-statement reply.
        let r = c.query("SELECT * FROM no_such_table")?;
        ensure!(r == [Outcome::Err(1146, "42S02".into())], "{r:?}");
        let r = c.query("SELECT 1 AS one; SELECT * FROM no_such_table; SELECT 3")?;
        ensure!(
            r == [
                rows(&["one"], &[&[Some("1")]]),
                Outcome::Err(1146, "42S02".into())
            ],
            "{r:?}"
        );

        // CALL: two result sets, then the CALL's own OK.
        let r = c.query(
            "DROP PROCEDURE IF EXISTS two; \
             CREATE PROCEDURE two() BEGIN SELECT 1 AS a; SELECT 2 AS b; END",
        )?;
        ensure!(r == [Outcome::Ok(0), Outcome::Ok(0)], "{r:?}");
        let r = c.query("CALL two()")?;
        ensure!(
            r == [
                rows(&["a"], &[&[Some("1")]]),
                rows(&["b"], &[&[Some("2")]]),
                Outcome::Ok(0)
            ],
            "{r:?}"
        );
        let (call, _) = c.prepare("CALL two()")?;
        let r = c.execute(call, 0, None, &[])?;
        ensure!(
            r == [
                rows(&["a"], &[&[Some("1")]]),
                rows(&["b"], &[&[Some("2")]]),
                Outcome::Ok(0)
            ],
            "binary: {r:?}"
        );

        // COM_SET_OPTION turns multi-statements off and on.
        c.send(&Command::SetOption {
            option: hoop_proto_mysql::command::set_option::MULTI_STATEMENTS_OFF,
        })?;
        let reply = c.reply()?;
        ensure!(
            reply.len() == 1 && reply[0].event.completes_reply,
            "{reply:?}"
        );
        ensure!(!c.session.multi_statements());
        let r = c.query("SELECT 1; SELECT 2")?;
        ensure!(matches!(&r[..], [Outcome::Err(1064, _)]), "{r:?}");
        c.send(&Command::SetOption {
            option: hoop_proto_mysql::command::set_option::MULTI_STATEMENTS_ON,
        })?;
        c.reply()?;
        ensure!(c.session.multi_statements());
        ensure!(c.query("SELECT 1; SELECT 2")?.len() == 2);

        // Transactions are followed from the status flags.
        c.query("BEGIN")?;
        ensure!(c.session.transaction() == TransactionStatus::InTransaction);
        c.query("COMMIT")?;
        ensure!(c.session.transaction() == TransactionStatus::Idle);

        // COM_PING, COM_STATISTICS, COM_FIELD_LIST, COM_INIT_DB.
        c.send(&Command::Ping)?;
        ensure!(matches!(
            c.reply()?[0].event.packet,
            ServerPacket::Ok { .. }
        ));
        c.send(&Command::Statistics)?;
        let stats = c.reply()?;
        ensure!(stats[0].event.packet == ServerPacket::Statistics);
        ensure!(stats[0].payload.starts_with(b"Uptime: "));
        c.send(&Command::FieldList {
            table: b"t",
            wildcard: b"",
        })?;
        let fields = c.reply()?;
        ensure!(fields.len() == 4, "three definitions and an end");
        ensure!(fields[1].event.packet == ServerPacket::ColumnDefinition(1));
        ensure!(fields[3].event.completes_reply);
        c.send(&Command::InitDb { schema: b"mysql" })?;
        ensure!(matches!(
            c.reply()?[0].event.packet,
            ServerPacket::Ok { .. }
        ));
        ensure!(c.session.schema() == Some(&b"mysql"[..]));
        c.query(&format!("USE {}", db.name))?;
        ensure!(
            c.session.schema() == Some(db.name.as_bytes()),
            "session tracking"
        );

        // sql_mode settings that change tokenization, from the status flags.
        c.query("SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'")?;
        ensure!(c.session.no_backslash_escapes());
        ensure!(
            c.session.ansi_quotes() == Some(true),
            "MariaDB reports ANSI_QUOTES"
        );
        c.query("SET SESSION sql_mode = DEFAULT")?;
        ensure!(!c.session.no_backslash_escapes());
        ensure!(c.session.ansi_quotes() == Some(false));
        // The client character set, from session tracking.
        ensure!(c.session.character_set_client() == Some("utf8mb4"));
        c.query("SET NAMES latin1")?;
        ensure!(c.session.character_set_client() == Some("latin1"));

        c.send(&Command::Quit)?;
        ensure!(c.session.phase() == hoop_proto_mysql::session::Phase::Closed);
    }
    Ok(())
}

fn t(column_type: ColumnType, unsigned: bool) -> ParamType {
    ParamType {
        column_type,
        flags: if unsigned { 0x80 } else { 0 },
    }
}

#[test]
fn prepared_statements_binary_rows_and_cursors() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_proto_ps")?;
    for deprecate_eof in [true, false] {
        let mut options = in_db(&db);
        if !deprecate_eof {
            options.caps = options.caps.without(Capabilities::DEPRECATE_EOF);
        }
        let mut c = Client::connect(&options)?;
        c.query(
            "DROP TABLE IF EXISTS types; CREATE TABLE types (id INT, ti TINYINT, si SMALLINT UNSIGNED, \
             bi BIGINT, de DECIMAL(10,2), db DOUBLE, fl FLOAT, d DATE, tm TIME(6), dt DATETIME(6), \
             ts TIMESTAMP(3) NULL, vc VARCHAR(50), bl BLOB, js JSON, n INT)",
        )?;
        let (insert, packets) =
            c.prepare("INSERT INTO types VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")?;
        ensure!(
            packets
                .iter()
                .filter(|p| p.event.packet == ServerPacket::ParamsEof)
                .count()
                == usize::from(!deprecate_eof)
        );
        ensure!(
            c.session
                .statement(insert)
                .context("confirmed")?
                .param_count
                == 15
        );
        let blob: Vec<u8> = (0..=255u8).collect();
        let types = [
            t(ColumnType::LONG, false),
            t(ColumnType::TINY, false),
            t(ColumnType::SHORT, true),
            t(ColumnType::LONGLONG, false),
            t(ColumnType::NEWDECIMAL, false),
            t(ColumnType::DOUBLE, false),
            t(ColumnType::FLOAT, false),
            t(ColumnType::DATE, false),
            t(ColumnType::TIME, false),
            t(ColumnType::DATETIME, false),
            t(ColumnType::TIMESTAMP, false),
            t(ColumnType::VAR_STRING, false),
            t(ColumnType::BLOB, false),
            t(ColumnType::VAR_STRING, false),
            t(ColumnType::LONG, false),
        ];
        let values = [
            ParamValue::Value(Value::I32(1)),
            ParamValue::Value(Value::I8(-5)),
            ParamValue::Value(Value::U16(65_000)),
            ParamValue::Value(Value::I64(-9_000_000_000_000_000)),
            ParamValue::Value(Value::Bytes(b"12.34")),
            ParamValue::Value(Value::F64(2.5)),
            ParamValue::Value(Value::F32(1.25)),
            ParamValue::Value(Value::DateTime(DateTime::new(2024, 2, 29, 0, 0, 0, 0))),
            ParamValue::Value(Value::Time(Time::new(true, 1, 2, 3, 4, 5))),
            ParamValue::Value(Value::DateTime(DateTime::new(2024, 2, 29, 13, 14, 15, 16))),
            ParamValue::Value(Value::DateTime(DateTime::new(2024, 3, 1, 1, 2, 3, 4000))),
            ParamValue::Value(Value::Bytes("héllo".as_bytes())),
            ParamValue::Value(Value::Bytes(&blob)),
            ParamValue::Value(Value::Bytes(br#"{"a": 1}"#)),
            ParamValue::Null,
        ];
        // The session decodes the parameters the way the server reads them.
        let payload = StmtExecute::encode(insert, 0, Some(&types), &values)?;
        let Command::StmtExecute(e) = Command::parse(&payload, c.caps)? else {
            anyhow::bail!("an execute");
        };
        let decoded = c
            .session
            .execute_params(&e)?
            .context("a confirmed statement")?;
        ensure!(decoded.values == values);
        ensure!(c.execute(insert, 0, Some(&types), &values)? == [Outcome::Ok(1)]);
        // Again without the types: the ones bound before are used.
        let mut second = values;
        second[0] = ParamValue::Value(Value::I32(2));
        let payload = StmtExecute::encode(insert, 0, None, &second)?;
        let Command::StmtExecute(e) = Command::parse(&payload, c.caps)? else {
            anyhow::bail!("an execute");
        };
        ensure!(c.session.execute_params(&e)?.context("decoded")?.values == second);
        ensure!(c.execute(insert, 0, None, &second)? == [Outcome::Ok(1)]);

        // PREPARE and EXECUTE of "the last prepared statement", back to back.
        let select = "SELECT id, ti, si, bi, de, db, fl, d, tm, dt, ts, vc, HEX(bl) AS bl, js, n \
                      FROM types WHERE id = ?";
        let prepare = Command::StmtPrepare {
            sql: select.as_bytes(),
        }
        .encode(c.caps)?;
        let execute = StmtExecute::encode(
            LAST_PREPARED,
            0,
            Some(&[t(ColumnType::LONG, false)]),
            &[ParamValue::Value(Value::I32(1))],
        )?;
        let mut both = bytes::BytesMut::new();
        hoop_proto_mysql::frame::encode_packet(&mut both, 0, &prepare);
        hoop_proto_mysql::frame::encode_packet(&mut both, 0, &execute);
        std::io::Write::write_all(c.stream_mut(), &both)?;
        let prepare_cmd = Command::parse(&prepare, c.caps)?;
        c.session.client_command(0, prepare.len(), &prepare_cmd)?;
        let execute_cmd = Command::parse(&execute, c.caps)?;
        c.session.client_command(0, execute.len(), &execute_cmd)?;
        ensure!(c.session.owed().count() == 2, "both replies owed");
        let prepared = c.reply()?;
        let ServerPacket::PrepareOk { statement_id, .. } = prepared[0].event.packet else {
            anyhow::bail!("PREPARE failed");
        };
        ensure!(c.session.current_reply().context("owed")?.statement_id == Some(statement_id));
        let r = c.outcomes(true)?;
        let hex = blob.iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02X}");
            s
        });
        let expected = rows(
            &[
                "id", "ti", "si", "bi", "de", "db", "fl", "d", "tm", "dt", "ts", "vc", "bl", "js",
                "n",
            ],
            &[&[
                Some("1"),
                Some("-5"),
                Some("65000"),
                Some("-9000000000000000"),
                Some("12.34"),
                Some("2.5"),
                Some("1.25"),
                Some("2024-02-29"),
                Some("-26:03:04.000005"),
                Some("2024-02-29 13:14:15.000016"),
                Some("2024-03-01 01:02:03.004000"),
                Some("héllo"),
                Some(&hex),
                Some(r#"{"a": 1}"#),
                None,
            ]],
        );
        let Outcome::Rows(_, got) = &r[0] else {
            anyhow::bail!("rows: {r:?}");
        };
        let Outcome::Rows(_, want) = &expected else {
            unreachable!()
        };
        ensure!(got == want, "{got:?}");

        // Long data: the value arrives before the EXECUTE, in pieces.
        let (long, _) = c.prepare("INSERT INTO types (id, bl) VALUES (?, ?)")?;
        for piece in [&b"first half,"[..], b" second half"] {
            c.send(&Command::StmtSendLongData {
                statement_id: long,
                param_id: 1,
                data: piece,
            })?;
        }
        ensure!(c.session.is_idle(), "long data has no reply");
        let lt = [t(ColumnType::LONG, false), t(ColumnType::BLOB, false)];
        let lv = [ParamValue::Value(Value::I32(3)), ParamValue::LongData];
        let payload = StmtExecute::encode(long, 0, Some(&lt), &lv)?;
        let Command::StmtExecute(e) = Command::parse(&payload, c.caps)? else {
            anyhow::bail!("an execute");
        };
        ensure!(c.session.execute_params(&e)?.context("decoded")?.values == lv);
        ensure!(c.execute(long, 0, Some(&lt), &lv)? == [Outcome::Ok(1)]);
        let r = c.query("SELECT bl FROM types WHERE id = 3")?;
        ensure!(
            r == [rows(&["bl"], &[&[Some("first half, second half")]])],
            "{r:?}"
        );

        // A cursor: the EXECUTE opens it, FETCH reads it to the end.
        c.query("DROP TABLE IF EXISTS seq5; CREATE TABLE seq5 AS SELECT seq FROM seq_1_to_5")?;
        let (cur, _) = c.prepare("SELECT seq FROM seq5 ORDER BY seq")?;
        let r = c.execute(cur, flags::READ_ONLY, None, &[])?;
        ensure!(r == [rows(&["seq"], &[])], "the cursor opened: {r:?}");
        let opened = c.received.last().context("a packet")?.event.packet;
        ensure!(
            opened
                == ServerPacket::EndOfRows {
                    more_results: false,
                    cursor_opened: true
                },
            "{opened:?}"
        );
        let mut fetched = Vec::new();
        while !c.session.statement(cur).context("open")?.cursor_exhausted {
            c.send(&Command::StmtFetch {
                statement_id: cur,
                rows: 2,
            })?;
            let r = c.outcomes(true)?;
            let [Outcome::Rows(_, batch)] = &r[..] else {
                anyhow::bail!("{r:?}");
            };
            ensure!(batch.len() <= 2);
            fetched.extend(batch.iter().map(|r| r[0].clone().unwrap_or_default()));
            ensure!(fetched.len() <= 5, "the cursor ends");
        }
        ensure!(fetched == ["1", "2", "3", "4", "5"], "{fetched:?}");
        c.send(&Command::StmtReset { statement_id: cur })?;
        ensure!(matches!(
            c.reply()?[0].event.packet,
            ServerPacket::Ok { .. }
        ));

        // An EXECUTE of an unknown statement, and CLOSE (no reply).
        ensure!(c.execute(999_999, 0, None, &[])? == [Outcome::Err(1243, "HY000".into())]);
        c.send(&Command::StmtClose { statement_id: cur })?;
        ensure!(c.session.statement(cur).is_none());
        c.send(&Command::Ping)?;
        ensure!(
            matches!(c.reply()?[0].event.packet, ServerPacket::Ok { .. }),
            "nothing else owed"
        );
    }
    Ok(())
}

#[test]
fn rows_and_commands_over_16_mib() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_proto_big")?;
    let mut c = Client::connect(&in_db(&db))?;
    // A text row of two values summing past 16 MiB (each under the server's
    // max_allowed_packet of 16 MiB): two chunks.
    let r = c.query("SELECT REPEAT('x', 16777000) AS a, REPEAT('y', 1000) AS b")?;
    let [Outcome::Rows(_, got)] = &r[..] else {
        anyhow::bail!("{r:?}");
    };
    ensure!(got[0][0].as_ref().map(String::len) == Some(16_777_000));
    ensure!(got[0][1].as_ref().map(String::len) == Some(1000));
    let row = c
        .received
        .iter()
        .find(|p| p.event.packet == ServerPacket::Row)
        .context("the row")?;
    ensure!(row.chunks == 2 && row.payload.len() > MAX_CHUNK);
    c.received.clear();

    // A binary row of 18 MB from a table of ours.
    c.query(
        "CREATE TABLE big (a MEDIUMBLOB, b MEDIUMBLOB); \
         INSERT INTO big VALUES (REPEAT('a', 9000000), REPEAT('b', 9000000))",
    )?;
    let (id, _) = c.prepare("SELECT a, b FROM big")?;
    let r = c.execute(id, 0, None, &[])?;
    let [Outcome::Rows(_, got)] = &r[..] else {
        anyhow::bail!("{r:?}");
    };
    ensure!(got[0][0].as_ref().map(String::len) == Some(9_000_000));
    ensure!(
        got[0][1]
            .as_deref()
            .is_some_and(|b| b.bytes().all(|x| x == b'b'))
    );
    let row = c
        .received
        .iter()
        .find(|p| p.event.packet == ServerPacket::Row)
        .context("the row")?;
    ensure!(row.chunks == 2);

    // A command of exactly 0xFFFFFF bytes (with the command byte): a full
    // chunk and an empty one from the client, and the reply's ids start
    // after them. (MariaDB refuses 16 MiB with its 16 MiB max_allowed_packet.)
    let mut sql = b"SELECT 1 AS one /*".to_vec();
    sql.resize(MAX_CHUNK - 1 - 2, b' ');
    sql.extend_from_slice(b"*/");
    c.send(&Command::Query {
        sql: &sql,
        attributes: None,
    })?;
    ensure!(c.session.expected_server_seq() == Some(2));
    let r = c.outcomes(false)?;
    ensure!(r == [rows(&["one"], &[&[Some("1")]])], "{r:?}");
    Ok(())
}

#[test]
fn local_infile_transfer() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_proto_infile")?;
    let mut c = Client::connect(&Options {
        local_infile: true,
        ..in_db(&db)
    })?;
    ensure!(c.caps.contains(Capabilities::LOCAL_FILES));
    c.query("CREATE TABLE li (a INT, b VARCHAR(10))")?;
    c.send(&Command::Query {
        sql: b"LOAD DATA LOCAL INFILE '/hoop/test/data.csv' INTO TABLE li FIELDS TERMINATED BY ','",
        attributes: None,
    })?;
    let request = c.receive()?;
    ensure!(request.event.packet == ServerPacket::LocalInfileRequest);
    let req = LocalInfileRequest::parse(&request.payload)?;
    ensure!(&req.filename[..] == b"/hoop/test/data.csv");
    ensure!(c.session.awaiting_client_data());
    for (seq, piece) in (2..).zip([&b"1,a\n2,"[..], b"b\n3,c\n", b""]) {
        c.write_packet(seq, piece)?;
        let kind = c.session.client_data(seq, piece.len())?;
        ensure!((kind == ClientData::InfileEnd) == piece.is_empty());
    }
    // MariaDB reports "End bulk insert" as progress before the OK: the
    // session takes it as progress, not as the (terminal) ERR it looks like.
    let done = c.reply()?;
    let (last, before) = done.split_last().context("a reply")?;
    ensure!(
        matches!(last.event.packet, ServerPacket::Ok { .. }),
        "{done:?}"
    );
    ensure!(
        before
            .iter()
            .all(|p| p.event.packet == ServerPacket::Progress)
    );
    let r = c.query("SELECT COUNT(*) AS n FROM li")?;
    ensure!(r == [rows(&["n"], &[&[Some("3")]])], "{r:?}");
    Ok(())
}

#[test]
fn change_user_and_reset_connection() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_proto_cu")?;
    let mut c = Client::connect(&Options::default())?;
    let (id, _) = c.prepare("SELECT 1")?;
    ensure!(c.session.statement(id).is_some());
    // COM_CHANGE_USER answers the original greeting's scramble.
    let scramble = c.greeting.scramble();
    let auth = crate::client::native_password(b"", &scramble);
    c.send(&Command::ChangeUser(
        hoop_proto_mysql::command::ChangeUser {
            user: b"root",
            auth_data: &auth,
            database: db.name.as_bytes(),
            collation: Some(8),
            auth_plugin: Some(b"mysql_native_password"),
            // MariaDB requires the attributes when CONNECT_ATTRS was agreed.
            attributes: Some(hoop_proto_mysql::handshake::ConnectAttributes {
                pairs: vec![(
                    bytes::Bytes::from_static(b"_client_name"),
                    bytes::Bytes::from_static(b"hoop-proto-mysql-test"),
                )],
            }),
        },
    ))?;
    loop {
        let r = c.receive()?;
        match r.event.packet {
            ServerPacket::AuthOk => break,
            ServerPacket::AuthSwitch => {
                let switch = hoop_proto_mysql::auth::AuthSwitchRequest::parse(&r.payload)?;
                let answer = crate::client::native_password(b"", switch.scramble());
                let seq = r.event.seq + 1;
                c.write_packet(seq, &answer)?;
                c.session.client_data(seq, answer.len())?;
            }
            other => anyhow::bail!(
                "{other:?} in COM_CHANGE_USER: {:?}",
                String::from_utf8_lossy(&r.payload)
            ),
        }
    }
    ensure!(c.session.statement(id).is_none(), "the server dropped it");
    ensure!(c.session.schema() == Some(db.name.as_bytes()));
    ensure!(c.session.character_set_client() == Some("latin1"));
    let r = c.query("SELECT DATABASE() AS d, @@character_set_client AS cs")?;
    ensure!(
        r == [rows(&["d", "cs"], &[&[Some(&db.name), Some("latin1")]])],
        "{r:?}"
    );
    c.query("SET @v = 1")?;
    c.send(&Command::ResetConnection)?;
    ensure!(matches!(
        c.reply()?[0].event.packet,
        ServerPacket::Ok { .. }
    ));
    let r = c.query("SELECT @v AS v")?;
    ensure!(r == [rows(&["v"], &[&[None]])], "{r:?}");
    Ok(())
}

/// A user of our own with a password, dropped afterwards.
struct ScratchUser;

const USER: &str = "hoop_mysql_proto_user";
const PASSWORD: &[u8] = b"pw-7f3a;'\\";

impl ScratchUser {
    fn new(db: &Scratch) -> Result<Self> {
        let mut c = Client::connect(&Options::default())?;
        c.query(&format!("DROP USER IF EXISTS '{USER}'@'%'"))?;
        let r = c.query(&format!(
            "CREATE USER '{USER}'@'%' IDENTIFIED BY 'pw-7f3a;\\'\\\\'; GRANT ALL ON {}.* TO '{USER}'@'%'",
            db.name
        ))?;
        ensure!(r == [Outcome::Ok(0), Outcome::Ok(0)], "{r:?}");
        Ok(Self)
    }
}

impl Drop for ScratchUser {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&Options::default()) {
            let _ = c.query(&format!("DROP USER IF EXISTS '{USER}'@'%'"));
        }
    }
}

#[test]
fn password_logins_and_change_user_to_another_account() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_proto_pw")?;
    let _user = ScratchUser::new(&db)?;
    let options = Options {
        user: USER.to_owned(),
        password: PASSWORD.to_vec(),
        ..in_db(&db)
    };
    // The scramble computed from the greeting's nonce logs in…
    let mut c = Client::connect(&options)?;
    let r = c.query("SELECT CURRENT_USER() AS u")?;
    ensure!(
        r == [rows(&["u"], &[&[Some(&format!("{USER}@%"))]])],
        "{r:?}"
    );
    // …a wrong password is refused by the server, and the session closes.
    let wrong = Client::connect(&Options {
        password: b"wrong".to_vec(),
        ..options.clone()
    });
    match wrong {
        Err(e) => ensure!(
            e.downcast_ref::<crate::client::LoginRefused>()
                .is_some_and(|r| r.0 == 1045),
            "{e:#}"
        ),
        Ok(_) => anyhow::bail!("a wrong password logged in"),
    }
    // COM_CHANGE_USER from root to the account, with the original scramble.
    let mut root = Client::connect(&Options::default())?;
    let auth = crate::client::native_password(PASSWORD, &root.greeting.scramble());
    root.send(&Command::ChangeUser(
        hoop_proto_mysql::command::ChangeUser {
            user: USER.as_bytes(),
            auth_data: &auth,
            database: db.name.as_bytes(),
            collation: Some(45),
            auth_plugin: Some(b"mysql_native_password"),
            attributes: Some(hoop_proto_mysql::handshake::ConnectAttributes::default()),
        },
    ))?;
    loop {
        let r = root.receive()?;
        match r.event.packet {
            ServerPacket::AuthOk => break,
            ServerPacket::AuthSwitch => {
                let switch = hoop_proto_mysql::auth::AuthSwitchRequest::parse(&r.payload)?;
                let answer = crate::client::native_password(PASSWORD, switch.scramble());
                let seq = r.event.seq + 1;
                root.write_packet(seq, &answer)?;
                root.session.client_data(seq, answer.len())?;
            }
            other => anyhow::bail!("{other:?} in COM_CHANGE_USER"),
        }
    }
    ensure!(root.session.user() == Some(USER.as_bytes()));
    let r = root.query("SELECT CURRENT_USER() AS u")?;
    ensure!(
        r == [rows(&["u"], &[&[Some(&format!("{USER}@%"))]])],
        "{r:?}"
    );
    Ok(())
}

#[test]
fn progress_reports_before_the_reply() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_proto_progress")?;
    let mut c = Client::connect(&in_db(&db))?;
    ensure!(c.caps.contains(Capabilities::MARIADB_PROGRESS));
    c.query(
        "CREATE TABLE p (id INT PRIMARY KEY, pad CHAR(20)); \
         INSERT INTO p SELECT seq, 'p' FROM seq_1_to_1000",
    )?;
    // A copying ALTER TABLE reports each stage it starts (MariaDB sends a
    // report at every stage change, whatever progress_report_time says).
    c.send(&Command::Query {
        sql: b"ALTER TABLE p FORCE, ALGORITHM=COPY",
        attributes: None,
    })?;
    let reply = c.reply()?;
    let (last, before) = reply.split_last().context("a reply")?;
    ensure!(
        matches!(last.event.packet, ServerPacket::Ok { .. }),
        "{reply:?}"
    );
    let mut progress = 0;
    for p in before {
        ensure!(p.event.packet == ServerPacket::Progress, "{p:?}");
        ensure!(!p.event.completes_reply);
        let report = hoop_proto_mysql::err::Progress::parse(&p.payload)?;
        ensure!(report.progress <= 100_000 && report.stage >= 1);
        progress += 1;
    }
    ensure!(
        progress > 0,
        "no progress report from a copying ALTER TABLE"
    );
    Ok(())
}
