//! The connection side: [`SessionRecorder`] turns governance events into
//! queued commands (row batching, the byte budget, de-duplicated
//! statement texts) without blocking the connection.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A result row **after masking**, ready to record.
///
/// The only constructor is crate-private and meant for the mask pipeline,
/// which calls it with exactly the values it is about to send to the client.
/// Code holding raw server values has no way to turn them into a
/// `MaskedRow` by accident: it must call [`MaskedRow::after_masking`], whose
/// name states the contract.
#[derive(Debug, Clone, Copy)]
pub struct MaskedRow<'a> {
    pub(super) columns: &'a [Option<&'a [u8]>],
}

impl<'a> MaskedRow<'a> {
    /// Wraps the values of a result row **as sent to the client after
    /// masking** (`None` is SQL NULL). Only the governance layer calls it,
    /// with exactly the values it is about to hand to the driver.
    pub fn after_masking(columns: &'a [Option<&'a [u8]>]) -> Self {
        Self { columns }
    }
}

/// One CopyData chunk **after masking** (for `COPY … TO STDOUT`), or as the
/// client sent it (for `COPY … FROM STDIN`, which the client already holds).
/// Same contract as [`MaskedRow`].
#[derive(Debug, Clone, Copy)]
pub struct MaskedCopyChunk<'a> {
    pub(super) direction: CopyDirection,
    pub(super) data: &'a [u8],
}

impl<'a> MaskedCopyChunk<'a> {
    /// Wraps a bulk-data payload as it is forwarded, after masking.
    pub fn after_masking(direction: CopyDirection, data: &'a [u8]) -> Self {
        Self { direction, data }
    }
}

/// Records one session. Owned by its connection task; ends the recording
/// when [`SessionRecorder::end`] is called or when dropped.
///
/// Typical order of calls per statement: [`statement`](Self::statement),
/// [`verdict`](Self::verdict), perhaps [`hold`](Self::hold), then
/// [`masked_row`](Self::masked_row)… and [`result`](Self::result) or
/// [`error`](Self::error).
pub struct SessionRecorder {
    pub(super) live: Option<LiveSession>,
}

pub(super) struct LiveSession {
    pub(super) shared: Arc<RecorderShared>,
    /// Where this session's events wait for the writer.
    pub(super) queue: Arc<SessionQueue>,
    pub(super) health: Arc<SessionHealth>,
    /// When the session started: a raw reading of the recorder's clock
    /// (the TSC through `quanta` where it is invariant). An event's time is
    /// taken several times per statement, and a raw reading plus one scaling
    /// costs a fraction of `quanta::Instant::now` and its `Duration`s.
    pub(super) started: u64,
    /// The wall clock at `started` (the writer dates each event by it plus
    /// the event's monotonic offset).
    pub(super) started_at: SystemTime,
    /// Prepared statements already sent in full, by the address of their
    /// SQL text: a later execution sends only the id. The `Arc`s are kept,
    /// so an address cannot be reused while it is in the map.
    pub(super) sent_statements: HashMap<usize, SentStatement, foldhash::fast::RandomState>,
    pub(super) next_statement_id: u32,
    /// SQL and table-name bytes the map holds.
    pub(super) sent_bytes: usize,
    pub(super) batch: RowBatch,
    pub(super) result_rows: ResultRows,
    pub(super) ended: bool,
}

/// Rows waiting to become one `rows` event.
#[derive(Default)]
pub(super) struct RowBatch {
    pub(super) rows: Vec<CutRow>,
    pub(super) value_bytes: usize,
    /// The monotonic time of the first row.
    pub(super) first: Option<u64>,
}

/// Row accounting for the current result.
#[derive(Default)]
pub(super) struct ResultRows {
    pub(super) recorded: u64,
    pub(super) dropped: u64,
}

/// A row's values after cutting at `max_row_bytes`.
pub(super) struct CutRow {
    pub(super) values: Vec<Option<Vec<u8>>>,
    pub(super) original_bytes: Option<u64>,
}

/// Whether a session's recording has failed, read without its recorder
/// (see [`SessionRecorder::failure_flag`]).
#[derive(Clone)]
pub struct FailureFlag(Arc<SessionHealth>);

impl fmt::Debug for FailureFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailureFlag({})", self.is_set())
    }
}

impl FailureFlag {
    /// [`SessionRecorder::failed`], from one atomic load.
    pub fn is_set(&self) -> bool {
        self.0.failed.load(Ordering::Acquire)
    }
}

impl fmt::Debug for SessionRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.live {
            None => f.write_str("SessionRecorder(disabled)"),
            Some(live) => write!(f, "SessionRecorder({:?})", live.started_at),
        }
    }
}

impl SessionRecorder {
    /// A session recorder that records nothing.
    pub fn disabled() -> SessionRecorder {
        SessionRecorder { live: None }
    }

    /// Whether this session is being recorded (not disabled, not abandoned).
    pub fn is_recording(&self) -> bool {
        self.live.is_some()
    }

    /// Records a statement. Call it **before** forwarding; on `Err` the
    /// statement is not recorded, and with `on_error: close_session` it must
    /// not run.
    ///
    /// `sql` is recorded as given: pass it literal-masked when policy says so.
    pub fn statement(
        &mut self,
        sql: &Arc<str>,
        form: Submission,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
    ) -> Result<(), RecordError> {
        self.record_statement(false, sql, form, kinds, tables, None)
    }

    /// [`statement`](Self::statement), then [`verdict`](Self::verdict) for
    /// it, handed to the writer together: one clock read, one backlog
    /// reservation and one queue lock for both (the usual statement is
    /// judged before it is forwarded, so both are known at once). Either
    /// both are recorded or, on `Err`, neither is, and with `on_error:
    /// close_session` the statement must not run.
    pub fn statement_and_verdict(
        &mut self,
        sql: &Arc<str>,
        form: Submission,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
        verdict: &Verdict,
    ) -> Result<(), RecordError> {
        self.record_statement(false, sql, form, kinds, tables, Some(verdict))
    }

    /// [`statement_and_verdict`](Self::statement_and_verdict) for a text
    /// the caller does not keep: it is copied into the session's queue, so
    /// recording the statement allocates nothing (a simple-protocol
    /// statement, whose text is new each time).
    pub fn statement_text_and_verdict(
        &mut self,
        sql: &str,
        form: Submission,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
        verdict: &Verdict,
    ) -> Result<(), RecordError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        live.close_result_rows();
        let cost = sql.len() + tables.iter().map(String::len).sum::<usize>();
        let statement = Payload::Text {
            sql: 0..sql.len(),
            form,
            kinds: kinds.clone(),
            tables: tables.clone(),
        };
        live.send_one_or_two(
            (statement, cost),
            Some(verdict_payload(verdict)),
            sql.as_bytes(),
        )
    }

    /// [`prepared_statement`](Self::prepared_statement) and its verdict,
    /// handed over together like [`statement_and_verdict`](Self::statement_and_verdict).
    pub fn prepared_statement_and_verdict(
        &mut self,
        sql: &Arc<str>,
        form: Submission,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
        verdict: &Verdict,
    ) -> Result<(), RecordError> {
        self.record_statement(true, sql, form, kinds, tables, Some(verdict))
    }

    /// Records an execution of a prepared statement, like
    /// [`statement`](Self::statement). The first call with these `Arc`s
    /// sends them to the writer; every later one sends only a number, so a
    /// repeated execution moves a few bytes between threads and touches no
    /// reference count. Pass the same `Arc`s for every execution.
    pub fn prepared_statement(
        &mut self,
        sql: &Arc<str>,
        form: Submission,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
    ) -> Result<(), RecordError> {
        self.record_statement(true, sql, form, kinds, tables, None)
    }

    /// The four statement calls above: the statement's payload (in full,
    /// or a prepared statement's id once sent), alone or with its verdict.
    #[inline]
    fn record_statement(
        &mut self,
        prepared: bool,
        sql: &Arc<str>,
        form: Submission,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
        verdict: Option<&Verdict>,
    ) -> Result<(), RecordError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        live.close_result_rows();
        let statement = if prepared {
            live.prepared_payload(sql, form, kinds, tables)?
        } else {
            let (event, cost) = statement_event(sql, form, kinds, tables);
            (Payload::Statement(event), cost)
        };
        match verdict {
            Some(verdict) => live.send_pair(statement, verdict_payload(verdict)),
            None => live.send(statement.0, statement.1),
        }
    }

    /// Records the verdict for the statement just recorded. Like
    /// [`statement`](Self::statement), an `Err` means it is not recorded.
    pub fn verdict(&mut self, verdict: &Verdict) -> Result<(), RecordError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        let (payload, cost) = verdict_payload(verdict);
        live.send(payload, cost)
    }

    /// Records a hold's state change (`decider` for approved/denied). An `Err`
    /// on `approved` means the statement should not run (`close_session`).
    pub fn hold(
        &mut self,
        hold_id: &str,
        state: HoldState,
        decider: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), RecordError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        let cost = hold_id.len() + decider.map_or(0, str::len) + reason.map_or(0, str::len);
        live.send_event(
            Body::Hold(HoldEvent {
                hold_id: hold_id.to_owned(),
                state,
                decider: decider.map(str::to_owned),
                reason: reason.map(str::to_owned),
            }),
            cost,
        )
    }

    /// Records how a statement ended: CommandComplete `tag` and row count, or
    /// the SQLSTATE it failed with. A failure here shows in [`failed`](Self::failed).
    pub fn result(&mut self, tag: Option<&str>, rows: u64, sqlstate: Option<&str>) {
        let Some(live) = &mut self.live else { return };
        live.close_result_rows();
        let rows = (live.shared.rows != RecordRows::None).then_some(rows);
        // The usual result (a short tag, no error) travels without a heap
        // allocation.
        let payload = match (tag.and_then(ShortTag::new), sqlstate) {
            (Some(tag), None) => Payload::Result { tag, rows },
            _ => Payload::Event(Box::new(Body::Result(ResultEvent {
                tag: tag.map(str::to_owned),
                rows,
                sqlstate: sqlstate.map(str::to_owned),
            }))),
        };
        let _ = live.send(payload, 0);
    }

    /// Records an error sent to the client. `message` is recorded as given:
    /// pass it masked (server messages can quote values).
    pub fn error(&mut self, sqlstate: &str, message: &str) {
        let Some(live) = &mut self.live else { return };
        live.close_result_rows();
        let event = ErrorEvent {
            sqlstate: sqlstate.to_owned(),
            message: message.to_owned(),
        };
        let _ = live.send_event(Body::Error(event), message.len());
    }

    /// Records that detector rule `rule` found values in `column`, which is
    /// masked as a column rule from now on.
    pub fn promotion(&mut self, rule: &str, column: &str) {
        let Some(live) = &mut self.live else { return };
        let event = PromotionEvent {
            rule: rule.to_owned(),
            column: column.to_owned(),
        };
        let _ = live.send_event(Body::Promotion(event), rule.len() + column.len());
    }

    /// Records a result row **after masking**. A no-op unless `rows: full`.
    /// The row is cut at `max_row_bytes`. Under backpressure rows are dropped
    /// and the drop is recorded as `rows_limit` (see the module docs).
    pub fn masked_row(&mut self, row: MaskedRow<'_>) {
        let Some(live) = &mut self.live else { return };
        if live.shared.rows != RecordRows::Full || live.health.failed.load(Ordering::Acquire) {
            return;
        }
        if live.result_rows.dropped > 0 {
            live.drop_rows(1);
            return;
        }
        let (values, original_bytes) = cut_row(row.columns, live.shared.max_row_bytes);
        let value_bytes: usize = values.iter().map(|v| v.as_ref().map_or(0, Vec::len)).sum();
        if live.batch.first.is_none() {
            live.batch.first = Some(live.mono_ns());
        }
        live.batch.rows.push(CutRow {
            values,
            original_bytes,
        });
        live.batch.value_bytes += value_bytes;
        if live.batch.rows.len() >= ROWS_PER_EVENT || live.batch.value_bytes >= ROW_BYTES_PER_EVENT
        {
            live.send_row_batch();
        }
    }

    /// Records a CopyData chunk **after masking**. A no-op unless `rows: full`.
    /// Counted like a row; cut at `max_row_bytes`.
    pub fn copy_data(&mut self, chunk: MaskedCopyChunk<'_>) {
        let Some(live) = &mut self.live else { return };
        if live.shared.rows != RecordRows::Full || live.health.failed.load(Ordering::Acquire) {
            return;
        }
        live.send_row_batch();
        if live.result_rows.dropped > 0 {
            live.drop_rows(1);
            return;
        }
        let kept = cut_value(chunk.data, live.shared.max_row_bytes);
        let truncated_from_bytes =
            (kept.len() < chunk.data.len()).then_some(chunk.data.len() as u64);
        let cost = kept.len() + EVENT_OVERHEAD_BYTES;
        if !live.reserve(cost, ROW_BACKLOG_LIMIT_BYTES) {
            live.drop_rows(1);
            return;
        }
        let payload = Payload::CopyData {
            direction: chunk.direction,
            data: kept.to_vec(),
            truncated_from_bytes,
        };
        if live.send_reserved(payload, cost) {
            live.result_rows.recorded += 1;
        }
    }

    /// Whether this session's recording has failed; the proxy then applies
    /// `recording.on_error` ([`Recorder::on_error`]).
    pub fn failed(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.health.failed.load(Ordering::Acquire))
    }

    /// A handle that answers [`failed`](Self::failed) for this recording
    /// without the recorder (a connection asks on every wake-up; the
    /// recorder is usually behind a lock). `None` when not recording.
    pub fn failure_flag(&self) -> Option<FailureFlag> {
        self.live.as_ref().map(|l| FailureFlag(l.health.clone()))
    }

    /// The failure, if any.
    pub fn failure(&self) -> Option<RecordingFailure> {
        self.live
            .as_ref()
            .and_then(|l| l.health.failure.borrow().clone())
    }

    /// A receiver that changes to `Some` when the recording fails, for a
    /// connection task's `select!` (`changed().await`).
    pub fn failure_watch(&self) -> watch::Receiver<Option<RecordingFailure>> {
        match &self.live {
            Some(live) => live.health.failure.subscribe(),
            // Never changes: a disabled recorder never fails.
            None => watch::Sender::new(None).subscribe(),
        }
    }

    /// Ends the recording: `session_end` with `reason` (`client_closed`,
    /// `server_closed`, `recording_failed`, …), then the trailer and fsync.
    pub fn end(mut self, reason: &str) {
        if let Some(live) = &mut self.live {
            live.end(reason);
        }
    }
}

impl Drop for SessionRecorder {
    fn drop(&mut self) {
        if let Some(live) = &mut self.live {
            live.end("connection_task_ended");
        }
    }
}

impl LiveSession {
    /// Nanoseconds since the session started (monotonic).
    pub(super) fn mono_ns(&self) -> u64 {
        let clock = &self.shared.clock;
        // 0 for a reading at or before the start (as a saturating difference).
        clock.delta_as_nanos(self.started, clock.raw())
    }

    /// Queues a command for the writer; false when the writer has shut down.
    pub(super) fn push(&self, command: SessionCommand) -> bool {
        let mut queue = self.queue.lock();
        if queue.closed {
            return false;
        }
        queue.commands.push(command);
        queue.warm_next();
        true
    }

    /// Claims `cost` bytes of the backlog if that keeps it under `limit`.
    pub(super) fn reserve(&self, cost: usize, limit: usize) -> bool {
        self.shared
            .backlog
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let after = queued.checked_add(cost)?;
                (after <= limit).then_some(after)
            })
            .is_ok()
    }

    /// What [`SessionRecorder::prepared_statement`] hands the writer: the
    /// statement in full the first time, its id afterwards (telling the
    /// writer to forget every id first when the map is full).
    #[inline]
    pub(super) fn prepared_payload(
        &mut self,
        sql: &Arc<str>,
        form: Submission,
        kinds: &Arc<[StatementKind]>,
        tables: &Arc<[String]>,
    ) -> Result<(Payload, usize), RecordError> {
        let address = Arc::as_ptr(sql).cast::<u8>() as usize;
        if let Some(sent) = self.sent_statements.get(&address)
            && sent.event.form == form
            && Arc::ptr_eq(&sent.event.kinds, kinds)
            && Arc::ptr_eq(&sent.event.tables, tables)
        {
            return Ok((Payload::Repeat(sent.id), sent.cost));
        }
        let (event, cost) = statement_event(sql, form, kinds, tables);
        if self.sent_statements.len() >= SENT_STATEMENTS_MAX
            || self.sent_bytes + cost > SENT_STATEMENT_BYTES_MAX
        {
            self.sent_statements.clear();
            self.sent_bytes = 0;
            self.send(Payload::ForgetStatements, 0)?;
        }
        let id = self.next_statement_id;
        self.next_statement_id = self.next_statement_id.wrapping_add(1);
        self.sent_bytes += cost;
        self.sent_statements.insert(
            address,
            SentStatement {
                id,
                event: event.clone(),
                cost,
            },
        );
        Ok((Payload::Prepared(id, Box::new(event)), cost))
    }

    /// Sends a payload whose cost is already reserved; false when the writer is gone.
    pub(super) fn send_reserved(&mut self, payload: Payload, cost: usize) -> bool {
        let command = SessionCommand::Append {
            mono_ns: self.mono_ns(),
            payload,
            cost,
        };
        if self.push(command) {
            return true;
        }
        self.shared.backlog.fetch_sub(cost, Ordering::AcqRel);
        self.health
            .fail(FailureKind::Closed, "the recorder is shut down".into());
        false
    }

    /// Queues a statement-level event: never dropped; fails the session when
    /// the backlog is past its hard limit.
    pub(super) fn send_event(
        &mut self,
        body: Body,
        payload_bytes: usize,
    ) -> Result<(), RecordError> {
        self.send(Payload::Event(Box::new(body)), payload_bytes)
    }

    /// [`send_event`](Self::send_event) for any statement-level payload.
    pub(super) fn send(
        &mut self,
        payload: Payload,
        payload_bytes: usize,
    ) -> Result<(), RecordError> {
        self.send_one_or_two((payload, payload_bytes), None, &[])
    }

    /// [`send`](Self::send) for two payloads recorded together or not at
    /// all, in this order: one backlog reservation, one clock read (they
    /// share a time) and one queue lock for both.
    pub(super) fn send_pair(
        &mut self,
        first: (Payload, usize),
        second: (Payload, usize),
    ) -> Result<(), RecordError> {
        self.send_one_or_two(first, Some(second), &[])
    }

    /// `text`: the text a [`Payload::Text`] first payload's range points
    /// into, copied into the queue with it (empty otherwise).
    // Inlined into its callers, so `send` (every result) carries no second
    // payload and no text, and `send_pair` no branch on a second payload.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn send_one_or_two(
        &mut self,
        (mut first, first_bytes): (Payload, usize),
        second: Option<(Payload, usize)>,
        text: &[u8],
    ) -> Result<(), RecordError> {
        self.fail_fast()?;
        self.send_row_batch();
        self.note_dropped_rows();
        let first_cost = first_bytes + EVENT_OVERHEAD_BYTES;
        let second_cost = second
            .as_ref()
            .map_or(0, |(_, bytes)| bytes + EVENT_OVERHEAD_BYTES);
        let total = first_cost + second_cost;
        if !self.reserve(total, BACKLOG_HARD_LIMIT_BYTES) {
            self.health.fail(
                FailureKind::Backlog,
                format!("more than {BACKLOG_HARD_LIMIT_BYTES} bytes of recording data waiting for the disk"),
            );
            self.abandon();
            return self.fail_fast();
        }
        let mono_ns = self.mono_ns();
        let pushed = {
            let mut queue = self.queue.lock();
            if !queue.closed {
                if let Payload::Text { sql, .. } = &mut first {
                    let at = queue.text.len();
                    queue.text.extend_from_slice(text);
                    *sql = at + sql.start..at + sql.end;
                }
                queue.commands.push(SessionCommand::Append {
                    mono_ns,
                    payload: first,
                    cost: first_cost,
                });
                if let Some((payload, _)) = second {
                    queue.commands.push(SessionCommand::Append {
                        mono_ns,
                        payload,
                        cost: second_cost,
                    });
                }
                queue.warm_next();
            }
            !queue.closed
        };
        if pushed {
            return Ok(());
        }
        self.shared.backlog.fetch_sub(total, Ordering::AcqRel);
        self.health
            .fail(FailureKind::Closed, "the recorder is shut down".into());
        self.fail_fast()
    }

    #[inline]
    pub(super) fn fail_fast(&self) -> Result<(), RecordError> {
        if !self.health.failed.load(Ordering::Acquire) {
            // The usual case, without the watch channel's lock.
            return Ok(());
        }
        self.failure_error()
    }

    #[cold]
    fn failure_error(&self) -> Result<(), RecordError> {
        match self.health.failure.borrow().clone() {
            Some(failure) => Err(RecordError::SessionFailed(failure)),
            None if self.health.failed.load(Ordering::Acquire) => Err(RecordError::Closed),
            None => Ok(()),
        }
    }

    /// Sends the rows waiting to become one `rows` event, if any (every
    /// statement-level event asks; usually there are none).
    #[inline]
    pub(super) fn send_row_batch(&mut self) {
        if let Some(mono_ns) = self.batch.first {
            self.send_rows_waiting(mono_ns);
        }
    }

    fn send_rows_waiting(&mut self, mono_ns: u64) {
        let batch = std::mem::take(&mut self.batch);
        let n = batch.rows.len() as u64;
        let cost = batch.value_bytes + batch.rows.len() * 16 + EVENT_OVERHEAD_BYTES;
        if self.health.failed.load(Ordering::Acquire) {
            return;
        }
        if !self.reserve(cost, ROW_BACKLOG_LIMIT_BYTES) {
            self.drop_rows(n);
            return;
        }
        let command = SessionCommand::Append {
            mono_ns,
            payload: Payload::Rows(batch.rows),
            cost,
        };
        if self.push(command) {
            self.result_rows.recorded += n;
        } else {
            self.shared.backlog.fetch_sub(cost, Ordering::AcqRel);
            self.health
                .fail(FailureKind::Closed, "the recorder is shut down".into());
        }
    }

    pub(super) fn drop_rows(&mut self, n: u64) {
        self.result_rows.dropped += n;
        recording_metrics().rows_dropped_total.inc_by(n);
    }

    /// Emits `rows_limit` when the current result lost rows.
    #[inline]
    pub(super) fn note_dropped_rows(&mut self) {
        if self.result_rows.dropped != 0 {
            self.send_rows_limit();
        }
    }

    fn send_rows_limit(&mut self) {
        let event = RowsLimitEvent {
            reason: RowsLimitReason::Backpressure,
            recorded_rows: self.result_rows.recorded,
            dropped_rows: self.result_rows.dropped,
        };
        self.result_rows = ResultRows::default();
        // Statement-level: it must not be lost, or the recording would
        // silently claim a complete result.
        if self.reserve(EVENT_OVERHEAD_BYTES, BACKLOG_HARD_LIMIT_BYTES) {
            self.send_reserved(
                Payload::Event(Box::new(Body::RowsLimit(event))),
                EVENT_OVERHEAD_BYTES,
            );
        } else {
            self.health.fail(
                FailureKind::Backlog,
                "recording backlog over its hard limit".into(),
            );
            self.abandon();
        }
    }

    /// The current result is over: send its rows and any `rows_limit`.
    pub(super) fn close_result_rows(&mut self) {
        if self.health.failed.load(Ordering::Acquire) {
            return;
        }
        self.send_row_batch();
        self.note_dropped_rows();
        self.result_rows = ResultRows::default();
    }

    /// Tells the writer to stop this recording without a trailer.
    pub(super) fn abandon(&mut self) {
        self.push(SessionCommand::Abandon);
    }

    pub(super) fn end(&mut self, reason: &str) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.close_result_rows();
        if self.health.failed.load(Ordering::Acquire) {
            self.abandon();
            return;
        }
        self.push(SessionCommand::Close {
            mono_ns: self.mono_ns(),
            reason: reason.into(),
        });
    }
}

/// A verdict as the writer takes it, and its payload bytes: an `allow`
/// (the usual one) without a heap allocation.
pub(super) fn verdict_payload(verdict: &Verdict) -> (Payload, usize) {
    if matches!(verdict, Verdict::Allow) {
        return (Payload::Allowed, 0);
    }
    let event = VerdictEvent::from(verdict);
    let cost =
        event.rule.as_ref().map_or(0, String::len) + event.message.as_ref().map_or(0, String::len);
    (Payload::Event(Box::new(Body::Verdict(event))), cost)
}
