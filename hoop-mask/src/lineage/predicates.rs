//! Which masked columns a statement *filters, joins, groups or sorts by*:
//! inference through predicates. Masking rewrites what a result shows, but
//! `WHERE ssn LIKE '87%'` still answers a question about the value, one
//! row count at a time. A mask rule's `predicates: deny | hold` refuses or
//! holds statements that do this; this module finds them.
//!
//! A predicate is any expression that decides which rows come back, how
//! many, or in which order: `WHERE`, `HAVING`, `QUALIFY`, `JOIN … ON`,
//! `USING (…)`, `NATURAL` joins, `GROUP BY`, `DISTINCT ON`, `ORDER BY`
//! (output names and ordinals are followed to the column they name), an
//! `UPDATE`/`DELETE`'s `WHERE`, `MERGE … ON` and its `WHEN … AND`
//! conditions — at every level: CTE bodies, derived tables, subqueries in
//! the select list and in other predicates, `INSERT … SELECT`, `COPY
//! (query)`, cursors, views being created, `EXPLAIN` (the plan's row
//! estimates answer the question too) and `PREPARE`.
//!
//! Each predicate's columns are resolved with lineage's scopes, so aliases,
//! derived tables, CTEs, views known to read a masked column and whole-row
//! references are followed; a reference that lineage cannot trace (rows of a
//! function that is not built in, say) counts as unknown, which the caller
//! treats as touching every restricted rule (fail closed).

use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, JoinConstraint, JoinOperator, MergeClause, OrderByKind, Query,
    Select, SetExpr, Statement, TableFactor, TableWithJoins, Value, Visit, Visitor,
};

use super::{Analyzer, ColumnLineage, Env, Scope, ShapeItem, fold, rename};
use crate::MaskRules;
use hoop_sql::ParsedSql;

/// What a statement's predicates read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PredicateReads {
    /// Column rules (indexes into [`MaskRules::column_rules`] of the rules
    /// analysed with) whose columns a predicate reads, in order found.
    pub rules: Vec<usize>,
    /// A predicate reads something lineage cannot trace.
    pub unknown: bool,
    /// A sort or grouping key names an output column by its position (`ORDER
    /// BY 2`): the answer depends on that number's value, so it must not be
    /// reused for a text that differs only in its literals.
    pub by_position: bool,
}

impl PredicateReads {
    /// Whether any predicate reads a masked or untraceable column.
    pub fn any(&self) -> bool {
        self.unknown || !self.rules.is_empty()
    }
}

/// The masked columns every statement of `parsed` filters, joins, groups or
/// sorts by, for the column rules of `rules`. SQL that does not parse reads
/// unknown columns.
pub fn predicate_reads(parsed: &ParsedSql<'_>, rules: &MaskRules) -> PredicateReads {
    let mut out = PredicateReads::default();
    if rules.column_rules.is_empty() {
        return out;
    }
    let Ok(statements) = &parsed.statements else {
        out.unknown = true;
        return out;
    };
    let analyzer = Analyzer::new(rules, parsed.dialect());
    let mut walker = Walker { an: &analyzer, out };
    for statement in statements {
        match &statement.ast {
            Ok(ast) => walker.statement(ast, None),
            Err(_) => walker.out.unknown = true,
        }
    }
    if analyzer.exhausted.get() {
        walker.out.unknown = true;
    }
    walker.out
}

struct Walker<'a, 'r> {
    an: &'a Analyzer<'r>,
    out: PredicateReads,
}

impl Walker<'_, '_> {
    fn note(&mut self, lin: ColumnLineage) {
        match self.an.as_value(lin) {
            ColumnLineage::Clean | ColumnLineage::FromTable { .. } => {}
            ColumnLineage::Masked { rule, .. } => {
                if !self.out.rules.contains(&rule) {
                    self.out.rules.push(rule);
                }
            }
            ColumnLineage::Unknown => self.out.unknown = true,
        }
    }

    /// A predicate expression: every column it reads (in nested queries
    /// too) counts.
    fn predicate(&mut self, e: &Expr, env: Env<'_>) {
        let lin = self.an.expr(e, Some(env));
        self.note(lin);
    }

    /// A grouping or sort key: an output column's name or ordinal stands
    /// for that column; anything else is an expression over the inputs.
    fn key(&mut self, e: &Expr, env: Env<'_>, output: &[ShapeItem]) {
        let position = |n: usize| -> Option<ColumnLineage> {
            let lineage = self.an.shape_lineage(&super::Shape {
                items: output.to_vec(),
            });
            n.checked_sub(1).map(|i| lineage.column(i).clone())
        };
        match e {
            Expr::Value(v) => {
                if matches!(&v.value, Value::Number(..)) {
                    self.out.by_position = true;
                }
                if let Value::Number(n, _) = &v.value
                    && let Ok(n) = n.parse::<usize>()
                    && let Some(lin) = position(n)
                {
                    self.note(lin);
                }
            }
            Expr::Identifier(i) => {
                let name = fold(self.an.dialect, i);
                for item in output {
                    if let ShapeItem::Col { name: Some(n), lin } = item
                        && *n == name
                    {
                        self.note(lin.clone());
                    }
                }
                self.predicate(e, env);
            }
            _ => self.predicate(e, env),
        }
    }

    /// Queries nested in an expression (select lists, function arguments,
    /// `SET` values, `RETURNING`): their own predicates count.
    fn nested(&mut self, e: &Expr, env: Env<'_>) {
        for q in top_level_queries(e) {
            self.query(&q, Some(env));
        }
    }

    fn statement(&mut self, s: &Statement, env: Option<Env<'_>>) {
        match s {
            Statement::Query(q)
            | Statement::Copy {
                source: sqlparser::ast::CopySource::Query(q),
                ..
            } => self.query(q, env),
            Statement::Insert(insert) => {
                if let Some(source) = &insert.source {
                    self.query(source, env);
                }
            }
            Statement::Update {
                table,
                assignments,
                from,
                selection,
                returning,
                ..
            } => {
                let mut items = vec![table.clone()];
                if let Some(
                    sqlparser::ast::UpdateTableFromKind::AfterSet(f)
                    | sqlparser::ast::UpdateTableFromKind::BeforeSet(f),
                ) = from
                {
                    items.extend(f.iter().cloned());
                }
                let scope = self.an.relations_of(&items, env);
                let inner = Env {
                    scope: &scope,
                    parent: env.as_ref(),
                };
                self.joined(&items, inner);
                if let Some(w) = selection {
                    self.predicate(w, inner);
                }
                for a in assignments {
                    self.nested(&a.value, inner);
                }
                for item in returning.iter().flatten() {
                    if let sqlparser::ast::SelectItem::UnnamedExpr(e)
                    | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } = item
                    {
                        self.nested(e, inner);
                    }
                }
            }
            Statement::Delete(delete) => {
                let mut items = match &delete.from {
                    sqlparser::ast::FromTable::WithFromKeyword(t)
                    | sqlparser::ast::FromTable::WithoutKeyword(t) => t.clone(),
                };
                items.extend(delete.using.iter().flatten().cloned());
                let scope = self.an.relations_of(&items, env);
                let inner = Env {
                    scope: &scope,
                    parent: env.as_ref(),
                };
                self.joined(&items, inner);
                if let Some(w) = &delete.selection {
                    self.predicate(w, inner);
                }
            }
            Statement::Merge {
                table,
                source,
                on,
                clauses,
                ..
            } => self.merge(table, source, on, clauses, env),
            Statement::Declare { stmts } => {
                for d in stmts {
                    if let Some(q) = &d.for_query {
                        self.query(q, env);
                    }
                }
            }
            Statement::CreateView { query, .. } => self.query(query, env),
            Statement::CreateTable(ct) => {
                if let Some(q) = &ct.query {
                    self.query(q, env);
                }
            }
            Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
                self.statement(statement, env);
            }
            _ => {}
        }
    }

    fn merge(
        &mut self,
        table: &TableFactor,
        source: &TableFactor,
        on: &Expr,
        clauses: &[MergeClause],
        env: Option<Env<'_>>,
    ) {
        let items: Vec<TableWithJoins> = [table, source]
            .into_iter()
            .map(|relation| TableWithJoins {
                relation: relation.clone(),
                joins: Vec::new(),
            })
            .collect();
        let scope = self.an.relations_of(&items, env);
        let inner = Env {
            scope: &scope,
            parent: env.as_ref(),
        };
        self.joined(&items, inner);
        self.predicate(on, inner);
        for clause in clauses {
            if let Some(p) = &clause.predicate {
                self.predicate(p, inner);
            }
        }
    }

    fn query(&mut self, q: &Query, env: Option<Env<'_>>) {
        if !self.an.spend() {
            self.out.unknown = true;
            return;
        }
        let mut scope = Scope::default();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let shape = {
                    let inner = Env {
                        scope: &scope,
                        parent: env.as_ref(),
                    };
                    self.query(&cte.query, Some(inner));
                    self.an.query(&cte.query, Some(inner))
                };
                scope.ctes.push((
                    fold(self.an.dialect, &cte.alias.name),
                    rename(self.an.dialect, shape, &cte.alias),
                ));
            }
        }
        let inner = Env {
            scope: &scope,
            parent: env.as_ref(),
        };
        let order_by: Vec<&Expr> = match &q.order_by {
            Some(o) => match &o.kind {
                OrderByKind::Expressions(exprs) => exprs.iter().map(|e| &e.expr).collect(),
                // `ORDER BY ALL`: every output column is a sort key.
                OrderByKind::All(_) => {
                    let shape = self.an.set_expr(&q.body, Some(inner));
                    for item in shape.items {
                        let (ShapeItem::Col { lin, .. } | ShapeItem::Star { lin, .. }) = item;
                        self.note(lin);
                    }
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        self.set_expr(&q.body, inner, &order_by);
    }

    fn set_expr(&mut self, body: &SetExpr, env: Env<'_>, order_by: &[&Expr]) {
        match body {
            SetExpr::Select(s) => self.select(s, env, order_by),
            SetExpr::Query(q) => {
                self.query(q, Some(env));
                self.output_keys(body, env, order_by);
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left, env, &[]);
                self.set_expr(right, env, &[]);
                self.output_keys(body, env, order_by);
            }
            SetExpr::Values(values) => {
                for row in &values.rows {
                    for e in row {
                        self.nested(e, env);
                    }
                }
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
                self.statement(s, Some(env));
            }
            SetExpr::Table(_) => {}
        }
    }

    /// `ORDER BY` over a set operation's (or parenthesised query's) output.
    fn output_keys(&mut self, body: &SetExpr, env: Env<'_>, keys: &[&Expr]) {
        if keys.is_empty() {
            return;
        }
        let shape = self.an.set_expr(body, Some(env));
        for key in keys {
            self.key(key, env, &shape.items);
        }
    }

    fn select(&mut self, s: &Select, env: Env<'_>, order_by: &[&Expr]) {
        let scope = self.an.relations_of(&s.from, Some(env));
        let inner = Env {
            scope: &scope,
            parent: Some(&env),
        };
        self.joined(&s.from, inner);
        if let Some(w) = &s.selection {
            self.predicate(w, inner);
        }
        if let Some(h) = &s.having {
            self.predicate(h, inner);
        }
        if let Some(q) = &s.qualify {
            self.predicate(q, inner);
        }
        let output = self.an.select(s, Some(env)).items;
        match &s.group_by {
            GroupByExpr::Expressions(exprs, _) => {
                for e in exprs {
                    self.key(e, inner, &output);
                }
            }
            GroupByExpr::All(_) => {
                for item in &output {
                    let (ShapeItem::Col { lin, .. } | ShapeItem::Star { lin, .. }) = item;
                    self.note(lin.clone());
                }
            }
        }
        if let Some(Distinct::On(exprs)) = &s.distinct {
            for e in exprs {
                self.key(e, inner, &output);
            }
        }
        for e in order_by {
            self.key(e, inner, &output);
        }
        for item in &s.projection {
            if let sqlparser::ast::SelectItem::UnnamedExpr(e)
            | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } = item
            {
                self.nested(e, inner);
            }
        }
    }

    /// Joins' conditions, and the queries inside `FROM` items.
    fn joined(&mut self, from: &[TableWithJoins], env: Env<'_>) {
        for twj in from {
            self.factor(&twj.relation, env);
            for join in &twj.joins {
                self.factor(&join.relation, env);
                if let Some(constraint) = join_constraint(&join.join_operator) {
                    match constraint {
                        JoinConstraint::On(e) => self.predicate(e, env),
                        JoinConstraint::Using(columns) => {
                            for c in columns {
                                if let Some(ident) = c.0.last().and_then(|p| p.as_ident()) {
                                    self.predicate(&Expr::Identifier(ident.clone()), env);
                                }
                            }
                        }
                        // Every column the two sides share is a join key.
                        JoinConstraint::Natural => {
                            for rel in &env.scope.rels {
                                let row = self.an.rel_row(rel);
                                self.note(row);
                            }
                        }
                        JoinConstraint::None => {}
                    }
                }
            }
        }
    }

    fn factor(&mut self, factor: &TableFactor, env: Env<'_>) {
        match factor {
            TableFactor::Derived { subquery, .. } => self.query(subquery, Some(env)),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.joined(std::slice::from_ref(table_with_joins), env),
            TableFactor::TableFunction { expr, .. } => self.nested(expr, env),
            _ => {}
        }
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c)
        | JoinOperator::CrossJoin(c) => Some(c),
        JoinOperator::AsOf { constraint, .. } => Some(constraint),
        JoinOperator::CrossApply | JoinOperator::OuterApply => None,
    }
}

/// The queries directly inside an expression (not those nested in them).
fn top_level_queries(e: &Expr) -> Vec<Query> {
    struct Collect {
        depth: usize,
        found: Vec<Query>,
    }
    impl Visitor for Collect {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if self.depth == 0 {
                self.found.push(q.clone());
            }
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut c = Collect {
        depth: 0,
        found: Vec::new(),
    };
    let _ = e.visit(&mut c);
    c.found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{BinaryUnmaskable, ColumnRef, ColumnRule, Strategy};
    use hoop_sql::pg::Postgres;

    /// Rule 0: customers.ssn; rule 1: bare `email`.
    fn rules() -> MaskRules {
        let rule = |name: &str, column: &str| ColumnRule {
            name: name.into(),
            columns: vec![ColumnRef::parse(column).unwrap()],
            strategy: Strategy::Redact,
            keep_last: 0,
        };
        MaskRules::new(
            vec![rule("ssn", "customers.ssn"), rule("email", "email")],
            Vec::new(),
            Vec::new(),
            BinaryUnmaskable::Refuse,
        )
        .unwrap()
    }

    fn reads(sql: &str) -> PredicateReads {
        predicate_reads(&ParsedSql::parse(&Postgres, sql), &rules())
    }

    #[test]
    fn a_key_given_by_position_is_reported() {
        assert!(reads("SELECT id, ssn FROM customers ORDER BY 2").by_position);
        assert!(reads("SELECT id, ssn FROM customers ORDER BY 1").by_position);
        assert!(reads("SELECT ssn, count(*) FROM customers GROUP BY 1").by_position);
        assert!(!reads("SELECT id, ssn FROM customers ORDER BY id LIMIT 5").by_position);
        assert!(!reads("SELECT id FROM customers WHERE id = 2").by_position);
    }

    #[test]
    fn filters_joins_groupings_and_sort_keys_are_found() {
        for sql in [
            "SELECT id FROM customers WHERE ssn LIKE '87%'",
            "SELECT id FROM customers c WHERE substr(c.ssn, 1, 2) = '87'",
            "SELECT count(*) FROM customers WHERE ssn BETWEEN '100' AND '200'",
            "SELECT id FROM customers ORDER BY ssn",
            "SELECT id, ssn AS s FROM customers ORDER BY s",
            "SELECT id, ssn FROM customers ORDER BY 2",
            "SELECT ssn, count(*) FROM customers GROUP BY ssn",
            "SELECT left(ssn, 3), count(*) FROM customers GROUP BY 1",
            "SELECT count(*) FROM customers GROUP BY ssn HAVING count(*) > 0",
            "SELECT DISTINCT ON (ssn) id FROM customers",
            "SELECT o.id FROM orders o JOIN customers c ON c.ssn = o.ref",
            "SELECT o.id FROM orders o JOIN customers c USING (ssn)",
            "SELECT id FROM orders WHERE ref IN (SELECT ssn FROM customers)",
            "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.ssn = o.ref)",
            "SELECT (SELECT max(id) FROM customers WHERE ssn > '5') AS probe",
            "SELECT * FROM (SELECT id FROM customers WHERE ssn LIKE '8%') s",
            "SELECT * FROM (SELECT * FROM customers) s WHERE s.ssn LIKE '8%'",
            "WITH c AS (SELECT ssn AS x FROM customers) SELECT 1 FROM c WHERE x = '1'",
            "WITH c AS (SELECT id FROM customers WHERE ssn = '1') SELECT * FROM c",
            "SELECT ssn FROM customers UNION SELECT ssn FROM customers ORDER BY 1",
            "UPDATE customers SET name = 'x' WHERE ssn LIKE '9%'",
            "DELETE FROM customers WHERE ssn = '123-45-6789'",
            "MERGE INTO t USING customers c ON t.ref = c.ssn WHEN MATCHED THEN DELETE",
            "INSERT INTO t SELECT id FROM customers WHERE ssn < '5'",
            "COPY (SELECT id FROM customers WHERE ssn LIKE '1%') TO STDOUT",
            "DECLARE cur CURSOR FOR SELECT id FROM customers ORDER BY ssn",
            "EXPLAIN SELECT id FROM customers WHERE ssn = '1'",
            "PREPARE p AS SELECT id FROM customers WHERE ssn = $1",
            "SELECT id FROM users WHERE email = 'a@b.c'",
            "SELECT id FROM customers c WHERE row_to_json(c)::text LIKE '%87%'",
        ] {
            assert!(reads(sql).any(), "{sql}");
        }
        // One expression over two masked columns names one of their rules
        // (lineage keeps the strictest).
        let r = reads("SELECT 1 FROM customers c, users u WHERE c.ssn = u.email");
        assert_eq!(r.rules.len(), 1);
    }

    #[test]
    fn lookalikes_that_only_show_or_filter_other_columns_are_not() {
        for sql in [
            "SELECT ssn FROM customers WHERE id = 7",
            "SELECT id, ssn FROM customers ORDER BY id",
            "SELECT count(ssn) FROM customers GROUP BY name",
            "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id",
            "SELECT ssn AS id FROM customers c ORDER BY c.id",
            "UPDATE customers SET ssn = 'x' WHERE id = 1",
            "SELECT id FROM other WHERE ssn = '1'",
            "SELECT * FROM customers",
            "INSERT INTO customers (id, ssn) VALUES (3, '1')",
        ] {
            assert!(!reads(sql).any(), "{sql}: {:?}", reads(sql));
        }
    }
}
