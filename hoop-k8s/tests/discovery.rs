//! Discovery against the API server stand-in: kube-rs's real watcher over
//! HTTP, the reconciler, and a governor that records what it is asked.
//! (Privileged tests with the real governor — eBPF, cgroups, network
//! namespaces — are in the workspace's `tests/` crate.)
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use hoop_k8s::{
    GovernError, GovernRequest, PodGovernor, Reconciler, StatusBoard,
    discovery::{self, DiscoverySettings, WatchBackoff},
    events::KubeEvents,
    metrics::K8sMetrics,
    opt_in::OptInRules,
    reconcile::ReconcilerSettings,
    status::PodState,
    testing::apiserver::{FakeApiServer, Kind, objects},
};
use prometheus::Registry;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Govern(String, Vec<u16>),
    Release(String),
    Retain(usize),
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl PodGovernor for Recorder {
    async fn govern(&self, r: &GovernRequest) -> Result<(), GovernError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Govern(r.workload.pod.clone(), r.ports.clone()));
        Ok(())
    }

    async fn release(&self, uid: &str) -> Result<(), GovernError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Release(uid.to_owned()));
        Ok(())
    }

    async fn retain(&self, keep: &HashSet<String>) {
        self.calls.lock().unwrap().push(Call::Retain(keep.len()));
    }
}

fn uid(n: u8) -> String {
    format!("{n:08x}-1111-4222-8333-444455556666")
}

fn make_cgroup(root: &Path, n: u8) {
    std::fs::create_dir_all(root.join(format!("kubepods/burstable/pod{}", uid(n)))).unwrap();
}

struct Harness {
    server: FakeApiServer,
    governor: Arc<Recorder>,
    board: StatusBoard,
    metrics: K8sMetrics,
    task: tokio::task::JoinHandle<()>,
    root: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn harness(setup: impl FnOnce(&FakeApiServer, &Path)) -> Harness {
    let server = FakeApiServer::start().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    setup(&server, root.path());
    let governor = Arc::new(Recorder::default());
    let board = StatusBoard::new();
    let metrics = K8sMetrics::register(&Registry::new()).unwrap();
    let rules = OptInRules {
        exclude_namespaces: vec!["kube-system".into()],
        agent_namespace: Some("hoop-system".into()),
        agent_pod_uid: None,
        default_ports: vec![5432],
    };
    let client = server.client().unwrap();
    let events = Arc::new(KubeEvents::spawn(client.clone(), "hoop-agent-n1".into()));
    let mut reconciler = Reconciler::new(
        ReconcilerSettings::new(root.path().to_owned(), rules),
        governor.clone(),
        board.clone(),
        metrics.clone(),
    )
    .with_events(events);
    let settings = DiscoverySettings {
        node_name: "n1".into(),
        resync_interval: Duration::from_hours(1),
        backoff: WatchBackoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
    };
    let task = tokio::spawn(async move {
        discovery::run(client, &settings, &mut reconciler, std::future::pending()).await;
    });
    Harness {
        server,
        governor,
        board,
        metrics,
        task,
        root,
    }
}

/// Waits until `pred` holds, failing after 10 s with `what`.
async fn eventually(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pred() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ON: (&str, &str) = ("hoop.dev/govern", "true");

#[tokio::test]
async fn lists_and_watches_this_nodes_pods_and_namespace_metadata() {
    let h = harness(|s, root| {
        s.apply_namespace(objects::namespace("shop", &[], &[]));
        s.apply_namespace(objects::namespace("team", &[ON], &[]));
        s.apply_pod(objects::pod("shop", "a", &uid(1), "n1", &[ON], &[]));
        s.apply_pod(objects::pod(
            "shop",
            "other-node",
            &uid(2),
            "n2",
            &[ON],
            &[],
        ));
        s.apply_pod(objects::pod(
            "team",
            "b",
            &uid(3),
            "n1",
            &[],
            &[("app", "b")],
        ));
        s.apply_pod(objects::pod("shop", "plain", &uid(4), "n1", &[], &[]));
        for n in 1..=4 {
            make_cgroup(root, n);
        }
    })
    .await;
    eventually("the first sync", || h.board.ready(None)).await;
    let mut calls = h.governor.calls();
    calls.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        calls,
        [
            Call::Govern("a".into(), vec![5432]),
            Call::Govern("b".into(), vec![5432]),
            Call::Retain(2),
        ]
    );
    let b = h.board.pod(&uid(3)).unwrap();
    assert_eq!(b.workload.service_account, "b-sa");
    assert_eq!(b.workload.node, "n1");
    assert_eq!(b.workload.labels["app"], "b");

    // The wire: this node's pods only, and namespaces in metadata form.
    let requests = h.server.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dn1")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces?") && r.ends_with("[metadata]")),
        "{requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("watch=true")),
        "{requests:#?}"
    );

    // Watch events: a new pod, an annotation change, a namespace flip, a delete.
    make_cgroup(h.root.path(), 5);
    h.server.apply_pod(objects::pod(
        "shop",
        "late",
        &uid(5),
        "n1",
        &[ON, ("hoop.dev/ports", "6432")],
        &[],
    ));
    eventually("the new pod governed", || {
        h.governor
            .calls()
            .contains(&Call::Govern("late".into(), vec![6432]))
    })
    .await;
    h.server
        .apply_pod(objects::pod("shop", "plain", &uid(4), "n1", &[ON], &[]));
    eventually("the annotated pod governed", || {
        h.governor
            .calls()
            .contains(&Call::Govern("plain".into(), vec![5432]))
    })
    .await;
    h.server
        .apply_namespace(objects::namespace("team", &[], &[]));
    eventually("namespace opt-out releases", || {
        h.governor.calls().contains(&Call::Release(uid(3)))
    })
    .await;
    assert!(h.server.delete_pod("shop", "a"));
    eventually("deleted pod released", || {
        h.governor.calls().contains(&Call::Release(uid(1)))
    })
    .await;
    assert!(h.board.pod(&uid(1)).is_none());
    assert_eq!(h.metrics.pods.with_label_values(&["governed", ""]).get(), 2);

    // `kubectl describe pod` would show why: Governed / Released events.
    eventually("events recorded", || {
        let events = h.server.events();
        let has = |reason: &str, pod: &str| {
            events.iter().any(|e| {
                e["reason"] == reason
                    && e["regarding"]["name"] == pod
                    && e["regarding"]["kind"] == "Pod"
                    && e["reportingController"] == "hoop.dev/agent"
            })
        };
        has("Governed", "a")
            && has("Governed", "late")
            && has("Released", "a")
            && has("Released", "b")
    })
    .await;
}

#[tokio::test]
async fn invalid_values_are_warned_about_on_the_pod() {
    let h = harness(|s, root| {
        s.apply_namespace(objects::namespace("shop", &[], &[]));
        s.apply_pod(objects::pod(
            "shop",
            "typo",
            &uid(1),
            "n1",
            &[("hoop.dev/govern", "ture")],
            &[],
        ));
        make_cgroup(root, 1);
    })
    .await;
    eventually("the typo governs (fail closed)", || {
        h.board.is_governed(&uid(1))
    })
    .await;
    eventually("a warning event on the pod", || {
        h.server.events().iter().any(|e| {
            e["type"] == "Warning"
                && e["reason"] == "InvalidOptIn"
                && e["regarding"]["uid"] == uid(1).as_str()
                && e["note"].as_str().is_some_and(|n| n.contains("\"ture\""))
        })
    })
    .await;
    assert_eq!(
        h.metrics
            .invalid_opt_in_total
            .with_label_values(&["hoop.dev/govern", "pod"])
            .get(),
        1
    );
}

#[tokio::test]
async fn an_unreachable_server_changes_nothing_and_recovery_catches_up() {
    let h = harness(|s, root| {
        s.apply_namespace(objects::namespace("shop", &[], &[]));
        for n in 1..=3 {
            s.apply_pod(objects::pod(
                "shop",
                &format!("p{n}"),
                &uid(n),
                "n1",
                &[ON],
                &[],
            ));
            make_cgroup(root, n);
        }
    })
    .await;
    eventually("the first sync", || h.board.ready(None)).await;
    let before = h.governor.calls().len();

    h.server.set_reachable(false).await.unwrap();
    // Meanwhile: p1 deleted, p4 created.
    assert!(h.server.delete_pod("shop", "p1"));
    make_cgroup(h.root.path(), 4);
    h.server
        .apply_pod(objects::pod("shop", "p4", &uid(4), "n1", &[ON], &[]));
    eventually("API errors counted", || {
        ["watch_start", "list", "watch"].iter().any(|reason| {
            h.metrics
                .api_errors_total
                .with_label_values(&["pods", reason])
                .get()
                > 0
        })
    })
    .await;
    assert_eq!(
        h.governor.calls().len(),
        before,
        "nothing is released or governed while the API server is away"
    );
    for n in 1..=3 {
        assert!(h.board.is_governed(&uid(n)));
    }

    h.server.set_reachable(true).await.unwrap();
    eventually("p1 released and p4 governed after recovery", || {
        let calls = h.governor.calls();
        calls.contains(&Call::Release(uid(1)))
            && calls.contains(&Call::Govern("p4".into(), vec![5432]))
    })
    .await;

    // Compaction: the resumed watch gets 410 Gone; the re-list is the truth.
    h.server.expire_history();
    assert!(h.server.delete_pod("shop", "p2"));
    eventually("410 counted and p2 released after the re-list", || {
        h.governor.calls().contains(&Call::Release(uid(2)))
            && h.metrics
                .api_errors_total
                .with_label_values(&["pods", "gone"])
                .get()
                > 0
    })
    .await;
    assert!(h.board.is_governed(&uid(3)));
    assert!(h.board.is_governed(&uid(4)));
}

#[tokio::test]
async fn malformed_objects_are_counted_and_the_rest_is_governed() {
    let h = harness(|s, root| {
        s.apply_namespace(objects::namespace("shop", &[], &[]));
        s.apply_pod(objects::pod("shop", "good", &uid(1), "n1", &[ON], &[]));
        let mut bad = objects::pod("shop", "no-uid", "", "n1", &[ON], &[]);
        bad["metadata"].as_object_mut().unwrap().remove("uid");
        s.apply_pod(bad);
        make_cgroup(root, 1);
    })
    .await;
    eventually("the first sync", || h.board.ready(None)).await;
    assert_eq!(
        h.metrics
            .api_errors_total
            .with_label_values(&["pods", "malformed"])
            .get(),
        1
    );
    eventually("the pod watch is open", || {
        h.server.watch_count(Kind::Pods) > 0
    })
    .await;
    // A watch event that is not a pod at all.
    h.server.inject_raw_event(
        Kind::Pods,
        r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":42,"uid":[]}}}"#,
    );
    eventually("the undecodable event counted", || {
        h.metrics
            .api_errors_total
            .with_label_values(&["pods", "watch"])
            .get()
            > 0
    })
    .await;
    // The watch goes on.
    make_cgroup(h.root.path(), 2);
    h.server
        .apply_pod(objects::pod("shop", "after", &uid(2), "n1", &[ON], &[]));
    eventually("a pod after the bad event governed", || {
        h.board.is_governed(&uid(2))
    })
    .await;
    assert_eq!(
        h.board.pod(&uid(1)).map(|p| p.state),
        Some(PodState::Governed)
    );
}
