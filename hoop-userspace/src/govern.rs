//! Governance wired into the PostgreSQL driver: the [`hooks`](crate::hooks)
//! implementation that joins the live policy (judging), the masking engine
//! (rows, COPY, echoed values), the recorder and the hold registry.
//!
//! Fail-closed choices made here (documented in `docs/policy.md`):
//! - a statement that would copy a masked column somewhere masking cannot
//!   follow (`INSERT … SELECT ssn`, `CREATE TABLE AS`, `COPY … TO 'file'`)
//!   is denied under the rule name `mask.exfiltration`;
//! - rows whose columns cannot be resolved through the catalog are masked
//!   wherever lineage cannot prove them clean;
//! - a session that started while the policy masked nothing is not
//!   inspected; if a reload later adds masking, its statements are denied
//!   until it reconnects;
//! - a recording that cannot be written closes the session
//!   (`recording.on_error: close_session`, the default).

pub mod catalog;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::{
    config::{RecordRows, RecordingOnError},
    hold::HoldRegistry,
    hooks::{
        GovernorFactory, HoldBroker, HoldOutcome, HoldRequest, HoldTicket, RowRewrite, RowRewriter,
        ServerText, SessionEvent, SessionGovernor, StatementContext,
    },
    mask::{
        self, BinaryUnmaskable, ColumnDescription, ColumnRule, DetectorKind, DetectorRule,
        MaskPlan, MaskRules, copy::CopyMasker, copy::CopyStatement, lineage,
    },
    metrics::metrics,
    policy::{
        self, Policy,
        reload::{PolicyCache, PolicyHandle},
    },
    proto::pg::{
        copy::CopyFormat,
        notice::{ErrorSpec, NoticeFields},
        rows::{DataRow, RowDescription},
    },
    record::{self, HoldState, MaskedCopyChunk, MaskedRow, Recorder, SessionRecorder},
    session::SessionIdentity,
    statement::{Denial, StatementKind, Verdict},
};

pub use catalog::CatalogStore;

/// Rule name for statements denied because they would move masked data
/// where masking cannot follow it.
pub const EXFILTRATION_RULE: &str = "mask.exfiltration";

/// Makes one [`SessionGovernance`] per session.
pub struct Governors {
    policy: PolicyHandle,
    recorder: Recorder,
    rows: RecordRows,
    catalog: Arc<CatalogStore>,
}

impl Governors {
    /// Governance for sessions to `upstream` servers, resolving catalog
    /// names through `catalog`.
    pub fn new(
        policy: PolicyHandle,
        recorder: Recorder,
        rows: RecordRows,
        catalog: Arc<CatalogStore>,
    ) -> Self {
        Self {
            policy,
            recorder,
            rows,
            catalog,
        }
    }
}

/// Compiles the mask rules that apply to one session under one policy.
pub fn mask_rules(policy: &Policy, identity: &SessionIdentity) -> Arc<MaskRules> {
    let mut column_rules = Vec::new();
    let mut detector_rules = Vec::new();
    for rule in policy.mask_rules_for(identity) {
        let keep_last = rule.keep_last.unwrap_or(4) as usize;
        if !rule.columns.is_empty() {
            column_rules.push(ColumnRule {
                name: rule.name.clone(),
                columns: rule
                    .columns
                    .iter()
                    .map(|c| mask::ColumnRef {
                        schema: c.schema.clone(),
                        table: c.table.clone(),
                        column: c.column.clone(),
                    })
                    .collect(),
                strategy: rule.strategy,
                keep_last,
            });
        }
        if !rule.detectors.is_empty() {
            detector_rules.push(DetectorRule {
                name: rule.name.clone(),
                detectors: rule
                    .detectors
                    .iter()
                    .map(|d| match d {
                        policy::Detector::Builtin(b) => DetectorKind::Builtin(*b),
                        policy::Detector::Custom { name, regex } => DetectorKind::Custom {
                            name: name.clone(),
                            regex: regex.clone(),
                        },
                    })
                    .collect(),
                strategy: rule.strategy,
                keep_last,
            });
        }
    }
    let key = policy
        .hash_key()
        .map(|k| k.bytes().to_vec())
        .unwrap_or_default();
    let binary = match policy.binary_unmaskable() {
        policy::spec::BinaryUnmaskable::Refuse => BinaryUnmaskable::Refuse,
        policy::spec::BinaryUnmaskable::Null => BinaryUnmaskable::Null,
    };
    match MaskRules::new(column_rules, detector_rules, key, binary) {
        Ok(rules) => Arc::new(rules),
        Err(e) => {
            // Policy validation rejects these cases; if one slips through,
            // mask everything that can be masked rather than nothing.
            warn!(error = %e, "mask rules could not be compiled; redacting every column");
            Arc::new(
                MaskRules::new(
                    vec![ColumnRule {
                        name: "mask.invalid".into(),
                        columns: vec![mask::ColumnRef {
                            schema: None,
                            table: None,
                            column: "*".into(),
                        }],
                        strategy: mask::Strategy::Redact,
                        keep_last: 0,
                    }],
                    Vec::new(),
                    Vec::new(),
                    BinaryUnmaskable::Refuse,
                )
                .unwrap_or_else(|_| unreachable!("a redact-only rule set compiles")),
            )
        }
    }
}

fn has_masking(rules: &MaskRules) -> bool {
    !rules.column_rules.is_empty() || !rules.detector_rules.is_empty()
}

impl GovernorFactory for Governors {
    fn session(&self, identity: &SessionIdentity) -> Box<dyn SessionGovernor> {
        let snapshot = self.policy.snapshot();
        let rules = mask_rules(&snapshot, identity);
        let inspecting = has_masking(&rules) || self.rows == RecordRows::Full;
        let (recorder, fatal) = match self.recorder.open_session(identity) {
            Ok(r) => (r, None),
            Err(e) => {
                metrics()
                    .connection_errors_total
                    .with_label_values(&["recording"])
                    .inc();
                warn!(session = %identity, error = %e, "cannot open the session's recording");
                let fatal = (self.recorder.on_error() == RecordingOnError::CloseSession)
                    .then(|| recording_fatal(&e));
                (SessionRecorder::disabled(), fatal)
            }
        };
        Box::new(SessionGovernance {
            recording: recorder.is_recording(),
            identity: identity.clone(),
            policy: self.policy.cache(),
            snapshot,
            masking: has_masking(&rules),
            rules,
            inspecting,
            record_rows: self.rows == RecordRows::Full,
            on_error: self.recorder.on_error(),
            recorder: Arc::new(Mutex::new(recorder)),
            fatal,
            catalog: self.catalog.clone(),
            cursors: HashMap::new(),
            views_version: 0,
            judgements: HashMap::default(),
            fingerprint_buf: String::new(),
            prepared: HashMap::default(),
            lineage_cache: HashMap::new(),
        })
    }
}

fn recording_fatal(e: &dyn std::fmt::Display) -> ErrorSpec {
    ErrorSpec::fatal(
        "58030",
        "hoop cannot record this session, and its policy requires a recording",
    )
    .with_detail(format!("{e}"))
    .with_hint("Fix recording.dir (space, permissions) or set recording.on_error: continue.")
}

/// One session's governance.
struct SessionGovernance {
    identity: SessionIdentity,
    /// The live policy, checked per statement with one pointer comparison.
    policy: PolicyCache,
    /// The snapshot `rules` was compiled from.
    snapshot: Arc<Policy>,
    rules: Arc<MaskRules>,
    /// `has_masking(&rules)`, kept beside the policy pointer that every
    /// statement checks (reading it through `rules` is a cache miss).
    masking: bool,
    /// Whether the driver shows us every result (decided once, at start).
    inspecting: bool,
    record_rows: bool,
    on_error: RecordingOnError,
    /// Shared with row rewriters, which record masked rows (`rows: full`).
    recorder: SharedRecorder,
    /// The session has a recording (statement texts are masked for it).
    recording: bool,
    /// Set when the session must end (recording failed under close_session).
    fatal: Option<ErrorSpec>,
    catalog: Arc<CatalogStore>,
    /// Cursor name → the SQL that declared it, for rows that come from FETCH.
    cursors: HashMap<String, String>,
    /// The catalog's view-dependency version `rules` includes.
    views_version: u64,
    /// Prepared statement name → its judgement and how often it was bound
    /// since its Parse (re-executions are recorded as statements too).
    prepared: HashMap<Box<str>, Prepared, foldhash::fast::RandomState>,
    /// Literal-free SQL fingerprint → the judgement for the current policy
    /// (see [`fingerprint`]).
    judgements: HashMap<Box<str>, Arc<CachedJudgement>, foldhash::fast::RandomState>,
    /// Reused for each statement's fingerprint.
    fingerprint_buf: String,
    /// SQL → its lineage, for the current rule set (prepared statements run
    /// the same SQL again and again).
    lineage_cache: HashMap<Box<str>, Arc<lineage::SqlLineage>>,
}

const LINEAGE_CACHE_MAX: usize = 256;

type SharedRecorder = Arc<Mutex<SessionRecorder>>;

fn lock(recorder: &SharedRecorder) -> MutexGuard<'_, SessionRecorder> {
    // A panic while recording must not stop the session from being recorded
    // as failed; the recorder's own state stays consistent per call.
    recorder
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionGovernance {
    /// Brings the mask rules up to the live policy.
    /// Afterwards `snapshot` is the live policy.
    fn refresh(&mut self) {
        let live = self.policy.load();
        let policy_changed = !Arc::ptr_eq(live, &self.snapshot);
        if !policy_changed && !self.masking {
            // View dependencies only matter to masking.
            return;
        }
        let current = live.clone();
        let (views_version, views) = self.catalog.views(&self.identity);
        if policy_changed || views_version != self.views_version {
            let mut rules = mask_rules(&current, &self.identity);
            if has_masking(&rules) && !views.is_empty() {
                let rows: Vec<Vec<Option<&[u8]>>> = views
                    .iter()
                    .map(|r| r.iter().map(|c| c.as_deref().map(str::as_bytes)).collect())
                    .collect();
                match mask::plan::masked_views(&rules, &rows) {
                    Ok(relations) => Arc::make_mut(&mut rules).set_masked_relations(relations),
                    Err(e) => {
                        warn!(error = %e, "cannot read view dependencies; views are not masked by source");
                    }
                }
            }
            self.masking = has_masking(&rules);
            self.rules = rules;
            self.snapshot = current.clone();
            self.views_version = views_version;
            self.lineage_cache.clear();
            self.judgements.clear();
        }
    }

    fn lineage_of(&mut self, sql: &str) -> Arc<lineage::SqlLineage> {
        if let Some(l) = self.lineage_cache.get(sql) {
            return l.clone();
        }
        let l = Arc::new(lineage::analyze_sql(sql, &self.rules));
        if self.lineage_cache.len() >= LINEAGE_CACHE_MAX {
            self.lineage_cache.clear();
        }
        self.lineage_cache.insert(sql.into(), l.clone());
        l
    }

    fn recording_failed(&mut self) {
        if self.fatal.is_none() {
            let failure = lock(&self.recorder).failure();
            metrics()
                .connection_errors_total
                .with_label_values(&["recording"])
                .inc();
            warn!(session = %self.identity, failure = ?failure, "recording failed");
            if self.on_error == RecordingOnError::CloseSession {
                self.fatal = Some(recording_fatal(
                    &failure.map_or_else(|| "recording failed".to_owned(), |f| format!("{f:?}")),
                ));
            }
        }
    }

    /// SQL as recordings show it: see [`masked_statement`].
    fn masked_sql(&self, sql: &str) -> String {
        masked_statement(&self.rules, sql)
    }

    fn note_cursors(&mut self, sql: &str) {
        for (name, declared) in declared_cursors(sql) {
            if self.cursors.len() > 1024 {
                self.cursors.clear();
            }
            self.cursors.insert(name, declared);
        }
    }

    /// The lineage for result rows of `statement`.
    fn result_lineage(&mut self, statement: &StatementContext<'_>) -> lineage::Lineage {
        let sql = statement.sql;
        if let Some(cursor) = fetched_cursor(sql, statement.statement_index) {
            return match self.cursors.get(&cursor) {
                Some(declared) => lineage::analyze_query_sql(declared, &self.rules),
                // A cursor declared before hoop saw the session, or by a
                // function: its query is unknown, so every column is masked.
                None => lineage::Lineage::unknown(),
            };
        }
        self.lineage_of(sql).statement(statement.statement_index)
    }
}

/// A judgement kept for a SQL fingerprint.
struct CachedJudgement {
    verdict: Verdict,
    kinds: Arc<[StatementKind]>,
    tables: Arc<[String]>,
    /// `hoop_statements_total{kind,verdict}` handles and how much each
    /// judgement adds (label lookups done once per cached judgement).
    counters: Vec<(prometheus::IntCounter, u64)>,
    declares_cursor: bool,
}

impl CachedJudgement {
    /// Adds one judgement of these statements to `hoop_statements_total`.
    fn count(&self) {
        for (counter, n) in &self.counters {
            counter.inc_by(*n);
        }
    }
}

const JUDGEMENT_CACHE_MAX: usize = 1024;

/// A named prepared statement as judged at its Parse.
struct Prepared {
    judged: Arc<CachedJudgement>,
    /// The SQL as recordings show it, masked under `rules` (when recording).
    masked_sql: Option<Arc<str>>,
    rules: Arc<MaskRules>,
    /// Binds since the Parse.
    binds: u64,
}

fn verdict_label(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Allow => "allow",
        Verdict::Deny(_) => "deny",
        Verdict::Hold(_) => "hold",
    }
}

impl SessionGovernance {
    fn judge_uncached(
        &mut self,
        policy: &Policy,
        statement: &StatementContext<'_>,
    ) -> CachedJudgement {
        let judgement = policy.judge(statement.sql, statement.form, statement.identity);
        let mut verdict = judgement.verdict;
        if matches!(verdict, Verdict::Allow) {
            if !self.inspecting && has_masking(&self.rules) {
                verdict = Verdict::Deny(Denial {
                    rule: "mask.reconnect".into(),
                    message: "hoop's policy now masks results; reconnect to continue".into(),
                });
            } else if has_masking(&self.rules) && self.lineage_of(statement.sql).writes_masked() {
                verdict = Verdict::Deny(Denial {
                    rule: EXFILTRATION_RULE.into(),
                    message: "this statement would copy masked data where masking cannot follow it"
                        .into(),
                });
            }
        }
        let mut kind_counts: Vec<(StatementKind, u64)> = Vec::new();
        for s in &judgement.statements {
            match kind_counts.iter_mut().find(|(k, _)| *k == s.kind) {
                Some((_, n)) => *n += 1,
                None => kind_counts.push((s.kind, 1)),
            }
        }
        let m = metrics();
        let label = verdict_label(&verdict);
        let counters = kind_counts
            .into_iter()
            .map(|(kind, n)| {
                (
                    m.statements_total
                        .with_label_values(&[kind.as_str(), label]),
                    n,
                )
            })
            .collect();
        CachedJudgement {
            verdict,
            kinds: judgement.statements.iter().map(|s| s.kind).collect(),
            tables: judgement
                .statements
                .iter()
                .flat_map(|s| s.tables.iter().map(ToString::to_string))
                .collect(),
            counters,
            declares_cursor: judgement
                .statements
                .iter()
                .any(|s| s.kind == StatementKind::Declare),
        }
    }
}

/// A key under which statements that differ only in literal *values* share
/// one judgement: numbers become `0` and `'…'` strings become `''`; every
/// other token (keywords, identifiers, operators, comments, dollar-quoted
/// bodies, parameters) is kept byte for byte. Classification — kinds,
/// tables, WHERE presence — never depends on a literal's value, so the
/// verdict is the same. Texts whose lexing could depend on session settings
/// (a backslash inside a plain string, `E''` and `U&''` strings) or that do
/// not lex cleanly get no key and are judged every time.
pub fn fingerprint(sql: &str) -> Option<String> {
    let mut out = String::new();
    fingerprint_into(sql, &mut out).then_some(out)
}

/// Bytes that can start something [`fingerprint_into`] treats specially:
/// comments, quoted identifiers, dollar quotes and parameters, string
/// literals, numbers. Everything else is skipped in a tight loop.
static FINGERPRINT_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'-' as usize] = true;
    t[b'/' as usize] = true;
    t[b'"' as usize] = true;
    t[b'$' as usize] = true;
    t[b'\'' as usize] = true;
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = true;
        d += 1;
    }
    t
};

/// Whether an 8-byte word may hold a [`FINGERPRINT_SPECIAL`] byte. Every
/// special byte lies in `0x22..=0x39`; a word of ASCII bytes none of which
/// is in that span holds none (most words of SQL: letters, spaces, `=`).
/// For ASCII bytes the two additions cannot carry from one byte into the
/// next, so each byte's high bit says whether that byte is `>= 0x22`
/// (resp. `>= 0x3A`).
fn may_hold_special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if word & HIGH != 0 {
        return true; // non-ASCII: checked byte by byte
    }
    let at_least_lo = word.wrapping_add(ONES * (0x80 - 0x22));
    let above_hi = word.wrapping_add(ONES * (0x80 - 0x3A));
    at_least_lo & !above_hi & HIGH != 0
}

/// The index of the first [`FINGERPRINT_SPECIAL`] byte at or after `i`
/// (`b.len()` when there is none). Skips eight bytes at a time.
fn next_special(b: &[u8], mut i: usize) -> usize {
    let special = |x: &u8| FINGERPRINT_SPECIAL[usize::from(*x)];
    loop {
        let Some(word) = b.get(i..).and_then(|rest| rest.first_chunk::<8>()) else {
            return b
                .get(i..)
                .and_then(|rest| rest.iter().position(special))
                .map_or(b.len(), |k| i + k);
        };
        if may_hold_special(u64::from_le_bytes(*word))
            && let Some(k) = word.iter().position(special)
        {
            return i + k;
        }
        i += 8;
    }
}

/// [`fingerprint`] into a reused buffer; `false` when the text gets no key.
/// Everything but literals is copied in runs, not byte by byte: the text is
/// only cut at ASCII delimiters, so every cut is on a char boundary.
pub fn fingerprint_into(sql: &str, out: &mut String) -> bool {
    out.clear();
    let b = sql.as_bytes();
    let mut i = 0;
    // Start of the verbatim run not yet copied.
    let mut run = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    if j + 1 >= b.len() {
                        return false; // unterminated comment
                    }
                    if b[j] == b'/' && b[j + 1] == b'*' {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b[j + 1] == b'/' {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                i = j;
            }
            b'"' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return false,
                        Some(b'"') if b.get(j + 1) == Some(&b'"') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
            }
            b'$' => {
                // $n parameter, or a $tag$ … $tag$ dollar-quoted body (verbatim).
                let tag_len = b[i + 1..]
                    .iter()
                    .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_'));
                match tag_len {
                    Some(n)
                        if b[i + 1 + n] == b'$'
                            && !b.get(i + 1).is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &sql[i..i + n + 2];
                        let body = i + n + 2;
                        let Some(close) = sql[body..].find(tag).map(|p| body + p) else {
                            return false;
                        };
                        i = close + tag.len();
                    }
                    _ => {
                        i = b[i + 1..]
                            .iter()
                            .position(|x| !x.is_ascii_digit())
                            .map_or(b.len(), |p| i + 1 + p);
                    }
                }
            }
            b'\'' => {
                // E'…' / U&'…' / B'…' / X'…' and friends: not cached.
                if i > 0
                    && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'&' || b[i - 1] == b'_')
                {
                    return false;
                }
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None | Some(b'\\') => return false,
                        Some(b'\'') if b.get(j + 1) == Some(&b'\'') => j += 2,
                        Some(b'\'') => break,
                        Some(_) => j += 1,
                    }
                }
                out.push_str(&sql[run..i]);
                out.push_str("''");
                i = j + 1;
                run = i;
            }
            b'0'..=b'9' => {
                let prev = i.checked_sub(1).map(|p| b[p]);
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.' || b[j] == b'_')
                {
                    j += 1;
                }
                if !prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == b'_' || p >= 0x80) {
                    // A number (not part of an identifier like t1).
                    out.push_str(&sql[run..i]);
                    out.push('0');
                    run = j;
                }
                i = j;
            }
            _ => i = next_special(b, i + 1),
        }
    }
    out.push_str(&sql[run..]);
    true
}

impl SessionGovernor for SessionGovernance {
    fn judge(&mut self, statement: &StatementContext<'_>) -> Verdict {
        self.refresh();
        let mut key = std::mem::take(&mut self.fingerprint_buf);
        let keyed = fingerprint_into(statement.sql, &mut key);
        // The usual simple-protocol case: a cached judgement that this
        // statement only reads (no name to keep it under, no recording, no
        // cursor to note) is used in place, without taking a reference.
        if keyed
            && statement.statement_name.is_none()
            && !self.recording
            && let Some(j) = self.judgements.get(key.as_str())
            && !j.declares_cursor
        {
            let verdict = j.verdict.clone();
            j.count();
            self.fingerprint_buf = key;
            return verdict;
        }
        let cached = keyed
            .then(|| self.judgements.get(key.as_str()))
            .flatten()
            .cloned();
        let judged = if let Some(j) = cached {
            j
        } else {
            let policy = self.snapshot.clone();
            let j = Arc::new(self.judge_uncached(&policy, statement));
            if keyed {
                if self.judgements.len() >= JUDGEMENT_CACHE_MAX {
                    self.judgements.clear();
                }
                self.judgements.insert(key.as_str().into(), j.clone());
            }
            j
        };
        self.fingerprint_buf = key;
        let verdict = judged.verdict.clone();
        judged.count();
        if judged.declares_cursor {
            self.note_cursors(statement.sql);
        }
        let sql: Option<Arc<str>> = self
            .recording
            .then(|| self.masked_sql(statement.sql).into());
        if let Some(name) = statement.statement_name {
            if self.prepared.len() >= JUDGEMENT_CACHE_MAX {
                self.prepared.clear();
            }
            self.prepared.insert(
                name.into(),
                Prepared {
                    judged: judged.clone(),
                    masked_sql: sql.clone(),
                    rules: self.rules.clone(),
                    binds: 0,
                },
            );
        }
        let failed = sql.is_some_and(|sql| {
            let mut r = lock(&self.recorder);
            let recorded = if statement.statement_name.is_some_and(|n| !n.is_empty()) {
                // A named statement's executions (`Bound`) record the same
                // Arcs again; the unnamed one is usually run once.
                r.prepared_statement(&sql, statement.form, &judged.kinds, &judged.tables)
            } else {
                r.statement(&sql, statement.form, &judged.kinds, &judged.tables)
            };
            recorded.is_err() || r.verdict(&verdict).is_err()
        });
        if failed {
            self.recording_failed();
        }
        verdict
    }

    #[inline]
    fn fatal(&mut self) -> Option<ErrorSpec> {
        // Asked on every wake-up and statement: only a recording can fail,
        // so without one, and while none has, the answer is a plain check.
        if self.fatal.is_none() && !self.recording {
            return None;
        }
        self.fatal_checked()
    }

    fn inspects_rows(&self) -> bool {
        self.inspecting
    }

    fn columns_to_resolve(&mut self, description: &RowDescription) -> Option<catalog::Resolution> {
        if !has_masking(&self.rules) {
            return None;
        }
        let columns = column_descriptions(description, &[]);
        self.catalog.resolution(&self.identity, &columns)
    }

    fn copy_columns_to_resolve(
        &mut self,
        statement: &StatementContext<'_>,
    ) -> Option<catalog::Resolution> {
        if !has_masking(&self.rules) {
            return None;
        }
        let parsed = CopyStatement::parse(statement.sql, &self.rules).ok()?;
        let table = parsed.needs_table_columns(&self.rules)?;
        let _ = table;
        self.catalog
            .table_columns_resolution(&self.identity, parsed.regclass_text()?)
    }

    fn row_rewriter(
        &mut self,
        statement: &StatementContext<'_>,
        description: &RowDescription,
        result_formats: &[i16],
    ) -> Option<Box<dyn RowRewriter>> {
        self.refresh();
        let masking = has_masking(&self.rules);
        if !masking && !self.record_rows {
            return None;
        }
        let plan = if masking {
            let columns = column_descriptions(description, result_formats);
            let resolved = self.catalog.resolve(&self.identity, &columns);
            let lineage = self.result_lineage(statement);
            let plan = MaskPlan::new(self.rules.clone(), &lineage, &columns, &resolved);
            (!plan.is_noop()).then_some(plan)
        } else {
            None
        };
        if plan.is_none() && !self.record_rows {
            return None;
        }
        Some(Box::new(RowMasking {
            plan,
            copy: None,
            recorder: self.record_rows.then(|| self.recorder.clone()),
        }))
    }

    fn copy_rewriter(
        &mut self,
        statement: &StatementContext<'_>,
        format: CopyFormat,
    ) -> Option<Box<dyn RowRewriter>> {
        self.refresh();
        if !has_masking(&self.rules) && !self.record_rows {
            return None;
        }
        let copy = if has_masking(&self.rules) {
            let masker = CopyStatement::parse(statement.sql, &self.rules)
                .map_err(|e| e.to_string())
                .and_then(|parsed| {
                    let columns = parsed
                        .regclass_text()
                        .filter(|_| parsed.needs_table_columns(&self.rules).is_some())
                        .and_then(|t| self.catalog.table_columns(&self.identity, &t));
                    CopyMasker::new(self.rules.clone(), parsed, columns.as_deref())
                        .map_err(|e| e.to_string())
                });
            match masker {
                Ok(m) => Some(Ok(m)),
                // COPY (SELECT …) with a format we cannot parse, or binary
                // COPY of masked columns: refuse rather than leak.
                Err(e) => Some(Err(e)),
            }
        } else {
            None
        };
        let _ = format;
        Some(Box::new(RowMasking {
            plan: None,
            copy,
            recorder: self.record_rows.then(|| self.recorder.clone()),
        }))
    }

    fn rewrite_server_text(&mut self, message: ServerText<'_>) -> Option<Bytes> {
        self.refresh();
        if !has_masking(&self.rules) {
            return None;
        }
        match message {
            ServerText::Error(fields) | ServerText::Notice(fields) => {
                let tag = if matches!(message, ServerText::Error(_)) {
                    b'E'
                } else {
                    b'N'
                };
                let mut changed = false;
                let masked: Vec<(u8, String)> = fields
                    .fields
                    .iter()
                    .map(|(code, value)| {
                        let m = match code {
                            b'M' | b'D' | b'H' | b'W' | b'q' => self.rules.mask_free_text(value),
                            _ => None,
                        };
                        changed |= m.is_some();
                        (*code, m.unwrap_or_else(|| (*value).to_owned()))
                    })
                    .collect();
                if !changed {
                    return None;
                }
                metrics()
                    .masked_values_total
                    .with_label_values(&["echoed_text"])
                    .inc();
                let owned = NoticeFields {
                    fields: masked.iter().map(|(c, v)| (*c, v.as_str())).collect(),
                };
                Some(owned.encode(tag))
            }
            ServerText::Notification(n) => {
                let payload = self.rules.mask_free_text(n.payload)?;
                metrics()
                    .masked_values_total
                    .with_label_values(&["echoed_text"])
                    .inc();
                let mut masked = *n;
                masked.payload = &payload;
                Some(masked.encode())
            }
        }
    }

    fn observes_executions(&self) -> bool {
        // Executions only feed the recording.
        self.recording
    }

    #[inline]
    fn observe(&mut self, event: SessionEvent<'_>) {
        // Judged, Sent and CopyData come often and need nothing here.
        if !matches!(
            event,
            SessionEvent::Judged { .. } | SessionEvent::Sent { .. } | SessionEvent::CopyData { .. }
        ) {
            self.observe_event(event);
        }
    }
}

impl SessionGovernance {
    /// [`SessionGovernor::fatal`] when a recording may have failed.
    #[inline(never)]
    fn fatal_checked(&mut self) -> Option<ErrorSpec> {
        if self.fatal.is_none() && self.recording && lock(&self.recorder).failed() {
            self.recording_failed();
        }
        self.fatal.clone()
    }

    /// [`SessionGovernor::observe`] for the events that record or update state.
    #[inline(never)]
    fn observe_event(&mut self, event: SessionEvent<'_>) {
        match event {
            SessionEvent::CommandComplete { tag, rows } => {
                lock(&self.recorder).result(Some(tag), rows.unwrap_or(0), None);
            }
            SessionEvent::ServerError { sqlstate, .. } => {
                lock(&self.recorder).result(None, 0, sqlstate);
            }
            SessionEvent::HoldDecided { id, outcome } => {
                let (state, by, reason) = match outcome {
                    HoldOutcome::Approved { by } => (HoldState::Approved, Some(by.as_str()), None),
                    HoldOutcome::Denied { by, reason } => {
                        (HoldState::Denied, Some(by.as_str()), reason.as_deref())
                    }
                    HoldOutcome::TimedOut => (HoldState::Timeout, None, None),
                    HoldOutcome::Withdrawn => (HoldState::Withdrawn, None, None),
                };
                if lock(&self.recorder).hold(id, state, by, reason).is_err() {
                    self.recording_failed();
                }
            }
            SessionEvent::Started { identity } => {
                self.identity = identity.clone();
            }
            SessionEvent::Ended { reason } => {
                let recorder =
                    std::mem::replace(&mut *lock(&self.recorder), SessionRecorder::disabled());
                recorder.end(reason);
            }
            SessionEvent::Bound { statement } => {
                // The first execution is the Parse already recorded (with its
                // verdict); every later one is recorded as a statement of its
                // own, so a recording shows each execution.
                let name = statement.statement_name.unwrap_or_default();
                let Some(prepared) = self.prepared.get_mut(name) else {
                    return;
                };
                prepared.binds += 1;
                if prepared.binds > 1 && self.recording {
                    if !Arc::ptr_eq(&prepared.rules, &self.rules) || prepared.masked_sql.is_none() {
                        // The masking rules were reloaded since the Parse.
                        prepared.masked_sql =
                            Some(masked_statement(&self.rules, statement.sql).into());
                        prepared.rules = self.rules.clone();
                    }
                    let sql = prepared.masked_sql.as_ref().expect("set above");
                    let failed = lock(&self.recorder)
                        .prepared_statement(
                            sql,
                            statement.form,
                            &prepared.judged.kinds,
                            &prepared.judged.tables,
                        )
                        .is_err();
                    if failed {
                        self.recording_failed();
                    }
                }
            }
            SessionEvent::Judged { .. }
            | SessionEvent::Sent { .. }
            | SessionEvent::CopyData { .. } => {}
        }
    }
}

/// SQL as recordings and approvers see it. When any column is masked,
/// every string literal is replaced by `'[REDACTED:literal]'` (hoop cannot
/// tell which literal is compared with or written into a masked column);
/// then detectors run over the rest. Numbers, identifiers and the
/// statement's shape stay.
pub fn masked_statement(rules: &MaskRules, sql: &str) -> String {
    let literals_redacted = if rules.column_rules.is_empty() {
        std::borrow::Cow::Borrowed(sql)
    } else {
        redact_string_literals(sql)
    };
    rules
        .mask_free_text(&literals_redacted)
        .unwrap_or_else(|| literals_redacted.into_owned())
}

/// Replaces the contents of SQL string literals (`'…'`, `E'…'`, `$tag$…$tag$`)
/// with `[REDACTED:literal]`, leaving comments, identifiers and numbers.
pub fn redact_string_literals(sql: &str) -> std::borrow::Cow<'_, str> {
    const MARK: &str = "[REDACTED:literal]";
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut last = 0;
    let mut changed = false;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                i += 1;
            }
            b'\'' => {
                let escapes = i > 0
                    && matches!(b[i - 1], b'e' | b'E')
                    && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
                let start = i + 1;
                let mut j = start;
                while j < b.len() {
                    if escapes && b[j] == b'\\' {
                        j += 2;
                    } else if b[j] == b'\'' {
                        if b.get(j + 1) == Some(&b'\'') {
                            j += 2;
                        } else {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                out.push_str(&sql[last..start]);
                out.push_str(MARK);
                changed = true;
                last = j.min(b.len());
                i = j + 1;
            }
            b'$' => {
                // $tag$ … $tag$ (a tag is empty or an identifier).
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e)
                        if b[e] == b'$' && !b[i + 1..e].first().is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &sql[i..=e];
                        let body = e + 1;
                        let close = sql[body..].find(tag).map_or(b.len(), |p| body + p);
                        out.push_str(&sql[last..body]);
                        out.push_str(MARK);
                        changed = true;
                        last = close;
                        i = close + tag.len();
                    }
                    _ => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    if !changed {
        return std::borrow::Cow::Borrowed(sql);
    }
    out.push_str(&sql[last.min(sql.len())..]);
    std::borrow::Cow::Owned(out)
}

fn column_descriptions(description: &RowDescription, formats: &[i16]) -> Vec<ColumnDescription> {
    description
        .fields()
        .enumerate()
        .map(|(i, f)| ColumnDescription {
            name: f.name.to_owned(),
            table_oid: f.table_oid,
            column_attnum: f.column_attr,
            type_oid: f.type_oid,
            format: formats.get(i).copied().unwrap_or(f.format),
        })
        .collect()
}

/// `DECLARE name … CURSOR … FOR query` statements in `sql`: (name, whole statement).
fn declared_cursors(sql: &str) -> Vec<(String, String)> {
    policy::split::split(sql)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.text)
        .filter_map(|stmt| {
            let mut words = stmt.split_whitespace();
            if !words.next()?.eq_ignore_ascii_case("declare") {
                return None;
            }
            Some((normalize_ident(words.next()?), stmt.to_owned()))
        })
        .collect()
}

/// The cursor a FETCH (or MOVE) statement reads, for statement `index` of `sql`.
fn fetched_cursor(sql: &str, index: usize) -> Option<String> {
    let statements: Vec<&str> = policy::split::split(sql)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.text)
        .collect();
    let stmt = statements.get(index).or_else(|| statements.last())?;
    let mut words = stmt.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("fetch") {
        return None;
    }
    // FETCH [direction [count]] [FROM | IN] name: the name is the last word.
    let last = stmt
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .last()?;
    Some(normalize_ident(last))
}

fn normalize_ident(word: &str) -> String {
    let w = word.trim_end_matches(';');
    if let Some(quoted) = w.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
        quoted.replace("\"\"", "\"")
    } else {
        w.to_ascii_lowercase()
    }
}

/// The row rewriter for one result set or COPY.
struct RowMasking {
    plan: Option<MaskPlan>,
    copy: Option<Result<CopyMasker, String>>,
    recorder: Option<SharedRecorder>,
}

impl RowMasking {
    fn flush_counts(&mut self) {
        let counts = match (&mut self.plan, &mut self.copy) {
            (Some(plan), _) => plan.take_counts(),
            (None, Some(Ok(copy))) => copy.take_counts(),
            _ => return,
        };
        let m = &metrics().masked_values_total;
        for (rule, n) in counts {
            if n > 0 {
                m.with_label_values(&[&*rule]).inc_by(n);
            }
        }
    }
}

impl Drop for RowMasking {
    fn drop(&mut self) {
        self.flush_counts();
    }
}

impl RowRewriter for RowMasking {
    fn rewrite_row(&mut self, row: &DataRow<'_>) -> RowRewrite {
        let replaced = match &mut self.plan {
            Some(plan) => match plan.rewrite_row(row.body()) {
                Ok(None) => None,
                Ok(Some(body)) => Some(body),
                Err(refusal) => {
                    return RowRewrite::Refuse(
                        ErrorSpec::error("42501", format!("hoop cannot mask this result: {refusal}")).with_hint(
                            "Request text result format for masked columns, or set policy.binary_unmaskable: null.",
                        ),
                    );
                }
            },
            None => None,
        };
        if let Some(sink) = &self.recorder {
            let body = replaced.as_deref().unwrap_or(row.body());
            if let Some(values) = mask::row::decode_data_row(body) {
                lock(sink).masked_row(MaskedRow::after_masking(&values));
            }
        }
        match replaced {
            None => RowRewrite::Unchanged,
            Some(body) => {
                let mut frame = Vec::with_capacity(body.len() + 5);
                frame.push(b'D');
                frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
                frame.extend_from_slice(&body);
                RowRewrite::Replaced(Bytes::from(frame))
            }
        }
    }

    fn rewrite_copy_data(&mut self, data: &[u8], _format: CopyFormat) -> Option<Bytes> {
        let out = match &mut self.copy {
            None => None,
            Some(Err(why)) => {
                debug!(error = %why, "COPY of masked data refused");
                // An empty chunk stands in for data that must not leave.
                Some(Vec::new())
            }
            Some(Ok(masker)) => match masker.feed(data) {
                Ok(o) => o,
                Err(e) => {
                    debug!(error = %e, "COPY data could not be masked; withheld");
                    Some(Vec::new())
                }
            },
        };
        if let Some(sink) = &self.recorder {
            let sent = out.as_deref().unwrap_or(data);
            if !sent.is_empty() {
                lock(sink).copy_data(MaskedCopyChunk::after_masking(
                    record::CopyDirection::ToClient,
                    sent,
                ));
            }
        }
        out.map(Bytes::from)
    }
}

/// The [`HoldBroker`] backed by the admin API's [`HoldRegistry`].
pub struct RegistryBroker {
    registry: HoldRegistry,
    policy: PolicyHandle,
}

impl RegistryBroker {
    /// A broker filing holds with `registry`; statement text shown to
    /// approvers is masked with the session's rules from `policy`.
    pub fn new(registry: HoldRegistry, policy: PolicyHandle) -> Self {
        Self { registry, policy }
    }
}

impl HoldBroker for RegistryBroker {
    fn hold(&self, request: HoldRequest) -> HoldTicket {
        let rules = mask_rules(&self.policy.snapshot(), &request.identity);
        let statement = masked_statement(&rules, &request.sql);
        let mut ticket = self
            .registry
            .create(&request.identity, &statement, &request.requirement);
        let id = ticket.id().to_owned();
        // Dropping the future drops the registry ticket, which withdraws
        // the hold; so withdrawing needs nothing more here.
        HoldTicket::new(
            id,
            async move {
                match ticket.outcome().await {
                    crate::hold::HoldOutcome::Approved { by } => {
                        HoldOutcome::Approved { by: by.join(", ") }
                    }
                    crate::hold::HoldOutcome::Denied { by, reason } => HoldOutcome::Denied {
                        by: by.unwrap_or_else(|| "hoop".into()),
                        reason,
                    },
                    crate::hold::HoldOutcome::TimedOut => HoldOutcome::TimedOut,
                }
            },
            || {},
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_are_redacted_and_the_rest_kept() {
        let r = |s: &str| redact_string_literals(s).into_owned();
        assert_eq!(r("SELECT 1"), "SELECT 1");
        assert_eq!(
            r("INSERT INTO t VALUES (3, 'Eve', '123-45-6789')"),
            "INSERT INTO t VALUES (3, '[REDACTED:literal]', '[REDACTED:literal]')"
        );
        assert_eq!(r("SELECT 'it''s'"), "SELECT '[REDACTED:literal]'");
        assert_eq!(
            r(r"SELECT E'a\'b', 'c'"),
            "SELECT E'[REDACTED:literal]', '[REDACTED:literal]'"
        );
        assert_eq!(
            r("SELECT $$x'y$$, $q$z$q$"),
            "SELECT $$[REDACTED:literal]$$, $q$[REDACTED:literal]$q$"
        );
        assert_eq!(
            r("SELECT \"it's\" FROM t -- 'c'"),
            "SELECT \"it's\" FROM t -- 'c'"
        );
        assert_eq!(r("SELECT /* 'x' */ $1"), "SELECT /* 'x' */ $1");
        assert_eq!(r("SELECT 'unterminated"), "SELECT '[REDACTED:literal]");
    }

    #[test]
    fn the_word_at_a_time_skip_finds_the_same_byte_as_a_byte_loop() {
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| FINGERPRINT_SPECIAL[usize::from(b[j])])
                .unwrap_or(b.len())
        };
        // Every byte value at every position of a 19-byte text of plain
        // letters (so the word path, the tail path and the boundary
        // between them all see it), from every start.
        for value in 0..=255u8 {
            for at in 0..19 {
                let mut text = b"selectabalancefromx".to_vec();
                text[at] = value;
                for start in 0..=text.len() {
                    assert_eq!(
                        next_special(&text, start),
                        naive(&text, start),
                        "byte {value:#x} at {at}, from {start}"
                    );
                }
            }
        }
        // Pseudo-random texts mixing specials, plain ASCII and UTF-8.
        let alphabet: Vec<u8> = "ab Z_=;()*,.-/\"$'09#%&+:<>é€\n".bytes().collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            let len = usize::try_from(seed % 40).unwrap_or(0);
            let mut text = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pick = usize::try_from(seed).unwrap_or(0) % alphabet.len();
                text.push(alphabet[pick]);
            }
            for start in 0..=text.len() {
                assert_eq!(
                    next_special(&text, start),
                    naive(&text, start),
                    "{text:?} from {start}"
                );
            }
        }
        assert!(!may_hold_special(u64::from_le_bytes(*b"SELECT a")));
        assert!(may_hold_special(u64::from_le_bytes(*b"aid = 12")));
    }

    #[test]
    fn fingerprints_ignore_literal_values_only() {
        let f = |s: &str| fingerprint(s);
        assert_eq!(
            f("SELECT abalance FROM pgbench_accounts WHERE aid = 123;"),
            f("SELECT abalance FROM pgbench_accounts WHERE aid = 98765;")
        );
        assert_eq!(f("SELECT 'a' FROM t"), f("SELECT 'it''s' FROM t"));
        assert_ne!(f("SELECT 1 FROM t"), f("SELECT 1 FROM u"));
        assert_ne!(f("DELETE FROM t WHERE id = 1"), f("DELETE FROM t"));
        assert_ne!(f("SELECT 1; DROP TABLE t"), f("SELECT 1"));
        assert_ne!(
            f("SELECT * FROM t1"),
            f("SELECT * FROM t2"),
            "digits inside identifiers are kept"
        );
        assert_ne!(f("SELECT $1"), f("SELECT $2"));
        assert_ne!(
            f("DO $$ BEGIN DROP TABLE t; END $$"),
            f("DO $$ BEGIN NULL; END $$"),
            "dollar bodies are kept"
        );
        assert_ne!(
            f("SELECT 1 /* DROP */"),
            f("SELECT 1 /* x */"),
            "comments are kept"
        );
        // Lexing that depends on session settings: never cached.
        assert_eq!(f(r"SELECT 'a\'; DROP TABLE t; --'"), None);
        assert_eq!(f("SELECT E'x'"), None);
        assert_eq!(f("SELECT 'unterminated"), None);
        // Quotes inside comments, identifiers and dollar bodies are not strings.
        assert_ne!(
            f("SELECT 1 -- it's\n; DROP TABLE t; --'"),
            f("SELECT 1 -- it's\n; SELECT 2; --'"),
        );
        assert_ne!(
            f("SELECT \"a'\" FROM t; DROP TABLE t; --'"),
            f("SELECT \"a'\" FROM t; SELECT 1; --'")
        );
        assert_ne!(
            f("DO $$ EXECUTE 'DROP TABLE t' $$"),
            f("DO $$ EXECUTE 'SELECT 1' $$")
        );
        assert_ne!(
            f("SELECT 1 /* it's */; DROP TABLE t; /* ' */"),
            f("SELECT 1 /* it's */; SELECT 2; /* ' */")
        );
        assert_eq!(f("SELECT $$unterminated"), None);
    }

    #[test]
    fn cursor_names_are_found() {
        assert_eq!(
            declared_cursors("BEGIN; DECLARE Cur CURSOR FOR SELECT 1")[0].0,
            "cur"
        );
        assert_eq!(
            fetched_cursor("FETCH ALL FROM cur", 0).as_deref(),
            Some("cur")
        );
        assert_eq!(
            fetched_cursor("FETCH 10 IN \"My\"", 0).as_deref(),
            Some("My")
        );
        assert_eq!(fetched_cursor("SELECT 1", 0), None);
    }
}
