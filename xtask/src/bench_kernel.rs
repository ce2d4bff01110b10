//! `cargo xtask bench --only kernel`: what each proxy asks of the kernel
//! per pgbench transaction.
//!
//! The pgbench part shows hoop above pgbouncer in some rows, and most of
//! every proxy's time there is the kernel's. Times move by tens of percent
//! from run to run on these machines; counts do not. So this part counts,
//! per transaction of one `pgbench -S` run (8 clients, simple protocol,
//! unpinned, then pinned to CPU 0 with PostgreSQL and the client, then
//! pinned again at a fixed rate):
//!
//! - the proxy's system calls (`raw_syscalls:sys_enter`) and context
//!   switches, with `perf stat --per-thread` on the proxy's process;
//! - the TCP segments sent on the machine (`/proc/net/snmp` `OutSegs`, both
//!   legs of every connection: the same for any proxy that relays a request
//!   and its reply in one segment each, 4 per transaction);
//! - the proxy's CPU time (`task-clock`) per transaction, in all and, for
//!   hoop, in its relay thread and its recording writer apart.
//!
//! Pinned, a proxy's CPU per transaction falls as its throughput rises (more
//! ready events per wake-up), so two unlimited runs at different throughputs
//! do not compare. The last pass runs every proxy at one fixed rate
//! (`pgbench -R`), 60% of the slowest pinned case's throughput, where they
//! do.
//!
//! The cases: hoop with no policy, hoop with the full policy of issue #22
//! (`examples/full-policy.yaml`), pgbouncer, haproxy and the floor
//! forwarder. When hoop makes the calls and sends the segments the others
//! do, a gap in CPU time is the cost of each call, not their number.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::bench::{Affinity, ensure_installed, pgbench_select_args, start_baselines};

/// One case's counts, per transaction.
#[derive(Debug, Clone, Copy)]
struct PerTransaction {
    transactions: f64,
    cpu_us: f64,
    relay_us: Option<f64>,
    writer_us: Option<f64>,
    syscalls: f64,
    switches: f64,
    segments: f64,
}

/// The process's counters from `perf stat -x, --per-thread` output, summed
/// by thread kind: `(all, relay threads, recording writer)`, each as
/// `(task-clock ms, context switches, system calls)`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counters {
    all: [f64; 3],
    relay: [f64; 3],
    writer: [f64; 3],
}

fn parse_perf_csv(text: &str) -> anyhow::Result<Counters> {
    let mut c = Counters::default();
    let mut seen = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        if line.starts_with('#') || fields.len() < 4 {
            continue;
        }
        // `comm-tid`: the thread's name is everything before the last `-`.
        let thread = fields[0].rsplit_once('-').map_or(fields[0], |(n, _)| n);
        let Ok(value) = fields[1].parse::<f64>() else {
            // `<not counted>` or `<not supported>`: a missing count is an error below.
            continue;
        };
        let slot = match fields[3] {
            "task-clock" => 0,
            "context-switches" => 1,
            "raw_syscalls:sys_enter" => 2,
            _ => continue,
        };
        seen = true;
        c.all[slot] += value;
        if thread.starts_with("hoop-relay") {
            c.relay[slot] += value;
        } else if thread == "hoop-recorder" {
            c.writer[slot] += value;
        }
    }
    if !seen || c.all[0] == 0.0 {
        bail!("perf stat counted nothing:\n{text}");
    }
    Ok(c)
}

/// TCP segments sent so far (this network namespace).
fn tcp_out_segments() -> anyhow::Result<f64> {
    let snmp = fs::read_to_string("/proc/net/snmp")?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().context("no Tcp: in /proc/net/snmp")?,
        tcp.next().context("no Tcp: values in /proc/net/snmp")?,
    );
    let at = names
        .split_whitespace()
        .position(|n| n == "OutSegs")
        .context("no OutSegs in /proc/net/snmp")?;
    Ok(values
        .split_whitespace()
        .nth(at)
        .context("short Tcp: line in /proc/net/snmp")?
        .parse()?)
}

/// `perf stat` of one process for `seconds` (plus a second of slack, so
/// that the whole pgbench run falls inside), written to `out`.
fn perf_args(perf: &Path, pid: &str, seconds: u32, out: &Path) -> Vec<String> {
    [
        perf.display().to_string(),
        "stat".into(),
        "-x,".into(),
        "--per-thread".into(),
        "-e".into(),
        "task-clock,context-switches,raw_syscalls:sys_enter".into(),
        "-p".into(),
        pid.into(),
        "-o".into(),
        out.display().to_string(),
        "--".into(),
        "sleep".into(),
        (seconds + 1).to_string(),
    ]
    .into()
}

/// The fixed rate of the last pass ([`crate::bench::fixed_rate`] of the
/// slowest unlimited pinned case's throughput).
fn fixed_rate(slowest_transactions: f64, seconds: u32) -> u32 {
    crate::bench::fixed_rate(slowest_transactions / f64::from(seconds.max(1)))
}

/// The part's pgbench: 8 clients, simple protocol.
fn pgbench_args(port: u16, seconds: u32, rate: Option<u32>) -> Vec<String> {
    pgbench_select_args(port, 8, "simple", seconds, rate)
}

fn transactions(stdout: &str) -> anyhow::Result<f64> {
    stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("number of transactions actually processed: ")
        })
        .and_then(|r| r.split_whitespace().next())
        .context("no transaction count in pgbench output")?
        .parse()
        .context("unparsable transaction count")
}

/// Where a case's pgbench connects, and whose counters are read.
enum Proxy<'a> {
    /// `hoop exec` with this configuration (pgbench runs inside it; perf
    /// attaches to hoop, pgbench's parent's parent).
    Hoop(&'a Path),
    /// A running baseline: its port and pid.
    Baseline(u16, u32),
}

fn measure(
    perf: &Path,
    hoop: &Path,
    proxy: &Proxy<'_>,
    seconds: u32,
    (pin, rate): (bool, Option<u32>),
    out: &Path,
) -> anyhow::Result<PerTransaction> {
    let _ = fs::remove_file(out);
    let taskset: Vec<String> = if pin {
        vec!["taskset".into(), "-c".into(), "0".into()]
    } else {
        Vec::new()
    };
    let segments_before = tcp_out_segments()?;
    let output = match proxy {
        Proxy::Hoop(config) => {
            // (No argument holds a space: the paths are the bench's own.)
            let line = |args: Vec<String>| args.join(" ");
            let script = format!(
                "{} & sleep 0.3; {}; wait",
                line(perf_args(perf, "$PPID", seconds, out)),
                line(pgbench_args(5432, seconds, rate))
            );
            let mut args = taskset;
            args.push(hoop.display().to_string());
            args.extend(["exec".into(), "--config".into()]);
            args.push(config.display().to_string());
            args.extend(["--".into(), "sh".into(), "-c".into(), script]);
            Command::new(&args[0]).args(&args[1..]).output()?
        }
        Proxy::Baseline(port, pid) => {
            let p = perf_args(perf, &pid.to_string(), seconds, out);
            let mut stat = Command::new(&p[0])
                .args(&p[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_millis(300));
            let mut args = taskset;
            args.extend(pgbench_args(*port, seconds, rate));
            let run = Command::new(&args[0]).args(&args[1..]).output();
            stat.wait()?;
            run?
        }
    };
    let segments = tcp_out_segments()? - segments_before;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let n = transactions(&stdout)?;
    if n < 1.0 {
        bail!("pgbench ran no transaction: {stdout}");
    }
    let c = parse_perf_csv(&fs::read_to_string(out).with_context(|| {
        format!(
            "perf stat wrote no {}: {}",
            out.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    })?)?;
    let us = |ms: f64| ms * 1e3 / n;
    let hoop_threads = matches!(proxy, Proxy::Hoop(_));
    Ok(PerTransaction {
        transactions: n,
        cpu_us: us(c.all[0]),
        relay_us: hoop_threads.then(|| us(c.relay[0])),
        writer_us: hoop_threads.then(|| us(c.writer[0])),
        syscalls: c.all[2] / n,
        switches: c.all[1] / n,
        segments: segments / n,
    })
}

/// Runs the part and prints its table. `plain` and `full` are hoop's
/// configurations with no policy and with the full policy; `postmaster`
/// is PostgreSQL's, pinned for the pinned runs.
pub(crate) fn run(
    hoop: &Path,
    plain: &Path,
    full: &Path,
    tmp: &Path,
    seconds: u32,
    postmaster: u32,
) -> anyhow::Result<()> {
    let Some(perf) = ensure_installed("perf", "linux-perf") else {
        bail!("the kernel part needs perf (apt-get install linux-perf)");
    };
    let mut report = String::new();
    writeln!(
        report,
        "per pgbench -S transaction (8 clients, simple, {seconds}s, one run each; unpinned, pinned, and pinned at one fixed rate): the proxy's system calls and context switches, TCP segments sent on the machine, the proxy's CPU (hoop: relay thread and recording writer apart)"
    )?;
    writeln!(
        report,
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "case", "txns", "CPU µs", "relay µs", "writer µs", "syscalls", "switches", "segments"
    )?;
    // The slowest unlimited pinned case's transactions, for the fixed rate.
    let mut slowest_pinned = f64::INFINITY;
    for (pin, fixed) in [(false, false), (true, false), (true, true)] {
        let rate = fixed.then(|| fixed_rate(slowest_pinned, seconds));
        let _affinity = if pin {
            Some(Affinity::pin(postmaster)?)
        } else {
            None
        };
        let baselines = start_baselines(tmp, pin)?;
        let mut cases: Vec<(String, Proxy<'_>)> = vec![
            ("hoop, no policy".into(), Proxy::Hoop(plain)),
            ("hoop, full policy".into(), Proxy::Hoop(full)),
        ];
        for b in &baselines {
            cases.push((b.name.into(), Proxy::Baseline(b.port, b.child.id())));
        }
        for (label, proxy) in &cases {
            let out: PathBuf = tmp.join("perf-stat.csv");
            let m = measure(&perf, hoop, proxy, seconds, (pin, rate), &out)?;
            if pin && rate.is_none() {
                slowest_pinned = slowest_pinned.min(m.transactions);
            }
            // The full policy's recordings are not kept (disk).
            let _ = fs::remove_dir_all(tmp.join("rec-full"));
            let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}"));
            writeln!(
                report,
                "{:<30} {:>9.0} {:>9.2} {:>9} {:>9} {:>9.2} {:>9.2} {:>9.2}",
                match (pin, rate) {
                    (false, _) => label.clone(),
                    (true, None) => format!("pinned {label}"),
                    (true, Some(r)) => format!("pinned {r}/s {label}"),
                },
                m.transactions,
                m.cpu_us,
                opt(m.relay_us),
                opt(m.writer_us),
                m.syscalls,
                m.switches,
                m.segments
            )?;
        }
    }
    eprint!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv_is_summed_by_thread_kind() {
        let text = "# started on Sun Dec  6 02:51:49 2026\n\n\
            hoop-relay-0-25027,722.76,msec,task-clock,722763292,100.00,0.241,CPUs utilized\n\
            hoop-recorder-25028,86.36,msec,task-clock,86362669,100.00,0.029,CPUs utilized\n\
            hoop-25025,1.93,msec,task-clock,1928969,100.00,0.001,CPUs utilized\n\
            hoop-relay-0-25027,34150,,context-switches,722763292,100.00,47.249,K/sec\n\
            hoop-recorder-25028,960,,context-switches,86362669,100.00,11.116,K/sec\n\
            hoop-relay-0-25027,234995,,raw_syscalls:sys_enter,722763292,100.00,325.134,K/sec\n\
            hoop-25025,<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n\
            hoop-recorder-25028,228,,raw_syscalls:sys_enter,86362669,100.00,2.640,K/sec\n";
        let same = |a: &[f64], b: &[f64]| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-9, "{a:?} != {b:?}");
            }
        };
        let c = parse_perf_csv(text).expect("parsed");
        same(&c.relay, &[722.76, 34_150.0, 234_995.0]);
        same(&c.writer, &[86.36, 960.0, 228.0]);
        same(&c.all, &[722.76 + 86.36 + 1.93, 35_110.0, 235_223.0]);
        // pgbouncer: one thread, none of hoop's.
        let c =
            parse_perf_csv("pgbouncer-16995,500.0,msec,task-clock,1,100.00,0.2,CPUs utilized\n")
                .expect("parsed");
        same(&[c.all[0], c.relay[0], c.writer[0]], &[500.0, 0.0, 0.0]);
        assert!(parse_perf_csv("# started on\n\n").is_err());
    }

    #[test]
    fn the_fixed_rate_is_below_the_slowest_pinned_case() {
        // 50,388 transactions in 4 s: 12,597 per second; 60% is 7,558.
        assert_eq!(fixed_rate(50_388.0, 4), 7_500);
        assert_eq!(fixed_rate(10.0, 4), 100);
        let args = pgbench_args(6439, 4, Some(7_500));
        let at = args.iter().position(|a| a == "-R").expect("-R");
        assert_eq!(args[at + 1], "7500");
        assert_eq!(args.last().map(String::as_str), Some(crate::bench::DB));
        assert!(!pgbench_args(6439, 4, None).contains(&"-R".to_owned()));
    }

    /// The counter read is the one a connection's segments move.
    #[test]
    fn the_segment_counter_counts_a_connections_segments() {
        use std::io::{Read as _, Write as _};
        let before = tcp_out_segments().expect("OutSegs");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        for _ in 0..10 {
            client.write_all(b"ping").expect("write");
            let mut got = [0u8; 4];
            server.read_exact(&mut got).expect("read");
            server.write_all(b"pong").expect("write");
            client.read_exact(&mut got).expect("read");
        }
        // The handshake and 20 data segments at least.
        let sent = tcp_out_segments().expect("OutSegs") - before;
        assert!(sent >= 20.0, "{sent}");
    }
}
