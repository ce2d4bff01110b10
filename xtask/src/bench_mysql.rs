//! `cargo xtask bench --only mysql`: what hoop costs a MySQL client.
//!
//! sysbench `oltp_point_select` (server-side prepared statements, its
//! default `--db-ps-mode=auto`) with 8 threads, unpinned, against four
//! paths interleaved round by round: direct, through haproxy (TCP mode, one
//! thread), through `hoop exec` without a policy, and through `hoop exec`
//! with a masking policy on the selected column. Proxy CPU per query: hoop
//! logs its own rusage at exit, less an idle `hoop exec -- true`; haproxy's
//! comes from `/proc/PID/stat` around each run. Medians of `rounds`.
//!
//! Then a 1,000,000-row result (`seq_1_to_1000000`, the `mariadb` CLI with
//! `--quick`), direct vs. through hoop with the masking policy: the time
//! ratio and hoop's peak RSS.

use std::{fmt::Write as _, fs, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::bench::{
    Baseline, Cpu, ensure_installed, hoop_idle_cpu, median, parse_hoop_cpu, parse_hoop_rss_kib,
    process_cpu, spawn_listening,
};

const DB: &str = "hoop_bench_my";
const HAPROXY_PORT: u16 = 6442;
const THREADS: u32 = 8;

struct Sample {
    qps: f64,
    queries: f64,
    latency_ms: f64,
    cpu: Option<Cpu>,
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
) -> anyhow::Result<Sample> {
    let args = sysbench_args(port, seconds, "run");
    let before = baseline.map(process_cpu).transpose()?;
    let out = match config {
        Some(config) => Command::new(hoop)
            .args(["exec", "--config"])
            .arg(config)
            .arg("--")
            .arg("sysbench")
            .args(&args)
            .env("RUST_LOG", "info")
            .output()?,
        None => Command::new("sysbench").args(&args).output()?,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("sysbench failed:\n{stdout}\n{stderr}");
    }
    let (qps, queries, latency_ms) = parse_sysbench(&stdout)?;
    let cpu = match (config, baseline) {
        (Some(_), _) => parse_hoop_cpu(&stderr).map(|c| c - idle),
        (None, Some(pid)) => Some(process_cpu(pid)? - before.unwrap_or_default()),
        (None, None) => None,
    };
    Ok(Sample {
        qps,
        queries,
        latency_ms,
        cpu,
    })
}

fn start_haproxy(bin: &Path, dir: &Path) -> anyhow::Result<Baseline> {
    let cfg = dir.join("haproxy-mysql.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n  nbthread 1\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 5m\n  timeout server 5m\nlisten my\n  bind 127.0.0.1:{HAPROXY_PORT}\n  \
             server my 127.0.0.1:3306\n"
        ),
    )?;
    let mut command = Command::new(bin);
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
    let haproxy = ensure_installed("haproxy", "haproxy")
        .map(|bin| start_haproxy(&bin, tmp))
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
            eprintln!("xtask bench mysql: round {} {name}", round + 1);
            samples[i].push(run_lane(hoop, config, idle, port, pid, seconds)?);
        }
    }
    drop(haproxy);
    let mut report = String::new();
    writeln!(
        report,
        "\nsysbench oltp_point_select, {THREADS} threads, unpinned, {seconds} s x {rounds} rounds (medians)"
    )?;
    writeln!(
        report,
        "{:<24} {:>10} {:>8} {:>12} {:>16} {:>12}",
        "path", "qps", "vs direct", "latency ms", "proxy CPU µs/q", "user µs/q"
    )?;
    let direct_qps = median(samples[0].iter().map(|s| s.qps).collect());
    for ((name, ..), v) in lanes.iter().zip(&samples) {
        let qps = median(v.iter().map(|s| s.qps).collect());
        let latency = median(v.iter().map(|s| s.latency_ms).collect());
        let per_query = |f: fn(Cpu) -> f64| {
            let v: Vec<f64> = v
                .iter()
                .filter_map(|s| s.cpu.map(|c| f(c) / s.queries * 1e6))
                .collect();
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.1}", median(v))
            }
        };
        writeln!(
            report,
            "{name:<24} {qps:>10.0} {:>8.2} {latency:>12.3} {:>16} {:>12}",
            qps / direct_qps,
            per_query(Cpu::total),
            per_query(|c| c.user),
        )?;
    }
    // 1M rows, masked policy in force.
    let query = "SELECT seq, CONCAT('row ', seq) FROM seq_1_to_1000000";
    let cli = format!(
        "mariadb -h 127.0.0.1 --protocol=TCP -uroot --quick -N -B {DB} -e \"{query}\" > /dev/null"
    );
    let started = Instant::now();
    crate::setup::run(Command::new("sh").args(["-c", &cli]))?;
    let direct = started.elapsed();
    let started = Instant::now();
    let out = Command::new(hoop)
        .args(["exec", "--config"])
        .arg(&masked)
        .args(["--", "sh", "-c", &cli])
        .env("RUST_LOG", "info")
        .output()?;
    let through = started.elapsed();
    let rss = parse_hoop_rss_kib(&String::from_utf8_lossy(&out.stderr));
    writeln!(
        report,
        "1M-row result: direct {:.2} s, through hoop {:.2} s (ratio {:.2}, includes hoop exec start-up), hoop peak RSS {} KiB",
        direct.as_secs_f64(),
        through.as_secs_f64(),
        through.as_secs_f64() / direct.as_secs_f64().max(f64::EPSILON),
        rss.map_or_else(|| "?".to_owned(), |r| format!("{r:.0}")),
    )?;
    eprint!("{report}");
    Ok(())
}
