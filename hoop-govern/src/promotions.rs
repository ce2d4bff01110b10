//! Detector findings promoted to column rules.
//!
//! A content detector sees whole values: a card number split into pieces
//! (`substr(card, 1, 8)`, per-character codes) no longer looks like one.
//! So when a detector rule finds a value in a result column that is a
//! table's own column (the catalog resolved it, it is not computed), that
//! column becomes a column rule of the detector rule's name and strategy,
//! for every session the detector rule applies to, for the rest of the
//! policy's life (a reload starts afresh). From then on lineage masks
//! anything computed from the column, fragments included, and the
//! exfiltration, predicate and schema guards cover it like any other masked
//! column.
//!
//! Each promotion is logged (warn), counted in
//! `hoop_detector_promotions_total{rule}`, and recorded in the recording of
//! the session that found it. Promotions live in the process: each agent
//! learns its own.

use std::sync::{
    Arc, Mutex, Weak,
    atomic::{AtomicU64, Ordering},
};

use hoop_core::ResolvedColumn;
use hoop_mask::ColumnRef;
use hoop_policy::Policy;

/// One promoted column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// The detector rule that found it (and whose strategy masks it).
    pub rule: String,
    /// The column.
    pub column: ColumnRef,
}

#[derive(Debug, Default)]
struct Inner {
    /// The policy they were found under.
    policy: Weak<Policy>,
    promoted: Vec<Promoted>,
}

/// The promotions of the live policy, shared by every session.
#[derive(Debug, Default)]
pub struct Promotions {
    inner: Mutex<Inner>,
    /// Bumped on every new promotion (sessions compare it on each
    /// statement, without the lock).
    generation: AtomicU64,
}

/// At most this many columns are promoted per policy (a bound on memory
/// and on the rules every statement is checked against); past it, findings
/// are logged and counted but not promoted.
const MAX_PROMOTED: usize = 1024;

impl Promotions {
    /// Changes whenever a column is promoted.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Promotes `column` for detector rule `rule` under `policy`. `true`
    /// when it is new (the caller logs, counts and records it).
    pub fn promote(&self, policy: &Arc<Policy>, rule: &str, column: &ResolvedColumn) -> bool {
        let promoted = Promoted {
            rule: rule.to_owned(),
            column: ColumnRef {
                schema: column.schema.clone(),
                table: Some(column.table.clone()),
                column: column.column.clone(),
            },
        };
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !std::ptr::eq(inner.policy.as_ptr(), Arc::as_ptr(policy)) {
            // Found under a new policy: the old one's promotions end with it.
            inner.policy = Arc::downgrade(policy);
            inner.promoted.clear();
        }
        if inner.promoted.contains(&promoted) || inner.promoted.len() >= MAX_PROMOTED {
            return false;
        }
        inner.promoted.push(promoted);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// The columns promoted under `policy` (none when they were found under
    /// another one).
    pub fn for_policy(&self, policy: &Arc<Policy>) -> Vec<Promoted> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if std::ptr::eq(inner.policy.as_ptr(), Arc::as_ptr(policy))
            && inner.policy.strong_count() > 0
        {
            inner.promoted.clone()
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(table: &str) -> ResolvedColumn {
        ResolvedColumn {
            schema: Some("public".into()),
            table: table.into(),
            column: "card".into(),
        }
    }

    #[test]
    fn promotions_last_for_their_policy_only() {
        let promotions = Promotions::default();
        let first = Arc::new(Policy::default());
        let g0 = promotions.generation();
        assert!(promotions.promote(&first, "cards", &column("pay")));
        assert!(
            !promotions.promote(&first, "cards", &column("pay")),
            "a known column is not promoted twice"
        );
        assert!(promotions.promote(&first, "cards", &column("refunds")));
        assert_eq!(promotions.generation(), g0 + 2);
        let promoted = promotions.for_policy(&first);
        assert_eq!(promoted.len(), 2);
        assert_eq!(promoted[0].column.table.as_deref(), Some("pay"));
        // A reload: the new policy starts with none, and the first finding
        // under it drops the old policy's promotions.
        let second = Arc::new(Policy::default());
        assert!(promotions.for_policy(&second).is_empty());
        assert!(promotions.promote(&second, "cards", &column("other")));
        assert_eq!(promotions.for_policy(&second).len(), 1);
        assert!(promotions.for_policy(&first).is_empty());
    }

    #[test]
    fn promotions_are_bounded() {
        let promotions = Promotions::default();
        let policy = Arc::new(Policy::default());
        for i in 0..MAX_PROMOTED {
            assert!(promotions.promote(&policy, "cards", &column(&format!("t{i}"))));
        }
        assert!(!promotions.promote(&policy, "cards", &column("one_more")));
        assert_eq!(promotions.for_policy(&policy).len(), MAX_PROMOTED);
    }
}
