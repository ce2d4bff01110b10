//! The `policy:` section as written: the operator-facing schema.
//!
//! These structs only describe shape. Names that refer to other things
//! (statement kinds, detectors, tables) stay strings here, so that
//! [`super::compile`] can check each one and point at it by line and column.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use hoop_mask::Strategy;

/// `policy:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// What to do with SQL the parser cannot understand: `deny | hold | allow` (default `deny`).
    #[serde(default)]
    pub unparsed: UnparsedAction,
    /// What to do with statements that run server-side code hoop cannot see
    /// (anonymous blocks; creating or replacing routines, triggers, rules;
    /// calls to routines that are not built in): `deny | hold | allow`.
    /// Default: `deny` when the policy has any deny, hold or mask rule,
    /// otherwise `allow`.
    #[serde(default)]
    pub server_code: Option<ServerCodeAction>,
    /// What to do with statements that take a privileged path around the
    /// query (server files and logs, `COPY … PROGRAM` and server-side `COPY`
    /// files, raw storage pages, the write-ahead log, planner statistics,
    /// credentials, links to other databases, extensions, `ALTER SYSTEM`):
    /// `deny | hold | allow`. Default: `deny` when the policy has any deny,
    /// hold or mask rule, otherwise `allow`.
    #[serde(default)]
    pub privileged: Option<PrivilegedAction>,
    /// What to do when a masked column comes back in binary format and cannot be
    /// rewritten type-correctly: `refuse | null` (default `refuse`).
    #[serde(default, deserialize_with = "null_means_null")]
    pub binary_unmaskable: BinaryUnmaskable,
    /// Environment variable holding the key for `strategy: hash`.
    #[serde(default)]
    pub hash_key_env: Option<String>,
    /// File holding the key for `strategy: hash`.
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
    /// Custom regex detectors, referenced by name in a mask rule's `detect:`.
    #[serde(default)]
    pub detectors: Vec<DetectorSpec>,
    /// Masking rules.
    #[serde(default)]
    pub mask: Vec<MaskRuleSpec>,
    /// Statements that are refused.
    #[serde(default)]
    pub deny: Vec<DenyRuleSpec>,
    /// Statements that wait for an approver.
    #[serde(default)]
    pub hold: Vec<HoldRuleSpec>,
}

/// `policy.unparsed`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnparsedAction {
    /// Refuse it (fail closed; the default).
    #[default]
    Deny,
    /// Hold it for an approver.
    Hold,
    /// Let it through (fail open: hoop cannot see what it does).
    Allow,
}

/// `policy.server_code`: what happens to statements that run server-side
/// code hoop cannot see.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServerCodeAction {
    /// Refuse them (the default whenever the policy has any rule).
    #[default]
    Deny,
    /// Hold them for an approver.
    Hold,
    /// Let them through (what runs inside is invisible to every rule).
    Allow,
}

/// `policy.privileged`: what happens to statements that take a privileged
/// path around the query, where masking never looks.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PrivilegedAction {
    /// Refuse them (the default whenever the policy has any rule).
    #[default]
    Deny,
    /// Hold them for an approver.
    Hold,
    /// Let them through (what they read is never masked).
    Allow,
}

/// `predicates:` on a column mask rule: what happens to statements whose
/// filters, joins, groupings or sort keys read the masked column.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PredicateAction {
    /// Let them run (the default: lookups by a masked column are common).
    #[default]
    Allow,
    /// Refuse them before they reach the server.
    Deny,
    /// Hold them for an approver.
    Hold,
}

/// `policy.binary_unmaskable`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BinaryUnmaskable {
    /// Fail the statement with an error (the default: nothing unmasked leaks).
    #[default]
    Refuse,
    /// Send SQL NULL in place of the value.
    Null,
}

/// `policy.detectors[N]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// The name `detect:` lists refer to (`[a-z0-9_]+`, not a built-in detector's name).
    pub name: String,
    /// The regular expression (Rust `regex` syntax) a value must contain to be masked.
    pub regex: String,
}

/// `when:` on any rule: the rule applies only to matching sessions. Each list
/// holds exact values or glob patterns (`*` any run, `?` one character); a
/// session matches a list when any entry matches, and the selector when every
/// given list matches. A session attribute that is unknown matches nothing.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    /// Database names (from the StartupMessage).
    #[serde(default)]
    pub database: Option<Vec<String>>,
    /// Database user names (from the StartupMessage).
    #[serde(default)]
    pub user: Option<Vec<String>>,
    /// `application_name` values.
    #[serde(default)]
    pub application_name: Option<Vec<String>>,
    /// Workloads: the cgroup path of the client's socket, e.g. `/kubepods/*/pod1234*`.
    #[serde(default)]
    pub workload: Option<Vec<String>>,
    /// Kubernetes namespaces of the pod the session came from.
    #[serde(default)]
    pub namespace: Option<Vec<String>>,
    /// Kubernetes service accounts of that pod.
    #[serde(default)]
    pub service_account: Option<Vec<String>>,
    /// Kubernetes pod names.
    #[serde(default)]
    pub pod: Option<Vec<String>>,
    /// Kubernetes pod labels: every key given must be on the pod with a
    /// value one of its patterns matches (`{app: api, tier: [web, "edge-*"]}`).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, OneOrMany>>,
}

/// One pattern or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single pattern.
    One(String),
    /// Any of these patterns.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        match self {
            Self::One(p) => std::slice::from_ref(p),
            Self::Many(ps) => ps,
        }
    }
}

/// `policy.mask[N]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRuleSpec {
    /// The rule's name in logs and recordings (default `mask[N]`).
    #[serde(default)]
    pub name: Option<String>,
    /// Columns to mask: `schema.table.column`, `table.column` or a bare `column` (any table).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Content detectors: built-in names or `policy.detectors` names.
    #[serde(default)]
    pub detect: Option<Vec<String>>,
    /// How to rewrite a masked value (default `redact`). `null` may be written bare.
    #[serde(default, deserialize_with = "null_means_null")]
    pub strategy: Strategy,
    /// For `strategy: partial`: characters kept at the end (default 4).
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Column rules: what happens to statements that filter, join, group or
    /// sort by a masked column (`allow | deny | hold`, default `allow`).
    #[serde(default)]
    pub predicates: Option<PredicateAction>,
    /// Sessions the rule applies to (default: all).
    #[serde(default)]
    pub when: Option<WhenSpec>,
}

/// `policy.deny[N]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRuleSpec {
    /// The rule's name, shown to the client and recorded (default `deny[N]`).
    #[serde(default)]
    pub name: Option<String>,
    /// Statement kinds the rule matches (snake_case `StatementKind` names).
    pub statements: Vec<String>,
    /// Only statements touching one of these tables (`table` or `schema.table`).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Only UPDATE/DELETE without a row-restricting WHERE.
    #[serde(default)]
    pub without_where: bool,
    /// Deny only statements that touch more rows than this, counted by
    /// running the statement as a dry run and rolling it back.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Message shown to the client.
    #[serde(default)]
    pub message: Option<String>,
    /// Sessions the rule applies to (default: all).
    #[serde(default)]
    pub when: Option<WhenSpec>,
}

/// `policy.hold[N]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRuleSpec {
    /// The rule's name, shown to approvers and recorded (default `hold[N]`).
    #[serde(default)]
    pub name: Option<String>,
    /// Statement kinds the rule matches (snake_case `StatementKind` names).
    pub statements: Vec<String>,
    /// Only statements touching one of these tables (`table` or `schema.table`).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Only UPDATE/DELETE without a row-restricting WHERE.
    #[serde(default)]
    pub without_where: bool,
    /// Hold only statements that touch more rows than this, counted by a
    /// dry run the approver sees; approved, the statement runs again.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// How long to wait for approvers before denying (default 5m).
    #[serde(default = "default_hold_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Groups whose members may approve; empty means any authenticated approver.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Approvals needed (default 1).
    #[serde(default = "default_min_approvals")]
    pub min_approvals: u32,
    /// Message shown to the waiting client and to approvers.
    #[serde(default)]
    pub message: Option<String>,
    /// Sessions the rule applies to (default: all).
    #[serde(default)]
    pub when: Option<WhenSpec>,
}

/// Reads an enum that has a `null` variant, where YAML's bare `null` (which
/// is the null value, not the string) means that variant.
fn null_means_null<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_yaml_ng::Value::deserialize(deserializer)?;
    let value = if value.is_null() {
        serde_yaml_ng::Value::String("null".to_owned())
    } else {
        value
    };
    serde_yaml_ng::from_value(value).map_err(serde::de::Error::custom)
}

/// The default hold timeout: five minutes.
pub fn default_hold_timeout() -> Duration {
    Duration::from_mins(5)
}

fn default_min_approvals() -> u32 {
    1
}
