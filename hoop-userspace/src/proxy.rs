//! Connection handling: the async drivers that wire the pure protocol codecs
//! ([`crate::proto`]) to governance ([`crate::hooks`]).

pub mod dial;
pub mod event_loop;
pub mod pg;
