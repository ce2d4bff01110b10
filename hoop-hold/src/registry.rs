//! The hold registry: every hold this agent knows, pending and recently
//! decided, and the state machine that moves them.
//!
//! ```text
//!            ┌─► approved   (min_approvals distinct approvers said yes)
//! pending ───┼─► denied     (any one approver said no)
//!            ├─► timeout    (nobody decided before expires_at)
//!            └─► withdrawn  (the client cancelled or went away)
//! ```
//!
//! A final state never changes again. Each hold belongs to one execution of
//! one statement in one session: the waiting connection holds its
//! [`HoldTicket`], and once the ticket has handed out its outcome nothing can
//! run that statement again on the strength of the same approval.
//!
//! The registry's lock is a plain mutex that is never held across an
//! `.await`, so one session's hold never blocks another session.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

use hoop_core::{HoldRequirement, PodIdentity, SessionIdentity};

use crate::{
    store::{DecideError, HoldStore, StoreError, apply_decision, conclude, outcome_of},
    webhook::Webhook,
};

/// How many decided holds [`HoldRegistry::list`] keeps showing. Older ones are
/// forgotten (their outcome lives on in the session recording).
const DECIDED_HISTORY: usize = 1000;

/// Characters of a hold id after the `h-` prefix: RFC 4648 base32, lower case.
const ID_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// 10 base32 characters = 50 random bits: unguessable for a hold that lives minutes.
const ID_RANDOM_CHARS: usize = 10;

/// Someone who approves or denies holds, as authenticated by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decider {
    /// Who they are (a static token's `identity`, or the OIDC `email`/`sub`).
    pub identity: String,
    /// The groups they belong to; matched against a rule's `approvers`.
    pub groups: Vec<String>,
}

/// What an approver says about a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Let the statement run (once `min_approvals` distinct approvers agree).
    Approve,
    /// Refuse the statement. One denial is final.
    Deny,
}

/// Where a hold is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Waiting for approvers.
    Pending,
    /// Approved by enough approvers; the statement may run once.
    Approved,
    /// Denied by an approver.
    Denied,
    /// Nobody decided in time; treated as a denial.
    Timeout,
    /// The client cancelled or disconnected before a decision.
    Withdrawn,
}

impl HoldState {
    /// Whether the hold can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }

    /// The name used in the API, the CLI and the `outcome` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Timeout => "timeout",
            Self::Withdrawn => "withdrawn",
        }
    }
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approver's decision on a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The approver's identity.
    pub identity: String,
    /// What they decided.
    pub decision: Decision,
    /// Why, if they said.
    pub reason: Option<String>,
    /// When (RFC 3339).
    #[serde(with = "rfc3339")]
    pub at: OffsetDateTime,
}

/// The session a held statement came from, as approvers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldSession {
    /// The session id (also its recording id).
    pub id: String,
    /// The governed workload (cgroup path), where known.
    pub workload: Option<String>,
    /// The client's address.
    pub client: Option<String>,
    /// Where the client meant to connect.
    pub original_destination: Option<String>,
    /// Database user.
    pub user: Option<String>,
    /// Database name.
    pub database: Option<String>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// The role hoop logged in as on the workload's behalf (credential injection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_role: Option<String>,
    /// The `credentials:` entry whose secret hoop injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl HoldSession {
    /// `user@database`, with `as role (credential entry)` when hoop
    /// logged in on the workload's behalf.
    pub fn who(&self) -> String {
        let mut who = format!(
            "{}@{}",
            self.user.as_deref().unwrap_or("?"),
            self.database.as_deref().unwrap_or("?")
        );
        if let Some(role) = &self.injected_role {
            who.push_str(" as ");
            who.push_str(role);
            if let Some(credential) = &self.credential {
                who.push_str(" (credential ");
                who.push_str(credential);
                who.push(')');
            }
        }
        who
    }
}

impl From<&SessionIdentity> for HoldSession {
    fn from(session: &SessionIdentity) -> Self {
        Self {
            id: session.id.clone(),
            workload: session.workload.clone(),
            client: session.client.map(|a| a.to_string()),
            original_destination: session.original_destination.map(|a| a.to_string()),
            user: session.user.clone(),
            database: session.database.clone(),
            application_name: session.application_name.clone(),
            injected_role: session.injected_role.clone(),
            credential: session.credential.clone(),
        }
    }
}

/// A hold as the admin API, the CLI and the webhook show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    /// Short, unguessable, URL-safe id (`h-` + 10 base32 characters).
    pub id: String,
    /// Where the hold is in its life.
    pub state: HoldState,
    /// The held statement, with literals masked by the caller.
    pub statement: String,
    /// The hold rule that matched.
    pub rule: String,
    /// The rule's message.
    pub message: String,
    /// Who asked, from where.
    pub session: HoldSession,
    /// The Kubernetes pod the session came from (namespace, pod, UID,
    /// service account, node, labels); absent outside Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<PodIdentity>,
    /// When the hold was created (RFC 3339).
    #[serde(with = "rfc3339")]
    pub created_at: OffsetDateTime,
    /// When an undecided hold times out (RFC 3339).
    #[serde(with = "rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When the hold reached a final state (RFC 3339).
    #[serde(with = "rfc3339::option", default)]
    pub decided_at: Option<OffsetDateTime>,
    /// Every approval and denial, in order.
    pub decisions: Vec<DecisionRecord>,
    /// Groups whose members may decide; empty means any authenticated approver.
    pub approvers: Vec<String>,
    /// Distinct approvals required.
    pub min_approvals: u32,
    /// Approvals still missing (0 once approved).
    pub approvals_needed: u32,
    /// Why the hold ended as it did: the denier's reason, "timed out after 5m",
    /// or why it was withdrawn.
    pub reason: Option<String>,
}

impl HoldView {
    /// Whether `decider` belongs to the rule's approvers (so may approve or
    /// deny, while the hold is pending).
    pub fn may_be_decided_by(&self, decider: &Decider) -> bool {
        may_decide(&self.approvers, decider)
    }
}

/// How a hold ended, as the waiting connection learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Run the statement, once.
    Approved {
        /// The identities that approved.
        by: Vec<String>,
    },
    /// Do not run the statement.
    Denied {
        /// Who denied it (`None` when hoop itself refused, e.g. an outcome asked for twice).
        by: Option<String>,
        /// The denier's reason.
        reason: Option<String>,
    },
    /// Nobody decided before the rule's timeout; do not run the statement.
    TimedOut,
}

impl HoldOutcome {
    /// Whether the statement may run.
    pub fn is_approved(&self) -> bool {
        matches!(self, Self::Approved { .. })
    }
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldError {
    /// No hold has this id (it never existed, or left the bounded history).
    #[error("no hold with id {id}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The decider is in none of the rule's approver groups.
    #[error("{identity} may not decide hold {id}: approvers are members of {}", approvers.join(", "))]
    Forbidden {
        /// The hold.
        id: String,
        /// The decider.
        identity: String,
        /// The rule's approver groups.
        approvers: Vec<String>,
    },
    /// The hold already reached a final state; decisions are never replayed.
    #[error("hold {id} is already {state}")]
    AlreadyFinal {
        /// The hold.
        id: String,
        /// Its final state.
        state: HoldState,
    },
    /// This identity already approved; approvals count once per identity.
    #[error(
        "{identity} already approved hold {id}; it needs {needed} more approval(s) from other approvers"
    )]
    AlreadyApproved {
        /// The hold.
        id: String,
        /// The decider.
        identity: String,
        /// Approvals still missing.
        needed: u32,
    },
}

/// The holds this agent knows. Cheap to clone; clones share one registry.
#[derive(Clone)]
pub struct HoldRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    book: Mutex<HoldBook>,
    webhook: Option<Webhook>,
    metrics: &'static HoldMetrics,
    /// Where holds are shared beyond this process (set once, at start-up).
    store: OnceLock<Arc<dyn HoldStore>>,
}

/// All holds, by id, plus the order in which they reached a final state (for eviction).
#[derive(Default)]
struct HoldBook {
    by_id: HashMap<String, HoldEntry>,
    decided_order: VecDeque<String>,
    /// With a store: every hold the store's watcher has shown us (this
    /// agent's and every other agent's), by id.
    mirror: HashMap<String, HoldView>,
    /// Bumped on every change, so the approvals page can wait for one.
    changes: watch::Sender<u64>,
}

impl HoldBook {
    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }
}

struct HoldEntry {
    view: HoldView,
    created: Instant,
    deadline: Instant,
    timeout: Duration,
    /// Taken when the hold reaches a final state; the waiting ticket receives the outcome.
    waiter: Option<oneshot::Sender<HoldOutcome>>,
}

impl HoldRegistry {
    /// An empty registry. With a webhook, every new hold is POSTed to it.
    pub fn new(webhook: Option<Webhook>) -> Self {
        Self {
            shared: Arc::new(Shared {
                book: Mutex::new(HoldBook::default()),
                webhook,
                metrics: hold_metrics(),
                store: OnceLock::new(),
            }),
        }
    }

    /// Shares this registry's holds through `store` from now on (see
    /// [`crate::store`]). Call once, before the first hold; a second call
    /// is ignored.
    pub fn set_store(&self, store: Arc<dyn HoldStore>) {
        let _ = self.shared.store.set(store);
    }

    /// Whether holds are shared through a store.
    pub fn is_shared(&self) -> bool {
        self.shared.store.get().is_some()
    }

    /// Holds `statement` (whose literals the caller has already masked) for
    /// approval under `req`. The caller keeps the ticket and awaits
    /// [`HoldTicket::outcome`]; dropping it withdraws the hold.
    ///
    /// Must be called inside a Tokio runtime when a webhook is configured (the
    /// notification is sent from a spawned task).
    pub fn create(
        &self,
        session: &SessionIdentity,
        statement: &str,
        req: &HoldRequirement,
    ) -> HoldTicket {
        let now = now_millis();
        let created = Instant::now();
        // A policy timeout too large for the clock is, in effect, "a year".
        let deadline = created
            .checked_add(req.timeout)
            .unwrap_or_else(|| created + Duration::from_hours(365 * 24));
        let expires_at = time::Duration::try_from(req.timeout)
            .ok()
            .and_then(|t| now.checked_add(t))
            .unwrap_or(now);
        let min_approvals = req.min_approvals.max(1);
        let (waiter, receiver) = oneshot::channel();
        let view = {
            let mut book = self.shared.lock();
            let id = loop {
                let candidate = new_hold_id();
                if !book.by_id.contains_key(&candidate) {
                    break candidate;
                }
            };
            let view = HoldView {
                id: id.clone(),
                state: HoldState::Pending,
                statement: statement.to_owned(),
                rule: req.rule.clone(),
                message: req.message.clone(),
                session: HoldSession::from(session),
                workload: session.pod.as_deref().cloned(),
                created_at: now,
                expires_at,
                decided_at: None,
                decisions: Vec::new(),
                approvers: req.approvers.clone(),
                min_approvals,
                approvals_needed: min_approvals,
                reason: None,
            };
            book.by_id.insert(
                id,
                HoldEntry {
                    view: view.clone(),
                    created,
                    deadline,
                    timeout: req.timeout,
                    waiter: Some(waiter),
                },
            );
            self.shared.metrics.pending.inc();
            book.changed();
            view
        };
        // The statement stays out of the log: it is in the recording and the API.
        tracing::info!(
            hold = %view.id,
            %session,
            rule = %req.rule,
            timeout = %humantime::format_duration(req.timeout),
            "statement held for approval"
        );
        if let Some(store) = self.shared.store.get().cloned() {
            // Filed from a task: `create` must not block the session. Until
            // the store has it nobody can decide it; if the store refuses,
            // the hold ends refused (fail closed).
            let shared = Arc::clone(&self.shared);
            let view = view.clone();
            tokio::spawn(async move {
                let id = view.id.clone();
                match store.create(view.clone()).await {
                    Ok(()) => {
                        if let Some(webhook) = &shared.webhook {
                            webhook.notify(view, shared.metrics);
                        }
                    }
                    Err(error) => {
                        shared
                            .metrics
                            .store_errors
                            .with_label_values(&["create"])
                            .inc();
                        tracing::warn!(hold = %id, %error, "cannot file the hold in the shared store; refusing the statement");
                        shared.refuse(
                            &id,
                            &format!("the hold could not be filed for approvers ({error}); the statement was not run"),
                        );
                    }
                }
            });
        } else if let Some(webhook) = &self.shared.webhook {
            webhook.notify(view.clone(), self.shared.metrics);
        }
        HoldTicket {
            id: view.id,
            shared: Arc::clone(&self.shared),
            receiver,
            deadline,
            consumed: false,
        }
    }

    /// Pending holds first (oldest first), then decided ones (most recent first).
    pub fn list(&self) -> Vec<HoldView> {
        let mut book = self.shared.lock();
        let expired = book.expire_overdue(self.shared.metrics);
        if !book.mirror.is_empty() || self.is_shared() {
            let holds = book.merged();
            drop(book);
            self.shared.ended_here(expired);
            return holds;
        }
        drop(book);
        self.shared.ended_here(expired);
        let book = self.shared.lock();
        let mut pending: Vec<_> = book
            .by_id
            .values()
            .filter(|e| !e.view.state.is_final())
            .map(|e| e.view.clone())
            .collect();
        pending.sort_by_key(|v| v.created_at);
        let decided = book
            .decided_order
            .iter()
            .rev()
            .filter_map(|id| book.by_id.get(id))
            .map(|e| e.view.clone());
        pending.extend(decided);
        pending
    }

    /// [`list`](Self::list), with the change counter it reflects.
    pub fn list_versioned(&self) -> (u64, Vec<HoldView>) {
        let mut book = self.shared.lock();
        let expired = book.expire_overdue(self.shared.metrics);
        let version = *book.changes.borrow();
        drop(book);
        self.shared.ended_here(expired);
        // A change between here and `list` only makes the version look
        // older than the list, so a waiter asks again: never a missed change.
        (version, self.list())
    }

    /// Follows the change counter: [`watch::Receiver::changed`] returns once
    /// any hold is created, decided, or ends, after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.lock().changes.subscribe()
    }

    /// One hold by id.
    pub fn get(&self, id: &str) -> Option<HoldView> {
        let mut book = self.shared.lock();
        let expired = book.expire_overdue(self.shared.metrics);
        let local = book.by_id.get(id).map(|e| e.view.clone());
        let hold = match (local, book.mirror.get(id)) {
            (Some(local), Some(mirrored)) => Some(newer(local, mirrored)),
            (local, mirrored) => local.or_else(|| mirrored.cloned()),
        };
        drop(book);
        self.shared.ended_here(expired);
        hold
    }

    /// Records a decision wherever the hold lives: through the store when
    /// holds are shared (any agent's hold; the owning agent acts on it when
    /// its watcher sees it), in this registry otherwise.
    pub async fn decide_shared(
        &self,
        id: &str,
        decider: &Decider,
        decision: Decision,
        reason: Option<String>,
    ) -> Result<HoldView, DecideError> {
        match self.shared.store.get().cloned() {
            Some(store) => {
                let view = match store.decide(id, decider, decision, reason).await {
                    Err(DecideError::Hold(HoldError::NotFound { .. })) if self.is_unfiled(id) => {
                        // Listed here from the moment it was held, but the
                        // store has not confirmed it yet: nothing to decide.
                        return Err(DecideError::Store(StoreError {
                            message: format!(
                                "hold {id} is not filed in the shared store yet; try again in a moment"
                            ),
                            source: None,
                        }));
                    }
                    Err(DecideError::Store(error)) => {
                        self.shared
                            .metrics
                            .store_errors
                            .with_label_values(&["decide"])
                            .inc();
                        return Err(DecideError::Store(error));
                    }
                    other => other?,
                };
                // Shown at once here, before the watcher echoes it.
                self.mirror_upsert(view.clone());
                Ok(view)
            }
            None => Ok(self.decide(id, decider, decision, reason)?),
        }
    }

    /// Whether `id` is this agent's pending hold that the store's watcher
    /// has not shown yet (being filed).
    fn is_unfiled(&self, id: &str) -> bool {
        let book = self.shared.lock();
        book.by_id.get(id).is_some_and(|e| !e.view.state.is_final())
            && !book.mirror.contains_key(id)
    }

    /// The store's watcher saw every hold anew (its first list, or a
    /// re-list): replaces the mirror, and acts on what changed.
    pub fn mirror_sync(&self, holds: Vec<HoldView>) {
        let mut book = self.shared.lock();
        book.mirror.clear();
        for hold in holds {
            book.absorb(hold, self.shared.metrics);
        }
        book.changed();
    }

    /// The store's watcher saw `hold` created or changed. When it is this
    /// agent's pending hold and the store shows it final (decided by any
    /// agent), its waiting connection gets the outcome, once.
    pub fn mirror_upsert(&self, hold: HoldView) {
        let mut book = self.shared.lock();
        book.absorb(hold, self.shared.metrics);
        book.changed();
    }

    /// The store's watcher saw hold `id` deleted (garbage-collected).
    pub fn mirror_remove(&self, id: &str) {
        let mut book = self.shared.lock();
        if book.mirror.remove(id).is_some() {
            book.changed();
        }
    }

    /// Records `decider`'s decision on hold `id`.
    ///
    /// The decider must belong to one of the rule's approver groups (any
    /// authenticated decider when the rule names none). One denial ends the
    /// hold; approvals count once per identity until `min_approvals`.
    pub fn decide(
        &self,
        id: &str,
        decider: &Decider,
        decision: Decision,
        reason: Option<String>,
    ) -> Result<HoldView, HoldError> {
        let metrics = self.shared.metrics;
        let mut book = self.shared.lock();
        let expired = book.expire_overdue(metrics);
        let result = book.decide(id, decider, decision, reason, metrics);
        drop(book);
        self.shared.ended_here(expired);
        result
    }
}

/// Of a hold as this agent knows it and as the store shows it, the one
/// further along (the store's, unless only this agent knows it ended).
fn newer(local: HoldView, mirrored: &HoldView) -> HoldView {
    if local.state.is_final() && !mirrored.state.is_final() {
        local
    } else {
        mirrored.clone()
    }
}

impl fmt::Debug for HoldRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldRegistry")
            .field("webhook", &self.shared.webhook.is_some())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HoldBook> {
        // A panic while holding the lock leaves the book consistent enough to
        // read: every mutation is a few field writes. Keep serving.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends hold `id` as timed out if it is still pending (its ticket's deadline passed).
    fn expire(&self, id: &str) {
        let mut book = self.lock();
        let pending = book.by_id.get(id).is_some_and(|e| !e.view.state.is_final());
        if pending {
            let reason = book.by_id[id].timeout_reason();
            book.finish(
                id,
                HoldState::Timeout,
                Some(reason),
                HoldOutcome::TimedOut,
                self.metrics,
            );
            let view = book.by_id.get(id).map(|e| e.view.clone());
            drop(book);
            self.ended_here(view.into_iter().collect());
        }
    }

    /// Ends hold `id` refused, without telling the store (it never got it).
    fn refuse(&self, id: &str, why: &str) {
        let mut book = self.lock();
        let pending = book.by_id.get(id).is_some_and(|e| !e.view.state.is_final());
        if pending {
            let outcome = HoldOutcome::Denied {
                by: None,
                reason: Some(why.to_owned()),
            };
            book.finish(
                id,
                HoldState::Withdrawn,
                Some(why.to_owned()),
                outcome,
                self.metrics,
            );
        }
    }

    /// Tells the store about holds of this agent that ended here (timed
    /// out, withdrawn), so every agent shows them ended.
    fn ended_here(&self, holds: Vec<HoldView>) {
        let Some(store) = self.store.get() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for hold in holds {
            let store = Arc::clone(store);
            let metrics = self.metrics;
            runtime.spawn(async move {
                let id = hold.id.clone();
                if let Err(error) = store.end(hold).await {
                    metrics.store_errors.with_label_values(&["end"]).inc();
                    tracing::warn!(hold = %id, %error, "cannot mark the hold ended in the shared store");
                }
            });
        }
    }

    /// Ends hold `id` as withdrawn if it is still pending.
    fn withdraw(&self, id: &str, why: &str) {
        let mut book = self.lock();
        let pending = book.by_id.get(id).is_some_and(|e| !e.view.state.is_final());
        if pending {
            let outcome = HoldOutcome::Denied {
                by: None,
                reason: Some(why.to_owned()),
            };
            book.finish(
                id,
                HoldState::Withdrawn,
                Some(why.to_owned()),
                outcome,
                self.metrics,
            );
            let view = book.by_id.get(id).map(|e| e.view.clone());
            drop(book);
            tracing::info!(hold = %id, why, "hold withdrawn");
            self.ended_here(view.into_iter().collect());
        }
    }
}

impl HoldEntry {
    fn timeout_reason(&self) -> String {
        format!(
            "timed out after {}",
            humantime::format_duration(self.timeout)
        )
    }
}

impl HoldBook {
    /// Moves pending hold `id` to the final `state` and wakes its ticket.
    fn finish(
        &mut self,
        id: &str,
        state: HoldState,
        reason: Option<String>,
        outcome: HoldOutcome,
        metrics: &HoldMetrics,
    ) {
        let Some(entry) = self.by_id.get_mut(id) else {
            return;
        };
        debug_assert!(!entry.view.state.is_final(), "a final hold never changes");
        conclude(&mut entry.view, state, reason, now_millis());
        self.settle(id, outcome, metrics);
    }

    /// Hands hold `id`'s final outcome (its view already final) to its
    /// ticket, and counts it.
    fn settle(&mut self, id: &str, outcome: HoldOutcome, metrics: &HoldMetrics) {
        let Some(entry) = self.by_id.get_mut(id) else {
            return;
        };
        let state = entry.view.state;
        if let Some(waiter) = entry.waiter.take() {
            // The ticket may be gone (withdrawn); then nobody needs to hear.
            let _ = waiter.send(outcome);
        }
        metrics.pending.dec();
        metrics.total.with_label_values(&[state.as_str()]).inc();
        metrics
            .decision_seconds
            .observe(entry.created.elapsed().as_secs_f64());
        if state == HoldState::Timeout {
            tracing::info!(hold = %id, "hold timed out");
        }
        self.changed();
        self.decided_order.push_back(id.to_owned());
        while self.decided_order.len() > DECIDED_HISTORY {
            if let Some(oldest) = self.decided_order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    /// Times out every pending hold past its deadline, so the API never shows
    /// (or accepts a decision on) a hold whose client has already been refused.
    fn expire_overdue(&mut self, metrics: &HoldMetrics) -> Vec<HoldView> {
        let now = Instant::now();
        let overdue: Vec<(String, String)> = self
            .by_id
            .iter()
            .filter(|(_, e)| !e.view.state.is_final() && e.deadline <= now)
            .map(|(id, e)| (id.clone(), e.timeout_reason()))
            .collect();
        let mut expired = Vec::with_capacity(overdue.len());
        for (id, reason) in overdue {
            self.finish(
                &id,
                HoldState::Timeout,
                Some(reason),
                HoldOutcome::TimedOut,
                metrics,
            );
            expired.extend(self.by_id.get(&id).map(|e| e.view.clone()));
        }
        expired
    }

    /// Records a decision on this agent's hold `id`.
    fn decide(
        &mut self,
        id: &str,
        decider: &Decider,
        decision: Decision,
        reason: Option<String>,
        metrics: &HoldMetrics,
    ) -> Result<HoldView, HoldError> {
        let entry = self
            .by_id
            .get_mut(id)
            .ok_or_else(|| HoldError::NotFound { id: id.to_owned() })?;
        let outcome = apply_decision(&mut entry.view, decider, decision, reason, now_millis())?;
        tracing::info!(hold = %id, approver = %decider.identity, ?decision, "hold decision recorded");
        if let Some(outcome) = outcome {
            self.settle(id, outcome, metrics);
        }
        self.changed();
        Ok(self.by_id[id].view.clone())
    }

    /// Takes in the store's view of a hold; if it is this agent's pending
    /// hold and the store shows it final, the waiting ticket gets the
    /// outcome (the local state machine makes that happen once).
    fn absorb(&mut self, hold: HoldView, metrics: &HoldMetrics) {
        let id = hold.id.clone();
        let local_pending = self
            .by_id
            .get(&id)
            .is_some_and(|e| !e.view.state.is_final());
        if local_pending && let Some(outcome) = outcome_of(&hold) {
            if let Some(entry) = self.by_id.get_mut(&id) {
                entry.view = hold.clone();
            }
            tracing::info!(hold = %id, state = %hold.state, "hold decided through the shared store");
            self.settle(&id, outcome, metrics);
        } else if local_pending && let Some(entry) = self.by_id.get_mut(&id) {
            // Approvals so far (min_approvals > 1), shown locally too.
            entry.view.decisions.clone_from(&hold.decisions);
            entry.view.approvals_needed = hold.approvals_needed;
        }
        self.mirror.insert(id, hold);
    }

    /// Every hold, this agent's and the mirror's, each once: pending first
    /// (oldest first), then decided (most recent first).
    fn merged(&self) -> Vec<HoldView> {
        let mut all: HashMap<&str, HoldView> = self
            .mirror
            .iter()
            .map(|(id, v)| (id.as_str(), v.clone()))
            .collect();
        for (id, entry) in &self.by_id {
            let merged = match all.remove(id.as_str()) {
                Some(mirrored) => newer(entry.view.clone(), &mirrored),
                None => entry.view.clone(),
            };
            all.insert(id.as_str(), merged);
        }
        let (mut pending, mut decided): (Vec<_>, Vec<_>) =
            all.into_values().partition(|v| !v.state.is_final());
        pending.sort_by_key(|v| v.created_at);
        decided.sort_by_key(|v| std::cmp::Reverse(v.decided_at.unwrap_or(v.created_at)));
        pending.extend(decided);
        pending
    }
}

/// The waiting connection's handle on its hold.
///
/// Dropping a ticket whose outcome was never taken withdraws the hold.
#[derive(Debug)]
pub struct HoldTicket {
    id: String,
    shared: Arc<Shared>,
    receiver: oneshot::Receiver<HoldOutcome>,
    deadline: Instant,
    /// Set once [`outcome`](Self::outcome) has returned: the outcome is handed out once.
    consumed: bool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HoldRegistry")
    }
}

impl HoldTicket {
    /// The hold's id, for the notice telling the client how to get it approved.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the hold times out if nobody decides.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits for the decision, or for the rule's timeout.
    ///
    /// Cancel-safe: use it in `tokio::select!` next to a reminder timer or the
    /// client's socket; nothing is lost when another branch wins.
    ///
    /// The outcome is handed out once. Asking again returns a denial, so a
    /// single approval can never run a statement twice.
    pub async fn outcome(&mut self) -> HoldOutcome {
        if self.consumed {
            return HoldOutcome::Denied {
                by: None,
                reason: Some("this hold's outcome was already used".to_owned()),
            };
        }
        let outcome = tokio::select! {
            biased;
            received = &mut self.receiver => received.unwrap_or_else(|_| lost()),
            () = tokio::time::sleep_until(self.deadline) => {
                self.shared.expire(&self.id);
                // Either our expiry or a decision that won the race is in the channel now.
                self.receiver.try_recv().unwrap_or_else(|_| lost())
            }
        };
        self.consumed = true;
        outcome
    }

    /// Withdraws the hold (the client cancelled or disconnected). Does
    /// nothing if it was already decided.
    pub fn withdraw(mut self, why: &str) {
        self.consumed = true;
        self.shared.withdraw(&self.id, why);
    }
}

impl Drop for HoldTicket {
    fn drop(&mut self) {
        if !self.consumed {
            self.shared
                .withdraw(&self.id, "the client went away before a decision");
        }
    }
}

/// The outcome when a hold's channel closed without one (it cannot happen
/// while the ticket lives; fail closed anyway).
fn lost() -> HoldOutcome {
    HoldOutcome::Denied {
        by: None,
        reason: Some("the hold was lost".to_owned()),
    }
}

fn may_decide(approvers: &[String], decider: &Decider) -> bool {
    approvers.is_empty() || decider.groups.iter().any(|g| approvers.contains(g))
}

fn new_hold_id() -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(2 + ID_RANDOM_CHARS);
    id.push_str("h-");
    for _ in 0..ID_RANDOM_CHARS {
        id.push(char::from(
            ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())],
        ));
    }
    id
}

/// Now, to the millisecond (RFC 3339 with nanoseconds is noise for people).
fn now_millis() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond()).unwrap_or(now)
}

/// `hoop_holds_*` and `hoop_webhook_errors_total`, registered once on the process registry.
pub struct HoldMetrics {
    /// `hoop_holds_pending`.
    pub pending: IntGauge,
    /// `hoop_holds_total{outcome}`.
    pub total: IntCounterVec,
    /// `hoop_hold_decision_seconds`.
    pub decision_seconds: Histogram,
    /// `hoop_webhook_errors_total`.
    pub webhook_errors: IntCounter,
    /// `hoop_hold_store_errors_total{operation}`: the shared store (the
    /// Kubernetes API) failed to file, decide or end a hold.
    pub store_errors: IntCounterVec,
}

/// The process-wide hold metrics (registered on first use, so `/metrics`
/// shows them before the first hold).
pub fn hold_metrics() -> &'static HoldMetrics {
    static METRICS: OnceLock<HoldMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let pending = IntGauge::new(
            "hoop_holds_pending",
            "Held statements waiting for a decision.",
        )
        .expect("valid metric");
        let total = IntCounterVec::new(
            Opts::new(
                "hoop_holds_total",
                "Holds that reached a final state, by outcome.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for outcome in [
            HoldState::Approved,
            HoldState::Denied,
            HoldState::Timeout,
            HoldState::Withdrawn,
        ] {
            total.with_label_values(&[outcome.as_str()]);
        }
        let decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "hoop_hold_decision_seconds",
                "Time from a hold's creation to its final state.",
            )
            .buckets(vec![
                0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        let webhook_errors = IntCounter::new(
            "hoop_webhook_errors_total",
            "Hold notifications the webhook did not accept.",
        )
        .expect("valid metric");
        let store_errors = IntCounterVec::new(
            Opts::new(
                "hoop_hold_store_errors_total",
                "Holds the shared store (the Kubernetes API) could not file, decide or end, by operation.",
            ),
            &["operation"],
        )
        .expect("valid metric");
        for operation in ["create", "decide", "end"] {
            store_errors.with_label_values(&[operation]);
        }
        let registry = &hoop_core::metrics::metrics().registry;
        for collector in [
            Box::new(pending.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(total.clone()),
            Box::new(decision_seconds.clone()),
            Box::new(webhook_errors.clone()),
            Box::new(store_errors.clone()),
        ] {
            registry
                .register(collector)
                .expect("hold metrics registered once");
        }
        HoldMetrics {
            pending,
            total,
            decision_seconds,
            webhook_errors,
            store_errors,
        }
    })
}

/// Serde for RFC 3339 timestamps (`time`'s own serde support is not enabled).
mod rfc3339 {
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _, ser::Error as _};
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};

    pub(super) fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.format(&Rfc3339).map_err(S::Error::custom)?)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(D::Error::custom)
    }

    pub(super) mod option {
        use serde::{Deserialize as _, Deserializer, Serializer};
        use time::OffsetDateTime;

        #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<T>`.
        pub(in super::super) fn serialize<S: Serializer>(
            at: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, s),
                None => s.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            #[derive(serde::Deserialize)]
            struct Wrapped(#[serde(with = "super")] OffsetDateTime);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(at)| at))
        }
    }
}

#[cfg(test)]
mod tests;
