//! Checked primitives shared by every message view: a bounds-checked reader
//! over a message body and a writer that patches the length prefix.
//!
//! Nothing here indexes unchecked data: every read returns a
//! [`MessageError`] instead of panicking.

use bytes::{BufMut, Bytes, BytesMut};

/// A message body that does not match its message type's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body ended before a field of `field` could be read.
    #[error("message truncated while reading {field}")]
    Truncated {
        /// What was being read.
        field: &'static str,
    },
    /// A string field is not NUL-terminated within the body.
    #[error("unterminated string in {field}")]
    Unterminated {
        /// What was being read.
        field: &'static str,
    },
    /// A string field is not valid UTF-8 (hoop requires UTF-8 client encoding for text it inspects).
    #[error("invalid UTF-8 in {field}")]
    InvalidUtf8 {
        /// What was being read.
        field: &'static str,
    },
    /// A count or length is negative where that is not allowed, or larger than the body.
    #[error("invalid length or count {value} in {field}")]
    InvalidLength {
        /// What was being read.
        field: &'static str,
        /// The value found.
        value: i64,
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
    #[error("invalid value {value} for {field}")]
    InvalidValue {
        /// What was being read.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// The message type byte is not valid for this direction.
    #[error("unknown message type {tag:?} from the {direction}")]
    UnknownTag {
        /// The type byte, as a char for readability.
        tag: char,
        /// `client` or `server`.
        direction: &'static str,
    },
}

/// Bytes searched a word at a time for a string's NUL before the search
/// hands over to `memchr`'s vectorised one. Names, tags and short SQL end
/// within it; setting up the vectorised search costs more than these few
/// words.
const SHORT_SCAN: usize = 64;
const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The index of the first NUL in `buf`, and whether every byte before it
/// is ASCII; `None` without a NUL.
#[inline]
fn find_nul(buf: &[u8]) -> Option<(usize, bool)> {
    let head = &buf[..buf.len().min(SHORT_SCAN)];
    let (words, tail) = head.as_chunks::<8>();
    // The OR of the words before the NUL's: a high bit set means non-ASCII.
    let mut seen = 0u64;
    for (k, word) in words.iter().enumerate() {
        let w = u64::from_le_bytes(*word);
        // A byte's high bit is set here if the byte is 0, or if a lower byte
        // was 0 and borrowed from it: the lowest one set is the first NUL.
        let nul = w.wrapping_sub(LOW_BITS) & !w & HIGH_BITS;
        if nul != 0 {
            let at = nul.trailing_zeros() as usize / 8;
            let before = w & ((1u64 << (8 * at)) - 1);
            return Some((8 * k + at, (seen | before) & HIGH_BITS == 0));
        }
        seen |= w;
    }
    let ascii = seen & HIGH_BITS == 0;
    let base = 8 * words.len();
    if let Some(j) = tail.iter().position(|&b| b == 0) {
        return Some((base + j, ascii && tail[..j].is_ascii()));
    }
    let rest = &buf[head.len()..];
    let j = memchr::memchr(0, rest)?;
    Some((
        head.len() + j,
        ascii && tail.is_ascii() && rest[..j].is_ascii(),
    ))
}

/// A bounds-checked cursor over a message body.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The unread bytes.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
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

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, MessageError> {
        let b = self.bytes(1, field)?;
        Ok(b[0])
    }

    /// Reads a big-endian i16.
    pub fn i16(&mut self, field: &'static str) -> Result<i16, MessageError> {
        let b = self.bytes(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian i32.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, MessageError> {
        let b = self.bytes(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a non-negative i16 count, checking that at least `min_each` bytes
    /// per item remain (so a hostile count cannot drive a large allocation).
    pub fn count16(&mut self, field: &'static str, min_each: usize) -> Result<usize, MessageError> {
        let n = self.i16(field)?;
        let n = usize::try_from(n).map_err(|_| MessageError::InvalidLength {
            field,
            value: i64::from(n),
        })?;
        if n.saturating_mul(min_each) > self.buf.len() {
            return Err(MessageError::InvalidLength {
                field,
                value: n as i64,
            });
        }
        Ok(n)
    }

    /// Reads a NUL-terminated string as raw bytes (without the NUL).
    pub fn cstr_bytes(&mut self, field: &'static str) -> Result<&'a [u8], MessageError> {
        let (end, _) = find_nul(self.buf).ok_or(MessageError::Unterminated { field })?;
        Ok(self.take_terminated(end))
    }

    /// Reads a NUL-terminated UTF-8 string.
    pub fn cstr(&mut self, field: &'static str) -> Result<&'a str, MessageError> {
        let (end, ascii) = find_nul(self.buf).ok_or(MessageError::Unterminated { field })?;
        let b = self.take_terminated(end);
        if ascii {
            // Names, tags and most SQL: checked for ASCII on the way to the
            // NUL, which is cheaper than the general validation.
            // SAFETY: ASCII bytes are valid UTF-8.
            #[allow(unsafe_code)]
            return Ok(unsafe { std::str::from_utf8_unchecked(b) });
        }
        std::str::from_utf8(b).map_err(|_| MessageError::InvalidUtf8 { field })
    }

    /// The bytes before the NUL at `end`; the reader moves past the NUL.
    fn take_terminated(&mut self, end: usize) -> &'a [u8] {
        let (s, rest) = self.buf.split_at(end);
        self.buf = rest.get(1..).unwrap_or_default();
        s
    }

    /// Reads an i32 length-prefixed value; length -1 is NULL (`None`).
    pub fn value(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, MessageError> {
        let len = self.i32(field)?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len).map_err(|_| MessageError::InvalidLength {
            field,
            value: i64::from(len),
        })?;
        self.bytes(n, field).map(Some)
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

/// Builds one message: writes the type byte and a length placeholder, and
/// patches the length in [`MessageBuilder::finish`].
#[derive(Debug)]
pub struct MessageBuilder {
    buf: BytesMut,
    start: usize,
}

impl MessageBuilder {
    /// Starts a message of type `tag`.
    pub fn new(tag: u8) -> Self {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(tag);
        buf.put_i32(0);
        Self { buf, start: 1 }
    }

    /// Starts an untagged (startup-phase) message.
    pub fn untagged() -> Self {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        Self { buf, start: 0 }
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    /// Appends a big-endian i16.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.put_i16(v);
        self
    }

    /// Appends a big-endian i32.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.put_i32(v);
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.put_slice(v);
        self
    }

    /// Appends a NUL-terminated string. Interior NULs would corrupt the
    /// framing, so they are dropped.
    pub fn cstr(&mut self, v: &str) -> &mut Self {
        if memchr::memchr(0, v.as_bytes()).is_some() {
            for b in v.bytes().filter(|b| *b != 0) {
                self.buf.put_u8(b);
            }
        } else {
            self.buf.put_slice(v.as_bytes());
        }
        self.buf.put_u8(0);
        self
    }

    /// Appends an i32 length-prefixed value (`None` = NULL).
    pub fn value(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            None => self.buf.put_i32(-1),
            Some(v) => {
                self.buf.put_i32(v.len() as i32);
                self.buf.put_slice(v);
            }
        }
        self
    }

    /// Patches the length and returns the finished message.
    pub fn finish(mut self) -> Bytes {
        let len = (self.buf.len() - self.start) as i32;
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_be_bytes());
        self.buf.freeze()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_truncation_and_hostile_counts() {
        let mut r = Reader::new(&[0, 1]);
        assert!(r.i32("x").is_err());
        let mut r = Reader::new(&[0x7f, 0xff, 0]);
        assert!(matches!(
            r.count16("n", 2),
            Err(MessageError::InvalidLength { .. })
        ));
        let mut r = Reader::new(b"abc");
        assert!(matches!(
            r.cstr("s"),
            Err(MessageError::Unterminated { .. })
        ));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe]);
        assert!(r.value("v").is_err());
    }

    #[test]
    fn cstr_finds_the_terminator_on_both_sides_of_the_short_scan() {
        for len in 0..=2 * SHORT_SCAN + 9 {
            let mut body = vec![b'a'; len];
            body.extend_from_slice(b"\0tail\0");
            let mut r = Reader::new(&body);
            assert_eq!(r.cstr("s").unwrap().len(), len, "length {len}");
            assert_eq!(r.cstr("s").unwrap(), "tail");
            r.finish("m").unwrap();
            let mut r = Reader::new(&body[..len]);
            assert!(
                matches!(r.cstr("s"), Err(MessageError::Unterminated { .. })),
                "unterminated {len}"
            );
        }
        let mut r = Reader::new(b"\xff\xfe\0");
        assert!(matches!(r.cstr("s"), Err(MessageError::InvalidUtf8 { .. })));
    }

    /// Every placement of the NUL and of one non-ASCII character (valid or
    /// not) around the word boundaries and the hand-over to `memchr`: the
    /// result is what a plain search and `str::from_utf8` give.
    #[test]
    fn cstr_agrees_with_a_plain_search_and_validation() {
        for len in 0..=SHORT_SCAN + 20 {
            for odd in [
                None,
                Some(0),
                Some(7),
                Some(8),
                Some(SHORT_SCAN - 1),
                Some(len),
            ] {
                for (bytes, valid) in [(&b"\xc3\xa9"[..], true), (&b"\xff"[..], false)] {
                    let mut body = vec![b'x'; len];
                    if let Some(at) = odd.filter(|&at| at + bytes.len() <= len) {
                        body[at..at + bytes.len()].copy_from_slice(bytes);
                    }
                    body.push(0);
                    // Non-ASCII after the NUL must not count.
                    body.extend_from_slice(b"\xff\xff\xff\xff\xff\xff\xff\xff\0");
                    let expected = std::str::from_utf8(&body[..len]);
                    let got = Reader::new(&body).cstr("s");
                    if let Ok(s) = expected {
                        assert_eq!(got.unwrap(), s, "len {len} odd {odd:?}");
                    } else {
                        assert!(!valid, "len {len} odd {odd:?}");
                        assert!(
                            matches!(got, Err(MessageError::InvalidUtf8 { .. })),
                            "len {len} odd {odd:?}: {got:?}"
                        );
                    }
                    let mut r = Reader::new(&body);
                    assert_eq!(r.cstr_bytes("s").unwrap(), &body[..len]);
                    assert_eq!(r.rest().len(), 9);
                }
            }
        }
    }

    #[test]
    fn builder_patches_length() {
        let mut b = MessageBuilder::new(b'Z');
        b.u8(b'I');
        assert_eq!(&b.finish()[..], &[b'Z', 0, 0, 0, 5, b'I']);
    }
}
