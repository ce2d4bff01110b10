//! The fail-closed corpora (issue 23): attacks and innocent look-alikes,
//! each run against the bare PostgreSQL and through `hoop exec`.
//!
//! Every attack must do its damage (or leak) directly — otherwise the corpus
//! proves nothing — and must not through hoop. Every look-alike must do
//! what it says through hoop. Each case gets fixtures of its own (`{t}` in
//! its SQL is a name unique to the case, prefixed `fc_`), in a database of
//! the class's own that the run creates and drops.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use crate::{TestConfig, hoop_exec, text};

/// How long one `hoop exec` may take.
const T: Duration = Duration::from_mins(3);

/// A database of the test's own, dropped when the value is.
pub struct Db {
    /// Its name.
    pub name: String,
}

fn psql(db: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-h",
        "127.0.0.1",
        "-p",
        "5432",
        "-U",
        "postgres",
        "-d",
        db,
    ]);
    c
}

impl Db {
    /// Creates (or re-creates) database `name`.
    pub fn create(name: &str) -> Self {
        let admin = |sql: &str| {
            let out = psql("postgres")
                .args(["-qAtc", sql])
                .output()
                .expect("run psql");
            assert!(
                out.status.success(),
                "{sql}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        admin(&format!("CREATE DATABASE {name}"));
        Self {
            name: name.to_owned(),
        }
    }

    /// Runs SQL directly (not governed); it must succeed. Its output.
    pub fn sql(&self, sql: &str) -> String {
        let out = psql(&self.name)
            .args(["-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A single value, directly.
    pub fn value(&self, sql: &str) -> String {
        self.sql(sql)
    }

    /// Whether a relation exists.
    pub fn exists(&self, relation: &str) -> bool {
        self.value(&format!("SELECT to_regclass('{relation}') IS NOT NULL")) == "t"
    }

    /// `count(*)` of a table (-1 when it does not exist).
    pub fn count(&self, table: &str) -> i64 {
        if !self.exists(table) {
            return -1;
        }
        self.value(&format!("SELECT count(*) FROM {table}"))
            .parse()
            .unwrap_or(-1)
    }

    /// Runs a psql script directly: its output (stdout and stderr, in order).
    pub fn script_direct(&self, script: &str, dir: &Path) -> String {
        let file = dir.join("direct.sql");
        std::fs::write(&file, script).expect("write script");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "psql -X -h 127.0.0.1 -p 5432 -U postgres -d {} -f {} 2>&1",
                self.name,
                file.display()
            ))
            .output()
            .expect("run psql");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a psql script through `hoop exec` with `cfg`: its output, and
    /// whether psql succeeded.
    pub fn script_hoop(&self, cfg: &TestConfig, script: &str) -> (bool, String) {
        let file = cfg.dir.path().join("hoop.sql");
        std::fs::write(&file, script).expect("write script");
        let out = hoop_exec(
            &cfg.path,
            &[
                "sh",
                "-c",
                &format!(
                    "psql -X -h 127.0.0.1 -U postgres -d {} -f {} 2>&1",
                    self.name,
                    file.display()
                ),
            ],
            T,
        );
        let (stdout, stderr) = text(&out);
        (
            out.status.success(),
            format!("{stdout}\n--- hoop\n{stderr}"),
        )
    }

    /// Runs a command (with `PGDATABASE` set to this database) through
    /// `hoop exec`.
    pub fn hoop(&self, cfg: &TestConfig, args: &[&str]) -> Output {
        let script = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ");
        hoop_exec(
            &cfg.path,
            &[
                "sh",
                "-c",
                &format!("PGDATABASE={} exec {script}", self.name),
            ],
            T,
        )
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = psql("postgres")
            .args([
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// What a case checks after it ran: the database and the client's output
/// (`true`: the damage or leak happened, for an attack; the expected
/// effect happened, for a look-alike).
pub type Check = Box<dyn Fn(&Db, &str, &str) -> bool>;

/// One case: fixtures, the SQL (a psql script), and its check. `{t}` in
/// `setup` and `sql` is the case's own name prefix; the check gets it too.
pub struct Case {
    /// What it tries.
    pub name: &'static str,
    /// Fixtures, run directly.
    pub setup: String,
    /// The psql script.
    pub sql: String,
    /// See [`Check`].
    pub check: Check,
}

impl Case {
    /// A case.
    pub fn new(
        name: &'static str,
        setup: impl Into<String>,
        sql: impl Into<String>,
        check: impl Fn(&Db, &str, &str) -> bool + 'static,
    ) -> Self {
        Self {
            name,
            setup: setup.into(),
            sql: sql.into(),
            check: Box::new(check),
        }
    }
}

/// The `{t}` of case `i`.
pub fn prefix(i: usize) -> String {
    format!("fc_{i}")
}

fn fill(text: &str, t: &str) -> String {
    text.replace("{t}", t)
}

const MARK: &str = "@@fc-case ";

/// The script running every case in turn, each introduced by a marker.
fn script(cases: &[Case]) -> String {
    // Rows as `a|b`, without headers; errors, notices and command tags stay.
    let mut out = String::from("\\pset format unaligned\n\\pset tuples_only on\n");
    for (i, case) in cases.iter().enumerate() {
        let _ = writeln!(out, "\\echo {MARK}{i}@@");
        out.push_str(&fill(&case.sql, &prefix(i)));
        out.push('\n');
    }
    let _ = writeln!(out, "\\echo {MARK}end@@");
    out
}

/// The output of case `i`, cut out of a whole script's.
fn section(output: &str, i: usize) -> String {
    let start = format!("{MARK}{i}@@");
    let Some(at) = output.find(&start) else {
        return String::new();
    };
    let rest = &output[at + start.len()..];
    let end = rest.find(MARK).unwrap_or(rest.len());
    rest[..end].to_owned()
}

fn set_up(db: &Db, cases: &[Case]) {
    for (i, case) in cases.iter().enumerate() {
        if !case.setup.trim().is_empty() {
            db.sql(&fill(&case.setup, &prefix(i)));
        }
    }
}

/// Event triggers are database-wide: an attack's must not fire on the
/// next run's fixtures.
fn drop_event_triggers(db: &Db) {
    db.sql(
        "DO $$ DECLARE r record; BEGIN \
         FOR r IN SELECT evtname FROM pg_event_trigger LOOP \
         EXECUTE 'DROP EVENT TRIGGER ' || quote_ident(r.evtname); END LOOP; END $$",
    );
}

/// The outcome of a corpus run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Cases tried.
    pub tried: usize,
    /// Cases that came out as they must.
    pub ok: usize,
    /// What went wrong, one line per case.
    pub failures: Vec<String>,
}

/// Runs attacks: each must harm the bare database (its check true) and must
/// not through hoop (its check false). Every case's fixtures are made afresh
/// for each run. Returns the tally of attacks held by hoop; an attack that
/// does no harm directly is a failure of the corpus itself.
pub fn attacks(class: &str, db: &Db, cfg: &TestConfig, cases: &[Case]) -> Tally {
    let mut tally = Tally {
        tried: cases.len(),
        ..Tally::default()
    };
    let reset = || {
        drop_event_triggers(db);
        for i in 0..cases.len() {
            db.sql(&format!(
                "DROP SCHEMA IF EXISTS {t} CASCADE; DROP SCHEMA IF EXISTS {t}_b CASCADE; \
                 CREATE SCHEMA {t}; CREATE SCHEMA {t}_b",
                t = prefix(i)
            ));
        }
        set_up(db, cases);
    };
    reset();
    let direct = db.script_direct(&script(cases), cfg.dir.path());
    let mut real = vec![false; cases.len()];
    for (i, case) in cases.iter().enumerate() {
        let out = section(&direct, i);
        real[i] = (case.check)(db, &prefix(i), &out);
        if !real[i] {
            tally.failures.push(format!(
                "{class} attack {i} `{}` does no harm on the bare database, so it proves nothing:\n{out}",
                case.name
            ));
        }
    }
    reset();
    let (_, through) = db.script_hoop(cfg, &script(cases));
    for (i, case) in cases.iter().enumerate() {
        let out = section(&through, i);
        let harmed = (case.check)(db, &prefix(i), &out);
        if harmed {
            tally.failures.push(format!(
                "{class} attack {i} `{}` got through hoop:\n{out}",
                case.name
            ));
        } else if real[i] {
            tally.ok += 1;
        }
    }
    if tally.failures.iter().any(|f| f.contains("got through")) {
        eprintln!(
            "hoop's log:\n{}",
            &through[through.find("--- hoop").unwrap_or(0)..]
        );
    }
    tally
}

/// Runs look-alikes through hoop: each must do what its check says.
pub fn lookalikes(class: &str, db: &Db, cfg: &TestConfig, cases: &[Case]) -> Tally {
    let mut tally = Tally {
        tried: cases.len(),
        ..Tally::default()
    };
    drop_event_triggers(db);
    for i in 0..cases.len() {
        db.sql(&format!(
            "DROP SCHEMA IF EXISTS {t} CASCADE; DROP SCHEMA IF EXISTS {t}_b CASCADE; \
             CREATE SCHEMA {t}; CREATE SCHEMA {t}_b",
            t = prefix(i)
        ));
    }
    set_up(db, cases);
    let (_, through) = db.script_hoop(cfg, &script(cases));
    for (i, case) in cases.iter().enumerate() {
        let out = section(&through, i);
        if (case.check)(db, &prefix(i), &out) {
            tally.ok += 1;
        } else {
            tally.failures.push(format!(
                "{class} look-alike {i} `{}` did not work through hoop:\n{out}",
                case.name
            ));
        }
    }
    tally
}

/// Prints the class's counts (for the report) and fails on any failure.
pub fn report(class: &str, attacks: &Tally, lookalikes: &Tally) {
    eprintln!(
        "{class}: attacks held {}/{}, look-alikes passed {}/{}",
        attacks.ok, attacks.tried, lookalikes.ok, lookalikes.tried
    );
    let failures: Vec<&String> = attacks
        .failures
        .iter()
        .chain(&lookalikes.failures)
        .collect();
    assert!(
        failures.is_empty(),
        "{class}: {} failure(s):\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
}

/// Whether psql output shows an error (psql prints `ERROR:` or `FATAL:`).
pub fn errored(out: &str) -> bool {
    out.contains("ERROR:") || out.contains("FATAL:") || out.contains("server closed")
}
