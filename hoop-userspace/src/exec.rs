//! `hoop exec --config FILE -- CMD [ARGS...]`: govern one program.
//!
//! A fresh cgroup v2 child is created and the eBPF programs are attached to
//! it; CMD is moved into that cgroup between `fork` and `exec`, so even its
//! first socket is governed. Signals are forwarded, the exit status is CMD's,
//! and the cgroup and programs are removed on every exit path we can see
//! (normal exit, CMD killed, SIGINT/SIGTERM to hoop). A `kill -9` of hoop
//! itself leaves an empty cgroup directory, which the next `hoop exec`
//! removes (see [`crate::intercept::cgroup`]).

use std::{
    ffi::OsString,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::process::ExitStatusExt as _},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::intercept::cgroup::{ScopedCgroup, cgroup2_root, sweep_stale};

/// Exit status when hoop itself fails before or around CMD (as `env`/`timeout` do).
const EXIT_HOOP_FAILED: u8 = 125;
/// Exit status when CMD cannot be started.
const EXIT_CANNOT_RUN: u8 = 126;

/// Runs CMD governed by the configuration at `config_path`.
pub fn run(config_path: &Path, command: &[OsString]) -> ExitCode {
    // Everything that can fail because of the config fails before anything is attached.
    let loaded = match crate::app::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some((program, args)) = command.split_first() else {
        eprintln!("hoop exec: no command given (usage: hoop exec --config FILE -- CMD [ARGS...])");
        return ExitCode::from(2);
    };
    let runtime = match crate::app::runtime(&loaded.config, Some(1)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hoop exec: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_HOOP_FAILED);
        }
    };
    runtime.block_on(run_async(loaded, config_path, program, args))
}

async fn run_async(
    loaded: crate::config::LoadedConfig,
    config_path: &Path,
    program: &OsString,
    args: &[OsString],
) -> ExitCode {
    let governed = match crate::app::Governed::start(loaded, config_path, true).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("hoop exec: {e}");
            return ExitCode::from(EXIT_HOOP_FAILED);
        }
    };
    let cgroup = match cgroup2_root().and_then(|root| {
        for stale in sweep_stale(&root, "hoop-exec") {
            info!(cgroup = %stale.display(), "removed a cgroup left by a hoop that was killed");
        }
        ScopedCgroup::create(&root)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hoop exec: {e}");
            governed.shutdown().await;
            return ExitCode::from(EXIT_HOOP_FAILED);
        }
    };
    if let Err(e) = governed.server.attach(cgroup.path()) {
        eprintln!("hoop exec: {e}");
        drop(cgroup);
        governed.shutdown().await;
        return ExitCode::from(EXIT_HOOP_FAILED);
    }

    // Handlers first: a signal that arrives while CMD starts is forwarded,
    // not fatal to hoop; and CMD starts with these signals at their default
    // disposition (handled signals reset on exec), even if hoop inherited
    // them ignored.
    let signals = forward_signals();
    let code = match spawn_into(&cgroup, program, args) {
        Ok(child) => supervise(child, signals).await,
        Err(e) => {
            eprintln!("hoop exec: cannot run {}: {e}", program.to_string_lossy());
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    };
    // Order matters: the child is gone, so sessions drain; then the programs
    // are detached; then the (now empty) cgroup is removed.
    governed.shutdown().await;
    drop(cgroup);
    log_resource_usage();
    let _ = std::io::stderr().flush();
    code
}

/// Logs hoop's own CPU time and peak RSS (the proxy runs in-process, CMD is
/// not included), for benchmarks and capacity planning.
fn log_resource_usage() {
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        let secs =
            |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + f64::from(t.tv_usec() as i32) / 1e6;
        info!(
            cpu_user_seconds = secs(usage.user_time()),
            cpu_system_seconds = secs(usage.system_time()),
            peak_rss_kib = usage.max_rss(),
            "hoop resource usage"
        );
    }
}

fn spawn_into(
    cgroup: &ScopedCgroup,
    program: &OsString,
    args: &[OsString],
) -> std::io::Result<tokio::process::Child> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.procs_file())?;
    let procs_fd = procs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // write(2) on an fd opened before the fork, which is async-signal-safe.
    // Writing "0" to cgroup.procs moves the writing process.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            let n = libc::write(procs_fd, b"0".as_ptr().cast(), 1);
            if n == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = cmd.spawn();
    drop(procs);
    child
}

/// Installs handlers for the signals hoop forwards to CMD; they arrive on
/// the returned channel.
fn forward_signals() -> tokio::sync::mpsc::UnboundedReceiver<Signal> {
    let mut streams = Vec::new();
    for (kind, sig) in [
        (SignalKind::interrupt(), Signal::SIGINT),
        (SignalKind::terminate(), Signal::SIGTERM),
        (SignalKind::hangup(), Signal::SIGHUP),
        (SignalKind::quit(), Signal::SIGQUIT),
        (SignalKind::user_defined1(), Signal::SIGUSR1),
        (SignalKind::user_defined2(), Signal::SIGUSR2),
        (SignalKind::window_change(), Signal::SIGWINCH),
    ] {
        match signal(kind) {
            Ok(s) => streams.push((s, sig)),
            Err(e) => warn!(signal = %sig, error = %e, "cannot forward signal"),
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (mut stream, sig) in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Waits for CMD, forwarding signals, and maps its end to our exit status.
async fn supervise(
    mut child: tokio::process::Child,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Signal>,
) -> ExitCode {
    let Some(pid) = child.id().map(|p| Pid::from_raw(p as i32)) else {
        return ExitCode::from(EXIT_HOOP_FAILED);
    };
    // When hoop owns the terminal's foreground process group, a Ctrl-C from
    // the terminal already reaches CMD (same process group); forwarding it
    // again would deliver it twice.
    let terminal_signals_reach_child =
        nix::unistd::tcgetpgrp(std::io::stdin()).is_ok_and(|fg| fg == nix::unistd::getpgrp());
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(s) => {
                        if let Some(code) = s.code() {
                            info!(code, "command exited");
                            ExitCode::from(code as u8)
                        } else {
                            let sig = s.signal().unwrap_or(0);
                            info!(signal = sig, "command killed by a signal");
                            ExitCode::from(128u8.wrapping_add(sig as u8))
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "waiting for the command failed");
                        ExitCode::from(EXIT_HOOP_FAILED)
                    }
                };
            }
            Some(sig) = rx.recv() => {
                let from_terminal = matches!(sig, Signal::SIGINT | Signal::SIGQUIT) && terminal_signals_reach_child;
                if !from_terminal {
                    let _ = kill(pid, sig);
                }
            }
        }
    }
}

/// Grace period for sessions to end after CMD exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
