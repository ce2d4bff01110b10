//! LOAD DATA LOCAL INFILE: which file an allowed statement names, and
//! whether the server's file request may be honoured.
//!
//! A server may answer *any* statement with a file request (the MySQL
//! manual: "a patched server could reply with a file-transfer request to
//! any statement"), and hoop terminates the client's TLS, so it is the one
//! place that can check the server. The request is relayed only when
//! `mysql.local_infile` is on, the client offered `CLIENT_LOCAL_FILES`, and
//! the statement the reply answers (judged and allowed) is a
//! `LOAD DATA|XML [LOW_PRIORITY|CONCURRENT] LOCAL INFILE '<name>'` whose
//! literal decodes to exactly the name the server asks for.

use hoop_proto_mysql::lexer::{self, TokenKind};
use hoop_sql::mysql::CANONICAL;

/// The file a statement (canonical text, one statement) asks the client to
/// send: the decoded string literal after `LOAD DATA … LOCAL INFILE`.
/// `None` when it is not such a statement, or the literal is in a form hoop
/// does not decode (fail closed: the request is then refused).
pub(crate) fn requested_file(statement: &[u8]) -> Option<Vec<u8>> {
    let tokens = lexer::tokenize(statement, &CANONICAL).ok()?;
    let mut it = tokens
        .iter()
        .filter(|t| !matches!(t.kind, TokenKind::Whitespace | TokenKind::Comment));
    let mut word = |expected: &[&str]| -> Option<usize> {
        let t = it.next()?;
        if t.kind != TokenKind::Word {
            return None;
        }
        let w = &statement[t.range()];
        expected
            .iter()
            .position(|e| w.eq_ignore_ascii_case(e.as_bytes()))
    };
    word(&["load"])?;
    word(&["data", "xml"])?;
    let mut next = word(&["low_priority", "concurrent", "local"])?;
    if next != 2 {
        next = word(&["local"])?;
    }
    let _ = next;
    word(&["infile"])?;
    let literal = it.next()?;
    if literal.kind != TokenKind::String {
        return None;
    }
    unquote(&statement[literal.range()])
}

/// A `'…'` or `"…"` literal's value under the canonical sql_mode
/// (backslash escapes on): the server's `get_text`.
fn unquote(body: &[u8]) -> Option<Vec<u8>> {
    let (&quote, rest) = body.split_first()?;
    if quote != b'\'' && quote != b'"' {
        return None;
    }
    let inner = rest.strip_suffix(&[quote])?;
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b == b'\\' {
            let e = *inner.get(i + 1)?;
            match e {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'b' => out.push(8),
                b'0' => out.push(0),
                b'Z' => out.push(26),
                // `\%` and `\_` keep their backslash.
                b'%' | b'_' => out.extend_from_slice(&[b'\\', e]),
                other => out.push(other),
            }
            i += 2;
        } else if b == quote {
            // A doubled quote.
            if inner.get(i + 1) != Some(&quote) {
                return None;
            }
            out.push(quote);
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_of_load_data_local() {
        let f = |s: &str| requested_file(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            f("LOAD DATA LOCAL INFILE '/tmp/a.csv' INTO TABLE t").as_deref(),
            Some("/tmp/a.csv")
        );
        assert_eq!(
            f("load data low_priority local infile \"/tmp/it''s\" into table t").as_deref(),
            Some("/tmp/it''s")
        );
        assert_eq!(
            f("LOAD /* c */ XML CONCURRENT LOCAL INFILE '/tmp/it''s\\\\x' INTO TABLE t").as_deref(),
            Some("/tmp/it's\\x")
        );
        // Not a LOCAL load, not a load, or a literal hoop does not decode.
        assert_eq!(f("LOAD DATA INFILE '/tmp/a' INTO TABLE t"), None);
        assert_eq!(f("SELECT 'LOAD DATA LOCAL INFILE ''/etc/passwd'''"), None);
        assert_eq!(f("LOAD DATA LOCAL INFILE X'2f' INTO TABLE t"), None);
        assert_eq!(f("LOAD DATA LOCAL INFILE @f INTO TABLE t"), None);
        assert_eq!(f("LOAD DATA LOCAL"), None);
    }
}
