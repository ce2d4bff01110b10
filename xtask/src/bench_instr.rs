//! `cargo xtask bench --only instructions`: hoop's threads counted in
//! instructions, not seconds.
//!
//! The CPU-time parts of the benchmark move by tens of percent from run to
//! run on these machines, so a change of a few percent in the relay's code
//! cannot be told from noise there. callgrind counts the instructions each
//! thread executes instead: the same binary on the same input gives the
//! same count whatever else the machine is doing. Each figure is a
//! difference of two runs, so start-up, the catalog's loads and the first
//! result's plan cancel out:
//!
//! - a masked row: the masking bench's query (`hoop_bench_people`, two
//!   column-masked columns and the email detector) with `LIMIT 200000` minus
//!   `LIMIT 100000`, divided by 100,000; and the same with no policy;
//! - a transaction of the full policy (`examples/full-policy.yaml`):
//!   pgbench `-S`, one client, 3,000 minus 1,000 transactions, divided by
//!   2,000, in simple and prepared mode; the relay thread and the
//!   recording's writer thread (whose SHA-256 runs in software under
//!   valgrind, so its count is not its share of the time).
//!
//! Instructions are not time (a cache miss or a locked instruction costs
//! more than its count), so this part complements the others; it does not
//! replace them. Every binary given with `--compare` is counted too.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::bench::DB;

/// A thread's callgrind total in one run, found by a function only that
/// thread runs.
#[derive(Debug, Clone, Copy)]
enum Thread {
    /// The session's relay loop.
    Relay,
    /// The recording's writer.
    Writer,
}

impl Thread {
    fn marker(self) -> &'static str {
        match self {
            Thread::Relay => "hoop_pg::relay::Relay::process_server",
            Thread::Writer => "hoop_record::writer::thread::Writer::collect_queues",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Thread::Relay => "relay",
            Thread::Writer => "writer",
        }
    }
}

/// Runs `hoop exec --config config -- sh -c command` under callgrind and
/// returns each of `threads`' instruction totals.
fn counted(
    valgrind: &Path,
    hoop: &Path,
    config: &Path,
    command: &str,
    threads: &[Thread],
    dir: &Path,
) -> anyhow::Result<Vec<u64>> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    let out = Command::new(valgrind)
        .args(["--tool=callgrind", "--separate-threads=yes"])
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join("cg.out").display()
        ))
        .arg(hoop)
        .args(["exec", "--config"])
        .arg(config)
        .args(["--", "sh", "-c", command])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .output()
        .context("running valgrind")?;
    if !out.status.success() {
        bail!(
            "{command} under callgrind: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let files: Vec<(String, PathBuf)> = fs::read_dir(dir)?
        .map(|e| -> anyhow::Result<(String, PathBuf)> {
            let path = e?.path();
            Ok((fs::read_to_string(&path)?, path))
        })
        .collect::<anyhow::Result<_>>()?;
    threads
        .iter()
        .map(|t| {
            let (text, path) = files
                .iter()
                .find(|(text, _)| text.contains(t.marker()))
                .with_context(|| format!("no {} thread in {command}'s profile", t.name()))?;
            text.lines()
                .find_map(|l| l.strip_prefix("summary: "))
                .and_then(|s| s.trim().parse().ok())
                .with_context(|| format!("no summary in {}", path.display()))
        })
        .collect()
}

/// Instructions per unit: `(counts at big − counts at small) / (big − small)`.
fn per_unit(
    valgrind: &Path,
    hoop: &Path,
    config: &Path,
    command: impl Fn(u64) -> String,
    (small, big): (u64, u64),
    threads: &[Thread],
    dir: &Path,
) -> anyhow::Result<Vec<f64>> {
    let a = counted(valgrind, hoop, config, &command(small), threads, dir)?;
    let b = counted(valgrind, hoop, config, &command(big), threads, dir)?;
    Ok(a.iter()
        .zip(&b)
        .map(|(a, b)| (*b as f64 - *a as f64) / (big - small) as f64)
        .collect())
}

/// Counts `hoop` and every `--compare` binary and prints the table.
/// `masked` and `plain` are the masking bench's configurations, `full` the
/// full policy's; the masking bench's table must exist.
pub(crate) fn run(
    hoop: &Path,
    compare: &[PathBuf],
    masked: &Path,
    plain: &Path,
    full: &Path,
    tmp: &Path,
) -> anyhow::Result<()> {
    let Some(valgrind) = crate::bench::ensure_installed("valgrind", "valgrind") else {
        bail!("the instructions part needs valgrind (apt-get install valgrind)");
    };
    let dir = tmp.join("callgrind");
    let rows = |n: u64| {
        format!(
            "psql -h 127.0.0.1 -U postgres -d {DB} -XAtqc \
             'SELECT id, ssn, email, card, note FROM hoop_bench_people LIMIT {n}' > /dev/null"
        )
    };
    let pgbench = |mode: &'static str| {
        move |n: u64| {
            format!("pgbench -h 127.0.0.1 -U postgres -n -S -M {mode} -c 1 -t {n} {DB} > /dev/null")
        }
    };
    let rows_span = (100_000, 200_000);
    let txn_span = (1_000, 3_000);
    eprintln!(
        "instructions (callgrind), per masked row ({} minus {} rows) and per pgbench -S \
         transaction of the full policy, one client ({} minus {})",
        rows_span.1, rows_span.0, txn_span.1, txn_span.0
    );
    eprintln!(
        "{:<28} {:>12} {:>12} {:>14} {:>14} {:>16} {:>16}",
        "binary",
        "row relay",
        "row masked",
        "simple relay",
        "simple writer",
        "prepared relay",
        "prepared writer"
    );
    let binaries = std::iter::once(hoop.to_owned()).chain(compare.iter().cloned());
    for bin in binaries {
        let relay = [Thread::Relay];
        let both = [Thread::Relay, Thread::Writer];
        let plain_row = per_unit(&valgrind, &bin, plain, rows, rows_span, &relay, &dir)?;
        let masked_row = per_unit(&valgrind, &bin, masked, rows, rows_span, &relay, &dir)?;
        let simple = per_unit(
            &valgrind,
            &bin,
            full,
            pgbench("simple"),
            txn_span,
            &both,
            &dir,
        )?;
        let prepared = per_unit(
            &valgrind,
            &bin,
            full,
            pgbench("prepared"),
            txn_span,
            &both,
            &dir,
        )?;
        eprintln!(
            "{:<28} {:>12.0} {:>12.0} {:>14.0} {:>14.0} {:>16.0} {:>16.0}",
            crate::bench::short_name(&bin),
            plain_row[0],
            masked_row[0],
            simple[0],
            simple[1],
            prepared[0],
            prepared[1]
        );
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
