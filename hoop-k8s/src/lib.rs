//! hoop on Kubernetes.
//!
//! - [`config`]: the `kubernetes:` section.
//! - [`workload`]: a pod's identity ([`Workload`]).
//! - [`opt_in`]: which pods are governed (`hoop.dev/govern`), a pure function.
//! - [`canary`]: the start-up gate behind `hoop await`.
//! - [`cgroup_path`]: from a pod to its cgroup v2 directory.
//! - [`pod`]: the parts of pods and namespaces hoop reads.
//! - [`discovery`]: the watchers (this node's pods, all namespaces) driving
//!   the reconciler.
//! - [`events`]: Kubernetes Events on governed/released/failed pods.
//! - [`holds`]: holds in the Kubernetes API (`HoldRequest`s), the
//!   cluster's shared hold store.
//! - [`reconcile`]: what the watchers want vs what is attached, by pod UID,
//!   acting through a [`PodGovernor`] the agent implements.
//! - [`sidecar`]: sidecar mode, governing the own pod without API access.
//! - [`status`]: what is governed now (`/ready`, `hoop await`).
//! - [`metrics`]: `hoop_pods{state,reason}` and friends.
//!
//! The network-namespace plumbing and the eBPF side live with the
//! interceptor (`hoop::intercept`); this crate knows nothing of eBPF.
#![forbid(unsafe_code)]

pub mod canary;
pub mod cgroup_path;
pub mod config;
pub mod discovery;
pub mod events;
pub mod holds;
pub mod metrics;
pub mod opt_in;
pub mod pod;
pub mod reconcile;
pub mod sidecar;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod workload;

pub use config::{KubernetesConfig, Mode};
pub use reconcile::{GovernError, GovernRequest, PodGovernor, Reconciler};
pub use status::StatusBoard;
pub use workload::Workload;
