//! `hoop agent --config FILE`: long-running governance for the cgroups listed
//! in `intercept.cgroups` and, with `kubernetes.enabled`, for this node's
//! pods that opt in (node mode) or for the pod hoop runs in (sidecar mode).
//! SIGTERM or SIGINT stops it and exits 0.

pub mod kubernetes;

use std::{path::Path, process::ExitCode};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::{app::StartOptions, intercept::cgroup::cgroup2_root};

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(config_path: &Path) -> ExitCode {
    let loaded = match crate::app::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let config = loaded.config.clone();
    let k8s = loaded.policy.kubernetes.clone();
    if config.intercept.cgroups.is_empty() && !k8s.enabled {
        eprintln!(
            "hoop agent: {}: nothing to govern: list cgroup v2 directories in intercept.cgroups, \
             or set kubernetes.enabled: true",
            config_path.display()
        );
        return ExitCode::from(crate::app::EXIT_CONFIG);
    }
    let plan = if k8s.enabled {
        match kubernetes::Plan::new(&k8s, &config) {
            Ok(plan) => Some(plan),
            Err(e) => {
                eprintln!("hoop agent: {}: {e}", config_path.display());
                return ExitCode::from(crate::app::EXIT_CONFIG);
            }
        }
    } else {
        None
    };
    let runtime = match crate::app::runtime(&loaded.config, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hoop agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let options = plan
            .as_ref()
            .map_or_else(StartOptions::default, kubernetes::Plan::start_options);
        let governed =
            match crate::app::Governed::start_with(loaded, config_path, false, options).await {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("hoop agent: {e}");
                    return ExitCode::FAILURE;
                }
            };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Before any session can hold: node mode shares holds through the API.
        let shared_holds = match &plan {
            Some(plan) => match plan
                .share_holds(&governed.governance.holds, stopped.clone())
                .await
            {
                Ok(task) => task,
                Err(e) => {
                    eprintln!("hoop agent: {e}");
                    governed.shutdown().await;
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        if !config.intercept.cgroups.is_empty() {
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
        let pods = match &plan {
            Some(plan) => match plan.spawn(&governed.server, stopped).await {
                Ok(task) => Some(task),
                Err(e) => {
                    eprintln!("hoop agent: {e}");
                    governed.shutdown().await;
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        info!("agent running; SIGTERM detaches and exits");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: detaching"),
            _ = int.recv() => info!("SIGINT: detaching"),
        }
        let _ = stop.send(true);
        if let Some(task) = pods {
            let _ = task.await;
        }
        if let Some(task) = shared_holds {
            let _ = task.await;
        }
        let pinned = plan.as_ref().is_some_and(kubernetes::Plan::pins);
        governed.shutdown().await;
        if pinned {
            info!("stopped; the pinned programs stay attached for the next agent");
        } else {
            info!("detached; bye");
        }
        ExitCode::SUCCESS
    })
}

/// `hoop await --port P --timeout T`: waits until this pod's connections to
/// each port are governed (see `hoop_k8s::canary`). Exit 0 once they are,
/// 1 after the timeout.
pub fn await_governed(ports: &[u16], timeout: std::time::Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hoop await: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deadline = std::time::Instant::now() + timeout;
    runtime.block_on(async {
        for &port in ports {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match hoop_k8s::canary::await_governed(port, left).await {
                Ok(pod) => println!("hoop await: port {port} is governed ({pod})"),
                Err(e) => {
                    eprintln!("hoop await: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        ExitCode::SUCCESS
    })
}
