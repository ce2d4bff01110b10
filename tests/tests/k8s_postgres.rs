//! Kubernetes tier, end to end with PostgreSQL: `psql` in a simulated pod's
//! container dials the database at the address the pod knows it by (the
//! host end of its veth, where `socat` forwards to PostgreSQL on
//! 127.0.0.1:5432). hoop's programs redirect it to the listener in the
//! pod's own network namespace, and the upstream leg leaves from that
//! namespace: the forwarder sees the pod's address.
//!
//! Needs root and PostgreSQL; never skips.

use std::{net::IpAddr, process::Output, sync::Arc};

use hoop::intercept::{
    netns::NetnsSockets,
    pods::{Governed, PodInterception},
};
use hoop_k8s::{
    cgroup_path::{CgroupDriver, QosClass},
    testing::node::{SimulatedNode, SimulatedPod},
};
use hoop_tests::k8s::{Relay, chain, load_interceptor, require_root};

/// Runs psql in the pod's container, off the runtime's threads (the relay
/// serving it runs on them).
async fn psql_in(pod: &SimulatedPod, sql: &str) -> Output {
    let mut cmd = pod.command("psql");
    cmd.args(["-X", "-h"])
        .arg(pod.host_ip.to_string())
        .args(["-p", "5432", "-U", "postgres", "-d", "test", "-Atc", sql]);
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run psql in the pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_in_a_governed_pod_goes_through_its_own_listener_and_leaves_from_its_netns() {
    require_root();
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let mut governed = node
        .add_pod(
            "3c1e4b6a-7d2f-4e8a-9b0c-1d2e3f4a5b6c",
            QosClass::Burstable,
            true,
        )
        .expect("governed pod");
    let mut plain = node
        .add_pod(
            "4d2f5c7b-8e3a-4f9b-8c1d-2e3f4a5b6c7d",
            QosClass::BestEffort,
            true,
        )
        .expect("plain pod");
    let database = "127.0.0.1:5432".parse().expect("address");
    let governed_log = governed.forward(5432, database).expect("forwarder");
    let plain_log = plain.forward(5432, database).expect("forwarder");

    let (interceptor, _host) = load_interceptor(&[5432], None);
    let pods = PodInterception::new(
        Arc::new(interceptor),
        NetnsSockets::spawn().expect("netns thread"),
        None,
    );
    let relay = match pods.govern(&governed.uid, &governed.cgroup, None).await {
        Ok(Governed::New { listeners, netns }) => Relay::start(
            pods.interceptor(),
            pods.sockets(),
            listeners,
            &netns,
            "test/governed",
        ),
        Ok(other) => panic!("expected a new pod, got {other:?}"),
        Err(e) => panic!("governing: {}", chain(&e)),
    };

    let out = psql_in(&governed, "SELECT 'governed ' || 6 * 7").await;
    assert!(
        out.status.success(),
        "psql in the governed pod failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "governed 42");

    // hoop's listener in the pod's netns got it, knowing where it was going.
    let seen = relay.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].original,
        std::net::SocketAddr::new(IpAddr::V4(governed.host_ip), 5432)
    );
    assert!(seen[0].peer.ip().is_loopback());
    // The upstream leg left from the pod's netns, with the pod's address:
    // that is the peer the forwarder logged.
    assert_eq!(seen[0].upstream_local.ip(), IpAddr::V4(governed.pod_ip));
    let peers = SimulatedPod::forwarded_peers(&governed_log);
    assert_eq!(
        peers,
        [format!(
            "{}:{}",
            governed.pod_ip,
            seen[0].upstream_local.port()
        )],
        "the forwarder saw hoop's upstream connection from the pod's address"
    );

    // The ungoverned pod reaches the database directly, and hoop sees nothing.
    let out = psql_in(&plain, "SELECT 'direct'").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "direct");
    assert_eq!(relay.seen().len(), 1);
    let plain_peers = SimulatedPod::forwarded_peers(&plain_log);
    assert_eq!(plain_peers.len(), 1);
    assert!(plain_peers[0].starts_with(&format!("{}:", plain.pod_ip)));
    let counters = pods.interceptor().counters().expect("counters");
    assert_eq!(counters.v4, 1);
}
