//! PostgreSQL result sets in governance's terms: a RowDescription as
//! [`ResultColumn`]s, a DataRow as [`RowValues`], and a rewritten row
//! encoded back into a DataRow.

use std::borrow::Cow;

use bytes::Bytes;
use hoop_core::{
    ColumnSource, ResultColumn, RowEncoder, RowValues, SourceKey, ValueContent, ValueEncoding,
};
use hoop_proto_pg::rows::{DataRow, RowDescription};

/// `json`.
const JSON: u32 = 114;
/// `jsonb`.
const JSONB: u32 = 3802;
/// Types whose binary format is their text: `text`, `varchar`, `bpchar`,
/// `name`, `xml`, `unknown`.
const TEXT_LIKE: [u32; 6] = [25, 1043, 1042, 19, 142, 705];

/// How a value of type `type_oid` is laid out in `format` (0 text, 1 binary).
pub fn value_encoding(type_oid: u32, format: i16) -> ValueEncoding {
    match (format, type_oid) {
        (_, JSON) | (0, JSONB) => ValueEncoding::Json,
        (1, JSONB) => ValueEncoding::JsonbBinary,
        (0, _) => ValueEncoding::Text,
        (_, t) if TEXT_LIKE.contains(&t) => ValueEncoding::Text,
        _ => ValueEncoding::Opaque,
    }
}

/// What the text of a value of type `type_oid` can look like, for content
/// detectors (binary values are [`ValueEncoding::Opaque`] and never
/// scanned). Only types whose text output is fixed by the server, whatever
/// the session's settings, are narrowed: `bool`; `int2`, `int4`, `oid`,
/// `int8`; `date`, `timestamp`, `timestamptz` in every `DateStyle`.
pub fn value_content(type_oid: u32, format: i16) -> ValueContent {
    if format != 0 {
        return ValueContent::Any;
    }
    match type_oid {
        16 => ValueContent::Boolean,
        21 => ValueContent::Integer { digits: 5 },
        23 | 26 => ValueContent::Integer { digits: 10 },
        20 => ValueContent::Integer { digits: 19 },
        1082 | 1114 | 1184 => ValueContent::Temporal,
        _ => ValueContent::Any,
    }
}

/// A type's name for messages: PostgreSQL's for the common types, else
/// its OID (`oid 1234`).
fn type_name(type_oid: u32) -> Cow<'static, str> {
    Cow::Borrowed(match type_oid {
        16 => "bool",
        17 => "bytea",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "float4",
        701 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1114 => "timestamp",
        1184 => "timestamptz",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return Cow::Owned(format!("oid {type_oid}")),
    })
}

/// The columns of a result: `formats[i]` is column `i`'s result format
/// (one per column; missing entries fall back to the description's own).
pub fn result_columns(description: &RowDescription, formats: &[i16]) -> Vec<ResultColumn> {
    description
        .fields()
        .enumerate()
        .map(|(i, f)| {
            let format = formats.get(i).copied().unwrap_or(f.format);
            ResultColumn {
                name: f.name.to_owned(),
                source: if f.table_oid != 0 && f.column_attr > 0 {
                    ColumnSource::Key(SourceKey {
                        relation: f.table_oid,
                        column: f.column_attr,
                    })
                } else {
                    ColumnSource::None
                },
                encoding: value_encoding(f.type_oid, format),
                type_name: type_name(f.type_oid),
                content: value_content(f.type_oid, format),
            }
        })
        .collect()
}

/// Where each value of a DataRow lies, kept across rows so indexing a row
/// allocates nothing.
#[derive(Debug, Default)]
pub struct RowIndex {
    /// Per value: its offset in the body and its length (`-1` for NULL).
    spans: Vec<(usize, i32)>,
}

impl RowIndex {
    /// Indexes a validated row.
    pub fn index<'a>(&'a mut self, row: &DataRow<'a>) -> PgRow<'a> {
        self.spans.clear();
        let body = row.body();
        let mut pos = 2;
        for _ in 0..row.len() {
            let len = body
                .get(pos..pos + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(-1, i32::from_be_bytes);
            pos += 4;
            self.spans.push((pos, len));
            pos += usize::try_from(len).unwrap_or(0);
        }
        PgRow {
            body,
            spans: &self.spans,
        }
    }
}

/// A DataRow's values, by index.
#[derive(Debug, Clone, Copy)]
pub struct PgRow<'a> {
    body: &'a [u8],
    spans: &'a [(usize, i32)],
}

impl RowValues for PgRow<'_> {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let &(at, len) = self.spans.get(i)?;
        let len = usize::try_from(len).ok()?;
        self.body.get(at..at + len)
    }
}

/// Builds a DataRow message from pushed values.
#[derive(Debug)]
pub struct DataRowEncoder {
    buf: Vec<u8>,
    count: i16,
}

impl DataRowEncoder {
    /// An encoder sized for a row of about `size` body bytes.
    pub fn with_capacity(size: usize) -> Self {
        let mut buf = Vec::with_capacity(size + 64);
        buf.push(b'D');
        buf.extend_from_slice(&[0; 6]);
        Self { buf, count: 0 }
    }

    /// The whole DataRow message.
    pub fn finish(mut self) -> Bytes {
        let len = u32::try_from(self.buf.len() - 1).unwrap_or(u32::MAX);
        self.buf[1..5].copy_from_slice(&len.to_be_bytes());
        self.buf[5..7].copy_from_slice(&self.count.to_be_bytes());
        Bytes::from(self.buf)
    }
}

impl RowEncoder for DataRowEncoder {
    fn push(&mut self, value: Option<&[u8]>) {
        self.count = self.count.saturating_add(1);
        match value {
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                let len = i32::try_from(v.len()).unwrap_or(i32::MAX);
                self.buf.extend_from_slice(&len.to_be_bytes());
                self.buf.extend_from_slice(v);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rows_index_and_encode_back_byte_for_byte() {
        let values: [Option<&[u8]>; 4] = [Some(b"1"), None, Some(b""), Some(b"hello")];
        let frame = DataRow::build(values);
        let row = DataRow::parse(&frame[5..]).unwrap();
        let mut index = RowIndex::default();
        let pg = index.index(&row);
        assert_eq!(pg.len(), 4);
        let got: Vec<Option<&[u8]>> = (0..4).map(|i| pg.get(i)).collect();
        assert_eq!(got, values);
        assert_eq!(pg.get(9), None);
        let mut enc = DataRowEncoder::with_capacity(16);
        for v in values {
            enc.push(v);
        }
        assert_eq!(enc.finish(), frame);
    }

    #[test]
    fn encodings_follow_type_and_format() {
        assert_eq!(value_encoding(23, 0), ValueEncoding::Text);
        assert_eq!(value_encoding(23, 1), ValueEncoding::Opaque);
        assert_eq!(value_encoding(25, 1), ValueEncoding::Text);
        assert_eq!(value_encoding(114, 1), ValueEncoding::Json);
        assert_eq!(value_encoding(3802, 0), ValueEncoding::Json);
        assert_eq!(value_encoding(3802, 1), ValueEncoding::JsonbBinary);
    }
}
