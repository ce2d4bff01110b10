//! Governance hook points: where policy, masking, holds and recording plug
//! into a protocol driver.
//!
//! A [`GovernorFactory`] makes one [`SessionGovernor`] per session. The
//! driver calls it:
//! - [`SessionGovernor::judge`] before anything of a statement goes
//!   upstream: once per simple Query (all of its SQL: a denial or hold of any
//!   statement in it applies to the whole string), once per Parse, once per
//!   FunctionCall. An approved prepared statement is not judged again when
//!   it is executed;
//! - [`SessionGovernor::row_rewriter`] when a result set starts, to get a
//!   [`RowRewriter`] for its rows (or `None` to stream them untouched);
//! - [`SessionGovernor::copy_rewriter`] when a COPY TO STDOUT starts;
//! - [`SessionGovernor::rewrite_server_text`] for server messages that echo
//!   values (errors, notices, notifications);
//! - [`SessionGovernor::observe`] for recording and metrics.
//!
//! Holds are decided elsewhere (an approval queue, an admin API): the driver
//! asks a [`HoldBroker`] for a [`HoldTicket`] and waits on it while keeping
//! the client informed.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;

use crate::proto::pg::{
    Direction,
    copy::CopyFormat,
    notice::{ErrorSpec, NoticeFields},
    notification::NotificationResponse,
    rows::{DataRow, RowDescription},
    status::TransactionStatus,
};
use crate::session::SessionIdentity;
use crate::statement::{HoldRequirement, ProtocolForm, Verdict};

/// The statement a decision or a result refers to.
#[derive(Debug, Clone, Copy)]
pub struct StatementContext<'a> {
    /// Who is running it.
    pub identity: &'a SessionIdentity,
    /// Its SQL text. For a simple Query, the whole query string (possibly
    /// several statements); for FunctionCall, `function <oid>`.
    pub sql: &'a str,
    /// How it reached the proxy.
    pub form: ProtocolForm,
    /// Prepared statement name (extended protocol; `""` is unnamed).
    pub statement_name: Option<&'a str>,
    /// Portal name (extended protocol, results only).
    pub portal: Option<&'a str>,
    /// For results of a multi-statement Query: which statement (0-based).
    pub statement_index: usize,
    /// Transaction status before the statement.
    pub transaction: TransactionStatus,
}

/// What to do with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRewrite {
    /// Forward the original bytes.
    Unchanged,
    /// Send this whole DataRow message instead (see [`DataRow::build`]).
    Replaced(Bytes),
    /// The row must not reach the client and cannot be made safe: the
    /// driver ends the session with this error (as FATAL), fail-closed.
    Refuse(ErrorSpec),
}

/// Rewrites the rows of one result set (or the data of one COPY).
pub trait RowRewriter: Send {
    /// Rewrites one DataRow.
    fn rewrite_row(&mut self, row: &DataRow<'_>) -> RowRewrite;

    /// Rewrites one CopyData payload from the server; `None` = unchanged.
    /// CopyData chunks are not aligned to rows in general; PostgreSQL sends
    /// one row per CopyData, which is what a rewriter may rely on.
    fn rewrite_copy_data(&mut self, data: &[u8], format: CopyFormat) -> Option<Bytes> {
        let _ = (data, format);
        None
    }
}

/// A server message that may echo values from the database.
#[derive(Debug, Clone, Copy)]
pub enum ServerText<'a> {
    /// ErrorResponse fields (`D` detail often quotes a row).
    Error(&'a NoticeFields<'a>),
    /// NoticeResponse fields.
    Notice(&'a NoticeFields<'a>),
    /// NotificationResponse.
    Notification(&'a NotificationResponse<'a>),
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
    /// A prepared statement was bound for execution (each Bind is one
    /// execution; the statement itself was judged at its Parse).
    Bound {
        /// The statement (`statement_name` and `portal` are set).
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
    /// A command completed.
    CommandComplete {
        /// The command tag (`SELECT 3`).
        tag: &'a str,
        /// Row count, if the tag has one.
        rows: Option<u64>,
    },
    /// The server reported an error.
    ServerError {
        /// SQLSTATE.
        sqlstate: Option<&'a str>,
        /// Severity.
        severity: Option<&'a str>,
    },
    /// COPY data passed.
    CopyData {
        /// Which way.
        direction: Direction,
        /// Payload bytes.
        bytes: usize,
    },
    /// The session ended.
    Ended {
        /// Why (`client closed`, `server closed`, an error).
        reason: &'a str,
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

    /// An error that must end the session now (sent to the client as
    /// FATAL), e.g. its recording failed and the policy requires one.
    /// Checked before every statement and whenever the session wakes.
    fn fatal(&mut self) -> Option<ErrorSpec> {
        None
    }

    /// Work to finish before [`SessionGovernor::row_rewriter`] is asked
    /// about a result with these columns (`None`: nothing to do).
    fn columns_to_resolve(&mut self, description: &RowDescription) -> Option<Preparation> {
        let _ = description;
        None
    }

    /// Work to finish before [`SessionGovernor::copy_rewriter`] is asked.
    fn copy_columns_to_resolve(&mut self, statement: &StatementContext<'_>) -> Option<Preparation> {
        let _ = statement;
        None
    }

    /// Whether this governor may rewrite rows. When `false` the driver skips
    /// RowDescription tracking and never calls the rewriter hooks (the fast
    /// path). When `true` the driver guarantees a RowDescription for every
    /// result: if a client executes a portal it never described, hoop
    /// describes it itself (and swallows the reply).
    fn inspects_rows(&self) -> bool {
        true
    }

    /// A rewriter for a result set, given the statement that produced it, its
    /// columns and the per-column result formats (0 text, 1 binary; one
    /// entry per column). `None` forwards the rows untouched.
    fn row_rewriter(
        &mut self,
        statement: &StatementContext<'_>,
        description: &RowDescription,
        result_formats: &[i16],
    ) -> Option<Box<dyn RowRewriter>>;

    /// A rewriter for the CopyData of a COPY … TO STDOUT.
    fn copy_rewriter(
        &mut self,
        statement: &StatementContext<'_>,
        format: CopyFormat,
    ) -> Option<Box<dyn RowRewriter>> {
        let _ = (statement, format);
        None
    }

    /// Rewrites a server message that echoes values; returns the whole
    /// replacement message, or `None` to forward it unchanged.
    fn rewrite_server_text(&mut self, message: ServerText<'_>) -> Option<Bytes> {
        let _ = message;
        None
    }

    /// Whether [`SessionGovernor::observe`] wants the per-execution events
    /// (`Bound`, `CommandComplete`, `CopyData`). When `false` the driver
    /// does not build them, which keeps the relay's hot path short. Asked
    /// once, when the session starts.
    fn observes_executions(&self) -> bool {
        true
    }

    /// Observes an event. Must not block: queue work elsewhere.
    fn observe(&mut self, event: SessionEvent<'_>) {
        let _ = event;
    }
}

/// Makes a governor for each new session.
pub trait GovernorFactory: Send + Sync {
    /// A governor for a session that has just sent its StartupMessage.
    fn session(&self, identity: &SessionIdentity) -> Box<dyn SessionGovernor>;
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
        _: &RowDescription,
        _: &[i16],
    ) -> Option<Box<dyn RowRewriter>> {
        None
    }
}

impl GovernorFactory for AllowAll {
    fn session(&self, _: &SessionIdentity) -> Box<dyn SessionGovernor> {
        Box::new(AllowAll)
    }
}

/// What a hold is about, as handed to the broker.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    /// Who is waiting.
    pub identity: SessionIdentity,
    /// The held SQL.
    pub sql: String,
    /// How it was sent.
    pub form: ProtocolForm,
    /// The rule's requirement.
    pub requirement: HoldRequirement,
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Approved: the held messages go upstream.
    Approved {
        /// Who approved.
        by: String,
    },
    /// Denied: the client gets SQLSTATE 42501.
    Denied {
        /// Who denied.
        by: String,
        /// Why, if given.
        reason: Option<String>,
    },
    /// Nobody decided in time (fail closed: treated as denied).
    TimedOut,
    /// The client went away or cancelled.
    Withdrawn,
}

/// A pending hold: its id and a future for the decision.
///
/// Dropping an undecided ticket withdraws it.
pub struct HoldTicket {
    id: String,
    decision: Pin<Box<dyn Future<Output = HoldOutcome> + Send>>,
    withdraw: Option<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for HoldTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldTicket")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl HoldTicket {
    /// A ticket whose outcome `decision` resolves to; `withdraw` tells the
    /// broker the waiter is gone (called at most once).
    pub fn new(
        id: impl Into<String>,
        decision: impl Future<Output = HoldOutcome> + Send + 'static,
        withdraw: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self {
            id: id.into(),
            decision: Box::pin(decision),
            withdraw: Some(Box::new(withdraw)),
        }
    }

    /// A ticket that is already decided.
    pub fn decided(id: impl Into<String>, outcome: HoldOutcome) -> Self {
        Self {
            id: id.into(),
            decision: Box::pin(std::future::ready(outcome)),
            withdraw: None,
        }
    }

    /// The hold's id (what approvers type).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Polls for the decision.
    pub fn poll_decision(&mut self, cx: &mut Context<'_>) -> Poll<HoldOutcome> {
        let outcome = self.decision.as_mut().poll(cx);
        if outcome.is_ready() {
            self.withdraw = None;
        }
        outcome
    }

    /// Withdraws the hold (the client went away or cancelled).
    pub fn withdraw(&mut self) {
        if let Some(w) = self.withdraw.take() {
            w();
        }
    }
}

impl Drop for HoldTicket {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// Registers holds and delivers decisions.
pub trait HoldBroker: Send + Sync {
    /// Registers a hold; must not block.
    fn hold(&self, request: HoldRequest) -> HoldTicket;
}

/// The default broker: with nobody to approve, every hold is denied (fail closed).
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyHolds;

impl HoldBroker for DenyHolds {
    fn hold(&self, _: HoldRequest) -> HoldTicket {
        HoldTicket::decided(
            "none",
            HoldOutcome::Denied {
                by: "hoop".into(),
                reason: Some("no hold broker is configured".into()),
            },
        )
    }
}
