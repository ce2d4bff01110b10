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
//! - **Unparsed** statements match a rule only by what their leading words
//!   say (`DROP OWNED …` is a `drop` and `destructive_ddl`), and only rules
//!   without `tables`/`without_where`; otherwise `policy.unparsed` decides
//!   them (default deny).
//! - **Server-side code** (`DO`, creating routines, triggers, rules, calls
//!   to routines that are not built in) is decided by `policy.server_code`
//!   after the deny rules (default deny whenever the policy has a rule).
//! - **`max_rows`** on a deny or hold rule makes it conditional: a verdict
//!   with `max_rows` asks the driver for a dry run, and
//!   [`Policy::judge_rows`] with the count gives the final verdict. A text
//!   whose rows a dry run cannot count (several statements, or a kind whose
//!   tag reports no rows) is judged as if over the limit (fail closed).
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
pub use spec::{
    BinaryUnmaskable, PredicateAction, PrivilegedAction, ServerCodeAction, UnparsedAction,
};
pub use when::Selector;

use hoop_config::{Config, ConfigError, Diagnostic, Loaded};
use hoop_core::{Denial, HoldRequirement, SessionIdentity, StatementKind, Submission, Verdict};
use hoop_mask::{BuiltinDetector, Strategy};
use hoop_sql::{ParsedSql, SqlDialect};

/// The compiled `policy:` section. Immutable; cheap to evaluate.
#[derive(Debug, Default)]
pub struct Policy {
    unparsed: UnparsedAction,
    server_code: ServerCodeAction,
    privileged: PrivilegedAction,
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
    /// What happens to statements that filter, join, group or sort by a
    /// column it masks (column rules only).
    pub predicates: PredicateAction,
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
    /// `destructive_ddl` is in `statements`.
    destructive_ddl: bool,
    tables: Option<Vec<TablePattern>>,
    without_where: bool,
    /// The rule applies only to statements that touch more rows than this.
    max_rows: Option<u64>,
    when: Selector,
}

impl GuardMatcher {
    fn matches(&self, statement: &ClassifiedStatement) -> bool {
        let kind = statement.kinds().any(|k| self.kinds.contains(&k))
            || (self.destructive_ddl && statement.destructive_ddl);
        if statement.kind == StatementKind::Unparsed {
            // Known only by its leading words (`DROP OWNED …`): matched by
            // its kind or group, when the rule asks nothing the words cannot
            // tell (tables, WHERE).
            return kind && self.tables.is_none() && !self.without_where;
        }
        kind && self.tables.as_ref().is_none_or(|patterns| {
            statement
                .tables
                .iter()
                .any(|t| patterns.iter().any(|p| p.matches(t)))
        }) && (!self.without_where || !statement.has_where)
    }
}

/// The statement group `statements: [destructive_ddl]` names.
pub const DESTRUCTIVE_DDL: &str = "destructive_ddl";

/// Statement kinds whose command tags report the rows they touch, so that
/// `max_rows` can count them.
const COUNTABLE: [StatementKind; 5] = [
    StatementKind::Select,
    StatementKind::Insert,
    StatementKind::Update,
    StatementKind::Delete,
    StatementKind::Merge,
];

/// What is known of the rows a statement touches when it is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCount {
    /// Not counted: a rule with `max_rows` gives a verdict that asks for a
    /// dry run ([`Denial::max_rows`], [`HoldRequirement::max_rows`]).
    NotCounted,
    /// A dry run counted them (`None`: it could not, which counts as over
    /// every limit).
    Counted(Option<u64>),
}

/// How a rule with `max_rows` applies to a text.
enum Applies {
    No,
    Yes,
    /// Only if a dry run counts more rows than this.
    IfOver(u64),
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

/// The rule name reported for decisions made by `policy.privileged`.
pub const PRIVILEGED_RULE: &str = "policy.privileged";

/// The rule name reported for decisions made by `policy.server_code`.
pub const SERVER_CODE_RULE: &str = "policy.server_code";

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
    /// path, a function by id, given as `function <id>`) is judged as an
    /// opaque `call` whatever the text is.
    pub fn judge_parsed(
        &self,
        parsed: &ParsedSql<'_>,
        submission: Submission,
        session: &SessionIdentity,
    ) -> Judgement {
        self.judge_rows(parsed, submission, session, RowCount::NotCounted)
    }

    /// Judges an already parsed text knowing (or not) how many rows it
    /// touches: after a dry run, `RowCount::Counted`.
    pub fn judge_rows(
        &self,
        parsed: &ParsedSql<'_>,
        submission: Submission,
        session: &SessionIdentity,
        rows: RowCount,
    ) -> Judgement {
        let statements = match submission {
            Submission::FunctionCall => vec![
                parsed
                    .text
                    .strip_prefix("function ")
                    .and_then(|id| id.trim().parse().ok())
                    .map_or_else(ClassifiedStatement::function_call, |id| {
                        ClassifiedStatement::function_call_by_id(id, parsed.dialect())
                    }),
            ],
            Submission::Text | Submission::Prepared => classify(parsed),
        };
        self.judge_classified_rows(statements, session, rows)
    }

    /// Judges already classified statements (see the module docs for precedence).
    pub fn judge_classified(
        &self,
        statements: Vec<ClassifiedStatement>,
        session: &SessionIdentity,
    ) -> Judgement {
        self.judge_classified_rows(statements, session, RowCount::NotCounted)
    }

    /// [`Policy::judge_classified`] with what is known of the rows touched.
    ///
    /// Order: deny rules (file order; a rule with `max_rows` only when the
    /// count is over its limit, or asks for a dry run when not counted yet),
    /// `server_code: deny`, `privileged: deny`, `unparsed: deny`, then a
    /// pending dry run for a deny rule, then hold rules likewise,
    /// `server_code: hold`, `privileged: hold`, `unparsed: hold`, a pending
    /// dry run for a hold rule; otherwise allow.
    pub fn judge_classified_rows(
        &self,
        statements: Vec<ClassifiedStatement>,
        session: &SessionIdentity,
        rows: RowCount,
    ) -> Judgement {
        // A dry run can count one statement whose tag reports its rows.
        let countable = match statements.as_slice() {
            [one] => one.rows_reported.then_some(()).ok_or(
                "the server reports no row count for it (only a plain select, insert, update, delete or merge has one)",
            ),
            _ => Err("it is one of several statements in one text; send it on its own"),
        };
        let applies = |m: &GuardMatcher| -> Applies {
            if !(m.when.matches(session) && statements.iter().any(|s| m.matches(s))) {
                return Applies::No;
            }
            match (m.max_rows, rows) {
                (Some(limit), RowCount::NotCounted) if countable.is_ok() => Applies::IfOver(limit),
                (Some(limit), RowCount::Counted(Some(n))) if countable.is_ok() && n <= limit => {
                    Applies::No
                }
                // No limit; or a count over it, unknown, or impossible.
                _ => Applies::Yes,
            }
        };
        // What a rule with max_rows that applies says about the rows.
        let rows_note = |limit: Option<u64>| -> String {
            match (limit, rows, countable) {
                (Some(limit), _, Err(why)) => {
                    format!(" (max_rows {limit} cannot be checked for this statement: {why})")
                }
                (Some(limit), RowCount::Counted(Some(n)), _) => {
                    format!(" (a dry run touched {n} rows; the limit is {limit})")
                }
                (Some(limit), RowCount::Counted(None), _) => {
                    format!(" (hoop could not count the rows it touches; the limit is {limit})")
                }
                (None, ..) | (Some(_), RowCount::NotCounted, _) => String::new(),
            }
        };
        let unparsed = statements.iter().any(|s| s.kind == StatementKind::Unparsed);
        let server_code = statements.iter().find_map(|s| s.server_code.as_ref());
        let privileged = statements.iter().find_map(|s| s.privileged.as_ref());
        let mut pending_deny: Option<(&DenyRule, u64)> = None;
        let mut decided: Option<(Verdict, String)> = None;
        for rule in &self.deny {
            match applies(&rule.matcher) {
                Applies::Yes => {
                    decided = Some((
                        Verdict::Deny(Denial::new(
                            rule.name.clone(),
                            format!("{}{}", rule.message, rows_note(rule.matcher.max_rows)),
                        )),
                        rule.name.clone(),
                    ));
                    break;
                }
                Applies::IfOver(limit) => {
                    if pending_deny.is_none_or(|(_, l)| limit < l) {
                        pending_deny = Some((rule, limit));
                    }
                }
                Applies::No => {}
            }
        }
        if decided.is_none()
            && let Some(code) = server_code
            && self.server_code == ServerCodeAction::Deny
        {
            let message = format!(
                "hoop cannot see what server-side code does ({code}), and policy.server_code denies it"
            );
            decided = Some((
                Verdict::Deny(Denial::new(SERVER_CODE_RULE, message)),
                SERVER_CODE_RULE.to_owned(),
            ));
        }
        if decided.is_none()
            && let Some(path) = privileged
            && self.privileged == PrivilegedAction::Deny
        {
            let message = format!(
                "this statement takes a privileged path around the query ({path}), where hoop cannot mask or check what it reads, and policy.privileged denies it"
            );
            decided = Some((
                Verdict::Deny(Denial::new(PRIVILEGED_RULE, message)),
                PRIVILEGED_RULE.to_owned(),
            ));
        }
        if decided.is_none() && unparsed && self.unparsed == UnparsedAction::Deny {
            let message =
                "hoop could not parse this statement, and policy denies statements it cannot check"
                    .to_owned();
            decided = Some((
                Verdict::Deny(Denial::new(UNPARSED_RULE, message)),
                UNPARSED_RULE.to_owned(),
            ));
        }
        if decided.is_none()
            && let Some((rule, limit)) = pending_deny
        {
            decided = Some((
                Verdict::Deny(Denial {
                    max_rows: Some(limit),
                    ..Denial::new(rule.name.clone(), rule.message.clone())
                }),
                rule.name.clone(),
            ));
        }
        let mut pending_hold: Option<(&HoldRule, u64)> = None;
        if decided.is_none() {
            for rule in &self.hold {
                match applies(&rule.matcher) {
                    Applies::Yes => {
                        let mut requirement = rule.requirement.clone();
                        requirement
                            .message
                            .push_str(&rows_note(rule.matcher.max_rows));
                        requirement.max_rows = None;
                        decided = Some((Verdict::Hold(requirement), rule.requirement.rule.clone()));
                        break;
                    }
                    Applies::IfOver(limit) => {
                        if pending_hold.is_none_or(|(_, l)| limit < l) {
                            pending_hold = Some((rule, limit));
                        }
                    }
                    Applies::No => {}
                }
            }
        }
        let policy_hold = |rule: &str, message: String| HoldRequirement {
            rule: rule.to_owned(),
            message,
            timeout: spec::default_hold_timeout(),
            approvers: Vec::new(),
            min_approvals: 1,
            max_rows: None,
        };
        if decided.is_none()
            && let Some(code) = server_code
            && self.server_code == ServerCodeAction::Hold
        {
            let requirement = policy_hold(
                SERVER_CODE_RULE,
                format!(
                    "this statement runs server-side code hoop cannot see ({code}); it waits for an approver"
                ),
            );
            decided = Some((Verdict::Hold(requirement), SERVER_CODE_RULE.to_owned()));
        }
        if decided.is_none()
            && let Some(path) = privileged
            && self.privileged == PrivilegedAction::Hold
        {
            let requirement = policy_hold(
                PRIVILEGED_RULE,
                format!(
                    "this statement takes a privileged path around the query ({path}); it waits for an approver"
                ),
            );
            decided = Some((Verdict::Hold(requirement), PRIVILEGED_RULE.to_owned()));
        }
        if decided.is_none() && unparsed && self.unparsed == UnparsedAction::Hold {
            let requirement = policy_hold(
                UNPARSED_RULE,
                "hoop could not parse this statement; it waits for an approver".to_owned(),
            );
            decided = Some((Verdict::Hold(requirement), UNPARSED_RULE.to_owned()));
        }
        if decided.is_none()
            && let Some((rule, limit)) = pending_hold
        {
            let mut requirement = rule.requirement.clone();
            requirement.max_rows = Some(limit);
            decided = Some((Verdict::Hold(requirement), rule.requirement.rule.clone()));
        }
        let (verdict, rule) = match decided {
            Some((verdict, rule)) => (verdict, Some(rule)),
            None => (Verdict::Allow, None),
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

    /// What statements that run server-side code get (the default resolved).
    pub fn server_code(&self) -> ServerCodeAction {
        self.server_code
    }

    /// What statements that take a privileged path get.
    pub fn privileged(&self) -> PrivilegedAction {
        self.privileged
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
    /// `hoop_policy_info{sha256}`: 1 for the SHA-256 of the file whose policy is enforced.
    pub info: prometheus::IntGaugeVec,
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
        let info = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "hoop_policy_info",
                "1, labelled with the SHA-256 of the configuration file whose policy is enforced (compare across nodes).",
            ),
            &["sha256"],
        )
        .expect("valid metric");
        let registry = &hoop_core::metrics::metrics().registry;
        registry.register(Box::new(reloads_total.clone())).expect("metric registered once");
        registry.register(Box::new(reload_errors_total.clone())).expect("metric registered once");
        registry.register(Box::new(info.clone())).expect("metric registered once");
        PolicyMetrics { reloads_total, reload_errors_total, info }
    })
}
