//! `cargo xtask bench`: how much hoop costs, measured in one run.
//!
//! pgbench select-only (`-S`) with 1 and 8 clients, in simple and prepared
//! modes, against six paths interleaved round by round, in an order that
//! rotates from round to round, so machine noise hits them alike: direct,
//! through `hoop exec` (three times: sessions on hoop's relay loop, the
//! default, with no policy and with the full policy of
//! `examples/full-policy.yaml`, and on tokio, `proxy.event_loop: tokio`),
//! through pgbouncer (session
//! pooling), through haproxy (a plain TCP forwarder, one thread) and through
//! xtask's own floor forwarder (`floor.rs`: one thread, epoll, and a raw
//! `recv` and `send` per chunk; the least any proxy can do). pgbouncer and
//! haproxy are installed with `apt-get` when missing; a baseline that
//! cannot be installed is skipped with a message. hoop runs with `tls.upstream:
//! disable` here, the setting pgbouncer has by default (`server_tls_sslmode
//! = disable`), so both relay plaintext; the cost of hoop's default
//! (`prefer`, which encrypts the server leg) is reported on its own line.
//!
//! Proxy CPU per transaction: hoop logs its own rusage at exit, minus the
//! start-up and tear-down cost of an idle `hoop exec -- true` (eBPF load,
//! cgroup set-up) measured in the same run; the baselines' from
//! `/proc/PID/stat` around each run. The "user µs" column is the part of
//! that CPU time spent in user space; the rest is the kernel's (mostly the
//! loopback TCP stack of both legs). "Pinned" runs put the client, the proxy
//! and the server on CPU 0: PostgreSQL's postmaster is pinned for the
//! duration (new backends inherit it) and the baselines are restarted
//! pinned, then all are restored.
//!
//! Then a 1,000,000-row × 3-column COPY TO STDOUT, direct vs. through hoop,
//! with hoop's peak RSS, the recording overhead and the masking cost, and
//! hoop's threads counted in instructions (`bench_instr.rs`).
//!
//! Results are medians of `--rounds` runs; ratios are to direct, from the
//! same run.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::setup::{self, output, workspace_root};

pub(crate) const DB: &str = "hoop_bench";
const PGBOUNCER_PORT: u16 = 6439;
const HAPROXY_PORT: u16 = 6440;
/// xtask's own minimal forwarder (see `floor.rs`).
const FLOOR_PORT: u16 = 6441;

struct Sample {
    tps: f64,
    latency_ms: f64,
    /// The proxy's CPU seconds (hoop: less its idle start-up).
    proxy_cpu: Option<Cpu>,
    transactions: f64,
}

fn parse_pgbench(stdout: &str) -> anyhow::Result<(f64, f64, f64)> {
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next())
            .map(str::parse::<f64>)
    };
    let tps = field("tps = ").context("no tps in pgbench output")??;
    let lat = field("latency average = ").context("no latency in pgbench output")??;
    let txns = field("number of transactions actually processed: ")
        .context("no transaction count in pgbench output")?
        .or_else(|_| {
            stdout
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("number of transactions actually processed: ")
                })
                .and_then(|r| r.split('/').next())
                .context("unparsable transaction count")?
                .parse()
                .context("unparsable transaction count")
        })?;
    Ok((tps, lat, txns))
}

/// CPU seconds of a process, split into user space and the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    pub(crate) user: f64,
    pub(crate) system: f64,
}

impl Cpu {
    pub(crate) fn total(self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;

    fn sub(self, rhs: Cpu) -> Cpu {
        Cpu {
            user: self.user - rhs.user,
            system: self.system - rhs.system,
        }
    }
}

/// `cpu_user_seconds` and `cpu_system_seconds` from hoop's exit log line.
pub(crate) fn parse_hoop_cpu(stderr: &str) -> Option<Cpu> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("hoop resource usage"))?;
    let get = |key: &str| {
        line.split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(Cpu {
        user: get("cpu_user_seconds=")?,
        system: get("cpu_system_seconds=")?,
    })
}

pub(crate) fn parse_hoop_rss_kib(stderr: &str) -> Option<f64> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("hoop resource usage"))?;
    line.split("peak_rss_kib=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Paths {
    hoop: PathBuf,
    config: PathBuf,
    /// CPU seconds of an idle `hoop exec -- true` (start-up and tear-down).
    hoop_idle_cpu: Cpu,
}

impl Paths {
    /// The same binary and start-up cost, with another hoop configuration.
    fn with_config(&self, config: PathBuf) -> Self {
        Self {
            hoop: self.hoop.clone(),
            config,
            hoop_idle_cpu: self.hoop_idle_cpu,
        }
    }
}

/// utime and stime of a process, in seconds (`/proc/PID/stat`, clock ticks).
pub(crate) fn process_cpu(pid: u32) -> anyhow::Result<Cpu> {
    stat_cpu(&fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// utime and stime, in seconds, of a `/proc/PID/stat` line.
pub(crate) fn stat_cpu(stat: &str) -> anyhow::Result<Cpu> {
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unparsable /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc/PID/stat")?.parse()?)
    };
    let hz: f64 = output(Command::new("getconf").arg("CLK_TCK"))?
        .trim()
        .parse()?;
    Ok(Cpu {
        user: ticks(11)? / hz,
        system: ticks(12)? / hz,
    })
}

/// CPU seconds of `hoop exec -- true`: the fixed cost every hoop run pays.
pub(crate) fn hoop_idle_cpu(hoop: &Path, config: &Path) -> anyhow::Result<Cpu> {
    let mut samples = Vec::new();
    for _ in 0..3 {
        let out = Command::new(hoop)
            .args(["exec", "--config"])
            .arg(config)
            .args(["--", "true"])
            .env("RUST_LOG", "info")
            .output()?;
        samples.push(
            parse_hoop_cpu(&String::from_utf8_lossy(&out.stderr))
                .context("hoop logged no resource usage")?,
        );
    }
    samples.sort_by(|a, b| a.total().total_cmp(&b.total()));
    Ok(samples[samples.len() / 2])
}

/// `pgbench -S` against the bench's database on `port`: `clients` clients
/// and threads, protocol `mode`, for `seconds`, at `rate` transactions per
/// second when given (`-R`; as fast as it can otherwise).
pub(crate) fn pgbench_select_args(
    port: u16,
    clients: u32,
    mode: &str,
    seconds: u32,
    rate: Option<u32>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "pgbench",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-n",
        "-S",
        "-M",
        mode,
    ]
    .map(String::from)
    .into();
    args.extend([
        "-p".into(),
        port.to_string(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        clients.to_string(),
        "-T".into(),
        seconds.to_string(),
    ]);
    if let Some(rate) = rate {
        args.extend(["-R".into(), rate.to_string()]);
    }
    args.push(DB.into());
    args
}

/// One pgbench run. `baseline` is the pid of the proxy on `port` whose CPU
/// time is read from `/proc` (pgbouncer, haproxy).
#[allow(clippy::too_many_arguments)]
fn pgbench(
    paths: &Paths,
    via: &str,
    port: u16,
    baseline: Option<u32>,
    clients: u32,
    mode: &str,
    seconds: u32,
    pin: bool,
    rate: Option<u32>,
) -> anyhow::Result<Sample> {
    let mut args: Vec<String> = Vec::new();
    if pin {
        args.extend(["taskset", "-c", "0"].map(String::from));
    }
    if via == "hoop" {
        args.push(paths.hoop.display().to_string());
        args.extend(["exec", "--config"].map(String::from));
        args.push(paths.config.display().to_string());
        args.push("--".into());
    }
    args.extend(pgbench_select_args(port, clients, mode, seconds, rate));
    let baseline_before = baseline.map(process_cpu).transpose()?;
    let out = Command::new(&args[0])
        .args(&args[1..])
        .env("RUST_LOG", "info")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("pgbench via {via} failed: {stdout}\n{stderr}");
    }
    let (tps, latency_ms, transactions) = parse_pgbench(&stdout)?;
    let proxy_cpu = match (via, baseline_before, baseline) {
        ("hoop", _, _) => parse_hoop_cpu(&stderr).map(|c| c - paths.hoop_idle_cpu),
        (_, Some(before), Some(pid)) => Some(process_cpu(pid)? - before),
        _ => None,
    };
    Ok(Sample {
        tps,
        latency_ms,
        proxy_cpu,
        transactions,
    })
}

/// A comparison proxy running for the benchmark; stopped on drop.
pub(crate) struct Baseline {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    pub(crate) child: std::process::Child,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bin`'s path, installing Debian's `package` when it is missing; `None`
/// (with a message) when that fails.
pub(crate) fn ensure_installed(bin: &str, package: &str) -> Option<PathBuf> {
    if let Ok(path) = which(bin) {
        return Some(path);
    }
    eprintln!("xtask bench: {bin} not found; installing Debian's {package} for the comparison");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "--no-install-recommends", package];
    // A stale package index is refreshed once before giving up.
    let installed = apt(&install) || (apt(&["update"]) && apt(&install));
    match which(bin) {
        Ok(path) if installed => Some(path),
        _ => {
            eprintln!("xtask bench: cannot install {package}; skipping the {bin} comparison");
            None
        }
    }
}

/// Starts pgbouncer and haproxy (pinned to CPU 0 when `pin`), each when it
/// is installed or can be, and the floor forwarder.
pub(crate) fn start_baselines(dir: &Path, pin: bool) -> anyhow::Result<Vec<Baseline>> {
    let mut started = Vec::new();
    if let Some(bin) = ensure_installed("pgbouncer", "pgbouncer") {
        started.push(start_pgbouncer(&bin, dir, pin)?);
    }
    if let Some(bin) = ensure_installed("haproxy", "haproxy") {
        started.push(start_haproxy(&bin, dir, pin)?);
    }
    // Built optimised, as the other proxies are (`cargo xtask` is a debug build).
    setup::run(setup::cargo().current_dir(workspace_root()).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "xtask",
    ]))?;
    let mut floor = pinned(&workspace_root().join("target/release/xtask"), pin);
    floor.args([
        "floor",
        "--listen",
        &format!("127.0.0.1:{FLOOR_PORT}"),
        "--upstream",
        "127.0.0.1:5432",
    ]);
    started.push(spawn_listening("floor forwarder", FLOOR_PORT, floor)?);
    Ok(started)
}

pub(crate) fn pinned(bin: &Path, pin: bool) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// Spawns a baseline (output discarded) and waits until it accepts on `port`.
pub(crate) fn spawn_listening(
    name: &'static str,
    port: u16,
    mut command: Command,
) -> anyhow::Result<Baseline> {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let mut baseline = Baseline { name, port, child };
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = baseline.child.try_wait()? {
            bail!("{name} exited during start-up: {status}");
        }
        if Instant::now() > deadline {
            bail!("{name} did not start listening on 127.0.0.1:{port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(baseline)
}

fn start_pgbouncer(bin: &Path, dir: &Path, pin: bool) -> anyhow::Result<Baseline> {
    let ini = dir.join("pgbouncer.ini");
    let users = dir.join("users.txt");
    fs::write(&users, "\"postgres\" \"\"\n")?;
    fs::write(
        &ini,
        format!(
            "[databases]\n{DB} = host=127.0.0.1 port=5432 dbname={DB}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {PGBOUNCER_PORT}\n\
             auth_type = trust\nauth_file = {}\npool_mode = session\nmax_client_conn = 100\ndefault_pool_size = 20\n\
             logfile = {}\nunix_socket_dir =\n",
            users.display(),
            dir.join("pgbouncer.log").display()
        ),
    )?;
    // pgbouncer refuses to run as root without -u; use the postgres user.
    let _ = Command::new("chown")
        .args(["-R", "postgres", &dir.display().to_string()])
        .status();
    let mut command = pinned(bin, pin);
    command.args(["-u", "postgres"]).arg(&ini);
    spawn_listening("pgbouncer", PGBOUNCER_PORT, command)
}

/// haproxy in TCP mode with one thread: a forwarder that parses nothing.
fn start_haproxy(bin: &Path, dir: &Path, pin: bool) -> anyhow::Result<Baseline> {
    let cfg = dir.join("haproxy.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n  nbthread 1\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 5m\n  timeout server 5m\nlisten pg\n  bind 127.0.0.1:{HAPROXY_PORT}\n  \
             server pg 127.0.0.1:5432\n"
        ),
    )?;
    let mut command = pinned(bin, pin);
    command.args(["-db", "-f"]).arg(&cfg);
    spawn_listening("haproxy", HAPROXY_PORT, command)
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    let path = output(Command::new("sh").args(["-c", &format!("command -v {name}")]))?;
    if path.trim().is_empty() {
        bail!("{name} not found");
    }
    Ok(PathBuf::from(path.trim()))
}

/// Runs the benchmark and prints a report.
/// A part of the benchmark, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// pgbench select-only: direct, hoop (no policy, the full policy recorded
    /// and not, the tokio loop), pgbouncer, haproxy, the floor forwarder;
    /// unpinned and pinned, each as fast as it goes and at one fixed rate.
    Pgbench,
    /// hoop with upstream TLS (`prefer`) vs without.
    Tls,
    /// 1M-row COPY TO STDOUT, direct vs hoop, and hoop's peak RSS.
    Copy,
    /// hoop with `recording.rows: summary` vs recording off.
    Recording,
    /// Masking throughput.
    Masking,
    /// MySQL: sysbench oltp_point_select direct, through haproxy and
    /// through hoop (no policy, and a masking policy), with the proxies'
    /// CPU per query.
    Mysql,
    /// hoop's relay and writer threads in instructions (callgrind): per
    /// masked row and per transaction of the full policy (`bench_instr.rs`).
    Instructions,
    /// What each proxy asks of the kernel per transaction: system calls,
    /// context switches, TCP segments, and CPU time per thread
    /// (`bench_kernel.rs`).
    Kernel,
}

pub fn run(
    seconds: u32,
    rounds: usize,
    only: Option<Part>,
    compare: &[PathBuf],
    pinned_only: bool,
) -> anyhow::Result<()> {
    let wants = |part: Part| only.is_none_or(|o| o == part);
    let root = workspace_root();
    let tmp = std::env::temp_dir().join(format!("hoop-bench-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let config = tmp.join("hoop.yaml");
    fs::write(
        &config,
        format!(
            "intercept:\n  ports: [5432, {PGBOUNCER_PORT}]\nadmin:\n  listen: 127.0.0.1:0\ntls:\n  upstream: disable\nrecording:\n  enabled: false\n  dir: {}\n",
            tmp.join("rec").display()
        ),
    )?;
    let psql = |sql: &str, db: &str| {
        output(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-XAtqc",
            sql,
        ]))
    };
    if psql(
        &format!("SELECT 1 FROM pg_database WHERE datname = '{DB}'"),
        "postgres",
    )?
    .trim()
        != "1"
    {
        psql(&format!("CREATE DATABASE {DB}"), "postgres")?;
        setup::run(Command::new("pgbench").args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-i",
            "-s",
            "10",
            "-q",
            DB,
        ]))?;
    }
    let hoop = root.join("target/release/hoop");
    let tls_config = tmp.join("hoop-tls.yaml");
    fs::write(
        &tls_config,
        fs::read_to_string(&config)?.replace("upstream: disable", "upstream: prefer"),
    )?;
    // The same, with sessions on tokio instead of hoop's relay loop.
    let tokio_config = tmp.join("hoop-tokio.yaml");
    fs::write(
        &tokio_config,
        format!(
            "{}proxy:\n  event_loop: tokio\n",
            fs::read_to_string(&config)?
        ),
    )?;
    let paths = Paths {
        hoop_idle_cpu: hoop_idle_cpu(&hoop, &config)?,
        hoop,
        config: config.clone(),
    };
    let tokio_paths = paths.with_config(tokio_config);
    // The full policy of issue #22 (`examples/full-policy.yaml`: a column
    // rule on a table pgbench never reads, two detectors, deny and hold
    // rules, `recording.rows: summary`), recording into `tmp`.
    let full_config = tmp.join("hoop-full.yaml");
    fs::write(
        &full_config,
        fs::read_to_string(root.join("examples/full-policy.yaml"))?.replace(
            "dir: ./recordings",
            &format!("dir: {}", tmp.join("rec-full").display()),
        ),
    )?;
    let full_paths = Paths {
        hoop_idle_cpu: hoop_idle_cpu(&paths.hoop, &full_config)?,
        hoop: paths.hoop.clone(),
        config: full_config,
    };
    // The same policy with recording off: the recording's share of the
    // full policy's cost, in every run.
    let unrecorded_config = tmp.join("hoop-full-unrecorded.yaml");
    let full_text = fs::read_to_string(&full_paths.config)?;
    let unrecorded_text = full_text.replace("  rows: summary\n", "  enabled: false\n");
    if unrecorded_text == full_text {
        bail!("examples/full-policy.yaml no longer has `rows: summary` under `recording:`");
    }
    fs::write(&unrecorded_config, unrecorded_text)?;
    let unrecorded_paths = Paths {
        hoop_idle_cpu: hoop_idle_cpu(&paths.hoop, &unrecorded_config)?,
        hoop: paths.hoop.clone(),
        config: unrecorded_config,
    };
    // Other hoop binaries (say, the last release's), on the same paths.
    let compare_paths = compare
        .iter()
        .map(|bin| -> anyhow::Result<Paths> {
            Ok(Paths {
                hoop_idle_cpu: hoop_idle_cpu(bin, &config)?,
                hoop: bin.to_owned(),
                config: config.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The pgbench part's hoop paths, each with its report label.
    let mut hoops: Vec<(String, &Paths)> = vec![
        ("hoop".into(), &paths),
        ("hoop, full policy".into(), &full_paths),
        ("hoop, full policy, not recorded".into(), &unrecorded_paths),
        ("hoop, tokio loop".into(), &tokio_paths),
    ];
    for (bin, p) in compare.iter().zip(&compare_paths) {
        hoops.push((format!("hoop, --compare {}", short_name(bin)), p));
    }
    let postmaster = postmaster_pid(&psql)?;
    let mut baselines: Vec<Baseline> = Vec::new();

    let mut report = String::new();
    writeln!(
        report,
        "pgbench -S, {seconds}s per run, median of {rounds} interleaved rounds; \
         hoop start-up CPU {:.0} ms subtracted",
        paths.hoop_idle_cpu.total() * 1e3
    )?;
    writeln!(
        report,
        "{:<60} {:>10} {:>7} {:>9} {:>13} {:>8} {:>12}",
        "case", "TPS", "ratio", "lat ms", "proxy µs/txn", "user µs", "x pgbouncer"
    )?;
    let result = (|| -> anyhow::Result<()> {
        for pin in [false, true] {
            if !wants(Part::Pgbench) {
                break;
            }
            if pinned_only && !pin {
                continue;
            }
            // Pinned runs: PostgreSQL's new backends and pgbouncer on CPU 0 too.
            let _affinity = if pin {
                Some(Affinity::pin(postmaster)?)
            } else {
                None
            };
            baselines.clear();
            baselines = start_baselines(&tmp, pin)?;
            for clients in [1u32, 8] {
                for mode in ["simple", "prepared"] {
                    // Direct, the hoop paths, then the baselines. Each round
                    // starts one path later, so that no path always runs
                    // right after the same one (a run leaves PostgreSQL busy
                    // for a moment with its backends exiting).
                    let paths_n = 1 + hoops.len() + baselines.len();
                    let run = |i: usize, rate: Option<u32>| -> anyhow::Result<Sample> {
                        let (p, via, port, pid) = if i == 0 {
                            (&paths, "direct", 5432, None)
                        } else if let Some((_, p)) = hoops.get(i - 1) {
                            (*p, "hoop", 5432, None)
                        } else {
                            let b = &baselines[i - 1 - hoops.len()];
                            (&paths, b.name, b.port, Some(b.child.id()))
                        };
                        let sample = pgbench(p, via, port, pid, clients, mode, seconds, pin, rate)?;
                        // The full policy's recordings are not kept (disk).
                        let _ = fs::remove_dir_all(tmp.join("rec-full"));
                        Ok(sample)
                    };
                    // Every path's label, in `run`'s order.
                    let labels: Vec<&str> = std::iter::once("direct")
                        .chain(hoops.iter().map(|(l, _)| l.as_str()))
                        .chain(baselines.iter().map(|b| b.name))
                        .collect();
                    let interleaved = |rate: Option<u32>| -> anyhow::Result<Vec<Vec<Sample>>> {
                        let mut samples: Vec<Vec<Sample>> =
                            (0..paths_n).map(|_| Vec::new()).collect();
                        for round in 0..rounds {
                            for k in 0..paths_n {
                                let i = (round + k) % paths_n;
                                samples[i].push(run(i, rate)?);
                            }
                        }
                        Ok(samples)
                    };
                    let label = format!("{}{clients}c {mode}", if pin { "pinned " } else { "" });
                    let samples = interleaved(None)?;
                    rows(&mut report, &label, &labels, &samples)?;
                    // The same paths again at one fixed rate, below the
                    // slowest one's: unlimited runs at different throughputs
                    // do not compare in CPU per transaction (a proxy that
                    // runs faster batches more per wake-up), runs at one
                    // rate do.
                    let slowest = samples.iter().map(|v| tps(v)).fold(f64::INFINITY, f64::min);
                    let rate = fixed_rate(slowest);
                    let samples = interleaved(Some(rate))?;
                    rows(
                        &mut report,
                        &format!("{label} at {rate}/s"),
                        &labels,
                        &samples,
                    )?;
                    eprint!("{report}");
                    report.clear();
                }
            }
        }
        // The later parts start baselines of their own, on the same ports:
        // the pinned ones above stop first.
        baselines.clear();
        if wants(Part::Tls) {
            tls_bench(&paths, &tls_config, seconds, rounds)?;
        }
        if wants(Part::Copy) {
            copy_bench(&paths)?;
        }
        if wants(Part::Recording) {
            recording_bench(&paths, &tmp, seconds, rounds)?;
        }
        if wants(Part::Masking) {
            masking_bench(&paths, &tmp, rounds)?;
        }
        if wants(Part::Mysql) {
            crate::bench_mysql::run(&paths.hoop, &tmp, seconds, rounds)?;
        }
        if wants(Part::Kernel) {
            crate::bench_kernel::run(
                &paths.hoop,
                &paths.config,
                &full_paths.config,
                &tmp,
                seconds,
                postmaster,
            )?;
        }
        if wants(Part::Instructions) {
            let (masked, plain) = masking_setup(&tmp)?;
            crate::bench_instr::run(
                &paths.hoop,
                compare,
                &masked,
                &plain,
                &full_paths.config,
                &tmp,
            )?;
        }
        Ok(())
    })();
    drop(baselines);
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// A `--compare` binary's row label: its path's last two components
/// (`wt-before/hoop`), short enough for the table.
pub(crate) fn short_name(bin: &Path) -> String {
    let mut parts: Vec<_> = bin
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.reverse();
    parts.join("/")
}

fn tps(v: &[Sample]) -> f64 {
    median(v.iter().map(|s| s.tps).collect())
}

/// A path's median proxy CPU per transaction in µs (`part` of it), or
/// `None` for direct, which has no proxy: the median of each run's own
/// figure, so the user part is the median user time (not a share of the
/// median total).
fn per_txn(v: &[Sample], part: fn(Cpu) -> f64) -> Option<f64> {
    let v: Vec<f64> = v
        .iter()
        .filter_map(|s| s.proxy_cpu.map(|c| part(c) * 1e6 / s.transactions.max(1.0)))
        .collect();
    (!v.is_empty()).then(|| median(v))
}

/// A report cell: `x` with `digits` decimals, or empty when there is none.
fn shown(x: Option<f64>, digits: usize) -> String {
    x.map_or(String::new(), |x| format!("{x:.digits$}"))
}

/// One path's report line: TPS, its ratio to `base` (direct's TPS),
/// latency, proxy CPU per transaction, and that CPU as a multiple of
/// `pgbouncer`'s in the same case (if it ran).
fn row(
    report: &mut String,
    label: &str,
    v: &[Sample],
    base: f64,
    pgbouncer: Option<f64>,
) -> anyhow::Result<()> {
    let lat = median(v.iter().map(|s| s.latency_ms).collect());
    let total = per_txn(v, Cpu::total);
    let to_pgbouncer = total.zip(pgbouncer).map(|(t, p)| t / p);
    writeln!(
        report,
        "{label:<60} {:>10.0} {:>7.2} {lat:>9.3} {:>13} {:>8} {:>12}",
        tps(v),
        tps(v) / base,
        shown(total, 1),
        shown(per_txn(v, |c| c.user), 1),
        shown(to_pgbouncer, 2),
    )?;
    Ok(())
}

/// One case's report lines, a path's samples under each of `labels`,
/// with TPS as a ratio to the first (direct) and CPU per transaction as a
/// multiple of pgbouncer's (when it ran).
fn rows(
    report: &mut String,
    label: &str,
    labels: &[&str],
    samples: &[Vec<Sample>],
) -> anyhow::Result<()> {
    let base = tps(&samples[0]);
    let pgbouncer = labels
        .iter()
        .position(|l| *l == "pgbouncer")
        .and_then(|i| per_txn(&samples[i], Cpu::total));
    for (path, v) in labels.iter().zip(samples) {
        row(report, &format!("{label} {path}"), v, base, pgbouncer)?;
    }
    Ok(())
}

/// A rate every path sustains: 60% of the slowest one's transactions per
/// second, rounded down to a hundred, at least 100 per second.
pub(crate) fn fixed_rate(slowest_tps: f64) -> u32 {
    let rate = if slowest_tps.is_finite() {
        slowest_tps * 0.6
    } else {
        0.0
    };
    ((rate / 100.0).floor() as u32 * 100).max(100)
}

/// The postmaster's pid, from its data directory's `postmaster.pid`.
fn postmaster_pid(psql: &dyn Fn(&str, &str) -> anyhow::Result<String>) -> anyhow::Result<u32> {
    let dir = psql("SHOW data_directory", "postgres")?;
    let pidfile = Path::new(dir.trim()).join("postmaster.pid");
    let text =
        fs::read_to_string(&pidfile).with_context(|| format!("reading {}", pidfile.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no pid in {}", pidfile.display()))
}

/// A server process pinned to CPU 0 (the postmaster, whose new backends
/// inherit it; or every thread of mariadbd, whose pooled connection threads
/// would not); the old affinity is restored on drop.
pub(crate) struct Affinity {
    pid: u32,
    mask: String,
    all_threads: bool,
}

impl Affinity {
    pub(crate) fn pin(pid: u32) -> anyhow::Result<Self> {
        Self::pin_threads(pid, false)
    }

    /// `all_threads`: every existing thread of `pid` (`taskset -a`), not
    /// only its main thread.
    pub(crate) fn pin_threads(pid: u32, all_threads: bool) -> anyhow::Result<Self> {
        let shown = output(Command::new("taskset").args(["-p", &pid.to_string()]))?;
        let mask = shown
            .rsplit(':')
            .next()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .context("unparsable taskset output")?
            .to_owned();
        let mut command = Command::new("taskset");
        if all_threads {
            command.arg("-a");
        }
        output(command.args(["-p", "-c", "0", &pid.to_string()]))?;
        Ok(Self {
            pid,
            mask,
            all_threads,
        })
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        let mut command = Command::new("taskset");
        if self.all_threads {
            command.arg("-a");
        }
        let _ = command
            .args(["-p", &self.mask, &self.pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

/// hoop's default upstream TLS (`prefer`: the server leg is encrypted)
/// against `disable`, 8 clients, prepared.
fn tls_bench(paths: &Paths, tls_config: &Path, seconds: u32, rounds: usize) -> anyhow::Result<()> {
    let tls = paths.with_config(tls_config.to_owned());
    let (mut plain, mut encrypted) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(pgbench(
            paths, "hoop", 5432, None, 8, "prepared", seconds, false, None,
        )?);
        encrypted.push(pgbench(
            &tls, "hoop", 5432, None, 8, "prepared", seconds, false, None,
        )?);
    }
    let mut report = String::new();
    let base = tps(&plain);
    row(
        &mut report,
        "8c prepared hoop tls disable",
        &plain,
        base,
        None,
    )?;
    row(
        &mut report,
        "8c prepared hoop tls prefer",
        &encrypted,
        base,
        None,
    )?;
    eprint!("{report}");
    Ok(())
}

/// 1M rows × 3 columns as COPY TO STDOUT, direct vs. through hoop.
fn copy_bench(paths: &Paths) -> anyhow::Result<()> {
    let sql = "COPY (SELECT g, md5(g::text), g * 2 FROM generate_series(1, 1000000) g) TO STDOUT";
    let count = "| wc -l";
    let direct_cmd = format!("psql -h 127.0.0.1 -U postgres -d {DB} -XAtqc '{sql}' {count}");
    let t = Instant::now();
    let direct = output(Command::new("sh").args(["-c", &direct_cmd]))?;
    let direct_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = Command::new(&paths.hoop)
        .args(["exec", "--config"])
        .arg(&paths.config)
        .args(["--", "sh", "-c", &direct_cmd])
        .env("RUST_LOG", "info")
        .output()?;
    let hoop_s = t.elapsed().as_secs_f64();
    let rows = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || rows.trim() != direct.trim() || direct.trim() != "1000000" {
        bail!(
            "COPY through hoop: {} rows (direct {}): {}",
            rows.trim(),
            direct.trim(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss = parse_hoop_rss_kib(&String::from_utf8_lossy(&out.stderr)).unwrap_or(f64::NAN);
    eprintln!(
        "COPY 1M rows x 3 cols: direct {direct_s:.2}s, hoop {hoop_s:.2}s (ratio {:.2}), hoop peak RSS {:.1} MiB",
        hoop_s / direct_s,
        rss / 1024.0
    );
    Ok(())
}

fn write_config(path: &Path, tmp: &Path, recording: &str, policy: &str) -> anyhow::Result<()> {
    fs::write(
        path,
        format!(
            "intercept:\n  ports: [5432]\nadmin:\n  listen: 127.0.0.1:0\ntls:\n  upstream: disable\nrecording:\n  dir: {}\n{recording}{policy}",
            tmp.join("rec").display()
        ),
    )?;
    Ok(())
}

/// pgbench -S (prepared, 8 clients) through hoop with `recording.rows:
/// summary` vs. recording off, interleaved, medians.
fn recording_bench(paths: &Paths, tmp: &Path, seconds: u32, rounds: usize) -> anyhow::Result<()> {
    let on = tmp.join("rec-on.yaml");
    let off = tmp.join("rec-off.yaml");
    write_config(&on, tmp, "  rows: summary\n", "")?;
    write_config(&off, tmp, "  enabled: false\n", "")?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..rounds {
        for (config, out) in [(&on, &mut with), (&off, &mut without)] {
            let p = paths.with_config(config.clone());
            out.push(pgbench(
                &p, "hoop", 5432, None, 8, "prepared", seconds, false, None,
            )?);
        }
    }
    // hoop's CPU per transaction, all threads (the recorder's writer too).
    let cpu = |v: &[Sample]| {
        median(
            v.iter()
                .filter_map(|s| Some(s.proxy_cpu?.total() / s.transactions * 1e6))
                .collect(),
        )
    };
    let (w, wo) = (tps(&with), tps(&without));
    eprintln!(
        "recording (rows: summary) vs off, pgbench -S -M prepared -c 8: {w:.0} vs {wo:.0} TPS, \
         ratio {:.3}; hoop CPU {:.1} vs {:.1} µs/txn",
        w / wo,
        cpu(&with),
        cpu(&without),
    );
    Ok(())
}

/// 1M rows (two column-masked columns, one detector) read with psql:
/// directly, through hoop with no policy (plain relaying), and through hoop
/// with that policy. Wall time, throughput in MB of result text, and hoop's
/// CPU per MB (less its idle start-up).
/// How a masking-bench case reaches the server.
enum Via<'a> {
    Direct,
    Hoop(&'a PathBuf),
    Baseline(&'a Baseline),
}

/// The masking bench's table (created when missing) and its two
/// configurations: `(masked, plain)`.
fn masking_setup(tmp: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let psql = |sql: &str| {
        output(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            DB,
            "-XAtqc",
            sql,
        ]))
    };
    if psql("SELECT count(*) FROM pg_tables WHERE tablename = 'hoop_bench_people'")?.trim() != "1" {
        psql(
            "CREATE TABLE hoop_bench_people AS SELECT g AS id, \
             lpad((g % 899 + 100)::text, 3, '0') || '-' || lpad((g % 99 + 1)::text, 2, '0') || '-' || lpad((g % 9999 + 1)::text, 4, '0') AS ssn, \
             'user' || g || '@example.com' AS email, '4111 1111 1111 1111' AS card, 'note ' || g AS note \
             FROM generate_series(1, 1000000) g",
        )?;
    }
    let masked = tmp.join("mask.yaml");
    let plain = tmp.join("plain.yaml");
    let policy = "policy:\n  mask:\n    - name: ssn\n      columns: [hoop_bench_people.ssn]\n      strategy: partial\n      keep_last: 4\n    - name: card\n      columns: [hoop_bench_people.card]\n      strategy: redact\n    - name: email\n      detect: [email]\n      strategy: redact\n";
    write_config(&masked, tmp, "  enabled: false\n", policy)?;
    write_config(&plain, tmp, "  enabled: false\n", "")?;
    Ok((masked, plain))
}

fn masking_bench(paths: &Paths, tmp: &Path, rounds: usize) -> anyhow::Result<()> {
    let (masked, plain) = masking_setup(tmp)?;
    // pgbouncer, haproxy and the floor forwarder relay the same result, for what
    // relaying a bulk result costs any proxy on this machine (its kernel
    // share moves from day to day; the ratio within one run does not).
    let baselines = start_baselines(tmp, false)?;
    // Rows and bytes of the result as psql prints it (unaligned), counted
    // by awk so that nothing but the count crosses the pipe.
    let query = |port: u16| {
        format!(
            "psql -h 127.0.0.1 -p {port} -U postgres -d {DB} -XAtqc 'SELECT id, ssn, email, card, note FROM hoop_bench_people' \
             | awk '{{b += length($0) + 1}} END {{print NR, b}}'"
        )
    };
    let mut cases: Vec<(String, Via)> = vec![
        ("direct".into(), Via::Direct),
        ("hoop, no policy (relaying)".into(), Via::Hoop(&plain)),
    ];
    for b in &baselines {
        cases.push((format!("{} (relaying)", b.name), Via::Baseline(b)));
    }
    cases.push((
        "hoop, 2 masked columns + email detector".into(),
        Via::Hoop(&masked),
    ));
    // One round to warm caches (PostgreSQL's, the page cache's), then
    // `rounds` interleaved rounds, reported as medians: one 1M-row read
    // moves by a quarter from one round to the next on this machine.
    let mut samples: Vec<Vec<MaskingSample>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..=rounds {
        for ((label, via), kept) in cases.iter().zip(&mut samples) {
            let (mut command, port, pid) = match via {
                Via::Direct => (Command::new("sh"), 5432, None),
                Via::Hoop(config) => {
                    let mut c = Command::new(&paths.hoop);
                    c.args(["exec", "--config"]).arg(config).args(["--", "sh"]);
                    (c, 5432, None)
                }
                Via::Baseline(b) => (Command::new("sh"), b.port, Some(b.child.id())),
            };
            let before = pid.map(process_cpu).transpose()?;
            let t = Instant::now();
            let out = command
                .args(["-c", &query(port)])
                .env("RUST_LOG", "info")
                .output()?;
            let secs = t.elapsed().as_secs_f64();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let mut counts = stdout.split_whitespace();
            let rows = counts.next().unwrap_or_default().to_owned();
            let bytes: f64 = counts
                .next()
                .and_then(|b| b.parse().ok())
                .unwrap_or(f64::NAN);
            if rows != "1000000" {
                bail!(
                    "{label}: {rows} rows: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let cpu = match (via, pid, before) {
                (Via::Hoop(_), _, _) => parse_hoop_cpu(&String::from_utf8_lossy(&out.stderr))
                    .map(|c| (c - paths.hoop_idle_cpu).total()),
                (Via::Baseline(_), Some(pid), Some(before)) => {
                    Some((process_cpu(pid)? - before).total())
                }
                _ => None,
            };
            if round > 0 {
                kept.push(MaskingSample {
                    secs,
                    mb: bytes / 1e6,
                    cpu,
                });
            }
        }
    }
    let report: Vec<(&str, MaskingMedians)> = cases
        .iter()
        .zip(&samples)
        .map(|((label, _), s)| (label.as_str(), MaskingMedians::of(s)))
        .collect();
    let direct_s = report[0].1.secs;
    // Every proxy's CPU per MB against pgbouncer's relaying of the same
    // result in the same run: the day's speed cancels out of the ratio.
    let pgbouncer_per_mb = report
        .iter()
        .find(|(label, _)| label.starts_with("pgbouncer"))
        .and_then(|(_, m)| m.cpu_per_mb);
    eprintln!(
        "1M rows x 5 columns (SELECT through psql; MB of result text as psql prints it); \
         medians of {rounds} interleaved rounds after one to warm up"
    );
    eprintln!(
        "{:<42} {:>8} {:>7} {:>8} {:>12} {:>10} {:>13}",
        "case", "wall s", "ratio", "MB/s", "proxy CPU s", "ms/MB", "x pgbouncer"
    );
    for (label, m) in &report {
        let cpu_s = shown(m.cpu, 3);
        let per_mb = shown(m.cpu_per_mb, 2);
        let to_pgbouncer = shown(m.cpu_per_mb.zip(pgbouncer_per_mb).map(|(c, p)| c / p), 2);
        eprintln!(
            "{label:<42} {:>8.2} {:>7.2} {:>8.1} {cpu_s:>12} {per_mb:>10} {to_pgbouncer:>13}",
            m.secs,
            m.secs / direct_s,
            m.mb / m.secs
        );
    }
    Ok(())
}

/// One read of the masking part's result through one path.
struct MaskingSample {
    secs: f64,
    mb: f64,
    /// The proxy's CPU seconds (none for direct).
    cpu: Option<f64>,
}

/// The medians of one path's [`MaskingSample`]s, each taken on its own.
struct MaskingMedians {
    secs: f64,
    mb: f64,
    cpu: Option<f64>,
    /// Milliseconds of proxy CPU per MB: the median of the rounds' own ratios.
    cpu_per_mb: Option<f64>,
}

impl MaskingMedians {
    fn of(samples: &[MaskingSample]) -> Self {
        let cpus: Option<Vec<f64>> = samples.iter().map(|s| s.cpu).collect();
        Self {
            secs: median(samples.iter().map(|s| s.secs).collect()),
            mb: median(samples.iter().map(|s| s.mb).collect()),
            cpu_per_mb: cpus
                .as_ref()
                .map(|c| median(c.iter().zip(samples).map(|(c, s)| c * 1e3 / s.mb).collect())),
            cpu: cpus.map(median),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// pgbench 15's output of a run at a fixed rate (`-R 500`), taken from
    /// this machine.
    const RATE_LIMITED: &str = "pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: simple
number of clients: 2
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 986
number of failed transactions: 0 (0.000%)
latency average = 0.538 ms
latency stddev = 0.823 ms
rate limit schedule lag: avg 0.205 (max 5.959) ms
initial connection time = 30.347 ms
tps = 499.719731 (without initial connection time)
";

    #[test]
    fn every_paths_cpu_is_also_shown_as_a_multiple_of_pgbouncers() {
        let run = |tps: f64, cpu: Option<(f64, f64)>| Sample {
            tps,
            latency_ms: 1.0,
            proxy_cpu: cpu.map(|(user, system)| Cpu { user, system }),
            transactions: 100_000.0,
        };
        // 10,000 transactions a second for 10 s; CPU seconds over 100,000
        // transactions: 1.2 s is 12 µs each, 1.0 s is 10 µs.
        let samples = vec![
            vec![run(10_000.0, None)],
            vec![run(9_000.0, Some((0.2, 1.0)))],
            vec![run(9_500.0, Some((0.1, 0.9)))],
        ];
        let mut report = String::new();
        rows(
            &mut report,
            "8c simple",
            &["direct", "hoop", "pgbouncer"],
            &samples,
        )
        .unwrap();
        let lines: Vec<Vec<&str>> = report
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        // direct: no proxy, so nothing after its latency.
        assert_eq!(lines[0].last(), Some(&"1.000"), "{report}");
        assert_eq!(
            lines[1][lines[1].len() - 3..],
            ["12.0", "2.0", "1.20"],
            "{report}"
        );
        assert_eq!(
            lines[2][lines[2].len() - 3..],
            ["10.0", "1.0", "1.00"],
            "{report}"
        );
        // Without pgbouncer in the case, the column stays empty.
        let mut report = String::new();
        rows(&mut report, "8c simple", &["direct", "hoop"], &samples[..2]).unwrap();
        assert!(
            report.lines().nth(1).unwrap().trim_end().ends_with("2.0"),
            "{report}"
        );
    }

    #[test]
    fn masking_medians_take_each_rounds_own_cpu_per_mb() {
        let sample = |secs, mb, cpu| MaskingSample { secs, mb, cpu };
        // The per-MB figure is the median of the rounds' ratios (10, 30,
        // 40 ms per MB: 30), not the ratio of the medians (0.2 s / 10 MB: 20).
        let m = MaskingMedians::of(&[
            sample(1.0, 10.0, Some(0.1)),
            sample(3.0, 20.0, Some(0.6)),
            sample(2.0, 5.0, Some(0.2)),
        ]);
        assert!((m.secs - 2.0).abs() < 1e-9);
        assert!((m.mb - 10.0).abs() < 1e-9);
        assert!((m.cpu.unwrap() - 0.2).abs() < 1e-9);
        assert!((m.cpu_per_mb.unwrap() - 30.0).abs() < 1e-9);
        // Direct has no proxy, so no CPU figure at all.
        let direct = MaskingMedians::of(&[sample(1.0, 10.0, None), sample(1.5, 10.0, None)]);
        assert!(direct.cpu.is_none() && direct.cpu_per_mb.is_none());
    }

    #[test]
    fn a_rate_limited_run_is_parsed() {
        let (tps, latency, transactions) = parse_pgbench(RATE_LIMITED).unwrap();
        assert!((tps - 499.719_731).abs() < 1e-6);
        assert!((latency - 0.538).abs() < 1e-9);
        assert!((transactions - 986.0).abs() < 1e-9);
    }

    #[test]
    fn the_fixed_rate_is_below_every_paths_throughput() {
        // 60% of 12,597 per second is 7,558.2.
        assert_eq!(fixed_rate(12_597.0), 7_500);
        assert!(f64::from(fixed_rate(12_597.0)) < 12_597.0);
        // Never zero, which pgbench would refuse.
        assert_eq!(fixed_rate(2.5), 100);
        assert_eq!(fixed_rate(f64::NAN), 100);
        // The arguments carry it.
        let args = pgbench_select_args(6439, 8, "prepared", 4, Some(7_500));
        let at = args.iter().position(|a| a == "-R").unwrap();
        assert_eq!(args[at + 1], "7500");
    }
}
