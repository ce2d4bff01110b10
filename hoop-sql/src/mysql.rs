//! MySQL's and MariaDB's SQL: [`Mysql`], the [`SqlDialect`] for sessions
//! that speak the MySQL protocol.
//!
//! One tokenizer ([`lexer`], which follows the server's own `sql_lex.cc`)
//! feeds splitting, fingerprints and literal redaction. The SQL library
//! (sqlparser's `MySqlDialect`) only ever parses one statement's text, after
//! the lexer has spliced in the executable comments the server runs and
//! blanked the version comments it skips.
//!
//! # Session settings
//! Where the server splits and what it executes depends on the session:
//! the server's flavour and version (executable comments), `sql_mode`
//! (`ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`) and the client character set.
//! Governance holds one dialect per protocol, so the MySQL driver does not
//! hand governance the client's bytes: it hands it the **canonical text**
//! ([`canonical_text`]) — the same statements as the server will run them,
//! written for the defaults this dialect reads (executable comments spliced
//! per the real server version, skipped ones blanked, `"identifiers"` under
//! `ANSI_QUOTES` rewritten as `` `identifiers` ``, backslashes in strings
//! under `NO_BACKSLASH_ESCAPES` doubled). Text that cannot be lexed as the
//! server will (an unsafe client character set, an unterminated string) has
//! no canonical form, and the MySQL driver refuses it (whatever
//! `policy.unparsed` says: hoop cannot tell what the server would run).

pub mod builtins;
pub mod lexer;

use std::borrow::Cow;

use sqlparser::{
    ast::{Ident, ObjectName, Statement},
    dialect::MySqlDialect,
    parser::Parser,
};

use crate::dialect::{
    CursorOp, EchoPatterns, FunctionCatalog, ParseFailure, Piece, Routine, SplitError, SqlDialect,
};
use lexer::{Charset, LexError, LexerOptions, Server, SqlMode, StatementKind, TokenKind};

/// MySQL and MariaDB, reading canonical text (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mysql;

/// The options the dialect lexes canonical text with: default `sql_mode`,
/// UTF-8. Canonical text holds no executable comments; text that still
/// does (the dialect is also handed raw text, e.g. a hold's SQL) is read as
/// MariaDB 10.11 reads it.
pub const CANONICAL: LexerOptions = LexerOptions {
    server: Server {
        mariadb: true,
        version_id: 101_199,
    },
    sql_mode: SqlMode {
        ansi_quotes: false,
        no_backslash_escapes: false,
        mssql: false,
    },
    charset: Charset::Utf8,
};

const FUNCTIONS: FunctionCatalog = FunctionCatalog {
    // `JSON_TABLE` is a table factor the SQL library reads as such.
    row_functions: &[],
    // Nothing built in runs SQL named in a string.
    sql_running: &[],
    side_channel: &[],
};

// MySQL's duplicate-key errors quote the value (`Duplicate entry '…' for
// key '…'`), not PostgreSQL's `Key (…)=(…)`: no key-value pattern applies,
// and content detectors still run on every error text.
const ECHOES: EchoPatterns = EchoPatterns {
    key_value_suffixes: &[],
    failing_row: None,
    trailing_quoted: false,
};

/// Why a text has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hoop cannot read this SQL as the server will: {0}")]
pub struct NotCanonical(#[from] pub LexError);

/// `sql` as the server will run it under `opts`, rewritten for the
/// dialect's defaults ([`CANONICAL`]): executable comments spliced in,
/// version comments the server skips blanked, `"…"` identifiers under
/// `ANSI_QUOTES` as backtick identifiers, strings under
/// `NO_BACKSLASH_ESCAPES` with their backslashes doubled. Borrowed when
/// nothing changes (the usual case).
pub fn canonical_text<'a>(
    sql: &'a [u8],
    opts: &LexerOptions,
) -> Result<Cow<'a, str>, NotCanonical> {
    let mut out: Option<Vec<u8>> = None;
    let mut run = 0;
    let mut failed = None;
    let result = lexer::for_each_token(sql, opts, |t| {
        let body = &sql[t.range()];
        let replacement: Option<Vec<u8>> = match t.kind {
            TokenKind::ExecutableOpen | TokenKind::ExecutableClose | TokenKind::SkippedComment => {
                Some(
                    body.iter()
                        .map(|&b| if b == b'\n' { b'\n' } else { b' ' })
                        .collect(),
                )
            }
            TokenKind::QuotedIdentifier if body.first() == Some(&b'"') => {
                // `"a""b"` → `` `a"b` ``, backticks doubled.
                let inner = &body[1..body.len().saturating_sub(1)];
                let mut v = Vec::with_capacity(body.len() + 2);
                v.push(b'`');
                let mut i = 0;
                while i < inner.len() {
                    match inner[i] {
                        b'"' if inner.get(i + 1) == Some(&b'"') => {
                            v.push(b'"');
                            i += 1;
                        }
                        b'`' => v.extend_from_slice(b"``"),
                        b => v.push(b),
                    }
                    i += 1;
                }
                v.push(b'`');
                Some(v)
            }
            TokenKind::String | TokenKind::NationalString
                if opts.sql_mode.no_backslash_escapes && body.contains(&b'\\') =>
            {
                let mut v = Vec::with_capacity(body.len() + 4);
                for &b in body {
                    if b == b'\\' {
                        v.push(b'\\');
                    }
                    v.push(b);
                }
                Some(v)
            }
            _ => None,
        };
        if let Some(r) = replacement {
            let o = out.get_or_insert_with(|| Vec::with_capacity(sql.len() + 8));
            o.extend_from_slice(&sql[run..t.start]);
            o.extend_from_slice(&r);
            run = t.end;
        }
    });
    if let Err(e) = result {
        failed = Some(e);
    }
    if let Some(e) = failed {
        return Err(NotCanonical(e));
    }
    let text = match out {
        None => Cow::Borrowed(sql),
        Some(mut o) => {
            o.extend_from_slice(&sql[run..]);
            Cow::Owned(o)
        }
    };
    if opts.charset == Charset::Latin1 && !text.is_ascii() {
        return Ok(Cow::Owned(latin1_to_utf8(&text)));
    }
    match text {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed).map_err(|e| {
            NotCanonical(LexError::NotUtf8 {
                at: e.valid_up_to(),
            })
        }),
        Cow::Owned(o) => String::from_utf8(o).map(Cow::Owned).map_err(|e| {
            NotCanonical(LexError::NotUtf8 {
                at: e.utf8_error().valid_up_to(),
            })
        }),
    }
}

/// MySQL's and MariaDB's latin1 is Windows-1252, with the five bytes
/// Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) mapped to
/// the control characters of the same value, as the server converts them:
/// 0x80..=0x9F here, every other byte is its own code point.
const LATIN1_0X80: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

/// latin1 text as the server reads it, in UTF-8. Every byte is one
/// character, and no byte above 0x7F is a quote or a backslash, so the
/// statements and tokens the lexer found are the same in the result.
fn latin1_to_utf8(text: &[u8]) -> String {
    text.iter()
        .map(|&b| match b {
            0x80..=0x9F => LATIN1_0X80[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
}

/// The first significant word of a statement, lower case.
fn first_word_of(piece: &str) -> Option<String> {
    let mut word = None;
    let _ = lexer::for_each_token(piece.as_bytes(), &CANONICAL, |t| {
        if word.is_some() {
            return;
        }
        match t.kind {
            TokenKind::Whitespace
            | TokenKind::Comment
            | TokenKind::SkippedComment
            | TokenKind::ExecutableOpen
            | TokenKind::ExecutableClose => {}
            TokenKind::Word => word = Some(Some(piece[t.range()].to_ascii_lowercase())),
            _ => word = Some(None),
        }
    });
    word.flatten()
}

impl SqlDialect for Mysql {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn parser_dialect(&self) -> &dyn sqlparser::dialect::Dialect {
        &MySqlDialect {}
    }

    fn split<'a>(&self, sql: &'a str) -> Result<Vec<Piece<'a>>, SplitError> {
        let statements = lexer::split(sql.as_bytes(), &CANONICAL)
            .map_err(|e| SplitError::Unlexable(e.to_string()))?;
        let mut pieces = Vec::with_capacity(statements.len());
        for s in statements {
            match s.kind {
                StatementKind::Code => pieces.push(Piece {
                    // The lexer cuts on ASCII bytes only: char boundaries.
                    text: &sql[s.range.clone()],
                    offset: s.range.start,
                }),
                StatementKind::CommentsOnly => {}
                // The server answers an empty statement with a syntax error
                // and runs nothing after it; judged as unparsed text.
                StatementKind::Empty => {
                    return Err(SplitError::Unlexable(format!(
                        "empty statement at byte {}",
                        s.range.start
                    )));
                }
            }
        }
        Ok(pieces)
    }

    fn parse_statement(&self, piece: &str) -> Result<Statement, ParseFailure> {
        // What the server executes: executable comments are code.
        let executable = lexer::executable_sql(piece.as_bytes(), &CANONICAL)
            .map_err(|e| ParseFailure::Syntax(e.to_string()))?;
        let text = String::from_utf8(executable)
            .map_err(|_| ParseFailure::Syntax("the statement is not UTF-8".into()))?;
        // Dynamic SQL: what runs is a string or a variable, opaque to hoop
        // (and the SQL library misreads `EXECUTE IMMEDIATE '…'` as the
        // execution of a statement named IMMEDIATE).
        if let Some(w) = first_word_of(&text)
            && (w == "prepare" || w == "execute")
        {
            return Err(ParseFailure::Syntax(format!(
                "{} runs SQL hoop cannot see (dynamic SQL)",
                w.to_ascii_uppercase()
            )));
        }
        match Parser::parse_sql(&MySqlDialect {}, &text) {
            Ok(mut statements) if statements.len() == 1 => Ok(statements.remove(0)),
            Ok(statements) => Err(ParseFailure::Several(statements.len())),
            Err(e) => Err(ParseFailure::Syntax(e.to_string())),
        }
    }

    fn first_word(&self, piece: &str) -> Option<String> {
        first_word_of(piece)
    }

    fn fingerprint_into(&self, sql: &str, out: &mut String) -> bool {
        out.clear();
        match lexer::fingerprint(sql.as_bytes(), &CANONICAL) {
            Some(f) => {
                out.push_str(&f);
                true
            }
            None => false,
        }
    }

    fn redact_literals<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        let redacted = lexer::redact_literals(sql.as_bytes(), &CANONICAL);
        if redacted == sql {
            Cow::Borrowed(sql)
        } else {
            Cow::Owned(redacted)
        }
    }

    fn fold(&self, ident: &Ident) -> String {
        // Column names compare case-insensitively; table and schema names
        // follow `lower_case_table_names` (case-sensitive on Linux by
        // default). Folding both to lower case can only make a masking rule
        // match more tables, never fewer (fail closed).
        ident.value.to_lowercase()
    }

    fn fold_word(&self, word: &str) -> String {
        let w = word.trim_end_matches(';');
        if let Some(quoted) = w.strip_prefix('`').and_then(|q| q.strip_suffix('`')) {
            quoted.replace("``", "`").to_lowercase()
        } else {
            w.to_lowercase()
        }
    }

    fn identifiers(&self, piece: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        lexer::for_each_token(piece.as_bytes(), &CANONICAL, |t| match t.kind {
            TokenKind::Word => out.push(piece[t.range()].to_lowercase()),
            TokenKind::QuotedIdentifier => out.push(self.fold_word(&piece[t.range()])),
            _ => {}
        })
        .ok()?;
        Some(out)
    }

    fn cursor_op(&self, _piece: &str) -> Option<CursorOp> {
        // SQL-level cursors exist only inside stored programs, which hoop
        // judges as server code; protocol cursors are COM_STMT_FETCH.
        None
    }

    fn functions(&self) -> &FunctionCatalog {
        &FUNCTIONS
    }

    fn echo_patterns(&self) -> &EchoPatterns {
        &ECHOES
    }

    fn routine(&self, name: &ObjectName) -> Routine {
        builtins::routine(name)
    }

    fn builtin_operator(&self, symbol: &str) -> bool {
        builtins::operator(symbol)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ParsedSql;

    fn opts(mode: &str) -> LexerOptions {
        LexerOptions {
            server: Server {
                mariadb: true,
                version_id: 101_119,
            },
            sql_mode: SqlMode::from_sql_mode(mode),
            charset: Charset::Utf8,
        }
    }

    #[test]
    fn canonical_text_is_what_the_server_runs() {
        let o = opts("");
        // Plain text is borrowed, unchanged.
        assert!(matches!(
            canonical_text(b"SELECT 'a\\'b' FROM t", &o).unwrap(),
            Cow::Borrowed(_)
        ));
        // Executable comments run; later versions are skipped.
        assert_eq!(
            canonical_text(b"SELECT id /*!, ssn */ FROM cust", &o).unwrap(),
            "SELECT id    , ssn    FROM cust"
        );
        let skipped = canonical_text(b"DELETE FROM t /*!99999 WHERE id=1 */", &o).unwrap();
        assert!(!skipped.contains("WHERE"), "{skipped}");
        let mariadb_only = canonical_text(b"SELECT 1 /*M!100100 , ssn */ FROM cust", &o).unwrap();
        assert!(mariadb_only.contains(", ssn"), "{mariadb_only}");
        // ANSI_QUOTES: "ssn" is a column.
        assert_eq!(
            canonical_text(b"SELECT CONCAT(\"ssn\") FROM cust", &opts("ANSI_QUOTES")).unwrap(),
            "SELECT CONCAT(`ssn`) FROM cust"
        );
        assert_eq!(
            canonical_text(b"SELECT CONCAT(\"ssn\") FROM cust", &o).unwrap(),
            "SELECT CONCAT(\"ssn\") FROM cust"
        );
        // NO_BACKSLASH_ESCAPES: the string ends at the second quote.
        let nbe = canonical_text(
            b"SELECT 'a\\' , ssn FROM cust -- '",
            &opts("NO_BACKSLASH_ESCAPES"),
        )
        .unwrap();
        assert_eq!(nbe, "SELECT 'a\\\\' , ssn FROM cust -- '");
        // Unsafe character sets have no canonical form.
        let gbk = LexerOptions {
            charset: Charset::BackslashTrail,
            ..o
        };
        assert!(canonical_text("SELECT '\u{8868}'".as_bytes(), &gbk).is_err());
    }

    #[test]
    fn latin1_text_is_read_as_the_server_reads_it() {
        let latin1 = LexerOptions {
            charset: Charset::from_name("latin1"),
            ..opts("")
        };
        // mariadb-client-test's test_mdev14454 sends this after SET NAMES
        // latin1; hoop refused it as not UTF-8.
        assert_eq!(
            canonical_text(b"SET param1 = _latin1'test\xff'", &latin1).unwrap(),
            "SET param1 = _latin1'test\u{ff}'"
        );
        // Windows-1252's 0x80..=0x9F, as `CONVERT(_latin1 0x80… USING
        // utf32)` gives them on MariaDB 10.11.
        assert_eq!(
            canonical_text(b"SELECT '\x80\x81\x8a\x9f' FROM caf\xe9", &latin1).unwrap(),
            "SELECT '\u{20ac}\u{81}\u{160}\u{178}' FROM caf\u{e9}"
        );
        // Bytes that are UTF-8 are still latin1 to the server: two
        // characters, not one.
        assert_eq!(
            canonical_text("SELECT 'é'".as_bytes(), &latin1).unwrap(),
            "SELECT '\u{c3}\u{a9}'"
        );
        assert!(matches!(
            canonical_text(b"SELECT 1", &latin1).unwrap(),
            Cow::Borrowed("SELECT 1")
        ));
        // Under UTF-8, or another single-byte set, such text is refused,
        // saying why.
        let err = canonical_text(b"SELECT 'test\xff'", &opts("")).unwrap_err();
        assert_eq!(err.0, LexError::NotUtf8 { at: 12 });
        let cp1251 = LexerOptions {
            charset: Charset::from_name("cp1251"),
            ..opts("")
        };
        assert!(canonical_text(b"SELECT '\xe9'", &cp1251).is_err());
    }

    #[test]
    fn the_evasions_parse_as_the_server_runs_them() {
        let o = opts("NO_BACKSLASH_ESCAPES");
        let text = canonical_text(b"SELECT 'a\\' , ssn FROM cust -- '", &o).unwrap();
        let parsed = ParsedSql::parse(&Mysql, &text);
        let statements = parsed.statements.as_ref().unwrap();
        assert_eq!(statements.len(), 1);
        let ast = statements[0].ast.as_ref().unwrap().to_string();
        assert!(ast.contains("ssn"), "{ast}");
        // Executable comments are code to the parser too.
        let parsed = ParsedSql::parse(&Mysql, "SELECT id /*!, ssn */ FROM cust");
        let ast = parsed.statements.as_ref().unwrap()[0]
            .ast
            .as_ref()
            .unwrap()
            .to_string();
        assert!(ast.contains("ssn"), "{ast}");
        let parsed = ParsedSql::parse(&Mysql, "/*!50000 DROP TABLE users */");
        let ast = parsed.statements.as_ref().unwrap()[0]
            .ast
            .as_ref()
            .unwrap()
            .to_string();
        assert!(ast.starts_with("DROP TABLE"), "{ast}");
    }

    #[test]
    fn dynamic_sql_and_unreadable_text_are_unparsed() {
        for sql in [
            "EXECUTE IMMEDIATE 'DROP TABLE t'",
            "PREPARE s FROM @q",
            "PREPARE s FROM 'SELECT 1'",
            "EXECUTE s",
            "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t",
            "HANDLER cust READ FIRST",
        ] {
            assert!(!ParsedSql::parse(&Mysql, sql).fully_parsed(), "{sql}");
        }
        // An empty statement fails the whole text, as on the server.
        assert!(Mysql.split("SELECT 1;;SELECT 2").is_err());
        // Comment-only statements are dropped.
        let pieces = Mysql.split("SELECT 1; /* c */; SELECT 2").unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[1].text, "SELECT 2");
    }

    #[test]
    fn identifiers_fold_as_mysql_compares_columns() {
        assert_eq!(
            Mysql
                .identifiers("SELECT `SSN`, Name FROM t WHERE x = 'ssn2' -- ssn3")
                .unwrap(),
            ["select", "ssn", "name", "from", "t", "where", "x"]
        );
    }

    #[test]
    fn splitting_fingerprints_and_redaction_share_the_lexer() {
        let pieces = Mysql
            .split("SELECT 'a;b'; SELECT `x;y` FROM t # ;\n")
            .unwrap();
        assert_eq!(pieces.len(), 2);
        let mut a = String::new();
        let mut b = String::new();
        assert!(Mysql.fingerprint_into("SELECT * FROM t WHERE id = 5 AND n = 'x'", &mut a));
        assert!(Mysql.fingerprint_into("SELECT * FROM t WHERE id = 7 AND n = 'y'", &mut b));
        assert_eq!(a, b);
        // A backslash in a string depends on sql_mode: no key.
        assert!(!Mysql.fingerprint_into("SELECT 'a\\'b'", &mut a));
        assert_eq!(
            Mysql.redact_literals("SELECT * FROM t WHERE n = 'secret'"),
            "SELECT * FROM t WHERE n = '[REDACTED:literal]'"
        );
        assert_eq!(
            Mysql.first_word("  /* x */ select 1").as_deref(),
            Some("select")
        );
        assert_eq!(Mysql.fold_word("`Cust`"), "cust");
    }

    #[test]
    fn builtins_are_known_and_others_are_not() {
        let name = |s: &str| ObjectName::from(vec![Ident::new(s)]);
        assert!(matches!(
            Mysql.routine(&name("CONCAT")),
            Routine::BuiltIn(_)
        ));
        assert!(matches!(
            Mysql.routine(&name("my_udf")),
            Routine::NotBuiltIn
        ));
        // Reads server files: not treated as a harmless built-in.
        assert!(matches!(
            Mysql.routine(&name("load_file")),
            Routine::NotBuiltIn
        ));
    }
}
