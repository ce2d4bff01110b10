//! Command holds: a risky statement waits, on its open connection, until an
//! approver approves or denies it (or it times out).
//!
//! - [`registry`]: the in-process set of holds, their state machine, the
//!   webhook notification and the `hoop_holds_*` metrics. The governance
//!   layer calls [`HoldRegistry::create`] and awaits [`HoldTicket::outcome`];
//!   what the waiting client is told is its driver's business.
//! - [`webhook`]: the notification of a new hold (JSON, or a Slack message
//!   with Approve and Deny buttons).
//! - [`outbound`]: the small HTTPS client webhooks (and the admin API's
//!   OIDC key fetch and CLI) use.
//!
//! Protocol-neutral: nothing here knows a wire format.
//!
//! Holds live in the agent's memory only: if the agent restarts, pending holds
//! and the client connections waiting on them are gone (the clients see their
//! connection close, and nothing they asked for was run).

#![forbid(unsafe_code)]

pub mod outbound;
pub mod registry;
pub mod webhook;

pub use registry::{
    Decider, Decision, DecisionRecord, HoldError, HoldOutcome, HoldRegistry, HoldSession,
    HoldState, HoldTicket, HoldView,
};
pub use webhook::Webhook;
