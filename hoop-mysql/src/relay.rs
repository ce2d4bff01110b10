//! The command phase: one command at a time, judged or refused before
//! anything of it goes upstream, its reply relayed packet by packet.
//!
//! Sequence ids on the client leg are counted separately from the server
//! leg's (`client_seq`), so hoop may add packets (progress reports while a
//! statement is held) or replace them (an ERR for a refused row) and every
//! packet the client sees still carries the id it expects.

use std::{
    collections::{HashMap, HashSet},
    future::poll_fn,
    sync::Arc,
    task::Poll,
};

use hoop_core::{
    DataDirection, HoldRequest, HoldRequirement, Refusal, RefusalReason, ResolvedColumn,
    ResultColumn, RowEncoder, RowRewrite, RowRewriter, RowValues, ServerText, ServerTextKind,
    SessionEvent, SessionGovernor, SessionIdentity, StatementContext, Submission, TransactionState,
    ValueEncoding, Verdict,
};
use hoop_proto_mysql::{
    caching_sha2::{self, ClientMessage},
    capabilities::Capabilities,
    column::ColumnDefinition,
    command::Command,
    err::{ERR_HEADER, ErrPacket, Progress, codes},
    frame::LogicalPacket,
    lexer::{self, Charset, LexerOptions, Server, SqlMode, StatementKind},
    local_infile::LocalInfileRequest,
    row_binary::BinaryRow,
    row_text::TextRow,
    session::{ClientData, ServerEvent, ServerPacket, Session},
    status::TransactionStatus,
    value::{BinaryLayout, BinaryType, ColumnType, Value},
    wide::WideCharset,
};
use hoop_relay::hold::ActiveHold;
use hoop_sql::mysql::{CANONICAL, canonical_text};
use tracing::{info, warn};

mod dry_run;

use crate::{
    MysqlProxyContext, SessionError,
    catalog::SessionCatalog,
    leg::Leg,
    refusal,
    startup::{
        Connected, FullAuth, Translation, Upstream, after_server_auth_packet, asks_for_password,
        client_read_error, decrypt_upstream, encrypt_upstream, first_answer_is_password,
        injected_query, refresh_catalog, server_read_error, server_state,
    },
};

/// Why a COM_CHANGE_USER that sends the password in clear ends the session
/// when only the client leg is TLS.
const CHANGE_USER_PASSWORD: &str = "COM_CHANGE_USER sends the password in clear here (a cleartext \
    plugin, or sha256_password as the first answer), and hoop does not send a password from a TLS \
    client leg over a plaintext server leg; set tls.upstream so the server leg is TLS too";

/// ER_SIGNAL_EXCEPTION: an error raised by SIGNAL in stored code.
const SIGNAL_EXCEPTION: u16 = 1644;

pub(crate) struct Relay {
    ctx: Arc<MysqlProxyContext>,
    identity: SessionIdentity,
    client: Leg,
    server: Leg,
    session: Session,
    catalog: Arc<SessionCatalog>,
    governor: Box<dyn SessionGovernor>,
    /// Whether the governor wants `Judged` and `Sent` (asked once).
    observe_statements: bool,
    /// The greeting's scramble: COM_CHANGE_USER authenticates against it
    /// (caching_sha2 full authentication is translated with it).
    scramble: Vec<u8>,
    /// Prepared statement id → its canonical SQL.
    prepared: HashMap<u32, String, foldhash::fast::RandomState>,
    /// The sequence id the client expects next (for an ERR that ends the
    /// session in the middle of a reply).
    client_seq: u8,
    /// A statement may have created, dropped or renamed a relation since the
    /// catalog was read: read it again before the next statement (not right
    /// after the DDL, whose warnings and counts the client may still ask
    /// for).
    catalog_stale: bool,
    /// A statement may have changed `character_set_client`: the server is
    /// asked before the next statement, which is read as ASCII only until
    /// it answers. Session tracking cannot be relied on for this: a client
    /// may not ask for it (PyMySQL does not) or may turn it off, and text
    /// read in the wrong character set can end a string where the server
    /// does not (`SET NAMES gbk`, then `'中\'`).
    charset_stale: bool,
    /// `character_set_client` as the server last answered hoop, over what
    /// the session tracked.
    charset_asked: Option<String>,
    /// Prepared statements whose execution may change the character set.
    charset_statements: HashSet<u32, foldhash::fast::RandomState>,
    /// Prepared statements a rule with `max_rows` matches: each execution
    /// runs as a dry run (`dry_run`).
    guarded: HashSet<u32, foldhash::fast::RandomState>,
    /// The client may hold `LOCK TABLES` locks, which the `START
    /// TRANSACTION` of a dry run would release (`dry_run`).
    table_locks: bool,
    /// Names a statement read that the catalog did not know even right
    /// after it was loaded again for them (temporary tables, names of no
    /// table), and since when: not loaded again for them until
    /// [`ABSENT_FOR`] has passed or a DDL statement made the catalog stale.
    absent: HashSet<String, foldhash::fast::RandomState>,
    absent_since: Option<std::time::Instant>,
    /// When the catalog was last loaded again for its age (see
    /// [`CATALOG_MAX_AGE`]): not again before that age passed since, even
    /// when the load failed.
    aged_refresh: Option<std::time::Instant>,
}

/// How long a name the catalog did not know right after loading is taken
/// as absent (see `Relay::absent`): the longest a view created under that
/// name by another session goes unseen.
const ABSENT_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest a session trusts its catalog for a statement that names
/// relations, while masking applies: another session (a migration, a DBA,
/// an application hoop does not govern) may drop a table and create a view
/// under its name, or replace a view, and MySQL names carry no identity
/// that would show it (a view's columns name the view as their `org_table`,
/// as a table's name the table). Loaded again when older, before such a
/// statement is judged; the same age as PostgreSQL's views.
const CATALOG_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// What judging a text decided.
enum Judged {
    /// Send it.
    Forward,
    /// Refuse it.
    Refuse(Refusal),
    /// A rule with `max_rows` matches: count its rows by a dry run.
    DryRun,
}

/// Words of statements that may change `character_set_client` (`SET
/// NAMES`, `SET CHARACTER SET`, `SET CHARSET`, `SET character_set_client`,
/// and what runs other statements: `EXECUTE`, `CALL`). Matching more than
/// these costs one query of hoop's before the next statement.
const CHARSET_WORDS: &[&str] = &["names", "character", "charset", "execute", "call"];

fn may_change_charset(lower: &str) -> bool {
    CHARSET_WORDS.iter().any(|w| lower.contains(w))
}

/// Words of statements that read the previous statement's diagnostics
/// (`SHOW WARNINGS`, `ROW_COUNT()`…), which a catalog query of hoop's in
/// between would reset.
const DIAGNOSTICS: &[&str] = &[
    "warnings",
    "errors",
    "diagnostics",
    "row_count",
    "found_rows",
    "last_insert_id",
    "warning_count",
    "error_count",
];

/// What a reply answers, for governance.
struct ReplyFor {
    sql: String,
    submission: Submission,
    /// The prepared statement's id (its name for governance, formatted only
    /// when governance asks).
    statement_id: Option<u32>,
    /// Server result index → index among the text's code statements.
    statement_map: Vec<usize>,
}

/// What the client sent next.
enum Next {
    /// A whole single-chunk packet, still in the read buffer.
    Buffered,
    /// Any other packet, decoded.
    Packet(LogicalPacket),
}

/// What the reply being relayed answers, as far as relaying it depends on
/// the command.
#[derive(Debug, Clone, Copy)]
struct Awaited {
    /// COM_STMT_FETCH: binary rows of a cursor opened earlier.
    fetch: bool,
    /// COM_CHANGE_USER: an authentication exchange.
    change_user: bool,
}

impl Awaited {
    fn of(command: &Command<'_>) -> Self {
        Self {
            fetch: matches!(command, Command::StmtFetch { .. }),
            change_user: matches!(command, Command::ChangeUser(_)),
        }
    }
}

/// The rows of the current result set, when governance rewrites them.
struct RowState {
    rewriter: Box<dyn RowRewriter>,
    binary: bool,
    types: Vec<BinaryType>,
    /// Each column's character set when it is one whose ASCII is not ASCII
    /// bytes (`utf16`, `ucs2`, `utf16le`, `utf32`); empty when none is.
    /// Governance reads such values decoded to UTF-8, so content detectors
    /// see the text the client will show, and what it rewrites is encoded
    /// back.
    wide: Vec<Option<WideCharset>>,
    /// A binary row's values as governance reads them (text for numbers
    /// and dates, UTF-8 for wide text), and what the rewriter writes back:
    /// buffers reused from row to row.
    shown: RowBuffer,
    out: RowBuffer,
    /// A rewritten row's wide values, encoded back.
    encoded: RowBuffer,
}

/// One row's values in one byte buffer, kept across rows.
#[derive(Default)]
struct RowBuffer {
    bytes: Vec<u8>,
    values: Vec<Option<std::ops::Range<usize>>>,
}

impl RowBuffer {
    fn clear(&mut self) {
        self.bytes.clear();
        self.values.clear();
    }

    fn value(&self, i: usize) -> Option<&[u8]> {
        self.values
            .get(i)
            .and_then(Clone::clone)
            .map(|r| &self.bytes[r])
    }
}

impl RowBuffer {
    /// Appends a value in a wide character set, decoded to UTF-8.
    fn push_decoded(&mut self, set: WideCharset, value: &[u8]) {
        let start = self.bytes.len();
        set.decode_into(value, &mut self.bytes);
        self.values.push(Some(start..self.bytes.len()));
    }
}

impl RowValues for RowBuffer {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        self.value(i)
    }
}

impl RowEncoder for RowBuffer {
    fn push(&mut self, value: Option<&[u8]>) {
        self.values.push(value.map(|v| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(v);
            start..self.bytes.len()
        }));
    }
}

fn transaction(status: TransactionStatus) -> TransactionState {
    match status {
        TransactionStatus::Idle => TransactionState::Idle,
        _ => TransactionState::Active,
    }
}

/// Whether the reply is in its rows after this packet: a column block's
/// end or a row. (`columns_complete` alone is not it: every packet of the
/// rows stage carries it, the end of a result that more follow too.)
fn in_rows_after(event: &ServerEvent) -> bool {
    !event.completes_reply
        && match event.packet {
            ServerPacket::Row => true,
            ServerPacket::ColumnDefinition(_) | ServerPacket::ColumnsEof => event.columns_complete,
            _ => false,
        }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Relay {
    pub(crate) fn new(
        ctx: Arc<MysqlProxyContext>,
        mut identity: SessionIdentity,
        connected: Connected,
    ) -> Self {
        if let Some(schema) = connected.session.schema() {
            identity.database = Some(lossy(schema));
        }
        let governor = ctx.governors.session(&identity, connected.catalog.clone());
        let mut session = connected.session;
        // Column definitions are copied and kept only for a governor that
        // looks at rows (the session keeps a cursor's regardless).
        session.set_track_columns(governor.inspects_rows());
        Self {
            ctx,
            identity,
            client: connected.client,
            server: connected.server,
            session,
            catalog: connected.catalog,
            scramble: connected.scramble,
            observe_statements: governor.observes_statements(),
            governor,
            prepared: HashMap::default(),
            client_seq: 0,
            catalog_stale: false,
            charset_stale: false,
            charset_asked: None,
            charset_statements: HashSet::default(),
            guarded: HashSet::default(),
            table_locks: false,
            absent: HashSet::default(),
            absent_since: None,
            aged_refresh: None,
        }
    }

    pub(crate) async fn run(mut self) -> Result<(), SessionError> {
        self.governor.observe(SessionEvent::Started {
            identity: &self.identity,
        });
        let result = self.commands().await;
        let reason = match &result {
            Ok(()) => "client closed".to_owned(),
            Err(e) => e.to_string(),
        };
        self.governor
            .observe(SessionEvent::Ended { reason: &reason });
        if let Err(e) = &result {
            crate::startup::tell_client(&mut self.client, self.client_seq, e).await;
        }
        result
    }

    async fn commands(&mut self) -> Result<(), SessionError> {
        loop {
            self.client.flush().await.map_err(SessionError::ClientIo)?;
            if let Some(refusal) = self.governor.fatal() {
                return Err(SessionError::Governance(refusal));
            }
            let packet = match self.next_command().await? {
                None => return Ok(()),
                Some(Next::Packet(packet)) => packet,
                Some(Next::Buffered) => {
                    if self.execute_in_place().await? {
                        continue;
                    }
                    // A whole single-chunk packet: it decodes.
                    self.client
                        .decoded()
                        .map_err(client_read_error)?
                        .ok_or(SessionError::State(
                            hoop_proto_mysql::session::SessionError::UnexpectedClientPacket {
                                what: "a packet read whole that does not decode",
                                when: "between commands",
                            },
                        ))?
                }
            };
            let reply_seq = packet.next_seq();
            self.client_seq = reply_seq;
            let command = match Command::parse(&packet.payload, self.session.capabilities()) {
                Ok(c) => c,
                Err(e) => return Err(SessionError::ClientMessage(e)),
            };
            if packet.seq != 0 {
                return Err(SessionError::ClientFrame(
                    hoop_proto_mysql::frame::FrameError::OutOfOrder {
                        sender: "client",
                        expected: 0,
                        got: packet.seq,
                    },
                ));
            }
            if command.refused_by_default() {
                let err = ErrPacket::from_code(
                    codes::NOT_SUPPORTED,
                    format!(
                        "hoop: {} is refused: it bypasses statement policy and masking",
                        command.name()
                    ),
                );
                info!(session = %self.identity, command = command.name(), "command refused");
                self.client.queue_packet(reply_seq, &err.encode());
                continue;
            }
            match command {
                Command::Quit => {
                    self.session
                        .client_command(packet.seq, packet.payload.len(), &command)
                        .map_err(SessionError::State)?;
                    self.server.queue(&packet.raw);
                    let _ = self.server.flush().await;
                    return Ok(());
                }
                Command::Query { sql, .. } => {
                    let sql = sql.to_vec();
                    let schema_before = self.session.schema().map(<[u8]>::to_vec);
                    let user_before = self.session.user().map(<[u8]>::to_vec);
                    self.text(&packet, &sql, Submission::Text).await?;
                    // `USE db` (the server reports the schema in its OK).
                    self.identity_changed(schema_before.as_deref(), user_before.as_deref());
                }
                Command::StmtPrepare { sql } => {
                    let sql = sql.to_vec();
                    self.text(&packet, &sql, Submission::Prepared).await?;
                }
                Command::StmtExecute(ref e) => {
                    let id = e.statement_id;
                    self.execute(&packet, &command, id).await?;
                }
                Command::StmtFetch { statement_id, .. } => {
                    self.execute(&packet, &command, statement_id).await?;
                }
                Command::CreateDb { schema } => {
                    let sql = format!("CREATE DATABASE `{}`", lossy(schema).replace('`', "``"));
                    self.synthesized(&packet, &command, &sql).await?;
                }
                Command::DropDb { schema } => {
                    let sql = format!("DROP DATABASE `{}`", lossy(schema).replace('`', "``"));
                    self.synthesized(&packet, &command, &sql).await?;
                }
                Command::ProcessKill { connection_id } => {
                    let sql = format!("KILL {connection_id}");
                    self.synthesized(&packet, &command, &sql).await?;
                }
                Command::Shutdown { .. } => {
                    self.synthesized(&packet, &command, "SHUTDOWN").await?;
                }
                Command::Refresh { .. } => {
                    self.synthesized(&packet, &command, "FLUSH PRIVILEGES")
                        .await?;
                }
                Command::ProcessInfo => {
                    let reply = ReplyFor {
                        sql: "SHOW PROCESSLIST".into(),
                        submission: Submission::Text,
                        statement_id: None,
                        statement_map: Vec::new(),
                    };
                    self.forward(&packet, &command, &reply).await?;
                }
                Command::ResetConnection | Command::ChangeUser(_) => {
                    if let Command::ChangeUser(change) = &command
                        && self.identity.client_tls
                        && !self.identity.upstream_tls
                        && first_answer_is_password(change.auth_plugin, change.auth_data)
                    {
                        self.client_seq = packet.next_seq();
                        return Err(SessionError::Unsupported(CHANGE_USER_PASSWORD.into()));
                    }
                    let reply = ReplyFor {
                        sql: String::new(),
                        submission: Submission::Text,
                        statement_id: None,
                        statement_map: Vec::new(),
                    };
                    let schema_before = self.session.schema().map(<[u8]>::to_vec);
                    let user_before = self.session.user().map(<[u8]>::to_vec);
                    self.forward(&packet, &command, &reply).await?;
                    // The server forgot its prepared statements, and set
                    // the character set back (COM_RESET_CONNECTION: to the
                    // login's, which session tracking does not report).
                    self.prepared
                        .retain(|id, _| self.session.statement(*id).is_some());
                    self.guarded
                        .retain(|id| self.session.statement(*id).is_some());
                    self.charset_asked = None;
                    self.table_locks = false;
                    self.charset_stale = true;
                    self.identity_changed(schema_before.as_deref(), user_before.as_deref());
                }
                _ => {
                    let reply = ReplyFor {
                        sql: String::new(),
                        submission: Submission::Text,
                        statement_id: None,
                        statement_map: Vec::new(),
                    };
                    let schema_before = self.session.schema().map(<[u8]>::to_vec);
                    let user_before = self.session.user().map(<[u8]>::to_vec);
                    self.forward(&packet, &command, &reply).await?;
                    self.identity_changed(schema_before.as_deref(), user_before.as_deref());
                }
            }
        }
    }

    /// The client's next command; `None` when the client closed.
    ///
    /// The server leg is watched meanwhile. A server ends an idle session
    /// by closing its end (`KILL` from another session, `wait_timeout`, a
    /// shutdown), at most after an ERR saying why: that ERR is relayed as
    /// sent and the client's connection closed, as the server closes it. A
    /// client that checks its socket before the next command (libmariadb
    /// with auto-reconnect) then reconnects, instead of sending the command
    /// into a session that is gone. Anything else unasked for ends the
    /// session too: hoop cannot tell what it would answer.
    async fn next_command(&mut self) -> Result<Option<Next>, SessionError> {
        loop {
            if self.client.peek_single().is_some() {
                return Ok(Some(Next::Buffered));
            }
            if self.client.has_buffered()
                && let Some(packet) = self.client.decoded().map_err(client_read_error)?
            {
                return Ok(Some(Next::Packet(packet)));
            }
            let server_open = tokio::select! {
                biased;
                filled = self.client.fill() => {
                    if filled.map_err(client_read_error)? {
                        continue;
                    }
                    return Ok(None);
                }
                filled = self.server.fill() => filled.map_err(server_read_error)?,
            };
            let mut ended = !server_open;
            while let Some(p) = self.server.decoded().map_err(server_read_error)? {
                if p.payload.first() != Some(&ERR_HEADER) {
                    return Err(SessionError::Unsolicited);
                }
                self.client.queue(&p.raw);
                ended = true;
            }
            if ended {
                let _ = self.client.flush().await;
                return Err(SessionError::ServerClosed);
            }
        }
    }

    /// A COM_STMT_EXECUTE read whole that nothing governs (no row is
    /// inspected, no execution observed, the statement not dry-run) is
    /// accounted for and relayed from the read buffer, as [`Self::execute`]
    /// would relay it, without being split off into a packet of its own.
    /// `false`: the buffered command is not such an EXECUTE, and nothing
    /// was done.
    async fn execute_in_place(&mut self) -> Result<bool, SessionError> {
        if self.governor.inspects_rows() || self.governor.observes_executions() {
            return Ok(false);
        }
        let Some((0, payload)) = self.client.peek_single() else {
            return Ok(false);
        };
        if payload.first() != Some(&hoop_proto_mysql::command::code::STMT_EXECUTE) {
            return Ok(false);
        }
        let Ok(command) = Command::parse(payload, self.session.capabilities()) else {
            return Ok(false);
        };
        let Command::StmtExecute(e) = &command else {
            return Ok(false);
        };
        let id = e.statement_id;
        // (MariaDB's "the statement prepared last" is resolved by `execute`.)
        if id == u32::MAX || self.guarded.contains(&id) {
            return Ok(false);
        }
        let len = payload.len();
        self.client_seq = 1;
        self.session
            .client_command(0, len, &command)
            .map_err(SessionError::State)?;
        self.client.relay_single(&mut self.server, 0, len);
        let reply = ReplyFor {
            sql: self.lend_sql(id),
            submission: Submission::Prepared,
            statement_id: Some(id),
            statement_map: Vec::new(),
        };
        let result = match self.server.flush().await {
            Ok(()) => {
                let awaited = Awaited {
                    fetch: false,
                    change_user: false,
                };
                self.relay_reply(awaited, &reply, 1).await
            }
            Err(e) => Err(SessionError::ServerIo(e)),
        };
        self.executed(id, reply.sql);
        result.map(|()| true)
    }

    /// A prepared statement's SQL, lent to the reply of one execution (not
    /// copied per execution); empty for one hoop never saw prepared, whose
    /// rows are then masked wherever masking applies (empty SQL has
    /// unknown lineage). [`Self::executed`] puts it back.
    fn lend_sql(&mut self, id: u32) -> String {
        self.prepared
            .get_mut(&id)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// After an execution of statement `id`: its SQL back from the reply,
    /// and the character set read again if the statement may change it.
    fn executed(&mut self, id: u32, sql: String) {
        if !self.charset_statements.is_empty() && self.charset_statements.contains(&id) {
            self.charset_stale = true;
        }
        if let Some(slot) = self.prepared.get_mut(&id)
            && slot.is_empty()
        {
            *slot = sql;
        }
    }

    /// After a command that may change the user or the schema: a new
    /// identity is judged by a new governor (a new recording).
    fn identity_changed(&mut self, schema_before: Option<&[u8]>, user_before: Option<&[u8]>) {
        let schema = self.session.schema().map(<[u8]>::to_vec);
        let user = self.session.user().map(<[u8]>::to_vec);
        if schema.as_deref() == schema_before && user.as_deref() == user_before {
            return;
        }
        if user.as_deref() != user_before {
            // Another user sees other tables.
            self.catalog_stale = true;
        }
        self.identity.database = schema.as_deref().map(lossy);
        self.identity.user = user.as_deref().map(lossy);
        let reason = "the session's user or schema changed";
        self.governor.observe(SessionEvent::Ended { reason });
        self.governor = self
            .ctx
            .governors
            .session(&self.identity, self.catalog.clone());
        self.session
            .set_track_columns(self.governor.inspects_rows());
        self.governor.observe(SessionEvent::Started {
            identity: &self.identity,
        });
        info!(session = %self.identity, "session identity changed");
    }

    /// The lexer options of the session now.
    fn lexer_options(&self, ansi_quotes: bool) -> LexerOptions {
        let server = self.session.server_version().map_or(
            Server {
                mariadb: true,
                version_id: 0,
            },
            |v| Server {
                mariadb: v.mariadb,
                version_id: v.version_id(),
            },
        );
        LexerOptions {
            server,
            sql_mode: SqlMode {
                ansi_quotes,
                no_backslash_escapes: self.session.no_backslash_escapes(),
                mssql: false,
            },
            charset: if self.charset_stale {
                Charset::Unsupported
            } else {
                self.charset_asked
                    .as_deref()
                    .or_else(|| self.session.character_set_client())
                    .map_or(Charset::Unsupported, Charset::from_name)
            },
        }
    }

    /// The text as the server will run it, or why hoop refuses it.
    fn canonical(&self, sql: &[u8]) -> Result<String, Refusal> {
        let cannot = |why: String| {
            Refusal::new(
                RefusalReason::Denied,
                format!("hoop cannot read this SQL as the server will: {why}"),
            )
            .with_hint("Send it in UTF-8 or latin1, without ambiguous quoting.")
        };
        let text = if let Some(ansi) = self.session.ansi_quotes() {
            canonical_text(sql, &self.lexer_options(ansi))
                .map_err(|e| cannot(e.0.to_string()))?
                .into_owned()
        } else {
            {
                // MySQL does not report ANSI_QUOTES: the text must read the
                // same either way.
                let plain = canonical_text(sql, &self.lexer_options(false))
                    .map_err(|e| cannot(e.0.to_string()))?;
                let ansi = canonical_text(sql, &self.lexer_options(true))
                    .map_err(|e| cannot(e.0.to_string()))?;
                if plain != ansi {
                    return Err(cannot(
                        "it reads differently with and without sql_mode ANSI_QUOTES, and this server does not say which is on"
                            .into(),
                    ));
                }
                plain.into_owned()
            }
        };
        // A statement that changes how later ones are read must come alone.
        let statements = lexer::split(text.as_bytes(), &CANONICAL).unwrap_or_default();
        let code = statements
            .iter()
            .filter(|s| s.kind == StatementKind::Code)
            .count();
        if code > 1 {
            let lower = text.to_ascii_lowercase();
            if ["sql_mode", "names", "character", "charset"]
                .iter()
                .any(|w| lower.contains(w))
            {
                return Err(Refusal::new(
                    RefusalReason::Denied,
                    "hoop refuses a multi-statement text that changes sql_mode or the character set",
                )
                .with_hint("Send the SET statement on its own, then the rest."));
            }
        }
        Ok(text)
    }

    /// Server result index → index among the text's code statements.
    fn statement_map(text: &str) -> Vec<usize> {
        let statements = lexer::split(text.as_bytes(), &CANONICAL).unwrap_or_default();
        let mut code = 0;
        statements
            .iter()
            .map(|s| {
                let i = code;
                if s.kind == StatementKind::Code {
                    code += 1;
                }
                i
            })
            .collect()
    }

    /// Loads the catalog again when `sql` reads or writes a relation it does
    /// not know: a view another session created since it was loaded would
    /// otherwise read as a plain table, to lineage (its rows unmasked) and
    /// to the verdict (copying it not seen as copying masked data). The
    /// governor names the relations without judging the statement for real
    /// (its `judge` then reuses the work). Skipped for a statement that
    /// reads diagnostics, which hoop's queries would reset.
    async fn learn_unknown_relations(
        &mut self,
        sql: &str,
        submission: Submission,
    ) -> Result<(), SessionError> {
        let ctx = StatementContext {
            identity: &self.identity,
            sql,
            submission,
            statement_name: None,
            portal: None,
            statement_index: 0,
            transaction: transaction(self.session.transaction()),
        };
        let Some(tables) = self.governor.tables_before_judging(&ctx) else {
            return Ok(());
        };
        if self.absent_since.is_some_and(|t| t.elapsed() >= ABSENT_FOR) {
            self.absent.clear();
            self.absent_since = None;
        }
        let schema = self.session.schema().map(|s| lossy(s).to_lowercase());
        let unknown = |relay: &Self, t: &String| {
            !relay.absent.contains(t)
                && relay
                    .catalog
                    .misses(std::slice::from_ref(t), schema.as_deref())
        };
        let aged = !tables.is_empty()
            && self.catalog.older_than(CATALOG_MAX_AGE)
            && self
                .aged_refresh
                .is_none_or(|t| t.elapsed() >= CATALOG_MAX_AGE);
        if !aged && !tables.iter().any(|t| unknown(self, t)) {
            return Ok(());
        }
        let lower = sql.to_ascii_lowercase();
        if DIAGNOSTICS.iter().any(|w| lower.contains(w)) {
            return Ok(());
        }
        if aged {
            self.aged_refresh = Some(std::time::Instant::now());
        }
        refresh_catalog(&mut self.server, &mut self.session, &self.catalog).await?;
        for t in tables.iter() {
            if unknown(self, t) {
                self.absent.insert(t.clone());
                self.absent_since
                    .get_or_insert_with(std::time::Instant::now);
            }
        }
        Ok(())
    }

    /// Judges a text (COM_QUERY, COM_STMT_PREPARE or a synthesized one).
    async fn judge(
        &mut self,
        sql: &str,
        submission: Submission,
        client_seq: &mut u8,
    ) -> Result<Judged, SessionError> {
        if let Some(refusal) = self.governor.fatal() {
            return Err(SessionError::Governance(refusal));
        }
        let ctx = StatementContext {
            identity: &self.identity,
            sql,
            submission,
            statement_name: None,
            portal: None,
            statement_index: 0,
            transaction: transaction(self.session.transaction()),
        };
        let verdict = self.governor.judge(&ctx);
        if self.observe_statements {
            self.governor.observe(SessionEvent::Judged {
                statement: &ctx,
                verdict: &verdict,
            });
        }
        match verdict {
            // `max_rows`: the count decides (see `dry_run`).
            Verdict::Deny(d) if d.max_rows.is_some() => Ok(Judged::DryRun),
            Verdict::Hold(h) if h.max_rows.is_some() => Ok(Judged::DryRun),
            Verdict::Allow => {
                if self.observe_statements {
                    self.governor
                        .observe(SessionEvent::Sent { statement: &ctx });
                }
                Ok(Judged::Forward)
            }
            Verdict::Deny(denial) => {
                info!(session = %self.identity, verdict = "deny", rule = %denial.rule, "statement denied");
                Ok(Judged::Refuse(Refusal::denied(&denial)))
            }
            Verdict::Hold(requirement) => {
                let refusal = self
                    .hold(requirement, sql.to_owned(), submission, client_seq)
                    .await?;
                if refusal.is_none() && self.observe_statements {
                    let ctx = StatementContext {
                        identity: &self.identity,
                        sql,
                        submission,
                        statement_name: None,
                        portal: None,
                        statement_index: 0,
                        transaction: transaction(self.session.transaction()),
                    };
                    self.governor
                        .observe(SessionEvent::Sent { statement: &ctx });
                }
                Ok(refusal.map_or(Judged::Forward, Judged::Refuse))
            }
        }
    }

    /// Waits on a hold: the client waits on its connection (shown MariaDB
    /// progress reports when it accepts them). `None`: approved.
    async fn hold(
        &mut self,
        requirement: HoldRequirement,
        sql: String,
        submission: Submission,
        client_seq: &mut u8,
    ) -> Result<Option<Refusal>, SessionError> {
        let ticket = self.ctx.holds.hold(HoldRequest {
            identity: self.identity.clone(),
            sql,
            submission,
            requirement: requirement.clone(),
        });
        let id = ticket.id().to_owned();
        info!(session = %self.identity, verdict = "hold", hold = %id, rule = %requirement.rule, "statement held");
        let progress = self
            .session
            .capabilities()
            .contains(Capabilities::MARIADB_PROGRESS);
        let report = |seq: &mut u8, client: &mut Leg| {
            if progress {
                let p = Progress {
                    stage: 1,
                    max_stage: 1,
                    progress: 0,
                    info: format!("awaiting approval: hoop holds approve {id}").into(),
                };
                *seq = client.queue_packet(*seq, &p.encode());
            }
        };
        report(client_seq, &mut self.client);
        self.client.flush().await.map_err(SessionError::ClientIo)?;
        let mut hold = ActiveHold::new(ticket, requirement, self.ctx.hold_reminder_interval);
        let entry = self
            .identity
            .original_destination
            .map(|server| self.ctx.kills.hold(server, self.session.thread_id()));
        let killed = entry.as_ref().map(|e| e.killed.clone());
        loop {
            tokio::select! {
                () = async {
                    match &killed {
                        Some(k) => k.notified().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Another session's KILL: the server's own error.
                    hold.ticket.withdraw();
                    let outcome = hoop_core::HoldOutcome::Withdrawn;
                    self.governor.observe(SessionEvent::HoldDecided { id: &id, outcome: &outcome });
                    info!(session = %self.identity, hold = %id, "held statement killed");
                    return Ok(Some(
                        Refusal::new(RefusalReason::Cancelled, "Query execution was interrupted")
                            .with_detail(format!("hold {id} was withdrawn by KILL; the statement never ran.")),
                    ));
                }
                wake = poll_fn(|cx| {
                    let w = hold.poll(cx);
                    if w.outcome.is_some() || w.remind { Poll::Ready(w) } else { Poll::Pending }
                }) => {
                    if let Some(outcome) = wake.outcome {
                        self.governor.observe(SessionEvent::HoldDecided { id: &id, outcome: &outcome });
                        info!(session = %self.identity, hold = %id, ?outcome, "hold ended");
                        return Ok(Refusal::hold_ended(&id, &outcome, &hold.requirement, false));
                    }
                    report(client_seq, &mut self.client);
                    self.client.flush().await.map_err(SessionError::ClientIo)?;
                }
                more = self.client.fill() => {
                    // A client that goes away withdraws its hold; anything
                    // it pipelines waits in the buffer.
                    if !more.map_err(client_read_error)? {
                        hold.ticket.withdraw();
                        return Err(SessionError::ClientIo(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// A COM_QUERY or COM_STMT_PREPARE.
    async fn text(
        &mut self,
        packet: &LogicalPacket,
        sql: &[u8],
        submission: Submission,
    ) -> Result<(), SessionError> {
        let mut client_seq = packet.next_seq();
        // Before a text query only: a PREPARE does not reset the previous
        // statement's diagnostics on the server, and hoop's query would.
        if self.catalog_stale && submission == Submission::Text {
            let lower = String::from_utf8_lossy(sql).to_ascii_lowercase();
            if !DIAGNOSTICS.iter().any(|w| lower.contains(w)) {
                self.catalog_stale = false;
                self.absent.clear();
                refresh_catalog(&mut self.server, &mut self.session, &self.catalog).await?;
            }
        }
        // (A statement that reads diagnostics is read as ASCII instead.)
        if self.charset_stale {
            let lower = String::from_utf8_lossy(sql).to_ascii_lowercase();
            if !DIAGNOSTICS.iter().any(|w| lower.contains(w)) {
                self.ask_charset().await?;
            }
        }
        let text = match self.canonical(sql) {
            Ok(t) => t,
            Err(refusal) => {
                info!(session = %self.identity, verdict = "deny", "statement refused: {}", refusal.message);
                self.client
                    .queue_packet(client_seq, &refusal::err(&refusal).encode());
                return Ok(());
            }
        };
        self.learn_unknown_relations(&text, submission).await?;
        let judged = self.judge(&text, submission, &mut client_seq).await?;
        if let Judged::Refuse(refusal) = &judged {
            self.client
                .queue_packet(client_seq, &refusal::err(refusal).encode());
            return Ok(());
        }
        if let (Some(thread), Some(server)) = (
            crate::kill::killed_thread(&text),
            self.identity.original_destination,
        ) && self.ctx.kills.kill(server, thread)
        {
            info!(session = %self.identity, thread, "KILL withdrew a held statement");
        }
        let command = Command::parse(&packet.payload, self.session.capabilities())
            .map_err(SessionError::ClientMessage)?;
        let reply = ReplyFor {
            statement_map: Self::statement_map(&text),
            sql: text,
            submission,
            statement_id: None,
        };
        match judged {
            Judged::DryRun if submission == Submission::Text => {
                self.dry_run(packet, &command, &reply, client_seq).await?;
            }
            Judged::DryRun => {
                // A prepared statement's rows are counted at each execution.
                // Guarded once the server names the statement (ids only
                // grow within a connection).
                let last = self.session.statements().map(|s| s.id).max();
                self.forward_from(packet, &command, &reply, client_seq)
                    .await?;
                if let Some(id) = self.session.statements().map(|s| s.id).max()
                    && Some(id) != last
                {
                    self.guarded.insert(id);
                }
            }
            _ => {
                self.forward_from(packet, &command, &reply, client_seq)
                    .await?;
            }
        }
        // A statement that may create, drop or rename a relation: learn the
        // catalog again before the next statement.
        let lower = reply.sql.to_ascii_lowercase();
        if ["create", "drop", "alter", "rename"]
            .iter()
            .any(|w| lower.contains(w))
        {
            self.catalog_stale = true;
        }
        if submission == Submission::Text && may_change_charset(&lower) {
            self.charset_stale = true;
        }
        if submission == Submission::Text {
            dry_run::note_table_locks(&lower, &mut self.table_locks);
        }
        Ok(())
    }

    /// Asks the server for `character_set_client` (see `charset_stale`); an
    /// error leaves it unknown, and statements read as ASCII only.
    async fn ask_charset(&mut self) -> Result<(), SessionError> {
        let rows = injected_query(
            &mut self.server,
            &mut self.session,
            // As `BINARY`: sent as it is, not in `character_set_results`.
            "SELECT CAST(@@character_set_client AS BINARY)",
        )
        .await?;
        self.charset_asked = rows
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|row| row.into_iter().next().flatten())
            .map(|name| String::from_utf8_lossy(&name).into_owned());
        self.charset_stale = self.charset_asked.is_none();
        Ok(())
    }

    /// A command that bypasses SQL but does what `sql` does: judged as it.
    async fn synthesized(
        &mut self,
        packet: &LogicalPacket,
        command: &Command<'_>,
        sql: &str,
    ) -> Result<(), SessionError> {
        let mut client_seq = packet.next_seq();
        let refusal = match self.judge(sql, Submission::Text, &mut client_seq).await? {
            Judged::Forward => None,
            Judged::Refuse(refusal) => Some(refusal),
            // Not a statement whose rows a dry run counts (the policy gives
            // no limit to such kinds): as over it.
            Judged::DryRun => {
                self.judge_uncounted(sql, Submission::Text, &mut client_seq)
                    .await?
            }
        };
        if let Some(refusal) = refusal {
            self.client
                .queue_packet(client_seq, &refusal::err(&refusal).encode());
            return Ok(());
        }
        if let (Some(thread), Some(server)) = (
            crate::kill::killed_thread(sql),
            self.identity.original_destination,
        ) && self.ctx.kills.kill(server, thread)
        {
            info!(session = %self.identity, thread, "KILL withdrew a held statement");
        }
        let reply = ReplyFor {
            sql: sql.to_owned(),
            submission: Submission::Text,
            statement_id: None,
            statement_map: Vec::new(),
        };
        self.forward_from(packet, command, &reply, client_seq).await
    }

    /// COM_STMT_EXECUTE / COM_STMT_FETCH of a statement judged when prepared.
    async fn execute(
        &mut self,
        packet: &LogicalPacket,
        command: &Command<'_>,
        id: u32,
    ) -> Result<(), SessionError> {
        // MariaDB's "the statement prepared last" id.
        let id = if id == u32::MAX {
            self.session.statements().map(|s| s.id).max().unwrap_or(id)
        } else {
            id
        };
        let sql = self.lend_sql(id);
        // A view created since the statement was prepared (its rows are
        // masked by lineage, which must know what the view reads).
        // (Only where rows are inspected: masking needs lineage.)
        if matches!(command, Command::StmtExecute(_))
            && !sql.is_empty()
            && self.governor.inspects_rows()
        {
            let learned = self
                .learn_unknown_relations(&sql, Submission::Prepared)
                .await;
            if let Err(e) = learned {
                if let Some(slot) = self.prepared.get_mut(&id) {
                    *slot = sql;
                }
                return Err(e);
            }
        }
        if matches!(command, Command::StmtExecute(_)) && self.governor.observes_executions() {
            let name = id.to_string();
            let ctx = StatementContext {
                identity: &self.identity,
                sql: &sql,
                submission: Submission::Prepared,
                statement_name: Some(&name),
                portal: None,
                statement_index: 0,
                transaction: transaction(self.session.transaction()),
            };
            self.governor
                .observe(SessionEvent::Bound { statement: &ctx });
        }
        let reply = ReplyFor {
            sql,
            submission: Submission::Prepared,
            statement_id: Some(id),
            statement_map: Vec::new(),
        };
        let result = if matches!(command, Command::StmtExecute(_)) && self.guarded.contains(&id) {
            self.dry_run(packet, command, &reply, packet.next_seq())
                .await
        } else {
            self.forward(packet, command, &reply).await
        };
        self.executed(id, reply.sql);
        result
    }

    async fn forward(
        &mut self,
        packet: &LogicalPacket,
        command: &Command<'_>,
        reply: &ReplyFor,
    ) -> Result<(), SessionError> {
        self.forward_from(packet, command, reply, packet.next_seq())
            .await
    }

    /// Sends the command upstream and relays its reply; the reply's packets
    /// reach the client numbered from `client_seq`.
    async fn forward_from(
        &mut self,
        packet: &LogicalPacket,
        command: &Command<'_>,
        reply: &ReplyFor,
        client_seq: u8,
    ) -> Result<(), SessionError> {
        self.session
            .client_command(packet.seq, packet.payload.len(), command)
            .map_err(SessionError::State)?;
        self.server.queue(&packet.raw);
        self.server.flush().await.map_err(SessionError::ServerIo)?;
        if !command.expects_reply() {
            return Ok(());
        }
        self.relay_reply(Awaited::of(command), reply, client_seq)
            .await
    }

    /// Relays the reply to the command just sent (`awaited`); its packets
    /// reach the client numbered from `client_seq`.
    async fn relay_reply(
        &mut self,
        awaited: Awaited,
        reply: &ReplyFor,
        mut client_seq: u8,
    ) -> Result<(), SessionError> {
        let inspect = self.governor.inspects_rows();
        let observe = self.governor.observes_executions();
        let mut rows: Option<RowState> = None;
        // COM_STMT_FETCH: the reply is binary rows only, with no column
        // definitions of its own; they are the cursor's, kept by the session
        // from the EXECUTE that opened it. A cursor hoop did not see opened
        // has no columns to judge its rows by: its rows are refused.
        let mut blind_fetch = false;
        if inspect && awaited.fetch {
            if self.session.result_columns().is_some() {
                rows = self.row_state(reply, 0, true);
            } else {
                blind_fetch = true;
            }
        }
        // Set once a row was refused or a file request refused: the rest of
        // the reply is swallowed, and `ending` is what the client gets.
        let mut ending: Option<ErrPacket> = None;
        let mut ending_sent = false;
        // While a result set's column count and definitions arrive, they
        // are kept back (where the queue towards the client stood, and its
        // sequence id): a malformed definition then ends the reply with a
        // clean ERR instead of half a result-set header.
        let mut head_mark: Option<(usize, u8)> = None;
        // COM_CHANGE_USER's full authentication, translated as at connection
        // time when the legs differ in TLS (see `startup`): where it stands,
        // the scramble, server seq = client seq + `shift`, and a server
        // packet read during a translation step, still to be relayed.
        let translation =
            Translation::between(self.identity.client_tls, self.identity.upstream_tls);
        let mut full = FullAuth::Idle;
        // (Only COM_CHANGE_USER's exchange uses it.)
        let mut scramble = if awaited.change_user {
            self.scramble.clone()
        } else {
            Vec::new()
        };
        let mut shift = 0u8;
        let mut pending: Option<LogicalPacket> = None;
        // The last packet was a column block's end or a row: the reply is in
        // its rows.
        let mut in_rows = false;
        let change_user = awaited.change_user;
        // Nothing in the reply is looked at but its accounting: whole runs
        // of its result packets are checked in one pass and relayed with
        // one copy (`Session::plain_run`); what the run leaves, the paths
        // below take.
        let plain_runs = !inspect && !observe && !change_user;
        loop {
            if plain_runs && pending.is_none() && ending.is_none() && head_mark.is_none() {
                let (buffered, max_payload) = self.server.buffered();
                let run = self.session.plain_run(buffered, max_payload);
                if run.packets > 0 {
                    client_seq =
                        self.server
                            .relay_run(&mut self.client, client_seq, run.bytes, run.packets);
                    self.client_seq = client_seq;
                    in_rows = run.in_rows;
                    if run.completes_reply {
                        break;
                    }
                    if self.client.should_flush() {
                        self.client.flush().await.map_err(SessionError::ClientIo)?;
                    }
                }
            }
            if in_rows
                && pending.is_none()
                && rows.is_none()
                && ending.is_none()
                && head_mark.is_none()
            {
                client_seq = self.plain_rows(client_seq).await?;
            }
            // A packet already read whole that needs nothing but the
            // session's accounting and a copy to the client (all the general
            // path below would do with it) is relayed from the read buffer,
            // not split off into a packet of its own: a result's head and
            // end, the rows `plain_rows` left, a PREPARE's definitions.
            let mut accounted = None;
            if pending.is_none()
                && ending.is_none()
                && !change_user
                && let Some((seq, payload)) = self.server.peek_single()
            {
                self.client_seq = client_seq;
                let event = match self.session.server_packet(seq, payload) {
                    Ok(event) => event,
                    Err(e) => {
                        if let Some((len, seq)) = head_mark {
                            self.client.unqueue_after(len);
                            self.client_seq = seq;
                        }
                        return Err(server_state(e));
                    }
                };
                let plain = match event.packet {
                    ServerPacket::ColumnCount(_)
                    | ServerPacket::ParamDefinition(_)
                    | ServerPacket::ParamsEof
                    | ServerPacket::Progress
                    | ServerPacket::Eof => true,
                    ServerPacket::ColumnDefinition(_) | ServerPacket::ColumnsEof => {
                        !(event.columns_complete && inspect)
                    }
                    ServerPacket::Row => rows.is_none() && !blind_fetch,
                    ServerPacket::Ok { .. } | ServerPacket::EndOfRows { .. } => !observe,
                    _ => false,
                };
                if plain {
                    if matches!(event.packet, ServerPacket::ColumnCount(_)) {
                        rows = None;
                        head_mark = Some((self.client.queued(), client_seq));
                    }
                    in_rows = in_rows_after(&event);
                    if event.columns_complete || event.completes_reply {
                        head_mark = None;
                    }
                    let len = payload.len();
                    client_seq = self.server.relay_single(&mut self.client, client_seq, len);
                    if event.completes_reply {
                        break;
                    }
                    if head_mark.is_none() && self.client.should_flush() {
                        self.client.flush().await.map_err(SessionError::ClientIo)?;
                    }
                    continue;
                }
                // Accounted for: the general path takes it from here.
                let p = self.server.decoded().map_err(server_read_error)?.ok_or(
                    SessionError::State(
                        hoop_proto_mysql::session::SessionError::UnexpectedServerPacket {
                            what: "a packet read whole that does not decode",
                            when: "in a reply",
                        },
                    ),
                )?;
                accounted = Some((p, event));
            }
            let (p, event) = if let Some(accounted) = accounted {
                accounted
            } else {
                let p = if let Some(p) = pending.take() {
                    p
                } else if self.server.has_buffered()
                    && let Some(p) = self.server.decoded().map_err(server_read_error)?
                {
                    p
                } else {
                    if head_mark.is_none() {
                        self.client.flush().await.map_err(SessionError::ClientIo)?;
                    }
                    // What arrives is taken from the top (the fast paths).
                    if !self.server.fill().await.map_err(server_read_error)? {
                        return Err(SessionError::ServerIo(
                            std::io::ErrorKind::UnexpectedEof.into(),
                        ));
                    }
                    continue;
                };
                self.client_seq = client_seq;
                let event = match self.session.server_packet(p.seq, &p.payload) {
                    Ok(event) => event,
                    Err(e) => {
                        if let Some((len, seq)) = head_mark {
                            self.client.unqueue_after(len);
                            self.client_seq = seq;
                        }
                        return Err(server_state(e));
                    }
                };
                (p, event)
            };
            if change_user {
                if self.identity.client_tls
                    && !self.identity.upstream_tls
                    && asks_for_password(&p.payload)
                {
                    return Err(SessionError::Unsupported(CHANGE_USER_PASSWORD.into()));
                }
                full = after_server_auth_packet(&p.payload, translation, &mut scramble);
            }
            if matches!(event.packet, ServerPacket::ColumnCount(_)) {
                head_mark = Some((self.client.queued(), client_seq));
            }
            in_rows = in_rows_after(&event);
            if event.columns_complete || event.completes_reply {
                head_mark = None;
            }
            if ending.is_some() {
                if !ending_sent && event.completes_reply {
                    if let Some(err) = &ending {
                        self.client.queue_packet(client_seq, &err.encode());
                    }
                    ending_sent = true;
                }
                if event.completes_reply {
                    break;
                }
                continue;
            }
            let mut replaced: Option<bytes::Bytes> = None;
            match event.packet {
                ServerPacket::ColumnCount(_) => rows = None,
                ServerPacket::ColumnDefinition(_) | ServerPacket::ColumnsEof
                    if event.columns_complete && inspect =>
                {
                    let index = event.reply.map_or(0, |r| r.statement_index);
                    rows = self.row_state(reply, index, event.reply.is_some_and(|r| r.binary_rows));
                }
                ServerPacket::Row if blind_fetch => {
                    warn!(session = %self.identity, "rows of a cursor hoop did not see opened refused");
                    let err = ErrPacket::from_code(
                        codes::NOT_SUPPORTED,
                        "hoop: COM_STMT_FETCH rows refused: hoop did not see this cursor's columns",
                    );
                    self.client.queue_packet(client_seq, &err.encode());
                    if event.completes_reply {
                        break;
                    }
                    ending = Some(err);
                    ending_sent = true;
                    continue;
                }
                ServerPacket::Row => {
                    if let Some(state) = rows.as_mut() {
                        match Self::rewrite(state, &p.payload)? {
                            Ok(r) => replaced = r,
                            Err(refusal) => {
                                warn!(session = %self.identity, "result refused: {}", refusal.message);
                                let err = refusal::err(&refusal);
                                if event.completes_reply {
                                    self.client.queue_packet(client_seq, &err.encode());
                                    break;
                                }
                                // The ERR ends the result for the client
                                // now; the server's rest is swallowed.
                                self.client.queue_packet(client_seq, &err.encode());
                                ending = Some(err);
                                ending_sent = true;
                                continue;
                            }
                        }
                    }
                }
                ServerPacket::Error => {
                    if let Ok(err) = ErrPacket::parse(&p.payload) {
                        let message = lossy(&err.message);
                        let fields = [message.as_str()];
                        let server_index = event.reply.map_or(0, |r| r.statement_index);
                        let statement_index = reply
                            .statement_map
                            .get(server_index)
                            .copied()
                            .unwrap_or(server_index);
                        if let Some(masked) = self.governor.rewrite_server_text(ServerText {
                            kind: ServerTextKind::Error,
                            fields: &fields,
                            raised_by_code: err.code == SIGNAL_EXCEPTION,
                            sql: (!reply.sql.is_empty()).then_some(reply.sql.as_str()),
                            statement_index,
                        }) && let Some(Some(text)) = masked.into_iter().next()
                        {
                            replaced = Some(
                                ErrPacket {
                                    message: text.into(),
                                    ..err.clone()
                                }
                                .encode(),
                            );
                        }
                        if observe {
                            self.governor.observe(SessionEvent::ServerError {
                                sqlstate: err.sql_state_str(),
                                severity: None,
                            });
                        }
                    }
                }
                ServerPacket::Ok { .. } | ServerPacket::EndOfRows { .. } if observe => {
                    self.governor.observe(SessionEvent::CommandComplete {
                        tag: "OK",
                        rows: None,
                    });
                }
                ServerPacket::PrepareOk { statement_id, .. } => {
                    if may_change_charset(&reply.sql.to_ascii_lowercase()) {
                        self.charset_statements.insert(statement_id);
                    }
                    self.prepared.insert(statement_id, reply.sql.clone());
                }
                ServerPacket::LocalInfileRequest => {
                    let server_index = event.reply.map_or(0, |r| r.statement_index);
                    match self.infile_refusal(reply, server_index, &p.payload) {
                        None => {
                            client_seq = self.relay_file(&p, client_seq).await?;
                        }
                        Some(why) => {
                            // The server gets an empty file, the client an
                            // ERR once the server's reply ends.
                            warn!(session = %self.identity, "LOCAL INFILE request refused: {why}");
                            let seq = p.next_seq();
                            self.session
                                .client_data(seq, 0)
                                .map_err(SessionError::State)?;
                            self.server.queue_packet(seq, &[]);
                            self.server.flush().await.map_err(SessionError::ServerIo)?;
                            ending = Some(ErrPacket::from_code(
                                codes::NOT_SUPPORTED,
                                format!(
                                    "hoop: the server's LOAD DATA LOCAL INFILE file request was refused: {why}"
                                ),
                            ));
                        }
                    }
                    continue;
                }
                _ => {}
            }
            client_seq = if let Some(payload) = replaced {
                self.client.queue_packet(client_seq, &payload)
            } else {
                {
                    self.client.queue(&p.with_first_seq(client_seq));
                    client_seq.wrapping_add((p.chunks % 256) as u8)
                }
            };
            if head_mark.is_none() && self.client.should_flush() {
                self.client.flush().await.map_err(SessionError::ClientIo)?;
            }
            if event.completes_reply {
                break;
            }
            if self.session.awaiting_client_data() {
                // COM_CHANGE_USER's auth exchange.
                let mut data = self.client_auth_data().await?;
                client_seq = data.next_seq();
                self.client_seq = client_seq;
                match (translation, std::mem::replace(&mut full, FullAuth::Idle)) {
                    // The cleartext is encrypted for the server (a key
                    // request is relayed: the plaintext server honours it).
                    (Some(Translation::ToPlainServer), FullAuth::PasswordNext { sha256 })
                        if caching_sha2::classify_client(&data.payload, true, sha256)
                            != ClientMessage::PublicKeyRequest =>
                    {
                        let key_request = if sha256 {
                            caching_sha2::SHA256_REQUEST_PUBLIC_KEY
                        } else {
                            caching_sha2::REQUEST_PUBLIC_KEY
                        };
                        match encrypt_upstream(
                            &mut self.server,
                            &mut self.session,
                            data,
                            shift,
                            &scramble,
                            key_request,
                        )
                        .await?
                        {
                            Upstream::Sent => shift = shift.wrapping_add(2),
                            Upstream::Refused(reply) => pending = Some(reply),
                        }
                        continue;
                    }
                    // hoop's key for the client; its ciphertext decrypted
                    // and sent in clear inside TLS.
                    (Some(Translation::ToTlsServer), FullAuth::PasswordNext { sha256 })
                        if !data.payload.is_empty() =>
                    {
                        let key = self
                            .ctx
                            .hoop_key
                            .get()
                            .await
                            .map_err(SessionError::AuthTranslation)?;
                        if caching_sha2::classify_client(&data.payload, false, sha256)
                            == ClientMessage::PublicKeyRequest
                        {
                            self.client_seq = self.client.queue_packet(
                                client_seq,
                                &caching_sha2::more_data(key.public_pem()),
                            );
                            shift = shift.wrapping_sub(2);
                            data = self.client_auth_data().await?;
                            client_seq = data.next_seq();
                            self.client_seq = client_seq;
                        }
                        decrypt_upstream(
                            &mut self.server,
                            &mut self.session,
                            &key,
                            data,
                            shift,
                            &scramble,
                        )
                        .await?;
                        continue;
                    }
                    _ => {}
                }
                let seq = data.seq.wrapping_add(shift);
                self.session
                    .client_data(seq, data.payload.len())
                    .map_err(SessionError::State)?;
                self.server.queue(&data.with_first_seq(seq));
                self.server.flush().await.map_err(SessionError::ServerIo)?;
            }
        }
        self.client.flush().await.map_err(SessionError::ClientIo)?;
        Ok(())
    }

    /// The client's next auth packet (COM_CHANGE_USER), after what is
    /// queued for it was written.
    async fn client_auth_data(&mut self) -> Result<LogicalPacket, SessionError> {
        self.client.flush().await.map_err(SessionError::ClientIo)?;
        self.client
            .read()
            .await
            .map_err(client_read_error)?
            .ok_or_else(|| SessionError::ClientIo(std::io::ErrorKind::UnexpectedEof.into()))
    }

    /// Rows that nothing rewrites, relayed straight from the server leg's
    /// read buffer while whole single-chunk rows are there: each is still
    /// accounted for by the session (sequence id, end of the result), but
    /// is not split off into a packet of its own. Stops (returning the
    /// client leg's next sequence id) at the first packet that may be
    /// anything but a row (`0xFE`, `0xFF`), or one not read whole, which the
    /// caller's general path then takes.
    async fn plain_rows(&mut self, mut client_seq: u8) -> Result<u8, SessionError> {
        while let Some((seq, payload)) = self.server.peek_single() {
            if payload.first().is_none_or(|&b| b == 0xFE || b == 0xFF) {
                break;
            }
            self.client_seq = client_seq;
            let event = self
                .session
                .server_packet(seq, payload)
                .map_err(server_state)?;
            if !matches!(event.packet, ServerPacket::Row) || event.completes_reply {
                // Not reached: in the rows stage only 0xFE and 0xFF end them.
                return Err(SessionError::State(
                    hoop_proto_mysql::session::SessionError::UnexpectedServerPacket {
                        what: "a packet taken for a row",
                        when: "in the rows of a result",
                    },
                ));
            }
            let len = payload.len();
            client_seq = self.server.relay_single(&mut self.client, client_seq, len);
            if self.client.should_flush() {
                self.client.flush().await.map_err(SessionError::ClientIo)?;
            }
        }
        self.client_seq = client_seq;
        Ok(client_seq)
    }

    /// Why the server's LOCAL INFILE request (`payload`, answering result
    /// `server_index` of `reply`) must be refused; `None`: relay it.
    fn infile_refusal(
        &self,
        reply: &ReplyFor,
        server_index: usize,
        payload: &[u8],
    ) -> Option<String> {
        if !self.ctx.local_infile {
            return Some("LOAD DATA LOCAL INFILE is disabled (mysql.local_infile: false)".into());
        }
        if !self
            .session
            .capabilities()
            .contains(Capabilities::LOCAL_FILES)
        {
            return Some(
                "the client did not offer to send local files (CLIENT_LOCAL_FILES)".into(),
            );
        }
        let asked = match LocalInfileRequest::parse(payload) {
            Ok(r) => r.filename,
            Err(e) => return Some(format!("malformed request: {e}")),
        };
        let statements = lexer::split(reply.sql.as_bytes(), &CANONICAL).unwrap_or_default();
        let named = statements
            .get(server_index)
            .and_then(|s| reply.sql.as_bytes().get(s.range.clone()))
            .and_then(crate::infile::requested_file);
        match named {
            Some(named) if named == asked.as_ref() => None,
            Some(named) => Some(format!(
                "the server asked for '{}', but the statement names '{}'",
                lossy(&asked),
                lossy(&named)
            )),
            None => Some(format!(
                "the server asked for '{}' in reply to a statement that is not \
                 LOAD DATA LOCAL INFILE naming that file",
                lossy(&asked)
            )),
        }
    }

    /// Relays an allowed LOCAL INFILE request to the client and the file
    /// the client sends back (renumbered for the server leg) up to and
    /// including its empty last packet. Returns the client leg's sequence
    /// id for the server's OK/ERR that follows.
    async fn relay_file(
        &mut self,
        request: &LogicalPacket,
        client_seq: u8,
    ) -> Result<u8, SessionError> {
        self.client.queue(&request.with_first_seq(client_seq));
        self.client.flush().await.map_err(SessionError::ClientIo)?;
        let observe = self.governor.observes_executions();
        let mut server_seq = request.next_seq();
        let mut total = 0usize;
        loop {
            let data = self
                .client
                .read()
                .await
                .map_err(client_read_error)?
                .ok_or_else(|| SessionError::ClientIo(std::io::ErrorKind::UnexpectedEof.into()))?;
            let kind = self
                .session
                .client_data(server_seq, data.payload.len())
                .map_err(SessionError::State)?;
            self.server.queue(&data.with_first_seq(server_seq));
            server_seq = server_seq.wrapping_add((data.chunks % 256) as u8);
            total += data.payload.len();
            if observe && !data.payload.is_empty() {
                self.governor.observe(SessionEvent::CopyData {
                    direction: DataDirection::ToServer,
                    bytes: data.payload.len(),
                });
            }
            if kind == ClientData::InfileEnd {
                self.server.flush().await.map_err(SessionError::ServerIo)?;
                info!(session = %self.identity, bytes = total, "LOCAL INFILE file relayed");
                return Ok(data.next_seq());
            }
            if self.server.should_flush() {
                self.server.flush().await.map_err(SessionError::ServerIo)?;
            }
        }
    }

    /// The rewriter for a result set whose column definitions are complete.
    fn row_state(
        &mut self,
        reply: &ReplyFor,
        server_index: usize,
        binary: bool,
    ) -> Option<RowState> {
        let definitions: Vec<Arc<ColumnDefinition>> = self.session.result_columns()?.to_vec();
        let columns: Vec<ResultColumn> = definitions
            .iter()
            .map(|d| self.result_column(d, binary))
            .collect();
        let statement_index = reply
            .statement_map
            .get(server_index)
            .copied()
            .unwrap_or(server_index);
        let name = reply.statement_id.map(|id| id.to_string());
        let ctx = StatementContext {
            identity: &self.identity,
            sql: &reply.sql,
            submission: reply.submission,
            statement_name: name.as_deref(),
            portal: None,
            statement_index,
            transaction: transaction(self.session.transaction()),
        };
        let rewriter = self.governor.row_rewriter(&ctx, &columns)?;
        let mariadb = self.session.server_version().is_none_or(|v| v.mariadb);
        let mut wide: Vec<Option<WideCharset>> = definitions
            .iter()
            .map(|d| WideCharset::of_collation(d.collation, mariadb))
            .collect();
        if wide.iter().all(Option::is_none) {
            wide.clear();
        }
        Some(RowState {
            rewriter,
            binary,
            types: definitions.iter().map(|d| d.binary_type()).collect(),
            wide,
            shown: RowBuffer::default(),
            out: RowBuffer::default(),
            encoded: RowBuffer::default(),
        })
    }

    /// A column definition as governance sees it. Its `org_table`/`org_name`
    /// name the source only when they name a base table hoop knows (views,
    /// derived tables and CTEs put names of their own there).
    fn result_column(&self, d: &ColumnDefinition, binary: bool) -> ResultColumn {
        // Borrowed where the bytes are UTF-8 (no copy until a name is kept).
        let schema = String::from_utf8_lossy(&d.schema);
        let org_table = String::from_utf8_lossy(&d.org_table);
        let org_name = String::from_utf8_lossy(&d.org_name);
        let source = if !org_name.is_empty()
            && !org_table.is_empty()
            && !schema.is_empty()
            && self.catalog.is_base_table(&schema, &org_table)
        {
            hoop_core::ColumnSource::Named(ResolvedColumn {
                schema: Some(schema.to_lowercase()),
                table: org_table.to_lowercase(),
                column: org_name.to_lowercase(),
            })
        } else {
            hoop_core::ColumnSource::None
        };
        let encoding = if d.column_type == ColumnType::JSON {
            ValueEncoding::Json
        } else if !binary || d.column_type.binary_layout() == BinaryLayout::LengthEncoded {
            ValueEncoding::Text
        } else {
            ValueEncoding::Opaque
        };
        ResultColumn {
            name: lossy(&d.name),
            source,
            encoding,
            type_name: d.column_type.name().map_or_else(
                || format!("{:?}", d.column_type).into(),
                std::borrow::Cow::Borrowed,
            ),
            // Every value is scanned by the content detectors (the
            // per-type shortcut is PostgreSQL's so far).
            content: hoop_core::ValueContent::Any,
        }
    }

    /// One row through the rewriter: `Ok(None)` unchanged, `Ok(Some)` the
    /// new payload, `Err(refusal)` when it cannot be made safe.
    fn rewrite(
        state: &mut RowState,
        payload: &[u8],
    ) -> Result<Result<Option<bytes::Bytes>, Refusal>, SessionError> {
        let RowState {
            rewriter,
            binary,
            types,
            wide,
            shown,
            out,
            encoded,
        } = state;
        out.clear();
        if *binary {
            let row = BinaryRow::parse(payload, types).map_err(SessionError::ServerMessage)?;
            let values: Vec<Value<'_>> = row.values(types).collect();
            shown.clear();
            for (i, v) in values.iter().enumerate() {
                match v {
                    Value::Null => shown.push(None),
                    Value::Bytes(b) => match wide.get(i).copied().flatten() {
                        Some(set) => shown.push_decoded(set, b),
                        None => shown.push(Some(b)),
                    },
                    other => {
                        use std::io::Write as _;
                        let start = shown.bytes.len();
                        // Writing into a Vec does not fail.
                        let _ = write!(shown.bytes, "{other}");
                        shown.values.push(Some(start..shown.bytes.len()));
                    }
                }
            }
            match rewriter.rewrite_row(shown, out) {
                RowRewrite::Unchanged => Ok(Ok(None)),
                RowRewrite::Refuse(r) => Ok(Err(r)),
                RowRewrite::Rewritten => {
                    encoded.clear();
                    for (i, set) in wide.iter().enumerate() {
                        match (set, out.value(i)) {
                            (Some(set), Some(new)) if Some(new) != shown.value(i) => {
                                let start = encoded.bytes.len();
                                set.encode_into(new, &mut encoded.bytes);
                                encoded.values.push(Some(start..encoded.bytes.len()));
                            }
                            _ => encoded.values.push(None),
                        }
                    }
                    let mut new_values = Vec::with_capacity(values.len());
                    for (i, ty) in types.iter().enumerate() {
                        let new = out.value(i);
                        let v = match new {
                            None => Value::Null,
                            // Unchanged: the server's own bytes.
                            Some(b) if Some(b) == shown.value(i) => values[i],
                            Some(b)
                                if ty.column_type.binary_layout()
                                    == BinaryLayout::LengthEncoded =>
                            {
                                Value::Bytes(encoded.value(i).unwrap_or(b))
                            }
                            Some(_) => {
                                return Ok(Err(Refusal::cannot_mask(
                                    "a masked value does not fit its binary column type",
                                )));
                            }
                        };
                        new_values.push(v);
                    }
                    BinaryRow::encode(types, &new_values)
                        .map(|b| Ok(Some(b)))
                        .map_err(SessionError::ServerMessage)
                }
            }
        } else {
            let row = TextRow::parse(payload, types.len()).map_err(SessionError::ServerMessage)?;
            let values: Vec<Option<&[u8]>> = row.values().collect();
            if wide.is_empty() {
                return match rewriter.rewrite_row(&values.as_slice(), out) {
                    RowRewrite::Unchanged => Ok(Ok(None)),
                    RowRewrite::Refuse(r) => Ok(Err(r)),
                    RowRewrite::Rewritten => Ok(Ok(Some(TextRow::encode(
                        (0..out.values.len()).map(|i| out.value(i)),
                    )))),
                };
            }
            shown.clear();
            for (v, set) in values.iter().zip(wide.iter()) {
                match (v, set) {
                    (Some(b), Some(set)) => shown.push_decoded(*set, b),
                    _ => shown.push(*v),
                }
            }
            match rewriter.rewrite_row(shown, out) {
                RowRewrite::Unchanged => Ok(Ok(None)),
                RowRewrite::Refuse(r) => Ok(Err(r)),
                RowRewrite::Rewritten => {
                    encoded.clear();
                    for i in 0..out.values.len() {
                        let new = out.value(i);
                        match (wide.get(i).copied().flatten(), new) {
                            // Unchanged: the server's own bytes.
                            (_, Some(b)) if Some(b) == shown.value(i) => {
                                encoded.push(values.get(i).copied().flatten());
                            }
                            (Some(set), Some(b)) => {
                                let start = encoded.bytes.len();
                                set.encode_into(b, &mut encoded.bytes);
                                encoded.values.push(Some(start..encoded.bytes.len()));
                            }
                            (_, b) => encoded.push(b),
                        }
                    }
                    Ok(Ok(Some(TextRow::encode(
                        (0..encoded.values.len()).map(|i| encoded.value(i)),
                    ))))
                }
            }
        }
    }
}
