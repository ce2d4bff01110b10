//! Kubernetes tier, end to end through the real `hoop agent` binary: the API
//! server stand-in (the only stand-in; `KUBECONFIG` points the agent at it),
//! a simulated node (kubepods tree, a network namespace, veth and sandbox
//! per pod), PostgreSQL reached from each pod through a forwarder on the
//! host end of its veth, and `psql`/`hoop await` run inside the pods.
//!
//! Needs root and PostgreSQL; never skips.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use hoop_k8s::{
    cgroup_path::{CgroupDriver, QosClass},
    testing::{
        apiserver::{FakeApiServer, Kind, objects},
        node::{SimulatedNode, SimulatedPod},
    },
};
use hoop_tests::{free_port, hoop_bin, k8s::require_root, metric, psql_direct};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const NODE: &str = "node-a";
const ON: (&str, &str) = ("hoop.dev/govern", "true");
const OFF: (&str, &str) = ("hoop.dev/govern", "false");
const APPROVER: &str = "k8s-approver-token";
const WAIT: Duration = Duration::from_secs(30);
const TABLE: &str = "hoop_k8s_customers";
/// The benchmark's database (pgbench's tables, apart from other tests').
const DB: &str = "hoop_k8s_bench";

fn uid(n: u8) -> String {
    format!("{n:08x}-7a7a-4b4b-8c8c-1d1d1d1d1d1d")
}

fn setup_table() {
    psql_direct(&format!(
        "DROP TABLE IF EXISTS {TABLE}; \
         CREATE TABLE {TABLE} (id int PRIMARY KEY, name text, ssn text); \
         INSERT INTO {TABLE} VALUES (1, 'Ada', '123-45-6789'), (2, 'Bob', '987-65-4321');"
    ));
}

/// The policy every agent here runs.
fn policy() -> String {
    format!(
        "policy:
  mask:
    - name: ssn
      columns: [{TABLE}.ssn]
      strategy: partial
      keep_last: 4
  deny:
    - name: no-deletes-from-ops
      statements: [delete]
      when: {{namespace: [ops]}}
      message: the ops namespace may not delete
  hold:
    - name: shop-api-updates
      statements: [update]
      tables: [{TABLE}]
      when: {{namespace: [shop], labels: {{app: api}}}}
      timeout: 1m
      message: updates from the shop API need a DBA
"
    )
}

/// A `hoop agent` process; killed (by its pid) on drop.
struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    admin: String,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Agent {
    /// SIGTERM, then SIGKILL after 5 s.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Agent {
    /// Writes the config (`kubernetes:` as given) and the approvers' tokens.
    fn config(kubernetes: &str, admin_port: u16, extra: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!(
                "- {{token_sha256: {}, identity: dba@example.com, groups: [dba]}}\n",
                hex::encode(Sha256::digest(APPROVER.as_bytes()))
            ),
        )
        .expect("tokens");
        let yaml = format!(
            "intercept:\n  ports: [5432]\nadmin:\n  listen: 127.0.0.1:{admin_port}\n  tokens_file: {}\n\
             recording:\n  dir: {}\n  rows: full\n{extra}kubernetes:\n{kubernetes}{}",
            tokens.display(),
            dir.path().join("recordings").display(),
            policy()
        );
        let path = dir.path().join("hoop.yaml");
        std::fs::write(&path, yaml).expect("config");
        (dir, path)
    }

    /// Node mode, watching `api` for `node`'s pods.
    fn node(api: &FakeApiServer, node: &SimulatedNode, extra: &str) -> Self {
        Self::node_pinned(api, node, extra, None)
    }

    /// [`Agent::node`], pinning under `pins` when given.
    fn node_pinned(
        api: &FakeApiServer,
        node: &SimulatedNode,
        extra: &str,
        pins: Option<&Path>,
    ) -> Self {
        let admin_port = free_port();
        let pin = pins.map_or_else(String::new, |p| format!("  pin_dir: {}\n", p.display()));
        let (dir, config) = Self::config(
            &format!(
                "  enabled: true\n  node_name: {NODE}\n  cgroup_root: {}\n  resync_interval: {}\n{pin}",
                node.cgroup_root().display(),
                // The benchmark's agent re-checks pods as often as a real one.
                if extra.contains("worker_threads") {
                    "30s"
                } else {
                    "1s"
                }
            ),
            admin_port,
            extra,
        );
        let kubeconfig = api.write_kubeconfig(dir.path()).expect("kubeconfig");
        let log = dir.path().join("agent.log");
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn hoop agent");
        Self {
            child: Some(child),
            dir,
            admin: format!("http://127.0.0.1:{admin_port}"),
            log,
        }
    }

    /// Sidecar mode inside `pod`'s network namespace (not yet in its
    /// cgroup: the pod's cgroup may not exist yet), identity from the
    /// Downward API variables.
    fn sidecar(node: &SimulatedNode, pod: &SimulatedPod, name: &str, namespace: &str) -> Self {
        let admin_port = free_port();
        let (dir, config) = Self::config(
            &format!(
                "  enabled: true\n  mode: sidecar\n  cgroup_root: {}\n  resync_interval: 1s\n",
                node.cgroup_root().display()
            ),
            admin_port,
            "",
        );
        let log = dir.path().join("agent.log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", pod.netns_path.display()))
            .arg("--")
            .arg(hoop_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", namespace)
            .env("POD_UID", &pod.uid)
            .env("POD_SERVICE_ACCOUNT", format!("{name}-sa"))
            .env(
                "RUST_LOG",
                std::env::var("HOOP_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("NODE_NAME")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn hoop agent");
        Self {
            child: Some(child),
            dir,
            admin: format!("http://127.0.0.1:{admin_port}"),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("hoop.yaml")
    }

    fn recordings(&self) -> PathBuf {
        self.dir.path().join("recordings")
    }

    /// `GET path` on the admin API from the host: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        curl(Command::new("curl"), &format!("{}{path}", self.admin))
    }

    fn metrics(&self) -> String {
        self.get("/metrics").1
    }

    fn wait_ready(&self) {
        wait_for(
            "the agent's /ready",
            WAIT,
            || self.get("/ready").0 == 200,
            || self.log(),
        );
    }
}

/// `curl` (given as a command, so it can run inside a pod): (status, body).
fn curl(mut cmd: Command, url: &str) -> (u16, String) {
    let out = cmd
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn psql_in(pod: &SimulatedPod, sql: &str) -> Output {
    pod.command("psql")
        .args(["-X", "-h"])
        .arg(pod.host_ip.to_string())
        .args(["-p", "5432", "-U", "postgres", "-d", "test", "-Atc", sql])
        .output()
        .expect("run psql in the pod")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `hoop await` run inside `pod`.
fn await_in(pod: &SimulatedPod, timeout: &str) -> Output {
    pod.command(hoop_bin().to_str().expect("path"))
        .args(["await", "--port", "5432", "--timeout", timeout])
        .output()
        .expect("hoop await")
}

/// The samples of `name` whose labels contain every `label="value"` given.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of the samples of `name` whose labels contain every `label="value"` given.
fn total(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Recordings whose session came from pod `name`, as `hoop recordings list --json` shows them.
fn recordings_of(dir: &Path, name: &str) -> Vec<Value> {
    let out = Command::new(hoop_bin())
        .args(["recordings", "list", "--json", "--dir"])
        .arg(dir)
        .output()
        .expect("hoop recordings list");
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    all.into_iter()
        .filter(|r| r["identity"]["pod"]["pod"] == name)
        .collect()
}

fn show(dir: &Path, id: &str) -> String {
    let out = Command::new(hoop_bin())
        .args(["recordings", "show", id, "--dir"])
        .arg(dir)
        .output()
        .expect("hoop recordings show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn holds(admin: &str) -> Vec<Value> {
    let out = Command::new(hoop_bin())
        .args(["holds", "list", "--json", "--admin", admin])
        .env("HOOP_TOKEN", APPROVER)
        .output()
        .expect("hoop holds list");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_governs_annotated_pods_with_their_identity() {
    require_root();
    setup_table();
    let bare = psql_direct(&format!("SELECT ssn FROM {TABLE} WHERE id = 1"));
    assert_eq!(
        bare.trim(),
        "123-45-6789",
        "the bare database returns the SSN"
    );

    let api = FakeApiServer::start().await.expect("API server stand-in");
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let database = "127.0.0.1:5432".parse().expect("address");
    // shop/api-7d9 opts in by annotation; ops opts in as a namespace, and
    // ops/batch-1 with it; shop/web-1 has no opt-in; ops/debug-1 opts out.
    let mut api_pod = node
        .add_pod(&uid(1), QosClass::Burstable, true)
        .expect("pod");
    let mut batch = node
        .add_pod(&uid(2), QosClass::BestEffort, true)
        .expect("pod");
    let mut web = node
        .add_pod(&uid(3), QosClass::Burstable, true)
        .expect("pod");
    let mut debug = node
        .add_pod(&uid(4), QosClass::BestEffort, true)
        .expect("pod");
    let api_log = api_pod.forward(5432, database).expect("forwarder");
    for pod in [&mut batch, &mut web, &mut debug] {
        pod.forward(5432, database).expect("forwarder");
    }
    api.apply_namespace(objects::namespace("shop", &[], &[]));
    api.apply_namespace(objects::namespace("ops", &[ON], &[]));
    api.apply_pod(objects::pod(
        "shop",
        "api-7d9",
        &uid(1),
        NODE,
        &[ON],
        &[("app", "api")],
    ));
    api.apply_pod(objects::pod(
        "ops",
        "batch-1",
        &uid(2),
        NODE,
        &[],
        &[("app", "batch")],
    ));
    api.apply_pod(objects::pod(
        "shop",
        "web-1",
        &uid(3),
        NODE,
        &[],
        &[("app", "web")],
    ));
    api.apply_pod(objects::pod("ops", "debug-1", &uid(4), NODE, &[OFF], &[]));

    let agent = Agent::node(&api, &node, "");
    agent.wait_ready();
    // The start-up gate opens in governed pods only.
    let gate = await_in(&api_pod, "20s");
    assert!(
        gate.status.success(),
        "hoop await: {}\n{}",
        text(&gate),
        agent.log()
    );
    assert!(text(&gate).contains("shop/api-7d9"), "{}", text(&gate));
    let gate = await_in(&batch, "20s");
    assert!(gate.status.success(), "hoop await: {}", text(&gate));
    let started = Instant::now();
    let shut = await_in(&web, "1s");
    assert!(
        !shut.status.success(),
        "an ungoverned pod's gate stays shut"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let metrics = agent.metrics();
    assert_eq!(
        sample(&metrics, "hoop_pods", &[r#"state="governed""#]),
        Some(2.0),
        "{metrics}"
    );

    // psql in the annotated pod: masked, and hoop dialed from the pod.
    let sql = format!("SELECT name, ssn FROM {TABLE} ORDER BY id");
    let out = psql_in(&api_pod, &sql);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Ada|***-**-6789\nBob|***-**-4321"
    );
    let peers = SimulatedPod::forwarded_peers(&api_log);
    assert!(
        peers
            .iter()
            .all(|p| p.starts_with(&format!("{}:", api_pod.pod_ip)))
            && !peers.is_empty(),
        "hoop's upstream legs leave from the pod's address: {peers:?}"
    );
    // The namespace-opted-in pod too; the others reach the raw data.
    let out = psql_in(&batch, &sql);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Ada|***-**-6789\nBob|***-**-4321",
        "{}",
        text(&out)
    );
    for pod in [&web, &debug] {
        let out = psql_in(pod, &sql);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "Ada|123-45-6789\nBob|987-65-4321",
            "an ungoverned pod is not governed: {}",
            text(&out)
        );
    }

    // `when: {namespace: [ops]}` applies in ops only. The same DELETE
    // (of no row) runs in shop and is refused in ops.
    let delete = format!("DELETE FROM {TABLE} WHERE id = 999");
    let out = psql_in(&api_pod, &delete);
    assert!(out.status.success(), "{}", text(&out));
    let out = psql_in(&batch, &delete);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the ops namespace may not delete"),
        "{}",
        text(&out)
    );

    // Each pod's sessions are recorded with its own identity.
    let dir = agent.recordings();
    wait_for(
        "the recordings of both pods",
        WAIT,
        || recordings_of(&dir, "api-7d9").len() >= 2 && recordings_of(&dir, "batch-1").len() >= 2,
        || agent.log(),
    );
    let api_recordings = recordings_of(&dir, "api-7d9");
    let pod = &api_recordings[0]["identity"]["pod"];
    assert_eq!(pod["namespace"], "shop", "{pod}");
    assert_eq!(pod["uid"], uid(1), "{pod}");
    assert_eq!(pod["service_account"], "api-7d9-sa", "{pod}");
    assert_eq!(pod["node"], NODE, "{pod}");
    assert_eq!(pod["labels"]["app"], "api", "{pod}");
    let shown = show(&dir, api_recordings[0]["id"].as_str().expect("id"));
    assert!(
        shown.contains("namespace=shop pod=api-7d9")
            && shown.contains("service_account=api-7d9-sa"),
        "{shown}"
    );
    assert!(
        shown.contains("***-**-6789") && !shown.contains("123-45-6789"),
        "{shown}"
    );
    for r in recordings_of(&dir, "batch-1") {
        assert_eq!(r["identity"]["pod"]["namespace"], "ops", "{r}");
        assert_eq!(r["identity"]["pod"]["service_account"], "batch-1-sa", "{r}");
    }
    assert!(recordings_of(&dir, "web-1").is_empty());

    // Counted; no pod names on the metrics.
    let metrics = agent.metrics();
    assert!(
        metric(
            &metrics,
            r#"hoop_statements_total{kind="delete",verdict="deny"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    for name in ["api-7d9", "batch-1", "shop", &uid(1)] {
        assert!(!metrics.contains(name), "{name} in the metrics:\n{metrics}");
    }

    // A hold shows the approver which pod is asking.
    let update = format!("UPDATE {TABLE} SET name = 'Eve' WHERE id = 2");
    let held = api_pod
        .command("psql")
        .args(["-X", "-h"])
        .arg(api_pod.host_ip.to_string())
        .args([
            "-p", "5432", "-U", "postgres", "-d", "test", "-Atc", &update,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    let mut pending = Vec::new();
    wait_for(
        "the held update",
        WAIT,
        || {
            pending = holds(&agent.admin);
            !pending.is_empty()
        },
        || agent.log(),
    );
    let hold = &pending[0];
    assert_eq!(hold["rule"], "shop-api-updates", "{hold}");
    assert_eq!(hold["workload"]["namespace"], "shop", "{hold}");
    assert_eq!(hold["workload"]["pod"], "api-7d9", "{hold}");
    assert_eq!(hold["workload"]["service_account"], "api-7d9-sa", "{hold}");
    let table = Command::new(hoop_bin())
        .args(["holds", "list", "--admin", &agent.admin])
        .env("HOOP_TOKEN", APPROVER)
        .output()
        .expect("hoop holds list");
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("pod shop/api-7d9 sa api-7d9-sa"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
    let id = hold["id"].as_str().expect("id");
    // Node mode: the hold is a HoldRequest in the API (issue 26), carrying
    // the pod's identity and this node, and the denial lands in its status.
    let object = api
        .hold_requests()
        .into_iter()
        .find(|o| o["metadata"]["name"] == id)
        .expect("the HoldRequest");
    assert_eq!(
        object["metadata"]["labels"]["hoop.dev/node"], NODE,
        "{object}"
    );
    assert_eq!(object["spec"]["workload"]["namespace"], "shop", "{object}");
    assert_eq!(object["spec"]["workload"]["pod"], "api-7d9", "{object}");
    assert_eq!(
        object["spec"]["workload"]["labels"]["app"], "api",
        "{object}"
    );
    let deny = Command::new(hoop_bin())
        .args([
            "holds",
            "deny",
            id,
            "--reason",
            "not today",
            "--admin",
            &agent.admin,
        ])
        .env("HOOP_TOKEN", APPROVER)
        .output()
        .expect("hoop holds deny");
    assert!(deny.status.success(), "{deny:?}");
    let out = held.wait_with_output().expect("psql");
    assert!(
        !out.status.success() && text(&out).contains("not today"),
        "{}",
        text(&out)
    );
    assert_eq!(
        psql_direct(&format!("SELECT name FROM {TABLE} WHERE id = 2")).trim(),
        "Bob"
    );
    let object = api
        .hold_requests()
        .into_iter()
        .find(|o| o["metadata"]["name"] == id)
        .expect("the HoldRequest");
    assert_eq!(object["status"]["state"], "denied", "{object}");
    assert_eq!(object["status"]["reason"], "not today", "{object}");
    assert_eq!(object["status"]["decider"], "dba@example.com", "{object}");

    // The API server goes away: logged and counted, and the pods stay governed.
    api.set_reachable(false).await.expect("unreachable");
    wait_for(
        "an API error counted",
        WAIT,
        || total(&agent.metrics(), "hoop_kubernetes_api_errors_total", &[]) >= 1.0,
        || agent.log(),
    );
    let out = psql_in(&api_pod, &sql);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Ada|***-**-6789\nBob|***-**-4321",
        "{}",
        text(&out)
    );
    assert!(
        agent.log().contains("Kubernetes API error"),
        "the outage is logged: {}",
        agent.log()
    );
    api.set_reachable(true).await.expect("reachable");
    // A malformed object on the watch: counted, the agent goes on.
    let errors = || {
        total(
            &agent.metrics(),
            "hoop_kubernetes_api_errors_total",
            &[r#"resource="pods""#],
        )
    };
    wait_for(
        "the pods watch to be back",
        WAIT,
        || api.watch_count(Kind::Pods) > 0,
        || agent.log(),
    );
    // Let the reconnect's own errors settle before counting.
    std::thread::sleep(Duration::from_millis(500));
    let before = errors();
    api.inject_raw_event(
        Kind::Pods,
        r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":7}}}"#,
    );
    wait_for(
        "the malformed object counted",
        WAIT,
        || errors() > before,
        || format!("{}\n{}", agent.metrics(), agent.log()),
    );
    let out = psql_in(&api_pod, &sql);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Ada|***-**-6789\nBob|***-**-4321",
        "{}",
        text(&out)
    );
    assert!(
        agent.log().contains("pod=shop/api-7d9 sa=api-7d9-sa"),
        "log lines name the pod"
    );

    // Deleted: detached and its listener closed; the pod's connections go direct.
    assert!(api.delete_pod("shop", "api-7d9"));
    wait_for(
        "the pod released",
        WAIT,
        || sample(&agent.metrics(), "hoop_pods", &[r#"state="governed""#]) == Some(1.0),
        || agent.log(),
    );
    let out = psql_in(&api_pod, &sql);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Ada|123-45-6789\nBob|987-65-4321",
        "{}",
        text(&out)
    );
    drop(agent);
    psql_direct(&format!("DROP TABLE IF EXISTS {TABLE}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_governs_its_own_pod_with_the_downward_api_identity() {
    require_root();
    setup_table();
    let node = SimulatedNode::new(CgroupDriver::Cgroupfs).expect("simulated node");
    let database = "127.0.0.1:5432".parse().expect("address");
    // The pod's network namespace exists; its cgroup and sandbox not yet.
    let mut pod = node
        .add_pod(&uid(9), QosClass::Guaranteed, false)
        .expect("pod");
    let log = pod.forward(5432, database).expect("forwarder");
    let agent = Agent::sidecar(&node, &pod, "reports-0", "analytics");
    let netns = pod.netns_path.clone();
    let in_pod = |url: &str| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns.display()))
            .args(["--", "curl"]);
        curl(cmd, url)
    };
    // Not ready while the pod has no cgroup to govern (the startup probe
    // holds the application containers back).
    wait_for(
        "the sidecar's admin API",
        WAIT,
        || in_pod(&format!("{}/ready", agent.admin)).0 != 0,
        || agent.log(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = in_pod(&format!("{}/ready", agent.admin));
    assert_eq!(status, 503, "{body}\n{}", agent.log());
    // The kubelet makes the pod's cgroup and sandbox: governed, ready.
    pod.start().expect("start the pod");
    wait_for(
        "the sidecar's /ready",
        WAIT,
        || in_pod(&format!("{}/ready", agent.admin)).0 == 200,
        || agent.log(),
    );
    // hoop now also sits in the pod's cgroup, as a native sidecar does: its
    // own connections must not be redirected to itself.
    std::fs::write(pod.container.join("cgroup.procs"), agent.pid().to_string())
        .expect("move hoop into the pod's cgroup");

    let sql = format!("SELECT name, ssn FROM {TABLE} ORDER BY id");
    let out = psql_in(&pod, &sql);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Ada|***-**-6789\nBob|***-**-4321"
    );
    let delete = format!("DELETE FROM {TABLE} WHERE id = 999");
    let out = psql_in(&pod, &delete);
    assert!(out.status.success(), "not in ops: {}", text(&out));
    // The upstream leg leaves from the pod's address (hoop is in its namespace).
    let peers = SimulatedPod::forwarded_peers(&log);
    assert!(
        !peers.is_empty()
            && peers
                .iter()
                .all(|p| p.starts_with(&format!("{}:", pod.pod_ip))),
        "{peers:?}"
    );
    let dir = agent.recordings();
    wait_for(
        "the sidecar's recordings",
        WAIT,
        || recordings_of(&dir, "reports-0").len() >= 2,
        || agent.log(),
    );
    for r in recordings_of(&dir, "reports-0") {
        let p = &r["identity"]["pod"];
        assert_eq!(p["namespace"], "analytics", "{r}");
        assert_eq!(p["uid"], uid(9), "{r}");
        assert_eq!(p["service_account"], "reports-0-sa", "{r}");
    }
    let (_, metrics) = in_pod(&format!("{}/metrics", agent.admin));
    assert_eq!(
        sample(&metrics, "hoop_pods", &[r#"state="governed""#]),
        Some(1.0),
        "{metrics}"
    );
    // The application cannot step around hoop by marking its socket with
    // hoop's skip mark (the pod's namespace is hoop's own here): the marked
    // connect is redirected all the same.
    let redirects = || {
        metric(
            &in_pod(&format!("{}/metrics", agent.admin)).1,
            "hoop_ebpf_redirects_total",
        )
        .unwrap_or(0.0)
    };
    let before = redirects();
    let marked = pod
        .command("python3")
        .arg("-c")
        .arg(format!(
            "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, 36, {})\n\
             s.settimeout(5)\ns.connect(('{}', 5432))\ns.close()",
            hoop::intercept::DEFAULT_SKIP_MARK,
            pod.host_ip
        ))
        .output()
        .expect("python3");
    assert!(marked.status.success(), "{}", text(&marked));
    wait_for(
        "the marked connect counted as redirected",
        WAIT,
        || redirects() > before,
        || agent.log(),
    );
    // SQL hoop cannot parse is denied, and the log line names the pod.
    let out = psql_in(&pod, "SELEC 1");
    assert!(!out.status.success(), "{}", text(&out));
    let log = agent.log();
    assert!(
        log.contains("pod=analytics/reports-0 sa=reports-0-sa"),
        "{log}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_pods_governed_and_an_added_annotation_takes_effect() {
    require_root();
    setup_table();
    let bpffs = hoop_tests::k8s::BpfFs::mount();
    let pins = bpffs.path().join("hoop");
    let api = FakeApiServer::start().await.expect("API server stand-in");
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let database = "127.0.0.1:5432".parse().expect("address");
    let mut a = node
        .add_pod(&uid(30), QosClass::Burstable, true)
        .expect("pod");
    let mut b = node
        .add_pod(&uid(31), QosClass::BestEffort, true)
        .expect("pod");
    let mut c = node
        .add_pod(&uid(32), QosClass::Burstable, true)
        .expect("pod");
    for pod in [&mut a, &mut b, &mut c] {
        pod.forward(5432, database).expect("forwarder");
    }
    api.apply_namespace(objects::namespace("shop", &[], &[]));
    api.apply_pod(objects::pod("shop", "a-0", &uid(30), NODE, &[ON], &[]));
    api.apply_pod(objects::pod("shop", "b-0", &uid(31), NODE, &[], &[]));
    let sql = format!("SELECT name, ssn FROM {TABLE} ORDER BY id");
    let masked = "Ada|***-**-6789\nBob|***-**-4321";
    let raw = "Ada|123-45-6789\nBob|987-65-4321";
    let first = Agent::node_pinned(&api, &node, "", Some(&pins));
    first.wait_ready();
    let gate = await_in(&a, "20s");
    assert!(gate.status.success(), "{}\n{}", text(&gate), first.log());
    assert_eq!(
        String::from_utf8_lossy(&psql_in(&b, &sql).stdout).trim(),
        raw
    );
    // An annotation added to a running pod: governed from its next connection.
    api.apply_pod(objects::pod("shop", "b-0", &uid(31), NODE, &[ON], &[]));
    let gate = await_in(&b, "20s");
    assert!(gate.status.success(), "{}\n{}", text(&gate), first.log());
    let out = psql_in(&b, &sql);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        masked,
        "{}",
        text(&out)
    );

    // The agent stops; its pinned programs stay: the governed pods' connects
    // are refused, never direct.
    let mut first = first;
    first.stop();
    let first_log = first.log();
    assert!(
        first_log.contains("pinned programs stay attached"),
        "{first_log}"
    );
    let out = psql_in(&a, &sql);
    assert!(
        !out.status.success() && !text(&out).contains("123-45-6789"),
        "while no agent runs, a governed pod is refused: {}",
        text(&out)
    );
    // Meanwhile b-0 is deleted and c-0 created.
    assert!(api.delete_pod("shop", "b-0"));
    api.apply_pod(objects::pod("shop", "c-0", &uid(32), NODE, &[ON], &[]));

    let second = Agent::node_pinned(&api, &node, "", Some(&pins));
    second.wait_ready();
    for pod in [&a, &c] {
        let gate = await_in(pod, "20s");
        assert!(gate.status.success(), "{}\n{}", text(&gate), second.log());
        let out = psql_in(pod, &sql);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            masked,
            "{}",
            text(&out)
        );
    }
    // The pod deleted while no agent ran was cleaned up: it goes direct.
    wait_for(
        "b-0's adopted programs released",
        WAIT,
        || String::from_utf8_lossy(&psql_in(&b, &sql).stdout).trim() == raw,
        || second.log(),
    );
    // A pod whose cgroup appears after its API event: pending, then governed.
    let mut d = node
        .add_pod(&uid(33), QosClass::Burstable, false)
        .expect("pod");
    d.forward(5432, database).expect("forwarder");
    api.apply_pod(objects::pod("shop", "d-0", &uid(33), NODE, &[ON], &[]));
    wait_for(
        "d-0 pending",
        WAIT,
        || sample(&second.metrics(), "hoop_pods", &[r#"state="pending""#]) == Some(1.0),
        || format!("{}\n{}", second.metrics(), second.log()),
    );
    d.start().expect("the kubelet makes d-0's cgroup");
    let gate = await_in(&d, "20s");
    assert!(gate.status.success(), "{}\n{}", text(&gate), second.log());
    let out = psql_in(&d, &sql);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        masked,
        "{}",
        text(&out)
    );
    let dir = second.recordings();
    wait_for(
        "the second agent's recordings",
        WAIT,
        || !recordings_of(&dir, "c-0").is_empty() && !recordings_of(&dir, "a-0").is_empty(),
        || second.log(),
    );
    drop(second);
}

/// pgbench's `tps = …` figure.
fn tps(out: &Output) -> f64 {
    let text = text(out);
    assert!(out.status.success(), "pgbench failed: {text}");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in {text}"))
}

/// The issue's benchmark: `pgbench -S` through a governed simulated pod
/// (node agent, listener in the pod's namespace, upstream from there)
/// against `hoop exec` with the same configuration, binary and forwarder,
/// alternated in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test -p hoop-tests --test k8s_agent -- --ignored --nocapture"]
async fn pgbench_through_a_governed_pod_against_hoop_exec() {
    require_root();
    if psql_direct(&format!("SELECT 1 FROM pg_database WHERE datname = '{DB}'")).trim() != "1" {
        psql_direct(&format!("CREATE DATABASE {DB}"));
    }
    let init = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            "1",
            DB,
        ])
        .output()
        .expect("pgbench -i");
    assert!(init.status.success(), "{}", text(&init));
    let secs = std::env::var("HOOP_BENCH_SECONDS").unwrap_or_else(|_| "10".into());
    let api = FakeApiServer::start().await.expect("API server stand-in");
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let mut pod = node
        .add_pod(&uid(20), QosClass::Burstable, true)
        .expect("pod");
    pod.forward(5432, "127.0.0.1:5432".parse().expect("address"))
        .expect("forwarder");
    // An ungoverned twin: the cost of the veth and forwarder alone.
    let mut bare = node
        .add_pod(&uid(21), QosClass::Burstable, true)
        .expect("pod");
    bare.forward(5432, "127.0.0.1:5432".parse().expect("address"))
        .expect("forwarder");
    api.apply_pod(objects::pod(
        "bench",
        "pgbench-bare",
        &uid(21),
        NODE,
        &[],
        &[],
    ));
    api.apply_namespace(objects::namespace("bench", &[], &[]));
    api.apply_pod(objects::pod(
        "bench",
        "pgbench-0",
        &uid(20),
        NODE,
        &[ON],
        &[],
    ));
    let agent = Agent::node(&api, &node, "proxy:\n  worker_threads: 1\n");
    agent.wait_ready();
    let gate = await_in(&pod, "20s");
    assert!(gate.status.success(), "{}", text(&gate));
    let args = |cmd: &mut Command, pod: &SimulatedPod| {
        cmd.args(["-h"]).arg(pod.host_ip.to_string()).args([
            "-p", "5432", "-U", "postgres", "-n", "-S", "-c", "4", "-j", "2", "-T", &secs, DB,
        ]);
    };
    let (mut governed, mut exec) = (Vec::new(), Vec::new());
    let (mut pod_direct, mut host_direct) = (Vec::new(), Vec::new());
    let rounds: usize = std::env::var("HOOP_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for _ in 0..rounds {
        let mut cmd = Command::new(hoop_bin());
        cmd.args(["exec", "--config"])
            .arg(agent.config_path())
            .args(["--", "pgbench"]);
        args(&mut cmd, &pod);
        exec.push(tps(&cmd.output().expect("hoop exec pgbench")));
        let mut cmd = pod.command("pgbench");
        args(&mut cmd, &pod);
        governed.push(tps(&cmd.output().expect("pgbench in the pod")));
        let mut cmd = Command::new("pgbench");
        args(&mut cmd, &pod);
        host_direct.push(tps(&cmd.output().expect("pgbench on the host")));
        let mut cmd = bare.command("pgbench");
        args(&mut cmd, &bare);
        pod_direct.push(tps(&cmd.output().expect("pgbench in the bare pod")));
    }
    // The pod's sessions really went through hoop.
    let metrics = agent.metrics();
    assert!(
        metric(&metrics, "hoop_connections_total").is_some_and(|n| n >= 12.0),
        "{metrics}"
    );
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "pgbench -S -c 4 -j 2 -T {secs}, {} runs each, alternated (HOOP_BENCH_ROUNDS)\n  hoop exec:     {exec:.0?} tps (median {:.0}, best {:.0})\n  governed pod:  {governed:.0?} tps (median {:.0}, best {:.0})\n  pod / exec (median): {:.3}\n  direct, host:  {host_direct:.0?} tps (median {:.0})\n  direct, pod:   {pod_direct:.0?} tps (median {:.0})\n  pod / host direct (median): {:.3}",
        exec.len(),
        median(&exec),
        best(&exec),
        median(&governed),
        best(&governed),
        median(&governed) / median(&exec),
        median(&host_direct),
        median(&pod_direct),
        median(&pod_direct) / median(&host_direct),
    );
    drop(agent);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The issue's memory figure with the real proxy serving the pods'
/// listeners: the node agent's RSS before and after N idle pods are governed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test -p hoop-tests --test k8s_agent -- --ignored --nocapture memory"]
async fn memory_per_governed_idle_pod_in_the_agent() {
    require_root();
    let n: u8 = std::env::var("HOOP_MEMORY_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let api = FakeApiServer::start().await.expect("API server stand-in");
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let pods: Vec<SimulatedPod> = (0..n)
        .map(|i| {
            node.add_pod(&uid(100 + i), QosClass::BestEffort, true)
                .expect("pod")
        })
        .collect();
    api.apply_namespace(objects::namespace("idle", &[], &[]));
    let agent = Agent::node(&api, &node, "");
    agent.wait_ready();
    // Settle, then the baseline.
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(agent.pid());
    for i in 0..n {
        api.apply_pod(objects::pod(
            "idle",
            &format!("idle-{i}"),
            &uid(100 + i),
            NODE,
            &[ON],
            &[("app", "idle")],
        ));
    }
    wait_for(
        "every pod governed",
        Duration::from_mins(1),
        || sample(&agent.metrics(), "hoop_pods", &[r#"state="governed""#]) == Some(f64::from(n)),
        || agent.log(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(agent.pid());
    let per_pod = (after.saturating_sub(before)) as f64 / f64::from(n);
    eprintln!(
        "hoop agent RSS: {before} KiB with no pod, {after} KiB with {n} governed idle pods: {per_pod:.1} KiB per pod"
    );
    drop(agent);
    drop(pods);
}
