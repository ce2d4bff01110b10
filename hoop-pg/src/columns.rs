//! PostgreSQL result sets in governance's terms: a RowDescription as
//! [`ResultColumn`]s, a DataRow as [`RowValues`], and a rewritten row
//! encoded back into a DataRow.

use std::borrow::Cow;

use bytes::BytesMut;
use hoop_core::{
    ColumnSource, ResultColumn, RowEncoder, RowValues, SourceKey, ValueContent, ValueEncoding,
    ValueSpans,
};
use hoop_proto_pg::{
    MessageError,
    rows::{DataRow, RowDescription},
};

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
    /// Validates a DataRow body and indexes its values in one pass. A body
    /// is accepted exactly when [`DataRow::parse`] accepts it, and refused
    /// with its error: a body the quick walk does not accept is handed to
    /// `DataRow::parse` for the verdict and the error.
    pub fn parse<'a>(&'a mut self, body: &'a [u8]) -> Result<PgRow<'a>, MessageError> {
        if !self.walk(body) {
            let row = DataRow::parse(body)?;
            // Not reached for a body the walk refused, but if it were, the
            // row is indexed by `DataRow`'s own reading of it.
            self.spans.clear();
            let base = body.as_ptr() as usize;
            for v in row.values() {
                self.spans.push(match v {
                    None => (0, -1),
                    Some(v) => (
                        v.as_ptr() as usize - base,
                        i32::try_from(v.len()).unwrap_or(i32::MAX),
                    ),
                });
            }
        }
        Ok(PgRow {
            body,
            spans: &self.spans,
        })
    }

    /// Indexes a well-formed body: a count that is not negative, then that
    /// many values, each a length (-1 for NULL, else not negative) and that
    /// many bytes, and nothing after. `false` for anything else.
    fn walk(&mut self, body: &[u8]) -> bool {
        self.spans.clear();
        let Some(&[hi, lo]) = body.get(..2) else {
            return false;
        };
        let Ok(count) = usize::try_from(i16::from_be_bytes([hi, lo])) else {
            return false;
        };
        let mut pos = 2;
        for _ in 0..count {
            let Some(&[b0, b1, b2, b3]) = body.get(pos..pos + 4) else {
                return false;
            };
            pos += 4;
            let start = pos;
            let len = i32::from_be_bytes([b0, b1, b2, b3]);
            if len != -1 {
                match usize::try_from(len) {
                    Ok(size) if size <= body.len() - pos => pos += size,
                    _ => return false,
                }
            }
            self.spans.push((start, len));
        }
        pos == body.len()
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
        self.value_spans().get(i)
    }

    fn spans(&self) -> Option<ValueSpans<'_>> {
        Some(self.value_spans())
    }
}

impl PgRow<'_> {
    fn value_spans(&self) -> ValueSpans<'_> {
        ValueSpans {
            body: self.body,
            spans: self.spans,
        }
    }
}

/// Appends a DataRow message, built from pushed values, to a buffer that
/// may already hold other messages (the relay writes a read's rewritten rows
/// one after another into one buffer, so a row costs no allocation of its
/// own and the client's socket gets one chunk per read, not one per row).
#[derive(Debug)]
pub struct DataRowEncoder<'a> {
    buf: &'a mut BytesMut,
    /// Where this message starts in `buf`.
    start: usize,
    count: i16,
}

impl<'a> DataRowEncoder<'a> {
    /// Starts a message at the end of `buf`, with room for about `size`
    /// body bytes.
    pub fn new(buf: &'a mut BytesMut, size: usize) -> Self {
        let start = buf.len();
        buf.reserve(size + 64);
        buf.extend_from_slice(&[b'D', 0, 0, 0, 0, 0, 0]);
        Self {
            buf,
            start,
            count: 0,
        }
    }

    /// Completes the message (its length and value count).
    pub fn finish(self) {
        let len = u32::try_from(self.buf.len() - self.start - 1).unwrap_or(u32::MAX);
        let at = self.start;
        self.buf[at + 1..at + 5].copy_from_slice(&len.to_be_bytes());
        self.buf[at + 5..at + 7].copy_from_slice(&self.count.to_be_bytes());
    }

    /// Removes the message, and whatever was pushed into it, from the buffer.
    pub fn discard(self) {
        self.buf.truncate(self.start);
    }
}

impl RowEncoder for DataRowEncoder<'_> {
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
        let mut index = RowIndex::default();
        let pg = index.parse(&frame[5..]).unwrap();
        assert_eq!(pg.len(), 4);
        let got: Vec<Option<&[u8]>> = (0..4).map(|i| pg.get(i)).collect();
        assert_eq!(got, values);
        assert_eq!(pg.get(9), None);
        // Appended after what the buffer holds; a discarded row leaves
        // nothing behind.
        let mut buf = BytesMut::from(&b"xyz"[..]);
        let mut enc = DataRowEncoder::new(&mut buf, 16);
        enc.push(Some(b"partial"));
        enc.discard();
        assert_eq!(&buf[..], b"xyz");
        let mut enc = DataRowEncoder::new(&mut buf, 16);
        for v in values {
            enc.push(v);
        }
        enc.finish();
        assert_eq!(&buf[..3], b"xyz");
        assert_eq!(&buf[3..], &frame[..]);
        // The spans a rewriter reads give what `get` gives.
        let spans = pg.spans().unwrap();
        let by_spans: Vec<Option<&[u8]>> = (0..5).map(|i| spans.get(i)).collect();
        let by_get: Vec<Option<&[u8]>> = (0..5).map(|i| pg.get(i)).collect();
        assert_eq!(by_spans, by_get);
    }

    #[test]
    fn malformed_rows_are_refused_as_data_row_parse_refuses_them() {
        let good = DataRow::build([Some(&b"ab"[..]), None]);
        let body = &good[5..];
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0],
            vec![0xff, 0xff],
            vec![0, 1, 0, 0, 0, 9, b'x'],
            vec![0, 1, 0xff, 0xff, 0xff, 0xfe],
            vec![0, 1, 0xff, 0xff, 0xff, 0xff, 0],
            vec![0, 2, 0, 0, 0, 0],
        ];
        // Every truncation and one trailing byte too many.
        for n in 0..body.len() {
            cases.push(body[..n].to_vec());
        }
        let mut long = body.to_vec();
        long.push(0);
        cases.push(long);
        cases.push(body.to_vec());
        let mut index = RowIndex::default();
        for case in &cases {
            let expected = DataRow::parse(case).map(|r| {
                r.values()
                    .map(|v| v.map(<[u8]>::to_vec))
                    .collect::<Vec<_>>()
            });
            let got = index.parse(case).map(|r| {
                (0..r.len())
                    .map(|i| r.get(i).map(<[u8]>::to_vec))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, expected, "{case:?}");
        }
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
