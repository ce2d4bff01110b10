//! Whether a statement's server texts may quote a masked value.
//!
//! The server quotes the values it works on in its errors and notices, in
//! the message, detail, hint, context and where fields, in more shapes
//! than any list of patterns can hold (`relation "…" does not exist` for a
//! `::regclass` cast, `time zone "…" not recognized`, `date field value out
//! of range: 123-13-01`, the context line of a JSON parse error, …). So
//! hoop does not look for shapes: while a statement reaches a masked column,
//! or a value whose source it cannot prove, every text the server sends
//! about that statement is withheld whole (the driver keeps the SQLSTATE,
//! severity and position).
//!
//! A statement reaches masked data when any of these holds:
//! - it cannot be read (it does not lex or parse);
//! - it names a masked column anywhere (select list, `WHERE`, function
//!   arguments, subqueries), a table a column rule names, or a view over a
//!   masked column: by its words, so a name in any position counts;
//! - its result columns may carry a masked or unproven value (lineage:
//!   expressions over masked columns, stars over tables a rule may cover,
//!   calls hoop cannot see into), or it copies masked data elsewhere;
//! - a bare column rule (a column name in any table) exists and the
//!   statement uses a whole row as a value (`people::text`, `f(p.*)`,
//!   `row_to_json(p)`), which carries every column of its table.

use std::ops::ControlFlow;

use hoop_sql::{ParsedSql, SqlDialect};
use sqlparser::ast::{Expr, FunctionArgExpr, Statement, TableFactor, Visit, Visitor};

use crate::{
    MaskRules,
    lineage::{ColumnLineage, Lineage},
};

impl MaskRules {
    /// Whether the server's texts about statement `index` of `parsed` may
    /// quote a masked value (see the module). `lineage` is that statement's.
    pub fn texts_may_echo_masked(
        &self,
        dialect: &dyn SqlDialect,
        parsed: &ParsedSql<'_>,
        index: usize,
        lineage: &Lineage,
    ) -> bool {
        if self.column_rules.is_empty() {
            return false;
        }
        let Ok(statements) = &parsed.statements else {
            return true;
        };
        let Some(statement) = statements.get(index) else {
            // Past the statements hoop read: it cannot tell.
            return true;
        };
        let Some(words) = dialect.identifiers(statement.text) else {
            return true;
        };
        if words.iter().any(|w| self.names_masked(w)) {
            return true;
        }
        let Ok(ast) = &statement.ast else {
            return true;
        };
        if lineage.writes_masked || lineage.changes_masked_schema || self.may_carry(lineage) {
            return true;
        }
        let bare_rule = self
            .column_rules
            .iter()
            .any(|r| r.columns.iter().any(|c| c.table.is_none()));
        bare_rule && uses_whole_rows(dialect, ast)
    }

    /// Whether `word` (a folded name) is a masked column's name, a table a
    /// column rule names, or a view over a masked column.
    fn names_masked(&self, word: &str) -> bool {
        self.column_rules.iter().any(|r| {
            r.columns
                .iter()
                .any(|c| c.column == word || c.table.as_deref() == Some(word))
        }) || self.masked_relations.iter().any(|(t, _)| t.name == word)
    }

    /// Whether any result position may carry a masked or unproven value.
    fn may_carry(&self, lineage: &Lineage) -> bool {
        lineage
            .columns
            .iter()
            .chain(lineage.rest.as_ref())
            .any(|c| match c {
                ColumnLineage::Clean => false,
                ColumnLineage::Masked { .. } | ColumnLineage::Unknown => true,
                ColumnLineage::FromTable { tables, .. } => tables.iter().any(|t| {
                    self.column_rules.iter().any(|r| {
                        r.columns
                            .iter()
                            .any(|c| c.matches_table(t.schema.as_deref(), &t.name))
                    })
                }),
            })
    }
}

/// Whether `statement` uses a whole row of a relation as a value: a bare
/// name of one of its relations (or their aliases) in an expression, or a
/// `relation.*` inside a call.
fn uses_whole_rows(dialect: &dyn SqlDialect, statement: &Statement) -> bool {
    struct Relations<'d> {
        dialect: &'d dyn SqlDialect,
        names: Vec<String>,
    }
    impl Visitor for Relations<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, .. } = factor
                && let Some(last) = name.0.last().and_then(|p| p.as_ident())
            {
                self.names.push(self.dialect.fold(last));
            }
            if let Some(alias) = table_alias(factor) {
                self.names.push(self.dialect.fold(alias));
            }
            ControlFlow::Continue(())
        }
    }
    struct WholeRow<'d> {
        dialect: &'d dyn SqlDialect,
        names: Vec<String>,
    }
    impl Visitor for WholeRow<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Identifier(ident) if self.names.contains(&self.dialect.fold(ident)) => {
                    ControlFlow::Break(())
                }
                Expr::Function(f)
                    if matches!(&f.args, sqlparser::ast::FunctionArguments::List(list)
                    if list.args.iter().any(|a| matches!(
                        a,
                        sqlparser::ast::FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(_))
                            | sqlparser::ast::FunctionArg::Named { arg: FunctionArgExpr::QualifiedWildcard(_), .. }
                    ))) =>
                {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    let mut relations = Relations {
        dialect,
        names: Vec::new(),
    };
    let _ = statement.visit(&mut relations);
    if relations.names.is_empty() {
        return false;
    }
    let mut whole = WholeRow {
        dialect,
        names: relations.names,
    };
    statement.visit(&mut whole).is_break()
}

/// The alias a `FROM` item is given, if any.
fn table_alias(factor: &TableFactor) -> Option<&sqlparser::ast::Ident> {
    let alias = match factor {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => alias.as_ref(),
        _ => None,
    };
    alias.map(|a| &a.name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hoop_sql::pg::Postgres;

    use super::*;
    use crate::{BinaryUnmaskable, ColumnRef, ColumnRule, Strategy, lineage::analyze};

    fn rules(columns: &[&str]) -> MaskRules {
        MaskRules::new(
            vec![ColumnRule {
                name: "ssn".into(),
                columns: columns
                    .iter()
                    .map(|c| ColumnRef::parse(c).unwrap())
                    .collect(),
                strategy: Strategy::Redact,
                keep_last: 0,
            }],
            Vec::new(),
            Vec::new(),
            BinaryUnmaskable::Refuse,
        )
        .unwrap()
    }

    fn echoes(rules: &MaskRules, sql: &str) -> bool {
        let parsed = ParsedSql::parse(&Postgres, sql);
        let lineage = analyze(&parsed, rules).statement(0);
        rules.texts_may_echo_masked(&Postgres, &parsed, 0, &lineage)
    }

    #[test]
    fn statements_reaching_a_masked_column_anywhere_echo() {
        let bare = rules(&["ssn"]);
        for sql in [
            "SELECT ssn::regclass FROM people",
            "SELECT count(*) FROM people WHERE ssn::int = 1",
            "SELECT (SELECT \"ssn\" FROM people)::regclass",
            "SELECT U&\"\\0073sn\"::regrole FROM people",
            "SELECT 1 FROM people p WHERE timezone(p::text, now()) IS NULL",
            "SELECT row_to_json(p.*)::text::int FROM people p",
            "SELECT * FROM people",
            "SELECT 'open",
        ] {
            assert!(echoes(&bare, sql), "{sql}");
        }
        for sql in [
            "SELECT 1 / 0",
            "SELECT name::regclass FROM people",
            "SELECT count(*) FROM people WHERE id = 1",
            "INSERT INTO tags VALUES (7)",
        ] {
            assert!(!echoes(&bare, sql), "{sql}");
        }
    }

    #[test]
    fn a_table_rule_covers_statements_naming_its_table() {
        let table = rules(&["people.ssn"]);
        assert!(echoes(&table, "INSERT INTO people (id) VALUES (1)"));
        assert!(echoes(&table, "SELECT p::text FROM people p"));
        // Whole rows of other tables carry no column of the rule.
        assert!(!echoes(&table, "SELECT o::text::int FROM orders o"));
        assert!(!echoes(&rules(&[]), "SELECT ssn::regclass FROM people"));
    }
}
