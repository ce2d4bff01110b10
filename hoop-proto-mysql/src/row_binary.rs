//! Binary result row (S)
//!
//! COM_STMT_EXECUTE and COM_STMT_FETCH results: a `0x00` header, a NULL
//! bitmap of `(columns + 9) / 8` bytes whose first two bits are reserved
//! (column *i* is bit *i + 2*), then each non-NULL value in the column's
//! binary layout ([`crate::value`]). The view is zero-copy.

use bytes::{BufMut, Bytes, BytesMut};

use crate::value::{BinaryType, Value};
use crate::wire::{MessageError, Reader};

/// The first byte of a binary row.
pub const BINARY_ROW_HEADER: u8 = 0x00;
/// The NULL bitmap's bit offset in binary rows.
const BITMAP_OFFSET: usize = 2;

/// The NULL bitmap length for `columns` columns at bit `offset`.
pub fn null_bitmap_len(columns: usize, offset: usize) -> usize {
    (columns + offset).div_ceil(8)
}

/// Whether bit `i + offset` is set.
pub fn is_null(bitmap: &[u8], i: usize, offset: usize) -> bool {
    let bit = i + offset;
    bitmap
        .get(bit / 8)
        .is_some_and(|b| b & (1 << (bit % 8)) != 0)
}

/// Checks that only bits of real columns are set (reserved and padding
/// bits are zero), so a row re-encodes byte for byte.
pub(crate) fn check_bitmap(
    bitmap: &[u8],
    columns: usize,
    offset: usize,
    field: &'static str,
) -> Result<(), MessageError> {
    for (k, byte) in bitmap.iter().enumerate() {
        for bit in 0..8 {
            let n = k * 8 + bit;
            if byte & (1 << bit) != 0 && (n < offset || n >= columns + offset) {
                return Err(MessageError::InvalidValue {
                    field,
                    value: u64::from(*byte),
                });
            }
        }
    }
    Ok(())
}

/// A binary row, as a validated view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryRow<'a> {
    bitmap: &'a [u8],
    values: &'a [u8],
    columns: usize,
}

impl<'a> BinaryRow<'a> {
    /// Validates a row against its columns' types.
    pub fn parse(payload: &'a [u8], types: &[BinaryType]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let header = r.u8("binary row header")?;
        if header != BINARY_ROW_HEADER {
            return Err(MessageError::UnexpectedHeader {
                message: "binary row",
                expected: BINARY_ROW_HEADER,
                found: header,
            });
        }
        let bitmap = r.bytes(
            null_bitmap_len(types.len(), BITMAP_OFFSET),
            "binary row NULL bitmap",
        )?;
        check_bitmap(bitmap, types.len(), BITMAP_OFFSET, "binary row NULL bitmap")?;
        let values = r.rest();
        for (i, ty) in types.iter().enumerate() {
            if !is_null(bitmap, i, BITMAP_OFFSET) {
                Value::decode(&mut r, *ty)?;
            }
        }
        r.finish("binary row")?;
        Ok(Self {
            bitmap,
            values,
            columns: types.len(),
        })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    /// Whether column `i` is NULL.
    pub fn is_null(&self, i: usize) -> bool {
        is_null(self.bitmap, i, BITMAP_OFFSET)
    }

    /// The values in column order, decoded with the same `types` the row
    /// was validated with.
    pub fn values<'t>(&self, types: &'t [BinaryType]) -> impl Iterator<Item = Value<'a>> + 't
    where
        'a: 't,
    {
        let mut r = Reader::new(self.values);
        let bitmap = self.bitmap;
        types.iter().enumerate().map_while(move |(i, ty)| {
            if is_null(bitmap, i, BITMAP_OFFSET) {
                Some(Value::Null)
            } else {
                Value::decode(&mut r, *ty).ok()
            }
        })
    }

    /// Encodes a row from values, one per type; each must fit its type.
    pub fn encode(types: &[BinaryType], values: &[Value<'_>]) -> Result<Bytes, MessageError> {
        if types.len() != values.len() {
            return Err(MessageError::DoesNotFit {
                field: "binary row",
                detail: "a different number of values and columns",
            });
        }
        let mut bitmap = vec![0u8; null_bitmap_len(types.len(), BITMAP_OFFSET)];
        let mut body = BytesMut::new();
        for (i, (ty, v)) in types.iter().zip(values).enumerate() {
            if !v.fits(*ty) {
                return Err(MessageError::DoesNotFit {
                    field: "binary row value",
                    detail: "a value of another type than its column",
                });
            }
            if matches!(v, Value::Null) {
                let bit = i + BITMAP_OFFSET;
                bitmap[bit / 8] |= 1 << (bit % 8);
            } else {
                v.encode(&mut body);
            }
        }
        let mut out = BytesMut::with_capacity(1 + bitmap.len() + body.len());
        out.put_u8(BINARY_ROW_HEADER);
        out.put_slice(&bitmap);
        out.put_slice(&body);
        Ok(out.freeze())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::value::{ColumnType, DateTime, Time};

    fn t(column_type: ColumnType, unsigned: bool) -> BinaryType {
        BinaryType {
            column_type,
            unsigned,
        }
    }

    #[test]
    fn round_trip_every_kind_with_nulls() {
        let types = [
            t(ColumnType::LONG, false),
            t(ColumnType::VAR_STRING, false),
            t(ColumnType::NEWDECIMAL, false),
            t(ColumnType::DOUBLE, false),
            t(ColumnType::DATETIME, false),
            t(ColumnType::TIME, false),
            t(ColumnType::BLOB, false),
            t(ColumnType::LONGLONG, true),
            t(ColumnType::TINY, false),
        ];
        let values = [
            Value::I32(7),
            Value::Null,
            Value::Bytes(b"12.50"),
            Value::F64(0.5),
            Value::DateTime(DateTime::new(2024, 5, 6, 7, 8, 9, 10)),
            Value::Time(Time::new(false, 0, 1, 2, 3, 0)),
            Value::Null,
            Value::U64(1 << 40),
            Value::I8(-1),
        ];
        let raw = BinaryRow::encode(&types, &values).unwrap();
        assert_eq!(raw[0], 0);
        assert_eq!(raw.len() - 1 - 2 - 4 - 6 - 8 - 12 - 9 - 8 - 1, 0);
        let row = BinaryRow::parse(&raw, &types).unwrap();
        assert!(row.is_null(1) && row.is_null(6) && !row.is_null(0));
        assert_eq!(row.values(&types).collect::<Vec<_>>(), values);
        for cut in 0..raw.len() {
            assert!(BinaryRow::parse(&raw[..cut], &types).is_err(), "cut {cut}");
        }
        assert!(BinaryRow::encode(&types[..2], &values[..1]).is_err());
        assert!(BinaryRow::encode(&types[..1], &[Value::Bytes(b"x")]).is_err());
    }

    #[test]
    fn reserved_bitmap_bits_and_bad_headers_are_errors() {
        let types = [t(ColumnType::LONG, false)];
        assert!(BinaryRow::parse(b"\x00\x01\x01\x00\x00\x00", &types).is_err());
        assert!(BinaryRow::parse(b"\x00\x08\x01\x00\x00\x00", &types).is_err());
        assert!(BinaryRow::parse(b"\x00\x04", &types).is_ok(), "a NULL");
        assert!(BinaryRow::parse(b"\x01\x00\x01\x00\x00\x00", &types).is_err());
        // Six columns at offset 2 still fit one bitmap byte; seven need two.
        assert_eq!(null_bitmap_len(6, 2), 1);
        assert_eq!(null_bitmap_len(7, 2), 2);
    }
}
