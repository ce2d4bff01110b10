//! Masking: content detectors, strategies, column lineage and row rewriting.
//!
//! Pure and protocol-neutral: values in, values out. The policy file names
//! these types; no wire format is known here.
//!
//! How the pieces fit (the governance layer glues them to a driver):
//! - [`MaskRules`] is built once per policy snapshot from the compiled policy.
//! - For each statement, [`lineage::analyze`] says, per output column
//!   position, whether it may carry a masked value. Lineage is computed from
//!   the SQL alone (parsed once, in the session's dialect); it never
//!   under-approximates (anything it cannot follow is
//!   [`lineage::ColumnLineage::Unknown`], which masks the column).
//! - For each result set, [`plan::MaskPlan::new`] combines the lineage with
//!   each [`hoop_core::ResultColumn`]'s source, as the protocol and its
//!   catalog resolved it, into per-column actions. Then
//!   [`plan::MaskPlan::rewrite_row`] rewrites a row's values into the
//!   driver's encoder, or leaves the row untouched so its original bytes are
//!   forwarded.
//! - [`MaskRules::mask_free_text`] masks the texts a server echoes (errors,
//!   notices, notifications), with the dialect's echo patterns.

#![forbid(unsafe_code)]

pub mod detect;
mod echo;
pub mod lineage;
pub mod plan;
pub mod row;
pub mod strategy;
pub mod text;

use serde::Deserialize;

pub use detect::{DetectorKind, DetectorMatch, DetectorSet};
pub use lineage::{
    ColumnLineage, Lineage, SqlLineage,
    predicates::{PredicateReads, predicate_reads},
};
pub use plan::{Finding, MaskCounts, MaskPlan, MaskRefusal, masked_views};

/// How a masked value is rewritten (`strategy:` in a mask rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// A fixed `[REDACTED:kind]`.
    #[default]
    Redact,
    /// Keep the last `keep_last` characters and format characters; mask the rest.
    Partial,
    /// A keyed HMAC token: equal inputs give equal tokens.
    Hash,
    /// SQL NULL.
    Null,
}

impl Strategy {
    /// How much a strategy hides; used when one output column derives from
    /// several masked columns and one strategy has to win (the strictest).
    pub(crate) fn strictness(self) -> u8 {
        match self {
            Strategy::Partial => 0,
            Strategy::Hash => 1,
            Strategy::Redact => 2,
            Strategy::Null => 3,
        }
    }

    /// The strategy applied to a value *computed from* a masked column
    /// (`reverse(ssn)`, `substr(ssn,1,3)`). `partial` and `hash` are only
    /// safe on the original value: partial on `reverse(ssn)` would reveal the
    /// first digits, and a hash of `substr(ssn,1,1)` sorts rows into ten
    /// recognisable classes. So derived values are redacted instead.
    pub(crate) fn for_derived_value(self) -> Strategy {
        match self {
            Strategy::Partial | Strategy::Hash => Strategy::Redact,
            other => other,
        }
    }
}

/// A built-in content detector (`detect:` in a mask rule). Custom regex
/// detectors are referenced by name and defined under `policy.detectors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinDetector {
    /// RFC 5322-ish addresses.
    Email,
    /// 13–19 digit card numbers, with spaces or dashes, passing Luhn.
    CreditCard,
    /// US social security numbers, `AAA-GG-SSSS`, excluding invalid areas/groups.
    Ssn,
    /// International bank account numbers with a valid mod-97 checksum.
    Iban,
    /// E.164 phone numbers (`+` and 8–15 digits).
    Phone,
    /// Dotted-quad IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// JSON Web Tokens (three base64url segments, header starting `eyJ`).
    Jwt,
    /// AWS access key ids (`AKIA`/`ASIA`… + 16 characters).
    AwsAccessKey,
}

impl BuiltinDetector {
    /// Every built-in detector.
    pub const ALL: [BuiltinDetector; 9] = [
        BuiltinDetector::Email,
        BuiltinDetector::CreditCard,
        BuiltinDetector::Ssn,
        BuiltinDetector::Iban,
        BuiltinDetector::Phone,
        BuiltinDetector::Ipv4,
        BuiltinDetector::Ipv6,
        BuiltinDetector::Jwt,
        BuiltinDetector::AwsAccessKey,
    ];

    /// The policy-file name (`detect: [email]`), also the `kind` in `[REDACTED:kind]`.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinDetector::Email => "email",
            BuiltinDetector::CreditCard => "credit_card",
            BuiltinDetector::Ssn => "ssn",
            BuiltinDetector::Iban => "iban",
            BuiltinDetector::Phone => "phone",
            BuiltinDetector::Ipv4 => "ipv4",
            BuiltinDetector::Ipv6 => "ipv6",
            BuiltinDetector::Jwt => "jwt",
            BuiltinDetector::AwsAccessKey => "aws_access_key",
        }
    }
}

/// A column named by a mask rule: `[schema.]table.column`, or a bare
/// `column` meaning that column name in any table. Names are stored folded
/// the way PostgreSQL folds unquoted identifiers (lower case); the policy
/// compiler passes quoted identifiers verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnRef {
    /// Schema, when the rule names one.
    pub schema: Option<String>,
    /// Table, unless the rule is a bare column name.
    pub table: Option<String>,
    /// Column name.
    pub column: String,
}

impl ColumnRef {
    /// Parses `col`, `table.col` or `schema.table.col` as a policy file
    /// writes it (unquoted parts are lower-cased; `"Quoted"` parts keep
    /// their case).
    pub fn parse(text: &str) -> Result<ColumnRef, MaskRulesError> {
        let bad = || MaskRulesError::BadColumnRef(text.to_owned());
        let mut parts = hoop_sql::names::parse_dotted(text)
            .map_err(|_| bad())?
            .into_iter()
            .rev();
        let column = parts.next().ok_or_else(bad)?;
        let table = parts.next();
        let schema = parts.next();
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(ColumnRef {
            schema,
            table,
            column,
        })
    }

    /// Whether this rule names `column` of a table called `table` (in
    /// `schema`, when known). A rule without a schema matches every schema;
    /// a table without a known schema (unqualified in SQL) matches every
    /// rule schema, because the search path is not known here.
    pub fn matches(&self, schema: Option<&str>, table: &str, column: &str) -> bool {
        self.column == column && self.matches_table(schema, table)
    }

    /// Whether this rule could name a column of `table` (bare rules: any table).
    pub fn matches_table(&self, schema: Option<&str>, table: &str) -> bool {
        match &self.table {
            None => true,
            Some(t) => {
                t == table
                    && match (&self.schema, schema) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }
            }
        }
    }
}

/// A column mask rule: these columns, always, with this strategy.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    /// Rule name: the metrics label and the `kind` in `[REDACTED:kind]`.
    pub name: String,
    /// The columns it covers.
    pub columns: Vec<ColumnRef>,
    /// How values are rewritten.
    pub strategy: Strategy,
    /// Characters `partial` keeps (ignored by other strategies).
    pub keep_last: usize,
}

/// A content mask rule: spans these detectors find, in any text value.
#[derive(Debug, Clone)]
pub struct DetectorRule {
    /// Rule name: the metrics label.
    pub name: String,
    /// Detectors; a span's `[REDACTED:kind]` names the detector, not the rule.
    pub detectors: Vec<DetectorKind>,
    /// How found spans are rewritten (`null` nulls the whole value).
    pub strategy: Strategy,
    /// Characters `partial` keeps (ignored by other strategies).
    pub keep_last: usize,
}

/// What to do with a masked column whose value is in binary format and whose
/// type has no text form we can rewrite in place (int, numeric, bytea,
/// arrays, composites, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryUnmaskable {
    /// Fail the statement with an error telling the client to ask for text format.
    #[default]
    Refuse,
    /// Send SQL NULL instead.
    Null,
}

/// Errors building [`MaskRules`].
#[derive(Debug, thiserror::Error)]
pub enum MaskRulesError {
    /// A column reference that is not `col`, `table.col` or `schema.table.col`.
    #[error(
        "`{0}` is not a column reference (expected column, table.column or schema.table.column)"
    )]
    BadColumnRef(String),
    /// A custom detector regex that the byte-level engine cannot compile.
    #[error("custom detector `{name}`: {source}")]
    CustomRegex {
        /// Detector name.
        name: String,
        /// Why it failed.
        #[source]
        source: regex::Error,
    },
    /// `hash` is used but no key was given.
    #[error("a mask rule uses `strategy: hash` but no hash key is configured")]
    MissingHashKey,
}

/// Every mask rule of one policy snapshot, compiled.
#[derive(Debug, Clone)]
pub struct MaskRules {
    pub(crate) column_rules: Vec<ColumnRule>,
    pub(crate) detector_rules: Vec<DetectorRule>,
    pub(crate) detectors: DetectorSet,
    pub(crate) hash_key: Vec<u8>,
    pub(crate) binary_unmaskable: BinaryUnmaskable,
    /// Views (and materialized views) known, from the catalog, to read a
    /// masked column: every column of them is masked by that rule.
    pub(crate) masked_relations: Vec<(lineage::TableName, usize)>,
}

impl MaskRules {
    /// Compiles the rules. `hash_key` keys the `hash` strategy (required when
    /// any rule uses it).
    pub fn new(
        column_rules: Vec<ColumnRule>,
        detector_rules: Vec<DetectorRule>,
        hash_key: Vec<u8>,
        binary_unmaskable: BinaryUnmaskable,
    ) -> Result<MaskRules, MaskRulesError> {
        let uses_hash = column_rules.iter().any(|r| r.strategy == Strategy::Hash)
            || detector_rules.iter().any(|r| r.strategy == Strategy::Hash);
        if uses_hash && hash_key.is_empty() {
            return Err(MaskRulesError::MissingHashKey);
        }
        let detectors = DetectorSet::new(&detector_rules)?;
        Ok(MaskRules {
            column_rules,
            detector_rules,
            detectors,
            hash_key,
            binary_unmaskable,
            masked_relations: Vec::new(),
        })
    }

    /// No rules at all: nothing is ever masked.
    pub fn is_empty(&self) -> bool {
        self.column_rules.is_empty() && self.detector_rules.is_empty()
    }

    /// The column rules, in policy order (lineage's `rule` indexes these).
    pub fn column_rules(&self) -> &[ColumnRule] {
        &self.column_rules
    }

    /// The detector rules, in policy order.
    pub fn detector_rules(&self) -> &[DetectorRule] {
        &self.detector_rules
    }

    /// Records views that read masked columns (see [`masked_views`]): every
    /// column of such a view is treated as masked by that rule, in lineage
    /// and when a result column names the view as its source.
    pub fn set_masked_relations(&mut self, views: Vec<(lineage::TableName, usize)>) {
        self.masked_relations = views;
    }

    /// These rules with columns where a detector rule found values added
    /// as column rules of that detector rule's name and strategy (see
    /// `hoop_govern`'s promotions). Pairs naming a detector rule these rules
    /// do not have are skipped (the detector does not apply to this
    /// session). `None` when none applies.
    pub fn with_promoted<'a>(
        &self,
        promoted: impl IntoIterator<Item = (&'a str, &'a ColumnRef)>,
    ) -> Option<MaskRules> {
        let mut rules = self.clone();
        let mut added = false;
        for (name, column) in promoted {
            let Some(detector) = self.detector_rules.iter().find(|d| d.name == name) else {
                continue;
            };
            match rules
                .column_rules
                .iter_mut()
                .skip(self.column_rules.len())
                .find(|r| r.name == name)
            {
                Some(rule) => rule.columns.push(column.clone()),
                None => rules.column_rules.push(ColumnRule {
                    name: detector.name.clone(),
                    columns: vec![column.clone()],
                    strategy: detector.strategy,
                    keep_last: detector.keep_last,
                }),
            }
            added = true;
        }
        added.then_some(rules)
    }

    /// The first column rule covering `schema.table.column`, if any.
    pub fn column_rule_for(
        &self,
        schema: Option<&str>,
        table: &str,
        column: &str,
    ) -> Option<usize> {
        if let Some(&(_, rule)) = self.masked_relations.iter().find(|(t, _)| {
            t.name == table
                && t.schema
                    .as_deref()
                    .is_none_or(|s| Some(s) == schema || schema.is_none())
        }) {
            return Some(rule);
        }
        self.column_rules
            .iter()
            .position(|r| r.columns.iter().any(|c| c.matches(schema, table, column)))
    }
}
