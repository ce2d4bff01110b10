//! What a client is told when hoop refuses something, in words every
//! protocol shares. Each driver encodes a [`Refusal`] in its own wire
//! format (PostgreSQL: an ErrorResponse with the SQLSTATE for its
//! [`RefusalReason`]; MySQL: an ERR packet with an error number), in one
//! place per driver.

use std::time::Duration;

use crate::{Denial, HoldOutcome, HoldRequirement};

/// Why hoop refused. Drivers map each reason to their protocol's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// A policy rule denied the statement.
    Denied,
    /// An approver denied a held statement.
    HoldDenied,
    /// Nobody decided on a held statement in time.
    HoldTimedOut,
    /// A held statement was withdrawn (hoop shut down, or the hold was lost).
    HoldWithdrawn,
    /// The client cancelled its own held statement.
    Cancelled,
    /// A result could not be masked, so it must not reach the client.
    CannotMask,
    /// The session's recording failed, and the policy requires one.
    RecordingFailed,
}

/// A refusal: the reason, and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// What happened, in one sentence.
    pub message: String,
    /// More about it.
    pub detail: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Refusal {
    /// A refusal with only a message.
    pub fn new(reason: RefusalReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// Adds a detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A statement denied by a policy rule.
    pub fn denied(denial: &Denial) -> Self {
        Self::new(RefusalReason::Denied, denial.message.clone())
            .with_detail(format!("Denied by hoop policy rule \"{}\".", denial.rule))
    }

    /// A held statement that will not run: how its hold `id` ended.
    /// `None` for an approval (the statement runs). `cancelled` tells a
    /// withdrawal the client asked for from one it did not.
    pub fn hold_ended(
        id: &str,
        outcome: &HoldOutcome,
        requirement: &HoldRequirement,
        cancelled: bool,
    ) -> Option<Self> {
        let never_ran = || {
            format!(
                "The statement was held by hoop policy rule \"{}\" and never ran.",
                requirement.rule
            )
        };
        Some(match outcome {
            HoldOutcome::Approved { .. } => return None,
            HoldOutcome::Denied { by, reason } => Self::new(
                RefusalReason::HoldDenied,
                format!(
                    "hold {id} was denied by {by}{}",
                    reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            )
            .with_detail(never_ran()),
            HoldOutcome::TimedOut => Self::new(
                RefusalReason::HoldTimedOut,
                format!(
                    "hold {id} timed out after {} without a decision",
                    format_duration(requirement.timeout)
                ),
            )
            .with_detail(never_ran()),
            HoldOutcome::Withdrawn if cancelled => Self::new(
                RefusalReason::Cancelled,
                "canceling statement due to user request",
            )
            .with_detail(format!("hold {id} was withdrawn; the statement never ran.")),
            HoldOutcome::Withdrawn => Self::new(
                RefusalReason::HoldWithdrawn,
                format!("hold {id} was withdrawn"),
            )
            .with_detail(never_ran()),
        })
    }

    /// A result that cannot be masked (`why` says which column and why).
    pub fn cannot_mask(why: impl std::fmt::Display) -> Self {
        Self::new(
            RefusalReason::CannotMask,
            format!("hoop cannot mask this result: {why}"),
        )
        .with_hint(
            "Request text result format for masked columns, or set policy.binary_unmaskable: null.",
        )
    }

    /// A session whose required recording failed.
    pub fn recording_failed(why: impl std::fmt::Display) -> Self {
        Self::new(
            RefusalReason::RecordingFailed,
            "hoop cannot record this session, and its policy requires a recording",
        )
        .with_detail(why.to_string())
        .with_hint("Fix recording.dir (space, permissions) or set recording.on_error: continue.")
    }
}

/// What a held client is told while it waits, for protocols that can show
/// it (PostgreSQL notices, MariaDB progress reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldNotice {
    /// The message.
    pub message: String,
    /// A hint, when there is one.
    pub hint: Option<String>,
}

impl HoldNotice {
    /// The notice when hold `id` starts.
    pub fn started(id: &str, requirement: &HoldRequirement) -> Self {
        Self {
            message: format!(
                "hold {id}: {} (rule \"{}\"); waiting for approval, approve with `hoop holds approve {id}`",
                requirement.message, requirement.rule
            ),
            hint: Some(format!(
                "An approver can run `hoop holds approve {id}` or `hoop holds deny {id}`. Without a decision it is denied after {}.",
                format_duration(requirement.timeout)
            )),
        }
    }

    /// A reminder, `waited` into hold `id`.
    pub fn reminder(id: &str, waited: Duration) -> Self {
        Self {
            message: format!(
                "hold {id}: still waiting for approval after {}s; approve with `hoop holds approve {id}`",
                waited.as_secs()
            ),
            hint: None,
        }
    }
}

fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement() -> HoldRequirement {
        HoldRequirement {
            rule: "orders-delete".into(),
            message: "deleting orders needs approval".into(),
            timeout: Duration::from_mins(5),
            approvers: Vec::new(),
            min_approvals: 1,
            max_rows: None,
        }
    }

    #[test]
    fn hold_outcomes_read_as_before() {
        let r = requirement();
        assert_eq!(
            Refusal::hold_ended("h1", &HoldOutcome::Approved { by: "a".into() }, &r, false),
            None
        );
        let denied = Refusal::hold_ended(
            "h1",
            &HoldOutcome::Denied {
                by: "alice".into(),
                reason: Some("not today".into()),
            },
            &r,
            false,
        )
        .expect("refused");
        assert_eq!(denied.reason, RefusalReason::HoldDenied);
        assert_eq!(denied.message, "hold h1 was denied by alice: not today");
        assert_eq!(
            denied.detail.as_deref(),
            Some("The statement was held by hoop policy rule \"orders-delete\" and never ran.")
        );
        let timed_out =
            Refusal::hold_ended("h1", &HoldOutcome::TimedOut, &r, false).expect("refused");
        assert_eq!(
            timed_out.message,
            "hold h1 timed out after 5m without a decision"
        );
        let cancelled =
            Refusal::hold_ended("h1", &HoldOutcome::Withdrawn, &r, true).expect("refused");
        assert_eq!(cancelled.reason, RefusalReason::Cancelled);
        let withdrawn =
            Refusal::hold_ended("h1", &HoldOutcome::Withdrawn, &r, false).expect("refused");
        assert_eq!(withdrawn.reason, RefusalReason::HoldWithdrawn);
    }

    #[test]
    fn a_denial_names_its_rule() {
        let r = Refusal::denied(&Denial::new("no-drop", "DROP is not allowed"));
        assert_eq!(r.reason, RefusalReason::Denied);
        assert_eq!(r.message, "DROP is not allowed");
        assert_eq!(
            r.detail.as_deref(),
            Some("Denied by hoop policy rule \"no-drop\".")
        );
    }
}
