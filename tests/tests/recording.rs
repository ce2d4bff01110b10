//! Issue 5: recordings auditors can trust, and metrics that move by exactly
//! what a session did. Through `hoop exec`, against the real PostgreSQL.

#![allow(clippy::float_cmp)] // metric deltas are small integers, exact in f64

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use hoop_tests::{
    TestConfig, hoop_bin, hoop_exec, hoop_exec_spawn, metric, psql_args, psql_direct,
    require_privileged, text, wait_output,
};

const T: Duration = Duration::from_mins(1);

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [customers.ssn]
      strategy: partial
      keep_last: 4
    - name: contact
      detect: [email]
      strategy: redact
  deny:
    - name: no-ddl
      statements: [drop, truncate]
      message: destructive DDL is not allowed here
";

fn setup() {
    psql_direct(
        "DROP TABLE IF EXISTS customers CASCADE;
         CREATE TABLE customers (id int PRIMARY KEY, name text, ssn text UNIQUE, email text);
         INSERT INTO customers VALUES (1, 'Ada', '123-45-6789', 'ada@example.com'), (2, 'Bob', '987-65-4321', 'bob@corp.example');",
    );
}

fn config() -> TestConfig {
    TestConfig::new(&[5432], POLICY)
}

fn with_recording(cfg: &TestConfig, settings: &str) {
    let yaml = std::fs::read_to_string(&cfg.path).expect("config");
    let dir_line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("dir:"))
        .expect("recording.dir")
        .to_owned();
    std::fs::write(
        &cfg.path,
        yaml.replace(&dir_line, &format!("{dir_line}\n{settings}")),
    )
    .expect("config");
}

fn rec_dir(cfg: &TestConfig) -> PathBuf {
    cfg.dir.path().join("recordings")
}

fn recordings(cfg: &TestConfig, args: &[&str]) -> std::process::Output {
    Command::new(hoop_bin())
        .arg("recordings")
        .arg("--dir")
        .arg(rec_dir(cfg))
        .args(args)
        .output()
        .expect("hoop recordings")
}

fn only_recording(cfg: &TestConfig) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(rec_dir(cfg))
        .expect("recording dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().expect("one")
}

fn id_of(path: &Path) -> String {
    path.file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned()
}

fn all_bytes_in(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).expect("dir").filter_map(Result::ok) {
        all.push_str(&String::from_utf8_lossy(
            &std::fs::read(e.path()).expect("read"),
        ));
    }
    all
}

#[test]
fn a_session_is_recorded_in_order_with_verdicts_and_no_raw_values() {
    require_privileged();
    setup();
    let cfg = config();
    with_recording(&cfg, "  rows: full");
    let sql = "SELECT id, ssn, email FROM customers ORDER BY id;
SELECT upper(ssn) FROM customers;
DROP TABLE customers;
SELECT 1/0;
INSERT INTO customers VALUES (3, 'Eve', '123-45-6789', 'eve@example.com');
";
    let script = cfg.dir.path().join("s.sql");
    std::fs::write(&script, sql).expect("script");
    let out = hoop_exec(
        &cfg.path,
        &psql_args(&["-f", &script.display().to_string()]),
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("***-**-6789"), "{stdout}\n{stderr}");
    let file = only_recording(&cfg);
    let show = recordings(&cfg, &["show", &id_of(&file)]);
    let transcript = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    // In order, with the right verdicts, results and errors.
    let order = [
        "SELECT id, ssn, email FROM customers",
        "verdict: allow",
        "***-**-6789",
        "SELECT 2",
        "SELECT upper(ssn)",
        "DROP TABLE customers",
        "verdict: DENY (rule no-ddl",
        "SELECT 1/0",
        "22012",
        "INSERT INTO customers",
        "23505",
    ];
    let mut at = 0;
    for needle in order {
        let found = transcript[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing after byte {at}:\n{transcript}"));
        at += found + needle.len();
    }
    // The raw values appear nowhere in the recording directory.
    let everything = all_bytes_in(&rec_dir(&cfg));
    for raw in [
        "123-45-6789",
        "987-65-4321",
        "ada@example.com",
        "bob@corp.example",
        "eve@example.com",
    ] {
        assert!(
            !everything.contains(raw),
            "{raw} written to a recording:\n{everything}"
        );
    }
    let verify = recordings(&cfg, &["verify", "--all"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("intact"));
    // list, replay and export work on it.
    let list = recordings(&cfg, &["list", "--json"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("postgres"));
    let replay = recordings(&cfg, &["replay", &id_of(&file), "--speed", "0"]);
    assert!(String::from_utf8_lossy(&replay.stdout).contains("DROP TABLE customers"));
    let export = recordings(&cfg, &["export", &id_of(&file), "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&export.stdout).expect("export is JSON");
    assert!(
        doc["events"].as_array().is_some_and(|e| e.len() > 10),
        "{doc}"
    );
}

/// Runs a small session and returns the path of its recording.
fn recorded_session(cfg: &TestConfig) -> PathBuf {
    let out = hoop_exec(
        &cfg.path,
        &psql_args(&["-c", "SELECT 1", "-c", "SELECT 2", "-c", "SELECT 3"]),
        T,
    );
    assert!(out.status.success(), "{}", text(&out).1);
    only_recording(cfg)
}

fn verify_output(cfg: &TestConfig) -> (bool, String) {
    let out = recordings(cfg, &["verify", "--all"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn tampering_is_detected_and_the_event_named() {
    require_privileged();
    // One byte flipped.
    let cfg = config();
    let file = recorded_session(&cfg);
    let original = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() > 6, "{original}");
    let flipped = original.replacen("SELECT 2", "SELECT 7", 1);
    std::fs::write(&file, &flipped).expect("write");
    let (ok, report) = verify_output(&cfg);
    assert!(!ok, "a flipped byte must fail verify: {report}");
    let bad_seq = lines
        .iter()
        .position(|l| l.contains("SELECT 2"))
        .expect("line");
    assert!(report.contains("tampered"), "{report}");
    assert!(
        report.contains(&format!("{bad_seq}")),
        "names event {bad_seq}: {report}"
    );

    // One event deleted.
    let mut without: Vec<&str> = lines.clone();
    without.remove(3);
    std::fs::write(&file, without.join("\n") + "\n").expect("write");
    let (ok, report) = verify_output(&cfg);
    assert!(
        !ok && report.contains("tampered") && report.contains('3'),
        "{report}"
    );

    // Two events swapped.
    let mut swapped: Vec<&str> = lines.clone();
    swapped.swap(3, 4);
    std::fs::write(&file, swapped.join("\n") + "\n").expect("write");
    let (ok, report) = verify_output(&cfg);
    assert!(
        !ok && report.contains("tampered") && report.contains('3'),
        "{report}"
    );

    // The original verifies again.
    std::fs::write(&file, &original).expect("write");
    let (ok, report) = verify_output(&cfg);
    assert!(ok && report.contains("intact"), "{report}");
}

#[test]
fn kill_9_mid_session_leaves_a_truncated_but_intact_recording() {
    require_privileged();
    setup();
    let cfg = config();
    with_recording(&cfg, "  flush_interval: 100ms");
    let child = hoop_exec_spawn(
        &cfg.path,
        &psql_args(&[
            "-c",
            "SELECT ssn FROM customers",
            "-c",
            "SELECT pg_sleep(20)",
        ]),
    );
    std::thread::sleep(Duration::from_millis(2500));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9 hoop");
    let _ = wait_output(child, T);
    let (ok, report) = verify_output(&cfg);
    assert!(ok, "truncation is not tampering: {report}");
    assert!(report.contains("truncated"), "{report}");
    let transcript =
        String::from_utf8_lossy(&recordings(&cfg, &["show", &id_of(&only_recording(&cfg))]).stdout)
            .into_owned();
    assert!(
        transcript.contains("SELECT ssn FROM customers") && transcript.contains("pg_sleep"),
        "{transcript}"
    );
    // Clean up the exec's stale cgroup and its orphaned psql.
    let _ = hoop_exec(&cfg.path, &["true"], T);
}

#[test]
fn a_recording_that_cannot_be_written_closes_the_session() {
    require_privileged();
    let cfg = config();
    let mnt = cfg.dir.path().join("small");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount tmpfs");
    let yaml = std::fs::read_to_string(&cfg.path).expect("config");
    let dir_line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("dir:"))
        .expect("dir")
        .to_owned();
    std::fs::write(
        &cfg.path,
        yaml.replace(
            &dir_line,
            &format!("  dir: {}\n  flush_interval: 50ms", mnt.display()),
        ),
    )
    .expect("config");
    // Fill the disk mid-session, then keep talking (with statements large
    // enough to need new pages: the comment is recorded with the SQL).
    let filler = "x".repeat(16 * 1024);
    let script = format!(
        "SELECT 'before' AS s;\n\\! dd if=/dev/zero of={}/fill bs=4k count=64 2>/dev/null\n\
         SELECT 'after' AS s /* {filler} */;\nSELECT pg_sleep(0.5);\nSELECT 'after 2' AS s;\n",
        mnt.display()
    );
    let file = cfg.dir.path().join("fill.sql");
    std::fs::write(&file, script).expect("script");
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!(
                "psql -X -h 127.0.0.1 -U postgres -d test -f {} 2>&1",
                file.display()
            ),
        ],
        T,
    );
    let _ = Command::new("umount").arg(&mnt).status();
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("before"), "{stdout}");
    assert!(
        stdout.contains("hoop cannot record this session"),
        "clear error: {stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("after 2"),
        "the session must be closed: {stdout}"
    );
}

#[test]
fn metrics_move_by_exactly_what_the_session_did() {
    require_privileged();
    setup();
    let cfg = config();
    let url = cfg.admin_url();
    let script = format!(
        "curl -sf {url}/metrics > before.txt && \
         psql -X -h 127.0.0.1 -U postgres -d test -c 'SELECT ssn FROM customers' -c 'SELECT 1' -c 'SELECT 2' -c 'DROP TABLE customers' >/dev/null 2>&1; \
         for i in $(seq 50); do curl -sf {url}/metrics > after.txt; grep -q '^hoop_connections_active 0' after.txt && break; sleep 0.1; done; \
         sleep 0.5; curl -sf {url}/metrics > after.txt; \
         echo '--- before'; cat before.txt; echo '--- after'; cat after.txt"
    );
    let out = hoop_exec(
        &cfg.path,
        &[
            "sh",
            "-c",
            &format!("cd {}; {script}", cfg.dir.path().display()),
        ],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let (before, after) = stdout.split_once("--- after").expect("two scrapes");
    let delta =
        |name: &str| metric(after, name).unwrap_or(0.0) - metric(before, name).unwrap_or(0.0);
    assert_eq!(delta("hoop_connections_total"), 1.0);
    assert_eq!(
        delta("hoop_statements_total{kind=\"select\",verdict=\"allow\"}"),
        3.0,
        "{after}"
    );
    assert_eq!(
        delta("hoop_statements_total{kind=\"drop\",verdict=\"deny\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("hoop_masked_values_total{rule=\"ssn\"}"),
        2.0,
        "{after}"
    );
    assert_eq!(delta("hoop_ebpf_redirects_total"), 1.0, "{after}");
    assert!(
        delta("hoop_proxied_bytes_total{direction=\"client_to_server\"}") > 0.0,
        "{after}"
    );
    assert!(
        delta("hoop_proxied_bytes_total{direction=\"server_to_client\"}") > 0.0,
        "{after}"
    );
    let latency = delta("hoop_statement_proxy_latency_seconds_count");
    assert!(latency >= 4.0, "latency observations {latency}:\n{after}");
    // Recording metrics move when the writer handles the events (within a
    // quarter of flush_interval): the half-second wait above covers that.
    assert!(delta("hoop_recording_events_total") > 0.0, "{after}");
}

#[test]
fn every_execution_of_a_prepared_statement_is_recorded() {
    require_privileged();
    let cfg = config();
    let out = hoop_exec(
        &cfg.path,
        &[env!("CARGO_BIN_EXE_pg-client"), "pipeline", "5"],
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("\"all_correct\":true"),
        "{stdout}\n{stderr}"
    );
    let file = only_recording(&cfg);
    let show =
        String::from_utf8_lossy(&recordings(&cfg, &["show", &id_of(&file)]).stdout).into_owned();
    // One Parse, five executions: each execution appears once.
    assert_eq!(
        show.matches("statement [extended] SELECT $1::int4 * 2")
            .count(),
        5,
        "{show}"
    );
    assert_eq!(show.matches("result: SELECT 1").count(), 5, "{show}");
}
