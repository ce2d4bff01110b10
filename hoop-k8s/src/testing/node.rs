//! A simulated Kubernetes node, laid out as the kubelet and a container
//! runtime would, with real cgroups and real network namespaces.
//!
//! - [`SimulatedNode`]: a private kubepods tree under the cgroup2 mount
//!   (`hoopk8s-<pid>-<n>/kubepods…`), for either cgroup driver, with the
//!   burstable and besteffort QoS levels.
//! - [`SimulatedPod`]: a network namespace (`ip netns add`) joined to the
//!   host by a veth with an IPv4 /30 and an IPv6 /64 on each end; the pod
//!   cgroup (at the kubelet's path for its QoS class); a sandbox process
//!   (the "pause" container) in its own container cgroup and in the pod's
//!   netns; application processes in another container cgroup below the
//!   pod ([`SimulatedPod::command`]); and forwarders (`socat`) on the host
//!   side of the veth, so the database on 127.0.0.1 is reachable from the
//!   pod at the host-side address.
//!
//! Processes enter the pod with `nsenter --net=…`, never `ip netns exec`:
//! the latter remounts `/sys`, so the cgroup files would vanish.
//!
//! Everything is torn down on drop, also while a failing test unwinds; a
//! run that was killed is cleaned up by the next one (names carry the pid).

use std::{
    fs,
    io::{self, ErrorKind},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::cgroup_path::{CgroupDriver, QosClass, pod_cgroup_relative};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command, failing with its output if it does not succeed.
fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    run(Command::new("ip").args(args))
}

/// The cgroup2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut f = left.split_whitespace();
            let root = f.nth(3)?;
            let mount = f.next()?;
            (root == "/").then(|| PathBuf::from(mount.replace("\\040", " ")))
        })
        .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no cgroup2 mount"))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills every process under a cgroup directory and removes it, deepest
/// first. Missing directories are fine.
pub fn remove_cgroup_tree(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // cgroup.kill (5.14+) kills the whole subtree at once.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match rmdir_tree(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                for pid in pids_in(dir) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn rmdir_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Pids in a cgroup subtree.
pub fn pids_in(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

/// Removes what killed runs left: cgroup roots and network namespaces whose
/// creating process is gone.
pub fn sweep_stale() {
    let owner_gone = |name: &str, prefix: &str, sep: char| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.split(sep).next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !pid_alive(pid))
    };
    if let Ok(root) = cgroup2_mount()
        && let Ok(entries) = fs::read_dir(&root)
    {
        for e in entries.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| owner_gone(n, "hoopk8s-", '-'))
            {
                let _ = remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            if let Some(name) = e.file_name().to_str()
                && owner_gone(name, "hk", '-')
            {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}

/// A private kubepods tree for one cgroup driver.
#[derive(Debug)]
pub struct SimulatedNode {
    root: PathBuf,
    driver: CgroupDriver,
}

impl SimulatedNode {
    /// Creates `<cgroup2>/hoopk8s-<pid>-<n>/` with the kubelet's QoS
    /// levels for `driver`. Leftovers of killed runs are swept first.
    pub fn new(driver: CgroupDriver) -> io::Result<Self> {
        sweep_stale();
        let root = cgroup2_mount()?.join(format!("hoopk8s-{}-{}", std::process::id(), next_id()));
        fs::create_dir(&root)?;
        let node = Self { root, driver };
        for qos in [QosClass::Burstable, QosClass::BestEffort] {
            // The QoS level is the pod path's parent.
            let pod = pod_cgroup_relative(driver, &[], qos, "00000000-0000-0000-0000-000000000000");
            if let Some(parent) = pod.parent() {
                fs::create_dir_all(node.root.join(parent))?;
            }
        }
        Ok(node)
    }

    /// The directory to use as `kubernetes.cgroup_root`.
    pub fn cgroup_root(&self) -> &Path {
        &self.root
    }

    /// The driver this node's kubelet "uses".
    pub fn driver(&self) -> CgroupDriver {
        self.driver
    }

    /// Where the kubelet puts this pod's cgroup.
    pub fn pod_cgroup(&self, uid: &str, qos: QosClass) -> PathBuf {
        self.root
            .join(pod_cgroup_relative(self.driver, &[], qos, uid))
    }

    /// A pod with its network namespace and veth. With `start`, its cgroup
    /// and sandbox exist at once; otherwise call [`SimulatedPod::start`]
    /// later (a cgroup that appears after the pod's API event).
    pub fn add_pod(&self, uid: &str, qos: QosClass, start: bool) -> io::Result<SimulatedPod> {
        let n = next_id();
        let pid = std::process::id();
        let netns = format!("hk{pid}-{n}");
        let host_if = format!("hk{pid}h{n}");
        let pod_if = format!("hk{pid}p{n}");
        let second = 200 + (pid % 50) as u8;
        let base = (n % 64) as u8 * 4;
        let host_ip = Ipv4Addr::new(10, second, (n / 64) as u8, base + 1);
        let pod_ip = Ipv4Addr::new(10, second, (n / 64) as u8, base + 2);
        let host_ip6: Ipv6Addr = format!("fd68:6f6f:{:x}:{:x}::1", pid & 0xffff, n)
            .parse()
            .map_err(|e| io::Error::other(format!("{e}")))?;
        let pod_ip6: Ipv6Addr = format!("fd68:6f6f:{:x}:{:x}::2", pid & 0xffff, n)
            .parse()
            .map_err(|e| io::Error::other(format!("{e}")))?;
        let mut pod = SimulatedPod {
            uid: uid.to_owned(),
            netns_path: PathBuf::from(format!("/run/netns/{netns}")),
            netns,
            host_if,
            host_ip,
            pod_ip,
            host_ip6,
            pod_ip6,
            cgroup: self.pod_cgroup(uid, qos),
            container: PathBuf::new(),
            sandbox: None,
            forwarders: Vec::new(),
            driver: self.driver,
            log_dir: tempfile::tempdir()?,
        };
        pod.container = pod
            .cgroup
            .join(container_scope(self.driver, &format!("{n:064x}")));
        pod.network(&pod_if)?;
        if start {
            pod.start()?;
        }
        Ok(pod)
    }
}

impl Drop for SimulatedNode {
    fn drop(&mut self) {
        if let Err(e) = remove_cgroup_tree(&self.root) {
            eprintln!("simulated node: removing {}: {e}", self.root.display());
        }
    }
}

fn container_scope(driver: CgroupDriver, id: &str) -> String {
    match driver {
        CgroupDriver::Systemd => format!("cri-containerd-{id}.scope"),
        CgroupDriver::Cgroupfs => id.to_owned(),
    }
}

/// One simulated pod. Dropping it kills its processes, removes its cgroup
/// and deletes its network namespace (and with it the veth).
#[derive(Debug)]
pub struct SimulatedPod {
    /// The pod UID.
    pub uid: String,
    /// `ip netns` name.
    pub netns: String,
    /// `/run/netns/<name>`.
    pub netns_path: PathBuf,
    /// Host end of the veth.
    pub host_if: String,
    /// Host-side IPv4 address (the database forwarder listens here).
    pub host_ip: Ipv4Addr,
    /// The pod's IPv4 address.
    pub pod_ip: Ipv4Addr,
    /// Host-side IPv6 address.
    pub host_ip6: Ipv6Addr,
    /// The pod's IPv6 address.
    pub pod_ip6: Ipv6Addr,
    /// The pod cgroup (where hoop attaches).
    pub cgroup: PathBuf,
    /// The application container's cgroup, below the pod cgroup.
    pub container: PathBuf,
    sandbox: Option<Child>,
    forwarders: Vec<(Child, PathBuf)>,
    driver: CgroupDriver,
    log_dir: tempfile::TempDir,
}

impl SimulatedPod {
    fn network(&self, pod_if: &str) -> io::Result<()> {
        let ns = self.netns.as_str();
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            pod_if,
            "netns",
            ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", self.host_ip),
            "dev",
            &self.host_if,
        ])?;
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.host_ip6),
            "dev",
            &self.host_if,
            "nodad",
        ])?;
        ip(&["link", "set", &self.host_if, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/30", self.pod_ip),
            "dev",
            pod_if,
        ])?;
        ip(&[
            "-n",
            ns,
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.pod_ip6),
            "dev",
            pod_if,
            "nodad",
        ])?;
        ip(&["-n", ns, "link", "set", pod_if, "up"])?;
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &self.host_ip.to_string(),
        ])
    }

    /// Creates the pod cgroup and starts the sandbox process in it (in its
    /// own container cgroup, in the pod's network namespace).
    pub fn start(&mut self) -> io::Result<()> {
        if self.sandbox.is_some() {
            return Ok(());
        }
        let sandbox_scope = self.cgroup.join(container_scope(
            self.driver,
            &format!("{:064x}", u64::MAX - u64::from(next_id())),
        ));
        fs::create_dir_all(&sandbox_scope)?;
        fs::create_dir_all(&self.container)?;
        let child = enter(&sandbox_scope, &self.netns_path, "sleep")
            .arg("100000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.sandbox = Some(child);
        // Wait until the sandbox is in its cgroup and namespace.
        let want =
            fs::metadata(&self.netns_path).map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let in_cgroup = fs::read_to_string(sandbox_scope.join("cgroup.procs"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == pid.to_string()));
            let ns = fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .ok();
            if in_cgroup && ns == Some(want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "the sandbox did not enter its cgroup and netns",
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The sandbox's pid, once started.
    pub fn sandbox_pid(&self) -> Option<u32> {
        self.sandbox.as_ref().map(Child::id)
    }

    /// A command that runs `program` as an application process of the pod:
    /// in the container cgroup (before it execs, so its first socket is
    /// governed) and in the pod's network namespace. Add arguments with
    /// `.arg()`.
    pub fn command(&self, program: &str) -> Command {
        enter(&self.container, &self.netns_path, program)
    }

    /// Starts `socat` on the host end of the veth: `<host_ip>:<port>` →
    /// `upstream`. Returns the path of its log (`socat -d -d`), where each
    /// accepted connection's peer address appears.
    pub fn forward(&mut self, port: u16, upstream: SocketAddr) -> io::Result<PathBuf> {
        let log = self.log_dir.path().join(format!("socat-{port}.log"));
        let child = Command::new("socat")
            .args(["-d", "-d", "-lf"])
            .arg(&log)
            .arg(format!(
                "TCP-LISTEN:{port},bind={},fork,reuseaddr",
                self.host_ip
            ))
            .arg(format!("TCP:{upstream}"))
            .stdin(Stdio::null())
            .spawn()?;
        self.forwarders.push((child, log.clone()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fs::read_to_string(&log).is_ok_and(|s| s.contains("listening on")) {
            if Instant::now() > deadline {
                return Err(io::Error::other("socat did not start listening"));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(log)
    }

    /// The peer addresses a forwarder's log shows connections from.
    pub fn forwarded_peers(log: &Path) -> Vec<String> {
        fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split("accepting connection from ").nth(1))
            .filter_map(|rest| rest.split_whitespace().nth(1))
            .map(str::to_owned)
            .collect()
    }

    /// Stops the pod: kills its processes and removes its cgroup (as the
    /// kubelet does when the pod is deleted); the netns stays until drop.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut s) = self.sandbox.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        remove_cgroup_tree(&self.cgroup)
    }
}

/// `sh` writes its own pid into `cgroup/cgroup.procs`, then execs `nsenter`
/// into the netns, which execs `program`: one pid throughout, placed before
/// any socket exists. Arguments added to the returned command follow
/// `program`.
fn enter(cgroup: &Path, netns: &Path, program: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"p=$1; n=$2; shift 2; echo $$ > "$p" && exec nsenter --net="$n" -- "$@""#)
        .arg("sh")
        .arg(cgroup.join("cgroup.procs"))
        .arg(netns)
        .arg(program);
    cmd
}

impl Drop for SimulatedPod {
    fn drop(&mut self) {
        for (mut child, _) in self.forwarders.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = self.stop() {
            eprintln!("simulated pod {}: {e}", self.uid);
        }
        if let Err(e) = ip(&["netns", "del", &self.netns]) {
            eprintln!("simulated pod {}: {e}", self.uid);
        }
        // The host end goes with its peer; remove it if it lingers.
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
