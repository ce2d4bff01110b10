//! Issue 27, class 7: session state follows the server, not the client.
//! PostgreSQL's prepared statements and cursors (portals) are one
//! namespace each, shared by SQL and the extended protocol. Each attack
//! makes a name with one and uses it with the other, or gets hoop to
//! believe a name means something the server rejected, and reads raw
//! values on the bare database; through hoop the rows come back masked (or
//! the session is refused). The look-alikes use the same moves on columns
//! no rule masks, and must see their values unchanged.
//!
//! Driven by `pg-wire` (tests/src/bin/pg-wire.rs), a raw wire client: no
//! driver sends a Bind or Execute naming an object it did not make itself.

use std::process::Command;

use hoop_tests::{
    TestConfig,
    failclosed::{Db, Tally, report},
    require_privileged, text,
};

const SECRETS: [&str; 2] = ["123-45-6789", "987-65-4321"];

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [ssn]
      strategy: redact
";

const FIXTURE: &str = "CREATE TABLE people (id int, name text, ssn text);
INSERT INTO people VALUES (1, 'Ada', '123-45-6789'), (2, 'Bob', '987-65-4321');";

/// A query reading the masked column through an expression, so no column
/// of its result names `people.ssn` (only lineage can tell).
const SECRET: &str = "SELECT ssn || '' AS v FROM people ORDER BY id";
/// The same shape over a column no rule masks.
const PLAIN: &str = "SELECT name || '' AS v FROM people ORDER BY id";

struct Case {
    name: &'static str,
    steps: Vec<String>,
}

fn case(name: &'static str, steps: &[&str]) -> Case {
    Case {
        name,
        steps: steps
            .iter()
            .map(|s| s.replace("{SECRET}", SECRET).replace("{PLAIN}", PLAIN))
            .collect(),
    }
}

fn attacks() -> Vec<Case> {
    let long = "x".repeat(70);
    let long_prepare = format!("Q:PREPARE {long} AS {{SECRET}}");
    let long_bind = format!("X:{}", &long[..63]);
    vec![
        case(
            "SQL PREPARE, then protocol Bind and Execute",
            &["Q:PREPARE p AS {SECRET}", "X:p"],
        ),
        case(
            "SQL PREPARE with parameter types, then protocol Bind and Execute",
            &[
                "Q:PREPARE p (int, numeric(10,2)) AS SELECT ssn || '' AS v FROM people WHERE $1 IS NULL OR $2 IS NULL OR true",
                "X:p|1|2.5",
            ],
        ),
        case(
            "SQL PREPARE of a double-quoted mixed-case name, bound by its exact name",
            &["Q:PREPARE \"Sneaky P\" AS {SECRET}", "X:Sneaky P"],
        ),
        case(
            "SQL PREPARE of a name over 63 bytes, bound by the truncated name",
            &[&long_prepare, &long_bind],
        ),
        case(
            "two PREPAREs in one simple query, the second bound",
            &["Q:PREPARE a AS SELECT 1; PREPARE b AS {SECRET}", "X:b"],
        ),
        case(
            "SQL DECLARE, then protocol Execute of the cursor",
            &[
                "Q:BEGIN",
                "Q:DECLARE c CURSOR FOR {SECRET}",
                "E:c",
                "Q:COMMIT",
            ],
        ),
        case(
            "DECLARE … WITH HOLD, committed, then protocol Execute outside any transaction",
            &[
                "Q:BEGIN",
                "Q:DECLARE c CURSOR WITH HOLD FOR {SECRET}",
                "Q:COMMIT",
                "E:c",
            ],
        ),
        case(
            "a cursor re-declared as harmless (rejected: it exists), then FETCH",
            &[
                "Q:BEGIN",
                "Q:DECLARE c CURSOR FOR {SECRET}",
                "Q:DECLARE c CURSOR FOR SELECT 'harmless'::text AS v",
                "Q:ROLLBACK",
                "Q:BEGIN",
                "Q:DECLARE c CURSOR FOR {SECRET}",
                "Q:SAVEPOINT s",
                "Q:DECLARE c CURSOR FOR SELECT 'harmless'::text AS v",
                "Q:ROLLBACK TO s",
                "Q:FETCH ALL c",
                "Q:COMMIT",
            ],
        ),
        case(
            "a statement re-prepared by protocol Parse (rejected: it exists), then bound",
            &[
                "Q:PREPARE q AS {SECRET}",
                "P:q:SELECT 'harmless'::text AS v",
                "X:q",
            ],
        ),
        case(
            "CLOSE and re-DECLARE under the same name, then protocol Execute",
            &[
                "Q:BEGIN",
                "Q:DECLARE c CURSOR FOR {PLAIN}",
                "E:c",
                "Q:CLOSE c",
                "Q:DECLARE c CURSOR FOR {SECRET}",
                "E:c",
                "Q:COMMIT",
            ],
        ),
        case(
            "DEALLOCATE and re-PREPARE under the same name, then SQL EXECUTE",
            &[
                "Q:PREPARE q AS {PLAIN}",
                "Q:EXECUTE q",
                "Q:DEALLOCATE q",
                "Q:PREPARE q AS {SECRET}",
                "Q:EXECUTE q",
            ],
        ),
        case(
            "DISCARD ALL, then the name prepared again and bound",
            &[
                "Q:PREPARE q AS {PLAIN}",
                "X:q",
                "Q:DISCARD ALL",
                "Q:PREPARE q AS {SECRET}",
                "X:q",
            ],
        ),
        case(
            "protocol Parse of a named statement, then SQL EXECUTE",
            &["P:s:{SECRET}", "Q:EXECUTE s"],
        ),
        case(
            "protocol Bind of a named portal, then SQL FETCH from it",
            &[
                "Q:BEGIN",
                "P:s:{SECRET}",
                "B:pt:s",
                "Q:FETCH ALL FROM pt",
                "Q:COMMIT",
            ],
        ),
    ]
}

fn lookalikes() -> Vec<Case> {
    vec![
        case(
            "SQL PREPARE of an unmasked column, protocol Bind and Execute",
            &["Q:PREPARE p AS {PLAIN}", "X:p"],
        ),
        case(
            "SQL DECLARE of an unmasked column, protocol Execute",
            &[
                "Q:BEGIN",
                "Q:DECLARE c CURSOR FOR {PLAIN}",
                "E:c",
                "Q:COMMIT",
            ],
        ),
        case(
            "a rejected re-DECLARE keeps the first (unmasked) meaning",
            &[
                "Q:BEGIN",
                "Q:DECLARE c CURSOR FOR {PLAIN}",
                "Q:DECLARE c CURSOR FOR {SECRET}",
                "Q:ROLLBACK",
                "Q:BEGIN",
                "Q:DECLARE c CURSOR FOR {PLAIN}",
                "Q:SAVEPOINT s",
                "Q:DECLARE c CURSOR FOR {SECRET}",
                "Q:ROLLBACK TO s",
                "Q:FETCH ALL c",
                "Q:COMMIT",
            ],
        ),
        case(
            "a rejected re-PREPARE keeps the first (unmasked) meaning",
            &[
                "Q:PREPARE q AS {PLAIN}",
                "Q:PREPARE q AS {SECRET}",
                "Q:EXECUTE q",
                "X:q",
            ],
        ),
        case(
            "WITH HOLD cursor of an unmasked column after COMMIT",
            &[
                "Q:BEGIN",
                "Q:DECLARE c BINARY CURSOR WITH HOLD FOR SELECT 1 AS one",
                "Q:CLOSE c",
                "Q:DECLARE c CURSOR WITH HOLD FOR {PLAIN}",
                "Q:COMMIT",
                "E:c",
            ],
        ),
        case(
            "DEALLOCATE ALL, then an unmasked statement prepared and bound",
            &[
                "Q:PREPARE a AS {SECRET}",
                "Q:DEALLOCATE ALL",
                "Q:PREPARE a AS {PLAIN}",
                "X:a",
            ],
        ),
        case(
            "protocol Parse of an unmasked statement, SQL EXECUTE",
            &["P:s:{PLAIN}", "Q:EXECUTE s"],
        ),
    ]
}

fn run_direct(db: &Db, steps: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pg-wire"))
        .args(steps)
        .env("PGDATABASE", &db.name)
        .output()
        .expect("run pg-wire");
    text(&out).0
}

fn run_hoop(db: &Db, cfg: &TestConfig, steps: &[String]) -> String {
    let mut args = vec![env!("CARGO_BIN_EXE_pg-wire")];
    args.extend(steps.iter().map(String::as_str));
    let (stdout, stderr) = text(&db.hoop(cfg, &args));
    format!("{stdout}\n--- hoop\n{stderr}")
}

fn leaked(out: &str) -> bool {
    let client = out.split("--- hoop").next().unwrap_or_default();
    SECRETS.iter().any(|s| client.contains(s))
}

#[test]
fn names_mean_what_the_server_confirmed() {
    require_privileged();
    let db = Db::create("hoop_fc2_session_state");
    db.sql(FIXTURE);
    let cfg = TestConfig::new(&[5432], POLICY);
    let mut held = Tally::default();
    for c in attacks() {
        held.tried += 1;
        let direct = run_direct(&db, &c.steps);
        if !leaked(&direct) {
            held.failures.push(format!(
                "attack `{}` shows no secret on the bare database, so it proves nothing:\n{direct}",
                c.name
            ));
            continue;
        }
        let through = run_hoop(&db, &cfg, &c.steps);
        if leaked(&through) {
            held.failures
                .push(format!("attack `{}` got through hoop:\n{through}", c.name));
        } else {
            held.ok += 1;
        }
    }
    let mut passed = Tally::default();
    for c in lookalikes() {
        passed.tried += 1;
        let through = run_hoop(&db, &cfg, &c.steps);
        let client = through.split("--- hoop").next().unwrap_or_default();
        // Both names, unmasked, and no error from hoop or the server other
        // than the rejections the case provokes on purpose.
        let unexpected_error = client
            .lines()
            .any(|l| l.contains("\"error\"") && !l.contains("42P03") && !l.contains("42P05"));
        if client.contains("\"Ada\"") && client.contains("\"Bob\"") && !unexpected_error {
            passed.ok += 1;
        } else {
            passed.failures.push(format!(
                "look-alike `{}` did not work through hoop:\n{through}",
                c.name
            ));
        }
    }
    report("fc2_session_state", &held, &passed);
}
