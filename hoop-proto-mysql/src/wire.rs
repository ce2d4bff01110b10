//! Checked primitives shared by every message view: a bounds-checked reader
//! over a packet payload (little-endian integers, length-encoded integers and
//! strings, NUL-terminated strings) and the matching writers.
//!
//! Nothing here indexes unchecked data: every read returns a
//! [`MessageError`] instead of panicking, and a length read from the wire is
//! compared with the bytes actually present before anything is sliced.

use bytes::BufMut;

/// A payload that does not match its message type's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The payload ended before `field` could be read.
    #[error("packet truncated while reading {field}")]
    Truncated {
        /// What was being read.
        field: &'static str,
    },
    /// A string field is not NUL-terminated within the payload.
    #[error("unterminated string in {field}")]
    Unterminated {
        /// What was being read.
        field: &'static str,
    },
    /// A declared length or count is larger than the payload, or otherwise impossible.
    #[error("invalid length or count {value} in {field}")]
    InvalidLength {
        /// What was being read.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Bytes remain after the last field.
    #[error("{extra} unexpected trailing bytes in {message}")]
    TrailingBytes {
        /// The message type.
        message: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A field holds a value the protocol does not define.
    #[error("invalid value {value:#x} for {field}")]
    InvalidValue {
        /// What was being read.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// The payload's first byte is not the one this message type starts with.
    #[error("{message} must start with {expected:#04x}, found {found:#04x}")]
    UnexpectedHeader {
        /// The message type.
        message: &'static str,
        /// The header byte it needs.
        expected: u8,
        /// The header byte found.
        found: u8,
    },
    /// The payload is empty where a message needs at least its header byte.
    #[error("empty payload where {message} was expected")]
    Empty {
        /// The message type.
        message: &'static str,
    },
    /// A valid message that this codec deliberately does not handle.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported, and why.
        what: &'static str,
    },
    /// A value given to an encoder does not fit the field it is written to.
    #[error("{field}: value does not fit ({detail})")]
    DoesNotFit {
        /// The field being written.
        field: &'static str,
        /// What does not fit.
        detail: &'static str,
    },
}

/// The first byte of a length-encoded integer that announces a 2-byte value.
pub const LENENC_2: u8 = 0xFC;
/// The first byte of a length-encoded integer that announces a 3-byte value.
pub const LENENC_3: u8 = 0xFD;
/// The first byte of a length-encoded integer that announces an 8-byte value.
pub const LENENC_8: u8 = 0xFE;
/// NULL in a text row (and never a valid length-encoded integer elsewhere).
pub const LENENC_NULL: u8 = 0xFB;

/// A bounds-checked cursor over a packet payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    start_len: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            start_len: buf.len(),
        }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.start_len - self.buf.len()
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The unread bytes (the reader does not move).
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Takes all unread bytes.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// The next byte, without moving.
    pub fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Reads `n` raw bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], MessageError> {
        if n > self.buf.len() {
            return Err(MessageError::Truncated { field });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], MessageError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(MessageError::Truncated { field })?;
        self.buf = tail;
        Ok(*head)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize, field: &'static str) -> Result<(), MessageError> {
        self.bytes(n, field).map(|_| ())
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, MessageError> {
        let [b] = self.array::<1>(field)?;
        Ok(b)
    }

    /// Reads a little-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, MessageError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian 3-byte integer.
    pub fn u24(&mut self, field: &'static str) -> Result<u32, MessageError> {
        let [a, b, c] = self.array(field)?;
        Ok(u32::from_le_bytes([a, b, c, 0]))
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, MessageError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, MessageError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Reads a length-encoded integer, or `None` for the NULL marker `0xFB`
    /// (meaningful only in text rows). `0xFF` is never valid.
    pub fn lenenc_int_or_null(&mut self, field: &'static str) -> Result<Option<u64>, MessageError> {
        let first = self.u8(field)?;
        Ok(Some(match first {
            0..=0xFA => u64::from(first),
            LENENC_NULL => return Ok(None),
            LENENC_2 => u64::from(self.u16(field)?),
            LENENC_3 => u64::from(self.u24(field)?),
            LENENC_8 => self.u64(field)?,
            0xFF => {
                return Err(MessageError::InvalidValue {
                    field,
                    value: u64::from(first),
                });
            }
        }))
    }

    /// Reads a length-encoded integer (`0xFB` and `0xFF` are errors here).
    pub fn lenenc_int(&mut self, field: &'static str) -> Result<u64, MessageError> {
        self.lenenc_int_or_null(field)?
            .ok_or(MessageError::InvalidValue {
                field,
                value: u64::from(LENENC_NULL),
            })
    }

    /// Reads a length-encoded count and checks that at least `min_each`
    /// bytes per item remain, so a hostile count cannot drive a large
    /// allocation or a long loop.
    pub fn lenenc_count(
        &mut self,
        field: &'static str,
        min_each: usize,
    ) -> Result<usize, MessageError> {
        let n = self.lenenc_int(field)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_each) <= self.buf.len());
        fits.ok_or(MessageError::InvalidLength { field, value: n })
    }

    /// Reads `len` and then `len` bytes, where `len` is a length-encoded
    /// integer.
    pub fn lenenc_bytes(&mut self, field: &'static str) -> Result<&'a [u8], MessageError> {
        let n = self.lenenc_int(field)?;
        self.len_bytes(n, field)
    }

    /// A length-encoded string, or `None` for the text-row NULL marker.
    pub fn lenenc_bytes_or_null(
        &mut self,
        field: &'static str,
    ) -> Result<Option<&'a [u8]>, MessageError> {
        match self.lenenc_int_or_null(field)? {
            None => Ok(None),
            Some(n) => self.len_bytes(n, field).map(Some),
        }
    }

    fn len_bytes(&mut self, n: u64, field: &'static str) -> Result<&'a [u8], MessageError> {
        match usize::try_from(n) {
            Ok(n) if n <= self.buf.len() => self.bytes(n, field),
            _ => Err(MessageError::InvalidLength { field, value: n }),
        }
    }

    /// Reads a NUL-terminated string as raw bytes (without the NUL).
    pub fn cstr(&mut self, field: &'static str) -> Result<&'a [u8], MessageError> {
        let end = memchr::memchr(0, self.buf).ok_or(MessageError::Unterminated { field })?;
        let (s, rest) = self.buf.split_at(end);
        self.buf = rest.get(1..).unwrap_or_default();
        Ok(s)
    }

    /// Reads a NUL-terminated string, or the rest of the payload when no NUL
    /// follows (some servers omit the last terminator, e.g. the greeting's
    /// plugin name in MySQL 5.5.7–5.5.9). Returns the string and whether it
    /// was terminated.
    pub fn cstr_or_rest(&mut self) -> (&'a [u8], bool) {
        match memchr::memchr(0, self.buf) {
            Some(end) => {
                let (s, rest) = self.buf.split_at(end);
                self.buf = rest.get(1..).unwrap_or_default();
                (s, true)
            }
            None => (self.take_rest(), false),
        }
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, message: &'static str) -> Result<(), MessageError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(MessageError::TrailingBytes {
                message,
                extra: self.buf.len(),
            })
        }
    }
}

/// How many bytes `v` takes as a length-encoded integer.
pub fn lenenc_int_len(v: u64) -> usize {
    match v {
        0..=0xFA => 1,
        0xFB..=0xFFFF => 3,
        0x1_0000..=0xFF_FFFF => 4,
        _ => 9,
    }
}

/// Appends `v` as a length-encoded integer.
pub fn put_lenenc_int(out: &mut impl BufMut, v: u64) {
    match v {
        0..=0xFA => out.put_u8(v as u8),
        0xFB..=0xFFFF => {
            out.put_u8(LENENC_2);
            out.put_u16_le(v as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(LENENC_3);
            out.put_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.put_u8(LENENC_8);
            out.put_u64_le(v);
        }
    }
}

/// Appends `b` as a length-encoded string.
pub fn put_lenenc_bytes(out: &mut impl BufMut, b: &[u8]) {
    put_lenenc_int(out, b.len() as u64);
    out.put_slice(b);
}

/// Appends a NUL-terminated string. An interior NUL would end the field
/// early and shift every later one, so it is an error.
pub fn put_cstr(out: &mut impl BufMut, b: &[u8], field: &'static str) -> Result<(), MessageError> {
    if memchr::memchr(0, b).is_some() {
        return Err(MessageError::DoesNotFit {
            field,
            detail: "a NUL byte inside a NUL-terminated string",
        });
    }
    out.put_slice(b);
    out.put_u8(0);
    Ok(())
}

/// Appends a 3-byte little-endian integer (the low 24 bits of `v`).
pub fn put_u24(out: &mut impl BufMut, v: u32) {
    out.put_slice(&v.to_le_bytes()[..3]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_integers_round_trip_at_every_width_boundary() {
        for v in [
            0,
            1,
            0xFA,
            0xFB,
            0xFC,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, v);
            assert_eq!(out.len(), lenenc_int_len(v), "{v:#x}");
            let mut r = Reader::new(&out);
            assert_eq!(r.lenenc_int("v").unwrap(), v);
            r.finish("v").unwrap();
            for cut in 0..out.len() {
                assert!(Reader::new(&out[..cut]).lenenc_int("v").is_err());
            }
        }
        assert_eq!(Reader::new(&[0xFB]).lenenc_int_or_null("v").unwrap(), None);
        assert!(Reader::new(&[0xFB]).lenenc_int("v").is_err());
        assert!(Reader::new(&[0xFF]).lenenc_int_or_null("v").is_err());
    }

    #[test]
    fn lengths_and_counts_are_checked_against_the_payload() {
        // An 8-byte length far beyond the payload.
        let mut r = Reader::new(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, b'a']);
        assert!(matches!(
            r.lenenc_bytes("s"),
            Err(MessageError::InvalidLength { .. })
        ));
        let mut r = Reader::new(&[3, b'a', b'b']);
        assert!(r.lenenc_bytes("s").is_err());
        let mut r = Reader::new(&[0xFC, 0xFF, 0xFF, 0, 0]);
        assert!(r.lenenc_count("n", 1).is_err());
        let mut r = Reader::new(&[2, 0, 0]);
        assert_eq!(r.lenenc_count("n", 1).unwrap(), 2);
    }

    #[test]
    fn strings() {
        let mut r = Reader::new(b"abc\0def");
        assert_eq!(r.cstr("a").unwrap(), b"abc");
        assert!(r.clone().cstr("b").is_err());
        assert_eq!(r.cstr_or_rest(), (&b"def"[..], false));
        let mut out = Vec::new();
        put_cstr(&mut out, b"x", "f").unwrap();
        assert_eq!(out, b"x\0");
        assert!(put_cstr(&mut out, b"a\0b", "f").is_err());
        let mut out = Vec::new();
        put_u24(&mut out, 0x12_3456);
        assert_eq!(Reader::new(&out).u24("x").unwrap(), 0x12_3456);
    }
}
