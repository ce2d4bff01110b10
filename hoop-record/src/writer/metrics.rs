//! The recorder's metrics, registered once on the process registry.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `hoop_recording_*` metrics.
pub struct RecordingMetrics {
    /// `hoop_recording_bytes_total`: bytes written to recording files.
    pub bytes_total: IntCounter,
    /// `hoop_recording_events_total`: lines appended to recordings.
    pub events_total: IntCounter,
    /// `hoop_recording_flush_duration_seconds`: time to write buffered recordings to their files.
    pub flush_duration_seconds: Histogram,
    /// `hoop_recording_errors_total{kind}`: recording failures, by [`FailureKind`] (plus `retention`).
    pub errors_total: IntCounterVec,
    /// `hoop_recording_rows_dropped_total`: rows and copy chunks not recorded because of backpressure.
    pub rows_dropped_total: IntCounter,
}

/// The process's recording metrics, registered on [`hoop_core::metrics::metrics`] on first use.
pub fn recording_metrics() -> &'static RecordingMetrics {
    static METRICS: OnceLock<RecordingMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let bytes_total = IntCounter::new(
            "hoop_recording_bytes_total",
            "Bytes written to session recordings.",
        )
        .expect("valid metric");
        let events_total = IntCounter::new(
            "hoop_recording_events_total",
            "Lines appended to session recordings.",
        )
        .expect("valid metric");
        let flush_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "hoop_recording_flush_duration_seconds",
                "Time to write buffered recording data to the files.",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
        )
        .expect("valid metric");
        let errors_total = IntCounterVec::new(
            Opts::new(
                "hoop_recording_errors_total",
                "Recording failures, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let rows_dropped_total = IntCounter::new(
            "hoop_recording_rows_dropped_total",
            "Result rows and COPY chunks not recorded because the writer fell behind.",
        )
        .expect("valid metric");
        let registry = &hoop_core::metrics::metrics().registry;
        for c in [
            Box::new(bytes_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events_total.clone()),
            Box::new(flush_duration_seconds.clone()),
            Box::new(errors_total.clone()),
            Box::new(rows_dropped_total.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        RecordingMetrics {
            bytes_total,
            events_total,
            flush_duration_seconds,
            errors_total,
            rows_dropped_total,
        }
    })
}
