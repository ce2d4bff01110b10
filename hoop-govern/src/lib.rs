//! Governance wired into any protocol driver: the [`hoop_core`] hooks
//! implemented by joining the live policy (judging), the masking engine
//! (rows, echoed text), the recorder and the hold registry.
//!
//! Nothing here knows a wire format. A session's SQL is read in its
//! protocol's dialect ([`hoop_sql::dialect_for`]), result columns come as
//! [`hoop_core::ResultColumn`]s whose keys the protocol's
//! [`hoop_core::ColumnResolver`] resolves, and refusals go back as
//! [`hoop_core::Refusal`]s for the driver to encode.
//!
//! - [`Governors`] makes one [`session::SessionGovernance`] per session.
//! - [`session`]: the per-session state and the hooks.
//! - [`judgement`]: judgements cached by literal-free fingerprint.
//! - [`rows`]: the row rewriter (masking, and rows for the recording).
//! - [`recording`]: what the recorder is told.
//! - [`holds`]: the [`hoop_core::HoldBroker`] backed by the hold registry.
//!
//! Fail-closed choices made here (documented in `docs/policy.md`):
//! - a statement that would copy a masked column somewhere masking cannot
//!   follow (`INSERT … SELECT ssn`, `CREATE TABLE AS`, `COPY … TO 'file'`)
//!   is denied under the rule name `mask.exfiltration`;
//! - while masking is active, `ALTER TABLE` of a table a column rule
//!   names (or of a column a bare rule names), and renames to or from such
//!   names, are denied under `mask.schema_change`;
//! - result columns whose source cannot be resolved are masked wherever
//!   lineage cannot prove them clean;
//! - a session that started while the policy masked nothing is not
//!   inspected; if a reload later adds masking, its statements are denied
//!   until it reconnects;
//! - a statement that filters, joins, groups or sorts by a column whose
//!   mask rule says `predicates: deny` (or `hold`) is denied (held), under
//!   that mask rule's name (module `predicates`);
//! - while masking is active, error and notice text raised by code running
//!   in the server (`RAISE`, errors inside functions and `DO` blocks) is
//!   masked whole, as unknown;
//! - after a `max_rows` dry run, the statement is judged again with its
//!   count ([`hoop_core::SessionGovernor::judge_counted`]).
//! - a recording that cannot be written closes the session
//!   (`recording.on_error: close_session`, the default).

#![forbid(unsafe_code)]

pub mod holds;
pub mod judgement;
mod predicates;
pub mod promotions;
pub mod recording;
pub mod rows;
pub mod session;

use std::sync::Arc;

use hoop_config::{RecordRows, RecordingOnError};
use hoop_core::{
    ColumnResolver, GovernorFactory, Refusal, SessionGovernor, SessionIdentity, metrics::metrics,
};
use hoop_mask::{
    BinaryUnmaskable, ColumnRef, ColumnRule, DetectorKind, DetectorRule, MaskRules, Strategy,
};
use hoop_policy::{Policy, reload::PolicyHandle};
use hoop_record::{Recorder, SessionRecorder};
use tracing::warn;

pub use holds::RegistryBroker;
pub use recording::masked_statement;
pub use session::SessionGovernance;

/// Rule name for statements denied because they would move masked data
/// where masking cannot follow it.
pub const EXFILTRATION_RULE: &str = "mask.exfiltration";

/// The rule name reported when, while masking is active, a statement
/// alters or renames a table or column that masking protects.
pub const SCHEMA_CHANGE_RULE: &str = "mask.schema_change";

/// Makes one [`SessionGovernance`] per session.
pub struct Governors {
    policy: PolicyHandle,
    recorder: Recorder,
    rows: RecordRows,
    /// Detector findings promoted to column rules, shared by every session.
    promotions: Arc<promotions::Promotions>,
}

impl Governors {
    /// Governance by the live `policy`, recording to `recorder` with `rows`.
    pub fn new(policy: PolicyHandle, recorder: Recorder, rows: RecordRows) -> Self {
        Self {
            policy,
            recorder,
            rows,
            promotions: Arc::default(),
        }
    }
}

/// Compiles the mask rules that apply to one session under one policy.
pub fn mask_rules(policy: &Policy, identity: &SessionIdentity) -> Arc<MaskRules> {
    let mut column_rules = Vec::new();
    let mut detector_rules = Vec::new();
    for rule in policy.mask_rules_for(identity) {
        let keep_last = rule.keep_last.unwrap_or(4) as usize;
        if !rule.columns.is_empty() {
            column_rules.push(ColumnRule {
                name: rule.name.clone(),
                columns: rule
                    .columns
                    .iter()
                    .map(|c| ColumnRef {
                        schema: c.schema.clone(),
                        table: c.table.clone(),
                        column: c.column.clone(),
                    })
                    .collect(),
                strategy: rule.strategy,
                keep_last,
            });
        }
        if !rule.detectors.is_empty() {
            detector_rules.push(DetectorRule {
                name: rule.name.clone(),
                detectors: rule
                    .detectors
                    .iter()
                    .map(|d| match d {
                        hoop_policy::Detector::Builtin(b) => DetectorKind::Builtin(*b),
                        hoop_policy::Detector::Custom { name, regex } => DetectorKind::Custom {
                            name: name.clone(),
                            regex: regex.clone(),
                        },
                    })
                    .collect(),
                strategy: rule.strategy,
                keep_last,
            });
        }
    }
    let key = policy
        .hash_key()
        .map(|k| k.bytes().to_vec())
        .unwrap_or_default();
    let binary = match policy.binary_unmaskable() {
        hoop_policy::BinaryUnmaskable::Refuse => BinaryUnmaskable::Refuse,
        hoop_policy::BinaryUnmaskable::Null => BinaryUnmaskable::Null,
    };
    match MaskRules::new(column_rules, detector_rules, key, binary) {
        Ok(rules) => Arc::new(rules),
        Err(e) => {
            // Policy validation rejects these cases; if one slips through,
            // mask everything that can be masked rather than nothing.
            warn!(error = %e, "mask rules could not be compiled; redacting every column");
            Arc::new(
                MaskRules::new(
                    vec![ColumnRule {
                        name: "mask.invalid".into(),
                        columns: vec![ColumnRef {
                            schema: None,
                            table: None,
                            column: "*".into(),
                        }],
                        strategy: Strategy::Redact,
                        keep_last: 0,
                    }],
                    Vec::new(),
                    Vec::new(),
                    BinaryUnmaskable::Refuse,
                )
                .unwrap_or_else(|_| unreachable!("a redact-only rule set compiles")),
            )
        }
    }
}

fn has_masking(rules: &MaskRules) -> bool {
    !rules.column_rules().is_empty() || !rules.detector_rules().is_empty()
}

impl GovernorFactory for Governors {
    fn session(
        &self,
        identity: &SessionIdentity,
        columns: Arc<dyn ColumnResolver>,
    ) -> Box<dyn SessionGovernor> {
        let (recorder, fatal) = match self.recorder.open_session(identity) {
            Ok(r) => (r, None),
            Err(e) => {
                metrics()
                    .connection_errors_total
                    .with_label_values(&["recording"])
                    .inc();
                warn!(session = %identity, error = %e, "cannot open the session's recording");
                let fatal = (self.recorder.on_error() == RecordingOnError::CloseSession)
                    .then(|| Refusal::recording_failed(&e));
                (SessionRecorder::disabled(), fatal)
            }
        };
        Box::new(
            SessionGovernance::new(
                identity,
                &self.policy,
                columns,
                recorder,
                self.rows,
                self.recorder.on_error(),
                fatal,
            )
            .with_promotions(self.promotions.clone()),
        )
    }
}
