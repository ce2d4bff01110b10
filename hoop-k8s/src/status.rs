//! What is governed right now, for `/ready`, `hoop await` and the metrics.
//!
//! The reconciler (or the sidecar loop) writes it; the admin API reads it.
//! [`StatusBoard::ready`] is the `/ready` answer:
//! - node mode: the watchers have listed pods and namespaces at least once
//!   and every opted-in pod has been tried once (the DaemonSet's readiness,
//!   which `maxUnavailable: 0` rollouts wait for);
//! - sidecar mode: this pod's programs are attached and its listener is
//!   bound, so a native sidecar's startup probe holds the application
//!   containers back until their connections are governed.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::Instant,
};

use serde::Serialize;
use tokio::sync::watch;

use crate::Workload;

/// Where one opted-in pod stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PodState {
    /// Attached and listening: its new connections are governed.
    Governed,
    /// Waiting for something that should come by itself (its cgroup, its
    /// network namespace); retried with backoff.
    Pending {
        /// A bounded reason (`cgroup_not_found`, `netns_not_found`, …).
        reason: &'static str,
    },
    /// Governing failed; retried with backoff, reported in `hoop_pods`.
    Failed {
        /// A bounded reason (`attach`, `listen`, `host_network`, …).
        reason: &'static str,
        /// The error, for humans.
        message: String,
    },
}

impl PodState {
    /// `governed`, `pending` or `failed`: the `state` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Governed => "governed",
            Self::Pending { .. } => "pending",
            Self::Failed { .. } => "failed",
        }
    }

    /// The reason label (empty for governed pods).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Governed => "",
            Self::Pending { reason } | Self::Failed { reason, .. } => reason,
        }
    }
}

/// One pod's entry on the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodStatus {
    /// Who it is.
    pub workload: Workload,
    /// Where it stands.
    #[serde(flatten)]
    pub state: PodState,
    /// The intercepted ports.
    pub ports: Vec<u16>,
    /// When it was last governed, if ever (not serialized).
    #[serde(skip)]
    pub governed_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Board {
    pods: HashMap<String, PodStatus>,
    synced: bool,
}

/// The shared status of every opted-in pod. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    inner: Arc<RwLock<Board>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusBoard {
    /// An empty board, not ready.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn write(&self, f: impl FnOnce(&mut Board)) {
        {
            let mut board = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            f(&mut board);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn read<R>(&self, f: impl FnOnce(&Board) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records a pod's state.
    pub fn set(&self, workload: &Workload, ports: &[u16], state: PodState) {
        self.write(|b| {
            let governed_at = (state == PodState::Governed).then(Instant::now);
            b.pods.insert(
                workload.uid.clone(),
                PodStatus {
                    workload: workload.clone(),
                    state,
                    ports: ports.to_vec(),
                    governed_at,
                },
            );
        });
    }

    /// Forgets a pod (released, deleted, or no longer opted in).
    pub fn remove(&self, uid: &str) {
        self.write(|b| {
            b.pods.remove(uid);
        });
    }

    /// Marks the first full reconcile as done (node mode readiness).
    pub fn mark_synced(&self) {
        self.write(|b| b.synced = true);
    }

    /// Whether the first full reconcile is done.
    pub fn synced(&self) -> bool {
        self.read(|b| b.synced)
    }

    /// One pod's status.
    pub fn pod(&self, uid: &str) -> Option<PodStatus> {
        self.read(|b| b.pods.get(uid).cloned())
    }

    /// Whether this pod's new connections are governed.
    pub fn is_governed(&self, uid: &str) -> bool {
        self.read(|b| {
            b.pods
                .get(uid)
                .is_some_and(|p| p.state == PodState::Governed)
        })
    }

    /// Every opted-in pod, sorted by namespace and name.
    pub fn pods(&self) -> Vec<PodStatus> {
        let mut all: Vec<PodStatus> = self.read(|b| b.pods.values().cloned().collect());
        all.sort_by(|a, b| {
            (&a.workload.namespace, &a.workload.pod).cmp(&(&b.workload.namespace, &b.workload.pod))
        });
        all
    }

    /// Counts per (state, reason), for the `hoop_pods` gauge.
    pub fn counts(&self) -> HashMap<(&'static str, &'static str), i64> {
        self.read(|b| {
            let mut counts = HashMap::new();
            for p in b.pods.values() {
                *counts
                    .entry((p.state.label(), p.state.reason()))
                    .or_insert(0) += 1;
            }
            counts
        })
    }

    /// The `/ready` answer. `sidecar_uid`: in sidecar mode, the own pod's
    /// UID, which must be governed; `None` in node mode (synced is enough).
    pub fn ready(&self, sidecar_uid: Option<&str>) -> bool {
        match sidecar_uid {
            Some(uid) => self.is_governed(uid),
            None => self.synced(),
        }
    }

    /// Waits until `pred` holds on the board (re-checked on every change).
    pub async fn wait_for(&self, mut pred: impl FnMut(&Self) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if pred(self) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(uid: &str, ns: &str, pod: &str) -> Workload {
        Workload {
            uid: uid.into(),
            namespace: ns.into(),
            pod: pod.into(),
            ..Workload::default()
        }
    }

    #[test]
    fn readiness_per_mode() {
        let b = StatusBoard::new();
        assert!(!b.ready(None));
        assert!(!b.ready(Some("u1")));
        b.set(
            &w("u1", "a", "p"),
            &[5432],
            PodState::Pending {
                reason: "cgroup_not_found",
            },
        );
        assert!(!b.ready(Some("u1")));
        b.set(&w("u1", "a", "p"), &[5432], PodState::Governed);
        assert!(b.ready(Some("u1")));
        assert!(b.pod("u1").is_some_and(|p| p.governed_at.is_some()));
        assert!(!b.ready(None), "node mode waits for the first sync");
        b.mark_synced();
        assert!(b.ready(None));
        b.remove("u1");
        assert!(!b.ready(Some("u1")));
    }

    #[test]
    fn counts_and_order() {
        let b = StatusBoard::new();
        b.set(&w("u1", "b", "x"), &[1], PodState::Governed);
        b.set(&w("u2", "a", "y"), &[1], PodState::Governed);
        b.set(
            &w("u3", "a", "x"),
            &[1],
            PodState::Failed {
                reason: "attach",
                message: "boom".into(),
            },
        );
        let c = b.counts();
        assert_eq!(c[&("governed", "")], 2);
        assert_eq!(c[&("failed", "attach")], 1);
        let names: Vec<String> = b.pods().iter().map(|p| p.workload.to_string()).collect();
        assert_eq!(names, ["a/x", "a/y", "b/x"]);
        let json = serde_json::to_value(b.pod("u3")).expect("json");
        assert_eq!(json["state"], "failed");
        assert_eq!(json["reason"], "attach");
    }

    #[tokio::test]
    async fn wait_for_wakes_on_change() {
        let b = StatusBoard::new();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.wait_for(|b| b.is_governed("u")).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.set(&w("u", "n", "p"), &[], PodState::Governed);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
    }
}
