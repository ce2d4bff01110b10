//! Kubernetes tier, privileged: hoop governing simulated pods, each in its
//! own network namespace and kubelet-style cgroup, with real eBPF.
//!
//! - every governed pod is redirected to hoop's listener *in its own
//!   network namespace*, and the upstream leg leaves from that namespace
//!   (the destination sees the pod's address);
//! - an attached pod without a listener is refused, never let through;
//! - `hoop.dev/ports` replaces the default ports for one pod;
//! - pinned links outlive the agent: while it is down the pod is refused
//!   (fail closed), and the next agent adopts the links.
//!
//! Needs root; never skips.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use hoop::intercept::{
    AttachOutcome,
    bpf_link::CgroupLink,
    netns::NetnsSockets,
    pods::{Governed, PodInterception},
};
use hoop_k8s::{
    cgroup_path::{CgroupDriver, QosClass},
    testing::node::{SimulatedNode, SimulatedPod},
};
use hoop_tests::k8s::{
    BpfFs, Destination, Dialled, Relay, chain, dial_from, dial_marked, load_interceptor,
    require_root,
};

/// These tests move processes between cgroups and load programs: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn uid(n: u8) -> String {
    format!("{n:08x}-9a9a-4b4b-8c8c-0d0d0d0d0d0d")
}

async fn govern(pods: &PodInterception, pod: &SimulatedPod, ports: Option<&[u16]>) -> Relay {
    match pods.govern(&pod.uid, &pod.cgroup, ports).await {
        Ok(Governed::New { listeners, netns }) => Relay::start(
            pods.interceptor(),
            pods.sockets(),
            listeners,
            &netns,
            &format!("test/{}", pod.uid),
        ),
        Ok(other) => panic!("expected a newly governed pod, got {other:?}"),
        Err(e) => panic!("governing {}: {}", pod.uid, chain(&e)),
    }
}

fn python(pod: &SimulatedPod) -> std::process::Command {
    pod.command("python3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pod_is_redirected_inside_its_own_netns_and_dials_out_from_it() {
    require_root();
    let _serial = SERIAL.lock().await;
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let a = node
        .add_pod(&uid(1), QosClass::Burstable, true)
        .expect("pod a");
    let b = node
        .add_pod(&uid(2), QosClass::BestEffort, true)
        .expect("pod b");
    let c = node
        .add_pod(&uid(3), QosClass::Burstable, true)
        .expect("pod c");
    let port = 15_400;
    let dest_a = Destination::start(SocketAddr::new(IpAddr::V4(a.host_ip), port)).await;
    let dest_a6 = Destination::start(SocketAddr::new(IpAddr::V6(a.host_ip6), port)).await;
    let dest_b = Destination::start(SocketAddr::new(IpAddr::V4(b.host_ip), port)).await;
    let dest_c = Destination::start(SocketAddr::new(IpAddr::V4(c.host_ip), port)).await;

    let (interceptor, _host) = load_interceptor(&[port], None);
    let interceptor = Arc::new(interceptor);
    let pods = PodInterception::new(
        interceptor.clone(),
        NetnsSockets::spawn().expect("netns thread"),
        None,
    );
    let relay_a = govern(&pods, &a, None).await;
    let relay_b = govern(&pods, &b, None).await;

    // Pod a, IPv4 and IPv6: through its own relay; upstream from its netns.
    let got = dial_from(python(&a), &a.host_ip.to_string(), port).await;
    assert!(
        matches!(&got, Dialled::Reply(r) if r.starts_with(&format!("dest {}:", a.pod_ip))),
        "{got:?}"
    );
    let got = dial_from(python(&a), &a.host_ip6.to_string(), port).await;
    assert!(
        matches!(&got, Dialled::Reply(r) if r.starts_with(&format!("dest [{}]:", a.pod_ip6))),
        "{got:?}"
    );
    let seen = relay_a.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].original, dest_a.addr);
    assert_eq!(seen[1].original, dest_a6.addr);
    assert_eq!(seen[0].upstream_local.ip(), IpAddr::V4(a.pod_ip));
    assert_eq!(seen[1].upstream_local.ip(), IpAddr::V6(a.pod_ip6));
    assert!(
        seen[0].peer.ip().is_loopback() && seen[1].peer.ip().is_loopback(),
        "the client reached hoop's listener on the pod's own loopback: {seen:?}"
    );

    // hoop's skip mark is no way around it from a pod: it only counts in
    // hoop's own namespace (a pod with CAP_NET_ADMIN can set any mark).
    let got = dial_marked(
        python(&a),
        &a.host_ip.to_string(),
        port,
        hoop::intercept::DEFAULT_SKIP_MARK,
    )
    .await;
    assert!(matches!(got, Dialled::Reply(_)), "{got:?}");
    assert_eq!(
        relay_a.seen().len(),
        3,
        "the marked connect was redirected too"
    );
    assert_eq!(interceptor.counters().expect("counters").skipped_self, 0);

    // Pod b: its own relay, not a's.
    let got = dial_from(python(&b), &b.host_ip.to_string(), port).await;
    assert!(
        matches!(&got, Dialled::Reply(r) if r.starts_with(&format!("dest {}:", b.pod_ip))),
        "{got:?}"
    );
    assert_eq!(relay_b.seen().len(), 1);
    assert_eq!(relay_b.seen()[0].original, dest_b.addr);
    assert_eq!(relay_a.seen().len(), 3, "a's relay saw nothing of b");

    // Pod c is not governed: straight to its destination.
    let got = dial_from(python(&c), &c.host_ip.to_string(), port).await;
    assert!(
        matches!(&got, Dialled::Reply(r) if r.starts_with(&format!("dest {}:", c.pod_ip))),
        "{got:?}"
    );
    assert_eq!(dest_c.peers().len(), 1);

    // The destinations saw the pods' own addresses, never the host's.
    assert_eq!(dest_a.peers()[0].ip(), IpAddr::V4(a.pod_ip));
    assert_eq!(dest_b.peers()[0].ip(), IpAddr::V4(b.pod_ip));
    let counters = interceptor.counters().expect("counters");
    assert_eq!(counters.v4, 3);
    assert_eq!(counters.v6, 1);
    assert_eq!(counters.no_listener, 0);

    // Releasing b: its connects go direct again.
    pods.release(&b.uid)
        .expect("release b")
        .expect("was governed");
    drop(relay_b);
    let got = dial_from(python(&b), &b.host_ip.to_string(), port).await;
    assert!(matches!(got, Dialled::Reply(_)), "{got:?}");
    assert_eq!(dest_b.peers().len(), 2);
    assert_eq!(
        interceptor.counters().expect("counters").v4,
        3,
        "not redirected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_without_a_listener_is_refused_never_let_through() {
    require_root();
    let _serial = SERIAL.lock().await;
    let node = SimulatedNode::new(CgroupDriver::Cgroupfs).expect("simulated node");
    let a = node
        .add_pod(&uid(4), QosClass::Guaranteed, true)
        .expect("pod");
    let port = 15_401;
    let dest = Destination::start(SocketAddr::new(IpAddr::V4(a.host_ip), port)).await;
    let (interceptor, _host) = load_interceptor(&[port], None);
    assert_eq!(
        interceptor.attach(&a.cgroup).expect("attach"),
        AttachOutcome::Attached
    );
    assert_eq!(
        interceptor.attach(&a.cgroup).expect("attach again"),
        AttachOutcome::AlreadyAttached
    );
    let got = dial_from(python(&a), &a.host_ip.to_string(), port).await;
    assert_eq!(
        got,
        Dialled::Errno(1),
        "EPERM: governed but no listener in its netns"
    );
    let got = dial_from(python(&a), &a.host_ip6.to_string(), port).await;
    assert_eq!(got, Dialled::Errno(1));
    assert!(dest.peers().is_empty(), "nothing reached the destination");
    assert_eq!(interceptor.counters().expect("counters").no_listener, 2);

    // A second loader on the same cgroup stacks (links never conflict).
    let (other, _other_host) = load_interceptor(&[port + 1], None);
    assert_eq!(
        other.attach(&a.cgroup).expect("second loader"),
        AttachOutcome::Attached
    );
    drop(other);

    assert!(interceptor.detach(&a.cgroup).expect("detach"));
    assert!(!interceptor.detach(&a.cgroup).expect("detach again"));
    let got = dial_from(python(&a), &a.host_ip.to_string(), port).await;
    assert!(matches!(got, Dialled::Reply(_)), "{got:?}");
    assert_eq!(dest.peers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_own_ports_replace_the_default_set() {
    require_root();
    let _serial = SERIAL.lock().await;
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let a = node
        .add_pod(&uid(5), QosClass::Burstable, true)
        .expect("pod");
    let (default_port, own_port) = (15_402, 15_403);
    let dest_default =
        Destination::start(SocketAddr::new(IpAddr::V4(a.host_ip), default_port)).await;
    let dest_own = Destination::start(SocketAddr::new(IpAddr::V4(a.host_ip), own_port)).await;
    let (interceptor, _host) = load_interceptor(&[default_port], None);
    let pods = PodInterception::new(
        Arc::new(interceptor),
        NetnsSockets::spawn().expect("netns"),
        None,
    );
    let relay = govern(&pods, &a, Some(&[own_port])).await;

    dial_from(python(&a), &a.host_ip.to_string(), default_port).await;
    dial_from(python(&a), &a.host_ip.to_string(), own_port).await;
    assert_eq!(relay.seen().len(), 1);
    assert_eq!(relay.seen()[0].original, dest_own.addr);
    assert_eq!(
        dest_default.peers().len(),
        1,
        "the default port went direct"
    );

    // Back to the default set: the listener stays, the ports swap.
    assert!(matches!(
        pods.govern(&a.uid, &a.cgroup, None).await.expect("update"),
        Governed::Updated
    ));
    dial_from(python(&a), &a.host_ip.to_string(), default_port).await;
    dial_from(python(&a), &a.host_ip.to_string(), own_port).await;
    assert_eq!(relay.seen().len(), 2);
    assert_eq!(relay.seen()[1].original, dest_default.addr);
    assert_eq!(
        dest_own.peers().len(),
        2,
        "own port: once via relay, once direct"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_links_outlive_the_agent_and_the_next_one_adopts_them() {
    require_root();
    let _serial = SERIAL.lock().await;
    let bpffs = BpfFs::mount();
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let a = node
        .add_pod(&uid(6), QosClass::Burstable, true)
        .expect("pod a");
    let b = node
        .add_pod(&uid(7), QosClass::BestEffort, true)
        .expect("pod b");
    let port = 15_404;
    let dest_a = Destination::start(SocketAddr::new(IpAddr::V4(a.host_ip), port)).await;
    let dest_b = Destination::start(SocketAddr::new(IpAddr::V4(b.host_ip), port)).await;

    // Agent 1 governs a and b, then goes away (its listeners with it).
    let (first, first_host) = load_interceptor(&[port], Some(bpffs.path()));
    let first = Arc::new(first);
    let pods = PodInterception::new(first.clone(), NetnsSockets::spawn().expect("netns"), None);
    let relay_a = govern(&pods, &a, None).await;
    let relay_b = govern(&pods, &b, None).await;
    drop(pods);
    drop(first);
    drop(first_host);
    // The links and maps outlived the interceptor: a's relay still serves.
    let got = dial_from(python(&a), &a.host_ip.to_string(), port).await;
    assert!(matches!(got, Dialled::Reply(_)), "{got:?}");
    assert_eq!(
        relay_a.seen().len(),
        1,
        "still redirected without the interceptor"
    );
    // The listeners die with the agent: connects are refused, not let through.
    let down = Instant::now();
    drop(relay_a);
    drop(relay_b);
    let got = dial_from(python(&a), &a.host_ip.to_string(), port).await;
    assert_eq!(
        got,
        Dialled::Errno(111),
        "ECONNREFUSED while no agent listens"
    );
    assert_eq!(
        dest_a.peers().len(),
        1,
        "only the relayed connection reached the destination: nothing went around hoop"
    );

    // Agent 2 adopts: both cgroups are found pinned; a is claimed.
    let (second, _second_host) = load_interceptor(&[port], Some(bpffs.path()));
    let second = Arc::new(second);
    let mut adopted = second.adopted_cgroups();
    adopted.sort_unstable();
    let mut want = vec![
        hoop::intercept::cgroup::cgroup_id(&a.cgroup).expect("id"),
        hoop::intercept::cgroup::cgroup_id(&b.cgroup).expect("id"),
    ];
    want.sort_unstable();
    assert_eq!(adopted, want);
    let pods = PodInterception::new(second.clone(), NetnsSockets::spawn().expect("netns"), None);
    let relay_a = govern(&pods, &a, None).await;
    let window = down.elapsed();
    eprintln!("restart window (listeners closed → new agent redirecting): {window:?}");
    let got = dial_from(python(&a), &a.host_ip.to_string(), port).await;
    assert!(matches!(got, Dialled::Reply(_)), "{got:?}");
    assert_eq!(relay_a.seen().len(), 1);

    // The adopted links now run the new agent's programs.
    let ids = second.program_ids().expect("program ids");
    let a_id = hoop::intercept::cgroup::cgroup_id(&a.cgroup).expect("id");
    for point in ["connect4", "connect6", "sockops"] {
        let pin = bpffs.path().join(format!(
            "hoop-v{}/links/cg{a_id}-{point}",
            hoop_common::LAYOUT_VERSION
        ));
        let link = CgroupLink::from_pin(&pin).unwrap_or_else(|e| panic!("{}: {e}", pin.display()));
        let info = link.info().expect("link info");
        assert!(
            ids.contains(&info.prog_id),
            "{point} runs program {} not in {ids:?}",
            info.prog_id
        );
    }

    // b was not claimed (its pod is gone as far as agent 2 knows): the
    // sweep releases it, and b's connects go direct.
    let released = pods.retain(&[a.uid.clone()].into_iter().collect());
    assert!(
        released.is_empty(),
        "no governed pod was dropped: {released:?}"
    );
    assert!(second.adopted_cgroups().is_empty());
    let got = dial_from(python(&b), &b.host_ip.to_string(), port).await;
    assert!(matches!(got, Dialled::Reply(_)), "{got:?}");
    assert_eq!(dest_b.peers().len(), 1);

    // Releasing a removes its pins too.
    pods.release(&a.uid).expect("release").expect("governed");
    let links_dir = bpffs
        .path()
        .join(format!("hoop-v{}/links", hoop_common::LAYOUT_VERSION));
    let left: Vec<_> = std::fs::read_dir(&links_dir)
        .expect("links dir")
        .flatten()
        .collect();
    assert!(left.is_empty(), "pins left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_gate_opens_only_once_the_pod_is_governed() {
    require_root();
    let _serial = SERIAL.lock().await;
    let node = SimulatedNode::new(CgroupDriver::Systemd).expect("simulated node");
    let a = node
        .add_pod(&uid(8), QosClass::Burstable, true)
        .expect("pod");
    let port = 15_405;
    let probe = |timeout_ms: u32| {
        let mut cmd = a.command(env!("CARGO_BIN_EXE_hoop-await-probe"));
        cmd.arg(port.to_string()).arg(timeout_ms.to_string());
        async move {
            tokio::task::spawn_blocking(move || cmd.output())
                .await
                .expect("join")
                .expect("run the probe in the pod")
        }
    };
    // Not governed: the gate stays shut and says why.
    let out = probe(600).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not governed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Attached but without a listener yet: still shut (refused).
    let (interceptor, _host) = load_interceptor(&[port], None);
    interceptor.attach(&a.cgroup).expect("attach");
    assert!(!probe(600).await.status.success());
    // Governed: it opens, and hoop names the pod.
    let pods = PodInterception::new(
        Arc::new(interceptor),
        NetnsSockets::spawn().expect("netns"),
        None,
    );
    let relay = govern(&pods, &a, None).await;
    let out = probe(5000).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("governed as test/{}", a.uid)
    );
    assert!(
        relay.seen().is_empty(),
        "the canary is answered, never dialled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_governed_pod_is_refused_until_governed_and_detached_on_release() {
    require_root();
    let _serial = SERIAL.lock().await;
    let node = SimulatedNode::new(CgroupDriver::Cgroupfs).expect("simulated node");
    // The pod's cgroup exists but no sandbox runs yet: no netns to listen in.
    let mut a = node
        .add_pod(&uid(9), QosClass::Burstable, false)
        .expect("pod");
    std::fs::create_dir_all(&a.container).expect("pod and container cgroups");
    let port = 15_406;
    let dest = Destination::start(SocketAddr::new(IpAddr::V4(a.host_ip), port)).await;
    let (interceptor, _host) = load_interceptor(&[port], None);
    let pods = PodInterception::new(
        Arc::new(interceptor),
        NetnsSockets::spawn().expect("netns"),
        None,
    );
    let err = pods
        .govern(&a.uid, &a.cgroup, None)
        .await
        .expect_err("no process in the pod yet");
    assert!(
        matches!(err, hoop::intercept::pods::PodInterceptError::Netns(_)),
        "{}",
        chain(&err)
    );
    // Attached, no listener: refused, not let through.
    assert_eq!(
        dial_from(python(&a), &a.host_ip.to_string(), port).await,
        Dialled::Errno(1)
    );
    assert!(dest.peers().is_empty());
    // Released (the pod opted out meanwhile): detached, direct again.
    assert!(pods.release(&a.uid).expect("release").is_none());
    assert!(matches!(
        dial_from(python(&a), &a.host_ip.to_string(), port).await,
        Dialled::Reply(_)
    ));
    assert_eq!(dest.peers().len(), 1);
    // And a retry once the sandbox runs governs it fully.
    a.start().expect("sandbox");
    let relay = govern(&pods, &a, None).await;
    assert!(matches!(
        dial_from(python(&a), &a.host_ip.to_string(), port).await,
        Dialled::Reply(_)
    ));
    assert_eq!(relay.seen().len(), 1);
}
