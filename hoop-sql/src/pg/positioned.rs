//! `UPDATE … WHERE CURRENT OF cursor` and `DELETE … WHERE CURRENT OF
//! cursor`: positioned writes name the one row a cursor stands on. The SQL
//! library does not know the clause, so it is found here, with the server's
//! own lexing ([`super::words`]), and cut out before parsing; the statement
//! is then known to touch one row.

use super::words::{Item, ItemKind, items};
use crate::dialect::Positioned;

fn word(item: Option<&Item>, want: &str) -> bool {
    item.is_some_and(|i| i.depth == 0 && matches!(&i.kind, ItemKind::Word(w) if w == want))
}

/// The statement without `WHERE CURRENT OF cursor`, when the clause is at
/// the top level and only `RETURNING …` (or nothing) follows it.
pub(crate) fn positioned(piece: &str) -> Option<Positioned> {
    let items = items(piece)?;
    let at = (0..items.len()).find(|&i| {
        word(items.get(i), "where")
            && word(items.get(i + 1), "current")
            && word(items.get(i + 2), "of")
    })?;
    let name = items.get(at + 3).filter(|i| i.depth == 0)?;
    let cursor = match &name.kind {
        ItemKind::Word(w) => w.clone(),
        ItemKind::Quoted(q) => q.clone(),
        _ => return None,
    };
    match items.get(at + 4) {
        None => {}
        Some(_) if word(items.get(at + 4), "returning") => {}
        Some(_) => return None,
    }
    let mut text = String::with_capacity(piece.len());
    text.push_str(&piece[..items[at].span.start]);
    text.push(' ');
    text.push_str(&piece[name.span.end..]);
    Some(Positioned { text, cursor })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_clause_is_cut_where_the_server_reads_it() {
        let p = positioned("UPDATE t SET a = 1 WHERE CURRENT OF cur").unwrap();
        assert_eq!(
            (p.text.trim_end(), p.cursor.as_str()),
            ("UPDATE t SET a = 1", "cur")
        );
        let p = positioned("delete from t where current of \"My Cur\" returning *").unwrap();
        assert_eq!(p.text, "delete from t   returning *");
        assert_eq!(p.cursor, "My Cur");
        // Not at the top level, inside a string or comment, or followed by
        // more than RETURNING: not a positioned write.
        assert!(positioned("DELETE FROM t WHERE id IN (SELECT 1 WHERE CURRENT OF c)").is_none());
        assert!(positioned("DELETE FROM t WHERE 'x WHERE CURRENT OF c' = a").is_none());
        assert!(positioned("DELETE FROM t -- WHERE CURRENT OF c").is_none());
        assert!(positioned("DELETE FROM t WHERE CURRENT OF c OR true").is_none());
        // A comment ends at a carriage return: what follows is code.
        assert!(positioned("DELETE FROM t -- x\r WHERE CURRENT OF c").is_some());
    }
}
