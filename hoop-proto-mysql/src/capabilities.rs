//! Capability flags: what each bit means, and which ones hoop clears.
//!
//! The low 32 bits are the protocol's `CLIENT_*` flags, exchanged in the
//! greeting (low and high halves) and in the client's HandshakeResponse41.
//! MariaDB adds 32 extended flags, carried in the greeting's last 4
//! reserved bytes and in bytes 28..32 of the response's filler, and valid
//! only when the server clears bit 0 (`CLIENT_MYSQL`, MySQL's
//! `CLIENT_LONG_PASSWORD`). Like MariaDB Connector/C, [`Capabilities`] keeps
//! them in bits 32..64 of one `u64`.
//!
//! # What hoop relays
//! hoop forwards the server's own greeting and the client's own response,
//! changing only the capability bits it cannot handle, in both, so the two
//! legs agree on the protocol. It keeps only bits it understands
//! ([`HOOP_UNDERSTOOD`]: an unknown bit could change any packet's layout)
//! and clears [`HOOP_CLEARED`], each for the reason given on the constant.
//! `CLIENT_SSL` is not decided here: the driver owns it per leg.

use std::fmt;

/// A set of capability flags (standard in bits 0..32, MariaDB's extended
/// flags in bits 32..64).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u64);

macro_rules! caps {
    ($($(#[$doc:meta])* $name:ident = $bit:expr;)*) => {
        impl Capabilities {
            $($(#[$doc])* pub const $name: Self = Self(1u64 << $bit);)*
        }
        /// Every named flag with its name, in bit order.
        const NAMES: &[(&str, Capabilities)] = &[$((stringify!($name), Capabilities::$name)),*];
    };
}

caps! {
    /// `CLIENT_LONG_PASSWORD` in MySQL (new, longer password hashes; every
    /// server since 4.1 sets it). MariaDB calls it `CLIENT_MYSQL` and clears
    /// it in its greeting to announce the extended flags.
    LONG_PASSWORD = 0;
    /// Affected rows count found (matched) rows, not changed ones.
    FOUND_ROWS = 1;
    /// Column flags are 2 bytes (always set by 4.1+ clients).
    LONG_FLAG = 2;
    /// The response carries an initial schema.
    CONNECT_WITH_DB = 3;
    /// `db.table.column` is refused (ODBC-era).
    NO_SCHEMA = 4;
    /// zlib-compressed protocol: a second framing layer with its own
    /// sequence ids. Cleared by hoop (see [`HOOP_CLEARED`]).
    COMPRESS = 5;
    /// ODBC client (no effect on the protocol).
    ODBC = 6;
    /// The client can answer `LOAD DATA LOCAL INFILE` file requests.
    LOCAL_FILES = 7;
    /// Spaces are allowed before `(` after function names.
    IGNORE_SPACE = 8;
    /// The 4.1 protocol: every layout in this crate assumes it.
    PROTOCOL_41 = 9;
    /// `interactive_timeout` instead of `wait_timeout`.
    INTERACTIVE = 10;
    /// TLS: the client sends an SSLRequest and switches to TLS.
    SSL = 11;
    /// Client-side only (no SIGPIPE); never meaningful on the wire.
    IGNORE_SIGPIPE = 12;
    /// Status flags in OK/EOF packets (every 4.1+ server sets it).
    TRANSACTIONS = 13;
    /// Deprecated 4.1 flag.
    RESERVED = 14;
    /// 4.1 authentication: the auth response is length-prefixed
    /// (`CLIENT_RESERVED2` in newer MySQL headers).
    SECURE_CONNECTION = 15;
    /// Several statements in one COM_QUERY.
    MULTI_STATEMENTS = 16;
    /// Several result sets in one reply (`SERVER_MORE_RESULTS_EXISTS`).
    MULTI_RESULTS = 17;
    /// Several result sets for COM_STMT_EXECUTE (CALL).
    PS_MULTI_RESULTS = 18;
    /// Pluggable authentication: plugin names in greeting and response.
    PLUGIN_AUTH = 19;
    /// Connection attributes (key/value pairs) in the response.
    CONNECT_ATTRS = 20;
    /// The response's auth data is a length-encoded string (> 255 bytes allowed).
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 21;
    /// The client copes with an expired password (sandbox mode).
    CAN_HANDLE_EXPIRED_PASSWORDS = 22;
    /// OK packets carry session-state changes (schema, system variables…).
    SESSION_TRACK = 23;
    /// Result sets end with an OK packet (header 0xFE) instead of EOF, and
    /// no EOF follows column definitions.
    DEPRECATE_EOF = 24;
    /// MySQL 8: result sets may omit column definitions
    /// (`resultset_metadata=NONE`). Cleared by hoop.
    OPTIONAL_RESULTSET_METADATA = 25;
    /// MySQL 8.0.18: zstd-compressed protocol, with a level byte at the end
    /// of the response. Cleared by hoop.
    ZSTD_COMPRESSION_ALGORITHM = 26;
    /// MySQL 8.0.23: COM_QUERY and COM_STMT_EXECUTE carry query attributes
    /// (named parameters before the SQL). Cleared by hoop.
    QUERY_ATTRIBUTES = 27;
    /// MySQL 8.0.27: multi-factor authentication (AuthNextFactor packets).
    MULTI_FACTOR_AUTHENTICATION = 28;
    /// Reserved for a future extension of the flags. Unknown, so cleared.
    CAPABILITY_EXTENSION = 29;
    /// Client-side option (verify the server certificate); not a protocol feature.
    SSL_VERIFY_SERVER_CERT = 30;
    /// Client-side option (keep options after a failed connect).
    REMEMBER_OPTIONS = 31;
    /// MariaDB: the client shows progress packets (ERR with errno 0xFFFF,
    /// sent before the real reply). hoop parses them, and uses them to show
    /// a held statement to the `mariadb` CLI.
    MARIADB_PROGRESS = 32;
    /// MariaDB: the former COM_MULTI bit; unused, so cleared.
    MARIADB_RESERVED_1 = 33;
    /// MariaDB: COM_STMT_BULK_EXECUTE (arrays of parameters). Cleared by hoop.
    MARIADB_STMT_BULK_OPERATIONS = 34;
    /// MariaDB 10.5: column definitions carry an extra block of extended
    /// type information (json, uuid, inet6 formats). Cleared by hoop.
    MARIADB_EXTENDED_METADATA = 35;
    /// MariaDB 10.6: execute replies skip column definitions when unchanged
    /// since the prepare. Cleared by hoop.
    MARIADB_CACHE_METADATA = 36;
    /// MariaDB 11.5: bulk commands may return one result per row. Cleared by hoop.
    MARIADB_BULK_UNIT_RESULTS = 37;
}

impl Capabilities {
    /// No flags.
    pub const NONE: Self = Self(0);
    /// MariaDB's name for bit 0.
    pub const MARIADB_CLIENT_MYSQL: Self = Self::LONG_PASSWORD;

    /// From raw bits.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// From the standard flags and MariaDB's extended flags.
    pub const fn from_parts(standard: u32, mariadb: u32) -> Self {
        Self(standard as u64 | (mariadb as u64) << 32)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The standard 32 flags.
    pub const fn standard(self) -> u32 {
        self.0 as u32
    }

    /// MariaDB's 32 extended flags.
    pub const fn mariadb(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Both sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The flags in both.
    #[must_use]
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// These flags without those of `other`.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether the MariaDB extended flags are meaningful: the server
    /// cleared bit 0 in its greeting.
    pub const fn has_mariadb_extensions(self) -> bool {
        !self.contains(Self::LONG_PASSWORD)
    }

    /// The names of the flags set (unnamed bits as `bit N`).
    pub fn names(self) -> Vec<String> {
        (0..64)
            .filter(|b| self.0 & (1u64 << b) != 0)
            .map(|b| {
                NAMES
                    .iter()
                    .find(|(_, c)| c.0 == 1u64 << b)
                    .map_or_else(|| format!("bit {b}"), |(n, _)| (*n).to_owned())
            })
            .collect()
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({:#x}: {})", self.0, self.names().join("|"))
    }
}

/// Every bit whose effect on the protocol hoop knows (whether it keeps or
/// clears it). Anything else is cleared: an unknown bit could change the
/// layout of any packet hoop has to read.
pub const HOOP_UNDERSTOOD: Capabilities = Capabilities::from_parts(
    !Capabilities::CAPABILITY_EXTENSION.standard(),
    Capabilities::MARIADB_PROGRESS.mariadb()
        | Capabilities::MARIADB_STMT_BULK_OPERATIONS.mariadb()
        | Capabilities::MARIADB_EXTENDED_METADATA.mariadb()
        | Capabilities::MARIADB_CACHE_METADATA.mariadb()
        | Capabilities::MARIADB_BULK_UNIT_RESULTS.mariadb(),
);

/// The bits hoop clears in the greeting and in the client's response, so
/// neither leg uses them (see `../shared/notes/mysql-anchors.md` §1.2):
/// - `COMPRESS`, `ZSTD_COMPRESSION_ALGORITHM`: compression adds a framing
///   layer hoop does not implement; clients just run uncompressed (MySQL
///   Router does the same).
/// - `QUERY_ATTRIBUTES`: changes the COM_QUERY and COM_STMT_EXECUTE layouts.
/// - `OPTIONAL_RESULTSET_METADATA`: lets the server omit the column
///   definitions that masking needs.
/// - `MARIADB_CACHE_METADATA`: execute replies would skip column
///   definitions; hoop re-reads them on every execute.
/// - `MARIADB_EXTENDED_METADATA`: an extra block inside column definitions.
/// - `MARIADB_STMT_BULK_OPERATIONS`, `MARIADB_BULK_UNIT_RESULTS`: arrays of
///   parameters in COM_STMT_BULK_EXECUTE, not inspected by hoop.
/// - `MARIADB_RESERVED_1`, `CAPABILITY_EXTENSION`: meaning unknown.
///
/// `LOCAL_FILES` is cleared too unless LOAD DATA LOCAL INFILE is enabled:
/// see [`hoop_cleared`].
pub const HOOP_CLEARED: Capabilities = Capabilities::from_bits(
    Capabilities::COMPRESS.bits()
        | Capabilities::ZSTD_COMPRESSION_ALGORITHM.bits()
        | Capabilities::QUERY_ATTRIBUTES.bits()
        | Capabilities::OPTIONAL_RESULTSET_METADATA.bits()
        | Capabilities::CAPABILITY_EXTENSION.bits()
        | Capabilities::MARIADB_RESERVED_1.bits()
        | Capabilities::MARIADB_CACHE_METADATA.bits()
        | Capabilities::MARIADB_EXTENDED_METADATA.bits()
        | Capabilities::MARIADB_STMT_BULK_OPERATIONS.bits()
        | Capabilities::MARIADB_BULK_UNIT_RESULTS.bits(),
);

/// The bits hoop clears: [`HOOP_CLEARED`], plus `LOCAL_FILES` unless LOAD
/// DATA LOCAL INFILE is enabled (off by default: a server may request any
/// file of the client's, so it is refused unless policy allows it).
pub const fn hoop_cleared(local_infile: bool) -> Capabilities {
    if local_infile {
        HOOP_CLEARED
    } else {
        HOOP_CLEARED.union(Capabilities::LOCAL_FILES)
    }
}

/// The flags hoop leaves in a greeting or response that carried `caps`:
/// only understood ones, minus the cleared ones. Bit 0 is never changed
/// (on MariaDB its absence announces the extended flags). The MariaDB
/// extended flags are kept only when `mariadb_extensions` (the server
/// announced them).
pub fn relayed(caps: Capabilities, local_infile: bool, mariadb_extensions: bool) -> Capabilities {
    let mut kept = caps
        .intersection(HOOP_UNDERSTOOD.union(Capabilities::LONG_PASSWORD))
        .without(hoop_cleared(local_infile));
    if !mariadb_extensions {
        kept = Capabilities::from_parts(kept.standard(), 0);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_values_match_the_protocol() {
        assert_eq!(Capabilities::SSL.bits(), 0x800);
        assert_eq!(Capabilities::PROTOCOL_41.bits(), 0x200);
        assert_eq!(Capabilities::DEPRECATE_EOF.bits(), 1 << 24);
        assert_eq!(Capabilities::QUERY_ATTRIBUTES.bits(), 1 << 27);
        assert_eq!(Capabilities::MARIADB_PROGRESS.bits(), 1 << 32);
        assert_eq!(Capabilities::MARIADB_CACHE_METADATA.bits(), 1 << 36);
        assert_eq!(
            Capabilities::from_parts(0x800, 1).bits(),
            (1u64 << 32) | 0x800
        );
    }

    #[test]
    fn relay_clears_what_hoop_cannot_handle() {
        // The measured MariaDB 10.11 greeting: bit 0 clear, extensions on.
        let server = Capabilities::from_parts(0xFFFF_FFFE, 0x1D);
        assert!(server.has_mariadb_extensions());
        let kept = relayed(server, false, true);
        for gone in [
            Capabilities::COMPRESS,
            Capabilities::LOCAL_FILES,
            Capabilities::MARIADB_CACHE_METADATA,
            Capabilities::MARIADB_EXTENDED_METADATA,
            Capabilities::MARIADB_STMT_BULK_OPERATIONS,
            Capabilities::CAPABILITY_EXTENSION,
        ] {
            assert!(!kept.contains(gone), "{gone:?}");
        }
        for kept_bit in [
            Capabilities::PROTOCOL_41,
            Capabilities::DEPRECATE_EOF,
            Capabilities::SESSION_TRACK,
            Capabilities::MULTI_STATEMENTS,
            Capabilities::PLUGIN_AUTH,
            Capabilities::CONNECT_ATTRS,
            Capabilities::MARIADB_PROGRESS,
            Capabilities::SSL,
        ] {
            assert!(kept.contains(kept_bit), "{kept_bit:?}");
        }
        assert!(!kept.contains(Capabilities::LONG_PASSWORD));
        assert!(relayed(server, true, true).contains(Capabilities::LOCAL_FILES));
        assert_eq!(relayed(server, false, false).mariadb(), 0);
        assert!(format!("{kept:?}").contains("DEPRECATE_EOF"));
    }
}
