//! hoop's MySQL and MariaDB wire protocol, as a pure codec: bytes in, typed
//! values out, values encoded back to bytes. No I/O, no sockets, no async.
//!
//! The layers, from the socket up:
//! - [`frame`]: packets (3-byte length, sequence id), reassembly of payloads
//!   of 16 MiB and more, chunked encoding, sequence-id renumbering;
//! - [`handshake`], [`auth`], [`caching_sha2`]: the connection phase
//!   (greeting, SSLRequest, HandshakeResponse41, the auth exchange);
//! - [`command`], [`execute`]: every command a client can send;
//! - [`ok`], [`err`], [`eof`], [`status`], [`column`](mod@column), [`value`],
//!   [`row_text`], [`row_binary`], [`prepare`], [`local_infile`]: what the
//!   server answers;
//! - [`capabilities`], [`collation`]: the capability bits (and the ones
//!   hoop clears), collation ids and their character sets;
//! - [`session`]: the state machine that attributes every server packet to
//!   the command (and statement) it answers;
//! - [`lexer`]: the MySQL SQL tokenizer (statement splitting, fingerprints,
//!   literal redaction) with executable comments, `sql_mode` and client
//!   character sets.
//!
//! Every view is validated once, when it is parsed; declared lengths are
//! checked against what is present (or a configured maximum) before any
//! allocation; malformed input is an error, never a panic.
#![forbid(unsafe_code)]

pub mod auth;
pub mod caching_sha2;
pub mod capabilities;
pub mod collation;
pub mod column;
pub mod command;
pub mod eof;
pub mod err;
pub mod execute;
pub mod frame;
pub mod handshake;
/// The MySQL SQL lexer lives with the MySQL SQL dialect in `hoop-sql`
/// (governance reads SQL through it); re-exported for the codec's users.
pub use hoop_sql::mysql::lexer;
pub mod local_infile;
pub mod ok;
pub mod prepare;
pub mod row_binary;
pub mod row_text;
pub mod session;
pub mod status;
pub mod value;
pub mod wide;
pub mod wire;
