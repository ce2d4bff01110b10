//! Prometheus metrics. One registry per process, exposed at `GET /metrics`.
//!
//! Labels never carry SQL text or values, and every label set is bounded:
//! `kind` is a [`crate::StatementKind`], `verdict` is
//! allow|deny|hold, `rule` is a policy rule name (bounded by the policy
//! file), `direction` is client_to_server|server_to_client, `reason` is one
//! of a fixed list per metric, `credential` is a `credentials:` entry name
//! (bounded by the configuration file). Other modules (policy, holds, recording)
//! register their own metrics on [`Metrics::registry`].

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, core::Collector,
};

/// The process's metrics.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `hoop_connections_total`: client connections accepted through interception.
    pub connections_total: IntCounter,
    /// `hoop_connections_active`: client connections currently proxied.
    pub connections_active: IntGauge,
    /// `hoop_connection_errors_total{reason}`: sessions that ended in an error
    /// (`client_protocol`, `server_protocol`, `client_gone`, `server_gone`, `tls`, `recording`, `no_original_destination`).
    pub connection_errors_total: IntCounterVec,
    /// `hoop_upstream_connect_errors_total`: failures to dial the original destination.
    pub upstream_connect_errors_total: IntCounter,
    /// `hoop_ebpf_redirects_total`: connects redirected by the kernel programs (read from the eBPF counter map).
    pub ebpf_redirects_total: IntCounter,
    /// `hoop_proxied_bytes_total{direction}`: bytes forwarded.
    pub proxied_bytes_total: IntCounterVec,
    /// `hoop_coalesced_reads_total`: times a leg of a bulk transfer began
    /// to coalesce its reads (`proxy.coalesce_bulk_reads`).
    pub coalesced_reads_total: IntCounter,
    /// `hoop_statements_total{kind,verdict}`: statements judged.
    pub statements_total: IntCounterVec,
    /// `hoop_masked_values_total{rule}`: values rewritten by masking.
    pub masked_values_total: IntCounterVec,
    /// `hoop_detector_promotions_total{rule}`: table columns a detector rule
    /// found values in, promoted to column rules of that rule.
    pub detector_promotions_total: IntCounterVec,
    /// `hoop_credential_errors_total{reason}`: sessions whose injected
    /// credential could not be used (see [`crate::CredentialFailure`]).
    pub credential_errors_total: IntCounterVec,
    /// `hoop_credential_injections_total{credential}`: sessions hoop logged
    /// in on the workload's behalf, by `credentials:` entry.
    pub credential_injections_total: IntCounterVec,
    /// `hoop_statement_proxy_latency_seconds`: time hoop adds per statement
    /// (the batch's first statement judged → the batch queued upstream, plus
    /// result-path processing).
    pub statement_proxy_latency_seconds: Histogram,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    fn new() -> Self {
        // The latency histogram's clock calibrates itself (under a
        // millisecond) on first use: at start-up, not on the first statement.
        let _ = quanta::Instant::now();
        let r = Registry::new();
        Self {
            connections_total: register(
                &r,
                IntCounter::new("hoop_connections_total", "Client connections accepted through interception.")
                    .expect("valid metric"),
            ),
            connections_active: register(
                &r,
                IntGauge::new("hoop_connections_active", "Client connections currently proxied.").expect("valid metric"),
            ),
            connection_errors_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new("hoop_connection_errors_total", "Proxied sessions that ended in an error, by reason."),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            upstream_connect_errors_total: register(
                &r,
                IntCounter::new(
                    "hoop_upstream_connect_errors_total",
                    "Failures to connect to a redirected connection's original destination.",
                )
                .expect("valid metric"),
            ),
            ebpf_redirects_total: register(
                &r,
                IntCounter::new("hoop_ebpf_redirects_total", "Connections redirected to the proxy by the eBPF programs.")
                    .expect("valid metric"),
            ),
            coalesced_reads_total: register(
                &r,
                IntCounter::new(
                    "hoop_coalesced_reads_total",
                    "Times a leg of a bulk transfer began to coalesce its reads (SO_RCVLOWAT raised).",
                )
                .expect("valid metric"),
            ),
            proxied_bytes_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new("hoop_proxied_bytes_total", "Bytes forwarded by the proxy, by direction."),
                    &["direction"],
                )
                .expect("valid metric"),
            ),
            statements_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new("hoop_statements_total", "Statements judged, by statement kind and verdict."),
                    &["kind", "verdict"],
                )
                .expect("valid metric"),
            ),
            masked_values_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new("hoop_masked_values_total", "Values rewritten by masking, by policy rule."),
                    &["rule"],
                )
                .expect("valid metric"),
            ),
            detector_promotions_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hoop_detector_promotions_total",
                        "Table columns a detector rule found values in, masked as column rules of that rule from then on.",
                    ),
                    &["rule"],
                )
                .expect("valid metric"),
            ),
            credential_errors_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hoop_credential_errors_total",
                        "Sessions whose injected credential could not be used, by reason.",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            credential_injections_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hoop_credential_injections_total",
                        "Sessions hoop logged in to the database on the workload's behalf, by credential entry.",
                    ),
                    &["credential"],
                )
                .expect("valid metric"),
            ),
            statement_proxy_latency_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "hoop_statement_proxy_latency_seconds",
                        "Latency hoop adds per statement: judging to request forwarded, plus result-path processing.",
                    )
                    .buckets(vec![
                        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1,
                    ]),
                )
                .expect("valid metric"),
            ),
            registry: r,
        }
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Encodes every registered metric in the Prometheus text format.
pub fn encode() -> String {
    let mut out = String::new();
    let families = metrics().registry.gather();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    out
}
