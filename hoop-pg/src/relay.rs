//! The relay loop: both legs of an established session, in one task.
//!
//! The I/O half (legs, queues, backpressure, waiting on holds) is
//! [`hoop_relay`]'s; this file is PostgreSQL's half: it decodes every
//! complete frame, forwards untouched runs as slices of the read buffer (no
//! per-message copy), and consults governance only at the few messages that
//! need it.

use std::{
    collections::HashMap,
    future::poll_fn,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use hoop_core::{
    ColumnResolver, DataDirection, Denial, HoldOutcome, HoldRequest, HoldRequirement, NoCatalog,
    Preparation, Refusal, ResultColumn, RowRewrite, RowRewriter, ServerText, ServerTextKind,
    SessionEvent, SessionGovernor, SessionIdentity, StatementContext, Submission, TransactionState,
    Verdict, refusal::HoldNotice,
};
use hoop_proto_pg::{
    Direction, FrameDecoder, Peek,
    auth::strip_channel_binding,
    copy::CopyResponse,
    extended::{Bind, Close, Describe, Execute, Parse, Target, flush, sync},
    function::FunctionCall,
    notice::{ErrorSpec, NoticeFields},
    notification::NotificationResponse,
    query::Query,
    rows::{CommandComplete, RowDescription},
    session::{Owed, Phase, ResultContext, ServerAction, SessionState},
    status::{BackendKeyData, ParameterStatus, TransactionStatus},
    wire::MessageBuilder,
};
use hoop_relay::{
    Stream,
    hold::ActiveHold,
    io::{Duplex, DuplexError},
};
use tracing::{debug, info};

mod dry_run;
mod objects;

use super::cancel::{CancelRegistration, CancelSignals};
use super::{PgProxyContext, SessionError};
use crate::{
    columns::{DataRowEncoder, RowIndex, result_columns},
    copy::{CopyMaskError, CopyOutMasker, CopyStatement},
    refusal,
};

/// Client bytes buffered (unprocessed) while a statement is held.
const HELD_BACKLOG: usize = 1024 * 1024;
/// A portal name no client uses: executing it makes the server fail the
/// current transaction in place of a refused statement. The server logs
/// `portal "…" does not exist` for it, so the name says what happened.
const REFUSAL_PORTAL: &str = "hoop: statement refused by policy";
/// ErrorResponse/NoticeResponse fields that can quote values: message,
/// detail, hint, context (where) and internal query.
const VALUE_FIELDS: [u8; 5] = [b'M', b'D', b'H', b'W', b'q'];

/// What wakes the loop.
#[derive(Debug, Default)]
struct Wake {
    client: bool,
    server: bool,
    outcome: Option<HoldOutcome>,
    remind: bool,
    withdraw: bool,
}

/// The decision waiting for the statement at the front of the client buffer.
enum Pending {
    /// Approved by a decider: send it without judging again. `rows`: the
    /// approver saw a dry run touch this many rows; the statement runs
    /// again as a dry run and is refused if it now touches more.
    Approved { rows: Option<u64> },
    /// Refused after a hold: answer with this error.
    Refused(Bytes),
}

/// What to do with a client message.
enum ClientAction {
    Forward,
    Swallow,
    /// Drop it and send these upstream instead.
    Replace([Option<Bytes>; 2]),
    /// Drop it and send these upstream instead, then stop: the client is
    /// paused until a dry run is decided.
    ReplaceAndPause(Vec<Bytes>),
    /// Send this upstream, then stop before the message (it is processed
    /// again later).
    WaitAfter(Bytes),
    /// Send this upstream first, then the message.
    InjectBefore(Bytes),
    /// Stop: the message is held.
    Hold,
}

/// What [`Relay::other_server_frame`] decided.
enum Other {
    /// The frame is handled: this is what happens to it.
    Done(ServerAction),
    /// This happens to it unless the session state says otherwise.
    Then(ServerAction),
}

/// Result-set state: the current result's columns and rewriter.
#[derive(Default)]
struct Rows {
    /// The columns of the last result described to governance.
    columns: Vec<ResultColumn>,
    /// `columns` describes the current result.
    columns_current: bool,
    /// The description and result formats `columns` was built from: the
    /// next result described the same way (every execution of a prepared
    /// statement, every run of one query) reuses it.
    described_from: Option<(RowDescription, Vec<i16>)>,
    /// Reused for each result's formats.
    formats: Vec<i16>,
    rewriter: Option<Box<dyn RowRewriter>>,
    resolved: bool,
    /// The current `COPY … TO STDOUT`'s masker.
    copy: Option<CopyOutMasker>,
    /// Reused to index each DataRow's values.
    index: RowIndex,
    /// Rewritten DataRows (and the small frames forwarded among them) not
    /// yet queued for the client; see [`Relay::process_server_buf`].
    out: BytesMut,
    /// Set by [`Relay::rewrite_row`]: the row it rewrote starts at this
    /// offset of `out` (the frame itself is not forwarded).
    appended: Option<usize>,
}

/// Rewritten rows are written into buffers of this size (or one row's).
const ROWS_CHUNK: usize = 64 * 1024;
/// A forwarded frame among rewritten rows is copied into their buffer up to
/// this size (a DataRow masking left unchanged); a larger one is sent from
/// the read buffer as is.
const COPY_AMONG_ROWS: usize = 4096;

impl Rows {
    /// Called for most server messages: the rewriter and masker are
    /// dropped only when there is one (the drop glue is not inlined).
    #[inline]
    fn reset(&mut self) {
        self.columns_current = false;
        if self.rewriter.is_some() {
            self.rewriter = None;
        }
        self.resolved = false;
        if self.copy.is_some() {
            self.copy = None;
        }
    }
}

/// The session's latency meter (label lookups done once).
struct Meters {
    latency: prometheus::Histogram,
    /// When the current client batch's first statement was judged (the
    /// clock is read only for batches that carry a statement). The spans
    /// are read from the TSC through `quanta` where it is invariant (see
    /// docs/protocol.md), and there are four readings per statement.
    batch_started: Option<quanta::Instant>,
    /// Client-side processing time of the last batch with a statement.
    pending_latency: Option<std::time::Duration>,
}

impl Meters {
    fn new() -> Self {
        Self {
            latency: hoop_core::metrics::metrics()
                .statement_proxy_latency_seconds
                .clone(),
            batch_started: None,
            pending_latency: None,
        }
    }
}

pub(super) struct Relay {
    ctx: Arc<PgProxyContext>,
    identity: SessionIdentity,
    upstream: SocketAddr,
    /// Both legs.
    io: Duplex,
    client_decoder: FrameDecoder,
    server_decoder: FrameDecoder,
    state: SessionState,
    governor: Box<dyn SessionGovernor>,
    inspect: bool,
    /// The governor wants `Bound`, `CommandComplete` and `CopyData` events.
    observe_executions: bool,
    /// Whether governance wants `Judged` and `Sent` (asked once).
    observe_statements: bool,
    /// The session state keeps no SQL (nothing reads it): named objects
    /// are not followed either.
    forgets_sql: bool,
    rows: Rows,
    /// Latency, for the process metrics.
    meters: Meters,
    /// Governance work to await before the frame at the head of the server
    /// buffer is processed again.
    preparation: Option<Preparation>,
    /// The head frame's preparation is done.
    prepared_frame: bool,
    discard_until_sync: bool,
    pending: Option<Pending>,
    hold: Option<ActiveHold>,
    signals: CancelSignals,
    registration: Option<CancelRegistration>,
    terminated: bool,
    started: bool,
    /// The `max_rows` dry run in progress (the client is paused meanwhile).
    dry_run: Option<dry_run::DryRun>,
    /// The frame being processed belongs to the dry run's statement: it is
    /// held back, not sent.
    capture_frame: bool,
    /// A dry run ended: process what the client sent meanwhile.
    resume_client: bool,
    /// The hold in progress came from a dry run that touched this many rows.
    hold_rows: Option<u64>,
    /// Prepared statements a rule with `max_rows` matches (name → SQL): each
    /// execution runs as a dry run.
    guards: HashMap<String, String>,
    /// A transaction block hoop opened for dry runs in the current pipeline.
    sync_end: Option<dry_run::SyncEnd>,
    /// An error has come for the current pipeline: the server skips to Sync.
    segment_failed: bool,
    /// A guarded Execute waits until the server has answered everything
    /// before it.
    waiting_quiet: bool,
    /// The session's `client_encoding`, from the server's ParameterStatus,
    /// when it is one hoop cannot lex non-ASCII text in (see
    /// [`unsafe_client_encoding`]).
    unsafe_encoding: Option<&'static str>,
}

/// Client encodings in which the byte 0x5C (a backslash in ASCII) can be
/// the second byte of a multi-byte character, as PostgreSQL names them in
/// ParameterStatus. hoop lexes SQL as UTF-8: in these, a string can end
/// elsewhere for the server than for hoop (`E'…\'` where the backslash is
/// half of a character), so statements with any non-ASCII byte are refused.
/// ASCII text reads the same in all of them.
const UNSAFE_CLIENT_ENCODINGS: &[&str] = &[
    "BIG5",
    "GB18030",
    "GBK",
    "JOHAB",
    "SHIFT_JIS_2004",
    "SJIS",
    "UHC",
];

/// The encoding's canonical name when hoop cannot lex non-ASCII text in it.
fn unsafe_client_encoding(name: &str) -> Option<&'static str> {
    UNSAFE_CLIENT_ENCODINGS
        .iter()
        .find(|e| e.eq_ignore_ascii_case(name))
        .copied()
}

/// The refusal of a non-ASCII statement under such an encoding.
fn unsafe_encoding_error(encoding: &str) -> hoop_proto_pg::notice::ErrorSpec {
    hoop_proto_pg::notice::ErrorSpec {
        hint: Some(
            "Use client_encoding UTF8 (for example PGCLIENTENCODING=UTF8), or keep the statement's text ASCII."
                .to_owned(),
        ),
        detail: Some(format!(
            "In {encoding}, the byte 0x5C can be the second byte of a character, so hoop could not tell where the server ends a string or a statement."
        )),
        ..hoop_proto_pg::notice::ErrorSpec::error(
            "0A000",
            format!("hoop refuses statements with non-ASCII text in client_encoding {encoding}"),
        )
    }
}

fn client_msg(e: hoop_proto_pg::MessageError) -> SessionError {
    SessionError::ClientMessage(e)
}

fn server_msg(e: hoop_proto_pg::MessageError) -> SessionError {
    SessionError::ServerMessage(e)
}

fn duplex(e: DuplexError) -> SessionError {
    match e {
        DuplexError::Client(e) => SessionError::ClientIo(e),
        DuplexError::Server(e) => SessionError::ServerIo(e),
    }
}

/// The time since `started` on the latency clock. Saturating, stated here
/// rather than left to `elapsed`: a TSC read on another CPU that is behind
/// gives a zero span, never a panic (quanta says a later version may panic
/// in `elapsed`).
fn span_since(started: quanta::Instant) -> Duration {
    quanta::Instant::now().saturating_duration_since(started)
}

/// The transaction state governance sees, from ReadyForQuery's status.
fn transaction_state(status: TransactionStatus) -> TransactionState {
    match status {
        TransactionStatus::Idle => TransactionState::Idle,
        TransactionStatus::InTransaction => TransactionState::Active,
        TransactionStatus::Failed => TransactionState::Failed,
    }
}

impl Relay {
    /// A relay over both legs, each with the bytes already read from it.
    /// `startup` is the client's StartupMessage to forward first, or `None`
    /// when hoop logged in with an injected credential (then `server`'s
    /// bytes start at the server's AuthenticationOk).
    pub(super) fn new(
        ctx: Arc<PgProxyContext>,
        identity: SessionIdentity,
        upstream: SocketAddr,
        (client, client_buf): (Stream, BytesMut),
        (server, server_buf): (Stream, BytesMut),
        startup: Option<Bytes>,
    ) -> Self {
        let columns: Arc<dyn ColumnResolver> = match &ctx.catalog {
            Some(catalog) => Arc::new(crate::catalog::SessionCatalog::new(catalog.clone())),
            None => Arc::new(NoCatalog),
        };
        let governor = ctx.governors.session(&identity, columns);
        let inspect = governor.inspects_rows();
        let observe_executions = governor.observes_executions();
        let observe_statements = governor.observes_statements();
        let mut state = SessionState::new(inspect);
        // Nothing reads the SQL of a result or a prepared statement.
        let forgets_sql = !inspect && !observe_executions;
        if forgets_sql {
            state = state.without_sql();
        }
        state.set_phase(Phase::Authenticating);
        let mut io = Duplex::new(client, server, client_buf);
        io.coalesce_bulk_reads(ctx.coalesce_bulk_reads);
        if !server_buf.is_empty() {
            io.server_buf = server_buf;
        }
        if let Some(startup) = startup {
            io.to_server.push(startup);
        }
        Self {
            client_decoder: FrameDecoder::new(Direction::Frontend, ctx.max_message_size),
            server_decoder: FrameDecoder::new(Direction::Backend, ctx.max_message_size),
            ctx,
            identity,
            upstream,
            io,
            state,
            governor,
            inspect,
            observe_executions,
            observe_statements,
            forgets_sql,
            rows: Rows::default(),
            preparation: None,
            prepared_frame: false,
            meters: Meters::new(),
            discard_until_sync: false,
            pending: None,
            hold: None,
            signals: CancelSignals::new(),
            registration: None,
            terminated: false,
            started: false,
            dry_run: None,
            capture_frame: false,
            resume_client: false,
            hold_rows: None,
            guards: HashMap::new(),
            sync_end: None,
            segment_failed: false,
            waiting_quiet: false,
            unsafe_encoding: None,
        }
    }

    /// Whether client messages wait (a hold, or a dry run being decided).
    fn client_paused(&self) -> bool {
        self.hold.is_some()
            || self.dry_run.is_some()
            || self.waiting_quiet
            || self.sync_end.is_some_and(dry_run::SyncEnd::blocks_client)
    }

    pub(super) async fn run(mut self) -> Result<(), SessionError> {
        let result = self.pump().await;
        if let Err(e) = &result
            && let Some(spec) = e.client_error()
        {
            self.io.to_client.push(spec.encode());
        }
        self.state.set_phase(Phase::Closed);
        self.io.finish().await;
        let reason = match &result {
            Ok(()) if self.terminated => "client terminated".to_owned(),
            Ok(()) if self.io.client_eof => "client closed".to_owned(),
            Ok(()) => "server closed".to_owned(),
            Err(e) => e.to_string(),
        };
        self.governor
            .observe(SessionEvent::Ended { reason: &reason });
        result
    }

    async fn pump(&mut self) -> Result<(), SessionError> {
        if !self.io.server_buf.is_empty() {
            // After an injected login: the server's AuthenticationOk and
            // what followed it, read already.
            self.process_server()?;
        }
        self.process_client()?;
        loop {
            let wake = poll_fn(|cx| self.poll_io(cx)).await?;
            if wake.server {
                self.process_server()?;
                while let Some(preparation) = self.preparation.take() {
                    preparation.await;
                    self.process_server()?;
                }
            }
            if let Some(refusal) = self.governor.fatal() {
                return Err(SessionError::Governance(refusal));
            }
            let resume = std::mem::take(&mut self.resume_client);
            if (wake.client || resume) && !self.client_paused() {
                self.process_client()?;
            }
            if wake.withdraw {
                self.end_hold(&HoldOutcome::Withdrawn, true)?;
            } else if let Some(outcome) = wake.outcome {
                self.end_hold(&outcome, false)?;
            }
            if wake.remind {
                self.remind();
            }
            if self.io.server_eof || self.terminated {
                return Ok(());
            }
            if self.io.client_eof {
                if let Some(hold) = &mut self.hold {
                    info!(session = %self.identity, hold = hold.ticket.id(), "client left while held; hold withdrawn");
                    hold.ticket.withdraw();
                }
                return Ok(());
            }
        }
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<Wake, SessionError>> {
        let client_limit = if self.client_paused() {
            HELD_BACKLOG
        } else {
            usize::MAX
        };
        let ready = self.io.poll_legs(client_limit).map_err(duplex)?;
        let mut wake = Wake {
            client: ready.client,
            server: ready.server,
            ..Wake::default()
        };
        if let Some(hold) = &mut self.hold {
            let h = hold.poll(cx);
            wake.outcome = h.outcome;
            wake.remind = h.remind;
            if let Poll::Ready(Some(())) = self.signals.withdraw.poll_recv(cx) {
                wake.withdraw = true;
            }
        }
        if wake.client || wake.server || wake.outcome.is_some() || wake.remind || wake.withdraw {
            Poll::Ready(Ok(wake))
        } else {
            self.io.park(cx);
            Poll::Pending
        }
    }

    // ---- client → server ----

    fn process_client(&mut self) -> Result<(), SessionError> {
        let mut buf = std::mem::take(&mut self.io.client_buf);
        let result = self.process_client_buf(&mut buf);
        if let Some(started) = self.meters.batch_started.take() {
            // Statement(s) in this batch: their latency is completed by the
            // processing of the first server batch that answers them. The
            // span ends before the batch is written, as it would if it
            // were only queued.
            self.meters.pending_latency = Some(span_since(started));
        }
        let result =
            result.and_then(|run| self.io.forward_to_server(&mut buf, run).map_err(duplex));
        self.io.client_buf = buf;
        result
    }

    /// Judges the complete messages at the front of `buf`, queueing what
    /// replaces or precedes them: the length of the run of messages at its
    /// front that are still to be forwarded as they are.
    fn process_client_buf(&mut self, buf: &mut BytesMut) -> Result<usize, SessionError> {
        let mut run = 0;
        while !self.client_paused() && !self.terminated {
            let (tag, len) = match self.client_decoder.peek(&buf[run..])? {
                Peek::Complete { tag, len } => (tag, len),
                Peek::Incomplete { len } => {
                    if let Some(len) = len {
                        buf.reserve((run + len).saturating_sub(buf.len()));
                    }
                    break;
                }
            };
            let action = self.client_frame(tag, &buf[run + 5..run + len])?;
            if let ClientAction::Forward = action {
                run += len;
                continue;
            }
            if self.queue_changed_message(buf, &mut run, len, action) {
                break;
            }
        }
        Ok(run)
    }

    /// A client message that is not forwarded as it is: what is before it
    /// in `buf` is queued, then what replaces it. `true`: stop processing
    /// the client's messages for now. Out of line, as
    /// [`Relay::queue_changed_frame`].
    #[inline(never)]
    fn queue_changed_message(
        &mut self,
        buf: &mut BytesMut,
        run: &mut usize,
        len: usize,
        action: ClientAction,
    ) -> bool {
        if *run > 0 {
            self.io.to_server.push(buf.split_to(*run).freeze());
            *run = 0;
        }
        match action {
            ClientAction::Forward => {}
            ClientAction::Swallow => buf.advance(len),
            ClientAction::Replace(msgs) => {
                buf.advance(len);
                for m in msgs.into_iter().flatten() {
                    self.io.to_server.push(m);
                }
            }
            ClientAction::ReplaceAndPause(msgs) => {
                buf.advance(len);
                for m in msgs {
                    self.io.to_server.push(m);
                }
            }
            ClientAction::WaitAfter(m) => {
                self.io.to_server.push(m);
                return true;
            }
            ClientAction::InjectBefore(m) => {
                self.io.to_server.push(m);
                *run = len;
            }
            ClientAction::Hold => return true,
        }
        false
    }

    fn client_frame(&mut self, tag: u8, body: &[u8]) -> Result<ClientAction, SessionError> {
        if self.discard_until_sync {
            // After a refused extended-protocol message, as after a server
            // error: ignore everything up to Sync.
            if tag == b'S' {
                self.discard_until_sync = false;
                if let Some(action) = self.sync_for_dry_run() {
                    return Ok(action);
                }
                self.state.client_sync();
                return Ok(ClientAction::Forward);
            }
            return Ok(ClientAction::Swallow);
        }
        if self.state.phase() == Phase::Authenticating {
            return Ok(ClientAction::Forward);
        }
        match tag {
            b'Q' => {
                let q = Query::parse(body).map_err(client_msg)?;
                match self.decide(q.sql, Submission::Text, None) {
                    Decision::Allow => {
                        self.state.client_query(q.sql);
                        Ok(ClientAction::Forward)
                    }
                    Decision::Refuse(err) => Ok(self.refuse(err, false)),
                    Decision::Hold => Ok(ClientAction::Hold),
                    Decision::Fatal(refusal) => Err(SessionError::Governance(refusal)),
                    Decision::DryRun { approved, .. } => Ok(self.start_dry_run(q, approved)),
                }
            }
            b'P' => {
                let p = Parse::parse(body).map_err(client_msg)?;
                match self.decide(p.sql, Submission::Prepared, Some(p.name)) {
                    Decision::Allow => {
                        self.guards.remove(p.name);
                        self.state.client_parse(&p);
                        Ok(ClientAction::Forward)
                    }
                    Decision::Refuse(err) => Ok(self.refuse(err, true)),
                    Decision::Hold => Ok(ClientAction::Hold),
                    Decision::Fatal(refusal) => Err(SessionError::Governance(refusal)),
                    Decision::DryRun { hold, .. } => Ok(self.guarded_prepare(&p, hold)),
                }
            }
            b'B' => {
                let b = Bind::parse(body).map_err(client_msg)?;
                if self.observe_executions
                    && let Some(sql) = self.state.statement_sql(b.statement)
                {
                    let ctx = StatementContext {
                        identity: &self.identity,
                        sql: &sql,
                        submission: Submission::Prepared,
                        statement_name: Some(b.statement),
                        portal: Some(b.portal),
                        statement_index: 0,
                        transaction: transaction_state(self.state.transaction()),
                    };
                    self.governor
                        .observe(SessionEvent::Bound { statement: &ctx });
                }
                self.state.client_bind(&b);
                Ok(ClientAction::Forward)
            }
            b'D' => {
                let d = Describe::parse(body).map_err(client_msg)?;
                self.state.client_describe(&d);
                Ok(ClientAction::Forward)
            }
            b'E' => {
                let e = Execute::parse(body).map_err(client_msg)?;
                let guard = if self.guards.is_empty() || self.segment_failed {
                    // A failed pipeline's Execute is skipped by the server.
                    None
                } else {
                    self.state.portal_statement(e.portal).and_then(|statement| {
                        self.guards
                            .get(&*statement)
                            .cloned()
                            .map(|sql| (statement, sql))
                    })
                };
                if guard.is_some() && self.dry_run_must_wait() {
                    self.waiting_quiet = true;
                    return Ok(ClientAction::WaitAfter(flush()));
                }
                let describe = self.inspect && !self.state.portal_description_expected(e.portal);
                if describe {
                    // Masking needs the columns; the client did not ask.
                    self.state.injected_describe_portal(e.portal);
                }
                if let Some((statement, sql)) = guard {
                    let describe = describe.then(|| {
                        Describe {
                            target: Target::Portal,
                            name: e.portal,
                        }
                        .encode()
                    });
                    return Ok(self.guarded_execute(&e, statement.to_string(), &sql, describe));
                }
                self.state.client_execute(e.portal);
                Ok(if describe {
                    ClientAction::InjectBefore(
                        Describe {
                            target: Target::Portal,
                            name: e.portal,
                        }
                        .encode(),
                    )
                } else {
                    ClientAction::Forward
                })
            }
            b'C' => {
                let c = Close::parse(body).map_err(client_msg)?;
                if c.target == Target::Statement {
                    self.guards.remove(c.name);
                }
                self.state.client_close(&c);
                Ok(ClientAction::Forward)
            }
            b'S' => {
                // Checked here: the call returns a large value even when
                // there is no block to end, and Sync is on every round trip.
                if self.sync_end.is_some()
                    && let Some(action) = self.sync_for_dry_run()
                {
                    return Ok(action);
                }
                self.state.client_sync();
                Ok(ClientAction::Forward)
            }
            b'F' => {
                let f = FunctionCall::parse(body).map_err(client_msg)?;
                let sql = format!("function {}", f.function_oid);
                match self.decide(&sql, Submission::FunctionCall, None) {
                    Decision::Allow => {
                        self.state.client_function_call();
                        Ok(ClientAction::Forward)
                    }
                    // A fast-path call's rows cannot be counted: judged as
                    // over any limit (the policy does so already).
                    Decision::Refuse(err) => Ok(self.refuse(err, false)),
                    Decision::Hold => Ok(ClientAction::Hold),
                    Decision::Fatal(refusal) => Err(SessionError::Governance(refusal)),
                    Decision::DryRun { .. } => {
                        let ctx = client_statement(
                            &self.identity,
                            self.state.transaction(),
                            &sql,
                            Submission::FunctionCall,
                            None,
                        );
                        Ok(match self.governor.judge_counted(&ctx, None) {
                            Verdict::Allow => {
                                self.state.client_function_call();
                                ClientAction::Forward
                            }
                            Verdict::Deny(d) => {
                                self.refuse(refusal::error(&Refusal::denied(&d)).encode(), false)
                            }
                            Verdict::Hold(h) => {
                                self.start_hold(h, &sql, Submission::FunctionCall);
                                ClientAction::Hold
                            }
                        })
                    }
                }
            }
            b'd' => {
                if self.observe_executions {
                    self.governor.observe(SessionEvent::CopyData {
                        direction: DataDirection::ToServer,
                        bytes: body.len(),
                    });
                }
                Ok(ClientAction::Forward)
            }
            b'X' => {
                self.terminated = true;
                Ok(ClientAction::Forward)
            }
            // Flush, CopyDone, CopyFail, and anything else: the server judges validity.
            _ => Ok(ClientAction::Forward),
        }
    }

    /// Judges a statement (or applies a hold's decision to it).
    fn decide(&mut self, sql: &str, submission: Submission, name: Option<&str>) -> Decision {
        if let Some(refusal) = self.governor.fatal() {
            return Decision::Fatal(refusal);
        }
        if let Some(encoding) = self.unsafe_encoding
            && !sql.is_ascii()
        {
            return Decision::Refuse(unsafe_encoding_error(encoding).encode());
        }
        let ctx = StatementContext {
            identity: &self.identity,
            sql,
            submission,
            statement_name: name,
            portal: None,
            statement_index: 0,
            transaction: transaction_state(self.state.transaction()),
        };
        let verdict = match self.pending.take() {
            Some(Pending::Approved { rows: Some(rows) }) => {
                return Decision::DryRun {
                    approved: Some(rows),
                    hold: false,
                };
            }
            Some(Pending::Approved { rows: None }) => Verdict::Allow,
            Some(Pending::Refused(err)) => return Decision::Refuse(err),
            None => {
                self.meters
                    .batch_started
                    .get_or_insert_with(quanta::Instant::now);
                let verdict = self.governor.judge(&ctx);
                if self.observe_statements {
                    self.governor.observe(SessionEvent::Judged {
                        statement: &ctx,
                        verdict: &verdict,
                    });
                }
                verdict
            }
        };
        match verdict {
            Verdict::Deny(Denial {
                max_rows: Some(_), ..
            }) => Decision::DryRun {
                approved: None,
                hold: false,
            },
            Verdict::Hold(HoldRequirement {
                max_rows: Some(_), ..
            }) => Decision::DryRun {
                approved: None,
                hold: true,
            },
            Verdict::Allow => {
                if self.observe_statements {
                    self.governor
                        .observe(SessionEvent::Sent { statement: &ctx });
                }
                Decision::Allow
            }
            Verdict::Deny(denial) => {
                info!(session = %self.identity, verdict = "deny", rule = %denial.rule, "statement denied");
                Decision::Refuse(refusal::error(&Refusal::denied(&denial)).encode())
            }
            Verdict::Hold(requirement) => {
                self.start_hold(requirement, sql, submission);
                Decision::Hold
            }
        }
    }

    /// Answers a refused statement without sending it: an Execute of a
    /// portal that does not exist makes the server fail exactly as it would
    /// have failed on the statement (aborting an open transaction block, so
    /// a later COMMIT cannot commit half of the client's work), and the
    /// server's error is replaced with the refusal. ReadyForQuery then comes
    /// from the server with the true transaction status.
    fn refuse(&mut self, error: Bytes, extended: bool) -> ClientAction {
        // Closed first, so that the Execute fails even if the client opened
        // a portal or cursor of that name itself (it would run instead, and
        // the transaction would not be aborted). Closing a portal that does
        // not exist is no error.
        self.state.injected_close_portal(REFUSAL_PORTAL);
        self.state.injected_abort(error);
        let close = Close {
            target: Target::Portal,
            name: REFUSAL_PORTAL,
        }
        .encode();
        let execute = Execute {
            portal: REFUSAL_PORTAL,
            max_rows: 1,
        }
        .encode();
        let mut probe = BytesMut::with_capacity(close.len() + execute.len());
        probe.extend_from_slice(&close);
        probe.extend_from_slice(&execute);
        let probe = probe.freeze();
        if extended {
            self.discard_until_sync = true;
            ClientAction::Replace([Some(probe), Some(flush())])
        } else {
            self.state.client_sync();
            ClientAction::Replace([Some(probe), Some(sync())])
        }
    }

    fn start_hold(&mut self, requirement: HoldRequirement, sql: &str, submission: Submission) {
        // Held before the broker publishes the hold: a CancelRequest that
        // follows the publication at once must withdraw it, not be
        // forwarded to a server that is running nothing (and be lost).
        self.signals.set_held(true);
        let request = HoldRequest {
            identity: self.identity.clone(),
            sql: sql.to_owned(),
            submission,
            requirement: requirement.clone(),
        };
        let ticket = self.ctx.holds.hold(request);
        let id = ticket.id().to_owned();
        info!(session = %self.identity, verdict = "hold", hold = %id, rule = %requirement.rule, "statement held");
        self.io
            .to_client
            .push(notice(&HoldNotice::started(&id, &requirement)));
        self.hold = Some(ActiveHold::new(
            ticket,
            requirement,
            self.ctx.hold_reminder_interval,
        ));
        self.state.set_phase(Phase::Held);
    }

    fn remind(&mut self) {
        if let Some(hold) = &self.hold {
            let text = HoldNotice::reminder(hold.ticket.id(), hold.waited());
            self.io.to_client.push(notice(&text));
        }
    }

    fn end_hold(&mut self, outcome: &HoldOutcome, cancelled: bool) -> Result<(), SessionError> {
        let Some(mut hold) = self.hold.take() else {
            return Ok(());
        };
        self.signals.set_held(false);
        self.state.set_phase(if self.state.is_idle() {
            Phase::Ready
        } else {
            Phase::InQuery
        });
        let id = hold.ticket.id().to_owned();
        if *outcome == HoldOutcome::Withdrawn {
            hold.ticket.withdraw();
        }
        self.governor
            .observe(SessionEvent::HoldDecided { id: &id, outcome });
        info!(session = %self.identity, hold = %id, ?outcome, "hold ended");
        self.pending = Some(
            match Refusal::hold_ended(&id, outcome, &hold.requirement, cancelled) {
                None => Pending::Approved {
                    rows: self.hold_rows.take(),
                },
                Some(r) => {
                    self.hold_rows = None;
                    Pending::Refused(refusal::error(&r).encode())
                }
            },
        );
        self.process_client()
    }

    // ---- server → client ----

    fn process_server(&mut self) -> Result<(), SessionError> {
        let started = self
            .meters
            .pending_latency
            .is_some()
            .then(quanta::Instant::now);
        let mut buf = std::mem::take(&mut self.io.server_buf);
        let result = self.process_server_buf(&mut buf);
        if let (Some(request), Some(started)) = (self.meters.pending_latency.take(), started) {
            // Ended before the batch is written, as in `process_client`.
            self.meters
                .latency
                .observe((request + span_since(started)).as_secs_f64());
        }
        let result =
            result.and_then(|run| self.io.forward_to_client(&mut buf, run).map_err(duplex));
        self.io.server_buf = buf;
        result
    }

    /// As [`Relay::process_client_buf`], for the server's messages.
    ///
    /// Rewritten DataRows are written one after another into `rows.out`;
    /// while it holds any, the frames forwarded between them are copied in
    /// too (when small), so a masked result reaches the client's queue as
    /// one chunk per read. Invariant: while `rows.out` holds anything, `run`
    /// is 0 (everything before the current frame is queued or in `rows.out`).
    fn process_server_buf(&mut self, buf: &mut BytesMut) -> Result<usize, SessionError> {
        let mut run = 0;
        let result = self.process_server_frames(buf, &mut run);
        // What is in `rows.out` comes before anything still in `buf`. On an
        // error the rows already rewritten go out, as they did before the
        // error was met (every one of them was judged).
        self.flush_rows();
        result.map(|()| run)
    }

    /// Queues the rewritten rows (and frames copied among them).
    fn flush_rows(&mut self) {
        if !self.rows.out.is_empty() {
            self.io.to_client.push(self.rows.out.split().freeze());
        }
    }

    fn process_server_frames(
        &mut self,
        buf: &mut BytesMut,
        run: &mut usize,
    ) -> Result<(), SessionError> {
        loop {
            let (tag, len) = match self.server_decoder.peek(&buf[*run..])? {
                Peek::Complete { tag, len } => (tag, len),
                Peek::Incomplete { len } => {
                    if let Some(len) = len {
                        buf.reserve((*run + len).saturating_sub(buf.len()));
                    }
                    break;
                }
            };
            let action = self.server_frame(tag, &buf[*run + 5..*run + len])?;
            // `matches!`, not `==`: the derived comparison is a call that
            // also compares a replacement's bytes.
            if matches!(action, ServerAction::Pause) {
                // Resumed at this frame once the preparation is done; it is
                // judged for capture again then.
                self.capture_frame = false;
                break;
            }
            self.prepared_frame = false;
            let captured = std::mem::take(&mut self.capture_frame);
            // The rewritten row `server_frame` appended to `rows.out`.
            let appended = self.rows.appended.take();
            if matches!(action, ServerAction::Forward) && !captured {
                if self.rows.out.is_empty() {
                    *run += len;
                } else if len <= COPY_AMONG_ROWS {
                    // `run` is 0: the frame is at the front of `buf`.
                    self.rows.out.extend_from_slice(&buf[..len]);
                    buf.advance(len);
                } else {
                    self.flush_rows();
                    *run += len;
                }
                continue;
            }
            if appended.is_some() && !captured && self.dry_run.is_none() {
                if *run > 0 {
                    // Only when `rows.out` held nothing but this row.
                    self.io.to_client.push(buf.split_to(*run).freeze());
                    *run = 0;
                }
                buf.advance(len);
                continue;
            }
            self.queue_changed_frame(buf, run, len, action, appended, captured);
        }
        if self.waiting_quiet && (self.state.is_idle() || self.segment_failed) {
            // The guarded Execute may go on now.
            self.waiting_quiet = false;
            self.resume_client = true;
        }
        Ok(())
    }

    /// A frame that is not forwarded as it is (replaced, swallowed, a
    /// rewritten row, or held back by a dry run): what is before it in
    /// `buf` is queued, then what replaces it. Out of line: the loop above
    /// stays small for the frames that are forwarded.
    #[inline(never)]
    fn queue_changed_frame(
        &mut self,
        buf: &mut BytesMut,
        run: &mut usize,
        len: usize,
        action: ServerAction,
        appended: Option<usize>,
        captured: bool,
    ) {
        let row = appended.map(|at| self.rows.out.split_off(at).freeze());
        self.flush_rows();
        if *run > 0 {
            self.io.to_client.push(buf.split_to(*run).freeze());
            *run = 0;
        }
        let frame = buf.split_to(len).freeze();
        let out = match (row, action) {
            (Some(row), _) => Some(row),
            (None, ServerAction::Forward) => Some(frame),
            (None, ServerAction::Replace(b)) => Some(b),
            (None, ServerAction::Swallow | ServerAction::Pause) => None,
        };
        if captured {
            if let Some(out) = out {
                self.capture(out);
            }
            self.dry_run_step();
        } else if let Some(out) = out {
            self.io.to_client.push(out);
        }
        if self.dry_run.is_some() {
            for out in self.take_dry_run_output() {
                self.io.to_client.push(out);
            }
        }
    }

    fn server_frame(&mut self, tag: u8, body: &[u8]) -> Result<ServerAction, SessionError> {
        if self.state.internal_reply_next() {
            return self.internal_frame(tag, body);
        }
        if tag == b'Z'
            && self.sync_end.is_some()
            && let Some(action) = self.sync_reply(body)?
        {
            return Ok(action);
        }
        if self.dry_run.is_some() {
            // Otherwise it is false already: taken after every frame.
            self.capture_frame = self.capturing() && !matches!(tag, b'A' | b'S');
        }
        // The frames of every statement's reply are handled here; the rest
        // (start-up, errors and notices, notifications, COPY) out of line,
        // which keeps this loop's code small.
        let action = match tag {
            b'D' => {
                if self.inspect {
                    return self.rewrite_row(body);
                }
                return Ok(ServerAction::Forward);
            }
            b'C' => {
                let c = CommandComplete::parse(body).map_err(server_msg)?;
                if objects::changes_objects(c.tag) && !self.forgets_sql {
                    self.sql_confirmed(c.tag)?;
                }
                if self.observe_executions {
                    self.governor.observe(SessionEvent::CommandComplete {
                        tag: c.tag,
                        rows: c.rows(),
                    });
                }
                self.rows.reset();
                ServerAction::Forward
            }
            b'Z' => {
                self.segment_failed = false;
                self.rows.reset();
                ServerAction::Forward
            }
            b'I' | b's' | b'T' | b'G' | b'W' => {
                self.rows.reset();
                ServerAction::Forward
            }
            b'1' | b'2' | b'3' | b'n' | b't' => ServerAction::Forward,
            _ => match self.other_server_frame(tag, body)? {
                Other::Done(action) => return Ok(action),
                Other::Then(action) => action,
            },
        };
        let confirmed = if self.forgets_sql {
            None
        } else {
            self.protocol_change(tag)
        };
        let state_action = self.state.server_message(tag, body).map_err(|e| match e {
            hoop_proto_pg::session::SessionError::Message(m) => SessionError::ServerMessage(m),
            e @ hoop_proto_pg::session::SessionError::UnexpectedReply { .. } => {
                SessionError::ServerState(e)
            }
        })?;
        if let Some(change) = confirmed {
            self.protocol_confirmed(&change);
        }
        if tag == b'Z' && !self.started {
            self.session_ready();
        }
        Ok(match state_action {
            ServerAction::Forward => action,
            other => other,
        })
    }

    /// The first ReadyForQuery: the session is established.
    #[inline(never)]
    fn session_ready(&mut self) {
        self.started = true;
        debug!(session = %self.identity, "session ready");
        self.governor.observe(SessionEvent::Started {
            identity: &self.identity,
        });
        if self.inspect {
            // What governance needs before judging the first statement
            // (which views read masked columns, for predicate checks):
            // awaited before any client message is processed.
            self.preparation = self.governor.columns_to_resolve(&[]);
        }
    }

    /// The server messages that are not part of a statement's usual reply
    /// (see [`Relay::server_frame`]).
    #[inline(never)]
    fn other_server_frame(&mut self, tag: u8, body: &[u8]) -> Result<Other, SessionError> {
        if tag == b'E' {
            self.segment_failed = matches!(
                self.state.owed().next(),
                Some(
                    Owed::Parse { .. }
                        | Owed::Bind { .. }
                        | Owed::DescribeStatement { .. }
                        | Owed::DescribePortal { .. }
                        | Owed::Execute { .. }
                        | Owed::Close { .. }
                        | Owed::Abort { .. }
                )
            );
        }
        let mut action = ServerAction::Forward;
        match tag {
            b'd' => {
                if self.observe_executions {
                    self.governor.observe(SessionEvent::CopyData {
                        direction: DataDirection::ToClient,
                        bytes: body.len(),
                    });
                }
                // CopyData from the server is not tracked by the session state.
                return Ok(Other::Done(
                    match self.rows.copy.as_mut().map(|m| m.feed(body)) {
                        None | Some(Ok(None)) => ServerAction::Forward,
                        Some(Ok(Some(data))) if data.is_empty() => ServerAction::Swallow,
                        Some(Ok(Some(data))) => ServerAction::Replace(copy_data(&data)),
                        Some(Err(e)) => return Err(copy_refused(e)),
                    },
                ));
            }
            b'c' => {
                if let Some(masker) = self.rows.copy.as_mut() {
                    match masker.finish() {
                        Ok(Some(rest)) if !rest.is_empty() => {
                            // The last row had no line ending: it goes out
                            // (masked) before CopyDone.
                            let mut both = BytesMut::from(&copy_data(&rest)[..]);
                            both.extend_from_slice(&MessageBuilder::new(b'c').finish());
                            action = ServerAction::Replace(both.freeze());
                        }
                        Ok(_) => {}
                        Err(e) => return Err(copy_refused(e)),
                    }
                }
            }
            b'R' => {
                if self.state.phase() == Phase::Authenticating
                    && let Some(b) = strip_channel_binding(body).map_err(server_msg)?
                {
                    debug!(session = %self.identity, "removed SCRAM-SHA-256-PLUS from the offered mechanisms");
                    action = ServerAction::Replace(b);
                }
            }
            b'K' => {
                let key = BackendKeyData::parse(body).map_err(server_msg)?;
                self.identity.server_session_id = u32::try_from(key.pid).ok();
                self.registration = Some(self.ctx.cancels.register(
                    key.pid,
                    key.secret,
                    self.upstream,
                    &self.signals,
                ));
            }
            b'S' => {
                let p = ParameterStatus::parse(body).map_err(server_msg)?;
                if p.name == "application_name" {
                    self.identity.application_name = Some(p.value.to_owned());
                } else if p.name == "client_encoding" {
                    self.unsafe_encoding = unsafe_client_encoding(p.value);
                }
            }
            b'E' | b'N' => {
                let fields = NoticeFields::parse(body).map_err(server_msg)?;
                let ours =
                    tag == b'E' && matches!(self.state.owed().next(), Some(Owed::Abort { .. }));
                if tag == b'E' {
                    self.rows.reset();
                    if !ours {
                        self.governor.observe(SessionEvent::ServerError {
                            sqlstate: fields.code(),
                            severity: fields.severity(),
                        });
                    }
                }
                if !ours {
                    let kind = if tag == b'E' {
                        ServerTextKind::Error
                    } else {
                        ServerTextKind::Notice
                    };
                    if let Some(b) = self.mask_notice(tag, kind, &fields) {
                        action = ServerAction::Replace(b);
                    }
                }
            }
            b'A' => {
                let n = NotificationResponse::parse(body).map_err(server_msg)?;
                let text = ServerText {
                    kind: ServerTextKind::Notification,
                    fields: &[n.payload],
                    raised_by_code: false,
                    sql: None,
                    statement_index: 0,
                };
                if let Some(Some(payload)) = self
                    .governor
                    .rewrite_server_text(text)
                    .and_then(|mut m| m.pop())
                {
                    let mut masked = n;
                    masked.payload = &payload;
                    action = ServerAction::Replace(masked.encode());
                }
            }
            b'H' => {
                if self.inspect {
                    let response = CopyResponse::parse(body).map_err(server_msg)?;
                    if self.start_copy_out(&response)? {
                        return Ok(Other::Done(ServerAction::Pause));
                    }
                } else {
                    self.rows.reset();
                }
            }
            _ => {}
        }
        Ok(Other::Then(action))
    }

    /// An ErrorResponse/NoticeResponse with its value-bearing fields masked,
    /// or `None` when governance changes nothing.
    fn mask_notice(
        &mut self,
        tag: u8,
        kind: ServerTextKind,
        fields: &NoticeFields<'_>,
    ) -> Option<Bytes> {
        let texts: Vec<&str> = fields
            .fields
            .iter()
            .filter(|(code, _)| VALUE_FIELDS.contains(code))
            .map(|(_, value)| *value)
            .collect();
        let (sql, statement_index) = self.state.current_statement().unzip();
        let masked = self.governor.rewrite_server_text(ServerText {
            kind,
            fields: &texts,
            raised_by_code: raised_by_code(fields),
            sql,
            statement_index: statement_index.unwrap_or(0),
        })?;
        let mut replacements = masked.into_iter();
        let owned: Vec<(u8, String)> = fields
            .fields
            .iter()
            .map(|(code, value)| {
                let replaced = if VALUE_FIELDS.contains(code) {
                    replacements.next().flatten()
                } else {
                    None
                };
                (*code, replaced.unwrap_or_else(|| (*value).to_owned()))
            })
            .collect();
        let rebuilt = NoticeFields {
            fields: owned.iter().map(|(c, v)| (*c, v.as_str())).collect(),
        };
        Some(rebuilt.encode(tag))
    }

    /// Starts a `COPY … TO STDOUT` under governance: its columns from the
    /// statement (and, for a whole table, the catalog's column order), then
    /// the row rewriter. `Ok(true)`: pause until a catalog lookup is done.
    fn start_copy_out(&mut self, response: &CopyResponse<'_>) -> Result<bool, SessionError> {
        let Some(r) = self.state.current_result() else {
            self.rows.reset();
            return Ok(false);
        };
        let statement = CopyStatement::find(r.sql, r.statement_index);
        let regclass = statement.as_ref().and_then(CopyStatement::regclass_needed);
        let describe = statement
            .as_ref()
            .and_then(CopyStatement::describe_needed)
            .map(str::to_owned);
        if !self.prepared_frame
            && let Some(catalog) = self.ctx.catalog.as_ref()
        {
            let lookup = match (&regclass, &describe) {
                (Some(regclass), _) => {
                    catalog.table_columns_resolution(&self.identity, regclass.clone())
                }
                (None, Some(query)) => catalog.describe_resolution(&self.identity, query),
                (None, None) => None,
            };
            if let Some(p) = lookup {
                self.prepared_frame = true;
                self.preparation = Some(p);
                return Ok(true);
            }
        }
        self.rows.reset();
        let catalog = self.ctx.catalog.as_ref();
        let table_columns = regclass
            .as_deref()
            .and_then(|t| catalog.and_then(|c| c.table_columns(&self.identity, t)));
        let described = describe
            .as_deref()
            .and_then(|q| catalog.and_then(|c| c.described(&self.identity, q)));
        let columns = match &statement {
            Some(s) => s.columns(
                response.columns,
                table_columns.as_deref(),
                described.as_deref(),
            ),
            None => CopyStatement::unknown_columns(response.columns),
        };
        let ctx = result_statement(&self.identity, &r, self.state.transaction());
        let rewriter = self.governor.row_rewriter(&ctx, &columns);
        match (rewriter, statement) {
            (None, _) => {}
            (Some(rw), Some(s)) => self.rows.copy = Some(CopyOutMasker::new(s.options, rw)),
            // Governance must see these rows, but hoop cannot read the COPY's
            // format: refuse rather than forward them unread.
            (Some(_), None) => {
                return Err(SessionError::RowRefused(Refusal::cannot_mask(
                    "hoop cannot read this COPY statement's data format",
                )));
            }
        }
        Ok(false)
    }

    fn rewrite_row(&mut self, body: &[u8]) -> Result<ServerAction, SessionError> {
        if !self.rows.resolved {
            let Some(r) = self.state.current_result() else {
                return Err(SessionError::UnattributedRows);
            };
            let Some(desc) = r.row_description else {
                return Err(SessionError::UnattributedRows);
            };
            if !self.rows.columns_current {
                let formats = &mut self.rows.formats;
                formats.clear();
                match (r.form, r.result_formats) {
                    (Submission::Text, _) => formats.extend(desc.fields().map(|f| f.format)),
                    (_, []) => formats.resize(desc.len(), 0),
                    (_, [one]) => formats.resize(desc.len(), *one),
                    (_, many) => formats.extend_from_slice(many),
                }
                let same = matches!(&self.rows.described_from,
                    Some((d, f)) if d.same_as(desc) && f == formats);
                if !same {
                    self.rows.columns = result_columns(desc, formats);
                    self.rows.described_from = Some((desc.clone(), formats.clone()));
                }
                self.rows.columns_current = true;
            }
            let columns = &self.rows.columns;
            if !self.prepared_frame
                && let Some(p) = self.governor.columns_to_resolve(columns)
            {
                self.prepared_frame = true;
                self.preparation = Some(p);
                return Ok(ServerAction::Pause);
            }
            self.rows.resolved = true;
            let ctx = result_statement(&self.identity, &r, self.state.transaction());
            self.rows.rewriter = self.governor.row_rewriter(&ctx, columns);
        }
        let Some(rewriter) = self.rows.rewriter.as_mut() else {
            return Ok(ServerAction::Forward);
        };
        let values = self.rows.index.parse(body).map_err(server_msg)?;
        let out = &mut self.rows.out;
        let at = out.len();
        if out.capacity() - at < body.len() + 64 {
            out.reserve(ROWS_CHUNK.max(body.len() + 64));
        }
        let mut encoder = DataRowEncoder::new(out, body.len());
        match rewriter.rewrite_row(&values, &mut encoder) {
            RowRewrite::Unchanged => {
                encoder.discard();
                Ok(ServerAction::Forward)
            }
            RowRewrite::Rewritten => {
                encoder.finish();
                // `process_server_frames` sends the row from `rows.out`.
                self.rows.appended = Some(at);
                Ok(ServerAction::Swallow)
            }
            RowRewrite::Refuse(refusal) => {
                encoder.discard();
                Err(SessionError::RowRefused(refusal))
            }
        }
    }
}

/// Whether an ErrorResponse/NoticeResponse was raised by code running in
/// the server rather than by the server itself: PL/pgSQL's `RAISE` (the
/// reporting routine), or any message whose context says it arose inside a
/// function, procedure, trigger or `DO` block (`PL/pgSQL function …`,
/// `SQL function …`, `inline_code_block`).
fn raised_by_code(fields: &NoticeFields<'_>) -> bool {
    fields.get(b'R') == Some("exec_stmt_raise")
        || fields
            .get(b'W')
            .is_some_and(|w| w.contains("function ") || w.contains("inline_code_block"))
}

/// A NoticeResponse for a hold's notice.
fn notice(text: &HoldNotice) -> Bytes {
    let spec = ErrorSpec::notice(text.message.clone());
    match &text.hint {
        Some(hint) => spec.with_hint(hint.clone()),
        None => spec,
    }
    .encode()
}

/// A CopyData message.
fn copy_data(data: &[u8]) -> Bytes {
    let mut m = MessageBuilder::new(b'd');
    m.bytes(data);
    m.finish()
}

/// A COPY that cannot be forwarded safely ends the session with an error,
/// never with a truncated stream.
fn copy_refused(e: CopyMaskError) -> SessionError {
    SessionError::RowRefused(match e {
        CopyMaskError::Refused(r) => r,
        CopyMaskError::Data(e) => Refusal::cannot_mask(e),
    })
}

/// The context of a statement the client sends.
fn client_statement<'a>(
    identity: &'a SessionIdentity,
    transaction: TransactionStatus,
    sql: &'a str,
    submission: Submission,
    name: Option<&'a str>,
) -> StatementContext<'a> {
    StatementContext {
        identity,
        sql,
        submission,
        statement_name: name,
        portal: None,
        statement_index: 0,
        transaction: transaction_state(transaction),
    }
}

/// The statement a result belongs to, as governance sees it.
fn result_statement<'a>(
    identity: &'a SessionIdentity,
    r: &ResultContext<'a>,
    transaction: TransactionStatus,
) -> StatementContext<'a> {
    StatementContext {
        identity,
        sql: r.sql,
        submission: r.form,
        statement_name: r.statement,
        portal: r.portal,
        statement_index: r.statement_index,
        transaction: transaction_state(transaction),
    }
}

/// The outcome of judging one statement.
enum Decision {
    Allow,
    Refuse(Bytes),
    Hold,
    /// Governance ends the session.
    Fatal(Refusal),
    /// A rule with `max_rows` matches: run it as a dry run and judge it
    /// with its count (`approved`: an approver approved that many rows;
    /// `hold`: the rule is a hold rule).
    DryRun {
        approved: Option<u64>,
        hold: bool,
    },
}
