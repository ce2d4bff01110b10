//! The port through which holds are shared beyond this process.
//!
//! Without one, a [`HoldRegistry`](crate::HoldRegistry) keeps its holds in
//! memory and only this agent's admin API sees and decides them (`hoop
//! exec`, a single agent). With one (the Kubernetes API on a cluster, see
//! `hoop_k8s::holds`), every agent files the holds it makes in the store,
//! any agent can decide any hold through it, and the store's watcher feeds
//! what it sees back with [`HoldRegistry::mirror_sync`],
//! [`HoldRegistry::mirror_upsert`] and [`HoldRegistry::mirror_remove`]: the
//! owning agent acts on a decision when the mirror shows it.
//!
//! [`HoldRegistry::mirror_sync`]: crate::HoldRegistry::mirror_sync
//! [`HoldRegistry::mirror_upsert`]: crate::HoldRegistry::mirror_upsert
//! [`HoldRegistry::mirror_remove`]: crate::HoldRegistry::mirror_remove

use std::{future::Future, pin::Pin};

use time::OffsetDateTime;

use crate::registry::{
    Decider, Decision, DecisionRecord, HoldError, HoldOutcome, HoldState, HoldView,
};

/// A boxed future a store returns (the trait stays object-safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The shared store failed (unreachable, refused, malformed answer).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// What failed and what to do, for the operator and the client.
    pub message: String,
    /// The underlying error, where there is one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error with `message` caused by `source`.
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Why a decision through the store was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The hold's rules refused it (not found, not an approver, already
    /// final, approved twice); a decider that lost a race gets
    /// [`HoldError::AlreadyFinal`].
    #[error(transparent)]
    Hold(#[from] HoldError),
    /// The store could not be read or written; nothing was decided.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where holds are shared (implemented by `hoop_k8s::holds::KubeHoldStore`).
pub trait HoldStore: Send + Sync + 'static {
    /// Files a new pending hold this agent owns. On an error the hold is
    /// refused (fail closed): the statement does not run.
    fn create(&self, hold: HoldView) -> StoreFuture<'_, Result<(), StoreError>>;

    /// Records `decider`'s decision on hold `id` with an optimistic-
    /// concurrency update, so that of two concurrent deciders one wins and
    /// the other sees the hold final ([`HoldError::AlreadyFinal`]).
    fn decide<'a>(
        &'a self,
        id: &'a str,
        decider: &'a Decider,
        decision: Decision,
        reason: Option<String>,
    ) -> StoreFuture<'a, Result<HoldView, DecideError>>;

    /// Marks a hold this agent owns as ended here (timed out, withdrawn):
    /// `hold` is its final view.
    fn end(&self, hold: HoldView) -> StoreFuture<'_, Result<(), StoreError>>;
}

/// How a decision changes a hold, as a pure function of the hold: the
/// registry and every store apply decisions through it, so the rules
/// (approver groups, one approval per identity, one denial ends it, a final
/// hold never changes) are the same wherever the hold lives.
///
/// On success `view` carries the new decision (and, if it ended the hold,
/// its final state, time and reason); the returned outcome is `Some` when
/// the hold became final.
pub fn apply_decision(
    view: &mut HoldView,
    decider: &Decider,
    decision: Decision,
    reason: Option<String>,
    at: OffsetDateTime,
) -> Result<Option<HoldOutcome>, HoldError> {
    let id = view.id.clone();
    if !view.may_be_decided_by(decider) {
        return Err(HoldError::Forbidden {
            id,
            identity: decider.identity.clone(),
            approvers: view.approvers.clone(),
        });
    }
    if view.state.is_final() {
        return Err(HoldError::AlreadyFinal {
            id,
            state: view.state,
        });
    }
    let approved_before = view
        .decisions
        .iter()
        .any(|d| d.decision == Decision::Approve && d.identity == decider.identity);
    if decision == Decision::Approve && approved_before {
        return Err(HoldError::AlreadyApproved {
            id,
            identity: decider.identity.clone(),
            needed: view.approvals_needed,
        });
    }
    view.decisions.push(DecisionRecord {
        identity: decider.identity.clone(),
        decision,
        reason: reason.clone(),
        at,
    });
    match decision {
        Decision::Deny => {
            conclude(view, HoldState::Denied, reason.clone(), at);
            Ok(Some(HoldOutcome::Denied {
                by: Some(decider.identity.clone()),
                reason,
            }))
        }
        Decision::Approve => {
            let by = approvers_of(view);
            let count = u32::try_from(by.len()).unwrap_or(u32::MAX);
            view.approvals_needed = view.min_approvals.saturating_sub(count);
            if view.approvals_needed > 0 {
                return Ok(None);
            }
            conclude(view, HoldState::Approved, None, at);
            Ok(Some(HoldOutcome::Approved { by }))
        }
    }
}

/// Moves `view` to the final `state`.
pub fn conclude(view: &mut HoldView, state: HoldState, reason: Option<String>, at: OffsetDateTime) {
    view.state = state;
    view.decided_at = Some(at);
    view.reason = reason;
    if state == HoldState::Approved {
        view.approvals_needed = 0;
    }
}

/// What the waiting connection is told about a hold that reached a final
/// state elsewhere (`None` while it is pending).
pub fn outcome_of(view: &HoldView) -> Option<HoldOutcome> {
    match view.state {
        HoldState::Pending => None,
        HoldState::Approved => Some(HoldOutcome::Approved {
            by: approvers_of(view),
        }),
        HoldState::Denied => Some(HoldOutcome::Denied {
            by: view
                .decisions
                .iter()
                .rev()
                .find(|d| d.decision == Decision::Deny)
                .map(|d| d.identity.clone()),
            reason: view.reason.clone(),
        }),
        HoldState::Timeout => Some(HoldOutcome::TimedOut),
        HoldState::Withdrawn => Some(HoldOutcome::Denied {
            by: None,
            reason: view.reason.clone(),
        }),
    }
}

fn approvers_of(view: &HoldView) -> Vec<String> {
    view.decisions
        .iter()
        .filter(|d| d.decision == Decision::Approve)
        .map(|d| d.identity.clone())
        .collect()
}
