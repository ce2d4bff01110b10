//! Parse, Bind, Describe, Execute, Close, Sync, Flush (F)
//!
//! The extended query protocol. Replies: ParseComplete, BindComplete,
//! ParameterDescription/RowDescription/NoData, DataRow…CommandComplete or
//! PortalSuspended, CloseComplete; ReadyForQuery after Sync. After an error
//! the server discards messages until Sync.

use super::wire::{MessageBuilder, MessageError, Reader};
use bytes::Bytes;

/// Parse (F): create a prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name (`""` is the unnamed statement).
    pub name: &'a str,
    /// SQL text (a single statement).
    pub sql: &'a str,
    /// Number of parameter types specified.
    pub param_types: usize,
}

// `Parse::parse` reads oddly but matches every other message view.
#[allow(clippy::self_named_constructors)]
impl<'a> Parse<'a> {
    /// Parses a Parse body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let name = r.cstr("Parse statement name")?;
        let sql = r.cstr("Parse query text")?;
        let param_types = r.count16("Parse parameter count", 4)?;
        r.bytes(param_types * 4, "Parse parameter types")?;
        r.finish("Parse")?;
        Ok(Self {
            name,
            sql,
            param_types,
        })
    }

    /// Encodes a Parse without parameter types.
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(b'P');
        b.cstr(self.name).cstr(self.sql).i16(0);
        b.finish()
    }
}

/// Bind (F): create a portal from a prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Portal name (`""` is the unnamed portal).
    pub portal: &'a str,
    /// Source statement name.
    pub statement: &'a str,
    /// Number of parameter values.
    pub params: usize,
    /// Raw result-column format codes (big-endian i16s).
    result_formats: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Parses a Bind body, validating every parameter length.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let portal = r.cstr("Bind portal name")?;
        let statement = r.cstr("Bind statement name")?;
        let formats = r.count16("Bind parameter format count", 2)?;
        r.bytes(formats * 2, "Bind parameter formats")?;
        let params = r.count16("Bind parameter count", 4)?;
        for _ in 0..params {
            r.value("Bind parameter value")?;
        }
        let results = r.count16("Bind result format count", 2)?;
        let result_formats = r.bytes(results * 2, "Bind result formats")?;
        r.finish("Bind")?;
        Ok(Self {
            portal,
            statement,
            params,
            result_formats,
        })
    }

    /// The result format codes as sent: empty (all text), one (applies to all
    /// columns) or one per column.
    pub fn result_formats(&self) -> impl ExactSizeIterator<Item = i16> + '_ {
        self.result_formats
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
    }
}

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `S`: a prepared statement.
    Statement,
    /// `P`: a portal.
    Portal,
}

impl Target {
    fn parse(b: u8) -> Result<Self, MessageError> {
        match b {
            b'S' => Ok(Self::Statement),
            b'P' => Ok(Self::Portal),
            other => Err(MessageError::InvalidValue {
                field: "Describe/Close target",
                value: i64::from(other),
            }),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Statement => b'S',
            Self::Portal => b'P',
        }
    }
}

/// Describe (F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Describe<'a> {
    /// Statement or portal.
    pub target: Target,
    /// Its name.
    pub name: &'a str,
}

impl<'a> Describe<'a> {
    /// Parses a Describe body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let target = Target::parse(r.u8("Describe target")?)?;
        let name = r.cstr("Describe name")?;
        r.finish("Describe")?;
        Ok(Self { target, name })
    }

    /// Encodes a Describe.
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(b'D');
        b.u8(self.target.byte()).cstr(self.name);
        b.finish()
    }
}

/// Close (F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close<'a> {
    /// Statement or portal.
    pub target: Target,
    /// Its name.
    pub name: &'a str,
}

impl<'a> Close<'a> {
    /// Parses a Close body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let target = Target::parse(r.u8("Close target")?)?;
        let name = r.cstr("Close name")?;
        r.finish("Close")?;
        Ok(Self { target, name })
    }

    /// Encodes a Close.
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(b'C');
        b.u8(self.target.byte()).cstr(self.name);
        b.finish()
    }
}

/// Execute (F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    /// Portal name.
    pub portal: &'a str,
    /// Row limit (0 = no limit); reaching it suspends the portal.
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    /// Parses an Execute body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let portal = r.cstr("Execute portal name")?;
        let max_rows = r.i32("Execute row limit")?;
        r.finish("Execute")?;
        Ok(Self { portal, max_rows })
    }

    /// Encodes an Execute.
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(b'E');
        b.cstr(self.portal).i32(self.max_rows);
        b.finish()
    }
}

/// Sync (F), encoded.
pub fn sync() -> Bytes {
    Bytes::from_static(b"S\0\0\0\x04")
}

/// Flush (F), encoded.
pub fn flush() -> Bytes {
    Bytes::from_static(b"H\0\0\0\x04")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bind_body(results: &[i16]) -> Vec<u8> {
        let mut b = b"p1\0s1\0".to_vec();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(results.len() as i16).to_be_bytes());
        for r in results {
            b.extend_from_slice(&r.to_be_bytes());
        }
        b
    }

    #[test]
    fn parses_bind_with_null_and_formats() {
        let body = bind_body(&[1, 0]);
        let bind = Bind::parse(&body).unwrap();
        assert_eq!((bind.portal, bind.statement, bind.params), ("p1", "s1", 2));
        assert_eq!(bind.result_formats().collect::<Vec<_>>(), vec![1, 0]);
        let mut bad = body.clone();
        bad.push(0);
        assert!(Bind::parse(&bad).is_err());
        assert!(Bind::parse(&body[..body.len() - 1]).is_err());
    }

    #[test]
    fn parses_the_rest() {
        let p = Parse {
            name: "s",
            sql: "select $1",
            param_types: 0,
        }
        .encode();
        assert_eq!(Parse::parse(&p[5..]).unwrap().sql, "select $1");
        let d = Describe {
            target: Target::Portal,
            name: "",
        }
        .encode();
        assert_eq!(Describe::parse(&d[5..]).unwrap().target, Target::Portal);
        assert!(Describe::parse(b"X\0").is_err());
        let e = Execute {
            portal: "p",
            max_rows: 10,
        }
        .encode();
        assert_eq!(Execute::parse(&e[5..]).unwrap().max_rows, 10);
        assert_eq!(Close::parse(b"Sfoo\0").unwrap().name, "foo");
    }
}
