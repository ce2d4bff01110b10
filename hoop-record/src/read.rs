//! Finding and parsing recordings (for the CLI). Reading never judges
//! authenticity; [`super::verify`] does.

use std::{
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

use super::{
    FILE_EXTENSION,
    format::{Body, Entry, RecordedIdentity, SessionEndEvent, Trailer},
};

/// Why recordings could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The recording directory could not be listed.
    #[error("cannot list recordings in {dir}: {source}")]
    ListDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A recording could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No recording has this id (or session id).
    #[error("no recording {id} (ids are listed by `hoop recordings list`)")]
    NotFound {
        /// What was asked for.
        id: String,
    },
    /// Several recordings belong to this session id (ids repeat across restarts).
    #[error("{id} matches several recordings: {}; give the full recording id", matches.join(", "))]
    Ambiguous {
        /// What was asked for.
        id: String,
        /// The candidates.
        matches: Vec<String>,
    },
}

/// A recording file and its id (the file stem, `<start>-<session id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFile {
    /// The recording id.
    pub id: String,
    /// The file.
    pub path: PathBuf,
}

/// Every recording in `dir`, oldest first (ids start with the start time).
pub fn list_files(dir: &Path) -> Result<Vec<RecordingFile>, ReadError> {
    let list_error = |source| ReadError::ListDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(FILE_EXTENSION) || !path.is_file() {
            continue;
        }
        if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
            files.push(RecordingFile {
                id: id.to_owned(),
                path,
            });
        }
    }
    files.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(files)
}

/// Finds a recording by its id, or by the session id it records when that
/// is unambiguous.
pub fn resolve(dir: &Path, id: &str) -> Result<RecordingFile, ReadError> {
    let files = list_files(dir)?;
    if let Some(file) = files.iter().find(|f| f.id == id) {
        return Ok(file.clone());
    }
    // `<YYYYMMDDTHHMMSSZ>-<session id>[-N]`: compare what follows the time.
    let matches: Vec<&RecordingFile> = files
        .iter()
        .filter(|f| {
            f.id.split_once('-')
                .is_some_and(|(_, session)| session == id)
        })
        .collect();
    match matches.as_slice() {
        [] => Err(ReadError::NotFound { id: id.to_owned() }),
        [one] => Ok((*one).clone()),
        many => Err(ReadError::Ambiguous {
            id: id.to_owned(),
            matches: many.iter().map(|f| f.id.clone()).collect(),
        }),
    }
}

/// One line as read back.
// Nearly every line is an `Entry` (`Other` is a newer writer's line type):
// boxing entries would add an allocation per line and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReadLine {
    /// A line of a known type.
    Entry(Entry),
    /// Valid JSON of a type this build does not know (a newer writer).
    Other(serde_json::Value),
}

/// A whole recording, parsed.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Its id.
    pub id: String,
    /// Its file.
    pub path: PathBuf,
    /// The raw bytes (for verification).
    pub bytes: Vec<u8>,
    /// Every complete line that parsed, in file order.
    pub lines: Vec<ReadLine>,
    /// Complete lines that were not JSON (tampering or corruption; see verify).
    pub unreadable_lines: u64,
    /// Whether the file ends in a partial line.
    pub torn_tail: bool,
}

impl Recording {
    /// The typed entries.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|l| match l {
            ReadLine::Entry(e) => Some(e),
            ReadLine::Other(_) => None,
        })
    }

    /// The identity from `session_start`.
    pub fn identity(&self) -> Option<&RecordedIdentity> {
        self.entries().find_map(|e| match &e.body {
            Body::SessionStart(s) => Some(&s.identity),
            _ => None,
        })
    }

    /// The trailer, when the recording has one.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.entries().find_map(|e| match &e.body {
            Body::Trailer(t) => Some(t),
            _ => None,
        })
    }
}

/// Reads and parses a whole recording.
pub fn read_recording(file: &RecordingFile) -> Result<Recording, ReadError> {
    let bytes = std::fs::read(&file.path).map_err(|source| ReadError::Read {
        path: file.path.clone(),
        source,
    })?;
    let (lines, unreadable_lines, torn_tail) = parse_lines(&bytes);
    Ok(Recording {
        id: file.id.clone(),
        path: file.path.clone(),
        bytes,
        lines,
        unreadable_lines,
        torn_tail,
    })
}

/// Parses the complete lines of `bytes`: (lines, unreadable count, torn tail).
fn parse_lines(bytes: &[u8]) -> (Vec<ReadLine>, u64, bool) {
    let mut lines = Vec::new();
    let mut unreadable = 0;
    let mut chunks = bytes.split(|b| *b == b'\n').peekable();
    let mut torn = false;
    while let Some(line) = chunks.next() {
        if chunks.peek().is_none() {
            // What follows the last `\n`: empty, or a torn write.
            torn = !line.is_empty();
            break;
        }
        match parse_line(line) {
            Some(parsed) => lines.push(parsed),
            None => unreadable += 1,
        }
    }
    (lines, unreadable, torn)
}

fn parse_line(line: &[u8]) -> Option<ReadLine> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    match serde_json::from_value::<Entry>(value.clone()) {
        Ok(entry) => Some(ReadLine::Entry(entry)),
        Err(_) => Some(ReadLine::Other(value)),
    }
}

/// What `list` shows, read from the head and tail of the file only (so
/// listing stays fast with large `rows: full` recordings).
#[derive(Debug, Clone)]
pub struct RecordingSummary {
    /// The recording id.
    pub id: String,
    /// The file.
    pub path: PathBuf,
    /// File size.
    pub bytes: u64,
    /// `ts` of the header.
    pub started: Option<String>,
    /// From `session_start`.
    pub identity: Option<RecordedIdentity>,
    /// `session_end`, when present.
    pub end: Option<SessionEndEvent>,
    /// `mono_ns` of the last complete line.
    pub duration_ns: u64,
    /// Whether the last line is a trailer.
    pub complete: bool,
}

/// How much of each end of a file [`read_summary`] reads.
const SUMMARY_WINDOW: u64 = 64 << 10;

/// Reads a recording's summary from its first and last 64 KiB.
pub fn read_summary(file: &RecordingFile) -> Result<RecordingSummary, ReadError> {
    let read_error = |source| ReadError::Read {
        path: file.path.clone(),
        source,
    };
    let mut f = std::fs::File::open(&file.path).map_err(read_error)?;
    let len = f.metadata().map_err(read_error)?.len();
    let mut head = Vec::new();
    (&mut f)
        .take(SUMMARY_WINDOW)
        .read_to_end(&mut head)
        .map_err(read_error)?;
    let tail_start = len.saturating_sub(SUMMARY_WINDOW);
    let tail = if tail_start == 0 {
        head.clone()
    } else {
        f.seek(SeekFrom::Start(tail_start)).map_err(read_error)?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).map_err(read_error)?;
        // Drop the partial line the window starts in.
        match memchr::memchr(b'\n', &tail) {
            Some(i) => tail.split_off(i + 1),
            None => Vec::new(),
        }
    };
    let (head_lines, _, _) = parse_lines(&head);
    let (tail_lines, _, _) = parse_lines(&tail);
    let entry = |l: &ReadLine| match l {
        ReadLine::Entry(e) => Some(e.clone()),
        ReadLine::Other(_) => None,
    };
    let head_entries: Vec<Entry> = head_lines.iter().take(2).filter_map(entry).collect();
    let tail_entries: Vec<Entry> = tail_lines.iter().rev().take(3).filter_map(entry).collect();
    Ok(RecordingSummary {
        id: file.id.clone(),
        path: file.path.clone(),
        bytes: len,
        started: head_entries
            .iter()
            .find(|e| matches!(e.body, Body::Header(_)))
            .map(|e| e.ts.clone()),
        identity: head_entries.iter().find_map(|e| match &e.body {
            Body::SessionStart(s) => Some(s.identity.clone()),
            _ => None,
        }),
        end: tail_entries.iter().find_map(|e| match &e.body {
            Body::SessionEnd(end) => Some(end.clone()),
            _ => None,
        }),
        duration_ns: tail_entries.first().map_or(0, |e| e.mono_ns),
        complete: tail_entries
            .first()
            .is_some_and(|e| matches!(e.body, Body::Trailer(_))),
    })
}
