//! How a [`Refusal`] reads in PostgreSQL: one place maps each reason to its
//! SQLSTATE.

use hoop_core::{Refusal, RefusalReason};
use hoop_proto_pg::notice::{ErrorSpec, Severity};

/// The SQLSTATE a refusal carries.
pub fn sqlstate(reason: RefusalReason) -> &'static str {
    match reason {
        // insufficient_privilege: what PostgreSQL itself says when a role
        // may not do something.
        RefusalReason::Denied
        | RefusalReason::HoldDenied
        | RefusalReason::HoldTimedOut
        | RefusalReason::HoldWithdrawn
        | RefusalReason::CannotMask => "42501",
        // query_canceled: the client's own cancel of its held statement.
        RefusalReason::Cancelled => "57014",
        // io_error: the recording could not be written.
        RefusalReason::RecordingFailed => "58030",
    }
}

/// A refusal as an ERROR (the session goes on).
pub fn error(refusal: &Refusal) -> ErrorSpec {
    spec(refusal, Severity::Error)
}

/// A refusal as FATAL (the session ends).
pub fn fatal(refusal: &Refusal) -> ErrorSpec {
    spec(refusal, Severity::Fatal)
}

fn spec(refusal: &Refusal, severity: Severity) -> ErrorSpec {
    ErrorSpec {
        severity,
        code: sqlstate(refusal.reason).to_owned(),
        message: refusal.message.clone(),
        detail: refusal.detail.clone(),
        hint: refusal.hint.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_read_as_insufficient_privilege() {
        let r = Refusal::denied(&hoop_core::Denial::new("no-drop", "DROP is not allowed"));
        let e = error(&r);
        assert_eq!(e.code, "42501");
        assert_eq!(e.severity, Severity::Error);
        assert_eq!(e.message, "DROP is not allowed");
        assert_eq!(
            e.detail.as_deref(),
            Some("Denied by hoop policy rule \"no-drop\".")
        );
        assert_eq!(fatal(&Refusal::recording_failed("disk full")).code, "58030");
        assert_eq!(sqlstate(RefusalReason::Cancelled), "57014");
    }
}
