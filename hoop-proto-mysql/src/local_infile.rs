//! LOCAL INFILE request (S) and the client's file data (C)
//!
//! The server answers a `LOAD DATA LOCAL INFILE '<name>'` with `0xFB` and
//! the file name. The client then sends the file's contents in packets of
//! its choosing and ends with an empty packet; the server answers OK or
//! ERR. A server may send the request in reply to *any* statement (the
//! MySQL manual warns that a patched server can ask for any file), so hoop
//! honours it only after an allowed statement that names the same file.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{MessageError, Reader};

/// The first byte of a LOCAL INFILE request.
pub const LOCAL_INFILE_HEADER: u8 = 0xFB;

/// LOCAL INFILE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInfileRequest {
    /// The file name the server asks for, as the client's statement spelt it.
    pub filename: Bytes,
}

impl LocalInfileRequest {
    /// Parses the request payload.
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let header = r.u8("LOCAL INFILE header")?;
        if header != LOCAL_INFILE_HEADER {
            return Err(MessageError::UnexpectedHeader {
                message: "LOCAL INFILE request",
                expected: LOCAL_INFILE_HEADER,
                found: header,
            });
        }
        Ok(Self {
            filename: Bytes::copy_from_slice(r.take_rest()),
        })
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + self.filename.len());
        out.put_u8(LOCAL_INFILE_HEADER);
        out.put_slice(&self.filename);
        out.freeze()
    }
}

/// Whether a client packet in the file transfer ends it (an empty payload).
pub fn is_end_of_file(payload: &[u8]) -> bool {
    payload.is_empty()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let r = LocalInfileRequest {
            filename: Bytes::from_static(b"/tmp/data.csv"),
        };
        let raw = r.encode();
        assert_eq!(&raw[..], b"\xfb/tmp/data.csv");
        assert_eq!(LocalInfileRequest::parse(&raw).unwrap(), r);
        assert!(LocalInfileRequest::parse(b"").is_err());
        assert!(LocalInfileRequest::parse(b"\x00x").is_err());
        assert!(is_end_of_file(b""));
    }
}
