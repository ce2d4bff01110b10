//! Server-side code: SQL whose effects run inside the server, out of hoop's
//! sight. `policy.server_code` decides statements that carry any of it.
//!
//! What counts (PostgreSQL):
//! - anonymous code blocks (`DO`);
//! - creating, replacing or altering routines and the objects that bind
//!   routines to events or syntax: functions, procedures, triggers (and
//!   constraint triggers), event triggers, rules, aggregates, operators,
//!   casts, conversions, languages, transforms, extensions;
//! - calls to routines and operators that are not built into the server
//!   (anywhere in a statement: select lists, `FROM`, `WHERE`, defaults,
//!   `CALL`), and fast-path calls of such routines;
//! - loading a server library (`LOAD`);
//! - a `search_path` that puts `pg_catalog` after another schema (its
//!   routines would then shadow the built-ins that unqualified calls name).
//!
//! Statements the SQL library cannot parse are recognised by their leading
//! words, so `CREATE RULE` or `CREATE EVENT TRIGGER` is server code even
//! where the parser gives up.

use std::fmt;

use sqlparser::ast::{Expr, ObjectName, Value};

/// Why a statement counts as server-side code (the first reason found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCode {
    /// A `DO` block.
    AnonymousBlock,
    /// Creating, replacing or altering a routine, or an object that runs one
    /// (the object's kind, e.g. `function`, `trigger`, `event trigger`).
    Defines(&'static str),
    /// A call to a routine that is not built in (its name as written).
    Calls(String),
    /// An operator that is not built in (its symbol).
    Operator(String),
    /// A fast-path call of a routine by id that is not built in (`None`:
    /// the id was not given).
    CallsById(Option<u32>),
    /// `LOAD` of a server library.
    LoadsLibrary,
    /// A `search_path` that lets other schemas shadow built-in routines.
    ShadowsBuiltins,
}

impl fmt::Display for ServerCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnonymousBlock => f.write_str("an anonymous code block (DO)"),
            Self::Defines(what) => write!(f, "creating, replacing or altering a {what}"),
            Self::Calls(name) => write!(f, "a call to `{name}`, which is not a built-in routine"),
            Self::Operator(op) => write!(f, "the operator `{op}`, which is not built in"),
            Self::CallsById(Some(id)) => {
                write!(f, "a fast-path call of routine {id}, which is not built in")
            }
            Self::CallsById(None) => f.write_str("a fast-path call of an unknown routine"),
            Self::LoadsLibrary => f.write_str("loading a server library (LOAD)"),
            Self::ShadowsBuiltins => f.write_str(
                "a search_path that puts other schemas before pg_catalog (their routines would shadow built-ins)",
            ),
        }
    }
}

/// Object kinds whose `CREATE`/`ALTER` binds code to the server, by the
/// words that follow `CREATE [OR REPLACE]` (or `ALTER`).
const CODE_OBJECTS: &[(&[&str], &str)] = &[
    (&["function"], "function"),
    (&["procedure"], "procedure"),
    (&["routine"], "routine"),
    (&["trigger"], "trigger"),
    (&["constraint", "trigger"], "trigger"),
    (&["event", "trigger"], "event trigger"),
    (&["rule"], "rule"),
    (&["aggregate"], "aggregate"),
    (&["operator"], "operator"),
    (&["cast"], "cast"),
    (&["conversion"], "conversion"),
    (&["default", "conversion"], "conversion"),
    (&["language"], "language"),
    (&["trusted", "language"], "language"),
    (&["procedural", "language"], "language"),
    (&["trusted", "procedural", "language"], "language"),
    (&["transform"], "transform"),
    (&["extension"], "extension"),
];

/// What the leading words of a statement the parser rejected say about
/// server code.
pub(crate) fn from_words(words: &[String]) -> Option<ServerCode> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["do", ..] => Some(ServerCode::AnonymousBlock),
        ["load", ..] => Some(ServerCode::LoadsLibrary),
        ["call", ..] => Some(ServerCode::Calls("(unparsed CALL)".to_owned())),
        ["create", rest @ ..] => {
            let rest = rest.strip_prefix(&["or", "replace"][..]).unwrap_or(rest);
            let rest = rest
                .strip_prefix(&["temp"][..])
                .or_else(|| rest.strip_prefix(&["temporary"][..]))
                .unwrap_or(rest);
            defined(rest)
        }
        ["alter", rest @ ..] => defined(rest),
        _ => None,
    }
}

fn defined(rest: &[&str]) -> Option<ServerCode> {
    CODE_OBJECTS
        .iter()
        .find(|(words, _)| rest.starts_with(words))
        .map(|(_, what)| ServerCode::Defines(what))
}

/// Whether a `search_path` value list lets another schema come before
/// `pg_catalog` (PostgreSQL searches `pg_catalog` first unless the path
/// names it later). A value hoop cannot read counts as shadowing (fail
/// closed).
pub(crate) fn path_shadows(values: &[Expr]) -> bool {
    let mut schemas: Vec<String> = Vec::new();
    for value in values {
        match value {
            Expr::Identifier(i) => schemas.push(if i.quote_style.is_some() {
                i.value.clone()
            } else {
                i.value.to_lowercase()
            }),
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    schemas.extend(split_path(s));
                }
                // `SET search_path = DEFAULT` and the like.
                _ => {}
            },
            _ => return true,
        }
    }
    schemas
        .iter()
        .position(|s| s == "pg_catalog")
        .is_some_and(|i| i > 0)
}

/// The schemas of a `search_path` string (`'app, "My Schema", pg_catalog'`).
pub(crate) fn split_path(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => s.to_lowercase(),
            },
        )
        .collect()
}

/// For `set_config('search_path', value, …)`: whether the call may shadow
/// built-ins (a non-literal value may, fail closed).
pub(crate) fn set_config_shadows(name: &ObjectName, args: &[Expr]) -> bool {
    let is_set_config = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case("set_config"));
    if !is_set_config {
        return false;
    }
    let literal = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    match args {
        [setting, value, ..] => match literal(setting) {
            Some(s) if s.trim().eq_ignore_ascii_case("search_path") => {
                literal(value).is_none_or(|v| {
                    split_path(&v)
                        .iter()
                        .position(|s| s == "pg_catalog")
                        .is_some_and(|i| i > 0)
                })
            }
            Some(_) => false,
            // The setting's name is computed: it may be search_path.
            None => true,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_lowercase).collect()
    }

    #[test]
    fn leading_words_name_the_code() {
        assert_eq!(
            from_words(&words("DO $$")),
            Some(ServerCode::AnonymousBlock)
        );
        assert_eq!(
            from_words(&words("CREATE OR REPLACE RULE r")),
            Some(ServerCode::Defines("rule"))
        );
        assert_eq!(
            from_words(&words("create event trigger e")),
            Some(ServerCode::Defines("event trigger"))
        );
        assert_eq!(
            from_words(&words("create or replace trusted procedural language x")),
            Some(ServerCode::Defines("language"))
        );
        assert_eq!(
            from_words(&words("ALTER FUNCTION f")),
            Some(ServerCode::Defines("function"))
        );
        assert_eq!(from_words(&words("create table t")), None);
        assert_eq!(from_words(&words("lock table t")), None);
    }

    #[test]
    fn search_paths() {
        assert_eq!(
            split_path("app, \"My\"\"S\", PG_CATALOG"),
            ["app", "My\"S", "pg_catalog"]
        );
        let id = |s: &str| Expr::Identifier(sqlparser::ast::Ident::new(s));
        assert!(path_shadows(&[id("app"), id("pg_catalog")]));
        assert!(!path_shadows(&[id("pg_catalog"), id("app")]));
        assert!(!path_shadows(&[id("app"), id("public")]));
    }
}
