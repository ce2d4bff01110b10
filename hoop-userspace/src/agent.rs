//! `hoop agent --config FILE`: long-running governance for the cgroups listed
//! in `intercept.cgroups`. SIGTERM or SIGINT detaches everything and exits 0.

use std::{path::Path, process::ExitCode};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::intercept::cgroup::cgroup2_root;

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(config_path: &Path) -> ExitCode {
    let loaded = match crate::app::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let config = loaded.config.clone();
    if config.intercept.cgroups.is_empty() {
        eprintln!(
            "hoop agent: {}: intercept.cgroups is empty: list the cgroup v2 directories to govern",
            config_path.display()
        );
        return ExitCode::from(crate::app::EXIT_CONFIG);
    }
    let runtime = match crate::app::runtime(&loaded.config, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hoop agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let governed = match crate::app::Governed::start(loaded, config_path, false).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("hoop agent: {e}");
                return ExitCode::FAILURE;
            }
        };
        let root = match cgroup2_root() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("hoop agent: {e}");
                governed.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        for cgroup in &config.intercept.cgroups {
            let path = if cgroup.is_absolute() {
                cgroup.clone()
            } else {
                root.join(cgroup)
            };
            if let Err(e) = governed.server.attach(&path) {
                eprintln!("hoop agent: {}: {e}", path.display());
                governed.shutdown().await;
                return ExitCode::FAILURE;
            }
        }
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                error!(error = %e, "cannot install signal handlers");
                governed.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        info!("agent running; SIGTERM detaches and exits");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: detaching"),
            _ = int.recv() => info!("SIGINT: detaching"),
        }
        governed.shutdown().await;
        info!("detached; bye");
        ExitCode::SUCCESS
    })
}
