//! What travels from sessions to the writer thread: commands, payloads
//! and the per-session queue.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What the process sends the writer, through its channel.
pub(super) enum Command {
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
pub(super) enum SessionCommand {
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
pub(super) struct SentStatement {
    pub(super) id: u32,
    pub(super) event: StatementEvent,
    pub(super) cost: usize,
}

/// A `statement` event sharing the caller's `Arc`s, and its backlog cost.
pub(super) fn statement_event(
    sql: &Arc<str>,
    form: Submission,
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
pub(super) struct ShortTag {
    pub(super) len: u8,
    pub(super) bytes: [u8; SHORT_TAG_MAX],
}

/// Longer tags are sent boxed.
pub(super) const SHORT_TAG_MAX: usize = 31;

impl ShortTag {
    pub(super) fn new(tag: &str) -> Option<Self> {
        let mut bytes = [0; SHORT_TAG_MAX];
        bytes.get_mut(..tag.len())?.copy_from_slice(tag.as_bytes());
        Some(Self {
            len: tag.len() as u8,
            bytes,
        })
    }

    /// The tag's bytes (those of the `str` it was made from).
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// One session's commands waiting for the writer.
///
/// The session pushes under the lock; the writer swaps the whole `Vec` out
/// on its tick. The two rarely meet, so the lock stays uncontended, and a
/// send costs no wake-up. The writer forgets a queue once the session has
/// dropped its handle and the queue is empty.
#[derive(Default)]
pub(super) struct SessionQueue {
    pub(super) inner: Mutex<QueueInner>,
}

#[derive(Default)]
pub(super) struct QueueInner {
    pub(super) commands: Vec<SessionCommand>,
    /// The writer has shut down: nothing pushed now would be written.
    pub(super) closed: bool,
}

impl SessionQueue {
    pub(super) fn lock(&self) -> MutexGuard<'_, QueueInner> {
        // A panic while holding the lock cannot leave a Vec push half done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An event body, or what the writer turns into one (off the hot path).
pub(super) enum Payload {
    Event(Box<Body>),
    /// A statement (one line in three), without a heap allocation: its
    /// text, kinds and tables are shared `Arc`s.
    Statement(StatementEvent),
    /// A prepared statement's first execution: the writer keeps it as `id`.
    Prepared(u32, Box<StatementEvent>),
    /// A later execution of the prepared statement kept as this id.
    Repeat(u32),
    /// The session forgot its statement ids (see [`SENT_STATEMENTS_MAX`]).
    ForgetStatements,
    /// An `allow` verdict (the usual one), without a heap allocation.
    Allowed,
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
