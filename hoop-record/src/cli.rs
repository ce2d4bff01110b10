//! `hoop recordings list | show ID | replay ID | export ID | verify [ID…]`.
//!
//! Each command writes to any `Write` so it can be tested; `main` wires clap
//! to these functions and turns [`VerifySummary::exit_code`] into the exit status.

use std::{
    fmt::Write as _,
    io::Write,
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use time::OffsetDateTime;

use super::{
    format::{Body, Cell, CopyDirection, Entry, HoldState, RecordedIdentity, VerdictKind},
    read::{ReadError, ReadLine, Recording, list_files, read_recording, read_summary, resolve},
    verify::{MacCheck, VerifyError, VerifyReport, VerifyStatus, verify_bytes, verify_file},
};

/// Why a recordings command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Finding or reading recordings failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A recording could not be read for verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// `--since` is neither an RFC 3339 time nor a duration like `2h`.
    #[error(
        "--since {value:?} is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor a duration (2h, 3days)"
    )]
    BadSince {
        /// What was given.
        value: String,
    },
}

/// Filters for [`list`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter<'a> {
    /// Only sessions that started at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only sessions whose workload (cgroup path) contains this.
    pub workload: Option<&'a str>,
    /// Only sessions of this database user (as the client asked, or the
    /// role hoop logged in as with an injected credential).
    pub user: Option<&'a str>,
}

/// Parses `--since`: an RFC 3339 time, or a duration back from `now` (`2h`, `3days`).
pub fn parse_since(value: &str, now: SystemTime) -> Result<OffsetDateTime, CliError> {
    if let Ok(at) = OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    humantime::parse_duration(value)
        .ok()
        .and_then(|ago| now.checked_sub(ago))
        .map(OffsetDateTime::from)
        .ok_or_else(|| CliError::BadSince {
            value: value.to_owned(),
        })
}

/// One row of `list --json`.
#[derive(Debug, Serialize)]
struct ListedRecording<'a> {
    id: &'a str,
    path: String,
    bytes: u64,
    started: Option<&'a str>,
    duration_seconds: f64,
    complete: bool,
    end_reason: Option<&'a str>,
    statements: Option<u64>,
    denied: Option<u64>,
    identity: Option<&'a RecordedIdentity>,
}

/// `hoop recordings list`: one line per recording (or a JSON array), oldest first.
pub fn list(
    dir: &Path,
    filter: &ListFilter<'_>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut summaries = Vec::new();
    for file in list_files(dir)? {
        let summary = read_summary(&file)?;
        let identity = summary.identity.as_ref();
        if let Some(since) = filter.since {
            let started = summary.started.as_deref().and_then(|ts| {
                OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()
            });
            if started.is_none_or(|started| started < since) {
                continue;
            }
        }
        // The cgroup path, or a pod's `namespace/name`.
        if let Some(workload) = filter.workload
            && !identity.is_some_and(|i| {
                i.workload.as_deref().is_some_and(|w| w.contains(workload))
                    || i.pod
                        .as_ref()
                        .is_some_and(|p| p.to_string().contains(workload))
            })
        {
            continue;
        }
        // The user the client asked for, or the role hoop logged in as.
        if let Some(user) = filter.user
            && !identity.is_some_and(|i| {
                i.user.as_deref() == Some(user) || i.injected_role.as_deref() == Some(user)
            })
        {
            continue;
        }
        summaries.push(summary);
    }
    if json {
        let rows: Vec<ListedRecording<'_>> = summaries
            .iter()
            .map(|s| ListedRecording {
                id: &s.id,
                path: s.path.display().to_string(),
                bytes: s.bytes,
                started: s.started.as_deref(),
                duration_seconds: s.duration_ns as f64 / 1e9,
                complete: s.complete,
                end_reason: s.end.as_ref().map(|e| e.reason.as_str()),
                statements: s.end.as_ref().map(|e| e.totals.statements),
                denied: s.end.as_ref().map(|e| e.totals.denied),
                identity: s.identity.as_ref(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<40} {:<20} {:>9} {:<24} {:<16} {:>5} STATUS",
        "ID", "STARTED", "DURATION", "USER@DB", "APP", "STMTS"
    )?;
    for s in &summaries {
        let identity = s.identity.clone().unwrap_or_default();
        let user_db = format!(
            "{}@{}",
            identity.user.as_deref().unwrap_or("?"),
            identity.database.as_deref().unwrap_or("?")
        );
        let started = s
            .started
            .as_deref()
            .map_or("?", |t| t.get(..19).unwrap_or(t));
        let status = match (&s.end, s.complete) {
            (Some(end), true) => end.reason.clone(),
            (_, false) => "open or interrupted (no trailer)".to_owned(),
            (None, true) => "complete".to_owned(),
        };
        writeln!(
            out,
            "{:<40} {:<20} {:>8.1}s {:<24} {:<16} {:>5} {}",
            s.id,
            started,
            s.duration_ns as f64 / 1e9,
            user_db,
            identity.application_name.as_deref().unwrap_or("-"),
            s.end
                .as_ref()
                .map_or_else(|| "-".to_owned(), |e| e.totals.statements.to_string()),
            status
        )?;
    }
    Ok(())
}

/// `hoop recordings show ID`: a readable transcript.
pub fn show(dir: &Path, id: &str, out: &mut impl Write) -> Result<(), CliError> {
    let recording = read_recording(&resolve(dir, id)?)?;
    write_preamble(&recording, out)?;
    for line in &recording.lines {
        writeln!(out, "{}", transcript_line(line))?;
    }
    Ok(())
}

/// `hoop recordings replay ID`: the transcript, paced by the original gaps
/// between events divided by `speed` (`0` = no pauses, `2` = twice as fast).
pub fn replay(dir: &Path, id: &str, speed: f64, out: &mut impl Write) -> Result<(), CliError> {
    replay_with(dir, id, speed, out, std::thread::sleep)
}

/// [`replay`] with the pause supplied (tests record the pauses instead).
pub fn replay_with(
    dir: &Path,
    id: &str,
    speed: f64,
    out: &mut impl Write,
    mut pause: impl FnMut(Duration),
) -> Result<(), CliError> {
    let recording = read_recording(&resolve(dir, id)?)?;
    write_preamble(&recording, out)?;
    let mut previous_ns: Option<u64> = None;
    for line in &recording.lines {
        if let ReadLine::Entry(entry) = line {
            if let Some(previous) = previous_ns
                && speed.is_finite()
                && speed > 0.0
            {
                let gap = entry.mono_ns.saturating_sub(previous);
                if gap > 0 {
                    out.flush()?;
                    pause(Duration::from_secs_f64(gap as f64 / 1e9 / speed));
                }
            }
            previous_ns = Some(entry.mono_ns);
        }
        writeln!(out, "{}", transcript_line(line))?;
    }
    out.flush()?;
    Ok(())
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// One JSON document: `{"id", "verification", "header", "events", "trailer"}`.
    #[default]
    Json,
}

/// `hoop recordings export ID`: the recording as one document. Lines are
/// exported as they are on disk (hashes included), so the export can be
/// re-verified by hand; `verification` is the verifier's report (MAC unchecked).
pub fn export(
    dir: &Path,
    id: &str,
    format: ExportFormat,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let ExportFormat::Json = format;
    let file = resolve(dir, id)?;
    let recording = read_recording(&file)?;
    let mut lines: Vec<serde_json::Value> = recording
        .bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    let is_type = |v: &serde_json::Value, t: &str| {
        v.get("type").and_then(serde_json::Value::as_str) == Some(t)
    };
    let trailer = if lines.last().is_some_and(|v| is_type(v, "trailer")) {
        lines.pop()
    } else {
        None
    };
    let header = if lines.first().is_some_and(|v| is_type(v, "header")) {
        Some(lines.remove(0))
    } else {
        None
    };
    let document = serde_json::json!({
        "id": recording.id,
        "verification": verify_bytes(&recording.bytes, None),
        "header": header,
        "events": lines,
        "trailer": trailer,
    });
    serde_json::to_writer_pretty(&mut *out, &document).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Counts from [`verify`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifySummary {
    /// Complete and unmodified.
    pub intact: u64,
    /// Unmodified but without a trailer.
    pub truncated: u64,
    /// Modified.
    pub tampered: u64,
    /// Unreadable, or of an unsupported version.
    pub unverifiable: u64,
}

impl VerifySummary {
    /// The process exit status: 1 if anything was tampered, 2 if anything
    /// could not be verified, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.tampered > 0 {
            1
        } else if self.unverifiable > 0 {
            2
        } else {
            0
        }
    }
}

/// `hoop recordings verify [ID…]`: verifies the given recordings (all when
/// `ids` is empty), one line each, then a summary line.
pub fn verify(
    dir: &Path,
    ids: &[String],
    key: Option<&[u8]>,
    out: &mut impl Write,
) -> Result<VerifySummary, CliError> {
    let files = if ids.is_empty() {
        list_files(dir)?
    } else {
        ids.iter()
            .map(|id| resolve(dir, id))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut summary = VerifySummary::default();
    for file in &files {
        let report: Result<VerifyReport, VerifyError> = verify_file(&file.path, key);
        match report {
            Ok(report) => {
                match report.status {
                    VerifyStatus::Intact => summary.intact += 1,
                    VerifyStatus::TruncatedIntact { .. } => summary.truncated += 1,
                    VerifyStatus::Tampered { .. } => summary.tampered += 1,
                    VerifyStatus::Unsupported { .. } => summary.unverifiable += 1,
                }
                writeln!(
                    out,
                    "{}: {}{}",
                    file.id,
                    report.status,
                    mac_note(report.mac, key.is_some())
                )?;
            }
            Err(error) => {
                summary.unverifiable += 1;
                writeln!(out, "{}: unverifiable: {error}", file.id)?;
            }
        }
    }
    writeln!(
        out,
        "{} intact, {} truncated-intact, {} tampered, {} unverifiable",
        summary.intact, summary.truncated, summary.tampered, summary.unverifiable
    )?;
    Ok(summary)
}

fn mac_note(mac: MacCheck, key_given: bool) -> &'static str {
    match mac {
        MacCheck::Verified => " (MAC verified)",
        MacCheck::NotChecked => " (MAC present, not checked: no key given)",
        MacCheck::Absent if !key_given => {
            " (no MAC: written without a key; a full rewrite would not be detected)"
        }
        MacCheck::Absent | MacCheck::NoTrailer => "",
    }
}

fn write_preamble(recording: &Recording, out: &mut impl Write) -> Result<(), CliError> {
    let report = verify_bytes(&recording.bytes, None);
    writeln!(
        out,
        "recording {}  ({})",
        recording.id,
        recording.path.display()
    )?;
    writeln!(
        out,
        "verification: {}{}",
        report.status,
        mac_note(report.mac, false)
    )?;
    if let Some(identity) = recording.identity() {
        writeln!(
            out,
            "session: {}",
            without_control_characters(&describe_identity(identity))
        )?;
    }
    if recording.unreadable_lines > 0 {
        writeln!(
            out,
            "warning: {} unreadable lines skipped",
            recording.unreadable_lines
        )?;
    }
    Ok(())
}

fn describe_identity(i: &RecordedIdentity) -> String {
    let mut s = format!(
        "{} {}@{}",
        i.id,
        i.user.as_deref().unwrap_or("?"),
        i.database.as_deref().unwrap_or("?")
    );
    for (name, value) in [
        ("injected_role", i.injected_role.as_deref()),
        ("credential", i.credential.as_deref()),
        ("app", i.application_name.as_deref()),
        ("client", i.client.as_deref()),
        ("dst", i.original_destination.as_deref()),
        ("workload", i.workload.as_deref()),
        ("namespace", i.pod.as_ref().map(|p| p.namespace.as_str())),
        ("pod", i.pod.as_ref().map(|p| p.pod.as_str())),
        ("pod_uid", i.pod.as_ref().map(|p| p.uid.as_str())),
        (
            "service_account",
            i.pod.as_ref().map(|p| p.service_account.as_str()),
        ),
        (
            "node",
            i.pod
                .as_ref()
                .map(|p| p.node.as_str())
                .filter(|n| !n.is_empty()),
        ),
    ] {
        if let Some(value) = value {
            let _ = write!(s, " {name}={value}");
        }
    }
    if let Some(pod) = i.pod.as_ref().filter(|p| !p.labels.is_empty()) {
        let labels: Vec<String> = pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(s, " labels={{{}}}", labels.join(","));
    }
    if let Some(pid) = i.backend_pid {
        let _ = write!(s, " backend_pid={pid}");
    }
    // Recordings from before hoop spoke MySQL name no protocol: PostgreSQL.
    let _ = write!(s, " protocol={}", i.protocol.unwrap_or_default().as_str());
    let _ = write!(
        s,
        " tls(client={}, upstream={})",
        yes_no(i.client_tls),
        yes_no(i.upstream_tls)
    );
    s
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// One transcript line: `+SECONDS  what happened`.
fn transcript_line(line: &ReadLine) -> String {
    let entry: &Entry = match line {
        ReadLine::Entry(entry) => entry,
        ReadLine::Other(value) => {
            let kind = value
                .get("type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?");
            return format!("{:>10}  ({kind} event: not understood by this version)", "");
        }
    };
    let at = format!("+{:.3}s", entry.mono_ns as f64 / 1e9);
    let what = match &entry.body {
        Body::Header(h) => {
            format!(
                "recording v{} by {} (rows: {}) started {}",
                h.version,
                h.writer,
                snake_name(&h.rows),
                entry.ts
            )
        }
        Body::SessionStart(_) => "session start".to_owned(),
        Body::Promotion(p) => format!(
            "  promotion: detector rule {} found values in {}; masked as a column rule from now on",
            p.rule, p.column
        ),
        Body::Statement(s) => {
            let kinds: Vec<String> = s.kinds.iter().map(snake_name).collect();
            let tables = if s.tables.is_empty() {
                String::new()
            } else {
                format!("; tables {}", s.tables.join(", "))
            };
            format!(
                "statement [{}] {}   ({}{tables})",
                snake_name(&s.form),
                s.sql,
                kinds.join(", ")
            )
        }
        Body::Verdict(v) => {
            let verdict = match v.verdict {
                VerdictKind::Allow => "allow",
                VerdictKind::Deny => "DENY",
                VerdictKind::Hold => "HOLD",
            };
            match (&v.rule, &v.message) {
                (Some(rule), Some(message)) => {
                    format!("  verdict: {verdict} (rule {rule}: {message})")
                }
                (Some(rule), None) => format!("  verdict: {verdict} (rule {rule})"),
                _ => format!("  verdict: {verdict}"),
            }
        }
        Body::Hold(h) => {
            let mut s = format!("  hold {} {}", h.hold_id, h.state.as_str());
            if let Some(decider) = &h.decider {
                let by = if matches!(h.state, HoldState::Approved | HoldState::Denied) {
                    "by"
                } else {
                    "decider"
                };
                let _ = write!(s, " {by} {decider}");
            }
            if let Some(reason) = &h.reason {
                let _ = write!(s, ": {reason:?}");
            }
            s
        }
        Body::Result(r) => match (&r.sqlstate, &r.tag) {
            (Some(state), _) => format!("  result: failed, SQLSTATE {state}"),
            (None, Some(tag)) => format!("  result: {tag}"),
            (None, None) => format!(
                "  result: {} rows",
                r.rows.map_or_else(|| "?".into(), |n| n.to_string())
            ),
        },
        Body::Rows(rows) => {
            let mut s = format!("  rows ({}):", rows.rows.len());
            for (i, row) in rows.rows.iter().enumerate() {
                let cells: Vec<String> = row.iter().map(Option::as_ref).map(display_cell).collect();
                let _ = write!(s, "\n{:>10}    | {} |", "", cells.join(" | "));
                if let Some(t) = rows.truncated.iter().find(|t| t.row as usize == i) {
                    let _ = write!(s, " … [row truncated from {} bytes]", t.original_bytes);
                }
            }
            s
        }
        Body::CopyData(c) => {
            let direction = match c.direction {
                CopyDirection::ToServer => "to server",
                CopyDirection::ToClient => "to client",
            };
            let mut s = format!("  copy data {direction}: {}", display_cell(Some(&c.data)));
            if let Some(original) = c.truncated_from_bytes {
                let _ = write!(s, " … [truncated from {original} bytes]");
            }
            s
        }
        Body::Error(e) => format!("  error {}: {}", e.sqlstate, e.message),
        Body::RowsLimit(l) => format!(
            "  rows not recorded ({:?}): {} recorded, {} dropped",
            l.reason, l.recorded_rows, l.dropped_rows
        ),
        Body::SessionEnd(e) => format!(
            "session end: {} ({} statements, {} denied, {} held, {} errors, {} rows recorded, {} rows dropped)",
            e.reason,
            e.totals.statements,
            e.totals.denied,
            e.totals.held,
            e.totals.errors,
            e.totals.rows_recorded,
            e.totals.rows_dropped
        ),
        Body::Trailer(t) => format!(
            "trailer: {} events, last hash {}…, {}",
            t.events,
            t.last_hash.get(..12).unwrap_or(&t.last_hash),
            if t.mac.is_some() {
                "MAC present"
            } else {
                "no MAC"
            }
        ),
    };
    // Recorded text is the client's: never let it drive the auditor's terminal.
    without_control_characters(&format!("{at:>10}  {what}"))
}

/// Escapes control characters other than newline and tab (ANSI escapes in a
/// recorded statement must not reach a terminal raw).
fn without_control_characters(text: &str) -> String {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The serde (snake_case) name of a unit enum value, as the file spells it.
fn snake_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".to_owned(),
    }
}

fn display_cell(cell: Option<&Cell>) -> String {
    match cell {
        None => "NULL".to_owned(),
        Some(Cell::Text(text)) => text.escape_debug().to_string(),
        Some(Cell::Binary { base64 }) => format!("<base64 {base64}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        ChainWriter, FORMAT_NAME, FORMAT_VERSION, Header, HoldEvent, ResultEvent, RowsEvent,
        RowsMode, SessionEndEvent, SessionStart, SessionTotals, StatementEvent, TruncatedRow,
        VerdictEvent,
    };
    use hoop_core::{StatementKind, Submission};

    const KEY: &[u8] = b"k";

    /// Writes `<dir>/<id>.jsonl` with events at the given `mono_ns` (ms).
    fn write_recording(
        dir: &Path,
        id: &str,
        session: &str,
        user: &str,
        started: &str,
        key: Option<&[u8]>,
    ) {
        let mut out = Vec::new();
        let mut chain = ChainWriter::new(session);
        let ms = |n: u64| n * 1_000_000;
        let mut push = |chain: &mut ChainWriter, at: u64, body: Body| {
            chain.append(&mut out, ms(at), started, &body);
        };
        push(
            &mut chain,
            0,
            Body::Header(Header {
                format: FORMAT_NAME.into(),
                version: FORMAT_VERSION,
                session_id: session.into(),
                writer: "test".into(),
                rows: RowsMode::Full,
                max_row_bytes: 64,
            }),
        );
        let identity = RecordedIdentity {
            id: session.into(),
            user: Some(user.into()),
            database: Some("shop".into()),
            application_name: Some("psql".into()),
            workload: Some("/sys/fs/cgroup/payments".into()),
            // carol's session was logged in by hoop with an injected credential.
            injected_role: (user == "carol").then(|| "reporting_ro".into()),
            credential: (user == "carol").then(|| "reporting".into()),
            // and came from a Kubernetes pod.
            pod: (user == "carol").then(|| {
                Box::new(hoop_core::PodIdentity {
                    namespace: "invoicing".into(),
                    pod: "invoicer-7d9".into(),
                    uid: "0d3c3e4e-1111-2222-3333-444455556666".into(),
                    service_account: "invoicer".into(),
                    node: "node-1".into(),
                    labels: [("app".to_owned(), "invoicer".to_owned())].into(),
                })
            }),
            ..RecordedIdentity::default()
        };
        push(&mut chain, 0, Body::SessionStart(SessionStart { identity }));
        push(
            &mut chain,
            100,
            Body::Statement(StatementEvent {
                sql: "SELECT name, ssn FROM customers".into(),
                form: Submission::Prepared,
                kinds: [StatementKind::Select].into(),
                tables: ["customers".into()].into(),
            }),
        );
        push(
            &mut chain,
            100,
            Body::Verdict(VerdictEvent {
                verdict: VerdictKind::Allow,
                rule: None,
                message: None,
            }),
        );
        push(
            &mut chain,
            150,
            Body::Rows(RowsEvent {
                rows: vec![vec![
                    Some(Cell::Text("alice".into())),
                    Some(Cell::Text("***-**-6789".into())),
                    None,
                ]],
                truncated: vec![TruncatedRow {
                    row: 0,
                    original_bytes: 99,
                }],
            }),
        );
        push(
            &mut chain,
            150,
            Body::Result(ResultEvent {
                tag: Some("SELECT 1 -- \u{1b}[2J".into()),
                rows: Some(1),
                sqlstate: None,
            }),
        );
        push(
            &mut chain,
            300,
            Body::Statement(StatementEvent {
                sql: "DELETE FROM orders WHERE id = $1".into(),
                form: Submission::Text,
                kinds: [StatementKind::Delete].into(),
                tables: ["orders".into()].into(),
            }),
        );
        push(
            &mut chain,
            300,
            Body::Verdict(VerdictEvent {
                verdict: VerdictKind::Hold,
                rule: Some("hold[0]".into()),
                message: Some("needs approval".into()),
            }),
        );
        push(
            &mut chain,
            300,
            Body::Hold(HoldEvent {
                hold_id: "h-1".into(),
                state: HoldState::Created,
                decider: None,
                reason: None,
            }),
        );
        push(
            &mut chain,
            1300,
            Body::Hold(HoldEvent {
                hold_id: "h-1".into(),
                state: HoldState::Approved,
                decider: Some("bob".into()),
                reason: Some("ticket 42".into()),
            }),
        );
        push(
            &mut chain,
            1400,
            Body::SessionEnd(SessionEndEvent {
                reason: "client_closed".into(),
                totals: SessionTotals {
                    statements: 2,
                    held: 1,
                    rows_recorded: 1,
                    ..SessionTotals::default()
                },
            }),
        );
        chain.append_trailer(&mut out, ms(1400), started, key);
        std::fs::write(dir.join(format!("{id}.jsonl")), out).expect("write");
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write_recording(
            dir.path(),
            "20250101T000000Z-s-1",
            "s-1",
            "alice",
            "2025-01-01T00:00:00Z",
            Some(KEY),
        );
        write_recording(
            dir.path(),
            "20250301T000000Z-s-2",
            "s-2",
            "carol",
            "2025-03-01T00:00:00Z",
            Some(KEY),
        );
        dir
    }

    fn output(f: impl FnOnce(&mut Vec<u8>) -> Result<(), CliError>) -> String {
        let mut out = Vec::new();
        f(&mut out).expect("command succeeds");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn list_filters_by_user_time_and_workload() {
        let dir = fixture();
        let all = output(|o| list(dir.path(), &ListFilter::default(), false, o));
        assert!(
            all.contains("20250101T000000Z-s-1") && all.contains("20250301T000000Z-s-2"),
            "{all}"
        );
        assert!(
            all.contains("alice@shop") && all.contains("client_closed"),
            "{all}"
        );

        let carol = output(|o| {
            list(
                dir.path(),
                &ListFilter {
                    user: Some("carol"),
                    ..ListFilter::default()
                },
                false,
                o,
            )
        });
        assert!(
            !carol.contains("s-1 ") && carol.contains("20250301T000000Z-s-2"),
            "{carol}"
        );

        let since = parse_since("2025-02-01T00:00:00Z", SystemTime::now()).expect("parses");
        let recent = output(|o| {
            list(
                dir.path(),
                &ListFilter {
                    since: Some(since),
                    ..ListFilter::default()
                },
                true,
                o,
            )
        });
        let json: serde_json::Value = serde_json::from_str(&recent).expect("json");
        assert_eq!(json.as_array().map(Vec::len), Some(1));
        assert_eq!(json[0]["identity"]["user"], "carol");
        assert_eq!(json[0]["complete"], true);
        assert_eq!(json[0]["statements"], 2);

        let none = output(|o| {
            list(
                dir.path(),
                &ListFilter {
                    workload: Some("billing"),
                    ..ListFilter::default()
                },
                true,
                o,
            )
        });
        assert_eq!(none.trim(), "[]");
        assert!(parse_since("2h", SystemTime::now()).is_ok());
        assert!(matches!(
            parse_since("yesterday-ish", SystemTime::now()),
            Err(CliError::BadSince { .. })
        ));
    }

    #[test]
    fn show_is_a_readable_transcript() {
        let dir = fixture();
        // By session id, when unambiguous.
        let text = output(|o| show(dir.path(), "s-1", o));
        for expected in [
            "verification: intact",
            "s-1 alice@shop app=psql",
            "+0.100s  statement [extended] SELECT name, ssn FROM customers   (select; tables customers)",
            "verdict: allow",
            "| alice | ***-**-6789 | NULL | … [row truncated from 99 bytes]",
            "result: SELECT 1",
            "verdict: HOLD (rule hold[0]: needs approval)",
            "hold h-1 approved by bob: \"ticket 42\"",
            "session end: client_closed (2 statements",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains('\u{1b}'), "control characters are escaped");
        assert!(text.contains("SELECT 1 -- \\u{1b}[2J"), "{text}");
        assert!(matches!(
            show(dir.path(), "nope", &mut Vec::new()),
            Err(CliError::Read(ReadError::NotFound { .. }))
        ));
    }

    #[test]
    fn injected_sessions_show_the_workload_and_the_injected_role() {
        let dir = fixture();
        let text = output(|o| show(dir.path(), "s-2", o));
        assert!(
            text.contains(
                "s-2 carol@shop injected_role=reporting_ro credential=reporting app=psql"
            ) && text.contains("workload=/sys/fs/cgroup/payments"),
            "{text}"
        );
        // The pod it came from, in the session header.
        assert!(
            text.contains(
                "namespace=invoicing pod=invoicer-7d9 pod_uid=0d3c3e4e-1111-2222-3333-444455556666 \
                 service_account=invoicer node=node-1 labels={app=invoicer}"
            ),
            "{text}"
        );
        // A session without injection says nothing of it, and its file has
        // no such keys (as files written before injection existed).
        let text = output(|o| show(dir.path(), "s-1", o));
        assert!(!text.contains("injected_role") && !text.contains("credential="));
        assert!(!text.contains("namespace=") && !text.contains("pod="));
        let raw = std::fs::read_to_string(dir.path().join("20250101T000000Z-s-1.jsonl"))
            .expect("recording");
        assert!(!raw.contains("injected_role") && !raw.contains("\"credential\""));
        assert!(!raw.contains("\"pod\""));
        // Listing by workload finds a pod by namespace/name.
        let by_pod = output(|o| {
            list(
                dir.path(),
                &ListFilter {
                    workload: Some("invoicing/invoicer"),
                    ..ListFilter::default()
                },
                false,
                o,
            )
        });
        assert!(
            by_pod.contains("s-2") && !by_pod.contains("s-1 "),
            "{by_pod}"
        );
        // Listing by user finds the session by the role the server saw too.
        let by_role = output(|o| {
            list(
                dir.path(),
                &ListFilter {
                    user: Some("reporting_ro"),
                    ..ListFilter::default()
                },
                true,
                o,
            )
        });
        let json: serde_json::Value = serde_json::from_str(&by_role).expect("json");
        assert_eq!(json.as_array().map(Vec::len), Some(1), "{by_role}");
        assert_eq!(json[0]["identity"]["injected_role"], "reporting_ro");
        assert_eq!(json[0]["identity"]["credential"], "reporting");
    }

    #[test]
    fn replay_is_paced_by_the_recorded_gaps() {
        let dir = fixture();
        let mut pauses = Vec::new();
        let mut out = Vec::new();
        replay_with(dir.path(), "20250101T000000Z-s-1", 2.0, &mut out, |d| {
            pauses.push(d);
        })
        .expect("replays");
        // Gaps 100, 50, 150, 1000, 100 ms, at twice the speed.
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [50, 25, 75, 500, 50]);
        let mut none = Vec::new();
        replay_with(dir.path(), "s-1", 0.0, &mut Vec::new(), |d| none.push(d)).expect("replays");
        assert!(none.is_empty());
        assert!(
            String::from_utf8(out)
                .expect("utf8")
                .contains("approved by bob")
        );
    }

    #[test]
    fn export_is_one_json_document_with_hashes() {
        let dir = fixture();
        let text = output(|o| export(dir.path(), "s-2", ExportFormat::Json, o));
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["header"]["format"], "hoop-recording");
        assert_eq!(doc["trailer"]["type"], "trailer");
        assert_eq!(doc["events"].as_array().map(Vec::len), Some(10));
        assert_eq!(doc["events"][0]["type"], "session_start");
        assert!(
            doc["events"][0]["hash"]
                .as_str()
                .is_some_and(|h| h.len() == 64)
        );
        assert_eq!(doc["verification"]["status"]["status"], "intact");
    }

    #[test]
    fn verify_exit_status_reflects_tampering() {
        let dir = fixture();
        let mut out = Vec::new();
        let summary = verify(dir.path(), &[], Some(KEY), &mut out).expect("verifies");
        assert_eq!((summary.intact, summary.exit_code()), (2, 0));
        assert!(String::from_utf8_lossy(&out).contains("(MAC verified)"));

        let path = dir.path().join("20250301T000000Z-s-2.jsonl");
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("DELETE FROM orders", "SELECT 1 FROM orders");
        std::fs::write(&path, text).expect("write");
        let mut out = Vec::new();
        let summary = verify(dir.path(), &[], Some(KEY), &mut out).expect("verifies");
        assert_eq!(
            (summary.intact, summary.tampered, summary.exit_code()),
            (1, 1, 1)
        );
        let out = String::from_utf8(out).expect("utf8");
        assert!(
            out.contains("20250301T000000Z-s-2: TAMPERED at seq 6: hash does not match"),
            "{out}"
        );

        // Only the named one.
        let summary =
            verify(dir.path(), &["s-1".into()], Some(KEY), &mut Vec::new()).expect("verifies");
        assert_eq!(summary.exit_code(), 0);
    }
}
