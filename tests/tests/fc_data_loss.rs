//! Issue 23, class 4: no silent data loss. On every result path — simple
//! and extended protocol, portals read in chunks, COPY in text, CSV and
//! binary, cursors (text and binary) — a result with masked columns comes
//! through hoop either complete and masked, or as an error that says why;
//! never truncated, emptied or partial with a success status. Each attack
//! path delivers the raw values on the bare database; the look-alikes
//! carry no masked column and must come through byte for byte.

use std::process::{Command, Output};

use hoop_tests::{
    TestConfig,
    failclosed::{Db, Tally, report},
    require_privileged, text,
};

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [people.ssn]
      strategy: redact
    - name: contact
      detect: [email]
      strategy: redact
";

/// People with SSNs and emails, many enough to span several network reads.
fn fixture(db: &Db) {
    db.sql(
        "DROP TABLE IF EXISTS people;
         CREATE TABLE people (id int PRIMARY KEY, name text, ssn text, email text);
         INSERT INTO people
           SELECT g, 'person ' || g,
                  lpad((100 + g % 800)::text, 3, '0') || '-' || lpad((10 + g % 89)::text, 2, '0') || '-' || lpad((1000 + g)::text, 4, '0'),
                  'user' || g || '@example.com'
           FROM generate_series(1, 3000) g;",
    );
}

const ROWS: usize = 3000;

/// Whether raw bytes hold an SSN (`ddd-dd-dddd`) or an email of the fixture.
fn raw(out: &[u8]) -> bool {
    let ssn = out.windows(11).any(|w| {
        w.iter().enumerate().all(|(i, b)| match i {
            3 | 6 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
    });
    ssn || out.windows(12).any(|w| w == b"@example.com")
}

/// The number of tuples in binary COPY data, or `None` when it is not
/// well formed (or is cut short).
fn binary_tuples(data: &[u8]) -> Option<usize> {
    let header = b"PGCOPY\n\xff\r\n\0";
    let rest = data.strip_prefix(&header[..])?;
    let ext = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
    let mut at = 8 + ext;
    let mut tuples = 0;
    loop {
        let fields = i16::from_be_bytes(rest.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        if fields == -1 {
            return (at == rest.len()).then_some(tuples);
        }
        for _ in 0..fields {
            let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
            at += 4;
            if len > 0 {
                at += len as usize;
            }
        }
        tuples += 1;
    }
}

/// How many rows a path's output holds.
#[derive(Clone, Copy)]
enum Count {
    /// Lines that start with `row:`.
    Lines,
    /// Binary COPY tuples.
    Binary,
    /// pg-client JSON: rows of its first result.
    Json,
}

fn rows(count: Count, out: &[u8]) -> Option<usize> {
    match count {
        Count::Lines => Some(
            String::from_utf8_lossy(out)
                .lines()
                .filter(|l| l.starts_with("row:") || l.starts_with("\"row:"))
                .count(),
        ),
        Count::Binary => binary_tuples(out),
        Count::Json => {
            let text = String::from_utf8_lossy(out);
            let first: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
            first["rows"].as_array().map(Vec::len)
        }
    }
}

/// What must come through hoop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Every row, masked.
    Complete,
    /// An error saying why (nothing masked can be sent).
    Refused,
}

struct PathCase {
    name: &'static str,
    /// The client command (psql or pg-client) and its arguments.
    command: Vec<String>,
    count: Count,
    expect: Expect,
}

fn psql(sql: &str) -> Vec<String> {
    [
        "psql",
        "-X",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-At",
        "-c",
        sql,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn psql_script(script: &str) -> Vec<String> {
    let mut args = psql("");
    args.truncate(args.len() - 2);
    args.extend(["-c".to_owned(), script.to_owned()]);
    args
}

fn client(args: &[&str]) -> Vec<String> {
    std::iter::once(env!("CARGO_BIN_EXE_pg-client").to_owned())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect()
}

fn run_direct(db: &Db, command: &[String]) -> Output {
    Command::new(&command[0])
        .args(&command[1..])
        .env("PGDATABASE", &db.name)
        .output()
        .expect("run client")
}

fn run_hoop(db: &Db, cfg: &TestConfig, command: &[String]) -> Output {
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    db.hoop(cfg, &args)
}

fn failed(out: &Output) -> bool {
    let (stdout, stderr) = text(out);
    !out.status.success()
        || stdout.contains("\"error\"")
        || stderr.contains("ERROR")
        || stderr.contains("FATAL")
}

fn said_why(out: &Output) -> bool {
    let (stdout, stderr) = text(out);
    let all = format!("{stdout}{stderr}");
    all.contains("hoop cannot mask") || all.contains("42501")
}

fn attack_paths() -> Vec<PathCase> {
    use Count::{Binary, Json, Lines};
    use Expect::{Complete, Refused};
    let c = |name, command, count, expect| PathCase {
        name,
        command,
        count,
        expect,
    };
    vec![
        c(
            "simple query, text",
            psql("SELECT 'row:' || id, ssn, email FROM people ORDER BY id"),
            Lines,
            Complete,
        ),
        c(
            "simple query, two statements",
            psql_script(
                "SELECT 'row:' || id, ssn FROM people WHERE id <= 1500; SELECT 'row:' || id, ssn FROM people WHERE id > 1500",
            ),
            Lines,
            Complete,
        ),
        c(
            "extended protocol, binary results",
            client(&["query", "SELECT id, ssn, email FROM people ORDER BY id"]),
            Json,
            Complete,
        ),
        c(
            "extended protocol, a portal read in chunks",
            client(&["portal", "SELECT id, ssn FROM people ORDER BY id", "7"]),
            Json,
            Complete,
        ),
        c(
            "extended protocol, an int computed from a masked column in binary",
            client(&["query", "SELECT id, length(ssn) FROM people ORDER BY id"]),
            Json,
            Refused,
        ),
        c(
            "COPY table, text",
            psql("COPY (SELECT 'row:' || id, ssn, email FROM people) TO STDOUT"),
            Lines,
            Complete,
        ),
        c(
            "COPY table, CSV with a header",
            psql("COPY (SELECT 'row:' || id AS r, ssn FROM people) TO STDOUT (FORMAT csv, HEADER)"),
            Lines,
            Complete,
        ),
        c(
            "COPY table, binary",
            psql("COPY people TO STDOUT (FORMAT binary)"),
            Binary,
            Complete,
        ),
        c(
            "COPY table with a column list, binary",
            psql("COPY people (id, ssn) TO STDOUT (FORMAT binary)"),
            Binary,
            Complete,
        ),
        c(
            "COPY query, binary",
            psql("COPY (SELECT id, ssn FROM people ORDER BY id) TO STDOUT (FORMAT binary)"),
            Binary,
            Complete,
        ),
        c(
            "COPY query of whole rows as jsonb, binary",
            psql("COPY (SELECT to_jsonb(p) FROM people p) TO STDOUT (FORMAT binary)"),
            Binary,
            Complete,
        ),
        c(
            "COPY query of emails (a detector), binary",
            psql("COPY (SELECT email FROM people) TO STDOUT (FORMAT binary)"),
            Binary,
            Complete,
        ),
        c(
            "COPY query, binary, an int computed from a masked column",
            psql("COPY (SELECT id, length(ssn) FROM people) TO STDOUT (FORMAT binary)"),
            Binary,
            Refused,
        ),
        c(
            "\\copy, CSV",
            psql("\\copy (SELECT 'row:' || id AS r, ssn FROM people) to stdout with (format csv)"),
            Lines,
            Complete,
        ),
        c(
            "cursor, text",
            psql_script(
                "BEGIN; DECLARE c CURSOR FOR SELECT 'row:' || id, ssn FROM people ORDER BY id; FETCH ALL FROM c; COMMIT",
            ),
            Lines,
            Complete,
        ),
        c(
            "cursor read in batches",
            psql_script(
                "BEGIN; DECLARE c CURSOR FOR SELECT 'row:' || id, ssn FROM people ORDER BY id; FETCH 1000 FROM c; FETCH 1000 FROM c; FETCH 1000 FROM c; FETCH 1000 FROM c; COMMIT",
            ),
            Lines,
            Complete,
        ),
        c(
            "binary cursor, a text column",
            psql_script(
                "BEGIN; DECLARE c BINARY CURSOR FOR SELECT 'row:' || id, ssn FROM people ORDER BY id; FETCH ALL FROM c; COMMIT",
            ),
            Lines,
            Complete,
        ),
        c(
            "binary cursor, an int computed from a masked column",
            psql_script(
                "BEGIN; DECLARE c BINARY CURSOR FOR SELECT 'row:' || id, length(ssn) FROM people ORDER BY id; FETCH ALL FROM c; COMMIT",
            ),
            Lines,
            Refused,
        ),
    ]
}

fn lookalike_paths() -> Vec<Vec<String>> {
    vec![
        psql("COPY (SELECT id, name FROM people ORDER BY id) TO STDOUT (FORMAT binary)"),
        psql("COPY people (id, name) TO STDOUT"),
        psql("COPY people (id, name) TO STDOUT (FORMAT csv, HEADER)"),
        psql("SELECT id, name FROM people ORDER BY id"),
        client(&["query", "SELECT id, name FROM people ORDER BY id"]),
        client(&["portal", "SELECT id, name FROM people ORDER BY id", "13"]),
        psql_script(
            "BEGIN; DECLARE c BINARY CURSOR FOR SELECT id, name FROM people ORDER BY id; FETCH ALL FROM c; COMMIT",
        ),
    ]
}

#[test]
fn every_result_path_is_complete_and_masked_or_refused_never_cut_short() {
    require_privileged();
    let db = Db::create("fc_data_loss");
    fixture(&db);
    let cfg = TestConfig::new(&[5432], POLICY);
    let mut held = Tally::default();
    for case in attack_paths() {
        held.tried += 1;
        let direct = run_direct(&db, &case.command);
        let direct_rows = rows(case.count, &direct.stdout);
        // Directly, the path delivers every row: the raw values, or (for
        // what cannot be masked) values computed from them.
        let real = direct.status.success()
            && direct_rows.is_some_and(|n| n >= ROWS)
            && (raw(&direct.stdout) || case.expect == Expect::Refused);
        let through = run_hoop(&db, &cfg, &case.command);
        let leaked = raw(&through.stdout) || raw(text(&through).1.as_bytes());
        let through_rows = rows(case.count, &through.stdout);
        let ok = !leaked
            && match case.expect {
                Expect::Complete => {
                    !failed(&through)
                        && through_rows == direct_rows
                        && direct_rows.is_some_and(|n| n >= ROWS)
                }
                Expect::Refused => failed(&through) && said_why(&through),
            };
        if real && ok {
            held.ok += 1;
        } else {
            let (so, se) = text(&through);
            held.failures.push(format!(
                "class 4 path `{}`: real on the bare database {real}, leaked {leaked}, rows direct {direct_rows:?} through {through_rows:?}, status {}:\n{}\n{}",
                case.name,
                through.status,
                so.chars().take(600).collect::<String>(),
                se.chars().take(2000).collect::<String>()
            ));
        }
    }
    let mut passed = Tally::default();
    for command in lookalike_paths() {
        passed.tried += 1;
        let direct = run_direct(&db, &command);
        let through = run_hoop(&db, &cfg, &command);
        if through.status.success() && !direct.stdout.is_empty() && through.stdout == direct.stdout
        {
            passed.ok += 1;
        } else {
            passed.failures.push(format!(
                "class 4 look-alike `{}`: not byte for byte ({} vs {} bytes): {}",
                command.join(" "),
                direct.stdout.len(),
                through.stdout.len(),
                text(&through).1
            ));
        }
    }
    report("class 4 (no silent data loss)", &held, &passed);
}

#[test]
fn binary_copy_counts_tuples_and_rejects_truncation() {
    let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
    data.extend_from_slice(&[0; 8]);
    data.extend_from_slice(&[0, 1, 0, 0, 0, 1, b'x']);
    data.extend_from_slice(&[0xff, 0xff]);
    assert_eq!(binary_tuples(&data), Some(1));
    assert_eq!(binary_tuples(&data[..data.len() - 2]), None, "no trailer");
    assert_eq!(binary_tuples(b""), None);
    assert!(raw(b"x 123-45-6789 y"));
    assert!(!raw(b"x [REDACTED:ssn] y"));
}
