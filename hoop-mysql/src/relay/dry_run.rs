//! `max_rows` dry runs on MySQL/MariaDB: a statement a rule with `max_rows`
//! matches runs inside a transaction hoop opens (or, inside the client's own
//! transaction or with autocommit off, under a savepoint), its reply held
//! back; its row count is judged
//! ([`SessionGovernor::judge_counted`](hoop_core::SessionGovernor::judge_counted))
//! and then:
//! - allowed: hoop's transaction is committed (or the savepoint released)
//!   and the held-back reply goes to the client, its status flags showing
//!   the transaction state the client has afterwards; a failing `COMMIT`
//!   replaces the reply with its error;
//! - denied: everything the statement did is rolled back and the client
//!   gets the rule's error with the count;
//! - held: rolled back and held with the count in the hold's message; once
//!   approved it runs again as a dry run (a COM_STMT_EXECUTE is sent again
//!   as it came, unless its parameters came as long data, which the first
//!   run consumed: then it is refused), and is refused if it now touches
//!   more rows than the approver saw.
//!
//! The count is the larger of the statement's own (the OK's affected rows,
//! or the rows of its result set) and the rows the session's handler
//! counters (`Handler_write + Handler_update + Handler_delete`, `SHOW
//! SESSION STATUS`) moved by while it ran, so rows its triggers write count
//! too. Those counters do not see what InnoDB's foreign-key cascades do,
//! and a rollback cannot undo a write to a table in a non-transactional
//! engine: before anything runs, hoop reads from the server what the
//! statement writes, and a statement it cannot count or roll back is judged
//! as over the limit (fail closed) with the reason in its message, without
//! being run:
//! - a table it writes (or a trigger on it may write) whose engine has no
//!   transactions (MyISAM, Aria — the `mysql.*` tables —, MEMORY, CSV…),
//!   a view, a temporary table, or a table hoop cannot find;
//! - a table it deletes from (DELETE, REPLACE) or updates (UPDATE, INSERT …
//!   ON DUPLICATE KEY UPDATE) that a foreign key references with an action
//!   other than RESTRICT / NO ACTION (the cascade is not counted);
//! - a trigger whose body hoop cannot read, or that runs other code;
//! - a call of a stored function or UDF, a prepared statement executed with
//!   a cursor, and a statement that reads the previous statement's
//!   diagnostics (hoop's own queries would reset them).
//!
//! hoop's own statements (`START TRANSACTION`, `SAVEPOINT`, the counter and
//! catalog reads) are sent as injected commands: their replies never reach
//! the client, the governor never sees them, and the session's state
//! tracking reads their status flags as the server's.

use bytes::Bytes;
use hoop_core::{
    Denial, HoldRequirement, Refusal, ServerText, ServerTextKind, SessionEvent, StatementContext,
    Submission, Verdict,
};
use hoop_proto_mysql::{
    command::Command, err::ErrPacket, frame::LogicalPacket, ok::OkPacket, session::ServerPacket,
    status::StatusFlags, wire::Reader,
};
use tracing::info;

mod targets;

pub(super) use targets::note_table_locks;
use targets::{Target, Write, literal, plain_name, quoted, statement_targets, trigger_targets};

use super::{ReplyFor, RowState, SIGNAL_EXCEPTION, lossy, server_state, transaction};
use crate::{SessionError, refusal, startup::server_read_error};

/// The savepoint a dry run runs under inside the client's transaction.
const SAVEPOINT: &str = "hoop_dry_run";
/// Most bytes of a statement's reply held back while its rows are counted.
const MAX_CAPTURE: usize = 16 * 1024 * 1024;
/// The session's handler counters: rows written, updated and deleted in any
/// table (MariaDB counts its own temporary tables apart, in
/// `Handler_tmp_*`, so this read does not move them; measured on 10.11).
const WRITES: &str = "SHOW SESSION STATUS WHERE Variable_name IN ('Handler_write', 'Handler_update', 'Handler_delete')";
/// Most tables one dry run checks (the statement's, and those triggers
/// write, transitively).
const MAX_TABLES: usize = 32;
/// The transaction bits of the status flags.
const TRANSACTION_BITS: u16 =
    StatusFlags::IN_TRANS.0 | StatusFlags::AUTOCOMMIT.0 | StatusFlags::IN_TRANS_READONLY.0;

/// How hoop wraps the dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrap {
    /// Autocommit on and no transaction open: hoop's own `START
    /// TRANSACTION`, then `COMMIT` or `ROLLBACK`.
    Own,
    /// A savepoint; `open`: inside a transaction that was open before
    /// (otherwise autocommit is off and none was: a refusal rolls back
    /// the transaction the dry run started, leaving none, as before).
    Savepoint { open: bool },
}

/// One dry run's outcome.
enum Attempt {
    /// The statement's reply to send (payloads, renumbered when sent).
    Replies(Vec<Bytes>),
    /// The count is not needed after all (the rule no longer applies):
    /// forward the statement as usual.
    Forward,
    /// Refused (nothing of it remains).
    Refused(Refusal),
    /// Over a hold rule's limit, rolled back: hold it (with its count,
    /// when it was counted).
    Hold(HoldRequirement, Option<u64>),
}

/// The held-back reply of the statement.
#[derive(Default)]
struct Captured {
    /// Payloads, each with the offset of its status flags (OK, EOF).
    packets: Vec<(Bytes, Option<usize>)>,
    len: usize,
    /// It did not fit in [`MAX_CAPTURE`].
    overflow: bool,
    /// It ended with ERR.
    failed: bool,
    /// Rows of its result sets.
    rows: u64,
    /// Affected rows of its OKs.
    affected: u64,
    /// A row masking refused, or a file request refused.
    refusal: Option<Refusal>,
}

/// Where an OK or EOF payload keeps its status flags.
fn status_offset(payload: &[u8], classic_eof: bool) -> Option<usize> {
    if classic_eof {
        return (payload.len() >= 5).then_some(3);
    }
    let mut r = Reader::new(payload);
    r.u8("OK header").ok()?;
    r.lenenc_int("OK affected rows").ok()?;
    r.lenenc_int("OK last insert id").ok()?;
    let at = r.position();
    (payload.len() >= at + 2).then_some(at)
}

/// `payload` with the transaction bits of its status flags (at `at`) set
/// to those of `status`.
fn with_transaction_bits(payload: &Bytes, at: usize, status: StatusFlags) -> Bytes {
    let mut v = payload.to_vec();
    let old = u16::from_le_bytes([v[at], v[at + 1]]);
    let new = (old & !TRANSACTION_BITS) | (status.0 & TRANSACTION_BITS);
    v[at..at + 2].copy_from_slice(&new.to_le_bytes());
    Bytes::from(v)
}

type Rows = Vec<Vec<Option<Vec<u8>>>>;

fn text(v: Option<&Option<Vec<u8>>>) -> String {
    v.and_then(Option::as_ref)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

impl super::Relay {
    /// A query of hoop's own: its rows, or the server's ERR payload.
    async fn internal(&mut self, sql: &str) -> Result<Result<Rows, Bytes>, SessionError> {
        crate::startup::injected_query(&mut self.server, &mut self.session, sql).await
    }

    /// A query of hoop's own whose failure ends the session (the server
    /// connection closes, and the server rolls back what is open): used
    /// where continuing could keep what a dry run did.
    async fn internal_or_end(&mut self, sql: &str) -> Result<(), SessionError> {
        match self.internal(sql).await? {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = ErrPacket::parse(&e)
                    .map(|e| lossy(&e.message))
                    .unwrap_or_default();
                Err(SessionError::Unsupported(format!(
                    "hoop's `{sql}` after a max_rows dry run failed ({message}); the session ends so that the server rolls the dry run back"
                )))
            }
        }
    }

    /// The handler counters' sum, `None` when they cannot be read.
    async fn writes(&mut self) -> Result<Option<u64>, SessionError> {
        let Ok(rows) = self.internal(WRITES).await? else {
            return Ok(None);
        };
        if rows.len() != 3 {
            return Ok(None);
        }
        let mut sum = 0u64;
        for row in &rows {
            let Some(n) = text(row.get(1)).parse::<u64>().ok() else {
                return Ok(None);
            };
            sum = sum.saturating_add(n);
        }
        Ok(Some(sum))
    }

    /// Checks every table the statement writes, and those triggers on them
    /// write, before the dry run: `Err` says why it cannot be run.
    async fn check_tables(
        &mut self,
        mut work: Vec<Target>,
    ) -> Result<Result<(), String>, SessionError> {
        let mut seen: Vec<(Option<String>, String, Write)> = Vec::new();
        while let Some(t) = work.pop() {
            let key = (
                t.schema.as_ref().map(|s| s.to_lowercase()),
                t.name.to_lowercase(),
                t.write,
            );
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            if seen.len() > MAX_TABLES {
                return Ok(Err(format!(
                    "it writes more than {MAX_TABLES} tables, with its triggers"
                )));
            }
            let name = match plain_name(&t.name) {
                Ok(n) => n.to_owned(),
                Err(e) => return Ok(Err(e)),
            };
            let schema = match t.schema.as_deref().map(plain_name).transpose() {
                Ok(s) => s.map(str::to_owned),
                Err(e) => return Ok(Err(e)),
            };
            let shown = schema
                .as_ref()
                .map_or_else(|| name.clone(), |s| format!("{s}.{name}"));
            // The table the server resolves the name to: a temporary table
            // shadows a base table of the same name, and information_schema
            // does not list it.
            let show = match &schema {
                Some(s) => format!("SHOW CREATE TABLE {}.{}", quoted(s), quoted(&name)),
                None => format!("SHOW CREATE TABLE {}", quoted(&name)),
            };
            let Ok(created) = self.internal(&show).await? else {
                return Ok(Err(format!("hoop cannot find the table {shown} it writes")));
            };
            let definition = text(created.first().and_then(|r| r.get(1))).to_ascii_uppercase();
            if definition.starts_with("CREATE TEMPORARY") {
                return Ok(Err(format!(
                    "it writes the temporary table {shown}, which hoop cannot check"
                )));
            }
            if !definition.starts_with("CREATE TABLE") {
                return Ok(Err(format!(
                    "it writes {shown}, which is not a base table (a view or a sequence) and hoop does not resolve it"
                )));
            }
            let schema_sql = schema
                .as_deref()
                .map_or_else(|| "DATABASE()".to_owned(), literal);
            let query = format!(
                "SELECT t.TABLE_SCHEMA, t.TABLE_TYPE, t.ENGINE, e.TRANSACTIONS \
                 FROM information_schema.TABLES t LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
                 WHERE t.TABLE_SCHEMA = {schema_sql} AND t.TABLE_NAME = {}",
                literal(&name)
            );
            let Ok(rows) = self.internal(&query).await? else {
                return Ok(Err(format!(
                    "hoop could not read the catalog entry of {shown}"
                )));
            };
            if rows.is_empty() {
                return Ok(Err(format!("hoop cannot find the table {shown} it writes")));
            }
            // (Names compare without case here: every match is checked.)
            for row in &rows {
                let table_schema = text(row.first());
                if let Err(e) = plain_name(&table_schema) {
                    return Ok(Err(e));
                }
                let kind = text(row.get(1));
                let engine = text(row.get(2));
                if kind != "BASE TABLE" {
                    return Ok(Err(format!(
                        "it writes {table_schema}.{name}, a {} hoop does not resolve",
                        kind.to_lowercase()
                    )));
                }
                if text(row.get(3)) != "YES" {
                    return Ok(Err(format!(
                        "it writes {table_schema}.{name}, whose engine {engine} has no transactions: a dry run could not be rolled back"
                    )));
                }
                let cascades = match self.cascades(&table_schema, &name, t.write).await? {
                    Ok(c) => c,
                    Err(why) => return Ok(Err(why)),
                };
                if !cascades.is_empty() {
                    return Ok(Err(format!(
                        "foreign keys act on rows of {table_schema}.{name} ({cascades}), and the server does not count the rows they change"
                    )));
                }
                let triggers = format!(
                    "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS \
                     WHERE EVENT_OBJECT_SCHEMA = {} AND EVENT_OBJECT_TABLE = {}",
                    literal(&table_schema),
                    literal(&name)
                );
                let Ok(triggers) = self.internal(&triggers).await? else {
                    return Ok(Err(format!("hoop could not read the triggers of {shown}")));
                };
                for trigger in &triggers {
                    let trigger_schema = text(trigger.first());
                    let trigger_name = text(trigger.get(1));
                    let body = text(trigger.get(2));
                    match trigger_targets(&body, &trigger_schema) {
                        Ok(more) => work.extend(more),
                        Err(why) => {
                            return Ok(Err(format!(
                                "the trigger {trigger_schema}.{trigger_name} on {table_schema}.{name} cannot be checked: {why}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// The foreign keys that act on rows of `schema.table` when `write`
    /// deletes or updates them (CASCADE, SET NULL, SET DEFAULT), described;
    /// empty when none. InnoDB's own dictionary answers in a tenth of a
    /// millisecond (`INNODB_SYS_FOREIGN`, which needs the PROCESS
    /// privilege); `REFERENTIAL_CONSTRAINTS`, which opens every table of
    /// every schema to find the referencing ones, takes milliseconds, and
    /// is asked when the first cannot be, or the names are not plain.
    async fn cascades(
        &mut self,
        schema: &str,
        table: &str,
        write: Write,
    ) -> Result<Result<String, String>, SessionError> {
        let (delete, update) = match write {
            Write::Insert => return Ok(Ok(String::new())),
            Write::Delete => (true, false),
            Write::Update => (false, true),
            Write::Any => (true, true),
        };
        // InnoDB's dictionary names tables `schema/table`, other characters
        // encoded (`@002d`): only plain names are looked up there.
        let simple = |n: &str| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if simple(schema) && simple(table) {
            let query = format!(
                "SELECT ID, TYPE FROM information_schema.INNODB_SYS_FOREIGN WHERE REF_NAME = '{schema}/{table}'"
            );
            if let Ok(rows) = self.internal(&query).await? {
                let mut found = Vec::new();
                for row in &rows {
                    let id = text(row.first());
                    let Ok(kind) = text(row.get(1)).parse::<u32>() else {
                        return Ok(Err(format!(
                            "hoop could not read the foreign keys referencing {schema}.{table}"
                        )));
                    };
                    // dict0mem.h: ON DELETE CASCADE 1, SET NULL 2; ON UPDATE
                    // CASCADE 4, SET NULL 8 (NO ACTION 16/32, RESTRICT 0).
                    for (applies, bit, what) in [
                        (delete, 1, "ON DELETE CASCADE"),
                        (delete, 2, "ON DELETE SET NULL"),
                        (update, 4, "ON UPDATE CASCADE"),
                        (update, 8, "ON UPDATE SET NULL"),
                    ] {
                        if applies && kind & bit != 0 {
                            found.push(format!("{id} {what}"));
                        }
                    }
                }
                return Ok(Ok(found.join(", ")));
            }
        }
        let mut found = Vec::new();
        for (applies, column) in [(delete, "DELETE"), (update, "UPDATE")] {
            if !applies {
                continue;
            }
            let query = format!(
                "SELECT CONCAT(CONSTRAINT_SCHEMA, '.', TABLE_NAME, ' ', CONSTRAINT_NAME, ' ON {column} ', {column}_RULE) \
                 FROM information_schema.REFERENTIAL_CONSTRAINTS \
                 WHERE UNIQUE_CONSTRAINT_SCHEMA = {} AND REFERENCED_TABLE_NAME = {} \
                 AND {column}_RULE NOT IN ('RESTRICT', 'NO ACTION')",
                literal(schema),
                literal(table)
            );
            let Ok(rows) = self.internal(&query).await? else {
                return Ok(Err(format!(
                    "hoop could not read the foreign keys referencing {schema}.{table}"
                )));
            };
            found.extend(rows.iter().map(|r| text(r.first())));
        }
        Ok(Ok(found.join(", ")))
    }

    /// The verdict for a statement whose rows cannot be counted: judged as
    /// over every limit, the reason added to the rule's message.
    fn uncounted(&mut self, reply: &ReplyFor, why: &str) -> Attempt {
        let name = reply.statement_id.map(|id| id.to_string());
        let ctx = StatementContext {
            identity: &self.identity,
            sql: &reply.sql,
            submission: reply.submission,
            statement_name: name.as_deref(),
            portal: None,
            statement_index: 0,
            transaction: transaction(self.session.transaction()),
        };
        let note = format!(" (hoop cannot dry-run this statement to count its rows: {why})");
        info!(session = %self.identity, why, "max_rows dry run impossible");
        match self.governor.judge_counted(&ctx, None) {
            Verdict::Allow => Attempt::Forward,
            Verdict::Deny(mut d) => {
                d.message.push_str(&note);
                Attempt::Refused(Refusal::denied(&d))
            }
            Verdict::Hold(mut h) => {
                h.message.push_str(&note);
                Attempt::Hold(h, None)
            }
        }
    }

    /// Runs the client's command as a dry run once (`approved`: an approver
    /// saw this many rows).
    async fn attempt(
        &mut self,
        packet: &LogicalPacket,
        command: &Command<'_>,
        reply: &ReplyFor,
        approved: Option<u64>,
    ) -> Result<Attempt, SessionError> {
        if let Command::StmtExecute(e) = command
            && e.wants_cursor()
        {
            return Ok(self.uncounted(
                reply,
                "it is a prepared statement executed with a cursor, whose rows are fetched later",
            ));
        }
        let targets = match statement_targets(&reply.sql) {
            Ok(t) => t,
            Err(why) => return Ok(self.uncounted(reply, &why)),
        };
        if let Err(why) = self.check_tables(targets).await? {
            return Ok(self.uncounted(reply, &why));
        }
        let before = self.session.status();
        let transaction_before = transaction(self.session.transaction());
        let in_transaction = before.contains(StatusFlags::IN_TRANS)
            || before.contains(StatusFlags::IN_TRANS_READONLY);
        let wrap = if before.contains(StatusFlags::AUTOCOMMIT) && !in_transaction {
            Wrap::Own
        } else {
            Wrap::Savepoint {
                open: in_transaction,
            }
        };
        if wrap == Wrap::Own && self.table_locks {
            return Ok(self.uncounted(
                reply,
                "the session may hold LOCK TABLES locks, which hoop's START TRANSACTION would release; UNLOCK TABLES first, or open a transaction",
            ));
        }
        let open = match wrap {
            Wrap::Own => "START TRANSACTION".to_owned(),
            Wrap::Savepoint { .. } => format!("SAVEPOINT {SAVEPOINT}"),
        };
        if let Err(e) = self.internal(&open).await? {
            let message = ErrPacket::parse(&e)
                .map(|e| lossy(&e.message))
                .unwrap_or_default();
            return Ok(self.uncounted(reply, &format!("`{open}` failed: {message}")));
        }
        info!(session = %self.identity, ?wrap, "statement runs as a max_rows dry run");
        // Read twice: the second reading less the first is what a reading
        // itself moves the counters by (nothing on MariaDB 10.11; MySQL
        // counts temporary-table writes in Handler_write).
        let first = self.writes().await?;
        let second = self.writes().await?;
        let (Some(first), Some(second)) = (first, second) else {
            self.roll_back(wrap).await?;
            return Ok(self.uncounted(reply, "hoop could not read the session's handler counters"));
        };
        let captured = self.capture(packet, command, reply).await?;
        if let Some(refusal) = captured.refusal {
            self.roll_back(wrap).await?;
            return Ok(Attempt::Refused(refusal));
        }
        if captured.failed {
            // It failed as it would have; the server undid the statement
            // (or, on a deadlock, the whole transaction). (Past the capture
            // limit only its ERR was kept, a reply on its own.)
            let status = self.close_failed(wrap).await?;
            return Ok(Attempt::Replies(patched(captured.packets, status)));
        }
        if captured.overflow {
            self.roll_back(wrap).await?;
            return Ok(Attempt::Refused(Refusal::denied(&Denial::new(
                "max_rows",
                format!(
                    "hoop holds a max_rows dry run's results back until they are judged, and these exceed {} MiB; the statement was rolled back",
                    MAX_CAPTURE / (1024 * 1024)
                ),
            ))));
        }
        let Some(after) = self.writes().await? else {
            self.roll_back(wrap).await?;
            return Ok(Attempt::Refused(Refusal::denied(&Denial::new(
                "max_rows",
                "hoop could not read the session's handler counters after the statement, to count the rows its triggers wrote; the statement was rolled back",
            ))));
        };
        let reading = second.saturating_sub(first);
        let handled = after.saturating_sub(second).saturating_sub(reading);
        let rows = captured.affected.max(captured.rows).max(handled);
        let verdict = if let Some(limit) = approved {
            if rows <= limit {
                Verdict::Allow
            } else {
                Verdict::Deny(Denial::new(
                    "max_rows",
                    format!(
                        "the statement was approved for {limit} rows but now touches {rows}; it was rolled back"
                    ),
                ))
            }
        } else {
            let name = reply.statement_id.map(|id| id.to_string());
            let ctx = StatementContext {
                identity: &self.identity,
                sql: &reply.sql,
                submission: reply.submission,
                statement_name: name.as_deref(),
                portal: None,
                statement_index: 0,
                transaction: transaction_before,
            };
            self.governor.judge_counted(&ctx, Some(rows))
        };
        info!(session = %self.identity, rows, own = captured.affected.max(captured.rows), handled, verdict = verdict_word(&verdict), "max_rows dry run judged");
        match verdict {
            Verdict::Allow => match self.keep(wrap).await? {
                Ok(status) => Ok(Attempt::Replies(patched(captured.packets, status))),
                // The COMMIT failed: that is the statement's outcome.
                Err(error) => Ok(Attempt::Replies(vec![error])),
            },
            Verdict::Deny(denial) => {
                self.roll_back(wrap).await?;
                Ok(Attempt::Refused(Refusal::denied(&denial)))
            }
            Verdict::Hold(requirement) => {
                self.roll_back(wrap).await?;
                Ok(Attempt::Hold(requirement, Some(rows)))
            }
        }
    }

    /// Keeps what the dry run did: `Ok(status)`, the status flags after;
    /// `Err(payload)`, the `COMMIT` failed (and the server rolled back).
    async fn keep(&mut self, wrap: Wrap) -> Result<Result<StatusFlags, Bytes>, SessionError> {
        match wrap {
            Wrap::Own => {
                if let Err(e) = self.internal("COMMIT").await? {
                    // A failed COMMIT has rolled back; make sure.
                    self.internal_or_end("ROLLBACK").await?;
                    return Ok(Err(e));
                }
            }
            Wrap::Savepoint { .. } => {
                self.internal_or_end(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))
                    .await?;
            }
        }
        Ok(Ok(self.session.status()))
    }

    /// Undoes what the dry run did, and only that.
    async fn roll_back(&mut self, wrap: Wrap) -> Result<(), SessionError> {
        match wrap {
            Wrap::Own | Wrap::Savepoint { open: false } => self.internal_or_end("ROLLBACK").await,
            Wrap::Savepoint { open: true } => {
                let back = format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}");
                if self.internal(&back).await?.is_ok() {
                    return self
                        .internal_or_end(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))
                        .await;
                }
                // The server may have rolled the whole transaction back (a
                // deadlock in the statement; an ERR carries no status
                // flags, so it is asked): nothing of it remains.
                let open = self.internal("SELECT @@in_transaction").await?;
                if open.is_ok_and(|rows| text(rows.first().and_then(|r| r.first())) == "0") {
                    Ok(())
                } else {
                    self.internal_or_end(&back).await
                }
            }
        }
    }

    /// Ends the dry run of a statement that failed: hoop's transaction is
    /// rolled back; a savepoint released (it may be gone with the
    /// transaction a deadlock rolled back: no matter).
    async fn close_failed(&mut self, wrap: Wrap) -> Result<StatusFlags, SessionError> {
        match wrap {
            Wrap::Own => self.internal_or_end("ROLLBACK").await?,
            Wrap::Savepoint { .. } => {
                let _ = self
                    .internal(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))
                    .await?;
            }
        }
        Ok(self.session.status())
    }

    /// Sends the client's command and holds its reply back, masked as it
    /// would be relayed (the rows a governor rewrites, server error texts).
    async fn capture(
        &mut self,
        packet: &LogicalPacket,
        command: &Command<'_>,
        reply: &ReplyFor,
    ) -> Result<Captured, SessionError> {
        self.session
            .client_command(packet.seq, packet.payload.len(), command)
            .map_err(SessionError::State)?;
        self.server.queue(&packet.raw);
        self.server.flush().await.map_err(SessionError::ServerIo)?;
        let inspect = self.governor.inspects_rows();
        let observe = self.governor.observes_executions();
        let caps = self.session.capabilities();
        let mut c = Captured::default();
        let mut rows: Option<RowState> = None;
        loop {
            let p = self
                .server
                .read()
                .await
                .map_err(server_read_error)?
                .ok_or_else(|| SessionError::ServerIo(std::io::ErrorKind::UnexpectedEof.into()))?;
            let event = self
                .session
                .server_packet(p.seq, &p.payload)
                .map_err(server_state)?;
            let mut payload = p.payload.clone();
            let mut status_at = None;
            match event.packet {
                ServerPacket::ColumnCount(_) => rows = None,
                ServerPacket::ColumnDefinition(_) | ServerPacket::ColumnsEof
                    if event.columns_complete =>
                {
                    if matches!(event.packet, ServerPacket::ColumnsEof) {
                        status_at = status_offset(&payload, true);
                    }
                    if inspect {
                        let index = event.reply.map_or(0, |r| r.statement_index);
                        rows = self.row_state(
                            reply,
                            index,
                            event.reply.is_some_and(|r| r.binary_rows),
                        );
                    }
                }
                ServerPacket::ColumnsEof => status_at = status_offset(&payload, true),
                ServerPacket::Row => {
                    c.rows += 1;
                    if let Some(state) = rows.as_mut() {
                        match Self::rewrite(state, &p.payload)? {
                            Ok(Some(b)) => payload = b,
                            Ok(None) => {}
                            Err(refusal) => {
                                c.refusal.get_or_insert(refusal);
                            }
                        }
                    }
                }
                ServerPacket::Error => {
                    c.failed = true;
                    if let Ok(err) = ErrPacket::parse(&p.payload) {
                        let message = lossy(&err.message);
                        let fields = [message.as_str()];
                        if let Some(masked) = self.governor.rewrite_server_text(ServerText {
                            kind: ServerTextKind::Error,
                            fields: &fields,
                            raised_by_code: err.code == SIGNAL_EXCEPTION,
                            sql: (!reply.sql.is_empty()).then_some(reply.sql.as_str()),
                            statement_index: 0,
                        }) && let Some(Some(text)) = masked.into_iter().next()
                        {
                            payload = ErrPacket {
                                message: text.into(),
                                ..err.clone()
                            }
                            .encode();
                        }
                        if observe {
                            self.governor.observe(SessionEvent::ServerError {
                                sqlstate: err.sql_state_str(),
                                severity: None,
                            });
                        }
                    }
                }
                ServerPacket::Ok { .. } => {
                    if let Ok(ok) = OkPacket::parse(&p.payload, caps) {
                        c.affected = c.affected.saturating_add(ok.affected_rows);
                    }
                    status_at = status_offset(&payload, false);
                    if observe {
                        self.governor.observe(SessionEvent::CommandComplete {
                            tag: "OK",
                            rows: None,
                        });
                    }
                }
                ServerPacket::EndOfRows { .. } => {
                    status_at = status_offset(&payload, payload.len() == 5);
                    if observe {
                        self.governor.observe(SessionEvent::CommandComplete {
                            tag: "OK",
                            rows: None,
                        });
                    }
                }
                ServerPacket::LocalInfileRequest => {
                    // Not a statement a dry run counts: the server gets an
                    // empty file, the client a refusal.
                    let seq = p.next_seq();
                    self.session
                        .client_data(seq, 0)
                        .map_err(SessionError::State)?;
                    self.server.queue_packet(seq, &[]);
                    self.server.flush().await.map_err(SessionError::ServerIo)?;
                    c.refusal.get_or_insert(Refusal::denied(&Denial::new(
                        "max_rows",
                        "the server asked for a LOCAL INFILE file during a max_rows dry run; the statement was rolled back",
                    )));
                    continue;
                }
                _ => {}
            }
            if !c.overflow {
                c.len += payload.len();
                if c.len > MAX_CAPTURE {
                    c.overflow = true;
                    c.packets = Vec::new();
                } else {
                    c.packets.push((payload.clone(), status_at));
                }
            }
            if c.overflow && event.completes_reply {
                // Only the outcome matters now (an ERR is a reply alone).
                c.packets = vec![(payload, status_at)];
            }
            if event.completes_reply {
                return Ok(c);
            }
        }
    }

    /// A `max_rows` dry run of the client's command (COM_QUERY or
    /// COM_STMT_EXECUTE); the reply reaches the client numbered from
    /// `client_seq`.
    pub(super) async fn dry_run(
        &mut self,
        packet: &LogicalPacket,
        command: &Command<'_>,
        reply: &ReplyFor,
        mut client_seq: u8,
    ) -> Result<(), SessionError> {
        // An EXECUTE whose parameters came as long data consumes them: it
        // cannot run again after an approval.
        let long_data = match (command, reply.statement_id) {
            (Command::StmtExecute(_), Some(id)) => self.session.has_long_data(id),
            _ => false,
        };
        let mut approved = None;
        loop {
            let refusal = match self.attempt(packet, command, reply, approved).await? {
                Attempt::Replies(replies) => {
                    self.sent(reply);
                    for payload in replies {
                        client_seq = self.client.queue_packet(client_seq, &payload);
                    }
                    self.client_seq = client_seq;
                    return Ok(());
                }
                Attempt::Forward => {
                    self.sent(reply);
                    return self.forward_from(packet, command, reply, client_seq).await;
                }
                Attempt::Refused(refusal) => refusal,
                Attempt::Hold(requirement, Some(_)) if long_data => {
                    hold_after_long_data(&requirement)
                }
                Attempt::Hold(requirement, rows) => {
                    match self
                        .hold(
                            requirement,
                            reply.sql.clone(),
                            reply.submission,
                            &mut client_seq,
                        )
                        .await?
                    {
                        Some(refusal) => refusal,
                        None if rows.is_some() => {
                            // Approved for that many rows: run it again.
                            approved = rows;
                            continue;
                        }
                        None => {
                            self.sent(reply);
                            return self.forward_from(packet, command, reply, client_seq).await;
                        }
                    }
                }
            };
            info!(session = %self.identity, verdict = "deny", "statement refused after a max_rows dry run: {}", refusal.message);
            self.client_seq = self
                .client
                .queue_packet(client_seq, &refusal::err(&refusal).encode());
            return Ok(());
        }
    }

    /// A command judged with `max_rows` that cannot be dry-run (a
    /// synthesized one, never a kind the policy counts): as over the limit,
    /// without a count.
    pub(super) async fn judge_uncounted(
        &mut self,
        sql: &str,
        submission: Submission,
        client_seq: &mut u8,
    ) -> Result<Option<Refusal>, SessionError> {
        let ctx = StatementContext {
            identity: &self.identity,
            sql,
            submission,
            statement_name: None,
            portal: None,
            statement_index: 0,
            transaction: transaction(self.session.transaction()),
        };
        match self.governor.judge_counted(&ctx, None) {
            Verdict::Allow => Ok(None),
            Verdict::Deny(d) => Ok(Some(Refusal::denied(&d))),
            Verdict::Hold(h) => self.hold(h, sql.to_owned(), submission, client_seq).await,
        }
    }

    fn sent(&mut self, reply: &ReplyFor) {
        if !self.observe_statements {
            return;
        }
        let name = reply.statement_id.map(|id| id.to_string());
        let ctx = StatementContext {
            identity: &self.identity,
            sql: &reply.sql,
            submission: reply.submission,
            statement_name: name.as_deref(),
            portal: None,
            statement_index: 0,
            transaction: transaction(self.session.transaction()),
        };
        self.governor
            .observe(SessionEvent::Sent { statement: &ctx });
    }
}

/// The captured payloads with their transaction bits as they are now.
fn patched(packets: Vec<(Bytes, Option<usize>)>, status: StatusFlags) -> Vec<Bytes> {
    packets
        .into_iter()
        .map(|(payload, at)| match at {
            Some(at) => with_transaction_bits(&payload, at, status),
            None => payload,
        })
        .collect()
}

/// A hold over its limit at an execution whose parameters were sent as
/// long data: the dry run consumed them, so it cannot run again once
/// approved.
fn hold_after_long_data(requirement: &HoldRequirement) -> Refusal {
    Refusal::denied(&Denial::new(
        requirement.rule.clone(),
        format!(
            "{}; its parameters were sent as long data (COM_STMT_SEND_LONG_DATA), which the dry run consumed, so it cannot run again once approved and is refused",
            requirement.message
        ),
    ))
    .with_hint("Send the parameters inline to have the execution held for approval.")
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny(_) => "deny",
        Verdict::Hold(_) => "hold",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_bits_are_replaced_only() {
        // OK: header, affected 3, insert id 0, status IN_TRANS|AUTOCOMMIT|NO_INDEX, warnings 0.
        let ok = Bytes::from_static(&[0, 3, 0, 0x23, 0, 0, 0]);
        let at = status_offset(&ok, false).expect("ok");
        assert_eq!(at, 3);
        let out = with_transaction_bits(&ok, at, StatusFlags::AUTOCOMMIT);
        assert_eq!(&out[..], &[0, 3, 0, 0x22, 0, 0, 0]);
        let eof = Bytes::from_static(&[0xFE, 0, 0, 0x03, 0x00]);
        let at = status_offset(&eof, true).expect("ok");
        assert_eq!(
            &with_transaction_bits(&eof, at, StatusFlags(0x02))[..],
            &[0xFE, 0, 0, 0x02, 0]
        );
    }
}
