//! Issue 24: no database password in the workload. hoop injects the
//! credential by workload identity. Real PostgreSQL roles that the server
//! checks with SCRAM-SHA-256 and md5 (`cargo xtask services` adds their
//! `pg_hba.conf` lines), real `psql` with no password and no `.pgpass`,
//! real cgroups through `hoop exec`.
//!
//! The roles (`hoop_cred_e2e_*`) and the database (`hoop_cred_e2e`) are
//! created by each test and dropped when it ends.

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hoop_tests::{
    TestConfig, hoop_bin, metric, require_privileged, scrape_snippet, scraped, text, wait_output,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const T: Duration = Duration::from_mins(1);
const DATABASE: &str = "hoop_cred_e2e";
const SCRAM_ROLE: &str = "hoop_cred_e2e_scram";
const MD5_ROLE: &str = "hoop_cred_e2e_md5";
const APPROVER: &str = "hoop-cred-approver-token";

fn admin_sql(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-Atqc",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unique(what: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("hoop-cred-{what}-{n:x}")
}

/// The roles, their passwords and a database of the tests' own, with a
/// table to mask; dropped on drop.
struct Roles {
    scram: String,
    md5: String,
}

impl Roles {
    fn create() -> Self {
        let roles = Self {
            scram: unique("scram"),
            md5: unique("md5"),
        };
        Self::drop_all();
        admin_sql(
            "test",
            &format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE {SCRAM_ROLE} LOGIN PASSWORD '{}';
                 SET password_encryption = 'md5'; CREATE ROLE {MD5_ROLE} LOGIN PASSWORD '{}';",
                roles.scram, roles.md5
            ),
        );
        admin_sql("test", &format!("CREATE DATABASE {DATABASE}"));
        admin_sql(
            DATABASE,
            &format!(
                "CREATE TABLE hoop_cred_customers (id int PRIMARY KEY, name text, ssn text);
                 INSERT INTO hoop_cred_customers VALUES (1, 'Ada', '123-45-6789'), (2, 'Bob', '987-65-4321');
                 GRANT SELECT, DELETE ON hoop_cred_customers TO {SCRAM_ROLE}, {MD5_ROLE};"
            ),
        );
        roles
    }

    fn drop_all() {
        admin_sql(
            "test",
            &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
        );
        admin_sql(
            "test",
            &format!("DROP ROLE IF EXISTS {SCRAM_ROLE}; DROP ROLE IF EXISTS {MD5_ROLE};"),
        );
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        Self::drop_all();
    }
}

/// Writes a secret file the way an operator (or a Secret volume) does:
/// aside, with its mode, then renamed over the old one.
fn secret_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    let aside = dir.join(format!(".{name}.new"));
    std::fs::write(&aside, content).expect("secret");
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::fs::rename(&aside, &path).expect("rename");
    path
}

/// One `credentials.entries[]` item.
fn entry(name: &str, workload: &str, user: Option<&str>, role: &str, file: &Path) -> String {
    let user = user.map_or_else(String::new, |u| format!(", user: {u}"));
    format!(
        "    - name: {name}
      when: {{workload: [\"{workload}\"]}}
      destination: {{host: 127.0.0.1, port: 5432, database: {DATABASE}{user}}}
      role: {role}
      password_file: {}
",
        file.display()
    )
}

/// The shell prelude of every script: no password anywhere for psql.
const NO_PASSWORD: &str = "unset PGPASSWORD PGUSER PGDATABASE; export PGPASSFILE=/nonexistent; P='psql -X -w -At -h 127.0.0.1';";

/// `hoop exec` with `RUST_LOG=debug` (so the secret-leak checks see every
/// log line), spawned.
fn spawn_exec(cfg: &TestConfig, script: &str) -> std::process::Child {
    Command::new(hoop_bin())
        .args(["exec", "--config"])
        .arg(&cfg.path)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "debug")
        .env_remove("PGPASSWORD")
        .spawn()
        .expect("spawn hoop")
}

fn exec(cfg: &TestConfig, script: &str) -> Output {
    wait_output(spawn_exec(cfg, script), T)
}

fn recordings_dir(cfg: &TestConfig) -> PathBuf {
    cfg.dir.path().join("recordings")
}

fn recordings(cfg: &TestConfig, args: &[&str]) -> String {
    let out = Command::new(hoop_bin())
        .arg("recordings")
        .arg("--dir")
        .arg(recordings_dir(cfg))
        .args(args)
        .output()
        .expect("hoop recordings");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every byte under the recording directory, as text.
fn everything_recorded(cfg: &TestConfig) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(recordings_dir(cfg))
        .expect("recording dir")
        .filter_map(Result::ok)
    {
        all.push_str(&String::from_utf8_lossy(
            &std::fs::read(e.path()).expect("read"),
        ));
    }
    all
}

/// `GET /metrics` from the admin API of a running `hoop exec`.
fn metrics(cfg: &TestConfig) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", cfg.admin_port)).expect("admin API");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn psql_without_a_password_is_logged_in_as_the_injected_role_and_others_pass_through() {
    require_privileged();
    let roles = Roles::create();
    let base = TestConfig::new(&[5432], "");
    let scram_file = secret_file(
        base.dir.path(),
        "scram",
        &format!("{}\n", roles.scram),
        0o600,
    );
    let md5_file = secret_file(base.dir.path(), "md5", &roles.md5, 0o400);
    let cfg = TestConfig::new(
        &[5432],
        &format!(
            "credentials:\n  client_auth: any\n  entries:\n{}{}",
            entry(
                "legacy-md5",
                "/hoop-exec-*",
                Some(MD5_ROLE),
                MD5_ROLE,
                &md5_file
            ),
            entry("reporting", "/hoop-exec-*", None, SCRAM_ROLE, &scram_file),
        ),
    );
    let script = format!(
        "{NO_PASSWORD}
         $P -U root -d {DATABASE} -c \"SELECT 'scram:' || current_user || ':' || session_user || ':' || current_database()\"
         $P -U {MD5_ROLE} -d {DATABASE} -c \"SELECT 'md5:' || current_user\"
         $P -U root -d {DATABASE} -c 'SELECT id, name FROM hoop_cred_customers ORDER BY id' | sed 's/^/rows:/'
         # A destination no entry names: the server asks, and psql has no password.
         $P -U {SCRAM_ROLE} -d test -c 'SELECT 1' 2>&1 | sed 's/^/passthrough:/'
         PGPASSWORD='{}' $P -U {SCRAM_ROLE} -d test -c \"SELECT 'own:' || current_user\"
         {}",
        roles.scram,
        scrape_snippet(&cfg.admin_url())
    );
    let out = exec(&cfg, &script);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        format!("scram:{SCRAM_ROLE}:{SCRAM_ROLE}:{DATABASE}"),
        format!("md5:{MD5_ROLE}"),
        "rows:1|Ada".to_owned(),
        "rows:2|Bob".to_owned(),
        format!("own:{SCRAM_ROLE}"),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "{expected}:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        stdout.contains("passthrough:psql: error:")
            && stdout.contains("fe_sendauth: no password supplied"),
        "{stdout}"
    );
    let m = scraped(&stdout);
    assert_eq!(
        metric(
            &m,
            "hoop_credential_injections_total{credential=\"reporting\"}"
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "hoop_credential_injections_total{credential=\"legacy-md5\"}"
        ),
        Some(1.0),
        "{m}"
    );

    // The recordings name the workload, the user asked for, the injected
    // role and the entry; and hold no secret.
    let listed: Value =
        serde_json::from_str(&recordings(&cfg, &["list", "--json", "--user", SCRAM_ROLE]))
            .expect("json");
    let injected: Vec<&Value> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["identity"]["credential"] == "reporting")
        .collect();
    assert_eq!(injected.len(), 2, "{listed}");
    let identity = &injected[0]["identity"];
    assert_eq!(identity["user"], "root");
    assert_eq!(identity["injected_role"], SCRAM_ROLE);
    assert!(
        identity["workload"]
            .as_str()
            .is_some_and(|w| w.starts_with("/hoop-exec-")),
        "{identity}"
    );
    let id = injected[0]["id"].as_str().expect("id");
    let shown = recordings(&cfg, &["show", id]);
    assert!(
        shown.contains(&format!(
            "root@{DATABASE} injected_role={SCRAM_ROLE} credential=reporting"
        )) && shown.contains("workload=/hoop-exec-"),
        "{shown}"
    );
    // The pass-through sessions have neither.
    let own: Vec<&Value> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["identity"]["database"] == "test")
        .collect();
    assert!(
        !own.is_empty()
            && own
                .iter()
                .all(|r| r["identity"].get("injected_role").is_none())
    );
    let recorded = everything_recorded(&cfg);
    assert!(!recorded.contains(&roles.scram) && !recorded.contains(&roles.md5));
    assert!(!stderr.contains(&roles.scram) && !stderr.contains(&roles.md5));
}

#[test]
fn another_cgroup_authenticates_itself() {
    require_privileged();
    let roles = Roles::create();
    let base = TestConfig::new(&[5432], "");
    let file = secret_file(base.dir.path(), "scram", &roles.scram, 0o600);
    // The entry is for another workload than `hoop exec`'s cgroup.
    let cfg = TestConfig::new(
        &[5432],
        &format!(
            "credentials:\n  entries:\n{}",
            entry(
                "batch",
                "/batch.slice/*",
                Some(SCRAM_ROLE),
                SCRAM_ROLE,
                &file
            )
        ),
    );
    let script = format!(
        "{NO_PASSWORD}
         $P -U {SCRAM_ROLE} -d {DATABASE} -c 'SELECT 1' 2>&1 | sed 's/^/no-password:/'
         PGPASSWORD='{}' $P -U {SCRAM_ROLE} -d {DATABASE} -c \"SELECT 'own:' || current_user\"
         {}",
        roles.scram,
        scrape_snippet(&cfg.admin_url())
    );
    let out = exec(&cfg, &script);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("no-password:psql: error:")
            && stdout.contains("fe_sendauth: no password supplied"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == format!("own:{SCRAM_ROLE}")),
        "{stdout}"
    );
    let m = scraped(&stdout);
    assert_eq!(
        metric(&m, "hoop_credential_injections_total{credential=\"batch\"}"),
        None,
        "{m}"
    );
}

#[test]
fn a_rotated_secret_is_used_from_the_next_connection_and_open_sessions_continue() {
    require_privileged();
    let roles = Roles::create();
    let cfg0 = TestConfig::new(&[5432], "");
    let dir = cfg0.dir.path();
    let file = secret_file(dir, "scram", &roles.scram, 0o600);
    let cfg = TestConfig::new(
        &[5432],
        &format!(
            "credentials:\n  entries:\n{}",
            entry("app", "/hoop-exec-*", None, SCRAM_ROLE, &file)
        ),
    );
    let d = dir.display();
    let script = format!(
        "{NO_PASSWORD}
         mkfifo {d}/a.in
         $P -U app -d {DATABASE} < {d}/a.in > {d}/a.out 2>&1 &
         A=$!
         exec 3> {d}/a.in
         echo \"SELECT 'a1:' || current_user || ':' || pg_backend_pid();\" >&3
         while [ ! -e {d}/rotated ]; do sleep 0.05; done
         $P -U app -d {DATABASE} -c \"SELECT 'b:' || current_user\" 2>&1
         echo \"SELECT 'a2:' || current_user || ':' || pg_backend_pid();\" >&3
         exec 3>&-
         wait $A
         cat {d}/a.out"
    );
    let child = spawn_exec(&cfg, &script);
    let a_out = dir.join("a.out");
    wait_for("the first session", Duration::from_secs(20), || {
        std::fs::read_to_string(&a_out).is_ok_and(|t| t.contains("a1:"))
    });
    let rotated = unique("rotated");
    admin_sql(
        "test",
        &format!(
            "SET password_encryption = 'scram-sha-256'; ALTER ROLE {SCRAM_ROLE} PASSWORD '{rotated}'"
        ),
    );
    secret_file(dir, "scram", &rotated, 0o600);
    std::fs::write(dir.join("rotated"), "").expect("flag");
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.lines().any(|l| l == format!("b:{SCRAM_ROLE}")),
        "{stdout}\n{stderr}"
    );
    // The session opened with the old secret ran on, on the same backend.
    let a1 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("a1:"))
        .expect("a1");
    let a2 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("a2:"))
        .expect("a2");
    assert_eq!(a1, a2, "{stdout}");
    assert!(a1.starts_with(&format!("{SCRAM_ROLE}:")), "{stdout}");
    assert!(!stderr.contains(&rotated) && !stderr.contains(&roles.scram));
}

#[test]
fn a_wrong_secret_is_a_clear_error_counted_and_never_shown() {
    require_privileged();
    let _roles = Roles::create();
    let cfg0 = TestConfig::new(&[5432], "");
    let wrong = unique("wrong-secret");
    let file = secret_file(cfg0.dir.path(), "scram", &wrong, 0o600);
    let cfg = TestConfig::new(
        &[5432],
        &format!(
            "credentials:\n  entries:\n{}",
            entry("reporting", "/hoop-exec-*", None, SCRAM_ROLE, &file)
        ),
    );
    let script = format!(
        "{NO_PASSWORD}
         $P -U app -d {DATABASE} -c 'SELECT 1' 2>&1 | sed 's/^/client:/'
         {}",
        scrape_snippet(&cfg.admin_url())
    );
    let out = exec(&cfg, &script);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "client:psql: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  hoop could not log in to the database server as role \"{SCRAM_ROLE}\" with credential entry \"reporting\": password authentication failed for user \"{SCRAM_ROLE}\""
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("HINT:  Check the credential entry's secret"),
        "{stdout}"
    );
    let m = scraped(&stdout);
    assert_eq!(
        metric(
            &m,
            "hoop_credential_errors_total{reason=\"upstream_rejected\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        stderr.contains("injected login failed") && stderr.contains("credential=reporting"),
        "{stderr}"
    );
    // The refused login is recorded: who tried, with which entry, and why.
    let listed: Value = serde_json::from_str(&recordings(&cfg, &["list", "--json"])).expect("json");
    let sessions = listed.as_array().expect("array");
    assert_eq!(sessions.len(), 1, "{listed}");
    let shown = recordings(&cfg, &["show", sessions[0]["id"].as_str().expect("id")]);
    assert!(
        shown.contains(&format!("app@{DATABASE} injected_role={SCRAM_ROLE} credential=reporting"))
            && shown.contains(&format!("session end: cannot log in as role \"{SCRAM_ROLE}\" with credential entry `reporting`: password authentication failed")),
        "{shown}"
    );
    // Nowhere: not in hoop's output (debug logs included), not under the
    // recording directory.
    assert!(!stdout.contains(&wrong) && !stderr.contains(&wrong));
    let grep = Command::new("grep")
        .args(["-r", "-F", "-e", &wrong])
        .arg(recordings_dir(&cfg))
        .output()
        .expect("grep");
    assert_eq!(
        grep.status.code(),
        Some(1),
        "grep found the secret: {grep:?}"
    );
    assert!(!everything_recorded(&cfg).contains(&wrong));
}

#[test]
fn a_secret_file_others_can_read_is_refused_at_load_and_a_reload_keeps_the_last_good() {
    require_privileged();
    let roles = Roles::create();
    let cfg0 = TestConfig::new(&[5432], "");
    let dir = cfg0.dir.path();
    let open = secret_file(dir, "open", &roles.md5, 0o644);
    let good = secret_file(dir, "good", &roles.scram, 0o600);

    // At load: exit 2, the location and the reason, never the secret.
    let refused = TestConfig::new(
        &[5432],
        &format!(
            "credentials:\n  entries:\n{}",
            entry("app", "/hoop-exec-*", None, MD5_ROLE, &open)
        ),
    );
    let out = exec(&refused, "true");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("credentials.entries[0].password_file: the entry's secret: its password_file has mode 644, which lets group or others read or change it; make it readable by hoop only (chmod 600)"),
        "{stderr}"
    );
    let check = Command::new(hoop_bin())
        .args(["policy", "check"])
        .arg(&refused.path)
        .output()
        .expect("hoop policy check");
    let (check_out, check_err) = text(&check);
    assert_eq!(check.status.code(), Some(2), "{check_out}\n{check_err}");
    assert!(
        check_err.contains("credentials.entries[0].password_file"),
        "{check_err}"
    );
    for printed in [&stdout, &stderr, &check_out, &check_err] {
        assert!(!printed.contains(&roles.md5) && !printed.contains(&roles.scram));
    }

    // At reload: the edit is refused as a whole, and the last good
    // credentials stay until the file is fixed.
    let config = |file: &Path, role: &str| {
        TestConfig::new(
            &[5432],
            &format!(
                "credentials:\n  entries:\n{}",
                entry("app", "/hoop-exec-*", None, role, file)
            ),
        )
    };
    let cfg = config(&good, SCRAM_ROLE);
    let d = dir.display();
    let script = format!(
        "{NO_PASSWORD}
         $P -U app -d {DATABASE} -c \"SELECT '1:' || current_user\" 2>&1; touch {d}/first
         while [ ! -e {d}/edited ]; do sleep 0.05; done
         $P -U app -d {DATABASE} -c \"SELECT '2:' || current_user\" 2>&1
         touch {d}/second
         while [ ! -e {d}/fixed ]; do sleep 0.05; done
         $P -U app -d {DATABASE} -c \"SELECT '3:' || current_user\" 2>&1
         {}",
        scrape_snippet(&cfg.admin_url())
    );
    let child = spawn_exec(&cfg, &script);
    wait_for("the first session", Duration::from_secs(20), || {
        dir.join("first").exists()
    });
    // The same file, now naming the md5 role with a secret file others can read.
    let edited = std::fs::read_to_string(&cfg.path)
        .expect("config")
        .replace(&good.display().to_string(), &open.display().to_string())
        .replace(SCRAM_ROLE, MD5_ROLE);
    std::fs::write(&cfg.path, &edited).expect("edit");
    wait_for("the reload to be refused", Duration::from_secs(20), || {
        metric(&metrics(&cfg), "hoop_policy_reload_errors_total") == Some(1.0)
    });
    std::fs::write(dir.join("edited"), "").expect("flag");
    wait_for("the second session", Duration::from_secs(20), || {
        dir.join("second").exists()
    });
    // Fixed: the same edit with the file made private is taken.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&cfg.path, format!("{edited}\n# fixed\n")).expect("touch config");
    wait_for("the reload", Duration::from_secs(20), || {
        metric(&metrics(&cfg), "hoop_policy_reloads_total").is_some_and(|n| n >= 1.0)
    });
    std::fs::write(dir.join("fixed"), "").expect("flag");
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let first = format!("1:{SCRAM_ROLE}");
    let second = format!("2:{SCRAM_ROLE}");
    let third = format!("3:{MD5_ROLE}");
    for expected in [&first, &second, &third] {
        assert!(
            lines.contains(&expected.as_str()),
            "{expected}:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        stderr.contains("policy reload rejected") && stderr.contains("mode 644"),
        "{stderr}"
    );
    assert!(!stderr.contains(&roles.md5) && !stderr.contains(&roles.scram));
}

#[test]
fn masking_holds_and_recording_work_on_injected_sessions() {
    require_privileged();
    let roles = Roles::create();
    let cfg0 = TestConfig::new(&[5432], "");
    let dir = cfg0.dir.path();
    let file = secret_file(dir, "scram", &roles.scram, 0o600);
    let tokens = dir.join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{token_sha256: {}, identity: alice@example.com, groups: [dba]}}\n",
            hex::encode(Sha256::digest(APPROVER.as_bytes()))
        ),
    )
    .expect("tokens");
    let cfg = TestConfig::new(
        &[5432],
        &format!(
            "credentials:\n  entries:\n{}policy:
  mask:
    - name: ssn
      columns: [hoop_cred_customers.ssn]
      strategy: partial
      keep_last: 4
  deny:
    - name: no-drops
      statements: [drop]
      message: no drops here
  hold:
    - name: customer-deletes
      statements: [delete]
      tables: [hoop_cred_customers]
      when: {{user: [{SCRAM_ROLE}]}}
      timeout: 1m
      message: deletes need a DBA
",
            entry("app", "/hoop-exec-*", None, SCRAM_ROLE, &file)
        ),
    );
    let yaml = std::fs::read_to_string(&cfg.path)
        .expect("config")
        .replace(
            "admin:\n",
            &format!("admin:\n  tokens_file: {}\n", tokens.display()),
        )
        .replace("recording:\n", "recording:\n  rows: full\n");
    std::fs::write(&cfg.path, yaml).expect("config");
    let script = format!(
        "{NO_PASSWORD}
         $P -U app -d {DATABASE} -c 'SELECT * FROM hoop_cred_customers ORDER BY id' 2>&1
         $P -U app -d {DATABASE} -c 'DROP TABLE hoop_cred_customers' 2>&1
         $P -U app -d {DATABASE} -c 'DELETE FROM hoop_cred_customers WHERE id = 2' 2>&1
         $P -U app -d {DATABASE} -c \"SELECT 'left:' || count(*) FROM hoop_cred_customers\" 2>&1"
    );
    let child = spawn_exec(&cfg, &script);
    // The held DELETE, as approvers see it: the workload and the injected role.
    let holds = || -> Vec<Value> {
        let out = Command::new(hoop_bin())
            .args(["holds", "list", "--json", "--admin", &cfg.admin_url()])
            .env("HOOP_TOKEN", APPROVER)
            .output()
            .expect("hoop holds");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let mut pending = Vec::new();
    wait_for("the held delete", Duration::from_secs(30), || {
        pending = holds();
        !pending.is_empty()
    });
    let hold = &pending[0];
    assert_eq!(hold["rule"], "customer-deletes", "{hold}");
    assert_eq!(hold["session"]["user"], "app", "{hold}");
    assert_eq!(hold["session"]["injected_role"], SCRAM_ROLE, "{hold}");
    assert_eq!(hold["session"]["credential"], "app", "{hold}");
    assert!(
        hold["session"]["workload"]
            .as_str()
            .is_some_and(|w| w.starts_with("/hoop-exec-")),
        "{hold}"
    );
    let table = Command::new(hoop_bin())
        .args(["holds", "list", "--admin", &cfg.admin_url()])
        .env("HOOP_TOKEN", APPROVER)
        .output()
        .expect("hoop holds list");
    assert!(
        String::from_utf8_lossy(&table.stdout)
            .contains(&format!("app@{DATABASE} as {SCRAM_ROLE} (credential app)")),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
    let id = hold["id"].as_str().expect("id");
    let approve = Command::new(hoop_bin())
        .args(["holds", "approve", id, "--admin", &cfg.admin_url()])
        .env("HOOP_TOKEN", APPROVER)
        .output()
        .expect("hoop holds approve");
    assert!(approve.status.success(), "{approve:?}");
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Masked (the catalog resolved `*` as the injected role: only ssn is).
    assert!(stdout.contains("1|Ada|***-**-6789"), "{stdout}\n{stderr}");
    assert!(stdout.contains("2|Bob|***-**-4321"), "{stdout}");
    assert!(!stdout.contains("123-45-6789"), "{stdout}");
    assert!(stdout.contains("no drops here"), "{stdout}");
    assert!(
        stdout.contains("DELETE 1") && stdout.contains("left:1"),
        "{stdout}"
    );
    assert!(!stderr.contains("catalog lookup failed"), "{stderr}");

    // Recorded as any session, with the injected role beside the workload.
    let listed: Value = serde_json::from_str(&recordings(&cfg, &["list", "--json"])).expect("json");
    let sessions = listed.as_array().expect("array");
    assert_eq!(sessions.len(), 4, "{listed}");
    let shows: Vec<String> = sessions
        .iter()
        .map(|s| recordings(&cfg, &["show", s["id"].as_str().expect("id")]))
        .collect();
    for shown in &shows {
        assert!(
            shown.contains(&format!(
                "app@{DATABASE} injected_role={SCRAM_ROLE} credential=app"
            )) && shown.contains("workload=/hoop-exec-"),
            "{shown}"
        );
    }
    let all = shows.join("\n");
    for expected in [
        "***-**-6789",
        "verdict: DENY (rule no-drops",
        "verdict: HOLD (rule customer-deletes",
        "approved by alice@example.com",
    ] {
        assert!(all.contains(expected), "missing {expected}:\n{all}");
    }
    let recorded = everything_recorded(&cfg);
    assert!(!recorded.contains("123-45-6789") && !recorded.contains(&roles.scram));
    let verify = Command::new(hoop_bin())
        .args(["recordings", "verify", "--all", "--dir"])
        .arg(recordings_dir(&cfg))
        .output()
        .expect("verify");
    assert!(verify.status.success(), "{verify:?}");
}
