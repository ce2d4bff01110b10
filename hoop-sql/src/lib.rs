//! SQL as hoop reads it, one dialect per server family.
//!
//! - [`SqlDialect`]: what hoop must know about one server's SQL: where its
//!   statements, strings and comments end (one tokenizer feeds splitting,
//!   fingerprints and literal redaction), how it folds identifiers, which
//!   functions run SQL or leak values, how it echoes values in errors.
//!   [`pg::Postgres`] is PostgreSQL's, [`mysql::Mysql`] MySQL's and MariaDB's.
//! - [`ParsedSql`]: a text parsed once, for classification and lineage alike.
//! - [`classify`]: what each statement does (kinds, tables, WHERE), for policy.
//! - [`names`]: table names as the server compares them, and the dotted
//!   names of policy files.
//!
//! Pure: no I/O.

#![forbid(unsafe_code)]

pub mod classify;
pub mod dialect;
pub mod mysql;
pub mod names;
pub mod parsed;
pub mod pg;

pub use classify::{ClassifiedStatement, classify};
pub use dialect::{
    CursorOp, EchoPatterns, FunctionCatalog, ParseFailure, Piece, Positioned, Routine, SessionOp,
    SplitError, SqlDialect, Volatility,
};
pub use parsed::{ParsedSql, ParsedStatement};

use hoop_core::Protocol;

/// The dialect of the server a protocol's sessions talk to.
pub fn dialect_for(protocol: Protocol) -> &'static dyn SqlDialect {
    match protocol {
        Protocol::Postgres => &pg::Postgres,
        // The MySQL driver hands governance canonical text (see
        // `mysql::canonical_text`), so one dialect serves every session.
        Protocol::Mysql => &mysql::Mysql,
    }
}
