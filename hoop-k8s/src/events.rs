//! Kubernetes Events about the pods hoop governs, so `kubectl describe pod`
//! shows that (and why not) a pod is governed.
//!
//! Events are emitted on transitions only (governed, released, failed with a
//! new reason, an invalid `hoop.dev/*` value), so the agent needs `create`
//! on events and nothing else: no patching of event series. Publishing never
//! blocks the reconciler: events go through a bounded queue to a task, and
//! are dropped (and counted in the log) if the API server cannot keep up.

use std::sync::Arc;

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::Workload;

/// What happened to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// Its new connections are governed.
    Governed {
        /// The intercepted ports.
        ports: Vec<u16>,
    },
    /// hoop stopped governing it.
    Released,
    /// Governing failed (retried with backoff).
    Failed {
        /// The bounded reason.
        reason: &'static str,
        /// What failed.
        message: String,
    },
    /// A `hoop.dev/*` value was invalid (the pod is governed anyway).
    InvalidValue {
        /// What was wrong and what hoop did.
        message: String,
    },
}

impl PodEvent {
    fn parts(&self) -> (&'static str, &'static str, &'static str, String) {
        match self {
            Self::Governed { ports } => (
                "Normal",
                "Governed",
                "Govern",
                format!("hoop governs this pod's new connections to ports {ports:?}"),
            ),
            Self::Released => (
                "Normal",
                "Released",
                "Release",
                "hoop no longer governs this pod".to_owned(),
            ),
            Self::Failed { reason, message } => (
                "Warning",
                "GovernFailed",
                "Govern",
                format!("{reason}: {message}"),
            ),
            Self::InvalidValue { message } => {
                ("Warning", "InvalidOptIn", "Govern", message.clone())
            }
        }
    }
}

/// Where the reconciler sends pod events.
pub trait PodEvents: Send + Sync + 'static {
    /// Records an event about `pod`. Must not block.
    fn publish(&self, pod: &Workload, event: PodEvent);
}

/// Publishes pod events to the API server (`events.k8s.io/v1`).
#[derive(Clone)]
pub struct KubeEvents {
    tx: mpsc::Sender<(Workload, PodEvent)>,
}

/// Queue depth before events are dropped.
const QUEUE: usize = 256;

impl KubeEvents {
    /// Starts the publishing task. `instance` identifies this agent
    /// (`reportingInstance`), e.g. `hoop-agent-<node>`.
    pub fn spawn(client: Client, instance: String) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Workload, PodEvent)>(QUEUE);
        let instance: Arc<str> = instance.into();
        tokio::spawn(async move {
            while let Some((pod, event)) = rx.recv().await {
                let api: Api<Event> = Api::namespaced(client.clone(), &pod.namespace);
                let body = build(&pod, &event, &instance);
                match api.create(&PostParams::default(), &body).await {
                    Ok(_) => debug!(pod = %pod, ?event, "event recorded"),
                    Err(e) => warn!(pod = %pod, error = %e, "cannot record a Kubernetes event"),
                }
            }
        });
        Self { tx }
    }
}

impl PodEvents for KubeEvents {
    fn publish(&self, pod: &Workload, event: PodEvent) {
        if self.tx.try_send((pod.clone(), event)).is_err() {
            warn!(pod = %pod, "Kubernetes event dropped: the API server is not keeping up");
        }
    }
}

/// The `events.k8s.io/v1` Event about `pod`.
fn build(pod: &Workload, event: &PodEvent, instance: &str) -> Event {
    let (type_, reason, action, note) = event.parts();
    let now = Timestamp::now();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", pod.pod, now.as_nanosecond())),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(type_.to_owned()),
        reason: Some(reason.to_owned()),
        action: Some(action.to_owned()),
        // The API server caps notes at 1 KiB.
        note: Some(note.chars().take(1000).collect()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(pod.pod.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..ObjectReference::default()
        }),
        reporting_controller: Some("hoop.dev/agent".to_owned()),
        reporting_instance: Some(instance.to_owned()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_pod_and_say_why() {
        let pod = Workload {
            namespace: "shop".into(),
            pod: "api-1".into(),
            uid: "u-1".into(),
            ..Workload::default()
        };
        let e = build(
            &pod,
            &PodEvent::Failed {
                reason: "attach",
                message: "x".repeat(2000),
            },
            "hoop-agent-n1",
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("GovernFailed"));
        assert_eq!(e.note.as_ref().map(String::len), Some(1000));
        let r = e.regarding.expect("regarding");
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("Pod"), Some("api-1"), Some("u-1"))
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        assert!(e.metadata.name.is_some_and(|n| n.starts_with("api-1.")));
    }
}
