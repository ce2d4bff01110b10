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
            return Err(MaskRefusal::Malformed("trailing bytes after the last column"));
        }
        Ok(out)
    }

    /// The replacement for one non-NULL value, or `None` to keep it.
    fn rewrite_value(&mut self, i: usize, value: &[u8]) -> Result<Option<Replacement>, MaskRefusal> {
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
                    strategy::apply(*strategy, kind, *keep_last, &self.rules.hash_key, text, &mut tmp);
                    push_json_string(&tmp, &mut self.scratch);
                } else {
                    strategy::apply(*strategy, kind, *keep_last, &self.rules.hash_key, text, &mut self.scratch);
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
        Err(MaskRefusal::Malformed("trailing bytes after the last column"))
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
