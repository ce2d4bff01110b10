//! DataRow rewriting: scan a DataRow body in place and build a new body only
//! from the first value that changes.
//!
//! Body layout (after the `D` tag and the length): `i16` column count, then
//! per column an `i32` length (`-1` = NULL) and that many bytes.

use super::{
    Strategy,
    plan::{Action, ColumnPlan, Encoding, MaskPlan, MaskRefusal},
    strategy,
};

/// One value's replacement.
enum Replacement {
    Null,
    /// The new bytes are in `MaskPlan::scratch`.
    Scratch,
}

impl MaskPlan {
    /// Rewrites one DataRow body. `Ok(None)`: nothing changed, forward the
    /// original frame. `Ok(Some(body))`: the new body (the caller frames it
    /// with `D` and the new length). `Err`: do not forward this row.
    pub fn rewrite_row(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, MaskRefusal> {
        if body.len() < 2 {
            return Err(MaskRefusal::Malformed("missing column count"));
        }
        let count = i16::from_be_bytes([body[0], body[1]]);
        if count < 0 || count as usize != self.columns.len() {
            return Err(MaskRefusal::ColumnCount {
                expected: self.columns.len(),
                found: count.max(0) as usize,
            });
        }
        if self.noop {
            validate(body, self.columns.len())?;
            return Ok(None);
        }
        let mut out: Option<Vec<u8>> = None;
        let mut pos = 2;
        for i in 0..self.columns.len() {
            let start = pos;
            let len_bytes: [u8; 4] = body
                .get(pos..pos + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or(MaskRefusal::Malformed("truncated column length"))?;
            let len = i32::from_be_bytes(len_bytes);
            pos += 4;
            let value = match len {
                -1 => None,
                n if n < 0 => return Err(MaskRefusal::Malformed("negative column length")),
                n => {
                    let v = body
                        .get(pos..pos + n as usize)
                        .ok_or(MaskRefusal::Malformed("truncated column value"))?;
                    pos += n as usize;
                    Some(v)
                }
            };
            let replacement = match value {
                Some(v) => self.rewrite_value(i, v)?,
                None => None,
            };
            match (replacement, &mut out) {
                (None, None) => {}
                (None, Some(o)) => o.extend_from_slice(&body[start..pos]),
                (Some(r), o) => {
                    let o = o.get_or_insert_with(|| {
                        let mut v = Vec::with_capacity(body.len() + 64);
                        v.extend_from_slice(&body[..start]);
                        v
                    });
                    match r {
                        Replacement::Null => o.extend_from_slice(&(-1i32).to_be_bytes()),
                        Replacement::Scratch => {
                            let n = i32::try_from(self.scratch.len())
                                .map_err(|_| MaskRefusal::Malformed("masked value too long"))?;
                            o.extend_from_slice(&n.to_be_bytes());
                            o.extend_from_slice(&self.scratch);
                        }
                    }
                }
            }
        }
        if pos != body.len() {
            return Err(MaskRefusal::Malformed(
                "trailing bytes after the last column",
            ));
        }
        Ok(out)
    }

    /// The replacement for one non-NULL value, or `None` to keep it.
    fn rewrite_value(
        &mut self,
        i: usize,
        value: &[u8],
    ) -> Result<Option<Replacement>, MaskRefusal> {
        let col: &ColumnPlan = &self.columns[i];
        match &col.action {
            Action::Refuse => Err(MaskRefusal::BinaryUnmaskable {
                column: col.name.clone(),
                type_oid: col.type_oid,
            }),
            Action::Mask {
                strategy,
                kind,
                keep_last,
                counter,
            } => {
                self.counts[*counter] += 1;
                if *strategy == Strategy::Null {
                    return Ok(Some(Replacement::Null));
                }
                let text = text_part(col.encoding, value);
                self.scratch.clear();
                let json = matches!(col.encoding, Encoding::Json | Encoding::JsonbBinary);
                if col.encoding == Encoding::JsonbBinary {
                    self.scratch.push(1);
                }
                if json {
                    // A JSON string keeps the value valid JSON for the client.
                    let mut tmp = Vec::with_capacity(32);
                    strategy::apply(
                        *strategy,
                        kind,
                        *keep_last,
                        &self.rules.hash_key,
                        text,
                        &mut tmp,
                    );
                    push_json_string(&tmp, &mut self.scratch);
                } else {
                    strategy::apply(
                        *strategy,
                        kind,
                        *keep_last,
                        &self.rules.hash_key,
                        text,
                        &mut self.scratch,
                    );
                }
                Ok(Some(Replacement::Scratch))
            }
            Action::Keep if col.detect => {
                let encoding = col.encoding;
                let text = text_part(encoding, value);
                let offset = value.len() - text.len();
                let rules = &self.rules;
                rules.detectors.find(text, &mut self.matches);
                if self.matches.is_empty() {
                    return Ok(None);
                }
                let mut null = false;
                for m in &self.matches {
                    let rule = rules.detectors.rule(m.detector);
                    self.counts[rules.column_rules.len() + rule] += 1;
                    null |= rules.detector_rules[rule].strategy == Strategy::Null;
                }
                if null {
                    return Ok(Some(Replacement::Null));
                }
                self.scratch.clear();
                self.scratch.extend_from_slice(&value[..offset]);
                replace_spans(rules, text, &self.matches, &mut self.scratch);
                Ok(Some(Replacement::Scratch))
            }
            Action::Keep => Ok(None),
        }
    }
}

/// The text of a value (jsonb binary: after the version byte).
fn text_part(encoding: Encoding, value: &[u8]) -> &[u8] {
    match encoding {
        Encoding::JsonbBinary if !value.is_empty() => &value[1..],
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
        strategy::apply(
            rule.strategy,
            rules.detectors.name(m.detector),
            rule.keep_last,
            &rules.hash_key,
            &text[m.start..m.end],
            out,
        );
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

/// Checks a body's framing without rewriting it.
fn validate(body: &[u8], columns: usize) -> Result<(), MaskRefusal> {
    let mut pos = 2;
    for _ in 0..columns {
        let len_bytes: [u8; 4] = body
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or(MaskRefusal::Malformed("truncated column length"))?;
        pos += 4;
        match i32::from_be_bytes(len_bytes) {
            -1 => {}
            n if n < 0 => return Err(MaskRefusal::Malformed("negative column length")),
            n => {
                pos += n as usize;
                if pos > body.len() {
                    return Err(MaskRefusal::Malformed("truncated column value"));
                }
            }
        }
    }
    if pos == body.len() {
        Ok(())
    } else {
        Err(MaskRefusal::Malformed(
            "trailing bytes after the last column",
        ))
    }
}

/// Builds a DataRow body from values (`None` = NULL). For tests, benchmarks
/// and the lead's own tests.
pub fn encode_data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

/// Splits a DataRow body into values (`None` = NULL); `None` when malformed.
pub fn decode_data_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let count = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut pos = 2;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        if len == -1 {
            out.push(None);
        } else {
            let len = usize::try_from(len).ok()?;
            out.push(Some(body.get(pos..pos + len)?));
            pos += len;
        }
    }
    (pos == body.len()).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mask::{
        BinaryUnmaskable, BuiltinDetector, ColumnRef, ColumnRule, DetectorKind, DetectorRule,
        MaskRules,
        lineage::{ColumnLineage, Lineage, TableName, analyze_sql},
        plan::{CatalogCache, ColumnDescription, ResolvedColumn},
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

    fn col(name: &str, oid: u32, attnum: i16, type_oid: u32, format: i16) -> ColumnDescription {
        ColumnDescription {
            name: name.into(),
            table_oid: oid,
            column_attnum: attnum,
            type_oid,
            format,
        }
    }

    fn plan_for(
        sql: &str,
        columns: &[ColumnDescription],
        rules: Arc<MaskRules>,
        catalog: &CatalogCache,
    ) -> MaskPlan {
        let lineage = analyze_sql(sql, &rules).statement(0);
        MaskPlan::new(rules, &lineage, columns, &catalog.resolve_all(columns))
    }

    fn catalog() -> CatalogCache {
        let mut c = CatalogCache::new();
        for (attnum, name) in [("1", "id"), ("2", "name"), ("3", "ssn"), ("4", "card")] {
            let row: Vec<Option<&[u8]>> = vec![
                Some(b"16384"),
                Some(b"public"),
                Some(b"customers"),
                Some(attnum.as_bytes()),
                Some(name.as_bytes()),
            ];
            c.insert_row(&row).unwrap();
        }
        c
    }

    fn values(body: &[u8]) -> Vec<Option<String>> {
        decode_data_row(body)
            .unwrap()
            .into_iter()
            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    #[test]
    fn star_resolved_through_the_catalog() {
        let cols = [
            col("id", 16384, 1, 23, 0),
            col("name", 16384, 2, 25, 0),
            col("ssn", 16384, 3, 25, 0),
            col("card", 16384, 4, 25, 0),
        ];
        let mut plan = plan_for(
            "SELECT * FROM customers",
            &cols,
            rules(BinaryUnmaskable::Refuse),
            &catalog(),
        );
        let row = encode_data_row(&[
            Some(b"1"),
            Some(b"Bob bob@x.io"),
            Some(b"123-45-6789"),
            Some(b"4111"),
        ]);
        let out = plan.rewrite_row(&row).unwrap().unwrap();
        assert_eq!(
            values(&out),
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
    fn nothing_to_change_is_zero_copy() {
        let cols = [col("id", 16384, 1, 23, 0), col("name", 16384, 2, 25, 0)];
        let mut plan = plan_for(
            "SELECT id, name FROM customers",
            &cols,
            rules(BinaryUnmaskable::Refuse),
            &catalog(),
        );
        let row = encode_data_row(&[Some(b"1"), Some(b"Bob Smith")]);
        assert_eq!(plan.rewrite_row(&row).unwrap(), None);
        let row = encode_data_row(&[None, None]);
        assert_eq!(plan.rewrite_row(&row).unwrap(), None);
    }

    #[test]
    fn expressions_are_redacted_not_partially_shown() {
        let cols = [col("name", 0, 0, 25, 0), col("upper", 0, 0, 25, 0)];
        let mut plan = plan_for(
            "SELECT name, upper(ssn) FROM customers",
            &cols,
            rules(BinaryUnmaskable::Refuse),
            &catalog(),
        );
        let row = encode_data_row(&[Some(b"Bob"), Some(b"123-45-6789")]);
        let out = plan.rewrite_row(&row).unwrap().unwrap();
        assert_eq!(
            values(&out),
            [Some("Bob".into()), Some("[REDACTED:ssn]".into())]
        );
    }

    #[test]
    fn unknown_lineage_masks_the_whole_column() {
        let cols = [col("x", 0, 0, 25, 0)];
        let r = rules(BinaryUnmaskable::Refuse);
        let mut plan = MaskPlan::new(r, &Lineage::unknown(), &cols, &[]);
        let out = plan
            .rewrite_row(&encode_data_row(&[Some(b"hello")]))
            .unwrap()
            .unwrap();
        assert_eq!(values(&out), [Some("[REDACTED:unknown]".into())]);
        assert_eq!(plan.take_counts(), [(Arc::from("unknown"), 1)]);
    }

    #[test]
    fn binary_formats() {
        // Binary text column masked type-correctly; binary int refused.
        let cols = [col("ssn", 16384, 3, 25, 1), col("x", 0, 0, 23, 1)];
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
        };
        let resolved = catalog().resolve_all(&cols);
        let mut plan = MaskPlan::new(rules(BinaryUnmaskable::Refuse), &lineage, &cols, &resolved);
        let row = encode_data_row(&[Some(b"123-45-6789"), Some(&7i32.to_be_bytes())]);
        let err = plan.rewrite_row(&row).unwrap_err();
        assert!(
            matches!(err, MaskRefusal::BinaryUnmaskable { ref column, type_oid: 23 } if column == "x")
        );
        assert!(err.to_string().contains("text format"));
        // A NULL needs no masking.
        let row = encode_data_row(&[Some(b"123-45-6789"), None]);
        assert_eq!(
            values(&plan.rewrite_row(&row).unwrap().unwrap())[0].as_deref(),
            Some("***-**-6789")
        );
        // binary_unmaskable: null.
        let mut plan = MaskPlan::new(rules(BinaryUnmaskable::Null), &lineage, &cols, &resolved);
        let row = encode_data_row(&[Some(b"123-45-6789"), Some(&7i32.to_be_bytes())]);
        assert_eq!(values(&plan.rewrite_row(&row).unwrap().unwrap())[1], None);
    }

    #[test]
    fn json_values_stay_valid_json() {
        let cols = [col("j", 0, 0, 114, 0), col("jb", 0, 0, 3802, 1)];
        let lineage = Lineage {
            columns: vec![ColumnLineage::Unknown, ColumnLineage::Unknown],
            rest: None,
            writes_masked: false,
        };
        let mut plan = MaskPlan::new(rules(BinaryUnmaskable::Refuse), &lineage, &cols, &[]);
        let row = encode_data_row(&[Some(br#"{"ssn":"1"}"#), Some(b"\x01{\"a\":1}")]);
        let out = plan.rewrite_row(&row).unwrap().unwrap();
        let v = decode_data_row(&out).unwrap();
        assert_eq!(v[0].unwrap(), br#""[REDACTED:unknown]""#);
        assert_eq!(v[1].unwrap(), b"\x01\"[REDACTED:unknown]\"");
        // Detector hits inside binary jsonb keep the version byte.
        let cols = [col("jb", 0, 0, 3802, 1)];
        let mut plan = MaskPlan::new(
            rules(BinaryUnmaskable::Refuse),
            &Lineage::clean(),
            &cols,
            &[],
        );
        let out = plan
            .rewrite_row(&encode_data_row(&[Some(b"\x01{\"e\":\"a@b.io\"}")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            decode_data_row(&out).unwrap()[0].unwrap(),
            b"\x01{\"e\":\"[REDACTED:email]\"}"
        );
    }

    #[test]
    fn views_from_the_catalog_mask_every_column() {
        let mut r = MaskRules::clone(&rules(BinaryUnmaskable::Refuse));
        let rows: Vec<Vec<Option<&[u8]>>> = vec![
            vec![
                Some(b"public"),
                Some(b"v1"),
                Some(b"public"),
                Some(b"customers"),
                Some(b"ssn"),
            ],
            vec![
                Some(b"public"),
                Some(b"v2"),
                Some(b"public"),
                Some(b"v1"),
                Some(b"x"),
            ],
            vec![
                Some(b"public"),
                Some(b"v3"),
                Some(b"public"),
                Some(b"customers"),
                Some(b"name"),
            ],
        ];
        let views = crate::mask::plan::masked_views(&r, &rows).unwrap();
        let names: Vec<&str> = views.iter().map(|(t, _)| t.name.as_str()).collect();
        assert_eq!(names, ["v1", "v2"]);
        r.set_masked_relations(views);
        let r = Arc::new(r);
        let cols = [col("x", 99, 1, 25, 0)];
        let resolved = [Some(ResolvedColumn {
            schema: "public".into(),
            table: "v2".into(),
            column: "x".into(),
        })];
        let lineage = analyze_sql("SELECT * FROM v2", &r).statement(0);
        let mut plan = MaskPlan::new(r, &lineage, &cols, &resolved);
        assert!(
            plan.rewrite_row(&encode_data_row(&[Some(b"secret")]))
                .unwrap()
                .is_some()
        );
        let _ = TableName {
            schema: None,
            name: String::new(),
        };
    }

    #[test]
    fn malformed_rows_are_refused() {
        let cols = [col("id", 0, 0, 23, 0)];
        let mut plan = MaskPlan::new(
            rules(BinaryUnmaskable::Refuse),
            &Lineage::clean(),
            &cols,
            &[],
        );
        assert!(matches!(
            plan.rewrite_row(&[0, 2]),
            Err(MaskRefusal::ColumnCount { .. })
        ));
        assert!(plan.rewrite_row(&[0, 1, 0, 0, 0, 9, b'x']).is_err());
        assert!(plan.rewrite_row(&[0, 1, 0xff, 0xff, 0xff, 0xfe]).is_err());
        let mut ok = encode_data_row(&[Some(b"x")]);
        ok.push(0);
        assert!(plan.rewrite_row(&ok).is_err());
    }
}
