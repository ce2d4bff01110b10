//! A SQL text parsed once: cut into statements where the server cuts it,
//! and each statement parsed into a syntax tree. Classification (policy)
//! and lineage (masking) both read this one [`ParsedSql`], so they see the
//! same statements with the same indexes, by construction.

use sqlparser::ast::{SetExpr, Statement};

use crate::dialect::{ParseFailure, SplitError, SqlDialect};

/// One statement of a text.
#[derive(Debug)]
pub struct ParsedStatement<'a> {
    /// Its text, without the terminating `;`.
    pub text: &'a str,
    /// Byte offset of `text` in the whole text.
    pub offset: usize,
    /// Its syntax tree, or why there is none. For a positioned write
    /// (`UPDATE`/`DELETE … WHERE CURRENT OF cursor`), the tree of the
    /// statement without that clause.
    pub ast: Result<Statement, ParseFailure>,
    /// For a positioned write: the cursor whose current row it touches.
    pub current_of: Option<String>,
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

/// Parses one statement; a positioned write the SQL library rejects is
/// parsed without its `WHERE CURRENT OF` clause, and must then be an
/// `UPDATE` or `DELETE` with no other `WHERE`.
fn parse_piece(
    dialect: &'static dyn SqlDialect,
    text: &str,
) -> (Result<Statement, ParseFailure>, Option<String>) {
    let ast = dialect.parse_statement(text);
    if ast.is_ok() {
        return (ast, None);
    }
    let Some(positioned) = dialect.positioned(text) else {
        return (ast, None);
    };
    match dialect.parse_statement(&positioned.text) {
        Ok(
            statement @ Statement::Update {
                selection: None, ..
            },
        ) => (Ok(statement), Some(positioned.cursor)),
        Ok(Statement::Delete(delete)) if delete.selection.is_none() => {
            (Ok(Statement::Delete(delete)), Some(positioned.cursor))
        }
        // `WITH … UPDATE|DELETE … WHERE CURRENT OF cursor`.
        Ok(Statement::Query(query))
            if matches!(
                &*query.body,
                SetExpr::Update(s) | SetExpr::Delete(s) if unfiltered_write(s)
            ) =>
        {
            (Ok(Statement::Query(query)), Some(positioned.cursor))
        }
        _ => (ast, None),
    }
}

/// An `UPDATE` or `DELETE` without a `WHERE`.
fn unfiltered_write(statement: &Statement) -> bool {
    match statement {
        Statement::Update { selection, .. } => selection.is_none(),
        Statement::Delete(delete) => delete.selection.is_none(),
        _ => false,
    }
}

impl<'a> ParsedSql<'a> {
    /// Splits and parses `text` with `dialect`.
    pub fn parse(dialect: &'static dyn SqlDialect, text: &'a str) -> Self {
        let statements = dialect.split(text).map(|pieces| {
            pieces
                .into_iter()
                .map(|piece| {
                    let (ast, current_of) = parse_piece(dialect, piece.text);
                    ParsedStatement {
                        text: piece.text,
                        offset: piece.offset,
                        ast,
                        current_of,
                    }
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
