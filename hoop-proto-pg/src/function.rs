//! FunctionCall (F), FunctionCallResponse (B)
//!
//! The legacy fast-path interface: call a function by OID. Replies
//! FunctionCallResponse (or ErrorResponse), then ReadyForQuery.

use super::wire::{MessageError, Reader};

/// FunctionCall (F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCall {
    /// OID of the function.
    pub function_oid: u32,
    /// Number of arguments.
    pub args: usize,
}

impl FunctionCall {
    /// Parses a FunctionCall body, validating every argument.
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let function_oid = r.i32("FunctionCall oid")? as u32;
        let formats = r.count16("FunctionCall format count", 2)?;
        r.bytes(formats * 2, "FunctionCall formats")?;
        let args = r.count16("FunctionCall argument count", 4)?;
        for _ in 0..args {
            r.value("FunctionCall argument")?;
        }
        r.i16("FunctionCall result format")?;
        r.finish("FunctionCall")?;
        Ok(Self { function_oid, args })
    }
}

/// FunctionCallResponse (B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCallResponse<'a> {
    /// The result (`None` = NULL).
    pub value: Option<&'a [u8]>,
}

impl<'a> FunctionCallResponse<'a> {
    /// Parses a FunctionCallResponse body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let value = r.value("FunctionCallResponse value")?;
        r.finish("FunctionCallResponse")?;
        Ok(Self { value })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_function_call() {
        let body = [0, 0, 4, 0, 0, 0, 0, 1, 0, 0, 0, 1, b'x', 0, 0];
        assert_eq!(
            FunctionCall::parse(&body).unwrap(),
            FunctionCall {
                function_oid: 1024,
                args: 1
            }
        );
        assert!(FunctionCall::parse(&body[..10]).is_err());
        assert_eq!(
            FunctionCallResponse::parse(&[0xff, 0xff, 0xff, 0xff])
                .unwrap()
                .value,
            None
        );
    }
}
