//! Table and column names as PostgreSQL compares them.
//!
//! Unquoted identifiers fold to lower case, quoted ones are kept exactly:
//! `Orders`, `ORDERS` and `"orders"` are one table, `"Orders"` another. Rule
//! files use the same syntax, so `tables: ['"Orders"']` names the quoted one.

use std::fmt;

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

/// A table a statement touches, normalised. `schema` is `None` when the SQL
/// did not qualify it (the server resolves it through `search_path`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// The schema, when the SQL names one.
    pub schema: Option<String>,
    /// The table (or view, sequence…) name.
    pub name: String,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl TableRef {
    /// The normalised table an SQL object name refers to; a leading database
    /// name (`db.schema.table`) is dropped. `None` for names that are not plain
    /// identifiers.
    pub fn from_object_name(name: &ObjectName) -> Option<Self> {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| ObjectNamePart::as_ident(p).map(normalize_ident))
            .collect::<Option<_>>()?;
        Self::from_parts(parts)
    }

    /// A table from its normalised parts (`[table]`, `[schema, table]` or `[db, schema, table]`).
    pub fn from_parts(mut parts: Vec<String>) -> Option<Self> {
        let name = parts.pop()?;
        let schema = parts.pop();
        Some(Self { schema, name })
    }
}

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

/// How PostgreSQL compares an identifier: unquoted folds to lower case, quoted stays exact.
pub fn normalize_ident(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Splits a dotted name from a policy file (`public."My Table"`) into
/// normalised parts, or says what is wrong with it.
pub fn parse_dotted(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err("unterminated quoted identifier".to_owned()),
                }
            }
            if part.is_empty() {
                return Err("empty quoted identifier".to_owned());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' {
                    return Err("a quote may only start a name part".to_owned());
                }
                if c.is_whitespace() {
                    return Err(
                        "whitespace in an unquoted name (quote it: \"my table\")".to_owned()
                    );
                }
                part.push(c);
                chars.next();
            }
            if part.is_empty() {
                return Err("empty name part".to_owned());
            }
            part = part.to_lowercase();
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => {}
            Some(c) => return Err(format!("unexpected `{c}` after a quoted name")),
        }
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
    fn dotted_names_fold_unquoted_parts_only() {
        assert_eq!(parse_dotted("Public.Orders").unwrap(), ["public", "orders"]);
        assert_eq!(
            parse_dotted(r#"public."My.Table""#).unwrap(),
            ["public", "My.Table"]
        );
        assert_eq!(parse_dotted(r#""a""b""#).unwrap(), [r#"a"b"#]);
        assert!(parse_dotted("a..b").is_err());
        assert!(parse_dotted("").is_err());
        assert!(parse_dotted(r#""open"#).is_err());
        assert!(parse_dotted("my table").is_err());
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
