//! MaskPlan: what to do with each column of one result set, decided once
//! per result description.

use std::sync::Arc;

use hoop_core::{RelationName, ResolvedColumn, ResultColumn, ValueEncoding, ViewDependency};

use super::{
    BinaryUnmaskable, MaskRules, Strategy,
    detect::DetectorMatch,
    lineage::{ColumnLineage, Lineage, TableName},
    row::mask_value,
};

/// From the catalog's view dependencies, the views that read a masked
/// column, directly or through other views, each with the rule that masks it
/// (for [`MaskRules::set_masked_relations`]).
pub fn masked_views(rules: &MaskRules, deps: &[ViewDependency]) -> Vec<(TableName, usize)> {
    let name = |r: &RelationName| TableName {
        schema: r.schema.clone(),
        name: r.name.clone(),
    };
    let mut masked: Vec<(TableName, usize)> = Vec::new();
    // Fixed point: views over views.
    loop {
        let mut grew = false;
        for dep in deps {
            let view = name(&dep.view);
            if masked.iter().any(|(v, _)| *v == view) {
                continue;
            }
            let table = name(&dep.table);
            let via_view = masked.iter().find(|(v, _)| *v == table).map(|&(_, r)| r);
            let schema = table.schema.as_deref();
            let rule = via_view.or_else(|| {
                rules.column_rules.iter().position(|r| {
                    r.columns.iter().any(|c| match &dep.column {
                        Some(col) => c.matches(schema, &table.name, col),
                        None => c.matches_table(schema, &table.name),
                    })
                })
            });
            if let Some(rule) = rule {
                masked.push((view, rule));
                grew = true;
            }
        }
        if !grew {
            return masked;
        }
    }
}

/// Why a row cannot be forwarded. The driver answers the client with its
/// protocol's error (and stops forwarding that result set).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskRefusal {
    /// A masked column is in a binary encoding hoop cannot rewrite.
    #[error(
        "column \"{column}\" is masked by policy, but its type ({type_name}) cannot be masked in binary format; request this column in text format"
    )]
    BinaryUnmaskable {
        /// Output column name.
        column: String,
        /// Its type, as the protocol names it.
        type_name: String,
    },
    /// The row does not have as many values as the result has columns.
    #[error("a row has {found} values but the result has {expected} columns")]
    ColumnCount {
        /// Columns in the result description.
        expected: usize,
        /// Values in the row.
        found: usize,
    },
}

/// What happens to one column's values.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Forward (after detectors, when `detect`).
    Keep,
    /// Replace every non-NULL value.
    Mask {
        strategy: Strategy,
        kind: Arc<str>,
        keep_last: usize,
        counter: usize,
        /// The replacement, made once here, when it does not depend on the
        /// value (`redact`): each row then only copies it.
        fixed: Option<Box<[u8]>>,
    },
    /// Refuse the row when a value is present.
    Refuse,
}

#[derive(Debug, Clone)]
pub(crate) struct ColumnPlan {
    pub(crate) name: String,
    pub(crate) type_name: String,
    pub(crate) encoding: ValueEncoding,
    pub(crate) action: Action,
    pub(crate) detect: bool,
    /// The table column its values are (from the catalog), when detectors
    /// run over it: a detector's finding there is reported
    /// ([`MaskPlan::take_findings`]).
    pub(crate) source: Option<ResolvedColumn>,
}

impl ColumnPlan {
    /// The column's fixed replacement (only asked for when it has one;
    /// empty, never the value, otherwise).
    pub(crate) fn fixed(&self) -> &[u8] {
        match &self.action {
            Action::Mask {
                fixed: Some(fixed), ..
            } => fixed,
            _ => &[],
        }
    }
}

/// A detector rule found a value in a result column that is a table's
/// column (not computed): that column holds such values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The table column.
    pub column: ResolvedColumn,
    /// Index into [`MaskRules::detector_rules`].
    pub rule: usize,
}

/// Values masked per rule since the last [`MaskPlan::take_counts`]:
/// `(rule name, count)`, only rules with a count. `unknown` counts columns
/// masked because their lineage could not be determined.
pub type MaskCounts = Vec<(Arc<str>, u64)>;

/// The per-column actions for one result set. Build once per
/// RowDescription, then call [`MaskPlan::rewrite_row`] for every DataRow.
#[derive(Debug)]
pub struct MaskPlan {
    pub(crate) rules: Arc<MaskRules>,
    pub(crate) columns: Vec<ColumnPlan>,
    /// Counter names: column rules, then detector rules, then `unknown`.
    pub(crate) counter_names: Vec<Arc<str>>,
    pub(crate) counts: Vec<u64>,
    pub(crate) matches: Vec<DetectorMatch>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) noop: bool,
    /// (column index, detector rule) pairs found since the last
    /// [`MaskPlan::take_findings`] (or ever, for `reported`).
    pub(crate) found: Vec<(usize, usize)>,
    pub(crate) reported: Vec<(usize, usize)>,
}

/// What a column is masked as, before the binary-format check.
fn column_mask(
    rules: &MaskRules,
    lineage: &ColumnLineage,
    resolved: Option<&ResolvedColumn>,
) -> Option<(Strategy, usize, bool)> {
    // (strategy, counter index, is_unknown)
    let unknown = rules.column_rules.len() + rules.detector_rules.len();
    let by_source =
        resolved.and_then(|r| rules.column_rule_for(r.schema.as_deref(), &r.table, &r.column));
    let by_lineage = match lineage {
        ColumnLineage::Clean => None,
        ColumnLineage::Masked { rule, direct } => {
            let strategy = rules
                .column_rules
                .get(*rule)
                .map_or(Strategy::Redact, |r| r.strategy);
            Some((
                if *direct {
                    strategy
                } else {
                    strategy.for_derived_value()
                },
                *rule,
                false,
            ))
        }
        ColumnLineage::FromTable {
            masked_if_unresolved,
            ..
        } => (resolved.is_none() && *masked_if_unresolved).then_some((
            Strategy::Redact,
            unknown,
            true,
        )),
        ColumnLineage::Unknown => Some((Strategy::Redact, unknown, true)),
    };
    let by_source = by_source.map(|rule| (rules.column_rules[rule].strategy, rule, false));
    match (by_source, by_lineage) {
        (Some(a), Some(b)) => Some(if b.0.strictness() > a.0.strictness() {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

impl MaskPlan {
    /// Decides every column's action. `resolved[i]` is the source of column
    /// `i` as the protocol named it or its catalog resolved it; a shorter
    /// slice means "unresolved" for the missing columns.
    pub fn new(
        rules: Arc<MaskRules>,
        lineage: &Lineage,
        columns: &[ResultColumn],
        resolved: &[Option<ResolvedColumn>],
    ) -> MaskPlan {
        let n_col = rules.column_rules.len();
        let mut counter_names: Vec<Arc<str>> = rules
            .column_rules
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .chain(
                rules
                    .detector_rules
                    .iter()
                    .map(|r| Arc::from(r.name.as_str())),
            )
            .collect();
        counter_names.push(Arc::from("unknown"));
        let detectors = !rules.detectors.is_empty();
        let plans: Vec<ColumnPlan> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let encoding = c.encoding;
                let source = resolved.get(i).and_then(Option::as_ref);
                let action = match column_mask(&rules, lineage.column(i), source) {
                    None => Action::Keep,
                    Some((strategy, counter, _)) => {
                        let (kind, keep_last) = if counter < n_col {
                            let r = &rules.column_rules[counter];
                            (counter_names[counter].clone(), r.keep_last)
                        } else {
                            (counter_names[counter].clone(), 0)
                        };
                        if encoding == ValueEncoding::Opaque && strategy != Strategy::Null {
                            match rules.binary_unmaskable {
                                BinaryUnmaskable::Refuse => Action::Refuse,
                                BinaryUnmaskable::Null => Action::Mask {
                                    strategy: Strategy::Null,
                                    kind,
                                    keep_last,
                                    counter,
                                    fixed: None,
                                },
                            }
                        } else {
                            let fixed = (strategy == Strategy::Redact).then(|| {
                                let mut out = Vec::new();
                                mask_value(
                                    strategy,
                                    &kind,
                                    keep_last,
                                    &rules.hash_key,
                                    encoding,
                                    &[],
                                    &mut out,
                                );
                                out.into_boxed_slice()
                            });
                            Action::Mask {
                                strategy,
                                kind,
                                keep_last,
                                counter,
                                fixed,
                            }
                        }
                    }
                };
                let detect = detectors
                    && encoding != ValueEncoding::Opaque
                    && matches!(action, Action::Keep)
                    && rules.detectors.can_match(c.content);
                ColumnPlan {
                    name: c.name.clone(),
                    type_name: c.type_name.clone().into_owned(),
                    encoding,
                    detect,
                    action,
                    source: source.filter(|_| detect).cloned(),
                }
            })
            .collect();
        let noop = plans
            .iter()
            .all(|p| matches!(p.action, Action::Keep) && !p.detect);
        let counts = vec![0; counter_names.len()];
        MaskPlan {
            rules,
            columns: plans,
            counter_names,
            counts,
            matches: Vec::new(),
            scratch: Vec::new(),
            noop,
            found: Vec::new(),
            reported: Vec::new(),
        }
    }

    /// Nothing in this result set can ever be rewritten: the caller may
    /// skip [`MaskPlan::rewrite_row`] entirely.
    pub fn is_noop(&self) -> bool {
        self.noop
    }

    /// Output columns masked whole (for the recording's result summary).
    pub fn masked_columns(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|c| !matches!(c.action, Action::Keep))
            .map(|c| c.name.as_str())
    }

    /// The rules the plan was made from.
    pub fn rules(&self) -> &MaskRules {
        &self.rules
    }

    /// Whether detectors run over a table column of this result (so
    /// [`MaskPlan::take_findings`] may report something).
    pub fn may_find(&self) -> bool {
        self.columns.iter().any(|c| c.source.is_some())
    }

    /// The table columns detectors found values in since the last call,
    /// each (column, rule) pair reported once per plan.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        let mut out = Vec::new();
        for pair @ (i, rule) in std::mem::take(&mut self.found) {
            if self.reported.contains(&pair) {
                continue;
            }
            self.reported.push(pair);
            if let Some(column) = self.columns.get(i).and_then(|c| c.source.clone()) {
                out.push(Finding { column, rule });
            }
        }
        out
    }

    /// Values masked per rule since the last call, then reset. Feed them to
    /// `hoop_masked_values_total{rule}`.
    pub fn take_counts(&mut self) -> MaskCounts {
        let mut out = Vec::new();
        for (name, count) in self.counter_names.iter().zip(self.counts.iter_mut()) {
            if *count > 0 {
                out.push((name.clone(), *count));
                *count = 0;
            }
        }
        out
    }
}
