//! The session's named prepared statements and cursors follow the server.
//!
//! PostgreSQL has one namespace of prepared statements and one of portals
//! (cursors), and SQL and the extended protocol share both: a statement
//! SQL `PREPARE` made can be bound by a protocol Bind, a cursor SQL
//! `DECLARE` made can be run by a protocol Execute, and SQL `EXECUTE` and
//! `FETCH` reach what protocol Parse and Bind made. hoop must know what
//! every name means to attribute the rows it returns, so both its maps
//! (the session state's, for protocol messages, and governance's, for SQL
//! `EXECUTE` and `FETCH`) change only when the server confirms a change:
//! a ParseComplete, BindComplete or CloseComplete, or the command tag of
//! `PREPARE`, `DEALLOCATE`, `DECLARE CURSOR`, `CLOSE CURSOR` or
//! `DISCARD ALL`. A statement the server rejected changes nothing, so a
//! name never takes on a meaning the server did not give it.
//!
//! A confirmation hoop cannot match to a statement it can read (server
//! output out of step, a name spelled in a way hoop does not decode) ends
//! the session: hoop would no longer know what a name means.

use hoop_core::{ObjectChange, SessionEvent, Submission};
use hoop_proto_pg::{extended::Target, session::Owed};
use hoop_sql::{SessionOp, SqlDialect, pg::Postgres};

use super::{Relay, SessionError};

/// Whether a command tag is one of a statement that changes named objects.
pub(super) fn changes_objects(tag: &str) -> bool {
    matches!(
        tag,
        "PREPARE"
            | "DEALLOCATE"
            | "DEALLOCATE ALL"
            | "DECLARE CURSOR"
            | "CLOSE CURSOR"
            | "CLOSE CURSOR ALL"
            | "DISCARD ALL"
    )
}

/// Whether command tag `tag` is the one the server gives `op`.
fn confirms(tag: &str, op: &SessionOp) -> bool {
    matches!(
        (tag, op),
        ("PREPARE", SessionOp::Prepare { .. })
            | ("DEALLOCATE", SessionOp::Deallocate { name: Some(_) })
            | ("DEALLOCATE ALL", SessionOp::Deallocate { name: None })
            | ("DECLARE CURSOR", SessionOp::Declare { .. })
            | ("CLOSE CURSOR", SessionOp::Close { name: Some(_) })
            | ("CLOSE CURSOR ALL", SessionOp::Close { name: None })
            | ("DISCARD ALL", SessionOp::DiscardAll)
    )
}

/// A change a protocol reply confirms, taken before the session state
/// forgets what the reply answers.
pub(super) enum ProtocolChange {
    Prepared { name: String, sql: String },
    Declared { name: String, sql: String },
    Deallocated(String),
    Closed(String),
}

impl Relay {
    /// What the protocol reply `tag` (ParseComplete, BindComplete or
    /// CloseComplete) confirms about a named object, if anything. The
    /// unnamed statement and portal are not reachable by SQL.
    pub(super) fn protocol_change(&self, tag: u8) -> Option<ProtocolChange> {
        if !matches!(tag, b'1' | b'2' | b'3') {
            return None;
        }
        match self.state.owed().next()? {
            Owed::Parse { name, sql } if tag == b'1' && !name.is_empty() => {
                Some(ProtocolChange::Prepared {
                    name: name.to_string(),
                    sql: sql.to_string(),
                })
            }
            Owed::Bind {
                portal, statement, ..
            } if tag == b'2' && !portal.is_empty() => Some(ProtocolChange::Declared {
                name: portal.to_string(),
                sql: self
                    .state
                    .statement_sql(statement)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            }),
            Owed::Close { target, name, .. } if tag == b'3' && !name.is_empty() => {
                Some(match target {
                    Target::Statement => ProtocolChange::Deallocated(name.to_string()),
                    Target::Portal => ProtocolChange::Closed(name.to_string()),
                })
            }
            _ => None,
        }
    }

    /// Tells governance what a protocol reply confirmed.
    pub(super) fn protocol_confirmed(&mut self, change: &ProtocolChange) {
        let change = match change {
            ProtocolChange::Prepared { name, sql } => ObjectChange::Prepared { name, sql },
            ProtocolChange::Declared { name, sql } => ObjectChange::Declared { name, sql },
            ProtocolChange::Deallocated(name) => ObjectChange::Deallocated { name: Some(name) },
            ProtocolChange::Closed(name) => ObjectChange::Closed { name: Some(name) },
        };
        self.governor.observe(SessionEvent::Object { change });
    }

    /// The server confirmed (command tag `tag`) the statement whose results
    /// are current: follow what it did to a named object.
    pub(super) fn sql_confirmed(&mut self, tag: &str) -> Result<(), SessionError> {
        let op = self.state.current_result().and_then(|ctx| {
            if ctx.form == Submission::Text {
                let pieces = Postgres.split(ctx.sql).ok()?;
                Postgres.session_op(pieces.get(ctx.statement_index)?.text)
            } else {
                Postgres.session_op(ctx.sql)
            }
        });
        let Some(op) = op.filter(|op| confirms(tag, op)) else {
            return Err(SessionError::UnreadableObjectChange {
                tag: tag.to_owned(),
            });
        };
        match &op {
            SessionOp::Prepare { name, body } => {
                self.state.sql_prepared(name, body);
                self.observe_object(ObjectChange::Prepared { name, sql: body });
            }
            SessionOp::Deallocate { name } => {
                self.state.sql_deallocated(name.as_deref());
                self.observe_object(ObjectChange::Deallocated {
                    name: name.as_deref(),
                });
            }
            SessionOp::Declare {
                name,
                body,
                hold,
                binary,
            } => {
                self.state.sql_declared(name, body, *hold, *binary);
                self.observe_object(ObjectChange::Declared { name, sql: body });
            }
            SessionOp::Close { name } => {
                self.state.sql_closed(name.as_deref());
                self.observe_object(ObjectChange::Closed {
                    name: name.as_deref(),
                });
            }
            SessionOp::DiscardAll => {
                self.state.sql_deallocated(None);
                self.state.sql_closed(None);
                self.observe_object(ObjectChange::Deallocated { name: None });
                self.observe_object(ObjectChange::Closed { name: None });
            }
            SessionOp::Execute { .. } | SessionOp::Fetch { .. } => {}
        }
        Ok(())
    }

    fn observe_object(&mut self, change: ObjectChange<'_>) {
        self.governor.observe(SessionEvent::Object { change });
    }
}
