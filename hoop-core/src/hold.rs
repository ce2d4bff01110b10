//! Holds as a driver sees them: it files a [`HoldRequest`] with the
//! [`HoldBroker`] and waits on the [`HoldTicket`] while keeping its client
//! informed (where the protocol can), then applies the [`HoldOutcome`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use crate::{HoldRequirement, SessionIdentity, Submission};

/// What a hold is about, as handed to the broker.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    /// Who is waiting.
    pub identity: SessionIdentity,
    /// The held SQL.
    pub sql: String,
    /// How it was sent.
    pub submission: Submission,
    /// The rule's requirement.
    pub requirement: HoldRequirement,
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Approved: the held messages go upstream.
    Approved {
        /// Who approved.
        by: String,
    },
    /// Denied: the client gets [`Refusal::hold_ended`](crate::Refusal::hold_ended).
    Denied {
        /// Who denied.
        by: String,
        /// Why, if given.
        reason: Option<String>,
    },
    /// Nobody decided in time (fail closed: treated as denied).
    TimedOut,
    /// The client went away or cancelled.
    Withdrawn,
}

/// A pending hold: its id and a future for the decision.
///
/// Dropping an undecided ticket withdraws it.
pub struct HoldTicket {
    id: String,
    decision: Pin<Box<dyn Future<Output = HoldOutcome> + Send>>,
    withdraw: Option<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for HoldTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldTicket")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl HoldTicket {
    /// A ticket whose outcome `decision` resolves to; `withdraw` tells the
    /// broker the waiter is gone (called at most once).
    pub fn new(
        id: impl Into<String>,
        decision: impl Future<Output = HoldOutcome> + Send + 'static,
        withdraw: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self {
            id: id.into(),
            decision: Box::pin(decision),
            withdraw: Some(Box::new(withdraw)),
        }
    }

    /// A ticket that is already decided.
    pub fn decided(id: impl Into<String>, outcome: HoldOutcome) -> Self {
        Self {
            id: id.into(),
            decision: Box::pin(std::future::ready(outcome)),
            withdraw: None,
        }
    }

    /// The hold's id (what approvers type).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Polls for the decision.
    pub fn poll_decision(&mut self, cx: &mut Context<'_>) -> Poll<HoldOutcome> {
        let outcome = self.decision.as_mut().poll(cx);
        if outcome.is_ready() {
            self.withdraw = None;
        }
        outcome
    }

    /// Withdraws the hold (the client went away or cancelled).
    pub fn withdraw(&mut self) {
        if let Some(w) = self.withdraw.take() {
            w();
        }
    }
}

impl Drop for HoldTicket {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// Registers holds and delivers decisions.
pub trait HoldBroker: Send + Sync {
    /// Registers a hold; must not block.
    fn hold(&self, request: HoldRequest) -> HoldTicket;
}

/// The default broker: with nobody to approve, every hold is denied (fail closed).
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyHolds;

impl HoldBroker for DenyHolds {
    fn hold(&self, _: HoldRequest) -> HoldTicket {
        HoldTicket::decided(
            "none",
            HoldOutcome::Denied {
                by: "hoop".into(),
                reason: Some("no hold broker is configured".into()),
            },
        )
    }
}
