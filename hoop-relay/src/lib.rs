//! The protocol-independent machinery of a proxied session, shared by every
//! wire-protocol driver:
//!
//! - [`io`]: both legs of a session in one task ([`io::Duplex`]): queues
//!   written with vectored writes, per-leg wakers, backpressure;
//! - [`hold`]: waiting on a held statement ([`hold::ActiveHold`]);
//! - [`stream`]: a leg that is plaintext or TLS ([`Stream`]);
//! - [`tls`]: TLS on both legs (certificates, upstream verification modes);
//! - [`dial`]: upstream connections, marked so hoop's own programs never
//!   redirect them;
//! - [`event_loop`]: hoop's own relay loop for plaintext sessions
//!   (`proxy.event_loop: hoop`), the one place that needs `unsafe`.

#![deny(unsafe_code)]

pub mod dial;
pub mod event_loop;
pub mod hold;
pub mod io;
pub mod stream;
pub mod tls;

pub use stream::Stream;
