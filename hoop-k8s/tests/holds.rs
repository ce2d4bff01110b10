//! Holds in the Kubernetes API, against the API server stand-in: two
//! registries (two agents) sharing one namespace of `HoldRequest`s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use hoop_core::{HoldRequirement, SessionIdentity};
use hoop_hold::{
    DecideError, Decider, Decision, HoldError, HoldOutcome, HoldRegistry, HoldState, HoldTicket,
};
use hoop_k8s::{
    discovery::WatchBackoff,
    holds::{HoldOwner, HoldSettings, KubeHoldStore, run},
    testing::apiserver::FakeApiServer,
};
use tokio::sync::watch;

const NS: &str = "hoop-system";

struct Agent {
    registry: HoldRegistry,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn start(api: &FakeApiServer, node: &str, instance: &str, retention: Duration) -> Self {
        let store = KubeHoldStore::new(
            api.client().unwrap(),
            HoldSettings {
                namespace: NS.into(),
                owner: HoldOwner {
                    node: node.into(),
                    instance: instance.into(),
                },
                retention,
                backoff: WatchBackoff {
                    initial: Duration::from_millis(50),
                    max: Duration::from_millis(200),
                },
            },
        );
        let registry = HoldRegistry::new(None);
        registry.set_store(Arc::new(store.clone()));
        let (stop, mut stopped) = watch::channel(false);
        let mirror = registry.clone();
        let task = tokio::spawn(async move {
            run(store, mirror, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        });
        Self {
            registry,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    fn hold(&self, timeout: Duration) -> HoldTicket {
        let session = SessionIdentity {
            id: "s-1".into(),
            user: Some("app".into()),
            database: Some("shop".into()),
            ..SessionIdentity::default()
        };
        let req = HoldRequirement {
            rule: "orders-deletes".into(),
            message: "deletes need a DBA".into(),
            timeout,
            approvers: vec!["dba".into()],
            min_approvals: 1,
            max_rows: None,
        };
        self.registry
            .create(&session, "DELETE FROM orders WHERE id = $1", &req)
    }
}

fn dba(who: &str) -> Decider {
    Decider {
        identity: who.into(),
        groups: vec!["dba".into()],
    }
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_in_api(api: &FakeApiServer, id: &str) -> Option<String> {
    api.hold_requests()
        .into_iter()
        .find(|o| o["metadata"]["name"] == id)
        .map(|o| {
            o["status"]["state"]
                .as_str()
                .unwrap_or("pending")
                .to_owned()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_made_on_a_is_decided_on_b_and_resolves_on_a_once() {
    let api = FakeApiServer::start().await.unwrap();
    let a = Agent::start(&api, "node-a", "a-1", Duration::from_hours(1));
    let b = Agent::start(&api, "node-b", "b-1", Duration::from_hours(1));
    let mut ticket = a.hold(Duration::from_mins(1));
    let id = ticket.id().to_owned();
    eventually("B lists A's hold", || {
        b.registry
            .get(&id)
            .is_some_and(|h| h.state == HoldState::Pending)
    })
    .await;
    let object = &api.hold_requests()[0];
    assert_eq!(object["metadata"]["labels"]["hoop.dev/node"], "node-a");
    assert_eq!(object["spec"]["owner"]["instance"], "a-1");
    assert_eq!(
        object["spec"]["statement"],
        "DELETE FROM orders WHERE id = $1"
    );
    // Not an approver: refused, nothing written.
    let dev = Decider {
        identity: "dev@x".into(),
        groups: vec!["dev".into()],
    };
    assert!(matches!(
        b.registry
            .decide_shared(&id, &dev, Decision::Approve, None)
            .await,
        Err(DecideError::Hold(HoldError::Forbidden { .. }))
    ));
    let view = b
        .registry
        .decide_shared(&id, &dba("alice@x"), Decision::Approve, None)
        .await
        .unwrap();
    assert_eq!(view.state, HoldState::Approved);
    let outcome = tokio::time::timeout(Duration::from_secs(10), ticket.outcome())
        .await
        .expect("A's ticket resolves");
    assert_eq!(
        outcome,
        HoldOutcome::Approved {
            by: vec!["alice@x".into()]
        }
    );
    // Once: asking again is a denial.
    assert!(!ticket.outcome().await.is_approved());
    // A second decision on the ended hold: 409-class.
    assert!(matches!(
        a.registry
            .decide_shared(&id, &dba("bob@x"), Decision::Deny, None)
            .await,
        Err(DecideError::Hold(HoldError::AlreadyFinal { .. }))
    ));
    assert_eq!(state_in_api(&api, &id).as_deref(), Some("approved"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_decisions_one_wins_and_the_other_is_refused() {
    let api = FakeApiServer::start().await.unwrap();
    let a = Agent::start(&api, "node-a", "a-1", Duration::from_hours(1));
    let b = Agent::start(&api, "node-b", "b-1", Duration::from_hours(1));
    let mut wins = 0;
    for round in 0..20 {
        let mut ticket = a.hold(Duration::from_mins(1));
        let id = ticket.id().to_owned();
        eventually("the hold is in the API", || {
            state_in_api(&api, &id).is_some()
        })
        .await;
        let (alice, bob) = (dba("alice@x"), dba("bob@x"));
        let (ra, rb) = tokio::join!(
            a.registry
                .decide_shared(&id, &alice, Decision::Approve, None),
            b.registry.decide_shared(&id, &bob, Decision::Deny, None),
        );
        let ok = usize::from(ra.is_ok()) + usize::from(rb.is_ok());
        assert_eq!(
            ok, 1,
            "round {round}: exactly one decider wins: {ra:?} {rb:?}"
        );
        let loser = if ra.is_ok() { rb } else { ra };
        assert!(
            matches!(
                loser,
                Err(DecideError::Hold(HoldError::AlreadyFinal { .. }))
            ),
            "{loser:?}"
        );
        let outcome = tokio::time::timeout(Duration::from_secs(10), ticket.outcome())
            .await
            .unwrap();
        if outcome.is_approved() {
            wins += 1;
            assert_eq!(state_in_api(&api, &id).as_deref(), Some("approved"));
        } else {
            assert_eq!(state_in_api(&api, &id).as_deref(), Some("denied"));
        }
    }
    eprintln!(
        "20 races: approve won {wins}, deny won {}; resourceVersion conflicts (409 from the API server): {}",
        20 - wins,
        api.hold_conflicts()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_marks_its_orphans_withdrawn_and_ended_holds_are_collected() {
    let api = FakeApiServer::start().await.unwrap();
    let a = Agent::start(&api, "node-a", "a-1", Duration::from_secs(1));
    let b = Agent::start(&api, "node-b", "b-1", Duration::from_hours(1));
    let ticket = a.hold(Duration::from_mins(1));
    let id = ticket.id().to_owned();
    eventually("the hold is pending in the API", || {
        state_in_api(&api, &id).as_deref() == Some("pending")
    })
    .await;
    // The agent dies (its connection, and the ticket, with it; nothing is
    // written as it goes).
    std::mem::forget(ticket);
    a.stop().await;
    assert_eq!(state_in_api(&api, &id).as_deref(), Some("pending"));
    // B is on another node: it leaves A's pending hold alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_in_api(&api, &id).as_deref(), Some("pending"));
    let a2 = Agent::start(&api, "node-a", "a-2", Duration::from_secs(1));
    eventually("the orphan is withdrawn", || {
        state_in_api(&api, &id).as_deref() == Some("withdrawn")
    })
    .await;
    let object = api.hold_requests().into_iter().next().unwrap();
    assert!(
        object["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{object}"
    );
    eventually("B shows it withdrawn", || {
        b.registry
            .get(&id)
            .is_some_and(|h| h.state == HoldState::Withdrawn)
    })
    .await;
    // Retention 1 s on the new agent: the ended hold is deleted, and the
    // mirrors forget it.
    eventually("the ended hold is garbage-collected", || {
        api.hold_requests().is_empty()
    })
    .await;
    eventually("B forgets it", || b.registry.get(&id).is_none()).await;
    a2.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_the_api_refuses_is_refused_and_a_timeout_is_marked() {
    let api = FakeApiServer::start().await.unwrap();
    let a = Agent::start(&api, "node-a", "a-1", Duration::from_hours(1));
    api.refuse_hold_creation(true);
    let mut ticket = a.hold(Duration::from_mins(1));
    let outcome = tokio::time::timeout(Duration::from_secs(10), ticket.outcome())
        .await
        .expect("refused at once, not after the timeout");
    match outcome {
        HoldOutcome::Denied { by: None, reason } => {
            let reason = reason.unwrap();
            assert!(reason.contains("could not be filed"), "{reason}");
            assert!(reason.contains("not run"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(api.hold_requests().is_empty());
    api.refuse_hold_creation(false);
    // A hold nobody decides times out on its agent, and the API says so.
    let mut ticket = a.hold(Duration::from_millis(500));
    let id = ticket.id().to_owned();
    assert_eq!(ticket.outcome().await, HoldOutcome::TimedOut);
    eventually("the timeout is in the API", || {
        state_in_api(&api, &id).as_deref() == Some("timeout")
    })
    .await;
    // API server unreachable: a decision is a clear store error, nothing decided.
    let mut pending = a.hold(Duration::from_mins(1));
    let pid = pending.id().to_owned();
    eventually("the hold is in the API", || {
        state_in_api(&api, &pid).is_some()
    })
    .await;
    api.set_reachable(false).await.unwrap();
    let refused = a
        .registry
        .decide_shared(&pid, &dba("alice@x"), Decision::Approve, None)
        .await;
    assert!(
        matches!(&refused, Err(DecideError::Store(e)) if e.to_string().contains("could not be reached")),
        "{refused:?}"
    );
    // And a new hold while unreachable is refused, never left to run.
    let mut lost = a.hold(Duration::from_mins(1));
    let outcome = tokio::time::timeout(Duration::from_secs(30), lost.outcome())
        .await
        .unwrap();
    assert!(!outcome.is_approved(), "{outcome:?}");
    api.set_reachable(true).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), pending.outcome())
            .await
            .is_err(),
        "the pending hold is still waiting"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_hold_cannot_be_approved_and_is_marked_timed_out() {
    let api = FakeApiServer::start().await.unwrap();
    // An agent on node-z filed a hold that expired two minutes ago, and is gone.
    api.apply_hold_request(serde_json::json!({
        "apiVersion": "hoop.dev/v1", "kind": "HoldRequest",
        "metadata": {"name": "h-abandoned0", "namespace": NS, "labels": {"hoop.dev/node": "node-z"}},
        "spec": {"statement": "DELETE FROM orders", "rule": "r", "message": "m", "approvers": ["dba"],
                 "minApprovals": 1, "session": {"id": "s-9"},
                 "createdAt": "2020-01-01T00:00:00Z", "expiresAt": "2020-01-01T00:05:00Z",
                 "owner": {"node": "node-z", "instance": "node-z-1"}}
    }));
    let b = Agent::start(&api, "node-b", "b-1", Duration::from_hours(1));
    let refused = b
        .registry
        .decide_shared("h-abandoned0", &dba("alice@x"), Decision::Approve, None)
        .await;
    assert!(
        matches!(
            refused,
            Err(DecideError::Hold(HoldError::AlreadyFinal {
                state: HoldState::Timeout,
                ..
            }))
        ),
        "{refused:?}"
    );
    // B's first garbage-collection pass (at start) may have run before the
    // hold existed; a fresh agent's runs after.
    let c = Agent::start(&api, "node-c", "c-1", Duration::from_hours(1));
    eventually("the abandoned hold marked timed out", || {
        state_in_api(&api, "h-abandoned0").as_deref() == Some("timeout")
    })
    .await;
    let object = api.hold_requests().into_iter().next().unwrap();
    assert!(
        object["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("node node-z"),
        "{object}"
    );
    b.stop().await;
    c.stop().await;
}
