//! OK packet and session-state tracking (S)
//!
//! `header affected_rows:lenenc last_insert_id:lenenc status:u16
//! warnings:u16` then, with `SESSION_TRACK`, an optional length-encoded
//! info string and, when `SESSION_STATE_CHANGED` is set, a block of
//! session-state changes; without it, the info runs to the end.
//!
//! The header is 0x00, or 0xFE where an OK ends a result set under
//! `DEPRECATE_EOF` (see [`crate::eof`] for how the two 0xFE forms differ).
//!
//! The state changes are how hoop follows the session without parsing
//! every `SET`: the current schema (`USE`, `COM_INIT_DB`), the system
//! variables the server tracks (`character_set_client`, `autocommit`,
//! `sql_mode` when `session_track_system_variables` names it), and the
//! transaction state.

use bytes::{BufMut, Bytes, BytesMut};

use crate::capabilities::Capabilities;
use crate::status::StatusFlags;
use crate::wire::{MessageError, Reader, put_lenenc_bytes, put_lenenc_int};

/// The header of an OK packet.
pub const OK_HEADER: u8 = 0x00;
/// The header of an OK packet that ends a result set under `DEPRECATE_EOF`.
pub const OK_EOF_HEADER: u8 = 0xFE;

/// Session-state change types (`SESSION_TRACK_*`).
pub mod track {
    /// A system variable changed: name and new value.
    pub const SYSTEM_VARIABLES: u8 = 0;
    /// The current schema changed.
    pub const SCHEMA: u8 = 1;
    /// Some session state changed ("1").
    pub const STATE_CHANGE: u8 = 2;
    /// GTIDs of the committed transaction.
    pub const GTIDS: u8 = 3;
    /// Transaction characteristics (`SET TRANSACTION …`, `START TRANSACTION …`).
    pub const TRANSACTION_CHARACTERISTICS: u8 = 4;
    /// Transaction state (8 characters, `T_______` etc.).
    pub const TRANSACTION_STATE: u8 = 5;
}

/// One session-state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange<'a> {
    /// A system variable and its new value.
    SystemVariable {
        /// Its name (`character_set_client`, `sql_mode`, `autocommit`…).
        name: &'a [u8],
        /// Its new value.
        value: &'a [u8],
    },
    /// The new current schema.
    Schema(&'a [u8]),
    /// Whether some tracked state changed.
    StateChanged(bool),
    /// GTIDs (an encoding byte, then the GTID set).
    Gtids(&'a [u8]),
    /// Transaction characteristics as SQL.
    TransactionCharacteristics(&'a [u8]),
    /// Transaction state.
    TransactionState(&'a [u8]),
    /// A type this codec does not know, kept whole.
    Unknown {
        /// The type byte.
        kind: u8,
        /// Its data.
        data: &'a [u8],
    },
}

/// Parses a session-state block (without its own length prefix).
pub fn parse_session_changes(block: &[u8]) -> Result<Vec<SessionChange<'_>>, MessageError> {
    let mut r = Reader::new(block);
    let mut out = Vec::new();
    while !r.is_empty() {
        let kind = r.u8("session state type")?;
        let data = r.lenenc_bytes("session state data")?;
        let mut d = Reader::new(data);
        match kind {
            track::SYSTEM_VARIABLES => {
                // One entry per variable (MySQL); accept several in one
                // entry too.
                while !d.is_empty() {
                    let name = d.lenenc_bytes("tracked variable name")?;
                    let value = d.lenenc_bytes("tracked variable value")?;
                    out.push(SessionChange::SystemVariable { name, value });
                }
            }
            track::SCHEMA => {
                out.push(SessionChange::Schema(d.lenenc_bytes("tracked schema")?));
                d.finish("tracked schema")?;
            }
            track::STATE_CHANGE => {
                let flag = d.lenenc_bytes("tracked state change")?;
                d.finish("tracked state change")?;
                out.push(SessionChange::StateChanged(flag == b"1"));
            }
            track::GTIDS => out.push(SessionChange::Gtids(data)),
            track::TRANSACTION_CHARACTERISTICS => {
                let s = d.lenenc_bytes("tracked transaction characteristics")?;
                d.finish("tracked transaction characteristics")?;
                out.push(SessionChange::TransactionCharacteristics(s));
            }
            track::TRANSACTION_STATE => {
                let s = d.lenenc_bytes("tracked transaction state")?;
                d.finish("tracked transaction state")?;
                out.push(SessionChange::TransactionState(s));
            }
            _ => out.push(SessionChange::Unknown { kind, data }),
        }
    }
    Ok(out)
}

/// How an OK packet carried its info string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InfoForm {
    /// Not present (`SESSION_TRACK` and nothing to say).
    Absent,
    /// Length-encoded (`SESSION_TRACK`).
    LengthEncoded,
    /// To the end of the packet.
    Rest,
}

/// OK packet, as a validated view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkPacket<'a> {
    /// 0x00, or 0xFE when it ends a result set.
    pub header: u8,
    /// Rows changed (or matched, with `FOUND_ROWS`).
    pub affected_rows: u64,
    /// The last AUTO_INCREMENT value generated.
    pub last_insert_id: u64,
    /// Status flags.
    pub status: StatusFlags,
    /// Warning count.
    pub warnings: u16,
    /// Human-readable info (`Rows matched: 1 Changed: 1 …`).
    pub info: &'a [u8],
    /// Session-state changes, when `SESSION_STATE_CHANGED` is set.
    pub session_state: Option<&'a [u8]>,
    info_form: InfoForm,
}

impl<'a> OkPacket<'a> {
    /// Parses an OK payload (header 0x00 or 0xFE) under the agreed
    /// capabilities.
    pub fn parse(payload: &'a [u8], caps: Capabilities) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let header = r.u8("OK header")?;
        if header != OK_HEADER && header != OK_EOF_HEADER {
            return Err(MessageError::UnexpectedHeader {
                message: "OK",
                expected: OK_HEADER,
                found: header,
            });
        }
        let affected_rows = r.lenenc_int("OK affected rows")?;
        let last_insert_id = r.lenenc_int("OK last insert id")?;
        let status = StatusFlags(r.u16("OK status")?);
        let warnings = r.u16("OK warnings")?;
        let mut session_state = None;
        let (info, info_form) = if caps.contains(Capabilities::SESSION_TRACK) {
            if r.is_empty() {
                (&[][..], InfoForm::Absent)
            } else {
                let info = r.lenenc_bytes("OK info")?;
                if status.contains(StatusFlags::SESSION_STATE_CHANGED) {
                    let block = r.lenenc_bytes("OK session state")?;
                    parse_session_changes(block)?;
                    session_state = Some(block);
                }
                (info, InfoForm::LengthEncoded)
            }
        } else {
            (r.take_rest(), InfoForm::Rest)
        };
        r.finish("OK")?;
        Ok(Self {
            header,
            affected_rows,
            last_insert_id,
            status,
            warnings,
            info,
            session_state,
            info_form,
        })
    }

    /// The session-state changes (validated when parsed).
    pub fn session_changes(&self) -> Vec<SessionChange<'a>> {
        self.session_state
            .and_then(|b| parse_session_changes(b).ok())
            .unwrap_or_default()
    }

    /// Encodes the payload, byte for byte what was parsed (for canonical
    /// length encodings).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16 + self.info.len());
        out.put_u8(self.header);
        put_lenenc_int(&mut out, self.affected_rows);
        put_lenenc_int(&mut out, self.last_insert_id);
        out.put_u16_le(self.status.0);
        out.put_u16_le(self.warnings);
        match self.info_form {
            InfoForm::Absent => {}
            InfoForm::Rest => out.put_slice(self.info),
            InfoForm::LengthEncoded => {
                put_lenenc_bytes(&mut out, self.info);
                if let Some(state) = self.session_state {
                    put_lenenc_bytes(&mut out, state);
                }
            }
        }
        out.freeze()
    }

    /// A plain OK (no info, no state changes) to send under `caps`.
    pub fn simple(
        header: u8,
        affected_rows: u64,
        status: StatusFlags,
        warnings: u16,
        caps: Capabilities,
    ) -> Self {
        let status = StatusFlags(status.0 & !StatusFlags::SESSION_STATE_CHANGED.0);
        Self {
            header,
            affected_rows,
            last_insert_id: 0,
            status,
            warnings,
            info: &[],
            session_state: None,
            info_form: if caps.contains(Capabilities::SESSION_TRACK) {
                InfoForm::Absent
            } else {
                InfoForm::Rest
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tracked() -> Capabilities {
        Capabilities::PROTOCOL_41 | Capabilities::SESSION_TRACK
    }

    #[test]
    fn ok_with_session_state_changes() {
        // USE db; SET NAMES latin1 as MariaDB reports them.
        let mut state = Vec::new();
        let mut schema = Vec::new();
        put_lenenc_bytes(&mut schema, b"shop");
        state.push(track::SCHEMA);
        put_lenenc_bytes(&mut state, &schema);
        let mut var = Vec::new();
        put_lenenc_bytes(&mut var, b"character_set_client");
        put_lenenc_bytes(&mut var, b"latin1");
        state.push(track::SYSTEM_VARIABLES);
        put_lenenc_bytes(&mut state, &var);
        state.push(track::STATE_CHANGE);
        put_lenenc_bytes(&mut state, b"\x011");
        let mut raw = vec![0, 0, 0, 0x02, 0x40, 0, 0, 0];
        put_lenenc_bytes(&mut raw, &state);

        let ok = OkPacket::parse(&raw, tracked()).unwrap();
        assert!(ok.status.contains(StatusFlags::SESSION_STATE_CHANGED));
        assert_eq!(
            ok.session_changes(),
            vec![
                SessionChange::Schema(b"shop"),
                SessionChange::SystemVariable {
                    name: b"character_set_client",
                    value: b"latin1"
                },
                SessionChange::StateChanged(true),
            ]
        );
        assert_eq!(&ok.encode()[..], &raw[..]);
        for cut in 1..raw.len() {
            if let Ok(p) = OkPacket::parse(&raw[..cut], tracked()) {
                // Cut before the info: a valid shorter OK.
                assert_eq!(p.info_form, InfoForm::Absent, "cut {cut}");
            }
        }
    }

    #[test]
    fn info_forms() {
        let raw = b"\x00\x01\x00\x02\x00\x00\x00Rows matched: 1";
        let ok = OkPacket::parse(raw, Capabilities::PROTOCOL_41).unwrap();
        assert_eq!((ok.affected_rows, ok.info), (1, &b"Rows matched: 1"[..]));
        assert_eq!(&ok.encode()[..], raw);
        let ok = OkPacket::parse(b"\xfe\x00\x00\x22\x00\x00\x00", tracked()).unwrap();
        assert_eq!(ok.header, OK_EOF_HEADER);
        assert_eq!(ok.status.0, 0x22);
        let built = OkPacket::simple(0, 3, StatusFlags(2), 0, tracked()).encode();
        assert_eq!(&built[..], b"\x00\x03\x00\x02\x00\x00\x00");
        assert!(OkPacket::parse(b"\xff", tracked()).is_err());
        // A state block that does not parse is an error.
        assert!(
            OkPacket::parse(b"\x00\x00\x00\x00\x40\x00\x00\x00\x03\x01\x05a", tracked()).is_err()
        );
    }
}
