//! The rows inside a COPY stream: text, CSV and binary, decoded into field
//! values and encoded back. Pure: the driver feeds CopyData payloads and
//! gets rows; masking rewrites the values in between.
//!
//! CopyData messages may split rows anywhere. [`CopyRowReader`] keeps the
//! incomplete last row in a carry-over buffer bounded by a limit checked
//! before it grows.

use std::borrow::Cow;

/// How a COPY's rows are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// The format.
    pub format: CopyDataFormat,
    /// Field delimiter (text: tab, CSV: comma).
    pub delimiter: u8,
    /// The string that stands for NULL (text: `\N`, CSV: empty).
    pub null: Vec<u8>,
    /// CSV quote character.
    pub quote: u8,
    /// CSV escape character (defaults to the quote).
    pub escape: u8,
    /// The first line is a header (text and CSV).
    pub header: bool,
}

/// A COPY data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDataFormat {
    /// Tab-separated text with backslash escapes.
    Text,
    /// CSV.
    Csv,
    /// PostgreSQL's binary COPY format.
    Binary,
}

impl CopyOptions {
    /// PostgreSQL's defaults for `format`.
    pub fn defaults(format: CopyDataFormat) -> Self {
        match format {
            CopyDataFormat::Csv => Self {
                format,
                delimiter: b',',
                null: Vec::new(),
                quote: b'"',
                escape: b'"',
                header: false,
            },
            CopyDataFormat::Text | CopyDataFormat::Binary => Self {
                format,
                delimiter: b'\t',
                null: b"\\N".to_vec(),
                quote: b'"',
                escape: b'"',
                header: false,
            },
        }
    }
}

/// The signature that opens a binary COPY stream.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Why COPY data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyDataError {
    /// A row longer than the carry-over limit.
    #[error("a COPY row exceeds {0} bytes")]
    RowTooLong(usize),
    /// Binary COPY data that is not well formed.
    #[error("malformed binary COPY data: {0}")]
    Malformed(&'static str),
}

/// One piece of a COPY stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyItem<'a> {
    /// Bytes that are not a data row (a header line, the binary header or
    /// trailer): forwarded as they are.
    Other(&'a [u8]),
    /// One data row, with its line ending (text and CSV).
    Row(&'a [u8]),
}

/// Splits the CopyData payloads of one COPY into rows.
#[derive(Debug)]
pub struct CopyRowReader {
    options: CopyOptions,
    carry: Vec<u8>,
    max_row: usize,
    /// A text/CSV header line is still to come.
    header_pending: bool,
    /// The binary header is still to come.
    binary_header_pending: bool,
}

impl CopyRowReader {
    /// A reader for a COPY written with `options`, keeping at most
    /// `max_row` bytes of an incomplete row.
    pub fn new(options: CopyOptions, max_row: usize) -> Self {
        Self {
            header_pending: options.header && options.format != CopyDataFormat::Binary,
            binary_header_pending: options.format == CopyDataFormat::Binary,
            options,
            carry: Vec::new(),
            max_row,
        }
    }

    /// The COPY's options.
    pub fn options(&self) -> &CopyOptions {
        &self.options
    }

    /// Whether an incomplete row is waiting for more data.
    pub fn has_carry(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Takes the incomplete row left at the end of the stream.
    pub fn take_carry(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.carry)
    }

    /// Joins `chunk` to the carried-over bytes; returns the data to split
    /// and whether it is `chunk` itself (nothing was carried).
    pub fn join<'a>(&mut self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        if self.carry.is_empty() {
            Cow::Borrowed(chunk)
        } else {
            let mut d = std::mem::take(&mut self.carry);
            d.extend_from_slice(chunk);
            Cow::Owned(d)
        }
    }

    /// Splits `data` into items; what follows the last complete item is
    /// carried over to the next call. Fails when that rest exceeds the
    /// limit or binary data is malformed.
    pub fn split<'a>(&mut self, data: &'a [u8]) -> Result<Vec<CopyItem<'a>>, CopyDataError> {
        let mut items = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let Some(end) = self.item_end(&data[at..])? else {
                break;
            };
            let item = &data[at..at + end];
            if self.header_pending {
                self.header_pending = false;
                items.push(CopyItem::Other(item));
            } else if self.binary_header_pending {
                self.binary_header_pending = false;
                items.push(CopyItem::Other(item));
            } else if self.options.format == CopyDataFormat::Binary && item == b"\xff\xff" {
                items.push(CopyItem::Other(item));
            } else {
                items.push(CopyItem::Row(item));
            }
            at += end;
        }
        let rest = &data[at..];
        if rest.len() > self.max_row {
            return Err(CopyDataError::RowTooLong(self.max_row));
        }
        self.carry.extend_from_slice(rest);
        Ok(items)
    }

    /// The length of the first complete item of `data`, if there is one.
    fn item_end(&self, data: &[u8]) -> Result<Option<usize>, CopyDataError> {
        match self.options.format {
            CopyDataFormat::Text => Ok(memchr::memchr(b'\n', data).map(|i| i + 1)),
            CopyDataFormat::Csv => Ok(self.csv_row_end(data)),
            CopyDataFormat::Binary if self.binary_header_pending => binary_header_len(data),
            CopyDataFormat::Binary => binary_tuple_len(data),
        }
    }

    /// CSV: newlines inside quoted fields do not end a row.
    fn csv_row_end(&self, data: &[u8]) -> Option<usize> {
        let (quote, escape) = (self.options.quote, self.options.escape);
        let mut in_quotes = false;
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            if in_quotes {
                if b == escape
                    && escape != quote
                    && data.get(i + 1).is_some_and(|&n| n == quote || n == escape)
                {
                    i += 1;
                } else if b == quote {
                    in_quotes = false;
                }
            } else if b == quote {
                in_quotes = true;
            } else if b == b'\n' {
                return Some(i + 1);
            }
            i += 1;
        }
        None
    }

    /// The field values of one data row (`None` is NULL).
    pub fn fields<'a>(&self, row: &'a [u8]) -> Result<Vec<Option<Cow<'a, [u8]>>>, CopyDataError> {
        let o = &self.options;
        match o.format {
            CopyDataFormat::Text => {
                let (body, _) = split_ending(row);
                Ok(body
                    .split(|&b| b == o.delimiter)
                    .map(|raw| (raw != o.null.as_slice()).then(|| decode_text(raw)))
                    .collect())
            }
            CopyDataFormat::Csv => {
                let (body, _) = split_ending(row);
                Ok(split_csv(body, o.delimiter, o.quote, o.escape)
                    .into_iter()
                    .map(|(raw, quoted)| {
                        if quoted {
                            Some(Cow::Owned(decode_csv(raw, o.quote, o.escape)))
                        } else if raw == o.null.as_slice() {
                            None
                        } else {
                            Some(Cow::Borrowed(raw))
                        }
                    })
                    .collect())
            }
            CopyDataFormat::Binary => binary_fields(row),
        }
    }

    /// Encodes a row of values the way `row` was written (its line ending
    /// kept).
    pub fn encode(&self, row: &[u8], values: &[Option<Vec<u8>>], out: &mut Vec<u8>) {
        self.begin_row(values.len(), out);
        for (i, v) in values.iter().enumerate() {
            self.push_field(i, v.as_deref(), out);
        }
        self.end_row(row, out);
    }

    /// Starts encoding a row of `fields` values.
    pub fn begin_row(&self, fields: usize, out: &mut Vec<u8>) {
        if self.options.format == CopyDataFormat::Binary {
            let n = i16::try_from(fields).unwrap_or(i16::MAX);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }

    /// Encodes field `index` of a row (`None` is NULL).
    pub fn push_field(&self, index: usize, value: Option<&[u8]>, out: &mut Vec<u8>) {
        let o = &self.options;
        if o.format == CopyDataFormat::Binary {
            match value {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    let len = i32::try_from(v.len()).unwrap_or(i32::MAX);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(v);
                }
            }
            return;
        }
        if index > 0 {
            out.push(o.delimiter);
        }
        match (value, o.format) {
            (None, _) => out.extend_from_slice(&o.null),
            (Some(v), CopyDataFormat::Csv) => encode_csv(v, o, out),
            (Some(v), _) => encode_text(v, o.delimiter, out),
        }
    }

    /// Ends a row encoded in place of `row` (text and CSV: its line ending).
    pub fn end_row(&self, row: &[u8], out: &mut Vec<u8>) {
        if self.options.format != CopyDataFormat::Binary {
            out.extend_from_slice(split_ending(row).1);
        }
    }
}

fn binary_header_len(data: &[u8]) -> Result<Option<usize>, CopyDataError> {
    const FIXED: usize = 11 + 4 + 4;
    if data.len() < FIXED {
        return Ok(None);
    }
    if &data[..11] != BINARY_SIGNATURE {
        return Err(CopyDataError::Malformed("bad signature"));
    }
    let ext = i32::from_be_bytes([data[15], data[16], data[17], data[18]]);
    let ext =
        usize::try_from(ext).map_err(|_| CopyDataError::Malformed("negative header extension"))?;
    let len = FIXED
        .checked_add(ext)
        .ok_or(CopyDataError::Malformed("header extension too long"))?;
    Ok((data.len() >= len).then_some(len))
}

/// A binary tuple's length: `i16` field count (`-1` ends the stream), then
/// per field an `i32` length (`-1` is NULL) and the bytes.
fn binary_tuple_len(data: &[u8]) -> Result<Option<usize>, CopyDataError> {
    let Some(count) = data.get(..2) else {
        return Ok(None);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Some(2));
    }
    let count =
        usize::try_from(count).map_err(|_| CopyDataError::Malformed("negative field count"))?;
    let mut pos = 2;
    for _ in 0..count {
        let Some(len) = data.get(pos..pos + 4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        match len {
            -1 => {}
            n if n < 0 => return Err(CopyDataError::Malformed("negative field length")),
            n => pos += usize::try_from(n).unwrap_or(usize::MAX),
        }
        if pos > data.len() {
            return Ok(None);
        }
    }
    Ok(Some(pos))
}

fn binary_fields(row: &[u8]) -> Result<Vec<Option<Cow<'_, [u8]>>>, CopyDataError> {
    let bad = CopyDataError::Malformed("truncated tuple");
    let count = row.get(..2).ok_or_else(|| bad.clone())?;
    let count = usize::try_from(i16::from_be_bytes([count[0], count[1]]))
        .map_err(|_| CopyDataError::Malformed("negative field count"))?;
    let mut out = Vec::with_capacity(count);
    let mut pos = 2;
    for _ in 0..count {
        let len = row.get(pos..pos + 4).ok_or_else(|| bad.clone())?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        if len == -1 {
            out.push(None);
            continue;
        }
        let len =
            usize::try_from(len).map_err(|_| CopyDataError::Malformed("negative field length"))?;
        let value = row.get(pos..pos + len).ok_or_else(|| bad.clone())?;
        out.push(Some(Cow::Borrowed(value)));
        pos += len;
    }
    Ok(out)
}

fn split_ending(row: &[u8]) -> (&[u8], &[u8]) {
    if row.ends_with(b"\r\n") {
        row.split_at(row.len() - 2)
    } else if row.ends_with(b"\n") {
        row.split_at(row.len() - 1)
    } else {
        (row, &[])
    }
}

/// Splits a CSV row into raw fields (quoted fields with their quotes) and
/// whether each was quoted.
fn split_csv(row: &[u8], delimiter: u8, quote: u8, escape: u8) -> Vec<(&[u8], bool)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut quoted = false;
    let mut i = 0;
    while i < row.len() {
        let b = row[i];
        if in_quotes {
            if b == escape
                && escape != quote
                && row.get(i + 1).is_some_and(|&n| n == quote || n == escape)
            {
                i += 1;
            } else if b == quote {
                in_quotes = false;
            }
        } else if b == quote {
            in_quotes = true;
            quoted = true;
        } else if b == delimiter {
            out.push((&row[start..i], quoted));
            start = i + 1;
            quoted = false;
        }
        i += 1;
    }
    out.push((&row[start..], quoted));
    out
}

fn decode_csv(raw: &[u8], quote: u8, escape: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_quotes = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if in_quotes {
            if b == escape
                && raw.get(i + 1).is_some_and(|&n| n == quote || n == escape)
                && (escape != quote || raw.get(i + 1) == Some(&quote))
            {
                out.push(raw[i + 1]);
                i += 2;
                continue;
            }
            if b == quote {
                in_quotes = false;
            } else {
                out.push(b);
            }
        } else if b == quote {
            in_quotes = true;
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

/// A CSV field, quoted when it must be (it holds the delimiter, a quote,
/// the escape or a line break, is empty, or equals the NULL string, which
/// unquoted would read as NULL).
fn encode_csv(value: &[u8], o: &CopyOptions, out: &mut Vec<u8>) {
    let needs = value.is_empty()
        || value == o.null.as_slice()
        || value.iter().any(|&b| {
            b == o.delimiter || b == o.quote || b == o.escape || b == b'\n' || b == b'\r'
        });
    if !needs {
        out.extend_from_slice(value);
        return;
    }
    out.push(o.quote);
    for &b in value {
        if b == o.quote || b == o.escape {
            out.push(o.escape);
        }
        out.push(b);
    }
    out.push(o.quote);
}

/// Decodes COPY text-format backslash escapes.
fn decode_text(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 >= raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16 + char::from(raw[i]).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

/// A text-format field with the backslash escapes it needs.
fn encode_text(value: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            11 => out.extend_from_slice(b"\\v"),
            d if d == delimiter => {
                out.push(b'\\');
                out.push(d);
            }
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn owned(fields: Vec<Option<Cow<'_, [u8]>>>) -> Vec<Option<Vec<u8>>> {
        fields.into_iter().map(|f| f.map(Cow::into_owned)).collect()
    }

    #[test]
    fn text_rows_split_across_chunks_and_round_trip() {
        let mut r = CopyRowReader::new(CopyOptions::defaults(CopyDataFormat::Text), 1024);
        let items = r.split(b"1\tAda\\tx\t\\N\n2\tB").unwrap();
        assert_eq!(items, [CopyItem::Row(b"1\tAda\\tx\t\\N\n")]);
        assert!(r.has_carry());
        let joined = r.join(b"ob\t\\N\n").into_owned();
        let items = r.split(&joined).unwrap();
        let CopyItem::Row(row) = items[0] else {
            panic!("a row")
        };
        assert_eq!(
            owned(r.fields(row).unwrap()),
            [Some(b"2".to_vec()), Some(b"Bob".to_vec()), None]
        );
        let values = owned(r.fields(b"1\tAda\\tx\t\\N\n").unwrap());
        assert_eq!(values[1].as_deref(), Some(&b"Ada\tx"[..]));
        let mut out = Vec::new();
        r.encode(b"1\tAda\\tx\t\\N\n", &values, &mut out);
        assert_eq!(out, b"1\tAda\\tx\t\\N\n");
    }

    #[test]
    fn csv_quotes_newlines_headers_and_null_versus_empty() {
        let mut o = CopyOptions::defaults(CopyDataFormat::Csv);
        o.header = true;
        let mut r = CopyRowReader::new(o, 1024);
        let data = b"id,note\n1,\"a\nb\"\n2,\n3,\"\"\n";
        let items = r.split(data).unwrap();
        assert_eq!(items[0], CopyItem::Other(b"id,note\n"));
        let rows: Vec<&[u8]> = items[1..]
            .iter()
            .map(|i| match i {
                CopyItem::Row(r) => *r,
                CopyItem::Other(_) => panic!("a row"),
            })
            .collect();
        assert_eq!(rows, [&b"1,\"a\nb\"\n"[..], b"2,\n", b"3,\"\"\n"]);
        assert_eq!(
            owned(r.fields(rows[0]).unwrap()),
            [Some(b"1".to_vec()), Some(b"a\nb".to_vec())]
        );
        assert_eq!(owned(r.fields(rows[1]).unwrap())[1], None);
        assert_eq!(owned(r.fields(rows[2]).unwrap())[1], Some(Vec::new()));
        // An empty string stays quoted so it does not come back as NULL.
        let mut out = Vec::new();
        r.encode(rows[2], &[Some(b"3".to_vec()), Some(Vec::new())], &mut out);
        assert_eq!(out, b"3,\"\"\n");
    }

    #[test]
    fn binary_header_tuples_and_trailer() {
        let mut r = CopyRowReader::new(CopyOptions::defaults(CopyDataFormat::Binary), 1024);
        let mut data = BINARY_SIGNATURE.to_vec();
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        let tuple = [0, 2, 0, 0, 0, 1, b'7', 0xff, 0xff, 0xff, 0xff];
        data.extend_from_slice(&tuple);
        data.extend_from_slice(&[0xff, 0xff]);
        let items = r.split(&data).unwrap();
        assert!(matches!(items[0], CopyItem::Other(h) if h.len() == 19));
        assert_eq!(items[1], CopyItem::Row(&tuple[..]));
        assert_eq!(items[2], CopyItem::Other(&b"\xff\xff"[..]));
        assert_eq!(
            owned(r.fields(&tuple).unwrap()),
            [Some(b"7".to_vec()), None]
        );
        let mut out = Vec::new();
        r.encode(&tuple, &[Some(b"7".to_vec()), None], &mut out);
        assert_eq!(out, tuple);
        // A bad signature or length is an error, never a panic.
        let mut bad = CopyRowReader::new(CopyOptions::defaults(CopyDataFormat::Binary), 1024);
        assert!(bad.split(b"NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn rows_longer_than_the_limit_fail() {
        let mut r = CopyRowReader::new(CopyOptions::defaults(CopyDataFormat::Text), 8);
        assert_eq!(
            r.split(b"0123456789abcdef"),
            Err(CopyDataError::RowTooLong(8))
        );
    }
}
