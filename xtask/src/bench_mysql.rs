//! `cargo xtask bench --only mysql`: what hoop costs a MySQL client.
//!
//! sysbench `oltp_point_select` (server-side prepared statements, its
//! default `--db-ps-mode=auto`) with 8 threads against four paths
//! interleaved round by round: direct, through haproxy (TCP mode, one
//! thread), through `hoop exec` without a policy, and through `hoop exec`
//! with a masking policy on the selected column; unpinned, then pinned
//! (sysbench, the proxy and every mariadbd thread on CPU 0, as `bench.rs`
//! pins pgbench, the proxies and the postmaster; haproxy is restarted
//! pinned and mariadbd's affinity restored afterwards). Proxy CPU per
//! query: the proxy process's CPU while sysbench runs, from its
//! `/proc/PID/stat` just before and after (for hoop, read by the shell that
//! `hoop exec` runs sysbench in), divided by sysbench's query count. hoop's
//! whole run (its exit rusage less an idle `hoop exec -- true`, so start-up
//! and shutdown the idle run does not match included) is shown beside it.
//! Medians of `rounds`.
//!
//! Then a 1,000,000-row result (`seq_1_to_1000000`, the `mariadb` CLI with
//! `--quick`), direct, through hoop without a policy and through hoop with
//! the masking policy (which masks no column of this result), interleaved
//! for `rounds` rounds: the query's own wall time (taken inside the shell
//! that runs the client, so `hoop exec`'s start-up is not in it), the
//! ratios to direct, hoop's CPU (less its idle start-up) and its peak RSS.

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::bench::{
    Affinity, Baseline, Cpu, ensure_installed, hoop_idle_cpu, median, parse_hoop_cpu,
    parse_hoop_rss_kib, pinned, process_cpu, spawn_listening, stat_cpu,
};

const DB: &str = "hoop_bench_my";
const HAPROXY_PORT: u16 = 6442;
const THREADS: u32 = 8;

struct Sample {
    qps: f64,
    queries: f64,
    latency_ms: f64,
    /// The proxy process's CPU while sysbench ran (`/proc/PID/stat` just
    /// before and just after it; for hoop, read by the shell `hoop exec`
    /// runs sysbench in, whose parent hoop is).
    cpu: Option<Cpu>,
    /// hoop's whole run: its exit rusage less an idle `hoop exec -- true`
    /// (start-up and shutdown that the idle run does not match included).
    whole: Option<Cpu>,
}

/// Runs sysbench (`"$@"`) between two reads of the parent's (hoop's)
/// `/proc/PID/stat`.
const AROUND: &str = "echo \"hoop_stat_before=$(cat /proc/$PPID/stat)\"; sysbench \"$@\"; rc=$?; \
    echo \"hoop_stat_after=$(cat /proc/$PPID/stat)\"; exit $rc";

/// hoop's CPU between the two reads [`AROUND`] printed.
fn hoop_window_cpu(stdout: &str) -> anyhow::Result<Cpu> {
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .with_context(|| format!("sysbench's shell printed no {prefix}"))
    };
    Ok(stat_cpu(line("hoop_stat_after=")?)? - stat_cpu(line("hoop_stat_before=")?)?)
}

fn mariadb(sql: &str) -> anyhow::Result<String> {
    crate::setup::output(Command::new("mariadb").args([
        "-h",
        "127.0.0.1",
        "--protocol=TCP",
        "-uroot",
        "-N",
        "-B",
        "-e",
        sql,
    ]))
}

fn sysbench_args(port: u16, seconds: u32, command: &str) -> Vec<String> {
    [
        "oltp_point_select",
        "--mysql-host=127.0.0.1",
        &format!("--mysql-port={port}"),
        "--mysql-user=root",
        &format!("--mysql-db={DB}"),
        "--tables=1",
        "--table-size=10000",
        &format!("--threads={THREADS}"),
        &format!("--time={seconds}"),
        "--report-interval=0",
        command,
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// `queries: N (X per sec.)` and the average latency from sysbench.
fn parse_sysbench(stdout: &str) -> anyhow::Result<(f64, f64, f64)> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("queries:"))
        .context("sysbench printed no query count")?;
    let queries: f64 = line.split_whitespace().nth(1).context("queries")?.parse()?;
    let qps: f64 = line
        .split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("qps")?
        .parse()?;
    let latency: f64 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("avg:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("latency")?
        .parse()?;
    Ok((qps, queries, latency))
}

fn run_lane(
    hoop: &Path,
    config: Option<&Path>,
    idle: Cpu,
    port: u16,
    baseline: Option<u32>,
    seconds: u32,
    pin: bool,
) -> anyhow::Result<Sample> {
    let args = sysbench_args(port, seconds, "run");
    let before = baseline.map(process_cpu).transpose()?;
    let out = match config {
        Some(config) => pinned(hoop, pin)
            .args(["exec", "--config"])
            .arg(config)
            .args(["--", "sh", "-c", AROUND, "sh"])
            .args(&args)
            .env("RUST_LOG", "info")
            .output()?,
        None => pinned(Path::new("sysbench"), pin).args(&args).output()?,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("sysbench failed:\n{stdout}\n{stderr}");
    }
    let (qps, queries, latency_ms) = parse_sysbench(&stdout)?;
    let cpu = match (config, baseline) {
        (Some(_), _) => Some(hoop_window_cpu(&stdout)?),
        (None, Some(pid)) => Some(process_cpu(pid)? - before.unwrap_or_default()),
        (None, None) => None,
    };
    Ok(Sample {
        qps,
        queries,
        latency_ms,
        cpu,
        whole: config.and_then(|_| parse_hoop_cpu(&stderr).map(|c| c - idle)),
    })
}

fn start_haproxy(bin: &Path, dir: &Path, pin: bool) -> anyhow::Result<Baseline> {
    let cfg = dir.join("haproxy-mysql.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n  nbthread 1\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 5m\n  timeout server 5m\nlisten my\n  bind 127.0.0.1:{HAPROXY_PORT}\n  \
             server my 127.0.0.1:3306\n"
        ),
    )?;
    let mut command = pinned(bin, pin);
    command.args(["-db", "-f"]).arg(&cfg);
    spawn_listening("haproxy", HAPROXY_PORT, command)
}

/// Runs the MySQL benchmark and prints its report.
pub fn run(hoop: &Path, tmp: &Path, seconds: u32, rounds: usize) -> anyhow::Result<()> {
    ensure_installed("sysbench", "sysbench")
        .context("sysbench is needed for the MySQL benchmark")?;
    mariadb(&format!("CREATE DATABASE IF NOT EXISTS {DB}"))?;
    if mariadb(&format!(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{DB}' AND TABLE_NAME = 'sbtest1'"
    ))?
    .trim()
        != "1"
    {
        crate::setup::run(Command::new("sysbench").args(sysbench_args(3306, 1, "prepare")))?;
    }
    let plain = tmp.join("hoop-mysql.yaml");
    fs::write(
        &plain,
        format!(
            "intercept:\n  ports: [3306]\nadmin:\n  listen: 127.0.0.1:0\ntls:\n  upstream: disable\nrecording:\n  enabled: false\n  dir: {}\n",
            tmp.join("rec").display()
        ),
    )?;
    let masked = tmp.join("hoop-mysql-masked.yaml");
    fs::write(
        &masked,
        format!(
            "{}policy:\n  mask:\n    - columns: [sbtest1.c]\n      strategy: partial\n      keep_last: 4\n",
            fs::read_to_string(&plain)?
        ),
    )?;
    let idle = hoop_idle_cpu(hoop, &plain)?;
    let haproxy_bin = ensure_installed("haproxy", "haproxy");
    let mut report = String::new();
    for pin in [false, true] {
        // mariadbd on CPU 0 while the pinned lanes run (restored on drop).
        let _affinity = if pin {
            Some(Affinity::pin_threads(mariadbd_pid()?, true)?)
        } else {
            None
        };
        let haproxy = haproxy_bin
            .as_ref()
            .map(|bin| start_haproxy(bin, tmp, pin))
            .transpose()?;
        let haproxy_pid = haproxy.as_ref().map(|b: &Baseline| b.child.id());
        let lanes: Vec<(&str, Option<&Path>, u16, Option<u32>)> = {
            let mut l = vec![("direct", None, 3306, None)];
            if let Some(pid) = haproxy_pid {
                l.push(("haproxy (tcp)", None, HAPROXY_PORT, Some(pid)));
            }
            l.push(("hoop, no policy", Some(plain.as_path()), 3306, None));
            l.push(("hoop, masking policy", Some(masked.as_path()), 3306, None));
            l
        };
        let mut samples: Vec<Vec<Sample>> = lanes.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for k in 0..lanes.len() {
                let i = (k + round) % lanes.len();
                let (name, config, port, pid) = lanes[i];
                let pinned_label = if pin { "pinned " } else { "" };
                eprintln!(
                    "xtask bench mysql: round {} {pinned_label}{name}",
                    round + 1
                );
                samples[i].push(run_lane(hoop, config, idle, port, pid, seconds, pin)?);
            }
        }
        drop(haproxy);
        writeln!(
            report,
            "\nsysbench oltp_point_select, {THREADS} threads, {}, {seconds} s x {rounds} rounds (medians)",
            if pin {
                "pinned (sysbench, proxy and mariadbd on CPU 0)"
            } else {
                "unpinned"
            }
        )?;
        writeln!(
            report,
            "{:<24} {:>10} {:>8} {:>12} {:>16} {:>12} {:>18}",
            "path",
            "qps",
            "vs direct",
            "latency ms",
            "proxy CPU µs/q",
            "user µs/q",
            "hoop whole µs/q"
        )?;
        let direct_qps = median(samples[0].iter().map(|s| s.qps).collect());
        for ((name, ..), v) in lanes.iter().zip(&samples) {
            let qps = median(v.iter().map(|s| s.qps).collect());
            let latency = median(v.iter().map(|s| s.latency_ms).collect());
            let per_query = |cpu: fn(&Sample) -> Option<Cpu>, f: fn(Cpu) -> f64| {
                let v: Vec<f64> = v
                    .iter()
                    .filter_map(|s| cpu(s).map(|c| f(c) / s.queries * 1e6))
                    .collect();
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{:.1}", median(v))
                }
            };
            writeln!(
                report,
                "{name:<24} {qps:>10.0} {:>8.2} {latency:>12.3} {:>16} {:>12} {:>18}",
                qps / direct_qps,
                per_query(|s| s.cpu, Cpu::total),
                per_query(|s| s.cpu, |c| c.user),
                per_query(|s| s.whole, Cpu::total),
            )?;
        }
    }
    large_result(hoop, &plain, &masked, idle, rounds, &mut report)?;
    eprint!("{report}");
    Ok(())
}

/// mariadbd's pid, from its pid file (or `pidof`).
fn mariadbd_pid() -> anyhow::Result<u32> {
    let from_file = mariadb("SELECT @@pid_file")
        .ok()
        .and_then(|f| fs::read_to_string(f.trim()).ok())
        .and_then(|t| t.trim().parse().ok());
    if let Some(pid) = from_file {
        return Ok(pid);
    }
    crate::setup::output(Command::new("pidof").args(["-s", "mariadbd"]))?
        .trim()
        .parse()
        .context("no mariadbd pid")
}

/// One 1M-row sample: the query's wall time, and hoop's CPU and peak RSS
/// when it ran through hoop.
struct Large {
    seconds: f64,
    cpu: Option<Cpu>,
    rss_kib: Option<f64>,
}

/// The 1M-row result, direct and through hoop with and without a policy,
/// `rounds` interleaved rounds.
fn large_result(
    hoop: &Path,
    plain: &Path,
    masked: &Path,
    idle: Cpu,
    rounds: usize,
    report: &mut String,
) -> anyhow::Result<()> {
    let query = "SELECT seq, CONCAT('row ', seq) FROM seq_1_to_1000000";
    // Timed inside the shell, around the client alone.
    let script = format!(
        "a=$(date +%s%N); mariadb -h 127.0.0.1 --protocol=TCP -uroot --quick -N -B {DB} \
         -e \"{query}\" > /dev/null || exit 1; b=$(date +%s%N); echo \"elapsed_ns=$((b - a))\""
    );
    let one = |config: Option<&Path>| -> anyhow::Result<Large> {
        let mut command = match config {
            Some(config) => {
                let mut c = Command::new(hoop);
                c.args(["exec", "--config"]).arg(config).arg("--");
                c.arg("sh");
                c
            }
            None => Command::new("sh"),
        };
        let out = command
            .args(["-c", &script])
            .env("RUST_LOG", "info")
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("the 1M-row query failed:\n{stdout}\n{stderr}");
        }
        let ns: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("elapsed_ns="))
            .context("the 1M-row run printed no time")?
            .trim()
            .parse()?;
        Ok(Large {
            seconds: ns / 1e9,
            cpu: config.and_then(|_| parse_hoop_cpu(&stderr).map(|c| c - idle)),
            rss_kib: config.and_then(|_| parse_hoop_rss_kib(&stderr)),
        })
    };
    let lanes: [(&str, Option<&Path>); 3] = [
        ("direct", None),
        ("hoop, no policy", Some(plain)),
        ("hoop, masking policy", Some(masked)),
    ];
    let mut samples: Vec<Vec<Large>> = lanes.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds.max(3) {
        for k in 0..lanes.len() {
            let i = (k + round) % lanes.len();
            eprintln!(
                "xtask bench mysql: 1M rows, round {} {}",
                round + 1,
                lanes[i].0
            );
            samples[i].push(one(lanes[i].1)?);
        }
    }
    writeln!(
        report,
        "\n1M-row result (mariadb --quick, seq_1_to_1000000), {} interleaved rounds (medians; time of the query alone)",
        rounds.max(3)
    )?;
    writeln!(
        report,
        "{:<24} {:>8} {:>9} {:>14} {:>14}",
        "path", "seconds", "vs direct", "hoop CPU s", "peak RSS KiB"
    )?;
    let direct = median(samples[0].iter().map(|s| s.seconds).collect());
    for ((name, _), v) in lanes.iter().zip(&samples) {
        let seconds = median(v.iter().map(|s| s.seconds).collect());
        let cpu: Vec<f64> = v.iter().filter_map(|s| s.cpu.map(Cpu::total)).collect();
        let rss = v
            .iter()
            .filter_map(|s| s.rss_kib)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        writeln!(
            report,
            "{name:<24} {seconds:>8.2} {:>9.2} {:>14} {:>14}",
            seconds / direct.max(f64::EPSILON),
            if cpu.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2}", median(cpu))
            },
            rss.map_or_else(|| "-".to_owned(), |r| format!("{r:.0} (max)")),
        )?;
    }
    Ok(())
}
