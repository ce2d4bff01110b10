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
//! whose end would move under that setting is [`Lexer::ambiguous`].

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

/// One token. Offsets are `u32` (texts over 4 GiB are refused before
/// lexing, see [`MAX_TEXT`]), which keeps a token small: the fingerprint on
/// every statement's path moves a few of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// What it is.
    pub kind: Kind,
    start: u32,
    end: u32,
    body_start: u32,
    body_end: u32,
    /// Whether it is closed; an unclosed token runs to the end of the text.
    pub terminated: bool,
    /// For plain strings: whether the contents hold a backslash (then
    /// [`Lexer::ambiguous`] says whether its end depends on a setting).
    pub backslash: bool,
}

/// The longest text the lexer reads.
pub(crate) const MAX_TEXT: usize = u32::MAX as usize;

impl Token {
    /// Where it is, including quotes, prefix excluded.
    #[inline]
    pub(crate) fn span(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// For strings: the contents between the delimiters.
    #[inline]
    pub(crate) fn body(&self) -> Range<usize> {
        self.body_start as usize..self.body_end as usize
    }

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

/// Bytes that can start a token (`;` only when statements are split).
/// Every one of them lies in `0x22..=0x3B`.
const fn special(semicolon: bool) -> [bool; 256] {
    let mut t = [false; 256];
    t[b'-' as usize] = true;
    t[b'/' as usize] = true;
    t[b'"' as usize] = true;
    t[b'$' as usize] = true;
    t[b'\'' as usize] = true;
    t[b';' as usize] = semicolon;
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = true;
        d += 1;
    }
    t
}

static SPECIAL: [bool; 256] = special(true);
static SPECIAL_NO_SEMICOLON: [bool; 256] = special(false);

/// Whether an 8-byte word may hold a special byte: one in `0x22..=0x3B`
/// (`0x22..=0x39` without `;`). A word of ASCII bytes none of which is in
/// that span holds none (most words of SQL: letters, spaces, `=`). For
/// ASCII bytes the two additions cannot carry from one byte into the next,
/// so each byte's high bit says whether that byte is `>= 0x22` (resp.
/// above the span).
#[inline]
fn may_hold_special<const SEMICOLON: bool>(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let above: u64 = if SEMICOLON { 0x3C } else { 0x3A };
    if word & HIGH != 0 {
        return true; // non-ASCII: checked byte by byte
    }
    let at_least_lo = word.wrapping_add(ONES * (0x80 - 0x22));
    let above_hi = word.wrapping_add(ONES * (0x80 - above));
    at_least_lo & !above_hi & HIGH != 0
}

/// The index of the first special byte at or after `i` (`b.len()` when
/// there is none), eight bytes at a time.
#[inline]
fn next_special<const SEMICOLON: bool>(b: &[u8], mut i: usize) -> usize {
    let table = if SEMICOLON {
        &SPECIAL
    } else {
        &SPECIAL_NO_SEMICOLON
    };
    let special = |x: &u8| table[usize::from(*x)];
    loop {
        let Some(word) = b.get(i..).and_then(|rest| rest.first_chunk::<8>()) else {
            return b
                .get(i..)
                .and_then(|rest| rest.iter().position(special))
                .map_or(b.len(), |k| i + k);
        };
        if may_hold_special::<SEMICOLON>(u64::from_le_bytes(*word))
            && let Some(k) = word.iter().position(special)
        {
            return i + k;
        }
        i += 8;
    }
}

/// A byte that continues an identifier (and so cannot start a number or a
/// dollar quote).
#[inline]
fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_dollar_tag_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// The tokens of a text, in order. With `SEMICOLON` false, `;` is plain
/// text (for readers that do not split statements).
pub(crate) struct Lexer<'a, const SEMICOLON: bool = true> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a, true> {
    /// A lexer over `sql`, which must be at most [`MAX_TEXT`] bytes long.
    pub(crate) fn new(sql: &'a str) -> Self {
        debug_assert!(sql.len() <= MAX_TEXT);
        Self {
            b: sql.as_bytes(),
            i: 0,
        }
    }
}

impl<'a> Lexer<'a, false> {
    /// A lexer that does not stop at `;`.
    pub(crate) fn without_semicolons(sql: &'a str) -> Self {
        debug_assert!(sql.len() <= MAX_TEXT);
        Self {
            b: sql.as_bytes(),
            i: 0,
        }
    }
}

impl<const SEMICOLON: bool> Lexer<'_, SEMICOLON> {
    /// Whether a plain string literal (one with a backslash) would end
    /// elsewhere with `standard_conforming_strings` off.
    pub(crate) fn ambiguous(&self, token: &Token) -> bool {
        token.backslash
            && matches!(token.kind, Kind::String(Prefix::None | Prefix::Other))
            && self.escape_end(token.span().start) != token.span().end
    }

    #[inline]
    #[allow(clippy::cast_possible_truncation)] // texts are at most MAX_TEXT long
    fn token(&mut self, kind: Kind, start: usize, end: usize, body: Range<usize>) -> Token {
        let terminated = end <= self.b.len();
        let end = end.min(self.b.len());
        self.i = end;
        Token {
            kind,
            start: start as u32,
            end: end as u32,
            body_start: body.start.min(end) as u32,
            body_end: body.end.min(end) as u32,
            terminated,
            backslash: false,
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

    /// `'…'` with `''` doubling: the index after the closing quote, and
    /// whether a backslash came before it (one pass: literals are short).
    #[inline]
    fn plain_end(&self, open: usize, quote: u8) -> (usize, bool) {
        let b = self.b;
        let mut backslash = false;
        let mut i = open + 1;
        while let Some(&c) = b.get(i) {
            if c == quote {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                    continue;
                }
                return (i + 1, backslash);
            }
            backslash |= c == b'\\';
            i += 1;
        }
        (usize::MAX, backslash)
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

    #[inline]
    fn string(&mut self, open: usize) -> Token {
        let prefix = self.prefix(open);
        let (end, backslash) = match prefix {
            Prefix::Escape => (self.escape_end(open), false),
            Prefix::Bits => (
                memchr::memchr(b'\'', &self.b[open + 1..]).map_or(usize::MAX, |p| open + 1 + p + 1),
                false,
            ),
            Prefix::None | Prefix::Other => self.plain_end(open, b'\''),
        };
        let mut token = self.token(
            Kind::String(prefix),
            open,
            end,
            open + 1..end.saturating_sub(1),
        );
        token.backslash = backslash;
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

impl<const SEMICOLON: bool> Iterator for Lexer<'_, SEMICOLON> {
    type Item = Token;

    #[inline]
    fn next(&mut self) -> Option<Token> {
        let b = self.b;
        loop {
            let i = next_special::<SEMICOLON>(b, self.i);
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
                    let (end, _) = self.plain_end(i, b'"');
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
                    let end = number_end(b, i);
                    return Some(self.token(Kind::Number, i, end, i..i));
                }
                _ => self.i = i + 1,
            }
        }
    }
}

/// The fingerprint of a text in which every byte that could start a token
/// is a digit (most statements with literals inlined: `… WHERE aid = 42`):
/// numbers become `0`, as [`Lexer`]'s [`Kind::Number`] tokens would, without
/// building tokens. `false` (and `out` left unspecified) as soon as any other
/// such byte appears: the caller then lexes the text.
#[inline]
pub(crate) fn fingerprint_numbers_only(sql: &str, out: &mut String) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    // Start of the verbatim run not yet copied.
    let mut run = 0;
    loop {
        i = next_special::<false>(b, i);
        let Some(&c) = b.get(i) else {
            break;
        };
        if !c.is_ascii_digit() {
            return false;
        }
        if i > 0 && is_ident_char(b[i - 1]) {
            // A digit inside an identifier (`t1`): plain text.
            i += 1;
            continue;
        }
        let end = number_end(b, i);
        out.push_str(&sql[run..i]);
        out.push('0');
        run = end;
        i = end;
    }
    out.push_str(&sql[run..]);
    true
}

/// The end of the number starting at `i`.
#[inline]
fn number_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|x| !(x.is_ascii_alphanumeric() || *x == b'.' || *x == b'_'))
        .map_or(b.len(), |p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        Lexer::new(sql).map(|t| (t.kind, &sql[t.span()])).collect()
    }

    #[test]
    fn the_word_at_a_time_skip_finds_the_same_byte_as_a_byte_loop() {
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| SPECIAL[usize::from(b[j])])
                .unwrap_or(b.len())
        };
        let naive_no_semicolon = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| SPECIAL_NO_SEMICOLON[usize::from(b[j])])
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
                        next_special::<true>(&text, start),
                        naive(&text, start),
                        "byte {value:#x} at {at}, from {start}"
                    );
                    assert_eq!(
                        next_special::<false>(&text, start),
                        naive_no_semicolon(&text, start),
                        "byte {value:#x} at {at}, from {start}, without `;`"
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
                    next_special::<true>(&text, start),
                    naive(&text, start),
                    "{text:?} from {start}"
                );
                assert_eq!(
                    next_special::<false>(&text, start),
                    naive_no_semicolon(&text, start),
                    "{text:?} from {start}"
                );
            }
        }
        assert!(!may_hold_special::<true>(u64::from_le_bytes(*b"SELECT a")));
        assert!(may_hold_special::<true>(u64::from_le_bytes(*b"aid = 12")));
        assert!(may_hold_special::<true>(u64::from_le_bytes(*b"select 1")));
        assert!(may_hold_special::<true>(u64::from_le_bytes(*b"t; drop ")));
        assert!(!may_hold_special::<false>(u64::from_le_bytes(*b"t; drop ")));
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
        let mut lexer = Lexer::new("select 'x\\'");
        let t = lexer.next().expect("a string");
        assert!(t.backslash && lexer.ambiguous(&t) && t.terminated);
        let mut lexer = Lexer::new("select 'a\\b'");
        let t = lexer.next().expect("a string");
        assert!(t.backslash && !lexer.ambiguous(&t));
        let t = Lexer::new("select 'unterminated").next().expect("a string");
        assert!(!t.terminated);
        assert_eq!(t.span(), 7..20);
        assert_eq!(t.body(), 8..20);
    }
}
