//! CopyData, CopyDone, CopyFail (F & B); CopyInResponse, CopyOutResponse, CopyBothResponse (B)
//!
//! COPY streams: after CopyInResponse the client sends CopyData… then
//! CopyDone or CopyFail; after CopyOutResponse the server sends CopyData…
//! CopyDone; CopyBothResponse (replication) streams both ways.

use super::wire::{MessageError, Reader};

/// Overall COPY format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Text or CSV (rows separated by newlines).
    Text,
    /// Binary COPY format.
    Binary,
}

/// CopyInResponse / CopyOutResponse / CopyBothResponse (B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyResponse<'a> {
    /// Overall format.
    pub format: CopyFormat,
    /// Number of columns.
    pub columns: usize,
    raw_formats: &'a [u8],
}

impl<'a> CopyResponse<'a> {
    /// Parses the body of any of the three Copy*Response messages.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let format = match r.u8("Copy format")? {
            0 => CopyFormat::Text,
            1 => CopyFormat::Binary,
            other => {
                return Err(MessageError::InvalidValue {
                    field: "Copy format",
                    value: i64::from(other),
                });
            }
        };
        let columns = r.count16("Copy column count", 2)?;
        let raw_formats = r.bytes(columns * 2, "Copy column formats")?;
        r.finish("CopyResponse")?;
        Ok(Self {
            format,
            columns,
            raw_formats,
        })
    }

    /// Per-column format codes.
    pub fn column_formats(&self) -> impl Iterator<Item = i16> + '_ {
        self.raw_formats
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
    }
}

/// CopyFail (F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyFail<'a> {
    /// Why the client aborted the COPY.
    pub message: &'a str,
}

impl<'a> CopyFail<'a> {
    /// Parses a CopyFail body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let message = r.cstr("CopyFail message")?;
        r.finish("CopyFail")?;
        Ok(Self { message })
    }
}

/// Checks an empty-bodied message (CopyDone and friends).
pub fn parse_empty(body: &[u8], message: &'static str) -> Result<(), MessageError> {
    Reader::new(body).finish(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_copy_response() {
        let r = CopyResponse::parse(&[0, 0, 2, 0, 0, 0, 0]).unwrap();
        assert_eq!((r.format, r.columns), (CopyFormat::Text, 2));
        assert!(CopyResponse::parse(&[2, 0, 0]).is_err());
        assert!(CopyResponse::parse(&[0, 0, 9, 0, 0]).is_err());
        assert_eq!(CopyFail::parse(b"nope\0").unwrap().message, "nope");
    }
}
