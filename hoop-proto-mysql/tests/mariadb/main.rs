//! The codec and the session state machine against the real MariaDB on
//! 127.0.0.1:3306: a client built on this crate logs in, runs every kind
//! of command, and checks that the session attributes every packet. Also
//! the lexer's claims about the server, checked against the server.
//!
//! Each test works in a database of its own (`hoop_mysql_*`), dropped at
//! the end. Without MariaDB the tests are skipped, except under `CI=true`,
//! where they fail.

mod client;
mod lexer;
mod protocol;
