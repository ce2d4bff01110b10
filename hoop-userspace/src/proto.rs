//! Wire protocols, as pure codecs: bytes in, typed views and frames out, no I/O.
//!
//! Connection handling lives in [`crate::proxy`]; everything here can be unit
//! tested and fuzzed directly.

pub mod pg;
