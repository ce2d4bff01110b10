//! The PostgreSQL frontend/backend protocol, version 3.0.
//!
//! - [`frame`] splits a byte stream into direction-tagged frames, checking the
//!   declared length before any allocation.
//! - One module per message family gives typed, validated views over a frame
//!   body (`&[u8]` borrowed from the frame's `Bytes`), plus builders for the
//!   messages the proxy synthesizes.
//! - [`session`] is the pure session state machine: phases, transaction
//!   status, prepared statements and portals, and the queue of replies the
//!   server still owes.

#![deny(unsafe_code)]

pub mod auth;
pub mod copy;
pub mod copy_data;
pub mod extended;
pub mod frame;
pub mod function;
pub mod message;
pub mod notice;
pub mod notification;
pub mod query;
pub mod replies;
pub mod rows;
pub mod session;
pub mod startup;
pub mod status;
pub mod wire;

pub use frame::{Direction, Frame, FrameDecoder, FrameError, Peek};
pub use wire::MessageError;
