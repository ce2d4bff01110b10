//! Issue 26 (recordings): recordings shipped to a real S3 API (moto's
//! server) through `recording.store`, read back and verified from the store;
//! an outage of the store mid-session loses nothing; a tampered object is
//! reported; a `kill -9` loses at most about one shipping interval.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use hoop_tests::{
    TestConfig, hoop_bin, metric, psql_args, psql_direct, require_privileged,
    s3::{Moto, Relay, aws_env},
    text, wait_output,
};

const T: Duration = Duration::from_mins(1);
const KEY: &str = "store-test-key";

/// A config recording into `endpoint`'s bucket under `prefix`, with the
/// trailer MAC'd and `extra` recording settings.
fn config(bucket: &str, prefix: &str, extra: &str) -> (TestConfig, String) {
    let cfg = TestConfig::new(&[5432], "");
    let key = cfg.dir.path().join("hmac.key");
    std::fs::write(&key, KEY).expect("key");
    let url = format!("s3://{bucket}/{prefix}");
    let yaml = std::fs::read_to_string(&cfg.path).expect("config");
    let yaml = yaml.replace(
        "recording:\n",
        &format!(
            "recording:\n  store: {url}\n  hmac_key_file: {}\n  flush_interval: 100ms\n{extra}",
            key.display()
        ),
    );
    std::fs::write(&cfg.path, yaml).expect("config");
    (cfg, url)
}

fn spool(cfg: &TestConfig) -> PathBuf {
    cfg.dir.path().join("recordings")
}

fn spooled(cfg: &TestConfig) -> Vec<PathBuf> {
    std::fs::read_dir(spool(cfg))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect()
        })
        .unwrap_or_default()
}

fn exec_spawn(cfg: &TestConfig, endpoint: &str, args: &[&str]) -> Child {
    Command::new(hoop_bin())
        .arg("exec")
        .arg("--config")
        .arg(&cfg.path)
        .arg("--")
        .args(args)
        .envs(aws_env(endpoint))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hoop")
}

/// `hoop recordings ARGS --store URL` with the AWS environment and the HMAC key.
fn from_store(cfg: &TestConfig, endpoint: &str, url: &str, args: &[&str]) -> Output {
    Command::new(hoop_bin())
        .arg("recordings")
        .args(args)
        .args(["--store", url, "--config"])
        .arg(&cfg.path)
        .envs(aws_env(endpoint))
        .output()
        .expect("hoop recordings")
}

/// The one recording id in the store.
fn only_id(cfg: &TestConfig, endpoint: &str, url: &str) -> String {
    let out = from_store(cfg, endpoint, url, &["list", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "list: {stdout}{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).expect("json list");
    let items = list.as_array().expect("array");
    assert_eq!(items.len(), 1, "{stdout}");
    items[0]["id"].as_str().expect("id").to_owned()
}

/// The agent's `/metrics` text.
fn metrics(cfg: &TestConfig) -> String {
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/metrics", cfg.admin_url())])
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET /metrics failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn setup(table: &str) {
    psql_direct(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, note text);
         INSERT INTO {table} VALUES (1, 'one'), (2, 'two');"
    ));
}

#[test]
fn recordings_are_shipped_to_s3_and_verified_from_the_store() {
    require_privileged();
    setup("store_ship");
    let moto = Moto::start("hoop-ship");
    let (cfg, url) = config(&moto.bucket, "rec/node-a", "  ship_interval: 500ms\n");
    let child = exec_spawn(
        &cfg,
        &moto.endpoint(),
        &psql_args(&[
            "-c",
            "SELECT note FROM store_ship ORDER BY id",
            "-c",
            "SELECT pg_sleep(1.5)",
            "-c",
            "UPDATE store_ship SET note = 'uno' WHERE id = 1",
        ]),
    );
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        spooled(&cfg).is_empty(),
        "the spool keeps nothing once shipped: {:?}",
        spooled(&cfg)
    );

    let keys = moto.keys("rec/node-a/");
    assert!(
        keys.len() >= 2,
        "a session longer than the interval ships in several segments: {keys:?}"
    );
    let id = only_id(&cfg, &moto.endpoint(), &url);
    let verify = from_store(&cfg, &moto.endpoint(), &url, &["verify", "--all"]);
    let (report, err) = text(&verify);
    assert!(verify.status.success(), "{report}{err}");
    assert!(
        report.contains(&format!("{id}: intact (MAC verified)")),
        "{report}"
    );
    let show = from_store(&cfg, &moto.endpoint(), &url, &["show", &id]);
    let (transcript, err) = text(&show);
    assert!(show.status.success(), "{err}");
    for statement in [
        "SELECT note FROM store_ship ORDER BY id",
        "pg_sleep(1.5)",
        "UPDATE store_ship SET note = 'uno' WHERE id = 1",
    ] {
        assert!(transcript.contains(statement), "{statement}: {transcript}");
    }
}

#[test]
fn a_store_outage_mid_session_loses_nothing() {
    require_privileged();
    setup("store_outage");
    let moto = Moto::start("hoop-outage");
    let relay = Relay::start(moto.port);
    let (cfg, url) = config(&moto.bucket, "rec", "  ship_interval: 300ms\n");
    let mut args = Vec::new();
    let statements: Vec<String> = (1..=24)
        .map(|i| format!("SELECT 'mark-{i}', pg_sleep(0.4)"))
        .collect();
    for s in &statements {
        args.extend(["-c", s.as_str()]);
    }
    let child = exec_spawn(&cfg, &relay.endpoint(), &psql_args(&args));
    // Segments of the live session reach the store…
    let deadline = Instant::now() + Duration::from_secs(20);
    while moto.keys("rec/").is_empty() {
        assert!(Instant::now() < deadline, "nothing shipped");
        std::thread::sleep(Duration::from_millis(100));
    }
    // …then the store goes away for a while, mid-session, and comes back.
    relay.cut();
    let during = moto.concatenated("rec/").len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        moto.concatenated("rec/").len(),
        during,
        "nothing reaches the store while it is cut off"
    );
    // The metrics say so while it lasts.
    let m = metrics(&cfg);
    assert!(
        metric(&m, "hoop_recording_ship_failures_total").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert!(
        metric(&m, "hoop_recording_spool_bytes").is_some_and(|n| n > 0.0),
        "{m}"
    );
    assert!(
        metric(&m, "hoop_recording_ship_lag_seconds").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    relay.restore();
    // Once it is back the spool catches up, while the session still runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(&cfg);
        if metric(&m, "hoop_recording_ship_lag_seconds") == Some(0.0) {
            assert!(
                metric(&m, "hoop_recording_shipped_bytes_total").is_some_and(|n| n > 0.0),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the spool did not catch up: {m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot ship recording"),
        "the outage was seen: {stderr}"
    );
    assert!(spooled(&cfg).is_empty(), "{:?}", spooled(&cfg));

    let id = only_id(&cfg, &relay.endpoint(), &url);
    let verify = from_store(&cfg, &relay.endpoint(), &url, &["verify", &id]);
    let (report, err) = text(&verify);
    assert!(verify.status.success(), "{report}{err}");
    assert!(
        report.contains(&format!("{id}: intact (MAC verified)")),
        "{report}"
    );
    let show = from_store(&cfg, &relay.endpoint(), &url, &["show", &id]);
    let (transcript, _) = text(&show);
    for i in 1..=24 {
        assert!(
            transcript.contains(&format!("'mark-{i}'")),
            "statement {i} lost: {transcript}"
        );
    }
}

#[test]
fn a_tampered_object_in_the_store_is_reported() {
    require_privileged();
    setup("store_tamper");
    let moto = Moto::start("hoop-tamper");
    let (cfg, url) = config(&moto.bucket, "audit", "  ship_interval: 200ms\n");
    let child = exec_spawn(
        &cfg,
        &moto.endpoint(),
        &psql_args(&[
            "-c",
            "SELECT note FROM store_tamper WHERE id = 1",
            "-c",
            "SELECT pg_sleep(0.6)",
            "-c",
            "DELETE FROM store_tamper WHERE id = 2",
        ]),
    );
    let out = wait_output(child, T);
    assert!(out.status.success(), "{:?}", text(&out));
    let id = only_id(&cfg, &moto.endpoint(), &url);
    let verify = from_store(&cfg, &moto.endpoint(), &url, &["verify", &id]);
    assert!(verify.status.success(), "{:?}", text(&verify));

    // Someone with write access to the bucket rewrites what was run.
    let keys = moto.keys("audit/");
    let key = keys
        .iter()
        .find(|k| String::from_utf8_lossy(&moto.get(k)).contains("DELETE FROM store_tamper"))
        .expect("the segment with the DELETE")
        .clone();
    let original = String::from_utf8(moto.get(&key)).expect("utf-8");
    moto.put(
        &key,
        original
            .replace(
                "DELETE FROM store_tamper WHERE id = 2",
                "SELECT 1 FROM store_tamper WHERE id = 2",
            )
            .as_bytes(),
    );
    let verify = from_store(&cfg, &moto.endpoint(), &url, &["verify", &id]);
    let (report, err) = text(&verify);
    assert_eq!(verify.status.code(), Some(1), "{report}{err}");
    assert!(report.contains(&format!("{id}: TAMPERED")), "{report}");

    // A segment removed from the middle is reported too.
    moto.put(&key, original.as_bytes());
    let first = &keys[0];
    let removed = moto.get(first);
    moto.put(first, b"");
    let verify = from_store(&cfg, &moto.endpoint(), &url, &["verify", &id]);
    assert_eq!(verify.status.code(), Some(1), "{:?}", text(&verify));
    moto.put(first, &removed);
    let verify = from_store(&cfg, &moto.endpoint(), &url, &["verify", &id]);
    assert!(verify.status.success(), "restored: {:?}", text(&verify));
}

/// The `ts` of a recording's last complete line.
fn last_ts(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .rev()
        .find(|l| l.ends_with('}'))
        .expect("a line");
    let v: serde_json::Value = serde_json::from_str(line).expect("json line");
    v["ts"].as_str().expect("ts").to_owned()
}

fn seconds(ts: &str) -> f64 {
    // `YYYY-MM-DDTHH:MM:SS.fffffffffZ`, same day in this test.
    let time = &ts[11..ts.len() - 1];
    let mut parts = time.split(':');
    let h: f64 = parts.next().expect("h").parse().expect("h");
    let m: f64 = parts.next().expect("m").parse().expect("m");
    let s: f64 = parts.next().expect("s").parse().expect("s");
    h * 3600.0 + m * 60.0 + s
}

#[test]
fn kill_9_loses_at_most_about_one_shipping_interval_and_a_restart_ships_the_rest() {
    require_privileged();
    setup("store_crash");
    let moto = Moto::start("hoop-crash");
    let interval = 1.0;
    let (cfg, url) = config(&moto.bucket, "crash", "  ship_interval: 1s\n");
    let statements: Vec<String> = (1..=60)
        .map(|i| format!("SELECT 'tick-{i}', pg_sleep(0.1)"))
        .collect();
    let mut args = Vec::new();
    for s in &statements {
        args.extend(["-c", s.as_str()]);
    }
    let child = exec_spawn(&cfg, &moto.endpoint(), &psql_args(&args));
    std::thread::sleep(Duration::from_millis(3700));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9 hoop");
    let _ = wait_output(child, T);

    let spooled_files = spooled(&cfg);
    assert_eq!(spooled_files.len(), 1, "the crashed session stays spooled");
    let local = std::fs::read(&spooled_files[0]).expect("spool file");
    let stored = moto.concatenated("crash/");
    assert!(!stored.is_empty(), "segments were shipped before the crash");
    assert!(
        local.starts_with(&stored),
        "the store holds a prefix of the recording"
    );
    let lost_bytes = local.len() - stored.len();
    let lost_seconds = seconds(&last_ts(&local)) - seconds(&last_ts(&stored));
    eprintln!(
        "data at risk on kill -9 (ship_interval {interval}s): {lost_bytes} of {} bytes, {lost_seconds:.3}s of session not in the store",
        local.len()
    );
    assert!(
        lost_seconds <= interval + 0.5,
        "more than a shipping interval was missing from the store: {lost_seconds}s"
    );

    // The next start ships what the crash left in the spool.
    let again = exec_spawn(&cfg, &moto.endpoint(), &["true"]);
    let out = wait_output(again, T);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(spooled(&cfg).is_empty(), "{:?}", spooled(&cfg));
    assert_eq!(
        moto.concatenated("crash/"),
        local,
        "the store has the whole spooled recording"
    );
    let verify = from_store(&cfg, &moto.endpoint(), &url, &["verify", "--all"]);
    let (report, err) = text(&verify);
    assert!(
        verify.status.success(),
        "truncation is not tampering: {report}{err}"
    );
    assert!(report.contains("1 truncated-intact"), "{report}");
}

#[test]
fn inline_credentials_in_the_store_url_are_refused() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let yaml = std::fs::read_to_string(&cfg.path).expect("config");
    std::fs::write(
        &cfg.path,
        yaml.replace(
            "recording:\n",
            "recording:\n  store: s3://AKIAEXAMPLE:secret@bucket/prefix\n",
        ),
    )
    .expect("config");
    let child = exec_spawn(&cfg, "http://127.0.0.1:9", &["true"]);
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("must not carry credentials"), "{stderr}");
    assert!(
        !stderr.contains("secret@"),
        "the secret is not echoed: {stderr}"
    );
}

#[test]
fn a_spool_full_of_unshipped_bytes_closes_the_session() {
    require_privileged();
    setup("store_full");
    // Nothing listens on the store's port: every shipment fails.
    let unreachable = format!("http://127.0.0.1:{}", hoop_tests::free_port());
    let (cfg, _url) = config(
        "never",
        "rec",
        "  ship_interval: 100ms\n  spool_max_bytes: 8192\n",
    );
    let filler = "x".repeat(1500);
    let mut script = String::from("SELECT 'before' AS s;\n");
    for i in 0..20 {
        writeln!(
            script,
            "SELECT 'fill {i}' AS s /* {filler} */;\nSELECT pg_sleep(0.15);"
        )
        .expect("write to a String");
    }
    script.push_str("SELECT 'the end' AS s;\n");
    let file = cfg.dir.path().join("fill.sql");
    std::fs::write(&file, script).expect("script");
    let child = exec_spawn(
        &cfg,
        &unreachable,
        &[
            "sh",
            "-c",
            &format!(
                "psql -X -h 127.0.0.1 -U postgres -d test -f {} 2>&1",
                file.display()
            ),
        ],
    );
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("before"), "{stdout}");
    assert!(
        stdout.contains("hoop cannot record this session"),
        "clear error: {stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("the end"),
        "on_error: close_session closes it: {stdout}"
    );
    assert!(stderr.contains("recording spool full"), "{stderr}");
    // What was spooled stays spooled, for when the store comes back.
    assert_eq!(spooled(&cfg).len(), 1, "{:?}", spooled(&cfg));
}
