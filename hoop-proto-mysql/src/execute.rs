//! COM_STMT_EXECUTE (C), and the parameter block it shares with COM_QUERY's
//! query attributes.
//!
//! `0x17 statement_id:u32 flags:u8 iterations:u32`, then, when the
//! statement has parameters: a NULL bitmap of `(n + 7) / 8` bytes (bit *i*
//! for parameter *i*), `new_params_bound:u8`, when 1 the parameter types
//! (`type:u8 flags:u8`, 0x80 = unsigned), then each value that is neither
//! NULL nor sent earlier with COM_STMT_SEND_LONG_DATA, in its type's binary
//! layout ([`crate::value`]).
//!
//! The packet does not say how many parameters there are: that comes from
//! the statement's PREPARE_OK. Nor does it repeat the types when
//! `new_params_bound` is 0: they are the last ones bound. So parsing the
//! values needs both, which [`crate::session::Session`] keeps.
//!
//! MariaDB lets `statement_id` be `0xFFFFFFFF`, "the statement prepared
//! last", so a client can send PREPARE and EXECUTE back to back.

use bytes::{BufMut, Bytes, BytesMut};

use crate::row_binary::check_bitmap;
use crate::value::{BinaryType, ColumnType, Value};
use crate::wire::{MessageError, Reader, put_lenenc_bytes};

/// The command byte.
pub const COM_STMT_EXECUTE: u8 = 0x17;
/// MariaDB: the statement id meaning "the statement prepared last".
pub const LAST_PREPARED: u32 = u32::MAX;

/// Execute flags (cursor type and MySQL 8's parameter count).
pub mod flags {
    /// No cursor.
    pub const NO_CURSOR: u8 = 0x00;
    /// A read-only cursor: rows come from COM_STMT_FETCH.
    pub const READ_ONLY: u8 = 0x01;
    /// A cursor for update.
    pub const FOR_UPDATE: u8 = 0x02;
    /// A scrollable cursor.
    pub const SCROLLABLE: u8 = 0x04;
    /// MySQL 8 (`QUERY_ATTRIBUTES`): the parameter count follows the
    /// iteration count.
    pub const PARAMETER_COUNT_AVAILABLE: u8 = 0x08;
    /// The bits that ask for a cursor.
    pub const CURSOR_MASK: u8 = READ_ONLY | FOR_UPDATE | SCROLLABLE;
}

/// The unsigned flag in a parameter type.
pub const PARAM_UNSIGNED: u8 = 0x80;

/// A parameter's type as bound by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamType {
    /// The type.
    pub column_type: ColumnType,
    /// The flag byte (0x80 = unsigned), as sent.
    pub flags: u8,
}

impl ParamType {
    /// The binary layout this parameter's value uses.
    pub fn binary_type(&self) -> BinaryType {
        BinaryType {
            column_type: self.column_type,
            unsigned: self.flags & PARAM_UNSIGNED != 0,
        }
    }
}

/// One parameter's value in an execute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamValue<'a> {
    /// NULL (its bit is set).
    Null,
    /// Sent earlier with COM_STMT_SEND_LONG_DATA (no bytes here).
    LongData,
    /// A value.
    Value(Value<'a>),
}

/// A parsed parameter block.
#[derive(Debug, Clone, PartialEq)]
pub struct Params<'a> {
    /// The NULL bitmap.
    pub null_bitmap: &'a [u8],
    /// Whether the types were sent with this execute.
    pub new_params_bound: bool,
    /// The types: sent now, or the ones bound before.
    pub types: Vec<ParamType>,
    /// Parameter names (query attributes only; empty otherwise).
    pub names: Vec<&'a [u8]>,
    /// The values.
    pub values: Vec<ParamValue<'a>>,
}

/// Reads a parameter block of `count` parameters. `previous` are the types
/// bound before (used when the block does not repeat them); `long_data(i)`
/// says whether parameter `i` was sent with COM_STMT_SEND_LONG_DATA.
pub fn parse_params<'a>(
    r: &mut Reader<'a>,
    count: usize,
    with_names: bool,
    previous: Option<&[ParamType]>,
    long_data: &dyn Fn(usize) -> bool,
) -> Result<Params<'a>, MessageError> {
    if count == 0 {
        return Ok(Params {
            null_bitmap: &[],
            new_params_bound: false,
            types: Vec::new(),
            names: Vec::new(),
            values: Vec::new(),
        });
    }
    let null_bitmap = r.bytes(count.div_ceil(8), "parameter NULL bitmap")?;
    check_bitmap(null_bitmap, count, 0, "parameter NULL bitmap")?;
    let new_params_bound = match r.u8("new params bound flag")? {
        0 => false,
        1 => true,
        other => {
            return Err(MessageError::InvalidValue {
                field: "new params bound flag",
                value: u64::from(other),
            });
        }
    };
    let mut names = Vec::new();
    let types = if new_params_bound {
        // Two bytes per type must be present before anything is reserved.
        if count.saturating_mul(2) > r.remaining() {
            return Err(MessageError::Truncated {
                field: "parameter types",
            });
        }
        let mut types = Vec::with_capacity(count);
        for _ in 0..count {
            let [ty, flags] = r.array("parameter type")?;
            types.push(ParamType {
                column_type: ColumnType(ty),
                flags,
            });
            if with_names {
                names.push(r.lenenc_bytes("parameter name")?);
            }
        }
        types
    } else {
        match previous {
            Some(p) if p.len() == count => p.to_vec(),
            _ => {
                return Err(MessageError::Unsupported {
                    what: "parameter values without bound types (none were bound before)",
                });
            }
        }
    };
    let mut values = Vec::with_capacity(count);
    for (i, ty) in types.iter().enumerate() {
        values.push(if null_bitmap[i / 8] & (1 << (i % 8)) != 0 {
            ParamValue::Null
        } else if long_data(i) {
            ParamValue::LongData
        } else {
            ParamValue::Value(Value::decode(r, ty.binary_type())?)
        });
    }
    Ok(Params {
        null_bitmap,
        new_params_bound,
        types,
        names,
        values,
    })
}

/// The most bytes a parameter block's head (NULL bitmap, bound flag and
/// 65535 parameter types) can take: what is kept of an execute whose
/// statement is not confirmed yet, to learn its types later.
pub const MAX_PARAM_HEAD: usize = 65_535usize.div_ceil(8) + 1 + 2 * 65_535;

/// The types a parameter block binds, without reading its values: `None`
/// when it does not bind new ones (`new_params_bound` is 0).
pub fn parse_param_types(
    block: &[u8],
    count: usize,
) -> Result<Option<Vec<ParamType>>, MessageError> {
    if count == 0 {
        return Ok(None);
    }
    let mut r = Reader::new(block);
    r.skip(count.div_ceil(8), "parameter NULL bitmap")?;
    if r.u8("new params bound flag")? != 1 {
        return Ok(None);
    }
    let raw = r.bytes(count.saturating_mul(2), "parameter types")?;
    Ok(Some(
        raw.chunks_exact(2)
            .map(|t| ParamType {
                column_type: ColumnType(t[0]),
                flags: t[1],
            })
            .collect(),
    ))
}

/// Appends a parameter block: bitmap, bound flag, types (and names) when
/// `types` is given, values.
pub fn put_params(
    out: &mut BytesMut,
    types: Option<&[ParamType]>,
    names: Option<&[&[u8]]>,
    values: &[ParamValue<'_>],
) -> Result<(), MessageError> {
    if values.is_empty() {
        return Ok(());
    }
    let mut bitmap = vec![0u8; values.len().div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        if matches!(v, ParamValue::Null) {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    out.put_slice(&bitmap);
    out.put_u8(u8::from(types.is_some()));
    if let Some(types) = types {
        if types.len() != values.len() {
            return Err(MessageError::DoesNotFit {
                field: "parameter types",
                detail: "a different number of types and values",
            });
        }
        for (i, t) in types.iter().enumerate() {
            out.put_u8(t.column_type.0);
            out.put_u8(t.flags);
            if let Some(names) = names {
                put_lenenc_bytes(out, names.get(i).copied().unwrap_or_default());
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        if let ParamValue::Value(v) = v {
            if let Some(t) = types.and_then(|t| t.get(i))
                && !v.fits(t.binary_type())
            {
                return Err(MessageError::DoesNotFit {
                    field: "parameter value",
                    detail: "a value of another type than its parameter",
                });
            }
            v.encode(out);
        }
    }
    Ok(())
}

/// COM_STMT_EXECUTE, as a validated view of its fixed head; the parameter
/// block needs the statement's parameter count ([`StmtExecute::params`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StmtExecute<'a> {
    /// The statement (or [`LAST_PREPARED`]).
    pub statement_id: u32,
    /// Cursor type and other [`flags`].
    pub flags: u8,
    /// Iteration count (always 1).
    pub iterations: u32,
    /// The parameter block, unparsed.
    pub param_block: &'a [u8],
}

impl<'a> StmtExecute<'a> {
    /// Parses the payload after the command byte.
    pub fn parse_body(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let statement_id = r.u32("execute statement id")?;
        let flags = r.u8("execute flags")?;
        let iterations = r.u32("execute iteration count")?;
        Ok(Self {
            statement_id,
            flags,
            iterations,
            param_block: r.take_rest(),
        })
    }

    /// Whether the client asked for a cursor.
    pub fn wants_cursor(&self) -> bool {
        self.flags & flags::CURSOR_MASK != 0
    }

    /// How many parameters the block holds: the count in the packet (with
    /// `PARAMETER_COUNT_AVAILABLE`), read from `r`, or else `count`.
    fn param_count(&self, r: &mut Reader<'a>, count: usize) -> Result<usize, MessageError> {
        if self.flags & flags::PARAMETER_COUNT_AVAILABLE == 0 {
            return Ok(count);
        }
        let n = r.lenenc_int("execute parameter count")?;
        usize::try_from(n)
            .ok()
            .filter(|n| n.div_ceil(8) <= r.remaining())
            .ok_or(MessageError::InvalidLength {
                field: "execute parameter count",
                value: n,
            })
    }

    /// Parses the parameters of a statement with `count` parameters (a
    /// count in the packet, with `PARAMETER_COUNT_AVAILABLE`, wins), given
    /// the types bound before and which parameters came as long data.
    pub fn params(
        &self,
        count: usize,
        previous: Option<&[ParamType]>,
        long_data: &dyn Fn(usize) -> bool,
        query_attributes: bool,
    ) -> Result<Params<'a>, MessageError> {
        let mut r = Reader::new(self.param_block);
        let count = self.param_count(&mut r, count)?;
        let p = parse_params(&mut r, count, query_attributes, previous, long_data)?;
        // With no parameters the server reads nothing more (and ignores the rest).
        if count > 0 {
            r.finish("COM_STMT_EXECUTE")?;
        }
        Ok(p)
    }

    /// The types this EXECUTE binds, read without its values: with
    /// `new_params_bound` set, `out` is replaced by them and `Ok(true)`
    /// returned; without it (or with no parameters) `Ok(false)` and `out`
    /// is untouched, as it is on an error. What a session keeps of an
    /// execute when nothing looks at its values: `out` is reused, so
    /// rebinding every execute allocates nothing.
    pub fn bound_types(
        &self,
        count: usize,
        query_attributes: bool,
        out: &mut Vec<ParamType>,
    ) -> Result<bool, MessageError> {
        let mut r = Reader::new(self.param_block);
        let count = self.param_count(&mut r, count)?;
        if count == 0 {
            return Ok(false);
        }
        let null_bitmap = r.bytes(count.div_ceil(8), "parameter NULL bitmap")?;
        check_bitmap(null_bitmap, count, 0, "parameter NULL bitmap")?;
        match r.u8("new params bound flag")? {
            0 => return Ok(false),
            1 => {}
            other => {
                return Err(MessageError::InvalidValue {
                    field: "new params bound flag",
                    value: u64::from(other),
                });
            }
        }
        let to_type = |[ty, flags]: [u8; 2]| ParamType {
            column_type: ColumnType(ty),
            flags,
        };
        if !query_attributes {
            let raw = r.bytes(count.saturating_mul(2), "parameter types")?;
            out.clear();
            out.extend(raw.chunks_exact(2).map(|t| to_type([t[0], t[1]])));
            return Ok(true);
        }
        // Names between the types: checked whole before `out` changes.
        if count.saturating_mul(2) > r.remaining() {
            return Err(MessageError::Truncated {
                field: "parameter types",
            });
        }
        let types = r.clone();
        for _ in 0..count {
            r.array::<2>("parameter type")?;
            r.lenenc_bytes("parameter name")?;
        }
        let mut r = types;
        out.clear();
        for _ in 0..count {
            out.push(to_type(r.array("parameter type")?));
            r.lenenc_bytes("parameter name")?;
        }
        Ok(true)
    }

    /// Encodes a COM_STMT_EXECUTE (command byte included).
    pub fn encode(
        statement_id: u32,
        exec_flags: u8,
        types: Option<&[ParamType]>,
        values: &[ParamValue<'_>],
    ) -> Result<Bytes, MessageError> {
        let mut out = BytesMut::with_capacity(16 + 16 * values.len());
        out.put_u8(COM_STMT_EXECUTE);
        out.put_u32_le(statement_id);
        out.put_u8(exec_flags & !flags::PARAMETER_COUNT_AVAILABLE);
        out.put_u32_le(1);
        put_params(&mut out, types, None, values)?;
        Ok(out.freeze())
    }
}

/// COM_STMT_BULK_EXECUTE flags (MariaDB).
pub mod bulk_flags {
    /// The parameter types follow the flags.
    pub const SEND_TYPES_TO_SERVER: u16 = 128;
    /// One result per row (`MARIADB_CLIENT_BULK_UNIT_RESULTS`).
    pub const SEND_UNIT_RESULTS: u16 = 64;
}

/// One value of a bulk row, after its indicator byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BulkValue<'a> {
    /// Indicator 0: a value.
    Value(Value<'a>),
    /// Indicator 1: NULL.
    Null,
    /// Indicator 2: the column's default.
    Default,
    /// Indicator 3: ignored (UPDATE leaves the column as it is).
    Ignore,
}

/// The rows of a COM_STMT_BULK_EXECUTE (MariaDB): after `statement_id:u32
/// flags:u16`, the types when `SEND_TYPES_TO_SERVER` (2 bytes per
/// parameter), then rows to the end of the packet, each parameter an
/// indicator byte and, for indicator 0, its value. hoop clears the
/// capability; this is for inspecting a client that sends it anyway.
pub fn parse_bulk_rows<'a>(
    flags: u16,
    data: &'a [u8],
    count: usize,
    previous: Option<&[ParamType]>,
) -> Result<(Vec<ParamType>, Vec<Vec<BulkValue<'a>>>), MessageError> {
    let mut r = Reader::new(data);
    let types = if flags & bulk_flags::SEND_TYPES_TO_SERVER != 0 {
        let raw = r.bytes(count.saturating_mul(2), "bulk parameter types")?;
        raw.chunks_exact(2)
            .map(|t| ParamType {
                column_type: ColumnType(t[0]),
                flags: t[1],
            })
            .collect()
    } else {
        match previous {
            Some(p) if p.len() == count => p.to_vec(),
            _ => {
                return Err(MessageError::Unsupported {
                    what: "bulk rows without bound types (none were bound before)",
                });
            }
        }
    };
    let mut rows = Vec::new();
    while !r.is_empty() {
        if count == 0 {
            return Err(MessageError::TrailingBytes {
                message: "COM_STMT_BULK_EXECUTE",
                extra: r.remaining(),
            });
        }
        let mut row = Vec::with_capacity(count);
        for ty in &types {
            row.push(match r.u8("bulk indicator")? {
                0 => BulkValue::Value(Value::decode(&mut r, ty.binary_type())?),
                1 => BulkValue::Null,
                2 => BulkValue::Default,
                3 => BulkValue::Ignore,
                other => {
                    return Err(MessageError::InvalidValue {
                        field: "bulk indicator",
                        value: u64::from(other),
                    });
                }
            });
        }
        rows.push(row);
    }
    Ok((types, rows))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::value::DateTime;

    fn ty(column_type: ColumnType, flags: u8) -> ParamType {
        ParamType { column_type, flags }
    }

    #[test]
    fn execute_round_trips_with_nulls_types_and_long_data() {
        let types = [
            ty(ColumnType::LONGLONG, 0),
            ty(ColumnType::VAR_STRING, 0),
            ty(ColumnType::BLOB, 0),
            ty(ColumnType::DATETIME, 0),
            ty(ColumnType::LONG, PARAM_UNSIGNED),
        ];
        let values = [
            ParamValue::Value(Value::I64(-9)),
            ParamValue::Null,
            ParamValue::LongData,
            ParamValue::Value(Value::DateTime(DateTime::new(2020, 1, 1, 0, 0, 0, 0))),
            ParamValue::Value(Value::U32(7)),
        ];
        let raw = StmtExecute::encode(5, flags::READ_ONLY, Some(&types), &values).unwrap();
        assert_eq!(raw[0], COM_STMT_EXECUTE);
        let e = StmtExecute::parse_body(&raw[1..]).unwrap();
        assert_eq!(
            (e.statement_id, e.wants_cursor(), e.iterations),
            (5, true, 1)
        );
        let long = |i: usize| i == 2;
        let p = e.params(5, None, &long, false).unwrap();
        assert!(p.new_params_bound);
        assert_eq!(p.types, types);
        assert_eq!(p.values, values);
        // Without the long-data knowledge the values do not line up.
        assert!(e.params(5, None, &|_| false, false).is_err());
        // A wrong parameter count is an error, not a misread.
        assert!(e.params(4, None, &long, false).is_err());
        assert!(e.params(6, None, &long, false).is_err());

        // Types not repeated: the ones bound before are used.
        let again = StmtExecute::encode(5, 0, None, &values).unwrap();
        let e = StmtExecute::parse_body(&again[1..]).unwrap();
        assert!(e.params(5, None, &long, false).is_err());
        let p = e.params(5, Some(&types), &long, false).unwrap();
        assert_eq!((p.new_params_bound, p.values), (false, values.to_vec()));
        for cut in 1..raw.len() {
            let ok = StmtExecute::parse_body(&raw[1..cut])
                .and_then(|e| e.params(5, None, &long, false).map(|_| ()));
            assert!(ok.is_err(), "cut {cut}");
        }
    }

    #[test]
    fn no_parameters_and_parameter_count_flag() {
        let raw = StmtExecute::encode(1, 0, None, &[]).unwrap();
        assert_eq!(raw.len(), 10);
        let e = StmtExecute::parse_body(&raw[1..]).unwrap();
        assert!(
            e.params(0, None, &|_| false, false)
                .unwrap()
                .values
                .is_empty()
        );
        // MySQL 8 PARAMETER_COUNT_AVAILABLE: count 1, a TINY value with its name.
        let body = [
            1,
            0,
            0,
            0,
            flags::PARAMETER_COUNT_AVAILABLE,
            1,
            0,
            0,
            0,
            1,
            0,
            1,
            1,
            0,
            1,
            b'a',
            42,
        ];
        let e = StmtExecute::parse_body(&body).unwrap();
        let p = e.params(0, None, &|_| false, true).unwrap();
        assert_eq!(p.names, vec![&b"a"[..]]);
        assert_eq!(p.values, vec![ParamValue::Value(Value::I8(42))]);
        // A hostile count is refused before anything is reserved.
        let body = [
            1, 0, 0, 0, 8, 1, 0, 0, 0, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0,
        ];
        assert!(
            StmtExecute::parse_body(&body)
                .unwrap()
                .params(0, None, &|_| false, false)
                .is_err()
        );
    }

    #[test]
    fn bound_types_alone() {
        let types = [
            ty(ColumnType::LONGLONG, 0),
            ty(ColumnType::LONG, PARAM_UNSIGNED),
        ];
        let values = [ParamValue::Value(Value::I64(-9)), ParamValue::Null];
        let raw = StmtExecute::encode(5, 0, Some(&types), &values).unwrap();
        let e = StmtExecute::parse_body(&raw[1..]).unwrap();
        // The vector is reused: its old contents go.
        let mut out = vec![ty(ColumnType::BLOB, 0); 3];
        assert!(e.bound_types(2, false, &mut out).unwrap());
        assert_eq!(out, types);
        assert_eq!(out, e.params(2, None, &|_| false, false).unwrap().types);
        // A wrong count or a cut head is an error and leaves `out` alone.
        let mut kept = vec![ty(ColumnType::BLOB, 0)];
        assert!(e.bound_types(9, false, &mut kept).is_err());
        assert!(
            StmtExecute::parse_body(&raw[1..12])
                .unwrap()
                .bound_types(2, false, &mut kept)
                .is_err()
        );
        assert_eq!(kept, [ty(ColumnType::BLOB, 0)]);
        // Not rebound, or no parameters: nothing learnt.
        let again = StmtExecute::encode(5, 0, None, &values).unwrap();
        let e = StmtExecute::parse_body(&again[1..]).unwrap();
        assert!(!e.bound_types(2, false, &mut kept).unwrap());
        assert!(!e.bound_types(0, false, &mut kept).unwrap());
        assert_eq!(kept, [ty(ColumnType::BLOB, 0)]);
        // MySQL 8: the count in the packet, a name after each type.
        let body = [
            1,
            0,
            0,
            0,
            flags::PARAMETER_COUNT_AVAILABLE,
            1,
            0,
            0,
            0,
            1,
            0,
            1,
            1,
            0,
            1,
            b'a',
            42,
        ];
        let e = StmtExecute::parse_body(&body).unwrap();
        assert!(e.bound_types(0, true, &mut out).unwrap());
        assert_eq!(out, [ty(ColumnType::TINY, 0)]);
        let cut = StmtExecute::parse_body(&body[..15]).unwrap();
        assert!(cut.bound_types(0, true, &mut kept).is_err());
        assert_eq!(kept, [ty(ColumnType::BLOB, 0)]);
    }

    #[test]
    fn bulk_rows() {
        // Types LONG and VAR_STRING, then two rows: (7, 'ab') and (NULL, DEFAULT).
        let data = [3, 0, 253, 0, 0, 7, 0, 0, 0, 0, 2, b'a', b'b', 1, 2];
        let (types, rows) =
            parse_bulk_rows(bulk_flags::SEND_TYPES_TO_SERVER, &data, 2, None).unwrap();
        assert_eq!(types.len(), 2);
        assert_eq!(
            rows,
            vec![
                vec![
                    BulkValue::Value(Value::I32(7)),
                    BulkValue::Value(Value::Bytes(b"ab"))
                ],
                vec![BulkValue::Null, BulkValue::Default],
            ]
        );
        assert!(parse_bulk_rows(0, &data[4..], 2, None).is_err());
        assert!(parse_bulk_rows(0, &data[4..], 2, Some(&types)).is_ok());
        assert!(parse_bulk_rows(bulk_flags::SEND_TYPES_TO_SERVER, &data[..14], 2, None).is_err());
        assert!(parse_bulk_rows(0, &[9], 1, Some(&types[..1])).is_err());
    }

    #[test]
    fn bitmap_padding_bits_are_errors() {
        // One parameter, bit 1 set (there is no parameter 1).
        let body = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0b10, 0];
        let e = StmtExecute::parse_body(&body).unwrap();
        assert!(
            e.params(1, Some(&[ty(ColumnType::LONG, 0)]), &|_| false, false)
                .is_err()
        );
    }
}
