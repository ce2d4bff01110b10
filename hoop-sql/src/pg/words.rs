//! The words and parentheses of a statement, as PostgreSQL's scanner sees
//! them: strings, comments, quoted identifiers, numbers and parameters come
//! from the same [`Lexer`] that splits statements, and the plain text
//! between them is cut into identifiers and punctuation here. Used where a
//! clause must be found in text the SQL library cannot parse
//! (`WHERE CURRENT OF cursor`).

use std::ops::Range;

use super::lexer::{Kind, Lexer};

/// One significant item of a statement (whitespace and comments dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// What it is.
    pub kind: ItemKind,
    /// Where it is.
    pub span: Range<usize>,
    /// Parenthesis depth at its start (an opening parenthesis has the depth
    /// outside it).
    pub depth: usize,
}

/// What an [`Item`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemKind {
    /// An unquoted word (keyword or identifier), lower case.
    Word(String),
    /// A `"…"` identifier, unescaped.
    Quoted(String),
    /// `(`.
    Open,
    /// `)`.
    Close,
    /// Anything else: literals, parameters, operators, `;`.
    Other,
}

fn word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn word_byte(b: u8) -> bool {
    word_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The significant items of `sql`, or `None` when a token is unterminated.
pub(crate) fn items(sql: &str) -> Option<Vec<Item>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut at = 0;
    let plain = |from: usize, to: usize, depth: &mut usize, out: &mut Vec<Item>| {
        let bytes = sql.as_bytes();
        let mut i = from;
        while i < to {
            let b = bytes[i];
            if b.is_ascii_whitespace() {
                i += 1;
            } else if word_start(b) {
                let start = i;
                while i < to && word_byte(bytes[i]) {
                    i += 1;
                }
                out.push(Item {
                    kind: ItemKind::Word(sql[start..i].to_lowercase()),
                    span: start..i,
                    depth: *depth,
                });
            } else if b == b'(' {
                out.push(Item {
                    kind: ItemKind::Open,
                    span: i..i + 1,
                    depth: *depth,
                });
                *depth += 1;
                i += 1;
            } else if b == b')' {
                *depth = depth.saturating_sub(1);
                out.push(Item {
                    kind: ItemKind::Close,
                    span: i..i + 1,
                    depth: *depth,
                });
                i += 1;
            } else {
                out.push(Item {
                    kind: ItemKind::Other,
                    span: i..i + 1,
                    depth: *depth,
                });
                i += 1;
            }
        }
    };
    for token in Lexer::new(sql) {
        if !token.terminated {
            return None;
        }
        plain(at, token.span().start, &mut depth, &mut out);
        at = token.span().end;
        match token.kind {
            Kind::Comment => {}
            Kind::QuotedIdent => out.push(Item {
                kind: ItemKind::Quoted(sql[token.body()].replace("\"\"", "\"")),
                span: token.span(),
                depth,
            }),
            _ => out.push(Item {
                kind: ItemKind::Other,
                span: token.span(),
                depth,
            }),
        }
    }
    plain(at, sql.len(), &mut depth, &mut out);
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn words_parentheses_and_tokens() {
        let got: Vec<(ItemKind, usize)> = items("Delete /* x */ FROM \"T\"(a) -- c\r'w'")
            .unwrap()
            .into_iter()
            .map(|i| (i.kind, i.depth))
            .collect();
        assert_eq!(
            got,
            [
                (ItemKind::Word("delete".into()), 0),
                (ItemKind::Word("from".into()), 0),
                (ItemKind::Quoted("T".into()), 0),
                (ItemKind::Open, 0),
                (ItemKind::Word("a".into()), 1),
                (ItemKind::Close, 0),
                (ItemKind::Other, 0),
            ]
        );
        assert!(items("select 'open").is_none());
    }
}
