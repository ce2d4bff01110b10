//! Judging statements, with judgements cached by literal-free fingerprint.
//!
//! A fingerprint ([`hoop_sql::SqlDialect::fingerprint_into`]) keeps every
//! token but literal values, and classification (kinds, tables) does not
//! depend on a literal's value, so statements that share a fingerprint
//! share a verdict. Two things do depend on literals and are judged every
//! time: whether an UPDATE, DELETE or MERGE restricts any row (tautology
//! folding: `WHERE 1 = 1 OR id = 5`), and a sort or grouping key given by
//! position (`ORDER BY 2`) when a mask rule restricts predicates. Texts
//! whose lexing could depend on session settings get no fingerprint and are
//! judged every time.

use std::sync::Arc;

use hoop_core::{Denial, StatementContext, StatementKind, Verdict, metrics::metrics};
use hoop_mask::MaskRules;
use hoop_policy::{Policy, RowCount};
use hoop_sql::ParsedSql;

use crate::{
    EXFILTRATION_RULE, SCHEMA_CHANGE_RULE, has_masking,
    recording::{masked_statement_arc, masked_statement_cow},
    session::{SessionGovernance, lock},
};

/// Judgements kept per session before the cache starts over.
pub(crate) const JUDGEMENT_CACHE_MAX: usize = 1024;

/// A judgement kept for a SQL fingerprint.
pub(crate) struct CachedJudgement {
    pub(crate) verdict: Verdict,
    pub(crate) kinds: Arc<[StatementKind]>,
    pub(crate) tables: Arc<[String]>,
    /// `hoop_statements_total{kind,verdict}` handles and how much each
    /// judgement adds (label lookups done once per cached judgement).
    counters: Vec<(prometheus::IntCounter, u64)>,
}

impl CachedJudgement {
    /// Adds one judgement of these statements to `hoop_statements_total`.
    fn count(&self) {
        for (counter, n) in &self.counters {
            counter.inc_by(*n);
        }
    }
}

/// A named prepared statement as judged when it was prepared.
pub(crate) struct Prepared {
    pub(crate) judged: Arc<CachedJudgement>,
    /// The SQL as recordings show it, masked under `rules` (when recording).
    pub(crate) masked_sql: Option<Arc<str>>,
    pub(crate) rules: Arc<MaskRules>,
    /// Binds (executions) since it was prepared.
    pub(crate) binds: u64,
}

fn verdict_label(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Allow => "allow",
        Verdict::Deny(_) => "deny",
        Verdict::Hold(_) => "hold",
    }
}

impl SessionGovernance {
    /// The policy's verdict, with what masking adds to it (unless the
    /// policy already denies outright): a session that started unmasked must
    /// reconnect; a statement that filters, joins, groups or sorts by a
    /// column whose rule restricts predicates is denied or held; one that
    /// copies masked data where masking cannot follow is denied.
    fn masking_verdict(&mut self, parsed: &ParsedSql<'_>, verdict: Verdict) -> Verdict {
        if matches!(&verdict, Verdict::Deny(d) if d.max_rows.is_none()) || !has_masking(&self.rules)
        {
            return verdict;
        }
        if !self.inspecting {
            return Verdict::Deny(Denial::new(
                "mask.reconnect",
                "hoop's policy now masks results; reconnect to continue",
            ));
        }
        let mut verdict = verdict;
        let judged = self.predicates.as_ref().map(|guard| guard.judge(parsed));
        if let Some((_, by_position)) = &judged {
            // `ORDER BY 2` and `ORDER BY 1` share a fingerprint but not a
            // verdict.
            self.judged_by_literal |= *by_position;
        }
        if let Some((Some(found), _)) = judged {
            match found {
                Verdict::Deny(_) => return found,
                // An unconditional hold replaces an allow or a hold that
                // would wait for a dry run.
                Verdict::Hold(_)
                    if matches!(&verdict, Verdict::Allow)
                        || matches!(&verdict, Verdict::Hold(h) if h.max_rows.is_some()) =>
                {
                    verdict = found;
                }
                _ => {}
            }
        }
        let lineage = self.lineage_of_parsed(parsed);
        if lineage.writes_masked() {
            return Verdict::Deny(Denial::new(
                EXFILTRATION_RULE,
                "this statement would copy masked data where masking cannot follow it",
            ));
        }
        if lineage.changes_masked_schema() {
            return Verdict::Deny(Denial::new(
                SCHEMA_CHANGE_RULE,
                "this statement changes a table or column that masking protects (hoop masks by name, and the change would move what the names mean)",
            ));
        }
        verdict
    }

    /// The final verdict for a statement a dry run touched `rows` rows with
    /// (`None`: uncounted), recorded after the first.
    pub(crate) fn judge_after_dry_run(
        &mut self,
        statement: &StatementContext<'_>,
        rows: Option<u64>,
    ) -> Verdict {
        let parsed = ParsedSql::parse(self.dialect, statement.sql);
        let judgement = self.snapshot.judge_rows(
            &parsed,
            statement.submission,
            statement.identity,
            RowCount::Counted(rows),
        );
        let verdict = self.masking_verdict(&parsed, judgement.verdict);
        if self.recording && lock(&self.recorder).verdict(&verdict).is_err() {
            self.recording_failed();
        }
        verdict
    }

    /// What `statement` reads and writes, from the judgement cache, or
    /// judged now (cached as `judge_statement` would, or kept for it in
    /// `pre_judged`) without recording or counting anything.
    pub(crate) fn tables_of(&mut self, statement: &StatementContext<'_>) -> Arc<[String]> {
        let keyed = self.fingerprint(statement.sql);
        let key = self.fingerprinted.1.take().unwrap_or_default();
        let tables = if let Some(j) = keyed.then(|| self.judgements.get(key.as_str())).flatten() {
            j.tables.clone()
        } else {
            let policy = self.snapshot.clone();
            self.judged_by_literal = false;
            let j = Arc::new(self.judge_uncached(&policy, statement));
            let tables = j.tables.clone();
            if keyed && !self.judged_by_literal {
                if self.judgements.len() >= JUDGEMENT_CACHE_MAX {
                    self.judgements.clear();
                }
                self.judgements.insert(key.as_str().into(), j);
            } else {
                self.pre_judged = Some((statement.sql.to_owned(), j));
            }
            tables
        };
        self.fingerprinted.1 = keyed.then_some(key);
        tables
    }

    /// Judges a statement: from the cache when its fingerprint is known,
    /// otherwise by parsing it once for both the policy and lineage.
    pub(crate) fn judge_statement(&mut self, statement: &StatementContext<'_>) -> Verdict {
        // Kept in the session's fingerprint memo afterwards, for the
        // statement's results.
        let keyed = self.fingerprint(statement.sql);
        let key = self.fingerprinted.1.take().unwrap_or_default();
        // The usual simple-protocol case: a cached judgement that this
        // statement only reads (no name to keep it under, no recording, no
        // cursor to note) is used in place, without taking a reference.
        if keyed
            && statement.statement_name.is_none()
            && !self.recording
            && let Some(j) = self.judgements.get(key.as_str())
        {
            let verdict = j.verdict.clone();
            j.count();
            self.fingerprinted.1 = keyed.then_some(key);
            return verdict;
        }
        let cached = keyed
            .then(|| self.judgements.get(key.as_str()))
            .flatten()
            .cloned();
        let pre_judged = self
            .pre_judged
            .take()
            .filter(|(sql, _)| sql == statement.sql)
            .map(|(_, j)| j);
        let judged = if let Some(j) = cached.or(pre_judged) {
            j
        } else {
            let policy = self.snapshot.clone();
            self.judged_by_literal = false;
            let j = Arc::new(self.judge_uncached(&policy, statement));
            if keyed && !self.judged_by_literal {
                if self.judgements.len() >= JUDGEMENT_CACHE_MAX {
                    self.judgements.clear();
                }
                self.judgements.insert(key.as_str().into(), j.clone());
            }
            j
        };
        self.fingerprinted.1 = keyed.then_some(key);
        let verdict = judged.verdict.clone();
        judged.count();
        // `fingerprint` above noted whether this text holds a string literal.
        let without_strings = self.fingerprinted_without_strings;
        if statement.statement_name.is_none() {
            // A simple-protocol statement: nothing keeps its text, which the
            // recording copies (no allocation when nothing in it is masked).
            // The statement and its verdict reach the recording together,
            // before the caller forwards the statement.
            if self.recording {
                let sql =
                    masked_statement_cow(self.dialect, &self.rules, statement.sql, without_strings);
                let (kinds, tables) = (&judged.kinds, &judged.tables);
                if lock(&self.recorder)
                    .statement_text_and_verdict(&sql, statement.submission, kinds, tables, &verdict)
                    .is_err()
                {
                    self.recording_failed();
                }
            }
            return verdict;
        }
        let sql: Option<Arc<str>> = self.recording.then(|| {
            masked_statement_arc(self.dialect, &self.rules, statement.sql, without_strings)
        });
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
        // The statement and its verdict reach the recording together (one
        // hand-off), before the caller forwards the statement.
        let failed = sql.is_some_and(|sql| {
            let mut r = lock(&self.recorder);
            let (kinds, tables) = (&judged.kinds, &judged.tables);
            let recorded = if statement.statement_name.is_some_and(|n| !n.is_empty()) {
                // A named statement's executions (`Bound`) record the same
                // Arcs again; the unnamed one is usually run once.
                r.prepared_statement_and_verdict(
                    &sql,
                    statement.submission,
                    kinds,
                    tables,
                    &verdict,
                )
            } else {
                r.statement_and_verdict(&sql, statement.submission, kinds, tables, &verdict)
            };
            recorded.is_err()
        });
        if failed {
            self.recording_failed();
        }
        verdict
    }

    fn judge_uncached(
        &mut self,
        policy: &Policy,
        statement: &StatementContext<'_>,
    ) -> CachedJudgement {
        // Parsed once: the policy's classification and masking's lineage
        // read the same statements.
        let parsed = ParsedSql::parse(self.dialect, statement.sql);
        let judgement = policy.judge_parsed(&parsed, statement.submission, statement.identity);
        // Whether an UPDATE, DELETE or MERGE restricts any row can depend on
        // its literals (`WHERE 1 = 1 OR id = 5` restricts nothing, `WHERE
        // 1 = 2 OR id = 5` does), so such texts are judged every time.
        let writes = |k: &StatementKind| {
            matches!(
                k,
                StatementKind::Update | StatementKind::Delete | StatementKind::Merge
            )
        };
        self.judged_by_literal |= judgement
            .statements
            .iter()
            .any(|s| writes(&s.kind) || s.nested.iter().any(writes));
        let verdict = self.masking_verdict(&parsed, judgement.verdict);
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
        }
    }
}
