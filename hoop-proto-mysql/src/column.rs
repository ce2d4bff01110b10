//! Column count and ColumnDefinition41 (S)
//!
//! A result set starts with its column count (a length-encoded integer),
//! then one ColumnDefinition41 per column: catalog (`def`), schema, table
//! (alias), org_table, name (alias), org_name, a length-encoded 0x0C, then
//! collation:u16, column_length:u32, type:u8, flags:u16, decimals:u8 and two
//! filler bytes. COM_FIELD_LIST's definitions add a length-encoded default
//! value. With MariaDB's `EXTENDED_METADATA` (cleared by hoop) a block of
//! extended type information follows org_name.
//!
//! `org_table` and `org_name` name the source of a column when it is a plain
//! column reference; masking trusts them only when they name a real base
//! table (see `../shared/notes/mysql-anchors.md` §3).

use bytes::{BufMut, Bytes, BytesMut};

use crate::value::{BinaryType, ColumnType};
use crate::wire::{MessageError, Reader, put_lenenc_bytes, put_lenenc_int};

/// The length of the fixed fields, as every server sends it.
pub const FIXED_FIELDS_LEN: u64 = 0x0C;

/// Column flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ColumnFlags(pub u16);

impl ColumnFlags {
    /// NOT NULL.
    pub const NOT_NULL: Self = Self(1);
    /// Part of the primary key.
    pub const PRI_KEY: Self = Self(2);
    /// Part of a unique key.
    pub const UNIQUE_KEY: Self = Self(4);
    /// Part of a non-unique key.
    pub const MULTIPLE_KEY: Self = Self(8);
    /// A BLOB or TEXT.
    pub const BLOB: Self = Self(16);
    /// UNSIGNED.
    pub const UNSIGNED: Self = Self(32);
    /// ZEROFILL.
    pub const ZEROFILL: Self = Self(64);
    /// Binary collation (bytes, not text).
    pub const BINARY: Self = Self(128);
    /// ENUM.
    pub const ENUM: Self = Self(256);
    /// AUTO_INCREMENT.
    pub const AUTO_INCREMENT: Self = Self(512);
    /// TIMESTAMP.
    pub const TIMESTAMP: Self = Self(1024);
    /// SET.
    pub const SET: Self = Self(2048);
    /// No default value.
    pub const NO_DEFAULT_VALUE: Self = Self(4096);
    /// ON UPDATE NOW().
    pub const ON_UPDATE_NOW: Self = Self(8192);
    /// Part of some key.
    pub const PART_KEY: Self = Self(16384);
    /// A number.
    pub const NUM: Self = Self(32768);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Parse options for column definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ColumnOptions {
    /// MariaDB `EXTENDED_METADATA` was agreed: an extended-type block follows org_name.
    pub extended_metadata: bool,
    /// A COM_FIELD_LIST reply: a default value follows the fixed fields.
    pub field_list: bool,
}

/// ColumnDefinition41, as a validated owned view (its fields share the
/// packet's buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDefinition {
    /// Catalog (always `def`).
    pub catalog: Bytes,
    /// Schema of the source table (empty for expressions).
    pub schema: Bytes,
    /// Table alias (or derived-table/CTE/view name).
    pub table: Bytes,
    /// Source table (empty for expressions).
    pub org_table: Bytes,
    /// Column alias.
    pub name: Bytes,
    /// Source column (empty for expressions).
    pub org_name: Bytes,
    /// MariaDB extended type information, raw (only with `EXTENDED_METADATA`).
    pub extended: Option<Bytes>,
    /// Collation id of the values (63 = binary).
    pub collation: u16,
    /// Maximum display length.
    pub column_length: u32,
    /// Type.
    pub column_type: ColumnType,
    /// Flags.
    pub flags: ColumnFlags,
    /// Decimals (31 = not fixed).
    pub decimals: u8,
    /// The two filler bytes after the fixed fields, as sent.
    pub filler: [u8; 2],
    /// COM_FIELD_LIST's default value (`None` = NULL or not a field list).
    pub default_value: Option<Bytes>,
}

/// ColumnDefinition41 read in place: the same checks as
/// [`ColumnDefinition::parse`], its text fields borrowed from the payload.
/// A session that keeps no columns validates definitions with it and
/// copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDefinitionRef<'a> {
    /// Catalog (always `def`).
    pub catalog: &'a [u8],
    /// Schema of the source table (empty for expressions).
    pub schema: &'a [u8],
    /// Table alias (or derived-table/CTE/view name).
    pub table: &'a [u8],
    /// Source table (empty for expressions).
    pub org_table: &'a [u8],
    /// Column alias.
    pub name: &'a [u8],
    /// Source column (empty for expressions).
    pub org_name: &'a [u8],
    /// MariaDB extended type information, raw (only with `EXTENDED_METADATA`).
    pub extended: Option<&'a [u8]>,
    /// Collation id of the values (63 = binary).
    pub collation: u16,
    /// Maximum display length.
    pub column_length: u32,
    /// Type.
    pub column_type: ColumnType,
    /// Flags.
    pub flags: ColumnFlags,
    /// Decimals (31 = not fixed).
    pub decimals: u8,
    /// The two filler bytes after the fixed fields, as sent.
    pub filler: [u8; 2],
    /// COM_FIELD_LIST's default value (`None` = NULL or not a field list).
    pub default_value: Option<&'a [u8]>,
}

impl<'a> ColumnDefinitionRef<'a> {
    /// Parses a column definition from its packet payload.
    #[inline]
    pub fn parse(payload: &'a [u8], options: ColumnOptions) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let catalog = r.lenenc_bytes("column catalog")?;
        let schema = r.lenenc_bytes("column schema")?;
        let table = r.lenenc_bytes("column table")?;
        let org_table = r.lenenc_bytes("column org_table")?;
        let name = r.lenenc_bytes("column name")?;
        let org_name = r.lenenc_bytes("column org_name")?;
        let extended = if options.extended_metadata {
            Some(r.lenenc_bytes("column extended metadata")?)
        } else {
            None
        };
        let fixed = r.lenenc_int("column fixed fields length")?;
        if fixed != FIXED_FIELDS_LEN {
            return Err(MessageError::InvalidValue {
                field: "column fixed fields length",
                value: fixed,
            });
        }
        let collation = r.u16("column collation")?;
        let column_length = r.u32("column length")?;
        let column_type = ColumnType(r.u8("column type")?);
        let flags = ColumnFlags(r.u16("column flags")?);
        let decimals = r.u8("column decimals")?;
        let filler = r.array("column filler")?;
        let default_value = if options.field_list {
            r.lenenc_bytes_or_null("column default value")?
        } else {
            None
        };
        r.finish("column definition")?;
        Ok(Self {
            catalog,
            schema,
            table,
            org_table,
            name,
            org_name,
            extended,
            collation,
            column_length,
            column_type,
            flags,
            decimals,
            filler,
            default_value,
        })
    }

    /// Checks a column definition as [`Self::parse`] does (the same reads,
    /// the same errors) without building the view: what a relay that keeps
    /// no definitions needs, per result set, on its hot path.
    pub fn validate(payload: &[u8], options: ColumnOptions) -> Result<(), MessageError> {
        let mut r = Reader::new(payload);
        r.lenenc_bytes("column catalog")?;
        r.lenenc_bytes("column schema")?;
        r.lenenc_bytes("column table")?;
        r.lenenc_bytes("column org_table")?;
        r.lenenc_bytes("column name")?;
        r.lenenc_bytes("column org_name")?;
        if options.extended_metadata {
            r.lenenc_bytes("column extended metadata")?;
        }
        let fixed = r.lenenc_int("column fixed fields length")?;
        if fixed != FIXED_FIELDS_LEN {
            return Err(MessageError::InvalidValue {
                field: "column fixed fields length",
                value: fixed,
            });
        }
        r.u16("column collation")?;
        r.u32("column length")?;
        r.u8("column type")?;
        r.u16("column flags")?;
        r.u8("column decimals")?;
        r.array::<2>("column filler")?;
        if options.field_list {
            r.lenenc_bytes_or_null("column default value")?;
        }
        r.finish("column definition")
    }
}

impl ColumnDefinitionRef<'_> {
    /// Whether [`Self::validate`] accepts a definition, decided by one walk
    /// over its length prefixes (no error built): what a relay's run of
    /// plain packets checks, per result set.
    #[inline]
    pub fn is_valid(payload: &[u8], options: ColumnOptions) -> bool {
        let strings = if options.extended_metadata { 7 } else { 6 };
        let mut at = 0usize;
        for _ in 0..strings {
            match lenenc_at(payload, at) {
                Some((n, head)) => match at.checked_add(head).and_then(|a| a.checked_add(n)) {
                    Some(end) if end <= payload.len() => at = end,
                    _ => return false,
                },
                None => return false,
            }
        }
        // The fixed fields: their length (12), then 12 bytes.
        let Some((FIXED_FIELDS, head)) = lenenc_at(payload, at) else {
            return false;
        };
        let at = at + head + FIXED_FIELDS;
        if payload.len() < at {
            return false;
        }
        if !options.field_list {
            return payload.len() == at;
        }
        // COM_FIELD_LIST: a default value, or NULL.
        match payload.get(at) {
            Some(&0xFB) => payload.len() == at + 1,
            Some(_) => lenenc_at(payload, at).is_some_and(|(n, head)| {
                at.checked_add(head)
                    .and_then(|a| a.checked_add(n))
                    .is_some_and(|end| end == payload.len())
            }),
            None => false,
        }
    }
}

/// [`FIXED_FIELDS_LEN`] as a length.
const FIXED_FIELDS: usize = FIXED_FIELDS_LEN as usize;

/// The length-encoded integer at `at` (not NULL) and the bytes it took.
#[inline]
fn lenenc_at(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *b.get(at)?;
    let wide = |n: usize| -> Option<u64> {
        let bytes = b.get(at + 1..at + 1 + n)?;
        Some(bytes.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
    };
    let (value, head) = match first {
        0..=0xFA => (u64::from(first), 1),
        0xFC => (wide(2)?, 3),
        0xFD => (wide(3)?, 4),
        0xFE => (wide(8)?, 9),
        _ => return None,
    };
    Some((usize::try_from(value).ok()?, head))
}

impl ColumnDefinition {
    /// Parses a column definition from its packet payload.
    pub fn parse(payload: &Bytes, options: ColumnOptions) -> Result<Self, MessageError> {
        let c = ColumnDefinitionRef::parse(payload, options)?;
        let text = |t: &[u8]| payload.slice_ref(t);
        Ok(Self {
            catalog: text(c.catalog),
            schema: text(c.schema),
            table: text(c.table),
            org_table: text(c.org_table),
            name: text(c.name),
            org_name: text(c.org_name),
            extended: c.extended.map(text),
            collation: c.collation,
            column_length: c.column_length,
            column_type: c.column_type,
            flags: c.flags,
            decimals: c.decimals,
            filler: c.filler,
            default_value: c.default_value.map(text),
        })
    }

    /// The type binary rows and parameters of this column use.
    pub fn binary_type(&self) -> BinaryType {
        BinaryType {
            column_type: self.column_type,
            unsigned: self.flags.contains(ColumnFlags::UNSIGNED),
        }
    }

    /// Whether the values are bytes rather than text (collation 63).
    pub fn is_binary(&self) -> bool {
        self.collation == 63
    }

    /// Encodes the definition (for a field-list reply, `field_list`
    /// writes the default value, NULL when absent).
    pub fn encode(&self, field_list: bool) -> Bytes {
        let mut out = BytesMut::with_capacity(
            32 + self.schema.len()
                + self.table.len()
                + self.org_table.len()
                + self.name.len()
                + self.org_name.len(),
        );
        for t in [
            &self.catalog,
            &self.schema,
            &self.table,
            &self.org_table,
            &self.name,
            &self.org_name,
        ] {
            put_lenenc_bytes(&mut out, t);
        }
        if let Some(ext) = &self.extended {
            put_lenenc_bytes(&mut out, ext);
        }
        put_lenenc_int(&mut out, FIXED_FIELDS_LEN);
        out.put_u16_le(self.collation);
        out.put_u32_le(self.column_length);
        out.put_u8(self.column_type.0);
        out.put_u16_le(self.flags.0);
        out.put_u8(self.decimals);
        out.put_slice(&self.filler);
        if field_list {
            match &self.default_value {
                Some(d) => put_lenenc_bytes(&mut out, d),
                None => out.put_u8(crate::wire::LENENC_NULL),
            }
        }
        out.freeze()
    }
}

/// The column count that starts a result set.
pub fn parse_column_count(payload: &[u8]) -> Result<u64, MessageError> {
    let mut r = Reader::new(payload);
    let n = r.lenenc_int("column count")?;
    r.finish("column count")?;
    if n == 0 {
        return Err(MessageError::InvalidValue {
            field: "column count",
            value: 0,
        });
    }
    Ok(n)
}

/// Encodes a column count.
pub fn encode_column_count(n: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(9);
    put_lenenc_int(&mut out, n);
    out.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn column(name: &str, ty: ColumnType, flags: u16) -> ColumnDefinition {
        ColumnDefinition {
            catalog: Bytes::from_static(b"def"),
            schema: Bytes::from_static(b"shop"),
            table: Bytes::from_static(b"c"),
            org_table: Bytes::from_static(b"customers"),
            name: Bytes::copy_from_slice(name.as_bytes()),
            org_name: Bytes::copy_from_slice(name.as_bytes()),
            extended: None,
            collation: 45,
            column_length: 44,
            column_type: ty,
            flags: ColumnFlags(flags),
            decimals: 0,
            filler: [0, 0],
            default_value: None,
        }
    }

    #[test]
    fn the_quick_check_accepts_exactly_what_validate_accepts() {
        let mut seeds = Vec::new();
        for extended in [false, true] {
            for field_list in [false, true] {
                let mut c = column("ssn", ColumnType::VAR_STRING, 1);
                c.extended = extended.then(|| Bytes::from_static(b"\x00\x04json"));
                c.default_value = field_list.then(|| Bytes::from_static(b"x"));
                seeds.push(c.encode(field_list).to_vec());
                c.default_value = None;
                seeds.push(c.encode(field_list).to_vec());
                c.name = Bytes::from(vec![b'n'; 300]);
                seeds.push(c.encode(field_list).to_vec());
            }
        }
        // The fixed fields' length written in two bytes is still 12.
        let mut wide = column("id", ColumnType::LONG, 0).encode(false).to_vec();
        let at = wide.len() - 13;
        wide.splice(at..=at, [0xFC, 0x0C, 0x00]);
        seeds.push(wide);
        let mut cases = Vec::new();
        for seed in &seeds {
            for cut in 0..=seed.len() {
                cases.push(seed[..cut].to_vec());
            }
            for i in 0..seed.len() {
                for v in [
                    0x00, 0x01, 0x0B, 0x0C, 0x0D, 0x80, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF,
                ] {
                    let mut m = seed.clone();
                    m[i] = v;
                    cases.push(m);
                }
            }
            let mut longer = seed.clone();
            longer.push(0);
            cases.push(longer);
        }
        for case in &cases {
            for extended_metadata in [false, true] {
                for field_list in [false, true] {
                    let options = ColumnOptions {
                        extended_metadata,
                        field_list,
                    };
                    assert_eq!(
                        ColumnDefinitionRef::is_valid(case, options),
                        ColumnDefinitionRef::validate(case, options).is_ok(),
                        "{case:02x?} {options:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn definition_round_trips() {
        let c = column("ssn", ColumnType::VAR_STRING, 1);
        let raw = c.encode(false);
        let parsed = ColumnDefinition::parse(&raw, ColumnOptions::default()).unwrap();
        assert_eq!(parsed, c);
        assert_eq!(&parsed.org_table[..], b"customers");
        assert_eq!(parsed.binary_type().column_type, ColumnType::VAR_STRING);
        let view = ColumnDefinitionRef::parse(&raw, ColumnOptions::default()).unwrap();
        assert_eq!(
            (view.org_table, view.name, view.column_type),
            (&b"customers"[..], &b"ssn"[..], ColumnType::VAR_STRING)
        );
        for cut in 0..raw.len() {
            assert!(ColumnDefinition::parse(&raw.slice(..cut), ColumnOptions::default()).is_err());
            assert!(ColumnDefinitionRef::parse(&raw[..cut], ColumnOptions::default()).is_err());
        }
        // Trailing bytes and a wrong fixed length are errors.
        let mut longer = raw.to_vec();
        longer.push(0);
        assert!(ColumnDefinitionRef::parse(&longer, ColumnOptions::default()).is_err());
        assert!(ColumnDefinition::parse(&Bytes::from(longer), ColumnOptions::default()).is_err());
        let mut bad = raw.to_vec();
        let at = raw.len() - 13;
        assert_eq!(bad[at], 0x0C);
        bad[at] = 0x0D;
        assert!(ColumnDefinitionRef::parse(&bad, ColumnOptions::default()).is_err());
        assert!(ColumnDefinition::parse(&Bytes::from(bad), ColumnOptions::default()).is_err());
    }

    /// `validate` is `parse` without the view: the same verdict, the same
    /// error, for every cut, trailing byte and option.
    #[test]
    fn validate_agrees_with_parse() {
        let mut c = column("ssn", ColumnType::VAR_STRING, 1);
        c.default_value = Some(Bytes::from_static(b"x"));
        c.extended = Some(Bytes::from_static(b"\x00\x04json"));
        for (field_list, extended_metadata) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let opts = ColumnOptions {
                extended_metadata,
                field_list,
            };
            let mut d = c.clone();
            if !extended_metadata {
                d.extended = None;
            }
            let raw = d.encode(field_list).to_vec();
            let mut cases: Vec<Vec<u8>> = (0..=raw.len()).map(|cut| raw[..cut].to_vec()).collect();
            let mut longer = raw.clone();
            longer.push(0);
            cases.push(longer);
            for at in 0..raw.len() {
                let mut bad = raw.clone();
                bad[at] ^= 0x0D;
                cases.push(bad);
            }
            for case in cases {
                assert_eq!(
                    ColumnDefinitionRef::validate(&case, opts),
                    ColumnDefinitionRef::parse(&case, opts).map(|_| ()),
                    "{case:?} {field_list} {extended_metadata}"
                );
            }
            assert_eq!(ColumnDefinitionRef::validate(&raw, opts), Ok(()));
        }
    }

    #[test]
    fn field_list_and_extended_metadata() {
        let mut c = column("id", ColumnType::LONG, 32 | 1);
        c.default_value = Some(Bytes::from_static(b"0"));
        let opts = ColumnOptions {
            field_list: true,
            ..ColumnOptions::default()
        };
        let raw = c.encode(true);
        assert_eq!(ColumnDefinition::parse(&raw, opts).unwrap(), c);
        assert!(c.binary_type().unsigned);
        c.default_value = None;
        let raw = c.encode(true);
        assert_eq!(ColumnDefinition::parse(&raw, opts).unwrap(), c);

        let mut e = column("doc", ColumnType::BLOB, 0);
        e.extended = Some(Bytes::from_static(b"\x00\x04json"));
        let opts = ColumnOptions {
            extended_metadata: true,
            ..ColumnOptions::default()
        };
        assert_eq!(ColumnDefinition::parse(&e.encode(false), opts).unwrap(), e);
    }

    #[test]
    fn column_count() {
        assert_eq!(parse_column_count(&encode_column_count(3)).unwrap(), 3);
        assert_eq!(parse_column_count(&encode_column_count(300)).unwrap(), 300);
        assert!(parse_column_count(b"\x00").is_err());
        assert!(parse_column_count(b"\x01\x02").is_err());
    }
}
