//! Test support shared by this crate's tests and the end-to-end `tests/`
//! crate (feature `testing`):
//! - [`apiserver`]: a Kubernetes API server stand-in speaking the real list
//!   and watch protocol for pods and namespaces;
//! - [`node`]: a simulated node — a kubelet-style cgroup tree, and per pod
//!   a network namespace, a veth to the host, a sandbox process and
//!   application processes in a container cgroup.
//!
//! None of this is built into hoop itself.

pub mod apiserver;
pub mod node;
