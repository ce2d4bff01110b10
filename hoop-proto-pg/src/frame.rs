//! Framing: splitting a byte stream into whole messages.
//!
//! After the startup phase every message is `tag:u8 len:i32 body`, where
//! `len` counts itself but not the tag. Startup-phase messages from the
//! client (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no
//! tag: `len:i32 body`.
//!
//! The declared length is checked against the configured maximum *before*
//! any memory is reserved, and lengths under 4 are rejected.

use bytes::{Bytes, BytesMut};

/// Which way a frame travels. The same type byte means different things each
/// way (`D` is Describe from the client and DataRow from the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    Frontend,
    /// Server to client.
    Backend,
}

impl Direction {
    /// `client` or `server`: who sent it.
    pub fn sender(self) -> &'static str {
        match self {
            Self::Frontend => "client",
            Self::Backend => "server",
        }
    }
}

/// A message whose frame is invalid; the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared length is below the 4 bytes of the length field itself.
    #[error("message length {len} from the {sender} is below the minimum of 4")]
    TooShort {
        /// `client` or `server`.
        sender: &'static str,
        /// The declared length.
        len: i64,
    },
    /// The declared length exceeds `proxy.max_message_size`.
    #[error("message length {len} from the {sender} exceeds the limit of {max} bytes")]
    TooLarge {
        /// `client` or `server`.
        sender: &'static str,
        /// The declared length.
        len: i64,
        /// The configured maximum.
        max: usize,
    },
}

/// One whole message, with its direction and original bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Who sent it.
    pub direction: Direction,
    /// The type byte (0 for untagged startup-phase messages).
    pub tag: u8,
    /// The whole message as received: tag (if any), length and body.
    pub raw: Bytes,
}

impl Frame {
    /// The body after the tag and length.
    pub fn body(&self) -> &[u8] {
        let header = if self.tag == 0 { 4 } else { 5 };
        self.raw.get(header..).unwrap_or(&[])
    }
}

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A whole message of `len` bytes in total (header included).
    Complete {
        /// The type byte.
        tag: u8,
        /// Total bytes, header included.
        len: usize,
    },
    /// Not enough bytes yet; `len` is the total size needed when known.
    Incomplete {
        /// Total bytes needed for the message, if the header was complete.
        len: Option<usize>,
    },
}

/// Frame decoder for one direction of one connection.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    direction: Direction,
    max_message_size: usize,
}

impl FrameDecoder {
    /// A decoder for messages sent in `direction`, rejecting any declared
    /// length above `max_message_size`.
    pub fn new(direction: Direction, max_message_size: usize) -> Self {
        Self {
            direction,
            max_message_size,
        }
    }

    /// The configured maximum.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    fn check_len(&self, len: i32) -> Result<usize, FrameError> {
        let sender = self.direction.sender();
        if len < 4 {
            return Err(FrameError::TooShort {
                sender,
                len: i64::from(len),
            });
        }
        let len = len as usize;
        if len > self.max_message_size {
            return Err(FrameError::TooLarge {
                sender,
                len: len as i64,
                max: self.max_message_size,
            });
        }
        Ok(len)
    }

    /// Looks at a tagged message at the front of `buf` without consuming it.
    pub fn peek(&self, buf: &[u8]) -> Result<Peek, FrameError> {
        let Some(header) = buf.get(..5) else {
            return Ok(Peek::Incomplete { len: None });
        };
        let len = self.check_len(i32::from_be_bytes([
            header[1], header[2], header[3], header[4],
        ]))?;
        let total = len + 1;
        if buf.len() >= total {
            Ok(Peek::Complete {
                tag: header[0],
                len: total,
            })
        } else {
            Ok(Peek::Incomplete { len: Some(total) })
        }
    }

    /// Looks at an untagged startup-phase message at the front of `buf`.
    pub fn peek_startup(&self, buf: &[u8]) -> Result<Peek, FrameError> {
        let Some(header) = buf.get(..4) else {
            return Ok(Peek::Incomplete { len: None });
        };
        let len = self.check_len(i32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]))?;
        if buf.len() >= len {
            Ok(Peek::Complete { tag: 0, len })
        } else {
            Ok(Peek::Incomplete { len: Some(len) })
        }
    }

    /// Splits one whole tagged message off the front of `buf`, if there is one.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.peek(buf)? {
            Peek::Complete { tag, len } => Ok(Some(Frame {
                direction: self.direction,
                tag,
                raw: buf.split_to(len).freeze(),
            })),
            Peek::Incomplete { len } => {
                if let Some(len) = len {
                    // The length was checked against the maximum above.
                    buf.reserve(len - buf.len());
                }
                Ok(None)
            }
        }
    }

    /// Splits one whole untagged startup-phase message off the front of `buf`.
    pub fn decode_startup(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.peek_startup(buf)? {
            Peek::Complete { len, .. } => Ok(Some(Frame {
                direction: self.direction,
                tag: 0,
                raw: buf.split_to(len).freeze(),
            })),
            Peek::Incomplete { len } => {
                if let Some(len) = len {
                    buf.reserve(len - buf.len());
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_whole_frames_and_waits_for_partial_ones() {
        let d = FrameDecoder::new(Direction::Backend, 1024);
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IC\0\0\0\x0dSELECT 1\0D\0\0"[..]);
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.tag, f.body()), (b'Z', &b"I"[..]));
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.tag, f.body()), (b'C', &b"SELECT 1\0"[..]));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn rejects_short_and_oversized_lengths_before_allocating() {
        let d = FrameDecoder::new(Direction::Frontend, 1024);
        let mut buf = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::TooShort { .. })
        ));
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1024);
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        assert!(matches!(
            d.decode_startup(&mut buf),
            Err(FrameError::TooShort { .. })
        ));
    }
}
