//! PostgreSQL's lexical structure, as the server's `scan.l` defines it: the
//! one tokenizer behind statement splitting, fingerprints and literal
//! redaction, so all three agree on where every string, comment and
//! statement ends.
//!
//! The lexer yields only the tokens those three care about ([`Kind`]);
//! everything between them (keywords, identifiers, operators, whitespace)
//! is plain text, skipped eight bytes at a time.
//!
//! - `--` comments end at a newline, `\n` or `\r`; `/* */` comments nest.
//! - `'…'` doubles its quote. A prefix letter right before the quote (not
//!   the end of a longer identifier) changes the rules: `E'…'` takes
//!   backslash escapes, `B'…'` and `X'…'` end at their first quote, `N'…'`
//!   and `U&'…'` are plain.
//! - `"…"` identifiers (and `U&"…"`) double their quote.
//! - `$tag$…$tag$` (the tag empty or an identifier not starting with a
//!   digit) is a string whose body is verbatim, unless the `$` continues an
//!   identifier (`a$b`); `$1` is a parameter.
//! - A number starts with a digit that does not continue an identifier.
//!
//! One thing the text alone cannot decide: with `standard_conforming_strings`
//! off, a backslash escapes a quote inside a plain `'…'`. A plain literal
//! whose end would move under that setting is marked
//! [`Token::ambiguous`].

use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `;`.
    Semicolon,
    /// A `--` or `/* */` comment.
    Comment,
    /// A `'…'` string literal.
    String(Prefix),
    /// A `$tag$…$tag$` string.
    DollarString,
    /// A `"…"` identifier.
    QuotedIdent,
    /// A `$n` parameter.
    Param,
    /// A numeric literal.
    Number,
}

/// The letter before a string literal's quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// None: a plain literal.
    None,
    /// `E'…'`: backslash escapes.
    Escape,
    /// `B'…'` or `X'…'`: ends at its first quote.
    Bits,
    /// `N'…'` (national character) or `U&'…'` (Unicode escapes): plain
    /// quoting rules, but the value is spelled differently.
    Other,
}

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// What it is.
    pub kind: Kind,
    /// Where it is, including quotes, prefix excluded.
    pub span: Range<usize>,
    /// For strings: the contents between the delimiters.
    pub body: Range<usize>,
    /// Whether it is closed; an unclosed token runs to the end of the text.
    pub terminated: bool,
    /// For plain strings: whether the contents hold a backslash.
    pub backslash: bool,
    /// For plain strings: whether they would end elsewhere with
    /// `standard_conforming_strings` off.
    pub ambiguous: bool,
}

impl Token {
    /// What the token is called in messages.
    pub(crate) fn what(&self) -> &'static str {
        match self.kind {
            Kind::String(Prefix::Bits) => "bit string literal",
            Kind::String(_) => "string literal",
            Kind::DollarString => "dollar-quoted string",
            Kind::QuotedIdent => "quoted identifier",
            Kind::Comment => "comment",
            Kind::Semicolon | Kind::Param | Kind::Number => "token",
        }
    }
}

/// Bytes that can start a token. Every one of them lies in `0x22..=0x3B`.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'-' as usize] = true;
    t[b'/' as usize] = true;
    t[b'"' as usize] = true;
    t[b'$' as usize] = true;
    t[b'\'' as usize] = true;
    t[b';' as usize] = true;
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = true;
        d += 1;
    }
    t
};

/// Whether an 8-byte word may hold a [`SPECIAL`] byte. A word of ASCII
/// bytes none of which is in `0x22..=0x3B` holds none (most words of SQL:
/// letters, spaces, `=`). For ASCII bytes the two additions cannot carry
/// from one byte into the next, so each byte's high bit says whether that
/// byte is `>= 0x22` (resp. `>= 0x3C`).
fn may_hold_special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if word & HIGH != 0 {
        return true; // non-ASCII: checked byte by byte
    }
    let at_least_lo = word.wrapping_add(ONES * (0x80 - 0x22));
    let above_hi = word.wrapping_add(ONES * (0x80 - 0x3C));
    at_least_lo & !above_hi & HIGH != 0
}

/// The index of the first [`SPECIAL`] byte at or after `i` (`b.len()`
/// when there is none), eight bytes at a time.
fn next_special(b: &[u8], mut i: usize) -> usize {
    let special = |x: &u8| SPECIAL[usize::from(*x)];
    loop {
        let Some(word) = b.get(i..).and_then(|rest| rest.first_chunk::<8>()) else {
            return b
                .get(i..)
                .and_then(|rest| rest.iter().position(special))
                .map_or(b.len(), |k| i + k);
        };
        if may_hold_special(u64::from_le_bytes(*word))
            && let Some(k) = word.iter().position(special)
        {
            return i + k;
        }
        i += 8;
    }
}

/// A byte that continues an identifier (and so cannot start a number or a
/// dollar quote).
fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_dollar_tag_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// The tokens of a text, in order.
pub(crate) struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(sql: &'a str) -> Self {
        Self {
            b: sql.as_bytes(),
            i: 0,
        }
    }

    fn token(&mut self, kind: Kind, start: usize, end: usize, body: Range<usize>) -> Token {
        let terminated = end <= self.b.len();
        let end = end.min(self.b.len());
        self.i = end;
        Token {
            kind,
            span: start..end,
            body: body.start.min(end)..body.end.min(end),
            terminated,
            backslash: false,
            ambiguous: false,
        }
    }

    /// The prefix of the string literal whose quote is at `quote`.
    fn prefix(&self, quote: usize) -> Prefix {
        let b = self.b;
        let letter = |at: Option<usize>| at.and_then(|p| b.get(p).copied());
        let not_ident = |at: Option<usize>| !letter(at).is_some_and(is_ident_char);
        let before = quote.checked_sub(1);
        match letter(before) {
            Some(b'&')
                if matches!(letter(quote.checked_sub(2)), Some(b'u' | b'U'))
                    && not_ident(quote.checked_sub(3)) =>
            {
                Prefix::Other
            }
            Some(l) if l.is_ascii_alphabetic() && not_ident(quote.checked_sub(2)) => {
                match l.to_ascii_lowercase() {
                    b'e' => Prefix::Escape,
                    b'b' | b'x' => Prefix::Bits,
                    b'n' => Prefix::Other,
                    _ => Prefix::None,
                }
            }
            _ => Prefix::None,
        }
    }

    /// `'…'` with `''` doubling: the index after the closing quote.
    fn plain_end(&self, open: usize, quote: u8) -> usize {
        let b = self.b;
        let mut i = open + 1;
        while let Some(rel) = memchr::memchr(quote, &b[i.min(b.len())..]) {
            let q = i + rel;
            if b.get(q + 1) == Some(&quote) {
                i = q + 2;
            } else {
                return q + 1;
            }
        }
        usize::MAX
    }

    /// `E'…'`: backslash escapes the next byte, `''` is a quote.
    fn escape_end(&self, open: usize) -> usize {
        let b = self.b;
        let mut i = open + 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => return i + 1,
                _ => i += 1,
            }
        }
        usize::MAX
    }

    fn string(&mut self, open: usize) -> Token {
        let prefix = self.prefix(open);
        let end = match prefix {
            Prefix::Escape => self.escape_end(open),
            Prefix::Bits => {
                memchr::memchr(b'\'', &self.b[open + 1..]).map_or(usize::MAX, |p| open + 1 + p + 1)
            }
            Prefix::None | Prefix::Other => self.plain_end(open, b'\''),
        };
        let mut token = self.token(
            Kind::String(prefix),
            open,
            end,
            open + 1..end.saturating_sub(1),
        );
        if matches!(prefix, Prefix::None | Prefix::Other) {
            token.backslash = memchr::memchr(b'\\', &self.b[token.body.clone()]).is_some();
            token.ambiguous = token.backslash && self.escape_end(open) != end;
        }
        token
    }

    /// The end of a `$tag$` opening delimiter at `i`, if there is one.
    fn dollar_tag(&self, i: usize) -> Option<usize> {
        let b = self.b;
        let mut j = i + 1;
        if b.get(j) == Some(&b'$') {
            return Some(j + 1);
        }
        if !b.get(j).copied().is_some_and(is_dollar_tag_start) {
            return None;
        }
        while let Some(&c) = b.get(j) {
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

    fn block_comment_end(&self, mut i: usize) -> usize {
        let b = self.b;
        let mut depth = 0usize;
        while i + 1 < b.len() {
            if b[i] == b'/' && b[i + 1] == b'*' {
                depth += 1;
                i += 2;
            } else if b[i] == b'*' && b[i + 1] == b'/' {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            } else {
                i += 1;
            }
        }
        usize::MAX
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let b = self.b;
        loop {
            let i = next_special(b, self.i);
            let &c = b.get(i)?;
            let next = b.get(i + 1).copied();
            let prev_ident = i > 0 && is_ident_char(b[i - 1]);
            match c {
                b'-' if next == Some(b'-') => {
                    let end = memchr::memchr2(b'\n', b'\r', &b[i..]).map_or(b.len(), |p| i + p);
                    return Some(self.token(Kind::Comment, i, end, i..i));
                }
                b'/' if next == Some(b'*') => {
                    let end = self.block_comment_end(i);
                    return Some(self.token(Kind::Comment, i, end, i..i));
                }
                b';' => return Some(self.token(Kind::Semicolon, i, i + 1, i..i)),
                b'\'' => return Some(self.string(i)),
                b'"' => {
                    let end = self.plain_end(i, b'"');
                    return Some(self.token(
                        Kind::QuotedIdent,
                        i,
                        end,
                        i + 1..end.saturating_sub(1),
                    ));
                }
                b'$' if !prev_ident && next.is_some_and(|n| n.is_ascii_digit()) => {
                    let end = b[i + 1..]
                        .iter()
                        .position(|x| !x.is_ascii_digit())
                        .map_or(b.len(), |p| i + 1 + p);
                    return Some(self.token(Kind::Param, i, end, i..i));
                }
                b'$' if !prev_ident && let Some(tag_end) = self.dollar_tag(i) => {
                    let tag = &b[i..tag_end];
                    let close = memchr::memmem::find(&b[tag_end..], tag).map(|p| tag_end + p);
                    let end = close.map_or(usize::MAX, |c| c + tag.len());
                    let body_end = close.unwrap_or(b.len());
                    return Some(self.token(Kind::DollarString, i, end, tag_end..body_end));
                }
                b'0'..=b'9' if !prev_ident => {
                    let end = b[i..]
                        .iter()
                        .position(|x| !(x.is_ascii_alphanumeric() || *x == b'.' || *x == b'_'))
                        .map_or(b.len(), |p| i + p);
                    return Some(self.token(Kind::Number, i, end, i..i));
                }
                _ => self.i = i + 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        Lexer::new(sql).map(|t| (t.kind, &sql[t.span])).collect()
    }

    #[test]
    fn the_word_at_a_time_skip_finds_the_same_byte_as_a_byte_loop() {
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| SPECIAL[usize::from(b[j])])
                .unwrap_or(b.len())
        };
        // Every byte value at every position of a 19-byte text of plain
        // letters (so the word path, the tail path and the boundary between
        // them all see it), from every start.
        for value in 0..=255u8 {
            for at in 0..19 {
                let mut text = b"selectabalancefromx".to_vec();
                text[at] = value;
                for start in 0..=text.len() {
                    assert_eq!(
                        next_special(&text, start),
                        naive(&text, start),
                        "byte {value:#x} at {at}, from {start}"
                    );
                }
            }
        }
        // Pseudo-random texts mixing specials, plain ASCII and UTF-8.
        let alphabet: Vec<u8> = "ab Z_=;()*,.-/\"$'09#%&+:<>é€\n".bytes().collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            let len = usize::try_from(seed % 40).unwrap_or(0);
            let mut text = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pick = usize::try_from(seed).unwrap_or(0) % alphabet.len();
                text.push(alphabet[pick]);
            }
            for start in 0..=text.len() {
                assert_eq!(
                    next_special(&text, start),
                    naive(&text, start),
                    "{text:?} from {start}"
                );
            }
        }
        assert!(!may_hold_special(u64::from_le_bytes(*b"SELECT a")));
        assert!(may_hold_special(u64::from_le_bytes(*b"aid = 12")));
        assert!(may_hold_special(u64::from_le_bytes(*b"select 1")));
        assert!(may_hold_special(u64::from_le_bytes(*b"t; drop ")));
    }

    #[test]
    fn tokens_and_their_extent() {
        assert_eq!(
            kinds("select 'a''b', E'c\\'d', B'01', $1, t1, 42;"),
            [
                (Kind::String(Prefix::None), "'a''b'"),
                (Kind::String(Prefix::Escape), "'c\\'d'"),
                (Kind::String(Prefix::Bits), "'01'"),
                (Kind::Param, "$1"),
                (Kind::Number, "42"),
                (Kind::Semicolon, ";"),
            ]
        );
        assert_eq!(
            kinds("a$b $x$ ; $x$ \"q\"\"r\" /* /* */ */ -- c\rx"),
            [
                (Kind::DollarString, "$x$ ; $x$"),
                (Kind::QuotedIdent, "\"q\"\"r\""),
                (Kind::Comment, "/* /* */ */"),
                (Kind::Comment, "-- c"),
            ]
        );
        // A prefix letter that ends a longer identifier is no prefix.
        assert_eq!(kinds("somee'x'"), [(Kind::String(Prefix::None), "'x'")]);
        assert_eq!(kinds("U&'x'"), [(Kind::String(Prefix::Other), "'x'")]);
        let t = Lexer::new("select 'x\\'").next().expect("a string");
        assert!(t.backslash && t.ambiguous && t.terminated);
        let t = Lexer::new("select 'unterminated").next().expect("a string");
        assert!(!t.terminated);
        assert_eq!(t.span, 7..20);
        assert_eq!(t.body, 8..20);
    }
}
