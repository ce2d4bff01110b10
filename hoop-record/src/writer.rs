//! The recorder: the hot-path API connection tasks call, and the background
//! writer that owns the files.
//!
//! **The hot path never waits on the disk.** [`SessionRecorder`] methods
//! append the event to the session's own queue (an uncontended lock and a
//! `Vec` push: no channel, no wake-up, no syscall) and return. One writer
//! thread per process collects every session's queue on a short tick, then
//! serializes, hash-chains, buffers and writes. (A dedicated OS thread
//! rather than a tokio task: file I/O blocks, and `tokio::fs` would only
//! move each call to the blocking pool one at a time anyway.)
//!
//! **Timestamps.** Each event reads the monotonic clock once. Its wall-clock
//! time (`ts`) is the session's start time plus that monotonic offset, so
//! `ts` never goes backwards within a recording, even when the system clock
//! is stepped mid-session.
//!
//! **Memory stays bounded without blocking** through a byte budget over
//! everything queued but not yet written:
//! - row data (`rows`, `copy_data`) is accepted only while the queue holds
//!   less than [`ROW_BACKLOG_LIMIT_BYTES`]; past it, rows are dropped and
//!   counted, row recording stops for the rest of that result, and a
//!   `rows_limit` event says where and how many;
//! - everything else (statements, verdicts, holds, results, errors) is never
//!   dropped. Past [`BACKLOG_HARD_LIMIT_BYTES`] the session's recording
//!   *fails*, [`SessionRecorder::statement`] returns an error, and the proxy
//!   applies `recording.on_error`. A statement never runs unrecorded unless
//!   the operator chose `on_error: continue`.
//!
//! **Durability.** Buffers are written to the file at least every
//! `recording.flush_interval` (and when one grows past 1 MiB). At session end
//! the writer appends `session_end` and the trailer, writes, and fsyncs the
//! file and the directory. A `kill -9` loses at most the last interval; every
//! line before it verifies (the file reads as truncated-but-intact).
//!
//! **Failure.** When a session's file cannot be created or written, the
//! writer stops writing it (it stays truncated-but-intact, never gets a
//! trailer that would make it look complete), raises the session's failure
//! signal ([`SessionRecorder::failed`], [`SessionRecorder::failure_watch`])
//! and counts `hoop_recording_errors_total{kind}`.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};
use tokio::sync::{oneshot, watch};

use super::{
    FILE_EXTENSION, RecordError, Rfc3339Stamper,
    format::{
        self, Body, Cell, ChainWriter, CopyDataEvent, CopyDirection, ErrorEvent, FORMAT_NAME,
        FORMAT_VERSION, Header, HoldEvent, HoldState, PromotionEvent, RecordedIdentity,
        ResultEvent, RowsEvent, RowsLimitEvent, RowsLimitReason, RowsMode, SessionEndEvent,
        SessionStart, SessionTotals, StatementEvent, TruncatedRow, VerdictEvent, VerdictKind,
        cut_row, cut_value,
    },
    load_hmac_key, recording_id, retention, rfc3339_into, rfc3339_since_epoch_into,
    store::ship::Spool,
};
use hoop_config::{RecordRows, RecordingConfig, RecordingOnError};
use hoop_core::{SessionIdentity, StatementKind, Submission, Verdict};

/// Past this many queued bytes, row data is dropped (and the drop recorded).
pub const ROW_BACKLOG_LIMIT_BYTES: usize = 16 << 20;
/// Past this many queued bytes, a session whose event cannot be queued fails.
pub const BACKLOG_HARD_LIMIT_BYTES: usize = 64 << 20;
/// A session's buffer is written early when it grows past this.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Rows are batched into one `rows` event up to this many rows…
const ROWS_PER_EVENT: usize = 128;
/// …or this many value bytes.
const ROW_BYTES_PER_EVENT: usize = 256 << 10;
/// Fixed per-event cost charged to the backlog (keys, seq, timestamps, hash).
const EVENT_OVERHEAD_BYTES: usize = 256;
/// Prepared statements a session remembers having sent (see
/// [`SessionRecorder::prepared_statement`]); past it, both sides forget.
const SENT_STATEMENTS_MAX: usize = 4096;
/// …or past this many bytes of their SQL text and table names (the writer
/// keeps each one serialized, so this bounds its memory per session too).
const SENT_STATEMENT_BYTES_MAX: usize = 1 << 20;
/// How often retention runs while the recorder is up (it also runs at start).
pub(crate) const RETENTION_INTERVAL: Duration = Duration::from_mins(1);

mod health;
mod metrics;
mod queue;
mod session;
mod thread;

#[cfg(test)]
mod tests;

#[allow(clippy::wildcard_imports)]
use health::*;
pub use health::{FailureKind, RecordingFailure};
pub use metrics::{RecordingMetrics, recording_metrics};
#[allow(clippy::wildcard_imports)]
use queue::*;
#[allow(clippy::wildcard_imports)]
use session::*;
pub use session::{FailureFlag, MaskedCopyChunk, MaskedRow, SessionRecorder};
#[allow(clippy::wildcard_imports)]
use thread::*;

/// The process's recorder. Cheap to clone. [`Recorder::disabled`] records nothing.
#[derive(Clone)]
pub struct Recorder {
    shared: Option<Arc<RecorderShared>>,
}

struct RecorderShared {
    commands: mpsc::Sender<Command>,
    rows: RecordRows,
    max_row_bytes: usize,
    on_error: RecordingOnError,
    backlog: Arc<AtomicUsize>,
    next_session: AtomicU64,
    dir: PathBuf,
    /// The monotonic clock events are timed by (see [`LiveSession::mono_ns`]).
    clock: quanta::Clock,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shared {
            None => f.write_str("Recorder(disabled)"),
            Some(s) => write!(f, "Recorder({})", s.dir.display()),
        }
    }
}

impl Recorder {
    /// Validates the directory (creating it if missing), loads the HMAC key,
    /// runs retention once, and starts the writer thread.
    /// With `recording.enabled: false`, returns [`Recorder::disabled`].
    pub fn start(cfg: &RecordingConfig) -> Result<Recorder, RecordError> {
        Self::start_with(cfg, create_new)
    }

    pub(crate) fn start_with(
        cfg: &RecordingConfig,
        opener: FileOpener,
    ) -> Result<Recorder, RecordError> {
        if !cfg.enabled {
            return Ok(Recorder::disabled());
        }
        let key = load_hmac_key(cfg)?;
        std::fs::create_dir_all(&cfg.dir).map_err(|source| RecordError::CreateDir {
            dir: cfg.dir.clone(),
            source,
        })?;
        probe_writable(&cfg.dir)?;
        let mut retention = retention::RetentionPolicy::from_config(cfg);
        // With a store, `dir` is a spool: retention applies to the store, and
        // nothing leaves the spool before it is shipped.
        let spool = match &cfg.store {
            Some(url) => {
                let store = crate::store::RecordingStore::open(url)?;
                let spool = crate::store::ship::start(
                    store,
                    cfg.dir.clone(),
                    cfg.ship_interval,
                    cfg.spool_max_bytes,
                    retention,
                )
                .map_err(RecordError::SpawnShipper)?;
                retention = retention::RetentionPolicy::default();
                Some(spool)
            }
            None => None,
        };
        run_retention(&cfg.dir, &HashSet::new(), &retention);

        let (commands, inbox) = mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            dir: cfg.dir.clone(),
            opener,
            key,
            rows: cfg.rows.into(),
            max_row_bytes: cfg.max_row_bytes,
            flush_interval: cfg.flush_interval.max(Duration::from_millis(1)),
            retention,
            spool,
            backlog: Arc::clone(&backlog),
            metrics: recording_metrics(),
            sessions: HashMap::default(),
            queues: Vec::new(),
            spare: Vec::new(),
            spare_text: Vec::new(),
        };
        std::thread::Builder::new()
            .name("hoop-recorder".into())
            .spawn(move || writer.run(&inbox))
            .map_err(RecordError::SpawnWriter)?;
        Ok(Recorder {
            shared: Some(Arc::new(RecorderShared {
                commands,
                rows: cfg.rows,
                max_row_bytes: cfg.max_row_bytes,
                on_error: cfg.on_error,
                backlog,
                next_session: AtomicU64::new(1),
                dir: cfg.dir.clone(),
                clock: quanta::Clock::new(),
            })),
        })
    }

    /// A recorder that records nothing (`recording.enabled: false`, benchmarks).
    pub fn disabled() -> Recorder {
        Recorder { shared: None }
    }

    /// Whether this recorder writes anything.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// `recording.on_error`: what the proxy does when [`SessionRecorder::failed`].
    /// (`continue` for a disabled recorder, which never fails.)
    pub fn on_error(&self) -> RecordingOnError {
        self.shared
            .as_ref()
            .map_or(RecordingOnError::Continue, |s| s.on_error)
    }

    /// Starts recording a session: queues its header and `session_start`.
    ///
    /// The file is created by the writer, off the hot path; if that fails the
    /// session's failure signal is raised shortly after.
    pub fn open_session(&self, identity: &SessionIdentity) -> Result<SessionRecorder, RecordError> {
        let Some(shared) = &self.shared else {
            return Ok(SessionRecorder { live: None });
        };
        let key = shared.next_session.fetch_add(1, Ordering::Relaxed);
        let health = Arc::new(SessionHealth::new());
        let queue = Arc::new(SessionQueue::default());
        let started = Instant::now();
        let started_at = SystemTime::now();
        let open = Command::Open {
            key,
            identity: Box::new(RecordedIdentity::from(identity)),
            at: started_at,
            started,
            health: Arc::clone(&health),
            queue: Arc::clone(&queue),
        };
        shared
            .commands
            .send(open)
            .map_err(|_| RecordError::Closed)?;
        Ok(SessionRecorder {
            live: Some(LiveSession {
                shared: Arc::clone(shared),
                queue,
                health,
                started: shared.clock.raw(),
                started_at,
                sent_statements: HashMap::default(),
                next_statement_id: 0,
                sent_bytes: 0,
                batch: RowBatch::default(),
                result_rows: ResultRows::default(),
                ended: false,
            }),
        })
    }

    /// Writes everything buffered to the files (no fsync) and waits for it.
    pub async fn flush(&self) {
        let Some(shared) = &self.shared else { return };
        let (done, wait) = oneshot::channel();
        if shared.commands.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Runs retention now, sparing open recordings, and waits for it.
    pub async fn enforce_retention(&self) {
        let Some(shared) = &self.shared else { return };
        let (done, wait) = oneshot::channel();
        if shared.commands.send(Command::Retention(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Ends every open recording (`session_end` reason `recorder_shutdown`,
    /// trailer, fsync) and stops the writer. Sessions still running afterwards
    /// see their recording fail with [`FailureKind::Closed`].
    pub async fn shutdown(&self) {
        let Some(shared) = &self.shared else { return };
        let (done, wait) = oneshot::channel();
        if shared.commands.send(Command::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

fn probe_writable(dir: &Path) -> Result<(), RecordError> {
    let probe = dir.join(format!(".hoop-write-probe-{}", std::process::id()));
    let result = File::create(&probe).and_then(|mut f| f.write_all(b"probe"));
    let _ = std::fs::remove_file(&probe);
    result.map_err(|source| RecordError::DirNotWritable {
        dir: dir.to_path_buf(),
        source,
    })
}

fn run_retention(dir: &Path, open: &HashSet<PathBuf>, policy: &retention::RetentionPolicy) {
    if !policy.is_active() {
        return;
    }
    match retention::apply(dir, open, SystemTime::now(), policy) {
        Ok(outcome) => {
            for path in &outcome.deleted {
                tracing::info!(path = %path.display(), "recording deleted by retention");
            }
            for (path, error) in &outcome.failed {
                recording_metrics()
                    .errors_total
                    .with_label_values(&["retention"])
                    .inc();
                tracing::warn!(path = %path.display(), %error, "retention could not delete a recording");
            }
        }
        Err(error) => {
            recording_metrics()
                .errors_total
                .with_label_values(&["retention"])
                .inc();
            tracing::warn!(%error, "retention skipped");
        }
    }
}
