//! Session recording: complete, masked, tamper-evident, replayable.
//!
//! - [`format`]: the file format (JSON lines, hash chain, MAC'd trailer). Pure.
//! - [`writer`]: [`Recorder`] and [`SessionRecorder`], the hot-path API the
//!   proxy calls, and the background writer that owns the files.
//! - [`retention`]: which recordings to delete (pure plan + apply).
//! - [`verify`]: classifies a recording as intact, truncated-but-intact or tampered.
//! - [`read`]: finds and parses recordings for the CLI.
//! - [`cli`]: `hoop recordings list | show | replay | export | verify`.
//!
//! The format and its guarantees are specified in `docs/recording.md`.

#![forbid(unsafe_code)]

pub mod cli;
pub mod format;
pub mod read;
pub mod retention;
pub mod store;
pub mod verify;
pub mod writer;

use std::path::PathBuf;

pub use format::{CopyDirection, HoldState};
pub use writer::{
    FailureFlag, FailureKind, MaskedCopyChunk, MaskedRow, Recorder, RecordingFailure,
    SessionRecorder,
};

use hoop_config::RecordingConfig;

/// Why the recorder could not start, or a session could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The recording directory could not be created.
    #[error("cannot create the recording directory {dir}: {source}")]
    CreateDir {
        /// `recording.dir`.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The recording directory exists but a probe file could not be written in it.
    #[error("the recording directory {dir} is not writable: {source}")]
    DirNotWritable {
        /// `recording.dir`.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `recording.hmac_key_env` and `recording.hmac_key_file` are both set.
    #[error("set only one of recording.hmac_key_env and recording.hmac_key_file")]
    TwoHmacKeys,
    /// The environment variable named by `recording.hmac_key_env` is unset or not UTF-8.
    #[error("recording.hmac_key_env names {name}, which is not set")]
    HmacKeyEnvUnset {
        /// The variable's name.
        name: String,
    },
    /// The file named by `recording.hmac_key_file` could not be read.
    #[error("cannot read recording.hmac_key_file {path}: {source}")]
    HmacKeyFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configured key is empty (after trimming a trailing newline).
    #[error("the recording HMAC key is empty")]
    HmacKeyEmpty,
    /// `recording.store` could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The shipper thread could not be started.
    #[error("cannot start the recording shipper: {0}")]
    SpawnShipper(#[source] std::io::Error),
    /// The writer thread could not be spawned.
    #[error("cannot start the recording writer thread: {0}")]
    SpawnWriter(#[source] std::io::Error),
    /// The recorder was shut down (or its writer died); nothing more can be recorded.
    #[error("the recorder is shut down")]
    Closed,
    /// This session's recording failed earlier; see [`SessionRecorder::failure`].
    #[error("recording of this session failed: {0}")]
    SessionFailed(RecordingFailure),
}

/// Loads the trailer HMAC key named by `recording.hmac_key_env` or
/// `recording.hmac_key_file`; `None` when neither is set.
///
/// The key is the raw bytes of the variable or file, with one trailing `\n`
/// (or `\r\n`) removed so `echo secret > key` does what it looks like.
pub fn load_hmac_key(cfg: &RecordingConfig) -> Result<Option<Vec<u8>>, RecordError> {
    let raw = match (&cfg.hmac_key_env, &cfg.hmac_key_file) {
        (Some(_), Some(_)) => return Err(RecordError::TwoHmacKeys),
        (None, None) => return Ok(None),
        (Some(name), None) => std::env::var(name)
            .map_err(|_| RecordError::HmacKeyEnvUnset { name: name.clone() })?
            .into_bytes(),
        (None, Some(path)) => std::fs::read(path).map_err(|source| RecordError::HmacKeyFile {
            path: path.clone(),
            source,
        })?,
    };
    let key = strip_one_newline(raw);
    if key.is_empty() {
        return Err(RecordError::HmacKeyEmpty);
    }
    Ok(Some(key))
}

fn strip_one_newline(mut raw: Vec<u8>) -> Vec<u8> {
    if raw.last() == Some(&b'\n') {
        raw.pop();
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
    }
    raw
}

/// The extension of recording files.
pub const FILE_EXTENSION: &str = "jsonl";

/// The recording id (file stem) for a session: `<UTC start, YYYYMMDDTHHMMSSZ>-<session id>`,
/// with characters outside `[A-Za-z0-9._-]` in the session id replaced by `_`.
///
/// The time prefix makes `ls` sort recordings by start and keeps ids unique
/// across restarts (session ids are only process-unique).
pub fn recording_id(started: std::time::SystemTime, session_id: &str) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = time::OffsetDateTime::from(started)
        .format(&format)
        .expect("a UTC timestamp formats");
    let safe: String = session_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stamp}-{safe}")
}

/// [`rfc3339_into`] into a new string.
#[cfg(test)]
pub(crate) fn rfc3339(at: std::time::SystemTime) -> String {
    let mut out = String::new();
    rfc3339_into(at, &mut out);
    out
}

/// RFC 3339 UTC with nanoseconds, as in `ts`, into `out` (cleared first):
/// no allocation once `out` has grown to fit.
pub(crate) fn rfc3339_into(at: std::time::SystemTime, out: &mut String) {
    if let Ok(since_epoch) = at.duration_since(std::time::UNIX_EPOCH) {
        rfc3339_since_epoch_into(since_epoch.as_secs(), since_epoch.subsec_nanos(), out);
    } else {
        out.clear();
        out.push_str(&rfc3339_uncached(at));
    }
}

/// [`rfc3339_into`] for `secs` and `nanos` (under 10^9) since the Unix
/// epoch, which the writer computes from a session's start and an event's
/// monotonic offset without going through `SystemTime`.
pub(crate) fn rfc3339_since_epoch_into(secs: u64, nanos: u32, out: &mut String) {
    // Every event is stamped, so the date and time of day are formatted once
    // per second (per thread) and only the fraction per call. The output is
    // `time`'s RFC 3339: fraction without trailing zeros, none when zero.
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    debug_assert!(nanos < 1_000_000_000);
    out.clear();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let mut formatted = rfc3339_uncached(whole);
            formatted.pop(); // the 'Z'
            *prefix = formatted;
            *cached = secs;
        }
        out.push_str(prefix);
    });
    if nanos != 0 {
        // Nine digits, zero-padded on the left, trailing zeros dropped.
        let (mut n, mut width) = (nanos, 9);
        while n % 10 == 0 {
            n /= 10;
            width -= 1;
        }
        let mut buf = itoa::Buffer::new();
        let digits = buf.format(n);
        out.push('.');
        for _ in digits.len()..width {
            out.push('0');
        }
        out.push_str(digits);
    }
    out.push('Z');
}

/// `00`, `01`, … `99`.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// Writes the `ts` of one recording's events straight into its line
/// buffer: the date and time of day of the last second formatted are kept
/// (an event formats only its fraction), and nothing goes through a
/// `String` or a thread-local. The output is [`rfc3339_since_epoch_into`]'s.
#[derive(Debug, Default)]
pub(crate) struct Rfc3339Stamper {
    /// The second `prefix` formats (`None`: none yet).
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: Vec<u8>,
}

impl Rfc3339Stamper {
    /// Appends `secs` and `nanos` (under 10^9) since the Unix epoch in RFC
    /// 3339 to `out`.
    pub(crate) fn write(&mut self, secs: u64, nanos: u32, out: &mut Vec<u8>) {
        debug_assert!(nanos < 1_000_000_000);
        if self.second != Some(secs) {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let mut formatted = rfc3339_uncached(whole).into_bytes();
            formatted.pop(); // the 'Z'
            self.prefix = formatted;
            self.second = Some(secs);
        }
        out.extend_from_slice(&self.prefix);
        if nanos != 0 {
            // Nine digits, zero-padded on the left, trailing zeros dropped
            // (`time`'s RFC 3339: no fraction when it is zero).
            let mut digits = [b'0'; 10];
            digits[0] = b'.';
            let mut n = nanos;
            // Two digits per division, from the right.
            for at in [8, 6, 4, 2] {
                let pair = (n % 100) as usize * 2;
                n /= 100;
                digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
            }
            digits[1] = b'0' + n as u8; // n < 10
            let mut len = digits.len();
            while digits[len - 1] == b'0' {
                len -= 1;
            }
            out.extend_from_slice(&digits[..len]);
        }
        out.push(b'Z');
    }
}

fn rfc3339_uncached(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC timestamp formats as RFC 3339")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamper_writes_what_the_time_crate_writes() {
        let mut stamper = Rfc3339Stamper::default();
        let mut out = Vec::new();
        let mut expected = String::new();
        // Fractions with every count of trailing zeros, seconds repeated
        // and changed (the kept prefix), around a day's and a year's end.
        let mut nanos: Vec<u32> = vec![0, 1, 9, 10, 999_999_999, 500_000_000, 641_728_534];
        nanos.extend((0..9).map(|z| 123_456_789 / 10u32.pow(z) * 10u32.pow(z)));
        nanos.extend((0..9).map(|z| 10u32.pow(z)));
        for secs in [
            0,
            0,
            1,
            86_399,
            86_400,
            1_795_978_550,
            1_798_761_599,
            1_798_761_600,
        ] {
            for &n in &nanos {
                out.clear();
                stamper.write(secs, n, &mut out);
                rfc3339_since_epoch_into(secs, n, &mut expected);
                let at = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(secs)
                    + std::time::Duration::from_nanos(u64::from(n));
                assert_eq!(
                    std::str::from_utf8(&out).expect("ASCII"),
                    expected,
                    "{secs} {n}"
                );
                assert_eq!(expected, rfc3339_uncached(at), "{secs} {n}");
            }
        }
    }

    #[test]
    fn cached_rfc3339_matches_the_time_crate() {
        let base = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_978_550);
        for nanos in [
            0,
            1,
            100,
            500_000_000,
            641_728_534,
            653_885_680,
            999_999_999,
        ] {
            for secs in [0, 0, 1, 86_399] {
                let at = base + std::time::Duration::new(secs, nanos);
                assert_eq!(rfc3339(at), rfc3339_uncached(at), "{secs}s {nanos}ns");
            }
        }
    }

    #[test]
    fn recording_ids_sort_by_start_and_are_file_safe() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(recording_id(t, "s-12"), "20231114T221320Z-s-12");
        assert_eq!(recording_id(t, "a/b c"), "20231114T221320Z-a_b_c");
    }

    #[test]
    fn hmac_key_from_file_drops_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, b"secret\n").expect("write");
        let cfg = RecordingConfig {
            hmac_key_file: Some(path),
            ..RecordingConfig::default()
        };
        assert_eq!(
            load_hmac_key(&cfg).expect("loads"),
            Some(b"secret".to_vec())
        );
        let both = RecordingConfig {
            hmac_key_env: Some("X".into()),
            ..cfg
        };
        assert!(matches!(
            load_hmac_key(&both),
            Err(RecordError::TwoHmacKeys)
        ));
    }
}
