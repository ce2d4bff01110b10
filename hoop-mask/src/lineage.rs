//! Column lineage: which output columns of a statement may carry a masked value.
//!
//! Pure, from the SQL alone (parsed once, in the session's dialect). The
//! analysis is deliberately *over*-approximating: an output position is
//! `Clean` only when every identifier it could be computed from is known not
//! to be a masked column. Anything the analysis cannot follow is `Unknown`,
//! which masks the whole column (secure by default):
//! - SQL that does not parse (when any column rule exists);
//! - statements whose rows the SQL does not describe (`EXECUTE`, `CALL`,
//!   `FETCH` without the cursor's query, …);
//! - set-returning functions in `FROM` that are not known built-ins;
//! - functions that run SQL given as a string (`query_to_xml`, `dblink`, …);
//! - routines and operators that are not built into the server (a user's
//!   function can return any value it reads: its result is unproven);
//! - `EXPLAIN` of a statement that mentions a masked table or column.
//!
//! Rules of the analysis:
//! - Every identifier anywhere in an output expression counts, including in
//!   `CASE` conditions, `FILTER`, window clauses and nested subqueries (all
//!   their clauses), so `upper(ssn)`, `ssn || ''`, `CASE WHEN ssn …` and
//!   `(SELECT … WHERE ssn …)` are masked.
//! - A bare name is resolved against *every* relation in every enclosing
//!   scope (PostgreSQL picks one; we take the union), so ambiguity only ever
//!   over-masks.
//! - A relation name used as a value (`row_to_json(c)`, `c::text`,
//!   `SELECT c FROM customers c`, `to_json(c.*)`) is a whole-row reference: it
//!   is masked when the relation may hold a masked column (with a bare-column
//!   rule, any base table may).
//! - A base-table star (`*`, `t.*`, `TABLE t`) cannot be expanded from SQL:
//!   its positions are [`ColumnLineage::FromTable`], resolved by the
//!   RowDescription's table OID/attnum; positions after it are only known as
//!   the set's [`Lineage::rest`].
//! - A masked column referenced directly (possibly aliased) is `direct`; a
//!   value computed from it is not, and `partial`/`hash` are then escalated
//!   to `redact` (see [`super::Strategy`]).
//!
//! Known limits (the policy's guardrails cover them; see the module report):
//! scalar user-defined functions that read masked columns internally, and
//! views unless the catalog's view dependencies are loaded with
//! [`super::MaskRules::set_masked_relations`].

use std::{cell::Cell, ops::ControlFlow};

use hoop_sql::{ParsedSql, Routine, SqlDialect};
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement,
    TableAlias, TableFactor, TableWithJoins, Visit, Visitor,
};

use super::{MaskRules, Strategy};

/// A table as SQL names it (folded: unquoted parts lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    /// Schema, when the SQL qualifies the name.
    pub schema: Option<String>,
    /// Table name.
    pub name: String,
}

/// What one output column position may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnLineage {
    /// Computed only from columns no rule masks (or from literals).
    Clean,
    /// May carry a value of a column masked by column rule `rule`.
    Masked {
        /// Index into [`MaskRules::column_rules`].
        rule: usize,
        /// The value is the column's own value (a plain, possibly aliased
        /// reference); otherwise it is computed from it.
        direct: bool,
    },
    /// A column of one of these base tables, expanded from a star: the
    /// RowDescription's table OID/attnum says which.
    FromTable {
        /// The candidate tables.
        tables: Vec<TableName>,
        /// When the RowDescription does not resolve the column (no table OID,
        /// or no RowDescription at all, as in COPY), mask it whole.
        masked_if_unresolved: bool,
    },
    /// Cannot be known from the SQL: mask the whole column.
    Unknown,
}

/// The lineage of every output position of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// Positions known exactly, in order.
    pub columns: Vec<ColumnLineage>,
    /// Every position after `columns` (set when a star of unknown width
    /// came first). `None`: no more positions are expected; any that come
    /// anyway are treated as `Unknown`.
    pub rest: Option<ColumnLineage>,
    /// The statement copies data derived from a masked column somewhere
    /// masking on read cannot follow: into a table (`INSERT … SELECT`,
    /// `UPDATE … SET x = ssn`, `CREATE TABLE AS`, `SELECT INTO`, a view), a
    /// notification or a setting (`pg_notify`, `set_config`), a file or a
    /// remote server. The guardrail should deny such statements.
    pub writes_masked: bool,
    /// The statement changes what the names of masked data mean: an
    /// `ALTER TABLE` of a table a column rule names (or of a column a bare
    /// column rule names, in any table), or a rename to or from such a
    /// name. Masking resolves names, and the catalog hoop reads them from
    /// cannot see an uncommitted change in this session, so the guardrail
    /// should refuse such statements while masking is active.
    pub changes_masked_schema: bool,
}

impl Lineage {
    /// Every position `Unknown` (unparseable SQL, opaque statements).
    pub fn unknown() -> Lineage {
        Lineage {
            columns: Vec::new(),
            rest: Some(ColumnLineage::Unknown),
            writes_masked: false,
            changes_masked_schema: false,
        }
    }

    /// Every position `Clean` (no column rules).
    pub fn clean() -> Lineage {
        Lineage {
            columns: Vec::new(),
            rest: Some(ColumnLineage::Clean),
            writes_masked: false,
            changes_masked_schema: false,
        }
    }

    /// The lineage of output position `index`.
    pub fn column(&self, index: usize) -> &ColumnLineage {
        const UNKNOWN: &ColumnLineage = &ColumnLineage::Unknown;
        self.columns
            .get(index)
            .or(self.rest.as_ref())
            .unwrap_or(UNKNOWN)
    }
}

/// The lineage of every statement of one SQL string (a simple Query may
/// carry several; each gets its own RowDescription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlLineage {
    /// One per statement, in order.
    pub statements: Vec<Lineage>,
    /// The SQL did not parse: every statement is `Unknown` (when any column
    /// rule exists).
    pub unparsed: bool,
}

impl SqlLineage {
    /// The lineage of the `index`-th statement's rows (`Unknown` past the end
    /// or when unparsed).
    pub fn statement(&self, index: usize) -> Lineage {
        self.statements.get(index).cloned().unwrap_or_else(|| {
            if self
                .statements
                .iter()
                .all(|l| l.rest == Some(ColumnLineage::Clean) && l.columns.is_empty())
                && !self.unparsed
            {
                Lineage::clean()
            } else {
                Lineage::unknown()
            }
        })
    }

    /// Whether any statement writes masked data somewhere (see [`Lineage::writes_masked`]).
    pub fn writes_masked(&self) -> bool {
        self.statements.iter().any(|l| l.writes_masked)
    }

    /// Whether any statement changes what masked names mean (see
    /// [`Lineage::changes_masked_schema`]).
    pub fn changes_masked_schema(&self) -> bool {
        self.statements.iter().any(|l| l.changes_masked_schema)
    }
}

/// Analyzes every statement of a parsed text.
pub fn analyze(parsed: &ParsedSql<'_>, rules: &MaskRules) -> SqlLineage {
    if rules.column_rules.is_empty() {
        return SqlLineage {
            statements: Vec::new(),
            unparsed: false,
        };
    }
    let Ok(statements) = &parsed.statements else {
        return SqlLineage {
            statements: Vec::new(),
            unparsed: true,
        };
    };
    let dialect = parsed.dialect();
    let analyzer = Analyzer::new(rules, dialect);
    let side = mentions_side_channel(dialect, parsed.text);
    SqlLineage {
        statements: statements
            .iter()
            .map(|s| match &s.ast {
                Ok(statement) => analyzer.statement(statement, side),
                // A statement the parser cannot read: its rows could carry
                // anything (fail closed).
                Err(_) => Lineage::unknown(),
            })
            .collect(),
        unparsed: !parsed.fully_parsed(),
    }
}

/// The lineage of the rows of one statement's query given as SQL: a
/// cursor's query for rows that come from `FETCH` (the whole `DECLARE`
/// statement, or the query itself).
pub fn analyze_query(parsed: &ParsedSql<'_>, rules: &MaskRules) -> Lineage {
    if rules.column_rules.is_empty() {
        return Lineage::clean();
    }
    let Ok([statement]) = parsed.statements.as_deref() else {
        return Lineage::unknown();
    };
    let Ok(statement) = &statement.ast else {
        return Lineage::unknown();
    };
    let dialect = parsed.dialect();
    let analyzer = Analyzer::new(rules, dialect);
    if let Statement::Declare { stmts } = statement {
        return match stmts.as_slice() {
            [d] => match &d.for_query {
                Some(q) => analyzer.query_lineage(q, None),
                None => Lineage::unknown(),
            },
            _ => Lineage::unknown(),
        };
    }
    analyzer.statement(statement, mentions_side_channel(dialect, parsed.text))
}

/// Folds an identifier as the session's server does.
pub(crate) fn fold(d: &dyn SqlDialect, ident: &Ident) -> String {
    d.fold(ident)
}

fn object_parts(d: &dyn SqlDialect, name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => fold(d, i),
            ObjectNamePart::Function(f) => fold(d, &f.name),
        })
        .collect()
}

pub(crate) fn table_name(d: &dyn SqlDialect, name: &ObjectName) -> TableName {
    let mut parts = object_parts(d, name);
    let table = parts.pop().unwrap_or_default();
    TableName {
        schema: parts.pop(),
        name: table,
    }
}

fn mentions_side_channel(d: &dyn SqlDialect, sql: &str) -> bool {
    if sql.contains(":=") {
        // MySQL's variable assignment inside an expression.
        return true;
    }
    let lower = sql.to_ascii_lowercase();
    d.functions().side_channel.iter().any(|f| lower.contains(f))
}

fn last_name(d: &dyn SqlDialect, name: &ObjectName) -> String {
    object_parts(d, name).pop().unwrap_or_default()
}

/// One output item of a query, by name when it has one.
#[derive(Debug, Clone)]
enum ShapeItem {
    Col {
        name: Option<String>,
        lin: ColumnLineage,
    },
    /// A star of unknown width: `open` base tables (by-name lookups go to
    /// their rules), every position carrying `lin`.
    Star {
        open: Vec<TableName>,
        lin: ColumnLineage,
    },
}

#[derive(Debug, Clone, Default)]
struct Shape {
    items: Vec<ShapeItem>,
}

#[derive(Debug, Clone)]
enum RelSource {
    Base(TableName),
    Derived(Shape),
    /// Every column carries this lineage (functions, renamed base tables, …).
    Opaque(ColumnLineage),
}

#[derive(Debug, Clone)]
struct Rel {
    /// The name it is referenced by (alias, or the table's own name).
    name: String,
    /// The schema it may be qualified with (only without an alias).
    schema: Option<String>,
    source: RelSource,
}

#[derive(Debug, Clone, Default)]
struct Scope {
    rels: Vec<Rel>,
    ctes: Vec<(String, Shape)>,
}

/// A chain of scopes, innermost first.
#[derive(Clone, Copy)]
struct Env<'a> {
    scope: &'a Scope,
    parent: Option<&'a Env<'a>>,
}

impl<'a> Env<'a> {
    fn iter(self) -> impl Iterator<Item = &'a Scope> {
        std::iter::successors(Some(self), |e| e.parent.copied()).map(|e| e.scope)
    }
}

/// Work budget: shapes computed per statement. Pathological nesting runs
/// out of it and becomes `Unknown` instead of taking exponential time.
const BUDGET: u32 = 10_000;

struct Analyzer<'r> {
    rules: &'r MaskRules,
    dialect: &'static dyn SqlDialect,
    budget: Cell<u32>,
    exhausted: Cell<bool>,
}

impl<'r> Analyzer<'r> {
    fn new(rules: &'r MaskRules, dialect: &'static dyn SqlDialect) -> Self {
        Analyzer {
            rules,
            dialect,
            budget: Cell::new(BUDGET),
            exhausted: Cell::new(false),
        }
    }

    fn spend(&self) -> bool {
        let left = self.budget.get();
        if left == 0 {
            self.exhausted.set(true);
            return false;
        }
        self.budget.set(left - 1);
        true
    }

    // ---- lattice -------------------------------------------------------

    fn stricter(&self, a: usize, b: usize) -> usize {
        let s = |r: usize| {
            self.rules
                .column_rules
                .get(r)
                .map_or(Strategy::Redact, |r| r.strategy)
                .strictness()
        };
        if s(b) > s(a) { b } else { a }
    }

    fn join(&self, a: ColumnLineage, b: ColumnLineage) -> ColumnLineage {
        use ColumnLineage::{Clean, FromTable, Masked, Unknown};
        match (a, b) {
            (Clean, x) | (x, Clean) => x,
            (
                Masked {
                    rule: r1,
                    direct: d1,
                },
                Masked {
                    rule: r2,
                    direct: d2,
                },
            ) => Masked {
                rule: self.stricter(r1, r2),
                direct: d1 && d2,
            },
            (
                FromTable {
                    tables: mut t1,
                    masked_if_unresolved: m1,
                },
                FromTable {
                    tables: t2,
                    masked_if_unresolved: m2,
                },
            ) => {
                for t in t2 {
                    if !t1.contains(&t) {
                        t1.push(t);
                    }
                }
                FromTable {
                    tables: t1,
                    masked_if_unresolved: m1 || m2,
                }
            }
            // Unknown absorbs everything; and a position that is either a
            // star column or a masked value cannot be told apart by the
            // RowDescription.
            (Unknown, _)
            | (_, Unknown)
            | (FromTable { .. }, Masked { .. })
            | (Masked { .. }, FromTable { .. }) => Unknown,
        }
    }

    /// The lineage of a *value* computed from `lin` (stars become whole-row
    /// lineage, `direct` is dropped).
    fn as_value(&self, lin: ColumnLineage) -> ColumnLineage {
        match lin {
            ColumnLineage::Masked { rule, .. } => ColumnLineage::Masked {
                rule,
                direct: false,
            },
            ColumnLineage::FromTable {
                tables,
                masked_if_unresolved,
            } => {
                let mut out = ColumnLineage::Clean;
                for t in &tables {
                    out = self.join(out, self.table_row(t));
                }
                if masked_if_unresolved && out == ColumnLineage::Clean {
                    ColumnLineage::Unknown
                } else {
                    out
                }
            }
            other => other,
        }
    }

    // ---- rules ---------------------------------------------------------

    fn masked_relation(&self, t: &TableName) -> Option<usize> {
        self.rules
            .masked_relations
            .iter()
            .find(|(v, _)| {
                v.name == t.name
                    && match (&v.schema, &t.schema) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }
            })
            .map(|&(_, r)| r)
    }

    /// The strictest rule covering `t.column`.
    fn base_column(&self, t: &TableName, column: &str) -> ColumnLineage {
        let mut found = self.masked_relation(t);
        for (i, r) in self.rules.column_rules.iter().enumerate() {
            if r.columns
                .iter()
                .any(|c| c.matches(t.schema.as_deref(), &t.name, column))
            {
                found = Some(found.map_or(i, |f| self.stricter(f, i)));
            }
        }
        match found {
            Some(rule) => ColumnLineage::Masked { rule, direct: true },
            None => ColumnLineage::Clean,
        }
    }

    /// The lineage of a whole row of base table `t`.
    fn table_row(&self, t: &TableName) -> ColumnLineage {
        let mut found = self.masked_relation(t);
        for (i, r) in self.rules.column_rules.iter().enumerate() {
            if r.columns
                .iter()
                .any(|c| c.matches_table(t.schema.as_deref(), &t.name))
            {
                found = Some(found.map_or(i, |f| self.stricter(f, i)));
            }
        }
        match found {
            Some(rule) => ColumnLineage::Masked {
                rule,
                direct: false,
            },
            None => ColumnLineage::Clean,
        }
    }

    fn bare_rule(&self, column: &str) -> ColumnLineage {
        let mut found: Option<usize> = None;
        for (i, r) in self.rules.column_rules.iter().enumerate() {
            if r.columns
                .iter()
                .any(|c| c.table.is_none() && c.column == column)
            {
                found = Some(found.map_or(i, |f| self.stricter(f, i)));
            }
        }
        match found {
            Some(rule) => ColumnLineage::Masked { rule, direct: true },
            None => ColumnLineage::Clean,
        }
    }

    fn star_of_table(&self, t: &TableName) -> ShapeItem {
        let masked = self.table_row(t) != ColumnLineage::Clean;
        ShapeItem::Star {
            open: vec![t.clone()],
            lin: ColumnLineage::FromTable {
                tables: vec![t.clone()],
                masked_if_unresolved: masked,
            },
        }
    }

    // ---- relations -----------------------------------------------------

    fn rel_column(&self, rel: &Rel, column: &str) -> ColumnLineage {
        match &rel.source {
            RelSource::Base(t) => self.base_column(t, column),
            RelSource::Opaque(lin) => lin.clone(),
            RelSource::Derived(shape) => self.shape_column(shape, column),
        }
    }

    fn shape_column(&self, shape: &Shape, column: &str) -> ColumnLineage {
        let mut out = ColumnLineage::Clean;
        for item in &shape.items {
            match item {
                ShapeItem::Col { name: Some(n), lin } if n == column => {
                    out = self.join(out, lin.clone());
                }
                ShapeItem::Col { .. } => {}
                ShapeItem::Star { open, lin } => {
                    if open.is_empty() {
                        out = self.join(out, self.as_value(lin.clone()));
                    }
                    for t in open {
                        out = self.join(out, self.base_column(t, column));
                    }
                }
            }
        }
        out
    }

    fn rel_row(&self, rel: &Rel) -> ColumnLineage {
        match &rel.source {
            RelSource::Base(t) => self.table_row(t),
            RelSource::Opaque(lin) => self.as_value(lin.clone()),
            RelSource::Derived(shape) => {
                let mut out = ColumnLineage::Clean;
                for item in &shape.items {
                    let lin = match item {
                        ShapeItem::Col { lin, .. } | ShapeItem::Star { lin, .. } => lin.clone(),
                    };
                    out = self.join(out, self.as_value(lin));
                }
                out
            }
        }
    }

    fn rel_items(&self, rel: &Rel) -> Vec<ShapeItem> {
        match &rel.source {
            RelSource::Base(t) => vec![self.star_of_table(t)],
            RelSource::Derived(shape) => shape.items.clone(),
            RelSource::Opaque(lin) => vec![ShapeItem::Star {
                open: Vec::new(),
                lin: lin.clone(),
            }],
        }
    }

    fn rel_matches(rel: &Rel, schema: Option<&str>, name: &str) -> bool {
        rel.name == name
            && match (schema, &rel.schema) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Resolves an identifier chain (`x`, `t.x`, `s.t.x`) against every scope.
    fn resolve(&self, parts: &[String], scopes: &[&Scope]) -> ColumnLineage {
        let mut out = ColumnLineage::Clean;
        match parts {
            [] => {}
            [x] => {
                out = self.bare_rule(x);
                for scope in scopes {
                    for rel in &scope.rels {
                        out = self.join(out, self.rel_column(rel, x));
                        if Self::rel_matches(rel, None, x) {
                            out = self.join(out, self.rel_row(rel));
                        }
                    }
                }
            }
            [qual @ .., t, x] => {
                let schema = qual.last().cloned();
                let mut found = false;
                for scope in scopes {
                    for rel in &scope.rels {
                        if Self::rel_matches(rel, schema.as_deref(), t) {
                            found = true;
                            out = self.join(out, self.rel_column(rel, x));
                        }
                    }
                }
                out = self.join(out, self.bare_rule(x));
                if !found {
                    // Not a relation: `(composite).field`, or an outer or
                    // unknown name. Take both readings.
                    out = self.join(out, self.resolve(std::slice::from_ref(t), scopes));
                    out = self.join(out, self.resolve(std::slice::from_ref(x), scopes));
                }
            }
        }
        out
    }

    /// A whole-row reference through a qualified star (`c.*` inside an expression).
    fn resolve_row(&self, name: &ObjectName, scopes: &[&Scope]) -> ColumnLineage {
        let parts = object_parts(self.dialect, name);
        let Some((t, qual)) = parts.split_last() else {
            return ColumnLineage::Unknown;
        };
        let schema = qual.last().map(String::as_str);
        let mut out = ColumnLineage::Clean;
        let mut found = false;
        for scope in scopes {
            for rel in &scope.rels {
                if Self::rel_matches(rel, schema, t) {
                    found = true;
                    out = self.join(out, self.rel_row(rel));
                }
            }
        }
        if found { out } else { ColumnLineage::Unknown }
    }

    /// Every relation in scope as a whole row (an unqualified `*` in an expression).
    fn all_rows(&self, scopes: &[&Scope]) -> ColumnLineage {
        let mut out = ColumnLineage::Clean;
        for scope in scopes.iter().take(1) {
            for rel in &scope.rels {
                out = self.join(out, self.rel_row(rel));
            }
        }
        out
    }

    // ---- expressions ---------------------------------------------------

    fn expr(&self, expr: &Expr, env: Option<Env<'_>>) -> ColumnLineage {
        let outer: Vec<&Scope> = env.map(|e| e.iter().collect()).unwrap_or_default();
        let mut v = TaintVisitor {
            an: self,
            outer,
            inner: Vec::new(),
            lin: ColumnLineage::Clean,
            side: Vec::new(),
            writes: false,
        };
        let _ = expr.visit(&mut v);
        let lin = v.lin;
        if is_plain_reference(expr) {
            lin
        } else {
            self.as_value(lin)
        }
    }

    // ---- queries -------------------------------------------------------

    fn query_lineage(&self, q: &Query, env: Option<Env<'_>>) -> Lineage {
        let shape = self.query(q, env);
        let mut lineage = self.shape_lineage(&shape);
        lineage.writes_masked = Self::select_into_masked(q, &lineage);
        lineage
    }

    fn select_into_masked(q: &Query, lineage: &Lineage) -> bool {
        let into = matches!(q.body.as_ref(), SetExpr::Select(s) if s.into.is_some());
        into && lineage_touches_masked(lineage)
    }

    fn shape_lineage(&self, shape: &Shape) -> Lineage {
        if self.exhausted.get() {
            return Lineage::unknown();
        }
        let mut columns = Vec::new();
        let mut rest: Option<ColumnLineage> = None;
        for item in &shape.items {
            match (item, &mut rest) {
                (ShapeItem::Col { lin, .. }, None) => columns.push(lin.clone()),
                (ShapeItem::Star { lin, .. }, None) => {
                    columns.push(lin.clone());
                    rest = Some(lin.clone());
                }
                (ShapeItem::Col { lin, .. } | ShapeItem::Star { lin, .. }, Some(r)) => {
                    *r = self.join(r.clone(), lin.clone());
                }
            }
        }
        Lineage {
            columns,
            rest,
            writes_masked: false,
            changes_masked_schema: false,
        }
    }

    fn query(&self, q: &Query, env: Option<Env<'_>>) -> Shape {
        if !self.spend() {
            return unknown_shape();
        }
        let mut scope = Scope::default();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name = fold(self.dialect, &cte.alias.name);
                let shape = {
                    let env2 = Env {
                        scope: &scope,
                        parent: env.as_ref(),
                    };
                    if with.recursive {
                        // Iterate to a fixed point: start from the
                        // non-recursive branch, bounded by the lattice height.
                        let mut guess = match cte.query.body.as_ref() {
                            SetExpr::SetOperation { left, .. } => self.set_expr(left, Some(env2)),
                            _ => unknown_shape(),
                        };
                        for _ in 0..3 {
                            let mut s2 = scope.clone();
                            s2.ctes.push((
                                name.clone(),
                                rename(self.dialect, guess.clone(), &cte.alias),
                            ));
                            let env3 = Env {
                                scope: &s2,
                                parent: env.as_ref(),
                            };
                            guess = self.query(&cte.query, Some(env3));
                        }
                        guess
                    } else {
                        self.query(&cte.query, Some(env2))
                    }
                };
                scope
                    .ctes
                    .push((name, rename(self.dialect, shape, &cte.alias)));
            }
        }
        let env2 = Env {
            scope: &scope,
            parent: env.as_ref(),
        };
        self.set_expr(&q.body, Some(env2))
    }

    fn set_expr(&self, body: &SetExpr, env: Option<Env<'_>>) -> Shape {
        match body {
            SetExpr::Select(s) => self.select(s, env),
            SetExpr::Query(q) => self.query(q, env),
            SetExpr::SetOperation { left, right, .. } => {
                let l = self.set_expr(left, env);
                let r = self.set_expr(right, env);
                self.zip(l, &r)
            }
            SetExpr::Values(values) => {
                let mut items: Vec<ShapeItem> = Vec::new();
                for row in &values.rows {
                    for (i, e) in row.iter().enumerate() {
                        let lin = self.expr(e, env);
                        match items.get_mut(i) {
                            Some(ShapeItem::Col { lin: l, .. }) => *l = self.join(l.clone(), lin),
                            _ => items.push(ShapeItem::Col {
                                name: Some(format!("column{}", i + 1)),
                                lin,
                            }),
                        }
                    }
                }
                Shape { items }
            }
            SetExpr::Table(t) => {
                let Some(name) = &t.table_name else {
                    return unknown_shape();
                };
                let tn = TableName {
                    schema: t.schema_name.as_ref().map(|s| s.to_lowercase()),
                    name: name.to_lowercase(),
                };
                if tn.schema.is_none()
                    && let Some(shape) = env.and_then(|e| find_cte(e, &tn.name))
                {
                    return shape;
                }
                Shape {
                    items: vec![self.star_of_table(&tn)],
                }
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => {
                let (shape, _) = self.dml(s, env);
                shape.unwrap_or_default()
            }
            SetExpr::Merge(_) => unknown_shape(),
        }
    }

    /// Position-wise join of two set-operation branches (names from the left).
    fn zip(&self, l: Shape, r: &Shape) -> Shape {
        let ll = self.shape_lineage(&l);
        let rl = self.shape_lineage(r);
        let exact = ll.rest.is_none() && rl.rest.is_none() && ll.columns.len() == rl.columns.len();
        if exact {
            let items = l
                .items
                .into_iter()
                .zip(rl.columns)
                .map(|(item, rlin)| match item {
                    ShapeItem::Col { name, lin } => ShapeItem::Col {
                        name,
                        lin: self.join(lin, rlin),
                    },
                    star @ ShapeItem::Star { .. } => star,
                })
                .collect();
            return Shape { items };
        }
        // Widths differ or are unknown: positions up to the shorter known
        // prefix join pairwise, the rest joins everything after.
        let n = ll.columns.len().min(rl.columns.len());
        let mut items = Vec::new();
        for i in 0..n {
            items.push(ShapeItem::Col {
                name: None,
                lin: self.join(ll.columns[i].clone(), rl.columns[i].clone()),
            });
        }
        let mut rest = ColumnLineage::Clean;
        for lin in ll.columns[n..]
            .iter()
            .chain(&rl.columns[n..])
            .chain(ll.rest.iter())
            .chain(rl.rest.iter())
        {
            rest = self.join(rest, lin.clone());
        }
        let mut open = Vec::new();
        for item in l.items.iter().chain(&r.items) {
            if let ShapeItem::Star { open: o, .. } = item {
                open.extend(o.iter().cloned());
            }
        }
        items.push(ShapeItem::Star { open, lin: rest });
        Shape { items }
    }

    fn select(&self, s: &Select, env: Option<Env<'_>>) -> Shape {
        let scope = self.relations_of(&s.from, env);
        let env2 = Env {
            scope: &scope,
            parent: env.as_ref(),
        };
        let mut items = Vec::new();
        for item in &s.projection {
            match item {
                SelectItem::UnnamedExpr(e) => items.push(ShapeItem::Col {
                    name: default_name(self.dialect, e),
                    lin: self.expr(e, Some(env2)),
                }),
                SelectItem::ExprWithAlias { expr, alias } => items.push(ShapeItem::Col {
                    name: Some(fold(self.dialect, alias)),
                    lin: self.expr(expr, Some(env2)),
                }),
                SelectItem::Wildcard(_) => {
                    for rel in &scope.rels {
                        items.extend(self.rel_items(rel));
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => {
                        let parts = object_parts(self.dialect, name);
                        let (t, qual) = parts
                            .split_last()
                            .map_or(("", None), |(t, q)| (t.as_str(), q.last()));
                        let mut matched = false;
                        for rel in &scope.rels {
                            if Self::rel_matches(rel, qual.map(String::as_str), t) {
                                matched = true;
                                items.extend(self.rel_items(rel));
                            }
                        }
                        if !matched {
                            items.push(ShapeItem::Star {
                                open: Vec::new(),
                                lin: ColumnLineage::Unknown,
                            });
                        }
                    }
                    SelectItemQualifiedWildcardKind::Expr(e) => items.push(ShapeItem::Star {
                        open: Vec::new(),
                        lin: self.expr(e, Some(env2)),
                    }),
                },
            }
        }
        Shape { items }
    }

    fn relations_of(&self, from: &[TableWithJoins], env: Option<Env<'_>>) -> Scope {
        let mut scope = Scope::default();
        for twj in from {
            for tf in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
                // LATERAL items may see earlier items: give them the scope so far.
                let rels = {
                    let env2 = Env {
                        scope: &scope,
                        parent: env.as_ref(),
                    };
                    self.table_factor(tf, Some(env2))
                };
                scope.rels.extend(rels);
            }
        }
        scope
    }

    fn table_factor(&self, tf: &TableFactor, env: Option<Env<'_>>) -> Vec<Rel> {
        let alias_of =
            |alias: &Option<TableAlias>| alias.as_ref().map(|a| fold(self.dialect, &a.name));
        match tf {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if let Some(args) = args {
                    let lin = self.function_rows(name, &args.args, env);
                    let rel_name = alias_of(alias).unwrap_or_else(|| last_name(self.dialect, name));
                    return vec![opaque(rel_name, lin)];
                }
                let tn = table_name(self.dialect, name);
                let rel_name = alias_of(alias).unwrap_or_else(|| tn.name.clone());
                let schema = if alias.is_some() {
                    None
                } else {
                    tn.schema.clone()
                };
                if tn.schema.is_none()
                    && let Some(shape) = env.and_then(|e| find_cte(e, &tn.name))
                {
                    let shape = match alias {
                        Some(a) => rename(self.dialect, shape, a),
                        None => shape,
                    };
                    return vec![Rel {
                        name: rel_name,
                        schema: None,
                        source: RelSource::Derived(shape),
                    }];
                }
                let source = match alias {
                    // `customers AS c(a, b)` renames leading columns we
                    // cannot name: treat every column as the whole row.
                    Some(a) if !a.columns.is_empty() => RelSource::Opaque(self.table_row(&tn)),
                    _ => RelSource::Base(tn),
                };
                vec![Rel {
                    name: rel_name,
                    schema,
                    source,
                }]
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                let shape = self.query(subquery, env);
                let shape = match alias {
                    Some(a) => rename(self.dialect, shape, a),
                    None => shape,
                };
                vec![Rel {
                    name: alias_of(alias).unwrap_or_default(),
                    schema: None,
                    source: RelSource::Derived(shape),
                }]
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                let lin = self.function_rows(name, args, env);
                vec![opaque(
                    alias_of(alias).unwrap_or_else(|| last_name(self.dialect, name)),
                    lin,
                )]
            }
            TableFactor::TableFunction { expr, alias } => {
                let lin = match expr {
                    Expr::Function(f) => {
                        let args: Vec<FunctionArg> = match &f.args {
                            FunctionArguments::List(l) => l.args.clone(),
                            _ => Vec::new(),
                        };
                        self.function_rows(&f.name, &args, env)
                    }
                    other => self.as_value(self.expr(other, env)),
                };
                vec![opaque(alias_of(alias).unwrap_or_default(), lin)]
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                let mut lin = ColumnLineage::Clean;
                for e in array_exprs {
                    lin = self.join(lin, self.expr(e, env));
                }
                vec![opaque(
                    alias_of(alias).unwrap_or_else(|| "unnest".into()),
                    self.as_value(lin),
                )]
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let inner = self.relations_of(std::slice::from_ref(table_with_joins), env);
                match alias_of(alias) {
                    None => inner.rels,
                    Some(name) => {
                        let mut lin = ColumnLineage::Clean;
                        for rel in &inner.rels {
                            lin = self.join(lin, self.rel_row(rel));
                        }
                        vec![opaque(name, lin)]
                    }
                }
            }
            _ => vec![opaque(String::new(), ColumnLineage::Unknown)],
        }
    }

    /// Rows of a function in `FROM`: known built-ins carry their arguments;
    /// anything else (another schema's function of the same name too) is
    /// `Unknown`.
    fn function_rows(
        &self,
        function: &ObjectName,
        args: &[FunctionArg],
        env: Option<Env<'_>>,
    ) -> ColumnLineage {
        let name = last_name(self.dialect, function);
        if !self
            .dialect
            .functions()
            .row_functions
            .contains(&name.as_str())
            || self.dialect.routine(function) == Routine::NotBuiltIn
        {
            return ColumnLineage::Unknown;
        }
        let mut lin = ColumnLineage::Clean;
        for arg in args {
            let e = match arg {
                FunctionArg::Named { arg, .. }
                | FunctionArg::ExprNamed { arg, .. }
                | FunctionArg::Unnamed(arg) => arg,
            };
            lin = self.join(
                lin,
                match e {
                    FunctionArgExpr::Expr(e) => self.expr(e, env),
                    _ => ColumnLineage::Unknown,
                },
            );
        }
        self.as_value(lin)
    }

    // ---- statements ----------------------------------------------------

    fn statement(&self, statement: &Statement, side_channel: bool) -> Lineage {
        let mut lineage = match statement {
            Statement::Query(q) => self.query_lineage(q, None),
            Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_) => {
                let (shape, writes) = self.dml(statement, None);
                let mut l = shape.map_or_else(Lineage::unknown, |s| self.shape_lineage(&s));
                if shape_is_none_returning(statement) {
                    l = Lineage::clean();
                }
                l.writes_masked = writes;
                l
            }
            Statement::Explain { statement, .. } => {
                if self.mentions_masked(&statement.to_string()) {
                    Lineage::unknown()
                } else {
                    Lineage::clean()
                }
            }
            Statement::CreateTable(ct) => {
                let mut l = Lineage::clean();
                if let Some(q) = &ct.query {
                    l.writes_masked = lineage_touches_masked(&self.query_lineage(q, None));
                }
                l
            }
            Statement::CreateView { query, .. } => {
                let mut l = Lineage::clean();
                l.writes_masked = lineage_touches_masked(&self.query_lineage(query, None));
                l
            }
            Statement::Copy {
                source, to, target, ..
            } => {
                let to_client = matches!(
                    target,
                    sqlparser::ast::CopyTarget::Stdout | sqlparser::ast::CopyTarget::Stdin
                );
                match source {
                    // COPY … TO STDOUT: its rows are a result like any other.
                    sqlparser::ast::CopySource::Query(q) if *to && to_client => {
                        self.query_lineage(q, None)
                    }
                    sqlparser::ast::CopySource::Table {
                        table_name,
                        columns,
                    } if *to && to_client => {
                        let t = table_name_of(self.dialect, table_name);
                        let items = if columns.is_empty() {
                            vec![self.star_of_table(&t)]
                        } else {
                            columns
                                .iter()
                                .map(|c| {
                                    let name = fold(self.dialect, c);
                                    ShapeItem::Col {
                                        lin: self.base_column(&t, &name),
                                        name: Some(name),
                                    }
                                })
                                .collect()
                        };
                        self.shape_lineage(&Shape { items })
                    }
                    // A server-side file or program target is a write.
                    _ if *to => {
                        let mut l = Lineage::clean();
                        l.writes_masked = match source {
                            sqlparser::ast::CopySource::Table { table_name, .. } => {
                                self.table_row(&table_name_of(self.dialect, table_name))
                                    != ColumnLineage::Clean
                            }
                            sqlparser::ast::CopySource::Query(q) => {
                                lineage_touches_masked(&self.query_lineage(q, None))
                            }
                        };
                        l
                    }
                    // COPY … FROM returns no rows.
                    _ => Lineage::clean(),
                }
            }
            Statement::Merge {
                table,
                source,
                clauses,
                output,
                ..
            } => {
                let mut l = if output.is_some() {
                    Lineage::unknown()
                } else {
                    Lineage::clean()
                };
                l.writes_masked = self.merge_writes_masked(table, source, clauses);
                l
            }
            // `SET @v = (SELECT ssn …)`: a session variable keeps the value
            // where masking on read cannot follow it (`SELECT @v` later).
            // A server setting's value cannot read a column.
            Statement::Set(_) => {
                let mut l = Lineage::clean();
                l.writes_masked = self.statement_taint(statement) != ColumnLineage::Clean;
                l
            }
            // Statements that return no rows, or rows that are not table data.
            Statement::Declare { .. }
            | Statement::ShowVariable { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
            | Statement::Prepare { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. }
            | Statement::Truncate { .. }
            | Statement::Drop { .. }
            | Statement::CreateIndex(_) => Lineage::clean(),
            Statement::AlterTable {
                name, operations, ..
            } => {
                let mut l = Lineage::clean();
                l.changes_masked_schema = self.alter_touches_masked(name, operations);
                l
            }
            Statement::RenameTable(renames) => {
                let mut l = Lineage::clean();
                l.changes_masked_schema = renames.iter().any(|r| {
                    self.names_masked_table(&table_name_of(self.dialect, &r.old_name))
                        || self.names_masked_table(&table_name_of(self.dialect, &r.new_name))
                });
                l
            }
            _ => Lineage::unknown(),
        };
        if side_channel && !lineage.writes_masked {
            lineage.writes_masked = self.side_channel_writes(statement);
        }
        if self.exhausted.get() {
            let writes = lineage.writes_masked;
            lineage = Lineage::unknown();
            lineage.writes_masked = writes;
        }
        lineage
    }

    /// Whether a column rule names table `t` itself (not a bare column
    /// rule), or `t` is a view over masked columns.
    fn names_masked_table(&self, t: &TableName) -> bool {
        self.masked_relation(t).is_some()
            || self.rules.column_rules.iter().any(|r| {
                r.columns
                    .iter()
                    .any(|c| c.table.is_some() && c.matches_table(t.schema.as_deref(), &t.name))
            })
    }

    /// Whether a bare column rule (any table) masks columns named `column`.
    fn bare_masked_column(&self, column: &Ident) -> bool {
        let column = fold(self.dialect, column);
        self.rules.column_rules.iter().any(|r| {
            r.columns
                .iter()
                .any(|c| c.table.is_none() && c.column == column)
        })
    }

    /// See [`Lineage::changes_masked_schema`].
    fn alter_touches_masked(
        &self,
        name: &ObjectName,
        operations: &[sqlparser::ast::AlterTableOperation],
    ) -> bool {
        use sqlparser::ast::AlterTableOperation as Op;
        if self.names_masked_table(&table_name_of(self.dialect, name)) {
            return true;
        }
        operations.iter().any(|op| match op {
            Op::RenameTable { table_name } => {
                let new = match table_name {
                    sqlparser::ast::RenameTableNameKind::As(n)
                    | sqlparser::ast::RenameTableNameKind::To(n) => n,
                };
                self.names_masked_table(&table_name_of(self.dialect, new))
            }
            Op::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                self.bare_masked_column(old_column_name) || self.bare_masked_column(new_column_name)
            }
            Op::ChangeColumn {
                old_name, new_name, ..
            } => self.bare_masked_column(old_name) || self.bare_masked_column(new_name),
            Op::AlterColumn { column_name, .. } => self.bare_masked_column(column_name),
            Op::ModifyColumn { col_name, .. } => self.bare_masked_column(col_name),
            Op::DropColumn { column_names, .. } => {
                column_names.iter().any(|c| self.bare_masked_column(c))
            }
            _ => false,
        })
    }

    /// Whether `text` names any masked column or table (EXPLAIN can print
    /// values of either).
    fn mentions_masked(&self, text: &str) -> bool {
        let lower = text.to_lowercase();
        self.rules.column_rules.iter().any(|r| {
            r.columns.iter().any(|c| {
                lower.contains(&c.column) || c.table.as_ref().is_some_and(|t| lower.contains(t))
            })
        }) || self
            .rules
            .masked_relations
            .iter()
            .any(|(t, _)| lower.contains(&t.name))
    }

    /// The lineage of every value expression of `statement`, joined.
    fn statement_taint(&self, statement: &Statement) -> ColumnLineage {
        let mut v = TaintVisitor {
            an: self,
            outer: Vec::new(),
            inner: Vec::new(),
            lin: ColumnLineage::Clean,
            side: Vec::new(),
            writes: false,
        };
        let _ = statement.visit(&mut v);
        v.lin
    }

    fn side_channel_writes(&self, statement: &Statement) -> bool {
        let mut v = TaintVisitor {
            an: self,
            outer: Vec::new(),
            inner: Vec::new(),
            lin: ColumnLineage::Clean,
            side: Vec::new(),
            writes: false,
        };
        let _ = statement.visit(&mut v);
        v.writes
    }

    /// RETURNING shape (None without RETURNING) and whether masked data is written.
    fn dml(&self, statement: &Statement, env: Option<Env<'_>>) -> (Option<Shape>, bool) {
        match statement {
            Statement::Insert(ins) => {
                let target = match &ins.table {
                    sqlparser::ast::TableObject::TableName(n) => table_name(self.dialect, n),
                    sqlparser::ast::TableObject::TableFunction(_) => TableName {
                        schema: None,
                        name: String::new(),
                    },
                };
                let writes = ins
                    .source
                    .as_ref()
                    .is_some_and(|q| lineage_touches_masked(&self.query_lineage(q, env)));
                let mut scope = Scope::default();
                scope.rels.push(Rel {
                    name: ins
                        .table_alias
                        .as_ref()
                        .map_or_else(|| target.name.clone(), |a| fold(self.dialect, a)),
                    schema: target.schema.clone(),
                    source: RelSource::Base(target.clone()),
                });
                scope.rels.push(Rel {
                    name: "excluded".into(),
                    schema: None,
                    source: RelSource::Opaque(
                        ins.source.as_ref().map_or(ColumnLineage::Clean, |q| {
                            union_all(self, &self.query_lineage(q, env))
                        }),
                    ),
                });
                let env2 = Env {
                    scope: &scope,
                    parent: env.as_ref(),
                };
                let mut writes = writes;
                if let Some(sqlparser::ast::OnInsert::OnConflict(oc)) = &ins.on
                    && let sqlparser::ast::OnConflictAction::DoUpdate(du) = &oc.action
                {
                    writes |= du
                        .assignments
                        .iter()
                        .any(|a| self.expr(&a.value, Some(env2)) != ColumnLineage::Clean);
                }
                (
                    ins.returning
                        .as_ref()
                        .map(|r| self.projection(r, &scope, env)),
                    writes,
                )
            }
            Statement::Update {
                table,
                assignments,
                from,
                returning,
                ..
            } => {
                let mut from_items = vec![table.clone()];
                if let Some(
                    sqlparser::ast::UpdateTableFromKind::AfterSet(f)
                    | sqlparser::ast::UpdateTableFromKind::BeforeSet(f),
                ) = from
                {
                    from_items.extend(f.iter().cloned());
                }
                let scope = self.relations_of(&from_items, env);
                let env2 = Env {
                    scope: &scope,
                    parent: env.as_ref(),
                };
                // Writing a masked column's own value back into itself
                // (`SET ssn = ssn`) is harmless, but telling it apart from
                // `SET note = ssn` needs the target; keep it simple: any
                // masked value written into a column no rule masks counts.
                let writes = assignments.iter().any(|a| {
                    let lin = self.expr(&a.value, Some(env2));
                    lin != ColumnLineage::Clean && !self.target_is_masked(&a.target, &scope)
                });
                (
                    returning.as_ref().map(|r| self.projection(r, &scope, env)),
                    writes,
                )
            }
            Statement::Delete(del) => {
                let tables = match &del.from {
                    sqlparser::ast::FromTable::WithFromKeyword(t)
                    | sqlparser::ast::FromTable::WithoutKeyword(t) => t.clone(),
                };
                let mut all = tables;
                if let Some(using) = &del.using {
                    all.extend(using.iter().cloned());
                }
                let scope = self.relations_of(&all, env);
                (
                    del.returning
                        .as_ref()
                        .map(|r| self.projection(r, &scope, env)),
                    false,
                )
            }
            _ => (Some(unknown_shape()), false),
        }
    }

    /// Whether a `MERGE` writes a value derived from a masked column into
    /// a column no rule masks (its `UPDATE SET` and `INSERT VALUES` see the
    /// target and the source, as `UPDATE … FROM` does). An insert of a
    /// whole source row (`INSERT ROW`) counts when the source carries any
    /// masked column.
    fn merge_writes_masked(
        &self,
        table: &TableFactor,
        source: &TableFactor,
        clauses: &[sqlparser::ast::MergeClause],
    ) -> bool {
        let from = [table, source].map(|relation| TableWithJoins {
            relation: relation.clone(),
            joins: Vec::new(),
        });
        let scope = self.relations_of(&from, None);
        let env = Env {
            scope: &scope,
            parent: None,
        };
        let target_column_masked = |column: &Ident| {
            scope.rels.first().is_some_and(|rel| {
                matches!(
                    self.rel_column(rel, &fold(self.dialect, column)),
                    ColumnLineage::Masked { .. }
                )
            })
        };
        clauses.iter().any(|clause| match &clause.action {
            sqlparser::ast::MergeAction::Update { assignments } => assignments.iter().any(|a| {
                self.expr(&a.value, Some(env)) != ColumnLineage::Clean
                    && !self.target_is_masked(&a.target, &scope)
            }),
            sqlparser::ast::MergeAction::Insert(insert) => match &insert.kind {
                sqlparser::ast::MergeInsertKind::Values(values) => values.rows.iter().any(|row| {
                    row.iter().enumerate().any(|(i, e)| {
                        self.expr(e, Some(env)) != ColumnLineage::Clean
                            && !insert.columns.get(i).is_some_and(target_column_masked)
                    })
                }),
                sqlparser::ast::MergeInsertKind::Row => scope
                    .rels
                    .get(1)
                    .is_some_and(|rel| self.rel_row(rel) != ColumnLineage::Clean),
            },
            sqlparser::ast::MergeAction::Delete => false,
        })
    }

    fn target_is_masked(&self, target: &sqlparser::ast::AssignmentTarget, scope: &Scope) -> bool {
        let sqlparser::ast::AssignmentTarget::ColumnName(name) = target else {
            return false;
        };
        let parts = object_parts(self.dialect, name);
        let Some(col) = parts.last() else {
            return false;
        };
        scope
            .rels
            .first()
            .is_some_and(|rel| matches!(self.rel_column(rel, col), ColumnLineage::Masked { .. }))
    }

    fn projection(&self, items: &[SelectItem], scope: &Scope, env: Option<Env<'_>>) -> Shape {
        // Reuse `select` by building the same projection over a prepared scope.
        let env2 = Env {
            scope,
            parent: env.as_ref(),
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                SelectItem::UnnamedExpr(e) => out.push(ShapeItem::Col {
                    name: default_name(self.dialect, e),
                    lin: self.expr(e, Some(env2)),
                }),
                SelectItem::ExprWithAlias { expr, alias } => out.push(ShapeItem::Col {
                    name: Some(fold(self.dialect, alias)),
                    lin: self.expr(expr, Some(env2)),
                }),
                SelectItem::Wildcard(_) => {
                    for rel in scope.rels.iter().filter(|r| r.name != "excluded") {
                        out.extend(self.rel_items(rel));
                    }
                }
                SelectItem::QualifiedWildcard(..) => out.push(ShapeItem::Star {
                    open: Vec::new(),
                    lin: self.all_rows(&[scope]),
                }),
            }
        }
        Shape { items: out }
    }
}

fn table_name_of(d: &dyn SqlDialect, name: &ObjectName) -> TableName {
    table_name(d, name)
}

fn shape_is_none_returning(statement: &Statement) -> bool {
    match statement {
        Statement::Insert(i) => i.returning.is_none(),
        Statement::Update { returning, .. } => returning.is_none(),
        Statement::Delete(d) => d.returning.is_none(),
        _ => false,
    }
}

fn union_all(an: &Analyzer<'_>, l: &Lineage) -> ColumnLineage {
    let mut out = ColumnLineage::Clean;
    for c in l.columns.iter().chain(l.rest.iter()) {
        out = an.join(out, an.as_value(c.clone()));
    }
    out
}

/// Whether any position may carry a masked value, for the write checks.
fn lineage_touches_masked(l: &Lineage) -> bool {
    l.columns.iter().chain(l.rest.iter()).any(|c| match c {
        ColumnLineage::Clean => false,
        ColumnLineage::FromTable {
            masked_if_unresolved,
            ..
        } => *masked_if_unresolved,
        _ => true,
    })
}

fn opaque(name: String, lin: ColumnLineage) -> Rel {
    Rel {
        name,
        schema: None,
        source: RelSource::Opaque(lin),
    }
}

fn unknown_shape() -> Shape {
    Shape {
        items: vec![ShapeItem::Star {
            open: Vec::new(),
            lin: ColumnLineage::Unknown,
        }],
    }
}

fn find_cte(env: Env<'_>, name: &str) -> Option<Shape> {
    env.iter().find_map(|s| {
        s.ctes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, shape)| shape.clone())
    })
}

/// Applies `AS alias(a, b, …)` column names to a shape.
fn rename(d: &dyn SqlDialect, mut shape: Shape, alias: &TableAlias) -> Shape {
    let mut names = alias.columns.iter().map(|c| fold(d, &c.name));
    for item in &mut shape.items {
        match item {
            ShapeItem::Col { name, .. } => match names.next() {
                Some(n) => *name = Some(n),
                None => break,
            },
            // Names after a star of unknown width cannot be placed.
            ShapeItem::Star { .. } => break,
        }
    }
    shape
}

/// PostgreSQL's default output name, where one exists.
fn default_name(d: &dyn SqlDialect, e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(fold(d, i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| fold(d, i)),
        Expr::Function(f) => Some(last_name(d, &f.name)),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => default_name(d, expr),
        _ => None,
    }
}

fn is_plain_reference(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(e) => is_plain_reference(e),
        _ => false,
    }
}

/// Walks an expression (and every nested query in it), joining the lineage
/// of every identifier it meets.
struct TaintVisitor<'a, 'r> {
    an: &'a Analyzer<'r>,
    /// Scopes of the enclosing queries, innermost first.
    outer: Vec<&'a Scope>,
    /// Scopes of the nested queries being visited (pushed on entry).
    inner: Vec<Scope>,
    lin: ColumnLineage,
    /// Side-channel function calls being visited: (expr address, lineage before).
    side: Vec<(usize, ColumnLineage)>,
    writes: bool,
}

impl TaintVisitor<'_, '_> {
    fn scopes(&self) -> Vec<&Scope> {
        self.inner
            .iter()
            .rev()
            .chain(self.outer.iter().copied())
            .collect()
    }

    fn add(&mut self, lin: ColumnLineage) {
        let cur = std::mem::replace(&mut self.lin, ColumnLineage::Clean);
        self.lin = self.an.join(cur, lin);
    }

    /// The scope of a nested query: its CTEs and the relations of every
    /// SELECT in its body (all branches of a set operation together).
    fn query_scope(&self, q: &Query) -> Scope {
        let scopes = self.scopes();
        // CTEs (and relations, for LATERAL shapes) of every enclosing scope,
        // innermost last so its CTE names win.
        let merged = Scope {
            rels: scopes
                .iter()
                .rev()
                .flat_map(|s| s.rels.iter().cloned())
                .collect(),
            ctes: scopes
                .iter()
                .rev()
                .flat_map(|s| s.ctes.iter().cloned())
                .collect(),
        };
        let base = Env {
            scope: &merged,
            parent: None,
        };
        let env = Some(base);
        let mut scope = Scope::default();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let shape = {
                    let env2 = Env {
                        scope: &scope,
                        parent: env.as_ref(),
                    };
                    self.an.query(&cte.query, Some(env2))
                };
                scope.ctes.push((
                    fold(self.an.dialect, &cte.alias.name),
                    rename(self.an.dialect, shape, &cte.alias),
                ));
            }
        }
        let mut selects = Vec::new();
        collect_selects(&q.body, &mut selects);
        for s in selects {
            let env2 = Env {
                scope: &scope,
                parent: env.as_ref(),
            };
            let rels = self.an.relations_of(&s.from, Some(env2)).rels;
            scope.rels.extend(rels);
        }
        scope
    }
}

fn collect_selects<'q>(body: &'q SetExpr, out: &mut Vec<&'q Select>) {
    match body {
        SetExpr::Select(s) => out.push(s),
        SetExpr::Query(q) => collect_selects(&q.body, out),
        SetExpr::SetOperation { left, right, .. } => {
            collect_selects(left, out);
            collect_selects(right, out);
        }
        _ => {}
    }
}

impl Visitor for TaintVisitor<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if !self.an.spend() {
            self.add(ColumnLineage::Unknown);
            return ControlFlow::Break(());
        }
        let scope = self.query_scope(q);
        self.inner.push(scope);
        // Stars in the nested query's projections carry whole rows out.
        let mut selects = Vec::new();
        collect_selects(&q.body, &mut selects);
        let mut stars = ColumnLineage::Clean;
        {
            let scopes = self.scopes();
            for s in selects {
                for item in &s.projection {
                    let lin = match item {
                        SelectItem::Wildcard(_) => self.an.all_rows(&scopes),
                        SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(n),
                            _,
                        ) => self.an.resolve_row(n, &scopes),
                        _ => ColumnLineage::Clean,
                    };
                    stars = self.an.join(stars, lin);
                }
            }
            if let SetExpr::Table(_) | SetExpr::Values(_) = q.body.as_ref() {
                let shape = self.an.set_expr(&q.body, None);
                for item in shape.items {
                    let lin = match item {
                        ShapeItem::Col { lin, .. } | ShapeItem::Star { lin, .. } => lin,
                    };
                    stars = self.an.join(stars, self.an.as_value(lin));
                }
            }
        }
        self.add(stars);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.inner.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        // DML targets are in scope for their SET/WHERE/RETURNING expressions.
        let from: Vec<TableWithJoins> = match s {
            Statement::Update { table, .. } => vec![table.clone()],
            Statement::Delete(d) => match &d.from {
                sqlparser::ast::FromTable::WithFromKeyword(t)
                | sqlparser::ast::FromTable::WithoutKeyword(t) => t.clone(),
            },
            _ => Vec::new(),
        };
        if !from.is_empty() {
            let scope = self.an.relations_of(&from, None);
            self.inner.push(scope);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(i) => {
                let lin = self.an.resolve(&[fold(self.an.dialect, i)], &self.scopes());
                self.add(lin);
            }
            Expr::CompoundIdentifier(parts) => {
                let parts: Vec<String> = parts.iter().map(|p| fold(self.an.dialect, p)).collect();
                let lin = self.an.resolve(&parts, &self.scopes());
                self.add(lin);
            }
            Expr::QualifiedWildcard(name, _) => {
                let lin = self.an.resolve_row(name, &self.scopes());
                self.add(lin);
            }
            Expr::Wildcard(_) => {
                let lin = self.an.all_rows(&self.scopes());
                self.add(lin);
            }
            Expr::BinaryOp {
                op: BinaryOperator::Custom(symbol),
                ..
            } if !self.an.dialect.builtin_operator(symbol) => self.add(ColumnLineage::Unknown),
            Expr::BinaryOp {
                op: BinaryOperator::PGCustomBinaryOperator(_),
                ..
            } => self.add(ColumnLineage::Unknown),
            // MySQL's `@v := expr` keeps the value in a session variable.
            Expr::BinaryOp {
                op: BinaryOperator::Assignment,
                ..
            } => {
                let before = std::mem::replace(&mut self.lin, ColumnLineage::Clean);
                self.side.push((std::ptr::from_ref(expr) as usize, before));
            }
            Expr::Function(f) => {
                let name = last_name(self.an.dialect, &f.name);
                if self
                    .an
                    .dialect
                    .functions()
                    .sql_running
                    .contains(&name.as_str())
                    // A routine that is not built in may return anything it
                    // reads: its result is unproven.
                    || self.an.dialect.routine(&f.name) == Routine::NotBuiltIn
                {
                    self.add(ColumnLineage::Unknown);
                }
                if self
                    .an
                    .dialect
                    .functions()
                    .side_channel
                    .contains(&name.as_str())
                {
                    let before = std::mem::replace(&mut self.lin, ColumnLineage::Clean);
                    self.side.push((std::ptr::from_ref(expr) as usize, before));
                }
                if let FunctionArguments::List(list) = &f.args {
                    for arg in &list.args {
                        let a = match arg {
                            FunctionArg::Named { arg, .. }
                            | FunctionArg::ExprNamed { arg, .. }
                            | FunctionArg::Unnamed(arg) => arg,
                        };
                        let lin = match a {
                            // `count(*)` counts rows; it carries no value.
                            FunctionArgExpr::Wildcard if name == "count" => ColumnLineage::Clean,
                            FunctionArgExpr::Wildcard => self.an.all_rows(&self.scopes()),
                            FunctionArgExpr::QualifiedWildcard(n) => {
                                self.an.resolve_row(n, &self.scopes())
                            }
                            FunctionArgExpr::Expr(_) => ColumnLineage::Clean,
                        };
                        self.add(lin);
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        let addr = std::ptr::from_ref(expr) as usize;
        if self.side.last().is_some_and(|&(a, _)| a == addr)
            && let Some((_, before)) = self.side.pop()
        {
            let args = std::mem::replace(&mut self.lin, ColumnLineage::Clean);
            if args != ColumnLineage::Clean {
                self.writes = true;
            }
            self.lin = self.an.join(before, args);
        }
        ControlFlow::Continue(())
    }
}

pub mod predicates;

#[cfg(test)]
mod tests;
