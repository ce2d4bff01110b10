//! Issue 21: MySQL/MariaDB sessions through `hoop exec`, against the real
//! MariaDB on 127.0.0.1:3306, with real clients (the `mariadb` CLI and
//! PyMySQL). Each attack also runs against the bare server, to prove it
//! does the harm there that hoop prevents.

use std::{
    fmt::Write as _,
    process::{Command, Output},
    time::{Duration, Instant},
};

use hoop_tests::{
    MariaDb, TestConfig, hoop_bin, hoop_exec, hoop_exec_spawn, mariadb_direct, require_privileged,
    text, wait_output,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const T: Duration = Duration::from_mins(2);
/// Debian's PyMySQL (`python3-pymysql`), installed by `cargo xtask setup`.
const PYTHON: &str = "/usr/bin/python3";

/// The tables most tests read: `cust` (ssn, email; two rows), `other`
/// (notes "hello" and "world") and the view `v_cust` over `cust.ssn`.
const SCHEMA: &str = "
    CREATE TABLE cust (id INT PRIMARY KEY, ssn VARCHAR(20), email VARCHAR(50));
    INSERT INTO cust VALUES (1, '123-45-6789', 'a@example.com'), (2, '987-65-4321', 'b@example.com');
    CREATE TABLE other (id INT, note VARCHAR(20));
    INSERT INTO other VALUES (1, 'hello'), (2, 'world');
    CREATE VIEW v_cust AS SELECT id, ssn AS s FROM cust;";

/// A scratch database `hoop_my_{name}` holding [`SCHEMA`].
fn scratch(name: &str) -> MariaDb {
    MariaDb::create(&format!("hoop_my_{name}"), SCHEMA)
}

const POLICY: &str = "policy:
  unparsed: deny
  mask:
    - columns: [cust.ssn]
      strategy: partial
      keep_last: 4
  deny:
    - statements: [delete, update]
      without_where: true
      message: no unfiltered writes
    - statements: [destructive_ddl]
      message: destructive DDL is not allowed here
";

fn config(extra: &str) -> TestConfig {
    TestConfig::new(&[3306], extra)
}

/// The `mariadb` CLI reading `sql` from stdin with `--force`, so that it
/// goes on after an error (with `-e` it stops at the first).
fn mariadb_args<'a>(db: &'a str, sql: &'a str) -> Vec<&'a str> {
    vec![
        "sh",
        "-c",
        "printf '%s\\n' \"$1\" | mariadb -h 127.0.0.1 --protocol=TCP -uroot --force -B -t \"$0\"",
        db,
        sql,
    ]
}

/// Runs a PyMySQL script through `hoop exec` (or directly); the script
/// prints one JSON document.
fn pymysql(cfg: Option<&TestConfig>, db: &str, script: &str) -> (Value, String) {
    let prelude = format!(
        "import json, pymysql\n\
         from pymysql.constants import CLIENT\n\
         def connect():\n\
         \x20   return pymysql.connect(host='127.0.0.1', port=3306, user='root', database='{db}', client_flag=CLIENT.MULTI_STATEMENTS)\n\
         def run(c, sql):\n\
         \x20   try:\n\
         \x20       cur = c.cursor()\n\
         \x20       cur.execute(sql)\n\
         \x20       rows = [list(map(lambda v: v if v is None or isinstance(v, (int, str)) else str(v), r)) for r in cur.fetchall()]\n\
         \x20       while cur.nextset():\n\
         \x20           rows += [list(map(lambda v: v if v is None or isinstance(v, (int, str)) else str(v), r)) for r in cur.fetchall()]\n\
         \x20       return {{'rows': rows}}\n\
         \x20   except pymysql.MySQLError as e:\n\
         \x20       return {{'error': e.args[0], 'message': str(e.args[1]) if len(e.args) > 1 else ''}}\n"
    );
    let program = format!("{prelude}{script}");
    let out: Output = match cfg {
        Some(cfg) => hoop_exec(&cfg.path, &[PYTHON, "-c", &program], T),
        None => Command::new(PYTHON)
            .args(["-c", &program])
            .output()
            .expect("python"),
    };
    let (stdout, stderr) = text(&out);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("no JSON from the script ({e}):\n{stdout}\n--- stderr\n{stderr}")
    });
    (value, stderr)
}

fn rows(v: &Value) -> String {
    v["rows"].to_string()
}

#[test]
fn mariadb_cli_is_masked_and_guarded_and_the_session_goes_on() {
    require_privileged();
    let db = scratch("cli");
    let cfg = config(POLICY);
    let sql = "SELECT * FROM cust ORDER BY id; SELECT c.ssn AS x FROM cust c ORDER BY id; \
               SELECT CONCAT(ssn, '') AS y FROM cust ORDER BY id; SELECT * FROM other ORDER BY id; \
               SELECT s FROM v_cust ORDER BY id; DELETE FROM other; SELECT 'still here' AS z; \
               DROP TABLE other";
    let out = hoop_exec(&cfg.path, &mariadb_args(&db.name, sql), T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    // Masked by column (partial), through an alias and a function (redacted
    // as derived), and through a view.
    assert!(stdout.contains("***-**-6789"), "{all}");
    assert!(!stdout.contains("123-45-6789"), "{all}");
    assert!(!stdout.contains("987-65-4321"), "{all}");
    assert!(stdout.contains("[REDACTED:"), "{all}");
    // Clean columns and tables pass untouched.
    assert!(stdout.contains("a@example.com"), "{all}");
    assert!(stdout.contains("hello"), "{all}");
    // The unfiltered DELETE and the DROP were refused with ERRs, and the
    // session went on.
    assert!(all.contains("ERROR 1227"), "{all}");
    assert!(all.contains("no unfiltered writes"), "{all}");
    assert!(all.contains("destructive DDL is not allowed here"), "{all}");
    assert!(stdout.contains("still here"), "{all}");
    assert_eq!(db.count("other"), 2, "nothing was deleted");
    // Bare server: the same SQL leaks and deletes.
    let bare = mariadb_direct(Some(&db.name), "SELECT ssn FROM cust ORDER BY id");
    assert!(bare.contains("123-45-6789"));
    // The recording names the protocol.
    let recordings = cfg.dir.path().join("recordings");
    let mut found = false;
    for entry in std::fs::read_dir(&recordings)
        .expect("recordings dir")
        .flatten()
    {
        let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if body.contains("\"protocol\":\"mysql\"") {
            found = true;
            assert!(
                !body.contains("123-45-6789"),
                "the recording holds no raw ssn"
            );
        }
    }
    assert!(
        found,
        "a recording with protocol mysql in {}",
        recordings.display()
    );
}

#[test]
fn mysql_syntax_evasions_are_judged_as_the_server_runs_them() {
    require_privileged();
    let db = scratch("evasions");
    let cfg = config(POLICY);
    let script = r#"
c = connect()
out = {}
out['exec_comment'] = run(c, "SELECT id /*!, ssn */ FROM cust ORDER BY id")
out['mariadb_comment'] = run(c, "SELECT id /*M!100100 , ssn */ FROM cust ORDER BY id")
out['skipped_where'] = run(c, "DELETE FROM other /*!99999 WHERE id = 1 */")
out['versioned_drop'] = run(c, "/*!50000 DROP TABLE other */")
out['multi'] = run(c, "SELECT 1; SELECT ssn FROM cust ORDER BY id")
out['string_lookalike'] = run(c, 'SELECT CONCAT("ssn") AS v FROM cust ORDER BY id')
out['set_ansi'] = run(c, "SET SESSION sql_mode = 'ANSI_QUOTES'")
out['ansi'] = run(c, 'SELECT CONCAT("ssn") AS v FROM cust ORDER BY id')
out['set_nbe'] = run(c, "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
out['nbe'] = run(c, "SELECT 'a\\' , ssn FROM cust -- '")
out['mode_and_more'] = run(c, "SET SESSION sql_mode = ''; SELECT 1")
out['dynamic'] = run(c, "EXECUTE IMMEDIATE 'SELECT ssn FROM cust'")
out['load_file'] = run(c, "SELECT LOAD_FILE('/etc/hostname')")
print(json.dumps(out))
"#;
    let (through, stderr) = pymysql(Some(&cfg), &db.name, script);
    let all = format!("{through:#}\n--- stderr\n{stderr}");
    for key in ["exec_comment", "mariadb_comment", "multi", "ansi", "nbe"] {
        let r = rows(&through[key]);
        assert!(
            !r.contains("123-45-6789") && !r.contains("987-65-4321"),
            "{key} leaked: {all}"
        );
        assert!(through[key].get("rows").is_some(), "{key} ran: {all}");
    }
    // The look-alike (no ANSI_QUOTES): "ssn" is the string 'ssn'.
    assert_eq!(
        rows(&through["string_lookalike"]),
        r#"[["ssn"],["ssn"]]"#,
        "{all}"
    );
    // Hidden WHERE and versioned DROP: refused; nothing changed.
    assert_eq!(through["skipped_where"]["error"], 1227, "{all}");
    assert_eq!(through["versioned_drop"]["error"], 1227, "{all}");
    assert_eq!(db.count("other"), 2);
    // A sql_mode change with more statements after it, dynamic SQL and
    // LOAD_FILE: refused.
    for key in ["mode_and_more", "dynamic", "load_file"] {
        assert!(through[key].get("error").is_some(), "{key} refused: {all}");
    }

    // The bare server: every one of them leaks or destroys.
    let bare_db = scratch("evasions_bare");
    let (bare, _) = pymysql(None, &bare_db.name, script);
    for key in [
        "exec_comment",
        "mariadb_comment",
        "multi",
        "ansi",
        "nbe",
        "dynamic",
    ] {
        assert!(
            rows(&bare[key]).contains("123-45-6789"),
            "{key} leaks on the bare server: {bare:#}"
        );
    }
    assert_eq!(bare_db.count("cust"), 2);
    let gone = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "--protocol=TCP",
            "-uroot",
            &bare_db.name,
            "-e",
            "SELECT 1 FROM other",
        ])
        .output()
        .expect("mariadb");
    assert!(
        !gone.status.success(),
        "the versioned DROP ran on the bare server"
    );
}

#[test]
fn a_held_statement_waits_and_is_refused_on_timeout_or_denial_and_runs_when_approved() {
    require_privileged();
    let db = scratch("holds");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "alice-mysql-token";
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{token_sha256: {}, identity: alice@example.com, groups: [dba]}}\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        ),
    )
    .expect("tokens");
    let hold_config = |timeout: &str| {
        let cfg = config(&format!(
            "proxy:\n  hold_reminder_interval: 1s\npolicy:\n  hold:\n    - name: other-deletes\n      statements: [delete]\n      tables: [other]\n      approvers: [dba]\n      timeout: {timeout}\n      message: deletes on other need a DBA\n"
        ));
        let yaml = std::fs::read_to_string(&cfg.path).expect("config").replace(
            "admin:\n",
            &format!("admin:\n  tokens_file: {}\n", tokens.display()),
        );
        std::fs::write(&cfg.path, yaml).expect("config");
        cfg
    };
    let cfg = hold_config("3s");

    // Timed out: an ERR, and the session goes on.
    let started = Instant::now();
    let out = hoop_exec(
        &cfg.path,
        &mariadb_args(
            &db.name,
            "DELETE FROM other WHERE id = 1; SELECT 'after' AS a",
        ),
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(started.elapsed() >= Duration::from_secs(3), "it waited");
    assert!(stderr.contains("timed out"), "{stdout}\n{stderr}");
    assert!(stdout.contains("after"), "{stdout}\n{stderr}");
    assert_eq!(db.count("other"), 2);

    // Denied, then approved: the denial is an ERR naming the approver, the
    // approval runs the statement once.
    let held = |cfg: &TestConfig| {
        hoop_exec_spawn(
            &cfg.path,
            &mariadb_args(
                &db.name,
                "DELETE FROM other WHERE id = 1; SELECT 'done' AS d",
            ),
        )
    };
    let pending_id = |cfg: &TestConfig| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new(hoop_bin())
                .args(["holds", "list", "--json", "--admin", &cfg.admin_url()])
                .env("HOOP_TOKEN", token)
                .output()
                .expect("hoop holds list");
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if let Some(h) = list
                .as_array()
                .and_then(|a| a.iter().find(|h| h["state"] == "pending"))
            {
                return h["id"].as_str().expect("an id").to_owned();
            }
            assert!(Instant::now() < deadline, "no pending hold appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let decide = |cfg: &TestConfig, verb: &str, id: &str| {
        let out = Command::new(hoop_bin())
            .args(["holds", verb, id, "--admin", &cfg.admin_url()])
            .env("HOOP_TOKEN", token)
            .output()
            .expect("hoop holds");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let cfg = hold_config("60s");
    let child = held(&cfg);
    let id = pending_id(&cfg);
    decide(&cfg, "deny", &id);
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("ERROR 1227") && stderr.contains("denied by alice@example.com"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("done"),
        "the session went on: {stdout}\n{stderr}"
    );
    assert_eq!(db.count("other"), 2);

    let child = held(&cfg);
    let id = pending_id(&cfg);
    decide(&cfg, "approve", &id);
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("done"), "{stdout}\n{stderr}");
    assert_eq!(db.count("other"), 1, "the approved DELETE ran once");
}

#[test]
fn a_million_rows_stream_with_bounded_memory() {
    require_privileged();
    let db = scratch("million");
    let cfg = config(POLICY);
    let started = Instant::now();
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "mariadb -h 127.0.0.1 --protocol=TCP -uroot --quick -N -B {} -e \
                 \"SELECT seq, CONCAT('row ', seq) FROM seq_1_to_1000000\" | wc -l",
                db.name
            ),
        ],
        T,
    );
    let through = started.elapsed();
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout.trim(), "1000000", "{stdout}\n{stderr}");
    let rss_kib: u64 = stderr
        .split("peak_rss_kib=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("hoop reports its peak RSS: {stderr}"));
    let started = Instant::now();
    let direct = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mariadb -h 127.0.0.1 --protocol=TCP -uroot --quick -N -B {} -e \
             \"SELECT seq, CONCAT('row ', seq) FROM seq_1_to_1000000\" | wc -l",
            db.name
        ))
        .output()
        .expect("direct");
    let direct_time = started.elapsed();
    assert_eq!(String::from_utf8_lossy(&direct.stdout).trim(), "1000000");
    eprintln!(
        "1M rows: through hoop {through:?} (peak RSS {rss_kib} KiB), direct {direct_time:?}, ratio {:.2}",
        through.as_secs_f64() / direct_time.as_secs_f64()
    );
    assert!(rss_kib < 64 * 1024, "peak RSS {rss_kib} KiB");
}

#[test]
fn a_malformed_client_packet_ends_only_that_connection() {
    require_privileged();
    let db = scratch("malformed");
    let cfg = config(POLICY);
    let script = r#"
import socket, struct
s = socket.create_connection(('127.0.0.1', 3306))
hdr = s.recv(4)
n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
greeting = b''
while len(greeting) < n:
    greeting += s.recv(n - len(greeting))
# A "handshake response" that is not one.
s.sendall(struct.pack('<I', 3)[:3] + bytes([1]) + b'\x01\x02\x03')
reply = s.recv(4096)
s.close()
c = connect()
print(json.dumps({'reply': reply.hex(), 'after': run(c, "SELECT note FROM other ORDER BY id")}))
"#;
    let (out, stderr) = pymysql(Some(&cfg), &db.name, script);
    let all = format!("{out:#}\n--- stderr\n{stderr}");
    let reply = out["reply"].as_str().expect("hex");
    // An ERR packet (header 0xff at byte 4), not a crash or a hang.
    assert!(reply.len() > 10 && &reply[8..10] == "ff", "{all}");
    assert_eq!(rows(&out["after"]), r#"[["hello"],["world"]]"#, "{all}");
}

#[test]
fn prepared_statements_are_judged_once_and_their_binary_rows_masked() {
    require_privileged();
    let db = scratch("prepared");
    let cfg = config(POLICY);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mysql_prepared.py");
    let out = hoop_exec(&cfg.path, &[PYTHON, script, &db.name], T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {all}"));
    // Binary rows: the string column masked in place, the others intact,
    // on every execution.
    for key in ["plain", "again"] {
        assert_eq!(
            rows(&v[key]),
            r#"[[1,"***-**-6789","a@example.com"],[2,"***-**-4321","b@example.com"]]"#,
            "{key}: {all}"
        );
    }
    assert_eq!(
        rows(&v["derived"]),
        r#"[["[REDACTED:mask[0]]",1],["[REDACTED:mask[0]]",2]]"#,
        "{all}"
    );
    // Denied at PREPARE; the session goes on.
    assert_eq!(v["denied_prepare"]["prepared"], false, "{all}");
    assert!(
        v["denied_prepare"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("1227")),
        "{all}"
    );
    assert_eq!(rows(&v["after"]), r#"[["hello"],["world"]]"#, "{all}");
    // The bare server returns the values and prepares the DELETE.
    let bare = Command::new(PYTHON)
        .args([script, &db.name])
        .output()
        .expect("python");
    let bare: Value = serde_json::from_slice(&bare.stdout).expect("json");
    assert!(rows(&bare["plain"]).contains("123-45-6789"), "{bare}");
    assert_eq!(bare["denied_prepare"]["prepared"], true, "{bare}");
}

#[test]
fn kill_query_withdraws_a_held_statement() {
    require_privileged();
    let db = scratch("kill");
    let cfg = config(
        "policy:\n  hold:\n    - name: other-deletes\n      statements: [delete]\n      tables: [other]\n      timeout: 60s\n      message: deletes on other need a DBA\n",
    );
    let out_file = cfg.dir.path().join("held.out");
    let mariadb = "mariadb -h 127.0.0.1 --protocol=TCP -uroot";
    let script = format!(
        "printf 'DELETE FROM other WHERE id = 1;\\nSELECT 42 AS after_kill;\\n' | {mariadb} --force -B {db} > {out} 2>&1 &
         sleep 2
         ID=$({mariadb} -N -B {db} -e \"SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND ID <> CONNECTION_ID()\")
         echo \"killing $ID\"
         {mariadb} {db} -e \"KILL QUERY $ID\"
         wait
         cat {out}",
        db = db.name,
        out = out_file.display()
    );
    let started = Instant::now();
    let out = hoop_exec(&cfg.path, &["sh", "-c", &script], T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the hold did not wait out its timeout: {all}"
    );
    assert!(stdout.contains("killing "), "{all}");
    assert!(
        stdout.contains("ERROR 1317"),
        "the held client got the interrupted error: {all}"
    );
    assert!(stdout.contains("42"), "its session went on: {all}");
    assert_eq!(db.count("other"), 2, "the held DELETE never ran");
}

/// A server closes a killed idle connection at once, sending nothing, and
/// libmariadb with auto-reconnect checks its socket before each command:
/// readable means gone, and it reconnects. Through hoop the client's socket
/// must end too, before the client sends anything (found by
/// mariadb-client-test's `test_bug17512527`, whose reconnect got hoop's
/// "lost the connection" ERR instead).
#[test]
fn a_session_the_server_kills_between_commands_ends_for_the_client_too() {
    require_privileged();
    let db = scratch("killed");
    let cfg = config(POLICY);
    // The KILL goes over the unix socket, which hoop does not intercept.
    let script = r#"
import select
a = connect()
b = pymysql.connect(unix_socket='/run/mysqld/mysqld.sock', user='root')
b.cursor().execute("KILL %d" % a.thread_id())
readable, _, _ = select.select([a._sock], [], [], 5)
ended = bool(readable) and a._sock.recv(16) == b''
a.ping(reconnect=True)
print(json.dumps({'ended': ended, 'after': run(a, "SELECT note FROM other ORDER BY id")}))
"#;
    for cfg in [None, Some(&cfg)] {
        let (out, stderr) = pymysql(cfg, &db.name, script);
        let all = format!(
            "through hoop: {}\n{out:#}\n--- stderr\n{stderr}",
            cfg.is_some()
        );
        assert_eq!(out["ended"], true, "{all}");
        assert_eq!(rows(&out["after"]), r#"[["hello"],["world"]]"#, "{all}");
    }
}

/// `SET NAMES` from a client that does not ask for session tracking
/// (PyMySQL): hoop must read the next statements in the new character set,
/// as the server does. In GBK the bytes E4 B8 AD 5C are two characters, so
/// the quote after them ends the string for the server and the DELETE after
/// it runs; read as UTF-8 they are 中 and a backslash that escapes the
/// quote, and the whole text is one SELECT of one string. And latin1 text after `SET
/// NAMES latin1` is read as latin1, not refused as "not UTF-8".
#[test]
fn a_character_set_change_the_session_does_not_track_is_read_as_the_server_reads_it() {
    require_privileged();
    let cfg = config(POLICY);
    let script = r#"
c = connect()
c.autocommit(True)
latin1 = [run(c, "SET NAMES latin1"), run(c, b"SELECT HEX('caf\xe9') AS h")]
gbk = [run(c, "SET NAMES gbk"), run(c, b"SELECT HEX('\xe4\xb8\xad\\') AS h; DELETE FROM other -- ')")]
print(json.dumps({'latin1': latin1, 'gbk': gbk}))
"#;
    for cfg in [None, Some(&cfg)] {
        let db = scratch("charset");
        let (out, stderr) = pymysql(cfg, &db.name, script);
        let all = format!(
            "through hoop: {}\n{out:#}\n--- stderr\n{stderr}",
            cfg.is_some()
        );
        assert_eq!(rows(&out["latin1"][1]), r#"[["636166E9"]]"#, "{all}");
        if cfg.is_some() {
            assert!(out["gbk"][1]["error"].is_number(), "{all}");
            assert_eq!(db.count("other"), 2, "the DELETE never ran: {all}");
        } else {
            assert_eq!(
                db.count("other"),
                0,
                "the bare server ran the DELETE: {all}"
            );
        }
    }
}

/// COM_RESET_CONNECTION sets the character set back to the login's, and
/// session tracking does not report it: a client that logged in with gbk,
/// tracked `SET NAMES utf8mb4`, then reset, is in gbk again, and hoop must
/// not go on reading it as UTF-8 (the same string as above).
#[test]
fn a_reset_connection_puts_the_login_character_set_back_for_hoop_too() {
    require_privileged();
    let cfg = config(POLICY);
    for cfg in [None, Some(&cfg)] {
        let db = scratch("reset_charset");
        let script = format!(
            r#"
c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database='{db}', charset='gbk',
                    autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS | CLIENT.SESSION_TRACK)
names = run(c, "SET NAMES utf8mb4")
c._execute_command(0x1f, b"")  # COM_RESET_CONNECTION
c._read_ok_packet()
attack = run(c, b"SELECT HEX('\xe4\xb8\xad\\') AS h; DELETE FROM other -- ')")
print(json.dumps({{'names': names, 'attack': attack}}))
"#,
            db = db.name
        );
        let (out, stderr) = pymysql(cfg, &db.name, &script);
        let all = format!(
            "through hoop: {}\n{out:#}\n--- stderr\n{stderr}",
            cfg.is_some()
        );
        if cfg.is_some() {
            assert!(out["attack"]["error"].is_number(), "{all}");
            assert_eq!(db.count("other"), 2, "the DELETE never ran: {all}");
        } else {
            assert_eq!(
                db.count("other"),
                0,
                "the bare server ran the DELETE: {all}"
            );
        }
    }
}

#[test]
fn tls_on_the_client_leg_and_clear_errors_where_hoop_cannot() {
    require_privileged();
    let db = scratch("tls");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success());
    let mariadb = "mariadb -h 127.0.0.1 --protocol=TCP -uroot";
    let script = format!(
        "{mariadb} --ssl {db} -e '\\s' | grep -i cipher; \
         {mariadb} --ssl -B {db} -e 'SELECT ssn FROM cust ORDER BY id'; \
         {mariadb} --skip-ssl -B {db} -e 'SELECT note FROM other ORDER BY id'",
        db = db.name
    );
    // With a certificate, hoop offers TLS: the client leg is encrypted,
    // masking applies, and plaintext clients still work.
    let cfg = config(&format!(
        "tls:\n  cert: {}\n  key: {}\n{POLICY}",
        cert.display(),
        key.display()
    ));
    let out = hoop_exec(&cfg.path, &["sh", "-c", &script], T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("Cipher in use is TLS"), "{all}");
    assert!(
        stdout.contains("***-**-6789") && !stdout.contains("123-45-6789"),
        "{all}"
    );
    assert!(stdout.contains("hello"), "{all}");

    // Without one, a client that requires TLS (verifying the server's
    // certificate) gets an error, not plaintext.
    let cfg = config(POLICY);
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "{mariadb} --ssl --ssl-verify-server-cert {} -e 'SELECT 1'",
                db.name
            ),
        ],
        T,
    );
    assert!(!out.status.success(), "{:?}", text(&out));

    // tls.upstream: require against this server (no TLS): a clear error.
    let cfg = config(&format!("tls:\n  upstream: require\n{POLICY}"));
    let out = hoop_exec(
        &cfg.path,
        &["sh", "-c", &format!("{mariadb} {} -e 'SELECT 1'", db.name)],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("does not offer TLS"), "{stdout}\n{stderr}");
}

#[test]
fn a_malformed_server_packet_ends_only_that_connection() {
    require_privileged();
    let db = scratch("bad_server");
    let port = hoop_tests::free_port();
    let cfg = TestConfig::new(
        &[3306, port],
        &format!("intercept_protocols_placeholder: 0\n{POLICY}"),
    );
    // TestConfig writes `intercept.ports`; map the fake server's port to mysql.
    let yaml = std::fs::read_to_string(&cfg.path)
        .expect("config")
        .replace(
            "intercept:\n",
            &format!("intercept:\n  protocols: {{3306: mysql, {port}: mysql}}\n"),
        )
        .replace("intercept_protocols_placeholder: 0\n", "");
    std::fs::write(&cfg.path, yaml).expect("config");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mysql_bad_server.py");
    let out = hoop_exec(&cfg.path, &[PYTHON, script, &port.to_string(), &db.name], T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {all}"));
    assert_eq!(v["login"], "ok", "{all}");
    // The client gets an error naming the server's malformed packet.
    let message = v["query"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("from the server"), "{all}");
    // hoop goes on: another connection works.
    assert_eq!(v["after"].to_string(), r#"[["hello"],["world"]]"#, "{all}");
}

#[test]
fn hoop_own_catalog_queries_leave_the_clients_diagnostics_alone() {
    require_privileged();
    let db = scratch("diagnostics");
    let cfg = config(POLICY);
    // A DDL statement's warning is still there for SHOW WARNINGS and
    // @@warning_count, although hoop reads the catalog again after DDL.
    let sql = "CREATE TABLE IF NOT EXISTS other (id INT); SHOW WARNINGS; \
               CREATE TABLE IF NOT EXISTS other (id INT); SELECT @@warning_count AS w;";
    let out = hoop_exec(&cfg.path, &mariadb_args(&db.name, sql), T);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("already exists"), "{stdout}\n{stderr}");
    assert!(stdout.contains("|    1 |"), "{stdout}\n{stderr}");
}

/// Issue 27 (classes 1 and 4) on MySQL: values the server quotes in its
/// diagnostics (`SHOW WARNINGS`) and values kept in session variables
/// (`SET @v = …`, `@v := …`, `SELECT … INTO @v`) leave masking's sight.
/// Each attack shows the SSN on the bare server; through hoop it is
/// withheld or refused. The look-alikes do the same with an unmasked
/// column.
#[test]
fn diagnostics_and_session_variables_do_not_carry_masked_values() {
    require_privileged();
    let db = scratch("fc_vars");
    let cfg = config(POLICY);
    let attacks = [
        (
            "a warning quoting the value",
            "SELECT CAST(ssn AS DECIMAL) FROM cust WHERE id = 1; SHOW WARNINGS;",
        ),
        (
            "SET @v = (subquery), then SELECT @v",
            "SET @v = (SELECT ssn FROM cust WHERE id = 1); SELECT @v;",
        ),
        (
            "@v := in a select list, then SELECT @v",
            "SELECT @w := ssn FROM cust WHERE id = 1; SELECT concat('x', @w);",
        ),
        (
            "SELECT … INTO @v, then SELECT @v",
            "SELECT ssn INTO @u FROM cust WHERE id = 1; SELECT @u;",
        ),
    ];
    let mut failures = Vec::new();
    for (name, sql) in attacks {
        let direct = Command::new("sh")
            .args(&mariadb_args(&db.name, sql)[1..])
            .output()
            .expect("mariadb");
        let direct = String::from_utf8_lossy(&direct.stdout).into_owned();
        if !direct.contains("123-45-6789") {
            failures.push(format!(
                "`{name}` shows nothing on the bare server:\n{direct}"
            ));
            continue;
        }
        let (through, log) = text(&hoop_exec(&cfg.path, &mariadb_args(&db.name, sql), T));
        if through.contains("123-45-6789") || through.contains("45-6789") {
            failures.push(format!("`{name}` got through hoop:\n{through}\n{log}"));
        }
    }
    let lookalikes = [
        (
            "a warning about an unmasked column",
            "SELECT CAST(note AS DECIMAL) FROM other WHERE id = 1; SHOW WARNINGS;",
            "Truncated incorrect DECIMAL value",
        ),
        (
            "a session variable of an unmasked column",
            "SET @n = (SELECT note FROM other WHERE id = 2); SELECT @n;",
            "world",
        ),
    ];
    let mut passed = 0;
    for (name, sql, expect) in lookalikes {
        let (through, _) = text(&hoop_exec(&cfg.path, &mariadb_args(&db.name, sql), T));
        if through.contains(expect) {
            passed += 1;
        } else {
            failures.push(format!("look-alike `{name}`:\n{through}"));
        }
    }
    eprintln!(
        "mysql diagnostics/variables: attacks held {}/{}, look-alikes passed {passed}/{}",
        attacks.len()
            - failures
                .iter()
                .filter(|f| !f.starts_with("look-alike"))
                .count(),
        attacks.len(),
        lookalikes.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n----\n"));
}

/// The `mariadb` CLI with `--local-infile=1` (it then offers
/// CLIENT_LOCAL_FILES and answers file requests), `--force` as in
/// [`mariadb_args`].
fn mariadb_local_args<'a>(db: &'a str, sql: &'a str) -> Vec<&'a str> {
    vec![
        "sh",
        "-c",
        "printf '%s\\n' \"$1\" | mariadb -h 127.0.0.1 --protocol=TCP -uroot --local-infile=1 --force -B -t \"$0\"",
        db,
        sql,
    ]
}

/// The server's `local_infile`, turned on for the test when it is off and
/// put back after.
struct LocalInfileOn {
    was_on: bool,
}

impl LocalInfileOn {
    fn ensure() -> Self {
        let was_on = mariadb_direct(None, "SELECT @@GLOBAL.local_infile").trim() == "1";
        if !was_on {
            mariadb_direct(None, "SET GLOBAL local_infile = 1");
        }
        Self { was_on }
    }
}

impl Drop for LocalInfileOn {
    fn drop(&mut self) {
        if !self.was_on {
            let _ = Command::new("mariadb")
                .args(["-h", "127.0.0.1", "--protocol=TCP", "-uroot", "-e"])
                .arg("SET GLOBAL local_infile = 0")
                .output();
        }
    }
}

#[test]
fn load_data_local_infile_is_refused_by_default_and_allowed_when_enabled() {
    require_privileged();
    let _on = LocalInfileOn::ensure();
    let db = scratch("infile");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rows.tsv");
    std::fs::write(&file, "3\tloaded-three\n4\tloaded-four\n").expect("write the file");
    let path = file.to_str().expect("utf-8 path");
    let load = format!("LOAD DATA LOCAL INFILE '{path}' INTO TABLE other");
    let sql = format!("{load}; SELECT 'still here' AS z; SELECT count(*) AS n FROM other");

    // 1. Default (mysql.local_infile unset), with a policy that would allow
    //    the statement: hoop clears CLIENT_LOCAL_FILES, the load fails with
    //    a clear error, and the session goes on.
    let cfg = config("policy:\n  unparsed: allow\n");
    let out = hoop_exec(&cfg.path, &mariadb_local_args(&db.name, &sql), T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    assert!(all.contains("ERROR"), "the load is refused: {all}");
    assert!(stdout.contains("still here"), "the session goes on: {all}");
    assert_eq!(db.count("other"), 2, "nothing was loaded: {all}");

    // 2. Enabled, but the policy denies SQL it cannot parse (LOAD DATA is
    //    unparsed): the statement itself is refused, nothing is loaded.
    let cfg = config("mysql:\n  local_infile: true\npolicy:\n  unparsed: deny\n");
    let out = hoop_exec(&cfg.path, &mariadb_local_args(&db.name, &sql), T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    assert!(all.contains("ERROR 1227"), "policy refuses the load: {all}");
    assert!(stdout.contains("still here"), "the session goes on: {all}");
    assert_eq!(db.count("other"), 2, "nothing was loaded: {all}");

    // 3. Enabled and allowed: the statement naming the file loads it, and
    //    the recording counts the file's bytes.
    let cfg = config("mysql:\n  local_infile: true\npolicy:\n  unparsed: allow\n");
    let out = hoop_exec(&cfg.path, &mariadb_local_args(&db.name, &sql), T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    assert!(!all.contains("ERROR"), "the load runs: {all}");
    assert!(stdout.contains("still here"), "{all}");
    assert_eq!(db.count("other"), 4, "the file was loaded: {all}");
    let loaded = mariadb_direct(Some(&db.name), "SELECT note FROM other WHERE id = 4");
    assert_eq!(loaded.trim(), "loaded-four");
    assert!(all.contains("LOCAL INFILE file relayed"), "{all}");

    // 4. The bare server loads the file for the same client: the refusal
    //    in 1 was hoop's.
    let direct = Command::new("sh")
        .args(mariadb_local_args(&db.name, &load)[1..].iter())
        .output()
        .expect("run mariadb");
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    assert_eq!(db.count("other"), 6, "the bare server loaded the file");

    // 5. PyMySQL (`local_infile=True`) through hoop, enabled: loaded, and
    //    the connection goes on.
    let cfg = config("mysql:\n  local_infile: true\npolicy:\n  unparsed: allow\n");
    let script = format!(
        "c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database='{db}', local_infile=True)\n\
         print(json.dumps({{'load': run(c, \"{load}\"), 'after': run(c, 'SELECT count(*) FROM other')}}))\n",
        db = db.name,
    );
    let (v, stderr) = pymysql(Some(&cfg), &db.name, &script);
    assert!(v["load"].get("error").is_none(), "{v} {stderr}");
    assert_eq!(rows(&v["after"]), "[[8]]", "{v} {stderr}");
}

/// MariaDB's `auth_ed25519` plugin, installed for the test when it is not
/// already (and uninstalled after), and an ed25519 account, dropped after.
struct Ed25519Account {
    user: String,
    installed_here: bool,
}

impl Ed25519Account {
    const PASSWORD: &str = "ed-S3cret-pw";

    fn create(db: &str) -> Self {
        let installed = mariadb_direct(
            None,
            "SELECT count(*) FROM information_schema.plugins \
             WHERE plugin_name = 'ed25519' AND plugin_status = 'ACTIVE'",
        )
        .trim()
            == "1";
        if !installed {
            // Fails the test loudly (mariadb_direct asserts) when the
            // server cannot load the plugin: `cargo xtask setup` installs
            // mariadb-server, which ships auth_ed25519.so.
            mariadb_direct(None, "INSTALL SONAME 'auth_ed25519'");
        }
        let user = format!("hoop_ed_{}", std::process::id());
        let account = Self {
            user,
            installed_here: !installed,
        };
        mariadb_direct(
            None,
            &format!(
                "DROP USER IF EXISTS '{u}'@'%'; \
                 CREATE USER '{u}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{p}'); \
                 GRANT ALL ON {db}.* TO '{u}'@'%'",
                u = account.user,
                p = Self::PASSWORD
            ),
        );
        account
    }
}

impl Drop for Ed25519Account {
    fn drop(&mut self) {
        let mut sql = format!("DROP USER IF EXISTS '{}'@'%';", self.user);
        if self.installed_here {
            sql.push_str(" UNINSTALL SONAME 'auth_ed25519';");
        }
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "--protocol=TCP", "-uroot", "-e"])
            .arg(sql)
            .output();
    }
}

#[test]
fn an_ed25519_account_authenticates_through_hoop_and_is_masked() {
    require_privileged();
    let db = scratch("ed25519");
    let account = Ed25519Account::create(&db.name);
    // The account really uses ed25519.
    let plugin = mariadb_direct(
        None,
        &format!(
            "SELECT plugin FROM mysql.user WHERE user = '{}'",
            account.user
        ),
    );
    assert_eq!(plugin.trim(), "ed25519");
    let cfg = config(POLICY);
    let cli = |password: &str, sql: &str| {
        let user = format!("-u{}", account.user);
        let password = format!("-p{password}");
        let out = hoop_exec(
            &cfg.path,
            &[
                "mariadb",
                "-h",
                "127.0.0.1",
                "--protocol=TCP",
                &user,
                &password,
                "-B",
                &db.name,
                "-e",
                sql,
            ],
            T,
        );
        let (stdout, stderr) = text(&out);
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = cli(
        Ed25519Account::PASSWORD,
        "SELECT current_user() AS who, ssn FROM cust ORDER BY id",
    );
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    assert!(ok, "{all}");
    assert!(
        stdout.contains(&format!("{}@%", account.user)),
        "logged in as the ed25519 account: {all}"
    );
    assert!(stdout.contains("***-**-6789"), "masked: {all}");
    assert!(!stdout.contains("123-45-6789"), "{all}");
    // The server, not hoop, decides: a wrong password is refused.
    let (ok, stdout, stderr) = cli("wrong-password", "SELECT 1");
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("ERROR 1045"), "{stderr}");
    // The bare server shows the account the raw value.
    let bare = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "--protocol=TCP", "-B", "-N"])
        .arg(format!("-u{}", account.user))
        .arg(format!("-p{}", Ed25519Account::PASSWORD))
        .arg(&db.name)
        .args(["-e", "SELECT ssn FROM cust WHERE id = 1"])
        .output()
        .expect("run mariadb");
    assert_eq!(String::from_utf8_lossy(&bare.stdout).trim(), "123-45-6789");
}

/// Issue 21: rows fetched through a server-side cursor (COM_STMT_EXECUTE
/// with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH) are masked like the
/// rows of a plain EXECUTE, on every FETCH of the cursor, whether the
/// client asks CLIENT_DEPRECATE_EOF or not (the cursor's EXECUTE reply ends
/// differently). The look-alikes (cursors over columns nothing masks) come
/// back unchanged, and the bare server returns the raw values through the
/// same cursors.
#[test]
fn rows_fetched_through_a_server_side_cursor_are_masked() {
    require_privileged();
    let db = scratch("cursor");
    let cfg = config(POLICY);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mysql_cursor.py");
    for mode in ["classic_eof", "deprecate_eof"] {
        // The bare server: a cursor is opened (no rows in the EXECUTE
        // reply) and the FETCHes return the raw values.
        let bare = Command::new(PYTHON)
            .args([script, &db.name, mode])
            .output()
            .expect("python");
        let (bare_out, bare_err) = text(&bare);
        let bare: Value = serde_json::from_str(bare_out.trim())
            .unwrap_or_else(|e| panic!("{mode}, bare: {e}: {bare_out}\n{bare_err}"));
        assert_eq!(
            bare["masked"]["open"]["cursor_exists"], true,
            "{mode}: {bare}"
        );
        assert_eq!(
            rows(&bare["masked"]["first"]),
            r#"[["123-45-6789"]]"#,
            "{mode}: {bare}"
        );
        assert_eq!(
            rows(&bare["masked"]["rest"]),
            r#"[["987-65-4321"]]"#,
            "{mode}: {bare}"
        );
        assert_eq!(
            rows(&bare["last_prepared"]["first"]),
            r#"[["123-45-6789"]]"#,
            "{mode}: {bare}"
        );

        let out = hoop_exec(&cfg.path, &[PYTHON, script, &db.name, mode], T);
        let (stdout, stderr) = text(&out);
        let all = format!("{mode}: {stdout}\n--- stderr\n{stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {all}"));
        // The cursor is opened through hoop as on the bare server.
        for key in [
            "masked",
            "last_prepared",
            "mixed",
            "derived",
            "plain",
            "other",
        ] {
            assert_eq!(v[key]["open"]["cursor_exists"], true, "{key}: {all}");
        }
        // The masked column, one FETCH of one row then one of the rest.
        assert_eq!(rows(&v["masked"]["first"]), r#"[["***-**-6789"]]"#, "{all}");
        assert_eq!(v["masked"]["first"]["last_row_sent"], false, "{all}");
        assert_eq!(rows(&v["masked"]["rest"]), r#"[["***-**-4321"]]"#, "{all}");
        assert_eq!(v["masked"]["rest"]["last_row_sent"], true, "{all}");
        // MariaDB's FETCH of 0xFFFFFFFF (the statement prepared last).
        assert_eq!(
            rows(&v["last_prepared"]["first"]),
            r#"[["***-**-6789"]]"#,
            "{all}"
        );
        assert_eq!(
            rows(&v["last_prepared"]["rest"]),
            r#"[["***-**-4321"]]"#,
            "{all}"
        );
        // Masked in place among columns nothing masks.
        assert_eq!(
            rows(&v["mixed"]["first"]),
            r#"[[1,"***-**-6789","a@example.com"]]"#,
            "{all}"
        );
        assert_eq!(
            rows(&v["mixed"]["rest"]),
            r#"[[2,"***-**-4321","b@example.com"]]"#,
            "{all}"
        );
        // An expression over the masked column (lineage lost): redacted.
        for key in ["first", "rest"] {
            assert_eq!(
                rows(&v["derived"][key]),
                r#"[["[REDACTED:mask[0]]"]]"#,
                "{all}"
            );
        }
        // The look-alikes: cursors over columns nothing masks, unchanged.
        assert_eq!(
            rows(&v["plain"]["first"]),
            r#"[[1,"a@example.com"]]"#,
            "{all}"
        );
        assert_eq!(
            rows(&v["plain"]["rest"]),
            r#"[[2,"b@example.com"]]"#,
            "{all}"
        );
        assert_eq!(rows(&v["other"]["first"]), r#"[["hello"]]"#, "{all}");
        assert_eq!(rows(&v["other"]["rest"]), r#"[["world"]]"#, "{all}");
        // The session goes on after the cursors, still masked (a text query;
        // under DEPRECATE_EOF, which PyMySQL cannot parse, one more cursor).
        let after = if mode == "classic_eof" {
            r#"[["***-**-6789"],["***-**-4321"]]"#
        } else {
            r#"[["***-**-4321"]]"#
        };
        assert_eq!(rows(&v["after"]), after, "{all}");
        assert!(!stdout.contains("123-45-6789"), "{all}");
        assert!(!stdout.contains("987-65-4321"), "{all}");
    }
}

/// A Rust client (`mysql_async`, its own handshake and codecs) through
/// `hoop exec`: text and binary rows masked, a derived value masked by
/// lineage, an unfiltered DELETE denied with the session going on. The same
/// client run against the bare server gets the values and deletes the rows.
#[test]
fn a_rust_client_is_masked_and_guarded() {
    require_privileged();
    let db = scratch("rust");
    let cfg = config(POLICY);
    let client = env!("CARGO_BIN_EXE_mysql-rust-client");
    let out = hoop_exec(&cfg.path, &[client, &db.name], T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {all}"));
    assert_eq!(
        rows(&v["text"]),
        r#"[[1,"***-**-6789","a@example.com"],[2,"***-**-4321","b@example.com"]]"#,
        "{all}"
    );
    assert_eq!(
        rows(&v["binary"]),
        r#"[[1,"***-**-6789"],[2,"***-**-4321"]]"#,
        "{all}"
    );
    assert_eq!(rows(&v["binary_again"]), r#"[[2,"***-**-4321"]]"#, "{all}");
    assert_eq!(
        rows(&v["derived"]),
        r#"["[REDACTED:mask[0]]","[REDACTED:mask[0]]"]"#,
        "{all}"
    );
    assert!(
        v["denied"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no unfiltered writes")),
        "{all}"
    );
    assert_eq!(rows(&v["after"]), r#"["hello","world"]"#, "{all}");
    assert_eq!(db.count("other"), 2, "{all}");
    assert!(!all.contains("123-45-6789"), "{all}");
    // The bare server: the raw values, and the DELETE runs.
    let bare = Command::new(client)
        .arg(&db.name)
        .output()
        .expect("mysql-rust-client");
    let (bare_out, bare_err) = text(&bare);
    let bare: Value = serde_json::from_str(bare_out.trim())
        .unwrap_or_else(|e| panic!("{e}: {bare_out}\n{bare_err}"));
    assert!(rows(&bare["text"]).contains("123-45-6789"), "{bare}");
    assert!(rows(&bare["binary"]).contains("987-65-4321"), "{bare}");
    assert_eq!(rows(&bare["after"]), "[]", "{bare}");
    assert_eq!(db.count("other"), 0, "{bare}");
}

/// Without a policy hoop keeps no column definitions (it checks them in
/// place) and relays the packets of a reply from its read buffer: what a
/// client gets through hoop is what the bare server sends. Text and binary
/// results, a statement executed again, a server-side cursor opened and
/// fetched (its columns kept all the same), MariaDB's "statement prepared
/// last", multi-statement results, an error among them and a prepared
/// DELETE; each compared with the same client against the bare server.
#[test]
fn without_a_policy_replies_reach_the_client_as_the_server_sent_them() {
    require_privileged();
    let run = |program: &[&str], through: Option<&TestConfig>| -> Value {
        let out = if let Some(cfg) = through {
            hoop_exec(&cfg.path, program, T)
        } else {
            Command::new(program[0])
                .args(&program[1..])
                .output()
                .expect("client")
        };
        let (stdout, stderr) = text(&out);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{program:?} (through hoop: {}): {e}: {stdout}\n{stderr}",
                through.is_some()
            )
        })
    };
    let db = scratch("nopolicy");
    let cursor = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mysql_cursor.py");
    let prepared = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mysql_prepared.py");
    let script = "c = connect()\n\
         print(json.dumps([run(c, 'SELECT id, ssn FROM cust ORDER BY id; SELECT note FROM other ORDER BY id'),\n\
         \x20                 run(c, 'SELECT 1; SELECT * FROM nowhere; SELECT 2'), run(c, 'SELECT ssn FROM v_cust')]))\n";
    let client = env!("CARGO_BIN_EXE_mysql-rust-client");
    // Recorded, every reply goes packet by packet; not recorded, nothing
    // looks at a reply and it is relayed in runs, its executes in place.
    for (i, cfg) in [config(""), unrecorded()].iter().enumerate() {
        for mode in ["classic_eof", "deprecate_eof"] {
            let program = [PYTHON, cursor, &db.name, mode];
            let bare = run(&program, None);
            assert_eq!(
                rows(&bare["masked"]["first"]),
                r#"[["123-45-6789"]]"#,
                "{bare}"
            );
            assert_eq!(run(&program, Some(cfg)), bare, "{mode}");
        }
        let program = [PYTHON, prepared, &db.name];
        let bare = run(&program, None);
        assert!(rows(&bare["again"]).contains("987-65-4321"), "{bare}");
        assert_eq!(run(&program, Some(cfg)), bare);
        let (bare, _) = pymysql(None, &db.name, script);
        assert!(bare[0]["rows"].to_string().contains("hello"), "{bare}");
        let (through, stderr) = pymysql(Some(cfg), &db.name, script);
        assert_eq!(through, bare, "{stderr}");
        // The Rust client deletes rows: one database for each run.
        let direct = scratch(&format!("nopolicy_direct{i}"));
        let bare = run(&[client, &direct.name], None);
        assert!(rows(&bare["binary"]).contains("987-65-4321"), "{bare}");
        let again = scratch(&format!("nopolicy_again{i}"));
        assert_eq!(run(&[client, &again.name], Some(cfg)), bare);
        assert_eq!(again.count("other"), 0);
    }
}

/// A config without a policy whose sessions are not recorded: nothing
/// governs them (`inspects_rows` and `observes_executions` both false).
fn unrecorded() -> TestConfig {
    TestConfig::unrecorded(&[3306], "")
}

/// Without a policy a COM_STMT_EXECUTE is relayed from where it lies in
/// hoop's read buffer (nothing governs it). Executes pipelined in one
/// write, with and without their parameter types, of a statement the server
/// does not know, and other commands between them, get the bytes the bare
/// server sends.
#[test]
fn pipelined_executes_nothing_governs_get_the_servers_own_replies() {
    require_privileged();
    let db = scratch("pipelined");
    // Recorded (each execution observed: the general path) and not
    // recorded (nothing governs the executes: relayed in place).
    let recorded = config("");
    let unrecorded = unrecorded();
    let script = r"
import socket, struct
def pkt(seq, payload):
    return struct.pack('<I', len(payload))[:3] + bytes([seq]) + payload
def drain(s):
    s.settimeout(1.0)
    out = b''
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return out
        if not chunk:
            return out
        out += chunk
def execute(stmt, value, bind=True):
    head = b'\x17' + struct.pack('<IBI', stmt, 0, 1) + b'\x00'
    if bind:
        return head + b'\x01\x08\x00' + struct.pack('<q', value)
    return head + b'\x00' + struct.pack('<q', value)
c = connect()
s = c._sock
s.sendall(pkt(0, b'\x16SELECT id, note FROM other WHERE id = ?'))
prepared = drain(s)
stmt = struct.unpack('<I', prepared[5:9])[0]
s.sendall(pkt(0, execute(stmt, 1)) + pkt(0, execute(stmt, 2, bind=False)) + pkt(0, b'\x0e')
          + pkt(0, execute(stmt + 41, 1)) + pkt(0, execute(stmt, 1, bind=False))
          + pkt(0, b'\x03SELECT note FROM other ORDER BY id'))
batch = drain(s)
# Statement ids are the server's, global: the same packets, with the ids
# (in the PREPARE's OK and the unknown statement's error) taken out.
def packets(raw):
    out = []
    while len(raw) >= 4:
        n = raw[0] | raw[1] << 8 | raw[2] << 16
        payload = raw[4:4 + n].replace(b'(%d)' % (stmt + 41), b'(ID)')
        out.append([raw[3], payload.hex()])
        raw = raw[4 + n:]
    out.append(['rest', raw.hex()])
    return out
prepared = prepared[:5] + b'ID__' + prepared[9:]
print(json.dumps({'prepared': packets(prepared), 'batch': packets(batch)}))
";
    let (bare, _) = pymysql(None, &db.name, script);
    let batch = bare["batch"].to_string();
    // Both rows, twice the first, and the ERR for the unknown statement.
    assert!(
        batch.contains(&hex::encode("hello")) && batch.contains(&hex::encode("world")),
        "{bare}"
    );
    assert!(
        batch.contains(&hex::encode("Unknown prepared statement handler")),
        "{bare}"
    );
    for cfg in [&recorded, &unrecorded] {
        let (through, stderr) = pymysql(Some(cfg), &db.name, script);
        assert_eq!(through, bare, "{stderr}");
    }
}

/// A value sent in a character set whose ASCII is not ASCII bytes (ucs2,
/// utf16, utf16le, utf32, and `filename`, which escapes every character but
/// letters, digits and `_`) hides from a content detector that reads the raw
/// bytes: `alice@example.com` in UTF-16 has a zero byte before every letter,
/// in `filename` it is `alice@0040example@002ecom`.
/// The client picks the set (`character_set_results`, or `NULL` and
/// `CONVERT(x USING …)`), or the column is stored in it. hoop reads such
/// values decoded, by their column's collation, and encodes what it
/// rewrites back into the same set; text and binary rows. Innocent values
/// in those sets come through byte for byte.
#[test]
fn values_in_wide_character_sets_are_read_by_the_detectors_as_the_client_reads_them() {
    require_privileged();
    let db = scratch("wide");
    mariadb_direct(
        Some(&db.name),
        "CREATE TABLE people (id INT PRIMARY KEY, ssn VARCHAR(20), note VARCHAR(100),
           wnote VARCHAR(100) CHARACTER SET utf16);
         INSERT INTO people VALUES
           (1, '123-45-6789', 'mail alice@example.com now', 'mail alice@example.com now'),
           (2, '987-65-4321', 'card 4111 1111 1111 1111 ok', 'card 4111 1111 1111 1111 ok');
         CREATE VIEW v_people AS SELECT id, ssn AS s FROM people;",
    );
    let cfg = config(
        "policy:
  mask:
    - columns: [people.ssn]
      strategy: partial
      keep_last: 4
    - name: pii
      detect: [email, credit_card]
      strategy: redact
",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mysql_wide.py");
    // Through hoop each case runs in a hoop of its own: once a detector has
    // found a value in `people.note`, hoop masks that column whole for the
    // rest of its run (a promotion), which would hide what the next case
    // decodes.
    let run = |through_hoop: Option<&str>| -> (Value, String) {
        let out = if let Some(case) = through_hoop {
            hoop_exec(&cfg.path, &[PYTHON, script, &db.name, case], T)
        } else {
            Command::new(PYTHON)
                .args([script, &db.name])
                .output()
                .expect("python")
        };
        let (stdout, stderr) = text(&out);
        let all = format!("{stdout}\n--- stderr\n{stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {all}"));
        (v, all)
    };
    let leaking = [
        "convert_utf16",
        "convert_utf16le",
        "convert_ucs2",
        "convert_utf32",
        "results_utf16",
        "results_utf32",
        "stored_utf16",
        "binary_convert_utf16",
        "binary_results_utf32",
        "convert_filename",
        "results_filename",
        "binary_convert_filename",
    ];
    // The bare server sends the values in those sets: decoded, they are
    // the plain text, and the wide bytes are not the ASCII bytes.
    let (bare, bare_all) = run(None);
    for case in leaking {
        let values = bare[case]["values"].to_string();
        assert!(
            values.contains("alice@example.com") && values.contains("4111 1111 1111 1111"),
            "{case}: {bare_all}"
        );
        assert!(
            bare[case]["charset"].as_u64().is_some_and(|c| c != 45),
            "{case} arrives in a wide set: {bare_all}"
        );
    }
    for case in ["masked_column_utf16", "view_after_ddl_utf16"] {
        assert_eq!(
            bare[case]["values"].to_string(),
            r#"["123-45-6789","987-65-4321"]"#,
            "{case}: {bare_all}"
        );
    }
    // Through hoop: found and redacted in every set, the rest of the text
    // kept, and the client decodes the result cleanly in its set.
    mariadb_direct(Some(&db.name), "DROP TABLE scratch");
    let mut v = serde_json::Map::new();
    let mut all = String::new();
    for case in bare.as_object().expect("cases").keys() {
        let (one, one_all) = run(Some(case));
        v.insert(case.clone(), one[case].clone());
        all.push_str(&one_all);
    }
    let v = Value::Object(v);
    for case in leaking {
        assert_eq!(
            v[case]["values"].to_string(),
            r#"["mail [REDACTED:email] now","card [REDACTED:credit_card] ok"]"#,
            "{case}: {all}"
        );
        assert_eq!(v[case]["charset"], bare[case]["charset"], "{case}: {all}");
    }
    // A column rule keeps the last four characters, not four bytes; a
    // view over the column is still known as one after hoop read its
    // catalog again under utf16.
    for case in ["masked_column_utf16", "view_after_ddl_utf16"] {
        assert_eq!(
            v[case]["values"].to_string(),
            r#"["***-**-6789","***-**-4321"]"#,
            "{case}: {all}"
        );
    }
    assert_eq!(
        v["masked_column_utf16"]["hex"][0], "002a002a002a002d002a002a002d0036003700380039",
        "{all}"
    );
    // Innocent values in a wide set: exactly the server's bytes.
    assert_eq!(
        v["binary_innocent_utf16le"]["values"].to_string(),
        r#"["plain words"]"#,
        "{all}"
    );
    assert_eq!(v["innocent_utf16"], bare["innocent_utf16"], "{all}");
    assert!(!all.contains("alice@example.com"), "{all}");
}

/// MySQL's upserts rewrite existing rows: `REPLACE` deletes the row a new
/// one conflicts with and inserts, `INSERT … ON DUPLICATE KEY UPDATE`
/// updates it. Fed by all of their own table they rewrite every row, so a
/// rule against deletes and updates without a WHERE refuses them, however
/// the self-read is wrapped (a derived table, a WHERE true for every row).
/// Upserts of listed rows or of a filtered source go through, as does a
/// plain INSERT … SELECT. The bare server rewrites every row.
#[test]
fn upserts_fed_by_their_own_table_are_unfiltered_writes() {
    require_privileged();
    let db = scratch("upserts");
    mariadb_direct(
        Some(&db.name),
        "CREATE TABLE kv (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO kv VALUES (1, 'a'), (2, 'b'), (3, 'c');
         CREATE TABLE copy_of (id INT, v VARCHAR(10));",
    );
    let cfg = config(POLICY);
    let attacks = [
        "REPLACE INTO kv SELECT id, 'zz' FROM kv",
        "REPLACE INTO kv SELECT * FROM (SELECT id, 'zz' FROM kv) AS s",
        "REPLACE INTO kv SELECT id, 'zz' FROM kv WHERE 1 = 1",
        "INSERT INTO kv SELECT id, 'yy' FROM kv ON DUPLICATE KEY UPDATE v = 'yy'",
        "INSERT INTO kv (id, v) SELECT * FROM (SELECT id, v FROM kv) AS s ON DUPLICATE KEY UPDATE v = 'yy'",
    ];
    let innocent = [
        "REPLACE INTO kv VALUES (3, 'c2')",
        "INSERT INTO kv VALUES (2, 'b') ON DUPLICATE KEY UPDATE v = 'b2'",
        "REPLACE INTO kv SELECT id, 'w' FROM kv WHERE id = 1",
        "INSERT INTO copy_of SELECT id, v FROM kv",
    ];
    let mut script = String::from("c = connect()\nout = {}\n");
    for (i, sql) in attacks.iter().enumerate() {
        let _ = writeln!(script, "out['attack{i}'] = run(c, {sql:?})");
    }
    for (i, sql) in innocent.iter().enumerate() {
        let _ = writeln!(script, "out['innocent{i}'] = run(c, {sql:?})");
    }
    script.push_str(
        "out['after'] = run(c, 'SELECT id, v FROM kv ORDER BY id')\nc.commit()\nprint(json.dumps(out))\n",
    );
    let (v, stderr) = pymysql(Some(&cfg), &db.name, &script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    for (i, sql) in attacks.iter().enumerate() {
        let key = format!("attack{i}");
        assert_eq!(v[&key]["error"], 1227, "{sql}: {all}");
        assert!(
            v[&key]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no unfiltered writes")),
            "{sql}: {all}"
        );
    }
    for (i, sql) in innocent.iter().enumerate() {
        let key = format!("innocent{i}");
        assert!(v[&key].get("error").is_none(), "{sql}: {all}");
    }
    assert_eq!(
        rows(&v["after"]),
        r#"[[1,"w"],[2,"b2"],[3,"c2"]]"#,
        "only the innocent upserts ran: {all}"
    );
    assert_eq!(db.count("copy_of"), 3);
    // The bare server rewrites every row with each attack.
    for sql in attacks {
        mariadb_direct(Some(&db.name), "UPDATE kv SET v = 'orig'");
        mariadb_direct(Some(&db.name), sql);
        let left = mariadb_direct(Some(&db.name), "SELECT count(*) FROM kv WHERE v = 'orig'");
        assert_eq!(
            left.trim(),
            "0",
            "{sql} rewrote every row on the bare server"
        );
    }
}
