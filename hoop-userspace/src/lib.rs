//! hoop: transparent, eBPF-assisted governance for database connections.
//!
//! This crate is the `hoop` binary's own part: the eBPF loader and
//! attachment ([`intercept`]), the accept loop that routes each redirected
//! connection to its protocol's driver ([`serve`]), `hoop exec` and
//! `hoop agent`, the admin API and the CLIs. The governance and protocol
//! parts are crates of their own: `hoop-core` (the neutral vocabulary and
//! hooks), `hoop-sql`, `hoop-policy`, `hoop-mask`, `hoop-hold`,
//! `hoop-record`, `hoop-govern` (the hooks implemented), `hoop-relay` (the
//! protocol-independent half of a session), and one crate per wire
//! protocol (`hoop-proto-pg` codecs, `hoop-pg` driver). See
//! `../shared/DESIGN.md` for the architecture.

#![deny(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod app;
pub mod config;
pub mod exec;
pub mod hold_cli;
pub mod intercept;
pub mod serve;
