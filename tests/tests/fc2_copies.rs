//! Issue 27, class 4: copies the exfiltration guard missed. `MERGE` (its
//! `INSERT VALUES` and `UPDATE SET` see the source) and `COPY … FROM` a
//! server program into another relation copy masked data out of lineage's
//! sight, like `INSERT … SELECT` and `CREATE TABLE AS`; reading the copy
//! back then shows the raw values. Each attack does that on the bare
//! database; through hoop the copy is refused (`mask.exfiltration`, or
//! `policy.privileged` for the server program). The look-alikes copy
//! columns no rule masks, or masked values into masked columns.

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, attacks, errored, lookalikes, report},
    require_privileged,
};

const SECRETS: [&str; 2] = ["123-45-6789", "987-65-4321"];

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [ssn]
      strategy: redact
";

const FIXTURE: &str = "CREATE TABLE {t}.people (id int, name text, ssn text);
INSERT INTO {t}.people VALUES (1, 'Ada', '123-45-6789'), (2, 'Bob', '987-65-4321');
CREATE TABLE {t}.loot (id int, v text);
INSERT INTO {t}.loot VALUES (1, 'old');";

fn leaked_in_loot(db: &Db, t: &str) -> bool {
    let loot = db.sql(&format!("SELECT string_agg(v, ',') FROM {t}.loot"));
    let names = db.sql(&format!("SELECT string_agg(name, ',') FROM {t}.people"));
    SECRETS
        .iter()
        .any(|s| loot.contains(s) || names.contains(s))
        || loot.contains("6789")
}

fn attack_corpus(db_name: &str) -> Vec<Case> {
    let copied = |db: &Db, t: &str, _: &str| leaked_in_loot(db, t);
    vec![
        Case::new(
            "MERGE … WHEN NOT MATCHED THEN INSERT VALUES (source.ssn)",
            FIXTURE,
            "MERGE INTO {t}.loot l USING {t}.people p ON l.id = p.id WHEN NOT MATCHED THEN INSERT (id, v) VALUES (p.id, p.ssn);",
            copied,
        ),
        Case::new(
            "MERGE … WHEN MATCHED THEN UPDATE SET v = source.ssn",
            FIXTURE,
            "MERGE INTO {t}.loot l USING {t}.people p ON l.id = p.id WHEN MATCHED THEN UPDATE SET v = p.ssn;",
            copied,
        ),
        Case::new(
            "MERGE from a subquery that transforms the masked column",
            FIXTURE,
            "MERGE INTO {t}.loot l USING (SELECT id, reverse(reverse(ssn)) AS s FROM {t}.people) p ON l.id = p.id WHEN MATCHED THEN UPDATE SET v = p.s;",
            copied,
        ),
        Case::new(
            "MERGE with a guarded INSERT of an expression over the masked column",
            FIXTURE,
            "MERGE INTO {t}.loot l USING {t}.people p ON false WHEN NOT MATCHED AND p.id > 0 THEN INSERT VALUES (p.id, 'x' || p.ssn);",
            copied,
        ),
        Case::new(
            "MERGE a table into itself, the masked column into an unmasked one",
            FIXTURE,
            "MERGE INTO {t}.people d USING {t}.people s ON d.id = s.id WHEN MATCHED THEN UPDATE SET name = s.ssn;",
            copied,
        ),
        Case::new(
            "COPY … FROM PROGRAM reads the masked column back into another table",
            FIXTURE,
            format!(
                "COPY {{t}}.loot (v) FROM PROGRAM 'psql -XAt -h 127.0.0.1 -U postgres -d {db_name} -c \"SELECT ssn FROM {{t}}.people\"';"
            ),
            copied,
        ),
        Case::new(
            "INSERT … SELECT (the first round's case, for comparison)",
            FIXTURE,
            "INSERT INTO {t}.loot SELECT id, ssn FROM {t}.people;",
            copied,
        ),
    ]
}

fn lookalike_corpus() -> Vec<Case> {
    let loot_has = |value: &'static str| {
        move |db: &Db, t: &str, out: &str| {
            !errored(out)
                && db
                    .sql(&format!("SELECT string_agg(v, ',') FROM {t}.loot"))
                    .contains(value)
        }
    };
    vec![
        Case::new(
            "MERGE of a column no rule masks",
            FIXTURE,
            "MERGE INTO {t}.loot l USING {t}.people p ON l.id = p.id WHEN MATCHED THEN UPDATE SET v = p.name WHEN NOT MATCHED THEN INSERT VALUES (p.id, p.name);",
            loot_has("Bob"),
        ),
        Case::new(
            "MERGE that deletes where the masked column matches",
            FIXTURE,
            "MERGE INTO {t}.loot l USING {t}.people p ON l.id = p.id AND p.ssn LIKE '123%' WHEN MATCHED THEN DELETE;",
            |db: &Db, t: &str, out: &str| !errored(out) && db.count(&format!("{t}.loot")) == 0,
        ),
        Case::new(
            "MERGE of the masked column into itself",
            FIXTURE,
            "MERGE INTO {t}.people d USING {t}.people s ON d.id = s.id WHEN MATCHED THEN UPDATE SET ssn = s.ssn;",
            |_: &Db, _: &str, out: &str| out.contains("MERGE 2"),
        ),
        Case::new(
            "MERGE of constants",
            FIXTURE,
            "MERGE INTO {t}.loot l USING (VALUES (5, 'five')) s (id, v) ON l.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v);",
            loot_has("five"),
        ),
    ]
}

#[test]
fn merges_and_server_copies_of_masked_data_are_refused() {
    require_privileged();
    let db = Db::create("fc2_copies");
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks("class 4 copies", &db, &cfg, &attack_corpus(&db.name));
    let passed = lookalikes("class 4 copies", &db, &cfg, &lookalike_corpus());
    report("class 4 (copies)", &held, &passed);
}
