//! Column types and the binary protocol's value encoding, shared by
//! COM_STMT_EXECUTE parameters and binary result rows.
//!
//! Per type, a binary value is:
//! - TINY: 1 byte; SHORT, YEAR: 2; LONG, INT24, FLOAT: 4; LONGLONG, DOUBLE: 8
//!   (little-endian, signed unless the column or parameter is UNSIGNED);
//! - DATE, DATETIME, TIMESTAMP: a length byte (0, 4, 7 or 11) then year:u16,
//!   month, day, then hour, minute, second (length 7 and 11), then
//!   microseconds:u32 (length 11);
//! - TIME: a length byte (0, 8 or 12) then negative, days:u32, hour, minute,
//!   second, then microseconds:u32 (length 12);
//! - NULL: nothing (NULLs are in the bitmap);
//! - everything else (DECIMAL, strings, BLOBs, JSON, BIT, ENUM, SET,
//!   GEOMETRY…): a length-encoded string.

use std::fmt;

use bytes::BufMut;

use crate::wire::{MessageError, Reader, put_lenenc_bytes};

/// A column or parameter type (`enum_field_types`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColumnType(pub u8);

macro_rules! types {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl ColumnType {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The type's name (`MYSQL_TYPE_` without the prefix), if known.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

types! {
    /// DECIMAL (pre-5.0).
    DECIMAL = 0x00;
    /// TINYINT.
    TINY = 0x01;
    /// SMALLINT.
    SHORT = 0x02;
    /// INT.
    LONG = 0x03;
    /// FLOAT.
    FLOAT = 0x04;
    /// DOUBLE.
    DOUBLE = 0x05;
    /// NULL (a literal NULL column or parameter).
    NULL = 0x06;
    /// TIMESTAMP.
    TIMESTAMP = 0x07;
    /// BIGINT.
    LONGLONG = 0x08;
    /// MEDIUMINT.
    INT24 = 0x09;
    /// DATE.
    DATE = 0x0A;
    /// TIME.
    TIME = 0x0B;
    /// DATETIME.
    DATETIME = 0x0C;
    /// YEAR.
    YEAR = 0x0D;
    /// Internal DATE representation.
    NEWDATE = 0x0E;
    /// VARCHAR.
    VARCHAR = 0x0F;
    /// BIT.
    BIT = 0x10;
    /// Internal TIMESTAMP with fractional seconds.
    TIMESTAMP2 = 0x11;
    /// Internal DATETIME with fractional seconds.
    DATETIME2 = 0x12;
    /// Internal TIME with fractional seconds.
    TIME2 = 0x13;
    /// MySQL 8 replication only.
    TYPED_ARRAY = 0x14;
    /// MySQL 9 VECTOR.
    VECTOR = 0xF2;
    /// Invalid marker.
    INVALID = 0xF3;
    /// Internal BOOL.
    BOOL = 0xF4;
    /// JSON (MySQL; MariaDB sends LONGTEXT/BLOB).
    JSON = 0xF5;
    /// DECIMAL / NUMERIC.
    NEWDECIMAL = 0xF6;
    /// ENUM.
    ENUM = 0xF7;
    /// SET.
    SET = 0xF8;
    /// TINYBLOB / TINYTEXT.
    TINY_BLOB = 0xF9;
    /// MEDIUMBLOB / MEDIUMTEXT.
    MEDIUM_BLOB = 0xFA;
    /// LONGBLOB / LONGTEXT.
    LONG_BLOB = 0xFB;
    /// BLOB / TEXT.
    BLOB = 0xFC;
    /// VARCHAR / VARBINARY.
    VAR_STRING = 0xFD;
    /// CHAR / BINARY (and ENUM/SET in results).
    STRING = 0xFE;
    /// GEOMETRY.
    GEOMETRY = 0xFF;
}

impl fmt::Debug for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "ColumnType({:#04x})", self.0),
        }
    }
}

/// How a type is laid out in the binary protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryLayout {
    /// No bytes (NULL type).
    Empty,
    /// A fixed-width integer of 1, 2, 4 or 8 bytes.
    Integer(usize),
    /// A 4-byte float.
    Float,
    /// An 8-byte double.
    Double,
    /// DATE/DATETIME/TIMESTAMP: length byte 0, 4, 7 or 11.
    DateTime,
    /// TIME: length byte 0, 8 or 12.
    Time,
    /// A length-encoded string.
    LengthEncoded,
}

impl ColumnType {
    /// The binary layout of this type.
    pub fn binary_layout(self) -> BinaryLayout {
        match self {
            Self::NULL => BinaryLayout::Empty,
            Self::TINY | Self::BOOL => BinaryLayout::Integer(1),
            Self::SHORT | Self::YEAR => BinaryLayout::Integer(2),
            Self::LONG | Self::INT24 => BinaryLayout::Integer(4),
            Self::LONGLONG => BinaryLayout::Integer(8),
            Self::FLOAT => BinaryLayout::Float,
            Self::DOUBLE => BinaryLayout::Double,
            Self::DATE
            | Self::DATETIME
            | Self::TIMESTAMP
            | Self::NEWDATE
            | Self::DATETIME2
            | Self::TIMESTAMP2 => BinaryLayout::DateTime,
            Self::TIME | Self::TIME2 => BinaryLayout::Time,
            _ => BinaryLayout::LengthEncoded,
        }
    }

    /// Whether values of this type are text or bytes (what content
    /// detectors and string masks apply to).
    pub fn is_string_like(self) -> bool {
        matches!(
            self,
            Self::VARCHAR
                | Self::VAR_STRING
                | Self::STRING
                | Self::TINY_BLOB
                | Self::MEDIUM_BLOB
                | Self::LONG_BLOB
                | Self::BLOB
                | Self::JSON
                | Self::ENUM
                | Self::SET
        )
    }
}

/// A column's or parameter's binary type: the type and its UNSIGNED flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BinaryType {
    /// The type.
    pub column_type: ColumnType,
    /// UNSIGNED (integers).
    pub unsigned: bool,
}

/// DATE, DATETIME or TIMESTAMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DateTime {
    /// Year.
    pub year: u16,
    /// Month (1–12; 0 in zero dates).
    pub month: u8,
    /// Day.
    pub day: u8,
    /// Hour.
    pub hour: u8,
    /// Minute.
    pub minute: u8,
    /// Second.
    pub second: u8,
    /// Microseconds.
    pub micros: u32,
    /// Encoded length: 0, 4, 7 or 11 (kept so a value re-encodes as it came).
    pub len: u8,
}

impl DateTime {
    /// A value with the shortest encoding that keeps every field.
    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
    ) -> Self {
        let len = if micros != 0 {
            11
        } else if hour != 0 || minute != 0 || second != 0 {
            7
        } else if year != 0 || month != 0 || day != 0 {
            4
        } else {
            0
        };
        Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            len,
        }
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)?;
        if self.len > 4 {
            write!(f, " {:02}:{:02}:{:02}", self.hour, self.minute, self.second)?;
        }
        if self.len > 7 {
            write!(f, ".{:06}", self.micros)?;
        }
        Ok(())
    }
}

/// TIME (a signed duration of days, hours, minutes, seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Time {
    /// Negative duration.
    pub negative: bool,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u8,
    /// Minutes.
    pub minutes: u8,
    /// Seconds.
    pub seconds: u8,
    /// Microseconds.
    pub micros: u32,
    /// Encoded length: 0, 8 or 12.
    pub len: u8,
}

impl Time {
    /// A value with the shortest encoding that keeps every field.
    pub fn new(
        negative: bool,
        days: u32,
        hours: u8,
        minutes: u8,
        seconds: u8,
        micros: u32,
    ) -> Self {
        let len = if micros != 0 {
            12
        } else if negative || days != 0 || hours != 0 || minutes != 0 || seconds != 0 {
            8
        } else {
            0
        };
        Self {
            negative,
            days,
            hours,
            minutes,
            seconds,
            micros,
            len,
        }
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hours = u64::from(self.days) * 24 + u64::from(self.hours);
        let sign = if self.negative { "-" } else { "" };
        write!(
            f,
            "{sign}{hours:02}:{:02}:{:02}",
            self.minutes, self.seconds
        )?;
        if self.len > 8 {
            write!(f, ".{:06}", self.micros)?;
        }
        Ok(())
    }
}

/// One binary-protocol value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// NULL.
    Null,
    /// TINYINT.
    I8(i8),
    /// TINYINT UNSIGNED.
    U8(u8),
    /// SMALLINT, YEAR.
    I16(i16),
    /// SMALLINT UNSIGNED, YEAR.
    U16(u16),
    /// INT, MEDIUMINT.
    I32(i32),
    /// INT UNSIGNED, MEDIUMINT UNSIGNED.
    U32(u32),
    /// BIGINT.
    I64(i64),
    /// BIGINT UNSIGNED.
    U64(u64),
    /// FLOAT.
    F32(f32),
    /// DOUBLE.
    F64(f64),
    /// DATE, DATETIME, TIMESTAMP.
    DateTime(DateTime),
    /// TIME.
    Time(Time),
    /// Everything length-encoded: strings, BLOBs, DECIMAL as text, JSON, BIT…
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    /// Reads one non-NULL value of type `ty`.
    pub fn decode(r: &mut Reader<'a>, ty: BinaryType) -> Result<Self, MessageError> {
        let u = ty.unsigned;
        Ok(match ty.column_type.binary_layout() {
            BinaryLayout::Empty => Self::Null,
            BinaryLayout::Integer(1) => {
                let b = r.u8("TINYINT value")?;
                if u { Self::U8(b) } else { Self::I8(b as i8) }
            }
            BinaryLayout::Integer(2) => {
                let v = r.u16("SMALLINT value")?;
                if u { Self::U16(v) } else { Self::I16(v as i16) }
            }
            BinaryLayout::Integer(4) => {
                let v = r.u32("INT value")?;
                if u { Self::U32(v) } else { Self::I32(v as i32) }
            }
            BinaryLayout::Integer(_) => {
                let v = r.u64("BIGINT value")?;
                if u { Self::U64(v) } else { Self::I64(v as i64) }
            }
            BinaryLayout::Float => Self::F32(f32::from_bits(r.u32("FLOAT value")?)),
            BinaryLayout::Double => Self::F64(f64::from_bits(r.u64("DOUBLE value")?)),
            BinaryLayout::DateTime => {
                let len = r.u8("DATETIME length")?;
                let mut d = DateTime {
                    len,
                    ..DateTime::default()
                };
                match len {
                    0 => {}
                    4 | 7 | 11 => {
                        d.year = r.u16("DATETIME year")?;
                        d.month = r.u8("DATETIME month")?;
                        d.day = r.u8("DATETIME day")?;
                        if len >= 7 {
                            d.hour = r.u8("DATETIME hour")?;
                            d.minute = r.u8("DATETIME minute")?;
                            d.second = r.u8("DATETIME second")?;
                        }
                        if len == 11 {
                            d.micros = r.u32("DATETIME microseconds")?;
                        }
                    }
                    _ => {
                        return Err(MessageError::InvalidValue {
                            field: "DATETIME length",
                            value: u64::from(len),
                        });
                    }
                }
                Self::DateTime(d)
            }
            BinaryLayout::Time => {
                let len = r.u8("TIME length")?;
                let mut t = Time {
                    len,
                    ..Time::default()
                };
                match len {
                    0 => {}
                    8 | 12 => {
                        t.negative = match r.u8("TIME sign")? {
                            0 => false,
                            1 => true,
                            other => {
                                return Err(MessageError::InvalidValue {
                                    field: "TIME sign",
                                    value: u64::from(other),
                                });
                            }
                        };
                        t.days = r.u32("TIME days")?;
                        t.hours = r.u8("TIME hours")?;
                        t.minutes = r.u8("TIME minutes")?;
                        t.seconds = r.u8("TIME seconds")?;
                        if len == 12 {
                            t.micros = r.u32("TIME microseconds")?;
                        }
                    }
                    _ => {
                        return Err(MessageError::InvalidValue {
                            field: "TIME length",
                            value: u64::from(len),
                        });
                    }
                }
                Self::Time(t)
            }
            BinaryLayout::LengthEncoded => Self::Bytes(r.lenenc_bytes("value")?),
        })
    }

    /// Whether this value can be written where type `ty` is expected (the
    /// variant matches the type's layout and signedness; NULL fits anywhere
    /// a NULL bitmap can mark it).
    pub fn fits(&self, ty: BinaryType) -> bool {
        let u = ty.unsigned;
        match (self, ty.column_type.binary_layout()) {
            (Self::I8(_), BinaryLayout::Integer(1))
            | (Self::I16(_), BinaryLayout::Integer(2))
            | (Self::I32(_), BinaryLayout::Integer(4))
            | (Self::I64(_), BinaryLayout::Integer(8)) => !u,
            (Self::U8(_), BinaryLayout::Integer(1))
            | (Self::U16(_), BinaryLayout::Integer(2))
            | (Self::U32(_), BinaryLayout::Integer(4))
            | (Self::U64(_), BinaryLayout::Integer(8)) => u,
            (Self::Null, _)
            | (Self::F32(_), BinaryLayout::Float)
            | (Self::F64(_), BinaryLayout::Double)
            | (Self::Bytes(_), BinaryLayout::LengthEncoded) => true,
            (Self::DateTime(d), BinaryLayout::DateTime) => matches!(d.len, 0 | 4 | 7 | 11),
            (Self::Time(t), BinaryLayout::Time) => matches!(t.len, 0 | 8 | 12),
            _ => false,
        }
    }

    /// Appends the value's binary encoding (nothing for NULL).
    pub fn encode(&self, out: &mut impl BufMut) {
        match *self {
            Self::Null => {}
            Self::I8(v) => out.put_i8(v),
            Self::U8(v) => out.put_u8(v),
            Self::I16(v) => out.put_i16_le(v),
            Self::U16(v) => out.put_u16_le(v),
            Self::I32(v) => out.put_i32_le(v),
            Self::U32(v) => out.put_u32_le(v),
            Self::I64(v) => out.put_i64_le(v),
            Self::U64(v) => out.put_u64_le(v),
            Self::F32(v) => out.put_u32_le(v.to_bits()),
            Self::F64(v) => out.put_u64_le(v.to_bits()),
            Self::DateTime(d) => {
                out.put_u8(d.len);
                if d.len >= 4 {
                    out.put_u16_le(d.year);
                    out.put_u8(d.month);
                    out.put_u8(d.day);
                }
                if d.len >= 7 {
                    out.put_u8(d.hour);
                    out.put_u8(d.minute);
                    out.put_u8(d.second);
                }
                if d.len >= 11 {
                    out.put_u32_le(d.micros);
                }
            }
            Self::Time(t) => {
                out.put_u8(t.len);
                if t.len >= 8 {
                    out.put_u8(u8::from(t.negative));
                    out.put_u32_le(t.days);
                    out.put_u8(t.hours);
                    out.put_u8(t.minutes);
                    out.put_u8(t.seconds);
                }
                if t.len >= 12 {
                    out.put_u32_le(t.micros);
                }
            }
            Self::Bytes(b) => put_lenenc_bytes(out, b),
        }
    }
}

impl fmt::Display for Value<'_> {
    /// Text for records and approvers: numbers and dates as SQL writes them,
    /// bytes as (lossy) UTF-8, NULL as `NULL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("NULL"),
            Self::I8(v) => write!(f, "{v}"),
            Self::U8(v) => write!(f, "{v}"),
            Self::I16(v) => write!(f, "{v}"),
            Self::U16(v) => write!(f, "{v}"),
            Self::I32(v) => write!(f, "{v}"),
            Self::U32(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::U64(v) => write!(f, "{v}"),
            Self::F32(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
            Self::DateTime(d) => write!(f, "{d}"),
            Self::Time(t) => write!(f, "{t}"),
            Self::Bytes(b) => f.write_str(&String::from_utf8_lossy(b)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bt(column_type: ColumnType, unsigned: bool) -> BinaryType {
        BinaryType {
            column_type,
            unsigned,
        }
    }

    #[test]
    fn every_layout_round_trips() {
        let cases: Vec<(BinaryType, Value<'_>, usize)> = vec![
            (bt(ColumnType::TINY, false), Value::I8(-5), 1),
            (bt(ColumnType::TINY, true), Value::U8(250), 1),
            (bt(ColumnType::SHORT, false), Value::I16(-300), 2),
            (bt(ColumnType::YEAR, true), Value::U16(2024), 2),
            (bt(ColumnType::LONG, false), Value::I32(-70_000), 4),
            (bt(ColumnType::INT24, true), Value::U32(8_000_000), 4),
            (bt(ColumnType::LONGLONG, false), Value::I64(i64::MIN), 8),
            (bt(ColumnType::LONGLONG, true), Value::U64(u64::MAX), 8),
            (bt(ColumnType::FLOAT, false), Value::F32(1.5), 4),
            (bt(ColumnType::DOUBLE, false), Value::F64(-2.25), 8),
            (
                bt(ColumnType::DATE, false),
                Value::DateTime(DateTime::new(2024, 2, 29, 0, 0, 0, 0)),
                5,
            ),
            (
                bt(ColumnType::DATETIME, false),
                Value::DateTime(DateTime::new(2024, 2, 29, 13, 14, 15, 0)),
                8,
            ),
            (
                bt(ColumnType::TIMESTAMP, false),
                Value::DateTime(DateTime::new(2024, 2, 29, 13, 14, 15, 16)),
                12,
            ),
            (
                bt(ColumnType::DATETIME, false),
                Value::DateTime(DateTime::new(0, 0, 0, 0, 0, 0, 0)),
                1,
            ),
            (
                bt(ColumnType::TIME, false),
                Value::Time(Time::new(true, 1, 2, 3, 4, 0)),
                9,
            ),
            (
                bt(ColumnType::TIME, false),
                Value::Time(Time::new(false, 0, 2, 3, 4, 5)),
                13,
            ),
            (
                bt(ColumnType::NEWDECIMAL, false),
                Value::Bytes(b"123.45"),
                7,
            ),
            (bt(ColumnType::BLOB, false), Value::Bytes(&[0u8; 300]), 303),
            (bt(ColumnType::NULL, false), Value::Null, 0),
        ];
        for (ty, v, len) in cases {
            assert!(v.fits(ty), "{ty:?} {v:?}");
            let mut out = Vec::new();
            v.encode(&mut out);
            assert_eq!(out.len(), len, "{ty:?}");
            let mut r = Reader::new(&out);
            assert_eq!(Value::decode(&mut r, ty).unwrap(), v);
            r.finish("v").unwrap();
            for cut in 0..out.len() {
                assert!(Value::decode(&mut Reader::new(&out[..cut]), ty).is_err());
            }
        }
    }

    #[test]
    fn invalid_lengths_and_mismatched_values() {
        assert!(
            Value::decode(
                &mut Reader::new(&[5, 0, 0, 0, 0, 0]),
                bt(ColumnType::DATE, false)
            )
            .is_err()
        );
        assert!(
            Value::decode(
                &mut Reader::new(&[8, 2, 0, 0, 0, 0, 0, 0, 0]),
                bt(ColumnType::TIME, false)
            )
            .is_err()
        );
        assert!(!Value::I8(1).fits(bt(ColumnType::TINY, true)));
        assert!(!Value::Bytes(b"x").fits(bt(ColumnType::LONG, false)));
        assert!(!Value::I32(1).fits(bt(ColumnType::VAR_STRING, false)));
    }

    #[test]
    fn display() {
        assert_eq!(
            Value::DateTime(DateTime::new(2024, 1, 2, 3, 4, 5, 6)).to_string(),
            "2024-01-02 03:04:05.000006"
        );
        assert_eq!(
            Value::Time(Time::new(true, 1, 2, 3, 4, 0)).to_string(),
            "-26:03:04"
        );
        assert_eq!(Value::Bytes(b"abc").to_string(), "abc");
        assert_eq!(ColumnType::NEWDECIMAL.name(), Some("NEWDECIMAL"));
        assert_eq!(format!("{:?}", ColumnType(0x30)), "ColumnType(0x30)");
    }
}
