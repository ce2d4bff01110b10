//! Writes fed by a whole copy of their own target: every existing row finds
//! itself in the source, so every row is written however the statement
//! looks. Provable cases only (`without_where` rules count them as writes
//! without a WHERE):
//! - an upsert, `INSERT INTO t … SELECT … FROM t ON CONFLICT … DO UPDATE`
//!   without a `WHERE` on the update, whose source reads all of `t` (no
//!   `WHERE`, join, grouping, `DISTINCT` or limit): each row conflicts with
//!   its own copy;
//!   (MySQL's `ON DUPLICATE KEY UPDATE`, and `REPLACE INTO t … SELECT …
//!   FROM t`, which deletes each row and inserts its copy, likewise);
//! - a `MERGE INTO t USING t` (or an unfiltered subquery of `t`) `ON` the
//!   same column of both, with a `WHEN MATCHED` clause that updates or
//!   deletes unconditionally: each row matches itself.
//!
//! A source that is another table may reach every row too, but whether it
//! does depends on the data; those are not counted.

use sqlparser::ast::{
    BinaryOperator, Expr, Insert, MergeAction, MergeClause, MergeClauseKind, ObjectName,
    OnConflictAction, OnInsert, Query, SetExpr, TableFactor, TableObject,
};

use crate::SqlDialect;

/// Whether two names (as written) may be the same table: same last part,
/// and the same schema when both say one.
fn same_table(a: &ObjectName, b: &ObjectName, dialect: &dyn SqlDialect) -> bool {
    let parts = |n: &ObjectName| -> Vec<String> {
        n.0.iter()
            .filter_map(|p| p.as_ident())
            .map(|i| dialect.fold(i))
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    match (a.split_last(), b.split_last()) {
        (Some((ta, sa)), Some((tb, sb))) => {
            ta == tb && (sa.is_empty() || sb.is_empty() || sa.last() == sb.last())
        }
        _ => false,
    }
}

/// Whether `query` reads every row of `target` once each: `TABLE t` or a
/// plain `SELECT … FROM t` with nothing that drops rows.
fn whole_read_of(query: &Query, target: &ObjectName, dialect: &dyn SqlDialect) -> bool {
    if query.with.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return false;
    }
    match query.body.as_ref() {
        SetExpr::Table(t) => t.table_name.as_deref().is_some_and(|name| {
            let n = ObjectName::from(vec![sqlparser::ast::Ident::new(name)]);
            same_table(&n, target, dialect)
        }),
        SetExpr::Select(select) => {
            // A WHERE that is true for every row (`1 = 1`, `id = id OR id IS
            // NULL`) drops none.
            !super::tautology::restricts(select.selection.as_ref(), dialect, None)
                && select.having.is_none()
                && select.distinct.is_none()
                && select.top.is_none()
                && matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty())
                && matches!(select.from.as_slice(), [from]
                if from.joins.is_empty()
                    && match &from.relation {
                        TableFactor::Table { name, args: None, .. } => {
                            same_table(name, target, dialect)
                        }
                        // `FROM (SELECT * FROM t) AS s`: the same rows.
                        TableFactor::Derived { subquery, .. } => {
                            whole_read_of(subquery, target, dialect)
                        }
                        _ => false,
                    })
        }
        SetExpr::Query(inner) => whole_read_of(inner, target, dialect),
        _ => false,
    }
}

/// See the module: an upsert whose source is all of its own target. MySQL's
/// `INSERT … ON DUPLICATE KEY UPDATE` (which has no `WHERE` of its own)
/// and `REPLACE` (which deletes the conflicting row, then inserts) count as
/// well.
pub(super) fn upsert_rewrites_every_row(insert: &Insert, dialect: &dyn SqlDialect) -> bool {
    let TableObject::TableName(target) = &insert.table else {
        return false;
    };
    let unconditional = match &insert.on {
        Some(OnInsert::OnConflict(conflict)) => match &conflict.action {
            OnConflictAction::DoUpdate(update) => update.selection.is_none(),
            OnConflictAction::DoNothing => false,
        },
        Some(OnInsert::DuplicateKeyUpdate(_)) => true,
        _ => insert.replace_into,
    };
    unconditional
        && insert
            .source
            .as_deref()
            .is_some_and(|q| whole_read_of(q, target, dialect))
}

/// Whether the upsert updates on conflict (`ON CONFLICT … DO UPDATE`,
/// MySQL's `ON DUPLICATE KEY UPDATE`).
pub(super) fn upsert_updates(insert: &Insert) -> bool {
    match &insert.on {
        Some(OnInsert::OnConflict(c)) => matches!(c.action, OnConflictAction::DoUpdate(_)),
        Some(OnInsert::DuplicateKeyUpdate(_)) => true,
        _ => false,
    }
}

/// The table a `FROM` item reads and the name that qualifies its columns.
fn table_and_qualifier<'a>(
    factor: &'a TableFactor,
    dialect: &dyn SqlDialect,
) -> Option<(Option<&'a ObjectName>, Option<&'a Query>, String)> {
    match factor {
        TableFactor::Table { name, alias, .. } => {
            let q = match alias {
                Some(a) => dialect.fold(&a.name),
                None => dialect.fold(name.0.last()?.as_ident()?),
            };
            Some((Some(name), None, q))
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => Some((None, Some(subquery), dialect.fold(&alias.as_ref()?.name))),
        _ => None,
    }
}

/// See the module: a MERGE of a table with a whole copy of itself, matched
/// column to same column, that writes every match.
pub(super) fn merge_matches_every_row(
    table: &TableFactor,
    source: &TableFactor,
    on: &Expr,
    clauses: &[MergeClause],
    dialect: &dyn SqlDialect,
) -> bool {
    let Some((Some(target), None, tq)) = table_and_qualifier(table, dialect) else {
        return false;
    };
    let Some((source_table, source_query, sq)) = table_and_qualifier(source, dialect) else {
        return false;
    };
    let whole = match (source_table, source_query) {
        (Some(name), _) => same_table(name, target, dialect),
        (None, Some(query)) => whole_read_of(query, target, dialect),
        (None, None) => false,
    };
    if !whole || tq == sq {
        return false;
    }
    let writes_every_match = clauses.iter().any(|c| {
        c.clause_kind == MergeClauseKind::Matched
            && c.predicate.is_none()
            && matches!(c.action, MergeAction::Update { .. } | MergeAction::Delete)
    });
    writes_every_match && self_equalities(on, &tq, &sq, dialect)
}

/// Whether `on` is one or more `a.c = b.c` (same column, one side each)
/// joined by `AND`.
fn self_equalities(on: &Expr, a: &str, b: &str, dialect: &dyn SqlDialect) -> bool {
    match on {
        Expr::Nested(e) => self_equalities(e, a, b, dialect),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => self_equalities(left, a, b, dialect) && self_equalities(right, a, b, dialect),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let column = |e: &Expr| match e {
                Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                    Some((dialect.fold(&parts[0]), dialect.fold(&parts[1])))
                }
                _ => None,
            };
            match (column(left), column(right)) {
                (Some((ql, cl)), Some((qr, cr))) => {
                    cl == cr && ((ql == a && qr == b) || (ql == b && qr == a))
                }
                _ => false,
            }
        }
        _ => false,
    }
}
