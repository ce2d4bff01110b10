//! Issue 22: the per-statement fast paths (mask plans decided once per SQL
//! fingerprint and column description, detectors skipped for columns whose
//! type cannot hold what they look for) still mask whenever they must.
//! Through `hoop exec` with psql against the real PostgreSQL; each query is
//! also run against the bare database, to prove it returns the raw values
//! there.

use std::time::Duration;

use hoop_tests::{TestConfig, hoop_exec, psql_direct, require_privileged, text};

const T: Duration = Duration::from_secs(90);

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [hoop_fast_people.ssn]
      strategy: partial
      keep_last: 4
    - name: pin
      columns: [hoop_fast_people.pin]
      strategy: redact
    - name: contact
      detect: [email, credit_card]
      strategy: redact
";

/// Raw values that must not come through hoop (each appears in the bare
/// database's answers).
const RAW: [&str; 6] = [
    "123-45-6789",
    "987-65-4321",
    "ada@example.com",
    "zed@example.com",
    "4111111111111111",
    "918273645",
];

/// The queries, run once through hoop and once directly. Several share a
/// fingerprint (the same text with other literals) so the second runs from
/// the memo; `hoop_fast_shape.v` changes type between two runs of one text.
const SCRIPT: &str = r"SELECT ssn FROM hoop_fast_people WHERE id = 1;
SELECT ssn FROM hoop_fast_people WHERE id = 2;
SELECT ssn FROM hoop_fast_people WHERE id = 1;
SELECT id, pin FROM hoop_fast_people WHERE id = 1;
SELECT id, pin FROM hoop_fast_people WHERE id = 2;
SELECT id, note FROM hoop_fast_people WHERE id = 1;
SELECT id, note FROM hoop_fast_people WHERE id = 2;
SELECT big FROM hoop_fast_people WHERE id = 1;
SELECT big FROM hoop_fast_people WHERE id = 2;
SELECT v FROM hoop_fast_shape WHERE id = 1;
ALTER TABLE hoop_fast_shape ALTER COLUMN v TYPE text;
UPDATE hoop_fast_shape SET v = 'zed@example.com' WHERE id = 1;
SELECT v FROM hoop_fast_shape WHERE id = 1;
SELECT v FROM hoop_fast_shape WHERE id = 2;
SELECT 'marker' AS done;
";

fn setup() {
    psql_direct(
        "DROP TABLE IF EXISTS hoop_fast_people; DROP TABLE IF EXISTS hoop_fast_shape;
         CREATE TABLE hoop_fast_people (id int PRIMARY KEY, ssn text, pin int, note text, big int8);
         INSERT INTO hoop_fast_people VALUES
           (1, '123-45-6789', 918273645, 'write to ada@example.com', 4111111111111111),
           (2, '987-65-4321', 918273645, 'nothing here', 4111111111111111);
         CREATE TABLE hoop_fast_shape (id int PRIMARY KEY, v int);
         INSERT INTO hoop_fast_shape VALUES (1, 42), (2, 43);",
    );
}

#[test]
fn plans_kept_per_fingerprint_and_skipped_detectors_still_mask_what_they_must() {
    require_privileged();
    // The bare database returns every raw value (the same statements, the
    // DDL included).
    setup();
    let bare = psql_direct(SCRIPT);
    for raw in RAW {
        assert!(
            bare.contains(raw),
            "the bare database returns {raw:?}:\n{bare}"
        );
    }

    // Recorded, and not recorded (the rows are still inspected; no
    // execution is observed).
    for cfg in [
        TestConfig::new(&[5432], POLICY),
        TestConfig::unrecorded(&[5432], POLICY),
    ] {
        setup();
        masks_what_it_must(&cfg);
    }
}

fn masks_what_it_must(cfg: &TestConfig) {
    let script = cfg.dir.path().join("fast.sql");
    std::fs::write(&script, SCRIPT).expect("write script");
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "psql -X -At -h 127.0.0.1 -U postgres -d test -f {} 2>&1",
                script.display()
            ),
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("marker"),
        "the script ran to its end: {stdout}"
    );
    for raw in RAW {
        assert!(
            !stdout.contains(raw),
            "{raw:?} leaked through hoop:\n{stdout}"
        );
        assert!(!stderr.contains(raw), "{raw:?} in hoop's log:\n{stderr}");
    }
    let lines: Vec<&str> = stdout.lines().collect();
    // A column rule, on every run of one fingerprint.
    assert_eq!(lines[0], "***-**-6789", "{stdout}");
    assert_eq!(lines[1], "***-**-4321", "{stdout}");
    assert_eq!(lines[2], "***-**-6789", "{stdout}");
    // A column rule on an integer column: masked although detectors skip
    // integers; the id beside it is kept.
    assert!(lines[3].starts_with("1|[REDACTED"), "{stdout}");
    assert!(lines[4].starts_with("2|[REDACTED"), "{stdout}");
    // A detector on a text column, beside an int4 it skips. Its finding
    // promotes the column to a column rule of the detector rule (issue 27,
    // class 8): the next read masks the column whole.
    assert_eq!(lines[5], "1|write to [REDACTED:email]", "{stdout}");
    assert_eq!(lines[6], "2|[REDACTED:contact]", "{stdout}");
    // A card number fits in a bigint: int8 columns are still scanned (and
    // the finding promotes the column).
    assert_eq!(lines[7], "[REDACTED:credit_card]", "{stdout}");
    assert_eq!(lines[8], "[REDACTED:contact]", "{stdout}");
    // The same text described again after DDL: an int, then text holding
    // an email, which the detector finds (and promotes the column, so the
    // untouched row is masked whole next).
    assert_eq!(lines[9], "42", "{stdout}");
    assert!(
        stdout.contains("[REDACTED:email]\n[REDACTED:contact]\n"),
        "re-described result masked, then the promoted column: {stdout}"
    );
}

/// Judgements are cached by fingerprint (literals replaced), but two
/// decisions depend on a literal's value: whether a write's WHERE restricts
/// any row (`1 = 2 OR id = 5` does, `1 = 1 OR id = 5` does not), and which
/// output column `ORDER BY 2` sorts by. A statement allowed first must not
/// lend its verdict to a look-alike that differs only there.
#[test]
fn verdicts_that_depend_on_a_literal_are_not_reused_for_look_alikes() {
    require_privileged();
    let reset = "DROP TABLE IF EXISTS hoop_fast_rows; CREATE TABLE hoop_fast_rows (id int, ssn text);
         INSERT INTO hoop_fast_rows SELECT g, '123-45-' || (1000 + g) FROM generate_series(1, 10) g;";
    let script = "DELETE FROM hoop_fast_rows WHERE 1 = 2 OR id = 5;
DELETE FROM hoop_fast_rows WHERE 1 = 1 OR id = 6;
SELECT id, ssn FROM hoop_fast_rows ORDER BY 1 LIMIT 1;
SELECT id, ssn FROM hoop_fast_rows ORDER BY 2 LIMIT 1;
SELECT 'rows left: ' || count(*) FROM hoop_fast_rows;
";
    // On the bare database the look-alike deletes every row.
    psql_direct(reset);
    let bare = psql_direct(script);
    assert!(bare.contains("rows left: 0"), "{bare}");

    psql_direct(reset);
    let cfg = TestConfig::new(
        &[5432],
        "policy:
  mask:
    - name: ssn
      columns: [hoop_fast_rows.ssn]
      strategy: partial
      keep_last: 4
      predicates: deny
  deny:
    - name: no-unbounded-writes
      statements: [delete, update]
      without_where: true
",
    );
    let file = cfg.dir.path().join("lookalikes.sql");
    std::fs::write(&file, script).expect("write script");
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "psql -X -At -h 127.0.0.1 -U postgres -d test -f {} 2>&1",
                file.display()
            ),
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("DELETE 1"),
        "the restricted delete ran: {stdout}"
    );
    assert!(
        stdout.contains("rule `no-unbounded-writes`"),
        "the tautology is denied: {stdout}"
    );
    assert!(stdout.contains("rows left: 9"), "{stdout}");
    assert!(
        stdout.contains("1|***-**-1001"),
        "sorting by id is allowed: {stdout}"
    );
    assert!(
        stdout.contains("rule `ssn`"),
        "sorting by the masked column is denied: {stdout}"
    );
}

/// The same SQL prepared again through the extended protocol (tokio-
/// postgres, binary results) after DDL changed its result's type: the
/// fingerprint is the same, the description is not, and the detector finds
/// the email the column now holds.
#[test]
fn a_prepared_statement_described_again_after_ddl_is_masked() {
    require_privileged();
    let reset = "DROP TABLE IF EXISTS hoop_fast_prep; CREATE TABLE hoop_fast_prep (id int PRIMARY KEY, v int);
         INSERT INTO hoop_fast_prep VALUES (1, 42);";
    let steps = [
        "SELECT v FROM hoop_fast_prep WHERE id = 1",
        "ALTER TABLE hoop_fast_prep ALTER COLUMN v TYPE text",
        "UPDATE hoop_fast_prep SET v = 'zed@example.com' WHERE id = 1",
        "SELECT v FROM hoop_fast_prep WHERE id = 1",
    ];
    let client = env!("CARGO_BIN_EXE_pg-client");
    // Directly, the last query returns the address.
    psql_direct(reset);
    let bare = std::process::Command::new(client)
        .arg("query")
        .args(steps)
        .output()
        .expect("run pg-client");
    let bare = String::from_utf8_lossy(&bare.stdout);
    assert!(bare.contains("zed@example.com"), "{bare}");

    psql_direct(reset);
    let cfg = TestConfig::new(&[5432], POLICY);
    let mut args = vec![client, "query"];
    args.extend(steps);
    let out = hoop_exec(&cfg.path, &args, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0]["rows"][0][0], 42, "{stdout}");
    assert_eq!(lines[3]["rows"][0][0], "[REDACTED:email]", "{stdout}");
    assert!(!stdout.contains("zed@example.com"), "{stdout}");
    assert!(!stderr.contains("zed@example.com"), "{stderr}");
}
