//! Issue 2: an unchanged client's connection to a database port goes through
//! hoop's proxy, proven by hoop's own counters (the proxy's accept count and
//! the kernel's redirect map), and nothing is left behind afterwards.

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use hoop_tests::{
    TestConfig, cgroups_named, free_port, hoop_exec, hoop_exec_spawn, metric, require_privileged,
    scrape_snippet, scraped, text, wait_output,
};

const T: Duration = Duration::from_mins(1);

#[test]
fn psql_over_ipv4_is_proxied() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let script = format!(
        "psql -h 127.0.0.1 -p 5432 -U postgres -d test -XAtc 'SELECT 6*7' && {}",
        scrape_snippet(&cfg.admin_url())
    );
    let out = hoop_exec(&cfg.path, &["sh", "-c", &script], T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "hoop exec failed: {stdout}\n{stderr}");
    assert!(
        stdout.lines().any(|l| l == "42"),
        "query result missing: {stdout}"
    );
    let m = scraped(&stdout);
    assert_eq!(
        metric(&m, "hoop_connections_total"),
        Some(1.0),
        "metrics:\n{m}"
    );
    assert_eq!(
        metric(&m, "hoop_ebpf_redirects_total"),
        Some(1.0),
        "metrics:\n{m}"
    );
    assert_eq!(
        metric(&m, "hoop_connections_active"),
        Some(0.0),
        "metrics:\n{m}"
    );
}

#[test]
fn psql_over_ipv6_is_proxied() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let script = format!(
        "psql -h ::1 -p 5432 -U postgres -d test -XAtc 'SELECT 7*6' && {}",
        scrape_snippet(&cfg.admin_url())
    );
    let out = hoop_exec(&cfg.path, &["sh", "-c", &script], T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "hoop exec failed: {stdout}\n{stderr}");
    assert!(
        stdout.lines().any(|l| l == "42"),
        "query result missing: {stdout}"
    );
    let m = scraped(&stdout);
    assert_eq!(
        metric(&m, "hoop_connections_total"),
        Some(1.0),
        "metrics:\n{m}"
    );
    assert_eq!(
        metric(&m, "hoop_ebpf_redirects_total"),
        Some(1.0),
        "metrics:\n{m}"
    );
}

#[test]
fn ipv4_mapped_ipv6_is_proxied() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    // A dual-stack socket connecting to ::ffff:127.0.0.1 goes through connect6.
    let script = format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_INET6); s.connect(('::ffff:127.0.0.1',5432)); \
         s.sendall(bytes.fromhex('0000000804d2162f')); print('ssl-answer', s.recv(1))\" && {}",
        scrape_snippet(&cfg.admin_url())
    );
    let out = hoop_exec(&cfg.path, &["sh", "-c", &script], T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "hoop exec failed: {stdout}\n{stderr}");
    // The SSLRequest got a one-byte answer ('S' or 'N') through the proxy.
    assert!(
        stdout.contains("ssl-answer b'"),
        "no answer through the proxy: {stdout}"
    );
    let m = scraped(&stdout);
    assert_eq!(
        metric(&m, "hoop_ebpf_redirects_total"),
        Some(1.0),
        "metrics:\n{m}"
    );
    assert_eq!(
        metric(&m, "hoop_connections_total"),
        Some(1.0),
        "metrics:\n{m}"
    );
}

#[test]
fn other_ports_and_other_processes_are_not_redirected() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    // A listener on a port hoop does not intercept.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let other_port = listener.local_addr().expect("addr").port();
    let accepted = std::thread::spawn(move || listener.accept().map(|(_, peer)| peer));
    // While hoop governs its own child, a process outside that cgroup (this
    // test's psql, started after hoop) talks to PostgreSQL directly.
    let script = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1',{other_port})).close()\" && sleep 2 && {}",
        scrape_snippet(&cfg.admin_url())
    );
    let child = hoop_exec_spawn(&cfg.path, &["sh", "-c", &script]);
    std::thread::sleep(Duration::from_millis(700));
    let outside = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            "test",
            "-XAtc",
            "SELECT 1",
        ])
        .output()
        .expect("psql");
    assert!(outside.status.success(), "psql outside the cgroup failed");
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "hoop exec failed: {stdout}\n{stderr}");
    let peer = accepted.join().expect("accept thread").expect("accept");
    assert!(peer.ip().is_loopback());
    let m = scraped(&stdout);
    assert_eq!(
        metric(&m, "hoop_ebpf_redirects_total"),
        Some(0.0),
        "metrics:\n{m}"
    );
    assert_eq!(
        metric(&m, "hoop_connections_total"),
        Some(0.0),
        "metrics:\n{m}"
    );
}

fn hoop_programs_loaded() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| n.starts_with("hoop_"))
        .collect()
}

fn assert_clean(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cgroups = cgroups_named(&format!("hoop-exec-{pid}-"));
        let programs = hoop_programs_loaded();
        if cgroups.is_empty() && programs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: cgroups {cgroups:?}, programs {programs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nothing_is_left_after_a_normal_exit_or_a_failing_command() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let child = hoop_exec_spawn(&cfg.path, &["sh", "-c", "exit 3"]);
    let pid = child.id();
    let out = wait_output(child, T);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit status is CMD's: {}",
        text(&out).1
    );
    assert_clean(pid);
}

#[test]
fn nothing_is_left_when_the_command_is_killed() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let child = hoop_exec_spawn(&cfg.path, &["sh", "-c", "kill -9 $$"]);
    let pid = child.id();
    let out = wait_output(child, T);
    assert_eq!(
        out.status.code(),
        Some(128 + 9),
        "128+SIGKILL: {}",
        text(&out).1
    );
    assert_clean(pid);
}

#[test]
fn sigterm_and_sigint_are_forwarded_and_everything_is_removed() {
    require_privileged();
    for (sig, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        let cfg = TestConfig::new(&[5432], "");
        let child = hoop_exec_spawn(&cfg.path, &["sleep", "30"]);
        let pid = child.id();
        // Wait until the command is inside its cgroup.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cgroups_named(&format!("hoop-exec-{pid}-")).is_empty() {
            assert!(
                Instant::now() < deadline,
                "hoop exec never created its cgroup"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal hoop");
        let started = Instant::now();
        let out = wait_output(child, Duration::from_secs(20));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sig} was not forwarded promptly"
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{sig}: exit status {:?}: {}",
            out.status,
            text(&out).1
        );
        assert_clean(pid);
    }
}

#[test]
fn a_stale_cgroup_from_a_killed_hoop_is_removed_by_the_next_exec() {
    require_privileged();
    let cfg = TestConfig::new(&[5432], "");
    let child = hoop_exec_spawn(&cfg.path, &["sleep", "30"]);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cgroups_named(&format!("hoop-exec-{pid}-")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "hoop exec never created its cgroup"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = wait_output(child, T);
    // The kernel drops the links with the process; the orphaned `sleep` and
    // the directory remain until the next hoop exec sweeps them.
    let out = hoop_exec(&cfg.path, &["true"], T);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_clean(pid);
}

#[test]
fn unreachable_destination_closes_the_client_promptly_and_is_counted() {
    require_privileged();
    let dead_port = free_port();
    let cfg = TestConfig::new(&[dead_port], "");
    let script = format!(
        "psql -h 127.0.0.1 -p {dead_port} -U postgres -d test -XAtc 'SELECT 1' 2>&1; echo psql-exit=$?; {}",
        scrape_snippet(&cfg.admin_url())
    );
    let started = Instant::now();
    let out = hoop_exec(&cfg.path, &["sh", "-c", &script], T);
    let (stdout, stderr) = text(&out);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "not prompt: {:?}",
        started.elapsed()
    );
    assert!(
        stdout.contains("psql-exit=2"),
        "psql should fail to connect: {stdout}\n{stderr}"
    );
    let m = scraped(&stdout);
    assert_eq!(
        metric(&m, "hoop_upstream_connect_errors_total"),
        Some(1.0),
        "metrics:\n{m}"
    );
    assert!(
        stderr.contains("cannot reach the original destination"),
        "not logged: {stderr}"
    );
}

#[test]
fn two_execs_at_once_do_not_interfere() {
    require_privileged();
    let a = TestConfig::new(&[5432], "");
    let b = TestConfig::new(&[5432], "");
    let script = |cfg: &TestConfig| {
        format!(
            "for i in 1 2 3; do psql -h 127.0.0.1 -U postgres -d test -XAtc 'SELECT 1' >/dev/null || exit 1; sleep 0.3; done; {}",
            scrape_snippet(&cfg.admin_url())
        )
    };
    let ca = hoop_exec_spawn(&a.path, &["sh", "-c", &script(&a)]);
    let cb = hoop_exec_spawn(&b.path, &["sh", "-c", &script(&b)]);
    for out in [wait_output(ca, T), wait_output(cb, T)] {
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let m = scraped(&stdout);
        // Each hoop saw exactly its own child's three connections.
        assert_eq!(
            metric(&m, "hoop_connections_total"),
            Some(3.0),
            "metrics:\n{m}"
        );
        assert_eq!(
            metric(&m, "hoop_ebpf_redirects_total"),
            Some(3.0),
            "metrics:\n{m}"
        );
    }
}

#[test]
fn pgbench_through_hoop_has_no_errors() {
    require_privileged();
    let init = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-i",
            "-s",
            "1",
            "-q",
            "test",
        ])
        .output()
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let cfg = TestConfig::new(&[5432], "");
    let script = format!(
        "pgbench -h 127.0.0.1 -p 5432 -U postgres -c 4 -T 5 test && {}",
        scrape_snippet(&cfg.admin_url())
    );
    let out = hoop_exec(&cfg.path, &["sh", "-c", &script], Duration::from_secs(90));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "pgbench failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    let m = scraped(&stdout);
    // 4 clients, each one connection (plus pgbench's initial one).
    assert!(
        metric(&m, "hoop_connections_total").is_some_and(|n| n >= 4.0),
        "metrics:\n{m}"
    );
}

#[test]
fn malformed_config_fails_before_anything_is_attached() {
    require_privileged();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "intercept:\n  ports: [5432]\n  portz: [1]\n").expect("write");
    let child = hoop_exec_spawn(&path, &["true"]);
    let pid = child.id();
    let out = wait_output(child, T);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("portz") && stderr.contains(":3:"),
        "{stderr}"
    );
    assert!(cgroups_named(&format!("hoop-exec-{pid}-")).is_empty());
}

/// Kills an agent and removes its cgroup when a test ends early.
struct AgentCleanup<'a> {
    agent: Option<std::process::Child>,
    cgroup: &'a std::path::Path,
}

impl Drop for AgentCleanup<'_> {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = std::fs::remove_dir(self.cgroup);
    }
}

#[test]
fn agent_governs_listed_cgroups_and_detaches_on_sigterm() {
    require_privileged();
    // A cgroup of our own, as a platform would create for a pod.
    let root = std::path::Path::new("/sys/fs/cgroup/unified");
    let cgroup = root.join(format!("hoop-agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup).expect("create cgroup");
    let cfg = TestConfig::new(&[5432], "");
    let yaml = std::fs::read_to_string(&cfg.path).expect("config").replace(
        "intercept:\n",
        &format!("intercept:\n  cgroups: [{}]\n", cgroup.display()),
    );
    std::fs::write(&cfg.path, yaml).expect("config");
    let mut guard = AgentCleanup {
        agent: Some(
            Command::new(hoop_tests::hoop_bin())
                .args(["agent", "--config"])
                .arg(&cfg.path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn agent"),
        ),
        cgroup: &cgroup,
    };
    let agent = guard.agent.as_mut().expect("spawned");
    // Wait for the admin API.
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", cfg.admin_port)).is_err() {
        assert!(Instant::now() < deadline, "agent never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A workload process that joins the cgroup before its first socket.
    let procs = cgroup.join("cgroup.procs");
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {} && psql -h 127.0.0.1 -U postgres -d test -XAtc 'SELECT 40+2'",
                procs.display()
            ),
        ])
        .output()
        .expect("workload");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Command::new("curl")
        .arg("-sf")
        .arg(format!("{}/metrics", cfg.admin_url()))
        .output()
        .expect("curl");
    let m = String::from_utf8_lossy(&m.stdout);
    assert_eq!(metric(&m, "hoop_ebpf_redirects_total"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "hoop_connections_total"), Some(1.0), "{m}");
    assert_eq!(
        hoop_programs_loaded().len(),
        3,
        "connect4, connect6 and sockops are loaded while it runs"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = agent.wait().expect("agent exit");
    let agent_stderr = agent.stderr.take();
    drop(guard);
    assert!(status.success(), "agent exits 0 on SIGTERM: {status}");
    assert!(
        hoop_programs_loaded().is_empty(),
        "programs left: {:?}",
        hoop_programs_loaded()
    );
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut agent_stderr.expect("stderr"), &mut stderr);
    assert!(stderr.contains("detached"), "{stderr}");
}
