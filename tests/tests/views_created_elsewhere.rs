//! A view another session creates (a migration, a DBA) while a governed
//! session is open: hoop's knowledge of what each view reads was loaded
//! earlier, and a view it does not know would read as a plain table, its
//! columns unmasked. PostgreSQL: a result naming a relation the catalog has
//! not seen loads the views again when it is a view, and the views are
//! loaded again when older than 10 s (a view *replaced* under a known name).
//! MySQL: a statement naming a relation the session's catalog does not know
//! loads the catalog again before it is judged, and so does one naming any
//! relation once the catalog is 10 s old (a table replaced by a view under
//! its name, a view replaced). Each case also runs against
//! the bare server, where the view hands out the raw values. The other
//! session uses the server's unix socket, which hoop does not intercept.

use std::{process::Command, time::Duration};

use hoop_tests::{
    MariaDb, TestConfig, hoop_exec, mariadb_direct, psql_direct, require_privileged, text,
};

const T: Duration = Duration::from_mins(2);

/// Drops the test's PostgreSQL objects at the end.
struct PgObjects;

impl Drop for PgObjects {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-qc",
            ])
            .arg("DROP TABLE IF EXISTS hoop_vce_people CASCADE")
            .output();
    }
}

#[test]
fn postgres_views_created_or_replaced_by_another_session_are_masked() {
    require_privileged();
    let _objects = PgObjects;
    psql_direct(
        "DROP TABLE IF EXISTS hoop_vce_people CASCADE;
         CREATE TABLE hoop_vce_people (id int, ssn text);
         INSERT INTO hoop_vce_people VALUES (1, '123-45-6789'), (2, '987-65-4321');
         CREATE VIEW hoop_vce_replaced AS SELECT id, 'none'::text AS s FROM hoop_vce_people;",
    );
    let cfg = TestConfig::new(
        &[5432],
        "tls:\n  upstream: disable\npolicy:\n  mask:\n    - columns: [hoop_vce_people.ssn]\n      strategy: partial\n      keep_last: 4\n",
    );
    // One session: it reads the innocent view (so its plan is known), then
    // another session creates a view over the masked column and replaces
    // the innocent one with one; the first is read at once, the replaced one
    // after the views' 10 s age.
    // The replacement comes after the new view was read: reading a new
    // view reloads every view, which would show the replacement too; only
    // the views' age shows it here.
    let other =
        |sql: &str| format!("psql -X -h /var/run/postgresql -U postgres -d test -qc \"{sql}\"");
    let create = other("CREATE VIEW hoop_vce_new AS SELECT id, ssn AS s FROM hoop_vce_people");
    let replace = other(
        "CREATE OR REPLACE VIEW hoop_vce_replaced AS SELECT id, ssn AS s FROM hoop_vce_people",
    );
    let script = format!(
        "SELECT 'before', s FROM hoop_vce_replaced ORDER BY id;\n\
         \\! {create}\n\
         SELECT 'new', s FROM hoop_vce_new ORDER BY id;\n\
         SELECT 'new_star', * FROM hoop_vce_new ORDER BY id;\n\
         \\! {replace}\n\
         \\! sleep 11\n\
         SELECT 'replaced', s FROM hoop_vce_replaced ORDER BY id;\n"
    );
    let run = "printf '%s' \"$1\" | psql -X -At -h 127.0.0.1 -U postgres -d test";
    let out = hoop_exec(&cfg.path, &["sh", "-c", run, "sh", &script], T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("before|none"), "{all}");
    assert!(stdout.contains("new|***-**-6789"), "{all}");
    assert!(stdout.contains("replaced|***-**-6789"), "{all}");
    assert!(!stdout.contains("123-45-6789"), "{all}");
    assert!(!stdout.contains("987-65-4321"), "{all}");
    // The bare server: both views hand out the values.
    let bare = Command::new("psql")
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-c",
        ])
        .arg("SELECT s FROM hoop_vce_new UNION ALL SELECT s FROM hoop_vce_replaced")
        .output()
        .expect("psql");
    let bare = String::from_utf8_lossy(&bare.stdout);
    assert_eq!(bare.matches("123-45-6789").count(), 2, "{bare}");
}

/// Runs a Python script that prints one JSON document through `hoop exec`:
/// the document, and everything it printed (stdout, then stderr) for
/// assertion messages.
fn python_through_hoop(cfg: &TestConfig, script: &str) -> (serde_json::Value, String) {
    let out = hoop_exec(&cfg.path, &["/usr/bin/python3", "-c", script], T);
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {all}"));
    (v, all)
}

/// The MySQL tests' script start: a PyMySQL session through hoop, and
/// `run(sql)`, which returns rows or `{'error', 'message'}`.
const MY_PRELUDE: &str = r"
import json, subprocess, time, pymysql
c = pymysql.connect(host='127.0.0.1', port=3306, user='root', database='hoop_vce', autocommit=True)
def run(sql):
    try:
        cur = c.cursor()
        cur.execute(sql)
        return [list(r) for r in cur.fetchall()]
    except pymysql.MySQLError as e:
        return {'error': e.args[0], 'message': str(e.args[1])}
";

#[test]
fn mysql_views_created_by_another_session_are_known_before_they_are_read() {
    require_privileged();
    let _db = MariaDb::create(
        "hoop_vce",
        "CREATE TABLE people (id INT PRIMARY KEY, ssn VARCHAR(20));
         INSERT INTO people VALUES (1, '123-45-6789'), (2, '987-65-4321');
         CREATE TABLE other (id INT);
         INSERT INTO other VALUES (1), (2);",
    );
    let cfg = TestConfig::new(
        &[3306],
        "policy:\n  mask:\n    - columns: [people.ssn]\n      strategy: partial\n      keep_last: 4\n",
    );
    let script = MY_PRELUDE.to_owned()
        + r"
out = {'first': run('SELECT id FROM other ORDER BY id')}
# Another session (the unix socket, which hoop does not intercept).
subprocess.run(['mariadb', '-uroot', 'hoop_vce', '-e',
    'CREATE VIEW v_late AS SELECT id, ssn AS s FROM people; CREATE VIEW v_late2 AS SELECT id, ssn FROM people'], check=True)
out['late'] = run('SELECT s FROM v_late ORDER BY id')
out['late_qualified'] = run('SELECT ssn FROM hoop_vce.v_late2 ORDER BY id')
out['copy'] = run('CREATE TABLE copied AS SELECT s FROM v_late')
# Temporary tables are not in the catalog: read as usual, again and again.
out['temp'] = run('CREATE TEMPORARY TABLE tt AS SELECT id FROM other')
out['temp_reads'] = [run('SELECT count(*) FROM tt') for _ in range(3)]
print(json.dumps(out))
";
    let (v, all) = python_through_hoop(&cfg, &script);
    assert_eq!(v["first"].to_string(), "[[1],[2]]", "{all}");
    assert_eq!(
        v["late"].to_string(),
        r#"[["***-**-6789"],["***-**-4321"]]"#,
        "{all}"
    );
    assert_eq!(
        v["late_qualified"].to_string(),
        r#"[["***-**-6789"],["***-**-4321"]]"#,
        "{all}"
    );
    // Copying the new view is copying masked data.
    assert_eq!(v["copy"]["error"], 1227, "{all}");
    assert_eq!(v["temp_reads"].to_string(), "[[[2]],[[2]],[[2]]]", "{all}");
    assert!(!all.contains("123-45-6789"), "{all}");
    // The bare server: the view hands out the values.
    let bare = mariadb_direct(Some("hoop_vce"), "SELECT s FROM v_late ORDER BY id");
    assert!(bare.contains("123-45-6789"), "{bare}");
}

/// MySQL names carry no identity: a table another session drops and
/// recreates as a view under the same name, or a view it replaces, looks
/// unchanged to a catalog loaded before (the view's columns name the view
/// as their `org_table`, as a table's name the table). The catalog is
/// loaded again before a statement naming relations once it is 10 s old.
#[test]
fn mysql_relations_redefined_by_another_session_are_masked_once_the_catalog_ages() {
    require_privileged();
    let _db = MariaDb::create(
        "hoop_vce",
        "CREATE TABLE people (id INT PRIMARY KEY, ssn VARCHAR(20));
         INSERT INTO people VALUES (1, '123-45-6789');
         CREATE TABLE was_table (id INT, x VARCHAR(20));
         INSERT INTO was_table VALUES (1, 'harmless');
         CREATE VIEW was_view AS SELECT id, x FROM was_table;",
    );
    let cfg = TestConfig::new(
        &[3306],
        "policy:\n  mask:\n    - columns: [people.ssn]\n      strategy: partial\n      keep_last: 4\n",
    );
    let script = MY_PRELUDE.to_owned()
        + r"
out = {'before': [run('SELECT x FROM was_table'), run('SELECT x FROM was_view')]}
# Another session (the unix socket, which hoop does not intercept).
subprocess.run(['mariadb', '-uroot', 'hoop_vce', '-e',
    'CREATE OR REPLACE VIEW was_view AS SELECT id, ssn AS x FROM people; '
    'DROP TABLE was_table; CREATE VIEW was_table AS SELECT id, ssn AS x FROM people'], check=True)
time.sleep(11)
out['after'] = [run('SELECT x FROM was_table'), run('SELECT x FROM was_view')]
out['copy'] = run('CREATE TABLE copied AS SELECT x FROM was_table')
print(json.dumps(out))
";
    let (v, all) = python_through_hoop(&cfg, &script);
    assert_eq!(
        v["before"].to_string(),
        r#"[[["harmless"]],[["harmless"]]]"#,
        "{all}"
    );
    assert_eq!(
        v["after"].to_string(),
        r#"[[["***-**-6789"]],[["***-**-6789"]]]"#,
        "{all}"
    );
    // Copying the redefined relation is copying masked data.
    assert_eq!(v["copy"]["error"], 1227, "{all}");
    assert!(!all.contains("123-45-6789"), "{all}");
    // The bare server: both hand out the values.
    let bare = mariadb_direct(
        Some("hoop_vce"),
        "SELECT x FROM was_table; SELECT x FROM was_view",
    );
    assert_eq!(bare.matches("123-45-6789").count(), 2, "{bare}");
}
