//! How a session's recording fails, and the shared health flag the
//! connection checks without locking.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    /// The spool (`recording.dir` in front of `recording.store`) holds
    /// `recording.spool_max_bytes` not yet shipped: the store is unreachable.
    Spool,
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
            FailureKind::Spool => "spool",
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
pub(super) struct SessionHealth {
    pub(super) failed: AtomicBool,
    pub(super) failure: watch::Sender<Option<RecordingFailure>>,
}

impl SessionHealth {
    pub(super) fn new() -> Self {
        Self {
            failed: AtomicBool::new(false),
            failure: watch::Sender::new(None),
        }
    }

    /// Raises the signal once; later failures keep the first cause.
    pub(super) fn fail(&self, kind: FailureKind, detail: String) -> bool {
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

pub(super) fn create_new(path: &Path) -> std::io::Result<File> {
    File::options().write(true).create_new(true).open(path)
}
