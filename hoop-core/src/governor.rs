//! Governance hook points: where policy, masking, holds and recording plug
//! into a protocol driver.
//!
//! A [`GovernorFactory`] makes one [`SessionGovernor`] per session. The
//! driver calls it:
//! - [`SessionGovernor::judge`] before anything of a statement goes
//!   upstream: once per text submission (all of its SQL: a denial or hold of
//!   any statement in it applies to the whole text), once per prepare, once
//!   per function call. An approved prepared statement is not judged again
//!   when it is executed;
//! - [`SessionGovernor::columns_to_resolve`], then
//!   [`SessionGovernor::row_rewriter`] when a result set starts, to get a
//!   [`RowRewriter`] for its rows (or `None` to stream them untouched). The
//!   driver describes the result as [`ResultColumn`]s and every row as
//!   [`RowValues`]; a rewritten row comes back through the driver's
//!   [`RowEncoder`], so only the driver knows its wire format;
//! - [`SessionGovernor::rewrite_server_text`] for server texts that may
//!   echo values (errors, notices, notifications);
//! - [`SessionGovernor::observe`] for recording and metrics.
//!
//! Holds are decided elsewhere (an approval queue, an admin API): the driver
//! asks a [`HoldBroker`](crate::HoldBroker) for a
//! [`HoldTicket`](crate::HoldTicket) and waits on it while keeping the
//! client informed.

use std::{future::Future, pin::Pin};

use crate::{
    HoldOutcome, Refusal, ResultColumn, RowEncoder, RowValues, SessionIdentity, Submission, Verdict,
};

/// Whether a session is inside a transaction, as the server last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// Not in a transaction block.
    Idle,
    /// In a transaction block.
    Active,
    /// In a failed transaction block (statements fail until it ends).
    Failed,
}

/// The statement a decision or a result refers to.
#[derive(Debug, Clone, Copy)]
pub struct StatementContext<'a> {
    /// Who is running it.
    pub identity: &'a SessionIdentity,
    /// Its SQL text. For a text submission, the whole text (possibly several
    /// statements); for a function call, `function <id>`.
    pub sql: &'a str,
    /// How it reached the proxy.
    pub submission: Submission,
    /// Prepared statement name or id (`""` is PostgreSQL's unnamed one).
    pub statement_name: Option<&'a str>,
    /// Portal (cursor) name (results of prepared statements only).
    pub portal: Option<&'a str>,
    /// For results of a multi-statement text: which statement (0-based).
    pub statement_index: usize,
    /// Transaction state before the statement.
    pub transaction: TransactionState,
}

/// What to do with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRewrite {
    /// Forward the original bytes.
    Unchanged,
    /// The rewriter pushed every value of the new row into the encoder.
    Rewritten,
    /// The row must not reach the client and cannot be made safe: the
    /// driver refuses the rest of the result, fail-closed.
    Refuse(Refusal),
}

/// Rewrites the rows of one result set.
pub trait RowRewriter: Send {
    /// Rewrites one row. On [`RowRewrite::Rewritten`] it has pushed exactly
    /// `row.len()` values into `out`, in column order; otherwise it pushed
    /// nothing.
    fn rewrite_row(&mut self, row: &dyn RowValues, out: &mut dyn RowEncoder) -> RowRewrite;
}

/// What kind of server text a [`SessionGovernor::rewrite_server_text`]
/// call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTextKind {
    /// An error.
    Error,
    /// A notice or warning.
    Notice,
    /// An asynchronous notification's payload.
    Notification,
}

/// A server message's texts that may quote values (message, detail, hint,
/// context, …), in the driver's order. Codes, names and positions are not
/// among them.
#[derive(Debug, Clone, Copy)]
pub struct ServerText<'a> {
    /// What the message is.
    pub kind: ServerTextKind,
    /// Its value-bearing texts.
    pub fields: &'a [&'a str],
    /// The server says the text was raised by code running inside it (a
    /// function, procedure, trigger or anonymous block), not by the server
    /// itself: its wording is the code's, so it may say anything.
    pub raised_by_code: bool,
    /// The SQL of the statement the text is about (for a simple query, the
    /// whole query string), when the driver knows it.
    pub sql: Option<&'a str>,
    /// The statement's index within `sql` (simple queries may hold several).
    pub statement_index: usize,
}

/// Which way data went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirection {
    /// Client to server (e.g. `COPY … FROM STDIN`, `LOAD DATA LOCAL`).
    ToServer,
    /// Server to client.
    ToClient,
}

/// Something that happened, for recording and metrics.
#[derive(Debug, Clone, Copy)]
pub enum SessionEvent<'a> {
    /// The session passed authentication and is ready (identity complete).
    Started {
        /// The identity.
        identity: &'a SessionIdentity,
    },
    /// A statement was judged.
    Judged {
        /// The statement.
        statement: &'a StatementContext<'a>,
        /// The decision (for holds, the hold requirement).
        verdict: &'a Verdict,
    },
    /// A prepared statement was bound or executed (each is one execution;
    /// the statement itself was judged when it was prepared).
    Bound {
        /// The statement (`statement_name` is set).
        statement: &'a StatementContext<'a>,
    },
    /// A statement went upstream (after judgement or approval).
    Sent {
        /// The statement.
        statement: &'a StatementContext<'a>,
    },
    /// A hold was decided.
    HoldDecided {
        /// The hold's id.
        id: &'a str,
        /// The outcome.
        outcome: &'a HoldOutcome,
    },
    /// The server confirmed a change to the session's named prepared
    /// statements or cursors, made by SQL (`PREPARE`, `DECLARE`, …) or by
    /// protocol messages (a named Parse, Bind or Close).
    Object {
        /// What changed.
        change: ObjectChange<'a>,
    },
    /// A command completed.
    CommandComplete {
        /// The command tag (`SELECT 3`), as the protocol reports it.
        tag: &'a str,
        /// Row count, if the protocol reported one.
        rows: Option<u64>,
    },
    /// The server reported an error.
    ServerError {
        /// The SQLSTATE, when the protocol has one.
        sqlstate: Option<&'a str>,
        /// Severity, when the protocol has one.
        severity: Option<&'a str>,
    },
    /// Bulk data passed (COPY, LOAD DATA).
    CopyData {
        /// Which way.
        direction: DataDirection,
        /// Payload bytes.
        bytes: usize,
    },
    /// The session ended.
    Ended {
        /// Why (`client closed`, `server closed`, an error).
        reason: &'a str,
    },
}

/// A confirmed change to a session's named objects (see
/// [`SessionEvent::Object`]). Names are the server's (already folded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectChange<'a> {
    /// A prepared statement now runs `sql` (SQL `PREPARE`'s body, or a
    /// named protocol Parse).
    Prepared {
        /// Its name.
        name: &'a str,
        /// The statement it runs.
        sql: &'a str,
    },
    /// A cursor now reads `sql` (SQL `DECLARE`'s query, or a named protocol
    /// portal's statement).
    Declared {
        /// Its name.
        name: &'a str,
        /// The query it reads.
        sql: &'a str,
    },
    /// A prepared statement is gone (`None`: all of them).
    Deallocated {
        /// Its name.
        name: Option<&'a str>,
    },
    /// A cursor is gone (`None`: all of them).
    Closed {
        /// Its name.
        name: Option<&'a str>,
    },
}

/// Asynchronous work a governor needs done before it can build a row
/// rewriter (e.g. a catalog lookup); the driver awaits it, without reading
/// further from the server, then asks again.
pub type Preparation = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Per-session governance.
pub trait SessionGovernor: Send {
    /// Judges a statement before anything of it goes upstream.
    fn judge(&mut self, statement: &StatementContext<'_>) -> Verdict;

    /// Judges a statement again once a dry run has counted the rows it
    /// touches (`None`: the count is unknown), after [`SessionGovernor::judge`]
    /// gave a verdict with `max_rows`. The answer has no `max_rows`: the
    /// driver keeps the dry run's effects on [`Verdict::Allow`], and rolls
    /// them back otherwise. The default applies every rule as if the count
    /// were over its limit (fail closed).
    fn judge_counted(&mut self, statement: &StatementContext<'_>, rows: Option<u64>) -> Verdict {
        let _ = rows;
        match self.judge(statement) {
            Verdict::Deny(mut denial) => {
                denial.max_rows = None;
                Verdict::Deny(denial)
            }
            Verdict::Hold(mut requirement) => {
                requirement.max_rows = None;
                Verdict::Hold(requirement)
            }
            Verdict::Allow => Verdict::Allow,
        }
    }

    /// A refusal that must end the session now (sent to the client as
    /// fatal), e.g. its recording failed and the policy requires one.
    /// Checked before every statement and whenever the session wakes.
    fn fatal(&mut self) -> Option<Refusal> {
        None
    }

    /// Whether this governor may rewrite rows. When `false` the driver skips
    /// result tracking and never calls the rewriter hooks (the fast path).
    /// When `true` the driver guarantees a description of every result
    /// before its rows (describing it itself if the client did not).
    fn inspects_rows(&self) -> bool {
        true
    }

    /// Work to finish before [`SessionGovernor::row_rewriter`] is asked
    /// about a result with these columns (`None`: nothing to do).
    fn columns_to_resolve(&mut self, columns: &[ResultColumn]) -> Option<Preparation> {
        let _ = columns;
        None
    }

    /// A rewriter for a result set, given the statement that produced it and
    /// its columns. `None` forwards the rows untouched.
    fn row_rewriter(
        &mut self,
        statement: &StatementContext<'_>,
        columns: &[ResultColumn],
    ) -> Option<Box<dyn RowRewriter>>;

    /// Rewrites a server message's value-bearing texts. `None` forwards the
    /// message unchanged; otherwise one entry per field, `Some` for a field
    /// to replace.
    fn rewrite_server_text(&mut self, text: ServerText<'_>) -> Option<Vec<Option<String>>> {
        let _ = text;
        None
    }

    /// The tables and views `statement` reads and writes, as the policy
    /// names them (`name` or `schema.name`, folded as the dialect folds),
    /// found without judging it for real: nothing is recorded or counted,
    /// and the [`SessionGovernor::judge`] that follows reuses the work.
    /// `None` when the governor does not mask (or the default: nothing to
    /// say).
    ///
    /// For a driver whose catalog of views is loaded in-band (MySQL): a
    /// relation its catalog does not know may be a view another session
    /// created since it was loaded, whose reads neither lineage nor the
    /// verdict would see. The driver loads its catalog again first.
    fn tables_before_judging(
        &mut self,
        statement: &StatementContext<'_>,
    ) -> Option<std::sync::Arc<[String]>> {
        let _ = statement;
        None
    }

    /// Whether [`SessionGovernor::observe`] wants the per-execution events
    /// (`Bound`, `CommandComplete`, `CopyData`). When `false` the driver
    /// does not build them, which keeps the relay's hot path short. Asked
    /// once, when the session starts.
    fn observes_executions(&self) -> bool {
        true
    }

    /// Whether [`SessionGovernor::observe`] wants the per-statement events
    /// `Judged` and `Sent`. When `false` the driver does not build them
    /// (two calls per statement saved). Asked once, when the session
    /// starts.
    fn observes_statements(&self) -> bool {
        true
    }

    /// Observes an event. Must not block: queue work elsewhere.
    fn observe(&mut self, event: SessionEvent<'_>) {
        let _ = event;
    }
}

/// Makes a governor for each new session.
pub trait GovernorFactory: Send + Sync {
    /// A governor for a session whose identity is known as far as the
    /// protocol's start-up tells it. `columns` resolves the protocol's column
    /// keys ([`crate::ColumnSource::Key`]).
    fn session(
        &self,
        identity: &SessionIdentity,
        columns: std::sync::Arc<dyn crate::ColumnResolver>,
    ) -> Box<dyn SessionGovernor>;
}

/// The no-op governor: allows everything, rewrites nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl SessionGovernor for AllowAll {
    fn judge(&mut self, _: &StatementContext<'_>) -> Verdict {
        Verdict::Allow
    }

    fn inspects_rows(&self) -> bool {
        false
    }

    fn row_rewriter(
        &mut self,
        _: &StatementContext<'_>,
        _: &[ResultColumn],
    ) -> Option<Box<dyn RowRewriter>> {
        None
    }
}

impl GovernorFactory for AllowAll {
    fn session(
        &self,
        _: &SessionIdentity,
        _: std::sync::Arc<dyn crate::ColumnResolver>,
    ) -> Box<dyn SessionGovernor> {
        Box::new(AllowAll)
    }
}
