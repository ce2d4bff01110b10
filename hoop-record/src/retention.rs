//! Which recordings to delete: `recording.retain_days` and
//! `recording.max_total_bytes`. The plan is pure; [`apply`] does the I/O.
//!
//! Oldest first (by modification time, then name), and never a recording the
//! writer still has open: an open recording has no trailer yet, and deleting
//! it would silently lose a live session.

use std::{
    collections::HashSet,
    hash::BuildHasher,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use super::FILE_EXTENSION;

/// The limits, from `recording:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete recordings last written longer ago than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest recordings while the directory holds more than this.
    pub max_total_bytes: Option<u64>,
}

impl RetentionPolicy {
    /// From `recording.retain_days` and `recording.max_total_bytes`.
    pub fn from_config(cfg: &hoop_config::RecordingConfig) -> Self {
        Self {
            max_age: cfg
                .retain_days
                .map(|days| Duration::from_secs(days.saturating_mul(24 * 60 * 60))),
            max_total_bytes: cfg.max_total_bytes,
        }
    }

    /// Whether there is anything to enforce.
    pub fn is_active(&self) -> bool {
        self.max_age.is_some() || self.max_total_bytes.is_some()
    }
}

/// A recording file as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecording {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// The files to delete, oldest first. `open` holds the recordings still being
/// written; they are never chosen, though their bytes count toward the total.
pub fn plan<S: BuildHasher>(
    files: &[StoredRecording],
    open: &HashSet<PathBuf, S>,
    now: SystemTime,
    policy: &RetentionPolicy,
) -> Vec<PathBuf> {
    let mut oldest_first: Vec<&StoredRecording> = files.iter().collect();
    oldest_first.sort_by(|a, b| {
        a.modified
            .cmp(&b.modified)
            .then_with(|| a.path.cmp(&b.path))
    });
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut delete = Vec::new();
    for file in oldest_first {
        if open.contains(&file.path) {
            continue;
        }
        let too_old = policy.max_age.is_some_and(|max_age| {
            now.duration_since(file.modified)
                .is_ok_and(|age| age > max_age)
        });
        let too_big = policy.max_total_bytes.is_some_and(|max| total > max);
        if too_old || too_big {
            total = total.saturating_sub(file.bytes);
            delete.push(file.path.clone());
        }
    }
    delete
}

/// Why retention could not run.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The directory could not be listed.
    #[error("cannot list recordings in {dir}: {source}")]
    Scan {
        /// `recording.dir`.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The recording files (`*.jsonl`) in `dir`.
pub fn scan(dir: &Path) -> Result<Vec<StoredRecording>, RetentionError> {
    let scan_error = |source| RetentionError::Scan {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(scan_error)? {
        let entry = entry.map_err(scan_error)?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(FILE_EXTENSION) {
            continue;
        }
        // A file that vanished or cannot be stat'ed is simply not a candidate.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        files.push(StoredRecording {
            path,
            bytes: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::now()),
        });
    }
    Ok(files)
}

/// What one retention pass did.
#[derive(Debug, Default)]
pub struct RetentionOutcome {
    /// Files deleted.
    pub deleted: Vec<PathBuf>,
    /// Files that should have been deleted but could not be.
    pub failed: Vec<(PathBuf, std::io::Error)>,
}

/// Scans `dir`, plans and deletes.
pub fn apply<S: BuildHasher>(
    dir: &Path,
    open: &HashSet<PathBuf, S>,
    now: SystemTime,
    policy: &RetentionPolicy,
) -> Result<RetentionOutcome, RetentionError> {
    let mut outcome = RetentionOutcome::default();
    if !policy.is_active() {
        return Ok(outcome);
    }
    let files = scan(dir)?;
    for path in plan(&files, open, now, policy) {
        match std::fs::remove_file(&path) {
            Ok(()) => outcome.deleted.push(path),
            // Someone else removed it first: the goal is met.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => outcome.failed.push((path, e)),
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: u64, age_days: u64, now: SystemTime) -> StoredRecording {
        StoredRecording {
            path: PathBuf::from(name),
            bytes,
            modified: now - Duration::from_secs(age_days * 86_400),
        }
    }

    #[test]
    fn deletes_old_files_but_never_open_ones() {
        let now = SystemTime::now();
        let files = [
            file("a", 1, 10, now),
            file("b", 1, 9, now),
            file("c", 1, 1, now),
        ];
        let open: HashSet<PathBuf> = [PathBuf::from("b")].into();
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_hours(5 * 24)),
            max_total_bytes: None,
        };
        assert_eq!(plan(&files, &open, now, &policy), vec![PathBuf::from("a")]);
    }

    #[test]
    fn trims_oldest_first_to_the_byte_budget() {
        let now = SystemTime::now();
        let files = [
            file("new", 40, 0, now),
            file("old", 50, 3, now),
            file("mid", 30, 2, now),
            file("live", 100, 4, now),
        ];
        let open: HashSet<PathBuf> = [PathBuf::from("live")].into();
        // 220 bytes, budget 150: "live" is the oldest but open; "old" (50) brings it to 170; "mid" to 140.
        let policy = RetentionPolicy {
            max_age: None,
            max_total_bytes: Some(150),
        };
        assert_eq!(
            plan(&files, &open, now, &policy),
            vec![PathBuf::from("old"), PathBuf::from("mid")]
        );
    }

    #[test]
    fn apply_only_touches_recording_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.jsonl"), b"x").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"x").expect("write");
        let policy = RetentionPolicy {
            max_age: None,
            max_total_bytes: Some(0),
        };
        let outcome =
            apply(dir.path(), &HashSet::new(), SystemTime::now(), &policy).expect("applies");
        assert_eq!(outcome.deleted, vec![dir.path().join("a.jsonl")]);
        assert!(dir.path().join("notes.txt").exists());
    }
}
