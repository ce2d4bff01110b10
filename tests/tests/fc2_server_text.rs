//! Issue 27, class 1: error and notice text in any shape. The server quotes
//! the values it works on in its messages, details, context and hints, in
//! more shapes than any list holds. Each attack makes the server say a
//! masked value (or a piece of it) in an error on the bare database; through
//! hoop every text about a statement that reaches a masked column is
//! withheld whole, with the SQLSTATE kept. The look-alikes make the same
//! errors over columns no rule masks, and must see the server's words.

use std::process::Command;

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, attacks, lookalikes, report},
    require_privileged, text,
};

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [ssn]
      strategy: redact
";

const FIXTURE: &str = "CREATE TABLE {t}.people (id int, name text, ssn text);
INSERT INTO {t}.people VALUES (1, 'Ada', '123-45-6789');";

/// Pieces of the secret (or numbers computed from it) an error may show.
const FRAGMENTS: [&str; 5] = ["123-45", "45-6789", "123-13-01", "1114235", "123-4"];

fn leaked(out: &str) -> bool {
    FRAGMENTS.iter().any(|f| out.contains(f))
}

fn attack_corpus() -> Vec<Case> {
    let leak = |_: &Db, _: &str, out: &str| leaked(out);
    let cases: [(&'static str, &str); 14] = [
        (
            "a JSON parse error's DETAIL and CONTEXT",
            "SELECT ssn::json FROM {t}.people;",
        ),
        (
            "regclass: relation \"…\" does not exist",
            "SELECT ssn::regclass FROM {t}.people;",
        ),
        (
            "an unquoted number computed from the value",
            "SELECT chr(substr(ssn, 1, 3)::int + 1114112) FROM {t}.people;",
        ),
        (
            "an unquoted date built from the value",
            "SELECT make_date(substr(ssn, 1, 3)::int, 13, 1) FROM {t}.people;",
        ),
        (
            "time zone \"…\" not recognized",
            "SELECT timezone(ssn, now()) FROM {t}.people;",
        ),
        (
            "unrecognized configuration parameter \"…\"",
            "SELECT current_setting(ssn) FROM {t}.people;",
        ),
        (
            "the masked column only in WHERE",
            "SELECT count(*) FROM {t}.people WHERE ssn::regtype IS NULL;",
        ),
        (
            "a whole row as text in WHERE",
            "SELECT 1 FROM {t}.people p WHERE timezone(p::text, now()) IS NULL;",
        ),
        (
            "a scalar subquery",
            "SELECT (SELECT ssn FROM {t}.people WHERE id = 1)::regclass;",
        ),
        (
            "a CTE renaming the column",
            "WITH s AS (SELECT ssn AS x FROM {t}.people) SELECT x::regrole FROM s;",
        ),
        (
            "an aggregate",
            "SELECT string_agg(ssn, ',')::regclass FROM {t}.people;",
        ),
        (
            "an XML parse error's DETAIL",
            "SELECT xmlparse(document ssn) FROM {t}.people;",
        ),
        (
            "a double-quoted column name",
            "SELECT \"ssn\"::regrole FROM {t}.people;",
        ),
        (
            "a U&-escaped column name",
            "SELECT U&\"\\0073sn\"::regnamespace FROM {t}.people;",
        ),
    ];
    cases
        .into_iter()
        .map(|(name, sql)| Case::new(name, FIXTURE, sql, leak))
        .collect()
}

fn lookalike_corpus() -> Vec<Case> {
    let says = |words: &'static str| {
        move |_: &Db, _: &str, out: &str| out.contains(words) && !out.contains("server_text")
    };
    vec![
        Case::new(
            "division by zero",
            FIXTURE,
            "SELECT 1 / (id - 1) FROM {t}.people;",
            says("division by zero"),
        ),
        Case::new(
            "regclass of an unmasked column",
            FIXTURE,
            "SELECT name::regclass FROM {t}.people;",
            says("relation \"ada\" does not exist"),
        ),
        Case::new(
            "time zone of an unmasked column, in WHERE",
            FIXTURE,
            "SELECT count(*) FROM {t}.people WHERE timezone(name, now()) IS NULL;",
            says("time zone \"Ada\" not recognized"),
        ),
        Case::new(
            "a JSON error over an unmasked column",
            FIXTURE,
            "SELECT name::json FROM {t}.people;",
            says("Token \"Ada\" is invalid"),
        ),
        Case::new(
            "a unique violation in a table without masked columns",
            "CREATE TABLE {t}.tags (id int PRIMARY KEY); INSERT INTO {t}.tags VALUES (7);",
            "INSERT INTO {t}.tags VALUES (7);",
            says("Key (id)=(7) already exists"),
        ),
        Case::new(
            "an unknown column",
            FIXTURE,
            "SELECT nosuch FROM {t}.people;",
            says("column \"nosuch\" does not exist"),
        ),
    ]
}

#[test]
fn texts_about_statements_reaching_masked_columns_are_withheld() {
    require_privileged();
    let db = Db::create("fc2_server_text");
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks("class 1 server text", &db, &cfg, &attack_corpus());
    let passed = lookalikes("class 1 server text", &db, &cfg, &lookalike_corpus());
    report("class 1 (server text)", &held, &passed);
}

/// The extended protocol: an error at Execute is tied to the portal's
/// statement, and keeps its SQLSTATE.
#[test]
fn an_execute_error_is_tied_to_its_statement() {
    require_privileged();
    let db = Db::create("fc2_server_text_ext");
    db.sql(&FIXTURE.replace("{t}", "public"));
    let cfg = TestConfig::new(&[5432], POLICY);
    let steps = [
        "P:s:SELECT ssn::regclass FROM people",
        "X:s",
        "P:t:SELECT name::regclass FROM people",
        "X:t",
    ];
    let direct = Command::new(env!("CARGO_BIN_EXE_pg-wire"))
        .args(steps)
        .env("PGDATABASE", &db.name)
        .output()
        .expect("pg-wire");
    let (direct, _) = text(&direct);
    assert!(
        leaked(&direct),
        "the bare database shows the value:\n{direct}"
    );
    let mut args = vec![env!("CARGO_BIN_EXE_pg-wire")];
    args.extend(steps);
    let (through, log) = text(&db.hoop(&cfg, &args));
    assert!(!leaked(&through), "{through}\n{log}");
    let lines: Vec<&str> = through.lines().collect();
    assert_eq!(lines.len(), 2, "{through}\n{log}");
    assert!(
        lines[0].contains("42P01") && lines[0].contains("[REDACTED:server_text]"),
        "the masked statement's error keeps its SQLSTATE, not its words: {}",
        lines[0]
    );
    assert!(
        lines[1].contains("relation \\\"ada\\\" does not exist"),
        "the unmasked one keeps its words: {}",
        lines[1]
    );
}
