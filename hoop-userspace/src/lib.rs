//! hoop: transparent, eBPF-assisted governance for database connections.
//!
//! The pure cores (protocol codecs, policy, masking, recording format) do no
//! I/O; connection tasks in [`proxy`] wire them together. See
//! `../shared/DESIGN.md` for the architecture.

pub mod config;
pub mod hooks;
pub mod mask;
pub mod metrics;
pub mod proxy;
pub mod proto;
pub mod session;
pub mod statement;
