//! Issue 27, class 5: built-ins that run SQL given as a string (or read a
//! whole relation, schema, database or cursor given by name). Lineage
//! cannot see into the string, so every such result is unproven and masked
//! as unknown. Each attack leaks an SSN on the bare database; the
//! look-alikes use the same kind of built-ins on data that names no
//! masked column, written as ordinary SQL, and must keep their values.

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, attacks, errored, lookalikes, report},
    require_privileged,
};

const SECRETS: [&str; 2] = ["123-45-6789", "987-65-4321"];
/// The SSNs as the text-search parser splits them.
const FRAGMENTS: [&str; 2] = ["-6789", "-4321"];

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [ssn]
      strategy: redact
";

const FIXTURE: &str = "CREATE TABLE {t}.people (id int, name text, ssn text);
INSERT INTO {t}.people VALUES (1, 'Ada', '123-45-6789'), (2, 'Bob', '987-65-4321');";

fn leaked(out: &str) -> bool {
    SECRETS.iter().chain(&FRAGMENTS).any(|s| out.contains(s))
}

fn attack_corpus() -> Vec<Case> {
    let leak = |_: &Db, _: &str, out: &str| leaked(out);
    vec![
        Case::new(
            "query_to_xml runs a query text",
            FIXTURE,
            "SELECT query_to_xml('SELECT ssn FROM {t}.people', true, false, '');",
            leak,
        ),
        Case::new(
            "query_to_xml_and_xmlschema, schema-qualified",
            FIXTURE,
            "SELECT pg_catalog.query_to_xml_and_xmlschema('SELECT ssn FROM {t}.people', true, false, '');",
            leak,
        ),
        Case::new(
            "table_to_xml reads a whole table given by name",
            FIXTURE,
            "SELECT table_to_xml('{t}.people', true, false, '');",
            leak,
        ),
        Case::new(
            "schema_to_xml reads a whole schema",
            FIXTURE,
            "SELECT schema_to_xml('{t}', true, false, '');",
            leak,
        ),
        Case::new(
            "cursor_to_xml reads a cursor declared before",
            FIXTURE,
            "BEGIN;\nDECLARE c_{t} CURSOR FOR SELECT ssn FROM {t}.people;\nSELECT cursor_to_xml('c_{t}', 10, true, false, '');\nCOMMIT;",
            leak,
        ),
        Case::new(
            "ts_stat runs a query text (as a table function)",
            FIXTURE,
            "SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', ssn) FROM {t}.people');",
            leak,
        ),
        Case::new(
            "ts_rewrite runs its rewrite query",
            FIXTURE,
            "SELECT ts_rewrite('x'::tsquery, 'SELECT ''x''::tsquery, quote_literal(ssn)::tsquery FROM {t}.people WHERE id = 1');",
            leak,
        ),
        Case::new(
            "query_to_xml nested in an expression and cast to text",
            FIXTURE,
            "SELECT 'x' || query_to_xml('SELECT ssn FROM {t}.people', true, false, '')::text;",
            leak,
        ),
    ]
}

fn lookalike_corpus() -> Vec<Case> {
    let shows = |marker: &'static str| {
        move |_: &Db, _: &str, out: &str| out.contains(marker) && !errored(out)
    };
    vec![
        Case::new(
            "to_tsvector on a column that is not masked",
            FIXTURE,
            "SELECT to_tsvector('simple', name) FROM {t}.people WHERE id = 1;",
            shows("'ada'"),
        ),
        Case::new(
            "markup built from a column that is not masked",
            FIXTURE,
            "SELECT format('<person>%s</person>', name) FROM {t}.people WHERE id = 2;",
            shows("<person>Bob</person>"),
        ),
        Case::new(
            "a tsquery literal",
            FIXTURE,
            "SELECT 'fat & rat'::tsquery;",
            shows("'fat' & 'rat'"),
        ),
        Case::new(
            "the masked column itself is masked, not refused",
            FIXTURE,
            "SELECT ssn FROM {t}.people;",
            |_: &Db, _: &str, out: &str| !leaked(out) && out.contains("REDACTED") && !errored(out),
        ),
    ]
}

#[test]
fn built_ins_that_run_sql_strings_are_masked_as_unknown() {
    require_privileged();
    let db = Db::create("fc2_sql_strings");
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks("class 5 SQL strings", &db, &cfg, &attack_corpus());
    let passed = lookalikes("class 5 SQL strings", &db, &cfg, &lookalike_corpus());
    report("class 5 (built-ins that run SQL strings)", &held, &passed);
}
