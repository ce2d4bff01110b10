//! The SQL statements that name a session's prepared statements and
//! cursors: `PREPARE`, `EXECUTE`, `DEALLOCATE`, `DECLARE`, `FETCH`/`MOVE`,
//! `CLOSE` and `DISCARD ALL`. PostgreSQL keeps one namespace for prepared
//! statements and one for cursors (portals), shared by SQL and the
//! extended protocol: a statement made by SQL `PREPARE` can be bound by a
//! protocol Bind, a cursor made by SQL `DECLARE` run by a protocol Execute,
//! and the other way round. The driver reads these statements (once the
//! server has confirmed them) to keep its maps of both namespaces in step
//! with the server's.
//!
//! Names are folded as the server folds them: unquoted words lower-cased
//! in ASCII only, quoted ones verbatim, both cut to 63 bytes on a character
//! boundary (`NAMEDATALEN - 1`).

use crate::SessionOp;

use super::unicode_ident;
use super::words::{Item, ItemKind, items};

/// The longest name the server keeps (longer ones are truncated).
const NAME_MAX: usize = 63;

/// Statements this module reads start with one of these words.
const FIRST_WORDS: [&str; 8] = [
    "prepare",
    "execute",
    "deallocate",
    "declare",
    "fetch",
    "move",
    "close",
    "discard",
];

/// The leading word of `piece` when no comment comes before it (a cheap
/// filter: most statements are none of these).
fn leading_word(piece: &str) -> Option<&str> {
    let t = piece.trim_start();
    if t.starts_with("--") || t.starts_with("/*") {
        return None;
    }
    let end = t
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(t.len());
    Some(&t[..end])
}

/// What `piece` (one statement, without its `;`) does to a named object,
/// if anything. `None` also when the statement cannot be read (an
/// unterminated token, a `U&"…"` name that does not decode): the driver
/// then fails closed on the server's acknowledgement.
pub(crate) fn session_op(piece: &str) -> Option<SessionOp> {
    let cheap = leading_word(piece);
    if cheap.is_some_and(|w| !FIRST_WORDS.iter().any(|f| w.eq_ignore_ascii_case(f))) {
        return None;
    }
    let text = unicode_ident::rewrite(piece).ok()?;
    let items = items(&text)?;
    let word = |i: usize| match items.get(i).map(|it| &it.kind) {
        Some(ItemKind::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let name_at = |i: usize| items.get(i).and_then(|it| name(&text, it));
    let body_after = |i: usize| {
        let rest = text[items.get(i)?.span.end..].trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    };
    match word(0)? {
        "prepare" => {
            // `PREPARE TRANSACTION 'gid'` is two-phase commit, not a name.
            if word(1) == Some("transaction")
                && items.get(2).is_some_and(|i| i.kind == ItemKind::Other)
            {
                return None;
            }
            let name = name_at(1)?;
            let mut at = 2;
            if items.get(at).map(|i| &i.kind) == Some(&ItemKind::Open) {
                // The parameter types: up to the parenthesis closing it.
                at += items[at + 1..]
                    .iter()
                    .position(|i| i.kind == ItemKind::Close && i.depth == 0)?
                    + 2;
            }
            (word(at) == Some("as")).then_some(())?;
            Some(SessionOp::Prepare {
                name,
                body: body_after(at)?,
            })
        }
        "execute" => Some(SessionOp::Execute { name: name_at(1)? }),
        "deallocate" => {
            let at = if word(1) == Some("prepare") && items.len() > 2 {
                2
            } else {
                1
            };
            if word(at) == Some("all") && items.len() == at + 1 {
                return Some(SessionOp::Deallocate { name: None });
            }
            (items.len() == at + 1).then_some(())?;
            Some(SessionOp::Deallocate {
                name: Some(name_at(at)?),
            })
        }
        "declare" => {
            let name = name_at(1)?;
            let mut hold = false;
            let mut binary = false;
            let mut at = 2;
            loop {
                match word(at)? {
                    "for" => break,
                    "binary" => binary = true,
                    "with" if word(at + 1) == Some("hold") => {
                        hold = true;
                        at += 1;
                    }
                    "without" if word(at + 1) == Some("hold") => at += 1,
                    "asensitive" | "insensitive" | "no" | "scroll" | "cursor" => {}
                    _ => return None,
                }
                at += 1;
            }
            Some(SessionOp::Declare {
                name,
                body: body_after(at)?,
                hold,
                binary,
            })
        }
        "fetch" | "move" => Some(SessionOp::Fetch {
            name: name_at(items.len().checked_sub(1)?)?,
        }),
        "close" => {
            if word(1) == Some("all") && items.len() == 2 {
                return Some(SessionOp::Close { name: None });
            }
            (items.len() == 2).then_some(())?;
            Some(SessionOp::Close {
                name: Some(name_at(1)?),
            })
        }
        "discard" if word(1) == Some("all") && items.len() == 2 => Some(SessionOp::DiscardAll),
        _ => None,
    }
}

/// Every word and quoted identifier of `piece`, folded as names are
/// (see [`session_op`]'s module); `None` when it cannot be read.
pub(crate) fn identifiers(piece: &str) -> Option<Vec<String>> {
    let text = unicode_ident::rewrite(piece).ok()?;
    Some(
        items(&text)?
            .iter()
            .filter_map(|item| name(&text, item))
            .collect(),
    )
}

/// The name an item spells, folded and truncated as the server does.
fn name(text: &str, item: &Item) -> Option<String> {
    let folded = match &item.kind {
        ItemKind::Word(_) => text[item.span.clone()].to_ascii_lowercase(),
        ItemKind::Quoted(q) if !q.is_empty() => q.clone(),
        _ => return None,
    };
    Some(truncate(folded))
}

fn truncate(mut name: String) -> String {
    if name.len() > NAME_MAX {
        let mut cut = NAME_MAX;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_wraps)] // compared with `session_op`'s answer
    fn prepare(name: &str, body: &str) -> Option<SessionOp> {
        Some(SessionOp::Prepare {
            name: name.into(),
            body: body.into(),
        })
    }

    #[test]
    fn prepare_names_and_bodies() {
        assert_eq!(
            session_op("PREPARE p AS SELECT ssn FROM t"),
            prepare("p", "SELECT ssn FROM t")
        );
        assert_eq!(
            session_op("prepare \"My P\" (int, numeric(10,2), \"odd(type\") AS\n SELECT $1"),
            prepare("My P", "SELECT $1")
        );
        assert_eq!(
            session_op("/* c */ PREPARE Pé -- x\n AS select 1"),
            prepare("pé", "select 1")
        );
        assert_eq!(
            session_op("PREPARE U&\"\\0070q\" AS SELECT 1"),
            prepare("pq", "SELECT 1")
        );
        assert_eq!(session_op("PREPARE TRANSACTION 'gid'"), None);
        assert_eq!(session_op("PREPARE p SELECT 1"), None);
        assert_eq!(session_op("PREPARE p AS"), None);
        assert_eq!(session_op("PREPARE p (int AS SELECT 1"), None);
    }

    #[test]
    fn names_are_cut_to_63_bytes_on_a_character_boundary() {
        let long = format!("{}é", "a".repeat(62));
        assert_eq!(
            session_op(&format!("EXECUTE {long}X")),
            Some(SessionOp::Execute {
                name: "a".repeat(62)
            })
        );
        assert_eq!(
            session_op(&format!("CLOSE {}", "B".repeat(70))),
            Some(SessionOp::Close {
                name: Some("b".repeat(63))
            })
        );
    }

    #[test]
    fn declare_options() {
        assert_eq!(
            session_op(
                "DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITH HOLD FOR SELECT ssn FROM t"
            ),
            Some(SessionOp::Declare {
                name: "c".into(),
                body: "SELECT ssn FROM t".into(),
                hold: true,
                binary: true,
            })
        );
        assert_eq!(
            session_op("declare \"C\" cursor without hold for (select 1)"),
            Some(SessionOp::Declare {
                name: "C".into(),
                body: "(select 1)".into(),
                hold: false,
                binary: false,
            })
        );
        assert_eq!(session_op("DECLARE c CURSOR FOR"), None);
        assert_eq!(session_op("DECLARE c GLOBAL CURSOR FOR SELECT 1"), None);
    }

    #[test]
    fn release_and_use() {
        let dealloc = |name: Option<&str>| {
            Some(SessionOp::Deallocate {
                name: name.map(Into::into),
            })
        };
        assert_eq!(session_op("DEALLOCATE p"), dealloc(Some("p")));
        assert_eq!(session_op("DEALLOCATE PREPARE p"), dealloc(Some("p")));
        assert_eq!(session_op("deallocate prepare all"), dealloc(None));
        assert_eq!(session_op("DEALLOCATE ALL"), dealloc(None));
        assert_eq!(session_op("DEALLOCATE \"all\""), dealloc(Some("all")));
        assert_eq!(session_op("DEALLOCATE prepare"), dealloc(Some("prepare")));
        assert_eq!(
            session_op("CLOSE ALL"),
            Some(SessionOp::Close { name: None })
        );
        assert_eq!(
            session_op("close \"ALL\""),
            Some(SessionOp::Close {
                name: Some("ALL".into())
            })
        );
        assert_eq!(session_op("DISCARD ALL"), Some(SessionOp::DiscardAll));
        assert_eq!(session_op("DISCARD PLANS"), None);
        assert_eq!(
            session_op("FETCH FORWARD 5 FROM \"Cur\""),
            Some(SessionOp::Fetch { name: "Cur".into() })
        );
        assert_eq!(
            session_op("move absolute -1 in c"),
            Some(SessionOp::Fetch { name: "c".into() })
        );
        assert_eq!(
            session_op("EXECUTE p(1, 'x')"),
            Some(SessionOp::Execute { name: "p".into() })
        );
        assert_eq!(session_op("SELECT 1"), None);
        assert_eq!(session_op("EXECUTE 'text'"), None);
    }

    #[test]
    fn identifiers_fold_like_names() {
        assert_eq!(
            identifiers("SELECT SSN, \"Card\" FROM U&\"p\\0065ople\" -- ssn2\n WHERE x = 'ssn3'")
                .unwrap(),
            ["select", "ssn", "Card", "from", "people", "where", "x"]
        );
        assert_eq!(identifiers("SELECT 'open"), None);
    }
}
