//! Privileged tier: real eBPF programs on real cgroups.
//!
//! Each test creates its own cgroup under the cgroup2 root, attaches a fresh
//! [`Interceptor`] to it, and drives connects from `python3` children moved
//! into the cgroup *before* exec (a socket's cgroup is fixed at `socket()`).
//! Local `TcpListener`s play both the proxy and the original destinations.
//!
//! These tests need root (CAP_BPF, CAP_NET_ADMIN, cgroup write access). They
//! fail, never skip, without it: a green run must mean the kernel side works.
//! Tests are serialized because they move processes between cgroups.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use hoop::intercept::{
    DEFAULT_SKIP_MARK, InterceptSettings, Interceptor, OriginalDestination, RedirectCounters,
    cgroup::{ScopedCgroup, cgroup_path_of_pid, cgroup2_root},
};

static SERIAL: Mutex<()> = Mutex::new(());

/// The child: connects to ARGV[2]:ARGV[3] (family ARGV[1]), optionally with
/// SO_MARK ARGV[4] (36 = SO_MARK), optionally waiting for a line on stdin
/// first, then prints its local port and exits.
const CONNECT_PY: &str = r"
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
mark = int(sys.argv[4])
if mark:
    s.setsockopt(socket.SOL_SOCKET, 36, mark)
if sys.argv[5] == 'wait':
    print('ready', flush=True)
    sys.stdin.readline()
s.settimeout(5)
s.connect((sys.argv[2], int(sys.argv[3])))
print(s.getsockname()[1], flush=True)
s.close()
";

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fails loudly when the environment cannot run the privileged tier.
fn require_privileges() {
    let euid = nix::unistd::geteuid();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        euid.is_root(),
        "the privileged eBPF tests need root (euid is {euid}{}); run them with sudo — they never skip",
        if ci {
            ", and CI=true requires this tier"
        } else {
            ""
        }
    );
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn new_cgroup() -> ScopedCgroup {
    require_privileges();
    let root = cgroup2_root().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    ScopedCgroup::create_with_prefix(&root, "hoop-test")
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

/// One governed cgroup with an interceptor attached and proxy listeners.
struct Governed {
    // Interceptor before the cgroup: detach, then remove the directory.
    interceptor: Interceptor,
    cgroup: ScopedCgroup,
    proxy_v4: TcpListener,
    proxy_v6: TcpListener,
}

fn listen(addr: &str) -> TcpListener {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    l.set_nonblocking(true).expect("nonblocking listener");
    l
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().expect("listener address").port()
}

impl Governed {
    fn new(ports: &[u16], skip_tgid: u32) -> Self {
        Self::with_cgroup(new_cgroup(), ports, skip_tgid)
    }

    fn with_cgroup(cgroup: ScopedCgroup, ports: &[u16], skip_tgid: u32) -> Self {
        let proxy_v4 = listen("127.0.0.1:0");
        let proxy_v6 = listen("[::1]:0");
        let SocketAddr::V4(proxy_v4_addr) = proxy_v4.local_addr().expect("v4 addr") else {
            unreachable!()
        };
        let SocketAddr::V6(proxy_v6_addr) = proxy_v6.local_addr().expect("v6 addr") else {
            unreachable!()
        };
        let settings = InterceptSettings {
            ports: ports.to_vec(),
            proxy_v4: proxy_v4_addr,
            proxy_v6: proxy_v6_addr,
            skip_mark: DEFAULT_SKIP_MARK,
            skip_tgid,
        };
        let interceptor = Interceptor::load(&settings)
            .unwrap_or_else(|e| panic!("loading eBPF: {}", error_chain(&e)));
        interceptor
            .attach(cgroup.path())
            .unwrap_or_else(|e| panic!("attaching: {}", error_chain(&e)));
        Self {
            interceptor,
            cgroup,
            proxy_v4,
            proxy_v6,
        }
    }

    fn counters(&self) -> RedirectCounters {
        self.interceptor.counters().expect("reading counters")
    }
}

/// How a child connects.
struct Dial<'a> {
    family: u8,
    host: &'a str,
    port: u16,
    mark: u32,
}

fn python() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(CONNECT_PY);
    cmd
}

/// Spawns the connecting child, inside `cgroup` when given.
fn spawn_child(cgroup: Option<&Path>, dial: &Dial<'_>, wait: bool) -> Child {
    let mut cmd = python();
    cmd.arg(dial.family.to_string())
        .arg(dial.host)
        .arg(dial.port.to_string())
        .arg(dial.mark.to_string())
        .arg(if wait { "wait" } else { "go" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(cg) = cgroup {
        // Opened before fork: the hook below only calls write(2), which is
        // async-signal-safe (no allocation between fork and exec).
        let procs = File::options()
            .write(true)
            .open(cg.join("cgroup.procs"))
            .expect("open cgroup.procs");
        // SAFETY: the closure performs a single write(2) on an already-open fd
        // and touches no locks or allocator state.
        unsafe {
            cmd.pre_exec(move || (&procs).write_all(b"0"));
        }
    }
    cmd.spawn().expect("spawn python3")
}

/// Runs a child to completion and returns its local port.
fn run_child(cgroup: Option<&Path>, dial: &Dial<'_>) -> (u32, u16) {
    let child = spawn_child(cgroup, dial, false);
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for python3");
    assert!(out.status.success(), "connecting child failed: {out:?}");
    let port = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("child printed its local port");
    (pid, port)
}

/// Accepts one pending connection, waiting up to `timeout`.
fn accept_within(l: &TcpListener, timeout: Duration) -> Option<SocketAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((_stream, peer)) => return Some(peer),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn assert_nothing_pending(listeners: &[(&str, &TcpListener)]) {
    for (name, l) in listeners {
        assert_eq!(
            accept_within(l, Duration::ZERO),
            None,
            "unexpected connection on the {name} listener"
        );
    }
}

/// Asserts a redirected connect: it landed on `proxy`, the original
/// destination resolves exactly once, and names the child and cgroup.
fn assert_redirected(
    g: &Governed,
    proxy: &TcpListener,
    dial: &Dial<'_>,
    expected: SocketAddr,
    before: RedirectCounters,
    bump: impl Fn(&mut RedirectCounters),
) {
    let (pid, local_port) = run_child(Some(g.cgroup.path()), dial);
    let peer = accept_within(proxy, Duration::from_secs(2)).unwrap_or_else(|| {
        panic!(
            "connect to {}:{} did not reach the proxy",
            dial.host, dial.port
        )
    });
    assert_eq!(peer.port(), local_port, "the proxy's peer is the child");
    let original = g
        .interceptor
        .original_destination(peer)
        .expect("map lookup");
    assert_eq!(
        original,
        Some(OriginalDestination {
            addr: expected,
            tgid: pid,
            cgroup_id: g.cgroup.cgroup_id()
        })
    );
    assert_eq!(
        g.interceptor
            .original_destination(peer)
            .expect("map lookup"),
        None,
        "entry is consumed"
    );
    let mut want = before;
    bump(&mut want);
    assert_eq!(g.counters(), want);
}

#[test]
fn redirects_ipv4_ipv6_and_ipv4_mapped_connects() {
    let _serial = serial();
    let dest_v4 = listen("127.0.0.1:0");
    let dest_v6 = listen("[::1]:0");
    let g = Governed::new(&[port_of(&dest_v4), port_of(&dest_v6)], 0);

    // IPv4.
    let port = port_of(&dest_v4);
    let dial = Dial {
        family: 4,
        host: "127.0.0.1",
        port,
        mark: 0,
    };
    let expected = SocketAddr::V4(SocketAddrV4::new([127, 0, 0, 1].into(), port));
    assert_redirected(
        &g,
        &g.proxy_v4,
        &dial,
        expected,
        RedirectCounters::default(),
        |c| c.v4 += 1,
    );

    // IPv6.
    let before = g.counters();
    let port = port_of(&dest_v6);
    let dial = Dial {
        family: 6,
        host: "::1",
        port,
        mark: 0,
    };
    let expected = SocketAddr::V6(SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, port, 0, 0));
    assert_redirected(&g, &g.proxy_v6, &dial, expected, before, |c| c.v6 += 1);

    // IPv4-mapped on an AF_INET6 socket: lands on the proxy's IPv4 listener.
    let before = g.counters();
    let port = port_of(&dest_v4);
    let dial = Dial {
        family: 6,
        host: "::ffff:127.0.0.1",
        port,
        mark: 0,
    };
    let expected: SocketAddr = format!("[::ffff:127.0.0.1]:{port}")
        .parse()
        .expect("mapped address");
    assert_redirected(&g, &g.proxy_v4, &dial, expected, before, |c| {
        c.v4_mapped += 1;
    });

    assert_nothing_pending(&[
        ("v4 destination", &dest_v4),
        ("v6 destination", &dest_v6),
        ("proxy v6", &g.proxy_v6),
    ]);
    assert_eq!(g.counters().redirects_total(), 3);
}

#[test]
fn leaves_other_ports_and_other_cgroups_alone() {
    let _serial = serial();
    let intercepted = listen("127.0.0.1:0");
    let other = listen("127.0.0.1:0");
    let g = Governed::new(&[port_of(&intercepted)], 0);

    // A non-intercepted port from inside the cgroup.
    run_child(
        Some(g.cgroup.path()),
        &Dial {
            family: 4,
            host: "127.0.0.1",
            port: port_of(&other),
            mark: 0,
        },
    );
    assert!(
        accept_within(&other, Duration::from_secs(2)).is_some(),
        "non-intercepted port reaches its listener"
    );

    // The intercepted port from a process outside the cgroup.
    let (_, local_port) = run_child(
        None,
        &Dial {
            family: 4,
            host: "127.0.0.1",
            port: port_of(&intercepted),
            mark: 0,
        },
    );
    let peer = accept_within(&intercepted, Duration::from_secs(2))
        .expect("outside process reaches the destination");
    assert_eq!(peer.port(), local_port);
    assert_eq!(
        g.interceptor.original_destination(peer).expect("lookup"),
        None
    );

    // Same for IPv6 outside the cgroup.
    let dest_v6 = listen("[::1]:0");
    drop(g);
    let g = Governed::new(&[port_of(&dest_v6)], 0);
    run_child(
        None,
        &Dial {
            family: 6,
            host: "::1",
            port: port_of(&dest_v6),
            mark: 0,
        },
    );
    assert!(accept_within(&dest_v6, Duration::from_secs(2)).is_some());

    assert_nothing_pending(&[("proxy v4", &g.proxy_v4), ("proxy v6", &g.proxy_v6)]);
    assert_eq!(g.counters(), RedirectCounters::default());
}

#[test]
fn never_redirects_the_skip_mark_or_the_skip_tgid() {
    let _serial = serial();
    let dest = listen("127.0.0.1:0");
    let dest_v6 = listen("[::1]:0");
    let port = port_of(&dest);
    let g = Governed::new(&[port, port_of(&dest_v6)], 0);

    // SO_MARK = skip mark, IPv4 and IPv6.
    run_child(
        Some(g.cgroup.path()),
        &Dial {
            family: 4,
            host: "127.0.0.1",
            port,
            mark: DEFAULT_SKIP_MARK,
        },
    );
    assert!(
        accept_within(&dest, Duration::from_secs(2)).is_some(),
        "marked v4 socket goes direct"
    );
    run_child(
        Some(g.cgroup.path()),
        &Dial {
            family: 6,
            host: "::1",
            port: port_of(&dest_v6),
            mark: DEFAULT_SKIP_MARK,
        },
    );
    assert!(
        accept_within(&dest_v6, Duration::from_secs(2)).is_some(),
        "marked v6 socket goes direct"
    );
    assert_eq!(
        g.counters(),
        RedirectCounters {
            skipped_self: 2,
            ..RedirectCounters::default()
        }
    );

    // A different mark is still redirected.
    run_child(
        Some(g.cgroup.path()),
        &Dial {
            family: 4,
            host: "127.0.0.1",
            port,
            mark: DEFAULT_SKIP_MARK + 1,
        },
    );
    let peer =
        accept_within(&g.proxy_v4, Duration::from_secs(2)).expect("other mark is redirected");
    assert!(
        g.interceptor
            .original_destination(peer)
            .expect("lookup")
            .is_some()
    );

    // The skip tgid, added at runtime to a child already in the cgroup.
    let mut child = spawn_child(
        Some(g.cgroup.path()),
        &Dial {
            family: 4,
            host: "127.0.0.1",
            port,
            mark: 0,
        },
        true,
    );
    let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("child ready line");
    assert_eq!(line.trim(), "ready");
    g.interceptor
        .add_skip_tgid(child.id())
        .expect("add skip tgid");
    child
        .stdin
        .take()
        .expect("child stdin")
        .write_all(b"go\n")
        .expect("release child");
    assert!(child.wait().expect("wait child").success());
    assert!(
        accept_within(&dest, Duration::from_secs(2)).is_some(),
        "skip tgid goes direct"
    );
    assert_eq!(
        g.counters(),
        RedirectCounters {
            v4: 1,
            skipped_self: 3,
            ..RedirectCounters::default()
        }
    );
    assert_nothing_pending(&[("proxy v4", &g.proxy_v4), ("destination", &dest)]);
    drop(g);

    // The skip tgid given in the settings at load time: the child is in the
    // cgroup (socket created) before the interceptor even exists.
    let cgroup = new_cgroup();
    let mut child = spawn_child(
        Some(cgroup.path()),
        &Dial {
            family: 4,
            host: "127.0.0.1",
            port,
            mark: 0,
        },
        true,
    );
    let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("child ready line");
    let g = Governed::with_cgroup(cgroup, &[port], child.id());
    child
        .stdin
        .take()
        .expect("child stdin")
        .write_all(b"go\n")
        .expect("release child");
    assert!(child.wait().expect("wait child").success());
    assert!(
        accept_within(&dest, Duration::from_secs(2)).is_some(),
        "settings.skip_tgid goes direct"
    );
    assert_eq!(
        g.counters(),
        RedirectCounters {
            skipped_self: 1,
            ..RedirectCounters::default()
        }
    );
    assert_nothing_pending(&[("proxy v4", &g.proxy_v4)]);
}

#[test]
fn dropping_detaches_everything_and_removes_the_cgroup() {
    let _serial = serial();
    let dest = listen("127.0.0.1:0");
    let port = port_of(&dest);
    let Governed {
        interceptor,
        cgroup,
        proxy_v4,
        proxy_v6: _proxy_v6,
    } = Governed::new(&[port], 0);
    let dial = Dial {
        family: 4,
        host: "127.0.0.1",
        port,
        mark: 0,
    };

    // Helpers resolve the cgroup both ways.
    let root = cgroup2_root().expect("cgroup2 root");
    assert!(cgroup.path().starts_with(&root));
    assert_eq!(
        interceptor.cgroup_path(cgroup.cgroup_id()).as_deref(),
        Some(cgroup.path())
    );
    let mut sleeper = Command::new("sleep");
    sleeper.arg("60");
    let procs = File::options()
        .write(true)
        .open(cgroup.procs_file())
        .expect("open cgroup.procs");
    // SAFETY: a single write(2) on an open fd between fork and exec.
    unsafe {
        sleeper.pre_exec(move || (&procs).write_all(b"0"));
    }
    let mut sleeper = sleeper.spawn().expect("spawn sleep");
    let rel = cgroup_path_of_pid(sleeper.id()).expect("sleeper's cgroup");
    assert_eq!(root.join(rel.trim_start_matches('/')), cgroup.path());
    assert_eq!(cgroup.pids().expect("pids"), vec![sleeper.id()]);

    // Attached: redirected.
    run_child(Some(cgroup.path()), &dial);
    let peer = accept_within(&proxy_v4, Duration::from_secs(2)).expect("redirected while attached");
    assert!(
        interceptor
            .original_destination(peer)
            .expect("lookup")
            .is_some()
    );

    // Dropping the interceptor detaches and unloads every program.
    let ids = interceptor.program_ids().expect("program ids");
    assert_eq!(ids.len(), 3);
    drop(interceptor);
    let still_loaded: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .filter(|id| ids.contains(id))
        .collect();
    assert!(
        still_loaded.is_empty(),
        "programs {still_loaded:?} survived the drop"
    );
    run_child(Some(cgroup.path()), &dial);
    assert!(
        accept_within(&dest, Duration::from_secs(2)).is_some(),
        "no redirect after drop"
    );
    assert_nothing_pending(&[("proxy v4", &proxy_v4)]);

    // Dropping the cgroup kills what is left in it and removes the directory.
    let path = cgroup.path().to_owned();
    drop(cgroup);
    assert!(!path.exists(), "{} still exists", path.display());
    let status = sleeper.wait().expect("wait sleeper");
    assert!(
        !status.success(),
        "the leftover process was killed: {status:?}"
    );
}
