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

impl StatementKind {
    /// The policy file's and metrics' name for this kind (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Truncate => "truncate",
            StatementKind::Drop => "drop",
            StatementKind::Alter => "alter",
            StatementKind::Create => "create",
            StatementKind::Grant => "grant",
            StatementKind::Revoke => "revoke",
            StatementKind::Copy => "copy",
            StatementKind::Call => "call",
            StatementKind::Do => "do",
            StatementKind::Set => "set",
            StatementKind::Show => "show",
            StatementKind::Reset => "reset",
            StatementKind::Begin => "begin",
            StatementKind::Commit => "commit",
            StatementKind::Rollback => "rollback",
            StatementKind::Savepoint => "savepoint",
            StatementKind::Prepare => "prepare",
            StatementKind::Execute => "execute",
            StatementKind::Deallocate => "deallocate",
            StatementKind::Declare => "declare",
            StatementKind::Fetch => "fetch",
            StatementKind::Close => "close",
            StatementKind::Listen => "listen",
            StatementKind::Notify => "notify",
            StatementKind::Unlisten => "unlisten",
            StatementKind::Explain => "explain",
            StatementKind::Vacuum => "vacuum",
            StatementKind::Analyze => "analyze",
            StatementKind::Lock => "lock",
            StatementKind::Discard => "discard",
            StatementKind::Comment => "comment",
            StatementKind::Unparsed => "unparsed",
            StatementKind::Other => "other",
        }
    }
}

/// How a statement reached the server, in any protocol. The serde names
/// are the recording format's (`simple`, `extended`, `function_call`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Submission {
    /// Statement text to run at once, possibly several statements
    /// (PostgreSQL `Query`, MySQL `COM_QUERY`).
    #[serde(rename = "simple")]
    Text,
    /// A statement prepared once and executed by name or id (PostgreSQL
    /// `Parse`/`Bind`/`Execute`, MySQL `COM_STMT_PREPARE`/`COM_STMT_EXECUTE`).
    #[serde(rename = "extended")]
    Prepared,
    /// A server function called by its id, with no SQL text (PostgreSQL's
    /// fast-path `FunctionCall`).
    #[serde(rename = "function_call")]
    FunctionCall,
}

/// The decision for one statement (or one whole multi-statement Query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it upstream.
    Allow,
    /// Refuse it in-protocol (see [`crate::Refusal::denied`]); nothing
    /// reaches the server.
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
    /// The rule's `max_rows`: the denial applies only when the statement
    /// touches more rows than this. A driver that can run the statement as
    /// a dry run (and roll it back) counts them and asks
    /// [`SessionGovernor::judge_counted`](crate::SessionGovernor::judge_counted)
    /// for the final verdict; a driver that cannot treats the denial as
    /// unconditional (fail closed).
    pub max_rows: Option<u64>,
}

impl Denial {
    /// An unconditional denial.
    pub fn new(rule: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            rule: rule.into(),
            message: message.into(),
            max_rows: None,
        }
    }
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
    /// The rule's `max_rows`: hold only statements that touch more rows
    /// than this (counted by a dry run, as for [`Denial::max_rows`]; a
    /// driver that cannot dry-run holds every matching statement).
    pub max_rows: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::StatementKind;

    #[test]
    fn names_match_the_policy_file_names() {
        for kind in [
            StatementKind::Select,
            StatementKind::Drop,
            StatementKind::Unparsed,
            StatementKind::Other,
        ] {
            let serde_name = serde_json::to_value(kind).expect("serializes");
            assert_eq!(serde_name, kind.as_str());
        }
    }
}
