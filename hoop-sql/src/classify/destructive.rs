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
//!   materialized views).
//!
//! Statements the SQL library cannot parse are recognised by their words.

use sqlparser::ast::{AlterTableOperation, Statement};

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
            has(&["rename"]) || has(&["set", "schema"]) || has(&["drop"])
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
        assert!(!from_words(&words("ALTER TABLE t ADD COLUMN c int")));
        assert!(!from_words(&words("LOCK TABLE t")));
    }
}
