//! The session state machine: phases, transaction status, prepared
//! statements and portals, and the queue of replies the server still owes.
//!
//! Pure: the driver tells it what it forwarded to the server and what the
//! server answered; it tells the driver what each server message belongs to
//! and whether to forward, swallow or replace it.
//!
//! # The owed-reply queue
//! Every message the driver forwards that the server answers pushes an
//! [`Owed`] entry; each server reply pops or advances the front entry.
//! Because replies come in request order, the front entry is always what the
//! current reply belongs to. That is what lets the driver:
//! - attribute RowDescription/DataRow/CommandComplete to the statement (and
//!   SQL text) that produced them, through pipelines of Parse/Bind/Execute,
//!   multi-statement Queries and suspended portals;
//! - inject messages of its own (a Describe to learn a portal's columns, a
//!   deliberately failing Execute that aborts a denied batch) and swallow or
//!   replace their replies without the client noticing.
//!
//! Prepared statements and portals are recorded when the server confirms
//! them (ParseComplete/BindComplete), not when the client asks, so a failed
//! Parse never shadows an existing statement. Lookups made before the
//! confirmation arrives search the queue first.

use std::{collections::HashMap, collections::VecDeque, sync::Arc};

use bytes::Bytes;
// Names come from the client, so the maps keep a randomly seeded hasher;
// foldhash's costs a fraction of SipHash's on these short keys.
use foldhash::fast::RandomState;

use super::extended::{Bind, Close, Describe, Parse, Target};
use super::notice::NoticeFields;
use super::rows::RowDescription;
use super::status::{ReadyForQuery, TransactionStatus};
use super::wire::MessageError;
use hoop_core::Submission;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Waiting for the StartupMessage (or SSLRequest/GSSENCRequest).
    #[default]
    Startup,
    /// TLS handshake with the client in progress.
    TlsHandshake,
    /// StartupMessage forwarded; authentication exchange in progress.
    Authenticating,
    /// Idle: nothing owed by the server.
    Ready,
    /// The server owes replies.
    InQuery,
    /// COPY FROM STDIN: the client streams CopyData.
    CopyIn,
    /// COPY TO STDOUT: the server streams CopyData.
    CopyOut,
    /// CopyBoth (replication): both stream.
    CopyBoth,
    /// A statement is held awaiting approval; the client is paused.
    Held,
    /// Terminated.
    Closed,
}

/// A server reply that does not fit what the session expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A reply arrived that no request is waiting for.
    #[error("server sent {message} but no request was waiting for it")]
    UnexpectedReply {
        /// The message name.
        message: &'static str,
    },
    /// A message body is malformed.
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// A prepared statement the server confirmed.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    /// Its SQL text.
    pub sql: Arc<str>,
    /// Its result columns, from Describe Statement (formats are all text).
    pub row_description: Option<Arc<RowDescription>>,
}

/// A portal the server confirmed.
#[derive(Debug, Clone)]
pub struct Portal {
    /// The statement it was bound from (`None`: a cursor SQL `DECLARE` made).
    pub statement: Option<Arc<str>>,
    /// The statement's SQL text.
    pub sql: Arc<str>,
    /// Result columns: from Describe Portal, else from the statement.
    pub row_description: Option<Arc<RowDescription>>,
    /// Result format codes from Bind, as sent (empty, one, or one per column).
    pub result_formats: Arc<[i16]>,
    /// It outlives its transaction (a cursor declared `WITH HOLD`).
    pub hold: bool,
}

/// A reply the server still owes, in request order.
#[derive(Debug, Clone)]
pub enum Owed {
    /// A simple Query: results for each statement, then ReadyForQuery.
    Query {
        /// The whole query string (empty when SQL is not kept). A buffer
        /// the session reuses once the query is answered.
        sql: String,
    },
    /// ParseComplete.
    Parse {
        /// Statement name.
        name: Arc<str>,
        /// SQL text.
        sql: Arc<str>,
    },
    /// BindComplete.
    Bind {
        /// Portal name.
        portal: Arc<str>,
        /// Statement name.
        statement: Arc<str>,
        /// Result format codes.
        result_formats: Arc<[i16]>,
    },
    /// ParameterDescription then RowDescription or NoData.
    DescribeStatement {
        /// Statement name.
        name: Arc<str>,
    },
    /// RowDescription or NoData.
    DescribePortal {
        /// Portal name.
        name: Arc<str>,
        /// Sent by hoop, not the client: swallow the reply.
        injected: bool,
    },
    /// DataRow… then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute {
        /// Portal name.
        portal: Arc<str>,
    },
    /// CloseComplete.
    Close {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: Arc<str>,
        /// Sent by hoop, not the client: swallow the reply.
        injected: bool,
    },
    /// ReadyForQuery.
    Sync,
    /// FunctionCallResponse, then ReadyForQuery.
    FunctionCall,
    /// A hoop-injected Execute of a portal that does not exist, sent to make
    /// the server abort the current (implicit or explicit) transaction in
    /// place of a refused statement. Its ErrorResponse is replaced by
    /// `replacement` (the refusal the client should see).
    Abort {
        /// The ErrorResponse to send the client instead.
        replacement: Bytes,
    },
    /// A message hoop sent on its own (the `BEGIN`, `SAVEPOINT`, `COMMIT` or
    /// `ROLLBACK` around a dry run): its replies are the driver's to read;
    /// the client sees none of them.
    Internal(Internal),
}

/// What an [`Owed::Internal`] entry waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// A simple Query: every reply through its ReadyForQuery.
    Query,
    /// ParseComplete.
    Parse,
    /// BindComplete.
    Bind,
    /// An Execute's CommandComplete (notices before it included).
    Execute,
    /// CloseComplete.
    Close,
}

/// What the driver should do with a server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAction {
    /// Send it to the client unchanged.
    Forward,
    /// Drop it: it answers a message hoop injected.
    Swallow,
    /// Send these bytes instead.
    Replace(Bytes),
    /// Stop before this message: the driver has work to finish first (a
    /// catalog lookup for masking); the message is processed again after.
    /// The state machine itself never returns this.
    Pause,
}

/// What a result set (rows, COPY data, completion) belongs to.
#[derive(Debug, Clone, Copy)]
pub struct ResultContext<'a> {
    /// The SQL text (for a simple Query, the whole query string).
    pub sql: &'a str,
    /// How it was sent.
    pub form: Submission,
    /// Prepared statement name (extended protocol).
    pub statement: Option<&'a str>,
    /// Portal name (extended protocol).
    pub portal: Option<&'a str>,
    /// Result columns, when known.
    pub row_description: Option<&'a RowDescription>,
    /// Result format codes as the client asked in Bind (empty = all text).
    /// For a simple Query, use the RowDescription's own format codes.
    pub result_formats: &'a [i16],
    /// For a simple Query: the 0-based index of the statement within the query string.
    pub statement_index: usize,
}

/// The pure state of one PostgreSQL session.
#[derive(Debug, Default)]
pub struct SessionState {
    phase: Phase,
    transaction: TransactionStatus,
    statements: HashMap<Arc<str>, PreparedStatement, RandomState>,
    /// Named portals; the unnamed one (what most drivers use) has a field
    /// of its own, so the common Bind/Execute/Sync cycle touches no map.
    portals: HashMap<Arc<str>, Portal, RandomState>,
    unnamed_portal: Option<Portal>,
    owed: VecDeque<Owed>,
    /// The unnamed statement/portal's name, shared rather than allocated
    /// for every Bind and Execute.
    unnamed: Arc<str>,
    /// "No format codes", shared likewise.
    no_formats: Arc<[i16]>,
    /// RowDescription of the current simple-Query statement.
    query_description: Option<Arc<RowDescription>>,
    query_index: usize,
    track_rows: bool,
    /// SQL texts are not kept (see [`SessionState::without_sql`]).
    forget_sql: bool,
    /// Buffers of answered simple Queries, reused for the next ones so a
    /// query's text is copied without an allocation (at most
    /// [`SPARE_SQL_BUFFERS`], none larger than [`SPARE_SQL_CAPACITY`]).
    spare_sql: Vec<String>,
    /// The last RowDescription parsed: a result described by the same
    /// bytes (every run of the same query) shares it instead of copying
    /// and validating them again.
    last_description: Option<Arc<RowDescription>>,
}

/// How many answered queries' buffers a session keeps for reuse.
const SPARE_SQL_BUFFERS: usize = 4;
/// A buffer larger than this is freed, not kept (a session that once sent
/// a huge query does not hold its memory for good).
const SPARE_SQL_CAPACITY: usize = 16 * 1024;

impl SessionState {
    fn portal_ref(&self, name: &str) -> Option<&Portal> {
        if name.is_empty() {
            self.unnamed_portal.as_ref()
        } else {
            self.portals.get(name)
        }
    }

    /// `s` as a shared name: the unnamed one, or a known statement's or
    /// portal's (a reference-count increment), or a new allocation.
    #[inline]
    fn name(&self, s: &str) -> Arc<str> {
        if s.is_empty() {
            return self.unnamed.clone();
        }
        self.named(s)
    }

    /// [`SessionState::name`] of a named statement or portal.
    #[inline(never)]
    fn named(&self, s: &str) -> Arc<str> {
        if let Some((known, _)) = self.statements.get_key_value(s) {
            return known.clone();
        }
        if let Some((known, _)) = self.portals.get_key_value(s) {
            return known.clone();
        }
        Arc::from(s)
    }

    /// A new session. With `track_rows`, RowDescriptions are kept per
    /// statement and portal (needed for masking); without, they are not parsed.
    pub fn new(track_rows: bool) -> Self {
        Self {
            track_rows,
            ..Self::default()
        }
    }

    /// Does not keep SQL texts: queries, prepared statements and portals
    /// then carry `""` as their SQL, and the copy (an allocation per simple
    /// Query) is saved. For a driver that reads neither
    /// [`ResultContext::sql`] nor [`SessionState::statement_sql`].
    #[must_use]
    pub fn without_sql(mut self) -> Self {
        self.forget_sql = true;
        self
    }

    fn sql(&self, sql: &str) -> Arc<str> {
        if self.forget_sql {
            self.unnamed.clone()
        } else {
            Arc::from(sql)
        }
    }

    /// The current phase.
    #[inline]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Sets the phase (startup, TLS, authentication, holds are driven by the driver).
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// Transaction status from the last ReadyForQuery.
    #[inline]
    pub fn transaction(&self) -> TransactionStatus {
        self.transaction
    }

    /// Replies still owed, front first.
    #[inline]
    pub fn owed(&self) -> impl Iterator<Item = &Owed> {
        self.owed.iter()
    }

    /// Whether the server owes nothing.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.owed.is_empty()
    }

    /// Whether row descriptions are tracked.
    pub fn tracks_rows(&self) -> bool {
        self.track_rows
    }

    /// A confirmed prepared statement.
    pub fn statement(&self, name: &str) -> Option<&PreparedStatement> {
        self.statements.get(name)
    }

    /// A confirmed portal.
    pub fn portal(&self, name: &str) -> Option<&Portal> {
        self.portal_ref(name)
    }

    #[inline]
    fn push(&mut self, owed: Owed) {
        if matches!(self.phase, Phase::Ready) {
            self.phase = Phase::InQuery;
        }
        self.owed.push_back(owed);
    }

    /// The SQL of statement `name`, including a Parse not yet confirmed.
    #[inline]
    pub fn statement_sql(&self, name: &str) -> Option<Arc<str>> {
        for o in self.owed.iter().rev() {
            if let Owed::Parse { name: n, sql } = o
                && &**n == name
            {
                return Some(sql.clone());
            }
        }
        self.statements.get(name).map(|s| s.sql.clone())
    }

    /// Whether executing portal `portal` will have a known RowDescription:
    /// a Describe of it is pending or done, or its statement was described.
    pub fn portal_description_expected(&self, portal: &str) -> bool {
        for o in self.owed.iter().rev() {
            match o {
                Owed::DescribePortal { name, .. } if &**name == portal => return true,
                Owed::Bind {
                    portal: p,
                    statement,
                    ..
                } if &**p == portal => {
                    return self.statement_description_expected(statement);
                }
                _ => {}
            }
        }
        self.portal_ref(portal)
            .is_some_and(|p| p.row_description.is_some())
    }

    fn statement_description_expected(&self, statement: &str) -> bool {
        for o in self.owed.iter().rev() {
            match o {
                Owed::DescribeStatement { name } if &**name == statement => return true,
                Owed::Parse { name, .. } if &**name == statement => return false,
                _ => {}
            }
        }
        self.statements
            .get(statement)
            .is_some_and(|s| s.row_description.is_some())
    }

    /// The client's Query was forwarded.
    #[inline]
    pub fn client_query(&mut self, sql: &str) {
        let mut buffer = self.spare_sql.pop().unwrap_or_default();
        buffer.clear();
        if !self.forget_sql {
            buffer.push_str(sql);
        }
        self.push(Owed::Query { sql: buffer });
    }

    /// The client's Parse was forwarded.
    #[inline]
    pub fn client_parse(&mut self, parse: &Parse<'_>) {
        self.push(Owed::Parse {
            name: self.name(parse.name),
            sql: self.sql(parse.sql),
        });
    }

    /// The client's Bind was forwarded.
    #[inline]
    pub fn client_bind(&mut self, bind: &Bind<'_>) {
        let result_formats: Arc<[i16]> = if self.track_rows && bind.result_formats().len() > 0 {
            bind.result_formats().collect()
        } else {
            self.no_formats.clone()
        };
        self.push(Owed::Bind {
            portal: self.name(bind.portal),
            statement: self.name(bind.statement),
            result_formats,
        });
    }

    /// The client's Describe was forwarded.
    #[inline]
    pub fn client_describe(&mut self, describe: &Describe<'_>) {
        self.push(match describe.target {
            Target::Statement => Owed::DescribeStatement {
                name: self.name(describe.name),
            },
            Target::Portal => Owed::DescribePortal {
                name: self.name(describe.name),
                injected: false,
            },
        });
    }

    /// hoop sent a Describe Portal of its own (its reply will be swallowed).
    pub fn injected_describe_portal(&mut self, portal: &str) {
        self.push(Owed::DescribePortal {
            name: self.name(portal),
            injected: true,
        });
    }

    /// The client's Execute was forwarded.
    #[inline]
    pub fn client_execute(&mut self, portal: &str) {
        self.push(Owed::Execute {
            portal: self.name(portal),
        });
    }

    /// The client's Close was forwarded.
    pub fn client_close(&mut self, close: &Close<'_>) {
        self.push(Owed::Close {
            target: close.target,
            name: self.name(close.name),
            injected: false,
        });
    }

    /// hoop sent a Close of `portal` on its own (the client is not told).
    pub fn injected_close_portal(&mut self, portal: &str) {
        self.push(Owed::Close {
            target: Target::Portal,
            name: self.name(portal),
            injected: true,
        });
    }

    /// The client's Sync was forwarded.
    #[inline]
    pub fn client_sync(&mut self) {
        self.push(Owed::Sync);
    }

    /// The client's FunctionCall was forwarded.
    pub fn client_function_call(&mut self) {
        self.push(Owed::FunctionCall);
    }

    /// hoop sent an aborting Execute in place of a refused statement; the
    /// server's error will be replaced by `replacement`.
    pub fn injected_abort(&mut self, replacement: Bytes) {
        self.push(Owed::Abort { replacement });
    }

    /// hoop sent a simple Query of its own; its replies are swallowed.
    pub fn internal_query(&mut self) {
        self.push(Owed::Internal(Internal::Query));
    }

    /// hoop sent a command of its own in the extended protocol (Parse, Bind,
    /// Execute, Close of the portal, Close of the statement); its replies are
    /// swallowed.
    pub fn internal_command(&mut self) {
        for step in [
            Internal::Parse,
            Internal::Bind,
            Internal::Execute,
            Internal::Close,
            Internal::Close,
        ] {
            self.push(Owed::Internal(step));
        }
    }

    /// Whether the next server reply answers a message hoop sent on its own.
    #[inline]
    pub fn internal_reply_next(&self) -> bool {
        matches!(self.owed.front(), Some(Owed::Internal(_)))
    }

    /// The server confirmed an SQL `PREPARE`: statement `name` (as the
    /// server folded it) runs `sql`, for a protocol Bind that names it.
    pub fn sql_prepared(&mut self, name: &str, sql: &str) {
        let sql = self.sql(sql);
        self.statements.insert(
            Arc::from(name),
            PreparedStatement {
                sql,
                row_description: None,
            },
        );
    }

    /// The server confirmed an SQL `DEALLOCATE` (`None`: `ALL`).
    pub fn sql_deallocated(&mut self, name: Option<&str>) {
        match name {
            Some(name) => {
                self.statements.remove(name);
            }
            None => self.statements.clear(),
        }
    }

    /// The server confirmed an SQL `DECLARE`: cursor (portal) `name` reads
    /// `sql`, for a protocol Execute that names it. Its columns are not
    /// known until a Describe.
    pub fn sql_declared(&mut self, name: &str, sql: &str, hold: bool, binary: bool) {
        let p = Portal {
            statement: None,
            sql: self.sql(sql),
            row_description: None,
            result_formats: if binary {
                Arc::from([1i16])
            } else {
                self.no_formats.clone()
            },
            hold,
        };
        if name.is_empty() {
            self.unnamed_portal = Some(p);
        } else {
            self.portals.insert(Arc::from(name), p);
        }
    }

    /// The server confirmed an SQL `CLOSE` (`None`: `ALL`).
    pub fn sql_closed(&mut self, name: Option<&str>) {
        match name {
            Some("") => self.unnamed_portal = None,
            Some(name) => {
                self.portals.remove(name);
            }
            None => {
                self.portals.clear();
                self.unnamed_portal = None;
            }
        }
    }

    /// The statement portal `portal` was (or is being) bound from.
    pub fn portal_statement(&self, portal: &str) -> Option<Arc<str>> {
        for o in self.owed.iter().rev() {
            if let Owed::Bind {
                portal: p,
                statement,
                ..
            } = o
                && &**p == portal
            {
                return Some(statement.clone());
            }
        }
        self.portal_ref(portal).and_then(|p| p.statement.clone())
    }

    /// What the current result (rows, completion, COPY) belongs to.
    pub fn current_result(&self) -> Option<ResultContext<'_>> {
        match self.owed.front()? {
            Owed::Query { sql } => Some(ResultContext {
                sql,
                form: Submission::Text,
                statement: None,
                portal: None,
                row_description: self.query_description.as_deref(),
                result_formats: &[],
                statement_index: self.query_index,
            }),
            Owed::Execute { portal } => {
                let p = self.portal_ref(portal);
                Some(ResultContext {
                    sql: p.map_or("", |p| &p.sql),
                    form: Submission::Prepared,
                    statement: p.and_then(|p| p.statement.as_deref()),
                    portal: Some(portal),
                    row_description: p.and_then(|p| p.row_description.as_deref()),
                    result_formats: p.map_or(&[], |p| &p.result_formats),
                    statement_index: 0,
                })
            }
            Owed::FunctionCall => Some(ResultContext {
                sql: "",
                form: Submission::FunctionCall,
                statement: None,
                portal: None,
                row_description: None,
                result_formats: &[],
                statement_index: 0,
            }),
            _ => None,
        }
    }

    /// The statement a server text (ErrorResponse, NoticeResponse) that
    /// arrives now is about: its SQL and, for a simple Query, its index in
    /// the query string. `None` between statements, and for a fast-path
    /// function call (no SQL).
    pub fn current_statement(&self) -> Option<(&str, usize)> {
        let statement = |name: &str| self.statements.get(name).map(|s| &*s.sql);
        match self.owed.front()? {
            Owed::Query { sql } => Some((sql, self.query_index)),
            Owed::Parse { sql, .. } => Some((sql, 0)),
            Owed::Bind { statement: s, .. } | Owed::DescribeStatement { name: s } => {
                statement(s).map(|sql| (sql, 0))
            }
            Owed::DescribePortal { name, .. } | Owed::Execute { portal: name } => {
                self.portal_ref(name).map(|p| (&*p.sql, 0))
            }
            Owed::Close { .. }
            | Owed::Sync
            | Owed::FunctionCall
            | Owed::Abort { .. }
            | Owed::Internal(_) => None,
        }
    }

    fn description(&mut self, body: &[u8]) -> Result<Option<Arc<RowDescription>>, MessageError> {
        if !self.track_rows {
            return Ok(None);
        }
        if let Some(last) = &self.last_description
            && last.body() == body
        {
            return Ok(Some(last.clone()));
        }
        let parsed = Arc::new(RowDescription::parse(Bytes::copy_from_slice(body))?);
        self.last_description = Some(parsed.clone());
        Ok(Some(parsed))
    }

    /// Pops the front entry, which must match `want`.
    fn pop_expected(
        &mut self,
        message: &'static str,
        want: impl Fn(&Owed) -> bool,
    ) -> Result<Owed, SessionError> {
        match self.owed.front() {
            Some(o) if want(o) => Ok(self
                .owed
                .pop_front()
                .ok_or(SessionError::UnexpectedReply { message })?),
            _ => Err(SessionError::UnexpectedReply { message }),
        }
    }

    /// After an error in the extended protocol the server skips to Sync:
    /// drop what it will now never answer.
    fn skip_to_sync(&mut self) {
        while let Some(front) = self.owed.front() {
            if matches!(
                front,
                Owed::Sync
                    | Owed::Query { .. }
                    | Owed::FunctionCall
                    | Owed::Internal(Internal::Query)
            ) {
                break;
            }
            self.owed.pop_front();
        }
    }

    /// Accounts for one server message (after startup) and says what to do with it.
    ///
    /// Inlined into the relay (another crate): it runs for most server
    /// messages, and the replies of every round trip (BindComplete,
    /// CommandComplete, ReadyForQuery) are handled here; the rest are in
    /// [`SessionState::other_server_message`]. Always inlined: with only a
    /// hint, LLVM kept it a call, whose prologue and epilogue cost more than
    /// the work for a BindComplete or CommandComplete.
    #[inline(always)]
    #[allow(clippy::inline_always)] // measured: see above
    pub fn server_message(&mut self, tag: u8, body: &[u8]) -> Result<ServerAction, SessionError> {
        if let Some(Owed::Internal(step)) = self.owed.front() {
            let step = *step;
            return self.internal_reply(step, tag, body);
        }
        match tag {
            b'Z' => self.ready_for_query(body)?,
            b'2' => self.bind_complete()?,
            b'C' | b'I' => self.command_complete()?,
            _ => return self.other_server_message(tag, body),
        }
        Ok(ServerAction::Forward)
    }

    /// ReadyForQuery: the replies owed up to the Sync or Query it ends are settled.
    #[inline]
    fn ready_for_query(&mut self, body: &[u8]) -> Result<(), SessionError> {
        let rfq = ReadyForQuery::parse(body)?;
        self.transaction = rfq.status;
        while let Some(o) = self.owed.pop_front() {
            match o {
                Owed::Query { sql } => {
                    if self.spare_sql.len() < SPARE_SQL_BUFFERS
                        && sql.capacity() <= SPARE_SQL_CAPACITY
                    {
                        self.spare_sql.push(sql);
                    }
                    break;
                }
                Owed::Sync | Owed::FunctionCall => break,
                _ => {}
            }
        }
        if self.query_description.is_some() {
            self.query_description = None;
        }
        self.query_index = 0;
        if rfq.status == TransactionStatus::Idle {
            // Portals live until the end of their transaction,
            // unless declared WITH HOLD.
            if !self.portals.is_empty() {
                self.portals.retain(|_, p| p.hold);
            }
            self.unnamed_portal = None;
        }
        if !matches!(self.phase, Phase::Held | Phase::Closed) {
            self.phase = if self.owed.is_empty() {
                Phase::Ready
            } else {
                Phase::InQuery
            };
        }
        Ok(())
    }

    /// BindComplete: the portal exists, with its statement's SQL and columns.
    #[inline]
    fn bind_complete(&mut self) -> Result<(), SessionError> {
        if let Owed::Bind {
            portal,
            statement,
            result_formats,
        } = self.pop_expected("BindComplete", |o| matches!(o, Owed::Bind { .. }))?
        {
            let (sql, row_description) = self.statements.get(&statement).map_or_else(
                || (Arc::from(""), None),
                |s| (s.sql.clone(), s.row_description.clone()),
            );
            let p = Portal {
                statement: Some(statement),
                sql,
                row_description,
                result_formats,
                hold: false,
            };
            if portal.is_empty() {
                self.unnamed_portal = Some(p);
            } else {
                self.portals.insert(portal, p);
            }
        }
        Ok(())
    }

    /// CommandComplete or EmptyQueryResponse: an Execute is done, or one
    /// statement of a Query.
    #[inline]
    fn command_complete(&mut self) -> Result<(), SessionError> {
        match self.owed.front() {
            Some(Owed::Execute { .. }) => {
                self.owed.pop_front();
                self.end_copy();
            }
            Some(Owed::Query { .. }) => {
                self.query_description = None;
                self.query_index += 1;
                self.end_copy();
            }
            _ => {
                return Err(SessionError::UnexpectedReply {
                    message: "CommandComplete",
                });
            }
        }
        Ok(())
    }

    /// The server messages [`SessionState::server_message`] does not handle itself.
    #[inline(never)]
    fn other_server_message(&mut self, tag: u8, body: &[u8]) -> Result<ServerAction, SessionError> {
        match tag {
            b'1' => {
                if let Owed::Parse { name, sql } =
                    self.pop_expected("ParseComplete", |o| matches!(o, Owed::Parse { .. }))?
                {
                    self.statements.insert(
                        name,
                        PreparedStatement {
                            sql,
                            row_description: None,
                        },
                    );
                }
            }
            b'3' => {
                if let Owed::Close {
                    target,
                    name,
                    injected,
                } = self.pop_expected("CloseComplete", |o| matches!(o, Owed::Close { .. }))?
                {
                    if injected {
                        // The server closed it, whoever had opened it.
                        self.portals.remove(&name);
                        return Ok(ServerAction::Swallow);
                    }
                    match target {
                        Target::Statement => self.statements.remove(&name),
                        Target::Portal if name.is_empty() => {
                            self.unnamed_portal.take().map(|p| PreparedStatement {
                                sql: p.sql,
                                row_description: None,
                            })
                        }
                        Target::Portal => self.portals.remove(&name).map(|p| PreparedStatement {
                            sql: p.sql,
                            row_description: None,
                        }),
                    };
                }
            }
            b't' if !matches!(self.owed.front(), Some(Owed::DescribeStatement { .. })) => {
                return Err(SessionError::UnexpectedReply {
                    message: "ParameterDescription",
                });
            }
            b'T' => {
                if !matches!(
                    self.owed.front(),
                    Some(
                        Owed::DescribeStatement { .. }
                            | Owed::DescribePortal { .. }
                            | Owed::Query { .. }
                    )
                ) {
                    return Err(SessionError::UnexpectedReply {
                        message: "RowDescription",
                    });
                }
                let desc = self.description(body)?;
                match self.owed.front() {
                    Some(Owed::DescribeStatement { name }) => {
                        if let Some(s) = self.statements.get_mut(name) {
                            s.row_description = desc;
                        }
                        self.owed.pop_front();
                    }
                    Some(Owed::DescribePortal { name, injected }) => {
                        let injected = *injected;
                        let portal = if name.is_empty() {
                            self.unnamed_portal.as_mut()
                        } else {
                            self.portals.get_mut(name)
                        };
                        if let Some(p) = portal {
                            p.row_description = desc;
                        }
                        self.owed.pop_front();
                        if injected {
                            return Ok(ServerAction::Swallow);
                        }
                    }
                    _ => self.query_description = desc,
                }
            }
            b'n' => match self.pop_expected("NoData", |o| {
                matches!(
                    o,
                    Owed::DescribeStatement { .. } | Owed::DescribePortal { .. }
                )
            })? {
                Owed::DescribePortal { injected: true, .. } => return Ok(ServerAction::Swallow),
                Owed::DescribeStatement { name } => {
                    if let Some(s) = self.statements.get_mut(&name) {
                        s.row_description = None;
                    }
                }
                _ => {}
            },
            b's' => {
                self.pop_expected("PortalSuspended", |o| matches!(o, Owed::Execute { .. }))?;
            }
            b'E' => {
                self.end_copy();
                match self.owed.front() {
                    Some(Owed::Abort { replacement }) => {
                        let replacement = replacement.clone();
                        self.owed.pop_front();
                        self.skip_to_sync();
                        return Ok(ServerAction::Replace(replacement));
                    }
                    Some(Owed::Query { .. }) => {
                        // The rest of the query string is skipped; ReadyForQuery follows.
                        self.query_description = None;
                    }
                    Some(Owed::FunctionCall | Owed::Sync) | None => {}
                    Some(_) => self.skip_to_sync(),
                }
            }
            b'G' => self.phase = Phase::CopyIn,
            b'H' => self.phase = Phase::CopyOut,
            b'W' => self.phase = Phase::CopyBoth,
            b'c' if self.phase == Phase::CopyOut => self.phase = Phase::InQuery,
            _ => {}
        }
        Ok(ServerAction::Forward)
    }

    /// A reply to a message of hoop's own: swallowed.
    fn internal_reply(
        &mut self,
        step: Internal,
        tag: u8,
        body: &[u8],
    ) -> Result<ServerAction, SessionError> {
        match (step, tag) {
            // Asynchronous messages are not replies.
            (_, b'S' | b'A') => return Ok(ServerAction::Forward),
            (Internal::Query, b'Z') => {
                let rfq = ReadyForQuery::parse(body)?;
                self.transaction = rfq.status;
                self.owed.pop_front();
                if !matches!(self.phase, Phase::Held | Phase::Closed) {
                    self.phase = if self.owed.is_empty() {
                        Phase::Ready
                    } else {
                        Phase::InQuery
                    };
                }
            }
            // hoop's own queries may return rows (its dry runs count the
            // rows a statement touched); the driver reads them.
            (Internal::Query, b'C' | b'E' | b'N' | b'I' | b'T' | b'D')
            | (Internal::Execute, b'N' | b'D') => {}
            (Internal::Parse, b'1')
            | (Internal::Bind, b'2')
            | (Internal::Execute, b'C' | b'I')
            | (Internal::Close, b'3') => {
                self.owed.pop_front();
            }
            // An error in the extended protocol: the server skips to Sync.
            (_, b'E') => {
                self.owed.pop_front();
                self.skip_to_sync();
            }
            _ => {
                return Err(SessionError::UnexpectedReply {
                    message: "a reply to a message of hoop's own",
                });
            }
        }
        Ok(ServerAction::Swallow)
    }

    fn end_copy(&mut self) {
        if matches!(self.phase, Phase::CopyIn | Phase::CopyOut | Phase::CopyBoth) {
            self.phase = Phase::InQuery;
        }
    }

    /// The SQLSTATE of an ErrorResponse body, for observation.
    pub fn error_code(body: &[u8]) -> Option<String> {
        NoticeFields::parse(body)
            .ok()
            .and_then(|f| f.code().map(str::to_owned))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::extended::{Execute, Parse};
    use crate::notice::ErrorSpec;

    fn desc_body(names: &[&str]) -> Vec<u8> {
        let mut body = (names.len() as i16).to_be_bytes().to_vec();
        for n in names {
            body.extend_from_slice(n.as_bytes());
            body.extend_from_slice(&[
                0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
            ]);
        }
        body
    }

    fn bind_body(portal: &str, stmt: &str, formats: &[i16]) -> Vec<u8> {
        let mut b = format!("{portal}\0{stmt}\0").into_bytes();
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b
    }

    #[test]
    fn without_sql_tracks_the_same_replies_but_keeps_no_text() {
        let mut s = SessionState::new(false).without_sql();
        s.set_phase(Phase::Ready);
        s.client_parse(&Parse {
            name: "s1",
            sql: "select a from t",
            param_types: 0,
        });
        let b = bind_body("", "s1", &[]);
        s.client_bind(&Bind::parse(&b).unwrap());
        s.client_execute("");
        s.client_sync();
        s.client_query("select 1");
        for (tag, body) in [
            (b'1', &b""[..]),
            (b'2', b""),
            (b'C', b"SELECT 1\0"),
            (b'Z', b"I"),
        ] {
            assert_eq!(s.server_message(tag, body).unwrap(), ServerAction::Forward);
        }
        assert_eq!(s.statement_sql("s1").as_deref(), Some(""));
        s.server_message(b'T', &desc_body(&["a"])).unwrap();
        assert_eq!(s.current_result().unwrap().sql, "");
        s.server_message(b'C', b"SELECT 1\0").unwrap();
        s.server_message(b'Z', b"I").unwrap();
        assert_eq!(s.phase(), Phase::Ready);
        assert!(s.is_idle());
    }

    #[test]
    fn reused_query_buffers_never_show_an_earlier_text() {
        let mut s = SessionState::new(true);
        s.set_phase(Phase::Ready);
        let long = format!("select '{}'", "x".repeat(200));
        // Answered queries give their buffers back; pipelined ones keep
        // their own texts while reused buffers are refilled.
        for round in 0..3 {
            s.client_query(&long);
            s.client_query("select 1");
            s.client_query("select 22");
            for sql in [long.as_str(), "select 1", "select 22"] {
                s.server_message(b'T', &desc_body(&["a"])).unwrap();
                assert_eq!(s.current_result().unwrap().sql, sql, "round {round}");
                assert_eq!(s.current_statement(), Some((sql, 0)), "round {round}");
                s.server_message(b'C', b"SELECT 1\0").unwrap();
                s.server_message(b'Z', b"I").unwrap();
            }
            assert!(s.is_idle());
        }
        assert!(s.spare_sql.len() <= SPARE_SQL_BUFFERS);
        // A huge query's buffer is not kept.
        let huge = "y".repeat(SPARE_SQL_CAPACITY + 1);
        s.client_query(&huge);
        s.server_message(b'Z', b"I").unwrap();
        assert!(
            s.spare_sql
                .iter()
                .all(|b| b.capacity() <= SPARE_SQL_CAPACITY)
        );
    }

    #[test]
    fn a_repeated_row_description_is_shared_and_a_new_one_is_not() {
        let mut s = SessionState::new(true);
        s.set_phase(Phase::Ready);
        let mut seen = Vec::new();
        for names in [&["a"][..], &["a"], &["b"], &["a", "b"]] {
            s.client_query("select");
            s.server_message(b'T', &desc_body(names)).unwrap();
            let d = s.query_description.clone().unwrap();
            assert_eq!(
                d.fields().map(|f| f.name.to_owned()).collect::<Vec<_>>(),
                names
            );
            seen.push(d);
            s.server_message(b'Z', b"I").unwrap();
        }
        assert!(Arc::ptr_eq(&seen[0], &seen[1]));
        assert!(!Arc::ptr_eq(&seen[1], &seen[2]));
        // A malformed description is still an error, never a reuse.
        s.client_query("select");
        assert!(s.server_message(b'T', &[0, 1, b'a']).is_err());
    }

    #[test]
    fn attributes_pipelined_extended_results_to_their_sql() {
        let mut s = SessionState::new(true);
        s.set_phase(Phase::Ready);
        // Parse s1 / Describe s1 / Bind p1 / Execute p1 / Parse "" / Bind "" / Execute "" / Sync
        s.client_parse(&Parse {
            name: "s1",
            sql: "select a from t",
            param_types: 0,
        });
        s.client_describe(&Describe {
            target: Target::Statement,
            name: "s1",
        });
        let b = bind_body("p1", "s1", &[1]);
        s.client_bind(&Bind::parse(&b).unwrap());
        assert!(s.portal_description_expected("p1"));
        s.client_execute(
            Execute {
                portal: "p1",
                max_rows: 1,
            }
            .portal,
        );
        s.client_parse(&Parse {
            name: "",
            sql: "select b from u",
            param_types: 0,
        });
        let b = bind_body("", "", &[]);
        s.client_bind(&Bind::parse(&b).unwrap());
        assert!(!s.portal_description_expected(""));
        s.injected_describe_portal("");
        s.client_execute("");
        s.client_sync();
        assert_eq!(s.phase(), Phase::InQuery);

        assert_eq!(s.server_message(b'1', b"").unwrap(), ServerAction::Forward);
        s.server_message(b't', &[0, 0]).unwrap();
        s.server_message(b'T', &desc_body(&["a"])).unwrap();
        s.server_message(b'2', b"").unwrap();
        let r = s.current_result().unwrap();
        assert_eq!(
            (
                r.sql,
                r.portal,
                r.result_formats,
                r.row_description.map(RowDescription::len)
            ),
            ("select a from t", Some("p1"), &[1i16][..], Some(1))
        );
        s.server_message(b'D', &[0, 1, 0, 0, 0, 1, b'x']).unwrap();
        s.server_message(b's', b"").unwrap();
        s.server_message(b'1', b"").unwrap();
        s.server_message(b'2', b"").unwrap();
        assert_eq!(
            s.server_message(b'T', &desc_body(&["b"])).unwrap(),
            ServerAction::Swallow
        );
        let r = s.current_result().unwrap();
        assert_eq!(
            (
                r.sql,
                r.row_description
                    .and_then(|d| d.fields().next())
                    .map(|f| f.name)
            ),
            ("select b from u", Some("b"))
        );
        s.server_message(b'C', b"SELECT 1\0").unwrap();
        s.server_message(b'Z', b"I").unwrap();
        assert!(s.is_idle());
        assert_eq!(s.phase(), Phase::Ready);
        assert_eq!(&*s.statement("s1").unwrap().sql, "select a from t");
        assert!(s.portal("p1").is_none(), "portals end with the transaction");
    }

    #[test]
    fn multi_statement_query_indexes_statements() {
        let mut s = SessionState::new(true);
        s.client_query("select 1; select 2");
        s.server_message(b'T', &desc_body(&["x"])).unwrap();
        assert_eq!(s.current_result().unwrap().statement_index, 0);
        s.server_message(b'C', b"SELECT 1\0").unwrap();
        assert!(s.current_result().unwrap().row_description.is_none());
        s.server_message(b'T', &desc_body(&["y"])).unwrap();
        assert_eq!(s.current_result().unwrap().statement_index, 1);
        s.server_message(b'C', b"SELECT 1\0").unwrap();
        s.server_message(b'Z', b"T").unwrap();
        assert_eq!(s.transaction(), TransactionStatus::InTransaction);
        assert!(s.is_idle());
    }

    #[test]
    fn error_skips_to_sync_and_abort_is_replaced() {
        let mut s = SessionState::new(false);
        s.client_parse(&Parse {
            name: "",
            sql: "bad",
            param_types: 0,
        });
        let b = bind_body("", "", &[]);
        s.client_bind(&Bind::parse(&b).unwrap());
        s.client_execute("");
        s.client_sync();
        let denial = ErrorSpec::error("42501", "denied").encode();
        s.injected_abort(denial.clone());
        s.client_sync();
        assert_eq!(
            s.server_message(b'E', b"SERROR\0C42601\0\0").unwrap(),
            ServerAction::Forward
        );
        assert!(matches!(s.owed().next(), Some(Owed::Sync)));
        s.server_message(b'Z', b"I").unwrap();
        assert_eq!(
            s.server_message(b'E', b"SERROR\0C34000\0\0").unwrap(),
            ServerAction::Replace(denial)
        );
        s.server_message(b'Z', b"E").unwrap();
        assert!(s.is_idle());
        assert!(s.statement("").is_none(), "a failed Parse records nothing");
    }

    #[test]
    fn an_injected_close_is_swallowed_and_forgets_the_portal() {
        let mut s = SessionState::new(false);
        s.set_phase(Phase::Ready);
        s.client_parse(&Parse {
            name: "s1",
            sql: "select 1",
            param_types: 0,
        });
        let b = bind_body("p1", "s1", &[]);
        s.client_bind(&Bind::parse(&b).unwrap());
        s.client_sync();
        for (tag, body) in [(b'1', &b""[..]), (b'2', b""), (b'Z', b"T")] {
            assert_eq!(s.server_message(tag, body).unwrap(), ServerAction::Forward);
        }
        assert!(s.portal("p1").is_some());
        s.injected_close_portal("p1");
        assert_eq!(s.server_message(b'3', b"").unwrap(), ServerAction::Swallow);
        assert!(s.portal("p1").is_none(), "the server closed it");
        // The client's own Close is still answered to the client.
        s.client_close(&Close {
            target: Target::Statement,
            name: "s1",
        });
        assert_eq!(s.server_message(b'3', b"").unwrap(), ServerAction::Forward);
        assert!(s.statement("s1").is_none());
    }

    #[test]
    fn unexpected_replies_are_errors() {
        let mut s = SessionState::new(false);
        assert!(s.server_message(b'1', b"").is_err());
        assert!(s.server_message(b'C', b"SELECT 1\0").is_err());
        assert!(s.server_message(b'Z', b"?").is_err());
        assert_eq!(s.server_message(b'N', b"").unwrap(), ServerAction::Forward);
    }

    #[test]
    fn internal_queries_are_swallowed_in_order() {
        let mut s = SessionState::new(false);
        s.set_phase(Phase::Ready);
        s.internal_query();
        s.client_query("delete from t");
        assert!(s.internal_reply_next());
        for (tag, body) in [(b'N', &b"SWARNING\0C25001\0\0"[..]), (b'C', b"BEGIN\0")] {
            assert_eq!(s.server_message(tag, body).unwrap(), ServerAction::Swallow);
        }
        assert_eq!(s.server_message(b'Z', b"T").unwrap(), ServerAction::Swallow);
        assert!(!s.internal_reply_next());
        assert_eq!(s.transaction(), TransactionStatus::InTransaction);
        assert_eq!(
            s.server_message(b'C', b"DELETE 3\0").unwrap(),
            ServerAction::Forward
        );
        assert_eq!(s.server_message(b'Z', b"T").unwrap(), ServerAction::Forward);
        assert!(s.is_idle());
        assert!(s.server_message(b'1', b"").is_err());
    }
}
