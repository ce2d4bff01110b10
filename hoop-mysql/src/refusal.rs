//! A [`Refusal`] as a MySQL ERR packet: the one place that decides the
//! error number and SQLSTATE the client sees for each reason.

use hoop_core::{Refusal, RefusalReason};
use hoop_proto_mysql::err::{ErrPacket, codes};

/// The ERR packet for a refusal: `hoop: <message> (<detail>) <hint>`.
pub fn err(refusal: &Refusal) -> ErrPacket {
    let code = match refusal.reason {
        // ER_SPECIFIC_ACCESS_DENIED_ERROR: the client may not run it.
        RefusalReason::Denied | RefusalReason::HoldDenied => codes::ACCESS_DENIED,
        // ER_STATEMENT_TIMEOUT.
        RefusalReason::HoldTimedOut => codes::TIMEOUT,
        // ER_QUERY_INTERRUPTED, what KILL QUERY gives.
        RefusalReason::HoldWithdrawn | RefusalReason::Cancelled => codes::QUERY_INTERRUPTED,
        RefusalReason::CannotMask | RefusalReason::RecordingFailed => codes::UNKNOWN,
    };
    let mut message = format!("hoop: {}", refusal.message);
    if let Some(detail) = &refusal.detail {
        message.push(' ');
        message.push_str(detail);
    }
    if let Some(hint) = &refusal.hint {
        message.push(' ');
        message.push_str(hint);
    }
    ErrPacket::from_code(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoop_core::Denial;

    #[test]
    fn a_denial_names_its_rule() {
        let e = err(&Refusal::denied(&Denial::new(
            "no-drops",
            "drops are not allowed",
        )));
        assert_eq!(e.code, 1227);
        let m = String::from_utf8_lossy(&e.message).into_owned();
        assert!(m.starts_with("hoop: drops are not allowed"), "{m}");
        assert!(m.contains("no-drops"), "{m}");
    }
}
