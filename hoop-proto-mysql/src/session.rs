//! The session state machine: connection phases, the replies the server
//! still owes, prepared statements and cursors, and the session state the
//! server reports (transaction, schema, tracked variables, `sql_mode` flags).
//!
//! Pure: the driver tells it every packet exchanged **with the server**, as
//! forwarded (after hoop's own changes, such as cleared capability bits),
//! and it tells the driver, for each server packet, what it is, which
//! command (and statement of a multi-statement query) it answers, whether
//! the result set's column definitions are complete (so masking can plan),
//! and the transaction status. It models the server leg: its sequence ids
//! are the ones the server uses; a driver that changes the number of
//! packets on the client leg (TLS on one leg only, injected progress
//! packets, re-chunked rows) renumbers that leg with [`crate::frame`].
//!
//! # The owed-reply queue
//! Every command the driver forwards that the server answers pushes an
//! entry; every server packet advances the front entry through its
//! stages (column count, column definitions, EOF, rows, end; prepare's
//! parameter and column blocks; a LOCAL INFILE transfer; a COM_CHANGE_USER
//! auth exchange) and pops it when its reply is complete. Replies come in
//! command order, so the front entry is always what the current packet
//! answers, through pipelines (PREPARE and EXECUTE sent back to back),
//! multi-statement COM_QUERY (results chained by `MORE_RESULTS_EXISTS`,
//! counted as the statement index) and CALLs.
//!
//! Each entry counts its own sequence ids (every command restarts at 0,
//! and its reply continues from the command's last chunk), so a packet
//! whose id is not the expected one is an error, not a misattribution.
//!
//! Commands without a reply (COM_STMT_CLOSE, COM_QUIT) never wait for one:
//! they queue an *effect* that is applied as soon as every reply before it
//! is complete (closing statement 3 after a pipelined EXECUTE of statement
//! 3 must not forget its columns before the EXECUTE's rows arrive).
//! COM_STMT_SEND_LONG_DATA queues nothing.
//!
//! Commands hoop sends itself ([`Session::injected_command`]) are marked
//! [`Origin::Hoop`], so the driver swallows their replies.
//!
//! Prepared statements are recorded when the server confirms them
//! (PREPARE_OK), never when the client asks, so a failed PREPARE records
//! nothing; MariaDB's "last prepared statement" id (`0xFFFFFFFF`) is
//! resolved when the EXECUTE's reply arrives, after the PREPARE's.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{AUTH_MORE_DATA_HEADER, AUTH_NEXT_FACTOR_HEADER, AUTH_SWITCH_HEADER};
use crate::capabilities::Capabilities;
use crate::column::{ColumnDefinition, ColumnDefinitionRef, ColumnOptions, parse_column_count};
use crate::command::{Command, set_option};
use crate::eof::{EofPacket, is_classic_eof, is_end_of_rows};
use crate::err::{ERR_HEADER, ErrPacket, is_progress};
use crate::execute::{
    LAST_PREPARED, MAX_PARAM_HEAD, ParamType, Params, StmtExecute, parse_param_types,
};
use crate::frame::{FrameError, MAX_CHUNK, Sequence, chunk_count};
use crate::handshake::{ClientHello, ServerHello, ServerVersion};
use crate::local_infile::LOCAL_INFILE_HEADER;
use crate::ok::{OK_HEADER, OkPacket, SessionChange};
use crate::prepare::PrepareOk;
use crate::status::{StatusFlags, TransactionStatus};
use crate::wire::MessageError;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Waiting for the server's greeting.
    #[default]
    AwaitingGreeting,
    /// Greeting seen; waiting for the client's SSLRequest or response.
    AwaitingClientHello,
    /// SSLRequest forwarded: the TLS handshake runs, then the response comes.
    TlsHandshake,
    /// Response forwarded: the auth exchange runs until OK or ERR.
    Authenticating,
    /// Authenticated: commands and their replies (see [`Session::owed`]).
    Command,
    /// A command switched the connection to a protocol this codec does not
    /// follow (COM_CLONE, COM_REGISTER_SLAVE's replication): packets are
    /// only relayed, never attributed.
    Opaque,
    /// The connection is over (COM_QUIT, a refused login, an ERR instead
    /// of a greeting, an unsolicited ERR).
    Closed,
}

/// Who sent the command a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client: forward the reply.
    Client,
    /// hoop itself: swallow the reply.
    Hoop,
}

/// Session options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionConfig {
    /// Keep column and parameter definitions (what masking needs); without
    /// it they are validated in place and counted, not copied nor kept.
    /// Commands hoop sends itself, and EXECUTEs that ask for a cursor (whose
    /// FETCH rows need the columns later), keep them regardless. Changed
    /// with [`Session::set_track_columns`] for the commands after.
    pub track_columns: bool,
}

/// A packet the session cannot account for; the connection cannot continue
/// safely. (A server packet refused in the command phase leaves the state
/// as it was; elsewhere the state after an error is unspecified, but using
/// the session further never panics.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A packet arrived out of sequence.
    #[error(transparent)]
    Sequence(#[from] FrameError),
    /// A packet's body is malformed.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The server sent something no request is waiting for, or something
    /// that cannot come at this point of the reply.
    #[error("unexpected packet from the server ({what}) {when}")]
    UnexpectedServerPacket {
        /// What arrived.
        what: &'static str,
        /// Where the session was.
        when: &'static str,
    },
    /// The client sent a packet that cannot come at this point.
    #[error("unexpected packet from the client ({what}) {when}")]
    UnexpectedClientPacket {
        /// What arrived.
        what: &'static str,
        /// Where the session was.
        when: &'static str,
    },
    /// An EXECUTE names a statement the server never confirmed.
    #[error("statement {0} is not prepared")]
    UnknownStatement(u32),
}

/// A prepared statement the server confirmed.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    /// Its id.
    pub id: u32,
    /// Its SQL text as the client sent it.
    pub sql: Arc<[u8]>,
    /// Parameter count.
    pub param_count: u16,
    /// Column count at prepare time.
    pub column_count: u16,
    /// Parameter definitions (when tracking columns).
    pub params: Vec<Arc<ColumnDefinition>>,
    /// Column definitions at prepare time (when tracking columns). Each
    /// EXECUTE's reply sends them again, and those are what count.
    pub columns: Vec<Arc<ColumnDefinition>>,
    /// The columns of the open cursor (from the EXECUTE that opened it),
    /// which its COM_STMT_FETCH rows use.
    pub cursor_columns: Option<Arc<[Arc<ColumnDefinition>]>>,
    /// Whether the cursor's last row was sent.
    pub cursor_exhausted: bool,
}

/// Which statement an EXECUTE names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementRef {
    /// By id.
    Id(u32),
    /// MariaDB's "the statement prepared last" (`0xFFFFFFFF`).
    LastPrepared,
}

impl StatementRef {
    fn of(id: u32) -> Self {
        if id == LAST_PREPARED {
            Self::LastPrepared
        } else {
            Self::Id(id)
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// COM_QUERY, COM_PROCESS_INFO: text result sets, chained.
    Query,
    Prepare {
        sql: Arc<[u8]>,
    },
    Execute {
        statement: StatementRef,
        /// The parameter block's head when the statement was not confirmed
        /// when the EXECUTE was forwarded (its types are learnt later).
        params_head: Option<Bytes>,
    },
    Fetch {
        statement_id: u32,
    },
    FieldList,
    InitDb {
        schema: Bytes,
    },
    ChangeUser {
        user: Bytes,
        schema: Bytes,
        collation: Option<u16>,
    },
    ResetConnection,
    SetOption {
        option: u16,
    },
    StmtReset {
        statement_id: u32,
    },
    Statistics,
    BinlogDump,
    /// OK, EOF or ERR (COM_PING, COM_REFRESH, COM_PROCESS_KILL, COM_DEBUG,
    /// COM_SHUTDOWN, COM_CREATE_DB, COM_DROP_DB, unknown commands).
    Simple,
    /// Effects of commands without a reply.
    CloseEffect {
        statement_id: u32,
    },
    QuitEffect,
}

/// Where a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Nothing of the (current statement's) reply seen yet.
    Start,
    /// Column definitions: `received` of `count`.
    Columns {
        /// Columns announced.
        count: u64,
        /// Definitions received.
        received: u64,
    },
    /// The classic EOF after the column definitions.
    ColumnsEof,
    /// Rows, until the end-of-rows packet.
    Rows,
    /// Prepare reply: parameter definitions.
    PrepareParams {
        /// Parameters announced.
        count: u16,
        /// Definitions received.
        received: u16,
    },
    /// Prepare reply: the EOF after the parameter definitions.
    PrepareParamsEof,
    /// Prepare reply: column definitions.
    PrepareColumns {
        /// Columns announced.
        count: u16,
        /// Definitions received.
        received: u16,
    },
    /// Prepare reply: the EOF after the column definitions.
    PrepareColumnsEof,
    /// COM_FIELD_LIST: definitions until the end packet.
    FieldList,
    /// LOCAL INFILE: the client streams the file.
    LocalInfileData,
    /// LOCAL INFILE: the file ended; OK or ERR follows.
    LocalInfileDone,
    /// COM_CHANGE_USER: the auth exchange after the first switch or data packet.
    ChangeUserAuth,
    /// COM_BINLOG_DUMP: events until EOF or ERR.
    BinlogStream,
}

#[derive(Debug, Clone)]
struct Owed {
    id: u64,
    command: u8,
    kind: Kind,
    origin: Origin,
    stage: Stage,
    seq: Sequence,
    statement_index: usize,
    /// Whether this reply's definitions are kept in `columns`.
    track: bool,
    columns: Vec<Arc<ColumnDefinition>>,
}

/// What a server packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPacket {
    /// HandshakeV10.
    Greeting,
    /// ERR instead of a greeting.
    GreetingError,
    /// Login accepted.
    AuthOk,
    /// Login refused.
    AuthError,
    /// AuthSwitchRequest.
    AuthSwitch,
    /// AuthMoreData.
    AuthMoreData,
    /// AuthNextFactor.
    AuthNextFactor,
    /// OK: a statement without a result set, or a simple command's reply.
    Ok {
        /// Another result follows (`MORE_RESULTS_EXISTS`).
        more_results: bool,
    },
    /// ERR: ends the reply (the rest of a multi-statement query is skipped).
    Error,
    /// A classic EOF that answers a simple command (COM_SET_OPTION, COM_DEBUG).
    Eof,
    /// A MariaDB progress report; the reply continues.
    Progress,
    /// The column count that starts a result set.
    ColumnCount(u64),
    /// A column definition (0-based index).
    ColumnDefinition(u64),
    /// The classic EOF after the column definitions.
    ColumnsEof,
    /// A row (text for COM_QUERY, binary for EXECUTE and FETCH).
    Row,
    /// The end of the rows (EOF, or OK with header 0xFE).
    EndOfRows {
        /// Another result follows.
        more_results: bool,
        /// EXECUTE opened a cursor: rows come from COM_STMT_FETCH.
        cursor_opened: bool,
    },
    /// COM_STMT_PREPARE_OK.
    PrepareOk {
        /// The new statement.
        statement_id: u32,
        /// Its parameters.
        params: u16,
        /// Its columns.
        columns: u16,
    },
    /// A parameter definition of a prepare reply (0-based index).
    ParamDefinition(u16),
    /// The EOF after the parameter definitions.
    ParamsEof,
    /// LOCAL INFILE request: the client must send the named file.
    LocalInfileRequest,
    /// COM_STATISTICS's text.
    Statistics,
    /// A binlog event.
    BinlogEvent,
    /// A packet of a protocol this codec does not follow ([`Phase::Opaque`]).
    Opaque,
}

/// What a packet answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyContext {
    /// The command's number in this session (0, 1, 2… in forwarding order).
    pub id: u64,
    /// The command byte.
    pub command: u8,
    /// For COM_QUERY and CALL: the 0-based statement (result) index.
    pub statement_index: usize,
    /// The prepared statement, for EXECUTE, FETCH and the PREPARE reply
    /// (once PREPARE_OK named it).
    pub statement_id: Option<u32>,
    /// Rows are binary (EXECUTE, FETCH), else text.
    pub binary_rows: bool,
    /// Who sent the command.
    pub origin: Origin,
    /// Where the reply is.
    pub stage: Stage,
}

/// What the session made of a server packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerEvent {
    /// What the packet is.
    pub packet: ServerPacket,
    /// The command it answers (`None` in the connection phase, for an
    /// unsolicited ERR, and in [`Phase::Opaque`]).
    pub reply: Option<ReplyContext>,
    /// Whether the current result set's column definitions are all known
    /// (true from the last definition on, through its rows).
    pub columns_complete: bool,
    /// Whether this packet completed the command's reply.
    pub completes_reply: bool,
    /// The sequence id the packet carried (the expected one).
    pub seq: u8,
    /// The transaction status after this packet.
    pub transaction: TransactionStatus,
}

/// What [`Session::plain_run`] accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlainRun {
    /// Bytes of the buffer accounted for: whole packets, headers included.
    pub bytes: usize,
    /// How many packets they are.
    pub packets: usize,
    /// The last of them ended the reply.
    pub completes_reply: bool,
    /// After them the reply is in the rows of a result.
    pub in_rows: bool,
}

/// The packet at the start of `buf` when it is read whole as a single
/// chunk under `max_payload` bytes: its sequence id and payload.
#[inline]
pub fn single_packet(buf: &[u8], max_payload: usize) -> Option<(u8, &[u8])> {
    let header = buf.get(..crate::frame::HEADER_LEN)?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len >= MAX_CHUNK || len > max_payload {
        return None;
    }
    Some((
        header[3],
        buf.get(crate::frame::HEADER_LEN..crate::frame::HEADER_LEN + len)?,
    ))
}

/// What a client packet outside a command was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientData {
    /// Auth plugin data (connection phase or COM_CHANGE_USER).
    AuthData,
    /// A piece of a LOCAL INFILE file.
    InfileData,
    /// The empty packet that ends the file.
    InfileEnd,
}

/// The pure state of one MySQL/MariaDB session.
#[derive(Debug, Default)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    conn_seq: Sequence,
    server_caps: Capabilities,
    client_caps: Capabilities,
    caps: Capabilities,
    server_version: Option<ServerVersion>,
    server_version_text: Bytes,
    thread_id: u32,
    status: StatusFlags,
    schema: Option<Bytes>,
    user: Option<Bytes>,
    client_collation: u16,
    variables: Vec<(Bytes, Bytes)>,
    multi_statements: bool,
    statements: IdMap<PreparedStatement>,
    last_prepared: Option<u32>,
    owed: VecDeque<Owed>,
    next_id: u64,
    /// The client's view: types bound per statement, and parameters sent
    /// as long data since the last EXECUTE or RESET.
    param_types: IdMap<Vec<ParamType>>,
    long_data: IdMap<Vec<u16>>,
    /// Where an EXECUTE's bound types are read first (reused): only one
    /// that binds types, usually the first after a bind, touches
    /// `param_types`; the others cost no map lookup.
    bound_scratch: Vec<ParamType>,
}

/// Maps keyed by statement id (the server's numbers, looked up on every
/// execute): foldhash, not SipHash.
type IdMap<T> = HashMap<u32, T, foldhash::fast::RandomState>;

fn unexpected(what: &'static str, when: &'static str) -> SessionError {
    SessionError::UnexpectedServerPacket { what, when }
}

impl Session {
    /// A session waiting for the server's greeting.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Whether the commands forwarded from now on keep their replies'
    /// column definitions (see [`SessionConfig::track_columns`]).
    pub fn set_track_columns(&mut self, track: bool) {
        self.config.track_columns = track;
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The capabilities both sides agreed (the client's response's flags
    /// that the server announced).
    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// The server's flags, as in its greeting.
    pub fn server_capabilities(&self) -> Capabilities {
        self.server_caps
    }

    /// The client's flags, as forwarded.
    pub fn client_capabilities(&self) -> Capabilities {
        self.client_caps
    }

    /// The server's version, when its greeting's version string reads as one.
    pub fn server_version(&self) -> Option<ServerVersion> {
        self.server_version
    }

    /// The greeting's version string, verbatim.
    pub fn server_version_text(&self) -> &[u8] {
        &self.server_version_text
    }

    /// The connection id (what `KILL` names).
    pub fn thread_id(&self) -> u32 {
        self.thread_id
    }

    /// The last status flags the server sent.
    pub fn status(&self) -> StatusFlags {
        self.status
    }

    /// The transaction status from the last status flags.
    pub fn transaction(&self) -> TransactionStatus {
        self.status.transaction()
    }

    /// Whether backslashes are ordinary characters in strings
    /// (`NO_BACKSLASH_ESCAPES`, from the status flags every OK and EOF carry).
    pub fn no_backslash_escapes(&self) -> bool {
        self.status.contains(StatusFlags::NO_BACKSLASH_ESCAPES)
    }

    /// Whether `"` quotes identifiers (`ANSI_QUOTES`), when the server says:
    /// MariaDB reports it in the status flags (measured on 10.11), MySQL
    /// does not (`None`: parse `SET sql_mode` or track `sql_mode`).
    pub fn ansi_quotes(&self) -> Option<bool> {
        let mariadb = self.server_version.is_some_and(|v| v.mariadb);
        mariadb.then(|| self.status.contains(StatusFlags::ANSI_QUOTES))
    }

    /// The current schema, when known (COM_INIT_DB, COM_CHANGE_USER, the
    /// response's schema, or the server's session tracking).
    pub fn schema(&self) -> Option<&[u8]> {
        self.schema.as_deref()
    }

    /// The authenticated user name (from the response or COM_CHANGE_USER).
    pub fn user(&self) -> Option<&[u8]> {
        self.user.as_deref()
    }

    /// The client's collation id (response or COM_CHANGE_USER).
    pub fn client_collation(&self) -> u16 {
        self.client_collation
    }

    /// A system variable's value as the server last reported it through
    /// session tracking (`character_set_client`, `sql_mode`…).
    pub fn tracked_variable(&self, name: &str) -> Option<&[u8]> {
        self.variables
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_ref())
    }

    /// The client's character set: the tracked `character_set_client`, else
    /// the one of the collation it connected with.
    pub fn character_set_client(&self) -> Option<&str> {
        if let Some(v) = self.tracked_variable("character_set_client") {
            return std::str::from_utf8(v).ok();
        }
        crate::collation::charset_name(
            self.client_collation,
            self.server_version.is_none_or(|v| v.mariadb),
        )
    }

    /// Whether several statements per COM_QUERY are allowed (the
    /// capability, or COM_SET_OPTION since).
    pub fn multi_statements(&self) -> bool {
        self.multi_statements
    }

    /// Whether parameters of statement `id` were sent as long data
    /// (COM_STMT_SEND_LONG_DATA) since its last EXECUTE or RESET: the next
    /// EXECUTE consumes them, so it cannot be sent again with the same
    /// values.
    pub fn has_long_data(&self, id: u32) -> bool {
        self.long_data.get(&id).is_some_and(|l| !l.is_empty())
    }

    /// A confirmed prepared statement.
    pub fn statement(&self, id: u32) -> Option<&PreparedStatement> {
        self.statements.get(&id)
    }

    /// Every confirmed prepared statement.
    pub fn statements(&self) -> impl Iterator<Item = &PreparedStatement> {
        self.statements.values()
    }

    /// Whether the server owes nothing.
    pub fn is_idle(&self) -> bool {
        self.owed.is_empty()
    }

    /// The replies still owed, front first.
    pub fn owed(&self) -> impl Iterator<Item = ReplyContext> + '_ {
        self.owed.iter().map(|o| self.context(o))
    }

    /// What the next server packet answers.
    pub fn current_reply(&self) -> Option<ReplyContext> {
        self.owed.front().map(|o| self.context(o))
    }

    /// The sequence id the server's next packet must carry, when one is
    /// expected.
    pub fn expected_server_seq(&self) -> Option<u8> {
        match self.phase {
            Phase::AwaitingGreeting | Phase::Authenticating => Some(self.conn_seq.next()),
            Phase::Command => self.owed.front().map(|o| o.seq.next()),
            _ => None,
        }
    }

    /// Whether the next client packet is data for the current exchange (auth
    /// data, a LOCAL INFILE file) rather than a new command.
    pub fn awaiting_client_data(&self) -> bool {
        match self.phase {
            Phase::Authenticating => true,
            Phase::Command => self
                .owed
                .front()
                .is_some_and(|o| matches!(o.stage, Stage::LocalInfileData | Stage::ChangeUserAuth)),
            _ => false,
        }
    }

    /// The columns of the current result set, when tracked: the front
    /// reply's (as its definitions arrive), or for COM_STMT_FETCH the
    /// cursor's.
    pub fn result_columns(&self) -> Option<&[Arc<ColumnDefinition>]> {
        let front = self.owed.front()?;
        match &front.kind {
            Kind::Fetch { statement_id } => self
                .statements
                .get(statement_id)
                .and_then(|s| s.cursor_columns.as_deref()),
            Kind::Query | Kind::Execute { .. } | Kind::FieldList => Some(&front.columns),
            _ => None,
        }
    }

    fn resolve(&self, statement: StatementRef) -> Option<u32> {
        match statement {
            StatementRef::Id(id) => Some(id),
            StatementRef::LastPrepared => self.last_prepared,
        }
    }

    #[inline]
    fn context(&self, o: &Owed) -> ReplyContext {
        let (statement_id, binary_rows) = match &o.kind {
            Kind::Execute { statement, .. } => (self.resolve(*statement), true),
            Kind::Fetch { statement_id } => (Some(*statement_id), true),
            Kind::Prepare { .. } => (
                match o.stage {
                    Stage::Start => None,
                    _ => self.last_prepared,
                },
                false,
            ),
            Kind::StmtReset { statement_id } => (Some(*statement_id), false),
            _ => (None, false),
        };
        ReplyContext {
            id: o.id,
            command: o.command,
            statement_index: o.statement_index,
            statement_id,
            binary_rows,
            origin: o.origin,
            stage: o.stage,
        }
    }

    // ----- client side -------------------------------------------------

    /// The client's SSLRequest or HandshakeResponse41 was forwarded (as
    /// `payload`, after hoop's changes).
    pub fn client_hello(&mut self, seq: u8, payload: &[u8]) -> Result<ClientHello, SessionError> {
        let hello = match self.phase {
            Phase::AwaitingClientHello | Phase::TlsHandshake => ClientHello::parse(payload)?,
            _ => {
                return Err(SessionError::UnexpectedClientPacket {
                    what: "a handshake response",
                    when: "outside the connection phase",
                });
            }
        };
        self.conn_seq
            .expect(seq, payload.len(), crate::frame::Direction::ClientToServer)?;
        match &hello {
            ClientHello::SslRequest(_) if self.phase == Phase::TlsHandshake => {
                return Err(SessionError::UnexpectedClientPacket {
                    what: "a second SSLRequest",
                    when: "after the TLS switch",
                });
            }
            ClientHello::SslRequest(_) => self.phase = Phase::TlsHandshake,
            ClientHello::Response(r) => {
                self.client_caps = r.capabilities();
                self.caps = self.client_caps.intersection(self.server_caps);
                if !self.server_caps.has_mariadb_extensions() {
                    self.caps = Capabilities::from_parts(self.caps.standard(), 0);
                }
                self.multi_statements = self.caps.contains(Capabilities::MULTI_STATEMENTS);
                self.user = Some(r.user.clone());
                self.schema = r.database.clone().filter(|d| !d.is_empty());
                self.client_collation = u16::from(r.head.collation);
                self.phase = Phase::Authenticating;
            }
        }
        Ok(hello)
    }

    /// A client packet that is not a command was forwarded: auth data, or
    /// LOCAL INFILE data (see [`Session::awaiting_client_data`]).
    pub fn client_data(&mut self, seq: u8, payload_len: usize) -> Result<ClientData, SessionError> {
        let dir = crate::frame::Direction::ClientToServer;
        match self.phase {
            Phase::Authenticating => {
                self.conn_seq.expect(seq, payload_len, dir)?;
                Ok(ClientData::AuthData)
            }
            Phase::Command => {
                let front = self
                    .owed
                    .front_mut()
                    .ok_or(SessionError::UnexpectedClientPacket {
                        what: "data",
                        when: "while no exchange waits for it",
                    })?;
                match front.stage {
                    Stage::LocalInfileData => {
                        front.seq.expect(seq, payload_len, dir)?;
                        if payload_len == 0 {
                            front.stage = Stage::LocalInfileDone;
                            Ok(ClientData::InfileEnd)
                        } else {
                            Ok(ClientData::InfileData)
                        }
                    }
                    Stage::ChangeUserAuth => {
                        front.seq.expect(seq, payload_len, dir)?;
                        Ok(ClientData::AuthData)
                    }
                    _ => Err(SessionError::UnexpectedClientPacket {
                        what: "data",
                        when: "while no exchange waits for it",
                    }),
                }
            }
            _ => Err(SessionError::UnexpectedClientPacket {
                what: "data",
                when: "outside authentication and commands",
            }),
        }
    }

    /// The client's command was forwarded (`payload_len` bytes, starting at
    /// sequence id `seq`, which must be 0). Returns the command's id.
    pub fn client_command(
        &mut self,
        seq: u8,
        payload_len: usize,
        command: &Command<'_>,
    ) -> Result<u64, SessionError> {
        if seq != 0 {
            return Err(SessionError::Sequence(FrameError::OutOfOrder {
                sender: "client",
                expected: 0,
                got: seq,
            }));
        }
        self.push_command(payload_len, command, Origin::Client)
    }

    /// hoop sent a command of its own (its reply is marked [`Origin::Hoop`]).
    pub fn injected_command(
        &mut self,
        payload_len: usize,
        command: &Command<'_>,
    ) -> Result<u64, SessionError> {
        self.push_command(payload_len, command, Origin::Hoop)
    }

    fn push_command(
        &mut self,
        payload_len: usize,
        command: &Command<'_>,
        origin: Origin,
    ) -> Result<u64, SessionError> {
        if self.phase != Phase::Command {
            return Err(SessionError::UnexpectedClientPacket {
                what: "a command",
                when: "outside the command phase",
            });
        }
        if self.awaiting_client_data() {
            return Err(SessionError::UnexpectedClientPacket {
                what: "a command",
                when: "while the server waits for LOCAL INFILE or auth data",
            });
        }
        let kind = match command {
            Command::Quit => Kind::QuitEffect,
            Command::Query { .. } | Command::ProcessInfo => Kind::Query,
            Command::StmtPrepare { sql } => Kind::Prepare {
                sql: Arc::from(*sql),
            },
            Command::StmtExecute(e) => {
                let statement = StatementRef::of(e.statement_id);
                let mut params_head = None;
                let id = self.client_statement_id(statement);
                match id.and_then(|id| self.statements.get(&id).map(|s| (id, s))) {
                    // Only the types it binds are kept (what a later
                    // EXECUTE that does not repeat them is read with); its
                    // values are not read here: the driver inspects them
                    // before it forwards when anything governs them, and
                    // the server answers what it cannot read with ERR.
                    Some((id, s)) => {
                        let count = usize::from(s.param_count);
                        let attributes = self.caps.contains(Capabilities::QUERY_ATTRIBUTES);
                        if let Ok(true) = e.bound_types(count, attributes, &mut self.bound_scratch)
                        {
                            let types = self.param_types.entry(id).or_default();
                            std::mem::swap(types, &mut self.bound_scratch);
                        }
                    }
                    // Confirmed later: its types are learnt then.
                    None if self.prepare_pending() => {
                        let n = e.param_block.len().min(MAX_PARAM_HEAD);
                        params_head = Some(Bytes::copy_from_slice(&e.param_block[..n]));
                    }
                    None => {}
                }
                if let Some(id) = id
                    && !self.long_data.is_empty()
                {
                    self.long_data.remove(&id);
                }
                Kind::Execute {
                    statement,
                    params_head,
                }
            }
            // MariaDB also takes 0xFFFFFFFF ("the statement prepared last")
            // in FETCH: resolved here, so that the cursor's columns are
            // found (unresolved while a PREPARE is in flight: no columns).
            Command::StmtFetch { statement_id, .. } => Kind::Fetch {
                statement_id: self
                    .client_statement_id(StatementRef::of(*statement_id))
                    .unwrap_or(*statement_id),
            },
            Command::FieldList { .. } => Kind::FieldList,
            Command::InitDb { schema } => Kind::InitDb {
                schema: Bytes::copy_from_slice(schema),
            },
            Command::ChangeUser(c) => Kind::ChangeUser {
                user: Bytes::copy_from_slice(c.user),
                schema: Bytes::copy_from_slice(c.database),
                collation: c.collation,
            },
            Command::ResetConnection => Kind::ResetConnection,
            Command::SetOption { option } => Kind::SetOption { option: *option },
            Command::StmtReset { statement_id } => {
                self.long_data.remove(statement_id);
                Kind::StmtReset {
                    statement_id: *statement_id,
                }
            }
            Command::Statistics => Kind::Statistics,
            Command::BinlogDump { .. } | Command::BinlogDumpGtid { .. } => Kind::BinlogDump,
            Command::StmtClose { statement_id } => {
                self.param_types.remove(statement_id);
                self.long_data.remove(statement_id);
                Kind::CloseEffect {
                    statement_id: *statement_id,
                }
            }
            Command::StmtSendLongData {
                statement_id,
                param_id,
                ..
            } => {
                let set = self.long_data.entry(*statement_id).or_default();
                if !set.contains(param_id) {
                    set.push(*param_id);
                }
                return Ok(self.take_id());
            }
            Command::Clone { .. } => {
                // Clone switches to a protocol of its own, which this codec
                // does not follow; hoop refuses it by default.
                self.phase = Phase::Opaque;
                self.owed.clear();
                return Ok(self.take_id());
            }
            _ => Kind::Simple,
        };
        let id = self.take_id();
        let track = self.config.track_columns
            || origin == Origin::Hoop
            || matches!(command, Command::StmtExecute(e) if e.wants_cursor())
            // (Its definitions are counted by the list.)
            || matches!(command, Command::FieldList { .. });
        self.owed.push_back(Owed {
            id,
            command: command.code(),
            kind,
            origin,
            stage: Stage::Start,
            seq: Sequence::starting_at((chunk_count(payload_len) % 256) as u8),
            statement_index: 0,
            track,
            columns: Vec::new(),
        });
        self.apply_effects();
        Ok(id)
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The statement id an EXECUTE names, as the client sees it now.
    fn client_statement_id(&self, statement: StatementRef) -> Option<u32> {
        match statement {
            StatementRef::Id(id) => Some(id),
            StatementRef::LastPrepared if self.prepare_pending() => None,
            StatementRef::LastPrepared => self.last_prepared,
        }
    }

    fn prepare_pending(&self) -> bool {
        self.owed
            .iter()
            .any(|o| matches!(o.kind, Kind::Prepare { .. }))
    }

    /// The parameters of an EXECUTE, decoded with the statement's parameter
    /// count, the types bound before and its long-data parameters.
    /// `Ok(None)` when the statement is not confirmed yet (a PREPARE is
    /// still pending: call again once its PREPARE_OK arrived).
    pub fn execute_params<'a>(
        &self,
        execute: &StmtExecute<'a>,
    ) -> Result<Option<Params<'a>>, SessionError> {
        let statement = StatementRef::of(execute.statement_id);
        let Some(id) = self.client_statement_id(statement) else {
            return if self.prepare_pending() {
                Ok(None)
            } else {
                Err(SessionError::UnknownStatement(execute.statement_id))
            };
        };
        let Some(s) = self.statements.get(&id) else {
            return if self.prepare_pending() {
                Ok(None)
            } else {
                Err(SessionError::UnknownStatement(id))
            };
        };
        let long = self.long_data.get(&id);
        let long_data = |i: usize| long.is_some_and(|l| l.iter().any(|&p| usize::from(p) == i));
        let previous = self.param_types.get(&id).map(Vec::as_slice);
        Ok(Some(execute.params(
            usize::from(s.param_count),
            previous,
            &long_data,
            self.caps.contains(Capabilities::QUERY_ATTRIBUTES),
        )?))
    }

    /// Applies the effects of reply-less commands that reached the front
    /// (checked inline: a reply is usually at the front).
    #[inline]
    fn apply_effects(&mut self) {
        if self
            .owed
            .front()
            .is_some_and(|f| matches!(f.kind, Kind::CloseEffect { .. } | Kind::QuitEffect))
        {
            self.apply_front_effects();
        }
    }

    fn apply_front_effects(&mut self) {
        while let Some(front) = self.owed.front() {
            match front.kind {
                Kind::CloseEffect { statement_id } => {
                    self.statements.remove(&statement_id);
                    if self.last_prepared == Some(statement_id) {
                        self.last_prepared = None;
                    }
                }
                Kind::QuitEffect => {
                    self.phase = Phase::Closed;
                    self.owed.clear();
                    return;
                }
                _ => return,
            }
            self.owed.pop_front();
        }
    }

    // ----- server side -------------------------------------------------

    /// Accounts for one whole server packet (its logical payload).
    #[inline]
    pub fn server_packet(&mut self, seq: u8, payload: &[u8]) -> Result<ServerEvent, SessionError> {
        self.server_packet_head(seq, payload.len(), payload)
    }

    /// Accounts for a server packet of logical length `len` of which only
    /// `head` (its first bytes) is at hand: for a driver that streams rows
    /// of 16 MiB and more through without reassembling them. Anything but a
    /// row, a binlog event or an opaque packet must be whole.
    pub fn server_packet_head(
        &mut self,
        seq: u8,
        len: usize,
        head: &[u8],
    ) -> Result<ServerEvent, SessionError> {
        let whole = head.len() == len;
        match self.phase {
            Phase::AwaitingGreeting => self.greeting(seq, head, whole),
            Phase::Authenticating => self.auth_reply(seq, head, whole),
            Phase::Command => self.command_reply(seq, len, head, whole),
            Phase::Opaque => Ok(self.event(ServerPacket::Opaque, None, seq)),
            Phase::AwaitingClientHello | Phase::TlsHandshake => Err(unexpected(
                "a packet",
                "while waiting for the client's handshake response",
            )),
            Phase::Closed => Err(unexpected("a packet", "after the connection ended")),
        }
    }

    #[inline]
    fn event(&self, packet: ServerPacket, reply: Option<&Owed>, seq: u8) -> ServerEvent {
        ServerEvent {
            packet,
            reply: reply.map(|o| self.context(o)),
            columns_complete: false,
            completes_reply: false,
            seq,
            transaction: self.transaction(),
        }
    }

    fn greeting(
        &mut self,
        seq: u8,
        payload: &[u8],
        whole: bool,
    ) -> Result<ServerEvent, SessionError> {
        if !whole {
            return Err(unexpected("a partial greeting", "in the connection phase"));
        }
        self.conn_seq
            .expect(seq, payload.len(), crate::frame::Direction::ServerToClient)?;
        match ServerHello::parse(payload)? {
            ServerHello::Greeting(g) => {
                self.server_caps = g.capabilities;
                self.server_version = g.server();
                self.server_version_text = g.server_version.clone();
                self.thread_id = g.thread_id;
                self.status = StatusFlags(g.status);
                self.phase = Phase::AwaitingClientHello;
                Ok(self.event(ServerPacket::Greeting, None, seq))
            }
            ServerHello::Error(_) => {
                self.phase = Phase::Closed;
                Ok(self.event(ServerPacket::GreetingError, None, seq))
            }
        }
    }

    fn auth_reply(
        &mut self,
        seq: u8,
        payload: &[u8],
        whole: bool,
    ) -> Result<ServerEvent, SessionError> {
        if !whole {
            return Err(unexpected("a partial auth packet", "during authentication"));
        }
        self.conn_seq
            .expect(seq, payload.len(), crate::frame::Direction::ServerToClient)?;
        let packet = match payload.first() {
            Some(&OK_HEADER) => {
                let ok = OkPacket::parse(payload, self.caps)?;
                self.apply_ok(&ok);
                self.phase = Phase::Command;
                ServerPacket::AuthOk
            }
            Some(&ERR_HEADER) => {
                ErrPacket::parse(payload)?;
                self.phase = Phase::Closed;
                ServerPacket::AuthError
            }
            Some(&AUTH_SWITCH_HEADER) => {
                crate::auth::AuthSwitchRequest::parse(payload)?;
                ServerPacket::AuthSwitch
            }
            Some(&AUTH_MORE_DATA_HEADER) => ServerPacket::AuthMoreData,
            Some(&AUTH_NEXT_FACTOR_HEADER) => {
                crate::auth::AuthNextFactor::parse(payload)?;
                ServerPacket::AuthNextFactor
            }
            _ => return Err(unexpected("an unknown packet", "during authentication")),
        };
        Ok(self.event(packet, None, seq))
    }

    /// Status flags and session-state changes of an OK.
    fn apply_ok(&mut self, ok: &OkPacket<'_>) {
        self.status = ok.status;
        for change in ok.session_changes() {
            match change {
                SessionChange::Schema(s) => {
                    self.schema = (!s.is_empty()).then(|| Bytes::copy_from_slice(s));
                }
                SessionChange::SystemVariable { name, value } => {
                    let value = Bytes::copy_from_slice(value);
                    match self.variables.iter_mut().find(|(n, _)| n.as_ref() == name) {
                        Some(slot) => slot.1 = value,
                        None => self.variables.push((Bytes::copy_from_slice(name), value)),
                    }
                }
                _ => {}
            }
        }
    }

    /// Parses an end packet (OK form under `DEPRECATE_EOF`, else EOF) and
    /// records its status. A 5-byte packet is a classic EOF in either case
    /// (an OK-form end is at least 7 bytes), which some replies (COM_DEBUG,
    /// COM_SET_OPTION) may send regardless.
    fn end_status(&mut self, payload: &[u8]) -> Result<StatusFlags, SessionError> {
        if self.caps.contains(Capabilities::DEPRECATE_EOF) && payload.len() != 5 {
            let ok = OkPacket::parse(payload, self.caps)?;
            self.apply_ok(&ok);
        } else {
            self.status = EofPacket::parse(payload)?.status;
        }
        Ok(self.status)
    }

    /// A column or parameter definition of the front reply: validated,
    /// and copied out only when the reply keeps its definitions (boxed in
    /// its `Arc` here, so that the untracked case moves nothing large).
    fn definition(
        &self,
        payload: &[u8],
        field_list: bool,
    ) -> Result<Option<Arc<ColumnDefinition>>, SessionError> {
        let options = ColumnOptions {
            extended_metadata: self.caps.contains(Capabilities::MARIADB_EXTENDED_METADATA),
            field_list,
        };
        if self.owed.front().is_some_and(|o| o.track) {
            let bytes = Bytes::copy_from_slice(payload);
            Ok(Some(Arc::new(ColumnDefinition::parse(&bytes, options)?)))
        } else {
            ColumnDefinitionRef::validate(payload, options)?;
            Ok(None)
        }
    }

    fn command_reply(
        &mut self,
        seq: u8,
        len: usize,
        head: &[u8],
        whole: bool,
    ) -> Result<ServerEvent, SessionError> {
        let Some(front) = self.owed.front() else {
            // The server may announce its own disconnection (shutdown, an
            // idle timeout on MySQL 8.0.24+) with an ERR nobody asked for.
            if whole && head.first() == Some(&ERR_HEADER) && !is_progress(head) {
                ErrPacket::parse(head)?;
                self.phase = Phase::Closed;
                return Ok(self.event(ServerPacket::Error, None, seq));
            }
            return Err(unexpected("a packet", "while no command waits for a reply"));
        };
        // Checked first; counted before the packet is accounted for (the
        // event is then returned as built, not copied), and put back when
        // it is refused, so a refused packet changes nothing.
        let mut counter = front.seq;
        counter.expect(seq, len, crate::frame::Direction::ServerToClient)?;
        let (front_id, before) = (front.id, front.seq);
        if let Some(f) = self.owed.front_mut() {
            f.seq = counter;
        }
        self.command_reply_in_sequence(seq, len, head, whole)
            .inspect_err(|_| {
                if let Some(f) = self.owed.front_mut()
                    && f.id == front_id
                {
                    f.seq = before;
                }
            })
    }

    fn command_reply_in_sequence(
        &mut self,
        seq: u8,
        len: usize,
        head: &[u8],
        whole: bool,
    ) -> Result<ServerEvent, SessionError> {
        let Some(front) = self.owed.front() else {
            return Err(unexpected("a packet", "while no command waits for a reply"));
        };
        let first = head.first().copied();
        let stage = front.stage;
        // Only rows and binlog events may arrive in pieces.
        let streamable = matches!(stage, Stage::Rows | Stage::BinlogStream)
            && !first.is_some_and(|b| is_end_of_rows(b, len, self.caps) || b == ERR_HEADER);
        if !whole && !streamable {
            return Err(unexpected(
                "a partial packet",
                "where only whole packets are valid",
            ));
        }
        let Some(first) = first else {
            return Err(unexpected("an empty packet", "in a reply"));
        };
        // A reply's Start stage (and the wait after a LOCAL INFILE transfer)
        // may see MariaDB progress reports before the real answer.
        if matches!(stage, Stage::Start | Stage::LocalInfileDone) && is_progress(head) {
            crate::err::Progress::parse(head)?;
            let front = self.owed.front().map(|o| self.context(o));
            return Ok(ServerEvent {
                packet: ServerPacket::Progress,
                reply: front,
                columns_complete: false,
                completes_reply: false,
                seq,
                transaction: self.transaction(),
            });
        }
        if first == ERR_HEADER && !matches!(stage, Stage::LocalInfileData) {
            // ERR ends the whole reply wherever it comes (a killed query's
            // rows, a failed statement of a multi-statement query).
            ErrPacket::parse(head)?;
            if let Some(Owed {
                kind: Kind::Prepare { .. },
                ..
            }) = self.owed.front()
            {
                // MariaDB forgets "the last prepared statement" when a
                // PREPARE fails.
                self.last_prepared = None;
            }
            return Ok(self.complete(ServerPacket::Error, seq, false));
        }
        // The hot path: rows of a result set, decided without touching
        // anything else.
        if stage == Stage::Rows {
            return self.rows_or_end(seq, len, head);
        }
        // Result replies first, without cloning the entry's kind.
        if self
            .owed
            .front()
            .is_some_and(|o| matches!(o.kind, Kind::Query | Kind::Execute { .. }))
        {
            return self.result_reply(seq, len, head, stage);
        }
        let kind = self.owed.front().map(|o| o.kind.clone());
        match kind {
            Some(Kind::Query | Kind::Execute { .. }) => self.result_reply(seq, len, head, stage),
            Some(Kind::Fetch { .. }) => match stage {
                Stage::Start | Stage::Rows => {
                    self.set_stage(Stage::Rows);
                    self.rows_or_end(seq, len, head)
                }
                _ => Err(unexpected("a packet", "in a FETCH reply")),
            },
            Some(Kind::Prepare { sql }) => self.prepare_reply(seq, head, stage, &sql),
            Some(Kind::FieldList) => {
                if is_end_of_rows(first, len, self.caps) || is_classic_eof(head) {
                    self.end_status(head)?;
                    return Ok(self.complete(
                        ServerPacket::EndOfRows {
                            more_results: false,
                            cursor_opened: false,
                        },
                        seq,
                        true,
                    ));
                }
                let column = self.definition(head, true)?;
                let front = self.front_mut()?;
                front.stage = Stage::FieldList;
                let index = front.columns.len() as u64;
                if let Some(column) = column {
                    front.columns.push(column);
                }
                let mut e = self.event_front(ServerPacket::ColumnDefinition(index), seq);
                e.columns_complete = false;
                Ok(e)
            }
            Some(Kind::Statistics) => Ok(self.complete(ServerPacket::Statistics, seq, false)),
            Some(Kind::BinlogDump) => {
                if first == OK_HEADER {
                    self.set_stage(Stage::BinlogStream);
                    Ok(self.event_front(ServerPacket::BinlogEvent, seq))
                } else if is_classic_eof(head) {
                    Ok(self.complete(
                        ServerPacket::EndOfRows {
                            more_results: false,
                            cursor_opened: false,
                        },
                        seq,
                        false,
                    ))
                } else {
                    Err(unexpected("a packet", "in a binlog stream"))
                }
            }
            Some(Kind::ChangeUser { .. }) => self.change_user_reply(seq, head),
            Some(
                Kind::Simple
                | Kind::InitDb { .. }
                | Kind::ResetConnection
                | Kind::SetOption { .. }
                | Kind::StmtReset { .. },
            ) => self.simple_reply(seq, head),
            Some(Kind::CloseEffect { .. } | Kind::QuitEffect) | None => {
                Err(unexpected("a packet", "while no command waits for a reply"))
            }
        }
    }

    fn front_mut(&mut self) -> Result<&mut Owed, SessionError> {
        self.owed
            .front_mut()
            .ok_or(unexpected("a packet", "while no command waits for a reply"))
    }

    fn set_stage(&mut self, stage: Stage) {
        if let Some(f) = self.owed.front_mut() {
            f.stage = stage;
        }
    }

    #[inline]
    fn event_front(&self, packet: ServerPacket, seq: u8) -> ServerEvent {
        let front = self.owed.front();
        let mut e = self.event(packet, front, seq);
        e.columns_complete = front.is_some_and(|f| f.stage == Stage::Rows);
        e
    }

    /// Ends the front reply with this packet.
    fn complete(&mut self, packet: ServerPacket, seq: u8, columns_complete: bool) -> ServerEvent {
        let mut e = self.event(packet, self.owed.front(), seq);
        self.owed.pop_front();
        e.columns_complete = columns_complete;
        e.completes_reply = true;
        self.apply_effects();
        e
    }

    fn simple_reply(&mut self, seq: u8, payload: &[u8]) -> Result<ServerEvent, SessionError> {
        let packet = match payload[0] {
            OK_HEADER => {
                let ok = OkPacket::parse(payload, self.caps)?;
                self.apply_ok(&ok);
                ServerPacket::Ok {
                    more_results: false,
                }
            }
            crate::eof::EOF_HEADER if payload.len() < MAX_CHUNK => {
                self.end_status(payload)?;
                ServerPacket::Eof
            }
            _ => return Err(unexpected("a packet", "in the reply to a simple command")),
        };
        let kind = self.owed.front().map(|o| o.kind.clone());
        match kind {
            Some(Kind::InitDb { schema }) => self.schema = Some(schema),
            Some(Kind::ResetConnection) => self.forget_statements(),
            Some(Kind::SetOption { option }) => {
                self.multi_statements = option == set_option::MULTI_STATEMENTS_ON;
            }
            Some(Kind::StmtReset { statement_id }) => {
                if let Some(s) = self.statements.get_mut(&statement_id) {
                    s.cursor_columns = None;
                }
            }
            _ => {}
        }
        Ok(self.complete(packet, seq, false))
    }

    fn forget_statements(&mut self) {
        self.statements.clear();
        self.last_prepared = None;
        self.param_types.clear();
        self.long_data.clear();
    }

    fn change_user_reply(&mut self, seq: u8, payload: &[u8]) -> Result<ServerEvent, SessionError> {
        let packet = match payload[0] {
            OK_HEADER => {
                let ok = OkPacket::parse(payload, self.caps)?;
                if let Some(Owed {
                    kind:
                        Kind::ChangeUser {
                            user,
                            schema,
                            collation,
                        },
                    ..
                }) = self.owed.front().cloned()
                {
                    // The server starts a new session for the new user.
                    self.forget_statements();
                    self.variables.clear();
                    self.user = Some(user);
                    self.schema = (!schema.is_empty()).then_some(schema);
                    if let Some(c) = collation {
                        self.client_collation = c;
                    }
                }
                self.apply_ok(&ok);
                return Ok(self.complete(ServerPacket::AuthOk, seq, false));
            }
            AUTH_SWITCH_HEADER => {
                crate::auth::AuthSwitchRequest::parse(payload)?;
                ServerPacket::AuthSwitch
            }
            AUTH_MORE_DATA_HEADER => ServerPacket::AuthMoreData,
            AUTH_NEXT_FACTOR_HEADER => {
                crate::auth::AuthNextFactor::parse(payload)?;
                ServerPacket::AuthNextFactor
            }
            _ => return Err(unexpected("a packet", "in a COM_CHANGE_USER exchange")),
        };
        self.set_stage(Stage::ChangeUserAuth);
        Ok(self.event_front(packet, seq))
    }

    /// COM_QUERY and COM_STMT_EXECUTE replies: results chained by
    /// `MORE_RESULTS_EXISTS`.
    fn result_reply(
        &mut self,
        seq: u8,
        len: usize,
        head: &[u8],
        stage: Stage,
    ) -> Result<ServerEvent, SessionError> {
        let first = head[0];
        match stage {
            Stage::Start => {
                if first == OK_HEADER {
                    let ok = OkPacket::parse(head, self.caps)?;
                    self.apply_ok(&ok);
                    let more = ok.status.contains(StatusFlags::MORE_RESULTS_EXISTS);
                    return Ok(self.statement_done(
                        ServerPacket::Ok { more_results: more },
                        seq,
                        more,
                        false,
                    ));
                }
                if first == LOCAL_INFILE_HEADER {
                    let is_query = self
                        .owed
                        .front()
                        .is_some_and(|o| matches!(o.kind, Kind::Query));
                    if !is_query {
                        return Err(unexpected(
                            "a LOCAL INFILE request",
                            "outside a COM_QUERY reply",
                        ));
                    }
                    crate::local_infile::LocalInfileRequest::parse(head)?;
                    self.set_stage(Stage::LocalInfileData);
                    return Ok(self.event_front(ServerPacket::LocalInfileRequest, seq));
                }
                let count = parse_column_count(head)?;
                let front = self.front_mut()?;
                front.columns.clear();
                front.stage = Stage::Columns { count, received: 0 };
                Ok(self.event_front(ServerPacket::ColumnCount(count), seq))
            }
            Stage::Columns { count, received } => {
                let column = self.definition(head, false)?;
                let deprecate_eof = self.caps.contains(Capabilities::DEPRECATE_EOF);
                let received = received + 1;
                let front = self.front_mut()?;
                if let Some(column) = column {
                    front.columns.push(column);
                }
                let done = received == count;
                front.stage = if !done {
                    Stage::Columns { count, received }
                } else if deprecate_eof {
                    Stage::Rows
                } else {
                    Stage::ColumnsEof
                };
                let mut e = self.event_front(ServerPacket::ColumnDefinition(received - 1), seq);
                e.columns_complete = done;
                Ok(e)
            }
            Stage::ColumnsEof => {
                if !is_classic_eof(head) {
                    return Err(unexpected(
                        "a packet",
                        "where the EOF after the columns belongs",
                    ));
                }
                let status = self.end_status(head)?;
                if status.contains(StatusFlags::CURSOR_EXISTS) {
                    self.cursor_opened();
                    return Ok(self.complete(
                        ServerPacket::EndOfRows {
                            more_results: false,
                            cursor_opened: true,
                        },
                        seq,
                        true,
                    ));
                }
                self.set_stage(Stage::Rows);
                let mut e = self.event_front(ServerPacket::ColumnsEof, seq);
                e.columns_complete = true;
                Ok(e)
            }
            Stage::Rows => self.rows_or_end(seq, len, head),
            Stage::LocalInfileDone => {
                if first != OK_HEADER {
                    return Err(unexpected("a packet", "after a LOCAL INFILE transfer"));
                }
                let ok = OkPacket::parse(head, self.caps)?;
                self.apply_ok(&ok);
                let more = ok.status.contains(StatusFlags::MORE_RESULTS_EXISTS);
                Ok(self.statement_done(ServerPacket::Ok { more_results: more }, seq, more, false))
            }
            Stage::LocalInfileData => Err(unexpected(
                "a packet",
                "while the client sends a LOCAL INFILE file",
            )),
            _ => Err(unexpected("a packet", "in a result set")),
        }
    }

    /// A statement's result ended: the next result follows, or the reply is done.
    fn statement_done(
        &mut self,
        packet: ServerPacket,
        seq: u8,
        more: bool,
        columns_complete: bool,
    ) -> ServerEvent {
        if more {
            let mut e = self.event_front(packet, seq);
            e.columns_complete = columns_complete;
            if let Some(f) = self.owed.front_mut() {
                f.statement_index += 1;
                f.stage = Stage::Start;
            }
            e
        } else {
            self.complete(packet, seq, columns_complete)
        }
    }

    fn rows_or_end(
        &mut self,
        seq: u8,
        len: usize,
        head: &[u8],
    ) -> Result<ServerEvent, SessionError> {
        if !is_end_of_rows(head[0], len, self.caps) {
            return Ok(self.event_front(ServerPacket::Row, seq));
        }
        let status = self.end_status(head)?;
        let fetch = matches!(self.owed.front().map(|o| &o.kind), Some(Kind::Fetch { .. }));
        if fetch {
            if let Some(Kind::Fetch { statement_id }) = self.owed.front().map(|o| o.kind.clone())
                && let Some(s) = self.statements.get_mut(&statement_id)
            {
                s.cursor_exhausted = status.contains(StatusFlags::LAST_ROW_SENT);
            }
            return Ok(self.complete(
                ServerPacket::EndOfRows {
                    more_results: false,
                    cursor_opened: false,
                },
                seq,
                true,
            ));
        }
        // Under DEPRECATE_EOF the packet after an EXECUTE's columns that
        // opened a cursor is this end packet, with CURSOR_EXISTS.
        if status.contains(StatusFlags::CURSOR_EXISTS) {
            self.cursor_opened();
            return Ok(self.complete(
                ServerPacket::EndOfRows {
                    more_results: false,
                    cursor_opened: true,
                },
                seq,
                true,
            ));
        }
        let more = status.contains(StatusFlags::MORE_RESULTS_EXISTS);
        Ok(self.statement_done(
            ServerPacket::EndOfRows {
                more_results: more,
                cursor_opened: false,
            },
            seq,
            more,
            true,
        ))
    }

    /// Accounts for the run of packets at the start of `buf` (raw bytes,
    /// headers included) that a relay passes on unchanged: packets of the
    /// front reply's result sets when that reply is the client's COM_QUERY
    /// or COM_STMT_EXECUTE and keeps no column definitions. Each is checked
    /// as [`Self::server_packet`] checks it (its sequence id, a column
    /// count, a definition's layout, the end packets' status), in one pass
    /// and without an event per packet.
    ///
    /// The run stops before the first packet that is anything else or
    /// needs a look of the caller's (an OK or ERR, a progress report, a
    /// LOCAL INFILE request, an end that opens a cursor or that more
    /// results follow, a malformed or out-of-sequence packet, one of
    /// `max_payload` bytes or more, one not read whole): that one is left
    /// to [`Self::server_packet`], which reports it as it always did. A run
    /// never ends inside a result set's head (its column count,
    /// definitions and their EOF): a head not read whole is left whole, so
    /// a caller that answers a malformed definition with an ERR never has
    /// half a head relayed.
    pub fn plain_run(&mut self, buf: &[u8], max_payload: usize) -> PlainRun {
        let mut run = PlainRun::default();
        let caps = self.caps;
        let Some(front) = self.owed.front() else {
            return run;
        };
        if self.phase != Phase::Command
            || front.track
            || front.origin != Origin::Client
            || !matches!(front.kind, Kind::Query | Kind::Execute { .. })
        {
            return run;
        }
        let options = ColumnOptions {
            extended_metadata: caps.contains(Capabilities::MARIADB_EXTENDED_METADATA),
            field_list: false,
        };
        let deprecate_eof = caps.contains(Capabilities::DEPRECATE_EOF);
        let (mut stage, mut counter) = (front.stage, front.seq);
        run.in_rows = stage == Stage::Rows;
        let mut status = self.status;
        // Where the run may end: after a packet outside a result's head.
        let mut safe = (stage, counter, status, run);
        let mut end = None;
        while let Some((seq, payload)) = single_packet(&buf[run.bytes..], max_payload) {
            let Some(&first) = payload.first() else {
                break;
            };
            let mut next = counter;
            if next
                .expect(seq, payload.len(), crate::frame::Direction::ServerToClient)
                .is_err()
            {
                break;
            }
            stage = match stage {
                Stage::Start => {
                    // OK, LOCAL INFILE, ERR (and progress): the caller's.
                    if matches!(first, OK_HEADER | LOCAL_INFILE_HEADER | 0xFE | ERR_HEADER) {
                        break;
                    }
                    let Ok(count) = parse_column_count(payload) else {
                        break;
                    };
                    Stage::Columns { count, received: 0 }
                }
                Stage::Columns { count, received } => {
                    if !ColumnDefinitionRef::is_valid(payload, options) {
                        break;
                    }
                    let received = received + 1;
                    if received < count {
                        Stage::Columns { count, received }
                    } else if deprecate_eof {
                        Stage::Rows
                    } else {
                        Stage::ColumnsEof
                    }
                }
                Stage::ColumnsEof => {
                    let Some(eof) = is_classic_eof(payload)
                        .then(|| EofPacket::parse(payload).ok())
                        .flatten()
                        .filter(|e| !e.status.contains(StatusFlags::CURSOR_EXISTS))
                    else {
                        break;
                    };
                    status = eof.status;
                    Stage::Rows
                }
                Stage::Rows if first == ERR_HEADER => break,
                Stage::Rows if !is_end_of_rows(first, payload.len(), caps) => Stage::Rows,
                Stage::Rows => {
                    // The end: the caller's when a cursor opens or more
                    // results follow.
                    let end_packet = if deprecate_eof && payload.len() != 5 {
                        OkPacket::parse(payload, caps).map(|ok| (ok.status, Some(ok)))
                    } else {
                        EofPacket::parse(payload).map(|e| (e.status, None))
                    };
                    if let Ok((flags, ok)) = end_packet
                        && flags.0
                            & (StatusFlags::CURSOR_EXISTS.0 | StatusFlags::MORE_RESULTS_EXISTS.0)
                            == 0
                    {
                        end = Some((next, flags, ok, payload.len()));
                    }
                    break;
                }
                _ => break,
            };
            counter = next;
            run.bytes += crate::frame::HEADER_LEN + payload.len();
            run.packets += 1;
            run.in_rows = stage == Stage::Rows;
            if !matches!(stage, Stage::Columns { .. } | Stage::ColumnsEof) {
                safe = (stage, counter, status, run);
            }
        }
        let (stage, counter, status, mut run) = safe;
        if let Some(front) = self.owed.front_mut() {
            front.stage = stage;
            front.seq = counter;
        }
        self.status = status;
        // The end of the reply, when the run reached it.
        if let Some((counter, flags, ok, len)) = end
            && run.in_rows
        {
            if let Some(front) = self.owed.front_mut() {
                front.seq = counter;
            }
            match ok {
                Some(ok) => self.apply_ok(&ok),
                None => self.status = flags,
            }
            self.owed.pop_front();
            self.apply_effects();
            run.bytes += crate::frame::HEADER_LEN + len;
            run.packets += 1;
            run.completes_reply = true;
            run.in_rows = false;
        }
        run
    }

    /// An EXECUTE opened a cursor: keep its columns with the statement
    /// (its COM_STMT_FETCH rows use them).
    fn cursor_opened(&mut self) {
        let Some(front) = self.owed.front() else {
            return;
        };
        if let Kind::Execute { statement, .. } = front.kind
            && let Some(id) = self.resolve(statement)
            && let Some(s) = self.statements.get_mut(&id)
        {
            // Untracked (a cursor is always tracked; kept for safety): no
            // columns, so its FETCH rows are refused where rows are judged.
            s.cursor_columns = front.track.then(|| front.columns.clone().into());
            s.cursor_exhausted = false;
        }
    }

    fn prepare_reply(
        &mut self,
        seq: u8,
        head: &[u8],
        stage: Stage,
        sql: &Arc<[u8]>,
    ) -> Result<ServerEvent, SessionError> {
        let deprecate_eof = self.caps.contains(Capabilities::DEPRECATE_EOF);
        match stage {
            Stage::Start => {
                let ok = PrepareOk::parse(head)?;
                self.statements.insert(
                    ok.statement_id,
                    PreparedStatement {
                        id: ok.statement_id,
                        sql: sql.clone(),
                        param_count: ok.params,
                        column_count: ok.columns,
                        params: Vec::new(),
                        columns: Vec::new(),
                        cursor_columns: None,
                        cursor_exhausted: false,
                    },
                );
                self.last_prepared = Some(ok.statement_id);
                self.learn_pending_types(ok.statement_id, usize::from(ok.params));
                let packet = ServerPacket::PrepareOk {
                    statement_id: ok.statement_id,
                    params: ok.params,
                    columns: ok.columns,
                };
                let next = Self::after_params(ok.params, ok.columns);
                match next {
                    None => Ok(self.complete(packet, seq, true)),
                    Some(stage) => {
                        self.set_stage(stage);
                        Ok(self.event_front(packet, seq))
                    }
                }
            }
            Stage::PrepareParams { count, received } => {
                let column = self.definition(head, false)?;
                self.store_prepare_definition(column, true);
                let received = received + 1;
                let columns = self.prepared_columns();
                let next = if received < count {
                    Some(Stage::PrepareParams { count, received })
                } else if !deprecate_eof {
                    Some(Stage::PrepareParamsEof)
                } else {
                    Self::after_params(0, columns)
                };
                let packet = ServerPacket::ParamDefinition(received - 1);
                match next {
                    None => Ok(self.complete(packet, seq, true)),
                    Some(s) => {
                        self.set_stage(s);
                        Ok(self.event_front(packet, seq))
                    }
                }
            }
            Stage::PrepareParamsEof => {
                if !is_classic_eof(head) {
                    return Err(unexpected(
                        "a packet",
                        "where the EOF after the parameters belongs",
                    ));
                }
                self.status = EofPacket::parse(head)?.status;
                match Self::after_params(0, self.prepared_columns()) {
                    None => Ok(self.complete(ServerPacket::ParamsEof, seq, true)),
                    Some(s) => {
                        self.set_stage(s);
                        Ok(self.event_front(ServerPacket::ParamsEof, seq))
                    }
                }
            }
            Stage::PrepareColumns { count, received } => {
                let column = self.definition(head, false)?;
                self.store_prepare_definition(column, false);
                let received = received + 1;
                let packet = ServerPacket::ColumnDefinition(u64::from(received - 1));
                if received < count {
                    self.set_stage(Stage::PrepareColumns { count, received });
                    Ok(self.event_front(packet, seq))
                } else if !deprecate_eof {
                    self.set_stage(Stage::PrepareColumnsEof);
                    let mut e = self.event_front(packet, seq);
                    e.columns_complete = true;
                    Ok(e)
                } else {
                    Ok(self.complete(packet, seq, true))
                }
            }
            Stage::PrepareColumnsEof => {
                if !is_classic_eof(head) {
                    return Err(unexpected(
                        "a packet",
                        "where the EOF after the columns belongs",
                    ));
                }
                self.status = EofPacket::parse(head)?.status;
                Ok(self.complete(ServerPacket::ColumnsEof, seq, true))
            }
            _ => Err(unexpected("a packet", "in a PREPARE reply")),
        }
    }

    /// The stage after the parameter block of a prepare reply.
    fn after_params(params: u16, columns: u16) -> Option<Stage> {
        if params > 0 {
            Some(Stage::PrepareParams {
                count: params,
                received: 0,
            })
        } else if columns > 0 {
            Some(Stage::PrepareColumns {
                count: columns,
                received: 0,
            })
        } else {
            None
        }
    }

    fn prepared_columns(&self) -> u16 {
        self.last_prepared
            .and_then(|id| self.statements.get(&id))
            .map_or(0, |s| s.column_count)
    }

    fn store_prepare_definition(&mut self, column: Option<Arc<ColumnDefinition>>, param: bool) {
        let Some(column) = column else {
            return;
        };
        if let Some(s) = self
            .last_prepared
            .and_then(|id| self.statements.get_mut(&id))
        {
            if param {
                s.params.push(column);
            } else {
                s.columns.push(column);
            }
        }
    }

    /// EXECUTEs forwarded before this statement was confirmed: learn the
    /// types they bound.
    fn learn_pending_types(&mut self, id: u32, count: usize) {
        let mut learnt = None;
        // The front entry is the PREPARE being confirmed; a later PREPARE
        // becomes "the last prepared" for the EXECUTEs after it.
        for o in self.owed.iter().skip(1) {
            match &o.kind {
                Kind::Prepare { .. } => break,
                Kind::Execute {
                    statement,
                    params_head: Some(head),
                } if *statement == StatementRef::LastPrepared
                    || *statement == StatementRef::Id(id) =>
                {
                    if let Ok(Some(types)) = parse_param_types(head, count) {
                        learnt = Some(types);
                    }
                }
                _ => {}
            }
        }
        if let Some(types) = learnt {
            self.param_types.insert(id, types);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
