//! `hoop agent` on Kubernetes (`kubernetes.enabled: true`).
//!
//! - **Node mode** (a DaemonSet): the watchers and the reconciler of
//!   `hoop-k8s` decide which pods of this node are governed; [`PodSessions`]
//!   governs each one through [`PodInterception`] (programs on the pod
//!   cgroup, listeners on the pod's own loopback, the redirect target) and
//!   serves its listeners with the proxy ([`PodServer`]): every session on
//!   them carries the pod's identity, and its upstream leg is dialed from
//!   inside the pod's network namespace.
//! - **Sidecar mode**: hoop runs inside the pod, so its own listeners are
//!   already on the pod's loopback; it attaches the programs to the pod
//!   cgroup (found by UID) and every session carries the identity of the
//!   Downward API environment.
//!
//! `GET /ready` answers from the [`StatusBoard`]: node mode once the first
//! full sync is done, sidecar mode once the pod is governed.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use hoop_config::Config;
use hoop_k8s::{
    GovernError, GovernRequest, KubernetesConfig, Mode, PodGovernor, Reconciler, StatusBoard,
    Workload,
    config::ResolvedKubernetes,
    discovery::{self, DiscoverySettings, WatchBackoff},
    events::KubeEvents,
    metrics::K8sMetrics,
    opt_in::OptInRules,
    reconcile::{FailureReason, ReconcilerSettings, RetryPolicy},
    sidecar::{self, SidecarSettings},
};
use tokio::sync::watch;
use tracing::info;

use crate::{
    app::StartOptions,
    intercept::{
        Interceptor,
        cgroup::cgroup2_root,
        netns::{NetNs, NetnsSockets},
        pods::{Governed, PodInterceptError, PodInterception},
    },
    serve::{PodListeners, PodServer, ServeOptions, Server},
};

/// Why the Kubernetes part of the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// `kubernetes:` lacks something the environment must give.
    #[error(transparent)]
    Resolve(#[from] hoop_k8s::config::ResolveError),
    /// Sidecar mode without its Downward API variables.
    #[error(transparent)]
    Identity(#[from] hoop_k8s::workload::MissingEnv),
    /// No API server to talk to.
    #[error(transparent)]
    Client(#[from] discovery::ClientError),
    /// The metrics could not be registered.
    #[error("registering the Kubernetes metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// The network-namespace socket thread could not start.
    #[error("starting the network-namespace socket thread: {0}")]
    Netns(#[source] std::io::Error),
}

/// What the agent will do on Kubernetes, decided before anything starts
/// (so a configuration problem exits with the configuration's status).
pub struct Plan {
    resolved: ResolvedKubernetes,
    /// Sidecar mode: this pod.
    sidecar: Option<Arc<Workload>>,
    ports: Vec<u16>,
    pin_root: Option<PathBuf>,
    board: StatusBoard,
    metrics: K8sMetrics,
    holds: hoop_k8s::config::HoldsConfig,
}

impl Plan {
    /// Resolves `kubernetes:` against the environment (`NODE_NAME`, the
    /// cgroup2 mount, the Downward API variables in sidecar mode) and
    /// registers the metrics.
    pub fn new(k8s: &KubernetesConfig, config: &Config) -> Result<Self, KubernetesError> {
        let mount = cgroup2_root().ok();
        let resolved = k8s.resolve(
            std::env::var(hoop_k8s::config::NODE_NAME_ENV)
                .ok()
                .as_deref(),
            mount.as_deref(),
        )?;
        let sidecar = match resolved.mode {
            Mode::Node => None,
            Mode::Sidecar => Some(Arc::new(hoop_k8s::workload::from_downward_api(|k| {
                std::env::var(k).ok()
            })?)),
        };
        let metrics = K8sMetrics::register(&hoop_core::metrics::metrics().registry)
            .map_err(KubernetesError::Metrics)?;
        Ok(Self {
            resolved,
            sidecar,
            ports: config.intercept.ports.clone(),
            pin_root: (!k8s.pin_dir.as_os_str().is_empty()).then(|| k8s.pin_dir.clone()),
            board: StatusBoard::new(),
            metrics,
            holds: k8s.holds.clone(),
        })
    }

    /// Whether maps and links are pinned (they outlive the agent).
    pub fn pins(&self) -> bool {
        self.pin_root.is_some()
    }

    /// Pinning, the sidecar's identity, `/ready` and the pods gauge.
    pub fn start_options(&self) -> StartOptions {
        let board = self.board.clone();
        let uid = self.sidecar.as_ref().map(|w| w.uid.clone());
        let gauge_board = self.board.clone();
        let metrics = self.metrics.clone();
        StartOptions {
            serve: ServeOptions {
                pin_root: self.pin_root.clone(),
                pod: self.sidecar.clone(),
            },
            ready: Some(Arc::new(move || board.ready(uid.as_deref()))),
            refresh_metrics: Some(Arc::new(move || metrics.update_pods(&gauge_board))),
        }
    }

    /// Node mode: from now on the holds in `registry` are the cluster's,
    /// shared as `HoldRequest`s in hoop's namespace (see
    /// [`hoop_k8s::holds`]); returns the task mirroring them. Sidecar mode
    /// (no API access) keeps holds in process: `None`.
    pub async fn share_holds(
        &self,
        registry: &hoop_hold::HoldRegistry,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, KubernetesError> {
        if self.sidecar.is_some() {
            return Ok(None);
        }
        let client = discovery::client().await?;
        let node = self.resolved.node_name.clone();
        let settings = hoop_k8s::holds::HoldSettings {
            namespace: self.holds.namespace_or(
                std::env::var(hoop_k8s::workload::env::POD_NAMESPACE)
                    .ok()
                    .as_deref(),
            ),
            owner: hoop_k8s::holds::HoldOwner {
                instance: hoop_k8s::holds::instance_id(&node),
                node,
            },
            retention: self.holds.retention,
            backoff: watch_backoff(),
        };
        let store = hoop_k8s::holds::KubeHoldStore::new(client, settings);
        registry.set_store(Arc::new(store.clone()));
        let registry = registry.clone();
        Ok(Some(tokio::spawn(async move {
            let mut stop = stop;
            hoop_k8s::holds::run(store, registry, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        })))
    }

    /// Starts governing pods (node mode: discovery and reconciliation;
    /// sidecar mode: this pod) until `stop` turns true.
    pub async fn spawn(
        &self,
        server: &Server,
        stop: watch::Receiver<bool>,
    ) -> Result<tokio::task::JoinHandle<()>, KubernetesError> {
        let stopped = async move {
            let mut stop = stop;
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Some(workload) = &self.sidecar {
            info!(pod = %workload, cgroup_root = %self.resolved.cgroup_root.display(), "sidecar mode: governing this pod");
            let settings = SidecarSettings {
                workload: (**workload).clone(),
                cgroup_root: self.resolved.cgroup_root.clone(),
                own_cgroup: sidecar::own_cgroup(),
                ports: self.ports.clone(),
                retry: RetryPolicy::default(),
                resync_interval: self.resolved.resync_interval,
            };
            let governor = Arc::new(OwnPod {
                interceptor: server.interceptor().clone(),
            });
            let board = self.board.clone();
            return Ok(tokio::spawn(async move {
                sidecar::run(&settings, governor, board, stopped).await;
            }));
        }
        let client = discovery::client().await?;
        let sockets = NetnsSockets::spawn().map_err(KubernetesError::Netns)?;
        // With hostPID, /proc/1 is the node's init: hostNetwork pods share
        // its namespace, where hoop keeps no per-pod listener.
        let host_netns = NetNs::of_pid(1).ok();
        let governor = Arc::new(PodSessions {
            pods: PodInterception::new(server.interceptor().clone(), sockets, host_netns),
            server: server.pod_server(),
            default_ports: self.ports.clone(),
            serving: Mutex::new(HashMap::new()),
        });
        let rules = OptInRules {
            exclude_namespaces: self.resolved.exclude_namespaces.clone(),
            agent_namespace: std::env::var(hoop_k8s::workload::env::POD_NAMESPACE).ok(),
            agent_pod_uid: std::env::var(hoop_k8s::workload::env::POD_UID).ok(),
            default_ports: self.ports.clone(),
        };
        let node = self.resolved.node_name.clone();
        let events = Arc::new(KubeEvents::spawn(
            client.clone(),
            format!("hoop-agent-{node}"),
        ));
        let mut reconciler = Reconciler::new(
            ReconcilerSettings::new(self.resolved.cgroup_root.clone(), rules),
            governor,
            self.board.clone(),
            self.metrics.clone(),
        )
        .with_events(events);
        let settings = DiscoverySettings {
            node_name: node,
            resync_interval: self.resolved.resync_interval,
            backoff: watch_backoff(),
        };
        if self.pin_root.is_some() {
            // Once every pod has been tried, pins an agent of another layout
            // version left (an upgrade) are no longer needed.
            let (board, interceptor) = (self.board.clone(), server.interceptor().clone());
            tokio::spawn(async move {
                board.wait_for(StatusBoard::synced).await;
                for dir in interceptor.retire_other_versions() {
                    info!(dir = %dir.display(), "removed another layout version's pins");
                }
            });
        }
        info!(node = %settings.node_name, cgroup_root = %self.resolved.cgroup_root.display(), pinned = ?self.pin_root, "node mode: governing this node's pods that opt in");
        Ok(tokio::spawn(async move {
            discovery::run(client, &settings, &mut reconciler, stopped).await;
        }))
    }
}

/// The watchers' retry backoff: kube-runtime's default, unless
/// `HOOP_K8S_WATCH_BACKOFF_MS` (tests) shortens its start.
fn watch_backoff() -> WatchBackoff {
    let mut backoff = WatchBackoff::default();
    if let Some(ms) = std::env::var("HOOP_K8S_WATCH_BACKOFF_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        backoff.initial = std::time::Duration::from_millis(ms.max(10));
        backoff.max = backoff.max.min(backoff.initial * 8);
    }
    backoff
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Node mode's governor: each governed pod's programs, listeners and the
/// proxy serving them.
pub struct PodSessions {
    pods: PodInterception,
    server: PodServer,
    default_ports: Vec<u16>,
    serving: Mutex<HashMap<String, PodListeners>>,
}

fn reason(e: &PodInterceptError) -> FailureReason {
    match e {
        PodInterceptError::Attach { .. } => FailureReason::Attach,
        PodInterceptError::Netns(_) => FailureReason::NetnsNotFound,
        PodInterceptError::HostNetwork => FailureReason::HostNetwork,
        PodInterceptError::Listen(_) => FailureReason::Listen,
        PodInterceptError::Target(_) | PodInterceptError::OwnedByNewer => FailureReason::Internal,
    }
}

impl PodGovernor for PodSessions {
    async fn govern(&self, request: &GovernRequest) -> Result<(), GovernError> {
        let uid = &request.workload.uid;
        // The default set is shared; only `hoop.dev/ports` pods keep their own.
        let ports = (request.ports != self.default_ports).then_some(request.ports.as_slice());
        let identity = Arc::new(request.workload.clone());
        match self.pods.govern(uid, &request.cgroup, ports).await {
            Ok(Governed::New { listeners, netns }) => {
                let serving =
                    match self
                        .server
                        .serve(listeners, netns, self.pods.sockets().clone(), identity)
                    {
                        Ok(serving) => serving,
                        Err(e) => {
                            // Nothing serves the target just written: start
                            // over at the retry rather than keep it.
                            let _ = self.pods.release(uid);
                            return Err(GovernError::new(FailureReason::Listen, e));
                        }
                    };
                lock(&self.serving).insert(uid.clone(), serving);
                info!(pod = %request.workload, cgroup = %request.cgroup.display(), "pod governed");
                Ok(())
            }
            Ok(Governed::Unchanged | Governed::Updated) => {
                if let Some(serving) = lock(&self.serving).get(uid) {
                    serving.set_identity(identity);
                }
                Ok(())
            }
            Err(e) => Err(GovernError::new(reason(&e), e)),
        }
    }

    async fn release(&self, uid: &str) -> Result<(), GovernError> {
        // Detach first: from here the pod's connects go direct, then its
        // listeners close (dropping what serves them).
        self.pods
            .release(uid)
            .map_err(|e| GovernError::new(FailureReason::Release, e))?;
        if lock(&self.serving).remove(uid).is_some() {
            info!(uid, "pod released; its listeners are closed");
        }
        Ok(())
    }

    async fn retain(&self, keep: &HashSet<String>) {
        for uid in self.pods.retain(keep) {
            lock(&self.serving).remove(&uid);
        }
    }
}

/// Sidecar mode's governor: the programs on this pod's cgroup; hoop's own
/// listeners (in the pod's namespace already) serve it.
struct OwnPod {
    interceptor: Arc<Interceptor>,
}

impl PodGovernor for OwnPod {
    async fn govern(&self, request: &GovernRequest) -> Result<(), GovernError> {
        self.interceptor
            .attach(&request.cgroup)
            .map(|_| ())
            .map_err(|e| GovernError::new(FailureReason::Attach, e))
    }

    async fn release(&self, _uid: &str) -> Result<(), GovernError> {
        Ok(())
    }

    async fn retain(&self, _keep: &HashSet<String>) {}
}
