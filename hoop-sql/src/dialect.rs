//! [`SqlDialect`]: what hoop must know about one server's SQL to judge and
//! mask it. One implementation per wire protocol's server family; each has
//! one tokenizer that feeds splitting, fingerprints and literal redaction,
//! so the three always agree on where strings, comments and statements end.

use std::borrow::Cow;

use sqlparser::ast::{Ident, ObjectName, Statement};

/// One statement's text within a larger text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The text, without its terminating `;`.
    pub text: &'a str,
    /// Byte offset of `text` in the original.
    pub offset: usize,
}

/// Why a text could not be split into statements. The text is then judged
/// as unparsed (`policy.unparsed`), whatever it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A string, quoted identifier, dollar quote or comment is never closed.
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    /// A string literal ends in a different place depending on a session
    /// setting the text alone cannot tell (PostgreSQL's
    /// `standard_conforming_strings`).
    #[error("string literal at byte {0} ends differently with standard_conforming_strings off")]
    Ambiguous(usize),
    /// The text cannot be tokenized the way the server will (MySQL: an
    /// unsafe client character set, a `;` inside an executable comment, an
    /// empty statement).
    #[error("{0}")]
    Unlexable(String),
}

/// Why one statement's text has no syntax tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseFailure {
    /// The SQL library rejected it.
    #[error("{0}")]
    Syntax(String),
    /// The SQL library read several statements where the server sees one.
    #[error("the SQL parser read {0} statements where the server sees one")]
    Several(usize),
}

/// What a statement does to a cursor, for rows that come from `FETCH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorOp {
    /// `DECLARE name … FOR query`: the cursor (folded) and the declaring text.
    Declare {
        /// The cursor's name, folded.
        name: String,
    },
    /// `FETCH … name` (or `MOVE`): the cursor it reads, folded.
    Fetch {
        /// The cursor's name, folded.
        name: String,
    },
}

/// What a statement does to the session's named objects: its prepared
/// statements and its cursors (PostgreSQL's portals), which SQL and the
/// wire protocol share. Names are folded as the server folds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOp {
    /// `PREPARE name [(types)] AS body`.
    Prepare {
        /// The statement's name.
        name: String,
        /// The statement it prepares.
        body: String,
    },
    /// `EXECUTE name [(arguments)]`: the prepared statement's rows.
    Execute {
        /// The statement's name.
        name: String,
    },
    /// `DEALLOCATE [PREPARE] name | ALL` (`None`: all of them).
    Deallocate {
        /// The statement's name.
        name: Option<String>,
    },
    /// `DECLARE name … CURSOR … FOR body`.
    Declare {
        /// The cursor's name.
        name: String,
        /// Its query.
        body: String,
        /// `WITH HOLD`: it outlives its transaction.
        hold: bool,
        /// `BINARY`: its rows come in binary format.
        binary: bool,
    },
    /// `FETCH … name` or `MOVE … name`.
    Fetch {
        /// The cursor's name.
        name: String,
    },
    /// `CLOSE name | ALL` (`None`: all of them).
    Close {
        /// The cursor's name.
        name: Option<String>,
    },
    /// `DISCARD ALL`: every prepared statement and cursor goes.
    DiscardAll,
}

/// Function names lineage must treat specially, lower case.
#[derive(Debug, Clone, Copy)]
pub struct FunctionCatalog {
    /// Built-in set-returning functions whose rows carry nothing but their
    /// arguments. Any other function in `FROM` is unknown.
    pub row_functions: &'static [&'static str],
    /// Functions that run SQL (or read a table) named in a string argument.
    pub sql_running: &'static [&'static str],
    /// Functions that send their arguments somewhere masking on read
    /// cannot follow.
    pub side_channel: &'static [&'static str],
}

/// How a built-in routine's result depends on its arguments (PostgreSQL's
/// `provolatile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Volatility {
    /// The same arguments always give the same result, and nothing else is read.
    Immutable,
    /// The same within one statement (it may read the database or settings).
    Stable,
    /// May differ on every call (`random()`), or has side effects.
    Volatile,
}

/// What a routine call reaches, as far as the SQL text tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routine {
    /// One of the server's own routines (created with the server, never by a
    /// user or an extension), with its volatility.
    BuiltIn(Volatility),
    /// A routine hoop does not know as built in: a user-defined function,
    /// procedure or aggregate, an extension's, or a name qualified with a
    /// schema other than the server's own. What it runs is invisible to hoop.
    NotBuiltIn,
}

/// An `UPDATE … WHERE CURRENT OF cursor` or `DELETE … WHERE CURRENT OF
/// cursor`, recognised before parsing (the SQL library does not know the
/// clause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positioned {
    /// The statement without its `WHERE CURRENT OF cursor` clause.
    pub text: String,
    /// The cursor, folded.
    pub cursor: String,
}

/// How a server quotes stored values in its error texts, for masking echoes.
#[derive(Debug, Clone, Copy)]
pub struct EchoPatterns {
    /// Texts that end a `Key (columns)=(values)` list (unique and foreign
    /// key violations).
    pub key_value_suffixes: &'static [&'static str],
    /// The text that starts a whole quoted row (`Failing row contains (`).
    pub failing_row: Option<&'static str>,
    /// Whether a trailing `: "…"` quotes an input value
    /// (`invalid input syntax for type integer: "…"`).
    pub trailing_quoted: bool,
}

/// One server family's SQL, as hoop needs it.
pub trait SqlDialect: Send + Sync + std::fmt::Debug + 'static {
    /// The dialect's name, for logs.
    fn name(&self) -> &'static str;

    /// The SQL library's dialect for parsing.
    fn parser_dialect(&self) -> &dyn sqlparser::dialect::Dialect;

    /// Cuts a text into the statements the server will run, where the
    /// server cuts it. Pieces holding only whitespace and comments are
    /// dropped.
    fn split<'a>(&self, sql: &'a str) -> Result<Vec<Piece<'a>>, SplitError>;

    /// Parses one statement's text (a [`Piece`]).
    fn parse_statement(&self, piece: &str) -> Result<Statement, ParseFailure>;

    /// The statement's first keyword, lower case (for statements the SQL
    /// library cannot parse but whose kind the keyword alone decides).
    fn first_word(&self, piece: &str) -> Option<String>;

    /// A key under which texts that differ only in literal values share one
    /// judgement, into a reused buffer; `false` when the text gets no key
    /// (its lexing could depend on session settings, or it does not lex).
    fn fingerprint_into(&self, sql: &str, out: &mut String) -> bool;

    /// [`fingerprint_into`](Self::fingerprint_into), and whether the pass
    /// that made the key also showed the text holds no string literal (its
    /// [`redact_literals`](Self::redact_literals) is then the text itself):
    /// `(keyed, no_strings)`. `no_strings` is only ever a proof; the default
    /// proves nothing.
    fn fingerprint_noting_strings(&self, sql: &str, out: &mut String) -> (bool, bool) {
        (self.fingerprint_into(sql, out), false)
    }

    /// The text with the contents of every string literal replaced by
    /// `[REDACTED:literal]`; comments, identifiers and numbers stay.
    fn redact_literals<'a>(&self, sql: &'a str) -> Cow<'a, str>;

    /// An identifier as the server compares it.
    fn fold(&self, ident: &Ident) -> String;

    /// A raw word (possibly quoted) as the server compares it.
    fn fold_word(&self, word: &str) -> String;

    /// What a statement (a [`Piece`]'s text) does to a cursor.
    fn cursor_op(&self, piece: &str) -> Option<CursorOp>;

    /// Every word and quoted identifier of a statement (a [`Piece`]'s
    /// text), keywords included, each folded as the server folds names;
    /// `None` when the text cannot be read. The default reads none.
    fn identifiers(&self, piece: &str) -> Option<Vec<String>> {
        let _ = piece;
        None
    }

    /// What a statement (a [`Piece`]'s text) does to the session's named
    /// prepared statements and cursors. The default knows none: a dialect
    /// whose server shares those names between SQL and its protocol says.
    fn session_op(&self, piece: &str) -> Option<SessionOp> {
        let _ = piece;
        None
    }

    /// Functions lineage must know about.
    fn functions(&self) -> &FunctionCatalog;

    /// How the server echoes values in its messages.
    fn echo_patterns(&self) -> &EchoPatterns;

    /// What a call to the routine named `name` reaches (`[schema.]routine`,
    /// as written: the dialect folds it). Operators, casts
    /// and the SQL syntax forms that are not calls (`CAST`, `EXTRACT`, …)
    /// are not asked about. The default knows no built-ins, so every call
    /// counts as server-side code hoop cannot see (fail closed): a dialect
    /// lists its server's own routines.
    fn routine(&self, name: &ObjectName) -> Routine {
        let _ = name;
        Routine::NotBuiltIn
    }

    /// Whether a routine called by its numeric id (PostgreSQL's fast-path
    /// `FunctionCall`) is one of the server's own. The default knows none.
    fn builtin_routine_id(&self, id: u32) -> bool {
        let _ = id;
        false
    }

    /// What a call to the routine named `name` reaches around the query
    /// when it is a privileged path (server files and logs, raw storage, the
    /// write-ahead log, statistics, other databases): `policy.privileged`
    /// decides it. Each dialect lists its server's; the default knows none.
    fn privileged_routine(&self, name: &ObjectName) -> Option<&'static str> {
        let _ = name;
        None
    }

    /// What a read of `table` carries around the query when it is a
    /// privileged catalog relation (planner statistics with column values,
    /// credentials, server configuration files). The default knows none.
    fn privileged_relation(&self, table: &crate::names::TableRef) -> Option<&'static str> {
        let _ = table;
        None
    }

    /// Whether an operator symbol (`@>`, `->>`) is one of the server's own.
    /// The default knows none (fail closed).
    fn builtin_operator(&self, symbol: &str) -> bool {
        let _ = symbol;
        false
    }

    /// The statement without its `WHERE CURRENT OF cursor` clause, when
    /// `piece` is a positioned `UPDATE`/`DELETE` (the server's own lexing
    /// decides where the clause is). The default recognises none.
    fn positioned(&self, piece: &str) -> Option<Positioned> {
        let _ = piece;
        None
    }

    /// The statement's first `max` words (keywords and unquoted names in
    /// lower case, quoted names with their quotes so that they never read as
    /// keywords), for statements the SQL library cannot parse but whose
    /// leading words still say what they do (`CREATE RULE`, `DROP OWNED`).
    /// Stops at the first token that is not a word.
    fn leading_words(&self, piece: &str, max: usize) -> Vec<String> {
        let Ok(tokens) =
            sqlparser::tokenizer::Tokenizer::new(self.parser_dialect(), piece).tokenize()
        else {
            return Vec::new();
        };
        tokens
            .into_iter()
            .filter(|t| !matches!(t, sqlparser::tokenizer::Token::Whitespace(_)))
            .map_while(|t| match t {
                sqlparser::tokenizer::Token::Word(w) => Some(match w.quote_style {
                    None => w.value.to_lowercase(),
                    Some(q) => format!("{q}{}{q}", w.value),
                }),
                _ => None,
            })
            .take(max)
            .collect()
    }
}
