//! The MySQL/MariaDB SQL lexer: one tokenizer that follows the server's own
//! (`sql/sql_lex.cc`), used for
//! - statement splitting ([`split`]): where a multi-statement COM_QUERY
//!   splits into statements, exactly where the server splits it;
//! - fingerprints ([`fingerprint`]): a literal-free key under which texts
//!   that differ only in literal values share one judgement;
//! - literal redaction ([`redact_literals`]): the text with the contents of
//!   string literals replaced by `[REDACTED:literal]`;
//! - the executable text ([`executable_sql`]): the code the server runs,
//!   executable comments spliced in and version comments it skips blanked,
//!   offsets kept, for a SQL parser that does not know the server's version.
//!
//! Standalone: it depends on nothing else in this crate.
//!
//! # What it follows
//! - Comments: `#` to the end of the line; `--` only when followed by
//!   whitespace or a control character (`SELECT 1--1` is 2); `/* … */`,
//!   which does not nest.
//! - Executable comments, which are **code**, never comments:
//!   `/*! … */` always runs; `/*!NNNNN … */` runs when the server's version
//!   is at least NNNNN, else it is skipped (a skipped one may contain one
//!   nested `/* … */`); MariaDB also reads six-digit versions, skips
//!   MySQL-only versions 50700–99999 in `/*!`, and runs `/*M! … */` and
//!   `/*M!NNNNNN … */` by the same rule without that exception. MySQL 8.4
//!   reads a sixth digit only when whitespace follows it (earlier releases
//!   differ, so that form is refused before 8.4), and treats `/*M!` as a
//!   plain comment. The first `*/` ends every open executable comment. A
//!   `;` inside one ends the statement only inside a stored program body
//!   (mysqldump writes triggers that way); anywhere else the server rejects
//!   the statement (measured), so [`split`] refuses it.
//! - Strings: `'…'`, and `"…"` unless `ANSI_QUOTES` (then `"` quotes
//!   identifiers); quotes are escaped by doubling, and by a backslash unless
//!   `NO_BACKSLASH_ESCAPES`. Backtick identifiers (doubling only). Prefixed
//!   literals: `_charset'…'`, `N'…'`, `X'…'` and `B'…'` (only hex or binary
//!   digits; anything else is a syntax error the lexer refuses), `0x…`,
//!   `0b…`.
//! - Numbers and identifiers: an identifier may start with digits (`1abc`,
//!   `1e5x`), and after `name.` the next token is an identifier even when
//!   it looks like a number (`t.1e5`).
//! - The server strips leading whitespace and trailing `;` and whitespace
//!   from a query before it parses it, and whitespace before each next
//!   statement; [`split`] does the same.
//!
//! # Character sets
//! The server tokenizes in `character_set_client`. In big5, cp932, gbk,
//! sjis and gb18030 the byte 0x5C (`\`) can be the second byte of a
//! character, so a byte-level tokenizer and the server can disagree about
//! where a string ends. The lexer **refuses** ([`LexError::UnsafeCharset`])
//! any text with a byte above 0x7F under those sets, and under any set it
//! does not know; ASCII text lexes identically in every one of them. UTF-8
//! (utf8mb3, utf8mb4), the single-byte sets and the EUC-style multi-byte
//! sets (ujis, eucjpms, euckr, gb2312), whose multi-byte characters never
//! contain a quote or a backslash, are lexed byte by byte. A `--` followed by
//! a byte above 0x7F is refused too: whether that byte is whitespace
//! depends on the character set's tables.
//!
//! # Not followed, and refused instead
//! - NUL bytes outside string literals (the server ends a `#` comment at one).
//! - `[` under `sql_mode=MSSQL` (MariaDB 11 quotes identifiers with brackets).
//! - MySQL 9's dollar-quoted strings (`$tag$…$tag$`): under the MySQL flavour a
//!   token that could open one is refused.
//!
//! # Compound statements
//! A stored program body (`CREATE PROCEDURE … BEGIN …; …; END`), and
//! MariaDB's compound statements outside stored programs (`BEGIN NOT ATOMIC`,
//! `IF`, `CASE`, `LOOP`, `WHILE`, `REPEAT`, `FOR`, labels), contain `;`
//! that do not end the statement; only the server's grammar knows where it
//! ends. [`split`] marks the statement that starts one as
//! [`Statement::compound`] and lets it run to the end of the text, so a
//! guardrail judges the rest as one unparsed unit (fail closed).
//!
//! # DELIMITER
//! `DELIMITER //` is a command of the `mysql`/`mariadb` command-line
//! clients: they split scripts on it and never send it. The server never
//! sees it (sent as SQL it is a syntax error), so this lexer has no notion
//! of it.

use std::fmt;
use std::ops::Range;

/// The server the text is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    /// MariaDB (else MySQL).
    pub mariadb: bool,
    /// `MYSQL_VERSION_ID`: 101119 for 10.11.19, 80036 for 8.0.36.
    pub version_id: u32,
}

/// The `sql_mode` flags that change tokenization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqlMode {
    /// `"` quotes identifiers, not strings.
    pub ansi_quotes: bool,
    /// A backslash is an ordinary character in strings.
    pub no_backslash_escapes: bool,
    /// MariaDB `MSSQL`: `[…]` quotes identifiers (refused by this lexer).
    pub mssql: bool,
}

impl SqlMode {
    /// The flags of an `@@sql_mode` value (a comma-separated list; the
    /// combination modes `ANSI`, `ORACLE`, `MSSQL`, `DB2`, `POSTGRESQL`,
    /// `MAXDB` include `ANSI_QUOTES`).
    pub fn from_sql_mode(value: &str) -> Self {
        let mut m = Self::default();
        for part in value.split(',') {
            match part.trim().to_ascii_uppercase().as_str() {
                "ANSI_QUOTES" | "ANSI" | "ORACLE" | "DB2" | "POSTGRESQL" | "MAXDB" => {
                    m.ansi_quotes = true;
                }
                "MSSQL" => {
                    m.ansi_quotes = true;
                    m.mssql = true;
                }
                "NO_BACKSLASH_ESCAPES" => m.no_backslash_escapes = true,
                _ => {}
            }
        }
        m
    }
}

/// How the client's character set is lexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// utf8mb3, utf8mb4: multi-byte characters use only bytes above 0x7F.
    Utf8,
    /// latin1, which is Windows-1252 in MySQL and MariaDB: single-byte, and
    /// the one non-UTF-8 set whose text [`super::canonical_text`] transcodes
    /// (exactly) to UTF-8.
    Latin1,
    /// Another single-byte set (ascii, binary, cp1251…): lexed, but text
    /// with bytes above 0x7F has no canonical form.
    SingleByte,
    /// ujis, eucjpms, euckr, gb2312: no multi-byte character contains a
    /// quote or a backslash.
    MultiByteSafe,
    /// big5, cp932, gbk, sjis, gb18030: 0x5C can end a multi-byte
    /// character. Only ASCII text is lexed.
    BackslashTrail,
    /// Anything else (ucs2, utf16 and utf32 cannot be client sets; unknown
    /// names). Only ASCII text is lexed.
    Unsupported,
}

impl Charset {
    /// The class of a character set name (`character_set_client`).
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "utf8" | "utf8mb3" | "utf8mb4" => Self::Utf8,
            "latin1" => Self::Latin1,
            "latin2" | "latin5" | "latin7" | "ascii" | "binary" | "cp1250" | "cp1251"
            | "cp1256" | "cp1257" | "cp850" | "cp852" | "cp866" | "dec8" | "hp8" | "koi8r"
            | "koi8u" | "greek" | "hebrew" | "armscii8" | "geostd8" | "keybcs2" | "macce"
            | "macroman" | "swe7" | "tis620" => Self::SingleByte,
            "ujis" | "eucjpms" | "euckr" | "gb2312" => Self::MultiByteSafe,
            "big5" | "cp932" | "gbk" | "sjis" | "gb18030" => Self::BackslashTrail,
            _ => Self::Unsupported,
        }
    }

    fn allows_non_ascii(self) -> bool {
        matches!(
            self,
            Self::Utf8 | Self::Latin1 | Self::SingleByte | Self::MultiByteSafe
        )
    }
}

/// Everything the lexer needs to tokenize as the server will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexerOptions {
    /// The server's flavour and version (executable comments).
    pub server: Server,
    /// The session's `sql_mode` flags.
    pub sql_mode: SqlMode,
    /// The client character set's class.
    pub charset: Charset,
}

/// Text the lexer cannot tokenize the way the server will; the statement
/// must be treated as unparsed (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    /// A string literal does not end.
    #[error("unterminated string literal at byte {at}")]
    UnterminatedString {
        /// Where it starts.
        at: usize,
    },
    /// A quoted identifier does not end.
    #[error("unterminated quoted identifier at byte {at}")]
    UnterminatedIdentifier {
        /// Where it starts.
        at: usize,
    },
    /// A `/* … */` comment does not end.
    #[error("unterminated comment at byte {at}")]
    UnterminatedComment {
        /// Where it starts.
        at: usize,
    },
    /// An executable comment is still open at the end of the text.
    #[error("unterminated executable comment at byte {at}")]
    UnterminatedExecutableComment {
        /// Where it starts.
        at: usize,
    },
    /// `X'…'` or `B'…'` holds something other than hex or binary digits.
    #[error("invalid hexadecimal or bit literal at byte {at}")]
    InvalidLiteral {
        /// Where it starts.
        at: usize,
    },
    /// A top-level `;` inside an executable comment (the server rejects the
    /// statement).
    #[error("';' inside an executable comment at byte {at}")]
    SemicolonInExecutableComment {
        /// Where the `;` is.
        at: usize,
    },
    /// A byte above 0x7F under a character set whose multi-byte characters
    /// can hide a quote or a backslash.
    #[error("byte {at} is not ASCII and the client character set is not one hoop can tokenize")]
    UnsafeCharset {
        /// Where the byte is.
        at: usize,
    },
    /// Text lexed whole whose canonical form would not be UTF-8: hoop
    /// reads non-ASCII text as UTF-8, or as latin1 when that is the client
    /// character set.
    #[error("byte {at} is not UTF-8, and the client character set is not latin1")]
    NotUtf8 {
        /// Where the first such byte is.
        at: usize,
    },
    /// `--` followed by a byte above 0x7F: a comment or not, depending on
    /// the character set's tables.
    #[error("ambiguous '--' at byte {at}")]
    AmbiguousComment {
        /// Where the `--` is.
        at: usize,
    },
    /// A NUL byte outside a string literal.
    #[error("NUL byte outside a string literal at byte {at}")]
    NulByte {
        /// Where it is.
        at: usize,
    },
    /// Something whose meaning depends on a server feature this lexer does
    /// not follow (MSSQL brackets, MySQL dollar quotes).
    #[error("{what} at byte {at} is not supported")]
    Unsupported {
        /// What it is.
        what: &'static str,
        /// Where it is.
        at: usize,
    },
}

impl LexError {
    /// The byte offset the error names.
    pub fn offset(&self) -> usize {
        match *self {
            Self::UnterminatedString { at }
            | Self::UnterminatedIdentifier { at }
            | Self::UnterminatedComment { at }
            | Self::UnterminatedExecutableComment { at }
            | Self::InvalidLiteral { at }
            | Self::SemicolonInExecutableComment { at }
            | Self::UnsafeCharset { at }
            | Self::NotUtf8 { at }
            | Self::AmbiguousComment { at }
            | Self::NulByte { at }
            | Self::Unsupported { at, .. } => at,
        }
    }
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Whitespace.
    Whitespace,
    /// A comment (`#`, `-- `, `/* */`).
    Comment,
    /// A version comment the server skips (`/*!NNNNN … */` for a later version).
    SkippedComment,
    /// The opening of an executable comment the server runs (`/*!`,
    /// `/*!NNNNN`, `/*M!`, `/*M!NNNNNN`, version digits included).
    ExecutableOpen,
    /// The `*/` that closes executable comments.
    ExecutableClose,
    /// A string literal (`'…'`, `"…"` without ANSI_QUOTES).
    String,
    /// `N'…'`.
    NationalString,
    /// `X'…'`.
    HexString,
    /// `B'…'`.
    BitString,
    /// A quoted identifier (`` `…` ``, `"…"` under ANSI_QUOTES).
    QuotedIdentifier,
    /// A number (integer, decimal, float, `0x…`, `0b…`).
    Number,
    /// An unquoted identifier or keyword.
    Word,
    /// A host or variable name after `@` (`@v`, `user@host`, `@@sql_mode`).
    Variable,
    /// `?`.
    Placeholder,
    /// `;`.
    Semicolon,
    /// Any other character.
    Punct,
}

/// One token: its kind and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Where it starts.
    pub start: usize,
    /// Where it ends (exclusive).
    pub end: usize,
}

impl Token {
    /// Its byte range.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// MySQL's whitespace (`my_isspace` for ASCII).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// An identifier character: ASCII letters, digits, `_`, `$`, and (in the
/// character sets lexed at all) every byte above 0x7F.
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

struct Lexer<'a, F: FnMut(Token)> {
    sql: &'a [u8],
    opts: LexerOptions,
    /// Receives each token as it is lexed (nothing is materialized, so a
    /// 16 MiB INSERT costs no token vector).
    emit: F,
    /// Where the open executable comment started, if one is open.
    exec_open: Option<usize>,
    /// The previous token was `name.`: what follows is an identifier.
    ident_after_dot: bool,
    /// `@` was just read: a host or variable name may follow.
    after_at: bool,
}

impl<F: FnMut(Token)> Lexer<'_, F> {
    fn at(&self, i: usize) -> Option<u8> {
        self.sql.get(i).copied()
    }

    fn push(&mut self, kind: TokenKind, start: usize, end: usize) {
        (self.emit)(Token { kind, start, end });
    }

    fn run(&mut self) -> Result<(), LexError> {
        if !self.opts.charset.allows_non_ascii()
            && let Some(at) = self.sql.iter().position(|&b| b >= 0x80)
        {
            return Err(LexError::UnsafeCharset { at });
        }
        let mut i = 0;
        while i < self.sql.len() {
            i = self.token(i)?;
        }
        if let Some(at) = self.exec_open {
            return Err(LexError::UnterminatedExecutableComment { at });
        }
        Ok(())
    }

    /// Lexes one token at `i`; returns where the next starts.
    fn token(&mut self, i: usize) -> Result<usize, LexError> {
        let sql = self.sql;
        let c = sql[i];
        let next = self.at(i + 1);
        let ident_after_dot = std::mem::take(&mut self.ident_after_dot);
        let after_at = std::mem::take(&mut self.after_at);
        if is_space(c) {
            let end = i + sql[i..].iter().take_while(|&&b| is_space(b)).count();
            self.push(TokenKind::Whitespace, i, end);
            return Ok(end);
        }
        if c == 0 {
            return Err(LexError::NulByte { at: i });
        }
        if after_at && c != b'@' && !matches!(c, b'\'' | b'"' | b'`') {
            // `@name` / `user@host`: letters, digits, `.`, `_`, `$`.
            let end = i + sql[i..]
                .iter()
                .take_while(|&&b| is_ident(b) || b == b'.')
                .count();
            if end > i {
                self.push(TokenKind::Variable, i, end);
                return Ok(end);
            }
        }
        if ident_after_dot && is_ident(c) {
            return Ok(self.word(i));
        }
        match c {
            b'#' => self.line_comment(i),
            b'-' if next == Some(b'-') => match self.at(i + 2) {
                // At the end the server sees its terminating NUL: a control
                // character.
                None => self.line_comment(i),
                Some(b) if b <= 0x20 || b == 0x7F => self.line_comment(i),
                Some(b) if b >= 0x80 => Err(LexError::AmbiguousComment { at: i }),
                Some(_) => {
                    self.push(TokenKind::Punct, i, i + 1);
                    Ok(i + 1)
                }
            },
            b'/' if next == Some(b'*') => self.block_comment(i),
            b'*' if next == Some(b'/') && self.exec_open.is_some() => {
                self.exec_open = None;
                self.push(TokenKind::ExecutableClose, i, i + 2);
                Ok(i + 2)
            }
            b'\'' => self.string(i, i, b'\'', TokenKind::String),
            b'"' if self.opts.sql_mode.ansi_quotes => self.quoted_identifier(i, b'"'),
            b'"' => self.string(i, i, b'"', TokenKind::String),
            b'`' => self.quoted_identifier(i, b'`'),
            b'[' if self.opts.sql_mode.mssql => Err(LexError::Unsupported {
                what: "a bracket under sql_mode=MSSQL",
                at: i,
            }),
            b'x' | b'X' if next == Some(b'\'') => self.digits_literal(i, TokenKind::HexString),
            b'b' | b'B' if next == Some(b'\'') => self.digits_literal(i, TokenKind::BitString),
            b'n' | b'N' if next == Some(b'\'') => {
                self.string(i, i + 1, b'\'', TokenKind::NationalString)
            }
            b'$' if !self.opts.server.mariadb => {
                // MySQL 9 reads `$tag$…$tag$` as a string; older ones read an
                // identifier. Refuse what could be either.
                let tag = sql[i + 1..]
                    .iter()
                    .take_while(|&&b| is_ident(b) && b != b'$')
                    .count();
                if self.at(i + 1 + tag) == Some(b'$') {
                    return Err(LexError::Unsupported {
                        what: "a dollar quote (MySQL 9)",
                        at: i,
                    });
                }
                Ok(self.word(i))
            }
            b'0'..=b'9' => Ok(self.number_or_word(i)),
            b'.' if next.is_some_and(|b| b.is_ascii_digit()) => Ok(self.fraction(i)),
            b'@' => {
                self.push(TokenKind::Punct, i, i + 1);
                self.after_at = true;
                Ok(i + 1)
            }
            b'?' => {
                self.push(TokenKind::Placeholder, i, i + 1);
                Ok(i + 1)
            }
            b';' => {
                // Inside an executable comment it ends the statement only
                // in a compound body; [`split`] refuses it elsewhere.
                self.push(TokenKind::Semicolon, i, i + 1);
                Ok(i + 1)
            }
            _ if is_ident(c) => Ok(self.word(i)),
            _ => {
                self.push(TokenKind::Punct, i, i + 1);
                Ok(i + 1)
            }
        }
    }

    /// `#` or `-- ` to the end of the line (the server also ends it at a
    /// NUL, which is refused).
    fn line_comment(&mut self, i: usize) -> Result<usize, LexError> {
        let len = self.sql[i..]
            .iter()
            .take_while(|&&b| b != b'\n' && b != 0)
            .count();
        let end = i + len;
        if self.at(end) == Some(0) {
            return Err(LexError::NulByte { at: end });
        }
        self.push(TokenKind::Comment, i, end);
        Ok(end)
    }

    /// The end of a `/* */` comment whose body starts at `from`, allowing
    /// `nest` levels of nested `/* */` (the server allows one inside a
    /// skipped version comment).
    fn comment_end(&self, from: usize, nest: u32) -> Option<usize> {
        let sql = self.sql;
        let mut j = from;
        while j + 1 < sql.len() {
            if nest > 0 && sql[j] == b'/' && sql[j + 1] == b'*' {
                j = self.comment_end(j + 2, nest - 1)?;
                continue;
            }
            if sql[j] == b'*' && sql[j + 1] == b'/' {
                return Some(j + 2);
            }
            j += 1;
        }
        None
    }

    fn block_comment(&mut self, i: usize) -> Result<usize, LexError> {
        let sql = self.sql;
        let mariadb = self.opts.server.mariadb;
        let (marker, maria_syntax) = match (self.at(i + 2), self.at(i + 3)) {
            (Some(b'!'), _) => (3, false),
            (Some(b'M'), Some(b'!')) if mariadb => (4, true),
            _ => {
                let end = self
                    .comment_end(i + 2, 0)
                    .ok_or(LexError::UnterminatedComment { at: i })?;
                self.push(TokenKind::Comment, i, end);
                return Ok(end);
            }
        };
        let v = i + marker;
        let digit = |k: usize| sql.get(v + k).is_some_and(u8::is_ascii_digit);
        if !(0..5).all(digit) {
            // No version: always code.
            self.open_exec(i, v);
            return Ok(v);
        }
        let six = if mariadb {
            digit(5)
        } else {
            // MySQL reads a sixth digit only when whitespace follows it
            // (8.4 reads it so; releases before read five digits, from some
            // 8.0 release on six: which one is not pinned down, so such a
            // comment is refused before 8.4).
            let six = digit(5) && sql.get(v + 6).is_some_and(|&b| is_space(b));
            if six && self.opts.server.version_id < 80_400 {
                return Err(LexError::Unsupported {
                    what: "a six-digit executable-comment version on MySQL before 8.4",
                    at: i,
                });
            }
            six
        };
        let len = if six { 6 } else { 5 };
        let version: u32 = sql[v..v + len]
            .iter()
            .fold(0, |n, d| n * 10 + u32::from(d - b'0'));
        let runs = version <= self.opts.server.version_id
            && (!mariadb || maria_syntax || !(50_700..=99_999).contains(&version));
        if runs {
            self.open_exec(i, v + len);
            return Ok(v + len);
        }
        let end = self
            .comment_end(v + len, 1)
            .ok_or(LexError::UnterminatedComment { at: i })?;
        self.push(TokenKind::SkippedComment, i, end);
        Ok(end)
    }

    fn open_exec(&mut self, i: usize, end: usize) {
        // A nested opening inside an open one changes nothing: the first
        // `*/` closes both (measured on MariaDB 10.11).
        self.exec_open.get_or_insert(i);
        self.push(TokenKind::ExecutableOpen, i, end);
    }

    /// A string whose opening quote is at `quote_at` (token from `start`).
    fn string(
        &mut self,
        start: usize,
        quote_at: usize,
        quote: u8,
        kind: TokenKind,
    ) -> Result<usize, LexError> {
        let sql = self.sql;
        let escapes = !self.opts.sql_mode.no_backslash_escapes;
        let mut j = quote_at + 1;
        loop {
            match sql.get(j) {
                None => return Err(LexError::UnterminatedString { at: start }),
                Some(b'\\') if escapes => {
                    if j + 1 >= sql.len() {
                        return Err(LexError::UnterminatedString { at: start });
                    }
                    j += 2;
                }
                Some(&b) if b == quote => {
                    if sql.get(j + 1) == Some(&quote) {
                        j += 2;
                    } else {
                        self.push(kind, start, j + 1);
                        return Ok(j + 1);
                    }
                }
                Some(_) => j += 1,
            }
        }
    }

    fn quoted_identifier(&mut self, i: usize, quote: u8) -> Result<usize, LexError> {
        let sql = self.sql;
        let mut j = i + 1;
        loop {
            match sql.get(j) {
                None | Some(0) => return Err(LexError::UnterminatedIdentifier { at: i }),
                Some(&b) if b == quote => {
                    if sql.get(j + 1) == Some(&quote) {
                        j += 2;
                    } else {
                        self.push(TokenKind::QuotedIdentifier, i, j + 1);
                        return Ok(j + 1);
                    }
                }
                Some(_) => j += 1,
            }
        }
    }

    /// `X'…'` or `B'…'`: only hex or binary digits before the closing quote.
    fn digits_literal(&mut self, i: usize, kind: TokenKind) -> Result<usize, LexError> {
        let ok = |b: u8| match kind {
            TokenKind::HexString => b.is_ascii_hexdigit(),
            _ => b == b'0' || b == b'1',
        };
        let n = self.sql[i + 2..].iter().take_while(|&&b| ok(b)).count();
        let close = i + 2 + n;
        if self.at(close) != Some(b'\'') || (kind == TokenKind::HexString && n % 2 == 1) {
            return Err(LexError::InvalidLiteral { at: i });
        }
        self.push(kind, i, close + 1);
        Ok(close + 1)
    }

    /// An unquoted identifier or keyword from `i` (and the `.` after it,
    /// when an identifier character follows the dot: the server then reads
    /// the next token as an identifier, `t.1e5` included).
    fn word(&mut self, i: usize) -> usize {
        let end = i + self.sql[i..].iter().take_while(|&&b| is_ident(b)).count();
        self.push(TokenKind::Word, i, end);
        if self.at(end) == Some(b'.') && self.at(end + 1).is_some_and(is_ident) {
            self.push(TokenKind::Punct, end, end + 1);
            self.ident_after_dot = true;
            return end + 1;
        }
        end
    }

    /// A token starting with a digit: a number, or an identifier that
    /// starts with digits (the server's `MY_LEX_NUMBER_IDENT`).
    fn number_or_word(&mut self, i: usize) -> usize {
        let sql = self.sql;
        let at = |k: usize| sql.get(k).copied();
        if sql[i] == b'0' && matches!(at(i + 1), Some(b'x' | b'b')) {
            let hex = at(i + 1) == Some(b'x');
            let n = sql[i + 2..]
                .iter()
                .take_while(|&&b| {
                    if hex {
                        b.is_ascii_hexdigit()
                    } else {
                        b == b'0' || b == b'1'
                    }
                })
                .count();
            let end = i + 2 + n;
            if n > 0 && !at(end).is_some_and(is_ident) {
                self.push(TokenKind::Number, i, end);
                return end;
            }
            return self.word(i);
        }
        let mut j = i + sql[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        match at(j) {
            Some(b'e' | b'E') => {
                let sign = matches!(at(j + 1), Some(b'+' | b'-'));
                let digits_at = j + 1 + usize::from(sign);
                if at(digits_at).is_some_and(|b| b.is_ascii_digit()) {
                    let end = digits_at
                        + sql[digits_at..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .count();
                    self.push(TokenKind::Number, i, end);
                    return end;
                }
                self.word(i)
            }
            Some(b) if is_ident(b) => self.word(i),
            Some(b'.') if at(j + 1) != Some(b'.') => {
                j += 1;
                self.real_tail(i, j)
            }
            _ => {
                self.push(TokenKind::Number, i, j);
                j
            }
        }
    }

    /// `.5`, `.5e3`.
    fn fraction(&mut self, i: usize) -> usize {
        self.real_tail(i, i + 1)
    }

    /// The digits after a decimal point at `j - 1`, and an exponent.
    fn real_tail(&mut self, i: usize, j: usize) -> usize {
        let sql = self.sql;
        let at = |k: usize| sql.get(k).copied();
        let mut end = j + sql[j..].iter().take_while(|b| b.is_ascii_digit()).count();
        if matches!(at(end), Some(b'e' | b'E')) {
            let sign = matches!(at(end + 1), Some(b'+' | b'-'));
            let digits_at = end + 1 + usize::from(sign);
            if at(digits_at).is_some_and(|b| b.is_ascii_digit()) {
                end = digits_at
                    + sql[digits_at..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
            }
            // Without digits the server reads the `e` as what follows.
        }
        self.push(TokenKind::Number, i, end);
        end
    }
}

/// Tokenizes `sql` as the server will.
pub fn tokenize(sql: &[u8], opts: &LexerOptions) -> Result<Vec<Token>, LexError> {
    let mut tokens = Vec::new();
    for_each_token(sql, opts, |t| tokens.push(t))?;
    Ok(tokens)
}

/// Tokenizes `sql`, handing each token to `f` as it is lexed; on an error,
/// the tokens before it were handed over.
pub fn for_each_token(
    sql: &[u8],
    opts: &LexerOptions,
    f: impl FnMut(Token),
) -> Result<(), LexError> {
    Lexer {
        sql,
        opts: *opts,
        emit: f,
        exec_open: None,
        ident_after_dot: false,
        after_at: false,
    }
    .run()
}

/// What a statement of a multi-statement text holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Code.
    Code,
    /// Only comments: the server answers it with an OK.
    CommentsOnly,
    /// Nothing between two `;` (`SELECT 1;;SELECT 2`): the server answers
    /// a syntax error there and runs nothing after it.
    Empty,
}

/// One statement of a text, as the server splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its bytes in the text (from its first non-whitespace byte, without
    /// the `;` that ends it).
    pub range: Range<usize>,
    /// What it holds.
    pub kind: StatementKind,
    /// It starts a stored program or compound statement, whose end only
    /// the server's grammar finds: it runs to the end of the text.
    pub compound: bool,
}

/// The part of `sql` the server parses: without leading whitespace and
/// without trailing `;` and whitespace (`alloc_query`).
pub fn trimmed_range(sql: &[u8]) -> Range<usize> {
    let start = sql.iter().take_while(|&&b| is_space(b)).count();
    let end = sql.len()
        - sql[start..]
            .iter()
            .rev()
            .take_while(|&&b| b == b';' || is_space(b))
            .count();
    start..end
}

fn is_code(kind: TokenKind) -> bool {
    !matches!(
        kind,
        TokenKind::Whitespace
            | TokenKind::Comment
            | TokenKind::SkippedComment
            | TokenKind::ExecutableOpen
            | TokenKind::ExecutableClose
    )
}

/// How many significant tokens at a statement's start decide whether it
/// opens a compound statement (`CREATE DEFINER = 'u'@'h' SQL SECURITY
/// INVOKER AGGREGATE FUNCTION` fits).
const HEAD_TOKENS: usize = 24;

/// Splits a COM_QUERY text into statements where the server splits it:
/// at every `;` outside literals, comments and quoted identifiers, after
/// the server's own trimming, until a statement starts a compound
/// statement (which then runs to the end).
pub fn split(sql: &[u8], opts: &LexerOptions) -> Result<Vec<Statement>, LexError> {
    let range = trimmed_range(sql);
    let base = range.start;
    let text = &sql[range.clone()];
    let mut out = Vec::new();
    // The statement being read: where it starts (its first token that is
    // not whitespace), whether it holds code, its first significant tokens.
    let mut start: Option<usize> = None;
    let mut code = false;
    let mut head: Vec<Token> = Vec::new();
    let mut in_exec = false;
    let mut compound = false;
    let mut error = None;
    let finish = |start: &mut Option<usize>,
                  code: &mut bool,
                  head: &mut Vec<Token>,
                  end: usize,
                  empty: bool,
                  out: &mut Vec<Statement>| {
        let first = start.take().unwrap_or(end);
        let kind = if *code {
            StatementKind::Code
        } else if empty {
            StatementKind::Empty
        } else {
            StatementKind::CommentsOnly
        };
        out.push(Statement {
            range: base + first..base + end,
            kind,
            compound: false,
        });
        *code = false;
        head.clear();
    };
    for_each_token(text, opts, |t| {
        if compound || error.is_some() {
            return;
        }
        match t.kind {
            TokenKind::ExecutableOpen => in_exec = true,
            TokenKind::ExecutableClose => in_exec = false,
            _ => {}
        }
        if t.kind == TokenKind::Semicolon {
            if starts_compound(text, &head) {
                compound = true;
                return;
            }
            if in_exec {
                // Measured: MariaDB rejects the statement (syntax error)
                // when a top-level `;` falls inside an executable comment.
                error = Some(LexError::SemicolonInExecutableComment { at: base + t.start });
                return;
            }
            let empty = start.is_none();
            finish(&mut start, &mut code, &mut head, t.start, empty, &mut out);
            return;
        }
        if start.is_none() {
            // Whitespace before a statement is the server's "garbage at start".
            if t.kind == TokenKind::Whitespace {
                return;
            }
            start = Some(t.start);
        }
        if is_code(t.kind) {
            code = true;
            if head.len() < HEAD_TOKENS {
                head.push(t);
            }
        }
    })?;
    if let Some(e) = error {
        return Err(e);
    }
    if compound || starts_compound(text, &head) {
        let first = start.unwrap_or(text.len());
        out.push(Statement {
            range: base + first..range.end,
            kind: StatementKind::Code,
            compound: true,
        });
    } else if start.is_some() {
        finish(
            &mut start,
            &mut code,
            &mut head,
            text.len(),
            false,
            &mut out,
        );
    }
    Ok(out)
}

/// Whether the statement that starts with `tokens` opens a compound
/// statement or a stored program body.
fn starts_compound(sql: &[u8], tokens: &[Token]) -> bool {
    let text = |t: &Token| &sql[t.start..t.end];
    let is_word = |t: &Token, w: &str| {
        t.kind == TokenKind::Word && text(t).eq_ignore_ascii_case(w.as_bytes())
    };
    let mut it = tokens.iter().peekable();
    let Some(first) = it.next() else {
        return false;
    };
    let second = it.peek().copied();
    // A label: `name: BEGIN …`.
    if matches!(first.kind, TokenKind::Word | TokenKind::QuotedIdentifier)
        && second.is_some_and(|t| t.kind == TokenKind::Punct && text(t) == b":")
    {
        return true;
    }
    if first.kind == TokenKind::Word {
        for w in ["DECLARE", "IF", "CASE", "LOOP", "REPEAT", "WHILE", "FOR"] {
            if is_word(first, w) {
                return true;
            }
        }
        if is_word(first, "BEGIN") {
            // BEGIN / BEGIN WORK start a transaction; anything else
            // (BEGIN NOT ATOMIC …) is a compound statement.
            return !second.is_none_or(|t| is_word(t, "WORK"));
        }
        if is_word(first, "CREATE") || is_word(first, "ALTER") {
            let alter = is_word(first, "ALTER");
            // Skip `OR REPLACE`, `DEFINER = user`, `AGGREGATE`,
            // `SQL SECURITY …`, `[NON]EDITIONABLE`.
            let rest: Vec<&Token> = it.collect();
            let mut k = 0;
            while k < rest.len() {
                let t = rest[k];
                if [
                    "OR",
                    "REPLACE",
                    "AGGREGATE",
                    "SQL",
                    "SECURITY",
                    "INVOKER",
                    "EDITIONABLE",
                    "NONEDITIONABLE",
                ]
                .iter()
                .any(|w| is_word(t, w))
                {
                    k += 1;
                } else if is_word(t, "DEFINER") {
                    k += 1;
                    if rest.get(k).is_some_and(|t| text(t) == b"=") {
                        k += 1;
                    }
                    // The user: a name or string, then `@host`, or
                    // CURRENT_USER[()].
                    k += 1;
                    if rest.get(k).is_some_and(|t| text(t) == b"@") {
                        k += 2;
                    }
                    if rest.get(k).is_some_and(|t| text(t) == b"(")
                        && rest.get(k + 1).is_some_and(|t| text(t) == b")")
                    {
                        k += 2;
                    }
                } else {
                    let kinds: &[&str] = if alter {
                        &["EVENT"]
                    } else {
                        &["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"]
                    };
                    return kinds.iter().any(|w| is_word(t, w));
                }
            }
        }
    }
    false
}

/// Whether a token's text depends on settings other than the ones it was
/// lexed with (`ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`, the server's flavour
/// and version, `sql_mode=MSSQL`).
fn settings_dependent(text: &[u8], kind: TokenKind) -> bool {
    match kind {
        TokenKind::ExecutableOpen | TokenKind::ExecutableClose | TokenKind::SkippedComment => true,
        TokenKind::Comment => text.starts_with(b"/*!") || text.starts_with(b"/*M!"),
        TokenKind::String | TokenKind::NationalString => {
            text.contains(&b'\\') || text.contains(&b'"')
        }
        TokenKind::QuotedIdentifier => text.first() == Some(&b'"'),
        TokenKind::Word => text.first() == Some(&b'$'),
        TokenKind::Punct => text == b"[",
        _ => false,
    }
}

/// A key under which texts that differ only in literal values share one
/// judgement: numbers become `0` and string literals `''` (`N''`, `X''`,
/// `B''`); every other byte (keywords, identifiers, operators, comments,
/// whitespace) is kept. `None` when the text does not lex, is not UTF-8, or
/// would lex differently under other settings: a `"`, a backslash in a
/// string, an executable or version comment, MSSQL brackets, `$` at the
/// start of a name. So a key is the same under every setting it is
/// computed with: a cached judgement never applies to code that lexes
/// differently.
pub fn fingerprint(sql: &[u8], opts: &LexerOptions) -> Option<String> {
    let text = std::str::from_utf8(sql).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut run = 0;
    let mut dependent = false;
    for_each_token(sql, opts, |t| {
        if dependent {
            return;
        }
        let body = &sql[t.range()];
        if settings_dependent(body, t.kind) {
            dependent = true;
            return;
        }
        let replacement = match t.kind {
            TokenKind::String => "''",
            TokenKind::NationalString => "N''",
            TokenKind::HexString => "X''",
            TokenKind::BitString => "B''",
            TokenKind::Number => {
                // Numbers glued to names or quotes are kept as they are.
                let before = t.start.checked_sub(1).map(|p| sql[p]);
                let after = sql.get(t.end).copied();
                let glued = |b: Option<u8>| {
                    b.is_some_and(|b| is_ident(b) || matches!(b, b'.' | b'`' | b'\'' | b'"'))
                };
                if glued(before) || glued(after) {
                    return;
                }
                "0"
            }
            _ => return,
        };
        // Tokens start and end on ASCII bytes: char boundaries.
        out.push_str(&text[run..t.start]);
        out.push_str(replacement);
        run = t.end;
    })
    .ok()?;
    if dependent {
        return None;
    }
    out.push_str(&text[run..]);
    Some(out)
}

/// The marker that replaces a literal's contents.
pub const REDACTED: &str = "[REDACTED:literal]";

/// `sql` with the contents of every string literal (`'…'`, `"…"` strings,
/// `N''`, `X''`, `B''`, introduced strings) replaced by
/// `[REDACTED:literal]`, under the session's settings: executable comments
/// are code, so their literals are redacted too. Comments, identifiers and
/// numbers stay. If the text does not lex, everything from the point where
/// it stops lexing is replaced (an unterminated string becomes
/// `'[REDACTED:literal]`). Bytes that are not UTF-8 are shown lossily.
pub fn redact_literals(sql: &[u8], opts: &LexerOptions) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut run = 0;
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let result = for_each_token(sql, opts, |t| {
        let prefix = match t.kind {
            TokenKind::String => 1,
            TokenKind::NationalString | TokenKind::HexString | TokenKind::BitString => 2,
            _ => return,
        };
        out.push_str(&lossy(&sql[run..t.start + prefix]));
        out.push_str(REDACTED);
        out.push_str(&lossy(&sql[t.end - 1..t.end]));
        run = t.end;
    });
    match result {
        Ok(()) => out.push_str(&lossy(&sql[run..])),
        Err(e) => {
            // Keep what lexed, up to the failing token; hide the rest.
            let at = e.offset().max(run).min(sql.len());
            out.push_str(&lossy(&sql[run..at]));
            if matches!(sql.get(at), Some(b'\'' | b'"')) {
                out.push_str(&lossy(&sql[at..=at]));
            }
            out.push_str(REDACTED);
        }
    }
    out
}

/// The code the server runs: `sql` with executable-comment markers and
/// version comments it skips replaced by spaces (newlines kept), so every
/// offset stays where it was. For a SQL parser that would otherwise drop
/// executable comments, or splice them in without regard to the version.
pub fn executable_sql(sql: &[u8], opts: &LexerOptions) -> Result<Vec<u8>, LexError> {
    let mut out = sql.to_vec();
    for_each_token(sql, opts, |t| {
        if matches!(
            t.kind,
            TokenKind::ExecutableOpen | TokenKind::ExecutableClose | TokenKind::SkippedComment
        ) {
            for b in &mut out[t.range()] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        }
    })?;
    Ok(out)
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{:?}", self.kind, self.range)?;
        if self.compound {
            f.write_str(" (compound)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
