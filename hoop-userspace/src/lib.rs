//! hoop: transparent, eBPF-assisted governance for database connections.
//!
//! The pure cores (protocol codecs, policy, masking, recording format) do no
//! I/O; connection tasks wire them together. See `../shared/DESIGN.md` for
//! the architecture.

pub mod admin;
pub mod agent;
pub mod app;
pub mod config;
pub mod exec;
pub mod govern;
pub mod hold;
pub mod hooks;
pub mod intercept;
pub mod mask;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod proxy;
pub mod record;
pub mod serve;
pub mod session;
pub mod statement;
