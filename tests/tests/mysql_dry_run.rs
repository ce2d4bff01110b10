//! Issue 21: `max_rows` dry runs on MySQL/MariaDB, against the real MariaDB
//! on 127.0.0.1:3306 through `hoop exec`, with real clients (PyMySQL, raw
//! COM_STMT_PREPARE/EXECUTE on a PyMySQL connection, the `mariadb` CLI).
//! Each statement hoop refuses also runs against the bare server, to show
//! it really deletes there.

use std::{process::Command, time::Duration};

use hoop_tests::{
    Approver, MariaDb, TestConfig, hoop_exec, hoop_exec_spawn, mariadb_direct, require_privileged,
    text, wait_output,
};
use serde_json::Value;

const T: Duration = Duration::from_mins(2);
/// Debian's PyMySQL (`python3-pymysql`).
const PYTHON: &str = "/usr/bin/python3";
/// `SERVER_STATUS_IN_TRANS` and `SERVER_STATUS_AUTOCOMMIT`.
const IN_TRANS: i64 = 1;
const AUTOCOMMIT: i64 = 2;

/// The scratch database's tables: `items` (ids 1–10), `logged` (ids 1–3, a
/// trigger writes a row of `audit` per row deleted), `parent` (id 1) with
/// three `child` rows that cascade on delete, `flat` (MyISAM, ids 1–10),
/// and the stored function `one()`.
const SCHEMA: &str = "
    CREATE TABLE items (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;
    INSERT INTO items SELECT seq, 0 FROM seq_1_to_10;
    CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item INT) ENGINE=InnoDB;
    CREATE TABLE logged (id INT PRIMARY KEY) ENGINE=InnoDB;
    INSERT INTO logged VALUES (1), (2), (3);
    CREATE TRIGGER logged_ad AFTER DELETE ON logged FOR EACH ROW INSERT INTO audit (item) VALUES (OLD.id);
    CREATE TABLE twice (id INT PRIMARY KEY) ENGINE=InnoDB;
    INSERT INTO twice VALUES (1), (2), (3);
    CREATE TABLE parent (id INT PRIMARY KEY) ENGINE=InnoDB;
    CREATE TABLE child (id INT PRIMARY KEY, parent INT,
      FOREIGN KEY (parent) REFERENCES parent (id) ON DELETE CASCADE) ENGINE=InnoDB;
    INSERT INTO parent VALUES (1);
    INSERT INTO child VALUES (1, 1), (2, 1), (3, 1);
    CREATE TABLE kept (id INT PRIMARY KEY) ENGINE=InnoDB;
    CREATE TABLE keeper (id INT PRIMARY KEY, kept INT,
      FOREIGN KEY (kept) REFERENCES kept (id)) ENGINE=InnoDB;
    INSERT INTO kept VALUES (1);
    INSERT INTO keeper VALUES (1, 1);
    CREATE TABLE flat (id INT PRIMARY KEY) ENGINE=MyISAM;
    INSERT INTO flat SELECT seq FROM seq_1_to_10;
    CREATE FUNCTION one() RETURNS INT DETERMINISTIC RETURN 1;";

/// A scratch database `hoop_dry_{name}` holding [`SCHEMA`] and the trigger
/// `twice_ad` (a BEGIN … END body: the CLI splits at `;` without
/// DELIMITER).
fn scratch(name: &str) -> MariaDb {
    let db = MariaDb::create(&format!("hoop_dry_{name}"), SCHEMA);
    mariadb_direct(
        Some(&db.name),
        "DELIMITER //
         CREATE TRIGGER twice_ad AFTER DELETE ON twice FOR EACH ROW
           BEGIN INSERT INTO audit (item) VALUES (OLD.id); INSERT INTO audit (item) VALUES (-OLD.id); END//
         DELIMITER ;",
    );
    db
}

/// Deletes of more than 3 rows are denied; `server_code: allow`, so that a
/// stored function reaches the dry run (which refuses it itself).
const POLICY: &str = "policy:
  server_code: allow
  deny:
    - name: few-deletes
      statements: [delete]
      max_rows: 3
      message: deleting more than 3 rows is not allowed
";

fn config(extra: &str) -> TestConfig {
    TestConfig::new(&[3306], extra)
}

/// A PyMySQL script through `hoop exec` (`cfg`) or against the bare
/// server; `run(c, sql)` gives rows, affected rows and the status flags of
/// the reply's last OK/EOF, or the error. The script prints one JSON value.
fn pymysql(cfg: Option<&TestConfig>, db: &str, script: &str) -> (Value, String) {
    let program = pymysql_program(db, script);
    let out = match cfg {
        Some(cfg) => hoop_exec(&cfg.path, &[PYTHON, "-c", &program], T),
        None => Command::new(PYTHON)
            .args(["-c", &program])
            .output()
            .expect("python"),
    };
    json_of(&out)
}

/// The script's JSON, and its stderr.
fn json_of(out: &std::process::Output) -> (Value, String) {
    let (stdout, stderr) = text(out);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("no JSON from the script ({e}):\n{stdout}\n--- stderr\n{stderr}")
    });
    (value, stderr)
}

/// `script` after the helpers `pymysql` describes.
fn pymysql_program(db: &str, script: &str) -> String {
    let prelude = format!(
        "import json, struct, pymysql\n\
         def connect():\n\
         \x20   return pymysql.connect(host='127.0.0.1', port=3306, user='root', database='{db}', autocommit=True)\n\
         def run(c, sql):\n\
         \x20   try:\n\
         \x20       cur = c.cursor()\n\
         \x20       n = cur.execute(sql)\n\
         \x20       rows = [list(r) for r in cur.fetchall()]\n\
         \x20       return {{'rows': rows, 'affected': n, 'status': c.server_status}}\n\
         \x20   except pymysql.MySQLError as e:\n\
         \x20       return {{'error': e.args[0], 'message': str(e.args[1]) if len(e.args) > 1 else '', 'status': c.server_status}}\n\
         def prepare(c, sql):\n\
         \x20   c._execute_command(0x16, sql)\n\
         \x20   ok = c._read_packet().get_all_data()\n\
         \x20   stmt, ncols, nparams = struct.unpack_from('<IHH', ok, 1)\n\
         \x20   for _ in range(nparams): c._read_packet()\n\
         \x20   if nparams: c._read_packet()\n\
         \x20   for _ in range(ncols): c._read_packet()\n\
         \x20   if ncols: c._read_packet()\n\
         \x20   return stmt\n\
         def execute(c, stmt, value, flags=0):\n\
         \x20   # One INT parameter, its type bound.\n\
         \x20   c._execute_command(0x17, struct.pack('<IBIBBBBi', stmt, flags, 1, 0, 1, 3, 0, value))\n\
         \x20   try:\n\
         \x20       p = c._read_packet()\n\
         \x20       d = p.get_all_data()\n\
         \x20       if d[0] == 0: return {{'affected': d[1], 'status': struct.unpack_from('<H', d, 3)[0]}}\n\
         \x20       return {{'other': d[0]}}\n\
         \x20   except pymysql.MySQLError as e:\n\
         \x20       return {{'error': e.args[0], 'message': str(e.args[1])}}\n"
    );
    format!("{prelude}{script}")
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

fn status(v: &Value) -> i64 {
    v["status"].as_i64().expect("status flags")
}

#[test]
fn a_deny_rule_with_max_rows_counts_by_a_dry_run_and_keeps_the_rows_over_it() {
    require_privileged();
    let db = scratch("limit");
    let cfg = config(POLICY);
    let script = "c = connect()\n\
        out = {}\n\
        out['under'] = run(c, 'DELETE FROM items WHERE id <= 2')\n\
        out['over'] = run(c, 'DELETE FROM items WHERE id <= 9')\n\
        out['select'] = run(c, 'SELECT count(*) FROM items')\n\
        out['in_transaction'] = run(c, 'SELECT @@in_transaction')\n\
        print(json.dumps(out))\n";
    let (v, stderr) = pymysql(Some(&cfg), &db.name, script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    // Under the limit: it ran, and the client saw its own count and a
    // status without hoop's transaction.
    assert_eq!(v["under"]["affected"], 2, "{all}");
    assert_eq!(
        status(&v["under"]) & (IN_TRANS | AUTOCOMMIT),
        AUTOCOMMIT,
        "{all}"
    );
    // Over it: refused with the count, nothing deleted.
    assert_eq!(v["over"]["error"], 1227, "{all}");
    assert!(
        message(&v["over"]).contains("deleting more than 3 rows is not allowed")
            && message(&v["over"]).contains("a dry run touched 7 rows; the limit is 3"),
        "{all}"
    );
    assert_eq!(v["select"]["rows"].to_string(), "[[8]]", "{all}");
    assert_eq!(v["in_transaction"]["rows"].to_string(), "[[0]]", "{all}");
    assert_eq!(db.count("items"), 8);
    // The recording has the client's statements, not hoop's own.
    let mut recorded = String::new();
    for entry in std::fs::read_dir(cfg.dir.path().join("recordings"))
        .expect("recordings dir")
        .flatten()
    {
        recorded.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    assert!(recorded.contains("DELETE FROM items"), "{recorded}");
    for internal in [
        "hoop_dry_run",
        "Handler_write",
        "START TRANSACTION",
        "INNODB_SYS_FOREIGN",
    ] {
        assert!(
            !recorded.contains(internal),
            "{internal} recorded: {recorded}"
        );
    }
    // The bare server deletes them.
    let (bare, _) = pymysql(
        None,
        &db.name,
        "c = connect()\nprint(json.dumps(run(c, 'DELETE FROM items WHERE id <= 9')))\n",
    );
    assert_eq!(bare["affected"], 7, "{bare}");
    assert_eq!(db.count("items"), 1);
}

#[test]
fn inside_the_clients_transaction_a_savepoint_keeps_its_own_work_undoable() {
    require_privileged();
    let db = scratch("savepoint");
    let cfg = config(POLICY);
    let script = "c = connect()\n\
        out = {}\n\
        run(c, 'START TRANSACTION')\n\
        out['insert'] = run(c, 'INSERT INTO items VALUES (100, 1)')\n\
        out['under'] = run(c, 'DELETE FROM items WHERE id <= 2')\n\
        out['over'] = run(c, 'DELETE FROM items WHERE id <= 9')\n\
        out['failing'] = run(c, 'DELETE FROM kept')\n\
        out['mine'] = run(c, 'SELECT count(*) FROM items WHERE id = 100')\n\
        out['count'] = run(c, 'SELECT count(*) FROM items')\n\
        out['in_transaction'] = run(c, 'SELECT @@in_transaction')\n\
        out['rollback'] = run(c, 'ROLLBACK')\n\
        out['after_rollback'] = run(c, 'SELECT count(*) FROM items')\n\
        run(c, 'BEGIN')\n\
        out['committed'] = run(c, 'DELETE FROM items WHERE id <= 3')\n\
        run(c, 'COMMIT')\n\
        run(c, 'SET autocommit = 0')\n\
        out['ac0_over_first'] = run(c, 'DELETE FROM items WHERE id <= 9')\n\
        out['ac0_in_transaction'] = run(c, 'SELECT @@in_transaction')\n\
        out['ac0_under'] = run(c, 'DELETE FROM items WHERE id = 4')\n\
        out['ac0_over'] = run(c, 'DELETE FROM items WHERE id <= 9')\n\
        out['ac0_count'] = run(c, 'SELECT count(*) FROM items')\n\
        run(c, 'ROLLBACK')\n\
        out['ac0_after_rollback'] = run(c, 'SELECT count(*) FROM items')\n\
        print(json.dumps(out))\n";
    let (v, stderr) = pymysql(Some(&cfg), &db.name, script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    assert_eq!(v["under"]["affected"], 2, "{all}");
    // Still the client's transaction (hoop's savepoint released).
    assert_eq!(status(&v["under"]) & IN_TRANS, IN_TRANS, "{all}");
    assert_eq!(v["over"]["error"], 1227, "{all}");
    assert!(
        message(&v["over"]).contains("a dry run touched 7 rows"),
        "{all}"
    );
    // A statement that fails in its dry run gets the server's own error
    // (a RESTRICT foreign key), and the transaction goes on.
    assert_eq!(v["failing"]["error"], 1451, "{all}");
    // The refusal undid only the dry run: the client's insert and its
    // allowed delete stand, in its transaction, which its ROLLBACK undoes.
    assert_eq!(v["mine"]["rows"].to_string(), "[[1]]", "{all}");
    assert_eq!(v["count"]["rows"].to_string(), "[[9]]", "{all}");
    assert_eq!(v["in_transaction"]["rows"].to_string(), "[[1]]", "{all}");
    assert_eq!(v["after_rollback"]["rows"].to_string(), "[[10]]", "{all}");
    assert_eq!(v["committed"]["affected"], 3, "{all}");
    // autocommit=0: a refusal leaves no transaction open when none was, an
    // allowed delete stays in the open one, the client's ROLLBACK undoes it.
    assert_eq!(v["ac0_over_first"]["error"], 1227, "{all}");
    assert_eq!(
        v["ac0_in_transaction"]["rows"].to_string(),
        "[[0]]",
        "{all}"
    );
    assert_eq!(v["ac0_under"]["affected"], 1, "{all}");
    assert_eq!(
        status(&v["ac0_under"]) & (IN_TRANS | AUTOCOMMIT),
        IN_TRANS,
        "{all}"
    );
    assert_eq!(v["ac0_over"]["error"], 1227, "{all}");
    assert_eq!(v["ac0_count"]["rows"].to_string(), "[[6]]", "{all}");
    assert_eq!(
        v["ac0_after_rollback"]["rows"].to_string(),
        "[[7]]",
        "{all}"
    );
    assert_eq!(db.count("items"), 7);
}

#[test]
fn trigger_writes_count_and_what_cannot_be_counted_or_undone_is_refused_unrun() {
    require_privileged();
    let db = scratch("failclosed");
    let cfg = config(POLICY);
    let script = "c = connect()\n\
        out = {}\n\
        out['trigger_over'] = run(c, 'DELETE FROM logged WHERE id <= 2')\n\
        out['trigger_under'] = run(c, 'DELETE FROM logged WHERE id = 1')\n\
        out['twice_over'] = run(c, 'DELETE FROM twice WHERE id <= 2')\n\
        out['twice_under'] = run(c, 'DELETE FROM twice WHERE id = 1')\n\
        out['cascade'] = run(c, 'DELETE FROM parent WHERE id = 1')\n\
        run(c, 'LOCK TABLES items WRITE')\n\
        out['locked'] = run(c, 'DELETE FROM items WHERE id = 1')\n\
        run(c, 'UNLOCK TABLES')\n\
        out['myisam'] = run(c, 'DELETE FROM flat WHERE id = 1')\n\
        out['function'] = run(c, 'DELETE FROM items WHERE id = one()')\n\
        out['several'] = run(c, 'DELETE FROM items WHERE id = 2; SELECT 1')\n\
        print(json.dumps(out))\n";
    let (v, stderr) = pymysql(Some(&cfg), &db.name, script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    // Two rows deleted, two audit rows written by the trigger: 4 > 3.
    assert_eq!(v["trigger_over"]["error"], 1227, "{all}");
    assert!(
        message(&v["trigger_over"]).contains("a dry run touched 4 rows"),
        "{all}"
    );
    assert_eq!(v["trigger_under"]["affected"], 1, "{all}");
    // A BEGIN … END trigger writing two rows per row: 2 + 4 > 3, 1 + 2 ≤ 3.
    assert_eq!(v["twice_over"]["error"], 1227, "{all}");
    assert!(
        message(&v["twice_over"]).contains("a dry run touched 6 rows"),
        "{all}"
    );
    assert_eq!(v["twice_under"]["affected"], 1, "{all}");
    assert_eq!(db.count("logged"), 2);
    assert_eq!(db.count("twice"), 2);
    assert_eq!(db.count("audit"), 3);
    // START TRANSACTION would release the client's table locks.
    assert_eq!(v["locked"]["error"], 1227, "{all}");
    assert!(message(&v["locked"]).contains("LOCK TABLES"), "{all}");
    // A cascade the server does not count: refused without running.
    assert_eq!(v["cascade"]["error"], 1227, "{all}");
    assert!(
        message(&v["cascade"]).contains("foreign keys act on rows")
            && message(&v["cascade"]).contains("ON DELETE CASCADE"),
        "{all}"
    );
    assert_eq!(db.count("child"), 3);
    // A table no rollback can restore: refused without running.
    assert_eq!(v["myisam"]["error"], 1227, "{all}");
    assert!(
        message(&v["myisam"]).contains("MyISAM has no transactions"),
        "{all}"
    );
    assert_eq!(db.count("flat"), 10);
    assert_eq!(v["function"]["error"], 1227, "{all}");
    assert!(
        message(&v["function"]).contains("server-side code"),
        "{all}"
    );
    assert_eq!(v["several"]["error"], 1227, "{all}");
    assert!(
        message(&v["several"]).contains("one of several statements"),
        "{all}"
    );
    assert_eq!(db.count("items"), 10);
    // The bare server: the cascade deletes the children, MyISAM rows go,
    // the function's delete runs, the trigger writes.
    let (bare, _) = pymysql(
        None,
        &db.name,
        "c = connect()\n\
         print(json.dumps([run(c, 'DELETE FROM parent WHERE id = 1'), run(c, 'DELETE FROM flat WHERE id <= 9'),\n\
         \x20                 run(c, 'DELETE FROM items WHERE id = one()'), run(c, 'DELETE FROM logged')]))\n",
    );
    assert_eq!(bare[0]["affected"], 1, "{bare}");
    assert_eq!(db.count("child"), 0, "the cascade deleted the children");
    assert_eq!(db.count("flat"), 1);
    assert_eq!(db.count("items"), 9);
    assert_eq!(db.count("audit"), 5);
}

#[test]
fn prepared_executions_are_dry_run_each_time() {
    require_privileged();
    let db = scratch("prepared");
    let cfg = config(POLICY);
    let script = "c = connect()\n\
        out = {}\n\
        s = prepare(c, 'DELETE FROM items WHERE id <= ?')\n\
        out['under'] = execute(c, s, 2)\n\
        out['over'] = execute(c, s, 9)\n\
        out['count'] = run(c, 'SELECT count(*) FROM items')\n\
        q = prepare(c, 'DELETE FROM flat WHERE id <= ?')\n\
        out['myisam'] = execute(c, q, 1)\n\
        out['cursor'] = execute(c, s, 3, flags=1)\n\
        print(json.dumps(out))\n";
    let (v, stderr) = pymysql(Some(&cfg), &db.name, script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    assert_eq!(v["under"]["affected"], 2, "{all}");
    assert_eq!(
        v["under"]["status"].as_i64().unwrap_or(-1) & (IN_TRANS | AUTOCOMMIT),
        AUTOCOMMIT,
        "{all}"
    );
    assert_eq!(v["over"]["error"], 1227, "{all}");
    assert!(
        message(&v["over"]).contains("a dry run touched 7 rows"),
        "{all}"
    );
    assert_eq!(v["count"]["rows"].to_string(), "[[8]]", "{all}");
    assert_eq!(v["myisam"]["error"], 1227, "{all}");
    assert!(message(&v["myisam"]).contains("no transactions"), "{all}");
    // An execution with a cursor cannot be counted (its rows come later).
    assert_eq!(v["cursor"]["error"], 1227, "{all}");
    assert!(message(&v["cursor"]).contains("cursor"), "{all}");
    assert_eq!(db.count("items"), 8);
    assert_eq!(db.count("flat"), 10);
    // The bare server runs the prepared DELETE.
    let (bare, _) = pymysql(
        None,
        &db.name,
        "c = connect()\nprint(json.dumps(execute(c, prepare(c, 'DELETE FROM items WHERE id <= ?'), 9)))\n",
    );
    assert_eq!(bare["affected"], 7, "{bare}");
}

#[test]
fn a_hold_rule_with_max_rows_holds_with_the_count_and_runs_once_when_approved() {
    require_privileged();
    let db = scratch("hold");
    let cfg = config(
        "policy:
  hold:
    - name: big-deletes
      statements: [delete]
      max_rows: 3
      timeout: 60s
      message: deleting more than 3 rows needs a DBA
",
    );
    let approver = Approver::install(&cfg, "dry-run-dba-token");
    // Under the limit: not held.
    let (v, stderr) = pymysql(
        Some(&cfg),
        &db.name,
        "c = connect()\nprint(json.dumps(run(c, 'DELETE FROM items WHERE id = 1')))\n",
    );
    assert_eq!(v["affected"], 1, "{v}\n{stderr}");
    // Over it: held with the count, approved, run once.
    let child = hoop_exec_spawn(
        &cfg.path,
        &[
            "mariadb",
            "-h",
            "127.0.0.1",
            "--protocol=TCP",
            "-uroot",
            "-B",
            &db.name,
            "-e",
            "DELETE FROM items WHERE id <= 6; SELECT 'done' AS d",
        ],
    );
    let hold = approver.pending();
    assert!(
        hold.to_string()
            .contains("a dry run touched 5 rows; the limit is 3"),
        "{hold}"
    );
    assert_eq!(db.count("items"), 9, "rolled back while held");
    let id = hold["id"].as_str().expect("an id");
    let out = approver.holds(&["approve", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("done"), "{stdout}\n{stderr}");
    assert_eq!(db.count("items"), 4, "the approved DELETE ran once");

    // Approved for 4 rows, but a fifth appeared meanwhile: refused.
    let child = hoop_exec_spawn(
        &cfg.path,
        &[
            "mariadb",
            "-h",
            "127.0.0.1",
            "--protocol=TCP",
            "-uroot",
            "-B",
            &db.name,
            "-e",
            "DELETE FROM items WHERE id >= 7 OR id <= 0",
        ],
    );
    let hold = approver.pending();
    assert!(
        hold.to_string().contains("a dry run touched 4 rows"),
        "{hold}"
    );
    mariadb_direct(Some(&db.name), "INSERT INTO items VALUES (0, 0)");
    let id = hold["id"].as_str().expect("an id");
    let out = approver.holds(&["approve", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("ERROR 1227") && stderr.contains("approved for 4 rows but now touches 5"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(db.count("items"), 5, "nothing deleted");

    // A prepared statement is held at its execution, with the count; once
    // approved the same execution runs again (as a dry run) and is kept.
    let program = pymysql_program(
        &db.name,
        "c = connect()\n\
         s = prepare(c, 'DELETE FROM items WHERE id <= ?')\n\
         print(json.dumps(execute(c, s, 10)))\n",
    );
    let child = hoop_exec_spawn(&cfg.path, &[PYTHON, "-c", &program]);
    let hold = approver.pending();
    assert!(
        hold.to_string()
            .contains("a dry run touched 5 rows; the limit is 3"),
        "{hold}"
    );
    assert_eq!(db.count("items"), 5, "rolled back while held");
    let id = hold["id"].as_str().expect("an id");
    let out = approver.holds(&["approve", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (v, stderr) = json_of(&wait_output(child, T));
    assert_eq!(v["affected"], 5, "{v}\n{stderr}");
    assert_eq!(db.count("items"), 0);
    // Its parameter sent as long data: the dry run consumes it, so the
    // execution cannot run again once approved, and is refused at once.
    mariadb_direct(
        Some(&db.name),
        "INSERT INTO items SELECT seq, 0 FROM seq_1_to_5",
    );
    let (v, stderr) = pymysql(
        Some(&cfg),
        &db.name,
        "c = connect()\n\
         s = prepare(c, 'DELETE FROM items WHERE id <= ?')\n\
         c._execute_command(0x18, struct.pack('<IH', s, 0) + b'10')\n\
         c._execute_command(0x17, struct.pack('<IBIBBBB', s, 0, 1, 0, 1, 254, 0))\n\
         try:\n\
         \x20   d = c._read_packet().get_all_data()\n\
         \x20   print(json.dumps({'affected': d[1]}))\n\
         except pymysql.MySQLError as e:\n\
         \x20   print(json.dumps({'error': e.args[0], 'message': str(e.args[1])}))\n",
    );
    assert_eq!(v["error"], 1227, "{v}\n{stderr}");
    assert!(message(&v).contains("long data"), "{v}\n{stderr}");
    assert_eq!(db.count("items"), 5);
}

/// A client that gives up while its statement is held: the hold is
/// withdrawn, the dry run was rolled back, hoop serves the next session.
#[test]
fn a_client_that_vanishes_while_held_leaves_nothing_behind() {
    require_privileged();
    let db = scratch("vanish");
    let cfg = config(
        "policy:
  hold:
    - name: big-deletes
      statements: [delete]
      max_rows: 3
      timeout: 60s
      message: deleting more than 3 rows needs a DBA
",
    );
    let script = format!(
        "c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database='{}', autocommit=True, read_timeout=2)\n\
         out = {{}}\n\
         out['held'] = run(c, 'DELETE FROM items WHERE id <= 6')\n\
         c.close()\n\
         import time; time.sleep(1)\n\
         n = connect()\n\
         out['next'] = run(n, 'SELECT count(*) FROM items')\n\
         out['sessions'] = run(n, 'SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE()')\n\
         print(json.dumps(out))\n",
        db.name
    );
    let (v, stderr) = pymysql(Some(&cfg), &db.name, &script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    assert!(
        v["held"]["error"].is_number(),
        "the client timed out: {all}"
    );
    assert_eq!(v["next"]["rows"].to_string(), "[[10]]", "{all}");
    // Its server connection is gone too (nothing left open on it).
    assert_eq!(v["sessions"]["rows"].to_string(), "[[1]]", "{all}");
    assert_eq!(db.count("items"), 10);
}

/// A SELECT counted by a dry run: its rows are masked as usual when
/// allowed, and refused over the limit.
#[test]
fn a_counted_select_is_masked_and_refused_over_its_limit() {
    require_privileged();
    let db = scratch("select");
    mariadb_direct(
        Some(&db.name),
        "CREATE TABLE people (id INT PRIMARY KEY, ssn VARCHAR(20)) ENGINE=InnoDB;
         INSERT INTO people VALUES (1, '123-45-6789'), (2, '987-65-4321'), (3, '555-12-3456');",
    );
    let cfg = config(
        "policy:
  mask:
    - columns: [people.ssn]
      strategy: partial
      keep_last: 4
  deny:
    - name: few-people
      statements: [select]
      tables: [people]
      max_rows: 2
      message: reading more than 2 people is not allowed
",
    );
    let script = "c = connect()\n\
        out = {}\n\
        out['under'] = run(c, 'SELECT id, ssn FROM people WHERE id <= 2 ORDER BY id')\n\
        out['over'] = run(c, 'SELECT id, ssn FROM people ORDER BY id')\n\
        out['huge'] = run(c, \"SELECT REPEAT('x', 1000000) FROM people, seq_1_to_20\")\n\
        out['huge_failing'] = run(c, \"SELECT REPEAT('x', 1000000) FROM people, seq_1_to_30 WHERE IF(seq < 20, 1, (SELECT seq UNION SELECT seq + 1))\")\n\
        out['after'] = run(c, 'SELECT 1')\n\
        out['in_transaction'] = run(c, 'SELECT @@in_transaction')\n\
        print(json.dumps(out))\n";
    let (v, stderr) = pymysql(Some(&cfg), &db.name, script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    assert_eq!(
        v["under"]["rows"].to_string(),
        r#"[[1,"***-**-6789"],[2,"***-**-4321"]]"#,
        "{all}"
    );
    assert_eq!(v["over"]["error"], 1227, "{all}");
    assert!(
        message(&v["over"]).contains("a dry run touched 3 rows"),
        "{all}"
    );
    assert!(!all.contains("123-45-6789"), "{all}");
    // 60 MB of rows do not fit in what hoop holds back: refused.
    assert_eq!(v["huge"]["error"], 1227, "{all}");
    assert!(message(&v["huge"]).contains("exceed 16 MiB"), "{all}");
    // 57 MB of rows, then the server's error: the client gets that error
    // (all that is left of the reply hoop held back), and goes on.
    assert_eq!(v["huge_failing"]["error"], 1242, "{all}");
    assert_eq!(v["after"]["rows"].to_string(), "[[1]]", "{all}");
    assert_eq!(v["in_transaction"]["rows"].to_string(), "[[0]]", "{all}");
    // The bare server returns them all.
    let (bare, _) = pymysql(
        None,
        &db.name,
        "c = connect()\nprint(json.dumps(run(c, 'SELECT id, ssn FROM people ORDER BY id')))\n",
    );
    assert!(bare["rows"].to_string().contains("555-12-3456"), "{bare}");
}

/// Drops a scratch account at the end.
struct User(&'static str);

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "--protocol=TCP", "-uroot", "-e"])
            .arg(format!("DROP USER IF EXISTS {}@'%'", self.0))
            .output();
    }
}

/// An account without the PROCESS privilege cannot read InnoDB's
/// dictionary of foreign keys: hoop reads them from
/// `information_schema.REFERENTIAL_CONSTRAINTS` instead, and still refuses
/// the cascade.
#[test]
fn without_the_process_privilege_cascades_are_still_found() {
    require_privileged();
    let db = scratch("noprocess");
    let user = User("hoop_dry_noprocess");
    mariadb_direct(
        None,
        &format!(
            "DROP USER IF EXISTS {0}@'%'; CREATE USER {0}@'%'; GRANT ALL ON {1}.* TO {0}@'%';",
            user.0, db.name
        ),
    );
    let cfg = config(POLICY);
    let script = format!(
        "c = pymysql.connect(host='127.0.0.1', port=3306, user='{}', database='{}', autocommit=True)\n\
         out = {{}}\n\
         out['dictionary'] = run(c, 'SELECT count(*) FROM information_schema.INNODB_SYS_FOREIGN')\n\
         out['cascade'] = run(c, 'DELETE FROM parent WHERE id = 1')\n\
         out['under'] = run(c, 'DELETE FROM items WHERE id <= 3')\n\
         print(json.dumps(out))\n",
        user.0, db.name
    );
    let (v, stderr) = pymysql(Some(&cfg), &db.name, &script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    assert!(v["dictionary"]["error"].is_number(), "{all}");
    assert_eq!(v["cascade"]["error"], 1227, "{all}");
    assert!(
        message(&v["cascade"]).contains("ON DELETE CASCADE"),
        "{all}"
    );
    assert_eq!(v["under"]["affected"], 3, "{all}");
    assert_eq!(db.count("child"), 3);
    assert_eq!(db.count("items"), 7);
}

/// The Rust client (`mysql_async`, its own codecs, binary protocol through
/// COM_STMT_PREPARE/EXECUTE): its prepared SELECT is dry-run at each
/// execution, masked when allowed and refused over the limit; its text
/// DELETE over the limit is refused. The bare server answers and deletes.
#[test]
fn a_rust_clients_prepared_executions_are_counted_and_masked() {
    require_privileged();
    let db = scratch("rust");
    mariadb_direct(
        Some(&db.name),
        "CREATE TABLE cust (id INT PRIMARY KEY, ssn VARCHAR(20), email VARCHAR(50)) ENGINE=InnoDB;
         INSERT INTO cust VALUES (1, '123-45-6789', 'a@example.com'), (2, '987-65-4321', 'b@example.com');
         CREATE TABLE other (id INT, note VARCHAR(20)) ENGINE=InnoDB;
         INSERT INTO other VALUES (1, 'hello'), (2, 'world');",
    );
    let cfg = config(
        "policy:
  mask:
    - columns: [cust.ssn]
      strategy: partial
      keep_last: 4
  deny:
    - name: one-customer
      statements: [select]
      tables: [cust]
      max_rows: 1
      message: one customer at a time
    - name: one-note
      statements: [delete]
      tables: [other]
      max_rows: 1
      message: one note at a time
",
    );
    let client = env!("CARGO_BIN_EXE_mysql-rust-client");
    let out = hoop_exec(&cfg.path, &[client, &db.name], T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {all}"));
    // Two customers by text and by the first execution: refused.
    for key in ["text", "binary", "derived"] {
        assert_eq!(v[key]["error"], 1227, "{key}: {all}");
        assert!(
            v[key]["message"]
                .as_str()
                .is_some_and(|m| m.contains("a dry run touched 2 rows; the limit is 1")),
            "{key}: {all}"
        );
    }
    // One customer by the second execution: allowed, binary row masked.
    assert_eq!(
        v["binary_again"]["rows"].to_string(),
        r#"[[2,"***-**-4321"]]"#,
        "{all}"
    );
    assert_eq!(v["denied"]["error"], 1227, "{all}");
    assert_eq!(
        v["after"]["rows"].to_string(),
        r#"["hello","world"]"#,
        "{all}"
    );
    assert_eq!(db.count("other"), 2);
    assert!(!all.contains("123-45-6789"), "{all}");
    // The bare server: both customers, raw, and the DELETE runs.
    let bare = Command::new(client)
        .arg(&db.name)
        .output()
        .expect("mysql-rust-client");
    let (bare_out, bare_err) = text(&bare);
    let bare: Value = serde_json::from_str(bare_out.trim())
        .unwrap_or_else(|e| panic!("{e}: {bare_out}\n{bare_err}"));
    assert!(
        bare["binary"]["rows"].to_string().contains("987-65-4321"),
        "{bare}"
    );
    assert_eq!(db.count("other"), 0, "{bare}");
}

/// A deadlock inside a dry run (the server rolls back the client's whole
/// transaction): the client gets the server's ERR 1213 and no transaction
/// is left open, as without hoop; the session goes on.
#[test]
fn a_deadlock_inside_a_dry_run_reaches_the_client_as_the_servers_error() {
    require_privileged();
    let db = scratch("deadlock");
    let cfg = config(POLICY);
    // `b` (direct, not through hoop) writes more rows, so InnoDB picks the
    // client's transaction as the victim.
    let script = format!(
        "import threading, time\n\
         c = connect()\n\
         b = pymysql.connect(host='127.0.0.1', port=3306, user='root', database='{}', unix_socket='/run/mysqld/mysqld.sock')\n\
         out = {{}}\n\
         run(c, 'BEGIN')\n\
         run(c, 'UPDATE items SET v = 1 WHERE id = 1')\n\
         run(b, 'BEGIN')\n\
         run(b, 'UPDATE items SET v = 2 WHERE id >= 2')\n\
         def other():\n\
         \x20   time.sleep(1)\n\
         \x20   out['other'] = run(b, 'UPDATE items SET v = 2 WHERE id = 1')\n\
         \x20   run(b, 'ROLLBACK')\n\
         t = threading.Thread(target=other); t.start()\n\
         out['victim'] = run(c, 'DELETE FROM items WHERE id <= 2')\n\
         t.join()\n\
         out['in_transaction'] = run(c, 'SELECT @@in_transaction')\n\
         out['after'] = run(c, 'SELECT count(*) FROM items WHERE v = 1')\n\
         print(json.dumps(out))\n",
        db.name
    );
    let (v, stderr) = pymysql(Some(&cfg), &db.name, &script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    assert_eq!(v["victim"]["error"], 1213, "{all}");
    assert_eq!(v["in_transaction"]["rows"].to_string(), "[[0]]", "{all}");
    // The client's own update went with its transaction.
    assert_eq!(v["after"]["rows"].to_string(), "[[0]]", "{all}");
    assert_eq!(db.count("items"), 10);
}

/// A client that reads its results in UTF-16 (`character_set_results =
/// utf16`) gets hoop's own catalog and status answers in UTF-16 too: hoop
/// decodes them by their columns' collation, so the dry run still finds
/// the table, its engine and the counters, and counts as it does in UTF-8,
/// with triggers and all (the trigger's audit rows count).
#[test]
fn a_dry_run_counts_the_same_when_the_client_reads_results_in_utf16() {
    require_privileged();
    let db = scratch("wide");
    let cfg = config(POLICY);
    let script = "c = connect()\n\
        out = {}\n\
        run(c, 'SET character_set_results = utf16')\n\
        out['under'] = run(c, 'DELETE FROM items WHERE id <= 2')\n\
        out['over'] = run(c, 'DELETE FROM items WHERE id <= 9')\n\
        out['trigger'] = run(c, 'DELETE FROM logged WHERE id <= 2')\n\
        out['flat'] = run(c, 'DELETE FROM flat WHERE id <= 1')\n\
        print(json.dumps(out))\n";
    let (v, stderr) = pymysql(Some(&cfg), &db.name, script);
    let all = format!("{v}\n--- stderr\n{stderr}");
    assert_eq!(v["under"]["affected"], 2, "{all}");
    assert_eq!(v["over"]["error"], 1227, "{all}");
    assert!(
        message(&v["over"]).contains("a dry run touched 7 rows; the limit is 3"),
        "{all}"
    );
    // Two deleted and two audit rows written by the trigger.
    assert!(
        message(&v["trigger"]).contains("a dry run touched 4 rows; the limit is 3"),
        "{all}"
    );
    // The engine is still read: MyISAM is refused unrun.
    assert!(message(&v["flat"]).contains("MyISAM"), "{all}");
    assert_eq!(db.count("items"), 8);
    assert_eq!(db.count("logged"), 3);
    assert_eq!(db.count("flat"), 10);
}
