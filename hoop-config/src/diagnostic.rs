//! One finding about a configuration file: where, which key, what, and how to fix it.
//!
//! `hoop policy check` prints these one per line, compiler style:
//! `hoop.yaml:12:9: error: policy.mask[1].detect[0]: unknown detector "emial" (hint: did you mean "email"?)`.

use std::{fmt, path::PathBuf};

use super::source::{KeyPath, Location};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The file is accepted, but probably does not say what its author meant.
    Warning,
    /// The file is rejected.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// One error or warning about a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file.
    pub file: PathBuf,
    /// Where in the file, when known (1-based line and column).
    pub location: Option<Location>,
    /// The key path, e.g. `policy.mask[1].detect[0]`; empty for the whole document.
    pub path: KeyPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Whether this finding rejects the file.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, column) = self.location.map_or((0, 0), |l| (l.line, l.column));
        write!(
            f,
            "{}:{line}:{column}: {}: ",
            self.file.display(),
            self.severity
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Collects diagnostics while a file is checked, locating each by key path.
#[derive(Debug)]
pub struct Diagnostics<'a> {
    source: &'a super::source::SourceMap,
    found: Vec<Diagnostic>,
}

/// Which position of a key to point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The key itself (`foo:` of `foo: bar`), e.g. for an unknown key.
    Key,
    /// The value (`bar`), e.g. for a value of the wrong type.
    Value,
}

impl<'a> Diagnostics<'a> {
    /// An empty collection for the file `source` describes.
    pub fn new(source: &'a super::source::SourceMap) -> Self {
        Self {
            source,
            found: Vec::new(),
        }
    }

    /// The source map findings are located with.
    pub fn source(&self) -> &'a super::source::SourceMap {
        self.source
    }

    /// Records a finding at `path`.
    pub fn push(
        &mut self,
        severity: Severity,
        path: &KeyPath,
        at: At,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let location = self.source.locate(path, at);
        self.found.push(Diagnostic {
            severity,
            file: self.source.file().to_owned(),
            location,
            path: path.clone(),
            message: message.into(),
            hint,
        });
    }

    /// Records an error at the value of `path`.
    pub fn error(&mut self, path: &KeyPath, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Error, path, At::Value, message, hint);
    }

    /// Records a warning at the value of `path`.
    pub fn warning(&mut self, path: &KeyPath, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, path, At::Value, message, hint);
    }

    /// How many errors (not warnings) have been recorded.
    pub fn error_count(&self) -> usize {
        self.found.iter().filter(|d| d.is_error()).count()
    }

    /// Whether any error (not warning) has been recorded.
    pub fn has_errors(&self) -> bool {
        self.found.iter().any(Diagnostic::is_error)
    }

    /// Everything recorded, in file order (errors and warnings interleaved).
    pub fn into_vec(mut self) -> Vec<Diagnostic> {
        // Stable: findings at the same place keep the order they were found in.
        self.found.sort_by_key(|d| {
            d.location
                .map_or((usize::MAX, usize::MAX), |l| (l.line, l.column))
        });
        self.found
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean \"{c}\"?"))
}
