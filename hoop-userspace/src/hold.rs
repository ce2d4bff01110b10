//! Command holds: a risky statement waits, on its open connection, until an
//! approver approves or denies it (or it times out).
//!
//! - [`registry`]: the in-process set of holds, their state machine, the
//!   webhook notification and the `hoop_holds_*` metrics. The protocol driver
//!   calls [`HoldRegistry::create`] and awaits [`HoldTicket::outcome`].
//! - [`cli`]: `hoop holds list | approve | deny`, a client of the admin API.
//! - [`webhook`]: the notification of a new hold (JSON, or a Slack message
//!   with Approve and Deny buttons).
//!
//! Holds live in the agent's memory only: if the agent restarts, pending holds
//! and the client connections waiting on them are gone (the clients see their
//! connection close, and nothing they asked for was run).

pub mod cli;
pub mod registry;
pub mod webhook;

pub use registry::{
    Decider, Decision, DecisionRecord, HOLD_REFUSED_SQLSTATE, HoldError, HoldOutcome, HoldRegistry,
    HoldSession, HoldState, HoldTicket, HoldView,
};
pub use webhook::Webhook;
