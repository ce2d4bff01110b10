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
    FILE_EXTENSION, RecordError,
    format::{
        self, Body, Cell, ChainWriter, CopyDataEvent, CopyDirection, ErrorEvent, FORMAT_NAME,
        FORMAT_VERSION, Header, HoldEvent, HoldState, RecordedIdentity, ResultEvent, RowsEvent,
        RowsLimitEvent, RowsLimitReason, RowsMode, SessionEndEvent, SessionStart, SessionTotals,
        StatementEvent, TruncatedRow, VerdictEvent, VerdictKind, cut_row, cut_value,
    },
    load_hmac_key, recording_id, retention, rfc3339_into,
};
use crate::{
    config::{RecordRows, RecordingConfig, RecordingOnError},
    session::SessionIdentity,
    statement::{ProtocolForm, StatementKind, Verdict},
};

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
const RETENTION_INTERVAL: Duration = Duration::from_mins(1);

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

/// The process's recording metrics, registered on [`crate::metrics::metrics`] on first use.
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
        let registry = &crate::metrics::metrics().registry;
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

/// What went wrong with a session's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The recording file could not be created.
    Create,
    /// Writing to the file failed (disk full, I/O error).
    Write,
    /// fsync at session end failed.
    Sync,
    /// The writer fell too far behind to accept a statement-level event.
    Backlog,
    /// The recorder was shut down while the session was still running.
    Closed,
}

impl FailureKind {
    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Create => "create",
            FailureKind::Write => "write",
            FailureKind::Sync => "sync",
            FailureKind::Backlog => "backlog",
            FailureKind::Closed => "closed",
        }
    }
}

/// A session's recording failure: what, and the OS's words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFailure {
    /// The bounded kind (also the metric label).
    pub kind: FailureKind,
    /// Details for the log and the client error (no SQL, no values).
    pub detail: String,
}

impl fmt::Display for RecordingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

/// The failure signal one session and the writer share.
struct SessionHealth {
    failed: AtomicBool,
    failure: watch::Sender<Option<RecordingFailure>>,
}

impl SessionHealth {
    fn new() -> Self {
        Self {
            failed: AtomicBool::new(false),
            failure: watch::Sender::new(None),
        }
    }

    /// Raises the signal once; later failures keep the first cause.
    fn fail(&self, kind: FailureKind, detail: String) -> bool {
        if self.failed.swap(true, Ordering::AcqRel) {
            return false;
        }
        recording_metrics()
            .errors_total
            .with_label_values(&[kind.as_str()])
            .inc();
        self.failure
            .send_replace(Some(RecordingFailure { kind, detail }));
        true
    }
}

/// Opens a new recording file. Tests swap it to simulate a full disk.
pub(crate) type FileOpener = fn(&Path) -> std::io::Result<File>;

fn create_new(path: &Path) -> std::io::Result<File> {
    File::options().write(true).create_new(true).open(path)
}

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
        let retention = retention::RetentionPolicy::from_config(cfg);
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
            backlog: Arc::clone(&backlog),
            metrics: recording_metrics(),
            sessions: HashMap::default(),
            queues: Vec::new(),
            spare: Vec::new(),
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
                started,
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

/// A result row **after masking**, ready to record.
///
/// The only constructor is crate-private and meant for the mask pipeline,
/// which calls it with exactly the values it is about to send to the client.
/// Code holding raw server values has no way to turn them into a
/// `MaskedRow` by accident: it must call [`MaskedRow::after_masking`], whose
/// name states the contract.
#[derive(Debug, Clone, Copy)]
pub struct MaskedRow<'a> {
    columns: &'a [Option<&'a [u8]>],
}

impl<'a> MaskedRow<'a> {
    /// Wraps the column values of a DataRow **as sent to the client after
    /// masking** (`None` is SQL NULL).
    #[allow(
        dead_code,
        reason = "the mask pipeline calls it once the proxy is wired"
    )]
    pub(crate) fn after_masking(columns: &'a [Option<&'a [u8]>]) -> Self {
        Self { columns }
    }
}

/// One CopyData chunk **after masking** (for `COPY … TO STDOUT`), or as the
/// client sent it (for `COPY … FROM STDIN`, which the client already holds).
/// Same contract as [`MaskedRow`].
#[derive(Debug, Clone, Copy)]
pub struct MaskedCopyChunk<'a> {
    direction: CopyDirection,
    data: &'a [u8],
}

impl<'a> MaskedCopyChunk<'a> {
    /// Wraps a CopyData payload as it is forwarded, after masking.
    #[allow(dead_code, reason = "the COPY path calls it once the proxy is wired")]
    pub(crate) fn after_masking(direction: CopyDirection, data: &'a [u8]) -> Self {
        Self { direction, data }
    }
}

/// Records one session. Owned by its connection task; ends the recording
/// when [`SessionRecorder::end`] is called or when dropped.
///
/// Typical order of calls per statement: [`statement`](Self::statement),
/// [`verdict`](Self::verdict), perhaps [`hold`](Self::hold), then
/// [`masked_row`](Self::masked_row)… and [`result`](Self::result) or
/// [`error`](Self::error).
pub struct SessionRecorder {
    live: Option<LiveSession>,
}

struct LiveSession {
    shared: Arc<RecorderShared>,
    /// Where this session's events wait for the writer.
    queue: Arc<SessionQueue>,
    health: Arc<SessionHealth>,
    started: Instant,
    /// The wall clock at `started` (the writer dates each event by it plus
    /// the event's monotonic offset).
    started_at: SystemTime,
    /// Prepared statements already sent in full, by the address of their
    /// SQL text: a later execution sends only the id. The `Arc`s are kept,
    /// so an address cannot be reused while it is in the map.
    sent_statements: HashMap<usize, SentStatement, foldhash::fast::RandomState>,
    next_statement_id: u32,
    /// SQL and table-name bytes the map holds.
    sent_bytes: usize,
    batch: RowBatch,
    result_rows: ResultRows,
    ended: bool,
}

/// Rows waiting to become one `rows` event.
#[derive(Default)]
struct RowBatch {
    rows: Vec<CutRow>,
    value_bytes: usize,
    /// The monotonic time of the first row.
    first: Option<u64>,
}

/// Row accounting for the current result.
#[derive(Default)]
struct ResultRows {
    recorded: u64,
    dropped: u64,
}

/// A row's values after cutting at `max_row_bytes`.
struct CutRow {
    values: Vec<Option<Vec<u8>>>,
    original_bytes: Option<u64>,
}

impl fmt::Debug for SessionRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.live {
            None => f.write_str("SessionRecorder(disabled)"),
            Some(live) => write!(f, "SessionRecorder({:?})", live.started_at),
        }
    }
}

impl SessionRecorder {
    /// A session recorder that records nothing.
    pub fn disabled() -> SessionRecorder {
        SessionRecorder { live: None }
    }

    /// Whether this session is being recorded (not disabled, not abandoned).
    pub fn is_recording(&self) -> bool {
        self.live.is_some()
    }

    /// Records a statement. Call it **before** forwarding; on `Err` the
    /// statement is not recorded, and with `on_error: close_session` it must
    /// not run.
    ///
    /// `sql` is recorded as given: pass it literal-masked when policy says so.
    pub fn statement(
        &mut self,
        sql: &Arc<str>,
        form: ProtocolForm,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
    ) -> Result<(), RecordError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        live.close_result_rows();
        let (event, cost) = statement_event(sql, form, kinds, tables);
        live.send(Payload::Event(Box::new(Body::Statement(event))), cost)
    }

    /// Records an execution of a prepared statement, like
    /// [`statement`](Self::statement). The first call with these `Arc`s
    /// sends them to the writer; every later one sends only a number, so a
    /// repeated execution moves a few bytes between threads and touches no
    /// reference count. Pass the same `Arc`s for every execution.
    pub fn prepared_statement(
        &mut self,
        sql: &Arc<str>,
        form: ProtocolForm,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
    ) -> Result<(), RecordError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        live.close_result_rows();
        let address = Arc::as_ptr(sql).cast::<u8>() as usize;
        if let Some(sent) = live.sent_statements.get(&address)
            && sent.event.form == form
            && Arc::ptr_eq(&sent.event.kinds, kinds)
            && Arc::ptr_eq(&sent.event.tables, tables)
        {
            let id = sent.id;
            return live.send(Payload::Repeat(id), sent.cost);
        }
        let (event, cost) = statement_event(sql, form, kinds, tables);
        if live.sent_statements.len() >= SENT_STATEMENTS_MAX
            || live.sent_bytes + cost > SENT_STATEMENT_BYTES_MAX
        {
            live.sent_statements.clear();
            live.sent_bytes = 0;
            live.send(Payload::ForgetStatements, 0)?;
        }
        let id = live.next_statement_id;
        live.next_statement_id = live.next_statement_id.wrapping_add(1);
        live.sent_bytes += cost;
        live.sent_statements.insert(
            address,
            SentStatement {
                id,
                event: event.clone(),
                cost,
            },
        );
        live.send(Payload::Prepared(id, Box::new(event)), cost)
    }

    /// Records the verdict for the statement just recorded. Like
    /// [`statement`](Self::statement), an `Err` means it is not recorded.
    pub fn verdict(&mut self, verdict: &Verdict) -> Result<(), RecordError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        let event = VerdictEvent::from(verdict);
        let cost = event.rule.as_ref().map_or(0, String::len)
            + event.message.as_ref().map_or(0, String::len);
        live.send_event(Body::Verdict(event), cost)
    }

    /// Records a hold's state change (`decider` for approved/denied). An `Err`
    /// on `approved` means the statement should not run (`close_session`).
    pub fn hold(
        &mut self,
        hold_id: &str,
        state: HoldState,
        decider: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), RecordError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        let cost = hold_id.len() + decider.map_or(0, str::len) + reason.map_or(0, str::len);
        live.send_event(
            Body::Hold(HoldEvent {
                hold_id: hold_id.to_owned(),
                state,
                decider: decider.map(str::to_owned),
                reason: reason.map(str::to_owned),
            }),
            cost,
        )
    }

    /// Records how a statement ended: CommandComplete `tag` and row count, or
    /// the SQLSTATE it failed with. A failure here shows in [`failed`](Self::failed).
    pub fn result(&mut self, tag: Option<&str>, rows: u64, sqlstate: Option<&str>) {
        let Some(live) = &mut self.live else { return };
        live.close_result_rows();
        let rows = (live.shared.rows != RecordRows::None).then_some(rows);
        // The usual result (a short tag, no error) travels without a heap
        // allocation.
        let payload = match (tag.and_then(ShortTag::new), sqlstate) {
            (Some(tag), None) => Payload::Result { tag, rows },
            _ => Payload::Event(Box::new(Body::Result(ResultEvent {
                tag: tag.map(str::to_owned),
                rows,
                sqlstate: sqlstate.map(str::to_owned),
            }))),
        };
        let _ = live.send(payload, 0);
    }

    /// Records an error sent to the client. `message` is recorded as given:
    /// pass it masked (server messages can quote values).
    pub fn error(&mut self, sqlstate: &str, message: &str) {
        let Some(live) = &mut self.live else { return };
        live.close_result_rows();
        let event = ErrorEvent {
            sqlstate: sqlstate.to_owned(),
            message: message.to_owned(),
        };
        let _ = live.send_event(Body::Error(event), message.len());
    }

    /// Records a result row **after masking**. A no-op unless `rows: full`.
    /// The row is cut at `max_row_bytes`. Under backpressure rows are dropped
    /// and the drop is recorded as `rows_limit` (see the module docs).
    pub fn masked_row(&mut self, row: MaskedRow<'_>) {
        let Some(live) = &mut self.live else { return };
        if live.shared.rows != RecordRows::Full || live.health.failed.load(Ordering::Acquire) {
            return;
        }
        if live.result_rows.dropped > 0 {
            live.drop_rows(1);
            return;
        }
        let (values, original_bytes) = cut_row(row.columns, live.shared.max_row_bytes);
        let value_bytes: usize = values.iter().map(|v| v.as_ref().map_or(0, Vec::len)).sum();
        if live.batch.first.is_none() {
            live.batch.first = Some(live.mono_ns());
        }
        live.batch.rows.push(CutRow {
            values,
            original_bytes,
        });
        live.batch.value_bytes += value_bytes;
        if live.batch.rows.len() >= ROWS_PER_EVENT || live.batch.value_bytes >= ROW_BYTES_PER_EVENT
        {
            live.send_row_batch();
        }
    }

    /// Records a CopyData chunk **after masking**. A no-op unless `rows: full`.
    /// Counted like a row; cut at `max_row_bytes`.
    pub fn copy_data(&mut self, chunk: MaskedCopyChunk<'_>) {
        let Some(live) = &mut self.live else { return };
        if live.shared.rows != RecordRows::Full || live.health.failed.load(Ordering::Acquire) {
            return;
        }
        live.send_row_batch();
        if live.result_rows.dropped > 0 {
            live.drop_rows(1);
            return;
        }
        let kept = cut_value(chunk.data, live.shared.max_row_bytes);
        let truncated_from_bytes =
            (kept.len() < chunk.data.len()).then_some(chunk.data.len() as u64);
        let cost = kept.len() + EVENT_OVERHEAD_BYTES;
        if !live.reserve(cost, ROW_BACKLOG_LIMIT_BYTES) {
            live.drop_rows(1);
            return;
        }
        let payload = Payload::CopyData {
            direction: chunk.direction,
            data: kept.to_vec(),
            truncated_from_bytes,
        };
        if live.send_reserved(payload, cost) {
            live.result_rows.recorded += 1;
        }
    }

    /// Whether this session's recording has failed; the proxy then applies
    /// `recording.on_error` ([`Recorder::on_error`]).
    pub fn failed(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.health.failed.load(Ordering::Acquire))
    }

    /// The failure, if any.
    pub fn failure(&self) -> Option<RecordingFailure> {
        self.live
            .as_ref()
            .and_then(|l| l.health.failure.borrow().clone())
    }

    /// A receiver that changes to `Some` when the recording fails, for a
    /// connection task's `select!` (`changed().await`).
    pub fn failure_watch(&self) -> watch::Receiver<Option<RecordingFailure>> {
        match &self.live {
            Some(live) => live.health.failure.subscribe(),
            // Never changes: a disabled recorder never fails.
            None => watch::Sender::new(None).subscribe(),
        }
    }

    /// Ends the recording: `session_end` with `reason` (`client_closed`,
    /// `server_closed`, `recording_failed`, …), then the trailer and fsync.
    pub fn end(mut self, reason: &str) {
        if let Some(live) = &mut self.live {
            live.end(reason);
        }
    }
}

impl Drop for SessionRecorder {
    fn drop(&mut self) {
        if let Some(live) = &mut self.live {
            live.end("connection_task_ended");
        }
    }
}

impl LiveSession {
    /// Nanoseconds since the session started (monotonic).
    fn mono_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Queues a command for the writer; false when the writer has shut down.
    fn push(&self, command: SessionCommand) -> bool {
        let mut queue = self.queue.lock();
        if queue.closed {
            return false;
        }
        queue.commands.push(command);
        true
    }

    /// Claims `cost` bytes of the backlog if that keeps it under `limit`.
    fn reserve(&self, cost: usize, limit: usize) -> bool {
        self.shared
            .backlog
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let after = queued.checked_add(cost)?;
                (after <= limit).then_some(after)
            })
            .is_ok()
    }

    /// Sends a payload whose cost is already reserved; false when the writer is gone.
    fn send_reserved(&mut self, payload: Payload, cost: usize) -> bool {
        let command = SessionCommand::Append {
            mono_ns: self.mono_ns(),
            payload,
            cost,
        };
        if self.push(command) {
            return true;
        }
        self.shared.backlog.fetch_sub(cost, Ordering::AcqRel);
        self.health
            .fail(FailureKind::Closed, "the recorder is shut down".into());
        false
    }

    /// Queues a statement-level event: never dropped; fails the session when
    /// the backlog is past its hard limit.
    fn send_event(&mut self, body: Body, payload_bytes: usize) -> Result<(), RecordError> {
        self.send(Payload::Event(Box::new(body)), payload_bytes)
    }

    /// [`send_event`](Self::send_event) for any statement-level payload.
    fn send(&mut self, payload: Payload, payload_bytes: usize) -> Result<(), RecordError> {
        self.fail_fast()?;
        self.send_row_batch();
        self.note_dropped_rows();
        let cost = payload_bytes + EVENT_OVERHEAD_BYTES;
        if !self.reserve(cost, BACKLOG_HARD_LIMIT_BYTES) {
            self.health.fail(
                FailureKind::Backlog,
                format!("more than {BACKLOG_HARD_LIMIT_BYTES} bytes of recording data waiting for the disk"),
            );
            self.abandon();
            return self.fail_fast();
        }
        if self.send_reserved(payload, cost) {
            Ok(())
        } else {
            self.fail_fast()
        }
    }

    fn fail_fast(&self) -> Result<(), RecordError> {
        if !self.health.failed.load(Ordering::Acquire) {
            // The usual case, without the watch channel's lock.
            return Ok(());
        }
        match self.health.failure.borrow().clone() {
            Some(failure) => Err(RecordError::SessionFailed(failure)),
            None if self.health.failed.load(Ordering::Acquire) => Err(RecordError::Closed),
            None => Ok(()),
        }
    }

    fn send_row_batch(&mut self) {
        let Some(mono_ns) = self.batch.first else {
            // No rows waiting (every statement-level event asks).
            return;
        };
        let batch = std::mem::take(&mut self.batch);
        let n = batch.rows.len() as u64;
        let cost = batch.value_bytes + batch.rows.len() * 16 + EVENT_OVERHEAD_BYTES;
        if self.health.failed.load(Ordering::Acquire) {
            return;
        }
        if !self.reserve(cost, ROW_BACKLOG_LIMIT_BYTES) {
            self.drop_rows(n);
            return;
        }
        let command = SessionCommand::Append {
            mono_ns,
            payload: Payload::Rows(batch.rows),
            cost,
        };
        if self.push(command) {
            self.result_rows.recorded += n;
        } else {
            self.shared.backlog.fetch_sub(cost, Ordering::AcqRel);
            self.health
                .fail(FailureKind::Closed, "the recorder is shut down".into());
        }
    }

    fn drop_rows(&mut self, n: u64) {
        self.result_rows.dropped += n;
        recording_metrics().rows_dropped_total.inc_by(n);
    }

    /// Emits `rows_limit` when the current result lost rows.
    fn note_dropped_rows(&mut self) {
        if self.result_rows.dropped == 0 {
            return;
        }
        let event = RowsLimitEvent {
            reason: RowsLimitReason::Backpressure,
            recorded_rows: self.result_rows.recorded,
            dropped_rows: self.result_rows.dropped,
        };
        self.result_rows = ResultRows::default();
        // Statement-level: it must not be lost, or the recording would
        // silently claim a complete result.
        if self.reserve(EVENT_OVERHEAD_BYTES, BACKLOG_HARD_LIMIT_BYTES) {
            self.send_reserved(
                Payload::Event(Box::new(Body::RowsLimit(event))),
                EVENT_OVERHEAD_BYTES,
            );
        } else {
            self.health.fail(
                FailureKind::Backlog,
                "recording backlog over its hard limit".into(),
            );
            self.abandon();
        }
    }

    /// The current result is over: send its rows and any `rows_limit`.
    fn close_result_rows(&mut self) {
        if self.health.failed.load(Ordering::Acquire) {
            return;
        }
        self.send_row_batch();
        self.note_dropped_rows();
        self.result_rows = ResultRows::default();
    }

    /// Tells the writer to stop this recording without a trailer.
    fn abandon(&mut self) {
        self.push(SessionCommand::Abandon);
    }

    fn end(&mut self, reason: &str) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.close_result_rows();
        if self.health.failed.load(Ordering::Acquire) {
            self.abandon();
            return;
        }
        self.push(SessionCommand::Close {
            mono_ns: self.mono_ns(),
            reason: reason.into(),
        });
    }
}

/// What the process sends the writer, through its channel.
enum Command {
    /// A new session: its header, and the queue its events arrive on.
    Open {
        key: u64,
        identity: Box<RecordedIdentity>,
        at: SystemTime,
        started: Instant,
        health: Arc<SessionHealth>,
        queue: Arc<SessionQueue>,
    },
    /// Collect every queue and write every buffer to its file.
    Flush(oneshot::Sender<()>),
    /// Run retention now (it also runs at start and every minute).
    Retention(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// What a session sends the writer, in order, through its [`SessionQueue`].
///
/// Kept small (the common commands fit in about a cache line): each one is
/// written on the session's CPU and read on the writer's. Times are
/// monotonic nanoseconds since the session started; the writer turns them
/// into wall-clock time.
enum SessionCommand {
    Append {
        mono_ns: u64,
        payload: Payload,
        cost: usize,
    },
    Close {
        mono_ns: u64,
        reason: String,
    },
    /// Stop writing without a trailer (the session's recording failed).
    Abandon,
}

/// A prepared statement the session has sent in full. Its event holds the
/// SQL text whose address keys the map.
struct SentStatement {
    id: u32,
    event: StatementEvent,
    cost: usize,
}

/// A `statement` event sharing the caller's `Arc`s, and its backlog cost.
fn statement_event(
    sql: &Arc<str>,
    form: ProtocolForm,
    kinds: &Arc<[StatementKind]>,
    tables: &Arc<[String]>,
) -> (StatementEvent, usize) {
    let cost = sql.len() + tables.iter().map(String::len).sum::<usize>();
    let event = StatementEvent {
        sql: sql.clone(),
        form,
        kinds: kinds.clone(),
        tables: tables.clone(),
    };
    (event, cost)
}

/// A CommandComplete tag (`SELECT 1`, `INSERT 0 5`), stored inline.
#[derive(Clone, Copy)]
struct ShortTag {
    len: u8,
    bytes: [u8; SHORT_TAG_MAX],
}

/// Longer tags are sent boxed.
const SHORT_TAG_MAX: usize = 31;

impl ShortTag {
    fn new(tag: &str) -> Option<Self> {
        let mut bytes = [0; SHORT_TAG_MAX];
        bytes.get_mut(..tag.len())?.copy_from_slice(tag.as_bytes());
        Some(Self {
            len: tag.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("copied from a str, cut at its end")
    }
}

/// One session's commands waiting for the writer.
///
/// The session pushes under the lock; the writer swaps the whole `Vec` out
/// on its tick. The two rarely meet, so the lock stays uncontended, and a
/// send costs no wake-up. The writer forgets a queue once the session has
/// dropped its handle and the queue is empty.
#[derive(Default)]
struct SessionQueue {
    inner: Mutex<QueueInner>,
}

#[derive(Default)]
struct QueueInner {
    commands: Vec<SessionCommand>,
    /// The writer has shut down: nothing pushed now would be written.
    closed: bool,
}

impl SessionQueue {
    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        // A panic while holding the lock cannot leave a Vec push half done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An event body, or what the writer turns into one (off the hot path).
enum Payload {
    Event(Box<Body>),
    /// A prepared statement's first execution: the writer keeps it as `id`.
    Prepared(u32, Box<StatementEvent>),
    /// A later execution of the prepared statement kept as this id.
    Repeat(u32),
    /// The session forgot its statement ids (see [`SENT_STATEMENTS_MAX`]).
    ForgetStatements,
    /// A `result` with a short tag and no error.
    Result {
        tag: ShortTag,
        rows: Option<u64>,
    },
    Rows(Vec<CutRow>),
    CopyData {
        direction: CopyDirection,
        data: Vec<u8>,
        truncated_from_bytes: Option<u64>,
    },
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    opener: FileOpener,
    key: Option<Vec<u8>>,
    rows: RowsMode,
    max_row_bytes: usize,
    flush_interval: Duration,
    retention: retention::RetentionPolicy,
    backlog: Arc<AtomicUsize>,
    metrics: &'static RecordingMetrics,
    sessions: HashMap<u64, OpenRecording, foldhash::fast::RandomState>,
    /// Every session queue still to collect, by session key.
    queues: Vec<(u64, Arc<SessionQueue>)>,
    /// An empty `Vec` swapped into a queue as it is collected (keeps both
    /// allocations alive instead of growing a new one each tick).
    spare: Vec<SessionCommand>,
}

/// One recording the writer is appending to.
struct OpenRecording {
    path: PathBuf,
    session_id: String,
    file: File,
    buf: Vec<u8>,
    chain: ChainWriter,
    last_mono_ns: u64,
    /// When the session started, on both clocks: an event's `ts` is
    /// `started_at` plus its monotonic offset.
    started: Instant,
    started_at: SystemTime,
    /// The session's prepared statements, serialized, by the id it sends
    /// for them.
    statements: HashMap<u32, Vec<u8>, foldhash::fast::RandomState>,
    /// Scratch space for a line's `ts` and for a body serialized by hand.
    ts: String,
    body: Vec<u8>,
    totals: SessionTotals,
    health: Arc<SessionHealth>,
}

impl Writer {
    fn run(mut self, inbox: &mpsc::Receiver<Command>) {
        // The writer polls its inbox and the session queues on a short tick
        // instead of blocking: a sender then never has to wake this thread,
        // so recording costs the hot path no syscall and no cross-CPU
        // wake-up per event. Events still reach the disk within
        // `flush_interval`: everything queued is collected right before
        // every flush.
        let tick =
            (self.flush_interval / 4).clamp(Duration::from_millis(1), Duration::from_millis(50));
        let mut next_flush = Instant::now() + self.flush_interval;
        let mut next_retention = Instant::now() + RETENTION_INTERVAL;
        loop {
            std::thread::sleep(tick.min(next_flush.saturating_duration_since(Instant::now())));
            loop {
                match inbox.try_recv() {
                    Ok(Command::Shutdown(done)) => {
                        self.close_all("recorder_shutdown");
                        let _ = done.send(());
                        return;
                    }
                    Ok(command) => self.handle(command),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.close_all("recorder_dropped");
                        return;
                    }
                }
            }
            self.collect_queues();
            let now = Instant::now();
            if now >= next_flush {
                self.flush_all();
                next_flush = now + self.flush_interval;
            }
            if now >= next_retention {
                self.enforce_retention();
                next_retention = now + RETENTION_INTERVAL;
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Open {
                key,
                identity,
                at,
                started,
                health,
                queue,
            } => {
                self.open(key, *identity, (started, at), health);
                self.queues.push((key, queue));
            }
            Command::Flush(done) => {
                self.collect_queues();
                self.flush_all();
                let _ = done.send(());
            }
            Command::Retention(done) => {
                // Sessions closed before the request are no longer open.
                self.collect_queues();
                self.enforce_retention();
                let _ = done.send(());
            }
            Command::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    /// Handles everything the sessions queued, in each session's order;
    /// forgets the queues whose sessions are gone.
    fn collect_queues(&mut self) {
        let mut i = 0;
        while i < self.queues.len() {
            let (key, queue) = &self.queues[i];
            let key = *key;
            let mut batch = std::mem::take(&mut self.spare);
            let gone = {
                let mut inner = queue.lock();
                std::mem::swap(&mut inner.commands, &mut batch);
                // Only the writer holds it: nothing more can be pushed.
                Arc::strong_count(queue) == 1
            };
            for command in batch.drain(..) {
                self.handle_session(key, command);
            }
            self.spare = batch;
            if gone {
                self.queues.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn handle_session(&mut self, key: u64, command: SessionCommand) {
        match command {
            SessionCommand::Append {
                mono_ns,
                payload,
                cost,
            } => {
                self.backlog.fetch_sub(cost, Ordering::AcqRel);
                self.append(key, mono_ns, payload);
            }
            SessionCommand::Close { mono_ns, reason } => self.close(key, mono_ns, reason),
            SessionCommand::Abandon => {
                if let Some(mut recording) = self.sessions.remove(&key) {
                    // Everything appended so far is sound; write it, add no trailer.
                    self.write_out(&mut recording);
                }
            }
        }
    }

    /// Retention, sparing every recording still open.
    fn enforce_retention(&self) {
        let open: HashSet<PathBuf> = self.sessions.values().map(|r| r.path.clone()).collect();
        run_retention(&self.dir, &open, &self.retention);
    }

    fn open(
        &mut self,
        key: u64,
        identity: RecordedIdentity,
        (started, at): (Instant, SystemTime),
        health: Arc<SessionHealth>,
    ) {
        let stem = recording_id(at, &identity.id);
        let mut attempt = 1;
        let (path, file) = loop {
            let name = if attempt == 1 {
                stem.clone()
            } else {
                format!("{stem}-{attempt}")
            };
            let path = self.dir.join(format!("{name}.{FILE_EXTENSION}"));
            match (self.opener)(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(session = %identity.id, path = %path.display(), error = %e, "cannot create recording");
                    health.fail(
                        FailureKind::Create,
                        format!("cannot create {}: {e}", path.display()),
                    );
                    return;
                }
            }
        };
        let session_id = identity.id.clone();
        let mut recording = OpenRecording {
            path,
            chain: ChainWriter::new(&session_id),
            session_id: session_id.clone(),
            file,
            buf: Vec::with_capacity(8 << 10),
            last_mono_ns: 0,
            started,
            started_at: at,
            statements: HashMap::default(),
            ts: String::new(),
            body: Vec::new(),
            totals: SessionTotals::default(),
            health,
        };
        let header = Header {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            session_id,
            writer: concat!("hoop ", env!("CARGO_PKG_VERSION")).into(),
            rows: self.rows,
            max_row_bytes: self.max_row_bytes as u64,
        };
        recording.push(0, &Body::Header(header), self.metrics);
        recording.push(
            0,
            &Body::SessionStart(SessionStart { identity }),
            self.metrics,
        );
        self.sessions.insert(key, recording);
    }

    /// The event a payload stands for. Prepared statements and short
    /// results are written from their serialized bytes by
    /// [`append`](Self::append) and never reach here.
    fn encode(payload: Payload) -> Body {
        match payload {
            Payload::Event(body) => *body,
            Payload::Prepared(..)
            | Payload::Repeat(_)
            | Payload::ForgetStatements
            | Payload::Result { .. } => unreachable!("handled by Writer::append"),
            Payload::Rows(rows) => {
                let mut truncated = Vec::new();
                let rows = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, row)| {
                        if let Some(original_bytes) = row.original_bytes {
                            truncated.push(TruncatedRow {
                                row: i as u32,
                                original_bytes,
                            });
                        }
                        row.values
                            .into_iter()
                            .map(|v| v.map(|v| Cell::from_bytes(&v)))
                            .collect()
                    })
                    .collect();
                Body::Rows(RowsEvent { rows, truncated })
            }
            Payload::CopyData {
                direction,
                data,
                truncated_from_bytes,
            } => Body::CopyData(CopyDataEvent {
                direction,
                data: Cell::from_bytes(&data),
                truncated_from_bytes,
            }),
        }
    }

    fn append(&mut self, key: u64, mono_ns: u64, payload: Payload) {
        // Unknown key: the file could not be created, or the recording was abandoned.
        let Some(recording) = self.sessions.get_mut(&key) else {
            return;
        };
        match payload {
            Payload::Prepared(id, event) => {
                // Serialized once; every execution reuses the bytes.
                let json = format::serialize_body(&Body::Statement(*event));
                recording.push_statement(mono_ns, &json, self.metrics);
                recording.statements.insert(id, json);
            }
            Payload::Repeat(id) => {
                let Some(json) = recording.statements.remove(&id) else {
                    // The session sends an id only after the statement itself.
                    tracing::error!(session = %recording.session_id, id, "recording: execution of an unknown prepared statement");
                    return;
                };
                recording.push_statement(mono_ns, &json, self.metrics);
                recording.statements.insert(id, json);
            }
            Payload::ForgetStatements => recording.statements.clear(),
            Payload::Result { tag, rows } => {
                let mut body = std::mem::take(&mut recording.body);
                body.clear();
                format::serialize_result_body(tag.as_str(), rows, &mut body);
                recording.push_serialized(mono_ns, &body, self.metrics);
                recording.body = body;
            }
            payload => recording.push(mono_ns, &Writer::encode(payload), self.metrics),
        }
        if recording.buf.len() >= WRITE_BUFFER_BYTES {
            let mut recording = self.sessions.remove(&key).expect("present");
            if self.write_out(&mut recording) {
                self.sessions.insert(key, recording);
            }
        }
    }

    fn close(&mut self, key: u64, mono_ns: u64, reason: String) {
        let Some(mut recording) = self.sessions.remove(&key) else {
            return;
        };
        self.finish(&mut recording, mono_ns, reason);
    }

    /// `session_end`, trailer, write, fsync file and directory.
    fn finish(&self, recording: &mut OpenRecording, mono_ns: u64, reason: String) {
        let totals = recording.totals;
        recording.push(
            mono_ns,
            &Body::SessionEnd(SessionEndEvent { reason, totals }),
            self.metrics,
        );
        let mono_ns = recording.last_mono_ns;
        rfc3339_into(recording.wall_clock(mono_ns), &mut recording.ts);
        recording.chain.append_trailer(
            &mut recording.buf,
            mono_ns,
            &recording.ts,
            self.key.as_deref(),
        );
        self.metrics.events_total.inc();
        if !self.write_out(recording) {
            return;
        }
        let synced = recording
            .file
            .sync_all()
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(e) = synced {
            tracing::error!(session = %recording.session_id, path = %recording.path.display(), error = %e, "cannot fsync recording");
            recording.health.fail(
                FailureKind::Sync,
                format!("fsync {}: {e}", recording.path.display()),
            );
        }
    }

    /// Writes a recording's buffer to its file. On failure raises the
    /// session's signal and returns false: the caller must stop writing it.
    fn write_out(&self, recording: &mut OpenRecording) -> bool {
        write_buffer(self.metrics, recording)
    }

    fn flush_all(&mut self) {
        let mut failed = Vec::new();
        for (key, recording) in &mut self.sessions {
            if !recording.buf.is_empty() && !write_buffer(self.metrics, recording) {
                failed.push(*key);
            }
        }
        for key in failed {
            self.sessions.remove(&key);
        }
    }

    fn close_all(&mut self, reason: &str) {
        // Refuse what sessions push from now on (they fail as `Closed`),
        // then write what they queued before.
        for (_, queue) in &self.queues {
            queue.lock().closed = true;
        }
        self.collect_queues();
        self.queues.clear();
        let sessions: Vec<(u64, OpenRecording)> = self.sessions.drain().collect();
        for (_, mut recording) in sessions {
            let mono_ns = u64::try_from(recording.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.finish(&mut recording, mono_ns, reason.into());
        }
    }
}

/// Writes `recording.buf` to its file; false (and the session failed) on error.
fn write_buffer(metrics: &'static RecordingMetrics, recording: &mut OpenRecording) -> bool {
    let started = Instant::now();
    let result = recording.file.write_all(&recording.buf);
    metrics
        .flush_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            metrics.bytes_total.inc_by(recording.buf.len() as u64);
            recording.buf.clear();
            true
        }
        Err(e) => {
            tracing::error!(session = %recording.session_id, path = %recording.path.display(), error = %e, "cannot write recording");
            recording.health.fail(
                FailureKind::Write,
                format!("write {}: {e}", recording.path.display()),
            );
            recording.buf.clear();
            false
        }
    }
}

impl OpenRecording {
    /// The wall-clock time of an event `mono_ns` into the session.
    fn wall_clock(&self, mono_ns: u64) -> SystemTime {
        self.started_at + Duration::from_nanos(mono_ns)
    }

    /// Appends a `statement` line whose body is serialized already.
    fn push_statement(&mut self, mono_ns: u64, body: &[u8], metrics: &RecordingMetrics) {
        self.totals.statements += 1;
        self.push_serialized(mono_ns, body, metrics);
    }

    /// Appends a line whose body is serialized already (and counted in the
    /// totals by the caller).
    fn push_serialized(&mut self, mono_ns: u64, body: &[u8], metrics: &RecordingMetrics) {
        let mono_ns = mono_ns.max(self.last_mono_ns);
        self.last_mono_ns = mono_ns;
        rfc3339_into(self.wall_clock(mono_ns), &mut self.ts);
        self.chain
            .append_serialized(&mut self.buf, mono_ns, &self.ts, body);
        metrics.events_total.inc();
    }

    /// Appends one chained line to the buffer and updates the totals.
    fn push(&mut self, mono_ns: u64, body: &Body, metrics: &RecordingMetrics) {
        // mono_ns of batched rows is their first row's time, which can precede
        // an event queued between; keep the file's clock non-decreasing.
        let mono_ns = mono_ns.max(self.last_mono_ns);
        self.last_mono_ns = mono_ns;
        match body {
            Body::Statement(_) => self.totals.statements += 1,
            Body::Verdict(v) if v.verdict == VerdictKind::Deny => self.totals.denied += 1,
            Body::Verdict(v) if v.verdict == VerdictKind::Hold => self.totals.held += 1,
            Body::Error(_) => self.totals.errors += 1,
            Body::Rows(r) => self.totals.rows_recorded += r.rows.len() as u64,
            Body::CopyData(_) => self.totals.rows_recorded += 1,
            Body::RowsLimit(l) => self.totals.rows_dropped += l.dropped_rows,
            _ => {}
        }
        rfc3339_into(self.wall_clock(mono_ns), &mut self.ts);
        self.chain.append(&mut self.buf, mono_ns, &self.ts, body);
        metrics.events_total.inc();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::record::{
        format::Entry,
        verify::{MacCheck, VerifyStatus, verify_file},
    };

    fn config(dir: &Path) -> RecordingConfig {
        RecordingConfig {
            dir: dir.to_path_buf(),
            flush_interval: Duration::from_millis(50),
            ..RecordingConfig::default()
        }
    }

    fn identity(id: &str) -> SessionIdentity {
        SessionIdentity {
            id: id.into(),
            workload: Some("/sys/fs/cgroup/app".into()),
            client: Some(SocketAddr::from(([127, 0, 0, 1], 40000))),
            original_destination: Some(SocketAddr::from(([10, 0, 0, 5], 5432))),
            user: Some("alice".into()),
            database: Some("shop".into()),
            application_name: Some("psql".into()),
            backend_pid: Some(4242),
            client_tls: true,
            upstream_tls: false,
        }
    }

    fn only_recording(dir: &Path) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    fn entries(path: &Path) -> Vec<Entry> {
        std::fs::read(path)
            .expect("read")
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("entry"))
            .collect()
    }

    fn types(path: &Path) -> Vec<&'static str> {
        entries(path).iter().map(|e| e.body.type_name()).collect()
    }

    fn select(session: &mut SessionRecorder, sql: &str) -> Result<(), RecordError> {
        session.statement(
            &sql.into(),
            ProtocolForm::Simple,
            &[StatementKind::Select].into(),
            &["customers".to_owned()].into(),
        )
    }

    #[tokio::test]
    async fn a_finished_session_is_intact_with_identity_and_trailer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "k3y\n").expect("key");
        let records = dir.path().join("rec");
        let cfg = RecordingConfig {
            hmac_key_file: Some(key_file),
            ..config(&records)
        };
        let recorder = Recorder::start(&cfg).expect("starts");
        let mut session = recorder.open_session(&identity("s-1")).expect("opens");
        select(&mut session, "SELECT name FROM customers").expect("recorded");
        session.verdict(&Verdict::Allow).expect("recorded");
        session.result(Some("SELECT 2"), 2, None);
        session.end("client_closed");
        recorder.flush().await;

        let path = only_recording(&records);
        assert!(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .ends_with("-s-1.jsonl")
        );
        let report = verify_file(&path, Some(b"k3y")).expect("reads");
        assert_eq!(
            (report.status, report.mac),
            (VerifyStatus::Intact, MacCheck::Verified)
        );
        assert_eq!(
            types(&path),
            [
                "header",
                "session_start",
                "statement",
                "verdict",
                "result",
                "session_end",
                "trailer"
            ]
        );
        let all = entries(&path);
        let Body::SessionStart(start) = &all[1].body else {
            panic!("session_start")
        };
        assert_eq!(start.identity, RecordedIdentity::from(&identity("s-1")));
        let Body::SessionEnd(end) = &all[5].body else {
            panic!("session_end")
        };
        assert_eq!(
            (end.reason.as_str(), end.totals.statements),
            ("client_closed", 1)
        );
        assert!(all.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns));
    }

    #[tokio::test]
    async fn prepared_executions_record_the_full_statement_each_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recorder = Recorder::start(&config(dir.path())).expect("starts");
        let mut session = recorder.open_session(&identity("s-p")).expect("opens");
        let kinds: Arc<[StatementKind]> = [StatementKind::Select].into();
        let tables: Arc<[String]> = ["t".to_owned()].into();
        let small: Arc<str> = "SELECT a FROM t WHERE id = $1".into();
        // Two statements of 3/4 of SENT_STATEMENT_BYTES_MAX each: the second
        // makes both sides forget, and the small one is sent again.
        let big: Arc<str> =
            format!("SELECT '{}'", "x".repeat(SENT_STATEMENT_BYTES_MAX * 3 / 4)).into();
        let big2: Arc<str> =
            format!("SELECT '{}'", "y".repeat(SENT_STATEMENT_BYTES_MAX * 3 / 4)).into();
        let mut expected = Vec::new();
        for sql in [&small, &small, &big, &small, &big2, &small, &big2] {
            session
                .prepared_statement(sql, ProtocolForm::Extended, &kinds, &tables)
                .expect("recorded");
            session.result(Some("SELECT 1"), 1, None);
            expected.push(sql.to_string());
        }
        // A long tag travels boxed; an error result too.
        let long_tag = format!("SELECT {}", "9".repeat(40));
        session.result(Some(&long_tag), 1, None);
        session.result(None, 0, Some("42P01"));
        session.end("client_closed");
        recorder.flush().await;

        let path = only_recording(dir.path());
        assert_eq!(
            verify_file(&path, None).expect("reads").status,
            VerifyStatus::Intact
        );
        let all = entries(&path);
        let statements: Vec<String> = all
            .iter()
            .filter_map(|e| match &e.body {
                Body::Statement(s) => {
                    assert_eq!(s.form, ProtocolForm::Extended);
                    assert_eq!((&*s.kinds, &*s.tables), (&*kinds, &*tables));
                    Some(s.sql.to_string())
                }
                _ => None,
            })
            .collect();
        assert_eq!(statements, expected);
        let results: Vec<(Option<String>, Option<String>)> = all
            .iter()
            .filter_map(|e| match &e.body {
                Body::Result(r) => Some((r.tag.clone(), r.sqlstate.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(results.len(), 9);
        assert_eq!(results[0], (Some("SELECT 1".into()), None));
        assert_eq!(results[7], (Some(long_tag), None));
        assert_eq!(results[8], (None, Some("42P01".into())));
        let Some(Body::SessionEnd(end)) = all.iter().rev().nth(1).map(|e| &e.body) else {
            panic!("session_end")
        };
        assert_eq!(end.totals.statements, 7);
        assert!(all.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns));
    }

    #[tokio::test]
    async fn events_reach_the_disk_within_the_flush_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recorder = Recorder::start(&config(dir.path())).expect("starts");
        let mut session = recorder.open_session(&identity("s-2")).expect("opens");
        select(&mut session, "SELECT 1").expect("recorded");
        // No end, no explicit flush: only the 50ms interval can put it on disk.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let path = only_recording(dir.path());
        assert_eq!(types(&path), ["header", "session_start", "statement"]);
        // What a kill -9 now would leave: truncated but intact.
        assert_eq!(
            verify_file(&path, None).expect("reads").status,
            VerifyStatus::TruncatedIntact { torn_tail: false }
        );
        drop(session);
        recorder.flush().await;
        assert_eq!(types(&path).last(), Some(&"trailer"));
        let Body::SessionEnd(end) = &entries(&path)[3].body else {
            panic!("session_end")
        };
        assert_eq!(end.reason, "connection_task_ended");
    }

    #[test]
    fn an_uncreatable_directory_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").expect("write");
        let err = Recorder::start(&config(&file.join("recordings"))).expect_err("parent is a file");
        assert!(matches!(err, RecordError::CreateDir { .. }), "{err}");
    }

    fn dev_full(_: &Path) -> std::io::Result<File> {
        File::options().write(true).open("/dev/full")
    }

    #[tokio::test]
    async fn a_full_disk_fails_the_session_and_blocks_statements() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recorder = Recorder::start_with(&config(dir.path()), dev_full).expect("starts");
        let mut session = recorder.open_session(&identity("s-3")).expect("opens");
        let mut watch = session.failure_watch();
        select(&mut session, "SELECT 1").expect("queued before the failure is known");
        recorder.flush().await;
        assert!(session.failed());
        let failure = session.failure().expect("failure");
        assert_eq!(failure.kind, FailureKind::Write);
        assert!(watch.has_changed().expect("sender alive"));
        assert!(watch.borrow_and_update().is_some());
        let err = select(&mut session, "DELETE FROM customers").expect_err("fail closed");
        assert!(matches!(
            err,
            RecordError::SessionFailed(RecordingFailure {
                kind: FailureKind::Write,
                ..
            })
        ));
        assert_eq!(recorder.on_error(), RecordingOnError::CloseSession);
    }

    #[tokio::test]
    async fn a_directory_that_vanishes_fails_new_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = dir.path().join("rec");
        let recorder = Recorder::start(&config(&records)).expect("starts");
        std::fs::remove_dir(&records).expect("rmdir");
        std::fs::write(&records, b"now a file").expect("write");
        let session = recorder.open_session(&identity("s-4")).expect("queued");
        recorder.flush().await;
        assert_eq!(session.failure().map(|f| f.kind), Some(FailureKind::Create));
    }

    #[tokio::test]
    async fn summary_mode_never_writes_row_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recorder = Recorder::start(&config(dir.path())).expect("starts");
        let mut session = recorder.open_session(&identity("s-5")).expect("opens");
        select(&mut session, "SELECT ssn FROM customers").expect("recorded");
        let columns = [Some(&b"***-**-6789"[..]), None];
        session.masked_row(MaskedRow::after_masking(&columns));
        session.copy_data(MaskedCopyChunk::after_masking(
            CopyDirection::ToClient,
            b"***-**-6789\n",
        ));
        session.result(Some("SELECT 1"), 1, None);
        session.end("client_closed");
        recorder.flush().await;
        let path = only_recording(dir.path());
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("6789"), "{text}");
        assert!(!types(&path).contains(&"rows"));
        let Body::Result(result) = &entries(&path)[3].body else {
            panic!("result")
        };
        assert_eq!(result.rows, Some(1));
    }

    #[tokio::test]
    async fn full_mode_records_masked_rows_batched_and_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = RecordingConfig {
            rows: RecordRows::Full,
            max_row_bytes: 8,
            ..config(dir.path())
        };
        let recorder = Recorder::start(&cfg).expect("starts");
        let mut session = recorder.open_session(&identity("s-6")).expect("opens");
        select(&mut session, "SELECT id, ssn FROM customers").expect("recorded");
        for (id, ssn) in [(&b"1"[..], &b"***-1234"[..]), (b"2", b"***-5678")] {
            let columns = [Some(id), Some(ssn), None];
            session.masked_row(MaskedRow::after_masking(&columns));
        }
        session.result(Some("SELECT 2"), 2, None);
        session.copy_data(MaskedCopyChunk::after_masking(
            CopyDirection::ToClient,
            b"1\t***-1234\n",
        ));
        session.end("client_closed");
        recorder.flush().await;
        let path = only_recording(dir.path());
        assert_eq!(
            types(&path),
            [
                "header",
                "session_start",
                "statement",
                "rows",
                "result",
                "copy_data",
                "session_end",
                "trailer"
            ]
        );
        let all = entries(&path);
        let Body::Rows(rows) = &all[3].body else {
            panic!("rows")
        };
        // "1" + "***-123" = 8 bytes: the ssn is cut and the NULL after it omitted.
        assert_eq!(
            rows.rows[0],
            vec![
                Some(Cell::Text("1".into())),
                Some(Cell::Text("***-123".into()))
            ]
        );
        assert_eq!(
            rows.truncated,
            vec![
                TruncatedRow {
                    row: 0,
                    original_bytes: 9
                },
                TruncatedRow {
                    row: 1,
                    original_bytes: 9
                }
            ]
        );
        let Body::CopyData(copy) = &all[5].body else {
            panic!("copy_data")
        };
        assert_eq!(
            (copy.data.clone(), copy.truncated_from_bytes),
            (Cell::Text("1\t***-12".into()), Some(11))
        );
        let Body::SessionEnd(end) = &all[6].body else {
            panic!("session_end")
        };
        assert_eq!(end.totals.rows_recorded, 3);
        assert_eq!(
            verify_file(&path, None).expect("reads").status,
            VerifyStatus::Intact
        );
    }

    #[tokio::test]
    async fn backpressure_drops_rows_and_says_so_but_keeps_statements() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = RecordingConfig {
            rows: RecordRows::Full,
            ..config(dir.path())
        };
        let recorder = Recorder::start(&cfg).expect("starts");
        let shared = Arc::clone(recorder.shared.as_ref().expect("enabled"));
        let mut session = recorder.open_session(&identity("s-7")).expect("opens");
        select(&mut session, "SELECT id FROM customers").expect("recorded");
        let row = [Some(&b"1"[..])];
        session.masked_row(MaskedRow::after_masking(&row));
        session.masked_row(MaskedRow::after_masking(&row));
        // The writer is (pretend) far behind on row data.
        shared
            .backlog
            .fetch_add(ROW_BACKLOG_LIMIT_BYTES, Ordering::AcqRel);
        session.masked_row(MaskedRow::after_masking(&row)); // flushes a batch of 3 → dropped
        // Statements still go through under the hard limit.
        session.result(Some("SELECT 3"), 3, None);
        shared
            .backlog
            .fetch_sub(ROW_BACKLOG_LIMIT_BYTES, Ordering::AcqRel);
        session.end("client_closed");
        recorder.flush().await;
        let path = only_recording(dir.path());
        assert_eq!(
            types(&path),
            [
                "header",
                "session_start",
                "statement",
                "rows_limit",
                "result",
                "session_end",
                "trailer"
            ]
        );
        let all = entries(&path);
        let Body::RowsLimit(limit) = &all[3].body else {
            panic!("rows_limit")
        };
        assert_eq!((limit.recorded_rows, limit.dropped_rows), (0, 3));
        let Body::SessionEnd(end) = &all[5].body else {
            panic!("session_end")
        };
        assert_eq!(end.totals.rows_dropped, 3);

        // Past the hard limit a statement is refused and the recording stops without a trailer.
        let mut session = recorder.open_session(&identity("s-8")).expect("opens");
        shared
            .backlog
            .fetch_add(BACKLOG_HARD_LIMIT_BYTES, Ordering::AcqRel);
        let err = select(&mut session, "DELETE FROM customers").expect_err("fail closed");
        shared
            .backlog
            .fetch_sub(BACKLOG_HARD_LIMIT_BYTES, Ordering::AcqRel);
        assert!(matches!(
            err,
            RecordError::SessionFailed(RecordingFailure {
                kind: FailureKind::Backlog,
                ..
            })
        ));
        session.end("client_closed");
        recorder.flush().await;
        let s8 = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .find(|p| p.to_string_lossy().ends_with("-s-8.jsonl"))
            .expect("s-8 recording");
        assert_eq!(types(&s8), ["header", "session_start"]);
        assert_eq!(
            verify_file(&s8, None).expect("reads").status,
            VerifyStatus::TruncatedIntact { torn_tail: false }
        );
    }

    #[tokio::test]
    async fn retention_deletes_the_oldest_but_never_an_open_recording() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = SystemTime::now() - Duration::from_hours(30 * 24);
        let stale = dir.path().join("20200101T000000Z-old.jsonl");
        std::fs::write(&stale, vec![b'x'; 100]).expect("write");
        File::options()
            .write(true)
            .open(&stale)
            .expect("open")
            .set_modified(old)
            .expect("mtime");
        let cfg = RecordingConfig {
            retain_days: Some(7),
            max_total_bytes: Some(1),
            ..config(dir.path())
        };
        // At start: the 30-day-old file goes.
        let recorder = Recorder::start(&cfg).expect("starts");
        assert!(!stale.exists());

        let mut live = recorder.open_session(&identity("live")).expect("opens");
        select(&mut live, "SELECT 1").expect("recorded");
        recorder.flush().await;
        let live_path = only_recording(dir.path());
        // Make the open recording look ancient and the directory over budget.
        File::options()
            .write(true)
            .open(&live_path)
            .expect("open")
            .set_modified(old)
            .expect("mtime");
        let closed = dir.path().join("20200102T000000Z-closed.jsonl");
        std::fs::write(&closed, vec![b'x'; 100]).expect("write");
        recorder.enforce_retention().await;
        assert!(!closed.exists(), "over budget: deleted");
        assert!(live_path.exists(), "open: kept");
        live.end("client_closed");
        recorder.enforce_retention().await;
        assert!(!live_path.exists(), "closed and over budget: deleted");
    }

    #[tokio::test]
    async fn shutdown_closes_open_recordings_and_later_events_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recorder = Recorder::start(&config(dir.path())).expect("starts");
        let mut session = recorder.open_session(&identity("s-9")).expect("opens");
        select(&mut session, "SELECT 1").expect("recorded");
        recorder.shutdown().await;
        let path = only_recording(dir.path());
        assert_eq!(
            verify_file(&path, None).expect("reads").status,
            VerifyStatus::Intact
        );
        let Body::SessionEnd(end) = &entries(&path)[3].body else {
            panic!("session_end")
        };
        assert_eq!(end.reason, "recorder_shutdown");
        // The writer is gone: a statement cannot be recorded.
        std::thread::sleep(Duration::from_millis(20));
        assert!(select(&mut session, "SELECT 2").is_err());
        assert!(matches!(
            recorder.open_session(&identity("s-10")),
            Err(RecordError::Closed)
        ));
    }

    #[test]
    fn handles_can_move_between_tasks() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Recorder>();
        send::<SessionRecorder>();
    }

    #[test]
    fn a_disabled_recorder_records_nothing_and_never_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = RecordingConfig {
            enabled: false,
            ..config(&dir.path().join("rec"))
        };
        let recorder = Recorder::start(&cfg).expect("starts");
        assert!(!recorder.is_enabled());
        let mut session = recorder.open_session(&identity("s")).expect("opens");
        select(&mut session, "SELECT 1").expect("no-op");
        session.masked_row(MaskedRow::after_masking(&[Some(b"x")]));
        assert!(!session.failed());
        session.end("client_closed");
        assert!(!dir.path().join("rec").exists());
    }
}
