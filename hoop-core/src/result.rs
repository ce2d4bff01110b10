//! Result sets as governance sees them: columns with their source and
//! encoding, and rows as values.
//!
//! A driver describes each result set once ([`ResultColumn`]s, from
//! PostgreSQL's RowDescription, MySQL's column definitions, or a COPY
//! statement), then hands every row over as [`RowValues`]. A rewriter that
//! changes a row writes all of its values into the driver's [`RowEncoder`],
//! and the driver frames them in its own wire format.

use std::borrow::Cow;

/// One column of a result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    /// The output column's name (its alias, if any).
    pub name: String,
    /// Where the protocol says its values come from.
    pub source: ColumnSource,
    /// How its values are laid out on the wire.
    pub encoding: ValueEncoding,
    /// The type's name, for messages (`int4`, `oid 23`, `LONGLONG`).
    pub type_name: Cow<'static, str>,
    /// What its values can look like, so that content detectors skip
    /// columns whose type cannot spell what they look for.
    pub content: ValueContent,
}

/// What a column's values can look like, as its type promises. A driver
/// that does not know says [`ValueContent::Any`]; only a type whose every
/// value has one of these shapes may be described by it, because content
/// detectors trust it to skip the column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueContent {
    /// Anything (text, JSON, unknown types).
    #[default]
    Any,
    /// A truth value (`t`/`f`, `true`/`false`, `0`/`1`).
    Boolean,
    /// A decimal integer: an optional `-`, then at most `digits` digits.
    Integer {
        /// The most digits a value can have (PostgreSQL `int4`: 10).
        digits: u8,
    },
    /// A date or timestamp as the server prints it in any of its date
    /// styles: digits, the separators `-`, `/`, `.`, `:`, `+` and spaces,
    /// time-zone offsets and alphabetic month, day, era and zone names.
    Temporal,
}

/// What a protocol says about a result column's source. It is a claim about
/// a plain base-table column only; masking still runs the statement's SQL
/// lineage, which catches what the protocol cannot see (expressions,
/// functions, views).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// The protocol names no base-table column (an expression, or unknown).
    None,
    /// A base-table column identified by the protocol's own numeric ids,
    /// resolved through the session's [`ColumnResolver`](crate::ColumnResolver)
    /// (PostgreSQL's table OID and attribute number).
    Key(SourceKey),
    /// A base-table column the protocol names itself (MySQL's
    /// `org_table`/`org_name`, or a COPY statement's table).
    Named(ResolvedColumn),
}

/// A protocol's numeric id of a base-table column: a relation id and a
/// column number within it. Only meaningful to the protocol's
/// [`ColumnResolver`](crate::ColumnResolver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    /// The relation (PostgreSQL: the table's OID).
    pub relation: u32,
    /// The column within it (PostgreSQL: the attribute number, from 1).
    pub column: i16,
}

/// A base-table column by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolvedColumn {
    /// Schema (MySQL: database) name, when known.
    pub schema: Option<String>,
    /// Table (or view) name.
    pub table: String,
    /// Column name.
    pub column: String,
}

/// How a column's values are laid out, for rewriting them type-correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueEncoding {
    /// Text: any replacement text is a valid value.
    Text,
    /// JSON text: a whole-value replacement is written as a JSON string.
    Json,
    /// A version byte, then JSON text (PostgreSQL's binary `jsonb`).
    JsonbBinary,
    /// A binary encoding hoop cannot rewrite (binary integers, dates, …):
    /// a masked value can only become NULL, or the row is refused.
    Opaque,
}

/// One row's values, as the driver decoded them. `None` is SQL NULL.
pub trait RowValues {
    /// The number of values.
    fn len(&self) -> usize;

    /// Whether the row has no values.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` (`None` for NULL, or when `i` is out of range).
    fn get(&self, i: usize) -> Option<&[u8]>;

    /// The values as spans of one buffer, when the driver holds them so: a
    /// rewriter then reads them without a call per value. The spans must
    /// give exactly what [`RowValues::get`] gives.
    fn spans(&self) -> Option<ValueSpans<'_>> {
        None
    }
}

/// A row's values as spans of one buffer: value `i` is
/// `body[start..start + len]` for `spans[i] == (start, len)`, or SQL NULL
/// when `len` is negative (PostgreSQL's DataRow, indexed, is exactly this).
#[derive(Debug, Clone, Copy)]
pub struct ValueSpans<'a> {
    /// The bytes the spans point into.
    pub body: &'a [u8],
    /// `(start, len)` per value; a negative `len` is NULL.
    pub spans: &'a [(usize, i32)],
}

impl<'a> ValueSpans<'a> {
    /// Value `i` (`None` for NULL, out of range, or a span past the body).
    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let &(at, len) = self.spans.get(i)?;
        let len = usize::try_from(len).ok()?;
        self.body.get(at..at.checked_add(len)?)
    }
}

impl RowValues for &[Option<&[u8]>] {
    fn len(&self) -> usize {
        <[Option<&[u8]>]>::len(self)
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        <[Option<&[u8]>]>::get(self, i).copied().flatten()
    }
}

impl RowValues for Vec<Option<Vec<u8>>> {
    fn len(&self) -> usize {
        <[Option<Vec<u8>>]>::len(self)
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        <[Option<Vec<u8>>]>::get(self, i).and_then(|v| v.as_deref())
    }
}

/// Where a rewriter writes a changed row: every value in column order. The
/// driver encodes them in its wire format.
pub trait RowEncoder {
    /// Appends the next value (`None` for NULL).
    fn push(&mut self, value: Option<&[u8]>);
}

impl RowEncoder for Vec<Option<Vec<u8>>> {
    fn push(&mut self, value: Option<&[u8]>) {
        Vec::push(self, value.map(<[u8]>::to_vec));
    }
}
