//! The `destructive_ddl` statement group: statements that destroy objects or
//! data wholesale, or break what names mean, whatever their kind.
//!
//! - `DROP` of any object kind (tables, views, schemas, databases, indexes,
//!   functions, types, roles, …), `DROP OWNED`;
//! - `TRUNCATE`;
//! - `ALTER TABLE … DROP COLUMN` and `… DROP CONSTRAINT` (and the other
//!   dialects' `DROP PRIMARY KEY`, `DROP FOREIGN KEY`, `DROP INDEX`,
//!   `DROP PARTITION`);
//! - renames of tables and columns (`ALTER TABLE … RENAME [COLUMN] …`,
//!   `ALTER TABLE … SET SCHEMA`, `RENAME TABLE`, and the same on views and
//!   materialized views);
//! - column type rewrites (`ALTER TABLE … ALTER COLUMN … [SET DATA] TYPE`,
//!   MySQL's `MODIFY COLUMN`): a `USING` expression rewrites every row;
//! - routines that destroy stored tuples directly (pg_surgery's
//!   `heap_force_kill` and `heap_force_freeze`), in any schema.
//!
//! Statements the SQL library cannot parse are recognised by their words.

use sqlparser::ast::{AlterColumnOperation, AlterTableOperation, ObjectName, Statement};

/// Routines that destroy or rewrite stored tuples directly, by name in any
/// schema (extensions install wherever they are told).
const TUPLE_DESTROYERS: &[&str] = &["heap_force_freeze", "heap_force_kill"];

/// Whether a call of `name` destroys stored tuples directly.
pub(crate) fn routine(name: &ObjectName) -> bool {
    name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
        let folded = if i.quote_style.is_some() {
            i.value.clone()
        } else {
            i.value.to_lowercase()
        };
        TUPLE_DESTROYERS.contains(&folded.as_str())
    })
}

/// Whether a parsed statement is destructive DDL.
pub(crate) fn statement(statement: &Statement) -> bool {
    match statement {
        Statement::Drop { .. }
        | Statement::DropFunction { .. }
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropSecret { .. }
        | Statement::DropPolicy { .. }
        | Statement::DropConnector { .. }
        | Statement::DropExtension { .. }
        | Statement::DropTrigger(_)
        | Statement::Truncate { .. }
        | Statement::RenameTable(_) => true,
        Statement::AlterTable { operations, .. } => operations.iter().any(operation),
        _ => false,
    }
}

fn operation(op: &AlterTableOperation) -> bool {
    matches!(
        op,
        AlterTableOperation::DropColumn { .. }
            | AlterTableOperation::DropConstraint { .. }
            | AlterTableOperation::DropPrimaryKey { .. }
            | AlterTableOperation::DropForeignKey { .. }
            | AlterTableOperation::DropIndex { .. }
            | AlterTableOperation::DropPartitions { .. }
            | AlterTableOperation::RenameColumn { .. }
            | AlterTableOperation::RenameTable { .. }
            | AlterTableOperation::ChangeColumn { .. }
            | AlterTableOperation::ModifyColumn { .. }
            | AlterTableOperation::AlterColumn {
                op: AlterColumnOperation::SetDataType { .. },
                ..
            }
    )
}

/// Whether a statement the parser rejected is destructive DDL, from its
/// leading words: `DROP …`, `TRUNCATE …`, or an `ALTER TABLE|VIEW|
/// MATERIALIZED VIEW|FOREIGN TABLE` that renames, moves to another schema,
/// or drops something.
pub(crate) fn from_words(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let has = |seq: &[&str]| w.windows(seq.len()).any(|win| win == seq);
    match w.as_slice() {
        ["drop" | "truncate", ..] => true,
        ["alter", "table" | "view" | "materialized" | "foreign", ..] => {
            has(&["rename"])
                || has(&["set", "schema"])
                || has(&["drop"])
                || (has(&["alter"]) && has(&["type"]) && w.len() > 2 && w[2..].contains(&"alter"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_lowercase).collect()
    }

    #[test]
    fn unparsed_destructive_statements_by_their_words() {
        assert!(from_words(&words("DROP OWNED BY bob")));
        assert!(from_words(&words("drop rule r on t")));
        assert!(from_words(&words("ALTER TABLE t SET SCHEMA s")));
        assert!(from_words(&words("ALTER VIEW v RENAME TO w")));
        assert!(from_words(&words(
            "alter materialized view v rename column a to b"
        )));
        assert!(from_words(&words(
            "alter table t alter column c type text using c::text"
        )));
        assert!(!from_words(&words("ALTER TABLE t ADD COLUMN c int")));
        assert!(!from_words(&words("ALTER TABLE type ADD COLUMN c int")));
        assert!(!from_words(&words("LOCK TABLE t")));
    }
}
