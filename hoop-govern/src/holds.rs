//! The [`HoldBroker`] backed by the admin API's [`HoldRegistry`].

use hoop_core::{HoldBroker, HoldOutcome, HoldRequest, HoldTicket};
use hoop_hold::HoldRegistry;
use hoop_policy::reload::PolicyHandle;

use crate::{mask_rules, recording::masked_statement};

/// Files holds with the registry; approvers see the statement masked with
/// the session's rules.
pub struct RegistryBroker {
    registry: HoldRegistry,
    policy: PolicyHandle,
}

impl RegistryBroker {
    /// A broker filing holds with `registry`; statement text shown to
    /// approvers is masked with the session's rules from `policy`.
    pub fn new(registry: HoldRegistry, policy: PolicyHandle) -> Self {
        Self { registry, policy }
    }
}

impl HoldBroker for RegistryBroker {
    fn hold(&self, request: HoldRequest) -> HoldTicket {
        let rules = mask_rules(&self.policy.snapshot(), &request.identity);
        let dialect = hoop_sql::dialect_for(request.identity.protocol);
        let statement = masked_statement(dialect, &rules, &request.sql);
        let mut ticket = self
            .registry
            .create(&request.identity, &statement, &request.requirement);
        let id = ticket.id().to_owned();
        // Dropping the future drops the registry ticket, which withdraws
        // the hold; so withdrawing needs nothing more here.
        HoldTicket::new(
            id,
            async move {
                match ticket.outcome().await {
                    hoop_hold::HoldOutcome::Approved { by } => {
                        HoldOutcome::Approved { by: by.join(", ") }
                    }
                    hoop_hold::HoldOutcome::Denied { by, reason } => HoldOutcome::Denied {
                        by: by.unwrap_or_else(|| "hoop".into()),
                        reason,
                    },
                    hoop_hold::HoldOutcome::TimedOut => HoldOutcome::TimedOut,
                }
            },
            || {},
        )
    }
}
