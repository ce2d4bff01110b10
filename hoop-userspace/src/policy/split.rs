//! Splits a Query message's text into statements the way PostgreSQL's lexer does.
//!
//! This is the step that decides which text the server will run as separate
//! statements, so it follows `src/backend/parser/scan.l` rather than any SQL
//! library: `--` and nested `/* */` comments, `'…'` with doubled quotes,
//! `E'…'` with backslash escapes, `B'…'`/`X'…'` (no doubling), `"…"`
//! identifiers, and `$tag$…$tag$` dollar quoting (not after an identifier
//! character, where `$` is part of the name, and not `$1`). Every top-level `;`
//! ends a statement; parentheses do not matter, because the server parses the
//! whole string before running any of it, so a piece that is not a complete
//! statement is a syntax error for the server too.
//!
//! One thing the text alone cannot decide: with `standard_conforming_strings`
//! off (a client can `SET` it), a backslash escapes a quote inside `'…'`. A
//! plain literal whose end depends on that setting (e.g. `'a\'`) is
//! [`SplitError::Ambiguous`]: the caller treats the whole text as unparsed,
//! whatever the session's setting, so no statement can hide behind it.

/// Why a text could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A string, quoted identifier, dollar quote or comment is never closed.
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    /// A `'…'` literal ends in a different place depending on `standard_conforming_strings`.
    #[error("string literal at byte {0} ends differently with standard_conforming_strings off")]
    Ambiguous(usize),
}

/// One statement's text within the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The text, without its terminating `;`.
    pub text: &'a str,
    /// Byte offset of `text` in the original.
    pub offset: usize,
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_dollar_tag_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Splits `sql` into statements; pieces holding only whitespace and comments are dropped.
pub fn split(sql: &str) -> Result<Vec<Piece<'_>>, SplitError> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut significant = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        let prev_ident = i > 0 && is_ident_char(bytes[i - 1]);
        match b {
            b'-' if next == Some(b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
                continue;
            }
            b'/' if next == Some(b'*') => {
                i = skip_block_comment(bytes, i)?;
                continue;
            }
            b';' => {
                if significant {
                    pieces.push(Piece {
                        text: &sql[start..i],
                        offset: start,
                    });
                }
                start = i + 1;
                significant = false;
                i += 1;
                continue;
            }
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            significant = true;
        }
        i = match b {
            b'\'' => {
                // The prefix letter (if any) is already consumed as part of this token.
                let prefix = string_prefix(bytes, i);
                match prefix {
                    Some(b'e' | b'E') => skip_escape_string(bytes, i)?,
                    Some(b'b' | b'B' | b'x' | b'X') => skip_bit_string(bytes, i)?,
                    _ => {
                        let end = skip_plain_string(bytes, i)?;
                        // The same literal read as if backslashes escaped.
                        if skip_escape_string(bytes, i).ok() != Some(end) {
                            return Err(SplitError::Ambiguous(i));
                        }
                        end
                    }
                }
            }
            b'"' => skip_quoted(bytes, i, b'"', "quoted identifier")?,
            b'$' if !prev_ident => match dollar_tag(bytes, i) {
                Some(tag_end) => {
                    let tag = &bytes[i..tag_end];
                    let body = &bytes[tag_end..];
                    let close = body
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .ok_or(SplitError::Unterminated("dollar-quoted string"))?;
                    tag_end + close + tag.len()
                }
                None => i + 1,
            },
            _ => i + 1,
        };
    }
    if significant {
        pieces.push(Piece {
            text: &sql[start..],
            offset: start,
        });
    }
    Ok(pieces)
}

/// The letter right before a quote, when it is a string prefix (`E'`, `B'`,
/// `X'`, `N'`, `U&'`) rather than the end of a longer identifier.
fn string_prefix(bytes: &[u8], quote: usize) -> Option<u8> {
    let letter = *bytes.get(quote.checked_sub(1)?)?;
    if letter == b'&' {
        return Some(b'&');
    }
    if !letter.is_ascii_alphabetic() {
        return None;
    }
    let before = quote.checked_sub(2).map(|p| bytes[p]);
    if before.is_some_and(is_ident_char) {
        None
    } else {
        Some(letter)
    }
}

fn skip_block_comment(bytes: &[u8], mut i: usize) -> Result<usize, SplitError> {
    let mut depth = 0usize;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Err(SplitError::Unterminated("comment"))
}

/// `'…'` with `''` as an escaped quote; returns the index after the closing quote.
fn skip_plain_string(bytes: &[u8], open: usize) -> Result<usize, SplitError> {
    skip_quoted(bytes, open, b'\'', "string literal")
}

fn skip_quoted(
    bytes: &[u8],
    open: usize,
    quote: u8,
    what: &'static str,
) -> Result<usize, SplitError> {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Ok(i + 1);
        }
        i += 1;
    }
    Err(SplitError::Unterminated(what))
}

/// `E'…'`: a backslash escapes the next byte; `''` is a quote.
fn skip_escape_string(bytes: &[u8], open: usize) -> Result<usize, SplitError> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(SplitError::Unterminated("string literal"))
}

/// `B'…'`/`X'…'`: the first quote ends it (a following quote starts a new literal).
fn skip_bit_string(bytes: &[u8], open: usize) -> Result<usize, SplitError> {
    bytes[open + 1..]
        .iter()
        .position(|&c| c == b'\'')
        .map(|p| open + 1 + p + 1)
        .ok_or(SplitError::Unterminated("bit string literal"))
}

/// The end of a `$tag$` opening delimiter at `i`, if there is one.
fn dollar_tag(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if bytes.get(j) == Some(&b'$') {
        return Some(j + 1);
    }
    if !bytes.get(j).copied().is_some_and(is_dollar_tag_start) {
        return None;
    }
    while let Some(&c) = bytes.get(j) {
        if c == b'$' {
            return Some(j + 1);
        }
        if !(is_dollar_tag_start(c) || c.is_ascii_digit()) {
            return None;
        }
        j += 1;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).unwrap().iter().map(|p| p.text.trim()).collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(texts("select 1; select 2;"), ["select 1", "select 2"]);
        assert_eq!(
            texts("select ';'; drop table t"),
            ["select ';'", "drop table t"]
        );
        assert_eq!(
            texts("select 1 -- ; drop\n; x"),
            ["select 1 -- ; drop", "x"]
        );
        assert_eq!(
            texts("select 1 /* ; drop table t */"),
            ["select 1 /* ; drop table t */"]
        );
        assert_eq!(
            texts("select 1 /* /* ; */ ; drop */; y"),
            ["select 1 /* /* ; */ ; drop */", "y"]
        );
        assert_eq!(
            texts(r#"select "a;b" from t; z"#),
            [r#"select "a;b" from t"#, "z"]
        );
        assert_eq!(
            texts("select $$;$$; select $x$ $$ ; $x$; q"),
            ["select $$;$$", "select $x$ $$ ; $x$", "q"]
        );
        assert_eq!(
            texts("select E'\\'; drop'; w"),
            ["select E'\\'; drop'", "w"]
        );
        assert_eq!(texts("select a$b; c"), ["select a$b", "c"]);
        assert_eq!(texts("select $1; c"), ["select $1", "c"]);
        assert_eq!(texts(" ; -- nothing\n ;"), Vec::<&str>::new());
        assert_eq!(texts("select 'it''s;'; d"), ["select 'it''s;'", "d"]);
        // B'01' ends at its first quote; the next quote opens a new literal.
        assert_eq!(
            texts("select B'01''; drop table t; --'"),
            ["select B'01''; drop table t; --'"]
        );
    }

    #[test]
    fn literals_that_depend_on_standard_conforming_strings_are_ambiguous() {
        assert_eq!(
            split(r"select 'x\''; drop table t; --'"),
            Err(SplitError::Ambiguous(7))
        );
        assert!(matches!(
            split(r"select 'a\'"),
            Err(SplitError::Ambiguous(_))
        ));
        // A backslash that does not move the end is fine either way.
        assert!(split(r"select '\d+' ~ 'x'").is_ok());
        assert!(split(r"select e'a\'b'").is_ok());
    }

    #[test]
    fn unterminated_constructs_are_errors() {
        assert!(split("select 'abc").is_err());
        assert!(split("select /* /* */").is_err());
        assert!(split("select $a$ x").is_err());
        assert!(split("select \"x").is_err());
    }
}
