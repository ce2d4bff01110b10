//! A SQL text parsed once: cut into statements where the server cuts it,
//! and each statement parsed into a syntax tree. Classification (policy)
//! and lineage (masking) both read this one [`ParsedSql`], so they see the
//! same statements with the same indexes, by construction.

use sqlparser::ast::Statement;

use crate::dialect::{ParseFailure, SplitError, SqlDialect};

/// One statement of a text.
#[derive(Debug)]
pub struct ParsedStatement<'a> {
    /// Its text, without the terminating `;`.
    pub text: &'a str,
    /// Byte offset of `text` in the whole text.
    pub offset: usize,
    /// Its syntax tree, or why there is none.
    pub ast: Result<Statement, ParseFailure>,
}

/// A whole SQL text, parsed.
#[derive(Debug)]
pub struct ParsedSql<'a> {
    /// The text.
    pub text: &'a str,
    /// Its statements in order, or why it could not be split (then nothing
    /// of it can be trusted: it is judged as unparsed as a whole).
    pub statements: Result<Vec<ParsedStatement<'a>>, SplitError>,
    dialect: &'static dyn SqlDialect,
}

impl<'a> ParsedSql<'a> {
    /// Splits and parses `text` with `dialect`.
    pub fn parse(dialect: &'static dyn SqlDialect, text: &'a str) -> Self {
        let statements = dialect.split(text).map(|pieces| {
            pieces
                .into_iter()
                .map(|piece| ParsedStatement {
                    text: piece.text,
                    offset: piece.offset,
                    ast: dialect.parse_statement(piece.text),
                })
                .collect()
        });
        Self {
            text,
            statements,
            dialect,
        }
    }

    /// The dialect it was parsed with.
    pub fn dialect(&self) -> &'static dyn SqlDialect {
        self.dialect
    }

    /// Whether every statement has a syntax tree.
    pub fn fully_parsed(&self) -> bool {
        self.statements
            .as_ref()
            .is_ok_and(|s| s.iter().all(|p| p.ast.is_ok()))
    }
}
