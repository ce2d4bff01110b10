//! The row rewriter for one result set: masking by its [`MaskPlan`], and
//! the rows as sent, for a recording that keeps them (`rows: full`).

use std::sync::Arc;

use hoop_core::{Refusal, RowEncoder, RowRewrite, RowRewriter, RowValues, metrics::metrics};
use hoop_mask::MaskPlan;
use hoop_policy::Policy;
use hoop_record::MaskedRow;
use tracing::warn;

use crate::{
    promotions::Promotions,
    session::{SharedRecorder, lock},
};

/// Where a result's detector findings go (see [`crate::promotions`]).
pub(crate) struct Promoter {
    pub(crate) promotions: Arc<Promotions>,
    /// The policy the plan's rules came from.
    pub(crate) policy: Arc<Policy>,
    /// The session, for the log.
    pub(crate) session: String,
    /// The session's recording, when it has one.
    pub(crate) recorder: Option<SharedRecorder>,
}

/// Masks (and records) the rows of one result set.
pub(crate) struct RowMasking {
    plan: Option<MaskPlan>,
    recorder: Option<SharedRecorder>,
    promoter: Option<Promoter>,
    /// The values of a rewritten row, kept for the recording.
    sent: Vec<Option<Vec<u8>>>,
}

impl RowMasking {
    pub(crate) fn new(
        plan: Option<MaskPlan>,
        recorder: Option<SharedRecorder>,
        promoter: Option<Promoter>,
    ) -> Self {
        Self {
            plan,
            recorder,
            promoter,
            sent: Vec::new(),
        }
    }

    /// Promotes the table columns detectors found values in.
    fn flush_findings(&mut self) {
        let (Some(plan), Some(promoter)) = (&mut self.plan, &self.promoter) else {
            return;
        };
        for finding in plan.take_findings() {
            let Some(rule) = plan.rules().detector_rules().get(finding.rule) else {
                continue;
            };
            let column = &finding.column;
            if !promoter
                .promotions
                .promote(&promoter.policy, &rule.name, column)
            {
                continue;
            }
            let name = format!(
                "{}{}.{}",
                column
                    .schema
                    .as_deref()
                    .map(|s| format!("{s}."))
                    .unwrap_or_default(),
                column.table,
                column.column
            );
            metrics()
                .detector_promotions_total
                .with_label_values(&[&rule.name])
                .inc();
            warn!(
                session = %promoter.session,
                rule = %rule.name,
                column = %name,
                "a detector found a value in this column: it is masked as a column rule from now on (fragments included) until the policy is reloaded"
            );
            if let Some(recorder) = &promoter.recorder {
                lock(recorder).promotion(&rule.name, &name);
            }
        }
    }

    fn flush_counts(&mut self) {
        let Some(plan) = &mut self.plan else {
            return;
        };
        let m = &metrics().masked_values_total;
        for (rule, n) in plan.take_counts() {
            if n > 0 {
                m.with_label_values(&[&*rule]).inc_by(n);
            }
        }
    }
}

impl Drop for RowMasking {
    fn drop(&mut self) {
        self.flush_counts();
        self.flush_findings();
    }
}

/// Forwards pushed values to the driver's encoder and keeps a copy.
struct Tee<'a> {
    out: &'a mut dyn RowEncoder,
    kept: &'a mut Vec<Option<Vec<u8>>>,
}

impl RowEncoder for Tee<'_> {
    fn push(&mut self, value: Option<&[u8]>) {
        self.kept.push(value.map(<[u8]>::to_vec));
        self.out.push(value);
    }
}

impl RowRewriter for RowMasking {
    fn rewrite_row(&mut self, row: &dyn RowValues, out: &mut dyn RowEncoder) -> RowRewrite {
        let rewritten = match (&mut self.plan, &self.recorder) {
            (None, _) => false,
            (Some(plan), None) => match plan.rewrite_row(row, out) {
                Ok(changed) => changed,
                Err(refusal) => return RowRewrite::Refuse(Refusal::cannot_mask(refusal)),
            },
            (Some(plan), Some(_)) => {
                self.sent.clear();
                let mut tee = Tee {
                    out,
                    kept: &mut self.sent,
                };
                match plan.rewrite_row(row, &mut tee) {
                    Ok(changed) => changed,
                    Err(refusal) => return RowRewrite::Refuse(Refusal::cannot_mask(refusal)),
                }
            }
        };
        if let Some(sink) = &self.recorder {
            // The row exactly as the client gets it.
            let values: Vec<Option<&[u8]>> = if rewritten {
                self.sent.iter().map(Option::as_deref).collect()
            } else {
                (0..row.len()).map(|i| row.get(i)).collect()
            };
            lock(sink).masked_row(MaskedRow::after_masking(&values));
        }
        if rewritten {
            RowRewrite::Rewritten
        } else {
            RowRewrite::Unchanged
        }
    }
}
