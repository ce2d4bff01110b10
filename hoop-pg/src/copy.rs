//! `COPY … TO STDOUT` through governance: the COPY's rows are a result like
//! any other, so they are masked by the same row rewriter as DataRows.
//!
//! COPY sends no RowDescription, so the driver builds the columns from the
//! COPY statement: its column list, or for `COPY table` the table's column
//! order from the catalog; `COPY (query)` gets its query's lineage from
//! governance. Rows come out of the CopyData stream ([`CopyRowReader`]),
//! their fields go to the rewriter as values, and a rewritten row is encoded
//! back in the COPY's own format (text, CSV or binary).
//!
//! Binary COPY carries no type information, so hoop learns the types
//! itself: a table's column types from the catalog, a query's result types
//! by having the server describe (prepare, never run) the query on hoop's
//! side connection. Text-like fields (`text`, `varchar`, `char`, `name`,
//! `xml`, `json`, `jsonb`) are raw bytes in binary COPY and are masked and
//! scanned by detectors like text; a masked field of any other type (or of
//! a type hoop could not learn) is refused or nulled as
//! `policy.binary_unmaskable` says. Nothing is ever silently withheld: a row
//! that cannot be made safe ends the session with an error.

use std::borrow::Cow;

use hoop_core::{
    ColumnSource, Refusal, ResolvedColumn, ResultColumn, RowEncoder, RowRewrite, RowRewriter,
    RowValues, ValueContent, ValueEncoding,
};
use hoop_proto_pg::copy_data::{
    CopyDataError, CopyDataFormat, CopyItem, CopyOptions, CopyRowReader,
};
use hoop_sql::{SqlDialect, pg::Postgres};

use crate::{
    catalog::TypedColumn,
    columns::{value_content, value_encoding},
};
use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, ObjectNamePart,
    Statement,
};

/// Largest COPY row kept while waiting for its end.
pub const MAX_COPY_ROW: usize = 64 * 1024 * 1024;

/// What a `COPY … TO STDOUT` copies, and how its rows are written.
#[derive(Debug, Clone)]
pub struct CopyStatement {
    /// Format and delimiters.
    pub options: CopyOptions,
    /// For `COPY table [(columns)]`: the table and the listed columns.
    pub table: Option<CopyTable>,
    /// For `COPY (query)`: the query, as written.
    pub query: Option<String>,
}

/// The table of a `COPY table [(columns)] TO STDOUT`, folded.
#[derive(Debug, Clone)]
pub struct CopyTable {
    /// Schema, when named.
    pub schema: Option<String>,
    /// Table.
    pub name: String,
    /// The column list (empty: every column, in order).
    pub columns: Vec<String>,
}

impl CopyStatement {
    /// The COPY among the statements of `sql` at `index`, when it is a
    /// `COPY … TO STDOUT`.
    pub fn find(sql: &str, index: usize) -> Option<Self> {
        let pieces = Postgres.split(sql).ok()?;
        let piece = pieces.get(index).or_else(|| pieces.last())?;
        Self::parse(piece.text)
    }

    /// Parses one statement, when it is a `COPY … TO STDOUT`.
    pub fn parse(statement: &str) -> Option<Self> {
        let Statement::Copy {
            source,
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } = Postgres.parse_statement(statement).ok()?
        else {
            return None;
        };
        let table = match source {
            CopySource::Table {
                table_name,
                columns,
            } => {
                let mut parts: Vec<String> = table_name
                    .0
                    .iter()
                    .filter_map(ObjectNamePart::as_ident)
                    .map(|i| Postgres.fold(i))
                    .collect();
                let name = parts.pop()?;
                Some(CopyTable {
                    schema: parts.pop(),
                    name,
                    columns: columns.iter().map(|c| Postgres.fold(c)).collect(),
                })
            }
            CopySource::Query(_) => None,
        };
        let query = if table.is_none() {
            Postgres::copy_query(statement).map(str::to_owned)
        } else {
            None
        };
        Some(Self {
            options: copy_options(&options, &legacy_options),
            table,
            query,
        })
    }

    fn binary(&self) -> bool {
        self.options.format == CopyDataFormat::Binary
    }

    /// The table as `regclass` text, when its columns must come from the
    /// catalog: their order for `COPY table` without a column list, their
    /// types for any binary `COPY table`.
    pub fn regclass_needed(&self) -> Option<String> {
        let table = self
            .table
            .as_ref()
            .filter(|t| t.columns.is_empty() || self.binary())?;
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        Some(match &table.schema {
            Some(schema) => format!("{}.{}", q(schema), q(&table.name)),
            None => q(&table.name),
        })
    }

    /// The query whose result types a binary `COPY (query)` needs.
    pub fn describe_needed(&self) -> Option<&str> {
        self.query.as_deref().filter(|_| self.binary())
    }

    /// The columns of this COPY's rows: `count` of them (from
    /// CopyOutResponse), named from the column list or `table_columns` (the
    /// catalog's columns of the table, in order), typed for binary COPY from
    /// `table_columns` or `described` (the server's description of the
    /// query). A binary field whose type is unknown is opaque.
    pub fn columns(
        &self,
        count: usize,
        table_columns: Option<&[TypedColumn]>,
        described: Option<&[TypedColumn]>,
    ) -> Vec<ResultColumn> {
        let names: Option<Vec<&str>> = match &self.table {
            Some(t) if !t.columns.is_empty() => {
                Some(t.columns.iter().map(String::as_str).collect())
            }
            Some(_) => table_columns.map(|c| c.iter().map(|c| c.name.as_str()).collect()),
            None => None,
        };
        // A description that does not fit the COPY's width says nothing.
        let described = described.filter(|d| d.len() == count);
        (0..count)
            .map(|i| {
                let name = names.as_ref().and_then(|n| n.get(i).copied());
                let typed = match (&self.table, name) {
                    (Some(_), Some(name)) => {
                        table_columns.and_then(|c| c.iter().find(|c| c.name == name))
                    }
                    (None, _) => described.and_then(|d| d.get(i)),
                    (Some(_), None) => None,
                };
                let (encoding, type_name) = if self.binary() {
                    match typed {
                        Some(t) => (
                            value_encoding(t.type_oid, 1),
                            Cow::Owned(t.type_name.clone()),
                        ),
                        None => (
                            ValueEncoding::Opaque,
                            Cow::Borrowed("binary COPY field of unknown type"),
                        ),
                    }
                } else {
                    (ValueEncoding::Text, Cow::Borrowed("text"))
                };
                // COPY's text format prints each value as the type's text
                // output (escaped: an integer or a date is never escaped).
                let content = match typed {
                    Some(t) if !self.binary() => value_content(t.type_oid, 0),
                    _ => ValueContent::Any,
                };
                ResultColumn {
                    name: name
                        .map(str::to_owned)
                        .or_else(|| described.and_then(|d| d.get(i)).map(|c| c.name.clone()))
                        .unwrap_or_else(|| format!("column {}", i + 1)),
                    source: match (&self.table, name) {
                        (Some(t), Some(column)) => ColumnSource::Named(ResolvedColumn {
                            schema: t.schema.clone(),
                            table: t.name.clone(),
                            column: column.to_owned(),
                        }),
                        _ => ColumnSource::None,
                    },
                    encoding,
                    type_name,
                    content,
                }
            })
            .collect()
    }
}

impl CopyStatement {
    /// The columns of a COPY whose statement hoop could not read.
    pub fn unknown_columns(count: usize) -> Vec<ResultColumn> {
        (0..count)
            .map(|i| ResultColumn {
                name: format!("column {}", i + 1),
                source: ColumnSource::None,
                encoding: ValueEncoding::Opaque,
                type_name: Cow::Borrowed("unknown COPY field"),
                content: ValueContent::Any,
            })
            .collect()
    }
}

fn copy_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> CopyOptions {
    let mut format = CopyDataFormat::Text;
    let (mut delimiter, mut null, mut quote, mut escape, mut header) =
        (None, None, None, None, false);
    for o in options {
        match o {
            CopyOption::Format(f) => {
                format = match f.value.to_lowercase().as_str() {
                    "csv" => CopyDataFormat::Csv,
                    "binary" => CopyDataFormat::Binary,
                    _ => CopyDataFormat::Text,
                }
            }
            CopyOption::Delimiter(c) => delimiter = Some(*c as u8),
            CopyOption::Null(n) => null = Some(n.as_bytes().to_vec()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(c) => quote = Some(*c as u8),
            CopyOption::Escape(c) => escape = Some(*c as u8),
            _ => {}
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => format = CopyDataFormat::Binary,
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c as u8),
            CopyLegacyOption::Null(n) => null = Some(n.as_bytes().to_vec()),
            CopyLegacyOption::Csv(opts) => {
                format = CopyDataFormat::Csv;
                for c in opts {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(q) => quote = Some(*q as u8),
                        CopyLegacyCsvOption::Escape(e) => escape = Some(*e as u8),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut o = CopyOptions::defaults(format);
    if let Some(d) = delimiter {
        o.delimiter = d;
    }
    if let Some(n) = null {
        o.null = n;
    }
    if let Some(q) = quote {
        o.quote = q;
        o.escape = q;
    }
    if let Some(e) = escape {
        o.escape = e;
    }
    o.header = header;
    o
}

/// Why a COPY's data could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum CopyMaskError {
    /// The data could not be split into rows.
    #[error(transparent)]
    Data(#[from] CopyDataError),
    /// A row could not be made safe.
    #[error("{}", .0.message)]
    Refused(Refusal),
}

/// Masks the CopyData stream of one `COPY … TO STDOUT`.
pub struct CopyOutMasker {
    reader: CopyRowReader,
    rewriter: Box<dyn RowRewriter>,
    /// The row being encoded.
    scratch: Vec<u8>,
}

/// A COPY row's fields as values.
struct Fields<'a>(&'a [Option<Cow<'a, [u8]>>]);

impl RowValues for Fields<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        self.0.get(i).and_then(Option::as_deref)
    }
}

/// Encodes pushed values straight into the output, in the COPY's format.
struct FieldEncoder<'a> {
    reader: &'a CopyRowReader,
    out: &'a mut Vec<u8>,
    pushed: usize,
}

impl RowEncoder for FieldEncoder<'_> {
    fn push(&mut self, value: Option<&[u8]>) {
        self.reader.push_field(self.pushed, value, self.out);
        self.pushed += 1;
    }
}

impl CopyOutMasker {
    /// Masks a COPY written with `options` through `rewriter`.
    pub fn new(options: CopyOptions, rewriter: Box<dyn RowRewriter>) -> Self {
        Self {
            reader: CopyRowReader::new(options, MAX_COPY_ROW),
            rewriter,
            scratch: Vec::new(),
        }
    }

    /// Masks one CopyData payload. `Ok(None)`: forward it unchanged.
    /// `Ok(Some(bytes))`: send these bytes instead (empty while a row is
    /// incomplete: then send nothing).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, CopyMaskError> {
        let data = self.reader.join(chunk);
        let carried = matches!(data, Cow::Owned(_));
        let items = self.reader.split(&data)?;
        let complete: usize = items
            .iter()
            .map(|i| match i {
                CopyItem::Row(r) | CopyItem::Other(r) => r.len(),
            })
            .sum();
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0;
        for item in items {
            let bytes = match item {
                CopyItem::Row(r) | CopyItem::Other(r) => r,
            };
            let changed = match item {
                CopyItem::Row(row) => self.rewrite(row, &data[..at], &mut out)?,
                CopyItem::Other(_) => false,
            };
            if !changed && let Some(o) = &mut out {
                o.extend_from_slice(bytes);
            }
            at += bytes.len();
        }
        Ok(match out {
            None if !carried && complete == data.len() => None,
            None => Some(data[..complete].to_vec()),
            Some(o) => Some(o),
        })
    }

    /// Rewrites one row; when it changes, `out` holds everything up to and
    /// including the new row (`before` is what preceded it, unchanged).
    fn rewrite(
        &mut self,
        row: &[u8],
        before: &[u8],
        out: &mut Option<Vec<u8>>,
    ) -> Result<bool, CopyMaskError> {
        let fields = self.reader.fields(row)?;
        self.scratch.clear();
        self.reader.begin_row(fields.len(), &mut self.scratch);
        let mut encoder = FieldEncoder {
            reader: &self.reader,
            out: &mut self.scratch,
            pushed: 0,
        };
        match self.rewriter.rewrite_row(&Fields(&fields), &mut encoder) {
            RowRewrite::Rewritten => {
                self.reader.end_row(row, &mut self.scratch);
                out.get_or_insert_with(|| before.to_vec())
                    .extend_from_slice(&self.scratch);
                Ok(true)
            }
            RowRewrite::Unchanged => Ok(false),
            RowRewrite::Refuse(refusal) => Err(CopyMaskError::Refused(refusal)),
        }
    }

    /// At CopyDone: the masked rest of the stream (a last row without a line
    /// ending), if any.
    pub fn finish(&mut self) -> Result<Option<Vec<u8>>, CopyMaskError> {
        if !self.reader.has_carry() {
            return Ok(None);
        }
        let rest = self.reader.take_carry();
        let mut out = None;
        let changed = self.rewrite(&rest, &[], &mut out)?;
        Ok(Some(if changed {
            out.unwrap_or_default()
        } else {
            rest
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Masks column `index` as `***`; refuses rows whose column `index`
    /// is `refuse`.
    struct MaskColumn(usize);

    impl RowRewriter for MaskColumn {
        fn rewrite_row(&mut self, row: &dyn RowValues, out: &mut dyn RowEncoder) -> RowRewrite {
            match row.get(self.0) {
                None => RowRewrite::Unchanged,
                Some(b"refuse") => RowRewrite::Refuse(Refusal::cannot_mask("test refusal")),
                Some(_) => {
                    for i in 0..row.len() {
                        out.push(if i == self.0 {
                            Some(b"***")
                        } else {
                            row.get(i)
                        });
                    }
                    RowRewrite::Rewritten
                }
            }
        }
    }

    fn typed(name: &str, type_oid: u32, type_name: &str) -> TypedColumn {
        TypedColumn {
            name: name.into(),
            type_oid,
            type_name: type_name.into(),
        }
    }

    fn masker(sql: &str, column: usize) -> CopyOutMasker {
        let s = CopyStatement::parse(sql).unwrap();
        CopyOutMasker::new(s.options, Box::new(MaskColumn(column)))
    }

    #[test]
    fn statements_name_their_table_columns_and_format() {
        let s = CopyStatement::parse(
            "COPY public.Customers (id, SSN) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';')",
        )
        .unwrap();
        assert_eq!(s.options.format, CopyDataFormat::Csv);
        assert!(s.options.header);
        assert_eq!(s.options.delimiter, b';');
        let t = s.table.as_ref().unwrap();
        assert_eq!(
            (t.schema.as_deref(), t.name.as_str(), t.columns.as_slice()),
            (
                Some("public"),
                "customers",
                &["id".to_owned(), "ssn".to_owned()][..]
            )
        );
        assert_eq!(s.regclass_needed(), None);
        let cols = s.columns(2, None, None);
        assert_eq!(
            cols[1].source,
            ColumnSource::Named(ResolvedColumn {
                schema: Some("public".into()),
                table: "customers".into(),
                column: "ssn".into(),
            })
        );
        // A whole table: its column order comes from the catalog.
        let s = CopyStatement::parse("COPY customers TO STDOUT").unwrap();
        assert_eq!(s.regclass_needed().as_deref(), Some("\"customers\""));
        assert_eq!(s.columns(2, None, None)[0].source, ColumnSource::None);
        let names = [typed("id", 23, "integer"), typed("ssn", 25, "text")];
        assert!(matches!(
            s.columns(2, Some(&names), None)[1].source,
            ColumnSource::Named(_)
        ));
        // A query: governance gets its lineage; the columns name nothing.
        let s = CopyStatement::find(
            "SELECT 1; COPY (SELECT ssn FROM t) TO STDOUT (FORMAT binary)",
            1,
        )
        .unwrap();
        assert!(s.table.is_none());
        assert_eq!(s.describe_needed(), Some("SELECT ssn FROM t"));
        // Binary without a description: opaque; with one, by type.
        assert_eq!(s.columns(1, None, None)[0].encoding, ValueEncoding::Opaque);
        let described = [typed("ssn", 25, "text")];
        assert_eq!(
            s.columns(1, None, Some(&described))[0].encoding,
            ValueEncoding::Text
        );
        let wide = [typed("a", 25, "text"), typed("b", 25, "text")];
        assert_eq!(
            s.columns(1, None, Some(&wide))[0].encoding,
            ValueEncoding::Opaque,
            "a description of another width says nothing"
        );
        // A binary COPY of a table needs the catalog's types even with a
        // column list; its int column stays opaque.
        let s = CopyStatement::parse("COPY t (id, ssn) TO STDOUT (FORMAT binary)").unwrap();
        assert_eq!(s.regclass_needed().as_deref(), Some("\"t\""));
        let cols = s.columns(2, Some(&names), None);
        assert_eq!(
            (cols[0].encoding, cols[1].encoding),
            (ValueEncoding::Opaque, ValueEncoding::Text)
        );
        // Not a COPY to the client.
        assert!(CopyStatement::parse("COPY t FROM STDIN").is_none());
        assert!(CopyStatement::parse("COPY t TO '/tmp/x'").is_none());
    }

    #[test]
    fn text_rows_are_masked_across_chunks_and_clean_chunks_pass_as_they_are() {
        let mut m = masker("COPY t TO STDOUT", 1);
        assert_eq!(
            m.feed(b"1\t\\N\n").unwrap(),
            None,
            "a NULL needs no masking"
        );
        assert_eq!(
            m.feed(b"2\tsec").unwrap(),
            Some(Vec::new()),
            "half a row waits"
        );
        assert_eq!(
            m.feed(b"ret\n3\t\\N\n").unwrap(),
            Some(b"2\t***\n3\t\\N\n".to_vec())
        );
        assert_eq!(m.finish().unwrap(), None);
    }

    #[test]
    fn csv_keeps_its_header_and_quoting() {
        let mut m = masker("COPY t TO STDOUT WITH (FORMAT csv, HEADER)", 1);
        let out = m.feed(b"id,note\n1,\"a,b\"\n").unwrap().unwrap();
        assert_eq!(out, b"id,note\n1,***\n");
        let mut m = masker("COPY t TO STDOUT WITH (FORMAT csv)", 0);
        // The masked value needs no quotes; the untouched one keeps its value.
        assert_eq!(
            m.feed(b"x,\"q,\"\"r\"\n").unwrap().unwrap(),
            b"***,\"q,\"\"r\"\n"
        );
    }

    #[test]
    fn a_last_row_without_a_line_ending_is_masked_at_copy_done() {
        let mut m = masker("COPY t TO STDOUT", 1);
        assert_eq!(m.feed(b"1\tsecret").unwrap(), Some(Vec::new()));
        assert_eq!(m.finish().unwrap(), Some(b"1\t***".to_vec()));
    }

    #[test]
    fn a_refused_row_is_an_error_never_an_empty_stream() {
        let mut m = masker("COPY t TO STDOUT", 1);
        assert!(matches!(
            m.feed(b"1\trefuse\n"),
            Err(CopyMaskError::Refused(r)) if r.message.contains("test refusal")
        ));
        let mut m = masker("COPY t TO STDOUT (FORMAT binary)", 0);
        assert!(matches!(
            m.feed(b"NOT A COPY HEADER...."),
            Err(CopyMaskError::Data(_))
        ));
    }

    #[test]
    fn binary_rows_are_masked_in_binary() {
        let mut m = masker("COPY t TO STDOUT (FORMAT binary)", 0);
        let mut header = b"PGCOPY\n\xff\r\n\0".to_vec();
        header.extend_from_slice(&[0; 8]);
        assert_eq!(m.feed(&header).unwrap(), None);
        let tuple = [0, 1, 0, 0, 0, 2, b'h', b'i'];
        assert_eq!(
            m.feed(&tuple).unwrap(),
            Some(vec![0, 1, 0, 0, 0, 3, b'*', b'*', b'*'])
        );
        assert_eq!(m.feed(&[0xff, 0xff]).unwrap(), None);
    }
}
