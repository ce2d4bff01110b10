//! Developer tasks for hoop.
//!
//! - `cargo xtask setup`: install what a fresh machine lacks (nightly
//!   `rust-src`, a `bpf-linker` built against the nightly's own LLVM, and for
//!   the browser test Debian's `chromium` and `playwright-core` from
//!   `tests/ui/package-lock.json`), then build.
//! - `cargo xtask demo`: setup, then run `hoop exec` on the bundled example
//!   config around a `psql` query.
//! - `cargo xtask test`: setup, make sure PostgreSQL and MariaDB are up and
//!   configured for the tests, then run every test tier (unit, end-to-end,
//!   privileged eBPF). This is what `.ci/run` calls.
//! - `cargo xtask k8s-validate`: render `k8s/` with kustomize and validate it
//!   offline against the Kubernetes schemas (also part of `test`).
//! - `cargo xtask bench`: the proxy benchmark (pgbench direct vs. through hoop).
//! - `cargo xtask pg-builtins`: regenerate hoop-sql's list of PostgreSQL's
//!   built-in routines and operators from the local server.

#![forbid(unsafe_code)]

mod bench;
mod bench_instr;
mod bench_kernel;
mod bench_mysql;
mod browser;
mod floor;
mod k8s;
mod pg_builtins;
mod services;
mod setup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "hoop developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install nightly rust-src, bpf-linker, chromium and the browser test's npm packages if missing, then build hoop (release).
    Setup,
    /// Setup, then run `hoop exec` with examples/hoop.yaml around a psql query.
    Demo,
    /// Setup, start and configure the test databases, run all test tiers.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Start PostgreSQL and MariaDB if they are down, and configure them for the tests.
    Services,
    /// Render the Kubernetes manifests and validate them offline against the schemas.
    K8sValidate,
    /// Benchmark: pgbench select-only direct vs. through hoop, plus 1M-row COPY.
    Bench {
        /// Seconds per pgbench run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Interleaved rounds per case (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Run only this part (default: all of them).
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
        /// Another `hoop` binary to run beside this tree's in the pgbench
        /// part (for before/after comparisons in one run); may be given
        /// more than once.
        #[arg(long)]
        compare: Vec<std::path::PathBuf>,
        /// Only the pinned pgbench runs (the rows CPU-per-transaction
        /// comparisons rest on).
        #[arg(long)]
        pinned_only: bool,
    },
    /// Regenerate hoop-sql's list of PostgreSQL's built-in routines and
    /// operators from the local server's pg_catalog.
    PgBuiltins,
    /// The benchmark's minimal TCP forwarder (see xtask/src/floor.rs).
    #[command(hide = true)]
    Floor {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Address every connection is forwarded to.
        #[arg(long)]
        upstream: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup().and_then(|()| browser::ensure()),
        Command::Demo => setup::setup()
            .and_then(|()| services::ensure_postgres())
            .and_then(|()| setup::demo()),
        Command::Test { args } => setup::toolchain()
            .and_then(|()| browser::ensure())
            .and_then(|()| services::ensure_postgres())
            .and_then(|()| services::ensure_mariadb())
            .and_then(|()| k8s::validate())
            .and_then(|()| setup::test(&args)),
        Command::Services => services::ensure_postgres().and_then(|()| services::ensure_mariadb()),
        Command::K8sValidate => k8s::validate(),
        Command::Bench {
            seconds,
            rounds,
            only,
            compare,
            pinned_only,
        } => setup::setup()
            .and_then(|()| services::ensure_postgres())
            .and_then(|()| bench::run(seconds, rounds, only, &compare, pinned_only)),
        Command::PgBuiltins => services::ensure_postgres().and_then(|()| pg_builtins::run()),
        Command::Floor { listen, upstream } => floor::run(listen, upstream),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
