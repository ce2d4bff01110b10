//! Issue 26, holds on a cluster: two real `hoop agent` processes (node mode,
//! nodes `node-a` and `node-b`) against one API server stand-in (the only
//! stand-in: it speaks the real list/watch/create/status protocol for
//! `holdrequests.hoop.dev`). Agent A governs a cgroup of this machine
//! (`intercept.cgroups`), where the tests run real `psql` clients against
//! the real PostgreSQL; agent B governs nothing of its own. Approvers talk
//! to either agent's admin API.
//!
//! Needs root and PostgreSQL; never skips.

#![allow(clippy::unwrap_used, clippy::items_after_statements)] // Tests fail loudly, right there.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hoop_k8s::testing::apiserver::FakeApiServer;
use hoop_tests::{free_port, hoop_bin, k8s::require_root, psql_direct};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const APPROVER: &str = "k8s-holds-dba-token";
const WAIT: Duration = Duration::from_secs(30);

/// A cgroup of this machine that agent A governs; removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Self {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let root = if unified.exists() {
            unified
        } else {
            Path::new("/sys/fs/cgroup")
        };
        let path = root.join(format!("hoop-k8s-holds-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create the test cgroup");
        Self(path)
    }

    /// `psql -c SQL` run inside this cgroup (so its connection is A's).
    fn psql(&self, sql: &str) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec psql -X -h 127.0.0.1 -p 5432 -U postgres -d test -Atc \"$1\"",
                self.0.display()
            ))
            .arg("sh")
            .arg(sql)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty by now (every psql exited); retry briefly while it drains.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `hoop agent` process; stopped (by its pid) on drop.
struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    admin_port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }
}

impl Agent {
    /// Node mode on `node`, holds in the stand-in, governing `cgroup`.
    fn start(api: &FakeApiServer, node: &str, cgroup: Option<&Cgroup>, table: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin_port = free_port();
        Self::spawn(api, node, cgroup, table, dir, admin_port)
    }

    fn spawn(
        api: &FakeApiServer,
        node: &str,
        cgroup: Option<&Cgroup>,
        table: &str,
        dir: tempfile::TempDir,
        admin_port: u16,
    ) -> Self {
        let tokens = dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!(
                "- {{token_sha256: {}, identity: dba@example.com, groups: [dba]}}\n",
                hex::encode(Sha256::digest(APPROVER.as_bytes()))
            ),
        )
        .expect("tokens");
        let kubepods = dir.path().join("kubepods");
        std::fs::create_dir_all(&kubepods).expect("kubepods dir");
        let cgroups =
            cgroup.map_or_else(String::new, |c| format!("  cgroups: [{}]\n", c.0.display()));
        let yaml = format!(
            "intercept:\n  ports: [5432]\n{cgroups}admin:\n  listen: 127.0.0.1:{admin_port}\n  tokens_file: {}\n\
             recording:\n  dir: {}\n\
             kubernetes:\n  enabled: true\n  node_name: {node}\n  cgroup_root: {}\n  resync_interval: 1s\n\
             \x20 holds:\n    namespace: hoop-system\n    retention: 1h\n\
             policy:\n  hold:\n    - name: counter-updates\n      statements: [update]\n      tables: [{table}]\n\
             \x20     approvers: [dba]\n      timeout: 1m\n      message: updates of the counter need a DBA\n",
            tokens.display(),
            dir.path().join("recordings").display(),
            kubepods.display(),
        );
        let config = dir.path().join("hoop.yaml");
        std::fs::write(&config, yaml).expect("config");
        let kubeconfig = api.write_kubeconfig(dir.path()).expect("kubeconfig");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("agent.log"))
            .expect("log");
        let child = Command::new(hoop_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOOP_K8S_WATCH_BACKOFF_MS", "100")
            .env(
                "RUST_LOG",
                std::env::var("HOOP_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("NODE_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hoop agent");
        let agent = Self {
            child: Some(child),
            dir,
            admin_port,
        };
        wait_for(
            "the agent's /ready",
            || agent.http("GET", "/ready").0 == 200,
            || agent.log(),
        );
        agent
    }

    /// Stops with `signal` (SIGKILL: a crash), then SIGKILL after 5 s.
    fn signal(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
                signal,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// One HTTP/1.1 request with the approver's token: (status, body).
    fn http(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin_port, method, path)
    }

    /// `hoop holds list --json` against this agent.
    fn holds(&self) -> Vec<Value> {
        let out = Command::new(hoop_bin())
            .args(["holds", "list", "--json", "--admin"])
            .arg(format!("http://127.0.0.1:{}", self.admin_port))
            .env("HOOP_TOKEN", APPROVER)
            .output()
            .expect("hoop holds list");
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    }
}

fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {APPROVER}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_child(mut child: Child) -> Output {
    let deadline = Instant::now() + WAIT;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("psql output")
}

/// A counter table: one row (id 1, n 0), and when the last update ran.
fn counter(table: &str) {
    psql_direct(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, n int, ran_at timestamptz); \
         INSERT INTO {table} VALUES (1, 0, NULL);"
    ));
}

fn count(table: &str) -> i64 {
    psql_direct(&format!("SELECT n FROM {table} WHERE id = 1"))
        .trim()
        .parse()
        .expect("n")
}

fn bump(table: &str) -> String {
    format!("UPDATE {table} SET n = n + 1, ran_at = clock_timestamp() WHERE id = 1")
}

/// The one pending hold `agent` lists, waiting for it.
fn pending_on(agent: &Agent, why: impl Fn() -> String) -> Value {
    let mut found = None;
    wait_for(
        "a pending hold",
        || {
            let (code, body) = agent.http("GET", "/api/holds");
            let list: Vec<Value> = if code == 200 {
                serde_json::from_str(&body).unwrap_or_default()
            } else {
                Vec::new()
            };
            found = list.into_iter().find(|h| h["state"] == "pending");
            found.is_some()
        },
        why,
    );
    found.expect("found")
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_a_is_listed_and_approved_on_b_and_runs_on_a_exactly_once() {
    require_root();
    const TABLE: &str = "hoop_k8s_holds_once";
    counter(TABLE);
    let api = FakeApiServer::start().await.expect("stand-in");
    let cg = Cgroup::new("once");
    let a = Agent::start(&api, "node-a", Some(&cg), TABLE);
    let b = Agent::start(&api, "node-b", None, TABLE);
    let trials: usize = std::env::var("HOOP_K8S_HOLD_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut latencies = Vec::with_capacity(trials);
    for trial in 0..trials {
        let client = cg.psql(&bump(TABLE));
        let why = || format!("A:\n{}\nB:\n{}", a.log(), b.log());
        // Listed by B (through B's API and `hoop holds list`), made on A.
        let hold = pending_on(&b, why);
        let id = hold["id"].as_str().expect("id").to_owned();
        if trial == 0 {
            assert_eq!(hold["rule"], "counter-updates", "{hold}");
            assert!(
                hold["statement"].as_str().unwrap().starts_with("UPDATE"),
                "{hold}"
            );
            assert_eq!(hold["may_decide"], true, "{hold}");
            let listed = b.holds();
            assert!(listed.iter().any(|h| h["id"] == id), "{listed:?}");
            let object = api
                .hold_requests()
                .into_iter()
                .find(|o| o["metadata"]["name"] == id)
                .expect("the HoldRequest");
            assert_eq!(object["metadata"]["namespace"], "hoop-system");
            assert_eq!(object["metadata"]["labels"]["hoop.dev/node"], "node-a");
            assert_eq!(object["spec"]["owner"]["node"], "node-a");
            // The workload identity: A's cgroup (a pod's identity on a pod).
            let name = cg.0.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                object["spec"]["session"]["workload"],
                format!("/{name}"),
                "{object}"
            );
            // Not run before the decision.
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(count(TABLE), 0, "ran before approval");
        }
        let decided = now_secs();
        let (code, body) = b.http("POST", &format!("/api/holds/{id}/approve"));
        assert_eq!(code, 200, "{body}\n{}", why());
        let out = wait_child(client);
        assert!(out.status.success(), "psql: {}\n{}", text(&out), why());
        let ran: f64 = psql_direct(&format!(
            "SELECT extract(epoch FROM ran_at) FROM {TABLE} WHERE id = 1"
        ))
        .trim()
        .parse()
        .expect("ran_at");
        latencies.push((ran - decided) * 1000.0);
        // Exactly once: one approval, one increment.
        assert_eq!(count(TABLE), i64::try_from(trial + 1).unwrap());
        // The same approval again: refused (409), nothing runs again.
        if trial == 0 {
            let (code, body) = a.http("POST", &format!("/api/holds/{id}/approve"));
            assert_eq!(code, 409, "{body}");
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(count(TABLE), 1);
        }
    }
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "decision on B -> statement running on A, over {trials} trials: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies[latencies.len() - 1]
    );
    assert_eq!(count(TABLE), i64::try_from(trials).unwrap());
    let objects = api.hold_requests();
    assert_eq!(objects.len(), trials);
    assert!(
        objects
            .iter()
            .all(|o| o["status"]["state"] == "approved"
                && o["status"]["decider"] == "dba@example.com"),
        "{objects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_decisions_one_wins_the_other_gets_409() {
    require_root();
    const TABLE: &str = "hoop_k8s_holds_race";
    counter(TABLE);
    let api = FakeApiServer::start().await.expect("stand-in");
    let cg = Cgroup::new("race");
    let a = Agent::start(&api, "node-a", Some(&cg), TABLE);
    let b = Agent::start(&api, "node-b", None, TABLE);
    let mut expected = 0;
    for round in 0..5 {
        let client = cg.psql(&bump(TABLE));
        let hold = pending_on(&b, || a.log());
        let id = hold["id"].as_str().expect("id").to_owned();
        // Approve through A and deny through B at the same moment.
        let (pa, pb) = (a.admin_port, b.admin_port);
        let approve_path = format!("/api/holds/{id}/approve");
        let deny_path = format!("/api/holds/{id}/deny");
        let approve = std::thread::spawn(move || http(pa, "POST", &approve_path));
        let deny = std::thread::spawn(move || http(pb, "POST", &deny_path));
        let (approve, deny) = (approve.join().unwrap(), deny.join().unwrap());
        let mut codes = [approve.0, deny.0];
        codes.sort_unstable();
        assert_eq!(codes, [200, 409], "round {round}: {approve:?} {deny:?}");
        let out = wait_child(client);
        if approve.0 == 200 {
            expected += 1;
            assert!(out.status.success(), "{}", text(&out));
            assert!(deny.1.contains("already approved"), "{deny:?}");
        } else {
            assert!(!out.status.success(), "denied but ran: {}", text(&out));
            assert!(text(&out).contains("denied"), "{}", text(&out));
            assert!(approve.1.contains("already denied"), "{approve:?}");
        }
        assert_eq!(count(TABLE), expected, "round {round}");
    }
    eprintln!(
        "5 races: approve won {expected}; resourceVersion conflicts at the API server: {}",
        api.hold_conflicts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_while_its_hold_is_pending_marks_it_withdrawn() {
    require_root();
    const TABLE: &str = "hoop_k8s_holds_restart";
    counter(TABLE);
    let api = FakeApiServer::start().await.expect("stand-in");
    let cg = Cgroup::new("restart");
    let mut a = Agent::start(&api, "node-a", Some(&cg), TABLE);
    let b = Agent::start(&api, "node-b", None, TABLE);
    let client = cg.psql(&bump(TABLE));
    let hold = pending_on(&b, || a.log());
    let id = hold["id"].as_str().expect("id").to_owned();
    // A crashes: nothing is written on its way out.
    a.signal(nix::sys::signal::Signal::SIGKILL);
    let out = wait_child(client);
    assert!(!out.status.success(), "ran without A: {}", text(&out));
    let state = |agent: &Agent| -> String {
        let (_, body) = agent.http("GET", &format!("/api/holds/{id}"));
        serde_json::from_str::<Value>(&body).unwrap_or_default()["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        state(&b),
        "pending",
        "B does not withdraw another node's hold"
    );
    // A comes back (same node, same admin port, a new process).
    let dir = std::mem::replace(&mut a.dir, tempfile::tempdir().expect("tempdir"));
    let port = a.admin_port;
    drop(a);
    let a2 = Agent::spawn(&api, "node-a", Some(&cg), TABLE, dir, port);
    wait_for(
        "the orphan withdrawn, as B shows it",
        || state(&b) == "withdrawn",
        || a2.log(),
    );
    let (_, body) = b.http("GET", &format!("/api/holds/{id}"));
    assert!(body.contains("restarted"), "{body}");
    // A decision on it now is refused, and nothing ever ran.
    let (code, _) = b.http("POST", &format!("/api/holds/{id}/approve"));
    assert_eq!(code, 409);
    assert_eq!(count(TABLE), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_server_unreachable_a_held_statement_is_refused_not_run() {
    require_root();
    const TABLE: &str = "hoop_k8s_holds_unreachable";
    counter(TABLE);
    let api = FakeApiServer::start().await.expect("stand-in");
    let cg = Cgroup::new("unreachable");
    let a = Agent::start(&api, "node-a", Some(&cg), TABLE);
    api.set_reachable(false).await.expect("unreachable");
    let started = Instant::now();
    let out = wait_child(cg.psql(&bump(TABLE)));
    let said = text(&out);
    assert!(!out.status.success(), "ran unapproved: {said}");
    assert!(said.contains("could not be filed"), "{said}\n{}", a.log());
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "refused at once, not at the 1m timeout"
    );
    assert_eq!(count(TABLE), 0);
    // Reachable again: holds work again.
    api.set_reachable(true).await.expect("reachable");
    let client = cg.psql(&bump(TABLE));
    let hold = pending_on(&a, || a.log());
    let id = hold["id"].as_str().expect("id");
    // Decidable once it is in the API (A lists it from the moment it holds).
    wait_for(
        "the HoldRequest",
        || {
            api.hold_requests()
                .iter()
                .any(|o| o["metadata"]["name"] == id)
        },
        || a.log(),
    );
    let (code, body) = a.http("POST", &format!("/api/holds/{id}/approve"));
    assert_eq!(code, 200, "{body}");
    assert!(wait_child(client).status.success());
    assert_eq!(count(TABLE), 1);
}
