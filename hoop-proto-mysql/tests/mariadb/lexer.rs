//! The lexer's claims, checked against the server: where it splits
//! statements, which executable comments it runs, how sql_mode changes
//! strings, and that the executable text hoop would parse runs exactly as
//! the original does.

use anyhow::{Result, ensure};
use hoop_proto_mysql::lexer::{
    self, Charset, LexError, LexerOptions, Server, SqlMode, StatementKind,
};

use crate::client::{Client, Options, Outcome, Scratch, server_available};

fn options(c: &Client, mode: &str) -> LexerOptions {
    let v = c.session.server_version().expect("a version");
    LexerOptions {
        server: Server {
            mariadb: v.mariadb,
            version_id: v.version_id(),
        },
        sql_mode: SqlMode::from_sql_mode(mode),
        charset: Charset::from_name(c.session.character_set_client().unwrap_or("unknown")),
    }
}

/// Results the server produced, without column names.
fn values(r: &[Outcome]) -> Vec<Outcome> {
    r.iter()
        .map(|o| match o {
            Outcome::Rows(_, rows) => Outcome::Rows(Vec::new(), rows.clone()),
            other => other.clone(),
        })
        .collect()
}

#[test]
fn splitting_matches_the_server() -> Result<()> {
    use StatementKind::{Code, CommentsOnly, Empty};
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_lexer")?;
    let mut c = Client::connect(&Options {
        database: Some(db.name.clone()),
        ..Options::default()
    })?;
    let o = options(&c, "");
    // (text, server results, lexer statement kinds)
    let cases: &[(&str, usize, &[StatementKind])] = &[
        ("SELECT 1 /* ; */", 1, &[Code]),
        ("SELECT 1 # ;\n", 1, &[Code]),
        ("SELECT 1; -- x", 2, &[Code, CommentsOnly]),
        ("SELECT 1; /* c */", 2, &[Code, CommentsOnly]),
        ("  SELECT 1;;  \n", 1, &[Code]),
        ("SELECT 1--1; SELECT 2", 2, &[Code, Code]),
        ("SELECT 1 -- x\n; SELECT 2", 2, &[Code, Code]),
        (
            "SELECT 'a;b'; SELECT \"c;d\"; SELECT `e;f` FROM (SELECT 1 AS `e;f`) t",
            3,
            &[Code, Code, Code],
        ),
        (r"SELECT 'a\'; SELECT 2; -- '", 1, &[Code]),
        ("SELECT 'it''s; fine'", 1, &[Code]),
        ("SELECT 1 /*!99999 ; DROP TABLE x */", 1, &[Code]),
        ("SELECT 1 /*!50000 , 2 */; SELECT 3", 2, &[Code, Code]),
    ];
    for (sql, results, kinds) in cases {
        let r = c.query(sql)?;
        ensure!(r.len() == *results, "{sql:?}: server {r:?}");
        ensure!(
            r.iter().all(|o| !matches!(o, Outcome::Err(..))),
            "{sql:?}: {r:?}"
        );
        let split = lexer::split(sql.as_bytes(), &o)?;
        let got: Vec<StatementKind> = split.iter().map(|s| s.kind).collect();
        ensure!(got == *kinds, "{sql:?}: lexer {got:?}");
    }
    // `;;` in the middle: the server fails at the empty statement.
    let r = c.query("SELECT 1; ;SELECT 2")?;
    ensure!(
        r.len() == 2 && matches!(r[1], Outcome::Err(1064, _)),
        "{r:?}"
    );
    let s = lexer::split(b"SELECT 1; ;SELECT 2", &o)?;
    ensure!(s[1].kind == Empty);
    Ok(())
}

#[test]
fn executable_comments_run_as_the_server_runs_them() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_lexer_exec")?;
    let mut c = Client::connect(&Options {
        database: Some(db.name.clone()),
        ..Options::default()
    })?;
    let o = options(&c, "");
    let exists = |c: &mut Client| -> Result<bool> {
        let r = c.query("SHOW TABLES LIKE 'x'")?;
        Ok(matches!(&r[..], [Outcome::Rows(_, rows)] if rows.len() == 1))
    };
    c.query("CREATE TABLE x (a INT)")?;
    // A version from the future: skipped, the table stays.
    let skipped = "/*!99999 DROP TABLE x */";
    ensure!(c.query(skipped)? == [Outcome::Ok(0)]);
    ensure!(exists(&mut c)?);
    let s = lexer::split(skipped.as_bytes(), &o)?;
    ensure!(s[0].kind == StatementKind::CommentsOnly);
    // An old version: runs.
    let runs = "/*!10000 DROP TABLE x */";
    ensure!(lexer::split(runs.as_bytes(), &o)?[0].kind == StatementKind::Code);
    let exec = lexer::executable_sql(runs.as_bytes(), &o)?;
    ensure!(String::from_utf8(exec)?.trim() == "DROP TABLE x");
    ensure!(c.query(runs)? == [Outcome::Ok(0)]);
    ensure!(!exists(&mut c)?);

    // The text with markers blanked runs exactly as the original does.
    for sql in [
        "SELECT 1 /*!99999 , 2 */",
        "SELECT 1 /*!10000 , 2 */",
        "SELECT 1 /*!50700 , 2 */",
        "SELECT 1 /*!50699 , 2 */",
        "SELECT 1 /*!100000 , 2 */",
        "SELECT 1 /*!101119 , 2 */",
        "SELECT 1 /*!999999 , 2 */",
        "SELECT 1 /*M!99999 , 2 */",
        "SELECT 1 /*M!999999 , 2 */",
        "SELECT 1 /*! , 2 */",
        "SELECT 1 /*!1000x , 2 */",
        "SELECT 1 /*!99999 , 2 /* x */ , 3 */",
        "SELECT 1 /*! , 2 /*! , 3 */",
        "SELECT 1 /*! , 2 /* c */ , 3 */",
        "SELECT 1 /*!50000 , '*/' */",
    ] {
        let original = c.query(sql)?;
        let exec = String::from_utf8(lexer::executable_sql(sql.as_bytes(), &o)?)?;
        let spliced = c.query(&exec)?;
        ensure!(
            values(&original) == values(&spliced),
            "{sql:?} ran as {original:?}, {exec:?} as {spliced:?}"
        );
        ensure!(
            !matches!(original[0], Outcome::Err(..)),
            "{sql:?}: {original:?}"
        );
    }
    // A `;` inside an executable comment: the server rejects the
    // statement and runs nothing of it; the lexer refuses it.
    c.query("CREATE TABLE y (a INT)")?;
    let sql = "/*!50000 INSERT INTO y VALUES (1); SELECT 2 */";
    let r = c.query(sql)?;
    ensure!(matches!(&r[..], [Outcome::Err(1064, _)]), "{r:?}");
    ensure!(
        c.query("SELECT COUNT(*) FROM y")?
            == [Outcome::Rows(
                vec!["COUNT(*)".into()],
                vec![vec![Some("0".into())]]
            )]
    );
    ensure!(matches!(
        lexer::split(sql.as_bytes(), &o),
        Err(LexError::SemicolonInExecutableComment { .. })
    ));
    // …except inside a stored program body (how mysqldump writes triggers).
    let trigger = "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER tr \
                   BEFORE INSERT ON y FOR EACH ROW BEGIN SET @a = 1; SET @b = 2; END */";
    ensure!(c.query(trigger)? == [Outcome::Ok(0)]);
    let s = lexer::split(trigger.as_bytes(), &o)?;
    ensure!(s.len() == 1 && s[0].compound);
    Ok(())
}

#[test]
fn sql_mode_changes_strings_as_the_lexer_says() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_lexer_mode")?;
    let mut c = Client::connect(&Options {
        database: Some(db.name.clone()),
        ..Options::default()
    })?;
    let sql = r"SELECT 'a\'; SELECT 2; -- '";
    // Backslash escapes: one statement, one string.
    let o = options(&c, "");
    ensure!(lexer::split(sql.as_bytes(), &o)?.len() == 1);
    let r = c.query(sql)?;
    ensure!(
        r == [Outcome::Rows(
            vec!["a'; SELECT 2; -- ".into()],
            vec![vec![Some("a'; SELECT 2; -- ".into())]]
        )],
        "{r:?}"
    );
    // NO_BACKSLASH_ESCAPES: the quote after the backslash ends the string.
    c.query("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")?;
    ensure!(c.session.no_backslash_escapes());
    let o = options(&c, "NO_BACKSLASH_ESCAPES");
    let s = lexer::split(sql.as_bytes(), &o)?;
    let r = c.query(sql)?;
    ensure!(s.len() == 3 && r.len() == 3, "lexer {s:?}, server {r:?}");
    ensure!(matches!(&r[1], Outcome::Rows(_, rows) if rows == &vec![vec![Some("2".to_owned())]]));
    // ANSI_QUOTES: "a" names a column.
    c.query("SET SESSION sql_mode = 'ANSI_QUOTES'")?;
    let sql = r#"SELECT "a" FROM (SELECT 42 AS a) t"#;
    let o = options(&c, "ANSI_QUOTES");
    let kinds: Vec<_> = lexer::tokenize(sql.as_bytes(), &o)?
        .iter()
        .map(|t| t.kind)
        .collect();
    ensure!(kinds[2] == lexer::TokenKind::QuotedIdentifier);
    ensure!(values(&c.query(sql)?) == [Outcome::Rows(vec![], vec![vec![Some("42".into())]])]);
    c.query("SET SESSION sql_mode = DEFAULT")?;
    ensure!(values(&c.query(sql)?) == [Outcome::Rows(vec![], vec![vec![Some("a".into())]])]);
    Ok(())
}

#[test]
fn compound_statements_hold_their_semicolons() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_lexer_compound")?;
    let mut c = Client::connect(&Options {
        database: Some(db.name.clone()),
        ..Options::default()
    })?;
    let o = options(&c, "");
    // The server reads the whole body as one statement, then SELECT 3.
    let sql = "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END; SELECT 3";
    let r = c.query(sql)?;
    ensure!(r.len() == 2 && r[0] == Outcome::Ok(0), "{r:?}");
    // The lexer cannot find the body's end: one compound unit to the end
    // (judged as unparsed), never three statements.
    let s = lexer::split(sql.as_bytes(), &o)?;
    ensure!(s.len() == 1 && s[0].compound, "{s:?}");
    let r = c.query("BEGIN NOT ATOMIC DECLARE v INT DEFAULT 7; SELECT v; END")?;
    ensure!(
        matches!(&r[0], Outcome::Rows(_, rows) if rows == &vec![vec![Some("7".to_owned())]]),
        "{r:?}"
    );
    ensure!(
        lexer::split(
            b"BEGIN NOT ATOMIC DECLARE v INT DEFAULT 7; SELECT v; END",
            &o
        )?[0]
            .compound
    );
    Ok(())
}

#[test]
fn gbk_hides_a_quote_behind_a_backslash_so_the_lexer_refuses_it() -> Result<()> {
    if !server_available() {
        return Ok(());
    }
    let db = Scratch::new("hoop_mysql_lexer_gbk")?;
    let mut c = Client::connect(&Options {
        database: Some(db.name.clone()),
        ..Options::default()
    })?;
    c.query("SET NAMES gbk")?;
    ensure!(c.session.character_set_client() == Some("gbk"));
    // 0xBF 0x5C is one GBK character: the "escaped" quote after it ends the
    // string, and the server runs a second statement a UTF-8 reading of
    // the same bytes keeps inside the literal.
    let sql = b"SELECT '\xbf\\' AS a; SELECT 2 AS b; -- '";
    c.send(&hoop_proto_mysql::command::Command::Query {
        sql,
        attributes: None,
    })?;
    let r = c.outcomes(false)?;
    ensure!(
        r.len() == 3,
        "the server ran two statements and a comment: {r:?}"
    );
    let utf8 = LexerOptions {
        charset: Charset::Utf8,
        ..options(&c, "")
    };
    ensure!(
        lexer::split(sql, &utf8)?.len() == 1,
        "a byte-level reading sees one"
    );
    let gbk = options(&c, "");
    ensure!(gbk.charset == Charset::BackslashTrail);
    ensure!(matches!(
        lexer::split(sql, &gbk),
        Err(LexError::UnsafeCharset { .. })
    ));
    Ok(())
}
