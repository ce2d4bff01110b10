//! One session's governance: the state it keeps (the policy snapshot and
//! its compiled mask rules, judgement and lineage caches, cursors, prepared
//! statements) and the [`SessionGovernor`] hooks.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use hoop_config::{RecordRows, RecordingOnError};
use hoop_core::{
    ColumnResolver, ColumnSource, ObjectChange, Preparation, Refusal, ResolvedColumn, ResultColumn,
    RowRewriter, ServerText, SessionEvent, SessionGovernor, SessionIdentity, SourceKey,
    StatementContext, Verdict, metrics::metrics,
};
use hoop_mask::{MaskPlan, MaskRules, lineage};
use hoop_policy::{
    Policy,
    reload::{PolicyCache, PolicyHandle},
};
use hoop_record::{FailureFlag, SessionRecorder};
use hoop_sql::{ParsedSql, SessionOp, SqlDialect};
use tracing::warn;

use crate::{
    has_masking,
    judgement::{CachedJudgement, Prepared},
    mask_rules,
    predicates::PredicateGuard,
    promotions::Promotions,
    rows::{Promoter, RowMasking},
};

const LINEAGE_CACHE_MAX: usize = 256;

/// What replaces server text raised by code running in the server while
/// masking is active.
const UNKNOWN_TEXT: &str = "[REDACTED:unknown]";
/// A server text withheld because its statement reaches masked data.
const WITHHELD_TEXT: &str = "[REDACTED:server_text]";
const CURSORS_MAX: usize = 1024;

/// The recorder, shared with row rewriters (which record masked rows).
pub(crate) type SharedRecorder = Arc<Mutex<SessionRecorder>>;

pub(crate) fn lock(recorder: &SharedRecorder) -> MutexGuard<'_, SessionRecorder> {
    // A panic while recording must not stop the session from being recorded
    // as failed; the recorder's own state stays consistent per call.
    recorder
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One session's governance.
pub struct SessionGovernance {
    pub(crate) identity: SessionIdentity,
    /// The session's SQL dialect (its protocol's server).
    pub(crate) dialect: &'static dyn SqlDialect,
    /// The live policy, checked per statement with one pointer comparison.
    policy: PolicyCache,
    /// The snapshot `rules` was compiled from.
    pub(crate) snapshot: Arc<Policy>,
    pub(crate) rules: Arc<MaskRules>,
    /// `has_masking(&rules)`, kept beside the policy pointer that every
    /// statement checks (reading it through `rules` is a cache miss).
    pub(crate) masking: bool,
    /// Whether the driver shows us every result (decided once, at start).
    pub(crate) inspecting: bool,
    record_rows: bool,
    pub(crate) on_error: RecordingOnError,
    /// Shared with row rewriters, which record masked rows (`rows: full`).
    pub(crate) recorder: SharedRecorder,
    /// The recording's failure flag, read without locking `recorder`.
    recording_failure: Option<FailureFlag>,
    /// The session has a recording (statement texts are masked for it).
    pub(crate) recording: bool,
    /// Set when the session must end (recording failed under close_session).
    pub(crate) fatal: Option<Refusal>,
    /// The protocol's catalog: result-column keys and view dependencies.
    columns: Arc<dyn ColumnResolver>,
    /// Cursor name → its query, as the server confirmed it (SQL `DECLARE`
    /// or a named protocol portal), for rows that come from `FETCH`.
    cursors: HashMap<String, String>,
    /// Prepared statement name → its SQL, as the server confirmed it (SQL
    /// `PREPARE` or a named protocol Parse), for rows that come from SQL
    /// `EXECUTE`.
    statements: HashMap<String, String>,
    /// The catalog's view-dependency version `rules` includes.
    views_version: u64,
    /// The SQL text judged before the current one.
    previous_sql: String,
    /// Columns detectors found values in, promoted to column rules (shared
    /// by every session of the process).
    promotions: Arc<Promotions>,
    /// The promotions' generation `rules` includes.
    promoted_generation: u64,
    /// The catalog's change counter for `identity`, fetched on first use
    /// and again after the identity changes.
    catalog_changes: CatalogChanges,
    /// The counter's value when `refresh` last found the views unchanged.
    refreshed_at: Option<u64>,
    /// Prepared statement name → its judgement and how often it was bound
    /// since it was prepared (re-executions are recorded as statements too).
    pub(crate) prepared: HashMap<Box<str>, Prepared, foldhash::fast::RandomState>,
    /// Literal-free SQL fingerprint → the judgement for the current policy.
    pub(crate) judgements: HashMap<Box<str>, Arc<CachedJudgement>, foldhash::fast::RandomState>,
    /// SQL → its lineage, for the current rule set (prepared statements run
    /// the same SQL again and again).
    lineage_cache: HashMap<Box<str>, Arc<lineage::SqlLineage>>,
    /// The mask rules whose `predicates` is `deny` or `hold` (`None`: none).
    pub(crate) predicates: Option<PredicateGuard>,
    /// SQL fingerprint → what its results need (lineage, the last plan),
    /// for the current rule set: a statement run again with other literals
    /// is neither parsed nor analysed again, and a result described as
    /// before is decided as before.
    results: HashMap<Box<str>, ResultMemo, foldhash::fast::RandomState>,
    /// The last text fingerprinted, and its fingerprint (`None`: the text
    /// has none): a statement's results reuse its judgement's.
    pub(crate) fingerprinted: (String, Option<String>),
    /// The fingerprint's pass showed `fingerprinted`'s text holds no string
    /// literal (the recorded text needs no literal redaction).
    pub(crate) fingerprinted_without_strings: bool,
    /// The judgement being made depends on a literal's value (it is not
    /// cached by fingerprint).
    pub(crate) judged_by_literal: bool,
    /// A judgement made for [`SessionGovernor::tables_before_judging`] that
    /// the cache does not keep (judged by its literals, or without a
    /// fingerprint), with its text: the next `judge` of the same text
    /// takes it instead of parsing again.
    pub(crate) pre_judged: Option<(String, Arc<crate::judgement::CachedJudgement>)>,
    /// Reused for each result's column keys.
    keys: Vec<SourceKey>,
}

/// What the results of one SQL fingerprint need.
struct ResultMemo {
    /// Some statement of the text fetches from a cursor: its rows' lineage
    /// is the cursor's query's, looked up each time.
    fetches: bool,
    lineage: Arc<lineage::SqlLineage>,
    /// The plan decided for the last result of this text.
    plan: Option<PlanMemo>,
}

/// A result's plan decision, kept with what it was decided from.
struct PlanMemo {
    statement_index: usize,
    columns: Vec<ResultColumn>,
    resolved: Vec<Option<ResolvedColumn>>,
    /// The catalog's generation `resolved` was read at (`None`: unknown).
    generation: Option<u64>,
    /// Nothing in such a result can be rewritten.
    noop: bool,
}

/// A session's view of its catalog's change counter.
enum CatalogChanges {
    /// Not asked yet (or the identity changed since).
    Unasked,
    /// The catalog keeps none.
    None,
    Counter(Arc<AtomicU64>),
}

impl SessionGovernance {
    /// Governance for a session whose start-up named `identity`.
    pub fn new(
        identity: &SessionIdentity,
        policy: &PolicyHandle,
        columns: Arc<dyn ColumnResolver>,
        recorder: SessionRecorder,
        rows: RecordRows,
        on_error: RecordingOnError,
        fatal: Option<Refusal>,
    ) -> Self {
        let snapshot = policy.snapshot();
        let rules = mask_rules(&snapshot, identity);
        let predicates = PredicateGuard::new(&snapshot, identity, &[]);
        let inspecting = has_masking(&rules) || rows == RecordRows::Full;
        Self {
            recording: recorder.is_recording(),
            recording_failure: recorder.failure_flag(),
            identity: identity.clone(),
            dialect: hoop_sql::dialect_for(identity.protocol),
            policy: policy.cache(),
            snapshot,
            masking: has_masking(&rules),
            rules,
            inspecting,
            record_rows: rows == RecordRows::Full,
            on_error,
            recorder: Arc::new(Mutex::new(recorder)),
            fatal,
            columns,
            cursors: HashMap::new(),
            statements: HashMap::new(),
            views_version: 0,
            promotions: Arc::default(),
            promoted_generation: 0,
            catalog_changes: CatalogChanges::Unasked,
            refreshed_at: None,
            previous_sql: String::new(),
            judgements: HashMap::default(),
            prepared: HashMap::default(),
            lineage_cache: HashMap::new(),
            predicates,
            results: HashMap::default(),
            fingerprinted: (String::new(), None),
            fingerprinted_without_strings: false,
            judged_by_literal: false,
            pre_judged: None,
            keys: Vec::new(),
        }
    }

    /// Shares `promotions` (detector findings promoted to column rules)
    /// with the other sessions of the process.
    #[must_use]
    pub fn with_promotions(mut self, promotions: Arc<Promotions>) -> Self {
        self.promotions = promotions;
        self
    }

    /// Brings the mask rules up to the live policy (and the catalog's view
    /// dependencies, and promoted columns). Afterwards `snapshot` is the
    /// live policy.
    pub(crate) fn refresh(&mut self) {
        let changes = self.catalog_changes();
        let live = self.policy.load();
        let policy_changed = !Arc::ptr_eq(live, &self.snapshot);
        if !policy_changed && !self.masking {
            // View dependencies only matter to masking.
            return;
        }
        // Usually nothing changed: the versions are compared without
        // taking a reference to the policy or the views, and the views'
        // version is asked only when the catalog's change counter moved.
        let promoted_generation = self.promotions.generation();
        if !policy_changed
            && promoted_generation == self.promoted_generation
            && changes.is_some()
            && changes == self.refreshed_at
        {
            return;
        }
        if policy_changed
            || self.columns.views_version(&self.identity) != self.views_version
            || promoted_generation != self.promoted_generation
        {
            let current = live.clone();
            let (views_version, views) = self.columns.views(&self.identity);
            let mut rules = mask_rules(&current, &self.identity);
            let promoted = self.promotions.for_policy(&current);
            if let Some(with) =
                rules.with_promoted(promoted.iter().map(|p| (p.rule.as_str(), &p.column)))
            {
                rules = Arc::new(with);
            }
            if has_masking(&rules) && !views.is_empty() {
                let relations = hoop_mask::masked_views(&rules, &views);
                Arc::make_mut(&mut rules).set_masked_relations(relations);
            }
            self.masking = has_masking(&rules);
            self.rules = rules;
            self.predicates = PredicateGuard::new(&current, &self.identity, &views);
            self.snapshot = current;
            self.views_version = views_version;
            self.promoted_generation = promoted_generation;
            self.lineage_cache.clear();
            self.judgements.clear();
            self.pre_judged = None;
            self.results.clear();
        }
        // Read before the views were: a change since shows next time.
        self.refreshed_at = changes;
    }

    /// The catalog's change counter for this session's identity, now.
    fn catalog_changes(&mut self) -> Option<u64> {
        if let CatalogChanges::Unasked = self.catalog_changes {
            self.catalog_changes = match self.columns.change_counter(&self.identity) {
                Some(counter) => CatalogChanges::Counter(counter),
                None => CatalogChanges::None,
            };
        }
        match &self.catalog_changes {
            CatalogChanges::Counter(counter) => Some(counter.load(Ordering::Acquire)),
            CatalogChanges::Unasked | CatalogChanges::None => None,
        }
    }

    /// The catalog's generation for this session's identity: its change
    /// counter where it has one (which moves whenever the generation does).
    fn catalog_generation(&mut self) -> Option<u64> {
        match self.catalog_changes() {
            Some(changes) => Some(changes),
            None => self.columns.generation(&self.identity),
        }
    }

    /// The session's identity changed: the catalog it reads may be another.
    pub(crate) fn identity_changed(&mut self) {
        self.catalog_changes = CatalogChanges::Unasked;
        self.refreshed_at = None;
        // Plans were decided with that catalog's generation.
        self.results.clear();
    }

    /// `sql`'s literal-free fingerprint (`None`: it has none), computed
    /// once for consecutive calls with the same text (a statement's
    /// judgement, then its results).
    pub(crate) fn fingerprint(&mut self, sql: &str) -> bool {
        let (text, fingerprint) = &mut self.fingerprinted;
        if text != sql {
            // The text before is kept (for `SHOW WARNINGS`, which reads
            // the diagnostics of the statement before it).
            std::mem::swap(&mut self.previous_sql, text);
            let mut buf = fingerprint.take().unwrap_or_default();
            let (keyed, no_strings) = self.dialect.fingerprint_noting_strings(sql, &mut buf);
            *fingerprint = keyed.then_some(buf);
            self.fingerprinted_without_strings = no_strings;
            text.clear();
            text.push_str(sql);
        }
        self.fingerprinted.1.is_some()
    }

    /// The mask plan for a result of `statement` (`None`: nothing in it can
    /// be rewritten), decided once per fingerprint, statement and column
    /// description.
    fn plan(
        &mut self,
        statement: &StatementContext<'_>,
        columns: &[ResultColumn],
    ) -> Option<MaskPlan> {
        let index = statement.statement_index;
        if !self.fingerprint(statement.sql) {
            let resolved = self.resolve(columns);
            let lineage = self.result_lineage(statement);
            let plan = MaskPlan::new(self.rules.clone(), &lineage, columns, &resolved);
            return (!plan.is_noop()).then_some(plan);
        }
        let generation = self.catalog_generation();
        let key = self.fingerprinted.1.as_deref().unwrap_or_default();
        match self.results.get(key) {
            // The usual case, in one lookup: the same statement described
            // the same way, with nothing to mask, and the catalog's names
            // unchanged since.
            Some(memo)
                if !memo.fetches
                    && memo.plan.as_ref().is_some_and(|p| {
                        p.noop
                            && p.statement_index == index
                            && p.columns == columns
                            && generation.is_some()
                            && p.generation == generation
                    }) =>
            {
                return None;
            }
            Some(_) => {}
            None => {
                let key: Box<str> = key.into();
                let fetches = self
                    .dialect
                    .split(statement.sql)
                    .unwrap_or_default()
                    .iter()
                    .any(|p| {
                        self.shows_diagnostics(p.text)
                            || matches!(
                                self.dialect.session_op(p.text),
                                Some(SessionOp::Fetch { .. } | SessionOp::Execute { .. })
                            )
                    });
                let parsed = ParsedSql::parse(self.dialect, statement.sql);
                let lineage = Arc::new(lineage::analyze(&parsed, &self.rules));
                if self.results.len() >= LINEAGE_CACHE_MAX {
                    self.results.clear();
                }
                self.results.insert(
                    key,
                    ResultMemo {
                        fetches,
                        lineage,
                        plan: None,
                    },
                );
            }
        }
        let key = self.fingerprinted.1.as_deref().unwrap_or_default();
        let memo = self.results.get(key)?;
        if memo.fetches {
            let resolved = self.resolve(columns);
            let lineage = self.result_lineage(statement);
            let plan = MaskPlan::new(self.rules.clone(), &lineage, columns, &resolved);
            return (!plan.is_noop()).then_some(plan);
        }
        let resolved = self.resolve(columns);
        let key = self.fingerprinted.1.as_deref().unwrap_or_default();
        let memo = self.results.get_mut(key)?;
        if let Some(p) = &mut memo.plan
            && p.statement_index == index
            && p.columns == columns
            && p.resolved == resolved
        {
            p.generation = generation;
            if p.noop {
                return None;
            }
        }
        let lineage = memo.lineage.statement(index);
        let plan = MaskPlan::new(self.rules.clone(), &lineage, columns, &resolved);
        memo.plan = Some(PlanMemo {
            statement_index: index,
            columns: columns.to_vec(),
            resolved,
            generation,
            noop: plan.is_noop(),
        });
        (!plan.is_noop()).then_some(plan)
    }

    /// The lineage of a whole text, parsed here when not cached.
    pub(crate) fn lineage_of(&mut self, sql: &str) -> Arc<lineage::SqlLineage> {
        if let Some(l) = self.lineage_cache.get(sql) {
            return l.clone();
        }
        let parsed = ParsedSql::parse(self.dialect, sql);
        self.lineage_of_parsed(&parsed)
    }

    /// The lineage of a text already parsed (by the judgement).
    pub(crate) fn lineage_of_parsed(&mut self, parsed: &ParsedSql<'_>) -> Arc<lineage::SqlLineage> {
        if let Some(l) = self.lineage_cache.get(parsed.text) {
            return l.clone();
        }
        let l = Arc::new(lineage::analyze(parsed, &self.rules));
        if self.lineage_cache.len() >= LINEAGE_CACHE_MAX {
            self.lineage_cache.clear();
        }
        self.lineage_cache.insert(parsed.text.into(), l.clone());
        l
    }

    /// Whether the server's texts about statement `index` of `sql` may quote
    /// a masked value (see `hoop_mask`'s `texts_may_echo_masked`). Asked only
    /// when an error or notice arrives.
    fn texts_may_echo(&mut self, sql: &str, index: usize) -> bool {
        let parsed = ParsedSql::parse(self.dialect, sql);
        let lineage = self.lineage_of_parsed(&parsed).statement(index);
        self.rules
            .texts_may_echo_masked(self.dialect, &parsed, index, &lineage)
    }

    /// Follows a change to the session's named objects the server
    /// confirmed. Until then a name keeps the meaning the server gave it
    /// last (a `DECLARE` or `PREPARE` the server rejected changes nothing).
    fn object_changed(&mut self, change: ObjectChange<'_>) {
        fn bounded(map: &mut HashMap<String, String>, name: &str, sql: &str) {
            if map.len() >= CURSORS_MAX && !map.contains_key(name) {
                // Forgotten names read as unknown: every column masked.
                map.clear();
            }
            map.insert(name.to_owned(), sql.to_owned());
        }
        match change {
            ObjectChange::Prepared { name, sql } => bounded(&mut self.statements, name, sql),
            ObjectChange::Declared { name, sql } => bounded(&mut self.cursors, name, sql),
            ObjectChange::Deallocated { name: Some(name) } => {
                self.statements.remove(name);
            }
            ObjectChange::Deallocated { name: None } => self.statements.clear(),
            ObjectChange::Closed { name: Some(name) } => {
                self.cursors.remove(name);
            }
            ObjectChange::Closed { name: None } => self.cursors.clear(),
        }
    }

    /// The lineage for result rows of `statement`.
    fn result_lineage(&mut self, statement: &StatementContext<'_>) -> lineage::Lineage {
        let sql = statement.sql;
        let pieces = self.dialect.split(sql).unwrap_or_default();
        let piece = pieces
            .get(statement.statement_index)
            .or_else(|| pieces.last());
        if piece.is_some_and(|p| self.shows_diagnostics(p.text))
            && self.diagnostics_may_echo(sql, statement.statement_index)
        {
            // MySQL's warnings and errors quote the values the previous
            // statement read, in any shape: the message column is withheld
            // (level and code stay).
            return lineage::Lineage {
                columns: vec![lineage::ColumnLineage::Clean; 2],
                rest: Some(lineage::ColumnLineage::Unknown),
                writes_masked: false,
                changes_masked_schema: false,
            };
        }
        let (map, name) = match piece.and_then(|p| self.dialect.session_op(p.text)) {
            Some(SessionOp::Fetch { name }) => (&self.cursors, name),
            Some(SessionOp::Execute { name }) => (&self.statements, name),
            _ => return self.lineage_of(sql).statement(statement.statement_index),
        };
        match map.get(&name) {
            Some(query) => {
                lineage::analyze_query(&ParsedSql::parse(self.dialect, query), &self.rules)
            }
            // A cursor or statement made before hoop saw the session, or by
            // server-side code: its query is unknown, so every column is
            // masked.
            None => lineage::Lineage::unknown(),
        }
    }

    /// Whether the diagnostics a `SHOW WARNINGS` at `index` of `sql` reads
    /// may quote a masked value: whether the statement before it (the last
    /// one that is not itself a diagnostics statement, in this text or the
    /// previous one) reaches masked data. When hoop cannot tell, yes.
    fn diagnostics_may_echo(&mut self, sql: &str, index: usize) -> bool {
        let pieces: Vec<String> = self
            .dialect
            .split(sql)
            .unwrap_or_default()
            .iter()
            .take(index)
            .map(|p| p.text.to_owned())
            .collect();
        let previous: Vec<String> = self
            .dialect
            .split(&self.previous_sql)
            .unwrap_or_default()
            .iter()
            .map(|p| p.text.to_owned())
            .collect();
        let Some(before) = pieces
            .iter()
            .rev()
            .chain(previous.iter().rev())
            .find(|p| !self.shows_diagnostics(p))
            .cloned()
        else {
            return true;
        };
        self.texts_may_echo(&before, 0)
    }

    /// Whether `piece` reads the server's diagnostics of the previous
    /// statement as rows (MySQL's `SHOW WARNINGS`, `SHOW ERRORS`).
    fn shows_diagnostics(&self, piece: &str) -> bool {
        let head = piece.trim_start().get(..4);
        if !head.is_some_and(|h| h.eq_ignore_ascii_case("show")) {
            return false;
        }
        self.dialect.identifiers(piece).is_some_and(|w| {
            w.first().is_some_and(|f| f == "show")
                && w.get(1).is_some_and(|s| s == "warnings" || s == "errors")
        })
    }

    /// The source of each result column, as its protocol named it or its
    /// catalog resolved it.
    fn resolve(&self, columns: &[ResultColumn]) -> Vec<Option<ResolvedColumn>> {
        columns
            .iter()
            .map(|c| match &c.source {
                ColumnSource::None => None,
                ColumnSource::Named(named) => Some(named.clone()),
                ColumnSource::Key(key) => self.columns.resolve(&self.identity, *key),
            })
            .collect()
    }

    pub(crate) fn recording_failed(&mut self) {
        if self.fatal.is_none() {
            let failure = lock(&self.recorder).failure();
            metrics()
                .connection_errors_total
                .with_label_values(&["recording"])
                .inc();
            warn!(session = %self.identity, failure = ?failure, "recording failed");
            if self.on_error == RecordingOnError::CloseSession {
                self.fatal = Some(Refusal::recording_failed(
                    failure.map_or_else(|| "recording failed".to_owned(), |f| format!("{f:?}")),
                ));
            }
        }
    }

    /// [`SessionGovernor::fatal`] when a recording may have failed.
    #[inline(never)]
    fn fatal_checked(&mut self) -> Option<Refusal> {
        if self.fatal.is_none()
            && self.recording
            && self
                .recording_failure
                .as_ref()
                .is_some_and(FailureFlag::is_set)
        {
            self.recording_failed();
        }
        self.fatal.clone()
    }
}

impl SessionGovernor for SessionGovernance {
    fn judge(&mut self, statement: &StatementContext<'_>) -> Verdict {
        self.refresh();
        self.judge_statement(statement)
    }

    fn judge_counted(&mut self, statement: &StatementContext<'_>, rows: Option<u64>) -> Verdict {
        self.refresh();
        self.judge_after_dry_run(statement, rows)
    }

    #[inline]
    fn fatal(&mut self) -> Option<Refusal> {
        // Asked on every wake-up and statement: only a recording can fail,
        // so without one, and while none has, the answer is a plain check
        // (the failure flag is one atomic load, read here rather than in
        // `fatal_checked`, which only a failure needs).
        if self.fatal.is_none()
            && !(self.recording
                && self
                    .recording_failure
                    .as_ref()
                    .is_some_and(FailureFlag::is_set))
        {
            return None;
        }
        self.fatal_checked()
    }

    fn inspects_rows(&self) -> bool {
        self.inspecting
    }

    fn tables_before_judging(&mut self, statement: &StatementContext<'_>) -> Option<Arc<[String]>> {
        self.refresh();
        if !self.masking {
            return None;
        }
        Some(self.tables_of(statement))
    }

    fn columns_to_resolve(&mut self, columns: &[ResultColumn]) -> Option<Preparation> {
        if !self.masking {
            return None;
        }
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.extend(columns.iter().filter_map(|c| match c.source {
            ColumnSource::Key(key) => Some(key),
            ColumnSource::None | ColumnSource::Named(_) => None,
        }));
        let preparation = self.columns.prepare(&self.identity, &keys);
        self.keys = keys;
        preparation
    }

    fn row_rewriter(
        &mut self,
        statement: &StatementContext<'_>,
        columns: &[ResultColumn],
    ) -> Option<Box<dyn RowRewriter>> {
        self.refresh();
        let masking = self.masking;
        if !masking && !self.record_rows {
            return None;
        }
        let plan = if masking {
            self.plan(statement, columns)
        } else {
            None
        };
        if plan.is_none() && !self.record_rows {
            return None;
        }
        let promote = plan
            .as_ref()
            .is_some_and(MaskPlan::may_find)
            .then(|| Promoter {
                promotions: self.promotions.clone(),
                policy: self.snapshot.clone(),
                session: self.identity.to_string(),
                recorder: self.recording.then(|| self.recorder.clone()),
            });
        Some(Box::new(RowMasking::new(
            plan,
            self.record_rows.then(|| self.recorder.clone()),
            promote,
        )))
    }

    fn rewrite_server_text(&mut self, text: ServerText<'_>) -> Option<Vec<Option<String>>> {
        self.refresh();
        if !self.masking {
            return None;
        }
        if text.raised_by_code {
            // Code running in the server wrote this text: it may say any
            // value it read, in any shape. Masked whole, as unknown.
            metrics()
                .masked_values_total
                .with_label_values(&["unknown"])
                .inc();
            return Some(
                text.fields
                    .iter()
                    .map(|f| (!f.is_empty()).then(|| UNKNOWN_TEXT.to_owned()))
                    .collect(),
            );
        }
        if let Some(sql) = text.sql
            && self.texts_may_echo(sql, text.statement_index)
        {
            // The statement reaches masked (or unproven) data, and the
            // server may quote what it read in any shape: withheld whole.
            metrics()
                .masked_values_total
                .with_label_values(&["server_text"])
                .inc();
            return Some(
                text.fields
                    .iter()
                    .map(|f| (!f.is_empty()).then(|| WITHHELD_TEXT.to_owned()))
                    .collect(),
            );
        }
        let echoes = self.dialect.echo_patterns();
        let masked: Vec<Option<String>> = text
            .fields
            .iter()
            .map(|field| self.rules.mask_free_text(field, echoes))
            .collect();
        if masked.iter().all(Option::is_none) {
            return None;
        }
        metrics()
            .masked_values_total
            .with_label_values(&["echoed_text"])
            .inc();
        Some(masked)
    }

    fn observes_executions(&self) -> bool {
        // Executions only feed the recording.
        self.recording
    }

    fn observes_statements(&self) -> bool {
        // `Judged` and `Sent` need nothing here (the recording takes the
        // statement and its verdict when it is judged).
        false
    }

    #[inline]
    fn observe(&mut self, event: SessionEvent<'_>) {
        if let SessionEvent::Object { change } = event {
            self.object_changed(change);
            return;
        }
        // Judged, Sent and CopyData come often and need nothing here.
        if !matches!(
            event,
            SessionEvent::Judged { .. } | SessionEvent::Sent { .. } | SessionEvent::CopyData { .. }
        ) {
            self.observe_event(event);
        }
    }
}
