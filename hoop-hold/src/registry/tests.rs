#![allow(clippy::unwrap_used)] // A test that cannot set up should fail loudly, right there.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::*;

fn session(id: &str) -> SessionIdentity {
    SessionIdentity {
        id: id.to_owned(),
        user: Some("app".to_owned()),
        database: Some("orders".to_owned()),
        application_name: Some("psql".to_owned()),
        client: Some("127.0.0.1:50000".parse().unwrap()),
        ..SessionIdentity::default()
    }
}

fn requirement(timeout: Duration, approvers: &[&str], min_approvals: u32) -> HoldRequirement {
    HoldRequirement {
        rule: "hold[0]".to_owned(),
        message: "deletes from orders need a second pair of eyes".to_owned(),
        timeout,
        approvers: approvers.iter().map(|&g| g.to_owned()).collect(),
        min_approvals,
        max_rows: None,
    }
}

fn dba(identity: &str) -> Decider {
    Decider {
        identity: identity.to_owned(),
        groups: vec!["dba".to_owned()],
    }
}

const STATEMENT: &str = "DELETE FROM orders WHERE id = $1";

#[tokio::test]
async fn approval_resolves_the_ticket_with_the_approver() {
    let registry = HoldRegistry::new(None);
    let mut ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &["dba"], 1),
    );
    let view = registry
        .decide(
            ticket.id(),
            &dba("alice@example.com"),
            Decision::Approve,
            None,
        )
        .unwrap();
    assert_eq!(view.state, HoldState::Approved);
    assert_eq!(view.approvals_needed, 0);
    assert!(view.decided_at.is_some());
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Approved {
            by: vec!["alice@example.com".to_owned()]
        }
    );
}

#[tokio::test]
async fn denial_carries_the_reason_and_is_final() {
    let registry = HoldRegistry::new(None);
    let mut ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &["dba"], 2),
    );
    let id = ticket.id().to_owned();
    registry
        .decide(
            &id,
            &dba("alice"),
            Decision::Deny,
            Some("use a WHERE".to_owned()),
        )
        .unwrap();
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Denied {
            by: Some("alice".to_owned()),
            reason: Some("use a WHERE".to_owned())
        }
    );
    let again = registry.decide(&id, &dba("bob"), Decision::Approve, None);
    assert_eq!(
        again,
        Err(HoldError::AlreadyFinal {
            id: id.clone(),
            state: HoldState::Denied
        })
    );
    let view = registry.get(&id).unwrap();
    assert_eq!(view.reason.as_deref(), Some("use a WHERE"));
    assert_eq!(view.decisions.len(), 1);
}

#[tokio::test]
async fn an_undecided_hold_times_out() {
    let registry = HoldRegistry::new(None);
    let mut ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_millis(200), &["dba"], 1),
    );
    let started = std::time::Instant::now();
    assert_eq!(ticket.outcome().await, HoldOutcome::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(190));
    let view = registry.get(ticket.id()).unwrap();
    assert_eq!(view.state, HoldState::Timeout);
    assert_eq!(view.reason.as_deref(), Some("timed out after 200ms"));
    let late = registry.decide(ticket.id(), &dba("alice"), Decision::Approve, None);
    assert!(matches!(
        late,
        Err(HoldError::AlreadyFinal {
            state: HoldState::Timeout,
            ..
        })
    ));
}

#[tokio::test]
async fn an_overdue_hold_is_timed_out_even_when_nobody_awaits_it() {
    let registry = HoldRegistry::new(None);
    let ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_millis(50), &[], 1),
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    let late = registry.decide(ticket.id(), &dba("alice"), Decision::Approve, None);
    assert!(matches!(
        late,
        Err(HoldError::AlreadyFinal {
            state: HoldState::Timeout,
            ..
        })
    ));
    assert_eq!(registry.get(ticket.id()).unwrap().state, HoldState::Timeout);
}

#[tokio::test]
async fn dropping_the_ticket_withdraws_and_a_later_approval_conflicts() {
    let registry = HoldRegistry::new(None);
    let ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &["dba"], 1),
    );
    let id = ticket.id().to_owned();
    drop(ticket);
    let view = registry.get(&id).unwrap();
    assert_eq!(view.state, HoldState::Withdrawn);
    let late = registry.decide(&id, &dba("alice"), Decision::Approve, None);
    assert_eq!(
        late,
        Err(HoldError::AlreadyFinal {
            id,
            state: HoldState::Withdrawn
        })
    );
}

#[tokio::test]
async fn withdraw_records_why() {
    let registry = HoldRegistry::new(None);
    let ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &[], 1),
    );
    let id = ticket.id().to_owned();
    ticket.withdraw("client sent CancelRequest");
    let view = registry.get(&id).unwrap();
    assert_eq!(view.state, HoldState::Withdrawn);
    assert_eq!(view.reason.as_deref(), Some("client sent CancelRequest"));
}

#[tokio::test]
async fn two_approvals_need_two_distinct_identities() {
    let registry = HoldRegistry::new(None);
    let mut ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &["dba"], 2),
    );
    let id = ticket.id().to_owned();
    let first = registry
        .decide(&id, &dba("alice"), Decision::Approve, None)
        .unwrap();
    assert_eq!(first.state, HoldState::Pending);
    assert_eq!(first.approvals_needed, 1);
    let twice = registry.decide(&id, &dba("alice"), Decision::Approve, None);
    assert_eq!(
        twice,
        Err(HoldError::AlreadyApproved {
            id: id.clone(),
            identity: "alice".to_owned(),
            needed: 1
        })
    );
    // Still waiting: the ticket has no outcome yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), ticket.outcome())
            .await
            .is_err()
    );
    let second = registry
        .decide(&id, &dba("bob"), Decision::Approve, None)
        .unwrap();
    assert_eq!(second.state, HoldState::Approved);
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Approved {
            by: vec!["alice".to_owned(), "bob".to_owned()]
        }
    );
}

#[tokio::test]
async fn only_members_of_an_approver_group_may_decide() {
    let registry = HoldRegistry::new(None);
    let ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &["dba"], 1),
    );
    let outsider = Decider {
        identity: "mallory".to_owned(),
        groups: vec!["dev".to_owned()],
    };
    let refused = registry.decide(ticket.id(), &outsider, Decision::Approve, None);
    assert!(matches!(refused, Err(HoldError::Forbidden { .. })));
    assert_eq!(registry.get(ticket.id()).unwrap().state, HoldState::Pending);
    // With no approver groups, any authenticated decider may decide.
    let open = registry.create(
        &session("s-2"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &[], 1),
    );
    assert!(
        registry
            .decide(open.id(), &outsider, Decision::Approve, None)
            .is_ok()
    );
}

#[tokio::test]
async fn an_outcome_is_handed_out_once() {
    let registry = HoldRegistry::new(None);
    let mut ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &[], 1),
    );
    registry
        .decide(ticket.id(), &dba("alice"), Decision::Approve, None)
        .unwrap();
    assert!(ticket.outcome().await.is_approved());
    assert!(
        !ticket.outcome().await.is_approved(),
        "a second ask must not approve again"
    );
}

#[tokio::test]
async fn outcome_is_cancel_safe() {
    let registry = HoldRegistry::new(None);
    let mut ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &[], 1),
    );
    // A reminder timer wins the select a few times; nothing is lost.
    for _ in 0..3 {
        tokio::select! {
            _ = ticket.outcome() => panic!("no decision yet"),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    registry
        .decide(ticket.id(), &dba("alice"), Decision::Approve, None)
        .unwrap();
    assert!(ticket.outcome().await.is_approved());
}

#[tokio::test]
async fn concurrent_holds_are_decided_independently() {
    let registry = HoldRegistry::new(None);
    let req = requirement(Duration::from_mins(1), &["dba"], 1);
    let mut first = registry.create(&session("s-1"), STATEMENT, &req);
    let mut second = registry.create(&session("s-2"), "UPDATE orders SET total = $1", &req);
    assert_ne!(first.id(), second.id());
    let waiter = tokio::spawn(async move { first.outcome().await });
    registry
        .decide(second.id(), &dba("alice"), Decision::Deny, None)
        .unwrap();
    assert!(matches!(second.outcome().await, HoldOutcome::Denied { .. }));
    assert!(!waiter.is_finished());
    let pending: Vec<_> = registry
        .list()
        .into_iter()
        .filter(|v| v.state == HoldState::Pending)
        .collect();
    assert_eq!(pending.len(), 1);
    registry
        .decide(&pending[0].id, &dba("bob"), Decision::Approve, None)
        .unwrap();
    assert!(waiter.await.unwrap().is_approved());
}

#[test]
fn ids_are_short_url_safe_and_distinct() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_hold_id()).collect();
    assert_eq!(ids.len(), 1000);
    for id in &ids {
        assert_eq!(id.len(), 12);
        assert!(id.starts_with("h-"));
        assert!(id[2..].bytes().all(|b| ID_ALPHABET.contains(&b)));
    }
}

#[tokio::test]
async fn history_is_bounded_and_pending_holds_are_kept() {
    let registry = HoldRegistry::new(None);
    let req = requirement(Duration::from_mins(1), &[], 1);
    let pending = registry.create(&session("s-0"), STATEMENT, &req);
    let first_decided = {
        let ticket = registry.create(&session("s-1"), STATEMENT, &req);
        ticket.id().to_owned()
    };
    for i in 0..DECIDED_HISTORY {
        drop(registry.create(&session(&format!("s-{i}")), STATEMENT, &req));
    }
    let listed = registry.list();
    assert_eq!(listed.len(), DECIDED_HISTORY + 1);
    assert_eq!(listed[0].id, pending.id(), "pending holds come first");
    assert!(
        registry.get(&first_decided).is_none(),
        "the oldest decided hold is forgotten"
    );
    assert!(matches!(
        registry.decide(&first_decided, &dba("alice"), Decision::Approve, None),
        Err(HoldError::NotFound { .. })
    ));
}

#[tokio::test]
async fn view_serializes_with_the_documented_fields() {
    let registry = HoldRegistry::new(None);
    let ticket = registry.create(
        &session("s-9"),
        STATEMENT,
        &requirement(Duration::from_mins(5), &["dba"], 1),
    );
    let view = registry.get(ticket.id()).unwrap();
    let json = serde_json::to_value(&view).unwrap();
    for key in [
        "id",
        "state",
        "statement",
        "rule",
        "message",
        "session",
        "created_at",
        "expires_at",
        "decided_at",
        "decisions",
        "approvals_needed",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert_eq!(json["state"], "pending");
    assert_eq!(json["session"]["user"], "app");
    assert_eq!(json["session"]["id"], "s-9");
    let created = OffsetDateTime::parse(
        json["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = OffsetDateTime::parse(
        json["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created, time::Duration::minutes(5));
    let back: HoldView = serde_json::from_value(json).unwrap();
    assert_eq!(back, view);
}

#[tokio::test]
async fn metrics_count_outcomes() {
    let metrics = hold_metrics();
    let before = metrics.total.with_label_values(&["withdrawn"]).get();
    let registry = HoldRegistry::new(None);
    drop(registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &[], 1),
    ));
    assert!(metrics.total.with_label_values(&["withdrawn"]).get() > before);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&hoop_core::metrics::metrics().registry.gather())
        .unwrap();
    for name in [
        "hoop_holds_pending",
        "hoop_holds_total",
        "hoop_hold_decision_seconds",
        "hoop_webhook_errors_total",
    ] {
        assert!(text.contains(name), "{name} not exported");
    }
}

/// A store that keeps holds in a map, as a second agent's view of them
/// would (the Kubernetes store is tested against the API server stand-in
/// in `hoop-k8s/tests/holds.rs`); `refuse` makes every filing fail.
#[derive(Default)]
struct MapStore {
    holds: Mutex<HashMap<String, HoldView>>,
    refuse: bool,
    ended: Mutex<Vec<HoldView>>,
}

impl crate::HoldStore for MapStore {
    fn create(
        &self,
        hold: HoldView,
    ) -> crate::store::StoreFuture<'_, Result<(), crate::StoreError>> {
        Box::pin(async move {
            if self.refuse {
                return Err(crate::StoreError {
                    message: "forbidden".into(),
                    source: None,
                });
            }
            self.holds.lock().unwrap().insert(hold.id.clone(), hold);
            Ok(())
        })
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        decider: &'a Decider,
        decision: Decision,
        reason: Option<String>,
    ) -> crate::store::StoreFuture<'a, Result<HoldView, crate::DecideError>> {
        Box::pin(async move {
            let mut holds = self.holds.lock().unwrap();
            let view = holds
                .get_mut(id)
                .ok_or_else(|| HoldError::NotFound { id: id.to_owned() })?;
            crate::store::apply_decision(view, decider, decision, reason, now_millis())?;
            Ok(view.clone())
        })
    }

    fn end(&self, hold: HoldView) -> crate::store::StoreFuture<'_, Result<(), crate::StoreError>> {
        Box::pin(async move {
            self.ended.lock().unwrap().push(hold);
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_hold_decided_in_the_store_resolves_its_ticket_once_when_mirrored() {
    let store = Arc::new(MapStore::default());
    let owner = HoldRegistry::new(None);
    owner.set_store(store.clone());
    let other = HoldRegistry::new(None);
    other.set_store(store.clone());
    let mut ticket = owner.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &["dba"], 1),
    );
    let id = ticket.id().to_owned();
    tokio::task::yield_now().await;
    // Another agent decides through the store; the owner learns it from its mirror.
    let view = other
        .decide_shared(&id, &dba("alice@example.com"), Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(view.state, HoldState::Approved);
    assert_eq!(other.get(&id).unwrap().state, HoldState::Approved);
    assert_eq!(owner.get(&id).unwrap().state, HoldState::Pending);
    owner.mirror_upsert(view.clone());
    // The watcher may deliver it again (a re-list): nothing happens twice.
    owner.mirror_sync(vec![view]);
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Approved {
            by: vec!["alice@example.com".to_owned()]
        }
    );
    assert!(!ticket.outcome().await.is_approved());
    assert_eq!(owner.list().len(), 1, "one hold, listed once");
    assert!(store.ended.lock().unwrap().is_empty());
    // A hold the mirror forgets (garbage-collected) stays listed where it is local.
    owner.mirror_remove(&id);
    assert_eq!(owner.get(&id).unwrap().state, HoldState::Approved);
    assert!(
        other.get(&id).is_some(),
        "the decider's mirror keeps its copy"
    );
}

#[tokio::test]
async fn a_hold_the_store_refuses_is_refused_and_local_ends_reach_the_store() {
    let refusing = Arc::new(MapStore {
        refuse: true,
        ..MapStore::default()
    });
    let create_errors = || {
        hold_metrics()
            .store_errors
            .with_label_values(&["create"])
            .get()
    };
    let before = create_errors();
    let registry = HoldRegistry::new(None);
    registry.set_store(refusing);
    let mut ticket = registry.create(
        &session("s-1"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &["dba"], 1),
    );
    match ticket.outcome().await {
        HoldOutcome::Denied { by: None, reason } => {
            assert!(reason.unwrap().contains("could not be filed"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        create_errors() > before,
        "counted in hoop_hold_store_errors_total"
    );
    let store = Arc::new(MapStore::default());
    let registry = HoldRegistry::new(None);
    registry.set_store(store.clone());
    let ticket = registry.create(
        &session("s-2"),
        STATEMENT,
        &requirement(Duration::from_mins(1), &["dba"], 1),
    );
    tokio::task::yield_now().await;
    drop(ticket);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let ended = store.ended.lock().unwrap().clone();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, HoldState::Withdrawn);
}
