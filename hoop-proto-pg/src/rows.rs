//! RowDescription, DataRow, CommandComplete, EmptyQueryResponse (B)
//!
//! A result set: RowDescription (simple protocol, or from an earlier
//! Describe in the extended protocol), any number of DataRows, then
//! CommandComplete (or EmptyQueryResponse for an empty query string).

use super::wire::{MessageBuilder, MessageError, Reader};
use bytes::Bytes;

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    /// Column name (or alias).
    pub name: &'a str,
    /// OID of the source table, or 0 if the column is an expression.
    pub table_oid: u32,
    /// Attribute number in the source table, or 0.
    pub column_attr: i16,
    /// Data type OID.
    pub type_oid: u32,
    /// Type size (negative = variable).
    pub type_size: i16,
    /// Type modifier.
    pub type_modifier: i32,
    /// Format code (0 text, 1 binary; always 0 from Describe Statement).
    pub format: i16,
}

fn read_field<'a>(r: &mut Reader<'a>) -> Result<FieldDescription<'a>, MessageError> {
    Ok(FieldDescription {
        name: r.cstr("RowDescription field name")?,
        table_oid: r.i32("RowDescription table oid")? as u32,
        column_attr: r.i16("RowDescription column number")?,
        type_oid: r.i32("RowDescription type oid")? as u32,
        type_size: r.i16("RowDescription type size")?,
        type_modifier: r.i32("RowDescription type modifier")?,
        format: r.i16("RowDescription format")?,
    })
}

/// RowDescription (B): a validated, owned view (kept per statement/portal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDescription {
    body: Bytes,
    len: usize,
}

impl RowDescription {
    /// Validates a RowDescription body.
    pub fn parse(body: Bytes) -> Result<Self, MessageError> {
        let mut r = Reader::new(&body);
        // Each field is at least 19 bytes (empty name + 18 bytes of numbers).
        let len = r.count16("RowDescription field count", 19)?;
        for _ in 0..len {
            read_field(&mut r)?;
        }
        r.finish("RowDescription")?;
        Ok(Self { body, len })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no columns.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message body it was parsed from.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// `self == other`, answered without comparing the bytes when both
    /// share them (a clone of the same parsed description, as every run of
    /// a repeated query gets from the session state).
    pub fn same_as(&self, other: &RowDescription) -> bool {
        (self.body.as_ptr() == other.body.as_ptr() && self.body.len() == other.body.len())
            || self == other
    }

    /// The columns, in order.
    pub fn fields(&self) -> impl Iterator<Item = FieldDescription<'_>> + '_ {
        let mut r = Reader::new(self.body.get(2..).unwrap_or(&[]));
        // Validated in `parse`, so `read_field` cannot fail here; stop if it would.
        (0..self.len).map_while(move |_| read_field(&mut r).ok())
    }
}

/// DataRow (B): a validated view over one row's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRow<'a> {
    body: &'a [u8],
    len: usize,
}

impl<'a> DataRow<'a> {
    /// Validates a DataRow body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let len = r.count16("DataRow column count", 4)?;
        for _ in 0..len {
            r.value("DataRow value")?;
        }
        r.finish("DataRow")?;
        Ok(Self { body, len })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The raw message body (column count, then length-prefixed values).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Whether the row has no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values in column order (`None` = NULL).
    pub fn values(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        let mut r = Reader::new(self.body.get(2..).unwrap_or(&[]));
        (0..self.len).map_while(move |_| r.value("DataRow value").ok())
    }

    /// Encodes a DataRow from values (used when masking rewrites a row).
    pub fn build<'v>(values: impl IntoIterator<Item = Option<&'v [u8]>>) -> Bytes {
        let mut b = MessageBuilder::new(b'D');
        b.i16(0);
        let mut n: i16 = 0;
        for v in values {
            b.value(v);
            n = n.saturating_add(1);
        }
        let mut out = b.finish().to_vec();
        out[5..7].copy_from_slice(&n.to_be_bytes());
        Bytes::from(out)
    }
}

/// CommandComplete (B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandComplete<'a> {
    /// The command tag, e.g. `SELECT 3`, `INSERT 0 1`.
    pub tag: &'a str,
}

impl<'a> CommandComplete<'a> {
    /// Parses a CommandComplete body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let tag = r.cstr("CommandComplete tag")?;
        r.finish("CommandComplete")?;
        Ok(Self { tag })
    }

    /// The command word (`SELECT`, `INSERT`…).
    pub fn command(&self) -> &'a str {
        self.tag.split(' ').next().unwrap_or("")
    }

    /// The row count at the end of the tag, if any.
    pub fn rows(&self) -> Option<u64> {
        // Tags are short: a byte scan beats the general string searcher.
        let space = self.tag.bytes().rposition(|b| b == b' ')?;
        self.tag[space + 1..].parse().ok()
    }
}

/// EmptyQueryResponse (B), encoded.
pub fn empty_query_response() -> Bytes {
    Bytes::from_static(b"I\0\0\0\x04")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn description(name: &str) -> RowDescription {
        let mut body = 1i16.to_be_bytes().to_vec();
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(&[
            0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        RowDescription::parse(Bytes::from(body)).unwrap()
    }

    #[test]
    fn same_as_is_equality() {
        let a = description("a");
        assert!(a.same_as(&a.clone()));
        // Equal bytes in another buffer.
        assert!(a.same_as(&description("a")));
        assert!(!a.same_as(&description("b")));
        assert!(!a.same_as(&description("ab")));
    }

    #[test]
    fn data_row_round_trip() {
        let row = DataRow::build([Some(&b"a"[..]), None, Some(&b""[..])]);
        let view = DataRow::parse(&row[5..]).unwrap();
        assert_eq!(
            view.values().collect::<Vec<_>>(),
            vec![Some(&b"a"[..]), None, Some(&b""[..])]
        );
        assert!(DataRow::parse(&row[5..row.len() - 1]).is_err());
        assert!(DataRow::parse(&[0x7f, 0xff]).is_err());
    }

    #[test]
    fn row_description_fields() {
        let mut body = vec![0, 2];
        for name in ["id", "ssn"] {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&[
                0, 0, 0x40, 0, 0, 1, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
            ]);
        }
        let desc = RowDescription::parse(Bytes::from(body)).unwrap();
        let f: Vec<_> = desc.fields().collect();
        assert_eq!(
            (f.len(), f[1].name, f[1].table_oid, f[1].type_oid),
            (2, "ssn", 0x4000, 23)
        );
        assert!(RowDescription::parse(Bytes::from_static(&[0, 1, b'x', 0])).is_err());
    }

    #[test]
    fn command_tag_rows() {
        assert_eq!(CommandComplete { tag: "INSERT 0 5" }.rows(), Some(5));
        assert_eq!(CommandComplete { tag: "BEGIN" }.rows(), None);
        assert_eq!(CommandComplete { tag: "SELECT 3" }.command(), "SELECT");
    }
}
