//! Table names as a server compares them, and dotted names as policy files
//! write them.
//!
//! SQL identifiers fold the way the session's [`SqlDialect`] says
//! (PostgreSQL: unquoted to lower case, quoted kept exactly, so `Orders`,
//! `ORDERS` and `"orders"` are one table and `"Orders"` another). Policy
//! files use PostgreSQL's syntax for every protocol: `tables: ['"Orders"']`
//! names the quoted one.

use std::fmt;

use sqlparser::ast::{ObjectName, ObjectNamePart};

use crate::SqlDialect;

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
    pub fn from_object_name(name: &ObjectName, dialect: &dyn SqlDialect) -> Option<Self> {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| ObjectNamePart::as_ident(p).map(|i| dialect.fold(i)))
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
}
