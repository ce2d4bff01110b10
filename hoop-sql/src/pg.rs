//! PostgreSQL's SQL: [`Postgres`], the [`SqlDialect`] for sessions that
//! speak the PostgreSQL protocol.

pub mod builtins;
mod lexer;
mod positioned;
mod privileged;
mod session_op;
mod unicode_ident;
mod words;

use std::{borrow::Cow, sync::LazyLock};

use sqlparser::{
    ast::{Ident, ObjectName, Statement},
    dialect::PostgreSqlDialect,
    parser::Parser,
    tokenizer::{Token as SqlToken, Tokenizer},
};

use crate::dialect::{
    CursorOp, EchoPatterns, FunctionCatalog, ParseFailure, Piece, Positioned, Routine, SessionOp,
    SplitError, SqlDialect,
};
use lexer::{Kind, Lexer, Prefix};

/// PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct Postgres;

/// What replaces a string literal's contents in recordings and approvals.
pub const REDACTED_LITERAL: &str = "[REDACTED:literal]";

static TABLE_STATEMENT: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"(?i)((?:^|[(;])\s*)TABLE(\s+)").expect("static regex"));

const FUNCTIONS: FunctionCatalog = FunctionCatalog {
    row_functions: &[
        "generate_series",
        "generate_subscripts",
        "unnest",
        "json_each",
        "json_each_text",
        "jsonb_each",
        "jsonb_each_text",
        "json_array_elements",
        "json_array_elements_text",
        "jsonb_array_elements",
        "jsonb_array_elements_text",
        "json_object_keys",
        "jsonb_object_keys",
        "json_to_record",
        "json_to_recordset",
        "jsonb_to_record",
        "jsonb_to_recordset",
        "json_populate_record",
        "json_populate_recordset",
        "jsonb_populate_record",
        "jsonb_populate_recordset",
        "jsonb_path_query",
        "regexp_matches",
        "regexp_split_to_table",
        "string_to_table",
    ],
    sql_running: &[
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        "dblink",
        "dblink_fetch",
        "dblink_get_result",
        "ts_stat",
        // `ts_rewrite(query, 'SELECT target, substitute …')` runs its text.
        "ts_rewrite",
    ],
    side_channel: &[
        "pg_notify",
        "set_config",
        "dblink_exec",
        "dblink_send_query",
        "dblink",
        "lo_from_bytea",
        "lo_put",
        "pg_file_write",
        "pg_logical_emit_message",
    ],
};

const ECHOES: EchoPatterns = EchoPatterns {
    key_value_suffixes: &[
        ") already exists",
        ") is not present in table",
        ") is still referenced from table",
        ") conflicts with existing key",
        ") conflicts with key",
        ") is duplicated",
    ],
    failing_row: Some("Failing row contains ("),
    trailing_quoted: true,
};

impl Postgres {
    fn parse_all(sql: &str) -> Result<Vec<Statement>, String> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| e.to_string())
    }

    /// The query of a `COPY (query) TO …` statement, as written (the text
    /// between the parentheses that follow `COPY`, found with the server's
    /// own lexing), e.g. to describe its result columns elsewhere.
    pub fn copy_query(piece: &str) -> Option<&str> {
        let items = words::items(piece)?;
        let mut significant = items.iter();
        match significant.next().map(|i| &i.kind) {
            Some(words::ItemKind::Word(w)) if w == "copy" => {}
            _ => return None,
        }
        let open = significant
            .next()
            .filter(|i| i.kind == words::ItemKind::Open)?;
        let close = items.iter().find(|i| {
            i.kind == words::ItemKind::Close
                && i.depth == open.depth
                && i.span.start > open.span.start
        })?;
        piece.get(open.span.end..close.span.start)
    }
}

/// Whether a text is only whitespace, as PostgreSQL's scanner defines it.
fn blank(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_whitespace())
}

impl SqlDialect for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn parser_dialect(&self) -> &dyn sqlparser::dialect::Dialect {
        &PostgreSqlDialect {}
    }

    fn split<'a>(&self, sql: &'a str) -> Result<Vec<Piece<'a>>, SplitError> {
        if sql.len() > lexer::MAX_TEXT {
            return Err(SplitError::Unterminated("statement text over 4 GiB"));
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut significant = false;
        let mut plain_from = 0;
        let mut lexer = Lexer::new(sql);
        while let Some(token) = lexer.next() {
            if !significant && !blank(&sql[plain_from..token.span().start]) {
                significant = true;
            }
            plain_from = token.span().end;
            if !token.terminated {
                return Err(SplitError::Unterminated(token.what()));
            }
            match token.kind {
                Kind::Semicolon => {
                    if significant {
                        pieces.push(Piece {
                            text: &sql[start..token.span().start],
                            offset: start,
                        });
                    }
                    start = token.span().end;
                    significant = false;
                }
                Kind::Comment => {}
                Kind::String(_) if lexer.ambiguous(&token) => {
                    return Err(SplitError::Ambiguous(token.span().start));
                }
                _ => significant = true,
            }
        }
        if significant || !blank(&sql[plain_from..]) {
            pieces.push(Piece {
                text: &sql[start..],
                offset: start,
            });
        }
        Ok(pieces)
    }

    fn parse_statement(&self, piece: &str) -> Result<Statement, ParseFailure> {
        // `U&"\0073sn"` is `"ssn"` to the server: parse it spelled so.
        let piece = &*unicode_ident::rewrite(piece).map_err(ParseFailure::Syntax)?;
        let mut parsed = Self::parse_all(piece);
        if parsed.is_err() && self.first_word(piece).as_deref() == Some("copy") {
            // sqlparser reads `COPY … FROM STDIN` as followed by inline data
            // after a `;`; on the wire the data comes in CopyData messages,
            // so give it an empty inline block. The piece has no top-level
            // `;` of its own.
            parsed = Self::parse_all(&format!("{piece};"));
        }
        if parsed.is_err() {
            // sqlparser does not accept a statement-level `TABLE name`
            // (PostgreSQL's `SELECT * FROM name`): spell it out.
            let rewritten = TABLE_STATEMENT.replace_all(piece, "${1}SELECT * FROM${2}");
            if rewritten != piece
                && let Ok(statements) = Self::parse_all(&rewritten)
            {
                parsed = Ok(statements);
            }
        }
        match parsed {
            Ok(mut statements) if statements.len() == 1 => Ok(statements.remove(0)),
            Ok(statements) => Err(ParseFailure::Several(statements.len())),
            Err(e) => Err(ParseFailure::Syntax(e)),
        }
    }

    fn first_word(&self, piece: &str) -> Option<String> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, piece)
            .tokenize()
            .ok()?;
        match tokens
            .into_iter()
            .find(|t| !matches!(t, SqlToken::Whitespace(_)))?
        {
            SqlToken::Word(word) if word.quote_style.is_none() => Some(word.value.to_lowercase()),
            _ => None,
        }
    }

    fn fingerprint_into(&self, sql: &str, out: &mut String) -> bool {
        self.fingerprint_noting_strings(sql, out).0
    }

    fn fingerprint_noting_strings(&self, sql: &str, out: &mut String) -> (bool, bool) {
        out.clear();
        if sql.len() > lexer::MAX_TEXT {
            return (false, false);
        }
        // Statements whose only literals are numbers, without tokens. The
        // fast path answers only for a text without a `'` or a `$`, and
        // every string literal holds one (see `redact_literals`).
        if lexer::fingerprint_numbers_only(sql, out) {
            return (true, true);
        }
        out.clear();
        (fingerprint_lexed(sql, out), false)
    }

    fn redact_literals<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        if sql.len() > lexer::MAX_TEXT {
            return Cow::Borrowed("[REDACTED:statement over 4 GiB]");
        }
        // Every string literal (`'…'` with any prefix, `$tag$…$tag$`)
        // contains a `'` or a `$`: a text with neither has none to redact
        // (most statements that inline only numbers), and needs no lexing.
        if memchr::memchr2(b'\'', b'$', sql.as_bytes()).is_none() {
            return Cow::Borrowed(sql);
        }
        let mut out = String::new();
        let mut last = 0;
        for token in Lexer::without_semicolons(sql) {
            if matches!(token.kind, Kind::String(_) | Kind::DollarString) {
                out.push_str(&sql[last..token.body().start]);
                out.push_str(REDACTED_LITERAL);
                last = token.body().end;
            }
        }
        if last == 0 && out.is_empty() {
            return Cow::Borrowed(sql);
        }
        out.push_str(&sql[last..]);
        Cow::Owned(out)
    }

    fn fold(&self, ident: &Ident) -> String {
        if ident.quote_style.is_some() {
            ident.value.clone()
        } else {
            ident.value.to_lowercase()
        }
    }

    fn fold_word(&self, word: &str) -> String {
        let w = word.trim_end_matches(';');
        if let Some(quoted) = w.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
            quoted.replace("\"\"", "\"")
        } else {
            w.to_lowercase()
        }
    }

    fn cursor_op(&self, piece: &str) -> Option<CursorOp> {
        match session_op::session_op(piece)? {
            SessionOp::Declare { name, .. } => Some(CursorOp::Declare { name }),
            SessionOp::Fetch { name } => Some(CursorOp::Fetch { name }),
            _ => None,
        }
    }

    fn session_op(&self, piece: &str) -> Option<SessionOp> {
        session_op::session_op(piece)
    }

    fn identifiers(&self, piece: &str) -> Option<Vec<String>> {
        session_op::identifiers(piece)
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

    fn privileged_routine(&self, name: &ObjectName) -> Option<&'static str> {
        privileged::routine(name)
    }

    fn privileged_relation(&self, table: &crate::names::TableRef) -> Option<&'static str> {
        privileged::relation(table)
    }

    fn builtin_routine_id(&self, id: u32) -> bool {
        // Objects below FirstNormalObjectId are created by initdb; users'
        // and extensions' objects never get such an OID.
        id < builtins::FIRST_NORMAL_OBJECT_ID
    }

    fn positioned(&self, piece: &str) -> Option<Positioned> {
        positioned::positioned(piece)
    }
}

/// [`SqlDialect::fingerprint_into`] through the lexer's tokens (`out` empty).
fn fingerprint_lexed(sql: &str, out: &mut String) -> bool {
    // Start of the verbatim run not yet copied. Cuts fall only on ASCII
    // delimiters, so every cut is on a char boundary.
    let mut run = 0;

    for token in Lexer::without_semicolons(sql) {
        if !token.terminated {
            return false;
        }
        match token.kind {
            Kind::String(Prefix::None) if !token.backslash => {
                out.push_str(&sql[run..token.span().start]);
                out.push_str("''");
                run = token.span().end;
            }
            // E'…', U&'…', B'…' and friends, and plain strings with a
            // backslash (their end depends on a session setting): no key.
            Kind::String(_) => return false,
            Kind::Number => {
                out.push_str(&sql[run..token.span().start]);
                out.push('0');
                run = token.span().end;
            }
            Kind::Semicolon
            | Kind::Comment
            | Kind::DollarString
            | Kind::QuotedIdent
            | Kind::Param => {}
        }
    }
    out.push_str(&sql[run..]);
    true
}

#[cfg(test)]
mod split_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(sql: &str) -> Option<String> {
        let mut out = String::new();
        Postgres.fingerprint_into(sql, &mut out).then_some(out)
    }

    #[test]
    fn string_literals_are_redacted_and_the_rest_kept() {
        let r = |s: &str| Postgres.redact_literals(s).into_owned();
        assert_eq!(r("SELECT 1"), "SELECT 1");
        // Without a `'` or `$` there is nothing to redact, and the text is
        // not lexed; with either, it is (a `$1` parameter, a dollar quote).
        for plain in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
            "SELECT \"x\" FROM t -- comment\n/* c */",
        ] {
            assert!(matches!(Postgres.redact_literals(plain), Cow::Borrowed(_)));
        }
        assert_eq!(r("SELECT $a$x$a$"), "SELECT $a$[REDACTED:literal]$a$");
        assert_eq!(
            r("INSERT INTO t VALUES (3, 'Eve', '123-45-6789')"),
            "INSERT INTO t VALUES (3, '[REDACTED:literal]', '[REDACTED:literal]')"
        );
        assert_eq!(r("SELECT 'it''s'"), "SELECT '[REDACTED:literal]'");
        assert_eq!(
            r(r"SELECT E'a\'b', 'c'"),
            "SELECT E'[REDACTED:literal]', '[REDACTED:literal]'"
        );
        assert_eq!(
            r("SELECT $$x'y$$, $q$z$q$"),
            "SELECT $$[REDACTED:literal]$$, $q$[REDACTED:literal]$q$"
        );
        assert_eq!(
            r("SELECT \"it's\" FROM t -- 'c'"),
            "SELECT \"it's\" FROM t -- 'c'"
        );
        assert_eq!(r("SELECT /* 'x' */ $1"), "SELECT /* 'x' */ $1");
        assert_eq!(r("SELECT 'unterminated"), "SELECT '[REDACTED:literal]");
        // A comment ends at a carriage return too: what follows is code.
        assert_eq!(
            r("SELECT 1 -- c\r, 'secret'"),
            "SELECT 1 -- c\r, '[REDACTED:literal]'"
        );
    }

    #[test]
    fn fingerprints_ignore_literal_values_only() {
        let f = fingerprint;
        assert_eq!(
            f("SELECT abalance FROM pgbench_accounts WHERE aid = 123;"),
            f("SELECT abalance FROM pgbench_accounts WHERE aid = 98765;")
        );
        assert_eq!(f("SELECT 'a' FROM t"), f("SELECT 'it''s' FROM t"));
        assert_ne!(f("SELECT 1 FROM t"), f("SELECT 1 FROM u"));
        assert_ne!(f("DELETE FROM t WHERE id = 1"), f("DELETE FROM t"));
        assert_ne!(f("SELECT 1; DROP TABLE t"), f("SELECT 1"));
        assert_ne!(
            f("SELECT * FROM t1"),
            f("SELECT * FROM t2"),
            "digits inside identifiers are kept"
        );
        assert_ne!(f("SELECT $1"), f("SELECT $2"));
        assert_ne!(
            f("DO $$ BEGIN DROP TABLE t; END $$"),
            f("DO $$ BEGIN NULL; END $$"),
            "dollar bodies are kept"
        );
        assert_ne!(
            f("SELECT 1 /* DROP */"),
            f("SELECT 1 /* x */"),
            "comments are kept"
        );
        // Lexing that depends on session settings: never cached.
        assert_eq!(f(r"SELECT 'a\'; DROP TABLE t; --'"), None);
        assert_eq!(f("SELECT E'x'"), None);
        assert_eq!(f("SELECT 'unterminated"), None);
        // Quotes inside comments, identifiers and dollar bodies are not strings.
        assert_ne!(
            f("SELECT 1 -- it's\n; DROP TABLE t; --'"),
            f("SELECT 1 -- it's\n; SELECT 2; --'"),
        );
        assert_ne!(
            f("SELECT \"a'\" FROM t; DROP TABLE t; --'"),
            f("SELECT \"a'\" FROM t; SELECT 1; --'")
        );
        assert_ne!(
            f("DO $$ EXECUTE 'DROP TABLE t' $$"),
            f("DO $$ EXECUTE 'SELECT 1' $$")
        );
        assert_ne!(
            f("SELECT 1 /* it's */; DROP TABLE t; /* ' */"),
            f("SELECT 1 /* it's */; SELECT 2; /* ' */")
        );
        assert_eq!(f("SELECT $$unterminated"), None);
        // A comment ended by a carriage return hides nothing after it.
        assert_ne!(
            f("SELECT 1 -- x\r; DROP TABLE t"),
            f("SELECT 1 -- x\r; SELECT 2")
        );
        // `a$b$c` is one identifier, not a dollar quote.
        assert_eq!(f("SELECT a$b$c, 1"), Some("SELECT a$b$c, 0".into()));
    }

    #[test]
    fn the_numbers_only_fast_path_agrees_with_the_lexer() {
        // Every text of up to 5 symbols over an alphabet of digits, identifier
        // bytes, number punctuation, a non-ASCII letter and each byte that
        // can start another token: wherever the fast path answers, its key
        // is the lexer's, and it answers for the texts without those bytes.
        let alphabet = [
            "1", "a", "_", ".", "e", " ", "=", "$", "'", "-", "\"", "/", ";", "é", "9",
        ];
        let others = ['$', '\'', '-', '"', '/'];
        let mut texts = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let mut longer = Vec::new();
            for t in &texts {
                for a in alphabet {
                    longer.push(format!("{t}{a}"));
                }
            }
            for t in &longer {
                let mut fast = String::new();
                let answered = lexer::fingerprint_numbers_only(t, &mut fast);
                assert_eq!(answered, !t.contains(others), "{t:?}");
                // A text the fast path keys has no string literal to redact.
                let mut noted = String::new();
                let (keyed, no_strings) = Postgres.fingerprint_noting_strings(t, &mut noted);
                assert_eq!(no_strings, answered, "{t:?}");
                if no_strings {
                    assert!(keyed, "{t:?}");
                    assert_eq!(noted, fast, "{t:?}");
                    assert!(
                        matches!(Postgres.redact_literals(t), Cow::Borrowed(b) if b == t),
                        "{t:?}"
                    );
                }
                if answered {
                    let mut lexed = String::new();
                    assert!(fingerprint_lexed(t, &mut lexed), "{t:?}");
                    assert_eq!(fast, lexed, "{t:?}");
                    checked += 1;
                }
            }
            texts = longer;
        }
        assert!(checked > 100_000, "{checked}");
        let mut out = String::new();
        assert!(lexer::fingerprint_numbers_only(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 41234;",
            &mut out
        ));
        assert_eq!(out, "SELECT abalance FROM pgbench_accounts WHERE aid = 0;");
    }

    #[test]
    fn fingerprints_agree_with_splitting() {
        // Texts with equal fingerprints split into the same number of
        // statements with the same non-literal text: the property the
        // judgement cache relies on.
        let pairs = [
            ("SELECT 'a;b'; SELECT 1", "SELECT 'c'; SELECT 2"),
            ("SELECT 1 -- ;\n; SELECT 2", "SELECT 3 -- ;\n; SELECT 4"),
            ("SELECT $$;$$, 'x'", "SELECT $$;$$, 'y;z'"),
        ];
        for (a, b) in pairs {
            assert_eq!(fingerprint(a), fingerprint(b), "{a} / {b}");
            assert_eq!(
                Postgres.split(a).map(|p| p.len()),
                Postgres.split(b).map(|p| p.len()),
                "{a} / {b}"
            );
        }
    }

    #[test]
    fn cursor_names_are_found() {
        let op = |s: &str| Postgres.cursor_op(s);
        assert_eq!(
            op("DECLARE Cur CURSOR FOR SELECT 1"),
            Some(CursorOp::Declare { name: "cur".into() })
        );
        assert_eq!(
            op("FETCH ALL FROM cur"),
            Some(CursorOp::Fetch { name: "cur".into() })
        );
        assert_eq!(
            op("FETCH 10 IN \"My\""),
            Some(CursorOp::Fetch { name: "My".into() })
        );
        assert_eq!(op("SELECT 1"), None);
    }

    #[test]
    fn copy_queries_are_cut_where_the_server_reads_them() {
        assert_eq!(
            Postgres::copy_query("COPY (SELECT ')' AS x, f(1) FROM t) TO STDOUT (FORMAT binary)"),
            Some("SELECT ')' AS x, f(1) FROM t")
        );
        assert_eq!(
            Postgres::copy_query(" copy /* c */ (select 1) to stdout"),
            Some("select 1")
        );
        assert_eq!(Postgres::copy_query("COPY t TO STDOUT"), None);
        assert_eq!(Postgres::copy_query("SELECT (1)"), None);
    }

    #[test]
    fn statements_parse_with_postgres_quirks() {
        assert!(Postgres.parse_statement("TABLE t").is_ok());
        assert!(Postgres.parse_statement("COPY t FROM STDIN").is_ok());
        assert!(matches!(
            Postgres.parse_statement("DO $$ BEGIN END $$"),
            Err(ParseFailure::Syntax(_))
        ));
        assert_eq!(Postgres.first_word("  /* c */ Do $$ $$"), Some("do".into()));
    }
}
