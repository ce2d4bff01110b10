//! Prometheus metrics. One registry per process, exposed at `GET /metrics`.
//!
//! Labels never carry SQL text or values, and their sets are bounded.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntGauge, Registry};

/// The process's metrics.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `hoop_connections_total`: client connections accepted through interception.
    pub connections_total: IntCounter,
    /// `hoop_connections_active`: client connections currently proxied.
    pub connections_active: IntGauge,
    /// `hoop_upstream_connect_errors_total`: failures to dial the original destination.
    pub upstream_connect_errors_total: IntCounter,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let connections_total =
            IntCounter::new("hoop_connections_total", "Client connections accepted through interception.")
                .expect("valid metric");
        let connections_active =
            IntGauge::new("hoop_connections_active", "Client connections currently proxied.").expect("valid metric");
        let upstream_connect_errors_total = IntCounter::new(
            "hoop_upstream_connect_errors_total",
            "Failures to connect to a redirected connection's original destination.",
        )
        .expect("valid metric");
        for c in [
            Box::new(connections_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_active.clone()),
            Box::new(upstream_connect_errors_total.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self { registry, connections_total, connections_active, upstream_connect_errors_total }
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
