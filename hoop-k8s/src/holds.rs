//! Holds in the Kubernetes API: the cluster's shared hold store.
//!
//! Every hold an agent makes becomes a `HoldRequest` (`holdrequests.hoop.dev/v1`,
//! namespaced, with a status subresource; the CRD is `k8s/holdrequest-crd.yaml`)
//! in hoop's namespace, labelled `hoop.dev/node=<node>`:
//!
//! - `spec`: the masked statement, the rule (name, message, approver
//!   groups, approvals needed), the session and the workload identity (the
//!   pod), when it was made and when it times out, and the owning agent
//!   (`owner.node`, `owner.instance`: one id per agent process);
//! - `status`: `state` (pending, approved, denied, timeout, withdrawn), the
//!   decisions, `decider`, `reason`, `decidedAt`.
//!
//! [`KubeHoldStore`] is the [`HoldStore`] the registry files holds with and
//! decides them through. A decision is a `PUT …/status` carrying the
//! `resourceVersion` it was computed from: of two concurrent deciders one
//! wins and the other gets a 409 from the API server, re-reads the hold,
//! and is refused with [`HoldError::AlreadyFinal`] (409 from hoop's admin
//! API) when the winner ended it.
//!
//! [`run`] watches every `HoldRequest` of the namespace and mirrors them
//! into the agent's registry, which is what `GET /api/holds`, the approvals
//! page and Slack show. The owning agent's registry resolves its waiting
//! ticket when the mirror shows its hold final — once: the registry's state
//! machine ends a hold once and a ticket hands out its outcome once.
//!
//! Life cycle: a pending hold of this node whose `owner.instance` is not
//! this process is an orphan of an agent that restarted (its client was
//! that agent's connection), and is marked withdrawn. A hold still pending a
//! minute after it expired was abandoned by an agent that is gone (a node
//! removed): any agent marks it timed out, and decisions on an expired hold
//! are refused. Final holds are deleted `retention` after they ended.

use std::{borrow::Cow, future::Future, sync::Arc, time::Duration};

use futures::StreamExt as _;
use hoop_core::PodIdentity;
use hoop_hold::{
    DecideError, Decider, Decision, HoldError, HoldRegistry, HoldState, HoldStore, HoldView,
    StoreError,
    registry::{DecisionRecord, HoldSession},
    store::{StoreFuture, apply_decision, conclude},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::discovery::WatchBackoff;

/// The API group.
pub const GROUP: &str = "hoop.dev";
/// The version.
pub const VERSION: &str = "v1";
/// The kind.
pub const KIND: &str = "HoldRequest";
/// The plural (the resource's URL segment).
pub const PLURAL: &str = "holdrequests";
/// The label naming the node of the agent that owns a hold.
pub const NODE_LABEL: &str = "hoop.dev/node";
/// How often a decision is retried after a `resourceVersion` conflict that
/// left the hold pending (another approver's approval of a
/// `min_approvals > 1` hold, or the owner's status write).
const CONFLICT_RETRIES: usize = 5;
/// How long after its expiry a hold still pending in the API counts as
/// abandoned (its agent, which times it out, is gone) and any agent marks it
/// timed out.
const ABANDONED_AFTER: time::Duration = time::Duration::minutes(1);

/// A `HoldRequest` as stored in the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldRequest {
    /// `hoop.dev/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `HoldRequest`.
    #[serde(default)]
    pub kind: String,
    /// Name = the hold id; namespace = hoop's; labels: the node.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What is held, for whom, by which agent.
    pub spec: HoldRequestSpec,
    /// Where it is in its life (absent until the first status write:
    /// pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HoldRequestStatus>,
}

/// `spec`: fixed once the hold is made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldRequestSpec {
    /// The held statement, literals masked.
    pub statement: String,
    /// The hold rule that matched.
    pub rule: String,
    /// The rule's message.
    #[serde(default)]
    pub message: String,
    /// Groups whose members may decide (empty: any authenticated approver).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Distinct approvals required.
    pub min_approvals: u32,
    /// The session (database, user, client, original destination).
    pub session: HoldSession,
    /// The pod the session came from (absent for a session outside a pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<PodIdentity>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it times out undecided (RFC 3339).
    pub expires_at: String,
    /// The agent whose client waits on it.
    pub owner: HoldOwner,
}

/// The agent that owns a hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldOwner {
    /// Its node.
    pub node: String,
    /// Its process (changes when the agent restarts).
    pub instance: String,
}

/// `status`: written by deciders and the owning agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldRequestStatus {
    /// pending | approved | denied | timeout | withdrawn.
    pub state: Option<HoldState>,
    /// Every approval and denial, in order.
    #[serde(default)]
    pub decisions: Vec<DecisionRecord>,
    /// Approvals still missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_needed: Option<u32>,
    /// Who made the last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decider: Option<String>,
    /// Why it ended as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
}

impl kube::Resource for HoldRequest {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group((): &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version((): &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural((): &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A `HoldRequest` that is not a hold hoop can read.
#[derive(Debug, thiserror::Error)]
#[error("HoldRequest {name} is malformed: {source}")]
pub struct MalformedHold {
    /// Its name.
    pub name: String,
    /// What did not parse.
    #[source]
    pub source: serde_json::Error,
}

impl HoldRequest {
    /// The object for `view`, owned by `owner`, in `namespace`.
    pub fn from_view(view: &HoldView, namespace: &str, owner: &HoldOwner) -> Self {
        let text = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let json = serde_json::to_value(view).unwrap_or_default();
        Self {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: KIND.to_owned(),
            metadata: ObjectMeta {
                name: Some(view.id.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some([(NODE_LABEL.to_owned(), owner.node.clone())].into()),
                ..ObjectMeta::default()
            },
            spec: HoldRequestSpec {
                statement: view.statement.clone(),
                rule: view.rule.clone(),
                message: view.message.clone(),
                approvers: view.approvers.clone(),
                min_approvals: view.min_approvals,
                session: view.session.clone(),
                workload: view.workload.clone(),
                created_at: text(json["created_at"].clone()),
                expires_at: text(json["expires_at"].clone()),
                owner: owner.clone(),
            },
            status: Some(status_of(view)),
        }
    }

    /// The hold as hoop shows it.
    pub fn to_view(&self) -> Result<HoldView, MalformedHold> {
        let spec = &self.spec;
        let status = self.status.clone().unwrap_or_default();
        let json = serde_json::json!({
            "id": self.metadata.name.clone().unwrap_or_default(),
            "state": status.state.unwrap_or(HoldState::Pending),
            "statement": spec.statement,
            "rule": spec.rule,
            "message": spec.message,
            "session": spec.session,
            "workload": spec.workload,
            "created_at": spec.created_at,
            "expires_at": spec.expires_at,
            "decided_at": status.decided_at,
            "decisions": status.decisions,
            "approvers": spec.approvers,
            "min_approvals": spec.min_approvals,
            "approvals_needed": status.approvals_needed.unwrap_or(spec.min_approvals),
            "reason": status.reason,
        });
        serde_json::from_value(json).map_err(|source| MalformedHold {
            name: self.metadata.name.clone().unwrap_or_default(),
            source,
        })
    }

    fn node(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODE_LABEL))
            .map(String::as_str)
    }
}

/// The status for `view`.
fn status_of(view: &HoldView) -> HoldRequestStatus {
    let json = serde_json::to_value(view).unwrap_or_default();
    HoldRequestStatus {
        state: Some(view.state),
        decisions: view.decisions.clone(),
        approvals_needed: Some(view.approvals_needed),
        decider: view.decisions.last().map(|d| d.identity.clone()),
        reason: view.reason.clone(),
        decided_at: json["decided_at"].as_str().map(str::to_owned),
    }
}

/// Where this agent's holds go.
#[derive(Debug, Clone)]
pub struct HoldSettings {
    /// hoop's namespace (where every agent's `HoldRequest`s live).
    pub namespace: String,
    /// This agent (node and process).
    pub owner: HoldOwner,
    /// How long an ended hold stays in the API before it is deleted.
    pub retention: Duration,
    /// Watch retry backoff.
    pub backoff: WatchBackoff,
}

/// A new instance id for this agent process: `<node>-<pid>-<start time>`.
pub fn instance_id(node: &str) -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{node}-{}-{started:x}", std::process::id())
}

/// The Kubernetes API as the hold store.
#[derive(Clone)]
pub struct KubeHoldStore {
    api: Api<HoldRequest>,
    settings: Arc<HoldSettings>,
}

impl KubeHoldStore {
    /// A store in `settings.namespace`.
    pub fn new(client: Client, settings: HoldSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings: Arc::new(settings),
        }
    }

    fn unreachable(&self, what: &str, e: &kube::Error) -> StoreError {
        StoreError::new(
            format!(
                "the Kubernetes API refused or could not be reached to {what} (HoldRequests in namespace {})",
                self.settings.namespace
            ),
            e.to_string(),
        )
    }

    async fn create_hold(&self, view: HoldView) -> Result<(), StoreError> {
        let object = HoldRequest::from_view(&view, &self.settings.namespace, &self.settings.owner);
        self.api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| self.unreachable("file the hold", &e))?;
        debug!(hold = %view.id, "HoldRequest created");
        Ok(())
    }

    async fn decide_hold(
        &self,
        id: &str,
        decider: &Decider,
        decision: Decision,
        reason: Option<String>,
    ) -> Result<HoldView, DecideError> {
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut object) = self
                .api
                .get_opt(id)
                .await
                .map_err(|e| self.unreachable("read the hold", &e))?
            else {
                return Err(HoldError::NotFound { id: id.to_owned() }.into());
            };
            let mut view = object
                .to_view()
                .map_err(|e| StoreError::new(e.to_string(), e))?;
            if view.state == HoldState::Pending && view.expires_at <= now() {
                // Its agent times it out (and says so in status); until that
                // lands, or if that agent is gone, nothing can be run by it.
                return Err(HoldError::AlreadyFinal {
                    id: id.to_owned(),
                    state: HoldState::Timeout,
                }
                .into());
            }
            apply_decision(&mut view, decider, decision, reason.clone(), now())?;
            object.status = Some(status_of(&view));
            match self
                .api
                .replace_status(id, &PostParams::default(), &object)
                .await
            {
                Ok(written) => {
                    info!(hold = %id, approver = %decider.identity, ?decision, "hold decision written to the Kubernetes API");
                    return written
                        .to_view()
                        .map_err(|e| StoreError::new(e.to_string(), e).into());
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    debug!(hold = %id, "resourceVersion conflict; reading the hold again");
                }
                Err(e) => return Err(self.unreachable("write the decision", &e).into()),
            }
        }
        Err(StoreError {
            message: format!("hold {id} kept changing while the decision was written; try again"),
            source: None,
        }
        .into())
    }

    /// Writes `ended` (final) into the hold's status unless it already says so.
    async fn end_hold(&self, ended: HoldView) -> Result<(), StoreError> {
        let id = ended.id.clone();
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut object) = self
                .api
                .get_opt(&id)
                .await
                .map_err(|e| self.unreachable("read the hold", &e))?
            else {
                return Ok(());
            };
            let current = object
                .to_view()
                .map_err(|e| StoreError::new(e.to_string(), e))?;
            if current.state == ended.state {
                return Ok(());
            }
            let mut view = current.clone();
            let mut reason = ended.reason.clone();
            if current.state.is_final() {
                // A decision reached the API after the owner had ended the
                // hold: the owner's outcome is what happened to the client.
                warn!(hold = %id, api = %current.state, here = %ended.state, "a decision arrived after the hold ended on its agent");
                reason = Some(format!(
                    "{} (a decision, {}, arrived after that and was not acted on)",
                    ended.reason.as_deref().unwrap_or(ended.state.as_str()),
                    current.state
                ));
            }
            conclude(
                &mut view,
                ended.state,
                reason,
                ended.decided_at.unwrap_or_else(now),
            );
            object.status = Some(status_of(&view));
            match self
                .api
                .replace_status(&id, &PostParams::default(), &object)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(self.unreachable("mark the hold ended", &e)),
            }
        }
        Err(StoreError {
            message: format!("hold {id} kept changing while it was marked ended"),
            source: None,
        })
    }

    /// Marks an orphan of a restarted agent of this node withdrawn.
    async fn withdraw_orphan(&self, mut view: HoldView) {
        let id = view.id.clone();
        conclude(
            &mut view,
            HoldState::Withdrawn,
            Some(
                "the agent holding it restarted: the client connection waiting on it is gone"
                    .to_owned(),
            ),
            now(),
        );
        match self.end_hold(view).await {
            Ok(()) => info!(hold = %id, "orphaned hold of a restarted agent marked withdrawn"),
            Err(error) => warn!(hold = %id, %error, "cannot mark an orphaned hold withdrawn"),
        }
    }

    /// Marks abandoned holds timed out, and deletes holds that ended more
    /// than `retention` ago.
    async fn collect_garbage(&self) {
        let list = match self.api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                warn!(error = %e, "cannot list HoldRequests for garbage collection");
                return;
            }
        };
        let retention =
            time::Duration::try_from(self.settings.retention).unwrap_or(time::Duration::MAX);
        let cutoff = now() - retention;
        for object in list.items {
            let Ok(view) = object.to_view() else { continue };
            if view.state == HoldState::Pending && view.expires_at + ABANDONED_AFTER < now() {
                // Its agent would have marked it timed out: it is gone.
                let mut ended = view.clone();
                conclude(
                    &mut ended,
                    HoldState::Timeout,
                    Some(format!(
                        "timed out; the agent holding it (node {}) did not report it",
                        object.spec.owner.node
                    )),
                    now(),
                );
                match self.end_hold(ended).await {
                    Ok(()) => info!(hold = %view.id, "abandoned hold marked timed out"),
                    Err(error) => {
                        warn!(hold = %view.id, %error, "cannot mark an abandoned hold timed out");
                    }
                }
                continue;
            }
            let ended = view.decided_at.unwrap_or(view.expires_at);
            if view.state.is_final() && ended < cutoff {
                match self.api.delete(&view.id, &DeleteParams::default()).await {
                    Ok(_) => debug!(hold = %view.id, "ended hold deleted after its retention"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => warn!(hold = %view.id, error = %e, "cannot delete an ended hold"),
                }
            }
        }
    }
}

impl HoldStore for KubeHoldStore {
    fn create(&self, hold: HoldView) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(self.create_hold(hold))
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        decider: &'a Decider,
        decision: Decision,
        reason: Option<String>,
    ) -> StoreFuture<'a, Result<HoldView, DecideError>> {
        Box::pin(self.decide_hold(id, decider, decision, reason))
    }

    fn end(&self, hold: HoldView) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(self.end_hold(hold))
    }
}

fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond()).unwrap_or(now)
}

/// Mirrors every `HoldRequest` of the namespace into `registry`, withdraws
/// this node's orphans and collects garbage, until `shutdown` completes.
/// Watch errors (API server unreachable) are logged and retried.
pub async fn run(store: KubeHoldStore, registry: HoldRegistry, shutdown: impl Future<Output = ()>) {
    let stream = watcher(store.api.clone(), watcher::Config::default())
        .backoff(store.settings.backoff.delays());
    let mut stream = Box::pin(stream);
    let mut shutdown = std::pin::pin!(shutdown);
    let gc_every =
        (store.settings.retention / 2).clamp(Duration::from_secs(1), Duration::from_mins(5));
    let mut gc = tokio::time::interval(gc_every);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listing: Vec<HoldView> = Vec::new();
    info!(namespace = %store.settings.namespace, instance = %store.settings.owner.instance, "holds are shared through the Kubernetes API (HoldRequests)");
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = gc.tick() => store.collect_garbage().await,
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Init)) => listing.clear(),
                Some(Ok(watcher::Event::InitApply(object))) => {
                    if let Some(view) = readable(&object) {
                        orphan(&store, &object, &view);
                        listing.push(view);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => registry.mirror_sync(std::mem::take(&mut listing)),
                Some(Ok(watcher::Event::Apply(object))) => {
                    if let Some(view) = readable(&object) {
                        orphan(&store, &object, &view);
                        registry.mirror_upsert(view);
                    }
                }
                Some(Ok(watcher::Event::Delete(object))) => {
                    if let Some(name) = &object.metadata.name {
                        registry.mirror_remove(name);
                    }
                }
                Some(Err(error)) => warn!(%error, "watching HoldRequests failed; retrying"),
                None => break,
            },
        }
    }
}

fn readable(object: &HoldRequest) -> Option<HoldView> {
    match object.to_view() {
        Ok(view) => Some(view),
        Err(error) => {
            warn!(%error, "ignoring a malformed HoldRequest");
            None
        }
    }
}

/// A pending hold of this node made by another process of this agent.
fn orphan(store: &KubeHoldStore, object: &HoldRequest, view: &HoldView) {
    let owner = &store.settings.owner;
    if view.state == HoldState::Pending
        && object.node() == Some(owner.node.as_str())
        && object.spec.owner.instance != owner.instance
    {
        let (store, view) = (store.clone(), view.clone());
        tokio::spawn(async move { store.withdraw_orphan(view).await });
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;

    #[test]
    fn a_view_survives_the_round_trip_through_a_hold_request() {
        let json = serde_json::json!({
            "id": "h-abcdefghij", "state": "pending", "statement": "DELETE FROM t WHERE id = $1",
            "rule": "r", "message": "m", "session": {"id": "s-1", "workload": null, "client": null,
            "original_destination": null, "user": "u", "database": "d", "application_name": null},
            "workload": {"namespace": "shop", "pod": "api", "uid": "u1", "service_account": "sa",
                         "node": "n1", "labels": {"app": "api"}},
            "created_at": "2026-12-04T21:00:00.123Z", "expires_at": "2026-12-04T21:05:00.123Z",
            "decided_at": null, "decisions": [], "approvers": ["dba"], "min_approvals": 2,
            "approvals_needed": 2, "reason": null
        });
        let view: HoldView = serde_json::from_value(json).unwrap();
        let owner = HoldOwner {
            node: "n1".into(),
            instance: "n1-1".into(),
        };
        let object = HoldRequest::from_view(&view, "hoop-system", &owner);
        assert_eq!(object.node(), Some("n1"));
        let text = serde_json::to_value(&object).unwrap();
        assert_eq!(text["apiVersion"], "hoop.dev/v1");
        assert_eq!(text["spec"]["minApprovals"], 2);
        assert_eq!(text["spec"]["owner"]["instance"], "n1-1");
        assert_eq!(text["status"]["state"], "pending");
        let back: HoldRequest = serde_json::from_value(text).unwrap();
        assert_eq!(back.to_view().unwrap(), view);
    }
}
