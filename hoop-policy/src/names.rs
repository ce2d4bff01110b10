//! Names in rules: the tables guard rules name and the columns mask rules
//! name, matched against what SQL analysis found.

use std::fmt;

pub use hoop_sql::names::{TableRef, parse_dotted};

/// A table named in a rule's `tables:`. A bare `orders` matches `orders` in
/// any schema; `public.orders` matches `public.orders` and an unqualified
/// `orders` (which `search_path` may resolve to it: hoop cannot know, so it
/// fails closed), never `app.orders`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TablePattern(pub TableRef);

impl TablePattern {
    /// Whether a table a statement touches is this one.
    pub fn matches(&self, table: &TableRef) -> bool {
        self.0.name == table.name
            && match (&self.0.schema, &table.schema) {
                (Some(want), Some(got)) => want == got,
                _ => true,
            }
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A column named in a mask rule's `columns:`: `schema.table.column`,
/// `table.column` or `column` (any table), normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnRef {
    /// The schema, for `schema.table.column`.
    pub schema: Option<String>,
    /// The table, for `table.column` and `schema.table.column`.
    pub table: Option<String>,
    /// The column.
    pub column: String,
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}.")?;
        }
        if let Some(table) = &self.table {
            write!(f, "{table}.")?;
        }
        f.write_str(&self.column)
    }
}

impl ColumnRef {
    /// Whether this reference matches a result column that comes from
    /// `schema.table.column`. Unqualified parts of the reference match anything.
    pub fn matches(&self, schema: Option<&str>, table: Option<&str>, column: &str) -> bool {
        fn part(want: Option<&String>, got: Option<&str>) -> bool {
            match (want, got) {
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
                (None, _) => true,
            }
        }
        self.column == column
            && part(self.table.as_ref(), table)
            && part(self.schema.as_ref(), schema)
    }

    /// How specific the reference is: 1 for `column`, 2 for `table.column`, 3 for all three.
    pub fn specificity(&self) -> u8 {
        1 + u8::from(self.table.is_some()) + u8::from(self.schema.is_some())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table(schema: Option<&str>, name: &str) -> TableRef {
        TableRef {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn table_patterns_match_by_schema_only_when_given() {
        let bare = TablePattern(table(None, "orders"));
        let qualified = TablePattern(table(Some("public"), "orders"));
        assert!(bare.matches(&table(Some("public"), "orders")));
        assert!(bare.matches(&table(Some("app"), "orders")));
        assert!(bare.matches(&table(None, "orders")));
        assert!(qualified.matches(&table(Some("public"), "orders")));
        assert!(
            qualified.matches(&table(None, "orders")),
            "search_path may resolve it there"
        );
        assert!(!qualified.matches(&table(Some("app"), "orders")));
        assert!(!bare.matches(&table(None, "Orders")));
    }

    #[test]
    fn column_refs_match_qualified_parts() {
        let bare = ColumnRef {
            schema: None,
            table: None,
            column: "ssn".into(),
        };
        let tabled = ColumnRef {
            schema: None,
            table: Some("customers".into()),
            column: "ssn".into(),
        };
        assert!(bare.matches(Some("public"), Some("x"), "ssn"));
        assert!(tabled.matches(Some("public"), Some("customers"), "ssn"));
        assert!(!tabled.matches(Some("public"), Some("x"), "ssn"));
        assert!(!tabled.matches(None, None, "ssn"));
        assert_eq!(tabled.specificity(), 2);
    }
}
