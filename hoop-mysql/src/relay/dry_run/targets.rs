//! What a dry run's statement writes, read from its SQL alone (pure): the
//! tables an INSERT, REPLACE, UPDATE or DELETE writes and how (for the
//! foreign keys that reference them), what a trigger body writes, why a
//! text cannot be counted, and whether the client may hold table locks.
//! The driver then asks the server about each table (`super`).

use hoop_core::StatementKind;
use hoop_sql::{ParsedSql, classify, mysql::Mysql};
use sqlparser::ast::{
    FromTable, Ident, ObjectName, ObjectNamePart, OnInsert, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins,
};

/// Functions and variables that read the previous statement's
/// diagnostics, which hoop's catalog reads before the statement would
/// reset (`SHOW WARNINGS` and `GET DIAGNOSTICS` are never counted: the
/// policy gives their kinds no row count). `LAST_INSERT_ID()` survives
/// them.
const DIAGNOSTICS: &[&str] = &[
    "row_count",
    "found_rows",
    "@@warning_count",
    "@@error_count",
];

/// Whether `lower` (lower-cased SQL) reads diagnostics: one of
/// [`DIAGNOSTICS`], a function only when a `(` follows (a table or column
/// named `row_count` is no call).
fn reads_diagnostics(lower: &str) -> bool {
    DIAGNOSTICS.iter().any(|word| {
        lower.match_indices(word).any(|(at, _)| {
            word.starts_with("@@") || lower[at + word.len()..].trim_start().starts_with('(')
        })
    })
}

/// What a write does to a table's rows, for the foreign keys that
/// reference it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    /// Inserts only (no referencing foreign key acts).
    Insert,
    /// Deletes rows (DELETE, REPLACE): `ON DELETE` actions.
    Delete,
    /// Updates rows (UPDATE, INSERT … ON DUPLICATE KEY UPDATE): `ON UPDATE`.
    Update,
    /// Whatever a trigger's statement does: both.
    Any,
}

/// A table a statement writes. `schema: None` is the session's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) schema: Option<String>,
    pub(super) name: String,
    pub(super) write: Write,
}

/// A name as hoop may put it into its own catalog queries: printable ASCII
/// without quotes or backslashes (anything else fails closed).
pub(super) fn plain_name(name: &str) -> Result<&str, String> {
    if !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && !name.contains(['\'', '\\', '"'])
    {
        Ok(name)
    } else {
        Err(format!(
            "hoop checks only tables named in plain ASCII, and `{name}` is not"
        ))
    }
}

fn ident(i: &Ident) -> String {
    i.value.clone()
}

/// The table an object name names (`schema.table` or `table`).
fn target(name: &ObjectName, write: Write) -> Result<Target, String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| ObjectNamePart::as_ident(p).map(ident))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("hoop cannot read the table name {name}"))?;
    match parts.as_slice() {
        [table] => Ok(Target {
            schema: None,
            name: table.clone(),
            write,
        }),
        [schema, table] => Ok(Target {
            schema: Some(schema.clone()),
            name: table.clone(),
            write,
        }),
        _ => Err(format!("hoop cannot read the table name {name}")),
    }
}

/// Every base table named in a FROM / JOIN list (derived tables and table
/// functions cannot be written).
fn tables_in(list: &[TableWithJoins], write: Write, out: &mut Vec<Target>) -> Result<(), String> {
    fn factor(f: &TableFactor, write: Write, out: &mut Vec<Target>) -> Result<(), String> {
        match f {
            TableFactor::Table { name, .. } => out.push(target(name, write)?),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => tables_in(std::slice::from_ref(table_with_joins), write, out)?,
            _ => {}
        }
        Ok(())
    }
    for t in list {
        factor(&t.relation, write, out)?;
        for j in &t.joins {
            factor(&j.relation, write, out)?;
        }
    }
    Ok(())
}

/// The tables a statement writes: an INSERT's or REPLACE's target, and
/// every table named in an UPDATE's or DELETE's table list (a multi-table
/// one writes some of them; which, hoop does not work out: all are checked).
/// A SELECT writes none. Anything else cannot be counted.
fn written_tables(statement: &Statement) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    match statement {
        Statement::Query(q) => match &*q.body {
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => {
                return written_tables(s);
            }
            _ => {}
        },
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return Err("hoop cannot count an INSERT into a table function".into());
            };
            let write = if insert.replace_into {
                Write::Delete
            } else if matches!(insert.on, Some(OnInsert::DuplicateKeyUpdate(_))) {
                Write::Update
            } else if insert.on.is_some() {
                Write::Any
            } else {
                Write::Insert
            };
            out.push(target(name, write)?);
        }
        Statement::Update { table, from, .. } => {
            tables_in(std::slice::from_ref(table), Write::Update, &mut out)?;
            if let Some(
                sqlparser::ast::UpdateTableFromKind::BeforeSet(from)
                | sqlparser::ast::UpdateTableFromKind::AfterSet(from),
            ) = from
            {
                tables_in(from, Write::Update, &mut out)?;
            }
        }
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            tables_in(from, Write::Delete, &mut out)?;
            if let Some(using) = &delete.using {
                tables_in(using, Write::Delete, &mut out)?;
            }
        }
        _ => {
            return Err(
                "hoop counts the rows of one SELECT, INSERT, REPLACE, UPDATE or DELETE only".into(),
            );
        }
    }
    Ok(out)
}

/// Why a text's rows cannot be counted, from its SQL alone (`Ok`: the
/// tables it writes).
pub(super) fn statement_targets(sql: &str) -> Result<Vec<Target>, String> {
    let lower = sql.to_ascii_lowercase();
    if reads_diagnostics(&lower) {
        return Err(
            "it reads the previous statement's diagnostics, which hoop's own queries before it would reset"
                .into(),
        );
    }
    let parsed = ParsedSql::parse(&Mysql, sql);
    let classified = classify(&parsed);
    if let Some(code) = classified.iter().find_map(|c| c.server_code.as_ref()) {
        return Err(format!(
            "it runs server-side code ({code}), whose writes hoop cannot check or count"
        ));
    }
    match parsed.statements.as_deref() {
        Ok([one]) => match &one.ast {
            Ok(statement) => written_tables(statement),
            Err(e) => Err(format!("hoop cannot parse it ({e})")),
        },
        Ok(_) => Err("it is not one statement".into()),
        Err(e) => Err(format!("hoop cannot split it ({e})")),
    }
}

/// The tables a trigger's body writes (`schema`: the trigger's, where its
/// unqualified names resolve).
pub(super) fn trigger_targets(body: &str, schema: &str) -> Result<Vec<Target>, String> {
    // `BEGIN stmt; stmt; END` is read as its statements; anything else
    // compound (DECLARE, IF, loops, labels, nested blocks) does not parse.
    let trimmed = body.trim();
    let upper = trimmed.to_ascii_uppercase();
    let body = if upper.len() >= 8
        && upper.starts_with("BEGIN")
        && upper.as_bytes()[5].is_ascii_whitespace()
        && upper.ends_with("END")
        && upper.as_bytes()[upper.len() - 4].is_ascii_whitespace()
    {
        &trimmed[5..trimmed.len() - 3]
    } else {
        trimmed
    };
    let parsed = ParsedSql::parse(&Mysql, body);
    let classified = classify(&parsed);
    let statements = parsed
        .statements
        .as_deref()
        .map_err(|e| format!("hoop cannot split it ({e})"))?;
    let mut out = Vec::new();
    for (s, c) in statements.iter().zip(&classified) {
        if let Some(code) = &c.server_code {
            return Err(format!("it runs server-side code ({code})"));
        }
        let statement = s
            .ast
            .as_ref()
            .map_err(|e| format!("hoop cannot parse it ({e})"))?;
        // `SET NEW.col = …` writes no table.
        if c.kind == StatementKind::Set && c.nested.is_empty() {
            continue;
        }
        for mut t in written_tables(statement)? {
            t.schema.get_or_insert_with(|| schema.to_owned());
            t.write = Write::Any;
            out.push(t);
        }
    }
    Ok(out)
}

/// After a text the client ran: whether it may hold table locks now
/// (`LOCK TABLE[S]`, `FLUSH TABLES … WITH READ LOCK`; `UNLOCK TABLES`
/// alone releases them). Read from words: a false alarm only makes dry runs
/// fail closed until `UNLOCK TABLES`.
pub(in crate::relay) fn note_table_locks(lower: &str, locks: &mut bool) {
    if !lower.contains("lock") {
        return;
    }
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .collect();
    let locking = words.windows(2).any(|w| {
        matches!(w, ["lock", "table" | "tables"])
            || (matches!(w, ["read", "lock"]) && words.contains(&"flush"))
    });
    if locking {
        *locks = true;
    } else if words.contains(&"unlock") {
        *locks = false;
    }
}

/// A string literal of a name checked by [`plain_name`].
pub(super) fn literal(name: &str) -> String {
    format!("'{name}'")
}

/// A backtick identifier.
pub(super) fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(sql: &str) -> Result<Vec<(Option<String>, String, Write)>, String> {
        statement_targets(sql).map(|v| v.into_iter().map(|t| (t.schema, t.name, t.write)).collect())
    }

    #[test]
    fn written_tables_and_their_write() {
        assert_eq!(
            targets("DELETE FROM t WHERE id = 1").expect("ok"),
            [(None, "t".into(), Write::Delete)]
        );
        assert_eq!(
            targets("REPLACE INTO app.T VALUES (1)").expect("ok"),
            [(Some("app".into()), "T".into(), Write::Delete)]
        );
        assert_eq!(
            targets("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE v = 2").expect("ok"),
            [(None, "t".into(), Write::Update)]
        );
        assert_eq!(
            targets("INSERT INTO t SELECT * FROM u").expect("ok"),
            [(None, "t".into(), Write::Insert)]
        );
        assert_eq!(
            targets("UPDATE a JOIN b ON a.id = b.id SET a.v = b.v").expect("ok"),
            [
                (None, "a".into(), Write::Update),
                (None, "b".into(), Write::Update)
            ]
        );
        assert_eq!(
            targets("DELETE a FROM a JOIN b ON a.id = b.id").expect("ok"),
            [
                (None, "a".into(), Write::Delete),
                (None, "b".into(), Write::Delete)
            ]
        );
        assert!(targets("SELECT * FROM t").expect("ok").is_empty());
    }

    #[test]
    fn what_cannot_be_counted_says_why() {
        for (sql, why) in [
            ("SELECT ROW_COUNT()", "diagnostics"),
            ("DELETE FROM t WHERE app.f(id)", "server-side code"),
            ("SELECT 1; SELECT 2", "not one statement"),
            ("CALL p()", "server-side code"),
            ("TRUNCATE t", "only"),
        ] {
            let e = targets(sql).expect_err("not countable");
            assert!(e.contains(why), "{sql}: {e}");
        }
    }

    #[test]
    fn trigger_bodies_write_into_their_schema() {
        let t = trigger_targets("INSERT INTO audit (id) VALUES (OLD.id)", "app").expect("ok");
        assert_eq!(t[0].schema.as_deref(), Some("app"));
        assert_eq!(t[0].write, Write::Any);
        assert!(
            trigger_targets("SET NEW.v = 1", "app")
                .expect("ok")
                .is_empty()
        );
        let t = trigger_targets(
            "BEGIN\n INSERT INTO a VALUES (1);\n DELETE FROM b.c WHERE id = OLD.id;\nEND",
            "app",
        )
        .expect("two statements");
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].schema.as_deref(), Some("b"));
        for compound in [
            "BEGIN DECLARE x INT; SET x = 1; END",
            "BEGIN IF OLD.id > 1 THEN DELETE FROM a; END IF; END",
            "BEGIN CALL p(); END",
        ] {
            assert!(trigger_targets(compound, "app").is_err(), "{compound}");
        }
    }

    #[test]
    fn diagnostics_are_calls_not_names() {
        for reads in [
            "select row_count()",
            "select found_rows ( )",
            "select @@warning_count",
            "insert into t select @@error_count",
        ] {
            assert!(reads_diagnostics(reads), "{reads}");
        }
        for plain in [
            "delete from errors where id = 1",
            "delete from t where row_count = 3",
            "select warnings from t",
            "select last_insert_id()",
        ] {
            assert!(!reads_diagnostics(plain), "{plain}");
        }
    }

    #[test]
    fn table_locks_are_noted_from_words() {
        let mut locks = false;
        note_table_locks("lock tables items write", &mut locks);
        assert!(locks);
        note_table_locks("select 1 from t lock in share mode", &mut locks);
        assert!(locks);
        note_table_locks("unlock tables", &mut locks);
        assert!(!locks);
        note_table_locks("select * from t lock in share mode", &mut locks);
        assert!(!locks, "a row lock is not a table lock");
        note_table_locks("flush tables items with read lock", &mut locks);
        assert!(locks);
    }
}
