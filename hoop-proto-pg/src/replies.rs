//! ParameterDescription, ParseComplete, BindComplete, CloseComplete, NoData, PortalSuspended (B)
//!
//! The extended protocol's acknowledgements.

use super::wire::{MessageError, Reader};

/// ParameterDescription (B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterDescription {
    /// Number of parameters.
    pub params: usize,
}

impl ParameterDescription {
    /// Parses a ParameterDescription body.
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let params = r.count16("ParameterDescription count", 4)?;
        r.bytes(params * 4, "ParameterDescription types")?;
        r.finish("ParameterDescription")?;
        Ok(Self { params })
    }
}

/// Checks an acknowledgement with an empty body (`1`, `2`, `3`, `n`, `s`).
pub fn parse_ack(body: &[u8], message: &'static str) -> Result<(), MessageError> {
    Reader::new(body).finish(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            ParameterDescription::parse(&[0, 1, 0, 0, 0, 23])
                .unwrap()
                .params,
            1
        );
        assert!(ParameterDescription::parse(&[0, 2, 0, 0, 0, 23]).is_err());
        assert!(parse_ack(b"x", "ParseComplete").is_err());
    }
}
