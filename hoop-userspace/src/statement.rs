//! What a statement is, as policy, holds, recording and metrics see it.
//!
//! Shared vocabulary between the protocol side (which finds statements) and
//! the policy side (which classifies and judges them).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The kind of a SQL statement. Policy files name these in
/// `statements: [...]` (snake_case), and metrics use them as the bounded
/// `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Truncate,
    Drop,
    Alter,
    Create,
    Grant,
    Revoke,
    Copy,
    Call,
    Do,
    Set,
    Show,
    Reset,
    Begin,
    Commit,
    Rollback,
    Savepoint,
    Prepare,
    Execute,
    Deallocate,
    Declare,
    Fetch,
    Close,
    Listen,
    Notify,
    Unlisten,
    Explain,
    Vacuum,
    Analyze,
    Lock,
    Discard,
    Comment,
    /// Anything the classifier recognises but that has no kind of its own.
    Other,
    /// SQL the parser could not understand; decided by `policy.unparsed`.
    Unparsed,
}

/// How a statement reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolForm {
    /// A `Query` message (possibly several statements).
    Simple,
    /// `Parse`/`Bind`/`Execute`.
    Extended,
    /// `FunctionCall` (the legacy fast-path).
    FunctionCall,
}

/// The decision for one statement (or one whole multi-statement Query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it upstream.
    Allow,
    /// Answer with an ErrorResponse (SQLSTATE 42501); nothing reaches the server.
    Deny(Denial),
    /// Pause the client until an approver decides.
    Hold(HoldRequirement),
}

/// Why a statement was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The rule's name (its `name:` or a generated `deny[N]`).
    pub rule: String,
    /// Message shown to the client.
    pub message: String,
}

/// What a hold rule requires before a statement may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequirement {
    /// The rule's name (its `name:` or a generated `hold[N]`).
    pub rule: String,
    /// Message shown to the client and approvers.
    pub message: String,
    /// After this long undecided, the hold is denied.
    pub timeout: Duration,
    /// Groups whose members may decide; empty means any authenticated decider.
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub min_approvals: u32,
}
