//! EOF packet (S), and how a result set ends in both forms.
//!
//! Without `DEPRECATE_EOF`, column definitions and rows each end with a
//! classic EOF: `0xFE warnings:u16 status:u16` (5 bytes). With it, no EOF
//! follows the column definitions, and the rows end with an OK packet whose
//! header is 0xFE ([`crate::ok::OkPacket`]).
//!
//! A text row can also start with 0xFE (a first value of 16 MiB or more,
//! whose length is an 8-byte length-encoded integer), so the header alone
//! does not decide. The rule, as MariaDB's documentation, Vitess and
//! mysql_async apply it: a 0xFE packet ends the rows when its logical
//! length is under 0xFFFFFF with `DEPRECATE_EOF`, or under 9 without.

use bytes::{BufMut, Bytes, BytesMut};

use crate::capabilities::Capabilities;
use crate::frame::MAX_CHUNK;
use crate::status::StatusFlags;
use crate::wire::{MessageError, Reader};

/// The first byte of an EOF packet (and of the OK that replaces it).
pub const EOF_HEADER: u8 = 0xFE;

/// Whether a packet of logical length `len` that starts with `first` ends a
/// run of rows (or, without `DEPRECATE_EOF`, of column definitions).
pub fn is_end_of_rows(first: u8, len: usize, caps: Capabilities) -> bool {
    first == EOF_HEADER
        && if caps.contains(Capabilities::DEPRECATE_EOF) {
            len < MAX_CHUNK
        } else {
            len < 9
        }
}

/// Whether a packet is a classic EOF (what ends column definitions without
/// `DEPRECATE_EOF`, and the parameter and column blocks of a prepare reply).
pub fn is_classic_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&EOF_HEADER) && payload.len() < 9
}

/// Classic EOF packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EofPacket {
    /// Warning count.
    pub warnings: u16,
    /// Status flags.
    pub status: StatusFlags,
}

impl EofPacket {
    /// Parses a 4.1 EOF payload (5 bytes).
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let header = r.u8("EOF header")?;
        if header != EOF_HEADER {
            return Err(MessageError::UnexpectedHeader {
                message: "EOF",
                expected: EOF_HEADER,
                found: header,
            });
        }
        let warnings = r.u16("EOF warnings")?;
        let status = StatusFlags(r.u16("EOF status")?);
        r.finish("EOF")?;
        Ok(Self { warnings, status })
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(5);
        out.put_u8(EOF_HEADER);
        out.put_u16_le(self.warnings);
        out.put_u16_le(self.status.0);
        out.freeze()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn both_end_forms_and_huge_rows() {
        let deprecate = Capabilities::PROTOCOL_41 | Capabilities::DEPRECATE_EOF;
        let classic = Capabilities::PROTOCOL_41;
        assert!(is_end_of_rows(0xFE, 5, classic));
        assert!(!is_end_of_rows(0xFE, 9, classic));
        assert!(is_end_of_rows(0xFE, 7, deprecate));
        assert!(
            is_end_of_rows(0xFE, 40, deprecate),
            "an OK with session state"
        );
        // A text row whose first value is 16 MiB: 0xFE + 8-byte length + data.
        assert!(!is_end_of_rows(0xFE, 9 + (1 << 24), deprecate));
        assert!(!is_end_of_rows(0x00, 5, classic));

        let eof = EofPacket {
            warnings: 1,
            status: StatusFlags(0x0042),
        };
        let raw = eof.encode();
        assert_eq!(&raw[..], b"\xfe\x01\x00\x42\x00");
        assert_eq!(EofPacket::parse(&raw).unwrap(), eof);
        assert!(is_classic_eof(&raw));
        assert!(EofPacket::parse(&raw[..4]).is_err());
        assert!(EofPacket::parse(b"\xfe\x00\x00\x00\x00\x00").is_err());
    }
}
