//! `max_rows` dry runs: a statement a rule with `max_rows` matches runs
//! inside a transaction block hoop opens (or, when the client has one, a
//! savepoint), its replies held back; its command tag's row count is judged
//! ([`SessionGovernor::judge_counted`](hoop_core::SessionGovernor::judge_counted)),
//! and then:
//! - allowed: the savepoint is released (or hoop's block committed) and the
//!   held-back replies go to the client; a failing `COMMIT` (a deferred
//!   constraint, a serialization failure) replaces them with its error;
//! - denied: everything the statement did is rolled back and the client
//!   gets the rule's error with the count (inside the client's own block,
//!   that block then fails, as after any refusal);
//! - held: rolled back, and held with the count in the hold's message; once
//!   approved the statement runs again as a dry run, and is refused if it
//!   now touches more rows than the approver saw.
//!
//! hoop learns whether the client was in a transaction block from the
//! server itself: it sends `BEGIN; SAVEPOINT hoop_dry_run` ahead of the
//! statement, and `BEGIN` warns (SQLSTATE 25001) inside a block and fails
//! (25P02) inside a failed one (where the statement fails too and is passed
//! on as it is). The client's later messages wait until the dry run is
//! decided.
//!
//! What a rollback cannot undo (docs/policy.md): sequence values the
//! statement drew, effects outside the database (`dblink`, `COPY … TO
//! PROGRAM`, notifications are held until commit and so are dropped),
//! time spent and locks held meanwhile, and rows the statement's triggers
//! or foreign keys touched besides its own (the tag counts only its own).

use bytes::{Bytes, BytesMut};
use hoop_core::{HoldRequirement, Refusal, Submission, Verdict};
use hoop_proto_pg::{
    notice::NoticeFields,
    query::Query,
    rows::CommandComplete,
    status::{ReadyForQuery, TransactionStatus},
};
use tracing::info;

use super::{ClientAction, Relay, SessionError, client_statement};
use crate::refusal;

/// The savepoint a dry run runs under.
const SAVEPOINT: &str = "hoop_dry_run";
/// Most bytes of a statement's replies held back while its rows are counted.
const MAX_CAPTURE: usize = 16 * 1024 * 1024;
/// PostgreSQL's warning for `BEGIN` inside a transaction block.
const ALREADY_IN_TRANSACTION: &str = "25001";

/// A dry run in progress.
pub(super) struct DryRun {
    /// The statement, as the client sent it.
    sql: String,
    /// Set when it re-runs after a hold: the rows the approver saw.
    approved: Option<u64>,
    stage: Stage,
    /// `BEGIN` warned: the client had a transaction block of its own.
    client_block: bool,
    /// `BEGIN` failed: the client's block had failed (the statement will too).
    client_failed: bool,
    /// The statement's replies, held back.
    captured: Vec<Bytes>,
    captured_len: usize,
    /// The replies did not fit in [`MAX_CAPTURE`].
    overflow: bool,
    /// The row count of its command tag, when it had one.
    rows: Option<u64>,
    /// It raised an error.
    failed: bool,
    /// An error raised by hoop's own closing command (a failing `COMMIT`).
    closing_error: Option<Bytes>,
    /// What to send the client once the dry run is over.
    output: Vec<Bytes>,
    done: bool,
}

/// Where a dry run is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// `BEGIN; SAVEPOINT` is out.
    Opening,
    /// The statement is running; its replies are held back.
    Capturing,
    /// The command that ends the dry run is out; then this.
    Closing(Outcome),
}

/// How a dry run ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Keep what the statement did and send its replies.
    Keep,
    /// The statement failed: send its replies (its block is rolled back).
    Failed,
    /// Undo it and refuse with this error.
    Refuse(Bytes),
    /// Undo it and hold it.
    Hold(HoldRequirement),
}

fn internal(sql: &str) -> Bytes {
    Query { sql }.encode()
}

impl Relay {
    /// Whether the frame at hand may belong to the dry run's statement.
    pub(super) fn capturing(&self) -> bool {
        self.dry_run
            .as_ref()
            .is_some_and(|d| d.stage == Stage::Capturing)
    }

    /// Starts a dry run of the client's Query `q` (`approved`: it re-runs
    /// after an approval of that many rows). The client waits meanwhile.
    pub(super) fn start_dry_run(&mut self, q: Query<'_>, approved: Option<u64>) -> ClientAction {
        info!(session = %self.identity, "statement runs as a max_rows dry run");
        self.dry_run = Some(DryRun {
            sql: q.sql.to_owned(),
            approved,
            stage: Stage::Opening,
            client_block: false,
            client_failed: false,
            captured: Vec::new(),
            captured_len: 0,
            overflow: false,
            rows: None,
            failed: false,
            closing_error: None,
            output: Vec::new(),
            done: false,
        });
        self.state.internal_query();
        self.state.client_query(q.sql);
        ClientAction::ReplaceAndPause(vec![
            internal(&format!("BEGIN; SAVEPOINT {SAVEPOINT}")),
            q.encode(),
        ])
    }

    /// A Parse whose statement a rule with `max_rows` matches. Its executions
    /// cannot run twice, so the rule applies as if over its limit (fail
    /// closed): a deny refuses it, a hold holds it (without a count).
    pub(super) fn unguarded_prepare(
        &mut self,
        p: &hoop_proto_pg::extended::Parse<'_>,
    ) -> ClientAction {
        let ctx = client_statement(
            &self.identity,
            self.state.transaction(),
            p.sql,
            Submission::Prepared,
            Some(p.name),
        );
        match self.governor.judge_counted(&ctx, None) {
            Verdict::Allow => {
                self.state.client_parse(p);
                ClientAction::Forward
            }
            Verdict::Deny(d) => {
                let mut r = Refusal::denied(&d);
                r.hint = Some(
                    "max_rows is checked by a dry run for statements sent as simple queries; \
                     a prepared statement is judged as over the limit"
                        .to_owned(),
                );
                self.refuse(refusal::error(&r).encode(), true)
            }
            Verdict::Hold(h) => {
                self.start_hold(h, p.sql, Submission::Prepared);
                ClientAction::Hold
            }
        }
    }

    /// Keeps a frame of the statement's replies.
    pub(super) fn capture(&mut self, frame: Bytes) {
        let Some(d) = self.dry_run.as_mut() else {
            return;
        };
        match frame.first() {
            Some(b'C') => {
                if let Ok(c) = CommandComplete::parse(&frame[5..]) {
                    d.rows = c.rows();
                }
            }
            Some(b'E') => d.failed = true,
            _ => {}
        }
        if d.overflow {
            // Only the count matters now; ReadyForQuery ends the statement.
            if frame.first() == Some(&b'Z') {
                d.captured.push(frame);
            }
            return;
        }
        d.captured_len += frame.len();
        if d.captured_len > MAX_CAPTURE {
            d.overflow = true;
            d.captured.clear();
        }
        d.captured.push(frame);
    }

    /// After a captured frame: the statement's ReadyForQuery decides.
    pub(super) fn dry_run_step(&mut self) {
        let finished = self
            .dry_run
            .as_ref()
            .is_some_and(|d| d.captured.last().and_then(|f| f.first()) == Some(&b'Z'));
        if finished {
            self.decide_dry_run();
        }
    }

    /// The statement is done: judge its count and start closing.
    fn decide_dry_run(&mut self) {
        let Some(d) = self.dry_run.as_mut() else {
            return;
        };
        if d.client_failed || (d.failed && d.client_block) {
            // It failed as it would have: the client's block is failed, and
            // the replies say so.
            d.output = std::mem::take(&mut d.captured);
            d.done = true;
            return;
        }
        if d.failed {
            d.stage = Stage::Closing(Outcome::Failed);
            self.close_dry_run(false);
            return;
        }
        let (rows, approved, overflow) = (d.rows, d.approved, d.overflow);
        let sql = d.sql.clone();
        let verdict = if overflow {
            Verdict::Deny(hoop_core::Denial::new(
                "max_rows",
                format!(
                    "hoop holds a max_rows dry run's results back until they are judged, and these exceed {} MiB; the statement was rolled back",
                    MAX_CAPTURE / (1024 * 1024)
                ),
            ))
        } else if let Some(limit) = approved {
            match rows {
                Some(n) if n <= limit => Verdict::Allow,
                _ => Verdict::Deny(hoop_core::Denial::new(
                    "max_rows",
                    format!(
                        "the statement was approved for {limit} rows but now touches {}; it was rolled back",
                        rows.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
                    ),
                )),
            }
        } else {
            let ctx = client_statement(
                &self.identity,
                self.state.transaction(),
                &sql,
                Submission::Text,
                None,
            );
            self.governor.judge_counted(&ctx, rows)
        };
        info!(session = %self.identity, rows = ?rows, verdict = ?verdict_word(&verdict), "max_rows dry run judged");
        let outcome = match verdict {
            Verdict::Allow => Outcome::Keep,
            Verdict::Deny(denial) => {
                Outcome::Refuse(refusal::error(&Refusal::denied(&denial)).encode())
            }
            Verdict::Hold(requirement) => Outcome::Hold(requirement),
        };
        let keep = outcome == Outcome::Keep;
        if let Some(d) = self.dry_run.as_mut() {
            d.stage = Stage::Closing(outcome);
        }
        self.close_dry_run(keep);
    }

    /// Sends the command that ends the dry run: keep or undo.
    fn close_dry_run(&mut self, keep: bool) {
        let Some(d) = self.dry_run.as_ref() else {
            return;
        };
        let sql = match (d.client_block, keep) {
            (true, true) => format!("RELEASE SAVEPOINT {SAVEPOINT}"),
            (true, false) => {
                format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
            }
            (false, true) => "COMMIT".to_owned(),
            (false, false) => "ROLLBACK".to_owned(),
        };
        self.state.internal_query();
        self.io.to_server.push(internal(&sql));
    }

    /// A reply to one of hoop's own queries.
    pub(super) fn internal_frame(
        &mut self,
        tag: u8,
        body: &[u8],
    ) -> Result<hoop_proto_pg::session::ServerAction, SessionError> {
        let action = self.state.server_message(tag, body).map_err(|e| match e {
            hoop_proto_pg::session::SessionError::Message(m) => SessionError::ServerMessage(m),
            e @ hoop_proto_pg::session::SessionError::UnexpectedReply { .. } => {
                SessionError::ServerState(e)
            }
        })?;
        let Some(d) = self.dry_run.as_mut() else {
            return Ok(action);
        };
        match (tag, &d.stage) {
            (b'N', Stage::Opening) => {
                let fields = NoticeFields::parse(body).map_err(SessionError::ServerMessage)?;
                if fields.code() == Some(ALREADY_IN_TRANSACTION) {
                    d.client_block = true;
                }
            }
            (b'E', Stage::Opening) => d.client_failed = true,
            (b'E', Stage::Closing(_)) => {
                let mut frame = BytesMut::with_capacity(body.len() + 5);
                frame.extend_from_slice(b"E");
                frame.extend_from_slice(
                    &u32::try_from(body.len() + 4)
                        .unwrap_or(u32::MAX)
                        .to_be_bytes(),
                );
                frame.extend_from_slice(body);
                d.closing_error = Some(frame.freeze());
            }
            (b'Z', Stage::Opening) => d.stage = Stage::Capturing,
            (b'Z', Stage::Closing(_)) => {
                let status = ReadyForQuery::parse(body)
                    .map_err(SessionError::ServerMessage)?
                    .status;
                self.finish_dry_run(status);
            }
            _ => {}
        }
        Ok(action)
    }

    /// hoop's closing command is done: what the client gets now.
    fn finish_dry_run(&mut self, status: TransactionStatus) {
        let Some(mut d) = self.dry_run.take() else {
            return;
        };
        let Stage::Closing(outcome) = std::mem::replace(&mut d.stage, Stage::Opening) else {
            return;
        };
        let ready = ReadyForQuery { status }.encode();
        // The statement's replies, up to (not including) its ReadyForQuery.
        let mut replies = std::mem::take(&mut d.captured);
        replies.pop();
        let mut output = Vec::new();
        match outcome {
            Outcome::Keep => {
                if let Some(error) = d.closing_error.take() {
                    // The COMMIT failed: that error is the statement's outcome.
                    output.extend([error, ready]);
                } else {
                    output.extend(replies);
                    output.push(ready);
                }
            }
            Outcome::Failed => {
                output.extend(replies);
                output.push(ready);
            }
            Outcome::Refuse(error) if !d.client_block => output.extend([error, ready]),
            Outcome::Refuse(error) => {
                // Inside the client's block: fail it, as any refusal does
                // (the probe's error becomes the refusal, and its
                // ReadyForQuery the client's).
                if let ClientAction::Replace(messages) = self.refuse(error, false) {
                    for m in messages.into_iter().flatten() {
                        self.io.to_server.push(m);
                    }
                }
            }
            Outcome::Hold(requirement) => {
                // Rolled back: hold the statement, which runs again (as a
                // dry run) once approved.
                let mut buf = BytesMut::from(&Query { sql: &d.sql }.encode()[..]);
                buf.extend_from_slice(&self.io.client_buf);
                self.io.client_buf = buf;
                self.hold_rows = d.rows;
                self.start_hold(requirement, &d.sql, Submission::Text);
            }
        }
        d.output = output;
        d.done = true;
        self.dry_run = Some(d);
    }

    /// What to send the client now that a dry run is over (empty while one
    /// is in progress); ends the dry run and lets the client go on.
    pub(super) fn take_dry_run_output(&mut self) -> Vec<Bytes> {
        if !self.dry_run.as_ref().is_some_and(|d| d.done) {
            return Vec::new();
        }
        let d = self.dry_run.take();
        self.resume_client = true;
        d.map(|d| d.output).unwrap_or_default()
    }
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny(_) => "deny",
        Verdict::Hold(_) => "hold",
    }
}
