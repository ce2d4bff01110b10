//! Query (F)
//!
//! A simple-protocol query: one string that may hold several statements.

use super::wire::{MessageBuilder, MessageError, Reader};
use bytes::Bytes;

/// A Query message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// The SQL text (possibly several `;`-separated statements).
    pub sql: &'a str,
}

impl<'a> Query<'a> {
    /// Parses a Query body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let sql = r.cstr("Query text")?;
        r.finish("Query")?;
        Ok(Self { sql })
    }

    /// Encodes a Query.
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(b'Q');
        b.cstr(self.sql);
        b.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let q = Query {
            sql: "select 1; select 2",
        }
        .encode();
        assert_eq!(Query::parse(&q[5..]).unwrap().sql, "select 1; select 2");
        assert!(Query::parse(b"select").is_err());
        assert!(Query::parse(b"a\0b").is_err());
    }
}
