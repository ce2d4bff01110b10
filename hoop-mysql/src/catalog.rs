//! What hoop knows of a MySQL server's catalog, fetched in-band on the
//! session's own connection (hoop holds no credential of its own):
//! - the base tables the user can see, so that a column definition's
//!   `org_table`/`org_name` is trusted only when it names one (views,
//!   derived tables and CTEs report names of their own there);
//! - each view's tables, from its definition, so that governance masks a
//!   view that reads a masked column ([`ColumnResolver::views`]).
//!
//! Fetched when the session starts and again after any statement that may
//! create, drop or rename a relation. A table created by another session in
//! between is not known as a base table: its columns are resolved from SQL
//! lineage alone (masked wherever it cannot prove them clean).

use std::{
    collections::{HashMap, HashSet},
    ops::ControlFlow,
    sync::{Arc, Mutex},
};

use hoop_core::{
    ColumnResolver, Preparation, RelationName, ResolvedColumn, SessionIdentity, SourceKey,
    ViewDependency,
};
use hoop_sql::{SqlDialect, mysql::Mysql};
use sqlparser::ast::Visit;

// hoop's own queries read every string as `BINARY`: the server sends a
// binary string as it is, never converted to `character_set_results`. With
// that set to `utf16` or `utf32` the names would otherwise arrive two or
// four bytes a character (and `NULL` leaves them in the dictionary's
// utf8mb3, which is what `BINARY` gives).

/// The base tables, as `(schema, table)`.
pub const BASE_TABLES_QUERY: &str = "SELECT CAST(TABLE_SCHEMA AS BINARY), CAST(TABLE_NAME AS BINARY) \
FROM information_schema.TABLES \
WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema')";

/// The views, as `(schema, view, definition)`.
pub const VIEWS_QUERY: &str = "SELECT CAST(TABLE_SCHEMA AS BINARY), CAST(TABLE_NAME AS BINARY), \
CAST(VIEW_DEFINITION AS BINARY) FROM information_schema.VIEWS";

#[derive(Debug, Default)]
struct Known {
    /// Schema → its base tables (looked up per result column, without
    /// building a key).
    base_tables: HashMap<String, HashSet<String>>,
    views: Arc<[ViewDependency]>,
    /// Every base table and view, schema → names, lowercased.
    relations: HashMap<String, HashSet<String>>,
    version: u64,
    /// When it was loaded last.
    loaded_at: Option<std::time::Instant>,
}

/// One session's catalog knowledge.
#[derive(Debug, Default)]
pub struct SessionCatalog {
    known: Mutex<Known>,
}

fn lock(m: &Mutex<Known>) -> std::sync::MutexGuard<'_, Known> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionCatalog {
    /// An empty catalog: nothing is a known base table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether `schema.table` is a base table the catalog knows.
    pub fn is_base_table(&self, schema: &str, table: &str) -> bool {
        lock(&self.known)
            .base_tables
            .get(schema)
            .is_some_and(|tables| tables.contains(table))
    }

    /// Whether any of `tables` (as the policy names them: `name` or
    /// `schema.name`; unqualified names are in `schema`, the session's) is
    /// neither a base table nor a view the catalog knows: a view created
    /// since it was loaded, a temporary table, or no table at all. A name
    /// with more dots than a qualifier reads as unknown.
    /// `tables` are folded (lower case) as the policy folds names; so is
    /// `schema`.
    pub fn misses(&self, tables: &[String], schema: Option<&str>) -> bool {
        let known = lock(&self.known);
        tables.iter().any(|t| {
            let (s, name) = match t.split_once('.') {
                Some((s, name)) if !name.contains('.') => (s, name),
                Some(_) => return true,
                None => match schema {
                    Some(s) => (s, t.as_str()),
                    None => return true,
                },
            };
            !known
                .relations
                .get(s)
                .is_some_and(|names| names.contains(name))
        })
    }

    /// Whether what is known was loaded `max_age` ago or longer, or never:
    /// another session may have changed what a known name is since (a
    /// table dropped and a view created under its name, a view replaced).
    pub fn older_than(&self, max_age: std::time::Duration) -> bool {
        lock(&self.known)
            .loaded_at
            .is_none_or(|t| t.elapsed() >= max_age)
    }

    /// Replaces what is known from the rows of [`BASE_TABLES_QUERY`] and
    /// [`VIEWS_QUERY`].
    pub fn load(&self, base_tables: Vec<(String, String)>, views: Vec<(String, String, String)>) {
        let mut tables: HashMap<String, HashSet<String>> = HashMap::new();
        let mut relations: HashMap<String, HashSet<String>> = HashMap::new();
        for (schema, table) in base_tables {
            relations
                .entry(schema.to_lowercase())
                .or_default()
                .insert(table.to_lowercase());
            tables.entry(schema).or_default().insert(table);
        }
        for (schema, view, _) in &views {
            relations
                .entry(schema.to_lowercase())
                .or_default()
                .insert(view.to_lowercase());
        }
        let mut deps = Vec::new();
        for (schema, view, definition) in views {
            let view_name = RelationName {
                schema: Some(schema.to_lowercase()),
                name: view.to_lowercase(),
            };
            match relations_of(&definition, &schema) {
                Some(relations) => {
                    for table in relations {
                        deps.push(ViewDependency {
                            view: view_name.clone(),
                            table,
                            column: None,
                        });
                    }
                }
                // A definition hoop cannot read (or may not see): the view
                // may read any table of its schema.
                None => {
                    for (s, names) in &tables {
                        if s.eq_ignore_ascii_case(&schema) {
                            deps.extend(names.iter().map(|t| ViewDependency {
                                view: view_name.clone(),
                                table: RelationName {
                                    schema: Some(s.to_lowercase()),
                                    name: t.to_lowercase(),
                                },
                                column: None,
                            }));
                        }
                    }
                }
            }
        }
        let mut known = lock(&self.known);
        known.base_tables = tables;
        known.views = Arc::from(deps);
        known.relations = relations;
        known.version += 1;
        known.loaded_at = Some(std::time::Instant::now());
    }
}

/// The relations a view definition reads, qualified with `schema` when
/// unqualified; `None` when it does not parse.
fn relations_of(definition: &str, schema: &str) -> Option<Vec<RelationName>> {
    if definition.trim().is_empty() {
        return None;
    }
    let statement = Mysql.parse_statement(definition).ok()?;
    let mut out = Vec::new();
    let _ = statement.visit(&mut RelationCollector {
        schema,
        out: &mut out,
    });
    Some(out)
}

struct RelationCollector<'a> {
    schema: &'a str,
    out: &'a mut Vec<RelationName>,
}

impl sqlparser::ast::Visitor for RelationCollector<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
        let parts: Vec<String> = relation
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| Mysql.fold(i)))
            .collect();
        let (schema, name) = match parts.as_slice() {
            [name] => (self.schema.to_lowercase(), name.clone()),
            [.., schema, name] => (schema.clone(), name.clone()),
            [] => return ControlFlow::Continue(()),
        };
        self.out.push(RelationName {
            schema: Some(schema),
            name,
        });
        ControlFlow::Continue(())
    }
}

impl ColumnResolver for SessionCatalog {
    fn prepare(&self, _: &SessionIdentity, _: &[SourceKey]) -> Option<Preparation> {
        None
    }

    fn resolve(&self, _: &SessionIdentity, _: SourceKey) -> Option<ResolvedColumn> {
        // MySQL names its columns itself (`ColumnSource::Named`).
        None
    }

    fn views(&self, _: &SessionIdentity) -> (u64, Arc<[ViewDependency]>) {
        let known = lock(&self.known);
        (known.version, known.views.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_depend_on_the_tables_they_read() {
        let c = SessionCatalog::new();
        c.load(
            vec![("db".into(), "cust".into()), ("db".into(), "other".into())],
            vec![
                (
                    "db".into(),
                    "v_cust".into(),
                    "select `db`.`cust`.`ssn` AS `s` from `db`.`cust`".into(),
                ),
                ("db".into(), "v_hidden".into(), String::new()),
            ],
        );
        assert!(c.is_base_table("db", "cust"));
        assert!(!c.is_base_table("db", "v_cust"));
        let (version, deps) = c.views(&SessionIdentity::default());
        assert_eq!(version, 1);
        assert!(
            deps.iter()
                .any(|d| d.view.name == "v_cust" && d.table.name == "cust")
        );
        // Unreadable definitions may read every table of their schema.
        assert_eq!(deps.iter().filter(|d| d.view.name == "v_hidden").count(), 2);
    }

    #[test]
    fn a_name_the_catalog_has_neither_as_table_nor_as_view_is_a_miss() {
        let c = SessionCatalog::new();
        c.load(
            vec![("Db".into(), "Cust".into())],
            vec![("db".into(), "v_cust".into(), "select 1".into())],
        );
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(!c.misses(&names(&["cust", "v_cust"]), Some("db")));
        assert!(!c.misses(&names(&["db.cust", "db.v_cust"]), None));
        assert!(c.misses(&names(&["v_new"]), Some("db")));
        assert!(c.misses(&names(&["cust"]), Some("other")));
        // Unqualified with no current schema, or a name with dots in it.
        assert!(c.misses(&names(&["cust"]), None));
        assert!(c.misses(&names(&["a.b.c"]), Some("db")));
    }
}
