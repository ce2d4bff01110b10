//! Commands (C): every COM_* a client can send in the command phase.
//!
//! A command is one logical packet whose first byte names it, sent with
//! sequence id 0. The server answers most with OK/ERR or a result set;
//! COM_QUIT, COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA get no reply.
//!
//! hoop refuses by default what bypasses statement policy and masking:
//! COM_BINLOG_DUMP(_GTID), COM_REGISTER_SLAVE, COM_TABLE_DUMP and COM_CLONE
//! (raw row images, whole data directories), and anything unknown.

use bytes::{BufMut, Bytes, BytesMut};

use crate::capabilities::Capabilities;
use crate::execute::{Params, StmtExecute, parse_params};
use crate::handshake::ConnectAttributes;
use crate::wire::{MessageError, Reader, put_cstr, put_lenenc_int};

/// Command bytes.
pub mod code {
    /// Internal to the server (never valid from a client).
    pub const SLEEP: u8 = 0x00;
    /// Close the connection (no reply).
    pub const QUIT: u8 = 0x01;
    /// Change the current schema.
    pub const INIT_DB: u8 = 0x02;
    /// Run SQL text.
    pub const QUERY: u8 = 0x03;
    /// List a table's columns (deprecated).
    pub const FIELD_LIST: u8 = 0x04;
    /// Create a schema (removed in MySQL 8).
    pub const CREATE_DB: u8 = 0x05;
    /// Drop a schema (removed in MySQL 8).
    pub const DROP_DB: u8 = 0x06;
    /// Flush tables, logs, privileges… (deprecated).
    pub const REFRESH: u8 = 0x07;
    /// Shut the server down (deprecated).
    pub const SHUTDOWN: u8 = 0x08;
    /// Server statistics as a string.
    pub const STATISTICS: u8 = 0x09;
    /// The process list (deprecated): other sessions' SQL.
    pub const PROCESS_INFO: u8 = 0x0A;
    /// Internal.
    pub const CONNECT: u8 = 0x0B;
    /// Kill a connection (deprecated: `KILL`).
    pub const PROCESS_KILL: u8 = 0x0C;
    /// Dump debug information to the server's log.
    pub const DEBUG: u8 = 0x0D;
    /// Liveness check.
    pub const PING: u8 = 0x0E;
    /// Internal.
    pub const TIME: u8 = 0x0F;
    /// Internal.
    pub const DELAYED_INSERT: u8 = 0x10;
    /// Re-authenticate as another user.
    pub const CHANGE_USER: u8 = 0x11;
    /// Stream the binlog (replication).
    pub const BINLOG_DUMP: u8 = 0x12;
    /// Dump a table (removed).
    pub const TABLE_DUMP: u8 = 0x13;
    /// Internal.
    pub const CONNECT_OUT: u8 = 0x14;
    /// Register as a replica.
    pub const REGISTER_SLAVE: u8 = 0x15;
    /// Prepare a statement.
    pub const STMT_PREPARE: u8 = 0x16;
    /// Execute a prepared statement.
    pub const STMT_EXECUTE: u8 = 0x17;
    /// Send a parameter's data in pieces (no reply).
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    /// Close a prepared statement (no reply).
    pub const STMT_CLOSE: u8 = 0x19;
    /// Reset a prepared statement (long data, cursor).
    pub const STMT_RESET: u8 = 0x1A;
    /// Turn multi-statements on or off.
    pub const SET_OPTION: u8 = 0x1B;
    /// Fetch rows from a cursor.
    pub const STMT_FETCH: u8 = 0x1C;
    /// Internal.
    pub const DAEMON: u8 = 0x1D;
    /// Stream the binlog from GTIDs (MySQL).
    pub const BINLOG_DUMP_GTID: u8 = 0x1E;
    /// Reset the session (statements, variables, temp tables).
    pub const RESET_CONNECTION: u8 = 0x1F;
    /// The clone plugin (MySQL 8.0.17).
    pub const CLONE: u8 = 0x20;
    /// Group replication stream (MySQL 8.0.21).
    pub const SUBSCRIBE_GROUP_REPLICATION_STREAM: u8 = 0x21;
    /// MariaDB: execute with arrays of parameters.
    pub const STMT_BULK_EXECUTE: u8 = 0xFA;
    /// MariaDB: the withdrawn COM_MULTI.
    pub const MULTI: u8 = 0xFE;
}

/// COM_SET_OPTION values.
pub mod set_option {
    /// Multi-statements on.
    pub const MULTI_STATEMENTS_ON: u16 = 0;
    /// Multi-statements off.
    pub const MULTI_STATEMENTS_OFF: u16 = 1;
}

/// COM_CHANGE_USER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeUser<'a> {
    /// The new user.
    pub user: &'a [u8],
    /// Auth data for the scramble of the original greeting.
    pub auth_data: &'a [u8],
    /// The schema to switch to (empty for none).
    pub database: &'a [u8],
    /// The client's collation id.
    pub collation: Option<u16>,
    /// The auth plugin.
    pub auth_plugin: Option<&'a [u8]>,
    /// Connection attributes.
    pub attributes: Option<ConnectAttributes>,
}

/// One client command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    /// COM_QUIT.
    Quit,
    /// COM_INIT_DB.
    InitDb {
        /// The schema.
        schema: &'a [u8],
    },
    /// COM_QUERY.
    Query {
        /// The SQL text (in `character_set_client`).
        sql: &'a [u8],
        /// Query attributes (only when `QUERY_ATTRIBUTES` was agreed).
        attributes: Option<Params<'a>>,
    },
    /// COM_FIELD_LIST.
    FieldList {
        /// The table.
        table: &'a [u8],
        /// A LIKE pattern for the column names.
        wildcard: &'a [u8],
    },
    /// COM_CREATE_DB.
    CreateDb {
        /// The schema.
        schema: &'a [u8],
    },
    /// COM_DROP_DB.
    DropDb {
        /// The schema.
        schema: &'a [u8],
    },
    /// COM_REFRESH.
    Refresh {
        /// What to flush.
        flags: u8,
    },
    /// COM_SHUTDOWN.
    Shutdown {
        /// The shutdown level, when sent.
        level: Option<u8>,
    },
    /// COM_STATISTICS.
    Statistics,
    /// COM_PROCESS_INFO.
    ProcessInfo,
    /// COM_PROCESS_KILL.
    ProcessKill {
        /// The connection to kill.
        connection_id: u32,
    },
    /// COM_DEBUG.
    Debug,
    /// COM_PING.
    Ping,
    /// COM_CHANGE_USER.
    ChangeUser(ChangeUser<'a>),
    /// COM_BINLOG_DUMP.
    BinlogDump {
        /// Start position.
        position: u32,
        /// Flags (1 = non-blocking).
        flags: u16,
        /// The replica's server id.
        server_id: u32,
        /// The binlog file.
        filename: &'a [u8],
    },
    /// COM_BINLOG_DUMP_GTID.
    BinlogDumpGtid {
        /// Flags.
        flags: u16,
        /// The replica's server id.
        server_id: u32,
        /// The binlog file.
        filename: &'a [u8],
        /// Start position.
        position: u64,
        /// The GTID set, when flag 0x04 is set.
        gtid_data: &'a [u8],
    },
    /// COM_TABLE_DUMP.
    TableDump {
        /// Schema.
        database: &'a [u8],
        /// Table.
        table: &'a [u8],
    },
    /// COM_REGISTER_SLAVE.
    RegisterSlave {
        /// The replica's server id.
        server_id: u32,
        /// Its host name.
        host: &'a [u8],
        /// Replication user.
        user: &'a [u8],
        /// Replication password (never logged).
        password: &'a [u8],
        /// Its port.
        port: u16,
        /// Replication rank.
        rank: u32,
        /// The source's id.
        master_id: u32,
    },
    /// COM_STMT_PREPARE.
    StmtPrepare {
        /// The SQL text.
        sql: &'a [u8],
    },
    /// COM_STMT_EXECUTE.
    StmtExecute(StmtExecute<'a>),
    /// COM_STMT_SEND_LONG_DATA.
    StmtSendLongData {
        /// The statement.
        statement_id: u32,
        /// The parameter (0-based).
        param_id: u16,
        /// A piece of the value.
        data: &'a [u8],
    },
    /// COM_STMT_CLOSE.
    StmtClose {
        /// The statement.
        statement_id: u32,
    },
    /// COM_STMT_RESET.
    StmtReset {
        /// The statement.
        statement_id: u32,
    },
    /// COM_SET_OPTION.
    SetOption {
        /// [`set_option`] value.
        option: u16,
    },
    /// COM_STMT_FETCH.
    StmtFetch {
        /// The statement.
        statement_id: u32,
        /// How many rows.
        rows: u32,
    },
    /// COM_RESET_CONNECTION.
    ResetConnection,
    /// COM_CLONE (its payload is the clone protocol's own).
    Clone {
        /// The rest of the payload.
        data: &'a [u8],
    },
    /// COM_STMT_BULK_EXECUTE (MariaDB); its rows need the statement's
    /// parameter count: [`crate::execute::parse_bulk_rows`].
    StmtBulkExecute {
        /// The statement.
        statement_id: u32,
        /// Bulk flags.
        flags: u16,
        /// Types and rows of parameters.
        data: &'a [u8],
    },
    /// A command byte clients never send (server-internal, withdrawn) or
    /// this codec does not know: the server answers ERR; hoop refuses it.
    Other {
        /// The command byte.
        code: u8,
        /// The rest of the payload.
        data: &'a [u8],
    },
}

fn one_byte_string<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], MessageError> {
    let n = r.u8(field)?;
    r.bytes(usize::from(n), field)
}

impl<'a> Command<'a> {
    /// Parses a command payload under the agreed capabilities.
    pub fn parse(payload: &'a [u8], caps: Capabilities) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let c = r.u8("command")?;
        let cmd = match c {
            code::QUIT => Self::Quit,
            code::INIT_DB => Self::InitDb {
                schema: r.take_rest(),
            },
            code::QUERY => {
                let attributes = if caps.contains(Capabilities::QUERY_ATTRIBUTES) {
                    let n = r.lenenc_int("query attribute count")?;
                    let sets = r.lenenc_int("query attribute set count")?;
                    if sets != 1 {
                        return Err(MessageError::InvalidValue {
                            field: "query attribute set count",
                            value: sets,
                        });
                    }
                    let count = usize::try_from(n)
                        .ok()
                        .filter(|n| n.div_ceil(8) <= r.remaining())
                        .ok_or(MessageError::InvalidLength {
                            field: "query attribute count",
                            value: n,
                        })?;
                    Some(parse_params(&mut r, count, true, None, &|_| false)?)
                } else {
                    None
                };
                Self::Query {
                    sql: r.take_rest(),
                    attributes,
                }
            }
            code::FIELD_LIST => Self::FieldList {
                table: r.cstr("field list table")?,
                wildcard: r.take_rest(),
            },
            code::CREATE_DB => Self::CreateDb {
                schema: r.take_rest(),
            },
            code::DROP_DB => Self::DropDb {
                schema: r.take_rest(),
            },
            code::REFRESH => Self::Refresh {
                flags: r.u8("refresh flags")?,
            },
            code::SHUTDOWN => Self::Shutdown {
                level: if r.is_empty() {
                    None
                } else {
                    Some(r.u8("shutdown level")?)
                },
            },
            code::STATISTICS => Self::Statistics,
            code::PROCESS_INFO => Self::ProcessInfo,
            code::PROCESS_KILL => Self::ProcessKill {
                connection_id: r.u32("process kill id")?,
            },
            code::DEBUG => Self::Debug,
            code::PING => Self::Ping,
            code::CHANGE_USER => Self::ChangeUser(Self::parse_change_user(&mut r, caps)?),
            code::BINLOG_DUMP => Self::BinlogDump {
                position: r.u32("binlog position")?,
                flags: r.u16("binlog flags")?,
                server_id: r.u32("binlog server id")?,
                filename: r.take_rest(),
            },
            code::BINLOG_DUMP_GTID => {
                let flags = r.u16("binlog flags")?;
                let server_id = r.u32("binlog server id")?;
                let n = r.u32("binlog file name length")?;
                let filename = r.bytes(n as usize, "binlog file name")?;
                let position = r.u64("binlog position")?;
                let gtid_data = if flags & 0x04 != 0 {
                    let n = r.u32("binlog GTID data length")?;
                    r.bytes(n as usize, "binlog GTID data")?
                } else {
                    &[]
                };
                Self::BinlogDumpGtid {
                    flags,
                    server_id,
                    filename,
                    position,
                    gtid_data,
                }
            }
            code::TABLE_DUMP => Self::TableDump {
                database: one_byte_string(&mut r, "table dump schema")?,
                table: one_byte_string(&mut r, "table dump table")?,
            },
            code::REGISTER_SLAVE => Self::RegisterSlave {
                server_id: r.u32("replica server id")?,
                host: one_byte_string(&mut r, "replica host")?,
                user: one_byte_string(&mut r, "replica user")?,
                password: one_byte_string(&mut r, "replica password")?,
                port: r.u16("replica port")?,
                rank: r.u32("replica rank")?,
                master_id: r.u32("replica master id")?,
            },
            code::STMT_PREPARE => Self::StmtPrepare { sql: r.take_rest() },
            code::STMT_EXECUTE => Self::StmtExecute(StmtExecute::parse_body(r.take_rest())?),
            code::STMT_SEND_LONG_DATA => Self::StmtSendLongData {
                statement_id: r.u32("long data statement id")?,
                param_id: r.u16("long data parameter")?,
                data: r.take_rest(),
            },
            code::STMT_CLOSE => Self::StmtClose {
                statement_id: r.u32("close statement id")?,
            },
            code::STMT_RESET => Self::StmtReset {
                statement_id: r.u32("reset statement id")?,
            },
            code::SET_OPTION => Self::SetOption {
                option: r.u16("set option")?,
            },
            code::STMT_FETCH => Self::StmtFetch {
                statement_id: r.u32("fetch statement id")?,
                rows: r.u32("fetch row count")?,
            },
            code::RESET_CONNECTION => Self::ResetConnection,
            code::CLONE => Self::Clone {
                data: r.take_rest(),
            },
            code::STMT_BULK_EXECUTE => Self::StmtBulkExecute {
                statement_id: r.u32("bulk statement id")?,
                flags: r.u16("bulk flags")?,
                data: r.take_rest(),
            },
            other => Self::Other {
                code: other,
                data: r.take_rest(),
            },
        };
        // Commands without arguments ignore what follows, as the server does.
        Ok(cmd)
    }

    fn parse_change_user(
        r: &mut Reader<'a>,
        caps: Capabilities,
    ) -> Result<ChangeUser<'a>, MessageError> {
        let user = r.cstr("change user name")?;
        let auth_data = if caps.contains(Capabilities::SECURE_CONNECTION) {
            one_byte_string(r, "change user auth data")?
        } else {
            r.cstr("change user auth data")?
        };
        let database = r.cstr("change user database")?;
        let collation = if r.is_empty() {
            None
        } else {
            Some(r.u16("change user collation")?)
        };
        let auth_plugin = if caps.contains(Capabilities::PLUGIN_AUTH) && !r.is_empty() {
            Some(r.cstr("change user plugin")?)
        } else {
            None
        };
        let attributes = if caps.contains(Capabilities::CONNECT_ATTRS) && !r.is_empty() {
            Some(ConnectAttributes::parse(r)?)
        } else {
            None
        };
        r.finish("COM_CHANGE_USER")?;
        Ok(ChangeUser {
            user,
            auth_data,
            database,
            collation,
            auth_plugin,
            attributes,
        })
    }

    /// The command byte.
    pub fn code(&self) -> u8 {
        match self {
            Self::Quit => code::QUIT,
            Self::InitDb { .. } => code::INIT_DB,
            Self::Query { .. } => code::QUERY,
            Self::FieldList { .. } => code::FIELD_LIST,
            Self::CreateDb { .. } => code::CREATE_DB,
            Self::DropDb { .. } => code::DROP_DB,
            Self::Refresh { .. } => code::REFRESH,
            Self::Shutdown { .. } => code::SHUTDOWN,
            Self::Statistics => code::STATISTICS,
            Self::ProcessInfo => code::PROCESS_INFO,
            Self::ProcessKill { .. } => code::PROCESS_KILL,
            Self::Debug => code::DEBUG,
            Self::Ping => code::PING,
            Self::ChangeUser(_) => code::CHANGE_USER,
            Self::BinlogDump { .. } => code::BINLOG_DUMP,
            Self::BinlogDumpGtid { .. } => code::BINLOG_DUMP_GTID,
            Self::TableDump { .. } => code::TABLE_DUMP,
            Self::RegisterSlave { .. } => code::REGISTER_SLAVE,
            Self::StmtPrepare { .. } => code::STMT_PREPARE,
            Self::StmtExecute(_) => code::STMT_EXECUTE,
            Self::StmtSendLongData { .. } => code::STMT_SEND_LONG_DATA,
            Self::StmtClose { .. } => code::STMT_CLOSE,
            Self::StmtReset { .. } => code::STMT_RESET,
            Self::SetOption { .. } => code::SET_OPTION,
            Self::StmtFetch { .. } => code::STMT_FETCH,
            Self::ResetConnection => code::RESET_CONNECTION,
            Self::Clone { .. } => code::CLONE,
            Self::StmtBulkExecute { .. } => code::STMT_BULK_EXECUTE,
            Self::Other { code, .. } => *code,
        }
    }

    /// The command's name (`COM_QUERY`…), for logs and errors.
    pub fn name(&self) -> &'static str {
        command_name(self.code())
    }

    /// Whether the server answers it (COM_QUIT, COM_STMT_CLOSE and
    /// COM_STMT_SEND_LONG_DATA get no reply).
    pub fn expects_reply(&self) -> bool {
        !matches!(
            self,
            Self::Quit | Self::StmtClose { .. } | Self::StmtSendLongData { .. }
        )
    }

    /// Whether hoop refuses it by default: it bypasses statement policy and
    /// masking (replication streams, clone), or it is not a command a
    /// client sends.
    pub fn refused_by_default(&self) -> bool {
        matches!(
            self,
            Self::BinlogDump { .. }
                | Self::BinlogDumpGtid { .. }
                | Self::TableDump { .. }
                | Self::RegisterSlave { .. }
                | Self::Clone { .. }
                | Self::StmtBulkExecute { .. }
                | Self::Other { .. }
        )
    }

    /// Encodes the command (command byte included) under `caps`.
    pub fn encode(&self, caps: Capabilities) -> Result<Bytes, MessageError> {
        let mut out = BytesMut::with_capacity(16);
        out.put_u8(self.code());
        match self {
            Self::Quit
            | Self::Statistics
            | Self::ProcessInfo
            | Self::Debug
            | Self::Ping
            | Self::ResetConnection => {}
            Self::InitDb { schema } | Self::CreateDb { schema } | Self::DropDb { schema } => {
                out.put_slice(schema);
            }
            Self::Query { sql, attributes } => {
                if caps.contains(Capabilities::QUERY_ATTRIBUTES) {
                    let values = attributes.as_ref().map_or(&[][..], |a| &a.values[..]);
                    put_lenenc_int(&mut out, values.len() as u64);
                    put_lenenc_int(&mut out, 1);
                    if let Some(a) = attributes {
                        crate::execute::put_params(
                            &mut out,
                            Some(&a.types),
                            Some(&a.names),
                            &a.values,
                        )?;
                    }
                }
                out.put_slice(sql);
            }
            Self::FieldList { table, wildcard } => {
                put_cstr(&mut out, table, "field list table")?;
                out.put_slice(wildcard);
            }
            Self::Refresh { flags } => out.put_u8(*flags),
            Self::Shutdown { level } => {
                if let Some(l) = level {
                    out.put_u8(*l);
                }
            }
            Self::ProcessKill { connection_id } => out.put_u32_le(*connection_id),
            Self::ChangeUser(c) => {
                put_cstr(&mut out, c.user, "change user name")?;
                if caps.contains(Capabilities::SECURE_CONNECTION) {
                    let n =
                        u8::try_from(c.auth_data.len()).map_err(|_| MessageError::DoesNotFit {
                            field: "change user auth data",
                            detail: "more than 255 bytes",
                        })?;
                    out.put_u8(n);
                    out.put_slice(c.auth_data);
                } else {
                    put_cstr(&mut out, c.auth_data, "change user auth data")?;
                }
                put_cstr(&mut out, c.database, "change user database")?;
                if let Some(col) = c.collation {
                    out.put_u16_le(col);
                    if caps.contains(Capabilities::PLUGIN_AUTH)
                        && let Some(p) = c.auth_plugin
                    {
                        put_cstr(&mut out, p, "change user plugin")?;
                        if caps.contains(Capabilities::CONNECT_ATTRS)
                            && let Some(a) = &c.attributes
                        {
                            let mut block = BytesMut::new();
                            for (k, v) in &a.pairs {
                                crate::wire::put_lenenc_bytes(&mut block, k);
                                crate::wire::put_lenenc_bytes(&mut block, v);
                            }
                            crate::wire::put_lenenc_bytes(&mut out, &block);
                        }
                    }
                }
            }
            Self::BinlogDump {
                position,
                flags,
                server_id,
                filename,
            } => {
                out.put_u32_le(*position);
                out.put_u16_le(*flags);
                out.put_u32_le(*server_id);
                out.put_slice(filename);
            }
            Self::BinlogDumpGtid {
                flags,
                server_id,
                filename,
                position,
                gtid_data,
            } => {
                out.put_u16_le(*flags);
                out.put_u32_le(*server_id);
                out.put_u32_le(filename.len() as u32);
                out.put_slice(filename);
                out.put_u64_le(*position);
                if flags & 0x04 != 0 {
                    out.put_u32_le(gtid_data.len() as u32);
                    out.put_slice(gtid_data);
                }
            }
            Self::TableDump { database, table } => {
                for s in [database, table] {
                    let n = u8::try_from(s.len()).map_err(|_| MessageError::DoesNotFit {
                        field: "table dump name",
                        detail: "more than 255 bytes",
                    })?;
                    out.put_u8(n);
                    out.put_slice(s);
                }
            }
            Self::RegisterSlave {
                server_id,
                host,
                user,
                password,
                port,
                rank,
                master_id,
            } => {
                out.put_u32_le(*server_id);
                for s in [host, user, password] {
                    let n = u8::try_from(s.len()).map_err(|_| MessageError::DoesNotFit {
                        field: "register replica string",
                        detail: "more than 255 bytes",
                    })?;
                    out.put_u8(n);
                    out.put_slice(s);
                }
                out.put_u16_le(*port);
                out.put_u32_le(*rank);
                out.put_u32_le(*master_id);
            }
            Self::StmtPrepare { sql } => out.put_slice(sql),
            Self::StmtExecute(e) => {
                out.put_u32_le(e.statement_id);
                out.put_u8(e.flags);
                out.put_u32_le(e.iterations);
                out.put_slice(e.param_block);
            }
            Self::StmtSendLongData {
                statement_id,
                param_id,
                data,
            } => {
                out.put_u32_le(*statement_id);
                out.put_u16_le(*param_id);
                out.put_slice(data);
            }
            Self::StmtClose { statement_id } | Self::StmtReset { statement_id } => {
                out.put_u32_le(*statement_id);
            }
            Self::SetOption { option } => out.put_u16_le(*option),
            Self::StmtFetch { statement_id, rows } => {
                out.put_u32_le(*statement_id);
                out.put_u32_le(*rows);
            }
            Self::Clone { data } | Self::Other { data, .. } => out.put_slice(data),
            Self::StmtBulkExecute {
                statement_id,
                flags,
                data,
            } => {
                out.put_u32_le(*statement_id);
                out.put_u16_le(*flags);
                out.put_slice(data);
            }
        }
        Ok(out.freeze())
    }
}

/// The name of a command byte.
pub fn command_name(c: u8) -> &'static str {
    match c {
        code::SLEEP => "COM_SLEEP",
        code::QUIT => "COM_QUIT",
        code::INIT_DB => "COM_INIT_DB",
        code::QUERY => "COM_QUERY",
        code::FIELD_LIST => "COM_FIELD_LIST",
        code::CREATE_DB => "COM_CREATE_DB",
        code::DROP_DB => "COM_DROP_DB",
        code::REFRESH => "COM_REFRESH",
        code::SHUTDOWN => "COM_SHUTDOWN",
        code::STATISTICS => "COM_STATISTICS",
        code::PROCESS_INFO => "COM_PROCESS_INFO",
        code::CONNECT => "COM_CONNECT",
        code::PROCESS_KILL => "COM_PROCESS_KILL",
        code::DEBUG => "COM_DEBUG",
        code::PING => "COM_PING",
        code::TIME => "COM_TIME",
        code::DELAYED_INSERT => "COM_DELAYED_INSERT",
        code::CHANGE_USER => "COM_CHANGE_USER",
        code::BINLOG_DUMP => "COM_BINLOG_DUMP",
        code::TABLE_DUMP => "COM_TABLE_DUMP",
        code::CONNECT_OUT => "COM_CONNECT_OUT",
        code::REGISTER_SLAVE => "COM_REGISTER_SLAVE",
        code::STMT_PREPARE => "COM_STMT_PREPARE",
        code::STMT_EXECUTE => "COM_STMT_EXECUTE",
        code::STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
        code::STMT_CLOSE => "COM_STMT_CLOSE",
        code::STMT_RESET => "COM_STMT_RESET",
        code::SET_OPTION => "COM_SET_OPTION",
        code::STMT_FETCH => "COM_STMT_FETCH",
        code::DAEMON => "COM_DAEMON",
        code::BINLOG_DUMP_GTID => "COM_BINLOG_DUMP_GTID",
        code::RESET_CONNECTION => "COM_RESET_CONNECTION",
        code::CLONE => "COM_CLONE",
        code::SUBSCRIBE_GROUP_REPLICATION_STREAM => "COM_SUBSCRIBE_GROUP_REPLICATION_STREAM",
        code::STMT_BULK_EXECUTE => "COM_STMT_BULK_EXECUTE",
        code::MULTI => "COM_MULTI",
        _ => "unknown command",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::execute::{ParamType, ParamValue};
    use crate::value::{ColumnType, Value};

    fn caps() -> Capabilities {
        Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH
            | Capabilities::CONNECT_ATTRS
    }

    #[test]
    fn every_command_round_trips() {
        let attrs = ConnectAttributes {
            pairs: vec![(Bytes::from_static(b"_pid"), Bytes::from_static(b"42"))],
        };
        let commands = vec![
            Command::Quit,
            Command::InitDb { schema: b"shop" },
            Command::Query {
                sql: b"SELECT 1; SELECT 2",
                attributes: None,
            },
            Command::FieldList {
                table: b"t",
                wildcard: b"a%",
            },
            Command::CreateDb { schema: b"x" },
            Command::DropDb { schema: b"x" },
            Command::Refresh { flags: 1 },
            Command::Shutdown { level: None },
            Command::Shutdown { level: Some(0) },
            Command::Statistics,
            Command::ProcessInfo,
            Command::ProcessKill { connection_id: 77 },
            Command::Debug,
            Command::Ping,
            Command::ChangeUser(ChangeUser {
                user: b"app",
                auth_data: &[1; 20],
                database: b"shop",
                collation: Some(45),
                auth_plugin: Some(b"mysql_native_password"),
                attributes: Some(attrs),
            }),
            Command::BinlogDump {
                position: 4,
                flags: 0,
                server_id: 2,
                filename: b"mysql-bin.000001",
            },
            Command::BinlogDumpGtid {
                flags: 4,
                server_id: 2,
                filename: b"f",
                position: 4,
                gtid_data: b"gtid",
            },
            Command::TableDump {
                database: b"d",
                table: b"t",
            },
            Command::RegisterSlave {
                server_id: 2,
                host: b"h",
                user: b"u",
                password: b"p",
                port: 3306,
                rank: 0,
                master_id: 1,
            },
            Command::StmtPrepare { sql: b"SELECT ?" },
            Command::StmtSendLongData {
                statement_id: 1,
                param_id: 0,
                data: b"chunk",
            },
            Command::StmtClose { statement_id: 1 },
            Command::StmtReset { statement_id: 1 },
            Command::SetOption { option: 0 },
            Command::StmtFetch {
                statement_id: 1,
                rows: 10,
            },
            Command::ResetConnection,
            Command::Clone { data: b"\x01" },
            Command::StmtBulkExecute {
                statement_id: 1,
                flags: 128,
                data: b"..",
            },
            Command::Other {
                code: 0x0F,
                data: b"",
            },
        ];
        for cmd in commands {
            let raw = cmd.encode(caps()).unwrap();
            let parsed = Command::parse(&raw, caps()).unwrap();
            assert_eq!(parsed, cmd, "{}", cmd.name());
            assert_eq!(parsed.code(), raw[0]);
        }
        assert!(!Command::Quit.expects_reply());
        assert!(Command::Ping.expects_reply());
        assert!(Command::Clone { data: b"" }.refused_by_default());
    }

    #[test]
    fn execute_is_parsed_to_its_head() {
        let raw = StmtExecute::encode(
            3,
            0,
            Some(&[ParamType {
                column_type: ColumnType::LONG,
                flags: 0,
            }]),
            &[ParamValue::Value(Value::I32(5))],
        )
        .unwrap();
        match Command::parse(&raw, caps()).unwrap() {
            Command::StmtExecute(e) => {
                assert_eq!(e.statement_id, 3);
                assert_eq!(
                    Command::StmtExecute(e).encode(caps()).unwrap(),
                    raw,
                    "re-encodes byte for byte"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn query_attributes_when_agreed() {
        let qa = caps() | Capabilities::QUERY_ATTRIBUTES;
        let cmd = Command::Query {
            sql: b"SELECT 1",
            attributes: None,
        };
        let raw = cmd.encode(qa).unwrap();
        assert_eq!(&raw[..], b"\x03\x00\x01SELECT 1");
        match Command::parse(&raw, qa).unwrap() {
            Command::Query { sql, attributes } => {
                assert_eq!(sql, b"SELECT 1");
                assert!(attributes.unwrap().values.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // count 1: bitmap 0, bound 1, type LONG + name "n", value 7.
        let raw = b"\x03\x01\x01\x00\x01\x03\x00\x01n\x07\x00\x00\x00SELECT 1";
        match Command::parse(raw, qa).unwrap() {
            Command::Query { attributes, .. } => {
                let a = attributes.unwrap();
                assert_eq!(a.names, vec![&b"n"[..]]);
                assert_eq!(a.values, vec![ParamValue::Value(Value::I32(7))]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Command::parse(b"\x03\xfe\xff\xff\xff\xff\xff\xff\xff\x7f\x01", qa).is_err());
    }

    #[test]
    fn truncated_commands_are_errors() {
        for raw in [
            &b""[..],
            b"\x0c\x01",
            b"\x11user",
            b"\x11user\0\x05ab",
            b"\x16",
        ] {
            if raw == b"\x16" {
                assert!(
                    Command::parse(raw, caps()).is_ok(),
                    "an empty prepare is parsed"
                );
                continue;
            }
            assert!(Command::parse(raw, caps()).is_err(), "{raw:?}");
        }
        assert!(Command::parse(b"\x17\x01\x00", caps()).is_err());
        assert!(Command::parse(b"\x1c\x01\x00\x00\x00\x01", caps()).is_err());
        assert!(Command::parse(b"\x1e\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff", caps()).is_err());
    }
}
