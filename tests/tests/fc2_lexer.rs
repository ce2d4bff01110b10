//! Issue 27, class 9: the lexer must end strings, comments and statements
//! where the server does. Each attack is one Query message (`psql -c`, so
//! psql does not split it) that hides a `DROP TABLE` from a lexer that
//! reads the text differently from the server: a backslash that is half of
//! a character in SJIS, BIG5, GBK or UHC, a comment that ends at `\r`, a
//! quote that `standard_conforming_strings = off` escapes. On the bare
//! database each drops the table; through hoop, with a rule denying DROP,
//! the table survives. The look-alikes are the same encodings and settings
//! with harmless text, which must keep working.

use std::{
    process::{Command, Output},
    time::Duration,
};

use hoop_tests::{TestConfig, failclosed::Db, hoop_exec, require_privileged, text};

const POLICY: &str = "policy:
  deny:
    - name: no-drop
      statements: [drop]
      message: DROP is not allowed here
";

const T: Duration = Duration::from_mins(2);

/// One case: a client environment (`PGCLIENTENCODING`, `PGOPTIONS`) and a
/// `psql -c` text; `{t}` is the case's table.
struct Case {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
    /// A statement sent first, as a Query of its own (a `SET` takes effect
    /// only for the messages after its own).
    pre: &'static str,
    sql: &'static str,
}

fn attacks() -> Vec<Case> {
    vec![
        Case {
            name: "SJIS: the backslash is the second byte of a character",
            env: &[("PGCLIENTENCODING", "SJIS")],
            pre: "",
            sql: "SELECT E'さ\\'; DROP TABLE {t}; --'",
        },
        Case {
            name: "BIG5: the same with another lead byte",
            env: &[("PGCLIENTENCODING", "BIG5")],
            pre: "",
            sql: "SELECT E'严\\'; DROP TABLE {t}; --'",
        },
        Case {
            name: "GBK",
            env: &[("PGCLIENTENCODING", "GBK")],
            pre: "",
            sql: "SELECT E'さ\\'; DROP TABLE {t}; --'",
        },
        Case {
            name: "SJIS set by SET in the same session",
            env: &[],
            pre: "SET client_encoding = 'SJIS'",
            sql: "SELECT E'さ\\'; DROP TABLE {t}; --'",
        },
        Case {
            name: "a -- comment ends at a carriage return",
            env: &[],
            pre: "",
            sql: "SELECT 1 -- harmless\r; DROP TABLE {t}",
        },
        Case {
            name: "standard_conforming_strings off: a backslash escapes the quote",
            env: &[("PGOPTIONS", "-c standard_conforming_strings=off")],
            pre: "",
            sql: "SELECT 'x\\' , ' ; DROP TABLE {t}; --'",
        },
        Case {
            name: "standard_conforming_strings off by SET",
            env: &[],
            pre: "SET standard_conforming_strings = off",
            sql: "SELECT 'x\\' , ' ; DROP TABLE {t}; --'",
        },
    ]
}

fn lookalikes() -> Vec<(Case, &'static str)> {
    vec![
        (
            Case {
                name: "SJIS with ASCII text",
                env: &[("PGCLIENTENCODING", "SJIS")],
                pre: "",
                sql: "SELECT 'ok:' || count(*) FROM {t}",
            },
            "ok:0",
        ),
        (
            Case {
                name: "UTF8 with non-ASCII text and a backslash",
                env: &[("PGCLIENTENCODING", "UTF8")],
                pre: "",
                sql: "SELECT E'さ\\\\' || 'ok'",
            },
            "さ\\ok",
        ),
        (
            Case {
                name: "a comment with a carriage return in a harmless statement",
                env: &[],
                pre: "",
                sql: "SELECT 'ok:' || 1 -- note\r",
            },
            "ok:1",
        ),
        (
            Case {
                name: "a backslash in a plain literal that ends the same either way",
                env: &[],
                pre: "",
                sql: "SELECT 'ok:a\\b'",
            },
            "ok:a\\b",
        ),
    ]
}

fn psql_args(db: &Db, case: &Case, t: &str) -> Vec<String> {
    let mut args = vec!["env".to_owned()];
    args.extend(case.env.iter().map(|(k, v)| format!("{k}={v}")));
    args.extend(
        [
            "psql",
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            &db.name,
        ]
        .map(str::to_owned),
    );
    if !case.pre.is_empty() {
        args.extend(["-c".to_owned(), case.pre.to_owned()]);
    }
    args.extend(["-c".to_owned(), case.sql.replace("{t}", t)]);
    args
}

fn direct(args: &[String]) -> Output {
    Command::new(&args[0])
        .args(&args[1..])
        .output()
        .expect("run psql")
}

fn through(cfg: &TestConfig, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    hoop_exec(&cfg.path, &args, T)
}

#[test]
fn statements_end_where_the_server_ends_them() {
    require_privileged();
    let db = Db::create("fc2_lexer");
    let cfg = TestConfig::new(&[5432], POLICY);
    let mut failures = Vec::new();
    let cases = attacks();
    for (i, case) in cases.iter().enumerate() {
        let t = format!("victim_{i}");
        let args = psql_args(&db, case, &t);
        db.sql(&format!("CREATE TABLE {t} (id int)"));
        let out = direct(&args);
        if db.exists(&t) {
            failures.push(format!(
                "attack `{}` does not drop the table on the bare database, so it proves nothing: {}{}",
                case.name,
                text(&out).0,
                text(&out).1
            ));
            db.sql(&format!("DROP TABLE {t}"));
        }
        db.sql(&format!("CREATE TABLE {t} (id int)"));
        let out = through(&cfg, &args);
        if !db.exists(&t) {
            failures.push(format!(
                "attack `{}` dropped the table through hoop: {}{}",
                case.name,
                text(&out).0,
                text(&out).1
            ));
        }
    }
    let held = cases.len() - failures.len();
    let looks = lookalikes();
    let mut passed = 0;
    for (i, (case, expect)) in looks.iter().enumerate() {
        let t = format!("quiet_{i}");
        db.sql(&format!("CREATE TABLE {t} (id int)"));
        let out = through(&cfg, &psql_args(&db, case, &t));
        let (stdout, stderr) = text(&out);
        if out.status.success() && stdout.contains(expect) {
            passed += 1;
        } else {
            failures.push(format!(
                "look-alike `{}` did not work through hoop (expected {expect:?}): {stdout}{}",
                case.name, stderr
            ));
        }
    }
    eprintln!(
        "class 9 (the lexer): attacks held {held}/{}, look-alikes passed {passed}/{}",
        cases.len(),
        looks.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n----\n"));
}
