//! Network namespaces: finding a pod's, and making sockets inside it.
//!
//! On Kubernetes hoop's listeners live in each governed pod's own network
//! namespace (the redirect is completed in the connecting socket's netns,
//! see `hoop-ebpf`), and upstream connections for the pod leave from it too,
//! so they carry the pod's address and the pod's NetworkPolicy applies.
//!
//! A socket's namespace is fixed when `socket()` is called, and only then:
//! `bind`, `listen`, `connect` and `accept` use the namespace the socket
//! already has, from any thread. So [`NetnsSockets`] keeps one dedicated
//! thread that does nothing but `setns` into the target namespace, create
//! the socket, and `setns` back home; every socket comes back as an ordinary
//! non-blocking, close-on-exec fd that tokio can drive. The thread runs no
//! other work, and each job enters its target namespace first, so even a
//! failed return home cannot put a socket in the wrong namespace.
//!
//! The pod's namespace is found from a process in the pod's cgroup: the
//! oldest one, which is the sandbox ("pause") process the runtime starts
//! before any container ([`find_pod_netns`]). The namespace is held open by
//! fd, so a recycled namespace can never be entered by mistake.
#![allow(unsafe_code)]

use std::{
    fs,
    io::{self, ErrorKind},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream},
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread,
};

use nix::sys::socket::{
    self as sock, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, sockopt,
};

/// `SO_NETNS_COOKIE` (Linux 5.14): the 64-bit cookie of a socket's network
/// namespace, the value `bpf_get_netns_cookie()` returns in the kernel.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// An open network namespace (an fd on its nsfs inode).
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    dev: u64,
    inode: u64,
}

impl NetNs {
    /// Opens a namespace file: `/proc/PID/ns/net`, `/run/netns/NAME`, …
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = fs::File::open(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            fd: file.into(),
            dev: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// The namespace of process `pid`.
    pub fn of_pid(pid: u32) -> io::Result<Self> {
        Self::open(Path::new(&format!("/proc/{pid}/ns/net")))
    }

    /// The calling thread's namespace.
    pub fn current() -> io::Result<Self> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// The namespace's inode number (what `ip netns identify` and
    /// `/proc/PID/ns/net` links show).
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// True when both handles are the same namespace.
    pub fn same_as(&self, other: &Self) -> bool {
        self.dev == other.dev && self.inode == other.inode
    }

    /// Makes the calling thread enter this namespace.
    fn enter(&self) -> io::Result<()> {
        // SAFETY: setns(2) on a valid, open nsfs fd; it changes only the
        // calling thread's namespace (the worker thread's, by design).
        let rc = unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// The cookie of the network namespace a socket lives in.
pub fn netns_cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cookie`, which
    // is a live u64 of exactly that size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The cookie of the calling thread's network namespace.
pub fn current_netns_cookie() -> io::Result<u64> {
    let fd = sock::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    netns_cookie(fd.as_fd())
}

/// Why a pod's network namespace could not be found.
#[derive(Debug, thiserror::Error)]
pub enum PodNetnsError {
    /// No process in the pod's cgroup yet (the sandbox has not started).
    #[error("no process in pod cgroup {} yet (the sandbox has not started)", .0.display())]
    NoProcess(PathBuf),
    /// Reading the cgroup or a process's namespace failed.
    #[error("reading {}", path.display())]
    Read {
        /// What was read.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A pod's network namespace and the process it was found through.
#[derive(Debug)]
pub struct PodNetns {
    /// The namespace.
    pub netns: NetNs,
    /// The process whose namespace it is (the oldest in the pod's cgroup).
    pub pid: u32,
}

/// Finds the network namespace of the pod whose cgroup is `pod_cgroup`:
/// the namespace of the oldest process anywhere in the cgroup's subtree,
/// which is the sandbox process (it starts before every container, and a
/// container cannot predate it).
pub fn find_pod_netns(pod_cgroup: &Path) -> Result<PodNetns, PodNetnsError> {
    let mut candidates: Vec<(u64, u32)> = Vec::new();
    let mut stack = vec![pod_cgroup.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let procs = dir.join("cgroup.procs");
        match fs::read_to_string(&procs) {
            Ok(s) => {
                for pid in s.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                    if let Some(start) = start_time(pid) {
                        candidates.push((start, pid));
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound && dir != pod_cgroup => continue,
            Err(source) => {
                return Err(PodNetnsError::Read {
                    path: procs,
                    source,
                });
            }
        }
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound && dir != pod_cgroup => continue,
            Err(source) => return Err(PodNetnsError::Read { path: dir, source }),
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    // Oldest first; ties broken by pid. A process may exit while we look:
    // then the next oldest stands in.
    candidates.sort_unstable();
    for (_, pid) in candidates {
        if let Ok(netns) = NetNs::of_pid(pid) {
            return Ok(PodNetns { netns, pid });
        }
    }
    Err(PodNetnsError::NoProcess(pod_cgroup.to_path_buf()))
}

/// A process's start time (clock ticks since boot), field 22 of
/// `/proc/PID/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields that follow start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Which socket to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `AF_INET`.
    V4,
    /// `AF_INET6`.
    V6,
}

struct Job {
    netns: Arc<NetNs>,
    family: Family,
    reply: tokio::sync::oneshot::Sender<io::Result<OwnedFd>>,
}

/// Creates TCP sockets inside other network namespaces, on one dedicated
/// thread. Cheap to clone; the thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct NetnsSockets {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for NetnsSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsSockets").finish_non_exhaustive()
    }
}

/// hoop's listeners inside one network namespace.
#[derive(Debug)]
pub struct LoopbackListeners {
    /// `127.0.0.1:<port>`.
    pub v4: TcpListener,
    /// `[::1]:<port>`, unless IPv6 is unavailable in the namespace.
    pub v6: Option<TcpListener>,
    /// The namespace's cookie (the key of its redirect target).
    pub netns_cookie: u64,
}

impl LoopbackListeners {
    /// The IPv4 listener's address.
    pub fn v4_addr(&self) -> io::Result<SocketAddrV4> {
        match self.v4.local_addr()? {
            SocketAddr::V4(a) => Ok(a),
            SocketAddr::V6(_) => Err(io::Error::new(
                ErrorKind::InvalidData,
                "v4 listener has a v6 address",
            )),
        }
    }

    /// The IPv6 listener's address, when there is one.
    pub fn v6_addr(&self) -> io::Result<Option<SocketAddrV6>> {
        match &self.v6 {
            None => Ok(None),
            Some(l) => match l.local_addr()? {
                SocketAddr::V6(a) => Ok(Some(a)),
                SocketAddr::V4(_) => Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "v6 listener has a v4 address",
                )),
            },
        }
    }
}

impl NetnsSockets {
    /// Starts the worker thread. It records its own namespace as home.
    pub fn spawn() -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        thread::Builder::new()
            .name("hoop-netns".into())
            .spawn(move || {
                let home = match NetNs::current() {
                    Ok(h) => {
                        let _ = ready_tx.send(Ok(()));
                        h
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    let result = job.netns.enter().and_then(|()| new_tcp_socket(job.family));
                    if let Err(e) = home.enter() {
                        // Harmless for correctness (every job enters its own
                        // target first), but worth knowing.
                        tracing::warn!(error = %e, "netns worker could not return to its home namespace");
                    }
                    let _ = job.reply.send(result);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("netns worker thread died at start"))??;
        Ok(Self { jobs })
    }

    /// Creates a non-blocking, close-on-exec TCP socket inside `netns`.
    pub async fn socket(&self, netns: &Arc<NetNs>, family: Family) -> io::Result<OwnedFd> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job {
                netns: netns.clone(),
                family,
                reply,
            })
            .map_err(|_| io::Error::other("netns worker thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("netns worker thread is gone"))?
    }

    /// Like [`NetnsSockets::socket`], for code outside an async runtime.
    pub fn socket_blocking(&self, netns: &Arc<NetNs>, family: Family) -> io::Result<OwnedFd> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job {
                netns: netns.clone(),
                family,
                reply,
            })
            .map_err(|_| io::Error::other("netns worker thread is gone"))?;
        rx.blocking_recv()
            .map_err(|_| io::Error::other("netns worker thread is gone"))?
    }

    /// Binds hoop's listeners on the loopback of `netns`: `127.0.0.1:port`
    /// and `[::1]:port` (port 0: any free port; the IPv6 one is skipped with
    /// a warning when IPv6 is disabled there, and IPv6 connects from the pod
    /// are then refused rather than let through). Non-blocking.
    pub fn bind_loopback_blocking(
        &self,
        netns: &Arc<NetNs>,
        v4_port: u16,
        v6_port: u16,
    ) -> io::Result<LoopbackListeners> {
        let v4 = self.socket_blocking(netns, Family::V4)?;
        let netns_cookie = netns_cookie(v4.as_fd())?;
        let v4 = listen_on(v4, SocketAddr::from((Ipv4Addr::LOCALHOST, v4_port)))?;
        let v6 = match self
            .socket_blocking(netns, Family::V6)
            .and_then(|fd| listen_on(fd, SocketAddr::from((Ipv6Addr::LOCALHOST, v6_port))))
        {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no IPv6 loopback listener in the pod's network namespace; its IPv6 connects to intercepted ports will be refused");
                None
            }
        };
        Ok(LoopbackListeners {
            v4,
            v6,
            netns_cookie,
        })
    }

    /// [`NetnsSockets::bind_loopback_blocking`] without blocking the runtime.
    pub async fn bind_loopback(
        &self,
        netns: &Arc<NetNs>,
        v4_port: u16,
        v6_port: u16,
    ) -> io::Result<LoopbackListeners> {
        let v4 = self.socket(netns, Family::V4).await?;
        let v6 = self.socket(netns, Family::V6).await;
        let netns_cookie = netns_cookie(v4.as_fd())?;
        let v4 = listen_on(v4, SocketAddr::from((Ipv4Addr::LOCALHOST, v4_port)))?;
        let v6 = match v6
            .and_then(|fd| listen_on(fd, SocketAddr::from((Ipv6Addr::LOCALHOST, v6_port))))
        {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no IPv6 loopback listener in the pod's network namespace; its IPv6 connects to intercepted ports will be refused");
                None
            }
        };
        Ok(LoopbackListeners {
            v4,
            v6,
            netns_cookie,
        })
    }

    /// Connects to `addr` from inside `netns` (the upstream leg of a pod's
    /// session): the connection leaves with the pod's address, through the
    /// pod's routes, under the pod's NetworkPolicy. `mark` sets `SO_MARK`
    /// first (hoop's skip mark, so its own connect is never redirected).
    pub async fn connect(
        &self,
        netns: &Arc<NetNs>,
        addr: SocketAddr,
        mark: Option<u32>,
    ) -> io::Result<tokio::net::TcpStream> {
        let family = if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let fd = self.socket(netns, family).await?;
        if let Some(mark) = mark {
            sock::setsockopt(&fd, sockopt::Mark, &mark).map_err(io::Error::from)?;
        }
        let socket = tokio::net::TcpSocket::from_std_stream(TcpStream::from(fd));
        socket.connect(addr).await
    }
}

fn new_tcp_socket(family: Family) -> io::Result<OwnedFd> {
    let af = match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    };
    Ok(sock::socket(
        af,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?)
}

fn listen_on(fd: OwnedFd, addr: SocketAddr) -> io::Result<TcpListener> {
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match addr {
        SocketAddr::V4(a) => sock::bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => {
            sock::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            sock::bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?;
        }
    }
    sock::listen(&fd, Backlog::new(1024).map_err(io::Error::from)?)?;
    Ok(TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_names_with_parentheses() {
        // Our own stat line parses, and a start time is after boot.
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn current_namespace_has_a_cookie_and_an_identity() {
        let a = NetNs::current().expect("own netns");
        let b = NetNs::of_pid(std::process::id()).expect("own netns by pid");
        assert!(a.same_as(&b));
        assert_ne!(current_netns_cookie().expect("cookie"), 0);
    }

    #[test]
    fn a_cgroup_without_processes_has_no_netns_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("cgroup.procs"), "").expect("write");
        assert!(matches!(
            find_pod_netns(dir.path()),
            Err(PodNetnsError::NoProcess(_))
        ));
        // The oldest listed process wins, wherever it is listed: a child we
        // start now (listed first) is younger than this test process.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        fs::write(dir.path().join("cgroup.procs"), format!("{}\n", child.id())).expect("write");
        let sub = dir.path().join("container");
        fs::create_dir(&sub).expect("mkdir");
        fs::write(
            sub.join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .expect("write");
        let found = find_pod_netns(dir.path());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            found.expect("found").pid,
            std::process::id(),
            "the older process"
        );
    }
}
