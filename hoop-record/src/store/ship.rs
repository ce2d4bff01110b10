//! The shipper: a thread that copies the spool (`recording.dir`) to the
//! store, at `recording.ship_interval` and when a session closes.
//!
//! Each pass, for every recording file in the spool, it ships the bytes
//! written since the last segment — up to the last complete line while the
//! writer still has the file open, everything once it is closed — as the
//! segment starting at that offset. A closed recording whose bytes are all
//! in the store is deleted from the spool. When a request fails the pass
//! stops; the data stays spooled and the next pass tries again, so a store
//! that comes back gets everything in order and nothing is lost.
//!
//! A file the shipper has not seen open (left by a process that crashed, or
//! opened and closed between two passes) first asks the store how much of
//! it is there already.
//!
//! Retention (`retain_days`, `max_total_bytes`) is applied to the store.

use std::{
    collections::{HashMap, HashSet},
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::oneshot;

use super::{RecordingStore, ShipMetrics, ship_metrics};
use crate::{FILE_EXTENSION, retention};

/// What the writer tells the shipper.
pub(crate) enum ShipCommand {
    /// A recording closed: ship now rather than at the next interval.
    Wake,
    /// The writer has closed every recording: ship what is spooled, then
    /// answer and stop.
    Final(oneshot::Sender<()>),
}

/// The state the writer and the shipper share.
pub(crate) struct Spool {
    /// Recordings the writer has open (a path is added before the file is
    /// created and removed once its last byte is written).
    open: Mutex<HashSet<PathBuf>>,
    /// Bytes written to the spool and not yet shipped.
    unshipped: AtomicU64,
    /// `recording.spool_max_bytes`.
    limit: u64,
    wake: Mutex<mpsc::Sender<ShipCommand>>,
}

impl Spool {
    /// Notes that the writer is about to create `path`.
    pub(crate) fn opening(&self, path: &Path) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_path_buf());
    }

    /// Notes that the writer is done with `path` and has the shipper ship it.
    pub(crate) fn closed(&self, path: &Path) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
        self.send(ShipCommand::Wake);
    }

    /// Forgets `path` (its file could not be created).
    pub(crate) fn forget(&self, path: &Path) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
    }

    fn send(&self, command: ShipCommand) {
        let sent = self
            .wake
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(command);
        if let Err(mpsc::SendError(ShipCommand::Final(done))) = sent {
            let _ = done.send(());
        }
    }

    /// Has the shipper ship everything spooled, answer `done` and stop.
    pub(crate) fn finish(&self, done: oneshot::Sender<()>) {
        self.send(ShipCommand::Final(done));
    }

    /// Accounts for `bytes` about to be written; false (nothing accounted)
    /// when they would take the spool past its limit.
    pub(crate) fn reserve(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let mut current = self.unshipped.load(Ordering::Acquire);
        loop {
            if current.saturating_add(bytes) > self.limit {
                return false;
            }
            match self.unshipped.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// The limit, for error messages.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    fn is_open(&self, path: &Path) -> bool {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(path)
    }
}

/// Starts the shipper thread for `dir`; the writer reaches it through the
/// returned [`Spool`].
pub(crate) fn start(
    store: RecordingStore,
    dir: PathBuf,
    interval: Duration,
    limit: u64,
    retention: retention::RetentionPolicy,
) -> std::io::Result<Arc<Spool>> {
    let (wake, inbox) = mpsc::channel();
    let spool = Arc::new(Spool {
        open: Mutex::new(HashSet::new()),
        unshipped: AtomicU64::new(0),
        limit,
        wake: Mutex::new(wake),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shipper = Shipper {
        store,
        dir,
        spool: Arc::clone(&spool),
        shipped: HashMap::new(),
        metrics: ship_metrics(),
        caught_up: Instant::now(),
        retention,
    };
    std::thread::Builder::new()
        .name("hoop-shipper".into())
        .spawn(move || shipper.run(&runtime, &inbox, interval.max(Duration::from_millis(10))))?;
    Ok(spool)
}

struct Shipper {
    store: RecordingStore,
    dir: PathBuf,
    spool: Arc<Spool>,
    /// How much of each spooled file is in the store.
    shipped: HashMap<PathBuf, u64>,
    metrics: &'static ShipMetrics,
    /// When the spool was last found fully shipped.
    caught_up: Instant,
    retention: retention::RetentionPolicy,
}

impl Shipper {
    fn run(
        mut self,
        runtime: &tokio::runtime::Runtime,
        inbox: &mpsc::Receiver<ShipCommand>,
        interval: Duration,
    ) {
        let mut next_pass = Instant::now();
        let mut next_retention = Instant::now();
        loop {
            let wait = next_pass.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(ShipCommand::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(ShipCommand::Final(done)) => {
                    runtime.block_on(self.pass());
                    let _ = done.send(());
                    return;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    runtime.block_on(self.pass());
                    return;
                }
            }
            runtime.block_on(self.pass());
            next_pass = Instant::now() + interval;
            if self.retention.is_active() && Instant::now() >= next_retention {
                runtime.block_on(self.enforce_retention());
                next_retention = Instant::now() + crate::writer::RETENTION_INTERVAL;
            }
        }
    }

    /// Ships what every spooled file has not shipped yet; stops at the first
    /// failed request (the store is likely down: the next pass retries).
    async fn pass(&mut self) {
        let files = match spooled_files(&self.dir) {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot list the recording spool");
                return;
            }
        };
        let mut unshipped = 0u64;
        let mut failed = false;
        for path in files {
            if failed {
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                unshipped += len.saturating_sub(self.shipped.get(&path).copied().unwrap_or(0));
                continue;
            }
            match self.ship_file(&path).await {
                Ok(left) => unshipped += left,
                Err(left) => {
                    unshipped += left;
                    failed = true;
                }
            }
        }
        self.shipped.retain(|path, _| path.exists());
        // The writer adds what it writes between passes; this pass's count
        // replaces the running total (it saw every byte written before it).
        self.spool.unshipped.store(unshipped, Ordering::Release);
        self.metrics.spool_bytes.set(unshipped as i64);
        if unshipped == 0 {
            self.caught_up = Instant::now();
        }
        self.metrics
            .lag_seconds
            .set(self.caught_up.elapsed().as_secs() as i64);
    }

    /// Ships one file's new bytes; Ok(bytes still unshipped) or Err(the same)
    /// when a request failed.
    async fn ship_file(&mut self, path: &Path) -> Result<u64, u64> {
        let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            return Ok(0);
        };
        // Open or not is looked at before the length: a file already closed
        // then has its final length.
        let open = self.spool.is_open(path);
        let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
            return Ok(0);
        };
        let offset = match self.shipped.get(path) {
            Some(offset) => *offset,
            None if open => 0,
            None => match self.store.segments(&id).await {
                Ok(stored) => stored.contiguous_end().min(len),
                Err(error) => {
                    self.failed(&id, &error);
                    return Err(len);
                }
            },
        };
        self.shipped.insert(path.to_path_buf(), offset);
        let mut end = offset;
        if len > offset {
            let bytes = match read_from(path, offset, len, !open) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot read a spooled recording");
                    return Ok(len - offset);
                }
            };
            if !bytes.is_empty() {
                let shipped = bytes.len() as u64;
                if let Err(error) = self.store.put_segment(&id, offset, bytes).await {
                    self.failed(&id, &error);
                    return Err(len - offset);
                }
                end = offset + shipped;
                self.shipped.insert(path.to_path_buf(), end);
                self.metrics.shipped_bytes_total.inc_by(shipped);
            }
        }
        if !open && end >= len {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    self.shipped.remove(path);
                    tracing::debug!(recording = %id, "recording shipped; removed from the spool");
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a shipped recording from the spool");
                }
            }
        }
        Ok(len.saturating_sub(end))
    }

    fn failed(&self, id: &str, error: &super::StoreError) {
        self.metrics.failures_total.inc();
        tracing::warn!(recording = %id, %error, "cannot ship recording; it stays spooled and is retried");
    }

    async fn enforce_retention(&self) {
        let stored = match self.store.list().await {
            Ok(stored) => stored,
            Err(error) => {
                self.metrics.failures_total.inc();
                tracing::warn!(%error, "retention in the recording store skipped");
                return;
            }
        };
        let open: HashSet<PathBuf> = self
            .spool
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|p| p.file_stem().map(PathBuf::from))
            .collect();
        let candidates: Vec<retention::StoredRecording> = stored
            .values()
            .map(|s| retention::StoredRecording {
                path: PathBuf::from(&s.id),
                bytes: s.bytes(),
                modified: s.modified,
            })
            .collect();
        for id in retention::plan(&candidates, &open, SystemTime::now(), &self.retention) {
            let Some(id) = id.to_str() else { continue };
            match self.store.delete(&stored[id]).await {
                Ok(()) => {
                    tracing::info!(recording = %id, "recording deleted from the store by retention");
                }
                Err(error) => {
                    self.metrics.failures_total.inc();
                    tracing::warn!(recording = %id, %error, "retention could not delete a recording from the store");
                }
            }
        }
    }
}

/// The recording files in the spool, oldest name first.
fn spooled_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(FILE_EXTENSION) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Bytes `offset..len` of `path`; unless `all`, only up to the last complete
/// line (a line being written is shipped whole, with the next segment).
fn read_from(path: &Path, offset: u64, len: u64, all: bool) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity((len - offset) as usize);
    file.take(len - offset).read_to_end(&mut bytes)?;
    if !all {
        let complete = memchr::memrchr(b'\n', &bytes).map_or(0, |i| i + 1);
        bytes.truncate(complete);
    }
    Ok(bytes)
}
