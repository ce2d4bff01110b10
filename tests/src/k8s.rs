//! Helpers for the Kubernetes tier: a test governor that really governs
//! simulated pods (hoop's eBPF programs on the pod cgroup, listeners in the
//! pod's network namespace) and a minimal relay standing in for the proxy
//! on those listeners, so tests see where connections were going and from
//! which namespace the upstream leg left. hoop's real proxy is wired to the
//! same listeners by the agent.

use std::{
    collections::{HashMap, HashSet},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Command,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use hoop::intercept::{
    DEFAULT_SKIP_MARK, InterceptSettings, Interceptor, LoadOptions,
    netns::{LoopbackListeners, NetNs, NetnsSockets},
    pods::{Governed, PodInterceptError, PodInterception},
};
use hoop_k8s::{GovernError, GovernRequest, PodGovernor, reconcile::FailureReason};
use tokio::task::JoinHandle;

/// Fails loudly unless root: this tier never skips.
pub fn require_root() {
    let uid = nix::unistd::Uid::effective();
    assert!(
        uid.is_root(),
        "the Kubernetes tier loads eBPF programs, creates cgroups and network namespaces: run it as root \
         (euid {uid}){}",
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            "; CI=true requires this tier"
        } else {
            ""
        }
    );
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads hoop's programs for `ports`, with host listeners (the own-netns
/// target) that nothing serves; `pin_root` turns pinning on.
pub fn load_interceptor(ports: &[u16], pin_root: Option<&Path>) -> (Interceptor, [TcpListener; 2]) {
    let v4 = TcpListener::bind("127.0.0.1:0").expect("host v4 listener");
    let v6 = TcpListener::bind("[::1]:0").expect("host v6 listener");
    let (SocketAddr::V4(a4), SocketAddr::V6(a6)) = (
        v4.local_addr().expect("addr"),
        v6.local_addr().expect("addr"),
    ) else {
        unreachable!("bound by family")
    };
    let settings = InterceptSettings {
        ports: ports.to_vec(),
        proxy_v4: a4,
        proxy_v6: a6,
        skip_mark: DEFAULT_SKIP_MARK,
        skip_tgid: 0,
    };
    let options = LoadOptions {
        pin_root: pin_root.map(Path::to_path_buf),
    };
    let interceptor = Interceptor::load_with(&settings, &options)
        .unwrap_or_else(|e| panic!("loading hoop's eBPF programs: {}", chain(&e)));
    (interceptor, [v4, v6])
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// One relayed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The client as the listener saw it (in the pod's netns).
    pub peer: SocketAddr,
    /// Where it was going.
    pub original: SocketAddr,
    /// The upstream leg's local address (in the pod's netns).
    pub upstream_local: SocketAddr,
}

/// Serves a pod's listeners: looks up each connection's original
/// destination, dials it from inside the pod's network namespace, copies
/// both ways. Stops (closing the listeners) on drop.
pub struct Relay {
    tasks: Vec<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Relayed>>>,
    /// The listeners' addresses (v4, v6).
    pub addrs: (SocketAddr, Option<SocketAddr>),
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Relay {
    /// Starts serving. `pod` is what canary connections are answered with
    /// (see `hoop_k8s::canary`).
    pub fn start(
        interceptor: &Arc<Interceptor>,
        sockets: &NetnsSockets,
        listeners: LoopbackListeners,
        netns: &Arc<NetNs>,
        pod: &str,
    ) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cookie = listeners.netns_cookie;
        let v4_addr = listeners.v4.local_addr().expect("v4 addr");
        let v6_addr = listeners
            .v6
            .as_ref()
            .map(|l| l.local_addr().expect("v6 addr"));
        let mut tasks = Vec::new();
        for std_listener in std::iter::once(listeners.v4).chain(listeners.v6) {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
            let (interceptor, sockets, netns, seen) = (
                interceptor.clone(),
                sockets.clone(),
                netns.clone(),
                seen.clone(),
            );
            let pod = pod.to_owned();
            tasks.push(tokio::spawn(async move {
                while let Ok((mut client, peer)) = listener.accept().await {
                    let Ok(Some(original)) = interceptor.original_destination_in(cookie, peer)
                    else {
                        continue;
                    };
                    if hoop_k8s::canary::is_canary(&original.addr) {
                        let _ = hoop_k8s::canary::answer(&mut client, &pod).await;
                        continue;
                    }
                    let (sockets, netns, seen) = (sockets.clone(), netns.clone(), seen.clone());
                    tokio::spawn(async move {
                        let Ok(mut upstream) = sockets.connect(&netns, original.addr, None).await
                        else {
                            return;
                        };
                        let Ok(upstream_local) = upstream.local_addr() else {
                            return;
                        };
                        lock(&seen).push(Relayed {
                            peer,
                            original: original.addr,
                            upstream_local,
                        });
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                }
            }));
        }
        Self {
            tasks,
            seen,
            addrs: (v4_addr, v6_addr),
        }
    }

    /// The connections relayed so far.
    pub fn seen(&self) -> Vec<Relayed> {
        lock(&self.seen).clone()
    }
}

/// A governor that really governs: hoop's [`PodInterception`] plus a
/// [`Relay`] per pod. Records the calls it gets.
pub struct TestGovernor {
    /// The pod interception (attach, netns listeners, targets).
    pub pods: PodInterception,
    relays: Mutex<HashMap<String, Relay>>,
    /// Calls, as `govern <pod>`, `release <uid>`, `retain <n>`.
    pub calls: Mutex<Vec<String>>,
}

impl TestGovernor {
    /// A governor over `interceptor`.
    pub fn new(interceptor: Arc<Interceptor>) -> Self {
        let sockets = NetnsSockets::spawn().expect("netns socket thread");
        Self {
            pods: PodInterception::new(interceptor, sockets, None),
            relays: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// What the relay of pod `uid` has seen (empty if not governed).
    pub fn relayed(&self, uid: &str) -> Vec<Relayed> {
        lock(&self.relays)
            .get(uid)
            .map(Relay::seen)
            .unwrap_or_default()
    }

    /// The relay's listener addresses for pod `uid`.
    pub fn listener_addrs(&self, uid: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
        lock(&self.relays).get(uid).map(|r| r.addrs)
    }

    /// Calls so far.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }
}

fn reason(e: &PodInterceptError) -> FailureReason {
    match e {
        PodInterceptError::Attach { .. } => FailureReason::Attach,
        PodInterceptError::Netns(_) => FailureReason::NetnsNotFound,
        PodInterceptError::HostNetwork => FailureReason::HostNetwork,
        PodInterceptError::Listen(_) => FailureReason::Listen,
        PodInterceptError::Target(_) | PodInterceptError::OwnedByNewer => FailureReason::Internal,
    }
}

impl PodGovernor for TestGovernor {
    async fn govern(&self, request: &GovernRequest) -> Result<(), GovernError> {
        lock(&self.calls).push(format!("govern {}", request.workload.pod));
        let ports = Some(request.ports.as_slice());
        match self
            .pods
            .govern(&request.workload.uid, &request.cgroup, ports)
            .await
        {
            Ok(Governed::New { listeners, netns }) => {
                let relay = Relay::start(
                    self.pods.interceptor(),
                    self.pods.sockets(),
                    listeners,
                    &netns,
                    &request.workload.to_string(),
                );
                lock(&self.relays).insert(request.workload.uid.clone(), relay);
                Ok(())
            }
            Ok(Governed::Unchanged | Governed::Updated) => Ok(()),
            Err(e) => Err(GovernError::new(reason(&e), chain(&e))),
        }
    }

    async fn release(&self, uid: &str) -> Result<(), GovernError> {
        lock(&self.calls).push(format!("release {uid}"));
        // Also detaches a pod a failed govern left attached.
        self.pods
            .release(uid)
            .map_err(|e| GovernError::new(FailureReason::Release, chain(&e)))?;
        lock(&self.relays).remove(uid);
        Ok(())
    }

    async fn retain(&self, keep: &HashSet<String>) {
        lock(&self.calls).push(format!("retain {}", keep.len()));
        for uid in self.pods.retain(keep) {
            lock(&self.relays).remove(&uid);
        }
    }
}

/// A destination on the host: answers every connection with
/// `dest <peer address>\n` and closes.
pub struct Destination {
    task: JoinHandle<()>,
    /// Where it listens.
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Drop for Destination {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Destination {
    /// Listens on `addr` (port 0: any).
    pub async fn start(addr: SocketAddr) -> Self {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("destination bind");
        let addr = listener.local_addr().expect("destination addr");
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, peer)) = listener.accept().await {
                lock(&seen).push(peer);
                let _ = s.write_all(format!("dest {peer}\n").as_bytes()).await;
            }
        });
        Self { task, addr, peers }
    }

    /// Peers that connected, oldest first.
    pub fn peers(&self) -> Vec<SocketAddr> {
        lock(&self.peers).clone()
    }
}

/// What a client in a pod got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialled {
    /// Connected and read the destination's greeting.
    Reply(String),
    /// `connect` failed with this errno (1 = EPERM: refused by hoop;
    /// 111 = ECONNREFUSED).
    Errno(i32),
}

const DIAL_PY: &str = r"
import socket, sys
host, port, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
if mark:
    s.setsockopt(socket.SOL_SOCKET, 36, mark)
s.settimeout(5)
try:
    s.connect((host, port))
except OSError as e:
    print('ERR', e.errno)
    sys.exit(0)
print('OK', s.recv(200).decode().strip())
";

/// Runs a client in `pod`'s container (its cgroup and netns) that dials
/// `host:port` and reports what happened.
pub async fn dial_from(pod_command: Command, host: &str, port: u16) -> Dialled {
    dial_marked(pod_command, host, port, 0).await
}

/// [`dial_from`] with `SO_MARK` set on the socket first (0: none).
pub async fn dial_marked(pod_command: Command, host: &str, port: u16, mark: u32) -> Dialled {
    let mut cmd = pod_command;
    cmd.arg("-c")
        .arg(DIAL_PY)
        .arg(host)
        .arg(port.to_string())
        .arg(mark.to_string());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run the client in the pod");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "client failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(errno) = stdout.strip_prefix("ERR ") {
        Dialled::Errno(errno.trim().parse().expect("errno"))
    } else if let Some(reply) = stdout.strip_prefix("OK ") {
        Dialled::Reply(reply.to_owned())
    } else {
        panic!("unexpected client output {stdout:?}")
    }
}

/// Waits until `pred` holds, failing after `timeout` with `what`.
pub async fn eventually(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !pred() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A private bpffs mount for pinning tests; unmounted on drop (which
/// releases everything pinned in it).
pub struct BpfFs {
    dir: tempfile::TempDir,
}

impl BpfFs {
    /// Mounts a fresh bpffs instance on a temp directory.
    pub fn mount() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        nix::mount::mount(
            Some("bpf"),
            dir.path(),
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount -t bpf");
        Self { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting bpffs {}: {e}", self.dir.path().display());
        }
    }
}
