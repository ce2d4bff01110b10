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
    /// The texts of the queued [`Payload::Text`] statements, one after
    /// another; collected (swapped out) with `commands`.
    pub(super) text: Vec<u8>,
    /// The writer has shut down: nothing pushed now would be written.
    pub(super) closed: bool,
}

impl QueueInner {
    /// Fetches the memory the next two commands will be pushed into.
    ///
    /// Called under the lock after a push. The `Vec` is the one the writer
    /// drained a tick ago, long gone from the cache, and the unlock's atomic
    /// swap waits for every store before it: without this, each push's
    /// cache miss is paid in full at the unlock (`perf annotate` showed the
    /// unlock as most of the session's recording cost under load).
    pub(super) fn warm_next(&self) {
        let room = (self.commands.capacity() - self.commands.len()) * size_of::<SessionCommand>();
        warm(
            self.commands.as_ptr_range().end.cast(),
            room.min(2 * size_of::<SessionCommand>()),
        );
        let room = self.text.capacity() - self.text.len();
        warm(self.text.as_ptr_range().end, room.min(TEXT_AHEAD));
    }
}

/// The cache line size [`QueueInner::warm_next`] steps by.
const CACHE_LINE: usize = 64;
/// Bytes of the next statement's text [`QueueInner::warm_next`] fetches.
const TEXT_AHEAD: usize = 2 * CACHE_LINE;

/// Prefetches for writing the lines holding `len` bytes from `start`.
fn warm(start: *const u8, len: usize) {
    let offset = start as usize % CACHE_LINE;
    let line = start.wrapping_sub(offset);
    let mut at = 0;
    while at < offset + len {
        hoop_core::hint::prefetch_for_write(line.wrapping_add(at));
        at += CACHE_LINE;
    }
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
    /// A statement whose text was copied into the queue's
    /// [`text`](QueueInner::text), at `sql` (a simple-protocol statement:
    /// no allocation of its own, and no cross-thread free). Until queued,
    /// `sql` is relative to the text handed over with it.
    Text {
        sql: std::ops::Range<usize>,
        form: Submission,
        kinds: Arc<[StatementKind]>,
        tables: Arc<[String]>,
    },
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
