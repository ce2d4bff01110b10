//! Inference through predicates: statements that filter, join, group or
//! sort by a masked column, refused or held as the mask rule's
//! `predicates: deny | hold` says (`allow`, the default, lets them run).
//!
//! The check runs over a rule set of its own: only the column rules whose
//! `predicates` is not `allow`, each given a stand-in strategy that ranks
//! `deny` above `hold` (lineage keeps the strictest rule when one
//! expression reads several), with the same view dependencies as masking.
//! A predicate that reads something lineage cannot trace counts as reading
//! every restricted rule's column (fail closed).

use std::sync::Arc;

use hoop_core::{Denial, HoldRequirement, SessionIdentity, Verdict, ViewDependency};
use hoop_mask::{BinaryUnmaskable, ColumnRef, ColumnRule, MaskRules, Strategy, predicate_reads};
use hoop_policy::{Policy, PredicateAction};
use hoop_sql::ParsedSql;

/// The column rules a session's predicates are checked against.
pub(crate) struct PredicateGuard {
    /// Restricted column rules only, with stand-in strategies.
    rules: Arc<MaskRules>,
    /// Per rule of `rules`: its name and action.
    actions: Vec<(String, PredicateAction)>,
}

impl PredicateGuard {
    /// The guard for `identity` under `policy`, or `None` when every column
    /// rule that applies allows predicates.
    pub(crate) fn new(
        policy: &Policy,
        identity: &SessionIdentity,
        views: &[ViewDependency],
    ) -> Option<Self> {
        let mut column_rules = Vec::new();
        let mut actions = Vec::new();
        for rule in policy.mask_rules_for(identity) {
            if rule.columns.is_empty() || rule.predicates == PredicateAction::Allow {
                continue;
            }
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
                // Lineage keeps the strictest strategy: deny outranks hold.
                strategy: if rule.predicates == PredicateAction::Deny {
                    Strategy::Null
                } else {
                    Strategy::Redact
                },
                keep_last: 0,
            });
            actions.push((rule.name.clone(), rule.predicates));
        }
        if column_rules.is_empty() {
            return None;
        }
        let mut rules = MaskRules::new(
            column_rules,
            Vec::new(),
            Vec::new(),
            BinaryUnmaskable::Refuse,
        )
        .ok()?;
        if !views.is_empty() {
            let relations = hoop_mask::masked_views(&rules, views);
            rules.set_masked_relations(relations);
        }
        Some(Self {
            rules: Arc::new(rules),
            actions,
        })
    }

    /// The verdict for a text whose policy verdict is not a denial: a
    /// denial or hold when a predicate reads a restricted column, `None`
    /// when none does; and whether it depends on a number's value (a key
    /// given by position), so that it must not be cached by fingerprint.
    pub(crate) fn judge(&self, parsed: &ParsedSql<'_>) -> (Option<Verdict>, bool) {
        let reads = predicate_reads(parsed, &self.rules);
        (self.verdict(&reads), reads.by_position)
    }

    fn verdict(&self, reads: &hoop_mask::PredicateReads) -> Option<Verdict> {
        if !reads.any() {
            return None;
        }
        // Unknown columns may be any restricted rule's: the strictest.
        let read: Vec<usize> = if reads.unknown {
            (0..self.actions.len()).collect()
        } else {
            reads.rules.clone()
        };
        let pick = |action| {
            read.iter()
                .map(|&i| &self.actions[i])
                .find(|(_, a)| *a == action)
        };
        let what = if reads.unknown {
            "a column hoop cannot trace (it may be masked)"
        } else {
            "a masked column"
        };
        if let Some((name, _)) = pick(PredicateAction::Deny) {
            return Some(Verdict::Deny(Denial::new(
                name.clone(),
                format!(
                    "this statement filters, joins, groups or sorts by {what} (mask rule `{name}`, predicates: deny): its results would reveal the masked values"
                ),
            )));
        }
        let (name, _) = pick(PredicateAction::Hold)?;
        Some(Verdict::Hold(HoldRequirement {
            rule: name.clone(),
            message: format!(
                "this statement filters, joins, groups or sorts by {what} (mask rule `{name}`, predicates: hold)"
            ),
            timeout: hoop_policy::spec::default_hold_timeout(),
            approvers: Vec::new(),
            min_approvals: 1,
            max_rows: None,
        }))
    }
}
