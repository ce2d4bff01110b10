//! Row rewriting: walk a row's values and write a new row into the
//! driver's encoder only when a value changes.

use hoop_core::{RowEncoder, RowValues, ValueEncoding};

use super::{
    Strategy,
    plan::{Action, ColumnPlan, MaskPlan, MaskRefusal},
    strategy,
};

/// One value's replacement.
enum Replacement {
    Null,
    /// The new bytes are in `MaskPlan::scratch`.
    Scratch,
    /// The column's fixed replacement (`Action::Mask::fixed`).
    Fixed,
}

impl MaskPlan {
    /// Rewrites one row. `Ok(false)`: nothing changed and nothing was
    /// pushed; forward the original. `Ok(true)`: every value of the new row
    /// was pushed into `out`, in order. `Err`: do not forward this row (the
    /// encoder may hold part of a row: the caller discards it).
    pub fn rewrite_row(
        &mut self,
        row: &dyn RowValues,
        out: &mut dyn RowEncoder,
    ) -> Result<bool, MaskRefusal> {
        if row.len() != self.columns.len() {
            return Err(MaskRefusal::ColumnCount {
                expected: self.columns.len(),
                found: row.len(),
            });
        }
        if self.noop {
            return Ok(false);
        }
        // A row held as spans of one buffer is read without a call per value.
        let spans = row.spans();
        let get = |i: usize| match &spans {
            Some(spans) => spans.get(i),
            None => row.get(i),
        };
        let mut changed = false;
        for i in 0..self.columns.len() {
            let value = get(i);
            let replacement = match value {
                Some(v) => self.rewrite_value(i, v)?,
                None => None,
            };
            match replacement {
                None if changed => out.push(value),
                None => {}
                Some(r) => {
                    if !changed {
                        changed = true;
                        for j in 0..i {
                            out.push(get(j));
                        }
                    }
                    match r {
                        Replacement::Null => out.push(None),
                        Replacement::Scratch => out.push(Some(&self.scratch)),
                        Replacement::Fixed => out.push(Some(self.columns[i].fixed())),
                    }
                }
            }
        }
        Ok(changed)
    }

    /// The replacement for one non-NULL value, or `None` to keep it.
    fn rewrite_value(
        &mut self,
        i: usize,
        value: &[u8],
    ) -> Result<Option<Replacement>, MaskRefusal> {
        let col: &ColumnPlan = &self.columns[i];
        match &col.action {
            Action::Keep if !col.detect => Ok(None),
            Action::Mask {
                fixed: Some(_),
                counter,
                ..
            } => {
                self.counts[*counter] += 1;
                Ok(Some(Replacement::Fixed))
            }
            Action::Mask {
                strategy,
                kind,
                keep_last,
                counter,
                fixed: None,
            } => {
                self.counts[*counter] += 1;
                if *strategy == Strategy::Null {
                    return Ok(Some(Replacement::Null));
                }
                self.scratch.clear();
                mask_value(
                    *strategy,
                    kind,
                    *keep_last,
                    &self.rules.hash_key,
                    col.encoding,
                    value,
                    &mut self.scratch,
                );
                Ok(Some(Replacement::Scratch))
            }
            Action::Refuse => Err(MaskRefusal::BinaryUnmaskable {
                column: col.name.clone(),
                type_name: col.type_name.clone(),
            }),
            Action::Keep => {
                let encoding = col.encoding;
                let text = text_part(encoding, value);
                let offset = value.len() - text.len();
                let rules = &self.rules;
                rules.detectors.find(text, &mut self.matches);
                if self.matches.is_empty() {
                    return Ok(None);
                }
                let mut null = false;
                let traced = col.source.is_some();
                for m in &self.matches {
                    let rule = rules.detectors.rule(m.detector);
                    self.counts[rules.column_rules.len() + rule] += 1;
                    null |= rules.detector_rules[rule].strategy == Strategy::Null;
                    if traced && !self.found.contains(&(i, rule)) {
                        self.found.push((i, rule));
                    }
                }
                if null {
                    return Ok(Some(Replacement::Null));
                }
                self.scratch.clear();
                self.scratch.extend_from_slice(&value[..offset]);
                replace_spans(rules, text, &self.matches, &mut self.scratch);
                Ok(Some(Replacement::Scratch))
            }
        }
    }
}

/// Appends the masked form of a whole `value` of a column in `encoding` to
/// `out` (not for [`Strategy::Null`], which the caller sends as NULL). A JSON
/// column's value becomes a JSON string, so the client still reads valid
/// JSON, and a binary jsonb one keeps its version byte.
pub(crate) fn mask_value(
    strategy: Strategy,
    kind: &str,
    keep_last: usize,
    hash_key: &[u8],
    encoding: ValueEncoding,
    value: &[u8],
    out: &mut Vec<u8>,
) {
    let text = text_part(encoding, value);
    match encoding {
        ValueEncoding::Json | ValueEncoding::JsonbBinary => {
            if encoding == ValueEncoding::JsonbBinary {
                out.push(1);
            }
            let mut tmp = Vec::with_capacity(32);
            strategy::apply(strategy, kind, keep_last, hash_key, text, &mut tmp);
            push_json_string(&tmp, out);
        }
        _ => {
            strategy::apply(strategy, kind, keep_last, hash_key, text, out);
        }
    }
}

/// The text of a value (jsonb binary: after the version byte).
fn text_part(encoding: ValueEncoding, value: &[u8]) -> &[u8] {
    match encoding {
        ValueEncoding::JsonbBinary if !value.is_empty() => &value[1..],
        _ => value,
    }
}

/// Copies `text` to `out`, each detector span replaced by its rule's strategy.
pub(crate) fn replace_spans(
    rules: &super::MaskRules,
    text: &[u8],
    matches: &[super::DetectorMatch],
    out: &mut Vec<u8>,
) {
    let mut at = 0;
    for m in matches {
        out.extend_from_slice(&text[at..m.start]);
        let rule = &rules.detector_rules[rules.detectors.rule(m.detector)];
        if rule.strategy == Strategy::Redact {
            out.extend_from_slice(rules.detectors.redacted(m.detector));
        } else {
            strategy::apply(
                rule.strategy,
                rules.detectors.name(m.detector),
                rule.keep_last,
                &rules.hash_key,
                &text[m.start..m.end],
                out,
            );
        }
        at = m.end;
    }
    out.extend_from_slice(&text[at..]);
}

fn push_json_string(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::{borrow::Cow, sync::Arc};

    use hoop_core::{
        ColumnSource, RelationName, ResolvedColumn, ResultColumn, ValueEncoding, ViewDependency,
    };
    use hoop_sql::{ParsedSql, pg::Postgres};

    use super::*;
    use crate::{
        BinaryUnmaskable, BuiltinDetector, ColumnRef, ColumnRule, DetectorKind, DetectorRule,
        MaskRules,
        lineage::{ColumnLineage, Lineage, analyze},
    };

    fn rules(binary: BinaryUnmaskable) -> Arc<MaskRules> {
        Arc::new(
            MaskRules::new(
                vec![
                    ColumnRule {
                        name: "ssn".into(),
                        columns: vec![ColumnRef::parse("customers.ssn").unwrap()],
                        strategy: Strategy::Partial,
                        keep_last: 4,
                    },
                    ColumnRule {
                        name: "card".into(),
                        columns: vec![ColumnRef::parse("customers.card").unwrap()],
                        strategy: Strategy::Null,
                        keep_last: 0,
                    },
                ],
                vec![DetectorRule {
                    name: "pii".into(),
                    detectors: vec![DetectorKind::Builtin(BuiltinDetector::Email)],
                    strategy: Strategy::Redact,
                    keep_last: 0,
                }],
                b"k".to_vec(),
                binary,
            )
            .unwrap(),
        )
    }

    fn col(name: &str, encoding: ValueEncoding) -> ResultColumn {
        ResultColumn {
            name: name.into(),
            source: ColumnSource::None,
            encoding,
            type_name: Cow::Borrowed("test"),
            content: hoop_core::ValueContent::Any,
        }
    }

    fn text(name: &str) -> ResultColumn {
        col(name, ValueEncoding::Text)
    }

    #[allow(clippy::unnecessary_wraps)]
    fn customers(column: &str) -> Option<ResolvedColumn> {
        Some(ResolvedColumn {
            schema: Some("public".into()),
            table: "customers".into(),
            column: column.into(),
        })
    }

    fn lineage(sql: &str, rules: &MaskRules) -> Lineage {
        analyze(&ParsedSql::parse(&Postgres, sql), rules).statement(0)
    }

    /// Rewrites `row`; `None` when unchanged.
    fn rewrite(plan: &mut MaskPlan, row: &[Option<&[u8]>]) -> Option<Vec<Option<String>>> {
        let mut out: Vec<Option<Vec<u8>>> = Vec::new();
        let changed = plan.rewrite_row(&row, &mut out).unwrap();
        assert_eq!(changed, !out.is_empty());
        changed.then(|| {
            assert_eq!(out.len(), row.len());
            out.into_iter()
                .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                .collect()
        })
    }

    #[test]
    fn star_resolved_through_the_catalog() {
        let cols = [text("id"), text("name"), text("ssn"), text("card")];
        let r = rules(BinaryUnmaskable::Refuse);
        let l = lineage("SELECT * FROM customers", &r);
        let resolved = [
            customers("id"),
            customers("name"),
            customers("ssn"),
            customers("card"),
        ];
        let mut plan = MaskPlan::new(r, &l, &cols, &resolved);
        let out = rewrite(
            &mut plan,
            &[
                Some(b"1"),
                Some(b"Bob bob@x.io"),
                Some(b"123-45-6789"),
                Some(b"4111"),
            ],
        );
        assert_eq!(
            out.unwrap(),
            [
                Some("1".into()),
                Some("Bob [REDACTED:email]".into()),
                Some("***-**-6789".into()),
                None
            ]
        );
        let mut counts = plan.take_counts();
        counts.sort();
        assert_eq!(
            counts,
            [
                (Arc::from("card"), 1),
                (Arc::from("pii"), 1),
                (Arc::from("ssn"), 1)
            ]
        );
        assert!(plan.take_counts().is_empty());
    }

    #[test]
    fn nothing_to_change_pushes_nothing() {
        let cols = [text("id"), text("name")];
        let r = rules(BinaryUnmaskable::Refuse);
        let l = lineage("SELECT id, name FROM customers", &r);
        let mut plan = MaskPlan::new(r, &l, &cols, &[customers("id"), customers("name")]);
        assert_eq!(rewrite(&mut plan, &[Some(b"1"), Some(b"Bob Smith")]), None);
        assert_eq!(rewrite(&mut plan, &[None, None]), None);
    }

    #[test]
    fn a_change_late_in_the_row_pushes_the_values_before_it() {
        let cols = [text("id"), text("name"), text("ssn")];
        let r = rules(BinaryUnmaskable::Refuse);
        let l = lineage("SELECT id, name, ssn FROM customers", &r);
        let mut plan = MaskPlan::new(r, &l, &cols, &[]);
        assert_eq!(
            rewrite(&mut plan, &[None, Some(b"Ann"), Some(b"123-45-6789")]).unwrap(),
            [None, Some("Ann".into()), Some("***-**-6789".into())]
        );
    }

    #[test]
    fn expressions_are_redacted_not_partially_shown() {
        let cols = [text("name"), text("upper")];
        let r = rules(BinaryUnmaskable::Refuse);
        let l = lineage("SELECT name, upper(ssn) FROM customers", &r);
        let mut plan = MaskPlan::new(r, &l, &cols, &[]);
        assert_eq!(
            rewrite(&mut plan, &[Some(b"Bob"), Some(b"123-45-6789")]).unwrap(),
            [Some("Bob".into()), Some("[REDACTED:ssn]".into())]
        );
    }

    #[test]
    fn unknown_lineage_masks_the_whole_column() {
        let cols = [text("x")];
        let r = rules(BinaryUnmaskable::Refuse);
        let mut plan = MaskPlan::new(r, &Lineage::unknown(), &cols, &[]);
        assert_eq!(
            rewrite(&mut plan, &[Some(b"hello")]).unwrap(),
            [Some("[REDACTED:unknown]".into())]
        );
        assert_eq!(plan.take_counts(), [(Arc::from("unknown"), 1)]);
    }

    #[test]
    fn binary_formats() {
        // A text-like binary column masked type-correctly; an opaque one refused.
        let cols = [
            text("ssn"),
            ResultColumn {
                type_name: Cow::Borrowed("oid 23"),
                content: hoop_core::ValueContent::Any,
                ..col("x", ValueEncoding::Opaque)
            },
        ];
        let lineage = Lineage {
            columns: vec![
                ColumnLineage::Clean,
                ColumnLineage::Masked {
                    rule: 0,
                    direct: false,
                },
            ],
            rest: None,
            writes_masked: false,
            changes_masked_schema: false,
        };
        let resolved = [customers("ssn"), None];
        let mut plan = MaskPlan::new(rules(BinaryUnmaskable::Refuse), &lineage, &cols, &resolved);
        let mut out: Vec<Option<Vec<u8>>> = Vec::new();
        let err = plan
            .rewrite_row(
                &&[Some(&b"123-45-6789"[..]), Some(&7i32.to_be_bytes()[..])][..],
                &mut out,
            )
            .unwrap_err();
        assert!(
            matches!(err, MaskRefusal::BinaryUnmaskable { ref column, ref type_name } if column == "x" && type_name == "oid 23")
        );
        assert!(err.to_string().contains("text format"));
        // A NULL needs no masking.
        assert_eq!(
            rewrite(&mut plan, &[Some(b"123-45-6789"), None]).unwrap()[0].as_deref(),
            Some("***-**-6789")
        );
        // binary_unmaskable: null.
        let mut plan = MaskPlan::new(rules(BinaryUnmaskable::Null), &lineage, &cols, &resolved);
        assert_eq!(
            rewrite(
                &mut plan,
                &[Some(b"123-45-6789"), Some(&7i32.to_be_bytes())]
            )
            .unwrap()[1],
            None
        );
    }

    #[test]
    fn json_values_stay_valid_json() {
        let cols = [
            col("j", ValueEncoding::Json),
            col("jb", ValueEncoding::JsonbBinary),
        ];
        let lineage = Lineage {
            columns: vec![ColumnLineage::Unknown, ColumnLineage::Unknown],
            rest: None,
            writes_masked: false,
            changes_masked_schema: false,
        };
        let mut plan = MaskPlan::new(rules(BinaryUnmaskable::Refuse), &lineage, &cols, &[]);
        let mut out: Vec<Option<Vec<u8>>> = Vec::new();
        let row: [Option<&[u8]>; 2] = [Some(br#"{"ssn":"1"}"#), Some(b"\x01{\"a\":1}")];
        assert!(plan.rewrite_row(&&row[..], &mut out).unwrap());
        assert_eq!(out[0].as_deref().unwrap(), br#""[REDACTED:unknown]""#);
        assert_eq!(out[1].as_deref().unwrap(), b"\x01\"[REDACTED:unknown]\"");
        // Detector hits inside binary jsonb keep the version byte.
        let cols = [col("jb", ValueEncoding::JsonbBinary)];
        let mut plan = MaskPlan::new(
            rules(BinaryUnmaskable::Refuse),
            &Lineage::clean(),
            &cols,
            &[],
        );
        let mut out: Vec<Option<Vec<u8>>> = Vec::new();
        let row: [Option<&[u8]>; 1] = [Some(b"\x01{\"e\":\"a@b.io\"}")];
        assert!(plan.rewrite_row(&&row[..], &mut out).unwrap());
        assert_eq!(
            out[0].as_deref().unwrap(),
            b"\x01{\"e\":\"[REDACTED:email]\"}"
        );
    }

    #[test]
    fn views_from_the_catalog_mask_every_column() {
        let mut r = MaskRules::clone(&rules(BinaryUnmaskable::Refuse));
        let rel = |name: &str| RelationName {
            schema: Some("public".into()),
            name: name.into(),
        };
        let dep = |view: &str, table: &str, column: &str| ViewDependency {
            view: rel(view),
            table: rel(table),
            column: Some(column.into()),
        };
        let deps = [
            dep("v1", "customers", "ssn"),
            dep("v2", "v1", "x"),
            dep("v3", "customers", "name"),
        ];
        let views = crate::plan::masked_views(&r, &deps);
        let names: Vec<&str> = views.iter().map(|(t, _)| t.name.as_str()).collect();
        assert_eq!(names, ["v1", "v2"]);
        r.set_masked_relations(views);
        let r = Arc::new(r);
        let cols = [text("x")];
        let resolved = [Some(ResolvedColumn {
            schema: Some("public".into()),
            table: "v2".into(),
            column: "x".into(),
        })];
        let l = lineage("SELECT * FROM v2", &r);
        let mut plan = MaskPlan::new(r, &l, &cols, &resolved);
        assert!(rewrite(&mut plan, &[Some(b"secret")]).is_some());
    }

    /// A row held as spans of one buffer, as PostgreSQL's driver holds a
    /// DataRow.
    struct Spanned {
        body: Vec<u8>,
        spans: Vec<(usize, i32)>,
    }

    impl Spanned {
        fn new(values: &[Option<&[u8]>]) -> Self {
            // Junk between values, so a span that is off by one shows.
            let mut body = b"#".to_vec();
            let mut spans = Vec::new();
            for v in values {
                match v {
                    Some(v) => {
                        spans.push((body.len(), i32::try_from(v.len()).unwrap()));
                        body.extend_from_slice(v);
                    }
                    None => spans.push((body.len(), -1)),
                }
                body.push(b'#');
            }
            Self { body, spans }
        }
    }

    impl hoop_core::RowValues for Spanned {
        fn len(&self) -> usize {
            self.spans.len()
        }

        fn get(&self, _: usize) -> Option<&[u8]> {
            unreachable!("a rewriter reads a row that has spans through them")
        }

        fn spans(&self) -> Option<hoop_core::ValueSpans<'_>> {
            Some(hoop_core::ValueSpans {
                body: &self.body,
                spans: &self.spans,
            })
        }
    }

    #[test]
    fn rows_read_through_spans_rewrite_as_rows_read_value_by_value() {
        let cols: Vec<ResultColumn> = (0..20).map(|i| text(&format!("c{i}"))).collect();
        let r = rules(BinaryUnmaskable::Refuse);
        let l = lineage(
            "SELECT id, name, ssn, card, note, a, b, c, d, e, f, g, h, i, j, k, l, m, n, ssn FROM customers",
            &r,
        );
        // Twenty values, NULLs, emails, every strategy.
        let rows: [[Option<&[u8]>; 20]; 3] = [
            [
                Some(b"1"),
                Some(b"Bob bob@x.io"),
                Some(b"123-45-6789"),
                Some(b"4111"),
                None,
                Some(b""),
                Some(b"x"),
                None,
                Some(b"c@d.org and e@f.net"),
                Some(b"plain"),
                Some(b"f"),
                Some(b"g"),
                Some(b"h"),
                Some(b"i"),
                Some(b"j"),
                Some(b"k"),
                Some(b"l"),
                Some(b"m"),
                Some(b"n@o.pe"),
                Some(b"987-65-4321"),
            ],
            [None; 20],
            [Some(b"plain"); 20],
        ];
        for row in &rows {
            let mut plan = MaskPlan::new(r.clone(), &l, &cols, &[]);
            let mut by_value: Vec<Option<Vec<u8>>> = Vec::new();
            let changed = plan.rewrite_row(&&row[..], &mut by_value).unwrap();
            let mut by_spans: Vec<Option<Vec<u8>>> = Vec::new();
            let spanned = Spanned::new(row);
            assert_eq!(plan.rewrite_row(&spanned, &mut by_spans).unwrap(), changed);
            assert_eq!(by_spans, by_value);
            assert_eq!(changed, by_value.len() == 20);
        }
        // The first row's masked values, as a spot check.
        let mut plan = MaskPlan::new(r, &l, &cols, &[]);
        let mut out: Vec<Option<Vec<u8>>> = Vec::new();
        assert!(plan.rewrite_row(&Spanned::new(&rows[0]), &mut out).unwrap());
        let text = |i: usize| out[i].as_deref().map(String::from_utf8_lossy);
        assert_eq!(text(1).as_deref(), Some("Bob [REDACTED:email]"));
        assert_eq!(text(2).as_deref(), Some("***-**-6789"));
        assert_eq!(text(3), None);
        assert_eq!(
            text(8).as_deref(),
            Some("[REDACTED:email] and [REDACTED:email]")
        );
        assert_eq!(text(18).as_deref(), Some("[REDACTED:email]"));
        assert_eq!(text(19).as_deref(), Some("***-**-4321"));
    }

    #[test]
    fn rows_of_the_wrong_width_are_refused() {
        let cols = [text("id")];
        let mut plan = MaskPlan::new(
            rules(BinaryUnmaskable::Refuse),
            &Lineage::clean(),
            &cols,
            &[],
        );
        let mut out: Vec<Option<Vec<u8>>> = Vec::new();
        let row: [Option<&[u8]>; 2] = [None, None];
        assert!(matches!(
            plan.rewrite_row(&&row[..], &mut out),
            Err(MaskRefusal::ColumnCount {
                expected: 1,
                found: 2
            })
        ));
    }
}
