//! Lexer tests. The claims about server behaviour are also checked against
//! the real MariaDB in `tests/mariadb/lexer.rs`.

use super::*;

const MARIADB: Server = Server {
    mariadb: true,
    version_id: 101_119,
};
const MYSQL: Server = Server {
    mariadb: false,
    version_id: 80_036,
};

fn opts(server: Server) -> LexerOptions {
    LexerOptions {
        server,
        sql_mode: SqlMode::default(),
        charset: Charset::Utf8,
    }
}

fn maria() -> LexerOptions {
    opts(MARIADB)
}

fn with_mode(mode: &str) -> LexerOptions {
    LexerOptions {
        sql_mode: SqlMode::from_sql_mode(mode),
        ..maria()
    }
}

/// The statements' texts.
fn stmts(sql: &str, o: &LexerOptions) -> Vec<String> {
    split(sql.as_bytes(), o)
        .unwrap()
        .iter()
        .map(|s| sql[s.range.clone()].to_owned())
        .collect()
}

fn kinds(sql: &str, o: &LexerOptions) -> Vec<TokenKind> {
    tokenize(sql.as_bytes(), o)
        .unwrap()
        .iter()
        .map(|t| t.kind)
        .filter(|k| *k != TokenKind::Whitespace)
        .collect()
}

#[test]
fn comments() {
    let o = maria();
    assert_eq!(stmts("SELECT 1 /* ; */", &o), ["SELECT 1 /* ; */"]);
    assert_eq!(
        stmts("SELECT 1 # ; DROP\n; SELECT 2", &o),
        ["SELECT 1 # ; DROP\n", "SELECT 2"]
    );
    assert_eq!(
        stmts("SELECT 1 -- ; DROP\n; SELECT 2", &o),
        ["SELECT 1 -- ; DROP\n", "SELECT 2"]
    );
    assert_eq!(stmts("SELECT 1 --\t; DROP", &o), ["SELECT 1 --\t; DROP"]);
    // `--` without whitespace is two minus signs.
    assert_eq!(
        stmts("SELECT 1--1; DROP TABLE t", &o),
        ["SELECT 1--1", "DROP TABLE t"]
    );
    assert_eq!(kinds("SELECT 1--", &o).last(), Some(&TokenKind::Comment));
    // Comments do not nest: the first `*/` ends the comment.
    assert_eq!(
        stmts("SELECT 1 /* /* */ ; DROP TABLE t /* */", &o),
        ["SELECT 1 /* /* */ ", "DROP TABLE t /* */"]
    );
    assert!(matches!(
        split(b"SELECT 1 /* ", &o),
        Err(LexError::UnterminatedComment { .. })
    ));
    assert!(matches!(
        split("SELECT 1 --\u{a0}; DROP TABLE t".as_bytes(), &o),
        Err(LexError::AmbiguousComment { .. })
    ));
    // Quotes inside comments are not strings.
    assert_eq!(
        stmts("SELECT 1 /* ' */; SELECT 2 # '\n", &o),
        ["SELECT 1 /* ' */", "SELECT 2 # '"],
        "the server trims the trailing newline"
    );
}

#[test]
fn executable_comments_follow_the_real_version() {
    let o = maria();
    let exec = |sql: &str, o: &LexerOptions| {
        String::from_utf8(executable_sql(sql.as_bytes(), o).unwrap()).unwrap()
    };
    assert_eq!(
        exec("SELECT 1 /*!99999 , 2 */", &o),
        "SELECT 1                "
    );
    assert_eq!(
        exec("SELECT 1 /*!10000 , 2 */", &o),
        "SELECT 1          , 2   "
    );
    assert_eq!(exec("SELECT 1 /*! , 2 */", &o), "SELECT 1     , 2   ");
    // MariaDB skips MySQL-only versions 50700–99999, runs six-digit ones
    // up to its own version, and runs /*M! by the same rule without the
    // exception.
    assert!(!exec("SELECT 1 /*!50700 , 2 */", &o).contains('2'));
    assert!(exec("SELECT 1 /*!50699 , 2 */", &o).contains('2'));
    assert!(exec("SELECT 1 /*!101119 , 2 */", &o).contains('2'));
    assert!(!exec("SELECT 1 /*!101120 , 2 */", &o).contains('2'));
    assert!(exec("SELECT 1 /*M!99999 , 2 */", &o).contains('2'));
    assert!(!exec("SELECT 1 /*M!101120 , 2 */", &o).contains('2'));
    // Digits that do not make a version are code.
    assert!(exec("SELECT 1 /*!1000x , 2 */", &o).contains("1000x"));
    // MySQL: no exception, /*M! is a comment, a sixth digit only before whitespace.
    let my = opts(MYSQL);
    assert!(exec("SELECT 1 /*!50700 , 2 */", &my).contains('2'));
    assert!(!exec("SELECT 1 /*!80037 , 2 */", &my).contains('2'));
    assert_eq!(
        kinds("SELECT 1 /*M! , 2 */", &my).last(),
        Some(&TokenKind::Comment)
    );
    assert!(
        exec("SELECT 1 /*!800361, 2 */", &my).contains("1, 2"),
        "five digits, then code"
    );
    assert!(
        matches!(
            split(b"SELECT 1 /*!800361 , 2 */", &my),
            Err(LexError::Unsupported { .. })
        ),
        "six digits: read differently before MySQL 8.4"
    );
    let my84 = opts(Server {
        mariadb: false,
        version_id: 80_406,
    });
    assert!(
        !exec("SELECT 1 /*!800361 , 2 */", &my84).contains('2'),
        "six digits: 80.3.61"
    );
    assert!(
        exec("SELECT 1 /*!080400 , 2 */", &my84).contains('2'),
        "six digits: 8.4.0"
    );

    // A skipped version comment may hold one nested comment.
    assert_eq!(
        stmts("SELECT 1 /*!99999 , 2 /* x */ , 3 */; SELECT 4", &o),
        ["SELECT 1 /*!99999 , 2 /* x */ , 3 */", "SELECT 4"]
    );
    // Run code is code: a DROP in it is a statement, its strings are strings.
    assert_eq!(
        stmts("/*!50000 DROP TABLE x */; SELECT '*/'", &o),
        ["/*!50000 DROP TABLE x */", "SELECT '*/'"]
    );
    assert_eq!(
        stmts("SELECT /*!50000 '*/;' */ 1", &o),
        ["SELECT /*!50000 '*/;' */ 1"]
    );
    // The first `*/` closes every open executable comment.
    assert!(exec("SELECT 1 /*! , 2 /*! , 3 */", &o).contains("2     , 3"));
    assert_eq!(
        kinds("SELECT 1 /*! , 2 /*! , 3 */ */", &o)[8..],
        [
            TokenKind::ExecutableClose,
            TokenKind::Punct,
            TokenKind::Punct
        ]
    );
    // A `;` inside one makes the server reject the statement.
    assert!(matches!(
        split(b"/*!50000 SELECT 1; SELECT 2 */", &o),
        Err(LexError::SemicolonInExecutableComment { .. })
    ));
    assert!(matches!(
        split(b"SELECT 1 /*!50000 , 2", &o),
        Err(LexError::UnterminatedExecutableComment { .. })
    ));
    assert!(matches!(
        split(b"SELECT 1 /*!99999 , 2", &o),
        Err(LexError::UnterminatedComment { .. })
    ));
}

#[test]
fn strings_and_sql_mode() {
    let o = maria();
    let escaped = r"SELECT 'a\'; DROP TABLE t; -- '";
    assert_eq!(stmts(escaped, &o), [escaped]);
    let nbe = with_mode("STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES");
    assert!(nbe.sql_mode.no_backslash_escapes);
    assert_eq!(
        stmts(escaped, &nbe),
        [r"SELECT 'a\'", "DROP TABLE t", "-- '"],
        "the quote after the backslash ends the string"
    );
    assert_eq!(
        split(escaped.as_bytes(), &nbe).unwrap()[2].kind,
        StatementKind::CommentsOnly
    );
    assert_eq!(
        stmts("SELECT 'it''s; ok'; SELECT 2", &o),
        ["SELECT 'it''s; ok'", "SELECT 2"]
    );
    assert_eq!(
        stmts(r#"SELECT "a"";" ; SELECT 2"#, &o),
        [r#"SELECT "a"";" "#, "SELECT 2"]
    );
    // ANSI_QUOTES: "…" is an identifier, without backslash escapes.
    let ansi = with_mode("ANSI");
    assert_eq!(
        kinds(r#"SELECT "ssn" FROM t"#, &ansi)[1],
        TokenKind::QuotedIdentifier
    );
    assert_eq!(kinds(r#"SELECT "ssn" FROM t"#, &o)[1], TokenKind::String);
    assert_eq!(
        stmts(r#"SELECT "a\"; SELECT 2"#, &ansi),
        [r#"SELECT "a\""#, "SELECT 2"]
    );
    assert_eq!(
        stmts("SELECT `a\\`; SELECT 2", &o),
        ["SELECT `a\\`", "SELECT 2"]
    );
    assert_eq!(stmts("SELECT `a``;b`", &o), ["SELECT `a``;b`"]);
    assert!(matches!(
        split(b"SELECT 'a", &o),
        Err(LexError::UnterminatedString { .. })
    ));
    assert!(matches!(
        split(b"SELECT 'a\\", &o),
        Err(LexError::UnterminatedString { .. })
    ));
    assert!(matches!(
        split(b"SELECT `a", &o),
        Err(LexError::UnterminatedIdentifier { .. })
    ));
    // A NUL is fine inside a string, refused elsewhere.
    assert_eq!(stmts("SELECT 'a\0b'", &o).len(), 1);
    assert!(matches!(
        split(b"SELECT 1 # \0\n", &o),
        Err(LexError::NulByte { .. })
    ));
    assert!(matches!(
        split(b"SELECT [a]", &with_mode("MSSQL")),
        Err(LexError::Unsupported { .. })
    ));
}

#[test]
fn prefixed_literals_numbers_and_names() {
    use TokenKind::*;
    let o = maria();
    assert_eq!(
        kinds("SELECT X'4142', x'', B'101', N'x', _utf8mb4'y'", &o),
        [
            Word,
            HexString,
            Punct,
            HexString,
            Punct,
            BitString,
            Punct,
            NationalString,
            Punct,
            Word,
            String
        ]
    );
    assert!(matches!(
        split(b"SELECT X'4\\' ;'", &o),
        Err(LexError::InvalidLiteral { .. })
    ));
    assert!(matches!(
        split(b"SELECT X'414'", &o),
        Err(LexError::InvalidLiteral { .. })
    ));
    assert!(matches!(
        split(b"SELECT B'12'", &o),
        Err(LexError::InvalidLiteral { .. })
    ));
    // `1e5x` is the number 1e5 and the name x, as the server reads it.
    assert_eq!(
        kinds(
            "SELECT 0x1F, 0b101, 0xZZ, 1e5, 1.5e-3, .5, 12, 1abc, 1e5x",
            &o
        ),
        [
            Word, Number, Punct, Number, Punct, Word, Punct, Number, Punct, Number, Punct, Number,
            Punct, Number, Punct, Word, Punct, Number, Word
        ]
    );
    // After `name.` comes a name, even one that looks like a number.
    assert_eq!(
        kinds("SELECT t.1e5, t.`a`", &o),
        [
            Word,
            Word,
            Punct,
            Word,
            Punct,
            Word,
            Punct,
            QuotedIdentifier
        ]
    );
    // Variables and hosts.
    assert_eq!(
        kinds("SELECT @a1, @@session.sql_mode, @'x;y'", &o),
        [
            Word, Punct, Variable, Punct, Punct, Punct, Variable, Punct, Punct, String
        ]
    );
    assert_eq!(stmts(r"SET @'a\'; DROP TABLE t; -- ' = 1", &o).len(), 1);
    assert_eq!(kinds("SELECT ?", &o)[1], Placeholder);
    // MySQL 9 dollar quotes are refused under the MySQL flavour.
    assert!(split(b"SELECT $a$ ; $a$", &opts(MYSQL)).is_err());
    assert_eq!(stmts("SELECT $a$ ; $a$", &o).len(), 2);
}

#[test]
fn character_sets() {
    let o = maria();
    let gbk = LexerOptions {
        charset: Charset::from_name("GBK"),
        ..o
    };
    assert_eq!(gbk.charset, Charset::BackslashTrail);
    // In GBK, 0xBF 0x5C is one character: the quote after it ends the string
    // for the server, not for a byte-level lexer. Refused.
    assert!(matches!(
        split(b"SELECT '\xbf\\'; DROP TABLE t; -- '", &gbk),
        Err(LexError::UnsafeCharset { at: 8 })
    ));
    assert_eq!(stmts("SELECT 'ascii only'; SELECT 2", &gbk).len(), 2);
    assert_eq!(Charset::from_name("ucs2"), Charset::Unsupported);
    assert_eq!(Charset::from_name("latin1"), Charset::Latin1);
    assert_eq!(Charset::from_name("cp1251"), Charset::SingleByte);
    assert_eq!(Charset::from_name("utf8mb4"), Charset::Utf8);
    assert_eq!(Charset::from_name("ujis"), Charset::MultiByteSafe);
    assert_eq!(stmts("SELECT 'é;'; SELECT `ñ`", &o).len(), 2);
    let latin1 = LexerOptions {
        charset: Charset::SingleByte,
        ..o
    };
    assert_eq!(
        split(b"SELECT '\xe9;'; SELECT 2", &latin1).unwrap().len(),
        2
    );
}

#[test]
fn splitting_follows_the_server() {
    let o = maria();
    // The server trims leading whitespace and trailing `;` and whitespace.
    assert_eq!(stmts("  SELECT 1;  ", &o), ["SELECT 1"]);
    assert_eq!(stmts("SELECT 1;;\n", &o), ["SELECT 1"]);
    assert!(stmts("  ;; ", &o).is_empty());
    // A trailing comment is a statement of its own (the server answers OK).
    let s = split(b"SELECT 1; -- x", &o).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].kind, StatementKind::CommentsOnly);
    // Nothing between two `;` in the middle: the server's syntax error.
    let s = split(b"SELECT 1; ;SELECT 2", &o).unwrap();
    assert_eq!(
        s.iter().map(|s| s.kind).collect::<Vec<_>>(),
        [
            StatementKind::Code,
            StatementKind::Empty,
            StatementKind::Code
        ]
    );
}

#[test]
fn compound_statements_run_to_the_end() {
    let o = maria();
    let proc = "CREATE PROCEDURE p() BEGIN SELECT 1; DROP TABLE t; END; SELECT 2";
    let s = split(proc.as_bytes(), &o).unwrap();
    assert_eq!(s.len(), 1);
    assert!(s[0].compound);
    assert_eq!(&proc[s[0].range.clone()], proc);
    for sql in [
        "CREATE DEFINER=`root`@`%` PROCEDURE p() BEGIN SELECT 1; END",
        "CREATE DEFINER=root@localhost TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET @a=1; END",
        "CREATE OR REPLACE DEFINER = CURRENT_USER() FUNCTION f() RETURNS INT BEGIN RETURN 1; END",
        "CREATE DEFINER='a'@'b' EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN DELETE FROM t; END",
        "ALTER EVENT e DO BEGIN DELETE FROM t; END",
        "BEGIN NOT ATOMIC SELECT 1; SELECT 2; END",
        "IF 1 THEN SELECT 1; END IF",
        "lbl: LOOP LEAVE lbl; END LOOP",
        "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER tr AFTER INSERT ON t FOR EACH ROW BEGIN SET @x=1; END */",
    ] {
        let s = split(sql.as_bytes(), &o).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!((s.len(), s[0].compound), (1, true), "{sql}");
    }
    for sql in [
        "BEGIN; SELECT 1",
        "BEGIN WORK; SELECT 1",
        "CREATE TABLE event (procedure INT); SELECT 1",
        "CREATE VIEW v AS SELECT 1; SELECT 2",
        "SELECT 1 AS x; SELECT 2",
    ] {
        let s = split(sql.as_bytes(), &o).unwrap();
        assert_eq!(s.len(), 2, "{sql}");
        assert!(!s[0].compound, "{sql}");
    }
    // A compound statement after a plain one: the plain one is split off.
    let s = split(b"SELECT 1; BEGIN NOT ATOMIC SELECT 2; END", &o).unwrap();
    assert_eq!((s.len(), s[0].compound, s[1].compound), (2, false, true));
}

#[test]
fn fingerprints_ignore_literal_values_only() {
    let o = maria();
    let f = |s: &str| fingerprint(s.as_bytes(), &o);
    assert_eq!(
        f("SELECT * FROM t WHERE id = 123 AND n = 'abc'").as_deref(),
        Some("SELECT * FROM t WHERE id = 0 AND n = ''")
    );
    assert_eq!(
        f("SELECT 1.5e3, X'AB', N'x', _latin1'y'"),
        f("SELECT 7, X'', N'', _latin1''")
    );
    assert_ne!(
        f("SELECT 1 FROM t1"),
        f("SELECT 1 FROM t2"),
        "digits in names stay"
    );
    assert_ne!(
        f("SELECT t.1e5 FROM t"),
        f("SELECT t.2e5 FROM t"),
        "t.1e5 is a column"
    );
    assert_ne!(f("SELECT 1abc"), f("SELECT 2abc"), "1abc is a name");
    assert_ne!(f("SELECT 1; DROP TABLE t"), f("SELECT 1"));
    assert_ne!(
        f("SELECT 1 /* a */"),
        f("SELECT 1 /* b */"),
        "comments stay"
    );
    assert_ne!(f("SELECT @v1"), f("SELECT @v2"));
    // Texts that lex differently under other settings get no key.
    assert_eq!(f(r"SELECT 'a\'b'"), None);
    assert_eq!(f(r#"SELECT "a""#), None);
    assert_eq!(f("SELECT 1 /*!50000 , 2 */"), None);
    assert_eq!(f("SELECT 1 /*!99999 , 2 */"), None);
    assert_eq!(f("SELECT 1 /*M! , 2 */"), None);
    assert_eq!(fingerprint(b"SELECT 1 /*M! , 2 */", &opts(MYSQL)), None);
    assert_eq!(f("SELECT 'unterminated"), None);
    assert_eq!(fingerprint(b"SELECT '\xff'", &o), None, "not UTF-8");
    assert_eq!(f("SELECT `a` FROM t").as_deref(), Some("SELECT `a` FROM t"));
}

#[test]
fn redaction() {
    let o = maria();
    let r = |s: &str, o: &LexerOptions| redact_literals(s.as_bytes(), o);
    assert_eq!(
        r(
            "INSERT INTO t VALUES (1, 'secret', \"x\", N'y', X'41', _utf8'z')",
            &o
        ),
        "INSERT INTO t VALUES (1, '[REDACTED:literal]', \"[REDACTED:literal]\", N'[REDACTED:literal]', X'[REDACTED:literal]', _utf8'[REDACTED:literal]')"
    );
    assert_eq!(r("SELECT 'it''s'", &o), "SELECT '[REDACTED:literal]'");
    assert_eq!(
        r("SELECT \"ssn\" FROM t", &with_mode("ANSI_QUOTES")),
        "SELECT \"ssn\" FROM t"
    );
    assert_eq!(
        r("SELECT 1 /*!50000 , 'pw' */", &o),
        "SELECT 1 /*!50000 , '[REDACTED:literal]' */"
    );
    assert_eq!(r("SELECT 'unterminated", &o), "SELECT '[REDACTED:literal]");
    assert_eq!(r(r"SELECT 'a\'; -- x", &o), "SELECT '[REDACTED:literal]");
    assert_eq!(r("SELECT 1 # 'c'", &o), "SELECT 1 # 'c'");
    assert_eq!(r("SELECT `'`, 'x'", &o), "SELECT `'`, '[REDACTED:literal]'");
}

/// Every prefix of a set of tricky texts lexes or errors, never panics,
/// and tokens tile the text.
#[test]
fn tokens_tile_the_text_and_nothing_panics() {
    let texts = [
        "SELECT 1 /*!50000 , 'a' /* c */ */; -- x\n#y\nSELECT `a``b`, \"c\", X'41', 0x1, .5e+1, t.1e5, @@a.b, @'x'",
        "CREATE DEFINER=`r`@`%` PROCEDURE p() BEGIN SELECT 1; END",
        "SELECT 1--1; SELECT '\\'' /*M!100000 , 2 */",
    ];
    for o in [maria(), opts(MYSQL), with_mode("ANSI,NO_BACKSLASH_ESCAPES")] {
        for text in texts {
            for cut in 0..=text.len() {
                let sql = &text.as_bytes()[..cut];
                if let Ok(tokens) = tokenize(sql, &o) {
                    let mut at = 0;
                    for t in &tokens {
                        assert_eq!(t.start, at, "{text:?} cut {cut}");
                        assert!(t.end > t.start);
                        at = t.end;
                    }
                    assert_eq!(at, cut);
                }
                let _ = split(sql, &o);
                let _ = fingerprint(sql, &o);
                let _ = redact_literals(sql, &o);
                let _ = executable_sql(sql, &o);
            }
        }
    }
}
