//! PostgreSQL's built-in routines and operators: what a call in SQL can
//! reach without running code a user or an extension wrote.
//!
//! The list is PostgreSQL's own, read from `pg_catalog` ([`generated`],
//! written by `cargo xtask pg-builtins`; `hoop-sql/tests/pg_builtins.rs`
//! checks it against the live server). A routine is built in when its name
//! is one of `pg_catalog`'s and the call is unqualified or qualified with
//! `pg_catalog`. Anything else — another schema's routine, a name the list
//! does not have, a quoted name that only looks like a SQL syntax form — is
//! not built in: it may run any code, so policy treats it as server-side
//! code and masking as a column of unknown origin.
//!
//! What a name cannot tell (documented in docs/policy.md): a user-defined
//! overload of a built-in name, in a schema on the search path, taking
//! argument types the built-in does not (PostgreSQL picks the best match
//! across the path). Creating one is itself server code; one that already
//! exists is the database owner's to review.

mod generated;

use sqlparser::ast::{ObjectName, ObjectNamePart};

use crate::dialect::{Routine, Volatility};

/// A plain function.
pub(crate) const FUNCTION: u8 = 1;
/// An aggregate.
pub(crate) const AGGREGATE: u8 = 2;
/// A window function.
pub(crate) const WINDOW: u8 = 4;
/// A procedure (`CALL`). PostgreSQL has none built in, so every `CALL`
/// runs code a user wrote.
pub(crate) const PROCEDURE: u8 = 8;

/// Forms of PostgreSQL's grammar that the SQL library reads as calls but
/// that are not `pg_proc` routines (`COALESCE(…)`, `CURRENT_DATE`), when
/// written unquoted.
const SYNTAX_FORMS: &[(&str, Volatility)] = &[
    ("coalesce", Volatility::Immutable),
    ("current_catalog", Volatility::Stable),
    ("current_date", Volatility::Stable),
    ("current_role", Volatility::Stable),
    ("current_time", Volatility::Stable),
    ("current_timestamp", Volatility::Stable),
    ("current_user", Volatility::Stable),
    ("greatest", Volatility::Immutable),
    ("grouping", Volatility::Immutable),
    ("least", Volatility::Immutable),
    ("localtime", Volatility::Stable),
    ("localtimestamp", Volatility::Stable),
    ("nullif", Volatility::Immutable),
    ("row", Volatility::Immutable),
    ("session_user", Volatility::Stable),
    ("system_user", Volatility::Stable),
    ("trim", Volatility::Immutable),
    ("user", Volatility::Stable),
    ("xmlconcat", Volatility::Immutable),
    ("xmlelement", Volatility::Stable),
    ("xmlforest", Volatility::Stable),
    ("xmlparse", Volatility::Stable),
    ("xmlpi", Volatility::Immutable),
    ("xmlroot", Volatility::Immutable),
    ("xmlserialize", Volatility::Stable),
];

/// PostgreSQL's `FirstNormalObjectId`: every object with a lower OID was
/// created by initdb, so a routine called by such an OID is built in.
pub(crate) const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// The schema whose routines are the server's own.
const CATALOG_SCHEMA: &str = "pg_catalog";

/// A `pg_catalog` routine by folded name.
fn catalog_routine(name: &str) -> Option<(Volatility, u8)> {
    generated::ROUTINES
        .binary_search_by(|(n, ..)| n.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| (generated::ROUTINES[i].1, generated::ROUTINES[i].2))
}

/// What a call to `name` reaches. Names are folded as PostgreSQL folds them
/// (unquoted to lower case). A leading database name (`db.schema.f`) is
/// ignored, as PostgreSQL only accepts the current database there.
pub(crate) fn routine(name: &ObjectName) -> Routine {
    let parts: Option<Vec<(&str, bool)>> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some((i.value.as_str(), i.quote_style.is_some())),
            ObjectNamePart::Function(_) => None,
        })
        .collect();
    let Some(parts) = parts else {
        return Routine::NotBuiltIn;
    };
    let fold = |(value, quoted): (&str, bool)| {
        if quoted {
            value.to_owned()
        } else {
            value.to_lowercase()
        }
    };
    let (last, qualifier) = match parts.as_slice() {
        [last] => (*last, None),
        [.., schema, last] => (*last, Some(fold(*schema))),
        [] => return Routine::NotBuiltIn,
    };
    if qualifier.as_deref().is_some_and(|s| s != CATALOG_SCHEMA) {
        return Routine::NotBuiltIn;
    }
    if qualifier.is_none()
        && !last.1
        && let Some((_, v)) = SYNTAX_FORMS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(last.0))
    {
        return Routine::BuiltIn(*v);
    }
    match catalog_routine(&fold(last)) {
        Some((volatility, kinds)) if kinds & (FUNCTION | AGGREGATE | WINDOW) != 0 => {
            Routine::BuiltIn(volatility)
        }
        _ => Routine::NotBuiltIn,
    }
}

/// Whether `symbol` is one of `pg_catalog`'s operators.
pub(crate) fn operator(symbol: &str) -> bool {
    generated::OPERATORS
        .binary_search_by(|o| o.as_bytes().cmp(symbol.as_bytes()))
        .is_ok()
}

/// The committed catalog, for comparing it with a live server.
#[derive(Debug, Clone, Copy)]
pub struct Catalog {
    /// The server version it was read from.
    pub server_version: &'static str,
    /// Routine names, their most volatile volatility and their kinds as
    /// `pg_proc.prokind` letters (`f`, `a`, `w`, `p`), sorted.
    pub routines: &'static [(&'static str, Volatility, u8)],
    /// Operator symbols, sorted.
    pub operators: &'static [&'static str],
}

impl Catalog {
    /// A routine's kinds as `pg_proc.prokind` letters, in `f a w p` order.
    pub fn kind_letters(kinds: u8) -> String {
        [
            (FUNCTION, 'f'),
            (AGGREGATE, 'a'),
            (WINDOW, 'w'),
            (PROCEDURE, 'p'),
        ]
        .iter()
        .filter(|(bit, _)| kinds & bit != 0)
        .map(|(_, c)| *c)
        .collect()
    }
}

/// The committed catalog of PostgreSQL's built-in routines and operators.
pub fn catalog() -> Catalog {
    Catalog {
        server_version: generated::SERVER_VERSION,
        routines: generated::ROUTINES,
        operators: generated::OPERATORS,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{SqlDialect, pg::Postgres};

    fn name(sql: &str) -> ObjectName {
        match Postgres
            .parse_statement(&format!("SELECT {sql}()"))
            .unwrap()
        {
            sqlparser::ast::Statement::Query(q) => match *q.body {
                sqlparser::ast::SetExpr::Select(s) => match &s.projection[0] {
                    sqlparser::ast::SelectItem::UnnamedExpr(sqlparser::ast::Expr::Function(f)) => {
                        f.name.clone()
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_lists_are_sorted_for_binary_search() {
        let c = catalog();
        assert!(
            c.routines
                .windows(2)
                .all(|w| w[0].0.as_bytes() < w[1].0.as_bytes())
        );
        assert!(
            c.operators
                .windows(2)
                .all(|w| w[0].as_bytes() < w[1].as_bytes())
        );
        assert!(c.routines.len() > 2000, "{}", c.routines.len());
    }

    #[test]
    fn builtins_by_name_and_schema() {
        let r = |s: &str| routine(&name(s));
        assert_eq!(r("lower"), Routine::BuiltIn(Volatility::Immutable));
        assert_eq!(r("LOWER"), Routine::BuiltIn(Volatility::Immutable));
        assert_eq!(
            r("pg_catalog.lower"),
            Routine::BuiltIn(Volatility::Immutable)
        );
        assert_eq!(r("now"), Routine::BuiltIn(Volatility::Stable));
        assert_eq!(r("random"), Routine::BuiltIn(Volatility::Volatile));
        assert_eq!(r("count"), Routine::BuiltIn(Volatility::Immutable));
        assert_eq!(r("coalesce"), Routine::BuiltIn(Volatility::Immutable));
        // Another schema's routine, a user's name, a quoted spelling that
        // PostgreSQL does not fold: not built in.
        assert_eq!(r("public.lower"), Routine::NotBuiltIn);
        assert_eq!(r("purge_orders"), Routine::NotBuiltIn);
        assert_eq!(r("\"LOWER\""), Routine::NotBuiltIn);
        assert_eq!(r("\"coalesce\""), Routine::NotBuiltIn);
        assert!(operator("->>") && operator("@>") && operator("="));
        assert!(!operator("==="));
    }
}
