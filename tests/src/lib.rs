//! Shared helpers for hoop's end-to-end tests.
//!
//! These tests run the real `hoop` binary (built by `cargo xtask test`, path
//! in `HOOP_BIN`), which loads real eBPF programs into real cgroups, against
//! the real PostgreSQL on 127.0.0.1:5432, with real clients. They need root:
//! without it they fail — they never pass by skipping.

#![forbid(unsafe_code)]

pub mod failclosed;
pub mod issuer;
pub mod k8s;
pub mod s3;
pub mod sink;

use std::{
    io::Read as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// A psql command line for the test database on 127.0.0.1:5432 (the
/// address hoop intercepts), without psqlrc, followed by `extra`.
pub fn psql_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "psql",
        "-X",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "test",
    ];
    args.extend_from_slice(extra);
    args
}

/// The `hoop` binary under test.
pub fn hoop_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HOOP_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/hoop")
}

/// Fails the test unless we are root and the binary exists: this tier must
/// never silently pass.
pub fn require_privileged() {
    let uid = nix::unistd::Uid::effective();
    assert!(
        uid.is_root(),
        "hoop's end-to-end tests load eBPF programs and must run as root (uid {uid})"
    );
    let bin = hoop_bin();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test` (it builds hoop first)",
        bin.display()
    );
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A temporary directory holding a config file.
pub struct TestConfig {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub path: PathBuf,
    /// The admin API port.
    pub admin_port: u16,
}

impl TestConfig {
    /// Writes a config with `intercept.ports`, a free admin port, recordings
    /// in the temp dir, and `extra` YAML appended (top-level keys other than
    /// intercept/admin/recording).
    pub fn new(ports: &[u16], extra: &str) -> Self {
        Self::write(ports, "", extra)
    }

    /// [`TestConfig::new`] with `recording.enabled: false`: with no policy,
    /// nothing then governs a session (no reply is looked at, no execution
    /// observed), which the relays' fast paths are for.
    pub fn unrecorded(ports: &[u16], extra: &str) -> Self {
        Self::write(ports, "  enabled: false\n", extra)
    }

    fn write(ports: &[u16], recording: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin_port = free_port();
        let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
        let yaml = format!(
            "intercept:\n  ports: [{}]\nadmin:\n  listen: 127.0.0.1:{admin_port}\nrecording:\n{recording}  dir: {}\n{extra}",
            ports.join(", "),
            dir.path().join("recordings").display()
        );
        let path = dir.path().join("hoop.yaml");
        std::fs::write(&path, yaml).expect("write config");
        Self {
            dir,
            path,
            admin_port,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }
}

/// An approver for hold tests: `token` in a tokens file that `cfg`'s admin
/// API reads (identity `dba@example.com`, group `dba`), and `hoop holds`
/// run with it.
pub struct Approver {
    token: &'static str,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Approver {
    /// Writes the tokens file and points `cfg`'s `admin.tokens_file` at it.
    pub fn install(cfg: &TestConfig, token: &'static str) -> Self {
        use sha2::{Digest as _, Sha256};
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!(
                "- {{token_sha256: {}, identity: dba@example.com, groups: [dba]}}\n",
                hex::encode(Sha256::digest(token.as_bytes()))
            ),
        )
        .expect("tokens");
        let yaml = std::fs::read_to_string(&cfg.path).expect("config").replace(
            "admin:\n",
            &format!("admin:\n  tokens_file: {}\n", tokens.display()),
        );
        std::fs::write(&cfg.path, yaml).expect("config");
        Self {
            token,
            admin: cfg.admin_url(),
            _dir: dir,
        }
    }

    /// `hoop holds ARGS… --admin URL` as this approver.
    pub fn holds(&self, args: &[&str]) -> Output {
        Command::new(hoop_bin())
            .arg("holds")
            .args(args)
            .arg("--admin")
            .arg(&self.admin)
            .env("HOOP_TOKEN", self.token)
            .output()
            .expect("hoop holds")
    }

    /// The first pending hold of `hoop holds list --json`, waited for (30 s).
    pub fn pending(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.holds(&["list", "--json"]);
            if let Ok(list) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                && let Some(h) = list
                    .as_array()
                    .and_then(|l| l.iter().find(|h| h["state"] == "pending").cloned())
            {
                return h;
            }
            assert!(Instant::now() < deadline, "no pending hold appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `hoop exec --config CONFIG -- ARGS...`, waited for with a timeout.
pub fn hoop_exec(config: &Path, args: &[&str], timeout: Duration) -> Output {
    let child = hoop_exec_spawn(config, args);
    wait_output(child, timeout)
}

/// Spawns `hoop exec` with piped stdout/stderr.
pub fn hoop_exec_spawn(config: &Path, args: &[&str]) -> Child {
    Command::new(hoop_bin())
        .arg("exec")
        .arg("--config")
        .arg(config)
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .spawn()
        .expect("spawn hoop")
}

/// Waits for a child, killing it after `timeout`, and collects its output.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait after kill");
            let err = String::from_utf8_lossy(&err_thread.join().unwrap_or_default()).into_owned();
            panic!("command timed out after {timeout:?} ({status}); stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// Reads one sample from Prometheus text (`name` may include labels, e.g.
/// `hoop_statements_total{kind="select",verdict="allow"}`).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A shell snippet that prints the admin API's `/metrics` between markers,
/// for commands run under `hoop exec`.
pub fn scrape_snippet(admin_url: &str) -> String {
    // Sessions end asynchronously after the client closes: wait (up to 5 s)
    // until none is active, so counts are final when printed.
    format!(
        "for i in $(seq 50); do m=$(curl -sf {admin_url}/metrics); \
         echo \"$m\" | grep -q '^hoop_connections_active 0' && break; sleep 0.1; done; \
         echo '--- metrics'; echo \"$m\"; echo '--- end'"
    )
}

/// The metrics text printed by [`scrape_snippet`] (the last one in `stdout`).
pub fn scraped(stdout: &str) -> String {
    let start = stdout
        .rfind("--- metrics")
        .map_or(0, |i| i + "--- metrics".len());
    let rest = &stdout[start..];
    rest[..rest.find("--- end").unwrap_or(rest.len())].to_owned()
}

/// Directories under the cgroup2 root whose names start with `prefix`.
pub fn cgroups_named(prefix: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup/unified");
    let root = if root.exists() {
        root
    } else {
        Path::new("/sys/fs/cgroup")
    };
    std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs psql against 127.0.0.1:5432 directly (not governed), returning stdout.
pub fn psql_direct(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            "test",
            "-XAtqc",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the `mariadb` CLI against 127.0.0.1:3306 directly over TCP (not
/// governed), in database `db` when given; returns stdout, a row a line,
/// tab-separated, without column names. Panics when the statement fails.
pub fn mariadb_direct(db: Option<&str>, sql: &str) -> String {
    let mut cmd = Command::new("mariadb");
    cmd.args(["-h", "127.0.0.1", "--protocol=TCP", "-uroot", "-N", "-B"]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    let out = cmd.arg("-e").arg(sql).output().expect("run mariadb");
    assert!(
        out.status.success(),
        "direct mariadb failed on {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch database on the MariaDB server, dropped at the end.
pub struct MariaDb {
    /// Its name.
    pub name: String,
}

impl MariaDb {
    /// Creates `name` afresh (dropping one left by an earlier run) and runs
    /// `setup` in it.
    pub fn create(name: &str, setup: &str) -> Self {
        mariadb_direct(
            None,
            &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"),
        );
        let db = Self {
            name: name.to_owned(),
        };
        if !setup.trim().is_empty() {
            mariadb_direct(Some(name), setup);
        }
        db
    }

    /// `SELECT count(*) FROM table`, on the bare server.
    pub fn count(&self, table: &str) -> i64 {
        mariadb_direct(Some(&self.name), &format!("SELECT count(*) FROM {table}"))
            .trim()
            .parse()
            .expect("a count")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "--protocol=TCP", "-uroot", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .output();
    }
}

/// stdout and stderr as strings, for assertions.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
