//! The policy: what is masked, denied and held, compiled from `policy:` once
//! and then evaluated per statement without allocation-heavy work.
//!
//! # Life cycle
//! parse (`serde_yaml_ng`, [`spec`]) → check every key and rule, reporting all
//! errors with file:line:column and key path ([`compile`]) → an immutable
//! [`Policy`] → shared through [`reload::PolicyHandle`] (an `ArcSwap`), so each
//! statement is judged against one snapshot and a reload swaps atomically.
//!
//! # Precedence
//! - **Statements** ([`Policy::judge`]): every statement of a multi-statement
//!   Query is classified ([`classify`]) and judged; the verdict is for the
//!   whole text, because the server runs all or (on a syntax error) none of it.
//!   **deny beats hold beats allow.** Deny rules are tried in file order, and
//!   the first one matching *any* statement names the denial; then an
//!   unparsed statement under `unparsed: deny`; then hold rules in file order;
//!   then an unparsed statement under `unparsed: hold`; otherwise allow.
//!   So one denied statement denies the whole text and nothing runs.
//! - **A rule matches a statement** when its `when:` selects the session, any of
//!   the statement's kinds (its own and those it executes, see [`classify`]) is in
//!   `statements`, any of its tables matches `tables` (if given), and, with
//!   `without_where: true`, an UPDATE/DELETE it executes has no row-restricting
//!   WHERE. Kinds and tables are not paired: `INSERT INTO a SELECT … FROM b`
//!   matches `{statements: [insert], tables: [b]}` (fail closed).
//! - **Unparsed** statements match no rule: `policy.unparsed` alone decides them
//!   (default deny). Opaque statements (`DO`, `CALL`, functions) are judged by
//!   kind and visible tables only; what runs inside them is invisible.
//! - **Masking is independent of deny/hold**: it applies to the results of
//!   whatever is allowed (or approved). For one result column, column rules come
//!   before detectors; among column rules the most specific reference wins
//!   (`schema.table.column` > `table.column` > `column`), ties go to the first
//!   rule in file order; detectors then apply to values no column rule masked.
//!   Two rules that mask the same column or detector under the same `when:` with
//!   different strategies are a configuration error.

#![forbid(unsafe_code)]

use std::{fmt, path::Path, sync::OnceLock};

use regex::Regex;

mod compile;
pub mod names;
pub mod reload;
pub mod spec;
pub mod when;

#[cfg(test)]
mod tests;

pub use compile::{compile, compile_into, compile_when};
pub use hoop_sql::{ClassifiedStatement, classify};
pub use names::{ColumnRef, TablePattern, TableRef};
pub use spec::{BinaryUnmaskable, UnparsedAction};
pub use when::Selector;

use hoop_config::{Config, ConfigError, Diagnostic, Loaded};
use hoop_core::{Denial, HoldRequirement, SessionIdentity, StatementKind, Submission, Verdict};
use hoop_mask::{BuiltinDetector, Strategy};
use hoop_sql::{ParsedSql, SqlDialect};

/// The compiled `policy:` section. Immutable; cheap to evaluate.
#[derive(Debug, Default)]
pub struct Policy {
    unparsed: UnparsedAction,
    binary_unmaskable: BinaryUnmaskable,
    hash_key: Option<HashKey>,
    mask: Vec<MaskRule>,
    deny: Vec<DenyRule>,
    hold: Vec<HoldRule>,
}

/// The decision for one SQL text, with what it was based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Allow, deny or hold the whole text.
    pub verdict: Verdict,
    /// Every statement of the text, classified.
    pub statements: Vec<ClassifiedStatement>,
    /// The rule that decided (`None` for allow): a rule name or `policy.unparsed`.
    pub rule: Option<String>,
}

/// A compiled mask rule, as the mask engine consumes it.
#[derive(Debug, Clone)]
pub struct MaskRule {
    /// Its `name:` or `mask[N]`.
    pub name: String,
    /// Columns it masks (empty for a detector rule).
    pub columns: Vec<ColumnRef>,
    /// Content detectors it applies (empty for a column rule).
    pub detectors: Vec<Detector>,
    /// How values are rewritten.
    pub strategy: Strategy,
    /// For `partial`: characters kept at the end (default 4); `None` otherwise.
    pub keep_last: Option<u32>,
    /// Which sessions it applies to.
    pub when: Selector,
}

/// A content detector a mask rule applies.
#[derive(Debug, Clone)]
pub enum Detector {
    /// One of the built-in detectors.
    Builtin(BuiltinDetector),
    /// A `policy.detectors` entry: a value containing a match is masked.
    Custom {
        /// Its name.
        name: String,
        /// Its compiled regex.
        regex: Regex,
    },
}

/// The key for `strategy: hash`. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct HashKey(Vec<u8>);

impl HashKey {
    /// The key bytes (from `hash_key_env` or `hash_key_file`, trailing newlines removed).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashKey(<{} bytes>)", self.0.len())
    }
}

/// What a deny or hold rule matches.
#[derive(Debug, Clone)]
struct GuardMatcher {
    kinds: Vec<StatementKind>,
    tables: Option<Vec<TablePattern>>,
    without_where: bool,
    when: Selector,
}

impl GuardMatcher {
    fn matches(&self, statement: &ClassifiedStatement) -> bool {
        statement.kind != StatementKind::Unparsed
            && statement.kinds().any(|k| self.kinds.contains(&k))
            && self.tables.as_ref().is_none_or(|patterns| {
                statement
                    .tables
                    .iter()
                    .any(|t| patterns.iter().any(|p| p.matches(t)))
            })
            && (!self.without_where || !statement.has_where)
    }
}

#[derive(Debug, Clone)]
struct DenyRule {
    name: String,
    message: String,
    matcher: GuardMatcher,
}

#[derive(Debug, Clone)]
struct HoldRule {
    requirement: HoldRequirement,
    matcher: GuardMatcher,
}

/// The rule name reported for decisions made by `policy.unparsed`.
pub const UNPARSED_RULE: &str = "policy.unparsed";

impl Policy {
    /// Judges a SQL text from one submission, parsing it in `dialect`.
    pub fn judge(
        &self,
        dialect: &'static dyn SqlDialect,
        sql: &str,
        submission: Submission,
        session: &SessionIdentity,
    ) -> Judgement {
        self.judge_parsed(&ParsedSql::parse(dialect, sql), submission, session)
    }

    /// Judges an already parsed text. A function call (PostgreSQL's fast
    /// path, a function by id) is judged as an opaque `call` whatever the
    /// text is.
    pub fn judge_parsed(
        &self,
        parsed: &ParsedSql<'_>,
        submission: Submission,
        session: &SessionIdentity,
    ) -> Judgement {
        let statements = match submission {
            Submission::FunctionCall => vec![ClassifiedStatement::function_call()],
            Submission::Text | Submission::Prepared => classify(parsed),
        };
        self.judge_classified(statements, session)
    }

    /// Judges already classified statements (see the module docs for precedence).
    pub fn judge_classified(
        &self,
        statements: Vec<ClassifiedStatement>,
        session: &SessionIdentity,
    ) -> Judgement {
        let matching =
            |m: &GuardMatcher| m.when.matches(session) && statements.iter().any(|s| m.matches(s));
        let unparsed = statements.iter().any(|s| s.kind == StatementKind::Unparsed);
        let (verdict, rule) = if let Some(rule) = self.deny.iter().find(|r| matching(&r.matcher)) {
            (
                Verdict::Deny(Denial {
                    rule: rule.name.clone(),
                    message: rule.message.clone(),
                }),
                Some(rule.name.clone()),
            )
        } else if unparsed && self.unparsed == UnparsedAction::Deny {
            let message =
                "hoop could not parse this statement, and policy denies statements it cannot check"
                    .to_owned();
            (
                Verdict::Deny(Denial {
                    rule: UNPARSED_RULE.to_owned(),
                    message,
                }),
                Some(UNPARSED_RULE.to_owned()),
            )
        } else if let Some(rule) = self.hold.iter().find(|r| matching(&r.matcher)) {
            (
                Verdict::Hold(rule.requirement.clone()),
                Some(rule.requirement.rule.clone()),
            )
        } else if unparsed && self.unparsed == UnparsedAction::Hold {
            let requirement = HoldRequirement {
                rule: UNPARSED_RULE.to_owned(),
                message: "hoop could not parse this statement; it waits for an approver".to_owned(),
                timeout: spec::default_hold_timeout(),
                approvers: Vec::new(),
                min_approvals: 1,
            };
            (Verdict::Hold(requirement), Some(UNPARSED_RULE.to_owned()))
        } else {
            (Verdict::Allow, None)
        };
        Judgement {
            verdict,
            statements,
            rule,
        }
    }

    /// The mask rules that apply to `session`, in file order.
    pub fn mask_rules_for(&self, session: &SessionIdentity) -> Vec<&MaskRule> {
        self.mask
            .iter()
            .filter(|rule| rule.when.matches(session))
            .collect()
    }

    /// Every mask rule, in file order.
    pub fn mask_rules(&self) -> &[MaskRule] {
        &self.mask
    }

    /// What to do with a masked value in binary format that cannot be rewritten.
    pub fn binary_unmaskable(&self) -> BinaryUnmaskable {
        self.binary_unmaskable
    }

    /// The key for `strategy: hash`, when configured.
    pub fn hash_key(&self) -> Option<&HashKey> {
        self.hash_key.as_ref()
    }

    /// What unparsed statements get.
    pub fn unparsed(&self) -> UnparsedAction {
        self.unparsed
    }
}

/// A configuration file with its policy compiled.
pub type LoadedConfig = Loaded<Policy>;

/// Reads a configuration file and compiles its policy, reporting every
/// problem in the file (every section and the policy) at once.
pub fn load_checked(path: &Path) -> Result<LoadedConfig, ConfigError> {
    Config::load_with(path, &compile_into)
}

/// Parses configuration text and compiles its policy, reporting every
/// problem at once; `path` only names the file in errors.
pub fn parse_checked(path: &Path, text: &str) -> Result<LoadedConfig, ConfigError> {
    Config::parse_with(path, text, &compile_into)
}

/// The outcome of `hoop policy check FILE`.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Findings that reject the file (including a read error, at 0:0).
    pub errors: Vec<Diagnostic>,
    /// Findings that do not.
    pub warnings: Vec<Diagnostic>,
}

impl CheckReport {
    /// Whether the file is valid (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for CheckReport {
    /// One finding per line, `file:line:col: error: path: message (hint: …)`, in file order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut all: Vec<&Diagnostic> = self.errors.iter().chain(&self.warnings).collect();
        all.sort_by_key(|d| d.location.map_or((usize::MAX, 0), |l| (l.line, l.column)));
        for diagnostic in all {
            writeln!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Checks a configuration file the way `hoop policy check FILE` reports it:
/// every section and the policy, all findings at once. The caller decides the
/// exit code from [`CheckReport::is_ok`].
pub fn check_file(path: &Path) -> CheckReport {
    check_with(path, |path| {
        load_checked(path).map(|loaded| loaded.warnings)
    })
}

/// As [`check_file`], loading with `load` (which returns the warnings of a
/// valid file): for callers that compile more sections than the policy.
pub fn check_with(
    path: &Path,
    load: impl FnOnce(&Path) -> Result<Vec<Diagnostic>, ConfigError>,
) -> CheckReport {
    let found = match load(path) {
        Ok(warnings) => warnings,
        Err(ConfigError::Invalid { diagnostics, .. }) => diagnostics,
        Err(e @ ConfigError::Read { .. }) => vec![Diagnostic {
            severity: hoop_config::Severity::Error,
            file: path.to_owned(),
            location: None,
            path: hoop_config::KeyPath::root(),
            message: e.to_string(),
            hint: None,
        }],
    };
    let (errors, warnings) = found.into_iter().partition(Diagnostic::is_error);
    CheckReport { errors, warnings }
}

/// Policy metrics, registered once on the process registry.
pub struct PolicyMetrics {
    /// `hoop_policy_reloads_total`: successful policy reloads.
    pub reloads_total: prometheus::IntCounter,
    /// `hoop_policy_reload_errors_total`: reloads rejected (the old policy stays).
    pub reload_errors_total: prometheus::IntCounter,
}

/// The process-wide policy metrics (registered on [`hoop_core::metrics::metrics`]'s registry).
pub fn policy_metrics() -> &'static PolicyMetrics {
    static METRICS: OnceLock<PolicyMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let reloads_total = prometheus::IntCounter::new("hoop_policy_reloads_total", "Successful policy reloads.")
            .expect("valid metric");
        let reload_errors_total = prometheus::IntCounter::new(
            "hoop_policy_reload_errors_total",
            "Policy reloads rejected because the file was invalid; the last good policy stays in force.",
        )
        .expect("valid metric");
        let registry = &hoop_core::metrics::metrics().registry;
        registry.register(Box::new(reloads_total.clone())).expect("metric registered once");
        registry.register(Box::new(reload_errors_total.clone())).expect("metric registered once");
        PolicyMetrics { reloads_total, reload_errors_total }
    })
}
