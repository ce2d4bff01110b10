//! ErrorResponse, NoticeResponse (B)
//!
//! Both carry typed fields (`S` severity, `V` non-localized severity, `C`
//! SQLSTATE, `M` message, `D` detail, `H` hint, …). hoop parses them to learn
//! the SQLSTATE, to let governance rewrite echoed values, and builds them for
//! denials, holds and protocol violations.

use super::wire::{MessageBuilder, MessageError, Reader};
use bytes::Bytes;

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoticeFields<'a> {
    /// `(field type, value)` in the order sent.
    pub fields: Vec<(u8, &'a str)>,
}

impl<'a> NoticeFields<'a> {
    /// Parses an ErrorResponse/NoticeResponse body.
    pub fn parse(body: &'a [u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let mut fields = Vec::new();
        loop {
            let code = r.u8("error field type")?;
            if code == 0 {
                break;
            }
            fields.push((code, r.cstr("error field value")?));
        }
        r.finish("ErrorResponse")?;
        Ok(Self { fields })
    }

    /// A field by type.
    pub fn get(&self, code: u8) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| *v)
    }

    /// The SQLSTATE (`C`).
    pub fn code(&self) -> Option<&'a str> {
        self.get(b'C')
    }

    /// The non-localized severity (`V`), else the localized one (`S`).
    pub fn severity(&self) -> Option<&'a str> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }

    /// The primary message (`M`).
    pub fn message(&self) -> Option<&'a str> {
        self.get(b'M')
    }

    /// Encodes these fields as a message of type `tag` (`E` or `N`).
    pub fn encode(&self, tag: u8) -> Bytes {
        let mut b = MessageBuilder::new(tag);
        for (code, value) in &self.fields {
            b.u8(*code).cstr(value);
        }
        b.u8(0);
        b.finish()
    }
}

/// Severity of a synthesized error or notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `ERROR`: the statement failed, the session continues.
    Error,
    /// `FATAL`: the session ends.
    Fatal,
    /// `NOTICE`.
    Notice,
    /// `WARNING`.
    Warning,
}

impl Severity {
    /// The severity word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
            Self::Notice => "NOTICE",
            Self::Warning => "WARNING",
        }
    }
}

/// An error or notice hoop synthesizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorSpec {
    /// Severity.
    pub severity: Severity,
    /// SQLSTATE (five characters).
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
}

impl ErrorSpec {
    /// An ERROR with this SQLSTATE and message.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A FATAL error.
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Fatal,
            ..Self::error(code, message)
        }
    }

    /// A NOTICE (SQLSTATE 00000).
    pub fn notice(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Notice,
            ..Self::error("00000", message)
        }
    }

    /// Adds a detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Encodes as ErrorResponse (`E`) for errors, NoticeResponse (`N`) for notices and warnings.
    pub fn encode(&self) -> Bytes {
        let tag = match self.severity {
            Severity::Error | Severity::Fatal => b'E',
            Severity::Notice | Severity::Warning => b'N',
        };
        let mut b = MessageBuilder::new(tag);
        b.u8(b'S').cstr(self.severity.as_str());
        b.u8(b'V').cstr(self.severity.as_str());
        b.u8(b'C').cstr(&self.code);
        b.u8(b'M').cstr(&self.message);
        if let Some(d) = &self.detail {
            b.u8(b'D').cstr(d);
        }
        if let Some(h) = &self.hint {
            b.u8(b'H').cstr(h);
        }
        b.u8(0);
        b.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_errors() {
        let e = ErrorSpec::error("42501", "denied by rule no-drop")
            .with_detail("rule: no-drop")
            .encode();
        assert_eq!(e[0], b'E');
        let f = NoticeFields::parse(&e[5..]).unwrap();
        assert_eq!(
            (f.code(), f.severity(), f.message(), f.get(b'D')),
            (
                Some("42501"),
                Some("ERROR"),
                Some("denied by rule no-drop"),
                Some("rule: no-drop")
            )
        );
        assert_eq!(f.encode(b'E'), e);
        assert_eq!(ErrorSpec::notice("hold").encode()[0], b'N');
        assert!(NoticeFields::parse(b"Sx").is_err());
        assert!(NoticeFields::parse(b"Sx\0").is_err());
    }
}
