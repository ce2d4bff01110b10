//! Issue 3: masking that SQL tricks cannot dodge, and SQL-aware guardrails,
//! through `hoop exec` with real clients against the real PostgreSQL.

use std::{process::Command, time::Duration};

use hoop_tests::{
    TestConfig, hoop_exec, metric, psql_args, psql_direct, require_privileged, scrape_snippet,
    scraped, text,
};

const T: Duration = Duration::from_secs(90);

/// Values that must never reach a client or a log.
const RAW: [&str; 7] = [
    "123-45-6789",
    "987-65-4321",
    "123456789",
    "ada@example.com",
    "bob@corp.example",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
];

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [customers.ssn]
      strategy: partial
      keep_last: 4
    - name: contact
      detect: [email, credit_card]
      strategy: redact
  deny:
    - name: no-ddl
      statements: [drop, truncate]
      message: destructive DDL is not allowed here
    - name: no-unbounded-writes
      statements: [delete, update]
      without_where: true
      message: UPDATE and DELETE need a WHERE clause
";

fn setup() {
    psql_direct(
        "DROP TABLE IF EXISTS customers CASCADE; DROP TABLE IF EXISTS hoop_probe;
         CREATE TABLE customers (id int PRIMARY KEY, name text, ssn text UNIQUE, email text, card text);
         INSERT INTO customers VALUES
           (1, 'Ada', '123-45-6789', 'ada@example.com', '4111 1111 1111 1111'),
           (2, 'Bob', '987-65-4321', 'bob@corp.example', '5500-0000-0000-0004');
         CREATE TABLE hoop_probe (n int);",
    );
}

fn assert_no_raw(what: &str, haystack: &str) {
    for raw in RAW {
        assert!(
            !haystack.contains(raw),
            "{what} leaked {raw:?}:\n{haystack}"
        );
    }
}

/// Runs `sql` as a script file through `psql` (with `psql_flags`) under
/// `hoop exec`; psql's output, errors included. psql itself must succeed.
fn psql_script(cfg: &TestConfig, sql: &str, psql_flags: &str) -> String {
    let script = cfg.dir.path().join("script.sql");
    std::fs::write(&script, sql).expect("write");
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "psql -X -h 127.0.0.1 -U postgres -d test {psql_flags} -f {} 2>&1",
                script.display()
            ),
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

fn pg_client() -> String {
    env!("CARGO_BIN_EXE_pg-client").to_owned()
}

#[test]
fn every_form_of_select_copy_and_cursor_is_masked_for_psql() {
    require_privileged();
    setup();
    let cfg = TestConfig::new(&[5432], POLICY);
    let script = cfg.dir.path().join("forms.sql");
    std::fs::write(
        &script,
        r"SELECT ssn FROM customers ORDER BY id;
SELECT ssn AS x FROM customers;
SELECT * FROM customers;
SELECT c.ssn FROM customers c;
SELECT upper(ssn), ssn || '', substr(ssn, 1, 3), lower(ssn)::varchar FROM customers;
SELECT replace(ssn, '-', '') FROM customers;
SELECT row_to_json(c) FROM customers c;
SELECT c::text FROM customers c;
SELECT array_agg(ssn) FROM customers;
SELECT json_agg(c) FROM customers c;
SELECT CASE WHEN id > 0 THEN ssn END FROM customers;
SELECT ssn FROM customers UNION SELECT 'x';
WITH t AS (SELECT ssn AS s FROM customers) SELECT s FROM t;
SELECT * FROM (SELECT ssn FROM customers) sub;
SELECT name || ' <' || email || '> ' || card FROM customers;
COPY customers TO STDOUT;
COPY customers TO STDOUT WITH (FORMAT csv, HEADER);
COPY (SELECT id, ssn FROM customers) TO STDOUT;
\copy customers to stdout
BEGIN;
DECLARE cur CURSOR FOR SELECT * FROM customers;
FETCH ALL FROM cur;
CLOSE cur;
COMMIT;
INSERT INTO customers VALUES (3, 'Eve', '123-45-6789', 'eve@example.com', '');
SELECT 'still usable' AS after_error;
",
    )
    .expect("write script");
    let psql = format!(
        "psql -X -h 127.0.0.1 -U postgres -d test -f {}",
        script.display()
    );
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!("{psql} 2>&1; {}", scrape_snippet(&cfg.admin_url())),
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_no_raw("psql output", &stdout);
    assert_no_raw("hoop's log", &stderr);
    // The masked forms are there (partial keeps the last four and the dashes).
    assert!(stdout.contains("***-**-6789"), "{stdout}");
    assert!(stdout.contains("[REDACTED"), "{stdout}");
    // The unique violation is reported, its words withheld: the INSERT
    // names a table with a masked column (docs/masking.md, server texts).
    assert!(
        stdout.contains("ERROR:  [REDACTED:server_text]"),
        "the unique violation is reported: {stdout}"
    );
    assert!(stdout.contains("still usable"), "{stdout}");
    let m = scraped(&stdout);
    assert!(
        metric(&m, "hoop_masked_values_total{rule=\"ssn\"}").is_some_and(|n| n >= 10.0),
        "{m}"
    );
    assert!(
        metric(&m, "hoop_masked_values_total{rule=\"contact\"}").is_some_and(|n| n >= 4.0),
        "{m}"
    );
}

#[test]
fn prepared_statements_with_binary_results_are_masked() {
    require_privileged();
    setup();
    let cfg = TestConfig::new(&[5432], POLICY);
    let out = hoop_exec(
        &cfg.path,
        &[
            &pg_client(),
            "query",
            "SELECT id, ssn, email, card FROM customers ORDER BY id",
            "SELECT upper(ssn) FROM customers",
            "SELECT row_to_json(c)::text FROM customers c",
            "SELECT length(ssn) FROM customers",
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_no_raw("tokio-postgres results", &stdout);
    assert_no_raw("hoop's log", &stderr);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["rows"][0][1], "***-**-6789", "{stdout}");
    assert!(
        lines[0]["rows"][0][2]
            .as_str()
            .is_some_and(|s| s.contains("REDACTED")),
        "{stdout}"
    );
    // An int computed from a masked column cannot be rewritten type-correctly
    // in binary: refused by default, with a clear error.
    assert_eq!(lines[3]["error"]["code"], "42501", "{stdout}");
}

#[test]
fn destructive_statements_are_denied_and_the_session_stays_usable() {
    require_privileged();
    setup();
    let cfg = TestConfig::new(&[5432], POLICY);
    let sql = "DROP TABLE customers;
TRUNCATE customers;
DELETE FROM customers;
UPDATE customers SET name = 'x';
SELECT 'usable after denial' AS ok;
DELETE FROM customers WHERE id = 999;
";
    let stdout = psql_script(&cfg, sql, "-v VERBOSITY=verbose");
    assert_eq!(
        stdout.matches("42501").count(),
        4,
        "four denials with SQLSTATE 42501:\n{stdout}"
    );
    assert!(
        stdout.contains("destructive DDL is not allowed here"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no-ddl") && stdout.contains("no-unbounded-writes"),
        "rule names shown:\n{stdout}"
    );
    assert!(stdout.contains("usable after denial"), "{stdout}");
    assert!(
        stdout.contains("DELETE 0"),
        "a DELETE with WHERE is allowed: {stdout}"
    );
    assert_eq!(
        psql_direct("SELECT count(*) FROM customers").trim(),
        "2",
        "the table and its rows survived"
    );
}

#[test]
fn a_multi_statement_query_with_a_denied_statement_runs_nothing() {
    require_privileged();
    setup();
    let cfg = TestConfig::new(&[5432], POLICY);
    let out = hoop_exec(
        &cfg.path,
        &psql_args(&[
            "-c",
            "INSERT INTO hoop_probe VALUES (1); SELECT 1; DROP TABLE customers",
        ]),
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "psql reports the error: {stdout}");
    assert!(stderr.contains("destructive DDL"), "{stderr}");
    assert_eq!(
        psql_direct("SELECT count(*) FROM hoop_probe").trim(),
        "0",
        "the INSERT before the DROP must not run"
    );
    assert_eq!(psql_direct("SELECT count(*) FROM customers").trim(), "2");
}

#[test]
fn a_denial_aborts_the_transaction_even_when_the_client_opened_a_cursor_named_like_the_probe() {
    require_privileged();
    setup();
    let cfg = TestConfig::new(&[5432], POLICY);
    // hoop answers a denial by executing a portal it names itself, so that
    // the server aborts the transaction. A cursor the client opened under
    // that name must not run in its place.
    let sql = "BEGIN;
INSERT INTO hoop_probe VALUES (7);
DECLARE \"hoop: statement refused by policy\" CURSOR FOR SELECT 'cursor ran';
DROP TABLE customers;
COMMIT;
SELECT 'usable after' AS ok;
BEGIN;
SELECT 1/0;
DROP TABLE customers;
ROLLBACK;
";
    let stdout = psql_script(&cfg, sql, "");
    // The second denial comes in a transaction that has already failed:
    // the probe's Close is accepted there, and the client still sees the
    // denial rather than "current transaction is aborted".
    assert_eq!(
        stdout.matches("destructive DDL").count(),
        2,
        "both denials reach the client:\n{stdout}"
    );
    assert!(!stdout.contains("cursor ran"), "{stdout}");
    assert!(
        stdout.contains("ROLLBACK"),
        "the COMMIT after the denial rolls back:\n{stdout}"
    );
    assert!(stdout.contains("usable after"), "{stdout}");
    assert_eq!(
        psql_direct("SELECT count(*) FROM hoop_probe").trim(),
        "0",
        "the INSERT before the denial must not be committed"
    );
}

#[test]
fn denial_through_the_extended_protocol_and_unparsed_sql() {
    require_privileged();
    setup();
    let cfg = TestConfig::new(&[5432], POLICY);
    let out = hoop_exec(
        &cfg.path,
        &[
            &pg_client(),
            "execute",
            "DROP TABLE customers",
            "TRUNCATE customers",
            "FOO BAR BAZ",
            "SELECT 1",
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["error"]["code"], "42501", "{stdout}");
    assert_eq!(lines[1]["error"]["code"], "42501", "{stdout}");
    // PostgreSQL would say 42601 (syntax error); hoop refuses first.
    assert_eq!(
        lines[2]["error"]["code"], "42501",
        "unparsed SQL is denied by default: {stdout}"
    );
    assert_eq!(lines[3]["affected"], 1, "{stdout}");
    assert_eq!(psql_direct("SELECT count(*) FROM customers").trim(), "2");
}

#[test]
fn reload_changes_decisions_on_a_live_connection_and_a_broken_file_keeps_the_old_policy() {
    require_privileged();
    setup();
    let cfg = TestConfig::new(&[5432], POLICY);
    let go = cfg.dir.path().join("go");
    let go2 = cfg.dir.path().join("go2");
    let original = std::fs::read_to_string(&cfg.path).expect("read");
    let tightened = original.replace(
        "  deny:\n",
        "  deny:\n    - name: no-deletes-on-customers\n      statements: [delete]\n      tables: [customers]\n      message: no deletes today\n",
    );
    let cfg_path = cfg.path.clone();
    let (go_c, go2_c) = (go.clone(), go2.clone());
    let editor = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        std::fs::write(&cfg_path, tightened).expect("rewrite config");
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(&go_c, "").expect("go");
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&cfg_path, "policy: [this is: not valid").expect("break config");
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(&go2_c, "").expect("go2");
    });
    let script = format!(
        "{pc} again-after 'DELETE FROM customers WHERE id = 999' {go} && \
         {pc} again-after 'DELETE FROM customers WHERE id = 998' {go2} && {scrape}",
        pc = pg_client(),
        go = go.display(),
        go2 = go2.display(),
        scrape = scrape_snippet(&cfg.admin_url())
    );
    let out = hoop_exec(&cfg.path, &["sh", "-c", &script], T);
    editor.join().expect("editor");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // connection 1: allowed, (reload), denied on the same connection.
    assert!(results[0].get("rows").is_some(), "{stdout}");
    assert_eq!(results[2]["error"]["code"], "42501", "{stdout}");
    assert!(
        results[2]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no deletes today")),
        "{stdout}"
    );
    // connection 2, after the broken edit: the last good policy still denies.
    assert_eq!(results[3]["error"]["code"], "42501", "{stdout}");
    assert_eq!(results[5]["error"]["code"], "42501", "{stdout}");
    let m = scraped(&stdout);
    assert_eq!(
        metric(&m, "hoop_policy_reload_errors_total"),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(&m, "hoop_policy_reloads_total").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert!(
        stderr.contains("hoop.yaml"),
        "the reload error names the file: {stderr}"
    );
}

#[test]
fn binary_copy_of_a_masked_column_is_masked_never_silent_or_raw() {
    require_privileged();
    setup();
    let cfg = TestConfig::new(&[5432], POLICY);
    // Directly, the binary COPY carries the raw values: the attack is real.
    let direct = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-c",
        ])
        .arg("COPY (SELECT id, ssn FROM customers ORDER BY id) TO STDOUT (FORMAT binary)")
        .output()
        .expect("psql");
    assert!(
        String::from_utf8_lossy(&direct.stdout).contains("123-45-6789"),
        "the bare database sends the raw value"
    );
    // Through hoop: the text field is masked in binary (hoop learns the
    // query's types from the server), every row is there, and psql succeeds.
    let copied = cfg.dir.path().join("masked.bin");
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "psql -X -h 127.0.0.1 -U postgres -d test -c \
                 'COPY (SELECT id, ssn FROM customers ORDER BY id) TO STDOUT (FORMAT binary)' > {}",
                copied.display()
            ),
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let masked = std::fs::read(&copied).expect("copied");
    let masked_text = String::from_utf8_lossy(&masked);
    assert_no_raw("binary COPY", &masked_text);
    assert!(masked_text.contains("***-**-6789"), "{masked_text:?}");
    assert!(masked_text.contains("***-**-4321"), "{masked_text:?}");
    // A masked int in binary cannot be rewritten: an error that says why,
    // never an empty COPY with a success status.
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            "psql -X -h 127.0.0.1 -U postgres -d test -c \
             'COPY (SELECT id, length(ssn) FROM customers ORDER BY id) TO STDOUT (FORMAT binary)' 2>&1; \
             echo \"psql exit $?\"",
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("hoop cannot mask this result")
            && stdout.contains("cannot be masked in binary format"),
        "{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("psql exit 0"), "{stdout}");
    // Binary COPY of columns nothing masks still works, byte for byte.
    let copied = cfg.dir.path().join("clean.bin");
    let clean = "COPY (SELECT id, name FROM customers ORDER BY id) TO STDOUT (FORMAT binary)";
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "psql -X -h 127.0.0.1 -U postgres -d test -c '{clean}' > {}",
                copied.display()
            ),
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let direct = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-c",
            clean,
        ])
        .output()
        .expect("psql");
    let through_hoop = std::fs::read(&copied).expect("copied");
    assert!(!through_hoop.is_empty());
    assert_eq!(through_hoop, direct.stdout);
}
