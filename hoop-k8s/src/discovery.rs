//! The node agent's discovery loop: kube-runtime watchers on this node's
//! pods (field selector `spec.nodeName=<node>`) and on namespaces
//! (metadata only), feeding the [`Reconciler`], plus its resync and retry
//! timers.
//!
//! The API server comes from the in-cluster service account, or from
//! `KUBECONFIG` (which is how tests point hoop at their stand-in server):
//! [`client`]. Watch errors (API server unreachable, 410 Gone, a malformed
//! object) are logged and counted by the reconciler; the watcher retries
//! with backoff and, after a re-list, the reconciler cleans up what it
//! missed. Governed pods stay governed throughout.

use std::{future::Future, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt as _, utils::Backoff, watcher},
};
use tracing::info;

use crate::reconcile::{PodGovernor, Reconciler};

/// Why no Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
#[error(
    "no Kubernetes API access: neither the in-cluster service account nor KUBECONFIG \
     (or ~/.kube/config) gave a usable configuration"
)]
pub struct ClientError(#[source] pub kube::Error);

/// A client for the in-cluster API server, or the one `KUBECONFIG` names.
pub async fn client() -> Result<Client, ClientError> {
    Client::try_default().await.map_err(ClientError)
}

/// Exponential backoff for the watchers (kube-runtime's default is 800 ms
/// doubling to 30 s; tests shorten it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchBackoff {
    /// First delay after an error.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(800),
            max: Duration::from_secs(30),
        }
    }
}

/// The running state of a [`WatchBackoff`].
#[derive(Debug, Clone)]
pub(crate) struct Delays {
    policy: WatchBackoff,
    next: Duration,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        Some(d)
    }
}

impl Backoff for Delays {
    fn reset(&mut self) {
        self.next = self.policy.initial;
    }
}

impl WatchBackoff {
    pub(crate) fn delays(self) -> Delays {
        Delays {
            policy: self,
            next: self.initial,
        }
    }
}

/// What the discovery loop needs besides the reconciler.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// This node's name (`spec.nodeName` of its pods).
    pub node_name: String,
    /// How often every pod is re-checked.
    pub resync_interval: Duration,
    /// Watch retry backoff.
    pub backoff: WatchBackoff,
}

/// Runs discovery until `shutdown` completes. Never returns early: every
/// error is retried.
pub async fn run<G: PodGovernor>(
    client: Client,
    settings: &DiscoverySettings,
    reconciler: &mut Reconciler<G>,
    shutdown: impl Future<Output = ()>,
) {
    let selector = format!("spec.nodeName={}", settings.node_name);
    let pods = watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&selector),
    )
    .backoff(settings.backoff.delays());
    // `PartialObjectMeta` makes kube ask for the metadata-only form.
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default(),
    )
    .backoff(settings.backoff.delays());
    // Boxed: the watcher state machines are large, and the caller's future
    // should not carry them inline.
    let mut pods = Box::pin(pods);
    let mut namespaces = Box::pin(namespaces);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut resync = tokio::time::interval(settings.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    info!(node = %settings.node_name, "watching this node's pods and all namespaces");
    loop {
        let retry_at = reconciler.next_retry();
        tokio::select! {
            () = &mut shutdown => break,
            event = pods.next() => match event {
                Some(Ok(e)) => reconciler.pod_event(e).await,
                Some(Err(e)) => reconciler.api_error("pods", &e),
                None => break,
            },
            event = namespaces.next() => match event {
                Some(Ok(e)) => reconciler.namespace_event(e).await,
                Some(Err(e)) => reconciler.api_error("namespaces", &e),
                None => break,
            },
            _ = resync.tick() => reconciler.resync().await,
            () = sleep_until(retry_at), if retry_at.is_some() => reconciler.retry_due().await,
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut d = WatchBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        }
        .delays();
        let got: Vec<u128> = d.by_ref().take(4).map(|d| d.as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        d.reset();
        assert_eq!(d.next(), Some(Duration::from_millis(100)));
    }
}
