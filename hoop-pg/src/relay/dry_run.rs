//! `max_rows` dry runs: a statement a rule with `max_rows` matches runs
//! inside a transaction block hoop opens (or, when the client has one, a
//! savepoint), its replies held back; its row count is judged (the larger of
//! its command tag's and the rows written in the transaction while it ran,
//! from the server's per-transaction counters, so cascades and triggers
//! count)
//! ([`SessionGovernor::judge_counted`](hoop_core::SessionGovernor::judge_counted)),
//! and then:
//! - allowed: the savepoint is released (or hoop's block committed) and the
//!   held-back replies go to the client; a failing `COMMIT` (a deferred
//!   constraint, a serialization failure) replaces them with its error;
//! - denied: everything the statement did is rolled back and the client
//!   gets the rule's error with the count (inside the client's own block,
//!   that block then fails, as after any refusal);
//! - held (simple queries): rolled back, and held with the count in the
//!   hold's message; once approved the statement runs again as a dry run,
//!   and is refused if it now touches more rows than the approver saw.
//!
//! hoop learns whether the client was in a transaction block from the
//! server itself: it runs `BEGIN` then `SAVEPOINT hoop_dry_run` ahead of the
//! statement, and `BEGIN` warns (SQLSTATE 25001) inside a block and fails
//! (25P02) inside a failed one, where the statement fails too and is passed
//! on as it is. The client's later messages wait until the dry run is
//! decided.
//!
//! In the extended protocol the dry run wraps the guarded statement's
//! Execute (its Parse was judged with `max_rows`): `BEGIN` and `SAVEPOINT`
//! go as hoop's own Parse/Bind/Execute/Close, a Flush makes the server
//! answer at once, and a block hoop opened ends at the client's Sync — with
//! hoop's `COMMIT` before it when the statement was allowed, and a
//! `ROLLBACK` after it when anything in the pipeline failed — so the
//! pipeline stays atomic, as it would be without hoop. An execution cannot
//! be held (it cannot run again later): a hold over the limit refuses it.
//!
//! What a rollback cannot undo (docs/policy.md): sequence values the
//! statement drew, effects outside the database (`dblink`, `COPY … TO
//! PROGRAM`), and time spent and locks held meanwhile.

use bytes::{Bytes, BytesMut};
use hoop_core::{Denial, HoldRequirement, Refusal, Submission, Verdict};
use hoop_proto_pg::{
    extended::{Close, Execute, Parse, Target, flush, sync},
    notice::NoticeFields,
    query::Query,
    rows::CommandComplete,
    status::{ReadyForQuery, TransactionStatus},
    wire::MessageBuilder,
};
use tracing::info;

use super::{ClientAction, Relay, SessionError, client_statement};
use crate::refusal;

/// The savepoint a dry run runs under.
const SAVEPOINT: &str = "hoop_dry_run";
/// hoop's own prepared statement and portal in the extended protocol.
const INTERNAL_NAME: &str = "hoop: dry run";
/// Most bytes of a statement's replies held back while its rows are counted.
const MAX_CAPTURE: usize = 16 * 1024 * 1024;
/// Rows written so far in the transaction, in every user table: read before
/// and after the statement, the difference counts the rows its cascading
/// foreign keys and triggers wrote too (the command tag counts only its
/// own). Within a transaction block the server does not flush these
/// counters, so the two readings are comparable.
const TOUCHED: &str = "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8 FROM pg_catalog.pg_stat_xact_user_tables";
/// PostgreSQL's warning for `BEGIN` inside a transaction block.
const ALREADY_IN_TRANSACTION: &str = "25001";

/// How the guarded statement was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// A simple Query (its text, to run again after a hold).
    Simple,
    /// An Execute of a prepared statement (its name).
    Extended { statement: String },
}

/// A dry run in progress.
pub(super) struct DryRun {
    /// The statement's SQL.
    sql: String,
    form: Form,
    /// Set when it re-runs after a hold: the rows the approver saw.
    approved: Option<u64>,
    stage: Stage,
    /// `BEGIN` warned: the client had a transaction block of its own.
    client_block: bool,
    /// The statement's replies, held back.
    captured: Vec<Bytes>,
    captured_len: usize,
    /// The replies did not fit in [`MAX_CAPTURE`].
    overflow: bool,
    /// The row count of its command tag, when it had one.
    rows: Option<u64>,
    /// Rows written in the transaction before and after the statement
    /// ([`TOUCHED`]).
    touched_before: Option<u64>,
    touched_after: Option<u64>,
    /// Reading the counters after the statement failed (its transaction
    /// is now aborted): it is rolled back.
    uncounted: bool,
    /// It raised an error.
    failed: bool,
    /// An error raised by hoop's own closing command (a failing `COMMIT`).
    closing_error: Option<Bytes>,
    /// What to send the client next.
    output: Vec<Bytes>,
    done: bool,
}

/// Where a dry run is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// `BEGIN` and `SAVEPOINT` are out.
    Opening,
    /// The statement is running; its replies are held back.
    Capturing,
    /// The statement is done; hoop reads how many rows the transaction has
    /// written since it started.
    Counting,
    /// hoop's command that keeps or undoes the statement is out; then this.
    Closing(Outcome),
}

/// A transaction block hoop opened for extended-protocol dry runs, which
/// ends with the client's pipeline (at its Sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SyncEnd {
    /// The pipeline's Sync has not come yet; then commit (everything was
    /// allowed so far) or not.
    Pending { commit: bool },
    /// The client's Sync (after hoop's COMMIT, if any) is out.
    Sent,
    /// hoop's ROLLBACK after the Sync is out: its ReadyForQuery is the
    /// client's.
    RollingBack,
}

impl SyncEnd {
    /// Whether the client's messages wait.
    pub(super) fn blocks_client(self) -> bool {
        !matches!(self, SyncEnd::Pending { .. })
    }
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

fn internal_query(sql: &str) -> Bytes {
    Query { sql }.encode()
}

/// hoop's own command in the extended protocol: Parse, Bind, Execute, and
/// Close of the portal and the statement (answered in that order).
fn internal_command(sql: &str) -> Vec<Bytes> {
    let mut bind = MessageBuilder::new(b'B');
    bind.cstr(INTERNAL_NAME)
        .cstr(INTERNAL_NAME)
        .i16(0)
        .i16(0)
        .i16(0);
    vec![
        Parse {
            name: INTERNAL_NAME,
            sql,
            param_types: 0,
        }
        .encode(),
        bind.finish(),
        Execute {
            portal: INTERNAL_NAME,
            max_rows: 0,
        }
        .encode(),
        Close {
            target: Target::Portal,
            name: INTERNAL_NAME,
        }
        .encode(),
        Close {
            target: Target::Statement,
            name: INTERNAL_NAME,
        }
        .encode(),
    ]
}

/// The first column of a DataRow, read as a count (text format).
fn first_count(body: &[u8]) -> Option<u64> {
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(body.get(6..6 + len)?)
        .ok()?
        .parse()
        .ok()
}

fn error_frame(body: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(body.len() + 5);
    frame.extend_from_slice(b"E");
    frame.extend_from_slice(
        &u32::try_from(body.len() + 4)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(body);
    frame.freeze()
}

impl DryRun {
    fn new(sql: &str, form: Form, approved: Option<u64>) -> Self {
        Self {
            sql: sql.to_owned(),
            form,
            approved,
            stage: Stage::Opening,
            client_block: false,
            captured: Vec::new(),
            captured_len: 0,
            overflow: false,
            rows: None,
            touched_before: None,
            touched_after: None,
            uncounted: false,
            failed: false,
            closing_error: None,
            output: Vec::new(),
            done: false,
        }
    }

    fn extended(&self) -> bool {
        matches!(self.form, Form::Extended { .. })
    }
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
        self.dry_run = Some(DryRun::new(q.sql, Form::Simple, approved));
        self.state.internal_query();
        self.state.client_query(q.sql);
        ClientAction::ReplaceAndPause(vec![
            internal_query(&format!("BEGIN; SAVEPOINT {SAVEPOINT}; {TOUCHED}")),
            q.encode(),
        ])
    }

    /// A Parse whose statement a rule with `max_rows` matches. A denial's
    /// limit is checked by a dry run at each execution; a hold cannot be
    /// (an execution cannot run again later), so it holds the Parse now,
    /// without a count.
    pub(super) fn guarded_prepare(&mut self, p: &Parse<'_>, hold: bool) -> ClientAction {
        if !hold {
            self.guards.insert(p.name.to_owned(), p.sql.to_owned());
            self.state.client_parse(p);
            return ClientAction::Forward;
        }
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
            Verdict::Deny(d) => self.refuse(refusal::error(&Refusal::denied(&d)).encode(), true),
            Verdict::Hold(h) => {
                self.start_hold(h, p.sql, Submission::Prepared);
                ClientAction::Hold
            }
        }
    }

    /// Whether a guarded Execute must wait before its dry run starts: the
    /// server still owes replies to earlier messages of the pipeline (one of
    /// them may fail, after which the server would skip hoop's `BEGIN`
    /// unanswered). hoop flushes them out first.
    pub(super) fn dry_run_must_wait(&self) -> bool {
        !self.state.is_idle() && !self.segment_failed
    }

    /// An Execute of a guarded statement: refused when its rows cannot be
    /// counted (a portal read in chunks), otherwise run as a dry run.
    /// `describe`: hoop asks for the portal's columns first (for masking).
    pub(super) fn guarded_execute(
        &mut self,
        e: &Execute<'_>,
        statement: String,
        sql: &str,
        describe: Option<Bytes>,
    ) -> ClientAction {
        if e.max_rows != 0 {
            let ctx = client_statement(
                &self.identity,
                self.state.transaction(),
                sql,
                Submission::Prepared,
                Some(&statement),
            );
            let refusal = match self.governor.judge_counted(&ctx, None) {
                Verdict::Allow => None,
                Verdict::Deny(d) => Some(Refusal::denied(&d)),
                Verdict::Hold(h) => Some(hold_at_execute(&h)),
            };
            if let Some(mut r) = refusal {
                r.hint = Some(
                    "hoop counts a statement's rows by running it to completion; fetch its rows without a row limit"
                        .to_owned(),
                );
                return self.refuse(refusal::error(&r).encode(), true);
            }
            self.state.client_execute(e.portal);
            return match describe {
                Some(d) => ClientAction::InjectBefore(d),
                None => ClientAction::Forward,
            };
        }
        info!(session = %self.identity, "prepared statement runs as a max_rows dry run");
        let mut messages: Vec<Bytes> = describe.into_iter().collect();
        for sql in [
            "BEGIN".to_owned(),
            format!("SAVEPOINT {SAVEPOINT}"),
            TOUCHED.to_owned(),
        ] {
            messages.extend(internal_command(&sql));
            self.state.internal_command();
        }
        self.state.client_execute(e.portal);
        messages.push(e.encode());
        messages.push(flush());
        self.dry_run = Some(DryRun::new(sql, Form::Extended { statement }, None));
        ClientAction::ReplaceAndPause(messages)
    }

    /// The client's Sync while hoop's block is open: end it with the
    /// pipeline — hoop's COMMIT before the Sync when everything was allowed.
    pub(super) fn sync_for_dry_run(&mut self) -> Option<ClientAction> {
        let Some(SyncEnd::Pending { commit }) = self.sync_end else {
            return None;
        };
        self.sync_end = Some(SyncEnd::Sent);
        let mut messages = Vec::new();
        if commit {
            messages.extend(internal_command("COMMIT"));
            self.state.internal_command();
        }
        messages.push(sync());
        self.state.client_sync();
        Some(ClientAction::ReplaceAndPause(messages))
    }

    /// hoop's block ends with the pipeline: `commit` unless something in it
    /// already failed.
    fn end_at_sync(&mut self, commit: bool) {
        self.sync_end = Some(match self.sync_end {
            Some(SyncEnd::Pending { commit: before }) => SyncEnd::Pending {
                commit: before && commit,
            },
            _ => SyncEnd::Pending { commit },
        });
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
        let last = match d.form {
            Form::Simple => frame.first() == Some(&b'Z'),
            Form::Extended { .. } => matches!(frame.first(), Some(b'C' | b'E' | b'I' | b's')),
        };
        if d.overflow {
            // Only the outcome matters now.
            if last {
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

    /// After a captured frame: the statement's last reply decides.
    pub(super) fn dry_run_step(&mut self) {
        let finished = self.dry_run.as_ref().is_some_and(|d| {
            let last = d.captured.last().and_then(|f| f.first());
            match d.form {
                Form::Simple => last == Some(&b'Z'),
                Form::Extended { .. } => matches!(last, Some(b'C' | b'E' | b'I' | b's')),
            }
        });
        if finished {
            self.decide_dry_run();
        }
    }

    /// The statement is done: count what it wrote (when hoop could read the
    /// counters before it), then judge.
    fn decide_dry_run(&mut self) {
        let Some(d) = self.dry_run.as_mut() else {
            return;
        };
        if !d.failed && !d.overflow && d.touched_before.is_some() && d.stage == Stage::Capturing {
            d.stage = Stage::Counting;
            if d.extended() {
                for m in internal_command(TOUCHED) {
                    self.io.to_server.push(m);
                }
                self.state.internal_command();
                self.io.to_server.push(flush());
            } else {
                self.state.internal_query();
                self.io.to_server.push(internal_query(TOUCHED));
            }
            return;
        }
        self.judge_dry_run();
    }

    /// The statement's count is known: judge it and start closing.
    fn judge_dry_run(&mut self) {
        let Some(d) = self.dry_run.as_mut() else {
            return;
        };
        if d.failed {
            if d.client_block {
                // It failed as it would have: the client's block is failed,
                // and the replies say so.
                d.output = std::mem::take(&mut d.captured);
                d.done = true;
            } else if d.extended() {
                d.output = std::mem::take(&mut d.captured);
                d.done = true;
                self.end_at_sync(false);
            } else {
                d.stage = Stage::Closing(Outcome::Failed);
                self.close_dry_run(false);
            }
            return;
        }
        // The rows its cascades and triggers wrote count too.
        let cascaded = match (d.touched_before, d.touched_after) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let rows = match (d.rows, cascaded) {
            (Some(own), Some(all)) => Some(own.max(all)),
            (own, _) => own,
        };
        // The count a hold shows its approver, and an approved re-run is
        // held to, is this one too.
        d.rows = rows;
        let (approved, overflow) = (d.approved, d.overflow);
        let sql = d.sql.clone();
        let (submission, name) = match &d.form {
            Form::Simple => (Submission::Text, None),
            Form::Extended { statement } => (Submission::Prepared, Some(statement.clone())),
        };
        let verdict = if d.uncounted {
            Verdict::Deny(Denial::new(
                "max_rows",
                "hoop could not read the transaction's row counters to count the rows the statement and its cascades touched; the statement was rolled back",
            ))
        } else if overflow {
            Verdict::Deny(Denial::new(
                "max_rows",
                format!(
                    "hoop holds a max_rows dry run's results back until they are judged, and these exceed {} MiB; the statement was rolled back",
                    MAX_CAPTURE / (1024 * 1024)
                ),
            ))
        } else if let Some(limit) = approved {
            match rows {
                Some(n) if n <= limit => Verdict::Allow,
                _ => Verdict::Deny(Denial::new(
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
                submission,
                name.as_deref(),
            );
            self.governor.judge_counted(&ctx, rows)
        };
        info!(session = %self.identity, rows = ?rows, verdict = verdict_word(&verdict), "max_rows dry run judged");
        let extended = submission == Submission::Prepared;
        let outcome = match verdict {
            Verdict::Allow => Outcome::Keep,
            Verdict::Deny(denial) => {
                Outcome::Refuse(refusal::error(&Refusal::denied(&denial)).encode())
            }
            Verdict::Hold(requirement) if extended => {
                Outcome::Refuse(refusal::error(&hold_at_execute(&requirement)).encode())
            }
            Verdict::Hold(requirement) => Outcome::Hold(requirement),
        };
        if extended {
            self.settle_extended(outcome);
            return;
        }
        let keep = outcome == Outcome::Keep;
        if let Some(d) = self.dry_run.as_mut() {
            d.stage = Stage::Closing(outcome);
        }
        self.close_dry_run(keep);
    }

    /// The extended protocol's decision: answer the Execute now, and let
    /// hoop's block end at the client's Sync.
    fn settle_extended(&mut self, outcome: Outcome) {
        let Some(d) = self.dry_run.as_mut() else {
            return;
        };
        match outcome {
            Outcome::Keep if d.client_block => {
                // Inside a block (the client's, or one hoop opened earlier
                // in this pipeline): release the savepoint.
                d.stage = Stage::Closing(Outcome::Keep);
                self.state.internal_command();
                for m in internal_command(&format!("RELEASE SAVEPOINT {SAVEPOINT}")) {
                    self.io.to_server.push(m);
                }
                self.io.to_server.push(flush());
            }
            Outcome::Keep => {
                d.output = std::mem::take(&mut d.captured);
                d.done = true;
                self.end_at_sync(true);
            }
            Outcome::Refuse(error) => {
                d.captured.clear();
                d.done = true;
                if !d.client_block || self.sync_end.is_some() {
                    self.end_at_sync(false);
                }
                // The probe's error (the refusal) answers the Execute and
                // fails the pipeline, as an error would.
                if let ClientAction::Replace(messages) = self.refuse(error, true) {
                    for m in messages.into_iter().flatten() {
                        self.io.to_server.push(m);
                    }
                }
            }
            Outcome::Failed | Outcome::Hold(_) => {}
        }
    }

    /// Sends the simple-protocol command that ends the dry run.
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
        self.io.to_server.push(internal_query(&sql));
    }

    /// A reply to one of hoop's own messages.
    #[inline(never)]
    pub(super) fn internal_frame(
        &mut self,
        tag: u8,
        body: &[u8],
    ) -> Result<hoop_proto_pg::session::ServerAction, SessionError> {
        let mut action = self.state.server_message(tag, body).map_err(|e| match e {
            hoop_proto_pg::session::SessionError::Message(m) => SessionError::ServerMessage(m),
            e @ hoop_proto_pg::session::SessionError::UnexpectedReply { .. } => {
                SessionError::ServerState(e)
            }
        })?;
        let internal_next = self.state.internal_reply_next();
        match (tag, self.sync_end) {
            // hoop's COMMIT before the client's Sync failed: the client's
            // pipeline failed to commit, and is told so.
            (b'E', Some(SyncEnd::Sent)) => {
                return Ok(hoop_proto_pg::session::ServerAction::Replace(error_frame(
                    body,
                )));
            }
            (b'Z', Some(SyncEnd::RollingBack)) => {
                self.sync_end = None;
                self.resume_client = true;
                let ready = ReadyForQuery::parse(body).map_err(SessionError::ServerMessage)?;
                return Ok(hoop_proto_pg::session::ServerAction::Replace(
                    ready.encode(),
                ));
            }
            _ => {}
        }
        let Some(d) = self.dry_run.as_mut() else {
            return Ok(action);
        };
        match (tag, &d.stage) {
            (b'D', Stage::Opening) => d.touched_before = first_count(body),
            (b'D', Stage::Counting) => d.touched_after = first_count(body),
            (b'E', Stage::Counting) => d.uncounted = true,
            (b'N', Stage::Opening) => {
                let fields = NoticeFields::parse(body).map_err(SessionError::ServerMessage)?;
                if fields.code() == Some(ALREADY_IN_TRANSACTION) {
                    d.client_block = true;
                }
            }
            (b'E', Stage::Opening) if d.extended() => {
                // The client's block had failed: its Execute would have
                // failed the same way, and the server now skips to Sync.
                action = hoop_proto_pg::session::ServerAction::Replace(error_frame(body));
                d.done = true;
            }
            (b'E', Stage::Opening) => {
                // The client's block had failed: the statement fails too;
                // its replies tell the client so.
                d.client_block = true;
            }
            (b'E', Stage::Closing(_)) => d.closing_error = Some(error_frame(body)),
            (b'Z', Stage::Closing(_)) => {
                let status = ReadyForQuery::parse(body)
                    .map_err(SessionError::ServerMessage)?
                    .status;
                self.finish_simple(status);
                return Ok(action);
            }
            _ => {}
        }
        if tag == b'Z' && d.stage == Stage::Counting && !d.extended() {
            self.judge_dry_run();
            return Ok(action);
        }
        if !internal_next {
            match &d.stage {
                Stage::Opening => d.stage = Stage::Capturing,
                Stage::Counting => {
                    // Extended: the count's last reply (its Close) is in.
                    self.judge_dry_run();
                    return Ok(action);
                }
                Stage::Closing(Outcome::Keep) if d.extended() => {
                    // The savepoint is released: the replies may go.
                    if let Some(error) = d.closing_error.take() {
                        d.output.push(error);
                    } else {
                        d.output = std::mem::take(&mut d.captured);
                    }
                    d.done = true;
                }
                _ => {}
            }
        }
        Ok(action)
    }

    /// The ReadyForQuery of the client's Sync after an extended dry run:
    /// hoop's block must be over; if it is not (something in the pipeline
    /// failed), hoop rolls it back and the client gets that ReadyForQuery.
    #[inline(never)]
    pub(super) fn sync_reply(
        &mut self,
        body: &[u8],
    ) -> Result<Option<hoop_proto_pg::session::ServerAction>, SessionError> {
        if self.sync_end != Some(SyncEnd::Sent) {
            return Ok(None);
        }
        let status = ReadyForQuery::parse(body)
            .map_err(SessionError::ServerMessage)?
            .status;
        self.state.server_message(b'Z', body).map_err(|e| match e {
            hoop_proto_pg::session::SessionError::Message(m) => SessionError::ServerMessage(m),
            e @ hoop_proto_pg::session::SessionError::UnexpectedReply { .. } => {
                SessionError::ServerState(e)
            }
        })?;
        if status == TransactionStatus::Idle {
            self.sync_end = None;
            self.resume_client = true;
            return Ok(Some(hoop_proto_pg::session::ServerAction::Forward));
        }
        self.sync_end = Some(SyncEnd::RollingBack);
        self.state.internal_query();
        self.io.to_server.push(internal_query("ROLLBACK"));
        Ok(Some(hoop_proto_pg::session::ServerAction::Swallow))
    }

    /// A simple-protocol dry run's closing command is done: what the client
    /// gets now.
    fn finish_simple(&mut self, status: TransactionStatus) {
        let Some(mut d) = self.dry_run.take() else {
            return;
        };
        let Stage::Closing(outcome) = std::mem::replace(&mut d.stage, Stage::Opening) else {
            self.dry_run = Some(d);
            return;
        };
        let ready = ReadyForQuery { status }.encode();
        // The statement's replies, up to (not including) its ReadyForQuery.
        let mut replies = std::mem::take(&mut d.captured);
        replies.pop();
        match outcome {
            Outcome::Keep => {
                if let Some(error) = d.closing_error.take() {
                    // The COMMIT failed: that error is the statement's outcome.
                    d.output.extend([error, ready]);
                } else {
                    d.output.extend(replies);
                    d.output.push(ready);
                }
            }
            Outcome::Failed => {
                d.output.extend(replies);
                d.output.push(ready);
            }
            Outcome::Refuse(error) if !d.client_block => d.output.extend([error, ready]),
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
        d.done = true;
        self.dry_run = Some(d);
    }

    /// What to send the client now; ends a finished dry run and lets the
    /// client go on.
    pub(super) fn take_dry_run_output(&mut self) -> Vec<Bytes> {
        let Some(d) = self.dry_run.as_mut() else {
            return Vec::new();
        };
        let output = std::mem::take(&mut d.output);
        if d.done {
            self.dry_run = None;
            self.resume_client = true;
        }
        output
    }
}

/// A hold over its limit at an execution, which cannot wait for approval.
fn hold_at_execute(requirement: &HoldRequirement) -> Refusal {
    Refusal::denied(&Denial::new(
        requirement.rule.clone(),
        format!(
            "{}; an execution of a prepared statement cannot wait for an approver, so it is refused",
            requirement.message
        ),
    ))
    .with_hint("Send the statement as a simple query to have it held for approval.")
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny(_) => "deny",
        Verdict::Hold(_) => "hold",
    }
}
