//! Issue 23, class 3: inference through predicates. Masking hides a value
//! in results, but filters, joins, groupings and sort keys still answer
//! questions about it ("which rows have an SSN starting with 123?"). Every
//! attack below prints an answer on the bare database; through hoop, with
//! `predicates: deny` on the mask rule, it is refused before it reaches the
//! server (simple, extended, COPY, cursors). The look-alikes filter and sort
//! by other columns, or read the masked column without filtering by it.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, Tally, attacks, errored, lookalikes, report},
    hoop_bin, hoop_exec_spawn, require_privileged, text, wait_output,
};
use sha2::{Digest as _, Sha256};

const SECRETS: [&str; 4] = [
    "123-45-6789",
    "987-65-4321",
    "ada@example.com",
    "bob@example.com",
];

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [people.ssn]
      predicates: deny
    - name: email
      columns: [people.email]
      predicates: deny
    - name: phone
      columns: [people.phone]
";

const FIXTURE: &str =
    "CREATE TABLE {t}.people (id int PRIMARY KEY, name text, ssn text, email text, phone text);
INSERT INTO {t}.people VALUES
  (1, 'Ada', '123-45-6789', 'ada@example.com', '+15550001'),
  (2, 'Bob', '987-65-4321', 'bob@example.com', '+15550002');
CREATE TABLE {t}.guesses (g text);
INSERT INTO {t}.guesses VALUES ('123-45-6789');
CREATE TABLE {t}.orders (id int, person_id int);
INSERT INTO {t}.orders VALUES (10, 1), (11, 2);
CREATE VIEW {t}.pv AS SELECT id, ssn AS s FROM {t}.people;";

fn answered(marker: &'static str) -> impl Fn(&Db, &str, &str) -> bool {
    move |_, _, out| out.contains(marker)
}

fn inferred(name: &'static str, sql: &str) -> Case {
    Case::new(name, FIXTURE, sql, answered("INFERRED"))
}

fn attack_corpus() -> Vec<Case> {
    vec![
        inferred(
            "WHERE LIKE a prefix",
            "SELECT 'INFERRED' FROM {t}.people WHERE ssn LIKE '123%';",
        ),
        inferred(
            "WHERE on an expression of the column",
            "SELECT 'INFERRED' FROM {t}.people WHERE substr(ssn, 1, 3) = '123';",
        ),
        inferred(
            "WHERE BETWEEN",
            "SELECT 'INFERRED' FROM {t}.people WHERE ssn BETWEEN '123' AND '124';",
        ),
        inferred(
            "a count under a range",
            "SELECT 'INFERRED-' || count(*) FROM {t}.people WHERE ssn > '5';",
        ),
        Case::new(
            "ORDER BY the column",
            FIXTURE,
            "SELECT name FROM {t}.people ORDER BY ssn LIMIT 1;",
            answered("Ada"),
        ),
        inferred(
            "GROUP BY and HAVING on a prefix",
            "SELECT 'INFERRED-' || count(*) FROM {t}.people GROUP BY left(ssn, 3) HAVING left(ssn, 3) = '123';",
        ),
        inferred(
            "JOIN ON the column",
            "SELECT 'INFERRED' FROM {t}.people p JOIN {t}.guesses g ON p.ssn = g.g;",
        ),
        inferred(
            "JOIN USING the column",
            "SELECT 'INFERRED' FROM {t}.people JOIN (SELECT g AS ssn FROM {t}.guesses) x USING (ssn);",
        ),
        inferred(
            "EXISTS subquery",
            "SELECT 'INFERRED' WHERE EXISTS (SELECT 1 FROM {t}.people WHERE ssn = '123-45-6789');",
        ),
        inferred(
            "IN a subquery of the column",
            "SELECT 'INFERRED' FROM {t}.guesses WHERE g IN (SELECT ssn FROM {t}.people);",
        ),
        inferred(
            "a scalar subquery in the select list",
            "SELECT (SELECT 'INFERRED' FROM {t}.people WHERE ssn LIKE '12%');",
        ),
        inferred(
            "in a CTE",
            "WITH x AS (SELECT id FROM {t}.people WHERE ssn LIKE '123%') SELECT 'INFERRED' FROM x;",
        ),
        inferred(
            "through a derived table's star",
            "SELECT 'INFERRED' FROM (SELECT * FROM {t}.people) s WHERE s.ssn LIKE '123%';",
        ),
        Case::new(
            "ORDER BY an output alias",
            FIXTURE,
            "SELECT ssn AS s, name FROM {t}.people ORDER BY s LIMIT 1;",
            answered("Ada"),
        ),
        Case::new(
            "ORDER BY an ordinal",
            FIXTURE,
            "SELECT name, ssn FROM {t}.people ORDER BY 2 LIMIT 1;",
            answered("Ada"),
        ),
        Case::new(
            "DISTINCT ON the column",
            FIXTURE,
            "SELECT DISTINCT ON (ssn) name FROM {t}.people ORDER BY ssn LIMIT 1;",
            answered("Ada"),
        ),
        Case::new(
            "UPDATE's row count",
            FIXTURE,
            "UPDATE {t}.people SET name = name WHERE ssn LIKE '123%';",
            answered("UPDATE 1"),
        ),
        Case::new(
            "DELETE's row count",
            FIXTURE,
            "DELETE FROM {t}.people WHERE ssn = '123-45-6789';",
            answered("DELETE 1"),
        ),
        inferred(
            "HAVING on an aggregate of the column",
            "SELECT 'INFERRED' FROM {t}.people GROUP BY id HAVING max(ssn) LIKE '123%';",
        ),
        inferred(
            "COPY of a filtered query",
            "COPY (SELECT 'INFERRED' FROM {t}.people WHERE ssn LIKE '123%') TO STDOUT;",
        ),
        inferred(
            "a cursor over a filtered query",
            "BEGIN;\nDECLARE c CURSOR FOR SELECT 'INFERRED' FROM {t}.people WHERE ssn LIKE '123%';\nFETCH ALL FROM c;\nCOMMIT;",
        ),
        Case::new(
            "EXPLAIN ANALYZE's actual row count",
            FIXTURE,
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM {t}.people WHERE ssn = '123-45-6789';",
            answered("actual rows=1"),
        ),
        inferred(
            "through a view that renames the column",
            "SELECT 'INFERRED' FROM {t}.pv WHERE s LIKE '123%';",
        ),
        inferred(
            "a hash of the column",
            "SELECT 'INFERRED' FROM {t}.people WHERE md5(ssn) = md5('123-45-6789');",
        ),
        inferred(
            "the whole row as text",
            "SELECT 'INFERRED' FROM {t}.people p WHERE row_to_json(p)::text LIKE '%123-45%';",
        ),
        inferred(
            "a regular expression",
            "SELECT 'INFERRED' FROM {t}.people WHERE ssn ~ '^12';",
        ),
        inferred(
            "another masked column (email)",
            "SELECT 'INFERRED' FROM {t}.people WHERE email LIKE 'ada%';",
        ),
        Case::new(
            "MERGE's row count",
            FIXTURE,
            "MERGE INTO {t}.orders o USING {t}.people p ON o.person_id = p.id AND p.ssn LIKE '123%' WHEN MATCHED THEN UPDATE SET id = o.id;",
            answered("MERGE 1"),
        ),
        Case::new(
            "INSERT … SELECT's row count",
            FIXTURE,
            "INSERT INTO {t}.orders SELECT 99, id FROM {t}.people WHERE ssn LIKE '123%';",
            answered("INSERT 0 1"),
        ),
        inferred(
            "a prepared SQL statement",
            "PREPARE p AS SELECT 'INFERRED' FROM {t}.people WHERE ssn = $1;\nEXECUTE p('123-45-6789');",
        ),
        // Held by masking itself: the answer is computed from the column.
        inferred(
            "CASE in the select list",
            "SELECT CASE WHEN ssn LIKE '1%' THEN 'INFERRED' END FROM {t}.people ORDER BY id LIMIT 1;",
        ),
        inferred(
            "a window partitioned by the column",
            "SELECT 'INFERRED-' || count(*) OVER (PARTITION BY left(ssn, 1)) FROM {t}.people LIMIT 1;",
        ),
    ]
}

fn lookalike_corpus() -> Vec<Case> {
    fn shows(expected: &'static str) -> impl Fn(&Db, &str, &str) -> bool {
        move |_, _, out| {
            out.contains(expected) && !errored(out) && !SECRETS.iter().any(|s| out.contains(s))
        }
    }
    vec![
        Case::new(
            "reading the masked column by key",
            FIXTURE,
            "SELECT ssn FROM {t}.people WHERE id = 1;",
            shows("[REDACTED"),
        ),
        Case::new(
            "other columns, sorted",
            FIXTURE,
            "SELECT id, name FROM {t}.people ORDER BY id;",
            shows("1|Ada"),
        ),
        Case::new(
            "a count",
            FIXTURE,
            "SELECT count(*) FROM {t}.people;",
            shows("2"),
        ),
        Case::new(
            "filtering by a masked column whose rule allows predicates",
            FIXTURE,
            "SELECT name FROM {t}.people WHERE phone LIKE '+1555%' ORDER BY id LIMIT 1;",
            shows("Ada"),
        ),
        Case::new(
            "a join on keys",
            FIXTURE,
            "SELECT p.name FROM {t}.people p JOIN {t}.orders o ON o.person_id = p.id ORDER BY o.id LIMIT 1;",
            shows("Ada"),
        ),
        Case::new(
            "GROUP BY another column",
            FIXTURE,
            "SELECT name, count(*) FROM {t}.people GROUP BY name ORDER BY name LIMIT 1;",
            shows("Ada|1"),
        ),
        Case::new(
            "writing the masked column by key",
            FIXTURE,
            "UPDATE {t}.people SET ssn = '000-00-0000' WHERE id = 2;",
            shows("UPDATE 1"),
        ),
        Case::new(
            "inserting a value",
            FIXTURE,
            "INSERT INTO {t}.people (id, name, ssn) VALUES (3, 'Cy', '111-22-3333');",
            shows("INSERT 0 1"),
        ),
        Case::new(
            "an alias named like another column, sorted by the real one",
            FIXTURE,
            "SELECT ssn AS id FROM {t}.people ORDER BY people.id LIMIT 1;",
            shows("[REDACTED"),
        ),
        Case::new(
            "every column, filtered and sorted by others",
            FIXTURE,
            "SELECT * FROM {t}.people WHERE id IN (1, 2) ORDER BY name;",
            shows("Ada|[REDACTED"),
        ),
        Case::new(
            "a delete by key",
            FIXTURE,
            "DELETE FROM {t}.people WHERE id = 99;",
            shows("DELETE 0"),
        ),
        Case::new(
            "LIKE on another column",
            FIXTURE,
            "SELECT name FROM {t}.people WHERE name LIKE 'A%';",
            shows("Ada"),
        ),
        Case::new(
            "a string that names the column",
            "",
            "SELECT 'ssn' AS label WHERE 'ssn' LIKE 's%';",
            shows("ssn"),
        ),
        Case::new(
            "the other masked column, read",
            FIXTURE,
            "SELECT email FROM {t}.people WHERE id = 1;",
            shows("[REDACTED"),
        ),
        Case::new(
            "COPY of a query filtered by other columns",
            FIXTURE,
            "COPY (SELECT id, name FROM {t}.people WHERE id > 0 ORDER BY id) TO STDOUT;",
            shows("1\tAda"),
        ),
        Case::new(
            "an implicit join",
            FIXTURE,
            "SELECT count(*) FROM {t}.people p, {t}.orders o WHERE o.person_id = p.id;",
            shows("2"),
        ),
        Case::new(
            "a cursor sorted by another column",
            FIXTURE,
            "BEGIN;\nDECLARE c CURSOR FOR SELECT name, ssn FROM {t}.people ORDER BY id;\nFETCH ALL FROM c;\nCOMMIT;",
            shows("Ada|[REDACTED"),
        ),
        Case::new(
            "EXPLAIN of a filter on a table without masked columns",
            FIXTURE,
            "EXPLAIN (COSTS OFF) SELECT id FROM {t}.orders WHERE person_id = 1;",
            shows("Seq Scan"),
        ),
    ]
}

fn extended(db: &Db, cfg: &TestConfig) -> (Tally, Tally) {
    let client = env!("CARGO_BIN_EXE_pg-client");
    db.sql(&format!(
        "DROP SCHEMA IF EXISTS fc_x CASCADE; CREATE SCHEMA fc_x; {}",
        FIXTURE.replace("{t}", "fc_x")
    ));
    let mut held = Tally::default();
    for sql in [
        "SELECT 'INFERRED'::text FROM fc_x.people WHERE ssn LIKE '123%'",
        "SELECT name FROM fc_x.people ORDER BY ssn LIMIT 1",
    ] {
        held.tried += 1;
        let direct = Command::new(client)
            .args(["query", sql])
            .env("PGDATABASE", &db.name)
            .output()
            .expect("pg-client");
        let d = text(&direct).0;
        let answered_directly = d.contains("INFERRED") || d.contains("Ada");
        let h = text(&db.hoop(cfg, &[client, "query", sql])).0;
        if answered_directly && !h.contains("INFERRED") && !h.contains("Ada") && h.contains("42501")
        {
            held.ok += 1;
        } else {
            held.failures.push(format!("extended `{sql}`: {d} / {h}"));
        }
    }
    let mut passed = Tally {
        tried: 1,
        ..Tally::default()
    };
    let h = text(&db.hoop(
        cfg,
        &[client, "query", "SELECT name FROM fc_x.people WHERE id = 1"],
    ))
    .0;
    if h.contains("Ada") {
        passed.ok += 1;
    } else {
        passed.failures.push(format!("extended look-alike: {h}"));
    }
    (held, passed)
}

fn merge(into: &mut Tally, other: Tally) {
    into.tried += other.tried;
    into.ok += other.ok;
    into.failures.extend(other.failures);
}

#[test]
fn predicates_over_masked_columns_are_refused_when_the_rule_says_so() {
    require_privileged();
    let db = Db::create("fc_predicates");
    let cfg = TestConfig::new(&[5432], POLICY);
    let mut held = attacks("class 3 predicates", &db, &cfg, &attack_corpus());
    let mut passed = lookalikes("class 3 predicates", &db, &cfg, &lookalike_corpus());
    let (ext_held, ext_passed) = extended(&db, &cfg);
    merge(&mut held, ext_held);
    merge(&mut passed, ext_passed);
    report("class 3 (inference through predicates)", &held, &passed);
}

/// `predicates: hold`: the statement waits for an approver; denied, it
/// never runs; approved, it runs. The default (`allow`) lets it run.
#[test]
fn predicates_hold_waits_for_an_approver_and_allow_is_the_default() {
    require_privileged();
    let db = Db::create("fc_predicates_hold");
    db.sql(&format!(
        "CREATE SCHEMA fc_h; {}",
        FIXTURE.replace("{t}", "fc_h")
    ));
    let token = "fc-approver-token";
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{token_sha256: {}, identity: dba@example.com, groups: [dba]}}\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        ),
    )
    .expect("tokens");
    let cfg = TestConfig::new(
        &[5432],
        "policy:
  mask:
    - name: email
      columns: [people.email]
      predicates: hold
    - name: ssn
      columns: [people.ssn]
",
    );
    let yaml = std::fs::read_to_string(&cfg.path).expect("config").replace(
        "admin:\n",
        &format!("admin:\n  tokens_file: {}\n", tokens.display()),
    );
    std::fs::write(&cfg.path, yaml).expect("config");
    let holds = |args: &[&str]| {
        Command::new(hoop_bin())
            .arg("holds")
            .args(args)
            .arg("--admin")
            .arg(cfg.admin_url())
            .env("HOOP_TOKEN", token)
            .output()
            .expect("hoop holds")
    };
    let pending = || -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = holds(&["list", "--json"]);
            if let Ok(list) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                && let Some(h) = list
                    .as_array()
                    .and_then(|l| l.iter().find(|h| h["state"] == "pending").cloned())
            {
                assert!(
                    h["message"].as_str().unwrap_or_default().contains("email"),
                    "{h}"
                );
                return h["id"].as_str().unwrap_or_default().to_owned();
            }
            assert!(Instant::now() < deadline, "no pending hold appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let psql = |sql: &str| {
        hoop_exec_spawn(
            &cfg.path,
            &[
                "sh",
                "-c",
                &format!(
                    "psql -X -h 127.0.0.1 -U postgres -d {} -c \"{sql}\" 2>&1",
                    db.name
                ),
            ],
        )
    };
    let sql = "SELECT 'INFERRED' FROM fc_h.people WHERE email LIKE 'ada%'";
    let child = psql(sql);
    let id = pending();
    assert!(
        holds(&["deny", &id, "--reason", "no fishing"])
            .status
            .success()
    );
    let (out, _) = text(&wait_output(child, Duration::from_mins(1)));
    assert!(
        !out.contains("INFERRED") && out.contains("no fishing"),
        "{out}"
    );
    let child = psql(sql);
    let id = pending();
    assert!(holds(&["approve", &id]).status.success());
    let (out, _) = text(&wait_output(child, Duration::from_mins(1)));
    assert!(out.contains("INFERRED"), "approved, it runs: {out}");
    // ssn's rule says nothing about predicates: allowed (the default).
    let (out, _) = text(&wait_output(
        psql("SELECT 'ALLOWED' FROM fc_h.people WHERE ssn LIKE '123%'"),
        Duration::from_mins(1),
    ));
    assert!(out.contains("ALLOWED"), "{out}");
}
