//! The row rewriter for one result set: masking by its [`MaskPlan`], and
//! the rows as sent, for a recording that keeps them (`rows: full`).

use hoop_core::{Refusal, RowEncoder, RowRewrite, RowRewriter, RowValues, metrics::metrics};
use hoop_mask::MaskPlan;
use hoop_record::MaskedRow;

use crate::session::{SharedRecorder, lock};

/// Masks (and records) the rows of one result set.
pub(crate) struct RowMasking {
    plan: Option<MaskPlan>,
    recorder: Option<SharedRecorder>,
    /// The values of a rewritten row, kept for the recording.
    sent: Vec<Option<Vec<u8>>>,
}

impl RowMasking {
    pub(crate) fn new(plan: Option<MaskPlan>, recorder: Option<SharedRecorder>) -> Self {
        Self {
            plan,
            recorder,
            sent: Vec::new(),
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
