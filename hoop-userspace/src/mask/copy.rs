//! COPY … TO STDOUT: mask the CopyData stream.
//!
//! COPY sends no RowDescription, so the columns come from the COPY
//! statement: its column list, the table's column order from the catalog
//! ([`TABLE_COLUMNS_QUERY`]), or the lineage of `COPY (query)`.
//!
//! CopyData messages split rows anywhere; [`CopyMasker::feed`] keeps the
//! incomplete last row in a bounded carry-over buffer. A chunk that holds
//! whole rows and needs no change is forwarded as is (`None`).
//!
//! Binary COPY cannot be masked here (field types are not known): when any
//! column is masked (or could be), [`CopyMasker::new`] refuses it, whatever
//! `binary_unmaskable` says. Detector rules do not scan binary COPY.

use std::{borrow::Cow, sync::Arc};

use sqlparser::{
    ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement},
    dialect::PostgreSqlDialect,
    parser::Parser,
};

use super::{
    MaskRules, Strategy,
    detect::DetectorMatch,
    lineage::{self, ColumnLineage, TableName, fold, table_name},
    row::replace_spans,
    strategy,
};

/// Column names of a table in attnum order. `$1` is the table name as text
/// (use [`CopyStatement::regclass_text`]), cast to `regclass` so the search
/// path resolves it as the COPY did.
pub const TABLE_COLUMNS_QUERY: &str = "SELECT a.attname FROM pg_catalog.pg_attribute a \
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// Largest row kept while waiting for its end (default).
pub const DEFAULT_MAX_ROW: usize = 64 * 1024 * 1024;

/// Errors masking COPY data. The lead answers with an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// The SQL is not a single `COPY … TO STDOUT`.
    #[error("not a COPY TO STDOUT statement")]
    NotCopyTo,
    /// Binary COPY of masked columns.
    #[error("COPY in binary format of masked columns is refused by policy; use text or csv format")]
    BinaryRefused,
    /// A row longer than the carry-over limit.
    #[error("a COPY row exceeds {0} bytes")]
    RowTooLong(usize),
}

/// Data format of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Tab-separated text with backslash escapes.
    Text,
    /// CSV.
    Csv,
    /// Binary.
    Binary,
}

/// What a `COPY … TO STDOUT` copies, and how it is encoded.
#[derive(Debug, Clone)]
pub struct CopyStatement {
    source: Source,
    /// Data format.
    pub format: CopyFormat,
    delimiter: u8,
    null: Vec<u8>,
    quote: u8,
    escape: u8,
    header: bool,
}

#[derive(Debug, Clone)]
enum Source {
    Table {
        table: TableName,
        columns: Vec<String>,
    },
    Query(lineage::Lineage),
}

impl CopyStatement {
    /// Parses a `COPY … TO STDOUT` statement. `rules` is needed to analyze
    /// `COPY (query)`.
    pub fn parse(sql: &str, rules: &MaskRules) -> Result<CopyStatement, CopyError> {
        let statements =
            Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|_| CopyError::NotCopyTo)?;
        let [
            Statement::Copy {
                source,
                to: true,
                target: CopyTarget::Stdout,
                options,
                legacy_options,
                ..
            },
        ] = statements.as_slice()
        else {
            return Err(CopyError::NotCopyTo);
        };
        let source = match source {
            CopySource::Table {
                table_name: name,
                columns,
            } => Source::Table {
                table: table_name(name),
                columns: columns.iter().map(fold).collect(),
            },
            CopySource::Query(q) => {
                Source::Query(lineage::analyze_query_sql(&q.to_string(), rules))
            }
        };
        let mut s = CopyStatement {
            source,
            format: CopyFormat::Text,
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            quote: b'"',
            escape: 0,
            header: false,
        };
        let mut delimiter = None;
        let mut null = None;
        for o in options {
            match o {
                CopyOption::Format(f) => {
                    s.format = match f.value.to_lowercase().as_str() {
                        "csv" => CopyFormat::Csv,
                        "binary" => CopyFormat::Binary,
                        _ => CopyFormat::Text,
                    }
                }
                CopyOption::Delimiter(c) => delimiter = Some(*c as u8),
                CopyOption::Null(n) => null = Some(n.as_bytes().to_vec()),
                CopyOption::Header(h) => s.header = *h,
                CopyOption::Quote(c) => s.quote = *c as u8,
                CopyOption::Escape(c) => s.escape = *c as u8,
                _ => {}
            }
        }
        for o in legacy_options {
            match o {
                CopyLegacyOption::Binary => s.format = CopyFormat::Binary,
                CopyLegacyOption::Delimiter(c) => delimiter = Some(*c as u8),
                CopyLegacyOption::Null(n) => null = Some(n.as_bytes().to_vec()),
                CopyLegacyOption::Csv(opts) => {
                    s.format = CopyFormat::Csv;
                    for c in opts {
                        match c {
                            CopyLegacyCsvOption::Header => s.header = true,
                            CopyLegacyCsvOption::Quote(q) => s.quote = *q as u8,
                            CopyLegacyCsvOption::Escape(e) => s.escape = *e as u8,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if s.format == CopyFormat::Csv {
            s.delimiter = delimiter.unwrap_or(b',');
            s.null = null.unwrap_or_default();
            if s.escape == 0 {
                s.escape = s.quote;
            }
        } else {
            s.delimiter = delimiter.unwrap_or(b'\t');
            s.null = null.unwrap_or_else(|| b"\\N".to_vec());
        }
        Ok(s)
    }

    /// The table whose column order must come from the catalog
    /// ([`TABLE_COLUMNS_QUERY`]) before masking: a `COPY table` without a
    /// column list, when a rule may cover one of its columns.
    pub fn needs_table_columns(&self, rules: &MaskRules) -> Option<&TableName> {
        match &self.source {
            Source::Table { table, columns } if columns.is_empty() => rules
                .column_rules
                .iter()
                .any(|r| {
                    r.columns
                        .iter()
                        .any(|c| c.matches_table(table.schema.as_deref(), &table.name))
                })
                .then_some(table),
            _ => None,
        }
    }

    /// `$1` for [`TABLE_COLUMNS_QUERY`]: the table name, quoted.
    pub fn regclass_text(&self) -> Option<String> {
        let Source::Table { table, .. } = &self.source else {
            return None;
        };
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        Some(match &table.schema {
            Some(schema) => format!("{}.{}", q(schema), q(&table.name)),
            None => q(&table.name),
        })
    }
}

/// A field's action.
#[derive(Debug, Clone)]
enum FieldAction {
    Keep,
    Mask {
        strategy: Strategy,
        kind: Arc<str>,
        keep_last: usize,
        counter: usize,
    },
}

/// Rewrites the CopyData stream of one `COPY … TO STDOUT`.
#[derive(Debug)]
pub struct CopyMasker {
    rules: Arc<MaskRules>,
    stmt: CopyStatement,
    fields: Vec<FieldAction>,
    rest: FieldAction,
    detect: bool,
    carry: Vec<u8>,
    max_row: usize,
    header_pending: bool,
    counter_names: Vec<Arc<str>>,
    counts: Vec<u64>,
    matches: Vec<DetectorMatch>,
    /// Nothing can change (binary of clean columns, or no rules apply).
    noop: bool,
}

impl CopyMasker {
    /// Builds the masker. `table_columns` is the table's column order for
    /// `COPY table` without a column list (from [`TABLE_COLUMNS_QUERY`]);
    /// without it every field of such a table is masked.
    pub fn new(
        rules: Arc<MaskRules>,
        stmt: CopyStatement,
        table_columns: Option<&[String]>,
    ) -> Result<CopyMasker, CopyError> {
        let mut counter_names: Vec<Arc<str>> = rules
            .column_rules
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .chain(
                rules
                    .detector_rules
                    .iter()
                    .map(|r| Arc::from(r.name.as_str())),
            )
            .collect();
        counter_names.push(Arc::from("unknown"));
        let unknown = counter_names.len() - 1;
        let mask_rule = |rule: usize, derived: bool| {
            let r = &rules.column_rules[rule];
            FieldAction::Mask {
                strategy: if derived {
                    r.strategy.for_derived_value()
                } else {
                    r.strategy
                },
                kind: counter_names[rule].clone(),
                keep_last: r.keep_last,
                counter: rule,
            }
        };
        let unknown_action = FieldAction::Mask {
            strategy: Strategy::Redact,
            kind: counter_names[unknown].clone(),
            keep_last: 0,
            counter: unknown,
        };
        let (fields, rest) = match &stmt.source {
            Source::Table { table, columns } => {
                let names: Option<Vec<String>> = if columns.is_empty() {
                    table_columns.map(<[String]>::to_vec)
                } else {
                    Some(columns.clone())
                };
                match names {
                    Some(names) => (
                        names
                            .iter()
                            .map(|c| {
                                match rules.column_rule_for(table.schema.as_deref(), &table.name, c)
                                {
                                    Some(rule) => mask_rule(rule, false),
                                    None => FieldAction::Keep,
                                }
                            })
                            .collect(),
                        unknown_action.clone(),
                    ),
                    None if stmt.needs_table_columns(&rules).is_some() => {
                        (Vec::new(), unknown_action.clone())
                    }
                    None => (Vec::new(), FieldAction::Keep),
                }
            }
            Source::Query(l) => {
                let action = |lin: &ColumnLineage| match lin {
                    ColumnLineage::Clean
                    | ColumnLineage::FromTable {
                        masked_if_unresolved: false,
                        ..
                    } => FieldAction::Keep,
                    ColumnLineage::Masked { rule, direct } => mask_rule(*rule, !direct),
                    _ => unknown_action.clone(),
                };
                (
                    l.columns.iter().map(action).collect(),
                    l.rest.as_ref().map_or(unknown_action.clone(), action),
                )
            }
        };
        let any_masked = fields
            .iter()
            .chain(std::iter::once(&rest))
            .any(|f| matches!(f, FieldAction::Mask { .. }));
        if stmt.format == CopyFormat::Binary && any_masked {
            return Err(CopyError::BinaryRefused);
        }
        let detect = !rules.detectors.is_empty() && stmt.format != CopyFormat::Binary;
        let noop = stmt.format == CopyFormat::Binary || (!any_masked && !detect);
        let counts = vec![0; counter_names.len()];
        Ok(CopyMasker {
            header_pending: stmt.header,
            rules,
            stmt,
            fields,
            rest,
            detect,
            carry: Vec::new(),
            max_row: DEFAULT_MAX_ROW,
            counter_names,
            counts,
            matches: Vec::new(),
            noop,
        })
    }

    /// Changes the carry-over limit.
    #[must_use]
    pub fn with_max_row(mut self, max_row: usize) -> Self {
        self.max_row = max_row;
        self
    }

    /// Masks one CopyData payload. `Ok(None)`: forward it unchanged.
    /// `Ok(Some(bytes))`: send these bytes instead (possibly empty while a
    /// row is incomplete: then send nothing).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, CopyError> {
        if self.noop {
            return Ok(None);
        }
        let data: Cow<'_, [u8]> = if self.carry.is_empty() {
            Cow::Borrowed(chunk)
        } else {
            let mut d = std::mem::take(&mut self.carry);
            d.extend_from_slice(chunk);
            Cow::Owned(d)
        };
        let complete = self.complete_rows_end(&data);
        if data.len() - complete > self.max_row {
            return Err(CopyError::RowTooLong(self.max_row));
        }
        let out = self.rewrite_rows(&data[..complete]);
        self.carry.extend_from_slice(&data[complete..]);
        match (out, &data) {
            (None, Cow::Borrowed(_)) if complete == data.len() => Ok(None),
            (None, _) => Ok(Some(data[..complete].to_vec())),
            (Some(o), _) => Ok(Some(o)),
        }
    }

    /// At CopyDone: the masked remainder (a last row without a newline), if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.carry.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.carry);
        Some(self.rewrite_rows(&data).unwrap_or(data))
    }

    /// Values masked per rule since the last call (see [`super::MaskPlan::take_counts`]).
    pub fn take_counts(&mut self) -> super::MaskCounts {
        let mut out = Vec::new();
        for (name, count) in self.counter_names.iter().zip(self.counts.iter_mut()) {
            if *count > 0 {
                out.push((name.clone(), *count));
                *count = 0;
            }
        }
        out
    }

    /// Offset just after the last complete row in `data`.
    fn complete_rows_end(&self, data: &[u8]) -> usize {
        if self.stmt.format != CopyFormat::Csv {
            return memchr::memrchr(b'\n', data).map_or(0, |i| i + 1);
        }
        // CSV: newlines inside quoted fields do not end a row.
        let (quote, escape) = (self.stmt.quote, self.stmt.escape);
        let mut in_quotes = false;
        let mut end = 0;
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            if in_quotes {
                if b == escape
                    && escape != quote
                    && data.get(i + 1).is_some_and(|&n| n == quote || n == escape)
                {
                    i += 1;
                } else if b == quote {
                    in_quotes = false;
                }
            } else if b == quote {
                in_quotes = true;
            } else if b == b'\n' {
                end = i + 1;
            }
            i += 1;
        }
        end
    }

    /// Rewrites whole rows; `None` when nothing changed.
    fn rewrite_rows(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0;
        while at < data.len() {
            let row_end = self.row_end(data, at);
            let row = &data[at..row_end];
            let changed = if self.header_pending {
                self.header_pending = false;
                None
            } else {
                self.rewrite_row(row)
            };
            match (changed, &mut out) {
                (None, None) => {}
                (None, Some(o)) => o.extend_from_slice(row),
                (Some(new), o) => {
                    let o = o.get_or_insert_with(|| data[..at].to_vec());
                    o.extend_from_slice(&new);
                }
            }
            at = row_end;
        }
        out
    }

    fn row_end(&self, data: &[u8], from: usize) -> usize {
        let rel = self.complete_rows_end_first(&data[from..]);
        from + rel
    }

    /// End of the first row in `data` (after its newline), or `data.len()`.
    fn complete_rows_end_first(&self, data: &[u8]) -> usize {
        if self.stmt.format != CopyFormat::Csv {
            return memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1);
        }
        let (quote, escape) = (self.stmt.quote, self.stmt.escape);
        let mut in_quotes = false;
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            if in_quotes {
                if b == escape
                    && escape != quote
                    && data.get(i + 1).is_some_and(|&n| n == quote || n == escape)
                {
                    i += 1;
                } else if b == quote {
                    in_quotes = false;
                }
            } else if b == quote {
                in_quotes = true;
            } else if b == b'\n' {
                return i + 1;
            }
            i += 1;
        }
        data.len()
    }

    fn action(&self, i: usize) -> &FieldAction {
        self.fields.get(i).unwrap_or(&self.rest)
    }

    /// Rewrites one row (with its line ending); `None` when unchanged.
    fn rewrite_row(&mut self, row: &[u8]) -> Option<Vec<u8>> {
        let (body, ending) = split_ending(row);
        let fields = match self.stmt.format {
            CopyFormat::Csv => {
                split_csv(body, self.stmt.delimiter, self.stmt.quote, self.stmt.escape)
            }
            _ => body
                .split(|&b| b == self.stmt.delimiter)
                .map(|f| (f, false))
                .collect(),
        };
        // Find the first field that changes; only then rebuild the row.
        let (first, new) = fields.iter().enumerate().find_map(|(i, &(raw, quoted))| {
            self.rewrite_field(i, raw, quoted).map(|new| (i, new))
        })?;
        let mut out = self.rebuild(&fields, first, &new);
        out.extend_from_slice(ending);
        Some(out)
    }

    /// Rebuilds a row where field `first` changed to `new`, rewriting the rest.
    fn rebuild(&mut self, fields: &[(&[u8], bool)], first: usize, new: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &(raw, quoted)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(self.stmt.delimiter);
            }
            let encoded = match i.cmp(&first) {
                std::cmp::Ordering::Less => None,
                std::cmp::Ordering::Equal => Some(new.to_vec()),
                std::cmp::Ordering::Greater => self.rewrite_field(i, raw, quoted),
            };
            match encoded {
                Some(e) => out.extend_from_slice(&e),
                None => out.extend_from_slice(&self.raw_field(raw, quoted)),
            }
        }
        out
    }

    /// A field as it was on the wire.
    fn raw_field<'a>(&self, raw: &'a [u8], quoted: bool) -> Cow<'a, [u8]> {
        if quoted {
            Cow::Owned(encode_csv(
                &decode_csv(raw, self.stmt.quote, self.stmt.escape),
                &self.stmt,
                true,
            ))
        } else {
            Cow::Borrowed(raw)
        }
    }

    /// The encoded replacement of one field, or `None` to keep it.
    fn rewrite_field(&mut self, i: usize, raw: &[u8], quoted: bool) -> Option<Vec<u8>> {
        let is_null = !quoted && raw == self.stmt.null.as_slice();
        if is_null {
            return None;
        }
        let action = self.action(i).clone();
        if matches!(action, FieldAction::Keep) && !self.detect {
            return None;
        }
        let value: Cow<'_, [u8]> = match self.stmt.format {
            CopyFormat::Csv if quoted => {
                Cow::Owned(decode_csv(raw, self.stmt.quote, self.stmt.escape))
            }
            CopyFormat::Csv => Cow::Borrowed(raw),
            _ => decode_text(raw),
        };
        let mut masked = Vec::new();
        match action {
            FieldAction::Mask {
                strategy,
                kind,
                keep_last,
                counter,
            } => {
                self.counts[counter] += 1;
                if !strategy::apply(
                    strategy,
                    &kind,
                    keep_last,
                    &self.rules.hash_key,
                    &value,
                    &mut masked,
                ) {
                    return Some(self.stmt.null.clone());
                }
            }
            FieldAction::Keep => {
                self.rules.detectors.find(&value, &mut self.matches);
                if self.matches.is_empty() {
                    return None;
                }
                let mut null = false;
                for m in &self.matches {
                    let rule = self.rules.detectors.rule(m.detector);
                    self.counts[self.rules.column_rules.len() + rule] += 1;
                    null |= self.rules.detector_rules[rule].strategy == Strategy::Null;
                }
                if null {
                    return Some(self.stmt.null.clone());
                }
                replace_spans(&self.rules, &value, &self.matches, &mut masked);
            }
        }
        Some(match self.stmt.format {
            CopyFormat::Csv => encode_csv(&masked, &self.stmt, false),
            _ => encode_text(&masked, self.stmt.delimiter),
        })
    }
}

fn split_ending(row: &[u8]) -> (&[u8], &[u8]) {
    if row.ends_with(b"\r\n") {
        row.split_at(row.len() - 2)
    } else if row.ends_with(b"\n") {
        row.split_at(row.len() - 1)
    } else {
        (row, &[])
    }
}

/// Splits a CSV row into raw fields (quoted fields with their quotes) and
/// whether each was quoted.
fn split_csv(row: &[u8], delimiter: u8, quote: u8, escape: u8) -> Vec<(&[u8], bool)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut quoted = false;
    let mut i = 0;
    while i < row.len() {
        let b = row[i];
        if in_quotes {
            if b == escape
                && escape != quote
                && row.get(i + 1).is_some_and(|&n| n == quote || n == escape)
            {
                i += 1;
            } else if b == quote {
                in_quotes = false;
            }
        } else if b == quote {
            in_quotes = true;
            quoted = true;
        } else if b == delimiter {
            out.push((&row[start..i], quoted));
            start = i + 1;
            quoted = false;
        }
        i += 1;
    }
    out.push((&row[start..], quoted));
    out
}

fn decode_csv(raw: &[u8], quote: u8, escape: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_quotes = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if in_quotes {
            if b == escape
                && raw.get(i + 1).is_some_and(|&n| n == quote || n == escape)
                && (escape != quote || raw.get(i + 1) == Some(&quote))
            {
                out.push(raw[i + 1]);
                i += 2;
                continue;
            }
            if b == quote {
                in_quotes = false;
            } else {
                out.push(b);
            }
        } else if b == quote {
            in_quotes = true;
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

fn encode_csv(value: &[u8], stmt: &CopyStatement, force: bool) -> Vec<u8> {
    let needs = force
        || value.is_empty()
        || value == stmt.null.as_slice()
        || value.iter().any(|&b| {
            b == stmt.delimiter || b == stmt.quote || b == stmt.escape || b == b'\n' || b == b'\r'
        });
    if !needs {
        return value.to_vec();
    }
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(stmt.quote);
    for &b in value {
        if b == stmt.quote || b == stmt.escape {
            out.push(stmt.escape);
        }
        out.push(b);
    }
    out.push(stmt.quote);
    out
}

/// Decodes COPY text-format backslash escapes.
fn decode_text(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 >= raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16 + char::from(raw[i]).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

fn encode_text(value: &[u8], delimiter: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            11 => out.extend_from_slice(b"\\v"),
            d if d == delimiter => {
                out.push(b'\\');
                out.push(d);
            }
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mask::{
        BinaryUnmaskable, BuiltinDetector, ColumnRef, ColumnRule, DetectorKind, DetectorRule,
    };

    fn rules() -> Arc<MaskRules> {
        Arc::new(
            MaskRules::new(
                vec![ColumnRule {
                    name: "ssn".into(),
                    columns: vec![ColumnRef::parse("customers.ssn").unwrap()],
                    strategy: Strategy::Partial,
                    keep_last: 4,
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
            .unwrap(),
        )
    }

    fn masker(sql: &str, cols: Option<&[String]>) -> CopyMasker {
        let r = rules();
        let stmt = CopyStatement::parse(sql, &r).unwrap();
        CopyMasker::new(r, stmt, cols).unwrap()
    }

    /// Feeds `data` in chunks of `size` and concatenates what would be sent.
    fn run(m: &mut CopyMasker, data: &[u8], size: usize) -> String {
        let mut sent = Vec::new();
        for chunk in data.chunks(size) {
            match m.feed(chunk).unwrap() {
                None => sent.extend_from_slice(chunk),
                Some(b) => sent.extend_from_slice(&b),
            }
        }
        if let Some(b) = m.finish() {
            sent.extend_from_slice(&b);
        }
        String::from_utf8(sent).unwrap()
    }

    #[test]
    fn text_format_with_table_columns_from_the_catalog() {
        let r = rules();
        let stmt = CopyStatement::parse("COPY customers TO STDOUT", &r).unwrap();
        assert_eq!(
            stmt.needs_table_columns(&r).map(|t| t.name.as_str()),
            Some("customers")
        );
        assert_eq!(stmt.regclass_text().unwrap(), "\"customers\"");
        let cols: Vec<String> = ["id", "ssn", "note"].map(String::from).to_vec();
        let data = b"1\t123-45-6789\tcall a@b.io\\tnow\n2\t\\N\tplain\n3\t987-65-4321\tx\\\\y\n";
        let expected =
            "1\t***-**-6789\tcall [REDACTED:email]\\tnow\n2\t\\N\tplain\n3\t***-**-4321\tx\\\\y\n";
        for size in [1, 3, 7, 16, 1000] {
            let mut m = masker("COPY customers TO STDOUT", Some(&cols));
            assert_eq!(run(&mut m, data, size), expected, "chunk size {size}");
        }
    }

    #[test]
    fn unchanged_whole_rows_are_forwarded_as_is() {
        let cols: Vec<String> = ["id", "name"].map(String::from).to_vec();
        let mut m = masker("COPY customers (id, name) TO STDOUT", Some(&cols));
        assert_eq!(m.feed(b"1\tBob\n").unwrap(), None);
        // A partial row is held back.
        assert_eq!(m.feed(b"2\tAl").unwrap(), Some(Vec::new()));
        assert_eq!(m.feed(b"ice\n").unwrap(), Some(b"2\tAlice\n".to_vec()));
    }

    #[test]
    fn csv_with_header_quotes_and_newlines_in_fields() {
        let sql = "COPY customers (ssn, note) TO STDOUT WITH (FORMAT csv, HEADER)";
        let data = b"ssn,note\n123-45-6789,\"multi\nline, a@b.io \"\"q\"\"\"\n,\"\"\n";
        let expected = "ssn,note\n***-**-6789,\"multi\nline, [REDACTED:email] \"\"q\"\"\"\n,\"\"\n";
        for size in [1, 2, 5, 64] {
            let mut m = masker(sql, None);
            assert_eq!(run(&mut m, data, size), expected, "chunk size {size}");
        }
        let mut m = masker(sql, None);
        let _ = run(&mut m, data, 4);
        let mut counts = m.take_counts();
        counts.sort();
        assert_eq!(counts, [(Arc::from("pii"), 1), (Arc::from("ssn"), 1)]);
    }

    #[test]
    fn csv_custom_delimiter_and_query_source() {
        let sql = "COPY (SELECT name, upper(ssn) FROM customers) TO STDOUT WITH (FORMAT csv, DELIMITER ';')";
        let mut m = masker(sql, None);
        assert_eq!(run(&mut m, b"Bob;123-45-6789\n", 3), "Bob;[REDACTED:ssn]\n");
    }

    #[test]
    fn table_without_catalog_columns_masks_every_field() {
        let mut m = masker("COPY customers TO STDOUT", None);
        assert_eq!(
            run(&mut m, b"1\tx\n", 100),
            "[REDACTED:unknown]\t[REDACTED:unknown]\n"
        );
    }

    #[test]
    fn binary_copy_of_masked_columns_is_refused() {
        let r = rules();
        let stmt = CopyStatement::parse("COPY customers (ssn) TO STDOUT WITH (FORMAT binary)", &r)
            .unwrap();
        assert_eq!(
            CopyMasker::new(r.clone(), stmt, None).unwrap_err(),
            CopyError::BinaryRefused
        );
        let stmt = CopyStatement::parse("COPY orders TO STDOUT WITH (FORMAT binary)", &r).unwrap();
        let mut m = CopyMasker::new(r, stmt, None).unwrap();
        assert_eq!(m.feed(b"PGCOPY\n\xff\r\n\0").unwrap(), None);
    }

    #[test]
    fn rows_longer_than_the_limit_fail() {
        let cols: Vec<String> = ["id"].map(String::from).to_vec();
        let mut m = masker("COPY customers (id) TO STDOUT", Some(&cols)).with_max_row(8);
        assert_eq!(m.feed(b"0123456789").unwrap_err(), CopyError::RowTooLong(8));
    }
}
