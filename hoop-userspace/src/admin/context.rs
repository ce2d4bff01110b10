//! What a session did before its hold: the statements its recording holds,
//! so an approver sees what led up to the request
//! (`GET /api/holds/{id}/context`).
//!
//! The recording is the one of the hold's session (its id ends with the
//! session id). Statements come as recorded: with literals masked whenever
//! the policy masks anything, exactly as the hold itself shows its statement.
//! Only `statement`, `verdict`, `result` and `hold` lines are parsed; row
//! data is skipped unread, and only the last [`TAIL_BYTES`] of a large file
//! are scanned, so a session with gigabytes of recorded rows costs no more
//! than a small one.

use std::{
    collections::VecDeque,
    io::{BufRead, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use hoop_hold::HoldView;
use hoop_record::{
    format::{Body, Entry, VerdictKind},
    read::{ReadError, list_files},
};

/// How much of the end of a recording is scanned.
pub const TAIL_BYTES: u64 = 32 * 1024 * 1024;
/// Longest line parsed; longer ones are rows and skipped.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Statements returned at most (the last ones before the hold).
pub const MAX_STATEMENTS: usize = 50;

/// One statement the session ran (or tried to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextStatement {
    /// When it was recorded (RFC 3339).
    pub ts: String,
    /// The statement, as recorded.
    pub sql: String,
    /// `allow`, `deny` or `hold`.
    pub verdict: Option<String>,
    /// The rule that denied or held it.
    pub rule: Option<String>,
    /// How it ended: the command tag (`SELECT 3`), or `error <SQLSTATE>`.
    pub outcome: Option<String>,
    /// Whether this is the held statement itself.
    pub held: bool,
}

/// The answer of `GET /api/holds/{id}/context`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionContext {
    /// The hold.
    pub hold: String,
    /// Its session.
    pub session: String,
    /// The recording read, when one was found.
    pub recording: Option<String>,
    /// Why there is nothing (or not everything) to show.
    pub note: Option<String>,
    /// The statements before the hold, oldest first, ending with the held one.
    pub statements: Vec<ContextStatement>,
}

/// Reads the context of `hold` from the recordings in `dir` (`None`:
/// recording is disabled). Blocking: call it off the async runtime.
pub fn read(dir: Option<&Path>, hold: &HoldView) -> Result<SessionContext, ReadError> {
    let mut context = SessionContext {
        hold: hold.id.clone(),
        session: hold.session.id.clone(),
        recording: None,
        note: None,
        statements: Vec::new(),
    };
    let Some(dir) = dir else {
        context.note = Some("recording is disabled (recording.enabled: false)".to_owned());
        return Ok(context);
    };
    let session = safe_session_id(&hold.session.id);
    // Ids start with the start time: the last match is the newest.
    let files = match list_files(dir) {
        Ok(files) => files,
        // Nothing recorded yet on this agent.
        Err(ReadError::ListDir { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(error) => return Err(error),
    };
    let Some(file) = files
        .into_iter()
        .rfind(|f| records_session(&f.id, &session))
    else {
        context.note = Some(format!(
            "no recording of session {} in this agent's recording directory",
            hold.session.id
        ));
        return Ok(context);
    };
    context.recording = Some(file.id.clone());
    let scan = scan(&file.path, hold, TAIL_BYTES).map_err(|source| ReadError::Read {
        path: file.path.clone(),
        source,
    })?;
    context.statements = scan.statements.into();
    let mut notes = Vec::new();
    if scan.skipped_head {
        notes.push(format!(
            "only the last {} MiB of the recording were read",
            TAIL_BYTES >> 20
        ));
    }
    if scan.dropped > 0 {
        notes.push(format!(
            "{} earlier statements are not shown (hoop recordings show ID {})",
            scan.dropped, file.id
        ));
    }
    if !context.statements.iter().any(|s| s.held) {
        notes.push("the held statement is not in the recording yet".to_owned());
    }
    context.note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(context)
}

/// The session id as recording ids spell it (see [`hoop_record::recording_id`]).
fn safe_session_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether recording `id` (`<start>-<session>`, or `<start>-<session>-<n>`
/// when that name was taken) records `session`.
fn records_session(id: &str, session: &str) -> bool {
    let Some((_, rest)) = id.split_once('-') else {
        return false;
    };
    rest == session
        || rest
            .strip_prefix(session)
            .and_then(|tail| tail.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

struct Scan {
    statements: VecDeque<ContextStatement>,
    dropped: usize,
    skipped_head: bool,
}

/// Reads the statements of the last `tail_bytes` of the recording at `path`.
fn scan(path: &PathBuf, hold: &HoldView, tail_bytes: u64) -> std::io::Result<Scan> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let skipped_head = len > tail_bytes;
    let start = len.saturating_sub(tail_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut reader = std::io::BufReader::new(file.take(len - start));
    let mut statements: VecDeque<ContextStatement> = VecDeque::new();
    let mut dropped = 0;
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        let Some(whole) = read_line(&mut reader, &mut line)? else {
            break;
        };
        // A window that starts mid-file starts mid-line.
        let partial = std::mem::replace(&mut first, false) && skipped_head;
        if partial || !whole {
            continue;
        }
        let Some(kind) = line_type(&line) else {
            continue;
        };
        if !matches!(kind, "statement" | "verdict" | "result" | "hold") {
            continue;
        }
        let Ok(entry) = serde_json::from_slice::<Entry>(&line) else {
            continue;
        };
        match entry.body {
            Body::Statement(statement) => {
                if statements.len() == MAX_STATEMENTS {
                    statements.pop_front();
                    dropped += 1;
                }
                statements.push_back(ContextStatement {
                    ts: entry.ts,
                    sql: statement.sql.to_string(),
                    verdict: None,
                    rule: None,
                    outcome: None,
                    held: false,
                });
            }
            Body::Verdict(verdict) => {
                if let Some(last) = statements.back_mut() {
                    last.verdict = Some(
                        match verdict.verdict {
                            VerdictKind::Allow => "allow",
                            VerdictKind::Deny => "deny",
                            VerdictKind::Hold => "hold",
                        }
                        .to_owned(),
                    );
                    last.rule = verdict.rule;
                }
            }
            Body::Result(result) => {
                if let Some(last) = statements.back_mut() {
                    last.outcome = match (result.tag, result.sqlstate) {
                        (_, Some(sqlstate)) => Some(format!("error {sqlstate}")),
                        (Some(tag), None) => Some(tag),
                        (None, None) => None,
                    };
                }
            }
            Body::Hold(event) if event.hold_id == hold.id => {
                // This hold was decided: what came after it is not what led up to it.
                mark_held(&mut statements, hold);
                return Ok(Scan {
                    statements,
                    dropped,
                    skipped_head,
                });
            }
            _ => {}
        }
    }
    // Still pending (or its decision not flushed yet): the held statement is
    // the last one held by this rule.
    mark_held(&mut statements, hold);
    Ok(Scan {
        statements,
        dropped,
        skipped_head,
    })
}

/// Marks the last statement held by `hold`'s rule, and drops what follows it.
fn mark_held(statements: &mut VecDeque<ContextStatement>, hold: &HoldView) {
    let Some(index) = statements.iter().rposition(|s| {
        s.verdict.as_deref() == Some("hold") && s.rule.as_deref() == Some(&hold.rule)
    }) else {
        return;
    };
    statements.truncate(index + 1);
    if let Some(held) = statements.back_mut() {
        held.held = true;
    }
}

/// Reads one line into `line`, keeping at most [`MAX_LINE_BYTES`] of it
/// (the rest is consumed unread, so a huge rows line costs no memory).
/// `None` at the end of the file; `Some(false)` for a line that is too long
/// or has no newline (a write in progress).
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    let mut consumed = 0;
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok((consumed > 0).then_some(false));
        }
        let (chunk, done) = match memchr::memchr(b'\n', buffer) {
            Some(at) => (&buffer[..=at], true),
            None => (buffer, false),
        };
        if line.len() + chunk.len() > MAX_LINE_BYTES + 1 {
            too_long = true;
        } else {
            line.extend_from_slice(chunk);
        }
        let used = chunk.len();
        reader.consume(used);
        consumed += used;
        if done {
            return Ok(Some(!too_long));
        }
    }
}

/// The `type` of a recording line, read from its head without parsing it:
/// the writer puts `seq`, `mono_ns` and `ts` first, then `type`.
fn line_type(line: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b",\"type\":\"";
    let head = &line[..line.len().min(200)];
    let at = memchr::memmem::find(head, KEY)? + KEY.len();
    let rest = &head[at..];
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests;
