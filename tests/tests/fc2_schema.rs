//! Issue 27, class 3: schema changes inside the session. Renames and other
//! ALTERs, even in an uncommitted transaction the catalog side connection
//! cannot see, change what names mean: a masked column renamed, or its
//! table renamed away from the rule's name, reads back through an
//! expression unmasked. Each attack leaks on the bare database; through
//! hoop, while masking is active, such DDL is refused (`mask.schema_change`).
//! The look-alikes alter tables and columns no rule names.

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, attacks, errored, lookalikes, report},
    require_privileged,
};

const SECRETS: [&str; 4] = [
    "123-45-6789",
    "987-65-4321",
    "4111111111111111",
    "5500000000000004",
];

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [people.ssn]
      strategy: redact
    - name: card
      columns: [card]
      strategy: redact
";

const FIXTURE: &str = "CREATE TABLE {t}.people (id int, name text, ssn text, card text);
INSERT INTO {t}.people VALUES (1, 'Ada', '123-45-6789', '4111111111111111'), (2, 'Bob', '987-65-4321', '5500000000000004');
CREATE TABLE {t}.orders (id int, note text);
INSERT INTO {t}.orders VALUES (1, 'first');";

fn leaked(out: &str) -> bool {
    SECRETS.iter().any(|s| out.contains(s))
}

fn attack_corpus() -> Vec<Case> {
    let leak = |_: &Db, _: &str, out: &str| leaked(out);
    vec![
        Case::new(
            "rename the masked column inside an open transaction",
            FIXTURE,
            "BEGIN;\nALTER TABLE {t}.people RENAME COLUMN ssn TO s;\nSELECT upper(s) FROM {t}.people;\nROLLBACK;",
            leak,
        ),
        Case::new(
            "rename the masked table away from the rule's name",
            FIXTURE,
            "ALTER TABLE {t}.people RENAME TO staff;\nSELECT upper(ssn) FROM {t}.staff;",
            leak,
        ),
        Case::new(
            "rename a column a bare rule masks, in any table",
            FIXTURE,
            "BEGIN;\nALTER TABLE {t}.people RENAME COLUMN card TO c;\nSELECT c || '' FROM {t}.people;\nROLLBACK;",
            leak,
        ),
        Case::new(
            "swap: the masked table out, another in under its name",
            FIXTURE,
            "BEGIN;\nALTER TABLE {t}.people RENAME TO p2;\nALTER TABLE {t}.orders RENAME TO people;\nSELECT lower(ssn) FROM {t}.p2;\nROLLBACK;",
            leak,
        ),
        Case::new(
            "rename with ALTER TABLE IF EXISTS and quoted names",
            FIXTURE,
            "BEGIN;\nALTER TABLE IF EXISTS {t}.\"people\" RENAME COLUMN \"ssn\" TO plain;\nSELECT concat(plain, '') FROM {t}.people;\nROLLBACK;",
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
            "add a column to a table no rule names",
            FIXTURE,
            "ALTER TABLE {t}.orders ADD COLUMN extra text;\nSELECT 'cols:' || count(*) FROM information_schema.columns WHERE table_schema = '{t}' AND table_name = 'orders';",
            shows("cols:3"),
        ),
        Case::new(
            "rename an unmasked column of another table",
            FIXTURE,
            "ALTER TABLE {t}.orders RENAME COLUMN note TO remark;\nSELECT 'got:' || remark FROM {t}.orders;",
            shows("got:first"),
        ),
        Case::new(
            "an index on the masked table",
            FIXTURE,
            "CREATE INDEX ON {t}.people (name);\nSELECT 'name:' || name FROM {t}.people WHERE id = 1;",
            shows("name:Ada"),
        ),
    ]
}

#[test]
fn schema_changes_to_masked_names_are_refused() {
    require_privileged();
    let db = Db::create("fc2_schema");
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks("class 3 schema changes", &db, &cfg, &attack_corpus());
    let passed = lookalikes("class 3 schema changes", &db, &cfg, &lookalike_corpus());
    report(
        "class 3 (schema changes inside the session)",
        &held,
        &passed,
    );
}
