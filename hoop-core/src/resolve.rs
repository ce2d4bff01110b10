//! The port through which governance learns what a protocol's column keys
//! name, and which views read which tables: each protocol's catalog
//! implements [`ColumnResolver`] (PostgreSQL's asks `pg_catalog` on a side
//! connection). A protocol that names its columns itself uses
//! [`NoCatalog`].

use std::sync::{Arc, atomic::AtomicU64};

use crate::{Preparation, ResolvedColumn, SessionIdentity, SourceKey};

/// A relation (table or view) by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelationName {
    /// Schema, when known.
    pub schema: Option<String>,
    /// Name.
    pub name: String,
}

/// One column (or the whole row, when `column` is `None`) of `table` that
/// `view` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewDependency {
    /// The view (or materialized view).
    pub view: RelationName,
    /// A relation it reads.
    pub table: RelationName,
    /// The column it reads, or `None` for a whole-row reference.
    pub column: Option<String>,
}

/// Resolves column keys and lists view dependencies, for one protocol.
/// Answers come from a cache; [`ColumnResolver::prepare`] fills it.
/// Failures are never errors here: an unresolved column is masked wherever
/// lineage cannot prove it clean (fail closed).
pub trait ColumnResolver: Send + Sync {
    /// A lookup to await before [`ColumnResolver::resolve`] can answer for
    /// `keys` (and, the first time, [`ColumnResolver::views`]); `None` when
    /// there is nothing to fetch.
    fn prepare(&self, identity: &SessionIdentity, keys: &[SourceKey]) -> Option<Preparation>;

    /// The column `key` names, as far as the cache knows.
    fn resolve(&self, identity: &SessionIdentity, key: SourceKey) -> Option<ResolvedColumn>;

    /// The views' dependencies on the session's database, with a version
    /// that changes whenever they are reloaded.
    fn views(&self, identity: &SessionIdentity) -> (u64, Arc<[ViewDependency]>);

    /// A counter that changes whenever [`ColumnResolver::views`] or
    /// [`ColumnResolver::generation`] for `identity` may answer differently
    /// (`None`, the default: no such counter; callers ask those each time).
    /// A session reads it once per statement and result instead of asking
    /// both.
    fn change_counter(&self, _identity: &SessionIdentity) -> Option<Arc<AtomicU64>> {
        None
    }

    /// The version [`ColumnResolver::views`] would return, without the
    /// views (asked once per statement and result, to see whether they
    /// changed).
    fn views_version(&self, identity: &SessionIdentity) -> u64 {
        self.views(identity).0
    }

    /// A number that changes whenever an answer of
    /// [`ColumnResolver::resolve`] for `identity` may change; `None` (the
    /// default): unknown, so callers ask again every time. While it stays
    /// the same, a caller may keep the columns it resolved.
    fn generation(&self, _identity: &SessionIdentity) -> Option<u64> {
        None
    }
}

/// A resolver that knows nothing: keys stay unresolved, and there are no
/// views.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCatalog;

impl ColumnResolver for NoCatalog {
    fn prepare(&self, _: &SessionIdentity, _: &[SourceKey]) -> Option<Preparation> {
        None
    }

    fn resolve(&self, _: &SessionIdentity, _: SourceKey) -> Option<ResolvedColumn> {
        None
    }

    fn views(&self, _: &SessionIdentity) -> (u64, Arc<[ViewDependency]>) {
        (0, Arc::from(Vec::new()))
    }
}
