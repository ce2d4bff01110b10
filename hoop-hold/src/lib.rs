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
//! - [`store`]: the port through which holds are shared beyond this
//!   process ([`HoldStore`]; the Kubernetes API on a cluster, implemented
//!   in `hoop-k8s`), and the pure decision rules every store applies.
//!
//! Protocol-neutral: nothing here knows a wire format, nor Kubernetes.
//!
//! Without a store, holds live in the agent's memory only: if the agent
//! restarts, pending holds and the client connections waiting on them are
//! gone (the clients see their connection close, and nothing they asked for
//! was run). With one, the store keeps them, and a restarted agent marks its
//! orphaned pending holds withdrawn.

#![forbid(unsafe_code)]

pub mod outbound;
pub mod registry;
pub mod store;
pub mod webhook;

pub use registry::{
    Decider, Decision, DecisionRecord, HoldError, HoldOutcome, HoldRegistry, HoldSession,
    HoldState, HoldTicket, HoldView,
};
pub use store::{DecideError, HoldStore, StoreError};
pub use webhook::Webhook;
