//! `U&"…"` identifiers (Unicode escapes, optionally with `UESCAPE 'c'`),
//! spelled as the plain quoted identifiers the server reads them as, so
//! that lineage and classification name the same table and column as the
//! server: `U&"\0073sn"` is `"ssn"`. The SQL library reads `U&"…"` as an
//! identifier `U`, an operator `&` and another identifier, which would let
//! a masked column hide behind the spelling.
//!
//! What hoop cannot decode the way the server does (a bad escape, a
//! `UESCAPE` it cannot find right after the identifier) fails the parse:
//! the statement is unparsed, and `policy.unparsed` decides it.

use std::borrow::Cow;

use super::lexer::{Kind, Lexer};

/// The piece with every `U&"…"` identifier rewritten as a plain quoted
/// identifier; borrowed when it has none. `Err` when one cannot be decoded.
pub(crate) fn rewrite(piece: &str) -> Result<Cow<'_, str>, String> {
    if memchr::memmem::find(piece.as_bytes(), b"&\"").is_none() {
        return Ok(Cow::Borrowed(piece));
    }
    let b = piece.as_bytes();
    let mut out = String::with_capacity(piece.len());
    let mut copied = 0;
    for token in Lexer::without_semicolons(piece) {
        if token.kind != Kind::QuotedIdent {
            continue;
        }
        let start = token.span().start;
        let prefixed = start >= 2
            && b[start - 1] == b'&'
            && b[start - 2].eq_ignore_ascii_case(&b'u')
            && (start == 2 || !is_ident_byte(b[start - 3]));
        if !prefixed {
            continue;
        }
        if !token.terminated {
            return Err("an unterminated U&\"…\" identifier".to_owned());
        }
        let (escape, end) = uescape(piece, token.span().end)?;
        let body = piece[token.body()].replace("\"\"", "\"");
        let decoded = decode(&body, escape)?;
        out.push_str(&piece[copied..start - 2]);
        out.push('"');
        out.push_str(&decoded.replace('"', "\"\""));
        out.push('"');
        copied = end;
    }
    if copied == 0 {
        return Ok(Cow::Borrowed(piece));
    }
    out.push_str(&piece[copied..]);
    Ok(Cow::Owned(out))
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The escape character and where the identifier's text ends: after a
/// `UESCAPE 'c'` that follows it (across whitespace), or right after it.
fn uescape(piece: &str, after: usize) -> Result<(char, usize), String> {
    let rest = &piece[after..];
    let skipped = rest.len() - rest.trim_start().len();
    let word = rest.trim_start();
    if word.len() < 7 || !word[..7].eq_ignore_ascii_case("uescape") {
        return Ok(('\\', after));
    }
    let tail = &word[7..];
    let lead = tail.len() - tail.trim_start().len();
    let tail = tail.trim_start();
    let mut chars = tail.chars();
    match (chars.next(), chars.next(), chars.next()) {
        (Some('\''), Some(c), Some('\''))
            if !c.is_ascii_hexdigit() && !matches!(c, '+' | '\'' | '"') && !c.is_whitespace() =>
        {
            Ok((c, after + skipped + 7 + lead + 2 + c.len_utf8()))
        }
        _ => Err("a UESCAPE clause hoop cannot read".to_owned()),
    }
}

/// The identifier's text with its escapes (`\XXXX`, `\+XXXXXX`, `\\`, or
/// the `UESCAPE` character instead of `\`) replaced, surrogate pairs joined.
fn decode(body: &str, escape: char) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    let mut high: Option<u32> = None;
    while let Some(c) = chars.next() {
        if c != escape {
            if high.is_some() {
                return Err("a lone high surrogate in a U&\"…\" identifier".to_owned());
            }
            out.push(c);
            continue;
        }
        let digits = match chars.peek() {
            Some(&n) if n == escape => {
                chars.next();
                if high.is_some() {
                    return Err("a lone high surrogate in a U&\"…\" identifier".to_owned());
                }
                out.push(escape);
                continue;
            }
            Some('+') => {
                chars.next();
                6
            }
            _ => 4,
        };
        let hex: String = chars.by_ref().take(digits).collect();
        if hex.len() != digits || !hex.bytes().all(|d| d.is_ascii_hexdigit()) {
            return Err("an invalid Unicode escape in a U&\"…\" identifier".to_owned());
        }
        let code = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
        match (high.take(), code) {
            (None, 0xD800..=0xDBFF) => high = Some(code),
            (Some(h), 0xDC00..=0xDFFF) => {
                let joined = 0x10000 + ((h - 0xD800) << 10) + (code - 0xDC00);
                out.push(char::from_u32(joined).ok_or("an invalid surrogate pair")?);
            }
            (Some(_), _) | (None, 0xDC00..=0xDFFF) => {
                return Err("an invalid surrogate pair in a U&\"…\" identifier".to_owned());
            }
            (None, 0) => return Err("a zero code point in a U&\"…\" identifier".to_owned()),
            (None, code) => {
                out.push(char::from_u32(code).ok_or("an invalid Unicode escape")?);
            }
        }
    }
    if high.is_some() {
        return Err("a lone high surrogate in a U&\"…\" identifier".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(s: &str) -> Result<String, String> {
        rewrite(s).map(Cow::into_owned)
    }

    #[test]
    fn unicode_identifiers_are_spelled_plainly() {
        assert_eq!(
            r(r#"SELECT U&"\0073sn" FROM customers"#).unwrap(),
            r#"SELECT "ssn" FROM customers"#
        );
        assert_eq!(
            r(r#"select u&"\0073\+000073n" from U&"cust\006Fmers""#).unwrap(),
            r#"select "ssn" from "customers""#
        );
        assert_eq!(
            r(r#"SELECT U&"!0073sn" UESCAPE '!' FROM t"#).unwrap(),
            r#"SELECT "ssn" FROM t"#
        );
        assert_eq!(r(r#"SELECT U&"a""b\\" x"#).unwrap(), r#"SELECT "a""b\" x"#);
        assert_eq!(
            r(r#"SELECT U&"\D83D\DE00""#).unwrap(),
            "SELECT \"\u{1F600}\""
        );
        // Not Unicode-escaped: untouched, borrowed.
        for plain in [
            r#"SELECT "U&x" FROM t"#,
            r#"SELECT a&"b" FROM t"#,
            r#"SELECT 'U&"\0073sn"'"#,
            "SELECT 1 & 2",
        ] {
            assert!(matches!(rewrite(plain), Ok(Cow::Borrowed(_))), "{plain}");
        }
        // What cannot be decoded fails the parse.
        for bad in [
            r#"SELECT U&"\00" x"#,
            r#"SELECT U&"\D83D" x"#,
            r#"SELECT U&"\0000" x"#,
            r#"SELECT U&"x" UESCAPE 'a' FROM t"#,
            r#"SELECT U&"x" UESCAPE '+' FROM t"#,
        ] {
            assert!(rewrite(bad).is_err(), "{bad}");
        }
    }
}
