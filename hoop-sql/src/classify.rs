//! What a SQL text does: its statements, their kinds, the tables they touch
//! and whether their UPDATE/DELETE are restricted by a WHERE. Pure.
//!
//! # How
//! 1. The session's [`SqlDialect`] cuts the text into statements exactly
//!    where the server will, independently of the SQL library ([`ParsedSql`]).
//! 2. Each piece is parsed on its own with the dialect's parser. A
//!    piece the library rejects, or reads as anything but exactly one
//!    statement, is [`StatementKind::Unparsed`]: fail closed, decided by
//!    `policy.unparsed`. (sqlparser does not know every PostgreSQL utility
//!    statement; `DO` and `RESET`, which always are what their first word
//!    says, are recognised from that word.)
//! 3. The AST is walked once, collecting every table in every position —
//!    FROM, JOIN, subqueries in any expression, set operations, CTE bodies,
//!    INSERT … SELECT, UPDATE … FROM, DELETE … USING, MERGE, COPY, TRUNCATE
//!    and DROP lists, ALTER/CREATE targets — and every statement executed
//!    inside another one.
//!
//! # Kinds a statement executes
//! A statement has its own kind plus the kinds of what it runs inside:
//! data-modifying CTEs (`WITH d AS (DELETE …) SELECT …` is also a `delete`),
//! `EXPLAIN ANALYZE <stmt>` (runs `<stmt>`; plain `EXPLAIN` does not, so only
//! its tables count), `PREPARE x AS <stmt>` (judged as `<stmt>` at PREPARE time,
//! so a denied statement can never be prepared), queries feeding INSERT, COPY,
//! CREATE … AS, DECLARE and views (`select`), `COPY t FROM` (`insert`),
//! `SELECT … INTO t` (`create`), and MERGE's `WHEN … THEN UPDATE/DELETE/INSERT`.
//!
//! # CTE names
//! An unqualified name that refers to a CTE in scope is not a table. Scope is
//! PostgreSQL's: a CTE body sees only the CTEs before it (all of them under
//! `WITH RECURSIVE`), a subquery sees its enclosing queries' CTEs, and the
//! target of INSERT/UPDATE/DELETE/MERGE is always a real table even when a CTE
//! has the same name. Tables inside CTE bodies count.
//!
//! # What cannot be seen
//! - `DO` blocks and `CALL`: kind `do` / `call`, [`ClassifiedStatement::opaque`].
//! - Functions invoked anywhere (`SELECT purge_orders()`, `FROM f()`, triggers,
//!   rules): their names are listed in [`ClassifiedStatement::functions`], but what
//!   they run is invisible. So are `CREATE FUNCTION`/`CREATE RULE` bodies.
//! - `EXECUTE name` runs what a SQL-level `PREPARE` prepared: that was judged
//!   at PREPARE time; the name is in [`ClassifiedStatement::prepared_name`] so the
//!   connection can keep per-session track if it wants to.
//! - Objects dropped or truncated without being named (`DROP SCHEMA … CASCADE`,
//!   `TRUNCATE … CASCADE`, `DROP OWNED`): only named tables are listed.

use std::ops::ControlFlow;

use sqlparser::ast::{
    CommentObject, CopySource, Expr, FromTable, GrantObjects, MergeAction, ObjectName, ObjectType,
    Query, SetExpr, Statement, TableFactor, TableObject, Visit, Visitor, visit_expressions,
};

use crate::{
    SqlDialect,
    dialect::ParseFailure,
    names::TableRef,
    parsed::{ParsedSql, ParsedStatement},
};
use hoop_core::StatementKind;

/// One statement of a SQL text, as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedStatement {
    /// The statement's own kind.
    pub kind: StatementKind,
    /// Other kinds it executes (see the module docs), without `kind`, no repeats.
    pub nested: Vec<StatementKind>,
    /// Every table it reads or writes, normalised, no repeats, in order of appearance.
    pub tables: Vec<TableRef>,
    /// False when an UPDATE or DELETE it executes has no row-restricting WHERE
    /// (none at all, or one that references no column, like `WHERE true` or
    /// `WHERE 1 = 1`); true otherwise, including for statements that modify nothing.
    pub has_where: bool,
    /// Functions it calls by name (their bodies are invisible to hoop).
    pub functions: Vec<String>,
    /// It runs code hoop cannot see into (`DO`, `CALL`, `EXECUTE`, a fast-path call).
    pub opaque: bool,
    /// The SQL-level prepared statement name of a `PREPARE` or `EXECUTE`.
    pub prepared_name: Option<String>,
    /// For [`StatementKind::Unparsed`]: why the statement could not be understood.
    pub unparsed_reason: Option<String>,
}

impl ClassifiedStatement {
    fn new(kind: StatementKind) -> Self {
        Self {
            kind,
            nested: Vec::new(),
            tables: Vec::new(),
            has_where: true,
            functions: Vec::new(),
            opaque: false,
            prepared_name: None,
            unparsed_reason: None,
        }
    }

    /// A statement hoop could not understand.
    pub fn unparsed(reason: impl Into<String>) -> Self {
        Self {
            unparsed_reason: Some(reason.into()),
            ..Self::new(StatementKind::Unparsed)
        }
    }

    /// A legacy fast-path `FunctionCall`: a function invoked by OID, opaque.
    pub fn function_call() -> Self {
        Self {
            opaque: true,
            ..Self::new(StatementKind::Call)
        }
    }

    /// Its own kind, then the nested kinds.
    pub fn kinds(&self) -> impl Iterator<Item = StatementKind> + '_ {
        std::iter::once(self.kind).chain(self.nested.iter().copied())
    }
}

/// Classifies every statement of a parsed text. Empty text (or only
/// comments) gives no statements. Never fails: what cannot be understood is
/// `Unparsed`.
pub fn classify(parsed: &ParsedSql<'_>) -> Vec<ClassifiedStatement> {
    match &parsed.statements {
        Err(e) => vec![ClassifiedStatement::unparsed(e.to_string())],
        Ok(statements) => statements
            .iter()
            .map(|statement| classify_one(statement, parsed.dialect()))
            .collect(),
    }
}

/// Classifies one statement of a text.
fn classify_one(
    statement: &ParsedStatement<'_>,
    dialect: &'static dyn SqlDialect,
) -> ClassifiedStatement {
    match &statement.ast {
        Ok(ast) => classify_statement(ast, dialect),
        Err(e @ ParseFailure::Several(_)) => ClassifiedStatement::unparsed(e.to_string()),
        // sqlparser does not know every utility statement; `DO` and `RESET`
        // always are what their first word says.
        Err(ParseFailure::Syntax(e)) => match dialect.first_word(statement.text).as_deref() {
            Some("do") => ClassifiedStatement {
                opaque: true,
                ..ClassifiedStatement::new(StatementKind::Do)
            },
            Some("reset") => ClassifiedStatement::new(StatementKind::Reset),
            _ => ClassifiedStatement::unparsed(e.clone()),
        },
    }
}

/// Classifies one parsed statement.
pub fn classify_statement(
    statement: &Statement,
    dialect: &'static dyn SqlDialect,
) -> ClassifiedStatement {
    let mut collector = Collector::new(dialect);
    let _ = statement.visit(&mut collector);
    let mut kinds = collector.kinds.into_iter();
    let kind = kinds.next().unwrap_or(StatementKind::Other);
    ClassifiedStatement {
        kind,
        nested: kinds.collect(),
        tables: collector.tables,
        has_where: !collector.unfiltered,
        functions: collector.functions,
        opaque: collector.opaque,
        prepared_name: collector.prepared_name,
        unparsed_reason: None,
    }
}

/// The kind of a statement by itself.
fn kind_of(statement: &Statement) -> StatementKind {
    use StatementKind as K;
    match statement {
        Statement::Query(query) => match &*query.body {
            SetExpr::Insert(_) => K::Insert,
            SetExpr::Update(_) => K::Update,
            SetExpr::Delete(_) => K::Delete,
            SetExpr::Merge(_) => K::Merge,
            _ => K::Select,
        },
        Statement::Insert(_) => K::Insert,
        Statement::Update { .. } => K::Update,
        Statement::Delete(_) => K::Delete,
        Statement::Merge { .. } => K::Merge,
        Statement::Truncate { .. } => K::Truncate,
        Statement::Drop { .. }
        | Statement::DropFunction { .. }
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropSecret { .. }
        | Statement::DropPolicy { .. }
        | Statement::DropConnector { .. }
        | Statement::DropExtension { .. }
        | Statement::DropTrigger(_) => K::Drop,
        Statement::AlterTable { .. }
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::AlterType(_)
        | Statement::AlterRole { .. }
        | Statement::AlterPolicy { .. }
        | Statement::AlterConnector { .. }
        | Statement::RenameTable(_) => K::Alter,
        Statement::CreateView { .. }
        | Statement::CreateTable(_)
        | Statement::CreateVirtualTable { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateRole { .. }
        | Statement::CreateSecret { .. }
        | Statement::CreateServer(_)
        | Statement::CreatePolicy { .. }
        | Statement::CreateConnector(_)
        | Statement::CreateExtension { .. }
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateTrigger(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateMacro { .. }
        | Statement::CreateStage { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateDomain(_)
        | Statement::CreateType { .. }
        | Statement::CreateUser(_) => K::Create,
        Statement::Grant { .. } => K::Grant,
        Statement::Revoke { .. } => K::Revoke,
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => K::Copy,
        Statement::Call(_) => K::Call,
        Statement::Set(_) => K::Set,
        Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => K::Show,
        Statement::StartTransaction { .. } => K::Begin,
        Statement::Commit { .. } => K::Commit,
        Statement::Rollback { .. } => K::Rollback,
        Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } => K::Savepoint,
        Statement::Prepare { .. } => K::Prepare,
        Statement::Execute { .. } => K::Execute,
        Statement::Deallocate { .. } => K::Deallocate,
        Statement::Declare { .. } => K::Declare,
        Statement::Fetch { .. } => K::Fetch,
        Statement::Close { .. } => K::Close,
        Statement::LISTEN { .. } => K::Listen,
        Statement::NOTIFY { .. } => K::Notify,
        Statement::UNLISTEN { .. } => K::Unlisten,
        Statement::Explain { .. } | Statement::ExplainTable { .. } => K::Explain,
        Statement::Vacuum(_) => K::Vacuum,
        Statement::Analyze { .. } => K::Analyze,
        Statement::LockTables { .. } => K::Lock,
        Statement::Discard { .. } => K::Discard,
        Statement::Comment { .. } => K::Comment,
        _ => K::Other,
    }
}

/// Whether a WHERE (or MERGE ON) restricts rows: it mentions some column.
/// `WHERE true`, `WHERE 1 = 1` and `WHERE random() < 2` do not.
fn restricts_rows(predicate: Option<&Expr>) -> bool {
    predicate.is_some_and(|expr| {
        visit_expressions(expr, |e| match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .is_break()
    })
}

/// Whether EXPLAIN's options make it run the statement (`ANALYZE`, `(ANALYZE)`,
/// `(ANALYZE true)`, `(analyse on)`…). Anything but an explicit false runs it.
fn explain_runs(analyze: bool, options: Option<&Vec<sqlparser::ast::UtilityOption>>) -> bool {
    analyze
        || options.is_some_and(|options| {
            options.iter().any(|o| {
                let name = o.name.value.to_lowercase();
                (name == "analyze" || name == "analyse")
                    && o.arg.as_ref().is_none_or(|arg| {
                        let arg = arg.to_string().to_lowercase();
                        !matches!(arg.trim_matches('\''), "false" | "off" | "0" | "no")
                    })
            })
        })
}

/// One query's CTE scope.
struct Scope {
    /// Normalised CTE names, in order.
    names: Vec<String>,
    recursive: bool,
    /// How many CTE bodies of this query have been entered so far.
    bodies_entered: usize,
    /// When this query is the body of a parent's CTE number N, `Some(N)`.
    cte_index_in_parent: Option<usize>,
}

struct Collector {
    dialect: &'static dyn SqlDialect,
    scopes: Vec<Scope>,
    /// For each statement being visited: whether statements inside it execute.
    executes: Vec<bool>,
    kinds: Vec<StatementKind>,
    tables: Vec<TableRef>,
    functions: Vec<String>,
    unfiltered: bool,
    opaque: bool,
    prepared_name: Option<String>,
    /// The name of a table function (`FROM f(1)`) about to be seen as a relation.
    table_function: Option<ObjectName>,
}

impl Collector {
    fn new(dialect: &'static dyn SqlDialect) -> Self {
        Self {
            dialect,
            scopes: Vec::new(),
            executes: Vec::new(),
            kinds: Vec::new(),
            tables: Vec::new(),
            functions: Vec::new(),
            unfiltered: false,
            opaque: false,
            prepared_name: None,
            table_function: None,
        }
    }

    fn executing(&self) -> bool {
        self.executes.last().copied().unwrap_or(true)
    }

    fn kind(&mut self, kind: StatementKind) {
        if self.executing() && !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
    }

    fn table(&mut self, table: TableRef) {
        if !self.tables.contains(&table) {
            self.tables.push(table);
        }
    }

    /// A name that is always a real table (DML targets, DROP lists…).
    fn real_table(&mut self, name: &ObjectName) {
        if let Some(table) = TableRef::from_object_name(name, self.dialect) {
            self.table(table);
        }
    }

    fn target_factor(&mut self, factor: &TableFactor) {
        if let TableFactor::Table { name, .. } = factor {
            self.real_table(name);
        }
    }

    /// Whether an unqualified name refers to a CTE in scope here.
    fn is_cte(&self, name: &str) -> bool {
        let mut limit: Option<usize> = None;
        for scope in self.scopes.iter().rev() {
            let visible = match limit {
                Some(n) if !scope.recursive => &scope.names[..n.min(scope.names.len())],
                _ => &scope.names[..],
            };
            if visible.iter().any(|n| n == name) {
                return true;
            }
            limit = scope.cte_index_in_parent;
        }
        false
    }

    fn unfiltered_if(&mut self, restricted: bool) {
        if self.executing() && !restricted {
            self.unfiltered = true;
        }
    }

    /// The parts of a query body the visitor has no hook for.
    fn set_expr(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Select(select) => {
                self.kind(StatementKind::Select);
                if let Some(into) = &select.into {
                    self.kind(StatementKind::Create);
                    self.real_table(&into.name);
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left);
                self.set_expr(right);
            }
            SetExpr::Table(table) => {
                self.kind(StatementKind::Select);
                if let Some(name) = &table.table_name {
                    // `TABLE x` keeps no quoting information: count both foldings (fail closed).
                    let schema = table.schema_name.clone();
                    for name in [name.clone(), name.to_lowercase()] {
                        if schema.is_some() || !self.is_cte(&name) {
                            self.table(TableRef {
                                schema: schema.clone(),
                                name,
                            });
                        }
                    }
                }
            }
            SetExpr::Query(_)
            | SetExpr::Values(_)
            | SetExpr::Insert(_)
            | SetExpr::Update(_)
            | SetExpr::Delete(_)
            | SetExpr::Merge(_) => {}
        }
    }
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        self.kind(kind_of(statement));
        let mut inner_executes = self.executing();
        match statement {
            Statement::Explain {
                analyze, options, ..
            } => {
                inner_executes &= explain_runs(*analyze, options.as_ref());
            }
            Statement::Update {
                table, selection, ..
            } => {
                self.target_factor(&table.relation);
                self.unfiltered_if(restricts_rows(selection.as_ref()));
            }
            Statement::Delete(delete) => {
                for name in &delete.tables {
                    self.real_table(name);
                }
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) =
                    &delete.from;
                for target in from {
                    self.target_factor(&target.relation);
                }
                self.unfiltered_if(restricts_rows(delete.selection.as_ref()));
            }
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    self.real_table(name);
                }
            }
            Statement::Merge {
                table, on, clauses, ..
            } => {
                self.target_factor(table);
                for clause in clauses {
                    match clause.action {
                        MergeAction::Insert(_) => self.kind(StatementKind::Insert),
                        MergeAction::Update { .. } => self.kind(StatementKind::Update),
                        MergeAction::Delete => self.kind(StatementKind::Delete),
                    }
                }
                self.unfiltered_if(restricts_rows(Some(on)));
            }
            Statement::Drop {
                object_type,
                names,
                table,
                ..
            } => {
                if matches!(
                    object_type,
                    ObjectType::Table | ObjectType::View | ObjectType::MaterializedView
                ) {
                    for name in names {
                        self.real_table(name);
                    }
                }
                if let Some(table) = table {
                    self.real_table(table);
                }
            }
            Statement::Copy {
                source: CopySource::Table { table_name, .. },
                to,
                ..
            } => {
                self.real_table(table_name);
                self.kind(if *to {
                    StatementKind::Select
                } else {
                    StatementKind::Insert
                });
            }
            Statement::CreateView { name, .. } => self.real_table(name),
            Statement::Vacuum(vacuum) => {
                if let Some(name) = &vacuum.table_name {
                    self.real_table(name);
                }
            }
            Statement::CreateTable(create) => self.real_table(&create.name),
            Statement::Comment {
                object_type: CommentObject::Table,
                object_name,
                ..
            } => self.real_table(object_name),
            Statement::Grant {
                objects: Some(GrantObjects::Tables(names)),
                ..
            }
            | Statement::Revoke {
                objects: Some(GrantObjects::Tables(names)),
                ..
            } => {
                for name in names {
                    self.real_table(name);
                }
            }
            Statement::Call(function) => {
                self.opaque = true;
                self.functions
                    .push(function.name.to_string().to_lowercase());
            }
            Statement::Prepare { name, .. } => self.prepared_name = Some(self.dialect.fold(name)),
            Statement::Execute { name, .. } => {
                self.opaque = true;
                self.prepared_name = name.as_ref().map(|n| n.to_string().to_lowercase());
            }
            _ => {}
        }
        self.executes.push(inner_executes);
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        self.executes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // While a parent is still entering its CTE bodies, the next query
        // directly under it is its next CTE body (nothing else in `WITH` is a query).
        let cte_index_in_parent = self.scopes.last_mut().and_then(|parent| {
            (parent.bodies_entered < parent.names.len()).then(|| {
                parent.bodies_entered += 1;
                parent.bodies_entered - 1
            })
        });
        let (names, recursive) = query.with.as_ref().map_or((Vec::new(), false), |with| {
            (
                with.cte_tables
                    .iter()
                    .map(|cte| self.dialect.fold(&cte.alias.name))
                    .collect(),
                with.recursive,
            )
        });
        self.scopes.push(Scope {
            names,
            recursive,
            bodies_entered: 0,
            cte_index_in_parent,
        });
        self.set_expr(&query.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = factor
        {
            self.functions.push(name.to_string().to_lowercase());
            self.table_function = Some(name.clone());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if self.table_function.as_ref() == Some(relation) {
            self.table_function = None;
            return ControlFlow::Continue(());
        }
        if let Some(table) = TableRef::from_object_name(relation, self.dialect)
            && (table.schema.is_some() || !self.is_cte(&table.name))
        {
            self.table(table);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            let name = function.name.to_string().to_lowercase();
            if !self.functions.contains(&name) {
                self.functions.push(name);
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pg::Postgres;
    use StatementKind as K;

    fn classify(sql: &str) -> Vec<ClassifiedStatement> {
        super::classify(&ParsedSql::parse(&Postgres, sql))
    }

    fn one(sql: &str) -> ClassifiedStatement {
        let mut all = classify(sql);
        assert_eq!(all.len(), 1, "{sql}: {all:?}");
        all.remove(0)
    }

    fn tables(sql: &str) -> Vec<String> {
        let mut names: Vec<String> = one(sql).tables.iter().map(ToString::to_string).collect();
        names.sort();
        names
    }

    fn kinds(sql: &str) -> Vec<StatementKind> {
        one(sql).kinds().collect()
    }

    #[test]
    fn basic_kinds() {
        assert_eq!(one("select 1").kind, K::Select);
        assert_eq!(one("INSERT INTO t VALUES (1)").kind, K::Insert);
        assert_eq!(one("update t set a = 1 where id = 2").kind, K::Update);
        assert_eq!(one("delete from t where id = 1").kind, K::Delete);
        assert_eq!(one("truncate a, b").kind, K::Truncate);
        assert_eq!(one("drop table t").kind, K::Drop);
        assert_eq!(one("alter table t add column c int").kind, K::Alter);
        assert_eq!(one("create table t (a int)").kind, K::Create);
        assert_eq!(one("grant select on t to bob").kind, K::Grant);
        assert_eq!(one("begin").kind, K::Begin);
        assert_eq!(one("commit").kind, K::Commit);
        assert_eq!(one("set search_path = app").kind, K::Set);
        assert_eq!(one("show work_mem").kind, K::Show);
        assert_eq!(one("RESET ALL").kind, K::Reset);
        assert_eq!(one("discard all").kind, K::Discard);
        assert_eq!(one("listen ch").kind, K::Listen);
    }

    #[test]
    fn odd_casing_whitespace_and_comments() {
        let s = one("  \n\t-- leading comment\n /* block */ DeLeTe\n\tFROM   Orders   wHeRe id=1 ");
        assert_eq!(s.kind, K::Delete);
        assert_eq!(
            s.tables,
            [TableRef {
                schema: None,
                name: "orders".into()
            }]
        );
        assert!(s.has_where);
    }

    #[test]
    fn comments_do_not_hide_or_invent_statements() {
        let all = classify("SELECT 1 /* ; DROP TABLE t */");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].kind, K::Select);
        assert!(all[0].tables.is_empty());
        let all = classify("SELECT 1 -- ; DROP TABLE t\n");
        assert_eq!(all.len(), 1);
        let all = classify("SELECT 1 /* nested /* ; */ DROP TABLE t; */");
        assert_eq!(all.len(), 1, "{all:?}");
        assert_ne!(all[0].kind, K::Drop);
    }

    #[test]
    fn multi_statement_with_a_drop_at_the_end() {
        let all = classify("select * from a; update b set x = 1 where id = 1; DROP TABLE c");
        let kinds: Vec<_> = all.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [K::Select, K::Update, K::Drop]);
        assert_eq!(all[2].tables[0].name, "c");
    }

    #[test]
    fn strings_and_dollar_quotes_are_data() {
        assert_eq!(classify(r"SELECT E'\'; DROP TABLE t; --'").len(), 1);
        assert_eq!(classify("SELECT 'it''s; DROP TABLE t'").len(), 1);
        let all = classify("SELECT $$ ; DROP TABLE t; $$, $tag$ $$ ; $tag$");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].kind, K::Select);
        // A literal whose end depends on standard_conforming_strings is unparsed, whole.
        let all = classify(r"SELECT 'x\''; DROP TABLE t; --'");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].kind, K::Unparsed);
    }

    #[test]
    fn quoted_identifiers_keep_case_unquoted_fold() {
        assert_eq!(tables(r#"select * from "Orders""#), ["Orders"]);
        assert_eq!(tables("select * from ORDERS"), ["orders"]);
        assert_eq!(tables(r#"select * from "orders""#), ["orders"]);
        assert_eq!(
            tables(r#"select * from "App"."Order Lines""#),
            ["App.Order Lines"]
        );
    }

    #[test]
    fn schema_qualified_and_aliased_tables() {
        assert_eq!(
            tables("select o.* from public.orders as o join app.customers c on c.id = o.cid"),
            ["app.customers", "public.orders"]
        );
        assert_eq!(
            tables("select * from mydb.public.orders"),
            ["public.orders"]
        );
    }

    #[test]
    fn subqueries_joins_and_set_operations() {
        assert_eq!(
            tables(
                "select * from a where id in (select aid from b) and exists (select 1 from c) union all select * from d except (select * from e)"
            ),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(
            tables(
                "select (select max(x) from f) from g left join lateral (select * from h) hh on true"
            ),
            ["f", "g", "h"]
        );
        // `TABLE x` is `SELECT * FROM x`: its table counts.
        assert_eq!(one("TABLE secrets").kind, K::Select);
        assert_eq!(tables("TABLE secrets"), ["secrets"]);
    }

    #[test]
    fn cte_names_are_not_tables_but_their_contents_are() {
        assert_eq!(
            tables("with orders as (select * from archive) select * from orders"),
            ["archive"]
        );
        // Non-recursive: inside its own body, `orders` is the real table.
        assert_eq!(
            tables("with orders as (select * from orders) select * from orders"),
            ["orders"]
        );
        // A later CTE sees an earlier one.
        assert_eq!(
            tables("with a as (select * from t), b as (select * from a) select * from b"),
            ["t"]
        );
        // An earlier CTE does not see a later one.
        assert_eq!(
            tables("with a as (select * from b), b as (select 1) select * from a"),
            ["b"]
        );
        // A CTE in a nested query does not shadow an outer reference.
        assert_eq!(
            tables("select * from orders, (with orders as (select 1) select * from orders) x"),
            ["orders"]
        );
        // Schema-qualified names are never CTEs.
        assert_eq!(
            tables("with orders as (select 1) select * from public.orders"),
            ["public.orders"]
        );
        assert_eq!(
            tables("with recursive r as (select 1 union all select * from r) select * from r"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn dml_targets_are_real_tables_even_when_a_cte_has_the_name() {
        let s = one("with orders as (select 1) delete from orders");
        assert_eq!(s.kind, K::Delete);
        assert_eq!(
            s.tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["orders"]
        );
        assert!(!s.has_where);
    }

    #[test]
    fn data_modifying_ctes_are_their_kind_too() {
        let s = one("with d as (delete from orders returning *) select * from d");
        assert_eq!(s.kind, K::Select);
        assert!(s.nested.contains(&K::Delete), "{s:?}");
        assert!(!s.has_where);
        assert_eq!(
            s.tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["orders"]
        );
    }

    #[test]
    fn dml_sources() {
        assert_eq!(tables("insert into a (x) select y from b"), ["a", "b"]);
        assert_eq!(
            kinds("insert into a (x) select y from b"),
            [K::Insert, K::Select]
        );
        assert_eq!(
            tables("update a set x = b.y from b where a.id = b.id"),
            ["a", "b"]
        );
        assert_eq!(
            tables("delete from a using b where a.id = b.id"),
            ["a", "b"]
        );
        assert_eq!(
            tables("insert into a values (1) on conflict (id) do update set x = 2"),
            ["a"]
        );
    }

    #[test]
    fn where_clauses() {
        assert!(!one("delete from t").has_where);
        assert!(one("delete from t where id = 1").has_where);
        // A WHERE that references no column restricts nothing.
        assert!(!one("delete from t where true").has_where);
        assert!(!one("update t set a = 1 where 1 = 1").has_where);
        assert!(one("update t set a = 1 where t.id > 10").has_where);
        assert!(one("select * from t").has_where);
    }

    #[test]
    fn truncate_and_drop_lists() {
        assert_eq!(
            tables("truncate table a, public.b, \"C\" cascade"),
            ["C", "a", "public.b"]
        );
        assert_eq!(tables("drop table if exists a, b"), ["a", "b"]);
        assert_eq!(tables("drop view v"), ["v"]);
        assert_eq!(one("drop schema app cascade").kind, K::Drop);
        assert!(one("drop schema app cascade").tables.is_empty());
    }

    #[test]
    fn merge() {
        let s = one(
            "merge into orders o using incoming i on o.id = i.id when matched then delete when not matched then insert (id) values (i.id)",
        );
        assert_eq!(s.kind, K::Merge);
        assert!(s.nested.contains(&K::Delete) && s.nested.contains(&K::Insert));
        let mut names: Vec<_> = s.tables.iter().map(ToString::to_string).collect();
        names.sort();
        assert_eq!(names, ["incoming", "orders"]);
    }

    #[test]
    fn copy() {
        let s = one("COPY orders TO STDOUT");
        assert_eq!((s.kind, s.tables[0].name.as_str()), (K::Copy, "orders"));
        assert!(s.nested.contains(&K::Select));
        let s = one("copy orders (a, b) from stdin with (format csv)");
        assert_eq!(s.kind, K::Copy);
        assert!(s.nested.contains(&K::Insert));
        assert_eq!(
            one("COPY orders FROM STDIN WITH (FORMAT binary)").tables[0].name,
            "orders"
        );
        let s = one("copy (select * from customers join orders using (id)) to stdout");
        assert_eq!(s.kind, K::Copy);
        assert_eq!(s.tables.len(), 2);
    }

    #[test]
    fn do_and_call_are_opaque() {
        let s = one("DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$");
        assert_eq!(s.kind, K::Do);
        assert!(s.opaque);
        let s = one("call purge_orders(30)");
        assert_eq!(s.kind, K::Call);
        assert!(s.opaque);
        // A function in a SELECT is a select; its name is visible, its body is not.
        let s = one("select purge_orders(30)");
        assert_eq!(s.kind, K::Select);
        assert_eq!(s.functions, ["purge_orders"]);
        let s = one("select * from generate_series(1, 3) g, t");
        assert_eq!(
            s.tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["t"]
        );
    }

    #[test]
    fn explain_analyze_runs_its_statement_plain_explain_does_not() {
        assert_eq!(
            kinds("explain analyze delete from orders"),
            [K::Explain, K::Delete]
        );
        assert_eq!(
            kinds("explain (analyze, buffers) delete from orders"),
            [K::Explain, K::Delete]
        );
        assert_eq!(
            kinds("explain (analyze false) delete from orders"),
            [K::Explain]
        );
        let plain = one("explain delete from orders");
        assert_eq!(plain.kinds().collect::<Vec<_>>(), [K::Explain]);
        assert_eq!(plain.tables[0].name, "orders");
        assert!(plain.has_where, "a plain EXPLAIN deletes nothing");
    }

    #[test]
    fn prepare_is_judged_by_what_it_prepares() {
        let s = one("prepare zap as delete from orders");
        assert_eq!(s.kinds().collect::<Vec<_>>(), [K::Prepare, K::Delete]);
        assert!(!s.has_where);
        assert_eq!(s.prepared_name.as_deref(), Some("zap"));
        let s = one("execute zap");
        assert_eq!(s.kind, K::Execute);
        assert_eq!(s.prepared_name.as_deref(), Some("zap"));
    }

    #[test]
    fn select_into_and_create_as_and_views() {
        let s = one("select * into stolen from salaries");
        assert!(s.kinds().any(|k| k == K::Create));
        assert_eq!(s.tables.len(), 2);
        assert_eq!(
            kinds("create table x as select * from salaries"),
            [K::Create, K::Select]
        );
        assert_eq!(
            tables("create view v as select * from salaries"),
            ["salaries", "v"]
        );
        assert_eq!(
            kinds("declare c cursor for select * from salaries"),
            [K::Declare, K::Select]
        );
    }

    #[test]
    fn garbage_is_unparsed() {
        let s = one("this is not sql at all");
        assert_eq!(s.kind, K::Unparsed);
        assert!(s.unparsed_reason.is_some());
        assert_eq!(one("select 'unterminated").kind, K::Unparsed);
        let all = classify("select 1; gibberish here; drop table t");
        assert_eq!(
            all.iter().map(|s| s.kind).collect::<Vec<_>>(),
            [K::Select, K::Unparsed, K::Drop]
        );
        assert!(classify("  -- only a comment\n").is_empty());
        // Utility statements sqlparser does not know fall to `policy.unparsed`.
        assert_eq!(one("lock table orders").kind, K::Unparsed);
        assert_eq!(
            one("create rule r as on select to t do instead select 1").kind,
            K::Unparsed
        );
    }
}
