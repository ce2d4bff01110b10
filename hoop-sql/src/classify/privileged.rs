//! Privileged paths: SQL that reads or moves data where row masking never
//! looks — server files and logs, raw storage pages, the write-ahead log,
//! planner statistics (which hold column values), `COPY … PROGRAM` and
//! `COPY` to or from server files, links to other databases, and
//! extensions. `policy.privileged` decides statements that take one.
//!
//! The statement forms are read here; which routines and relations are
//! privileged is the dialect's to say ([`SqlDialect::privileged_routine`],
//! [`SqlDialect::privileged_relation`]), since every server has its own.
//!
//! [`SqlDialect::privileged_routine`]: crate::SqlDialect::privileged_routine
//! [`SqlDialect::privileged_relation`]: crate::SqlDialect::privileged_relation

use std::fmt;

/// Why a statement takes a privileged path (the first reason found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privileged {
    /// A call to a routine that reaches data around the query: the name as
    /// written, and what it reaches.
    Routine(String, &'static str),
    /// A read of a catalog relation that carries data around the query: the
    /// name as written, and what it carries.
    Relation(String, &'static str),
    /// `COPY … TO/FROM PROGRAM`: a shell command run by the server.
    CopyProgram,
    /// `COPY … TO/FROM 'file'`: a file on the server's disk.
    CopyServerFile,
    /// Creating or changing a link to another database or data source
    /// (a foreign server, foreign table, user mapping or foreign-data
    /// wrapper, or importing a foreign schema): what it names.
    ForeignData(&'static str),
    /// Creating or changing an extension (it may expose storage or files).
    Extension,
    /// `ALTER SYSTEM`: server settings, including ones that run shell
    /// commands or write files.
    SystemSettings,
}

impl fmt::Display for Privileged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Routine(name, what) | Self::Relation(name, what) => {
                write!(f, "`{name}` {what}")
            }
            Self::CopyProgram => f.write_str("COPY through a program run by the server"),
            Self::CopyServerFile => f.write_str("COPY to or from a file on the server"),
            Self::ForeignData(what) => write!(f, "a link to another data source ({what})"),
            Self::Extension => f.write_str("creating or changing an extension"),
            Self::SystemSettings => f.write_str("changing server settings (ALTER SYSTEM)"),
        }
    }
}

/// Statement forms that are privileged by their leading words (the forms
/// the SQL library reads in part or not at all), after `CREATE [OR
/// REPLACE]`, `ALTER` or `IMPORT`.
const FORMS: &[(&[&str], Privileged)] = &[
    (&["alter", "system"], Privileged::SystemSettings),
    (
        &["create", "server"],
        Privileged::ForeignData("foreign server"),
    ),
    (
        &["alter", "server"],
        Privileged::ForeignData("foreign server"),
    ),
    (
        &["create", "foreign", "table"],
        Privileged::ForeignData("foreign table"),
    ),
    (
        &["alter", "foreign", "table"],
        Privileged::ForeignData("foreign table"),
    ),
    (
        &["create", "foreign", "data", "wrapper"],
        Privileged::ForeignData("foreign-data wrapper"),
    ),
    (
        &["alter", "foreign", "data", "wrapper"],
        Privileged::ForeignData("foreign-data wrapper"),
    ),
    (
        &["import", "foreign", "schema"],
        Privileged::ForeignData("imported foreign schema"),
    ),
    (
        &["create", "user", "mapping", "for"],
        Privileged::ForeignData("user mapping"),
    ),
    (
        &["alter", "user", "mapping", "for"],
        Privileged::ForeignData("user mapping"),
    ),
    (&["create", "extension"], Privileged::Extension),
    (&["alter", "extension"], Privileged::Extension),
];

/// Whether a statement's first word can start a privileged form (a cheap
/// test before its leading words are read).
pub(crate) fn may_start_form(first_word: &str) -> bool {
    matches!(first_word, "alter" | "create" | "import")
}

/// The privileged form a statement's leading words (lower case) name.
pub(crate) fn from_words(words: &[String]) -> Option<Privileged> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let w = match w.as_slice() {
        ["create", "or", "replace", rest @ ..] => {
            let mut v = vec!["create"];
            v.extend_from_slice(rest);
            v
        }
        _ => w,
    };
    FORMS
        .iter()
        .find(|(form, _)| w.starts_with(form))
        .map(|(_, what)| what.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn forms_by_leading_words() {
        assert_eq!(
            from_words(&words("alter system set archive_command = x")),
            Some(Privileged::SystemSettings)
        );
        assert_eq!(
            from_words(&words("create or replace foreign table x")),
            Some(Privileged::ForeignData("foreign table"))
        );
        assert_eq!(
            from_words(&words("import foreign schema public")),
            Some(Privileged::ForeignData("imported foreign schema"))
        );
        assert_eq!(
            from_words(&words("create extension dblink")),
            Some(Privileged::Extension)
        );
        // Look-alikes: ordinary DDL whose words only resemble the forms.
        assert_eq!(from_words(&words("create table server")), None);
        assert_eq!(from_words(&words("alter table system")), None);
        assert_eq!(from_words(&words("create user mapper")), None);
        // A role named `mapping`, not a user mapping.
        assert_eq!(from_words(&words("create user mapping with login")), None);
        assert_eq!(
            from_words(&words("create user mapping for current_user server s")),
            Some(Privileged::ForeignData("user mapping"))
        );
        assert_eq!(from_words(&words("import")), None);
    }
}
