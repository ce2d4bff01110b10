//! The reconciler: what the watchers want, compared with what is attached,
//! keyed by pod UID.
//!
//! It consumes the watchers' events ([`Reconciler::pod_event`],
//! [`Reconciler::namespace_event`]), a periodic [`Reconciler::resync`] and
//! its own retry timers ([`Reconciler::retry_due`]), and acts through a
//! [`PodGovernor`] the agent implements (attach the programs, bind the
//! listeners in the pod's network namespace, …).
//!
//! Rules it keeps:
//! - **Nothing happens before both watchers have listed once.** A pod may be
//!   governed only through its namespace's opt-in: acting on pods before the
//!   namespaces are known would release it (fail open) until they arrive.
//!   Attachments adopted from a previous agent stay in place meanwhile.
//! - **A re-list is the truth.** When a pod list ends (kube-runtime's
//!   `InitDone`, after a start, a restart or a 410 Gone), pods that were
//!   known but are not in it were deleted while nobody watched: they are
//!   released. After the very first sync, [`PodGovernor::retain`] sweeps
//!   whatever a previous agent left attached for pods that no longer exist.
//! - **Idempotent and isolated.** Every call is safe to repeat; an error on
//!   one pod is recorded on that pod (state, metric, retry with backoff) and
//!   never stops the others. Each governor call has a timeout.
//! - **A cgroup that does not exist yet** (the event came before the
//!   kubelet made it) is retried with backoff (50 ms doubling to 5 s) and by
//!   every resync; the pod is `pending` meanwhile.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{core::PartialObjectMeta, runtime::watcher};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{
    Workload,
    cgroup_path::{ScanLimits, resolve_pod_cgroup},
    events::{PodEvent, PodEvents},
    metrics::K8sMetrics,
    opt_in::{Decision, InvalidValue, OptInRules, evaluate},
    pod::{NamespaceInfo, PodInfo},
    status::{PodState, StatusBoard},
};

/// What the governor is asked to do for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernRequest {
    /// Who the pod is.
    pub workload: Workload,
    /// The pod-level cgroup v2 directory to attach at.
    pub cgroup: PathBuf,
    /// The intercepted destination ports for this pod.
    pub ports: Vec<u16>,
    /// `hoop.dev/require` (the pod's start-up gate waits for governance).
    pub require: bool,
    /// The pod shares the node's network namespace.
    pub host_network: bool,
}

/// Why governing or releasing a pod failed. Bounded: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The pod's cgroup does not exist (yet). Pending, not failed.
    CgroupNotFound,
    /// No process in the pod's cgroup yet, so no network namespace to
    /// listen in. Pending, not failed.
    NetnsNotFound,
    /// The pod shares the node's network namespace, which hoop does not
    /// listen in per pod.
    HostNetwork,
    /// Attaching the eBPF programs failed.
    Attach,
    /// Binding the listeners in the pod's network namespace failed.
    Listen,
    /// The pod's intercepted ports could not be applied.
    Ports,
    /// The governor did not answer in time.
    Timeout,
    /// Releasing the pod failed.
    Release,
    /// Anything else.
    Internal,
}

impl FailureReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CgroupNotFound => "cgroup_not_found",
            Self::NetnsNotFound => "netns_not_found",
            Self::HostNetwork => "host_network",
            Self::Attach => "attach",
            Self::Listen => "listen",
            Self::Ports => "ports",
            Self::Timeout => "timeout",
            Self::Release => "release",
            Self::Internal => "internal",
        }
    }

    /// True for conditions that resolve by themselves as the pod starts.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::CgroupNotFound | Self::NetnsNotFound)
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A governor's error: a bounded reason plus the cause.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct GovernError {
    /// The bounded reason.
    pub reason: FailureReason,
    /// What failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl GovernError {
    /// Wraps an error with its reason.
    pub fn new(
        reason: FailureReason,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            reason,
            source: source.into(),
        }
    }

    /// The error and its causes on one line.
    pub fn chain(&self) -> String {
        let mut out = self.reason.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self.source.as_ref());
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// What the agent does for a pod. Every method must be idempotent: the
/// reconciler repeats calls on resync and after errors.
pub trait PodGovernor: Send + Sync + 'static {
    /// Makes the pod governed as `request` says: programs attached to
    /// `request.cgroup`, listeners bound in the pod's network namespace, the
    /// redirect target set. Called again with a different request when the
    /// pod's ports, identity or cgroup change; a call with the same request
    /// must be cheap. On error, whatever was done may stay in place: the
    /// reconciler calls [`PodGovernor::release`] when the pod is no longer
    /// wanted, and retries otherwise.
    fn govern(
        &self,
        request: &GovernRequest,
    ) -> impl Future<Output = Result<(), GovernError>> + Send;

    /// Undoes everything for the pod (detach, close its listeners). A pod
    /// that is not governed is `Ok`.
    fn release(&self, uid: &str) -> impl Future<Output = Result<(), GovernError>> + Send;

    /// Called once, after the first full sync: release everything held
    /// (e.g. adopted from a previous agent) for pods not in `keep`.
    fn retain(&self, keep: &HashSet<String>) -> impl Future<Output = ()> + Send;
}

/// Retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's delay.
    pub initial: Duration,
    /// The cap for pending pods (their cgroup or netns should appear soon).
    pub max_pending: Duration,
    /// The cap for failed pods.
    pub max_failed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max_pending: Duration::from_secs(5),
            max_failed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0-based): doubling from
    /// `initial`, capped by the pending or failed cap.
    pub fn delay_for(&self, attempt: u32, pending: bool) -> Duration {
        self.delay(attempt, pending)
    }

    fn delay(&self, attempt: u32, pending: bool) -> Duration {
        let cap = if pending {
            self.max_pending
        } else {
            self.max_failed
        };
        self.initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(cap)
    }
}

/// The reconciler's settings.
#[derive(Debug, Clone)]
pub struct ReconcilerSettings {
    /// The cgroup directory the kubepods tree is under.
    pub cgroup_root: PathBuf,
    /// The opt-in rules (exclusions, agent identity, default ports).
    pub rules: OptInRules,
    /// Retry timing.
    pub retry: RetryPolicy,
    /// The longest a governor call may take.
    pub govern_timeout: Duration,
    /// Limits of the cgroup fallback scan.
    pub scan_limits: ScanLimits,
}

impl ReconcilerSettings {
    /// Settings with the defaults for everything but the root and rules.
    pub fn new(cgroup_root: PathBuf, rules: OptInRules) -> Self {
        Self {
            cgroup_root,
            rules,
            retry: RetryPolicy::default(),
            govern_timeout: Duration::from_secs(10),
            scan_limits: ScanLimits::default(),
        }
    }
}

/// What the reconciler did for one pod.
#[derive(Debug, Default)]
struct Tracked {
    /// The last request the governor accepted.
    applied: Option<GovernRequest>,
    /// The governor has been called for this pod (it may hold something).
    touched: bool,
    /// Pending retry: attempt number and when.
    retry: Option<(u32, Instant)>,
    /// When the pod was first wanted governed (for the latency histogram).
    wanted_since: Option<Instant>,
}

/// The reconciler. Single-threaded: one task owns it and feeds it events.
pub struct Reconciler<G> {
    settings: ReconcilerSettings,
    governor: Arc<G>,
    board: StatusBoard,
    metrics: K8sMetrics,
    pods: HashMap<String, PodInfo>,
    namespaces: HashMap<String, NamespaceInfo>,
    pod_list: Option<HashMap<String, PodInfo>>,
    namespace_list: Option<HashMap<String, NamespaceInfo>>,
    pods_listed: bool,
    namespaces_listed: bool,
    swept: bool,
    tracked: HashMap<String, Tracked>,
    reported_invalid: HashSet<(String, &'static str, String)>,
    events: Option<Arc<dyn PodEvents>>,
}

impl<G: PodGovernor> Reconciler<G> {
    /// A reconciler with nothing known yet.
    pub fn new(
        settings: ReconcilerSettings,
        governor: Arc<G>,
        board: StatusBoard,
        metrics: K8sMetrics,
    ) -> Self {
        Self {
            settings,
            governor,
            board,
            metrics,
            pods: HashMap::new(),
            namespaces: HashMap::new(),
            pod_list: None,
            namespace_list: None,
            pods_listed: false,
            namespaces_listed: false,
            swept: false,
            tracked: HashMap::new(),
            reported_invalid: HashSet::new(),
            events: None,
        }
    }

    /// Also records Kubernetes Events (governed, released, failed, invalid
    /// values) through `events`.
    #[must_use]
    pub fn with_events(mut self, events: Arc<dyn PodEvents>) -> Self {
        self.events = Some(events);
        self
    }

    fn event(&self, pod: &Workload, event: PodEvent) {
        if let Some(events) = &self.events {
            events.publish(pod, event);
        }
    }

    /// The status board this reconciler writes.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// True once both watchers have listed at least once.
    pub fn synced(&self) -> bool {
        self.pods_listed && self.namespaces_listed
    }

    /// Counts an API error (list/watch failure) for `resource`.
    pub fn api_error(&self, resource: &'static str, error: &watcher::Error) {
        let reason = match error {
            watcher::Error::InitialListFailed(_) => "list",
            watcher::Error::WatchStartFailed(_) => "watch_start",
            watcher::Error::WatchError(status) if status.code == 410 => "gone",
            watcher::Error::WatchError(_) => "watch_event",
            watcher::Error::WatchFailed(_) => "watch",
            watcher::Error::NoResourceVersion => "no_resource_version",
        };
        self.metrics
            .api_errors_total
            .with_label_values(&[resource, reason])
            .inc();
        warn!(resource, reason, error = %error_chain(error), "Kubernetes API error; the watcher retries with backoff and governed pods stay governed");
    }

    fn malformed(&self, resource: &'static str, error: &crate::pod::Malformed) {
        self.metrics
            .api_errors_total
            .with_label_values(&[resource, "malformed"])
            .inc();
        warn!(resource, error = %error, "ignoring a malformed object from the API server");
    }

    /// Feeds one pod watcher event.
    pub async fn pod_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.pod_list = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => match PodInfo::from_pod(&pod) {
                Ok(info) => {
                    self.pod_list
                        .get_or_insert_with(HashMap::new)
                        .insert(info.uid().to_owned(), info);
                }
                Err(e) => self.malformed("pods", &e),
            },
            watcher::Event::InitDone => {
                let listed = self.pod_list.take().unwrap_or_default();
                let before: HashSet<String> = self.pods.keys().cloned().collect();
                self.pods = listed;
                let gone: Vec<String> = before
                    .into_iter()
                    .filter(|uid| !self.pods.contains_key(uid))
                    .collect();
                if !gone.is_empty() {
                    info!(
                        count = gone.len(),
                        "pods deleted while the watch was down are released"
                    );
                }
                self.pods_listed = true;
                self.after_list().await;
            }
            watcher::Event::Apply(pod) => match PodInfo::from_pod(&pod) {
                Ok(info) => {
                    let uid = info.uid().to_owned();
                    self.pods.insert(uid.clone(), info);
                    if self.synced() {
                        self.sync_pod(&uid, false).await;
                    }
                }
                Err(e) => self.malformed("pods", &e),
            },
            watcher::Event::Delete(pod) => {
                // A deleted pod needs only its UID; the rest may be partial.
                let Some(uid) = pod.metadata.uid.clone() else {
                    self.malformed(
                        "pods",
                        &crate::pod::Malformed {
                            kind: "Pod",
                            name: pod.metadata.name.clone().unwrap_or_default(),
                            problem: "deleted pod without metadata.uid",
                        },
                    );
                    return;
                };
                self.pods.remove(&uid);
                if self.synced() {
                    self.sync_pod(&uid, false).await;
                }
            }
        }
    }

    /// Feeds one namespace (metadata) watcher event.
    pub async fn namespace_event(&mut self, event: watcher::Event<PartialObjectMeta<Namespace>>) {
        match event {
            watcher::Event::Init => self.namespace_list = Some(HashMap::new()),
            watcher::Event::InitApply(ns) => match NamespaceInfo::from_meta(&ns) {
                Ok(info) => {
                    self.namespace_list
                        .get_or_insert_with(HashMap::new)
                        .insert(info.name.clone(), info);
                }
                Err(e) => self.malformed("namespaces", &e),
            },
            watcher::Event::InitDone => {
                self.namespaces = self.namespace_list.take().unwrap_or_default();
                self.reported_invalid
                    .retain(|(scope, ..)| !scope.starts_with("namespace/"));
                self.namespaces_listed = true;
                self.after_list().await;
            }
            watcher::Event::Apply(ns) => match NamespaceInfo::from_meta(&ns) {
                Ok(info) => {
                    let name = info.name.clone();
                    let changed = self.namespaces.get(&name) != Some(&info);
                    self.namespaces.insert(name.clone(), info);
                    if changed && self.synced() {
                        self.sync_namespace(&name).await;
                    }
                }
                Err(e) => self.malformed("namespaces", &e),
            },
            watcher::Event::Delete(ns) => {
                let Some(name) = ns.metadata.name.clone() else {
                    return;
                };
                self.namespaces.remove(&name);
                let scope = format!("namespace/{name}");
                self.reported_invalid.retain(|(s, ..)| *s != scope);
                if self.synced() {
                    self.sync_namespace(&name).await;
                }
            }
        }
    }

    /// A list ended: reconcile everything, and sweep after the first sync.
    async fn after_list(&mut self) {
        if !self.synced() {
            return;
        }
        self.sync_all(false).await;
        if !self.swept {
            self.swept = true;
            let keep: HashSet<String> = self
                .tracked
                .iter()
                .filter(|(_, t)| t.touched)
                .map(|(uid, _)| uid.clone())
                .collect();
            self.governor.retain(&keep).await;
            self.board.mark_synced();
            info!(
                governed = keep.len(),
                pods = self.pods.len(),
                "initial Kubernetes sync done"
            );
        }
    }

    /// Re-checks every pod: catches cgroups that appeared without an event
    /// and repairs attachments removed behind hoop's back (the governor's
    /// `govern` is called again for every governed pod).
    pub async fn resync(&mut self) {
        if self.synced() {
            self.sync_all(true).await;
        }
    }

    /// When the next retry is due, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.tracked
            .values()
            .filter_map(|t| t.retry.map(|r| r.1))
            .min()
    }

    /// Runs the retries that are due.
    pub async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.retry.is_some_and(|(_, at)| at <= now))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in due {
            self.sync_pod(&uid, true).await;
        }
    }

    async fn sync_all(&mut self, force: bool) {
        let mut uids: Vec<String> = self.pods.keys().cloned().collect();
        uids.extend(
            self.tracked
                .keys()
                .filter(|u| !self.pods.contains_key(*u))
                .cloned(),
        );
        for uid in uids {
            self.sync_pod(&uid, force).await;
        }
        self.metrics.update_pods(&self.board);
    }

    async fn sync_namespace(&mut self, name: &str) {
        let uids: Vec<String> = self
            .pods
            .values()
            .filter(|p| p.workload.namespace == name)
            .map(|p| p.uid().to_owned())
            .collect();
        for uid in uids {
            self.sync_pod(&uid, false).await;
        }
    }

    /// Brings one pod to what is wanted. `force` calls the governor even
    /// when the request is unchanged (resync and retries).
    async fn sync_pod(&mut self, uid: &str, force: bool) {
        let wanted = self.pods.get(uid).and_then(|pod| {
            let ns = self.namespaces.get(&pod.workload.namespace);
            let evaluation = evaluate(
                &pod.facts(),
                ns.map(|n| n.facts()).as_ref(),
                &self.settings.rules,
            );
            let scope_of = |level: &str| match level {
                "pod" => format!("pod/{uid}"),
                _ => format!("namespace/{}", pod.workload.namespace),
            };
            let invalid: Vec<(String, InvalidValue)> = evaluation
                .invalid
                .into_iter()
                .map(|i| (scope_of(i.source.level()), i))
                .collect();
            match evaluation.decision {
                Decision::Govern(g) => Some((pod.clone(), g, invalid)),
                Decision::Skip(reason) => {
                    debug!(pod = %pod.workload, reason = reason.as_str(), "not governed");
                    None
                }
            }
        });
        match wanted {
            Some((pod, governed, invalid)) => {
                for (scope, value) in invalid {
                    self.report_invalid(scope, &pod.workload, &value);
                }
                self.govern(
                    pod,
                    governed.ports,
                    governed.require,
                    governed.host_network,
                    force,
                )
                .await;
            }
            None => self.release(uid).await,
        }
        self.metrics.update_pods(&self.board);
    }

    fn report_invalid(&mut self, scope: String, workload: &Workload, value: &InvalidValue) {
        let key = (scope, value.key, value.value.clone());
        if self.reported_invalid.insert(key) {
            self.metrics
                .invalid_opt_in_total
                .with_label_values(&[value.key, value.source.level()])
                .inc();
            warn!(pod = %workload, "{value}");
            self.event(
                workload,
                PodEvent::InvalidValue {
                    message: value.to_string(),
                },
            );
        }
    }

    async fn govern(
        &mut self,
        pod: PodInfo,
        ports: Vec<u16>,
        require: bool,
        host_network: bool,
        force: bool,
    ) {
        let uid = pod.uid().to_owned();
        let now = Instant::now();
        let tracked = self.tracked.entry(uid.clone()).or_default();
        // The histogram measures how long an ungoverned pod waits, from the
        // first event that wanted it governed; not resyncs or updates.
        if tracked.applied.is_none() {
            tracked.wanted_since.get_or_insert(now);
        }

        let Some(found) = resolve_pod_cgroup(
            &self.settings.cgroup_root,
            &uid,
            pod.qos,
            self.settings.scan_limits,
        ) else {
            let err = GovernError::new(
                FailureReason::CgroupNotFound,
                format!(
                    "no cgroup for pod UID {uid} under {} (checked every kubelet layout, then scanned); \
                     if the pod is running, compare with `crictl inspectp -o json <pod-id> | grep cgroupsPath`",
                    self.settings.cgroup_root.display()
                ),
            );
            self.record_failure(&pod.workload, &ports, &err);
            return;
        };
        let request = GovernRequest {
            workload: pod.workload.clone(),
            cgroup: found.into_path(),
            ports,
            require,
            host_network,
        };
        let tracked = self.tracked.entry(uid.clone()).or_default();
        if !force && tracked.applied.as_ref() == Some(&request) {
            return;
        }
        tracked.touched = true;
        let result = match tokio::time::timeout(
            self.settings.govern_timeout,
            self.governor.govern(&request),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(GovernError::new(
                FailureReason::Timeout,
                format!(
                    "governing took longer than {}",
                    humantime::format_duration(self.settings.govern_timeout)
                ),
            )),
        };
        match result {
            Ok(()) => {
                let tracked = self.tracked.entry(uid.clone()).or_default();
                let first = tracked.applied.is_none();
                let changed = tracked.applied.as_ref() != Some(&request);
                tracked.retry = None;
                tracked.applied = Some(request.clone());
                if let Some(since) = tracked.wanted_since.take() {
                    self.metrics
                        .govern_seconds
                        .observe(since.elapsed().as_secs_f64());
                }
                self.board
                    .set(&request.workload, &request.ports, PodState::Governed);
                if changed {
                    self.event(
                        &request.workload,
                        PodEvent::Governed {
                            ports: request.ports.clone(),
                        },
                    );
                    info!(
                        pod = %request.workload,
                        uid = %uid,
                        cgroup = %request.cgroup.display(),
                        ports = ?request.ports,
                        update = !first,
                        "pod governed"
                    );
                }
            }
            Err(e) => {
                if let Some(t) = self.tracked.get_mut(&uid) {
                    t.applied = None;
                }
                self.record_failure(&request.workload, &request.ports, &e);
            }
        }
    }

    fn record_failure(&mut self, workload: &Workload, ports: &[u16], error: &GovernError) {
        let pending = error.reason.is_pending();
        let tracked = self.tracked.entry(workload.uid.clone()).or_default();
        tracked.applied = None;
        let attempt = tracked.retry.map_or(0, |(n, _)| n.saturating_add(1));
        let delay = self.settings.retry.delay(attempt, pending);
        tracked.retry = Some((attempt, Instant::now() + delay));
        let state = if pending {
            PodState::Pending {
                reason: error.reason.as_str(),
            }
        } else {
            PodState::Failed {
                reason: error.reason.as_str(),
                message: error.chain(),
            }
        };
        let previous = self.board.pod(&workload.uid).map(|p| p.state);
        if previous.as_ref().map(PodState::reason) != Some(state.reason()) {
            if !pending {
                self.event(
                    workload,
                    PodEvent::Failed {
                        reason: error.reason.as_str(),
                        message: error.chain(),
                    },
                );
            }
            if pending {
                info!(pod = %workload, reason = error.reason.as_str(), retry_in = ?delay, error = %error.chain(), "pod not governable yet; retrying");
            } else {
                warn!(pod = %workload, reason = error.reason.as_str(), retry_in = ?delay, error = %error.chain(), "governing the pod failed; retrying");
            }
        }
        self.board.set(workload, ports, state);
    }

    async fn release(&mut self, uid: &str) {
        let Some(tracked) = self.tracked.get(uid) else {
            self.board.remove(uid);
            return;
        };
        if !tracked.touched {
            self.tracked.remove(uid);
            self.board.remove(uid);
            return;
        }
        let result =
            match tokio::time::timeout(self.settings.govern_timeout, self.governor.release(uid))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(GovernError::new(
                    FailureReason::Timeout,
                    "releasing took too long",
                )),
            };
        match result {
            Ok(()) => {
                info!(uid, "pod released");
                if let Some(status) = self.board.pod(uid) {
                    self.event(&status.workload, PodEvent::Released);
                }
                self.tracked.remove(uid);
                self.board.remove(uid);
                let scope = format!("pod/{uid}");
                self.reported_invalid.retain(|(s, ..)| *s != scope);
            }
            Err(e) => {
                warn!(uid, error = %e.chain(), "releasing the pod failed; retrying");
                if let Some(t) = self.tracked.get_mut(uid) {
                    t.applied = None;
                    let attempt = t.retry.map_or(0, |(n, _)| n.saturating_add(1));
                    t.retry = Some((
                        attempt,
                        Instant::now() + self.settings.retry.delay(attempt, false),
                    ));
                }
            }
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
