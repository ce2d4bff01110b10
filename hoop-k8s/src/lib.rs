//! hoop on Kubernetes.
//!
//! - [`config`]: the `kubernetes:` section.
//! - [`workload`]: a pod's identity ([`Workload`]).
//! - [`opt_in`]: which pods are governed (`hoop.dev/govern`), a pure function.
//! - [`cgroup_path`]: from a pod to its cgroup v2 directory.
//!
//! The network-namespace plumbing and the eBPF side live with the
//! interceptor (`hoop::intercept`); this crate knows nothing of eBPF.
#![forbid(unsafe_code)]

pub mod cgroup_path;
pub mod config;
pub mod opt_in;
pub mod workload;

pub use config::{KubernetesConfig, Mode};
pub use workload::Workload;
