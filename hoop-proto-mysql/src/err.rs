//! ERR packet and MariaDB progress packet (S)
//!
//! ERR is `0xFF code:u16 ['#' sqlstate:5] message`. The SQLSTATE marker is
//! absent in the ERR a server sends instead of a greeting (no capabilities
//! are agreed yet). hoop encodes ERRs of its own for refusals, denials and
//! timeouts.
//!
//! MariaDB reuses the header for progress reports: `0xFF 0xFFFF` then
//! `1 stage max_stage progress:u24 info:lenenc`. They arrive (any number of
//! times) before the real reply of a long statement, only to clients that
//! set `MARIADB_PROGRESS`, and are **not** terminal. hoop sends them itself
//! to show a held statement to the `mariadb` CLI.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{MessageError, Reader, put_lenenc_bytes, put_u24};

/// The first byte of an ERR (and progress) packet.
pub const ERR_HEADER: u8 = 0xFF;
/// The error code that marks a MariaDB progress packet.
pub const PROGRESS_CODE: u16 = 0xFFFF;
/// Servers cut error messages at this many bytes (`MYSQL_ERRMSG_SIZE`).
pub const MAX_MESSAGE_LEN: usize = 512;

/// Error codes and SQLSTATEs hoop answers with, as the server would.
pub mod codes {
    /// `ER_UNKNOWN_COM_ERROR`: a command hoop does not forward (replication,
    /// clone, unknown bytes).
    pub const UNKNOWN_COMMAND: (u16, [u8; 5]) = (1047, *b"08S01");
    /// `ER_SPECIFIC_ACCESS_DENIED_ERROR`: a statement policy denies.
    pub const ACCESS_DENIED: (u16, [u8; 5]) = (1227, *b"42000");
    /// `ER_QUERY_INTERRUPTED`: a held statement cancelled by `KILL QUERY`.
    pub const QUERY_INTERRUPTED: (u16, [u8; 5]) = (1317, *b"70100");
    /// `ER_NOT_SUPPORTED_YET`: something hoop cannot relay (an X.509
    /// account, a pinned certificate).
    pub const NOT_SUPPORTED: (u16, [u8; 5]) = (1235, *b"42000");
    /// `ER_UNKNOWN_ERROR`: anything else.
    pub const UNKNOWN: (u16, [u8; 5]) = (1105, *b"HY000");
    /// `ER_NET_PACKET_TOO_LARGE`: a packet over the configured maximum.
    pub const PACKET_TOO_LARGE: (u16, [u8; 5]) = (1153, *b"08S01");
    /// `ER_STATEMENT_TIMEOUT` (MariaDB): a hold that timed out.
    pub const TIMEOUT: (u16, [u8; 5]) = (1969, *b"70100");
}

/// ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    /// The error code (e.g. 1064, 1146).
    pub code: u16,
    /// The SQLSTATE, when the marker was present.
    pub sql_state: Option<[u8; 5]>,
    /// The message (in `character_set_results`).
    pub message: Bytes,
}

impl ErrPacket {
    /// An ERR to send.
    pub fn new(code: u16, sql_state: [u8; 5], message: impl Into<Bytes>) -> Self {
        Self {
            code,
            sql_state: Some(sql_state),
            message: message.into(),
        }
    }

    /// An ERR from one of [`codes`].
    pub fn from_code(code: (u16, [u8; 5]), message: impl Into<Bytes>) -> Self {
        Self::new(code.0, code.1, message)
    }

    /// Parses an ERR payload (not a progress packet: see [`is_progress`]).
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let header = r.u8("ERR header")?;
        if header != ERR_HEADER {
            return Err(MessageError::UnexpectedHeader {
                message: "ERR",
                expected: ERR_HEADER,
                found: header,
            });
        }
        let code = r.u16("ERR code")?;
        if code == PROGRESS_CODE {
            return Err(MessageError::InvalidValue {
                field: "ERR code (0xFFFF is a progress packet)",
                value: u64::from(code),
            });
        }
        let sql_state = if r.peek() == Some(b'#') {
            r.skip(1, "ERR SQLSTATE marker")?;
            Some(r.array::<5>("ERR SQLSTATE")?)
        } else {
            None
        };
        Ok(Self {
            code,
            sql_state,
            message: Bytes::copy_from_slice(r.take_rest()),
        })
    }

    /// The SQLSTATE as text, when present and ASCII.
    pub fn sql_state_str(&self) -> Option<&str> {
        self.sql_state
            .as_ref()
            .and_then(|s| std::str::from_utf8(s).ok())
    }

    /// Encodes the payload. A message longer than servers send is cut, on a
    /// UTF-8 character boundary when it is UTF-8.
    pub fn encode(&self) -> Bytes {
        let mut message = &self.message[..];
        if message.len() > MAX_MESSAGE_LEN {
            let mut end = MAX_MESSAGE_LEN;
            if std::str::from_utf8(message).is_ok() {
                while end > 0 && (message[end] & 0xC0) == 0x80 {
                    end -= 1;
                }
            }
            message = &message[..end];
        }
        let mut out = BytesMut::with_capacity(9 + message.len());
        out.put_u8(ERR_HEADER);
        out.put_u16_le(self.code);
        if let Some(state) = &self.sql_state {
            out.put_u8(b'#');
            out.put_slice(state);
        }
        out.put_slice(message);
        out.freeze()
    }
}

/// Whether a server payload is a MariaDB progress packet.
pub fn is_progress(payload: &[u8]) -> bool {
    payload.starts_with(&[ERR_HEADER, 0xFF, 0xFF])
}

/// MariaDB progress report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The current stage (1-based).
    pub stage: u8,
    /// The number of stages.
    pub max_stage: u8,
    /// Progress within the stage, in thousandths of a percent (0..=100000).
    pub progress: u32,
    /// What the server is doing (`thd->proc_info`), shown by the client.
    pub info: Bytes,
}

impl Progress {
    /// Parses a progress payload.
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        if !is_progress(payload) {
            return Err(MessageError::InvalidValue {
                field: "progress header",
                value: u64::from(payload.first().copied().unwrap_or(0)),
            });
        }
        let mut r = Reader::new(&payload[3..]);
        // The count of strings that follow; the server always sends 1.
        let strings = r.u8("progress string count")?;
        if strings != 1 {
            return Err(MessageError::InvalidValue {
                field: "progress string count",
                value: u64::from(strings),
            });
        }
        let stage = r.u8("progress stage")?;
        let max_stage = r.u8("progress max stage")?;
        let progress = r.u24("progress")?;
        let info = Bytes::copy_from_slice(r.lenenc_bytes("progress info")?);
        r.finish("progress")?;
        Ok(Self {
            stage,
            max_stage,
            progress,
            info,
        })
    }

    /// Encodes the payload (progress is capped at 100%).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(10 + self.info.len());
        out.put_slice(&[ERR_HEADER, 0xFF, 0xFF, 1, self.stage, self.max_stage]);
        put_u24(&mut out, self.progress.min(100_000));
        put_lenenc_bytes(&mut out, &self.info);
        out.freeze()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn err_round_trips_with_and_without_sqlstate() {
        let e = ErrPacket::new(1146, *b"42S02", "Table 'x.t' doesn't exist");
        let raw = e.encode();
        assert_eq!(&raw[..9], b"\xff\x7a\x04#42S02");
        assert_eq!(ErrPacket::parse(&raw).unwrap(), e);
        assert_eq!(e.sql_state_str(), Some("42S02"));
        let refusal = ErrPacket::from_code(codes::ACCESS_DENIED, "hoop: denied by policy");
        assert_eq!(&refusal.encode()[..9], b"\xff\xcb\x04#42000");
        let bare = b"\xff\x10\x04Too many connections";
        let p = ErrPacket::parse(bare).unwrap();
        assert_eq!((p.code, p.sql_state), (1040, None));
        assert_eq!(&p.encode()[..], bare);
        assert!(ErrPacket::parse(b"\xff\x01").is_err());
        assert!(ErrPacket::parse(b"\xff\x01\x00#42").is_err());
        assert!(ErrPacket::parse(b"\x00\x01\x00").is_err());
        assert!(ErrPacket::parse(b"\xff\xff\xff\x01").is_err());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let e = ErrPacket::new(1, *b"HY000", "é".repeat(400));
        let raw = e.encode();
        let msg = &raw[9..];
        assert!(msg.len() <= MAX_MESSAGE_LEN);
        assert!(std::str::from_utf8(msg).is_ok());
    }

    #[test]
    fn progress_round_trips_and_is_not_an_error() {
        let p = Progress {
            stage: 1,
            max_stage: 2,
            progress: 50_000,
            info: Bytes::from_static(b"awaiting approval: hoop holds approve 7"),
        };
        let raw = p.encode();
        assert!(is_progress(&raw));
        assert_eq!(Progress::parse(&raw).unwrap(), p);
        assert!(ErrPacket::parse(&raw).is_err());
        for cut in 0..raw.len() {
            assert!(Progress::parse(&raw[..cut]).is_err());
        }
    }
}
