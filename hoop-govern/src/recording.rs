//! What the session's recording is told, and how statement texts are
//! masked for recordings and approvers.

use std::{borrow::Cow, sync::Arc};

use hoop_core::{HoldOutcome, SessionEvent};
use hoop_mask::MaskRules;
use hoop_record::{HoldState, SessionRecorder};
use hoop_sql::SqlDialect;

use crate::session::{SessionGovernance, lock};

/// SQL as recordings and approvers see it. When any column is masked,
/// every string literal is replaced by `'[REDACTED:literal]'` (hoop cannot
/// tell which literal is compared with or written into a masked column);
/// then detectors run over the rest. Numbers, identifiers and the
/// statement's shape stay.
pub fn masked_statement(dialect: &dyn SqlDialect, rules: &MaskRules, sql: &str) -> String {
    masked_statement_cow(dialect, rules, sql, false).into_owned()
}

/// [`masked_statement`] as the shared text a recording keeps: one
/// allocation, and none for the work when nothing is masked.
/// `without_strings`: the dialect has shown `sql` holds no string literal
/// ([`SqlDialect::fingerprint_noting_strings`]), so there are none to
/// redact.
pub(crate) fn masked_statement_arc(
    dialect: &dyn SqlDialect,
    rules: &MaskRules,
    sql: &str,
    without_strings: bool,
) -> Arc<str> {
    Arc::from(masked_statement_cow(dialect, rules, sql, without_strings).as_ref())
}

pub(crate) fn masked_statement_cow<'a>(
    dialect: &dyn SqlDialect,
    rules: &MaskRules,
    sql: &'a str,
    without_strings: bool,
) -> Cow<'a, str> {
    let literals_redacted = if rules.column_rules().is_empty() || without_strings {
        Cow::Borrowed(sql)
    } else {
        dialect.redact_literals(sql)
    };
    match rules.mask_free_text(&literals_redacted, dialect.echo_patterns()) {
        Some(masked) => Cow::Owned(masked),
        None => literals_redacted,
    }
}

impl SessionGovernance {
    /// [`hoop_core::SessionGovernor::observe`] for the events that record
    /// or update state.
    #[inline(never)]
    pub(crate) fn observe_event(&mut self, event: SessionEvent<'_>) {
        match event {
            SessionEvent::CommandComplete { tag, rows } => {
                lock(&self.recorder).result(Some(tag), rows.unwrap_or(0), None);
            }
            SessionEvent::ServerError { sqlstate, .. } => {
                lock(&self.recorder).result(None, 0, sqlstate);
            }
            SessionEvent::HoldDecided { id, outcome } => {
                let (state, by, reason) = match outcome {
                    HoldOutcome::Approved { by } => (HoldState::Approved, Some(by.as_str()), None),
                    HoldOutcome::Denied { by, reason } => {
                        (HoldState::Denied, Some(by.as_str()), reason.as_deref())
                    }
                    HoldOutcome::TimedOut => (HoldState::Timeout, None, None),
                    HoldOutcome::Withdrawn => (HoldState::Withdrawn, None, None),
                };
                if lock(&self.recorder).hold(id, state, by, reason).is_err() {
                    self.recording_failed();
                }
            }
            SessionEvent::Started { identity } => {
                self.identity = identity.clone();
                self.identity_changed();
            }
            SessionEvent::Ended { reason } => {
                let recorder =
                    std::mem::replace(&mut *lock(&self.recorder), SessionRecorder::disabled());
                recorder.end(reason);
            }
            SessionEvent::Bound { statement } => {
                // The first execution is the prepare already recorded (with
                // its verdict); every later one is recorded as a statement of
                // its own, so a recording shows each execution.
                let name = statement.statement_name.unwrap_or_default();
                let Some(prepared) = self.prepared.get_mut(name) else {
                    return;
                };
                prepared.binds += 1;
                if prepared.binds > 1 && self.recording {
                    let sql = match &prepared.masked_sql {
                        Some(sql) if Arc::ptr_eq(&prepared.rules, &self.rules) => sql.clone(),
                        // The masking rules were reloaded since the prepare.
                        _ => {
                            let sql = masked_statement_arc(
                                self.dialect,
                                &self.rules,
                                statement.sql,
                                false,
                            );
                            prepared.masked_sql = Some(sql.clone());
                            prepared.rules = self.rules.clone();
                            sql
                        }
                    };
                    let failed = lock(&self.recorder)
                        .prepared_statement(
                            &sql,
                            statement.submission,
                            &prepared.judged.kinds,
                            &prepared.judged.tables,
                        )
                        .is_err();
                    if failed {
                        self.recording_failed();
                    }
                }
            }
            SessionEvent::Judged { .. }
            | SessionEvent::Sent { .. }
            | SessionEvent::Object { .. }
            | SessionEvent::CopyData { .. } => {}
        }
    }
}
