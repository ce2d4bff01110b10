//! Issue 27, class 10 (joined writes): an UPDATE … FROM, DELETE … USING or
//! MERGE whose WHERE (or ON) names only the other tables restricts only
//! those: every target row with a partner is written. So does an upsert or
//! MERGE fed by a whole copy of its own target: every row finds itself. Each attack writes
//! every row on the bare database; through hoop, a `without_where` rule
//! refuses it. The look-alikes restrict the target through the join and
//! must keep working.

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, attacks, errored, lookalikes, report},
    require_privileged,
};

const POLICY: &str = "policy:
  deny:
    - name: no-unbounded-writes
      statements: [update, delete]
      without_where: true
      message: writes must say which rows
";

const FIXTURE: &str = "CREATE TABLE {t}.orders (id int PRIMARY KEY, note text);
INSERT INTO {t}.orders SELECT g, 'n' || g FROM generate_series(1, 5) g;
CREATE TABLE {t}.users (id int, name text);
INSERT INTO {t}.users VALUES (1, 'a');";

fn attack_corpus() -> Vec<Case> {
    let all_updated = |db: &Db, t: &str, _: &str| {
        db.value(&format!("SELECT count(*) FROM {t}.orders WHERE note = 'x'")) == "5"
    };
    let all_deleted = |db: &Db, t: &str, _: &str| db.count(&format!("{t}.orders")) == 0;
    vec![
        Case::new(
            "UPDATE … FROM with a WHERE on the other table only",
            FIXTURE,
            "UPDATE {t}.orders SET note = 'x' FROM {t}.users u WHERE u.id = 1;",
            all_updated,
        ),
        Case::new(
            "UPDATE with an alias, WHERE on the joined table by name",
            FIXTURE,
            "UPDATE {t}.orders o SET note = 'x' FROM {t}.users WHERE users.name = 'a';",
            all_updated,
        ),
        Case::new(
            "DELETE … USING with a WHERE on the other table only",
            FIXTURE,
            "DELETE FROM {t}.orders USING {t}.users WHERE users.id = 1;",
            all_deleted,
        ),
        Case::new(
            "DELETE … USING with a conjunction on the other table",
            FIXTURE,
            "DELETE FROM {t}.orders o USING {t}.users u WHERE u.name = 'a' AND u.id > 0;",
            all_deleted,
        ),
        Case::new(
            "MERGE whose ON names only the source",
            FIXTURE,
            "MERGE INTO {t}.orders o USING {t}.users u ON u.id = 1 WHEN MATCHED THEN DELETE;",
            all_deleted,
        ),
        Case::new(
            "an upsert fed by the whole table itself",
            FIXTURE,
            "INSERT INTO {t}.orders SELECT id, 'x' FROM {t}.orders ON CONFLICT (id) DO UPDATE SET note = excluded.note;",
            all_updated,
        ),
        Case::new(
            "an upsert fed by an ordered copy of the whole table",
            FIXTURE,
            "INSERT INTO {t}.orders (id, note) (SELECT id, note FROM {t}.orders ORDER BY id) ON CONFLICT (id) DO UPDATE SET note = 'x';",
            all_updated,
        ),
        Case::new(
            "MERGE of the table with itself on its key",
            FIXTURE,
            "MERGE INTO {t}.orders a USING {t}.orders b ON a.id = b.id WHEN MATCHED THEN DELETE;",
            all_deleted,
        ),
        Case::new(
            "MERGE with an unfiltered subquery of itself",
            FIXTURE,
            "MERGE INTO {t}.orders a USING (SELECT * FROM {t}.orders) b ON b.id = a.id WHEN MATCHED THEN UPDATE SET note = 'x';",
            all_updated,
        ),
    ]
}

fn lookalike_corpus() -> Vec<Case> {
    vec![
        Case::new(
            "UPDATE … FROM joined on the target's key",
            FIXTURE,
            "UPDATE {t}.orders o SET note = 'y' FROM {t}.users u WHERE o.id = u.id;",
            |db: &Db, t: &str, out: &str| {
                !errored(out)
                    && db.value(&format!("SELECT count(*) FROM {t}.orders WHERE note = 'y'")) == "1"
            },
        ),
        Case::new(
            "DELETE … USING restricted on the target",
            FIXTURE,
            "DELETE FROM {t}.orders o USING {t}.users u WHERE o.id = 2 AND u.id = 1;",
            |db: &Db, t: &str, out: &str| !errored(out) && db.count(&format!("{t}.orders")) == 4,
        ),
        Case::new(
            "MERGE on the target's key",
            FIXTURE,
            "MERGE INTO {t}.orders o USING {t}.users u ON o.id = u.id WHEN MATCHED THEN DELETE;",
            |db: &Db, t: &str, out: &str| !errored(out) && db.count(&format!("{t}.orders")) == 4,
        ),
        Case::new(
            "an upsert fed by one row of the table itself",
            FIXTURE,
            "INSERT INTO {t}.orders SELECT id, 'y' FROM {t}.orders WHERE id = 3 ON CONFLICT (id) DO UPDATE SET note = excluded.note;",
            |db: &Db, t: &str, out: &str| {
                !errored(out)
                    && db.value(&format!("SELECT count(*) FROM {t}.orders WHERE note = 'y'")) == "1"
            },
        ),
        Case::new(
            "an upsert of new rows",
            FIXTURE,
            "INSERT INTO {t}.orders VALUES (9, 'new') ON CONFLICT (id) DO UPDATE SET note = excluded.note;",
            |db: &Db, t: &str, out: &str| !errored(out) && db.count(&format!("{t}.orders")) == 6,
        ),
        Case::new(
            "MERGE of the table with itself, one row",
            FIXTURE,
            "MERGE INTO {t}.orders a USING {t}.orders b ON a.id = b.id WHEN MATCHED AND a.id = 1 THEN DELETE;",
            |db: &Db, t: &str, out: &str| !errored(out) && db.count(&format!("{t}.orders")) == 4,
        ),
    ]
}

#[test]
fn joined_writes_that_restrict_only_other_tables_count_as_without_where() {
    require_privileged();
    let db = Db::create("fc2_reach");
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks("class 10 joined writes", &db, &cfg, &attack_corpus());
    let passed = lookalikes("class 10 joined writes", &db, &cfg, &lookalike_corpus());
    report("class 10 (joined writes)", &held, &passed);
}
