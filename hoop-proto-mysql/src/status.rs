//! Server status flags, carried by OK and EOF packets (and the greeting).
//!
//! They say whether a transaction is open, whether more result sets follow,
//! whether a cursor is open, and two `sql_mode` settings that change how SQL
//! is tokenized (`NO_BACKSLASH_ESCAPES`, and on MariaDB `ANSI_QUOTES`).

use std::fmt;

/// A set of server status flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatusFlags(pub u16);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl StatusFlags {
            $($(#[$doc])* pub const $name: Self = Self($value);)*
        }
        const NAMES: &[(&str, u16)] = &[$((stringify!($name), $value)),*];
    };
}

flags! {
    /// A transaction is open (`SERVER_STATUS_IN_TRANS`).
    IN_TRANS = 0x0001;
    /// Autocommit is on.
    AUTOCOMMIT = 0x0002;
    /// Another result set follows (`SERVER_MORE_RESULTS_EXISTS`).
    MORE_RESULTS_EXISTS = 0x0008;
    /// The statement used no good index.
    QUERY_NO_GOOD_INDEX_USED = 0x0010;
    /// The statement used no index.
    QUERY_NO_INDEX_USED = 0x0020;
    /// COM_STMT_EXECUTE opened a cursor: rows come from COM_STMT_FETCH.
    CURSOR_EXISTS = 0x0040;
    /// The cursor is exhausted (the last COM_STMT_FETCH reply).
    LAST_ROW_SENT = 0x0080;
    /// The current schema was dropped.
    DB_DROPPED = 0x0100;
    /// `sql_mode` has NO_BACKSLASH_ESCAPES: a backslash in a string is an
    /// ordinary character.
    NO_BACKSLASH_ESCAPES = 0x0200;
    /// A prepared statement's metadata changed (re-prepared).
    METADATA_CHANGED = 0x0400;
    /// The statement was logged as slow.
    QUERY_WAS_SLOW = 0x0800;
    /// The result set holds a CALL's OUT parameters.
    PS_OUT_PARAMS = 0x1000;
    /// A read-only transaction is open.
    IN_TRANS_READONLY = 0x2000;
    /// Session-state changes follow in this OK packet.
    SESSION_STATE_CHANGED = 0x4000;
    /// MariaDB only: `sql_mode` has ANSI_QUOTES (`"` quotes identifiers).
    /// MySQL never sets it, so its absence proves nothing there.
    ANSI_QUOTES = 0x8000;
}

impl StatusFlags {
    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The transaction state these flags report.
    pub fn transaction(self) -> TransactionStatus {
        if self.contains(Self::IN_TRANS_READONLY) {
            TransactionStatus::InReadOnlyTransaction
        } else if self.contains(Self::IN_TRANS) {
            TransactionStatus::InTransaction
        } else {
            TransactionStatus::Idle
        }
    }
}

impl fmt::Debug for StatusFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(_, v)| self.0 & v != 0)
            .map(|(n, _)| *n)
            .collect();
        write!(f, "StatusFlags({:#06x}: {})", self.0, names.join("|"))
    }
}

/// The transaction state from the last status flags the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransactionStatus {
    /// No transaction open.
    #[default]
    Idle,
    /// A read-write transaction is open.
    InTransaction,
    /// A read-only transaction is open.
    InReadOnlyTransaction,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_state_and_names() {
        assert_eq!(StatusFlags(0x0002).transaction(), TransactionStatus::Idle);
        assert_eq!(
            StatusFlags(0x0003).transaction(),
            TransactionStatus::InTransaction
        );
        assert_eq!(
            StatusFlags(0x2001).transaction(),
            TransactionStatus::InReadOnlyTransaction
        );
        assert_eq!(
            format!("{:?}", StatusFlags(0x000A)),
            "StatusFlags(0x000a: AUTOCOMMIT|MORE_RESULTS_EXISTS)"
        );
    }
}
