//! NotificationResponse (B)
//!
//! Delivered asynchronously after LISTEN, whenever a NOTIFY commits.

use super::wire::{MessageBuilder, MessageError, Reader};
use bytes::Bytes;

/// NotificationResponse (B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationResponse<'a> {
    /// The notifying backend's process id.
    pub pid: i32,
    /// Channel name.
    pub channel: &'a str,
    /// Payload.
    pub payload: &'a str,
}

impl<'a> NotificationResponse<'a> {
    /// Parses a NotificationResponse body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let pid = r.i32("NotificationResponse pid")?;
        let channel = r.cstr("NotificationResponse channel")?;
        let payload = r.cstr("NotificationResponse payload")?;
        r.finish("NotificationResponse")?;
        Ok(Self {
            pid,
            channel,
            payload,
        })
    }

    /// Encodes (used when governance rewrites a payload).
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(b'A');
        b.i32(self.pid).cstr(self.channel).cstr(self.payload);
        b.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let n = NotificationResponse {
            pid: 3,
            channel: "c",
            payload: "p",
        }
        .encode();
        assert_eq!(NotificationResponse::parse(&n[5..]).unwrap().payload, "p");
        assert!(NotificationResponse::parse(&n[5..n.len() - 1]).is_err());
    }
}
