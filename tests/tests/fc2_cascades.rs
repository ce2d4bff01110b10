//! Issue 27, class 10 (cascades): a write that touches one row of its own
//! can reach many more through cascading foreign keys (`ON DELETE
//! CASCADE`, `ON UPDATE CASCADE`, `SET NULL`) and triggers. The command tag
//! counts only the statement's own rows, so a `max_rows` dry run counted
//! one. hoop now also reads the transaction's row counters before and after
//! the statement, and judges the larger count. Each attack writes 20 rows
//! or more on the bare database through a one-row statement; through hoop a
//! `max_rows: 3` rule refuses it and nothing changes. The look-alikes stay
//! within the limit, cascades included.

use std::{process::Command, time::Duration};

use hoop_tests::{
    Approver, TestConfig,
    failclosed::{Case, Db, Tally, attacks, errored, lookalikes, report},
    hoop_exec_spawn, require_privileged, text, wait_output,
};

const POLICY: &str = "policy:
  deny:
    - name: few-rows
      statements: [delete, update]
      max_rows: 3
      message: at most 3 rows per statement
";

/// Four parents; parent 1 and 2 have 20 children each (deleted, and
/// updated, with their parent), parent 3 has 20 children that lose their
/// parent, parent 4 has 2 children; 20 grandchildren under child 1.
const FIXTURE: &str = "CREATE TABLE {t}.parent (id int PRIMARY KEY, note text);
INSERT INTO {t}.parent SELECT g, 'p' FROM generate_series(1, 5) g;
CREATE TABLE {t}.child (id int PRIMARY KEY, p int REFERENCES {t}.parent ON DELETE CASCADE ON UPDATE CASCADE);
INSERT INTO {t}.child SELECT g, CASE WHEN g <= 20 THEN 1 WHEN g <= 40 THEN 2 ELSE 4 END FROM generate_series(1, 42) g;
CREATE TABLE {t}.orphan (id int, p int REFERENCES {t}.parent ON DELETE SET NULL);
INSERT INTO {t}.orphan SELECT g, 3 FROM generate_series(1, 20) g;
CREATE TABLE {t}.grand (id int, c int REFERENCES {t}.child ON DELETE CASCADE);
INSERT INTO {t}.grand SELECT g, 1 FROM generate_series(1, 20) g;
CREATE TABLE {t}.log (id int);
INSERT INTO {t}.log SELECT generate_series(1, 20);
CREATE FUNCTION {t}.wipe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {t}.log; RETURN OLD; END $$;
CREATE TRIGGER wipe AFTER DELETE ON {t}.parent FOR EACH ROW WHEN (OLD.id = 5) EXECUTE FUNCTION {t}.wipe();";

fn count(db: &Db, sql: &str) -> i64 {
    db.value(sql).parse().unwrap_or(-1)
}

fn attack_corpus() -> Vec<Case> {
    vec![
        Case::new(
            "DELETE of one parent cascades to its 20 children and their 20 grandchildren",
            FIXTURE,
            "DELETE FROM {t}.parent WHERE id = 1;",
            |db: &Db, t: &str, _: &str| {
                count(db, &format!("SELECT count(*) FROM {t}.child WHERE p = 1")) == 0
            },
        ),
        Case::new(
            "UPDATE of one parent's key rewrites its 20 children",
            FIXTURE,
            "UPDATE {t}.parent SET id = 100 WHERE id = 2;",
            |db: &Db, t: &str, _: &str| {
                count(db, &format!("SELECT count(*) FROM {t}.child WHERE p = 100")) == 20
            },
        ),
        Case::new(
            "DELETE of one parent sets 20 references to NULL",
            FIXTURE,
            "DELETE FROM {t}.parent WHERE id = 3;",
            |db: &Db, t: &str, _: &str| {
                count(
                    db,
                    &format!("SELECT count(*) FROM {t}.orphan WHERE p IS NULL"),
                ) == 20
            },
        ),
        Case::new(
            "DELETE of one child cascades to 20 grandchildren",
            FIXTURE,
            "DELETE FROM {t}.child WHERE id = 1;",
            |db: &Db, t: &str, _: &str| count(db, &format!("SELECT count(*) FROM {t}.grand")) == 0,
        ),
        Case::new(
            "DELETE of one row whose trigger deletes 20 others",
            FIXTURE,
            "DELETE FROM {t}.parent WHERE id = 5;",
            |db: &Db, t: &str, _: &str| count(db, &format!("SELECT count(*) FROM {t}.log")) == 0,
        ),
    ]
}

fn lookalike_corpus() -> Vec<Case> {
    vec![
        Case::new(
            "DELETE of a parent with two children (three rows in all)",
            FIXTURE,
            "DELETE FROM {t}.parent WHERE id = 4;",
            |db: &Db, t: &str, out: &str| {
                !errored(out)
                    && count(db, &format!("SELECT count(*) FROM {t}.child WHERE p = 4")) == 0
            },
        ),
        Case::new(
            "UPDATE of a parent's other column (no cascade)",
            FIXTURE,
            "UPDATE {t}.parent SET note = 'x' WHERE id = 1;",
            |db: &Db, t: &str, out: &str| {
                !errored(out)
                    && count(
                        db,
                        &format!("SELECT count(*) FROM {t}.parent WHERE note = 'x'"),
                    ) == 1
            },
        ),
        Case::new(
            "DELETE of a leaf row",
            FIXTURE,
            "DELETE FROM {t}.grand WHERE id = 1;",
            |db: &Db, t: &str, out: &str| {
                !errored(out) && count(db, &format!("SELECT count(*) FROM {t}.grand")) == 19
            },
        ),
    ]
}

#[test]
fn max_rows_counts_rows_reached_through_cascades_and_triggers() {
    require_privileged();
    let db = Db::create("fc2_cascades");
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks("class 10 cascades", &db, &cfg, &attack_corpus());
    let passed = lookalikes("class 10 cascades", &db, &cfg, &lookalike_corpus());
    report("class 10 (cascades)", &held, &passed);
}

/// The same over the extended protocol (tokio-postgres prepares and
/// executes): the dry run wraps the Execute.
#[test]
fn max_rows_counts_cascades_in_the_extended_protocol() {
    require_privileged();
    let db = Db::create("fc2_cascades_ext");
    let cfg = TestConfig::new(&[5432], POLICY);
    let client = env!("CARGO_BIN_EXE_pg-client");
    let fixture = || {
        db.sql("DROP SCHEMA IF EXISTS x CASCADE; CREATE SCHEMA x");
        db.sql(&FIXTURE.replace("{t}", "x"));
    };
    let children = || count(&db, "SELECT count(*) FROM x.child WHERE p = 1");
    let mut held = Tally {
        tried: 1,
        ..Tally::default()
    };
    fixture();
    let direct = Command::new(client)
        .args(["execute", "DELETE FROM x.parent WHERE id = 1"])
        .env("PGDATABASE", &db.name)
        .output()
        .expect("pg-client");
    let harmed = children() == 0;
    fixture();
    let out = text(&db.hoop(
        &cfg,
        &[client, "execute", "DELETE FROM x.parent WHERE id = 1"],
    ))
    .0;
    if harmed && children() == 20 && out.contains("42501") {
        held.ok = 1;
    } else {
        held.failures.push(format!(
            "extended cascade: direct {:?}, through hoop {out}",
            text(&direct).0
        ));
    }
    let mut passed = Tally {
        tried: 1,
        ..Tally::default()
    };
    fixture();
    let out = text(&db.hoop(
        &cfg,
        &[client, "execute", "DELETE FROM x.parent WHERE id = 4"],
    ))
    .0;
    if out.contains("\"affected\":1") && count(&db, "SELECT count(*) FROM x.child WHERE p = 4") == 0
    {
        passed.ok = 1;
    } else {
        passed.failures.push(format!("extended look-alike: {out}"));
    }
    report("class 10 (cascades, extended)", &held, &passed);
}

/// A hold rule with `max_rows`: the approver sees the count with the
/// cascaded rows in it, and the approved statement runs again (as a dry run
/// held to that count) and goes through.
#[test]
fn a_cascading_delete_is_held_with_its_whole_count_and_runs_once_approved() {
    require_privileged();
    let db = Db::create("fc2_cascades_hold");
    db.sql(&FIXTURE.replace("{t}", "public"));
    let cfg = TestConfig::new(
        &[5432],
        "policy:
  hold:
    - name: big-deletes
      statements: [delete]
      max_rows: 3
      approvers: [dba]
      timeout: 1m
      message: deletes of more than 3 rows need a DBA
",
    );
    let approver = Approver::install(&cfg, "fc-cascade-approver");
    let child = hoop_exec_spawn(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "psql -X -h 127.0.0.1 -U postgres -d {} -c 'DELETE FROM parent WHERE id = 1' 2>&1; sleep 1",
                db.name
            ),
        ],
    );
    let hold = approver.pending();
    // One parent, its 20 children and their 20 grandchildren.
    assert!(
        hold["message"]
            .as_str()
            .unwrap_or_default()
            .contains("41 rows"),
        "the approver sees the cascaded count: {hold}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM child WHERE p = 1"),
        20,
        "rolled back"
    );
    let id = hold["id"].as_str().expect("hold id").to_owned();
    let approved = approver.holds(&["approve", &id]);
    assert!(approved.status.success(), "{:?}", text(&approved));
    let out = wait_output(child, Duration::from_mins(1));
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("DELETE 1"), "{stdout}\n{stderr}");
    assert_eq!(count(&db, "SELECT count(*) FROM child WHERE p = 1"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM grand"), 0);
}
