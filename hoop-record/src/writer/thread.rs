//! The writer thread: opens recordings, encodes events, appends them to
//! the hash chain, flushes and fsyncs, and closes them with their trailer.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The most statement text capacity the writer keeps to swap into a queue.
const SPARE_TEXT_MAX: usize = 1 << 20;

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) opener: FileOpener,
    pub(super) key: Option<Vec<u8>>,
    pub(super) rows: RowsMode,
    pub(super) max_row_bytes: usize,
    pub(super) flush_interval: Duration,
    pub(super) retention: retention::RetentionPolicy,
    /// The spool in front of `recording.store`, when there is one.
    pub(super) spool: Option<Arc<Spool>>,
    pub(super) backlog: Arc<AtomicUsize>,
    pub(super) metrics: &'static RecordingMetrics,
    pub(super) sessions: HashMap<u64, OpenRecording, foldhash::fast::RandomState>,
    /// Every session queue still to collect, by session key.
    pub(super) queues: Vec<(u64, Arc<SessionQueue>)>,
    /// An empty `Vec` swapped into a queue as it is collected (keeps both
    /// allocations alive instead of growing a new one each tick).
    pub(super) spare: Vec<SessionCommand>,
    /// The same for the queues' statement texts.
    pub(super) spare_text: Vec<u8>,
}

/// One recording the writer is appending to.
pub(super) struct OpenRecording {
    pub(super) path: PathBuf,
    pub(super) session_id: String,
    pub(super) file: File,
    pub(super) buf: Vec<u8>,
    pub(super) chain: ChainWriter,
    pub(super) last_mono_ns: u64,
    /// When the session started, on both clocks: an event's `ts` is
    /// `started_at` plus its monotonic offset.
    pub(super) started: Instant,
    pub(super) started_at: SystemTime,
    /// `started_at` as seconds and nanoseconds since the Unix epoch (`None`
    /// before it), so an event's `ts` is two additions away.
    pub(super) started_since_epoch: Option<(u64, u32)>,
    /// The session's prepared statements, serialized, by the id it sends
    /// for them.
    /// (Shared, so an execution takes them out of the map with one lookup.)
    pub(super) statements: HashMap<u32, Arc<[u8]>, foldhash::fast::RandomState>,
    /// Scratch space for a line's `ts` and for a body serialized by hand.
    pub(super) ts: String,
    /// Formats the `ts` of lines serialized by hand straight into `buf`.
    pub(super) stamper: Rfc3339Stamper,
    /// The kinds and tables of the last simple statement, serialized.
    pub(super) statement_tail: Option<format::StatementTail>,
    pub(super) body: Vec<u8>,
    pub(super) totals: SessionTotals,
    pub(super) health: Arc<SessionHealth>,
    pub(super) spool: Option<Arc<Spool>>,
}

impl Drop for OpenRecording {
    /// The writer is done with the file (finished, abandoned or failed): the
    /// shipper may ship its last bytes and take it out of the spool.
    fn drop(&mut self) {
        if let Some(spool) = &self.spool {
            spool.closed(&self.path);
        }
    }
}

impl Writer {
    pub(super) fn run(mut self, inbox: &mpsc::Receiver<Command>) {
        // The writer polls its inbox and the session queues on a short tick
        // instead of blocking: a sender then never has to wake this thread,
        // so recording costs the hot path no syscall and no cross-CPU
        // wake-up per event. Events still reach the disk within
        // `flush_interval`: everything queued is collected right before
        // every flush.
        let tick =
            (self.flush_interval / 4).clamp(Duration::from_millis(1), Duration::from_millis(50));
        let mut next_flush = Instant::now() + self.flush_interval;
        let mut next_retention = Instant::now() + RETENTION_INTERVAL;
        loop {
            std::thread::sleep(tick.min(next_flush.saturating_duration_since(Instant::now())));
            loop {
                match inbox.try_recv() {
                    Ok(Command::Shutdown(done)) => {
                        self.close_all("recorder_shutdown");
                        self.hand_over(done);
                        return;
                    }
                    Ok(command) => self.handle(command),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.close_all("recorder_dropped");
                        self.hand_over(oneshot::channel().0);
                        return;
                    }
                }
            }
            self.collect_queues();
            let now = Instant::now();
            if now >= next_flush {
                self.flush_all();
                next_flush = now + self.flush_interval;
            }
            if now >= next_retention {
                self.enforce_retention();
                next_retention = now + RETENTION_INTERVAL;
            }
        }
    }

    /// After the last recording is closed: the shipper ships the spool and
    /// answers `done` (at once without a store).
    fn hand_over(&self, done: oneshot::Sender<()>) {
        match &self.spool {
            Some(spool) => spool.finish(done),
            None => {
                let _ = done.send(());
            }
        }
    }

    pub(super) fn handle(&mut self, command: Command) {
        match command {
            Command::Open {
                key,
                identity,
                at,
                started,
                health,
                queue,
            } => {
                self.open(key, *identity, (started, at), health);
                self.queues.push((key, queue));
            }
            Command::Flush(done) => {
                self.collect_queues();
                self.flush_all();
                let _ = done.send(());
            }
            Command::Retention(done) => {
                // Sessions closed before the request are no longer open.
                self.collect_queues();
                self.enforce_retention();
                let _ = done.send(());
            }
            Command::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    /// Handles everything the sessions queued, in each session's order;
    /// forgets the queues whose sessions are gone.
    pub(super) fn collect_queues(&mut self) {
        let mut i = 0;
        while i < self.queues.len() {
            let (key, queue) = &self.queues[i];
            let key = *key;
            let mut batch = std::mem::take(&mut self.spare);
            let mut text = std::mem::take(&mut self.spare_text);
            let gone = {
                let mut inner = queue.lock();
                std::mem::swap(&mut inner.commands, &mut batch);
                std::mem::swap(&mut inner.text, &mut text);
                // Only the writer holds it: nothing more can be pushed.
                Arc::strong_count(queue) == 1
            };
            // The batch's bytes leave the backlog at once (one atomic
            // operation per queue and tick, not one per event).
            let cost: usize = batch
                .iter()
                .map(|command| match command {
                    SessionCommand::Append { cost, .. } => *cost,
                    SessionCommand::Close { .. } | SessionCommand::Abandon => 0,
                })
                .sum();
            if cost > 0 {
                self.backlog.fetch_sub(cost, Ordering::AcqRel);
            }
            self.handle_batch(key, &mut batch, &text);
            self.spare = batch;
            // Kept for the next swap unless a burst of long texts grew it.
            if text.capacity() <= SPARE_TEXT_MAX {
                text.clear();
                self.spare_text = text;
            }
            if gone {
                self.queues.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Handles one collected batch of a session's commands, in order (and
    /// leaves `batch` empty). The recording is taken out of the map once
    /// per batch, not looked up per command.
    /// `text` holds the texts of its [`Payload::Text`] statements.
    pub(super) fn handle_batch(&mut self, key: u64, batch: &mut Vec<SessionCommand>, text: &[u8]) {
        // `None`: unknown key (the file could not be created, or the
        // recording was abandoned), or closed, abandoned or failed during
        // this batch: what follows is dropped, as a lookup would find
        // nothing.
        let mut recording = self.sessions.remove(&key);
        for command in batch.drain(..) {
            match command {
                // Its cost left the backlog when its batch was collected.
                SessionCommand::Append {
                    mono_ns, payload, ..
                } => {
                    if let Some(r) = &mut recording
                        && !self.append_to(r, mono_ns, payload, text)
                    {
                        recording = None;
                    }
                }
                SessionCommand::Close { mono_ns, reason } => {
                    if let Some(mut r) = recording.take() {
                        self.finish(&mut r, mono_ns, reason);
                    }
                }
                SessionCommand::Abandon => {
                    if let Some(mut r) = recording.take() {
                        // Everything appended so far is sound; write it, add no trailer.
                        self.write_out(&mut r);
                    }
                }
            }
        }
        if let Some(r) = recording {
            self.sessions.insert(key, r);
        }
    }

    /// Retention, sparing every recording still open.
    pub(super) fn enforce_retention(&self) {
        let open: HashSet<PathBuf> = self.sessions.values().map(|r| r.path.clone()).collect();
        run_retention(&self.dir, &open, &self.retention);
    }

    pub(super) fn open(
        &mut self,
        key: u64,
        identity: RecordedIdentity,
        (started, at): (Instant, SystemTime),
        health: Arc<SessionHealth>,
    ) {
        let stem = recording_id(at, &identity.id);
        let mut attempt = 1;
        let (path, file) = loop {
            let name = if attempt == 1 {
                stem.clone()
            } else {
                format!("{stem}-{attempt}")
            };
            let path = self.dir.join(format!("{name}.{FILE_EXTENSION}"));
            if let Some(spool) = &self.spool {
                spool.opening(&path);
            }
            let opened = (self.opener)(&path);
            if opened.is_err()
                && let Some(spool) = &self.spool
            {
                spool.forget(&path);
            }
            match opened {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(session = %identity.id, path = %path.display(), error = %e, "cannot create recording");
                    health.fail(
                        FailureKind::Create,
                        format!("cannot create {}: {e}", path.display()),
                    );
                    return;
                }
            }
        };
        let session_id = identity.id.clone();
        let mut recording = OpenRecording {
            path,
            chain: ChainWriter::new(&session_id),
            session_id: session_id.clone(),
            file,
            buf: Vec::with_capacity(8 << 10),
            last_mono_ns: 0,
            started,
            started_at: at,
            started_since_epoch: at
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| (d.as_secs(), d.subsec_nanos())),
            statements: HashMap::default(),
            ts: String::new(),
            stamper: Rfc3339Stamper::default(),
            statement_tail: None,
            body: Vec::new(),
            totals: SessionTotals::default(),
            health,
            spool: self.spool.clone(),
        };
        let header = Header {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            session_id,
            writer: concat!("hoop ", env!("CARGO_PKG_VERSION")).into(),
            rows: self.rows,
            max_row_bytes: self.max_row_bytes as u64,
        };
        recording.push(0, &Body::Header(header), self.metrics);
        recording.push(
            0,
            &Body::SessionStart(SessionStart { identity }),
            self.metrics,
        );
        self.sessions.insert(key, recording);
    }

    /// The event a payload stands for. Prepared statements and short
    /// results are written from their serialized bytes by
    /// [`append`](Self::append) and never reach here.
    pub(super) fn encode(payload: Payload) -> Body {
        match payload {
            Payload::Event(body) => *body,
            Payload::Statement(event) => Body::Statement(event),
            Payload::Prepared(..)
            | Payload::Repeat(_)
            | Payload::ForgetStatements
            | Payload::Text { .. }
            | Payload::Allowed
            | Payload::Result { .. } => unreachable!("handled by Writer::append"),
            Payload::Rows(rows) => {
                let mut truncated = Vec::new();
                let rows = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, row)| {
                        if let Some(original_bytes) = row.original_bytes {
                            truncated.push(TruncatedRow {
                                row: i as u32,
                                original_bytes,
                            });
                        }
                        row.values
                            .into_iter()
                            .map(|v| v.map(|v| Cell::from_bytes(&v)))
                            .collect()
                    })
                    .collect();
                Body::Rows(RowsEvent { rows, truncated })
            }
            Payload::CopyData {
                direction,
                data,
                truncated_from_bytes,
            } => Body::CopyData(CopyDataEvent {
                direction,
                data: Cell::from_bytes(&data),
                truncated_from_bytes,
            }),
        }
    }

    /// Appends one payload to `recording`, writing its buffer out when it
    /// is full; false when that write failed (the caller must stop writing
    /// the recording).
    pub(super) fn append_to(
        &self,
        recording: &mut OpenRecording,
        mono_ns: u64,
        payload: Payload,
        text: &[u8],
    ) -> bool {
        match payload {
            Payload::Prepared(id, event) => {
                // Serialized once; every execution reuses the bytes.
                let mut json = Vec::new();
                format::serialize_statement_body(&event, &mut json);
                recording.push_statement(mono_ns, &json, self.metrics);
                recording.statements.insert(id, json.into());
            }
            Payload::Repeat(id) => {
                let Some(json) = recording.statements.get(&id).cloned() else {
                    // The session sends an id only after the statement itself.
                    tracing::error!(session = %recording.session_id, id, "recording: execution of an unknown prepared statement");
                    return true;
                };
                recording.push_statement(mono_ns, &json, self.metrics);
            }
            Payload::ForgetStatements => recording.statements.clear(),
            Payload::Allowed => {
                recording.push_serialized(mono_ns, format::ALLOW_VERDICT_BODY, self.metrics);
            }
            Payload::Result { tag, rows } => {
                let mut body = std::mem::take(&mut recording.body);
                body.clear();
                format::serialize_result_body_utf8(tag.as_bytes(), rows, &mut body);
                recording.push_serialized(mono_ns, &body, self.metrics);
                recording.body = body;
            }
            Payload::Text {
                sql,
                form,
                kinds,
                tables,
            } => {
                // The session queued the range with the text, under one lock.
                let sql = text.get(sql).unwrap_or_else(|| {
                    tracing::error!(session = %recording.session_id, "recording: a statement's text is missing from its queue");
                    &[]
                });
                let mut json = std::mem::take(&mut recording.body);
                json.clear();
                format::serialize_statement_text_reusing(
                    sql,
                    form,
                    (&kinds, &tables),
                    &mut recording.statement_tail,
                    &mut json,
                );
                recording.push_statement(mono_ns, &json, self.metrics);
                recording.body = json;
            }
            Payload::Statement(event) => {
                let mut json = std::mem::take(&mut recording.body);
                json.clear();
                format::serialize_statement_body_reusing(
                    &event,
                    &mut recording.statement_tail,
                    &mut json,
                );
                recording.push_statement(mono_ns, &json, self.metrics);
                recording.body = json;
            }
            payload => recording.push(mono_ns, &Writer::encode(payload), self.metrics),
        }
        recording.buf.len() < WRITE_BUFFER_BYTES || self.write_out(recording)
    }

    /// `session_end`, trailer, write, fsync file and directory.
    pub(super) fn finish(&self, recording: &mut OpenRecording, mono_ns: u64, reason: String) {
        let totals = recording.totals;
        recording.push(
            mono_ns,
            &Body::SessionEnd(SessionEndEvent { reason, totals }),
            self.metrics,
        );
        let mono_ns = recording.last_mono_ns;
        recording.stamp(mono_ns);
        recording.chain.append_trailer(
            &mut recording.buf,
            mono_ns,
            &recording.ts,
            self.key.as_deref(),
        );
        self.metrics.events_total.inc();
        if !self.write_out(recording) {
            return;
        }
        let synced = recording
            .file
            .sync_all()
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(e) = synced {
            tracing::error!(session = %recording.session_id, path = %recording.path.display(), error = %e, "cannot fsync recording");
            recording.health.fail(
                FailureKind::Sync,
                format!("fsync {}: {e}", recording.path.display()),
            );
        }
    }

    /// Writes a recording's buffer to its file. On failure raises the
    /// session's signal and returns false: the caller must stop writing it.
    pub(super) fn write_out(&self, recording: &mut OpenRecording) -> bool {
        write_buffer(self.metrics, recording)
    }

    pub(super) fn flush_all(&mut self) {
        let mut failed = Vec::new();
        for (key, recording) in &mut self.sessions {
            if !recording.buf.is_empty() && !write_buffer(self.metrics, recording) {
                failed.push(*key);
            }
        }
        for key in failed {
            self.sessions.remove(&key);
        }
    }

    pub(super) fn close_all(&mut self, reason: &str) {
        // Refuse what sessions push from now on (they fail as `Closed`),
        // then write what they queued before.
        for (_, queue) in &self.queues {
            queue.lock().closed = true;
        }
        self.collect_queues();
        self.queues.clear();
        let sessions: Vec<(u64, OpenRecording)> = self.sessions.drain().collect();
        for (_, mut recording) in sessions {
            let mono_ns = u64::try_from(recording.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.finish(&mut recording, mono_ns, reason.into());
        }
    }
}

/// Writes `recording.buf` to its file; false (and the session failed) on error.
pub(super) fn write_buffer(
    metrics: &'static RecordingMetrics,
    recording: &mut OpenRecording,
) -> bool {
    if let Some(spool) = &recording.spool
        && !spool.reserve(recording.buf.len())
    {
        tracing::error!(session = %recording.session_id, limit = spool.limit(), "recording spool full: the store is not taking recordings");
        recording.health.fail(
            FailureKind::Spool,
            format!(
                "the recording spool holds recording.spool_max_bytes ({} bytes) not yet shipped to recording.store",
                spool.limit()
            ),
        );
        recording.buf.clear();
        return false;
    }
    let started = Instant::now();
    let result = recording.file.write_all(&recording.buf);
    metrics
        .flush_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            metrics.bytes_total.inc_by(recording.buf.len() as u64);
            recording.buf.clear();
            true
        }
        Err(e) => {
            tracing::error!(session = %recording.session_id, path = %recording.path.display(), error = %e, "cannot write recording");
            recording.health.fail(
                FailureKind::Write,
                format!("write {}: {e}", recording.path.display()),
            );
            recording.buf.clear();
            false
        }
    }
}

/// `(secs, nanos)` since the epoch plus `mono_ns`, normalized; `None` on overflow.
pub(super) fn since_epoch_after((secs, nanos): (u64, u32), mono_ns: u64) -> Option<(u64, u32)> {
    const NANOS_PER_SEC: u64 = 1_000_000_000;
    let nanos = mono_ns.checked_add(u64::from(nanos))?;
    let secs = secs.checked_add(nanos / NANOS_PER_SEC)?;
    Some((secs, (nanos % NANOS_PER_SEC) as u32))
}

impl OpenRecording {
    /// The wall-clock time of an event `mono_ns` into the session.
    pub(super) fn wall_clock(&self, mono_ns: u64) -> SystemTime {
        self.started_at + Duration::from_nanos(mono_ns)
    }

    /// Formats the `ts` of an event `mono_ns` into the session into `self.ts`:
    /// [`wall_clock`](Self::wall_clock) in RFC 3339, computed from the start's
    /// seconds and nanoseconds since the epoch with integer arithmetic.
    pub(super) fn stamp(&mut self, mono_ns: u64) {
        match self
            .started_since_epoch
            .and_then(|start| since_epoch_after(start, mono_ns))
        {
            Some((secs, nanos)) => rfc3339_since_epoch_into(secs, nanos, &mut self.ts),
            None => rfc3339_into(self.wall_clock(mono_ns), &mut self.ts),
        }
    }

    /// Appends a `statement` line whose body is serialized already.
    pub(super) fn push_statement(&mut self, mono_ns: u64, body: &[u8], metrics: &RecordingMetrics) {
        self.totals.statements += 1;
        self.push_serialized(mono_ns, body, metrics);
    }

    /// Appends a line whose body is serialized already (and counted in the
    /// totals by the caller).
    pub(super) fn push_serialized(
        &mut self,
        mono_ns: u64,
        body: &[u8],
        metrics: &RecordingMetrics,
    ) {
        let mono_ns = mono_ns.max(self.last_mono_ns);
        self.last_mono_ns = mono_ns;
        if let Some(at) = self
            .started_since_epoch
            .and_then(|start| since_epoch_after(start, mono_ns))
        {
            // The usual case: the time formatted straight into the line.
            self.chain.append_serialized_since_epoch(
                &mut self.buf,
                mono_ns,
                &mut self.stamper,
                at,
                body,
            );
        } else {
            self.stamp(mono_ns);
            self.chain
                .append_serialized_rfc3339(&mut self.buf, mono_ns, &self.ts, body);
        }
        metrics.events_total.inc();
    }

    /// Appends one chained line to the buffer and updates the totals.
    pub(super) fn push(&mut self, mono_ns: u64, body: &Body, metrics: &RecordingMetrics) {
        // mono_ns of batched rows is their first row's time, which can precede
        // an event queued between; keep the file's clock non-decreasing.
        let mono_ns = mono_ns.max(self.last_mono_ns);
        self.last_mono_ns = mono_ns;
        match body {
            Body::Statement(_) => self.totals.statements += 1,
            Body::Verdict(v) if v.verdict == VerdictKind::Deny => self.totals.denied += 1,
            Body::Verdict(v) if v.verdict == VerdictKind::Hold => self.totals.held += 1,
            Body::Error(_) => self.totals.errors += 1,
            Body::Rows(r) => self.totals.rows_recorded += r.rows.len() as u64,
            Body::CopyData(_) => self.totals.rows_recorded += 1,
            Body::RowsLimit(l) => self.totals.rows_dropped += l.dropped_rows,
            _ => {}
        }
        self.stamp(mono_ns);
        self.chain.append(&mut self.buf, mono_ns, &self.ts, body);
        metrics.events_total.inc();
    }
}
