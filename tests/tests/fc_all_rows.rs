//! Issue 23, class 2: rows that are all rows. WHERE clauses that are true
//! for every row however they are spelled, statements whose filter no
//! syntax check can see through (the `max_rows` dry run's work), and the
//! `destructive_ddl` group. Every attack below destroys or rewrites data or
//! objects on the bare database; through hoop it is refused. The
//! look-alikes (positioned writes, bounded writes, harmless DDL) must work.

use std::{process::Command, time::Duration};

use hoop_tests::{
    Approver, TestConfig,
    failclosed::{Case, Db, Tally, attacks, errored, lookalikes, report},
    hoop_exec_spawn, require_privileged, text, wait_output,
};

const POLICY: &str = "policy:
  deny:
    - name: no-destruction
      statements: [destructive_ddl]
      message: destructive DDL is not allowed here
    - name: no-unbounded-writes
      statements: [delete, update]
      without_where: true
      message: UPDATE and DELETE need a WHERE clause
    - name: few-orders
      statements: [delete, update]
      tables: [orders]
      max_rows: 3
      message: at most 3 orders per statement
";

/// Ten orders, an index, a view, a sequence, and two ids elsewhere.
const FIXTURE: &str = "CREATE TABLE {t}.orders (id int PRIMARY KEY, note text NOT NULL);
INSERT INTO {t}.orders SELECT g, 'n' || g FROM generate_series(1, 10) g;
CREATE INDEX orders_note_idx ON {t}.orders (note);
CREATE VIEW {t}.v AS SELECT id FROM {t}.orders;
CREATE SEQUENCE {t}.s;
CREATE TABLE {t}.other (id int);
INSERT INTO {t}.other VALUES (1), (2);";

fn count(db: &Db, t: &str) -> i64 {
    db.count(&format!("{t}.orders"))
}

/// More rows deleted than the limit allows (or the table gone).
fn mass_delete(db: &Db, t: &str, _: &str) -> bool {
    count(db, t) < 7
}

/// More rows rewritten than the limit allows.
fn mass_update(db: &Db, t: &str, _: &str) -> bool {
    db.value(&format!("SELECT count(*) FROM {t}.orders WHERE note = 'x'"))
        .parse::<i64>()
        .unwrap_or(0)
        > 3
}

fn column_gone(db: &Db, t: &str, column: &str) -> bool {
    db.value(&format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = '{t}' AND table_name = 'orders' AND column_name = '{column}'"
    )) == "0"
}

fn attack_corpus() -> Vec<Case> {
    let del = |name: &'static str, predicate: &str| {
        Case::new(
            name,
            FIXTURE,
            format!("DELETE FROM {{t}}.orders WHERE {predicate};"),
            mass_delete,
        )
    };
    let gone = |relation: &'static str| {
        move |db: &Db, t: &str, _: &str| !db.exists(&format!("{t}.{relation}"))
    };
    vec![
        // Tautologies: `without_where` must see through them.
        del("self-comparison", "id = id"),
        del("1 = 1 OR a real filter", "1 = 1 OR id = 5"),
        del("qualified and bare self-comparison", "orders.id = id"),
        del(
            "excluded middle with NULL",
            "id > 0 OR id <= 0 OR id IS NULL",
        ),
        del(
            "contradiction negated",
            "NOT (id IS NULL AND id IS NOT NULL)",
        ),
        del(
            "a comparison that is never unknown, or NULL",
            "(id = 5) IS NOT UNKNOWN OR id IS NULL",
        ),
        del(
            "function of a column compared with itself",
            "lower(note) = lower(note)",
        ),
        del("pattern that matches every string", "note LIKE '%'"),
        del("not distinct from itself", "id IS NOT DISTINCT FROM id"),
        del(
            "CASE whose every arm is true",
            "CASE WHEN id > 2 THEN true ELSE true END",
        ),
        del("BETWEEN a column and itself", "id BETWEEN id AND id"),
        del(
            "folded constants AND a self-comparison",
            "coalesce(NULL, 1) = 1 AND id = id",
        ),
        del("cast of a constant", "'1'::int = 1"),
        Case::new(
            "UPDATE with a self-comparison",
            FIXTURE,
            "UPDATE {t}.orders SET note = 'x' WHERE note = note;",
            mass_update,
        ),
        Case::new(
            "UPDATE with a folded function of constants",
            FIXTURE,
            "UPDATE {t}.orders SET note = 'x' WHERE length('abc') = 3 OR id = 1;",
            mass_update,
        ),
        Case::new(
            "MERGE ON true",
            FIXTURE,
            "MERGE INTO {t}.orders o USING (SELECT 1 AS one) s ON true WHEN MATCHED THEN DELETE;",
            mass_delete,
        ),
        Case::new(
            "data-modifying CTE with a tautology",
            FIXTURE,
            "WITH d AS (DELETE FROM {t}.orders WHERE id = id RETURNING *) SELECT count(*) FROM d;",
            mass_delete,
        ),
        // Filters no syntax check sees through: the dry run counts them.
        del("a real filter that matches every row", "id > 0"),
        del(
            "a subquery that selects every row",
            "id IN (SELECT id FROM {t}.orders)",
        ),
        del("IS NOT NULL on a NOT NULL column", "id IS NOT NULL"),
        del("algebra the folding does not do", "id + 0 = id"),
        Case::new(
            "mass delete inside the client's transaction, committed",
            FIXTURE,
            "BEGIN;\nDELETE FROM {t}.orders WHERE id > 0;\nCOMMIT;",
            mass_delete,
        ),
        Case::new(
            "mass update whose rows come back",
            FIXTURE,
            "UPDATE {t}.orders SET note = 'x' WHERE id < 100 RETURNING id;",
            mass_update,
        ),
        Case::new(
            "mass delete through a read-only CTE",
            FIXTURE,
            "WITH d AS (SELECT id FROM {t}.orders) DELETE FROM {t}.orders WHERE id IN (SELECT id FROM d);",
            mass_delete,
        ),
        Case::new(
            "mass delete next to another statement (the dry run cannot count it)",
            FIXTURE,
            "DELETE FROM {t}.orders WHERE id > 0; SELECT 1;",
            mass_delete,
        ),
        // The destructive_ddl group.
        Case::new(
            "DROP TABLE",
            FIXTURE,
            "DROP TABLE {t}.orders CASCADE;",
            gone("orders"),
        ),
        Case::new(
            "DROP TABLE IF EXISTS among others",
            FIXTURE,
            "DROP TABLE IF EXISTS {t}.nothing, {t}.orders CASCADE;",
            gone("orders"),
        ),
        Case::new("TRUNCATE", FIXTURE, "TRUNCATE {t}.orders;", mass_delete),
        Case::new(
            "ALTER TABLE … DROP COLUMN",
            FIXTURE,
            "ALTER TABLE {t}.orders DROP COLUMN note;",
            |db: &Db, t: &str, _: &str| column_gone(db, t, "note"),
        ),
        Case::new(
            "ALTER TABLE IF EXISTS ONLY … DROP COLUMN IF EXISTS … CASCADE",
            FIXTURE,
            "ALTER TABLE IF EXISTS ONLY {t}.orders DROP COLUMN IF EXISTS note CASCADE;",
            |db: &Db, t: &str, _: &str| column_gone(db, t, "note"),
        ),
        Case::new(
            "ALTER TABLE … DROP CONSTRAINT",
            FIXTURE,
            "ALTER TABLE {t}.orders DROP CONSTRAINT orders_pkey;",
            |db: &Db, t: &str, _: &str| {
                db.value(&format!(
                    "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass('{t}.orders')"
                )) == "0"
            },
        ),
        Case::new(
            "rename the table",
            FIXTURE,
            "ALTER TABLE {t}.orders RENAME TO orders_old;",
            gone("orders"),
        ),
        Case::new(
            "rename a column",
            FIXTURE,
            "ALTER TABLE {t}.orders RENAME COLUMN note TO memo;",
            |db: &Db, t: &str, _: &str| column_gone(db, t, "note"),
        ),
        Case::new(
            "rename a column without COLUMN",
            FIXTURE,
            "ALTER TABLE {t}.orders RENAME note TO memo;",
            |db: &Db, t: &str, _: &str| column_gone(db, t, "note"),
        ),
        Case::new(
            "move the table to another schema",
            FIXTURE,
            "ALTER TABLE {t}.orders SET SCHEMA {t}_b;",
            gone("orders"),
        ),
        Case::new(
            "DROP SCHEMA … CASCADE",
            FIXTURE,
            "DROP SCHEMA {t} CASCADE;",
            gone("orders"),
        ),
        Case::new(
            "DROP INDEX",
            FIXTURE,
            "DROP INDEX {t}.orders_note_idx;",
            gone("orders_note_idx"),
        ),
        Case::new("DROP VIEW", FIXTURE, "DROP VIEW {t}.v;", gone("v")),
        Case::new(
            "rename a view",
            FIXTURE,
            "ALTER VIEW {t}.v RENAME TO w;",
            gone("v"),
        ),
        Case::new("DROP SEQUENCE", FIXTURE, "DROP SEQUENCE {t}.s;", gone("s")),
    ]
}

fn lookalike_corpus() -> Vec<Case> {
    fn rows(expected: i64, shows: &'static str) -> impl Fn(&Db, &str, &str) -> bool {
        move |db, t, out| count(db, t) == expected && out.contains(shows) && !errored(out)
    }
    vec![
        Case::new(
            "positioned UPDATE … WHERE CURRENT OF",
            FIXTURE,
            "BEGIN;
DECLARE c CURSOR FOR SELECT id FROM {t}.orders WHERE id = 2 FOR UPDATE;
FETCH c;
UPDATE {t}.orders SET note = 'pos' WHERE CURRENT OF c;
COMMIT;",
            |db: &Db, t: &str, out: &str| {
                db.value(&format!(
                    "SELECT string_agg(id::text, ',') FROM {t}.orders WHERE note = 'pos'"
                )) == "2"
                    && out.contains("UPDATE 1")
                    && !errored(out)
            },
        ),
        Case::new(
            "positioned DELETE … WHERE CURRENT OF",
            FIXTURE,
            "BEGIN;
DECLARE c CURSOR FOR SELECT id FROM {t}.orders ORDER BY id FOR UPDATE;
FETCH c;
DELETE FROM {t}.orders WHERE CURRENT OF c;
COMMIT;",
            rows(9, "DELETE 1"),
        ),
        Case::new(
            "one row by key",
            FIXTURE,
            "DELETE FROM {t}.orders WHERE id = 5;",
            rows(9, "DELETE 1"),
        ),
        Case::new(
            "two rows by a list",
            FIXTURE,
            "DELETE FROM {t}.orders WHERE id IN (1, 2);",
            rows(8, "DELETE 2"),
        ),
        Case::new(
            "generated-SQL style 1 = 1 AND a filter",
            FIXTURE,
            "DELETE FROM {t}.orders WHERE 1 = 1 AND id = 7;",
            rows(9, "DELETE 1"),
        ),
        Case::new(
            "a filter OR false",
            FIXTURE,
            "UPDATE {t}.orders SET note = 'y' WHERE id = 3 OR false;",
            |db: &Db, t: &str, out: &str| {
                db.value(&format!("SELECT count(*) FROM {t}.orders WHERE note = 'y'")) == "1"
                    && out.contains("UPDATE 1")
            },
        ),
        Case::new(
            "RETURNING through the dry run",
            FIXTURE,
            "DELETE FROM {t}.orders WHERE id = 4 RETURNING id, note;",
            rows(9, "4|n4"),
        ),
        Case::new(
            "two bounded deletes in the client's transaction",
            FIXTURE,
            "BEGIN;\nDELETE FROM {t}.orders WHERE id = 1;\nDELETE FROM {t}.orders WHERE id = 2;\nCOMMIT;",
            rows(8, "COMMIT"),
        ),
        Case::new(
            "exactly the limit",
            FIXTURE,
            "DELETE FROM {t}.orders WHERE id > 7;",
            rows(7, "DELETE 3"),
        ),
        Case::new(
            "a filter that matches nothing",
            FIXTURE,
            "DELETE FROM {t}.orders WHERE id = id + 1;",
            rows(10, "DELETE 0"),
        ),
        Case::new(
            "IS NULL on a column",
            FIXTURE,
            "UPDATE {t}.orders SET note = 'z' WHERE note IS NULL;",
            rows(10, "UPDATE 0"),
        ),
        Case::new(
            "a join that restricts the target",
            FIXTURE,
            "DELETE FROM {t}.orders o USING {t}.other x WHERE o.id = x.id;",
            rows(8, "DELETE 2"),
        ),
        Case::new(
            "a range within the limit",
            FIXTURE,
            "UPDATE {t}.orders SET note = 'w' WHERE id BETWEEN 1 AND 3;",
            |db: &Db, t: &str, out: &str| {
                db.value(&format!("SELECT count(*) FROM {t}.orders WHERE note = 'w'")) == "3"
                    && out.contains("UPDATE 3")
            },
        ),
        Case::new(
            "a SELECT with a tautology (reads are not writes)",
            FIXTURE,
            "SELECT count(*) FROM {t}.orders WHERE id = id;",
            rows(10, "10"),
        ),
        Case::new(
            "INSERT",
            FIXTURE,
            "INSERT INTO {t}.orders VALUES (100, 'new');",
            rows(11, "INSERT 0 1"),
        ),
        Case::new(
            "ADD COLUMN",
            FIXTURE,
            "ALTER TABLE {t}.orders ADD COLUMN extra int;",
            |db: &Db, t: &str, out: &str| !column_gone(db, t, "extra") && !errored(out),
        ),
        Case::new(
            "SET DEFAULT",
            FIXTURE,
            "ALTER TABLE {t}.orders ALTER COLUMN note SET DEFAULT 'd';",
            rows(10, "ALTER TABLE"),
        ),
        Case::new(
            "CREATE TABLE, CREATE INDEX, CREATE VIEW",
            FIXTURE,
            "CREATE TABLE {t}.more (a int);\nCREATE INDEX ON {t}.orders (id, note);\nCREATE VIEW {t}.v2 AS SELECT 1 AS one;",
            |db: &Db, t: &str, out: &str| {
                db.exists(&format!("{t}.more")) && db.exists(&format!("{t}.v2")) && !errored(out)
            },
        ),
        Case::new(
            "COMMENT ON",
            FIXTURE,
            "COMMENT ON TABLE {t}.orders IS 'fine';",
            rows(10, "COMMENT"),
        ),
        Case::new(
            "a string that holds DROP TABLE",
            FIXTURE,
            "SELECT 'DROP TABLE {t}.orders; TRUNCATE x' AS mention;",
            rows(10, "DROP TABLE"),
        ),
    ]
}

/// Bounded and unbounded writes over the extended protocol (tokio-postgres).
fn extended(db: &Db, cfg: &TestConfig) -> (Tally, Tally) {
    let client = env!("CARGO_BIN_EXE_pg-client");
    let fixture = || {
        db.sql(&FIXTURE.replace("{t}", "fc_x").replace(
            "CREATE TABLE fc_x.orders",
            "DROP SCHEMA IF EXISTS fc_x CASCADE; CREATE SCHEMA fc_x; CREATE TABLE fc_x.orders",
        ));
    };
    let run = |sql: &str| -> String {
        let out = db.hoop(cfg, &[client, "execute", sql]);
        text(&out).0
    };
    let mut held = Tally::default();
    for sql in [
        "DELETE FROM fc_x.orders WHERE id > 0",
        "DELETE FROM fc_x.orders WHERE id = id",
        "UPDATE fc_x.orders SET note = 'x' WHERE id IS NOT NULL",
    ] {
        held.tried += 1;
        fixture();
        let direct = Command::new(client)
            .args(["execute", sql])
            .env("PGDATABASE", &db.name)
            .output()
            .expect("pg-client");
        let damaged_directly = text(&direct).0.contains("\"affected\":10");
        fixture();
        let out = run(sql);
        let intact = db.count("fc_x.orders") == 10
            && db.value("SELECT count(*) FROM fc_x.orders WHERE note = 'x'") == "0";
        if damaged_directly && intact && out.contains("42501") {
            held.ok += 1;
        } else {
            held.failures.push(format!("extended `{sql}`: {out}"));
        }
    }
    let mut passed = Tally::default();
    for (sql, affected, left) in [
        ("DELETE FROM fc_x.orders WHERE id = 5", 1, 9),
        ("DELETE FROM fc_x.orders WHERE id > 7", 3, 7),
        (
            "UPDATE fc_x.orders SET note = 'q' WHERE id IN (1, 2)",
            2,
            10,
        ),
    ] {
        passed.tried += 1;
        fixture();
        let out = run(sql);
        if out.contains(&format!("\"affected\":{affected}")) && db.count("fc_x.orders") == left {
            passed.ok += 1;
        } else {
            passed
                .failures
                .push(format!("extended look-alike `{sql}`: {out}"));
        }
    }
    // Inside the client's own transaction (the savepoint path).
    held.tried += 1;
    fixture();
    let out = text(&db.hoop(
        cfg,
        &[
            client,
            "tx",
            "DELETE FROM fc_x.orders WHERE id = 1",
            "DELETE FROM fc_x.orders WHERE id > 0",
        ],
    ))
    .0;
    if db.count("fc_x.orders") == 10 && out.contains("42501") {
        held.ok += 1;
    } else {
        held.failures
            .push(format!("extended transaction with a mass delete: {out}"));
    }
    passed.tried += 1;
    fixture();
    let out = text(&db.hoop(
        cfg,
        &[
            client,
            "tx",
            "DELETE FROM fc_x.orders WHERE id = 1",
            "DELETE FROM fc_x.orders WHERE id IN (2, 3)",
        ],
    ))
    .0;
    if db.count("fc_x.orders") == 7 && out.contains("\"commit\":\"ok\"") {
        passed.ok += 1;
    } else {
        passed
            .failures
            .push(format!("extended transaction of bounded deletes: {out}"));
    }
    (held, passed)
}

fn merge(into: &mut Tally, other: Tally) {
    into.tried += other.tried;
    into.ok += other.ok;
    into.failures.extend(other.failures);
}

#[test]
fn statements_that_reach_every_row_or_destroy_are_refused() {
    require_privileged();
    let db = Db::create("fc_all_rows");
    let cfg = TestConfig::new(&[5432], POLICY);
    let mut held = attacks("class 2 all rows", &db, &cfg, &attack_corpus());
    let mut passed = lookalikes("class 2 all rows", &db, &cfg, &lookalike_corpus());
    let (ext_held, ext_passed) = extended(&db, &cfg);
    merge(&mut held, ext_held);
    merge(&mut passed, ext_passed);
    report("class 2 (rows that are all rows)", &held, &passed);
}

/// A hold rule with `max_rows`: the approver sees the dry run's count
/// before deciding; approved, the statement runs again and is refused if it
/// now touches more rows than the approver saw.
#[test]
fn a_max_rows_hold_shows_the_count_and_runs_again_only_after_approval() {
    require_privileged();
    let db = Db::create("fc_all_rows_hold");
    db.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL);
         INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 10) g;",
    );
    let cfg = TestConfig::new(
        &[5432],
        "policy:
  hold:
    - name: big-updates
      statements: [update]
      tables: [orders]
      max_rows: 2
      approvers: [dba]
      timeout: 1m
      message: updates of more than 2 orders need a DBA
",
    );
    let approver = Approver::install(&cfg, "fc-approver-token");
    let holds = |args: &[&str]| approver.holds(args);
    let pending = || approver.pending();
    let psql = |sql: &str| {
        hoop_exec_spawn(
            &cfg.path,
            &[
                "sh",
                "-c",
                &format!(
                    "psql -X -h 127.0.0.1 -U postgres -d {} -c \"{sql}\" 2>&1; sleep 1",
                    db.name
                ),
            ],
        )
    };
    // Within the limit: no hold.
    let small = wait_output(
        psql("UPDATE orders SET note = 'one' WHERE id = 1"),
        Duration::from_mins(1),
    );
    assert!(text(&small).0.contains("UPDATE 1"), "{:?}", text(&small));

    // Over the limit: held, with the dry run's count; nothing changed yet.
    let child = psql("UPDATE orders SET note = 'held' WHERE id <= 5");
    let hold = pending();
    let message = hold["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("5 rows"),
        "the approver sees the count: {hold}"
    );
    assert_eq!(
        db.value("SELECT count(*) FROM orders WHERE note = 'held'"),
        "0",
        "the dry run was rolled back"
    );
    let id = hold["id"].as_str().expect("hold id").to_owned();
    let approved = holds(&["approve", &id]);
    assert!(approved.status.success(), "{:?}", text(&approved));
    let out = wait_output(child, Duration::from_mins(1));
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("UPDATE 5"), "{stdout}\n{stderr}");
    assert_eq!(
        db.value("SELECT count(*) FROM orders WHERE note = 'held'"),
        "5"
    );

    // Approved for 3 rows, but the data changed meanwhile: refused.
    let child = psql("UPDATE orders SET note = 'later' WHERE note LIKE 'n%' AND id > 7");
    let hold = pending();
    assert!(
        hold["message"]
            .as_str()
            .unwrap_or_default()
            .contains("3 rows"),
        "{hold}"
    );
    db.sql("INSERT INTO orders VALUES (11, 'n11')");
    let id = hold["id"].as_str().expect("hold id").to_owned();
    assert!(holds(&["approve", &id]).status.success());
    let out = wait_output(child, Duration::from_mins(1));
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("approved for 3 rows but now touches 4"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        db.value("SELECT count(*) FROM orders WHERE note = 'later'"),
        "0",
        "the re-run was rolled back"
    );
}
