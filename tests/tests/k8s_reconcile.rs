//! Kubernetes tier, privileged: the reconciler and kube-rs watchers against
//! the API server stand-in, governing simulated pods for real (hoop's eBPF
//! programs on the pod cgroups, listeners in the pods' network namespaces).
//!
//! Needs root; never skips.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr, TcpListener},
    path::Path,
    sync::Arc,
    time::Duration,
};

use hoop::intercept::Interceptor;
use hoop_k8s::{
    Reconciler, StatusBoard,
    cgroup_path::{CgroupDriver, QosClass},
    discovery::{self, DiscoverySettings, WatchBackoff},
    metrics::K8sMetrics,
    opt_in::OptInRules,
    reconcile::ReconcilerSettings,
    status::PodState,
    testing::{
        apiserver::{FakeApiServer, Kind, objects},
        node::{SimulatedNode, SimulatedPod},
    },
};
use hoop_tests::k8s::{
    BpfFs, Destination, Dialled, TestGovernor, dial_from, eventually, load_interceptor,
    require_root,
};
use serde_json::Value;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PORT: u16 = 15_410;
const WAIT: Duration = Duration::from_secs(15);
const ON: (&str, &str) = ("hoop.dev/govern", "true");
const OFF: (&str, &str) = ("hoop.dev/govern", "false");

fn uid(n: u8) -> String {
    format!("{n:08x}-5e5e-4f4f-8a8a-1b1b1b1b1b1b")
}

/// One running agent: interceptor, governor, reconciler and watchers.
struct Agent {
    task: tokio::task::JoinHandle<()>,
    governor: Arc<TestGovernor>,
    board: StatusBoard,
    metrics: K8sMetrics,
    interceptor: Arc<Interceptor>,
    _host: [TcpListener; 2],
}

impl Agent {
    fn start(server: &FakeApiServer, node: &SimulatedNode, pins: Option<&Path>) -> Self {
        let (interceptor, host) = load_interceptor(&[PORT], pins);
        let interceptor = Arc::new(interceptor);
        let governor = Arc::new(TestGovernor::new(interceptor.clone()));
        let board = StatusBoard::new();
        let metrics = K8sMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let rules = OptInRules {
            exclude_namespaces: vec!["kube-system".into()],
            agent_namespace: Some("hoop-system".into()),
            agent_pod_uid: None,
            default_ports: vec![PORT],
        };
        let mut reconciler = Reconciler::new(
            ReconcilerSettings::new(node.cgroup_root().to_owned(), rules),
            governor.clone(),
            board.clone(),
            metrics.clone(),
        );
        let client = server.client().expect("client");
        let settings = DiscoverySettings {
            node_name: "node-1".into(),
            resync_interval: Duration::from_secs(2),
            backoff: WatchBackoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(400),
            },
        };
        let task = tokio::spawn(async move {
            discovery::run(client, &settings, &mut reconciler, std::future::pending()).await;
        });
        Self {
            task,
            governor,
            board,
            metrics,
            interceptor,
            _host: host,
        }
    }

    /// Stops the agent as a crash would: everything it holds is dropped.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    fn relayed(&self, pod: &SimulatedPod) -> usize {
        self.governor.relayed(&pod.uid).len()
    }
}

fn pod_object(
    pod: &SimulatedPod,
    ns: &str,
    name: &str,
    annotations: &[(&str, &str)],
    labels: &[(&str, &str)],
) -> Value {
    objects::pod(ns, name, &pod.uid, "node-1", annotations, labels)
}

/// Dials the pod's destination from inside the pod; returns whether it
/// got an answer.
async fn dial(pod: &SimulatedPod) -> Dialled {
    dial_from(pod.command("python3"), &pod.host_ip.to_string(), PORT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_follow_their_opt_in_through_the_watchers() {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = FakeApiServer::start().await.expect("api server");
    let node = SimulatedNode::new(CgroupDriver::Cgroupfs).expect("node");
    let mut pods: Vec<SimulatedPod> = (1..=5)
        .map(|n| {
            node.add_pod(&uid(n), QosClass::Burstable, n != 5)
                .expect("pod")
        })
        .collect();
    let mut dests = Vec::new();
    for p in &pods {
        dests.push(Destination::start(SocketAddr::new(IpAddr::V4(p.host_ip), PORT)).await);
    }
    server.apply_namespace(objects::namespace("shop", &[], &[]));
    server.apply_namespace(objects::namespace("team", &[ON], &[]));
    server.apply_pod(pod_object(&pods[0], "shop", "annotated", &[ON], &[]));
    server.apply_pod(pod_object(&pods[1], "shop", "plain", &[], &[]));
    server.apply_pod(pod_object(&pods[2], "team", "by-namespace", &[], &[]));
    server.apply_pod(pod_object(&pods[3], "team", "opted-out", &[], &[OFF]));
    // The fifth pod's cgroup does not exist yet: the event comes before
    // the kubelet made it.
    server.apply_pod(pod_object(&pods[4], "shop", "early", &[ON], &[]));

    let agent = Agent::start(&server, &node, None);
    eventually("the first sync", WAIT, || agent.board.ready(None)).await;
    assert!(agent.board.is_governed(&pods[0].uid));
    assert!(agent.board.is_governed(&pods[2].uid));
    assert!(agent.board.pod(&pods[1].uid).is_none());
    assert!(agent.board.pod(&pods[3].uid).is_none());
    assert_eq!(
        agent.board.pod(&pods[4].uid).map(|p| p.state),
        Some(PodState::Pending {
            reason: "cgroup_not_found"
        })
    );

    // Governed pods go through hoop; the others go direct.
    for p in &pods[..4] {
        assert!(matches!(dial(p).await, Dialled::Reply(_)));
    }
    assert_eq!(agent.relayed(&pods[0]), 1);
    assert_eq!(agent.relayed(&pods[2]), 1, "namespace opt-in");
    assert_eq!(dests[1].peers().len(), 1, "not opted in: direct");
    assert_eq!(
        dests[3].peers().len(),
        1,
        "namespace opt-in, pod opt-out: direct"
    );

    // The cgroup appears: governed on a retry, without any new event.
    pods[4].start().expect("start the fifth pod");
    eventually(
        "the fifth pod governed once its cgroup exists",
        WAIT,
        || agent.board.is_governed(&pods[4].uid),
    )
    .await;
    assert!(matches!(dial(&pods[4]).await, Dialled::Reply(_)));
    assert_eq!(agent.relayed(&pods[4]), 1);
    let (p1, p2) = (&pods[0], &pods[1]);

    // An annotation added to a running pod: its next connection is governed.
    server.apply_pod(pod_object(p2, "shop", "plain", &[ON], &[]));
    eventually("p2 governed", WAIT, || agent.board.is_governed(&p2.uid)).await;
    assert!(matches!(dial(p2).await, Dialled::Reply(_)));
    assert_eq!(agent.relayed(p2), 1);

    // A deleted pod: detached, listener closed.
    let cgroup_id = hoop::intercept::cgroup::cgroup_id(&p1.cgroup).expect("id");
    let (listener, _) = agent.governor.listener_addrs(&p1.uid).expect("p1 listens");
    assert!(server.delete_pod("shop", "annotated"));
    eventually("p1 released", WAIT, || agent.board.pod(&p1.uid).is_none()).await;
    assert!(agent.governor.listener_addrs(&p1.uid).is_none());
    assert!(!agent.interceptor.attached_cgroups().contains(&p1.cgroup));
    assert!(!agent.interceptor.adopted_cgroups().contains(&cgroup_id));
    let closed = dial_from(
        pods[0].command("python3"),
        &listener.ip().to_string(),
        listener.port(),
    )
    .await;
    assert_eq!(
        closed,
        Dialled::Errno(111),
        "the pod's hoop listener is closed"
    );
    assert!(matches!(dial(&pods[0]).await, Dialled::Reply(_)));
    assert_eq!(dests[0].peers().len(), 2, "after release p1 goes direct");

    // The API server goes away: governed pods stay governed.
    server.set_reachable(false).await.expect("unreachable");
    server.apply_pod(pod_object(&pods[3], "team", "opted-out", &[], &[]));
    eventually("API errors counted", WAIT, || {
        ["list", "watch_start", "watch"].iter().any(|r| {
            agent
                .metrics
                .api_errors_total
                .with_label_values(&["pods", r])
                .get()
                > 0
        })
    })
    .await;
    assert!(matches!(dial(&pods[2]).await, Dialled::Reply(_)));
    assert_eq!(
        agent.relayed(&pods[2]),
        2,
        "p3 still governed while the API server is away"
    );
    assert!(
        agent.board.pod(&pods[3].uid).is_none(),
        "the change is not seen yet"
    );
    server.set_reachable(true).await.expect("reachable");
    eventually(
        "p4's opt-out removed while away is seen after recovery",
        WAIT,
        || agent.board.is_governed(&pods[3].uid),
    )
    .await;

    // A malformed object: counted, and everything else keeps going.
    eventually("pod watch open", WAIT, || {
        server.watch_count(Kind::Pods) > 0
    })
    .await;
    server.inject_raw_event(
        Kind::Pods,
        r#"{"type":"MODIFIED","object":{"kind":"Pod","spec":7}}"#,
    );
    eventually("malformed event counted", WAIT, || {
        agent
            .metrics
            .api_errors_total
            .with_label_values(&["pods", "watch"])
            .get()
            > 0
    })
    .await;
    assert!(matches!(dial(&pods[2]).await, Dialled::Reply(_)));
    assert_eq!(agent.relayed(&pods[2]), 3);
    assert_eq!(
        agent
            .metrics
            .pods
            .with_label_values(&["governed", ""])
            .get(),
        4,
        "p2, p3, p4, p5"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_governs_new_pods_and_cleans_up_deleted_ones() {
    require_root();
    let _serial = SERIAL.lock().await;
    let bpffs = BpfFs::mount();
    let server = FakeApiServer::start().await.expect("api server");
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("node");
    let p1 = node
        .add_pod(&uid(11), QosClass::Burstable, true)
        .expect("p1");
    let mut p2 = node
        .add_pod(&uid(12), QosClass::BestEffort, true)
        .expect("p2");
    let p3 = node
        .add_pod(&uid(13), QosClass::Guaranteed, true)
        .expect("p3");
    let mut dests = Vec::new();
    for p in [&p1, &p2, &p3] {
        dests.push(Destination::start(SocketAddr::new(IpAddr::V4(p.host_ip), PORT)).await);
    }
    server.apply_namespace(objects::namespace("shop", &[], &[]));
    server.apply_pod(pod_object(&p1, "shop", "p1", &[ON], &[]));
    server.apply_pod(pod_object(&p2, "shop", "p2", &[ON], &[]));

    let agent = Agent::start(&server, &node, Some(bpffs.path()));
    eventually("p1 and p2 governed", WAIT, || {
        agent.board.is_governed(&p1.uid) && agent.board.is_governed(&p2.uid)
    })
    .await;
    assert!(matches!(dial(&p1).await, Dialled::Reply(_)));
    assert_eq!(agent.relayed(&p1), 1);
    agent.stop().await;

    // While the agent is down: p1 is refused (not let through), p2 is
    // deleted (its cgroup goes), p3 is created.
    assert_eq!(dial(&p1).await, Dialled::Errno(111));
    assert_eq!(dests[0].peers().len(), 1, "nothing went around hoop");
    assert!(server.delete_pod("shop", "p2"));
    p2.stop().expect("stop p2");
    server.apply_pod(pod_object(&p3, "shop", "p3", &[ON], &[]));

    let restarted = std::time::Instant::now();
    let agent = Agent::start(&server, &node, Some(bpffs.path()));
    let loaded = restarted.elapsed();
    eventually("the restarted agent's first sync", WAIT, || {
        agent.board.ready(None)
    })
    .await;
    let governed_again = agent
        .board
        .pod(&p1.uid)
        .and_then(|p| p.governed_at)
        .map(|at| at.duration_since(restarted));
    eprintln!(
        "restart: programs loaded and links adopted in {loaded:?}; p1 redirecting to the new \
         agent's listener {governed_again:?} after the agent started (refused until then)"
    );
    assert!(agent.board.is_governed(&p1.uid));
    assert!(agent.board.is_governed(&p3.uid));
    assert!(agent.board.pod(&p2.uid).is_none());
    assert!(
        agent.interceptor.adopted_cgroups().is_empty(),
        "all adopted links claimed or released"
    );
    for p in [&p1, &p3] {
        assert!(matches!(dial(p).await, Dialled::Reply(_)));
        assert_eq!(agent.relayed(p), 1);
    }
    // Exactly p1's and p3's links are pinned: p2's went with its cgroup.
    let ids: BTreeSet<String> = std::fs::read_dir(
        bpffs
            .path()
            .join(format!("hoop-v{}/links", hoop_common::LAYOUT_VERSION)),
    )
    .expect("links dir")
    .flatten()
    .filter_map(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.split('-').next())
            .map(str::to_owned)
    })
    .collect();
    let want: BTreeSet<String> = [&p1, &p3]
        .iter()
        .map(|p| {
            format!(
                "cg{}",
                hoop::intercept::cgroup::cgroup_id(&p.cgroup).expect("id")
            )
        })
        .collect();
    assert_eq!(ids, want);
    agent.stop().await;
}
