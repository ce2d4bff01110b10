//! What `hoop exec` and `hoop agent` share: the eBPF interceptor, the proxy
//! listeners, the admin API, and the accept loop that turns each redirected
//! connection into a proxied session.

use std::{
    net::{SocketAddr, SocketAddrV6},
    path::PathBuf,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tracing::{debug, info, warn};

use hoop_config::{Config, InterceptConfig};
use hoop_core::{PodIdentity, Protocol, SessionIdentity, metrics::metrics};
use hoop_credentials::CredentialHandle;
use hoop_govern::{Governors, RegistryBroker};
use hoop_hold::HoldRegistry;
use hoop_mysql::MysqlProxyContext;
use hoop_pg::{CatalogStore, PgProxyContext, SessionError};
use hoop_policy::reload::PolicyHandle;
use hoop_record::Recorder;
use hoop_relay::dial::Dialer;

use crate::intercept::{
    self, InterceptSettings, Interceptor, LoadOptions,
    netns::{Family, LoopbackListeners, NetNs, NetnsSockets},
};

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A proxy listener could not be bound.
    #[error("cannot listen on {addr} for redirected connections: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS certificate, key or CA bundle could not be loaded.
    #[error("tls: {0}")]
    Tls(#[source] hoop_relay::tls::TlsError),
    /// The eBPF programs could not be loaded or attached.
    #[error(transparent)]
    Intercept(#[from] intercept::InterceptError),
}

/// What every session is governed by: the live policy and credentials,
/// the recorder and the hold registry. Cheap to clone.
#[derive(Clone)]
pub struct Governance {
    /// The live policy (hot-reloaded).
    pub policy: PolicyHandle,
    /// The credentials hoop injects (hot-reloaded with the policy).
    pub credentials: CredentialHandle,
    /// Session recordings.
    pub recorder: Recorder,
    /// Pending and recent holds.
    pub holds: HoldRegistry,
}

/// How [`Server::start_with`] differs from a plain `hoop exec` server.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Pin maps and links (and adopt a previous agent's), see [`LoadOptions`].
    pub pin_root: Option<PathBuf>,
    /// Every session on the server's own listeners belongs to this pod
    /// (sidecar mode: hoop runs inside the pod).
    pub pod: Option<Arc<PodIdentity>>,
}

/// The running machinery: interceptor, listeners and accept loops.
pub struct Server {
    interceptor: Arc<Interceptor>,
    /// Listener addresses, for logs and tests.
    pub listen_v4: SocketAddr,
    /// The IPv6 listener, when `::1` is available.
    pub listen_v6: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    redirects_seen: Arc<AtomicU64>,
    base: Arc<ConnectionContext>,
}

impl Server {
    /// Binds the listeners and loads the eBPF programs (not yet attached).
    pub fn start(config: &Config, governance: &Governance) -> Result<Self, ServeError> {
        Self::start_with(config, governance, &ServeOptions::default())
    }

    /// [`Server::start`] with pinning and a pod identity for the own listeners.
    pub fn start_with(
        config: &Config,
        governance: &Governance,
        options: &ServeOptions,
    ) -> Result<Self, ServeError> {
        let v4 = bind(config.intercept.listen_v4)?;
        let listen_v4 = v4.local_addr().map_err(|source| ServeError::Listen {
            addr: config.intercept.listen_v4,
            source,
        })?;
        // IPv6 may be disabled on the host: then IPv6 connects are not redirected.
        let (v6, listen_v6) = match bind(config.intercept.listen_v6) {
            Ok(l) => {
                let a = l.local_addr().ok();
                (Some(l), a)
            }
            Err(e) => {
                warn!(error = %e, "IPv6 proxy listener unavailable; IPv6 connections will not be intercepted");
                (None, None)
            }
        };
        let SocketAddr::V4(proxy_v4) = listen_v4 else {
            unreachable!("intercept.listen_v4 is validated to be IPv4")
        };
        let proxy_v6 = match listen_v6 {
            Some(SocketAddr::V6(a)) => a,
            _ => SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, 0, 0, 0),
        };
        // hoop's own sockets are skipped by its process id, and by the skip
        // mark in its own network namespace. A sidecar's namespace is the
        // pod's, where the application could set that mark itself: there,
        // only the process id counts.
        let mark = options
            .pod
            .is_none()
            .then_some(intercept::DEFAULT_SKIP_MARK);
        let settings = InterceptSettings {
            ports: config.intercept.ports.clone(),
            proxy_v4,
            proxy_v6,
            skip_mark: mark.unwrap_or(0),
            skip_tgid: std::process::id(),
        };
        let load = LoadOptions {
            pin_root: options.pin_root.clone(),
        };
        let interceptor = Arc::new(Interceptor::load_with(&settings, &load)?);
        let (shutdown, _) = watch::channel(false);
        let dialer = Dialer::from_config(&config.proxy, mark);
        let password = config
            .proxy
            .catalog_password_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok());
        let credentials: Arc<dyn hoop_core::CredentialSource> =
            Arc::new(governance.credentials.clone());
        let catalog = Arc::new(
            CatalogStore::new(dialer, config.proxy.catalog_user.clone(), password)
                .with_credentials(credentials.clone()),
        );
        let governors = Arc::new(Governors::new(
            governance.policy.clone(),
            governance.recorder.clone(),
            config.recording.rows,
        ));
        let broker = Arc::new(RegistryBroker::new(
            governance.holds.clone(),
            governance.policy.clone(),
        ));
        let mysql = MysqlProxyContext::from_config(config, mark, governors.clone(), broker.clone())
            .map_err(ServeError::Tls)?;
        let mut pg = PgProxyContext::from_config(config, mark, governors, Some(catalog), broker)
            .map_err(ServeError::Tls)?;
        pg.hold_reminder_interval = config.proxy.hold_reminder_interval;
        pg.credentials = credentials;
        let ctx = Arc::new(ConnectionContext {
            interceptor: interceptor.clone(),
            intercept: config.intercept.clone(),
            pg: Arc::new(pg),
            mysql: Arc::new(mysql),
            pod: options.pod.clone().map(|identity| PodBinding {
                netns_cookie: None,
                identity: Arc::new(RwLock::new(identity)),
            }),
        });
        let mut server = Self {
            interceptor,
            listen_v4,
            listen_v6,
            shutdown,
            tasks: JoinSet::new(),
            redirects_seen: Arc::new(AtomicU64::new(0)),
            base: ctx.clone(),
        };
        server.spawn_accept_loop(v4, ctx.clone());
        if let Some(v6) = v6 {
            server.spawn_accept_loop(v6, ctx);
        }
        info!(%listen_v4, listen_v6 = ?listen_v6, ports = ?config.intercept.ports, "proxy listening");
        Ok(server)
    }

    /// Attaches the programs to a cgroup v2 directory.
    pub fn attach(&self, cgroup: &std::path::Path) -> Result<(), ServeError> {
        if self.interceptor.attach(cgroup)? != intercept::AttachOutcome::AlreadyAttached {
            info!(cgroup = %cgroup.display(), "governing cgroup");
        }
        Ok(())
    }

    /// The interceptor (Kubernetes pods are attached through it).
    pub fn interceptor(&self) -> &Arc<Interceptor> {
        &self.interceptor
    }

    /// Serves pods' listeners with this server's drivers and governance.
    pub fn pod_server(&self) -> PodServer {
        PodServer {
            base: self.base.clone(),
            shutdown: self.shutdown.subscribe(),
        }
    }

    /// Brings `hoop_ebpf_redirects_total` up to the kernel's counters.
    pub fn refresh_metrics(&self) {
        refresh_redirects(&self.interceptor, &self.redirects_seen);
    }

    /// A closure for the admin API to refresh kernel-side metrics before a scrape.
    pub fn metrics_refresher(&self) -> impl Fn() + Send + Sync + 'static {
        let interceptor = self.interceptor.clone();
        let seen = self.redirects_seen.clone();
        move || refresh_redirects(&interceptor, &seen)
    }

    /// Stops accepting, waits briefly for sessions to end, then drops the
    /// interceptor, which detaches every program.
    pub async fn shutdown(mut self, grace: Duration) {
        self.refresh_metrics();
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        // Dropping the last reference to the Ebpf object closes the link fds.
        drop(self.interceptor);
    }

    fn spawn_accept_loop(&mut self, listener: TcpListener, ctx: Arc<ConnectionContext>) {
        let shutdown = self.shutdown.subscribe();
        // The server's own listeners stop only with the server.
        self.tasks.spawn(accept_loop(listener, ctx, shutdown, None));
    }
}

/// Accepts redirected connections on `listener` until `shutdown` (the
/// server's) changes, or `stop` (this listener's, if it has one) turns true
/// or its sender is dropped; then lets live sessions finish.
async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ConnectionContext>,
    mut shutdown: watch::Receiver<bool>,
    stop: Option<watch::Receiver<bool>>,
) {
    let stopped = async move {
        match stop {
            Some(mut stop) => {
                let _ = stop.wait_for(|s| *s).await;
            }
            None => std::future::pending().await,
        }
    };
    let mut stopped = std::pin::pin!(stopped);
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Replies go out as soon as they are relayed, as
                    // they would from the server itself.
                    if let Err(e) = socket.set_nodelay(true) {
                        debug!(client = %peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    let ctx = ctx.clone();
                    sessions.spawn(async move { ctx.handle(socket, peer).await });
                }
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown.changed() => break,
            () = &mut stopped => break,
        }
    }
    // The listener closes here; live sessions finish (within the server's
    // grace period at shutdown).
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// Serves the listeners hoop binds inside Kubernetes pods' network
/// namespaces. Cheap to clone.
#[derive(Clone)]
pub struct PodServer {
    base: Arc<ConnectionContext>,
    shutdown: watch::Receiver<bool>,
}

/// A pod's listeners being served; dropping it closes them (live sessions
/// go on to their end).
pub struct PodListeners {
    identity: Arc<RwLock<Arc<PodIdentity>>>,
    _stop: watch::Sender<bool>,
}

impl PodListeners {
    /// The pod's identity changed (labels, service account…): its next
    /// sessions carry the new one.
    pub fn set_identity(&self, identity: Arc<PodIdentity>) {
        *self
            .identity
            .write()
            .unwrap_or_else(PoisonError::into_inner) = identity;
    }
}

impl PodServer {
    /// Serves `listeners`, bound in the pod's namespace `netns`: each
    /// connection's original destination is looked up under the namespace's
    /// cookie, its session carries `identity`, and its upstream leg is dialed
    /// from inside `netns` through `sockets`. Canary connections (`hoop
    /// await`) are answered with the pod's name.
    pub fn serve(
        &self,
        listeners: LoopbackListeners,
        netns: Arc<NetNs>,
        sockets: NetnsSockets,
        identity: Arc<PodIdentity>,
    ) -> std::io::Result<PodListeners> {
        let mut pg = (*self.base.pg).clone();
        // No SO_MARK in the pod's namespace: the agent's socket is outside
        // every governed cgroup anyway, and a mark there could meet the
        // CNI's own fwmark routing.
        pg.dialer.mark = None;
        let pod_sockets: Arc<dyn hoop_relay::dial::SocketFactory> =
            Arc::new(PodSockets { sockets, netns });
        pg.dialer.sockets = Some(pod_sockets.clone());
        // MySQL's upstream legs leave from the pod the same way.
        let mut mysql = (*self.base.mysql).clone();
        mysql.dialer.mark = None;
        mysql.dialer.sockets = Some(pod_sockets);
        // The catalog's side connections leave from the pod too.
        pg.catalog = pg
            .catalog
            .as_ref()
            .map(|catalog| Arc::new(catalog.with_dialer(pg.dialer.clone())));
        let identity = Arc::new(RwLock::new(identity));
        let ctx = Arc::new(ConnectionContext {
            interceptor: self.base.interceptor.clone(),
            intercept: self.base.intercept.clone(),
            pg: Arc::new(pg),
            mysql: Arc::new(mysql),
            pod: Some(PodBinding {
                netns_cookie: Some(listeners.netns_cookie),
                identity: identity.clone(),
            }),
        });
        let (stop, stopped) = watch::channel(false);
        for listener in std::iter::once(listeners.v4).chain(listeners.v6) {
            let listener = TcpListener::from_std(listener)?;
            tokio::spawn(accept_loop(
                listener,
                ctx.clone(),
                self.shutdown.clone(),
                Some(stopped.clone()),
            ));
        }
        Ok(PodListeners {
            identity,
            _stop: stop,
        })
    }
}

/// Upstream sockets made inside a pod's network namespace.
struct PodSockets {
    sockets: NetnsSockets,
    netns: Arc<NetNs>,
}

impl std::fmt::Debug for PodSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSockets")
            .field("netns", &self.netns.inode())
            .finish_non_exhaustive()
    }
}

impl hoop_relay::dial::SocketFactory for PodSockets {
    fn socket(
        &self,
        v6: bool,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<std::os::fd::OwnedFd>> + Send + '_>>
    {
        let family = if v6 { Family::V6 } else { Family::V4 };
        Box::pin(self.sockets.socket(&self.netns, family))
    }
}

fn refresh_redirects(interceptor: &Interceptor, seen: &AtomicU64) {
    let counters = interceptor.counters();
    match counters {
        Ok(c) => {
            let total = c.redirects_total();
            let before = seen.swap(total, Ordering::Relaxed);
            if total > before {
                metrics().ebpf_redirects_total.inc_by(total - before);
            }
        }
        Err(e) => warn!(error = %e, "cannot read eBPF counters"),
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        s.listen(1024)
    });
    socket.map_err(|source| ServeError::Listen { addr, source })
}

/// What each connection task needs: the interceptor (for the original
/// destination), the port → protocol map, and one driver per protocol.
struct ConnectionContext {
    interceptor: Arc<Interceptor>,
    intercept: InterceptConfig,
    pg: Arc<PgProxyContext>,
    mysql: Arc<MysqlProxyContext>,
    /// The pod whose listeners these are (node mode), or that hoop runs in
    /// (sidecar mode).
    pod: Option<PodBinding>,
}

/// The pod a listener belongs to.
struct PodBinding {
    /// The cookie of the pod's network namespace, where its listeners are
    /// (`None`: hoop's own namespace).
    netns_cookie: Option<u64>,
    /// Who the pod is (updated when the pod changes).
    identity: Arc<RwLock<Arc<PodIdentity>>>,
}

impl PodBinding {
    fn identity(&self) -> Arc<PodIdentity> {
        self.identity
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ConnectionContext {
    /// The client's cgroup, as `/proc/PID/cgroup` names it (relative to the
    /// cgroup2 mount): from the connecting process, or — if it is already
    /// gone — from the cgroup id the kernel recorded at connect time.
    fn workload(&self, original: &intercept::OriginalDestination) -> Option<String> {
        intercept::cgroup::cgroup_path_of_pid(original.tgid).or_else(|| {
            let path = self.interceptor.cgroup_path(original.cgroup_id)?;
            let root = intercept::cgroup::cgroup2_root().ok()?;
            let relative = path.strip_prefix(&root).ok()?;
            Some(format!("/{}", relative.display()))
        })
    }

    async fn handle(&self, mut client: TcpStream, peer: SocketAddr) {
        let m = metrics();
        let original = match self.pod.as_ref().and_then(|p| p.netns_cookie) {
            Some(cookie) => self.interceptor.original_destination_in(cookie, peer),
            None => self.interceptor.original_destination(peer),
        };
        let original = match original {
            Ok(Some(o)) => o,
            Ok(None) => {
                // Not a redirected connection (someone dialled the listener
                // directly): there is no destination to govern. Fail closed.
                m.connection_errors_total
                    .with_label_values(&["no_original_destination"])
                    .inc();
                warn!(client = %peer, "connection without an original destination; closing");
                return;
            }
            Err(e) => {
                m.connection_errors_total
                    .with_label_values(&["no_original_destination"])
                    .inc();
                warn!(client = %peer, error = %e, "cannot look up the original destination; closing");
                return;
            }
        };
        let pod = self.pod.as_ref().map(PodBinding::identity);
        if hoop_k8s::canary::is_canary(&original.addr) {
            // `hoop await` asking whether this pod is governed: it is.
            if let Some(pod) = &pod {
                debug!(%pod, "start-up gate canary answered");
                let _ = hoop_k8s::canary::answer(&mut client, &pod.to_string()).await;
            }
            return;
        }
        m.connections_total.inc();
        m.connections_active.inc();
        let _active = scopeguard(|| m.connections_active.dec());

        let protocol = self.intercept.protocol(original.addr.port());
        let identity = SessionIdentity {
            id: next_session_id(),
            protocol,
            workload: self.workload(&original),
            client: Some(peer),
            original_destination: Some(original.addr),
            pod,
            ..SessionIdentity::default()
        };
        debug!(session = %identity, "redirected connection accepted");
        let upstream = original.addr;
        // Each protocol's driver; `intercept.protocols` names only
        // protocols with a driver (checked when the file is loaded).
        // Each driver's failure, as the process metrics count it.
        let result: Result<(), SessionEnd> = match protocol {
            Protocol::Postgres => hoop_pg::serve(self.pg.clone(), client, identity, upstream)
                .await
                .map_err(|e| match e {
                    SessionError::Dial(e) => SessionEnd::Unreachable(e),
                    e => SessionEnd::Failed(e.reason()),
                }),
            Protocol::Mysql => hoop_mysql::serve(self.mysql.clone(), client, identity, upstream)
                .await
                .map_err(|e| match e {
                    hoop_mysql::SessionError::Dial(e) => SessionEnd::Unreachable(e),
                    e => SessionEnd::Failed(e.reason()),
                }),
        };
        match result {
            Ok(()) => {}
            Err(SessionEnd::Unreachable(e)) => {
                m.upstream_connect_errors_total.inc();
                warn!(%upstream, error = %e, "cannot reach the original destination; the client was told and closed");
            }
            Err(SessionEnd::Failed(reason)) => {
                m.connection_errors_total.with_label_values(&[reason]).inc();
            }
        }
    }
}

/// How a session that did not end cleanly ended, whatever its protocol.
enum SessionEnd {
    /// The original destination could not be reached.
    Unreachable(hoop_relay::dial::DialError),
    /// Any other failure, by its metric reason.
    Failed(&'static str),
}

/// A process-unique, sortable session id: `<unix-ms>-<pid>-<n>`.
pub fn next_session_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{ms}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

struct ScopeGuard<F: FnMut()>(F);
impl<F: FnMut()> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
fn scopeguard<F: FnMut()>(f: F) -> ScopeGuard<F> {
    ScopeGuard(f)
}
