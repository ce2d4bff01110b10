//! Issue 6: hoop is a PostgreSQL man-in-the-middle every real client
//! accepts. Everything here runs through `hoop exec` (real eBPF redirection)
//! against the real PostgreSQL.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use hoop_tests::{
    TestConfig, hoop_exec, metric, psql_direct, require_privileged, scrape_snippet, scraped, text,
};

const T: Duration = Duration::from_mins(2);

fn pg_client() -> String {
    env!("CARGO_BIN_EXE_pg-client").to_owned()
}

fn sh(cfg: &TestConfig, script: &str) -> (String, String) {
    let out = hoop_exec(&cfg.path, &["sh", "-c", script], T);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "script failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

const PSQL: &str = "psql -X -h 127.0.0.1 -U postgres -d test";

#[test]
fn psql_queries_copy_multi_statement_and_errors_in_transactions() {
    require_privileged();
    // Recorded, and not recorded (nothing governs the session: the relay
    // keeps no SQL).
    for cfg in [
        TestConfig::new(&[5432], ""),
        TestConfig::unrecorded(&[5432], ""),
    ] {
        psql_queries_copy_multi_statement_and_errors(&cfg);
    }
}

fn psql_queries_copy_multi_statement_and_errors(cfg: &TestConfig) {
    psql_direct("DROP TABLE IF EXISTS proto_t; CREATE TABLE proto_t (id int, v text)");
    let file = cfg.dir.path().join("rows.tsv");
    std::fs::write(&file, "1\tone\n2\ttwo\n3\tthree\n").expect("write");
    let out_file = cfg.dir.path().join("out.tsv");
    let script = format!(
        "{PSQL} -c \"\\copy proto_t from '{f}'\" && \
         {PSQL} -Atc 'SELECT count(*) FROM proto_t; SELECT max(id) FROM proto_t' && \
         {PSQL} -c \"\\copy (SELECT * FROM proto_t ORDER BY id) to '{o}'\" && \
         printf 'BEGIN;\\nSELECT 1/0;\\nSELECT 1;\\nROLLBACK;\\nSELECT 42 AS after_rollback;\\n' | {PSQL} -At 2>&1",
        f = file.display(),
        o = out_file.display()
    );
    let (stdout, _) = sh(cfg, &script);
    assert!(stdout.contains("COPY 3"), "{stdout}");
    // The multi-statement Query returns the last result: max(id) = 3.
    assert!(stdout.lines().any(|l| l == "3"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&out_file).expect("copied out"),
        "1\tone\n2\ttwo\n3\tthree\n"
    );
    assert!(stdout.contains("division by zero"), "{stdout}");
    assert!(
        stdout.contains("current transaction is aborted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ROLLBACK") && stdout.lines().any(|l| l == "42"),
        "{stdout}"
    );
}

#[test]
fn listen_notify_between_two_governed_sessions() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    // Session A listens and waits; session B notifies; A then polls.
    let script = format!(
        "(printf 'LISTEN hoop_chan;\\nSELECT pg_sleep(1.5);\\nSELECT 1;\\n' | {PSQL} -At) > {a} 2>&1 & \
         sleep 0.7; {PSQL} -c \"NOTIFY hoop_chan, 'hello from B'\"; wait; cat {a}",
        a = cfg.dir.path().join("a.out").display()
    );
    let (stdout, _) = sh(&cfg, &script);
    assert!(
        stdout.contains("Asynchronous notification \"hoop_chan\" with payload \"hello from B\""),
        "{stdout}"
    );
}

#[test]
fn ctrl_c_in_psql_cancels_within_two_seconds() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    // psql turns SIGINT into a CancelRequest on a new connection, which is
    // itself intercepted: hoop must route it to the right server.
    let script = format!(
        "{PSQL} -c 'SELECT pg_sleep(30)' > out 2>&1 & P=$!; sleep 1; S=$(date +%s%N); kill -INT $P; wait $P; \
         E=$(date +%s%N); echo elapsed_ms=$(( (E - S) / 1000000 )); cat out"
    );
    let (stdout, _) = sh(&cfg, &format!("cd {}; {script}", cfg.dir.path().display()));
    assert!(
        stdout.contains("canceling statement due to user request"),
        "{stdout}"
    );
    let ms: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_ms="))
        .and_then(|v| v.parse().ok())
        .expect("elapsed printed");
    assert!(ms < 2000, "cancel took {ms} ms");
}

#[test]
fn pg_cancel_backend_from_another_session() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let script = format!(
        "{PSQL} -c \"SET application_name = 'hoop-victim'; SELECT pg_sleep(30)\" > out 2>&1 & P=$!; sleep 1; \
         {PSQL} -Atc \"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'hoop-victim'\"; \
         wait $P; cat out"
    );
    let started = Instant::now();
    let (stdout, _) = sh(&cfg, &format!("cd {}; {script}", cfg.dir.path().display()));
    assert!(stdout.lines().any(|l| l == "t"), "{stdout}");
    assert!(
        stdout.contains("canceling statement due to user request"),
        "{stdout}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn tokio_postgres_extended_protocol() {
    require_privileged();
    for cfg in [
        TestConfig::new(&[5432], ""),
        TestConfig::unrecorded(&[5432], ""),
    ] {
        tokio_postgres_extended(&cfg);
    }
}

fn tokio_postgres_extended(cfg: &TestConfig) {
    let pc = pg_client();
    let script = format!(
        "{pc} query 'SELECT 1::int4, true, 42::int8, $$x$$::text' && {pc} pipeline 200 && \
         {pc} portal 'SELECT g FROM generate_series(1, 25) g' 10 && {pc} cancel"
    );
    let (stdout, _) = sh(cfg, &script);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(
        lines[0]["rows"][0],
        serde_json::json!([1, true, 42, "x"]),
        "binary results: {stdout}"
    );
    assert_eq!(lines[1]["all_correct"], true, "pipeline of 200: {stdout}");
    assert_eq!(
        lines[2]["chunks"], 3,
        "portal suspension (25 rows in chunks of 10): {stdout}"
    );
    assert_eq!(
        lines[2]["rows"].as_array().map(Vec::len),
        Some(25),
        "{stdout}"
    );
    assert_eq!(
        lines[3]["cancelled_code"], "57014",
        "cancel token routed: {stdout}"
    );
}

#[test]
fn pgbench_in_every_protocol_mode() {
    require_privileged();
    let init = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-i",
            "-s",
            "1",
            "-q",
            "test",
        ])
        .output()
        .expect("pgbench -i");
    assert!(init.status.success());
    let recorded = TestConfig::new(&[5432], "");
    let unrecorded = TestConfig::unrecorded(&[5432], "");
    for (mode, cfg) in ["simple", "extended", "prepared"]
        .into_iter()
        .flat_map(|mode| [(mode, &recorded), (mode, &unrecorded)])
    {
        let (stdout, _) = sh(
            cfg,
            &format!("pgbench -h 127.0.0.1 -U postgres -M {mode} -c 4 -T 3 test"),
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{mode}: {stdout}"
        );
        assert!(stdout.contains(&format!("query mode: {mode}")), "{stdout}");
    }
}

fn make_cert(dir: &std::path::Path) -> (String, String) {
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    self_signed(&cert, &key, "/CN=localhost", &[]);
    (cert, key)
}

/// A self-signed certificate for `subject`, valid for a day, written to
/// `cert`/`key`, with `extra` arguments for `openssl req`.
fn self_signed(cert: &str, key: &str, subject: &str, extra: &[&str]) {
    let mut args = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-keyout", key, "-out", cert]);
    openssl(&args);
}

#[test]
fn tls_on_both_legs_and_plaintext_clients() {
    require_privileged();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(dir.path());
    let cfg = TestConfig::new(
        &[5432],
        &format!("tls:\n  cert: {cert}\n  key: {key}\n  upstream: require\n"),
    );
    let q = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let script = format!(
        "psql -X 'host=127.0.0.1 user=postgres dbname=test sslmode=require' -c '\\conninfo' -Atc \"{q}\" && \
         psql -X 'host=127.0.0.1 user=postgres dbname=test sslmode=disable' -Atc \"{q}\""
    );
    let (stdout, _) = sh(&cfg, &script);
    // The client leg is TLS with hoop's certificate…
    assert!(
        stdout.contains("SSL connection (protocol: TLSv1."),
        "{stdout}"
    );
    // …and the server sees TLS from hoop (upstream: require), for both clients.
    assert_eq!(stdout.lines().filter(|l| *l == "t").count(), 2, "{stdout}");
}

/// Runs `openssl` with `args`, failing the test on error.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority in `dir`: (certificate, key).
fn make_ca(dir: &std::path::Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.pem")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    self_signed(
        &cert,
        &key,
        &format!("/CN={name}"),
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    (cert, key)
}

/// A server certificate for IP address `ip`, signed by `ca`, written to
/// `cert`/`key`.
fn sign_server_cert(dir: &std::path::Path, ca: &(String, String), ip: &str, cert: &str, key: &str) {
    let csr = dir.join("server.csr").display().to_string();
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("write extensions");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={ip}"),
        "-keyout",
        key,
        "-out",
        &csr,
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca.0,
        "-CAkey",
        &ca.1,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext.display().to_string(),
        "-out",
        cert,
    ]);
}

/// The newest installed PostgreSQL's `bin` directory.
fn postgres_bin() -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("an initdb under /usr/lib/postgresql")
}

/// Gives `dir` and everything in it to the `postgres` user.
fn chown_to_postgres(dir: &std::path::Path) {
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(chown.success(), "chown {}", dir.display());
}

/// Runs a PostgreSQL program as the `postgres` user, failing the test on error.
fn as_postgres(program: &std::path::Path, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of its own (data directory, port, TLS certificate),
/// for what the shared server cannot be reconfigured for. Stopped on drop.
struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivateCluster {
    /// Starts a cluster on 127.0.0.1 that serves TLS with `dir/server.pem`
    /// and `dir/server.key` (written by the caller before, and replaced and
    /// reloaded with [`Self::reload`] after).
    fn start(dir: tempfile::TempDir) -> Self {
        let bin = postgres_bin();
        let port = hoop_tests::free_port();
        let root = dir.path().display().to_string();
        chown_to_postgres(dir.path());
        let data = format!("{root}/data");
        as_postgres(
            &bin.join("initdb"),
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n\
             ssl = on\nssl_cert_file = '{root}/server.pem'\nssl_key_file = '{root}/server.key'\nfsync = off\n"
        );
        let mut pg_conf = std::fs::read_to_string(format!("{data}/postgresql.conf"))
            .expect("read postgresql.conf");
        pg_conf.push_str(&conf);
        std::fs::write(format!("{data}/postgresql.conf"), pg_conf).expect("write postgresql.conf");
        let cluster = Self { dir, bin, port };
        as_postgres(
            &cluster.bin.join("pg_ctl"),
            &[
                "-D",
                &data,
                "-l",
                &format!("{root}/log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        cluster
    }

    /// Makes the server read its certificate files again.
    fn reload(&self) {
        let root = self.dir.path().display().to_string();
        chown_to_postgres(self.dir.path());
        as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &format!("{root}/data"), "reload"],
        );
        // SIGHUP is asynchronous: wait until a new connection gets the new files.
        std::thread::sleep(Duration::from_secs(1));
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[test]
fn verify_full_upstream_checks_the_certificate_against_the_ca_and_the_address() {
    require_privileged();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let ca = make_ca(&root, "hoop-test-ca");
    let other_ca = make_ca(&root, "another-ca");
    let (server_pem, server_key) = (
        root.join("server.pem").display().to_string(),
        root.join("server.key").display().to_string(),
    );
    sign_server_cert(&root, &ca, "127.0.0.1", &server_pem, &server_key);
    let cluster = PrivateCluster::start(dir);
    let port = cluster.port;
    let q = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    // sslmode=disable: the client leg is plaintext, so any TLS the server
    // reports is hoop's upstream leg.
    let client = format!(
        "psql -X 'host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable' -Atc \"{q}\" 2>&1; true"
    );
    let config = |ca_file: &str| {
        TestConfig::new(
            &[port],
            &format!("tls:\n  upstream: verify-full\n  ca_file: {ca_file}\n"),
        )
    };

    // The server's certificate chains to the configured CA and names the
    // address the client dialled: connected, over TLS.
    let (stdout, _) = sh(&config(&ca.0), &client);
    assert_eq!(stdout.trim(), "t", "{stdout}");

    // Another CA: refused, and the client is told why.
    let (stdout, _) = sh(&config(&other_ca.0), &client);
    assert!(
        stdout.contains("hoop could not establish TLS to the database server")
            && stdout.contains("UnknownIssuer"),
        "{stdout}"
    );

    // The right CA, but a certificate for another address: refused.
    sign_server_cert(
        cluster.dir.path(),
        &ca,
        "127.0.0.2",
        &server_pem,
        &server_key,
    );
    cluster.reload();
    let (stdout, _) = sh(&config(&ca.0), &client);
    assert!(
        stdout.contains("hoop could not establish TLS to the database server")
            && stdout.contains("not valid for name"),
        "{stdout}"
    );
}

#[test]
fn scram_and_md5_passwords_pass_through() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let script = "PGPASSWORD=hoop-scram-pw psql -X -h 127.0.0.1 -U hoop_scram -d test -Atc 'SELECT current_user' && \
                  PGPASSWORD=hoop-md5-pw psql -X -h 127.0.0.1 -U hoop_md5 -d test -Atc 'SELECT current_user' && \
                  PGPASSWORD=wrong psql -X -h 127.0.0.1 -U hoop_scram -d test -Atc 'SELECT 1' 2>&1; true";
    let (stdout, _) = sh(&cfg, script);
    assert!(stdout.lines().any(|l| l == "hoop_scram"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "hoop_md5"), "{stdout}");
    assert!(
        stdout.contains("password authentication failed for user \"hoop_scram\""),
        "{stdout}"
    );
    let method = psql_direct(
        "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'hoop_scram'",
    );
    assert_eq!(method.trim(), "t", "the test role really uses SCRAM");
}

fn peak_rss_mib(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("hoop resource usage"))
        .expect("usage line");
    let kib: f64 = line
        .split("peak_rss_kib=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("peak_rss_kib");
    kib / 1024.0
}

#[test]
fn a_million_rows_stream_complete_in_order_with_bounded_memory() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let copy = "COPY (SELECT g, md5(g::text), g * 2 FROM generate_series(1, 1000000) g) TO STDOUT";
    let cursor = "BEGIN; DECLARE c CURSOR FOR SELECT g, md5(g::text), g * 2 FROM generate_series(1, 1000000) g; \
                  FETCH ALL FROM c; COMMIT;";
    // Checksums of the exact bytes, so completeness and order are both checked.
    let check = |sql: &str| format!("{PSQL} -Atc '{sql}' | md5sum");
    let t = Instant::now();
    let direct_copy = Command::new("sh")
        .args(["-c", &check(copy)])
        .output()
        .expect("direct");
    let direct_s = t.elapsed().as_secs_f64();
    let direct_cursor = Command::new("sh")
        .args(["-c", &check(cursor)])
        .output()
        .expect("direct");
    let t = Instant::now();
    let out = hoop_exec(
        &cfg.path,
        &["sh", "-c", &format!("{}; {}", check(copy), check(cursor))],
        T,
    );
    let hoop_s = t.elapsed().as_secs_f64();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let sums: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        sums[0],
        String::from_utf8_lossy(&direct_copy.stdout).trim(),
        "COPY differs"
    );
    assert_eq!(
        sums[1],
        String::from_utf8_lossy(&direct_cursor.stdout).trim(),
        "cursor rows differ"
    );
    let rss = peak_rss_mib(&stderr);
    eprintln!(
        "1M rows x 3: hoop peak RSS {rss:.1} MiB; COPY+cursor through hoop {hoop_s:.2}s, COPY direct {direct_s:.2}s"
    );
    assert!(rss < 64.0, "peak RSS {rss:.1} MiB");
}

#[test]
fn malformed_client_bytes_get_a_fatal_error_and_the_proxy_stays_up() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    // A startup packet claiming 2 GiB, then a normal session that must still work.
    let script = format!(
        "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1',5432)); \
         s.sendall(bytes.fromhex('7fffffff00030000')); print('reply', s.recv(200)); s.close()\"; \
         {PSQL} -Atc 'SELECT 7' && {}",
        scrape_snippet(&cfg.admin_url())
    );
    let (stdout, _) = sh(&cfg, &script);
    assert!(stdout.lines().any(|l| l == "7"), "{stdout}");
    let m = scraped(&stdout);
    assert_eq!(metric(&m, "hoop_connections_total"), Some(2.0), "{m}");
}
