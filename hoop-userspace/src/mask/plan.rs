//! MaskPlan: what to do with each column of one result set, decided once
//! per RowDescription; plus the catalog pieces that resolve a column's
//! table OID/attnum to a name.

use std::{collections::HashMap, collections::HashSet, sync::Arc};

use super::{
    BinaryUnmaskable, MaskRules, Strategy,
    detect::DetectorMatch,
    lineage::{ColumnLineage, Lineage, TableName},
};

/// One column of a RowDescription, as the codec parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDescription {
    /// Output column name.
    pub name: String,
    /// Source table OID, 0 when the column is not a plain table column.
    pub table_oid: u32,
    /// Source column number, 0 when unknown.
    pub column_attnum: i16,
    /// Data type OID.
    pub type_oid: u32,
    /// 0 = text, 1 = binary.
    pub format: i16,
}

/// A column's source, resolved from (table OID, attnum) through the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolvedColumn {
    /// Schema name.
    pub schema: String,
    /// Table (or view) name.
    pub table: String,
    /// Column name.
    pub column: String,
}

/// Catalog query resolving table OIDs to every column's name. `$1` is an
/// `oid[]` of the OIDs [`CatalogCache::missing_oids`] returns; feed each
/// result row (text format) to [`CatalogCache::insert_row`].
pub const COLUMNS_QUERY: &str = "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname \
FROM pg_catalog.pg_attribute a \
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.oid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped";

/// Catalog query listing which columns every view and materialized view
/// reads (`ref_column` is NULL for a whole-row reference). Run it once per
/// connection (or policy load) and pass the rows to [`masked_views`]; the
/// result goes to [`MaskRules::set_masked_relations`]. Without it, a view
/// over a masked column is only caught by bare-column rules and detectors.
pub const VIEW_DEPENDENCIES_QUERY: &str = "SELECT DISTINCT vn.nspname, v.relname, tn.nspname, t.relname, a.attname \
FROM pg_catalog.pg_rewrite r \
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') \
JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
 AND d.refclassid = 'pg_catalog.pg_class'::regclass \
JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND t.oid <> v.oid \
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace \
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid AND d.refobjsubid > 0";

/// Errors reading catalog result rows.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A row with the wrong number of fields.
    #[error("catalog row has {found} fields, expected {expected}")]
    FieldCount {
        /// Fields expected.
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A field that is NULL, not UTF-8, or not a number where one is expected.
    #[error("catalog row field {0} is not valid")]
    BadField(usize),
}

/// (table OID, attnum) → column names, filled from [`COLUMNS_QUERY`].
#[derive(Debug, Clone, Default)]
pub struct CatalogCache {
    columns: HashMap<(u32, i16), ResolvedColumn>,
    tables: HashSet<u32>,
}

fn field<'a>(row: &[Option<&'a [u8]>], i: usize) -> Result<&'a str, CatalogError> {
    row.get(i)
        .copied()
        .flatten()
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or(CatalogError::BadField(i))
}

impl CatalogCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Table OIDs of `columns` not yet in the cache (the `$1` of [`COLUMNS_QUERY`]).
    pub fn missing_oids(&self, columns: &[ColumnDescription]) -> Vec<u32> {
        let mut out: Vec<u32> = columns
            .iter()
            .map(|c| c.table_oid)
            .filter(|&oid| oid != 0 && !self.tables.contains(&oid))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Marks OIDs as looked up (so a table that vanished is not queried again).
    pub fn mark_loaded(&mut self, oids: &[u32]) {
        self.tables.extend(oids.iter().copied());
    }

    /// Adds one text-format result row of [`COLUMNS_QUERY`].
    pub fn insert_row(&mut self, row: &[Option<&[u8]>]) -> Result<(), CatalogError> {
        if row.len() != 5 {
            return Err(CatalogError::FieldCount {
                expected: 5,
                found: row.len(),
            });
        }
        let oid: u32 = field(row, 0)?
            .parse()
            .map_err(|_| CatalogError::BadField(0))?;
        let attnum: i16 = field(row, 3)?
            .parse()
            .map_err(|_| CatalogError::BadField(3))?;
        self.tables.insert(oid);
        self.columns.insert(
            (oid, attnum),
            ResolvedColumn {
                schema: field(row, 1)?.to_owned(),
                table: field(row, 2)?.to_owned(),
                column: field(row, 4)?.to_owned(),
            },
        );
        Ok(())
    }

    /// The source of one column, when known.
    pub fn resolve(&self, column: &ColumnDescription) -> Option<&ResolvedColumn> {
        if column.table_oid == 0 || column.column_attnum <= 0 {
            return None;
        }
        self.columns.get(&(column.table_oid, column.column_attnum))
    }

    /// Sources of every column, for [`MaskPlan::new`].
    pub fn resolve_all(&self, columns: &[ColumnDescription]) -> Vec<Option<ResolvedColumn>> {
        columns.iter().map(|c| self.resolve(c).cloned()).collect()
    }
}

/// From [`VIEW_DEPENDENCIES_QUERY`] rows (text format), the views that read
/// a masked column, directly or through other views, each with the rule
/// that masks it.
pub fn masked_views(
    rules: &MaskRules,
    rows: &[Vec<Option<&[u8]>>],
) -> Result<Vec<(TableName, usize)>, CatalogError> {
    struct Dep {
        view: TableName,
        table: TableName,
        column: Option<String>,
    }
    let mut deps = Vec::with_capacity(rows.len());
    for row in rows {
        if row.len() != 5 {
            return Err(CatalogError::FieldCount {
                expected: 5,
                found: row.len(),
            });
        }
        deps.push(Dep {
            view: TableName {
                schema: Some(field(row, 0)?.to_owned()),
                name: field(row, 1)?.to_owned(),
            },
            table: TableName {
                schema: Some(field(row, 2)?.to_owned()),
                name: field(row, 3)?.to_owned(),
            },
            column: row[4]
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_owned),
        });
    }
    let mut masked: Vec<(TableName, usize)> = Vec::new();
    // Fixed point: views over views.
    loop {
        let mut grew = false;
        for dep in &deps {
            if masked.iter().any(|(v, _)| *v == dep.view) {
                continue;
            }
            let via_view = masked
                .iter()
                .find(|(v, _)| *v == dep.table)
                .map(|&(_, r)| r);
            let schema = dep.table.schema.as_deref();
            let rule = via_view.or_else(|| {
                rules.column_rules.iter().position(|r| {
                    r.columns.iter().any(|c| match &dep.column {
                        Some(col) => c.matches(schema, &dep.table.name, col),
                        None => c.matches_table(schema, &dep.table.name),
                    })
                })
            });
            if let Some(rule) = rule {
                masked.push((dep.view.clone(), rule));
                grew = true;
            }
        }
        if !grew {
            return Ok(masked);
        }
    }
}

/// Why a row cannot be forwarded. The lead answers the client with an
/// ErrorResponse (and stops forwarding that result set).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskRefusal {
    /// A masked column is in binary format and its type cannot be rewritten.
    #[error(
        "column \"{column}\" is masked by policy, but its type (oid {type_oid}) cannot be masked in binary format; request this column in text format"
    )]
    BinaryUnmaskable {
        /// Output column name.
        column: String,
        /// Its type OID.
        type_oid: u32,
    },
    /// The DataRow does not have as many columns as the RowDescription.
    #[error("DataRow has {found} columns but the RowDescription had {expected}")]
    ColumnCount {
        /// Columns in the RowDescription.
        expected: usize,
        /// Columns in the DataRow.
        found: usize,
    },
    /// The DataRow body is not well formed.
    #[error("malformed DataRow: {0}")]
    Malformed(&'static str),
}

/// How a value is laid out, for type-correct rewriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Text (text format, or binary of a text-like type).
    Text,
    /// JSON text: a whole-value replacement is written as a JSON string.
    Json,
    /// Binary jsonb: a version byte, then JSON text.
    JsonbBinary,
    /// Binary of a type we cannot rewrite.
    Opaque,
}

impl Encoding {
    fn of(type_oid: u32, format: i16) -> Encoding {
        match (format, type_oid) {
            (_, 114) | (0, 3802) => Encoding::Json,
            (1, 3802) => Encoding::JsonbBinary,
            (0, _) | (_, 25 | 1043 | 1042 | 19 | 142 | 705) => Encoding::Text,
            _ => Encoding::Opaque,
        }
    }
}

/// What happens to one column's values.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Forward (after detectors, when `detect`).
    Keep,
    /// Replace every non-NULL value.
    Mask {
        strategy: Strategy,
        kind: Arc<str>,
        keep_last: usize,
        counter: usize,
    },
    /// Refuse the row when a value is present.
    Refuse,
}

#[derive(Debug, Clone)]
pub(crate) struct ColumnPlan {
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    pub(crate) encoding: Encoding,
    pub(crate) action: Action,
    pub(crate) detect: bool,
}

/// Values masked per rule since the last [`MaskPlan::take_counts`]:
/// `(rule name, count)`, only rules with a count. `unknown` counts columns
/// masked because their lineage could not be determined.
pub type MaskCounts = Vec<(Arc<str>, u64)>;

/// The per-column actions for one result set. Build once per
/// RowDescription, then call [`MaskPlan::rewrite_row`] for every DataRow.
#[derive(Debug)]
pub struct MaskPlan {
    pub(crate) rules: Arc<MaskRules>,
    pub(crate) columns: Vec<ColumnPlan>,
    /// Counter names: column rules, then detector rules, then `unknown`.
    pub(crate) counter_names: Vec<Arc<str>>,
    pub(crate) counts: Vec<u64>,
    pub(crate) matches: Vec<DetectorMatch>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) noop: bool,
}

/// What a column is masked as, before the binary-format check.
fn column_mask(
    rules: &MaskRules,
    lineage: &ColumnLineage,
    resolved: Option<&ResolvedColumn>,
) -> Option<(Strategy, usize, bool)> {
    // (strategy, counter index, is_unknown)
    let unknown = rules.column_rules.len() + rules.detector_rules.len();
    let by_source =
        resolved.and_then(|r| rules.column_rule_for(Some(&r.schema), &r.table, &r.column));
    let by_lineage = match lineage {
        ColumnLineage::Clean => None,
        ColumnLineage::Masked { rule, direct } => {
            let strategy = rules
                .column_rules
                .get(*rule)
                .map_or(Strategy::Redact, |r| r.strategy);
            Some((
                if *direct {
                    strategy
                } else {
                    strategy.for_derived_value()
                },
                *rule,
                false,
            ))
        }
        ColumnLineage::FromTable {
            masked_if_unresolved,
            ..
        } => (resolved.is_none() && *masked_if_unresolved).then_some((
            Strategy::Redact,
            unknown,
            true,
        )),
        ColumnLineage::Unknown => Some((Strategy::Redact, unknown, true)),
    };
    let by_source = by_source.map(|rule| (rules.column_rules[rule].strategy, rule, false));
    match (by_source, by_lineage) {
        (Some(a), Some(b)) => Some(if b.0.strictness() > a.0.strictness() {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

impl MaskPlan {
    /// Decides every column's action. `resolved[i]` is the catalog source of
    /// column `i` (see [`CatalogCache::resolve_all`]); a shorter slice means
    /// "unresolved" for the missing columns.
    pub fn new(
        rules: Arc<MaskRules>,
        lineage: &Lineage,
        columns: &[ColumnDescription],
        resolved: &[Option<ResolvedColumn>],
    ) -> MaskPlan {
        let n_col = rules.column_rules.len();
        let mut counter_names: Vec<Arc<str>> = rules
            .column_rules
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .chain(
                rules
                    .detector_rules
                    .iter()
                    .map(|r| Arc::from(r.name.as_str())),
            )
            .collect();
        counter_names.push(Arc::from("unknown"));
        let detectors = !rules.detectors.is_empty();
        let plans: Vec<ColumnPlan> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let encoding = Encoding::of(c.type_oid, c.format);
                let source = resolved.get(i).and_then(Option::as_ref);
                let action = match column_mask(&rules, lineage.column(i), source) {
                    None => Action::Keep,
                    Some((strategy, counter, _)) => {
                        let (kind, keep_last) = if counter < n_col {
                            let r = &rules.column_rules[counter];
                            (counter_names[counter].clone(), r.keep_last)
                        } else {
                            (counter_names[counter].clone(), 0)
                        };
                        if encoding == Encoding::Opaque && strategy != Strategy::Null {
                            match rules.binary_unmaskable {
                                BinaryUnmaskable::Refuse => Action::Refuse,
                                BinaryUnmaskable::Null => Action::Mask {
                                    strategy: Strategy::Null,
                                    kind,
                                    keep_last,
                                    counter,
                                },
                            }
                        } else {
                            Action::Mask {
                                strategy,
                                kind,
                                keep_last,
                                counter,
                            }
                        }
                    }
                };
                ColumnPlan {
                    name: c.name.clone(),
                    type_oid: c.type_oid,
                    encoding,
                    detect: detectors
                        && encoding != Encoding::Opaque
                        && matches!(action, Action::Keep),
                    action,
                }
            })
            .collect();
        let noop = plans
            .iter()
            .all(|p| matches!(p.action, Action::Keep) && !p.detect);
        let counts = vec![0; counter_names.len()];
        MaskPlan {
            rules,
            columns: plans,
            counter_names,
            counts,
            matches: Vec::new(),
            scratch: Vec::new(),
            noop,
        }
    }

    /// Nothing in this result set can ever be rewritten: the caller may
    /// skip [`MaskPlan::rewrite_row`] entirely.
    pub fn is_noop(&self) -> bool {
        self.noop
    }

    /// Output columns masked whole (for the recording's result summary).
    pub fn masked_columns(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|c| !matches!(c.action, Action::Keep))
            .map(|c| c.name.as_str())
    }

    /// Values masked per rule since the last call, then reset. Feed them to
    /// `hoop_masked_values_total{rule}`.
    pub fn take_counts(&mut self) -> MaskCounts {
        let mut out = Vec::new();
        for (name, count) in self.counter_names.iter().zip(self.counts.iter_mut()) {
            if *count > 0 {
                out.push((name.clone(), *count));
                *count = 0;
            }
        }
        out
    }
}
