//! Masking free text a server echoes: the value-bearing texts of errors and
//! notices, and notification payloads. Where a server quotes values is its
//! dialect's [`EchoPatterns`]; PostgreSQL's are described here.
//!
//! The server can echo a stored value in a message:
//! - unique / foreign-key / exclusion violations: `Key (ssn)=(123-45-6789) already exists.`
//!   → the value list is masked when the key's columns include a masked column
//!   name (by column name: the message does not say which table);
//! - check / not-null violations: `Failing row contains (…)` → the whole
//!   tuple is redacted whenever any column rule exists;
//! - input errors on a stored value (`SELECT ssn::int …`):
//!   `invalid input syntax for type integer: "123-45-6789"` → a trailing
//!   `: "…"` is redacted whenever any column rule exists (for a client's own
//!   input this hides nothing it did not send);
//! - and then every detector runs over the whole text.
//!
//! Apply to the `M` (message), `D` (detail), `H` (hint), `W` (where) and `q`
//! (internal query) fields, and to notification payloads. `RAISE` in user
//! functions and `DO` blocks can print anything: only detectors see that, so
//! the policy should hold or deny `DO` where masking matters.

use hoop_sql::EchoPatterns;
use memchr::memmem;

use super::{MaskRules, Strategy, strategy};

impl MaskRules {
    /// The masked form of `text`, or `None` when nothing in it is masked.
    /// `echoes` says how the session's server quotes values in its texts.
    pub fn mask_free_text(&self, text: &str, echoes: &EchoPatterns) -> Option<String> {
        let mut current: Option<String> = None;
        if !self.column_rules.is_empty() {
            // A key-value echo (`)=(`) cannot occur in a text without a
            // `(`, nor can a failing-row mark that holds one: one scan
            // spares both searches in most texts (statements that call no
            // function, most server messages).
            let has_paren = memchr::memchr(b'(', text.as_bytes()).is_some();
            if has_paren
                && let Some(t) = self.mask_key_values(current.as_deref().unwrap_or(text), echoes)
            {
                current = Some(t);
            }
            // A mark ending in `(` (PostgreSQL's) cannot occur in a text
            // without one; any other mark is searched for (asking whether
            // it holds a `(` anywhere would cost a scan of the mark per
            // text).
            if let Some(mark) = echoes.failing_row
                && (has_paren || !mark.ends_with('('))
                && let Some(t) = redact_failing_row(current.as_deref().unwrap_or(text), mark)
            {
                current = Some(t);
            }
            if echoes.trailing_quoted
                && let Some(t) = redact_trailing_quoted(current.as_deref().unwrap_or(text))
            {
                current = Some(t);
            }
        }
        if !self.detectors.is_empty() {
            let t = current.as_deref().unwrap_or(text);
            let mut matches = Vec::new();
            self.detectors.find(t.as_bytes(), &mut matches);
            if !matches.is_empty() {
                let mut out = Vec::with_capacity(t.len() + 16);
                // In free text `null` cannot drop the message: it redacts the span.
                let mut at = 0;
                for m in &matches {
                    out.extend_from_slice(&t.as_bytes()[at..m.start]);
                    let rule = &self.detector_rules[self.detectors.rule(m.detector)];
                    let s = if rule.strategy == Strategy::Null {
                        Strategy::Redact
                    } else {
                        rule.strategy
                    };
                    strategy::apply(
                        s,
                        self.detectors.name(m.detector),
                        rule.keep_last,
                        &self.hash_key,
                        &t.as_bytes()[m.start..m.end],
                        &mut out,
                    );
                    at = m.end;
                }
                out.extend_from_slice(&t.as_bytes()[at..]);
                current = Some(String::from_utf8_lossy(&out).into_owned());
            }
        }
        current
    }

    /// The column rule masking any column named in a key column list.
    fn key_rule(&self, columns: &str) -> Option<usize> {
        let words = columns
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase);
        for w in words {
            let rule = self
                .column_rules
                .iter()
                .position(|r| r.columns.iter().any(|c| c.column.to_lowercase() == w));
            if rule.is_some() {
                return rule;
            }
        }
        None
    }

    fn mask_key_values(&self, text: &str, echoes: &EchoPatterns) -> Option<String> {
        let mut out = String::new();
        let mut changed = false;
        let mut at = 0;
        while let Some(close) = key_value_separator(text.as_bytes(), at) {
            // Walk back to the `(` opening the column list (it may nest: `lower(email)`).
            let bytes = text.as_bytes();
            let mut depth = 0i32;
            let mut open = None;
            for j in (at..close).rev() {
                match bytes[j] {
                    b')' => depth += 1,
                    b'(' if depth == 0 => {
                        open = Some(j);
                        break;
                    }
                    b'(' => depth -= 1,
                    _ => {}
                }
            }
            let value_start = close + 3;
            let Some(open) = open else {
                at = value_start;
                continue;
            };
            let rest = &text[value_start..];
            let value_end = echoes
                .key_value_suffixes
                .iter()
                .filter_map(|s| rest.find(s))
                .min()
                .or_else(|| rest.rfind(')'))
                .map_or(text.len(), |e| value_start + e);
            out.push_str(&text[at..value_start]);
            at = value_start;
            if let Some(rule) = self.key_rule(&text[open + 1..close]) {
                let r = &self.column_rules[rule];
                let mut masked = Vec::new();
                let s = if r.strategy == Strategy::Null {
                    Strategy::Redact
                } else {
                    r.strategy
                };
                strategy::apply(
                    s,
                    &r.name,
                    r.keep_last,
                    &self.hash_key,
                    &text.as_bytes()[value_start..value_end],
                    &mut masked,
                );
                out.push_str(&String::from_utf8_lossy(&masked));
                changed = true;
                at = value_end;
            }
        }
        if changed {
            out.push_str(&text[at..]);
            Some(out)
        } else {
            None
        }
    }
}

/// The index of the next `)=(` at or after `at`: each `=` found by
/// `memchr` is checked for its neighbours (no searcher to build, which
/// costs more than the search in the short texts this sees).
fn key_value_separator(text: &[u8], at: usize) -> Option<usize> {
    let mut from = at + 1;
    while let Some(rel) = text.get(from..).and_then(|t| memchr::memchr(b'=', t)) {
        let eq = from + rel;
        if text[eq - 1] == b')' && text.get(eq + 1) == Some(&b'(') {
            return Some(eq - 1);
        }
        from = eq + 1;
    }
    None
}

/// Where `needle` first occurs in `text`. Short texts (most statements and
/// server messages) are searched from each occurrence of the needle's first
/// byte, without building a searcher; long ones with `memmem`.
fn find_bytes(text: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    if text.len() > 512 {
        return memmem::find(text, needle);
    }
    let mut from = 0;
    while let Some(rel) = text.get(from..).and_then(|t| memchr::memchr(first, t)) {
        let at = from + rel;
        if text[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn redact_failing_row(text: &str, mark: &str) -> Option<String> {
    let start = find_bytes(text.as_bytes(), mark.as_bytes())? + mark.len();
    let end = text
        .rfind(')')
        .filter(|&e| e >= start)
        .unwrap_or(text.len());
    if end == start {
        return None;
    }
    Some(format!("{}[REDACTED:row]{}", &text[..start], &text[end..]))
}

fn redact_trailing_quoted(text: &str) -> Option<String> {
    let trimmed = text.trim_end();
    if !trimmed.ends_with('"') || trimmed.len() < 2 {
        return None;
    }
    let start = text.find(": \"")? + 3;
    let end = trimmed.len() - 1;
    if end <= start {
        return None;
    }
    Some(format!(
        "{}[REDACTED:value]{}",
        &text[..start],
        &text[end..]
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{
        BinaryUnmaskable, BuiltinDetector, ColumnRef, ColumnRule, DetectorKind, DetectorRule,
    };

    impl MaskRules {
        fn mask_free_text_pg(&self, text: &str) -> Option<String> {
            self.mask_free_text(
                text,
                hoop_sql::SqlDialect::echo_patterns(&hoop_sql::pg::Postgres),
            )
        }
    }

    fn rules() -> MaskRules {
        MaskRules::new(
            vec![ColumnRule {
                name: "ssn".into(),
                columns: vec![ColumnRef::parse("customers.ssn").unwrap()],
                strategy: Strategy::Redact,
                keep_last: 0,
            }],
            vec![DetectorRule {
                name: "pii".into(),
                detectors: vec![DetectorKind::Builtin(BuiltinDetector::Email)],
                strategy: Strategy::Redact,
                keep_last: 0,
            }],
            Vec::new(),
            BinaryUnmaskable::Refuse,
        )
        .unwrap()
    }

    #[test]
    fn unique_violation_detail_is_masked() {
        let r = rules();
        assert_eq!(
            r.mask_free_text_pg("Key (ssn)=(123-45-6789) already exists.")
                .unwrap(),
            "Key (ssn)=([REDACTED:ssn]) already exists."
        );
        assert_eq!(
            r.mask_free_text_pg(
                "Key (tenant, ssn)=(7, 123-45-6789) is not present in table \"customers\"."
            )
            .unwrap(),
            "Key (tenant, ssn)=([REDACTED:ssn]) is not present in table \"customers\"."
        );
        // Values containing parentheses and the suffix text stay covered.
        assert_eq!(
            r.mask_free_text_pg("Key (lower(ssn))=(a) b) already exists.")
                .unwrap(),
            "Key (lower(ssn))=([REDACTED:ssn]) already exists."
        );
        assert_eq!(r.mask_free_text_pg("Key (id)=(42) already exists."), None);
    }

    #[test]
    fn failing_row_and_cast_errors_are_masked() {
        let r = rules();
        assert_eq!(
            r.mask_free_text_pg("Failing row contains (1, 123-45-6789, null).")
                .unwrap(),
            "Failing row contains ([REDACTED:row])."
        );
        assert_eq!(
            r.mask_free_text_pg("invalid input syntax for type integer: \"123-45-6789\"")
                .unwrap(),
            "invalid input syntax for type integer: \"[REDACTED:value]\""
        );
        assert_eq!(
            r.mask_free_text_pg("relation \"customers\" does not exist"),
            None
        );
    }

    #[test]
    fn a_text_without_a_parenthesis_skips_only_the_searches_that_need_one() {
        let r = rules();
        // A failing-row mark without `(` is still searched for in such a text.
        let echoes = EchoPatterns {
            key_value_suffixes: &[],
            failing_row: Some("Failing row: "),
            trailing_quoted: false,
        };
        assert_eq!(
            r.mask_free_text("Failing row: 1, 123-45-6789, null", &echoes)
                .unwrap(),
            "Failing row: [REDACTED:row]"
        );
        // PostgreSQL's shapes, each next to the same text without its `(`.
        for (with, without) in [
            (
                "Key (ssn)=(123-45-6789) exists.",
                "Key ssn)=123-45-6789) exists.",
            ),
            (
                "Failing row contains (1, 2).",
                "Failing row contains 1, 2).",
            ),
        ] {
            assert!(r.mask_free_text_pg(with).is_some(), "{with}");
            assert_eq!(r.mask_free_text_pg(without), None, "{without}");
        }
    }

    #[test]
    fn detectors_run_over_notices_and_payloads() {
        let r = rules();
        assert_eq!(
            r.mask_free_text_pg("new signup bob@example.com").unwrap(),
            "new signup [REDACTED:email]"
        );
        assert_eq!(r.mask_free_text_pg("nothing to see"), None);
    }

    #[test]
    fn the_byte_searches_find_what_a_naive_search_finds() {
        let naive = |text: &[u8], needle: &[u8], from: usize| {
            (from..text.len()).find(|&i| text[i..].starts_with(needle))
        };
        let texts: Vec<Vec<u8>> = vec![
            b"Key (a)=(1) and (b)=(2)".to_vec(),
            b")=(".to_vec(),
            b"=(".to_vec(),
            b"x)=".to_vec(),
            b"a = b )= (=( )=)=( Failing row contains Failing row contains (".to_vec(),
            b"FFFailing row contains (1)".to_vec(),
            // Past the short-text limit, so memmem answers.
            [vec![b'F'; 600], b"Failing row contains (".to_vec()].concat(),
            [vec![b'='; 600], b")=(".to_vec()].concat(),
        ];
        let mark = b"Failing row contains (";
        for t in &texts {
            assert_eq!(find_bytes(t, mark), naive(t, mark, 0));
            for at in 0..t.len() {
                assert_eq!(
                    key_value_separator(t, at),
                    naive(t, b")=(", at),
                    "{:?} from {at}",
                    String::from_utf8_lossy(t)
                );
            }
        }
    }
}
