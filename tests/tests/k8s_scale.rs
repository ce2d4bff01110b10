//! Kubernetes tier, measurements (not run by default):
//!
//!   cargo test -p hoop-tests --test k8s_scale -- --ignored --nocapture
//!
//! 100 simulated pods opt in at once through the API server stand-in; it
//! reports the time from the pods' creation to each being governed (p50,
//! p99, max) and the memory one governed idle pod costs (hoop's RSS, and
//! the kernel's slab and socket memory, before vs after governing).

use std::{sync::Arc, time::Duration};

use hoop_k8s::{
    Reconciler, StatusBoard,
    cgroup_path::{CgroupDriver, QosClass},
    discovery::{self, DiscoverySettings, WatchBackoff},
    metrics::K8sMetrics,
    opt_in::OptInRules,
    reconcile::ReconcilerSettings,
    testing::{
        apiserver::{FakeApiServer, objects},
        node::SimulatedNode,
    },
};
use hoop_tests::k8s::{TestGovernor, eventually, load_interceptor, require_root};

const PODS: u8 = 100;

fn kib(field: &str, text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn memory() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    // TCP mem is in pages.
    let tcp_pages = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    (
        kib("VmRSS:", &status),
        kib("Slab:", &meminfo),
        tcp_pages * 4,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test -p hoop-tests --test k8s_scale -- --ignored --nocapture"]
async fn a_hundred_pods_at_once() {
    require_root();
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("node");
    let uid = |n: u8| format!("{n:08x}-7e7e-4d4d-8c8c-2b2b2b2b2b2b");
    let pods: Vec<_> = (0..PODS)
        .map(|n| {
            node.add_pod(&uid(n), QosClass::Burstable, true)
                .expect("pod")
        })
        .collect();
    let server = FakeApiServer::start().await.expect("api server");
    server.apply_namespace(objects::namespace("scale", &[], &[]));
    let (interceptor, _host) = load_interceptor(&[5432], None);
    let governor = Arc::new(TestGovernor::new(Arc::new(interceptor)));
    let board = StatusBoard::new();
    let metrics = K8sMetrics::register(&prometheus::Registry::new()).expect("metrics");
    let rules = OptInRules {
        exclude_namespaces: vec![],
        agent_namespace: None,
        agent_pod_uid: None,
        default_ports: vec![5432],
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
        resync_interval: Duration::from_mins(10),
        backoff: WatchBackoff::default(),
    };
    let task = tokio::spawn(async move {
        discovery::run(client, &settings, &mut reconciler, std::future::pending()).await;
    });
    eventually("the first sync", Duration::from_secs(30), || {
        board.ready(None)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = memory();

    let start = tokio::time::Instant::now();
    for (n, pod) in pods.iter().enumerate() {
        server.apply_pod(objects::pod(
            "scale",
            &format!("p{n}"),
            &pod.uid,
            "node-1",
            &[("hoop.dev/govern", "true")],
            &[],
        ));
    }
    eventually("every pod governed", Duration::from_mins(1), || {
        pods.iter().all(|p| board.is_governed(&p.uid))
    })
    .await;
    let mut latencies: Vec<Duration> = pods
        .iter()
        .filter_map(|p| board.pod(&p.uid)?.governed_at)
        .map(|at| at.duration_since(start.into_std()))
        .collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = memory();
    let per_pod = |a: u64, b: u64| a.saturating_sub(b) as f64 / f64::from(PODS);
    eprintln!(
        "{PODS} pods created at once → governed: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    eprintln!(
        "per governed idle pod: hoop RSS {:.1} KiB, kernel slab {:.1} KiB, TCP socket memory {:.1} KiB \
         (RSS {} → {} KiB, slab {} → {} KiB)",
        per_pod(after.0, before.0),
        per_pod(after.1, before.1),
        per_pod(after.2, before.2),
        before.0,
        after.0,
        before.1,
        after.1
    );
    eprintln!(
        "reconciler histogram: {} observations, sum {:.3} s",
        metrics.govern_seconds.get_sample_count(),
        metrics.govern_seconds.get_sample_sum()
    );
    task.abort();
}
