//! Process-level wiring shared by `hoop exec` and `hoop agent`: config
//! loading with operator-facing errors, logging, and the governed runtime
//! (proxy + admin API).

use std::{path::Path, process::ExitCode, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tracing::warn;

use hoop_config::Config;
use hoop_hold::{HoldRegistry, Webhook};
use hoop_policy::reload::{PolicyWatcher, WatchOptions, spawn_watcher};
use hoop_record::{RecordError, Recorder};

use crate::{
    admin::{AdminState, Authenticator, MetricsRefresh, Readiness, auth::AuthConfigError},
    config::{LiveConfig, LoadedConfig},
    serve::{Governance, ServeError, ServeOptions, Server},
};

/// What `hoop agent` adds to the governed runtime on Kubernetes.
#[derive(Default)]
pub struct StartOptions {
    /// Pinning and the sidecar's pod identity.
    pub serve: ServeOptions,
    /// `GET /ready` (`None`: ready once started).
    pub ready: Option<Readiness>,
    /// Refreshes more metrics before each scrape (the pods gauge).
    pub refresh_metrics: Option<MetricsRefresh>,
}

/// Exit status for a configuration that cannot be loaded.
pub const EXIT_CONFIG: u8 = 2;

/// Loads the config and compiles its policy and credentials, printing
/// every error with its location on failure (and warnings on success).
pub fn load_config(path: &Path) -> Result<LoadedConfig, ExitCode> {
    match crate::config::load_checked(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded)
        }
        Err(e) => {
            eprintln!("hoop: invalid configuration: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Sets up `tracing` (RUST_LOG, default `info`) and routes `log` records
/// (aya-log's kernel messages among them) into it.
pub fn init_logging() {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("HOOP_LOG_FORMAT").is_ok_and(|v| v == "json");
    let registry = tracing_subscriber::registry().with(filter);
    // try_init also installs the log→tracing bridge (tracing-log feature).
    let _ = if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
}

/// The tokio runtime for the proxy, sized by `proxy.worker_threads`; 0
/// means `automatic` threads (`None`: one per CPU).
///
/// `hoop exec` governs one program and defaults to one thread: measured on
/// pgbench, one thread avoids the cross-CPU wake-ups of work stealing and
/// gives more throughput than one per CPU. `hoop agent` serves a whole node
/// and defaults to one per CPU.
///
/// One thread means tokio's current-thread scheduler: the event loop polls
/// sessions on the thread that waits for I/O, with none of the
/// work-stealing bookkeeping the multi-thread scheduler does per task poll.
pub fn runtime(
    config: &Config,
    automatic: Option<usize>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match (config.proxy.worker_threads, automatic) {
        (0, None) => None,
        (0, Some(n)) | (n, _) => Some(n),
    };
    if config.proxy.event_loop == hoop_config::EventLoopKind::Hoop {
        let loops = threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        hoop_relay::event_loop::init(loops)?;
    }
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().thread_name("hoop-proxy").build()
}

/// The governed runtime: interception, proxy and admin API.
pub struct Governed {
    /// Interceptor, listeners and sessions.
    pub server: Server,
    /// Policy, recordings and holds, shared by every session.
    pub governance: Governance,
    policy_watcher: PolicyWatcher,
    admin: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Why the governed runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Proxy or eBPF failure.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The recording directory cannot be used.
    #[error("recording: {0}")]
    Recording(#[from] RecordError),
    /// The approvers' authentication could not be configured.
    #[error("admin authentication: {0}")]
    Auth(#[from] AuthConfigError),
    /// The admin listener could not be bound.
    #[error("cannot listen on admin.listen {addr}: {source}")]
    Admin {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Governed {
    /// Starts the proxy and the admin API. With `admin_optional`, an admin
    /// address already in use (another `hoop exec` on this machine) only
    /// disables the admin API, so concurrent execs do not interfere.
    pub async fn start(
        loaded: LoadedConfig,
        config_path: &Path,
        admin_optional: bool,
    ) -> Result<Self, StartError> {
        Self::start_with(loaded, config_path, admin_optional, StartOptions::default()).await
    }

    /// [`Governed::start`] with the agent's options.
    pub async fn start_with(
        loaded: LoadedConfig,
        config_path: &Path,
        admin_optional: bool,
        options: StartOptions,
    ) -> Result<Self, StartError> {
        let LoadedConfig {
            config,
            policy: compiled,
            sha256,
            ..
        } = loaded;
        let config = &config;
        let auth = Authenticator::from_config(&config.admin).await?;
        let holds = HoldRegistry::new(Webhook::from_admin(&config.admin));
        let recorder = Recorder::start(&config.recording)?;
        let live = LiveConfig::from_loaded(compiled, sha256);
        // Noted right after loading, so any later edit of the file is seen.
        // Policy and credentials reload together.
        let policy_watcher = spawn_watcher(
            live.clone(),
            config_path.to_owned(),
            WatchOptions::default(),
        );
        let governance = Governance {
            policy: live.policy,
            credentials: live.credentials,
            recorder,
            holds: holds.clone(),
        };
        let server = Server::start_with(config, &governance, &options.serve)?;
        let admin = match TcpListener::bind(config.admin.listen).await {
            Ok(listener) => {
                let (tx, rx) = oneshot::channel::<()>();
                let mut state = AdminState::new(holds.clone(), auth);
                state.policy = Some(governance.policy.clone());
                // The approvals page shows what a held session ran before, from here.
                state.recordings = config
                    .recording
                    .enabled
                    .then(|| config.recording.dir.clone());
                let redirects = server.metrics_refresher();
                let more = options.refresh_metrics.clone();
                state.refresh_metrics = Some(std::sync::Arc::new(move || {
                    redirects();
                    if let Some(more) = &more {
                        more();
                    }
                }));
                state.ready.clone_from(&options.ready);
                let handle = tokio::spawn(async move {
                    if let Err(e) = crate::admin::serve(listener, state, async {
                        let _ = rx.await;
                    })
                    .await
                    {
                        warn!(error = %e, "admin API stopped");
                    }
                });
                Some((tx, handle))
            }
            Err(e) if admin_optional && e.kind() == std::io::ErrorKind::AddrInUse => {
                warn!(addr = %config.admin.listen, "admin address in use (another hoop?); admin API disabled for this run");
                None
            }
            Err(source) => {
                return Err(StartError::Admin {
                    addr: config.admin.listen,
                    source,
                });
            }
        };
        Ok(Self {
            server,
            governance,
            policy_watcher,
            admin,
        })
    }

    /// Drains sessions, detaches the programs and stops the admin API.
    pub async fn shutdown(self) {
        self.server.shutdown(Duration::from_secs(2)).await;
        self.policy_watcher.stop();
        // Sessions are over: write their trailers and fsync before exiting.
        self.governance.recorder.shutdown().await;
        if let Some((tx, handle)) = self.admin {
            let _ = tx.send(());
            let _ = handle.await;
        }
    }
}
