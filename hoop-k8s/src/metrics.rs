//! Kubernetes metrics. Every label set is bounded: `state` is
//! governed|pending|failed, `reason` one of the fixed reasons in
//! [`crate::reconcile::FailureReason`], `key`/`level` the three `hoop.dev/*`
//! keys and pod|namespace, `resource` pods|namespaces. No pod names.
//!
//! They are registered on the registry the caller passes (the agent passes
//! the one `/metrics` encodes), so tests can use a private registry.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::status::StatusBoard;

/// The reconciler's metrics.
#[derive(Debug, Clone)]
pub struct K8sMetrics {
    /// `hoop_pods{state,reason}`: opted-in pods on this node by state.
    pub pods: IntGaugeVec,
    /// `hoop_kubernetes_invalid_opt_in_total{key,level}`: `hoop.dev/*`
    /// values hoop could not read (each failed closed).
    pub invalid_opt_in_total: IntCounterVec,
    /// `hoop_kubernetes_api_errors_total{resource,reason}`: list/watch
    /// failures and malformed objects from the API server.
    pub api_errors_total: IntCounterVec,
    /// `hoop_kubernetes_govern_seconds`: from the first event wanting a pod
    /// governed to it being governed.
    pub govern_seconds: Histogram,
}

/// Why a metric could not be registered (a name registered twice).
pub type RegisterError = prometheus::Error;

impl K8sMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, RegisterError> {
        let m = Self {
            pods: IntGaugeVec::new(
                Opts::new(
                    "hoop_pods",
                    "Opted-in pods on this node, by state (governed, pending, failed) and reason.",
                ),
                &["state", "reason"],
            )?,
            invalid_opt_in_total: IntCounterVec::new(
                Opts::new(
                    "hoop_kubernetes_invalid_opt_in_total",
                    "hoop.dev/* labels or annotations with invalid values (each one failed closed), by key and level.",
                ),
                &["key", "level"],
            )?,
            api_errors_total: IntCounterVec::new(
                Opts::new(
                    "hoop_kubernetes_api_errors_total",
                    "Kubernetes API list/watch errors and malformed objects, by resource and reason.",
                ),
                &["resource", "reason"],
            )?,
            govern_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "hoop_kubernetes_govern_seconds",
                    "Time from the first event wanting a pod governed to the pod being governed.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
        };
        registry.register(Box::new(m.pods.clone()))?;
        registry.register(Box::new(m.invalid_opt_in_total.clone()))?;
        registry.register(Box::new(m.api_errors_total.clone()))?;
        registry.register(Box::new(m.govern_seconds.clone()))?;
        Ok(m)
    }

    /// Sets `hoop_pods` from the board: every (state, reason) seen so far
    /// is reset, then the current counts written, so a reason that no longer
    /// applies drops to 0 instead of lingering.
    pub fn update_pods(&self, board: &StatusBoard) {
        self.pods.reset();
        // governed/pending/failed always exist, so dashboards see zeros.
        self.pods.with_label_values(&["governed", ""]).set(0);
        for ((state, reason), n) in board.counts() {
            self.pods.with_label_values(&[state, reason]).set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Workload, status::PodState};

    #[test]
    fn pods_gauge_follows_the_board() {
        let registry = Registry::new();
        let m = K8sMetrics::register(&registry).expect("register");
        let board = StatusBoard::new();
        let w = Workload {
            uid: "u".into(),
            ..Workload::default()
        };
        board.set(
            &w,
            &[],
            PodState::Failed {
                reason: "attach",
                message: String::new(),
            },
        );
        m.update_pods(&board);
        assert_eq!(m.pods.with_label_values(&["failed", "attach"]).get(), 1);
        board.set(&w, &[], PodState::Governed);
        m.update_pods(&board);
        assert_eq!(m.pods.with_label_values(&["governed", ""]).get(), 1);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encode");
        assert!(
            !text.contains("attach"),
            "stale reasons are dropped:\n{text}"
        );
        assert!(K8sMetrics::register(&registry).is_err(), "registered twice");
    }
}
