//! The relay loop: both legs of an established session, in one task.

use std::{
    collections::VecDeque,
    future::{Future, poll_fn},
    io::IoSlice,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker, ready},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use super::cancel::{CancelRegistration, CancelSignals};
use super::{PgProxyContext, SessionError, Stream};
use crate::hooks::{
    HoldOutcome, HoldRequest, HoldTicket, Preparation, RowRewrite, RowRewriter, ServerText,
    SessionEvent, SessionGovernor, StatementContext,
};
use crate::proto::pg::{
    Direction, Frame, FrameDecoder, Peek,
    auth::strip_channel_binding,
    copy::{CopyFormat, CopyResponse},
    extended::{Bind, Close, Describe, Execute, Parse, Target, flush, sync},
    function::FunctionCall,
    notice::{ErrorSpec, NoticeFields},
    notification::NotificationResponse,
    query::Query,
    rows::{CommandComplete, DataRow},
    session::{Owed, Phase, ResultContext, ServerAction, SessionState},
    status::{BackendKeyData, ParameterStatus, TransactionStatus},
};
use crate::proxy::event_loop::ReadBytes;
use crate::session::SessionIdentity;
use crate::statement::{HoldRequirement, ProtocolForm, Verdict};

/// Read granularity.
const READ_CHUNK: usize = 64 * 1024;
/// Stop reading a leg while this much is queued towards the other.
const HIGH_WATER: usize = 256 * 1024;
/// Client bytes buffered (unprocessed) while a statement is held.
const HELD_BACKLOG: usize = 1024 * 1024;
/// A portal name no client uses: executing it makes the server fail the
/// current transaction in place of a refused statement. The server logs
/// `portal "…" does not exist` for it, so the name says what happened.
const REFUSAL_PORTAL: &str = "hoop: statement refused by policy";
/// Chunks per vectored write.
const MAX_IOVECS: usize = 32;
/// How long to keep delivering queued bytes once a session ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes queued for one leg, written with vectored writes.
#[derive(Debug, Default)]
struct OutQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
    unflushed: bool,
}

impl OutQueue {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }

    /// Writes what is queued; `Ready` once all of it was written (and
    /// flushed, for TLS).
    #[inline]
    fn poll_drain(&mut self, w: &mut Stream, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Most calls find nothing to do: skip the call into the writer.
        if self.chunks.is_empty() && !self.unflushed {
            return Poll::Ready(Ok(()));
        }
        self.poll_write_queued(w, cx)
    }

    /// Forwards the first `run` bytes of `buf`. With nothing queued ahead
    /// of them they are written straight from `buf` (the usual case: one
    /// request, one reply), sparing the split into a `Bytes`, its queueing
    /// and its reference counts; what the socket does not take now is
    /// queued. `waker` is the leg's, so a write that fills the socket
    /// registers it as `poll_drain` would.
    fn forward(
        &mut self,
        w: &mut Stream,
        waker: &Waker,
        buf: &mut BytesMut,
        mut run: usize,
    ) -> std::io::Result<()> {
        if run == 0 {
            return Ok(());
        }
        if self.chunks.is_empty() && !w.buffers_writes() {
            let mut cx = Context::from_waker(waker);
            if let Poll::Ready(n) = Pin::new(&mut *w).poll_write(&mut cx, &buf[..run]) {
                // A write of 0 bytes leaves them queued; the queue's next
                // write reports it.
                let n = n?;
                buf.advance(n);
                run -= n;
            }
        }
        if run > 0 {
            self.push(buf.split_to(run).freeze());
        }
        Ok(())
    }

    fn poll_write_queued(
        &mut self,
        w: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        while let Some(front) = self.chunks.front() {
            let mut n = if self.chunks.len() == 1 {
                // The usual case (one reply, one request): a plain write.
                ready!(Pin::new(&mut *w).poll_write(cx, front))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut k = 0;
                for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
                    *slot = IoSlice::new(chunk);
                    k += 1;
                }
                ready!(Pin::new(&mut *w).poll_write_vectored(cx, &slices[..k]))?
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.len -= n;
            self.unflushed = true;
            while n > 0 {
                let Some(front) = self.chunks.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.chunks.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        if self.unflushed {
            if w.buffers_writes() {
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
            }
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// What wakes the loop.
#[derive(Debug, Default)]
struct Wake {
    client: bool,
    server: bool,
    outcome: Option<HoldOutcome>,
    remind: bool,
    withdraw: bool,
}

/// The task's waker, shared by both streams' wakers.
type TaskWaker = Arc<AtomicWaker>;

/// One stream's waker. Every registration made while polling the stream
/// (its reads and its writes) uses this waker instead of the task's, so a
/// wake-up says which stream's readiness changed: a read that returned
/// Pending stays registered and is not polled again until its stream is
/// woken. Polling an idle stream on every wake-up would only repeat the
/// registration.
struct LegSignal {
    woken: AtomicBool,
    task: TaskWaker,
}

impl std::task::Wake for LegSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

struct Leg {
    signal: Arc<LegSignal>,
    waker: Waker,
    /// The last read returned Pending and the stream has not been woken
    /// since: its registration stands.
    parked: bool,
}

impl Leg {
    fn new(task: &TaskWaker) -> Self {
        let signal = Arc::new(LegSignal {
            woken: AtomicBool::new(false),
            task: task.clone(),
        });
        Self {
            waker: Waker::from(signal.clone()),
            signal,
            parked: false,
        }
    }

    /// Whether the stream's read should be polled now.
    fn poll_read_now(&mut self) -> bool {
        // The plain load spares the locked swap on the leg that was not
        // woken (usually one of the two). Only the swap clears the flag: a
        // wake-up that lands between the two is then consumed here, before
        // the stream is polled, never lost.
        if self.woken() && self.signal.woken.swap(false, Ordering::AcqRel) {
            self.parked = false;
        }
        !self.parked
    }

    fn woken(&self) -> bool {
        self.signal.woken.load(Ordering::Acquire)
    }
}

/// A statement waiting for approval. The held message stays at the front
/// of the client read buffer until the hold ends.
struct ActiveHold {
    ticket: HoldTicket,
    requirement: HoldRequirement,
    reminder: tokio::time::Interval,
    deadline: Pin<Box<tokio::time::Sleep>>,
    since: Instant,
}

/// The decision waiting for the statement at the front of the client buffer.
enum Pending {
    /// Approved by a decider: send it without judging again.
    Approved,
    /// Refused after a hold: answer with this error.
    Refused(Bytes),
}

/// What to do with a client message.
enum ClientAction {
    Forward,
    Swallow,
    /// Drop it and send these upstream instead.
    Replace([Option<Bytes>; 2]),
    /// Send this upstream first, then the message.
    InjectBefore(Bytes),
    /// Stop: the message is held.
    Hold,
}

/// Result-set state: the rewriter of the current result, if any.
#[derive(Default)]
struct Rows {
    rewriter: Option<Box<dyn RowRewriter>>,
    resolved: bool,
    copy_format: Option<CopyFormat>,
}

impl Rows {
    fn reset(&mut self) {
        self.rewriter = None;
        self.resolved = false;
        self.copy_format = None;
    }
}

/// The session's handles on the process metrics (label lookups done once).
struct Meters {
    from_client: prometheus::IntCounter,
    from_server: prometheus::IntCounter,
    latency: prometheus::Histogram,
    /// When the current client batch's first statement was judged (the
    /// clock is read only for batches that carry a statement). The spans
    /// are read from the TSC through `quanta` where it is invariant, about
    /// 10 ns a reading against 25 for `clock_gettime` on this kind of VM,
    /// and there are four readings per statement.
    batch_started: Option<quanta::Instant>,
    /// Client-side processing time of the last batch with a statement.
    pending_latency: Option<std::time::Duration>,
}

impl Meters {
    fn new() -> Self {
        let m = crate::metrics::metrics();
        Self {
            from_client: m
                .proxied_bytes_total
                .with_label_values(&["client_to_server"]),
            from_server: m
                .proxied_bytes_total
                .with_label_values(&["server_to_client"]),
            latency: m.statement_proxy_latency_seconds.clone(),
            batch_started: None,
            pending_latency: None,
        }
    }
}

pub(super) struct Relay {
    ctx: Arc<PgProxyContext>,
    identity: SessionIdentity,
    upstream: SocketAddr,
    client: Stream,
    server: Stream,
    client_buf: BytesMut,
    server_buf: BytesMut,
    to_client: OutQueue,
    to_server: OutQueue,
    client_decoder: FrameDecoder,
    server_decoder: FrameDecoder,
    state: SessionState,
    governor: Box<dyn SessionGovernor>,
    inspect: bool,
    /// The governor wants `Bound`, `CommandComplete` and `CopyData` events.
    observe_executions: bool,
    rows: Rows,
    /// Byte counts and latency, for the process metrics.
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
    client_eof: bool,
    server_eof: bool,
    /// The task's waker as the streams' wakers reach it; registered each
    /// time the relay waits.
    task_waker: TaskWaker,
    /// The wakers the client and server streams are polled with.
    client_leg: Leg,
    server_leg: Leg,
    terminated: bool,
    started: bool,
}

fn client_msg(e: crate::proto::pg::MessageError) -> SessionError {
    SessionError::ClientMessage(e)
}

fn server_msg(e: crate::proto::pg::MessageError) -> SessionError {
    SessionError::ServerMessage(e)
}

/// The time since `started` on the latency clock. Saturating, stated here
/// rather than left to `elapsed`: a TSC read on another CPU that is behind
/// gives a zero span, never a panic (quanta says a later version may panic
/// in `elapsed`).
fn span_since(started: quanta::Instant) -> Duration {
    quanta::Instant::now().saturating_duration_since(started)
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

impl Relay {
    pub(super) fn new(
        ctx: Arc<PgProxyContext>,
        identity: SessionIdentity,
        upstream: SocketAddr,
        client: Stream,
        server: Stream,
        client_buf: BytesMut,
        startup: &Frame,
    ) -> Self {
        let governor = ctx.governors.session(&identity);
        let inspect = governor.inspects_rows();
        let observe_executions = governor.observes_executions();
        let mut state = SessionState::new(inspect);
        if !inspect && !observe_executions {
            // Nothing reads the SQL of a result or a prepared statement.
            state = state.without_sql();
        }
        state.set_phase(Phase::Authenticating);
        let mut to_server = OutQueue::default();
        to_server.push(startup.raw.clone());
        let task_waker = TaskWaker::default();
        Self {
            client_leg: Leg::new(&task_waker),
            server_leg: Leg::new(&task_waker),
            task_waker,
            client_decoder: FrameDecoder::new(Direction::Frontend, ctx.max_message_size),
            server_decoder: FrameDecoder::new(Direction::Backend, ctx.max_message_size),
            ctx,
            identity,
            upstream,
            client,
            server,
            client_buf,
            server_buf: BytesMut::with_capacity(READ_CHUNK),
            to_client: OutQueue::default(),
            to_server,
            state,
            governor,
            inspect,
            observe_executions,
            rows: Rows::default(),
            preparation: None,
            prepared_frame: false,
            meters: Meters::new(),
            discard_until_sync: false,
            pending: None,
            hold: None,
            signals: CancelSignals::new(),
            registration: None,
            client_eof: false,
            server_eof: false,
            terminated: false,
            started: false,
        }
    }

    pub(super) async fn run(mut self) -> Result<(), SessionError> {
        let result = self.pump().await;
        if let Err(e) = &result
            && let Some(spec) = e.client_error()
        {
            self.to_client.push(spec.encode());
        }
        self.state.set_phase(Phase::Closed);
        self.finish().await;
        let reason = match &result {
            Ok(()) if self.terminated => "client terminated".to_owned(),
            Ok(()) if self.client_eof => "client closed".to_owned(),
            Ok(()) => "server closed".to_owned(),
            Err(e) => e.to_string(),
        };
        self.governor
            .observe(SessionEvent::Ended { reason: &reason });
        result
    }

    async fn pump(&mut self) -> Result<(), SessionError> {
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
            if let Some(spec) = self.governor.fatal() {
                return Err(SessionError::Governance(spec));
            }
            if wake.client && self.hold.is_none() {
                self.process_client()?;
            }
            if wake.withdraw {
                self.end_hold(HoldOutcome::Withdrawn, true)?;
            } else if let Some(outcome) = wake.outcome {
                self.end_hold(outcome, false)?;
            }
            if wake.remind {
                self.remind();
            }
            if self.server_eof || self.terminated {
                return Ok(());
            }
            if self.client_eof {
                if let Some(hold) = &mut self.hold {
                    info!(session = %self.identity, hold = hold.ticket.id(), "client left while held; hold withdrawn");
                    hold.ticket.withdraw();
                }
                return Ok(());
            }
        }
    }

    /// Delivers what is queued (bounded in time), then closes both legs.
    async fn finish(&mut self) {
        let drain = async {
            poll_fn(|cx| {
                let a = self.to_server.poll_drain(&mut self.server, cx);
                let b = self.to_client.poll_drain(&mut self.client, cx);
                if a.is_ready() && b.is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let _ = self.client.shutdown().await;
            let _ = self.server.shutdown().await;
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<Wake, SessionError>> {
        let poll_server = self.server_leg.poll_read_now();
        let poll_client = self.client_leg.poll_read_now();
        let mut server_cx = Context::from_waker(&self.server_leg.waker);
        let mut client_cx = Context::from_waker(&self.client_leg.waker);
        if let Poll::Ready(Err(e)) = self.to_server.poll_drain(&mut self.server, &mut server_cx) {
            return Poll::Ready(Err(SessionError::ServerIo(e)));
        }
        if let Poll::Ready(Err(e)) = self.to_client.poll_drain(&mut self.client, &mut client_cx) {
            return Poll::Ready(Err(SessionError::ClientIo(e)));
        }
        let mut wake = Wake::default();
        if poll_server && !self.server_eof && self.to_client.len < HIGH_WATER {
            reserve(&mut self.server_buf);
            match self
                .server
                .poll_read_buf(&mut server_cx, &mut self.server_buf)
            {
                Poll::Ready(Ok(ReadBytes { n: 0, .. })) => {
                    self.server_eof = true;
                    wake.server = true;
                }
                Poll::Ready(Ok(ReadBytes { n, parked })) => {
                    self.meters.from_server.inc_by(n as u64);
                    self.server_leg.parked = parked;
                    wake.server = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::ServerIo(e))),
                Poll::Pending => self.server_leg.parked = true,
            }
        }
        if poll_client
            && !self.client_eof
            && self.to_server.len < HIGH_WATER
            && (self.hold.is_none() || self.client_buf.len() < HELD_BACKLOG)
        {
            reserve(&mut self.client_buf);
            match self
                .client
                .poll_read_buf(&mut client_cx, &mut self.client_buf)
            {
                Poll::Ready(Ok(ReadBytes { n: 0, .. })) => {
                    self.client_eof = true;
                    wake.client = true;
                }
                Poll::Ready(Ok(ReadBytes { n, parked })) => {
                    self.meters.from_client.inc_by(n as u64);
                    self.client_leg.parked = parked;
                    wake.client = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::ClientIo(e))),
                Poll::Pending => self.client_leg.parked = true,
            }
        }
        if let Some(hold) = &mut self.hold {
            if let Poll::Ready(outcome) = hold.ticket.poll_decision(cx) {
                wake.outcome = Some(outcome);
            } else if hold.deadline.as_mut().poll(cx).is_ready() {
                hold.ticket.withdraw();
                wake.outcome = Some(HoldOutcome::TimedOut);
            }
            if hold.reminder.poll_tick(cx).is_ready() {
                wake.remind = true;
            }
            if let Poll::Ready(Some(())) = self.signals.withdraw.poll_recv(cx) {
                wake.withdraw = true;
            }
        }
        if wake.client || wake.server || wake.outcome.is_some() || wake.remind || wake.withdraw {
            Poll::Ready(Ok(wake))
        } else {
            // Register, then look again: a stream woken before the
            // registration would otherwise be missed.
            self.task_waker.register(cx.waker());
            if self.client_leg.woken() || self.server_leg.woken() {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    // ---- client → server ----

    fn process_client(&mut self) -> Result<(), SessionError> {
        let mut buf = std::mem::take(&mut self.client_buf);
        let result = self.process_client_buf(&mut buf);
        if let Some(started) = self.meters.batch_started.take() {
            // Statement(s) in this batch: their latency is completed by the
            // processing of the first server batch that answers them. The
            // span ends before the batch is written, as it would if it
            // were only queued.
            self.meters.pending_latency = Some(span_since(started));
        }
        let result = result.and_then(|run| {
            self.to_server
                .forward(&mut self.server, &self.server_leg.waker, &mut buf, run)
                .map_err(SessionError::ServerIo)
        });
        self.client_buf = buf;
        result
    }

    /// Judges the complete messages at the front of `buf`, queueing what
    /// replaces or precedes them: the length of the run of messages at its
    /// front that are still to be forwarded as they are.
    fn process_client_buf(&mut self, buf: &mut BytesMut) -> Result<usize, SessionError> {
        let mut run = 0;
        while self.hold.is_none() && !self.terminated {
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
            if run > 0 {
                self.to_server.push(buf.split_to(run).freeze());
                run = 0;
            }
            match action {
                ClientAction::Forward => {}
                ClientAction::Swallow => buf.advance(len),
                ClientAction::Replace(msgs) => {
                    buf.advance(len);
                    for m in msgs.into_iter().flatten() {
                        self.to_server.push(m);
                    }
                }
                ClientAction::InjectBefore(m) => {
                    self.to_server.push(m);
                    run = len;
                }
                ClientAction::Hold => break,
            }
        }
        Ok(run)
    }

    fn client_frame(&mut self, tag: u8, body: &[u8]) -> Result<ClientAction, SessionError> {
        if self.discard_until_sync {
            // After a refused extended-protocol message, as after a server
            // error: ignore everything up to Sync.
            if tag == b'S' {
                self.discard_until_sync = false;
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
                match self.decide(q.sql, ProtocolForm::Simple, None) {
                    Decision::Allow => {
                        self.state.client_query(q.sql);
                        Ok(ClientAction::Forward)
                    }
                    Decision::Refuse(err) => Ok(self.refuse(err, false)),
                    Decision::Hold => Ok(ClientAction::Hold),
                    Decision::Fatal(spec) => Err(SessionError::Governance(spec)),
                }
            }
            b'P' => {
                let p = Parse::parse(body).map_err(client_msg)?;
                match self.decide(p.sql, ProtocolForm::Extended, Some(p.name)) {
                    Decision::Allow => {
                        self.state.client_parse(&p);
                        Ok(ClientAction::Forward)
                    }
                    Decision::Refuse(err) => Ok(self.refuse(err, true)),
                    Decision::Hold => Ok(ClientAction::Hold),
                    Decision::Fatal(spec) => Err(SessionError::Governance(spec)),
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
                        form: ProtocolForm::Extended,
                        statement_name: Some(b.statement),
                        portal: Some(b.portal),
                        statement_index: 0,
                        transaction: self.state.transaction(),
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
                let describe = self.inspect && !self.state.portal_description_expected(e.portal);
                if describe {
                    // Masking needs the columns; the client did not ask.
                    self.state.injected_describe_portal(e.portal);
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
                self.state.client_close(&c);
                Ok(ClientAction::Forward)
            }
            b'S' => {
                self.state.client_sync();
                Ok(ClientAction::Forward)
            }
            b'F' => {
                let f = FunctionCall::parse(body).map_err(client_msg)?;
                let sql = format!("function {}", f.function_oid);
                match self.decide(&sql, ProtocolForm::FunctionCall, None) {
                    Decision::Allow => {
                        self.state.client_function_call();
                        Ok(ClientAction::Forward)
                    }
                    Decision::Refuse(err) => Ok(self.refuse(err, false)),
                    Decision::Hold => Ok(ClientAction::Hold),
                    Decision::Fatal(spec) => Err(SessionError::Governance(spec)),
                }
            }
            b'd' => {
                if self.observe_executions {
                    self.governor.observe(SessionEvent::CopyData {
                        direction: Direction::Frontend,
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
    fn decide(&mut self, sql: &str, form: ProtocolForm, name: Option<&str>) -> Decision {
        if let Some(spec) = self.governor.fatal() {
            return Decision::Fatal(spec);
        }
        let ctx = StatementContext {
            identity: &self.identity,
            sql,
            form,
            statement_name: name,
            portal: None,
            statement_index: 0,
            transaction: self.state.transaction(),
        };
        let verdict = match self.pending.take() {
            Some(Pending::Approved) => Verdict::Allow,
            Some(Pending::Refused(err)) => return Decision::Refuse(err),
            None => {
                self.meters
                    .batch_started
                    .get_or_insert_with(quanta::Instant::now);
                let verdict = self.governor.judge(&ctx);
                self.governor.observe(SessionEvent::Judged {
                    statement: &ctx,
                    verdict: &verdict,
                });
                verdict
            }
        };
        match verdict {
            Verdict::Allow => {
                self.governor
                    .observe(SessionEvent::Sent { statement: &ctx });
                Decision::Allow
            }
            Verdict::Deny(denial) => {
                info!(session = %self.identity, verdict = "deny", rule = %denial.rule, "statement denied");
                Decision::Refuse(
                    ErrorSpec::error("42501", denial.message)
                        .with_detail(format!("Denied by hoop policy rule \"{}\".", denial.rule))
                        .encode(),
                )
            }
            Verdict::Hold(requirement) => {
                self.start_hold(requirement, sql, form);
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

    fn start_hold(&mut self, requirement: HoldRequirement, sql: &str, form: ProtocolForm) {
        // Held before the broker publishes the hold: a CancelRequest that
        // follows the publication at once must withdraw it, not be
        // forwarded to a server that is running nothing (and be lost).
        self.signals.set_held(true);
        let request = HoldRequest {
            identity: self.identity.clone(),
            sql: sql.to_owned(),
            form,
            requirement: requirement.clone(),
        };
        let ticket = self.ctx.holds.hold(request);
        let id = ticket.id().to_owned();
        info!(session = %self.identity, verdict = "hold", hold = %id, rule = %requirement.rule, "statement held");
        self.to_client.push(
            ErrorSpec::notice(format!("hold {id}: {} (rule \"{}\"); waiting for approval, approve with `hoop holds approve {id}`", requirement.message, requirement.rule))
                .with_hint(format!("An approver can run `hoop holds approve {id}` or `hoop holds deny {id}`. Without a decision it is denied after {}.", humantime::format_duration(requirement.timeout)))
                .encode(),
        );
        let period = self
            .ctx
            .hold_reminder_interval
            .max(Duration::from_millis(10));
        let mut reminder = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        reminder.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.hold = Some(ActiveHold {
            ticket,
            deadline: Box::pin(tokio::time::sleep(requirement.timeout)),
            requirement,
            reminder,
            since: Instant::now(),
        });
        self.state.set_phase(Phase::Held);
    }

    fn remind(&mut self) {
        if let Some(hold) = &self.hold {
            let id = hold.ticket.id();
            self.to_client.push(ErrorSpec::notice(format!("hold {id}: still waiting for approval after {}s; approve with `hoop holds approve {id}`", hold.since.elapsed().as_secs())).encode());
        }
    }

    fn end_hold(&mut self, outcome: HoldOutcome, cancelled: bool) -> Result<(), SessionError> {
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
        if outcome == HoldOutcome::Withdrawn {
            hold.ticket.withdraw();
        }
        self.governor.observe(SessionEvent::HoldDecided {
            id: &id,
            outcome: &outcome,
        });
        info!(session = %self.identity, hold = %id, ?outcome, "hold ended");
        let rule = &hold.requirement.rule;
        let refusal = match outcome {
            HoldOutcome::Approved { .. } => {
                self.pending = Some(Pending::Approved);
                None
            }
            HoldOutcome::Denied { by, reason } => Some(
                ErrorSpec::error(
                    "42501",
                    format!(
                        "hold {id} was denied by {by}{}",
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                )
                .with_detail(format!(
                    "The statement was held by hoop policy rule \"{rule}\" and never ran."
                )),
            ),
            HoldOutcome::TimedOut => Some(
                ErrorSpec::error(
                    "42501",
                    format!(
                        "hold {id} timed out after {} without a decision",
                        humantime::format_duration(hold.requirement.timeout)
                    ),
                )
                .with_detail(format!(
                    "The statement was held by hoop policy rule \"{rule}\" and never ran."
                )),
            ),
            HoldOutcome::Withdrawn if cancelled => Some(
                ErrorSpec::error("57014", "canceling statement due to user request")
                    .with_detail(format!("hold {id} was withdrawn; the statement never ran.")),
            ),
            HoldOutcome::Withdrawn => Some(
                ErrorSpec::error("42501", format!("hold {id} was withdrawn")).with_detail(format!(
                    "The statement was held by hoop policy rule \"{rule}\" and never ran."
                )),
            ),
        };
        if let Some(spec) = refusal {
            self.pending = Some(Pending::Refused(spec.encode()));
        }
        self.process_client()
    }

    // ---- server → client ----

    fn process_server(&mut self) -> Result<(), SessionError> {
        let started = self
            .meters
            .pending_latency
            .is_some()
            .then(quanta::Instant::now);
        let mut buf = std::mem::take(&mut self.server_buf);
        let result = self.process_server_buf(&mut buf);
        if let (Some(request), Some(started)) = (self.meters.pending_latency.take(), started) {
            // Ended before the batch is written, as in `process_client`.
            self.meters
                .latency
                .observe((request + span_since(started)).as_secs_f64());
        }
        let result = result.and_then(|run| {
            self.to_client
                .forward(&mut self.client, &self.client_leg.waker, &mut buf, run)
                .map_err(SessionError::ClientIo)
        });
        self.server_buf = buf;
        result
    }

    /// As [`Relay::process_client_buf`], for the server's messages.
    fn process_server_buf(&mut self, buf: &mut BytesMut) -> Result<usize, SessionError> {
        let mut run = 0;
        loop {
            let (tag, len) = match self.server_decoder.peek(&buf[run..])? {
                Peek::Complete { tag, len } => (tag, len),
                Peek::Incomplete { len } => {
                    if let Some(len) = len {
                        buf.reserve((run + len).saturating_sub(buf.len()));
                    }
                    break;
                }
            };
            let action = self.server_frame(tag, &buf[run + 5..run + len])?;
            if action == ServerAction::Pause {
                // Resumed at this frame once the preparation is done.
                break;
            }
            self.prepared_frame = false;
            if action == ServerAction::Forward {
                run += len;
                continue;
            }
            if run > 0 {
                self.to_client.push(buf.split_to(run).freeze());
                run = 0;
            }
            buf.advance(len);
            if let ServerAction::Replace(b) = action {
                self.to_client.push(b);
            }
        }
        Ok(run)
    }

    fn server_frame(&mut self, tag: u8, body: &[u8]) -> Result<ServerAction, SessionError> {
        let mut action = ServerAction::Forward;
        match tag {
            b'D' => {
                if self.inspect {
                    action = self.rewrite_row(body)?;
                }
                return Ok(action);
            }
            b'd' => {
                if self.observe_executions {
                    self.governor.observe(SessionEvent::CopyData {
                        direction: Direction::Backend,
                        bytes: body.len(),
                    });
                }
                if let (Some(rw), Some(format)) =
                    (self.rows.rewriter.as_mut(), self.rows.copy_format)
                    && let Some(b) = rw.rewrite_copy_data(body, format)
                {
                    let mut m = crate::proto::pg::wire::MessageBuilder::new(b'd');
                    m.bytes(&b);
                    action = ServerAction::Replace(m.finish());
                }
                // CopyData from the server is not tracked by the session state.
                return Ok(action);
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
                self.identity.backend_pid = Some(key.pid);
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
                    let text = if tag == b'E' {
                        ServerText::Error(&fields)
                    } else {
                        ServerText::Notice(&fields)
                    };
                    if let Some(b) = self.governor.rewrite_server_text(text) {
                        action = ServerAction::Replace(b);
                    }
                }
            }
            b'A' => {
                let n = NotificationResponse::parse(body).map_err(server_msg)?;
                if let Some(b) = self
                    .governor
                    .rewrite_server_text(ServerText::Notification(&n))
                {
                    action = ServerAction::Replace(b);
                }
            }
            b'C' => {
                let c = CommandComplete::parse(body).map_err(server_msg)?;
                if self.observe_executions {
                    self.governor.observe(SessionEvent::CommandComplete {
                        tag: c.tag,
                        rows: c.rows(),
                    });
                }
                self.rows.reset();
            }
            b'I' | b's' | b'T' | b'Z' | b'G' => self.rows.reset(),
            b'H' | b'W' => {
                if self.inspect
                    && tag == b'H'
                    && !self.prepared_frame
                    && let Some(r) = self.state.current_result()
                {
                    let ctx = result_statement(&self.identity, &r, self.state.transaction());
                    if let Some(p) = self.governor.copy_columns_to_resolve(&ctx) {
                        self.prepared_frame = true;
                        self.preparation = Some(p);
                        return Ok(ServerAction::Pause);
                    }
                }
                self.rows.reset();
                if self.inspect {
                    let response = CopyResponse::parse(body).map_err(server_msg)?;
                    self.rows.copy_format = Some(response.format);
                    if let Some(r) = self.state.current_result() {
                        let ctx = result_statement(&self.identity, &r, self.state.transaction());
                        self.rows.rewriter = self.governor.copy_rewriter(&ctx, response.format);
                    }
                }
            }
            _ => {}
        }
        let state_action = self.state.server_message(tag, body).map_err(|e| match e {
            crate::proto::pg::session::SessionError::Message(m) => SessionError::ServerMessage(m),
            e @ crate::proto::pg::session::SessionError::UnexpectedReply { .. } => {
                SessionError::ServerState(e)
            }
        })?;
        if tag == b'Z' && !self.started {
            self.started = true;
            debug!(session = %self.identity, "session ready");
            self.governor.observe(SessionEvent::Started {
                identity: &self.identity,
            });
        }
        Ok(match state_action {
            ServerAction::Forward => action,
            other => other,
        })
    }

    fn rewrite_row(&mut self, body: &[u8]) -> Result<ServerAction, SessionError> {
        if !self.rows.resolved {
            let Some(r) = self.state.current_result() else {
                return Err(SessionError::UnattributedRows);
            };
            let Some(desc) = r.row_description else {
                return Err(SessionError::UnattributedRows);
            };
            if !self.prepared_frame
                && let Some(p) = self.governor.columns_to_resolve(desc)
            {
                self.prepared_frame = true;
                self.preparation = Some(p);
                return Ok(ServerAction::Pause);
            }
            self.rows.resolved = true;
            let formats: Vec<i16> = match (r.form, r.result_formats) {
                (ProtocolForm::Simple, _) => desc.fields().map(|f| f.format).collect(),
                (_, []) => vec![0; desc.len()],
                (_, [one]) => vec![*one; desc.len()],
                (_, many) => many.to_vec(),
            };
            let ctx = result_statement(&self.identity, &r, self.state.transaction());
            self.rows.rewriter = self.governor.row_rewriter(&ctx, desc, &formats);
        }
        let Some(rewriter) = self.rows.rewriter.as_mut() else {
            return Ok(ServerAction::Forward);
        };
        let row = DataRow::parse(body).map_err(server_msg)?;
        match rewriter.rewrite_row(&row) {
            RowRewrite::Unchanged => Ok(ServerAction::Forward),
            RowRewrite::Replaced(b) => Ok(ServerAction::Replace(b)),
            RowRewrite::Refuse(spec) => Err(SessionError::RowRefused(spec)),
        }
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
        form: r.form,
        statement_name: r.statement,
        portal: r.portal,
        statement_index: r.statement_index,
        transaction,
    }
}

/// The outcome of judging one statement.
enum Decision {
    Allow,
    Refuse(Bytes),
    Hold,
    /// Governance ends the session.
    Fatal(ErrorSpec),
}
