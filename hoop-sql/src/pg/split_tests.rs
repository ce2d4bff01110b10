//! Statement splitting, checked against what PostgreSQL's `scan.l` does.
#![allow(clippy::unwrap_used)]

use super::Postgres;
use crate::dialect::{SplitError, SqlDialect};

fn texts(sql: &str) -> Vec<&str> {
    Postgres
        .split(sql)
        .unwrap()
        .iter()
        .map(|p| p.text.trim())
        .collect()
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
        Postgres.split(r"select 'x\''; drop table t; --'"),
        Err(SplitError::Ambiguous(7))
    );
    assert!(matches!(
        Postgres.split(r"select 'a\'"),
        Err(SplitError::Ambiguous(_))
    ));
    // A backslash that does not move the end is fine either way.
    assert!(Postgres.split(r"select '\d+' ~ 'x'").is_ok());
    assert!(Postgres.split(r"select e'a\'b'").is_ok());
}

#[test]
fn unterminated_constructs_are_errors() {
    assert!(Postgres.split("select 'abc").is_err());
    assert!(Postgres.split("select /* /* */").is_err());
    assert!(Postgres.split("select $a$ x").is_err());
    assert!(Postgres.split("select \"x").is_err());
}

#[test]
fn a_comment_ends_at_a_carriage_return() {
    // scan.l: a `--` comment runs to a newline, `\n` or `\r`.
    assert_eq!(
        texts("select 1 -- x\r; drop table t"),
        ["select 1 -- x", "drop table t"]
    );
}
