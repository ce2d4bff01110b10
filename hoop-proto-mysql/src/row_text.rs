//! Text result row (S)
//!
//! One length-encoded string per column, `0xFB` for NULL (COM_QUERY
//! results). The view is zero-copy: values are slices of the packet.

use bytes::{Bytes, BytesMut};

use crate::wire::{LENENC_NULL, MessageError, Reader, put_lenenc_bytes};

/// A text row, as a validated view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRow<'a> {
    payload: &'a [u8],
    columns: usize,
}

impl<'a> TextRow<'a> {
    /// Validates a row of exactly `columns` values.
    pub fn parse(payload: &'a [u8], columns: usize) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        for _ in 0..columns {
            r.lenenc_bytes_or_null("text row value")?;
        }
        r.finish("text row")?;
        Ok(Self { payload, columns })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.columns
    }

    /// Whether the row has no values.
    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    /// The raw payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The values in column order (`None` = NULL).
    pub fn values(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        let mut r = Reader::new(self.payload);
        // Validated in `parse`, so reading cannot fail; stop if it would.
        (0..self.columns).map_while(move |_| r.lenenc_bytes_or_null("text row value").ok())
    }

    /// Encodes a row from values (what masking writes when it changes one).
    pub fn encode<'v>(values: impl IntoIterator<Item = Option<&'v [u8]>>) -> Bytes {
        let mut out = BytesMut::new();
        for v in values {
            match v {
                Some(v) => put_lenenc_bytes(&mut out, v),
                None => out.extend_from_slice(&[LENENC_NULL]),
            }
        }
        out.freeze()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_nulls_and_long_values() {
        let long = vec![b'x'; 70_000];
        let values = [Some(&b"1"[..]), None, Some(&b""[..]), Some(&long[..])];
        let raw = TextRow::encode(values);
        let row = TextRow::parse(&raw, 4).unwrap();
        assert_eq!(row.values().collect::<Vec<_>>(), values);
        assert_eq!(row.len(), 4);
        assert!(TextRow::parse(&raw, 3).is_err(), "a value left over");
        assert!(TextRow::parse(&raw, 5).is_err(), "a value missing");
        for cut in 0..raw.len().min(200) {
            assert!(TextRow::parse(&raw[..cut], 4).is_err());
        }
        assert!(TextRow::parse(b"\xff", 1).is_err());
    }
}
