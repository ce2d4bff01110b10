//! Verification: is this recording what the writer wrote?
//!
//! Walks the lines in order, re-computing the hash chain over the bytes on
//! disk, and classifies the file:
//! - [`VerifyStatus::Intact`]: every line verifies and the trailer closes the
//!   chain (and its MAC matches when a key is given);
//! - [`VerifyStatus::TruncatedIntact`]: every line present verifies but there
//!   is no trailer (a crash, a kill -9, a live session, a failed recording).
//!   A torn last line without `\n` is truncation, not tampering;
//! - [`VerifyStatus::Tampered`]: the first line that does not verify, and why.
//!
//! `first_bad_seq` is the first sequence number the file cannot vouch for:
//! every line with a smaller `seq` is authentic. When an event is deleted
//! that is the missing `seq` (the reason, `SeqOutOfOrder`, names the `seq`
//! found after the gap).

use std::{fmt, path::Path};

use serde::Serialize;

use super::format::{
    ChainHash, FORMAT_NAME, FORMAT_VERSION, LineError, chain_hash, chain_seed, split_line,
    trailer_mac_matches,
};

/// The verdict on one recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The classification.
    pub status: VerifyStatus,
    /// The session id from the header, when the header verified.
    pub session_id: Option<String>,
    /// Lines (header, events, trailer) that verified.
    pub lines_verified: u64,
    /// What was established about the trailer MAC.
    pub mac: MacCheck,
}

/// The three outcomes (plus a format this build does not know).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VerifyStatus {
    /// Complete and unmodified.
    Intact,
    /// Unmodified as far as it goes, but it has no trailer.
    TruncatedIntact {
        /// The file ends in a partial line (dropped from verification).
        torn_tail: bool,
    },
    /// Modified: the first line that fails, and why.
    Tampered {
        /// Every line with a smaller `seq` verified.
        first_bad_seq: u64,
        /// What failed there.
        reason: TamperReason,
    },
    /// A recording of a version this build cannot verify.
    Unsupported {
        /// The header's `version`.
        version: u64,
    },
}

/// What was established about the trailer MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MacCheck {
    /// A key was given and the MAC matches: the file was written by a holder of the key.
    Verified,
    /// The trailer carries a MAC but no key was given to check it.
    NotChecked,
    /// No key given and the trailer has `mac: null`: a whole-file rewrite would not be detected.
    Absent,
    /// No trailer was reached.
    NoTrailer,
}

/// Why a line fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TamperReason {
    /// The line is not a recording line (no hash suffix, not JSON, no `seq`).
    Malformed {
        /// What is wrong with it.
        detail: String,
    },
    /// Line 0 is not a `hoop-recording` header.
    NotAHeader,
    /// A line's `seq` is not the next one: an event deleted, inserted or moved.
    SeqOutOfOrder {
        /// The `seq` this position must have.
        expected: u64,
        /// The `seq` the line claims.
        found: u64,
    },
    /// The line's hash does not match its bytes chained from the line before.
    HashMismatch,
    /// The trailer's `events` is not the number of events before it.
    TrailerEventsMismatch {
        /// What the trailer says.
        claimed: u64,
        /// What the file has.
        actual: u64,
    },
    /// The trailer's `last_hash` is not the hash of the line before it.
    TrailerLastHashMismatch,
    /// The trailer MAC does not match under the given key.
    MacMismatch,
    /// A key was given but the trailer has no MAC.
    MacMissing,
    /// Lines follow the trailer.
    DataAfterTrailer,
}

impl fmt::Display for TamperReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TamperReason::Malformed { detail } => write!(f, "malformed line: {detail}"),
            TamperReason::NotAHeader => {
                f.write_str("the first line is not a hoop-recording header")
            }
            TamperReason::SeqOutOfOrder { expected, found } => {
                write!(
                    f,
                    "expected seq {expected}, found seq {found} (event deleted, inserted or moved)"
                )
            }
            TamperReason::HashMismatch => {
                f.write_str("hash does not match the line's bytes and the chain")
            }
            TamperReason::TrailerEventsMismatch { claimed, actual } => {
                write!(f, "trailer claims {claimed} events, the file has {actual}")
            }
            TamperReason::TrailerLastHashMismatch => {
                f.write_str("trailer last_hash is not the last event's hash")
            }
            TamperReason::MacMismatch => {
                f.write_str("trailer MAC does not match (wrong key or rewritten file)")
            }
            TamperReason::MacMissing => f.write_str("a key was given but the trailer has no MAC"),
            TamperReason::DataAfterTrailer => f.write_str("data after the trailer"),
        }
    }
}

impl fmt::Display for VerifyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyStatus::Intact => f.write_str("intact"),
            VerifyStatus::TruncatedIntact { torn_tail: false } => {
                f.write_str("truncated-intact (no trailer)")
            }
            VerifyStatus::TruncatedIntact { torn_tail: true } => {
                f.write_str("truncated-intact (no trailer, torn last line)")
            }
            VerifyStatus::Tampered {
                first_bad_seq,
                reason,
            } => write!(f, "TAMPERED at seq {first_bad_seq}: {reason}"),
            VerifyStatus::Unsupported { version } => {
                write!(f, "unsupported format version {version}")
            }
        }
    }
}

impl VerifyReport {
    /// Whether the status is [`VerifyStatus::Tampered`].
    pub fn is_tampered(&self) -> bool {
        matches!(self.status, VerifyStatus::Tampered { .. })
    }
}

/// Why a file could not be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The recording.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Reads and verifies a recording file. `key` is the trailer HMAC key, when
/// the auditor has it.
pub fn verify_file(path: &Path, key: Option<&[u8]>) -> Result<VerifyReport, VerifyError> {
    let bytes = std::fs::read(path).map_err(|source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(verify_bytes(&bytes, key))
}

/// Verifies a recording held in memory. Pure.
pub fn verify_bytes(bytes: &[u8], key: Option<&[u8]>) -> VerifyReport {
    let mut chain = Chain {
        key,
        previous: None,
        session_id: None,
        expected: 0,
        trailer_seen: false,
        mac: MacCheck::NoTrailer,
    };
    let mut rest = bytes;
    let mut torn_tail = false;
    while !rest.is_empty() {
        let (line, complete) = match memchr::memchr(b'\n', rest) {
            Some(i) => {
                let line = &rest[..i];
                rest = &rest[i + 1..];
                (line, true)
            }
            None => (std::mem::take(&mut rest), false),
        };
        if chain.trailer_seen {
            return chain.report(VerifyStatus::Tampered {
                first_bad_seq: chain.expected,
                reason: TamperReason::DataAfterTrailer,
            });
        }
        match chain.check(line) {
            Ok(()) => {}
            // A final line without `\n` that does not verify is a torn write.
            Err(_) if !complete => torn_tail = true,
            Err(LineFailure::Unsupported(version)) => {
                return chain.report(VerifyStatus::Unsupported { version });
            }
            Err(LineFailure::Tampered(reason)) => {
                return chain.report(VerifyStatus::Tampered {
                    first_bad_seq: chain.expected,
                    reason,
                });
            }
        }
    }
    let status = if chain.trailer_seen {
        VerifyStatus::Intact
    } else {
        VerifyStatus::TruncatedIntact { torn_tail }
    };
    chain.report(status)
}

/// Verification state between lines.
struct Chain<'k> {
    key: Option<&'k [u8]>,
    previous: Option<ChainHash>,
    session_id: Option<String>,
    expected: u64,
    trailer_seen: bool,
    mac: MacCheck,
}

enum LineFailure {
    Tampered(TamperReason),
    Unsupported(u64),
}

fn malformed(detail: impl Into<String>) -> LineFailure {
    LineFailure::Tampered(TamperReason::Malformed {
        detail: detail.into(),
    })
}

impl Chain<'_> {
    fn report(&self, status: VerifyStatus) -> VerifyReport {
        VerifyReport {
            status,
            session_id: self.session_id.clone(),
            lines_verified: self.expected,
            mac: self.mac,
        }
    }

    /// Checks one line; on success advances the chain.
    fn check(&mut self, line: &[u8]) -> Result<(), LineFailure> {
        let split = split_line(line).map_err(|e: LineError| malformed(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_slice(&split.canonical)
            .map_err(|e| malformed(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| malformed("not a JSON object"))?;
        let seq = object
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| malformed("no \"seq\""))?;
        let kind = object
            .get("type")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| malformed("no \"type\""))?;

        let previous = if let Some(previous) = self.previous {
            previous
        } else {
            // Line 0: the header seeds the chain from its session id.
            let session_id = object.get("session_id").and_then(serde_json::Value::as_str);
            let format = object.get("format").and_then(serde_json::Value::as_str);
            match (kind, format, session_id) {
                ("header", Some(FORMAT_NAME), Some(id)) => chain_seed(id),
                _ => return Err(LineFailure::Tampered(TamperReason::NotAHeader)),
            }
        };
        if seq != self.expected {
            return Err(LineFailure::Tampered(TamperReason::SeqOutOfOrder {
                expected: self.expected,
                found: seq,
            }));
        }
        let hash = chain_hash(&previous, &split.canonical);
        if hash != split.claimed {
            return Err(LineFailure::Tampered(TamperReason::HashMismatch));
        }
        match kind {
            "header" if self.previous.is_some() => return Err(malformed("a second header")),
            "header" => {
                let version = object
                    .get("version")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                if version != u64::from(FORMAT_VERSION) {
                    return Err(LineFailure::Unsupported(version));
                }
                self.session_id = object
                    .get("session_id")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned);
            }
            "trailer" => self.check_trailer(object, &previous)?,
            _ => {}
        }
        self.previous = Some(hash);
        self.expected += 1;
        Ok(())
    }

    fn check_trailer(
        &mut self,
        trailer: &serde_json::Map<String, serde_json::Value>,
        previous: &ChainHash,
    ) -> Result<(), LineFailure> {
        let claimed = trailer
            .get("events")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| malformed("trailer without events"))?;
        let actual = self.expected.saturating_sub(1);
        if claimed != actual {
            return Err(LineFailure::Tampered(TamperReason::TrailerEventsMismatch {
                claimed,
                actual,
            }));
        }
        let last_hash = hex::encode(previous);
        if trailer.get("last_hash").and_then(serde_json::Value::as_str) != Some(last_hash.as_str())
        {
            return Err(LineFailure::Tampered(TamperReason::TrailerLastHashMismatch));
        }
        let mac = trailer.get("mac").and_then(serde_json::Value::as_str);
        let session_id = self.session_id.as_deref().unwrap_or_default();
        self.mac = match (self.key, mac) {
            (Some(key), Some(mac))
                if trailer_mac_matches(key, &last_hash, claimed, session_id, mac) =>
            {
                MacCheck::Verified
            }
            (Some(_), Some(_)) => return Err(LineFailure::Tampered(TamperReason::MacMismatch)),
            (Some(_), None) => return Err(LineFailure::Tampered(TamperReason::MacMissing)),
            (None, Some(_)) => MacCheck::NotChecked,
            (None, None) => MacCheck::Absent,
        };
        self.trailer_seen = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        Body, Entry, ErrorEvent, Header, ResultEvent, RowsMode, StatementEvent, Trailer,
        append_line, trailer_mac,
    };
    use hoop_core::{StatementKind, Submission};

    const KEY: &[u8] = b"audit-key";

    fn header(session: &str) -> Body {
        Body::Header(Header {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            session_id: session.into(),
            writer: "test".into(),
            rows: RowsMode::Summary,
            max_row_bytes: 64,
        })
    }

    fn event(i: u64) -> Body {
        match i % 3 {
            0 => Body::Statement(StatementEvent {
                sql: format!("SELECT {i} FROM t").into(),
                form: Submission::Text,
                kinds: [StatementKind::Select].into(),
                tables: ["t".into()].into(),
            }),
            1 => Body::Result(ResultEvent {
                tag: Some("SELECT 1".into()),
                rows: Some(1),
                sqlstate: None,
            }),
            _ => Body::Error(ErrorEvent {
                sqlstate: "42501".into(),
                message: "denied".into(),
            }),
        }
    }

    /// Writes a recording the way the writer does: header, `bodies`, and a trailer when asked.
    fn write(session: &str, bodies: Vec<Body>, trailer: bool, key: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut previous = chain_seed(session);
        let mut seq = 0;
        for body in std::iter::once(header(session)).chain(bodies) {
            let entry = Entry {
                seq,
                mono_ns: seq * 10,
                ts: "2025-01-01T00:00:00Z".into(),
                body,
            };
            previous = append_line(&mut out, &entry, &previous);
            seq += 1;
        }
        if trailer {
            let last_hash = hex::encode(previous);
            let mac = key.map(|k| trailer_mac(k, &last_hash, seq - 1, session));
            let entry = Entry {
                seq,
                mono_ns: seq * 10,
                ts: "2025-01-01T00:00:00Z".into(),
                body: Body::Trailer(Trailer {
                    events: seq - 1,
                    last_hash,
                    mac,
                }),
            };
            append_line(&mut out, &entry, &previous);
        }
        out
    }

    fn sample(key: Option<&[u8]>) -> Vec<u8> {
        write("s-1", (1..=6).map(event).collect(), true, key)
    }

    /// Byte ranges of each line (without its `\n`), indexed by seq.
    fn lines(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' {
                ranges.push(start..i);
                start = i + 1;
            }
        }
        ranges
    }

    fn tampered_at(report: &VerifyReport) -> Option<u64> {
        match report.status {
            VerifyStatus::Tampered { first_bad_seq, .. } => Some(first_bad_seq),
            _ => None,
        }
    }

    #[test]
    fn an_untouched_recording_is_intact() {
        let report = verify_bytes(&sample(None), None);
        assert_eq!(report.status, VerifyStatus::Intact);
        assert_eq!(report.lines_verified, 8);
        assert_eq!(report.session_id.as_deref(), Some("s-1"));
        assert_eq!(report.mac, MacCheck::Absent);

        let keyed = verify_bytes(&sample(Some(KEY)), Some(KEY));
        assert_eq!(
            (keyed.status, keyed.mac),
            (VerifyStatus::Intact, MacCheck::Verified)
        );
        // Without the key the MAC is present but cannot be checked.
        assert_eq!(
            verify_bytes(&sample(Some(KEY)), None).mac,
            MacCheck::NotChecked
        );
    }

    #[test]
    fn flipping_any_byte_of_an_event_names_that_event() {
        let bytes = sample(Some(KEY));
        let ranges = lines(&bytes);
        for (seq, range) in ranges.iter().enumerate() {
            for i in range.clone() {
                for flip in [0x01u8, 0x20] {
                    let mut copy = bytes.clone();
                    copy[i] ^= flip;
                    let report = verify_bytes(&copy, Some(KEY));
                    assert_eq!(
                        tampered_at(&report),
                        Some(seq as u64),
                        "flip {flip:#x} at byte {i} of seq {seq}: {:?}",
                        report.status
                    );
                }
            }
        }
    }

    #[test]
    fn a_deleted_event_is_named_with_the_seq_after_the_gap() {
        let bytes = sample(None);
        let ranges = lines(&bytes);
        let mut copy = bytes[..ranges[3].start].to_vec();
        copy.extend_from_slice(&bytes[ranges[4].start..]);
        let report = verify_bytes(&copy, None);
        assert_eq!(
            report.status,
            VerifyStatus::Tampered {
                first_bad_seq: 3,
                reason: TamperReason::SeqOutOfOrder {
                    expected: 3,
                    found: 4
                }
            }
        );
        assert_eq!(report.lines_verified, 3);
    }

    #[test]
    fn swapped_events_are_tampering() {
        let bytes = sample(None);
        let r = lines(&bytes);
        let mut copy = bytes[..r[2].start].to_vec();
        copy.extend_from_slice(&bytes[r[3].start..=r[3].end]);
        copy.extend_from_slice(&bytes[r[2].start..=r[2].end]);
        copy.extend_from_slice(&bytes[r[4].start..]);
        assert_eq!(copy.len(), bytes.len());
        assert_eq!(
            verify_bytes(&copy, None).status,
            VerifyStatus::Tampered {
                first_bad_seq: 2,
                reason: TamperReason::SeqOutOfOrder {
                    expected: 2,
                    found: 3
                }
            }
        );
    }

    #[test]
    fn a_torn_last_line_is_truncation_not_tampering() {
        let bytes = write("s-1", (1..=4).map(event).collect(), false, None);
        let r = lines(&bytes);
        let torn = &bytes[..r[4].start + 20];
        let report = verify_bytes(torn, None);
        assert_eq!(
            report.status,
            VerifyStatus::TruncatedIntact { torn_tail: true }
        );
        assert_eq!(report.lines_verified, 4);
        assert_eq!(report.mac, MacCheck::NoTrailer);
        // Even a torn trailer.
        let full = sample(Some(KEY));
        let report = verify_bytes(&full[..full.len() - 5], Some(KEY));
        assert_eq!(
            report.status,
            VerifyStatus::TruncatedIntact { torn_tail: true }
        );
        // A complete last line that only lost its `\n` still counts.
        assert_eq!(
            verify_bytes(&full[..full.len() - 1], Some(KEY)).status,
            VerifyStatus::Intact
        );
    }

    #[test]
    fn a_missing_trailer_is_truncation() {
        let bytes = sample(Some(KEY));
        let r = lines(&bytes);
        let without_trailer = &bytes[..r[7].start];
        let report = verify_bytes(without_trailer, Some(KEY));
        assert_eq!(
            report.status,
            VerifyStatus::TruncatedIntact { torn_tail: false }
        );
        assert_eq!(report.lines_verified, 7);
        assert_eq!(
            verify_bytes(b"", None).status,
            VerifyStatus::TruncatedIntact { torn_tail: false }
        );
    }

    #[test]
    fn trailer_edits_and_appended_data_are_tampering() {
        // A trailer that lies about the count, re-hashed so only the content check can catch it.
        let session = "s-1";
        let mut out = write(session, vec![event(1), event(2)], false, None);
        let previous = {
            let r = lines(&out);
            split_line(&out[r[2].clone()]).expect("line").claimed
        };
        let entry = Entry {
            seq: 3,
            mono_ns: 0,
            ts: "2025-01-01T00:00:00Z".into(),
            body: Body::Trailer(Trailer {
                events: 5,
                last_hash: hex::encode(previous),
                mac: None,
            }),
        };
        append_line(&mut out, &entry, &previous);
        assert_eq!(
            verify_bytes(&out, None).status,
            VerifyStatus::Tampered {
                first_bad_seq: 3,
                reason: TamperReason::TrailerEventsMismatch {
                    claimed: 5,
                    actual: 2
                }
            }
        );

        let mut appended = sample(None);
        appended.extend_from_slice(b"{\"seq\":8}\n");
        assert_eq!(
            verify_bytes(&appended, None).status,
            VerifyStatus::Tampered {
                first_bad_seq: 8,
                reason: TamperReason::DataAfterTrailer
            }
        );
    }

    /// What someone without the key can do: change an event, recompute every
    /// hash and write a fresh trailer.
    fn rewrite_with_a_changed_event(key_for_trailer: Option<&[u8]>) -> Vec<u8> {
        let mut bodies: Vec<Body> = (1..=6).map(event).collect();
        bodies[2] = Body::Statement(StatementEvent {
            sql: "SELECT harmless".into(),
            form: Submission::Text,
            kinds: [StatementKind::Select].into(),
            tables: std::sync::Arc::from([]),
        });
        write("s-1", bodies, true, key_for_trailer)
    }

    #[test]
    fn a_full_rewrite_is_caught_by_the_mac_and_only_by_the_mac() {
        // With a key configured: the forger cannot produce the MAC.
        let forged_no_mac = rewrite_with_a_changed_event(None);
        assert_eq!(
            verify_bytes(&forged_no_mac, Some(KEY)).status,
            VerifyStatus::Tampered {
                first_bad_seq: 7,
                reason: TamperReason::MacMissing
            }
        );
        let forged_wrong_key = rewrite_with_a_changed_event(Some(b"guess"));
        assert_eq!(
            verify_bytes(&forged_wrong_key, Some(KEY)).status,
            VerifyStatus::Tampered {
                first_bad_seq: 7,
                reason: TamperReason::MacMismatch
            }
        );
        // Without a key nothing can tell: the chain is self-consistent.
        // (Documented in docs/recording.md: configure a key.)
        let report = verify_bytes(&forged_no_mac, None);
        assert_eq!(
            (report.status, report.mac),
            (VerifyStatus::Intact, MacCheck::Absent)
        );
    }

    #[test]
    fn a_newer_version_is_unsupported_not_tampered() {
        let mut out = Vec::new();
        let entry = Entry {
            seq: 0,
            mono_ns: 0,
            ts: "2025-01-01T00:00:00Z".into(),
            body: Body::Header(Header {
                format: FORMAT_NAME.into(),
                version: 2,
                session_id: "s".into(),
                writer: "future".into(),
                rows: RowsMode::None,
                max_row_bytes: 0,
            }),
        };
        append_line(&mut out, &entry, &chain_seed("s"));
        assert_eq!(
            verify_bytes(&out, None).status,
            VerifyStatus::Unsupported { version: 2 }
        );
    }
}
