//! Issue 27, class 6: identifiers in any spelling. `U&"…"` Unicode-escaped
//! identifiers (with `UESCAPE` too), quoting and case folding must name the
//! same table and column for hoop's lineage as for the server. Each attack
//! reads the masked column through a spelling and an expression (so the
//! protocol's own column source cannot help) and leaks on the bare
//! database; the look-alikes spell unmasked columns the same ways.

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, attacks, errored, lookalikes, report},
    require_privileged,
};

const SECRETS: [&str; 2] = ["123-45-6789", "987-65-4321"];

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [people.ssn]
      strategy: redact
";

const FIXTURE: &str = "CREATE TABLE {t}.people (id int, name text, ssn text);
INSERT INTO {t}.people VALUES (1, 'Ada', '123-45-6789'), (2, 'Bob', '987-65-4321');
CREATE TABLE {t}.loot (id int, v text);";

fn leaked(out: &str) -> bool {
    SECRETS.iter().any(|s| out.contains(s))
}

fn attack_corpus() -> Vec<Case> {
    let leak = |_: &Db, _: &str, out: &str| leaked(out);
    vec![
        Case::new(
            "U&\"\\0073sn\" inside an expression",
            FIXTURE,
            r#"SELECT upper(U&"\0073sn") FROM {t}.people;"#,
            leak,
        ),
        Case::new(
            "the table spelled with escapes too",
            FIXTURE,
            r#"SELECT U&"\0073\0073n" || '' FROM {t}.U&"\0070eople";"#,
            leak,
        ),
        Case::new(
            "six-digit escapes, lower-case u&",
            FIXTURE,
            r#"SELECT concat(u&"\+000073sn", '') FROM {t}.people;"#,
            leak,
        ),
        Case::new(
            "a UESCAPE character of the attacker's choice",
            FIXTURE,
            r#"SELECT lower(U&"!0073sn" UESCAPE '!') FROM {t}.people;"#,
            leak,
        ),
        Case::new(
            "qualified by the table's alias",
            FIXTURE,
            r#"SELECT trim(p.U&"\0073sn") FROM {t}.people p;"#,
            leak,
        ),
        Case::new(
            "copied into another table under the spelling",
            FIXTURE,
            "INSERT INTO {t}.loot SELECT id, U&\"\\0073sn\" FROM {t}.people;\nSELECT v FROM {t}.loot;",
            leak,
        ),
        Case::new(
            "quoted and upper-case spellings of the plain names",
            FIXTURE,
            r#"SELECT upper("ssn"), lower(SSN) FROM {t}."people";"#,
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
            "an unmasked column spelled with escapes",
            FIXTURE,
            r#"SELECT upper(U&"\006Eame") FROM {t}.people WHERE id = 1;"#,
            shows("ADA"),
        ),
        Case::new(
            "the escaped spelling inside a string",
            FIXTURE,
            r#"SELECT 'U&"\0073sn"' AS literal;"#,
            shows(r#"U&"\0073sn""#),
        ),
        Case::new(
            "a bitwise & between columns",
            FIXTURE,
            "SELECT 'and:' || (id & 3) FROM {t}.people WHERE id = 2;",
            shows("and:2"),
        ),
    ]
}

#[test]
fn identifiers_in_any_spelling_resolve_as_the_server_resolves_them() {
    require_privileged();
    let db = Db::create("fc2_identifiers");
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks("class 6 identifiers", &db, &cfg, &attack_corpus());
    let passed = lookalikes("class 6 identifiers", &db, &cfg, &lookalike_corpus());
    report("class 6 (identifiers in any spelling)", &held, &passed);
}
