//! A statement held for approval, as a relay waits on it: the broker's
//! ticket, the rule's timeout, and the reminders a protocol can show.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hoop_core::{HoldOutcome, HoldRequirement, HoldTicket};

/// What woke a held session.
#[derive(Debug, Default)]
pub struct HoldWake {
    /// The hold ended (decided, or timed out).
    pub outcome: Option<HoldOutcome>,
    /// Time to remind the client it is waiting.
    pub remind: bool,
}

/// A statement waiting for approval. The driver keeps the held message at
/// the front of its client buffer until the hold ends.
pub struct ActiveHold {
    /// The broker's ticket (dropping it withdraws the hold).
    pub ticket: HoldTicket,
    /// The rule that held it.
    pub requirement: HoldRequirement,
    reminder: tokio::time::Interval,
    deadline: Pin<Box<tokio::time::Sleep>>,
    since: Instant,
}

impl ActiveHold {
    /// Starts waiting on `ticket`; reminders come every `remind_every`
    /// (at least every 10 ms), the first one after that long.
    pub fn new(ticket: HoldTicket, requirement: HoldRequirement, remind_every: Duration) -> Self {
        let period = remind_every.max(Duration::from_millis(10));
        let mut reminder = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        reminder.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            deadline: Box::pin(tokio::time::sleep(requirement.timeout)),
            ticket,
            requirement,
            reminder,
            since: Instant::now(),
        }
    }

    /// How long the client has waited.
    pub fn waited(&self) -> Duration {
        self.since.elapsed()
    }

    /// Polls for the decision, the rule's timeout (fail closed: the hold is
    /// withdrawn and ends as timed out) and the reminder timer.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> HoldWake {
        let mut wake = HoldWake::default();
        if let Poll::Ready(outcome) = self.ticket.poll_decision(cx) {
            wake.outcome = Some(outcome);
        } else if self.deadline.as_mut().poll(cx).is_ready() {
            self.ticket.withdraw();
            wake.outcome = Some(HoldOutcome::TimedOut);
        }
        if self.reminder.poll_tick(cx).is_ready() {
            wake.remind = true;
        }
        wake
    }
}
