#![allow(clippy::unwrap_used)]

use super::*;
use crate::{BinaryUnmaskable, ColumnRef, ColumnRule, MaskRules};
use hoop_sql::pg::Postgres;

fn analyze_sql(sql: &str, rules: &MaskRules) -> SqlLineage {
    analyze(&ParsedSql::parse(&Postgres, sql), rules)
}

fn analyze_query_sql(sql: &str, rules: &MaskRules) -> Lineage {
    analyze_query(&ParsedSql::parse(&Postgres, sql), rules)
}

use ColumnLineage::{Clean, Unknown};

/// Rule 0: customers.ssn (partial); rule 1: bare `email` (redact).
fn rules() -> MaskRules {
    MaskRules::new(
        vec![
            ColumnRule {
                name: "ssn".into(),
                columns: vec![ColumnRef::parse("customers.ssn").unwrap()],
                strategy: Strategy::Partial,
                keep_last: 4,
            },
            ColumnRule {
                name: "email".into(),
                columns: vec![ColumnRef::parse("email").unwrap()],
                strategy: Strategy::Redact,
                keep_last: 0,
            },
        ],
        Vec::new(),
        Vec::new(),
        BinaryUnmaskable::Refuse,
    )
    .unwrap()
}

/// Table-only rules (no bare rule), for whole-row precision tests.
fn table_rules() -> MaskRules {
    MaskRules::new(
        vec![ColumnRule {
            name: "ssn".into(),
            columns: vec![ColumnRef::parse("public.customers.ssn").unwrap()],
            strategy: Strategy::Redact,
            keep_last: 0,
        }],
        Vec::new(),
        Vec::new(),
        BinaryUnmaskable::Refuse,
    )
    .unwrap()
}

fn lin(sql: &str) -> Lineage {
    lin_with(sql, &rules())
}

fn lin_with(sql: &str, rules: &MaskRules) -> Lineage {
    let all = analyze_sql(sql, rules);
    assert!(!all.unparsed, "did not parse: {sql}");
    all.statement(0)
}

const SSN: ColumnLineage = ColumnLineage::Masked {
    rule: 0,
    direct: true,
};
const SSN_DERIVED: ColumnLineage = ColumnLineage::Masked {
    rule: 0,
    direct: false,
};
const EMAIL: ColumnLineage = ColumnLineage::Masked {
    rule: 1,
    direct: true,
};

fn masked(l: &ColumnLineage) -> bool {
    matches!(l, ColumnLineage::Masked { .. } | Unknown)
}

fn cols(sql: &str) -> Vec<ColumnLineage> {
    lin(sql).columns
}

#[test]
fn aliases_and_qualified_references() {
    assert_eq!(cols("SELECT ssn AS x FROM customers"), [SSN]);
    assert_eq!(cols("SELECT c.ssn FROM customers c"), [SSN]);
    assert_eq!(
        cols("SELECT public.customers.ssn FROM public.customers"),
        [SSN]
    );
    assert_eq!(
        cols("SELECT \"SSN\" FROM customers"),
        [Clean],
        "quoted identifiers keep their case"
    );
    assert_eq!(
        cols("SELECT SSN FROM Customers"),
        [SSN],
        "unquoted identifiers fold"
    );
    assert_eq!(cols("SELECT id, name FROM customers"), [Clean, Clean]);
    assert_eq!(
        cols("SELECT ssn FROM orders"),
        [Clean],
        "table rule only covers customers"
    );
    assert_eq!(
        cols("SELECT email FROM orders"),
        [EMAIL],
        "bare rule covers any table"
    );
}

#[test]
fn expressions_are_masked_and_not_direct() {
    assert_eq!(
        cols("SELECT name, upper(ssn) FROM customers"),
        [Clean, SSN_DERIVED]
    );
    for sql in [
        "SELECT ssn || '' FROM customers",
        "SELECT substr(ssn, 1, 3) FROM customers",
        "SELECT ssn::text FROM customers",
        "SELECT CAST(ssn AS varchar(20)) FROM customers",
        "SELECT coalesce(null, ssn) FROM customers",
        "SELECT CASE WHEN ssn LIKE '1%' THEN 1 ELSE 0 END FROM customers",
        "SELECT array_agg(ssn) FROM customers",
        "SELECT string_agg(ssn, ',') FROM customers",
        "SELECT json_agg(json_build_object('s', ssn)) FROM customers",
        "SELECT reverse(ssn) FROM customers",
        "SELECT count(*) FILTER (WHERE ssn > '5') FROM customers",
        "SELECT (SELECT ssn FROM customers LIMIT 1)",
        "SELECT (SELECT max(c.ssn) FROM customers c WHERE c.id = o.customer_id) FROM orders o",
        "SELECT EXISTS (SELECT 1 FROM customers WHERE ssn LIKE '1%')",
        "SELECT ARRAY(SELECT ssn FROM customers)",
        "SELECT (SELECT x FROM (SELECT ssn AS x FROM customers) d)",
        "SELECT lag(ssn) OVER (ORDER BY id) FROM customers",
    ] {
        let l = lin(sql);
        assert_eq!(l.columns.len(), 1, "{sql}");
        assert!(masked(&l.columns[0]), "{sql}: {:?}", l.columns[0]);
        assert_ne!(l.columns[0], SSN, "{sql}: a computed value is never direct");
    }
}

#[test]
fn whole_row_references() {
    for sql in [
        "SELECT row_to_json(c) FROM customers c",
        "SELECT to_json(c) FROM customers c",
        "SELECT c::text FROM customers c",
        "SELECT c FROM customers c",
        "SELECT customers FROM customers",
        "SELECT to_jsonb(c.*) FROM customers c",
        "SELECT (c).ssn FROM customers c",
        "SELECT row_to_json(d) FROM (SELECT ssn FROM customers) d",
        "SELECT (SELECT json_agg(c) FROM customers c)",
    ] {
        let l = lin_with(sql, &table_rules());
        assert!(masked(&l.columns[0]), "{sql}: {:?}", l.columns[0]);
    }
    // Without a bare rule a whole row of a table with no masked column is clean …
    assert_eq!(
        lin_with("SELECT row_to_json(o) FROM orders o", &table_rules()).columns,
        [Clean]
    );
    // … but with a bare rule any table may have the column.
    assert!(masked(&cols("SELECT row_to_json(o) FROM orders o")[0]));
    // count(*) carries no values.
    assert_eq!(cols("SELECT count(*) FROM customers"), [Clean]);
}

#[test]
fn set_operations_mask_a_position_if_any_branch_does() {
    assert_eq!(
        cols("SELECT name, 1 FROM customers UNION SELECT ssn, 2 FROM customers"),
        [SSN, Clean]
    );
    assert!(masked(
        &cols("SELECT id FROM orders INTERSECT SELECT upper(ssn) FROM customers")[0]
    ));
    assert!(masked(
        &cols("SELECT id FROM orders EXCEPT ALL SELECT ssn FROM customers")[0]
    ));
}

#[test]
fn ctes_and_derived_tables_propagate() {
    assert_eq!(
        cols("WITH x AS (SELECT ssn AS s, name FROM customers) SELECT name, s FROM x"),
        [Clean, SSN]
    );
    assert_eq!(
        cols("WITH x AS (SELECT ssn, name FROM customers) SELECT * FROM x"),
        [SSN, Clean]
    );
    assert_eq!(
        cols("WITH x(a, b) AS (SELECT ssn, name FROM customers) SELECT b, a FROM x"),
        [Clean, SSN]
    );
    assert_eq!(
        cols("SELECT d.* FROM (SELECT name, ssn FROM customers) d"),
        [Clean, SSN]
    );
    assert_eq!(
        cols("SELECT t.q FROM (SELECT lower(ssn) AS q FROM customers) t"),
        [SSN_DERIVED]
    );
    // A star through a derived table over a base table: named by rules.
    assert_eq!(
        cols("SELECT ssn, id FROM (SELECT * FROM customers) d"),
        [SSN, Clean]
    );
    // Nested CTEs and a CTE shadowing a table name.
    assert_eq!(
        cols("WITH customers AS (SELECT 1 AS ssn) SELECT ssn FROM customers"),
        [Clean],
        "the CTE, not the table, is in scope"
    );
    assert!(masked(
        &cols("WITH a AS (SELECT ssn FROM customers), b AS (SELECT * FROM a) SELECT * FROM b")[0]
    ));
    // Recursive CTE.
    let sql = "WITH RECURSIVE r(n, s) AS (SELECT 1, ''::text UNION ALL SELECT n + 1, (SELECT ssn FROM customers LIMIT 1) FROM r WHERE n < 3) SELECT n, s FROM r";
    assert_eq!(cols(sql)[0], Clean);
    assert!(masked(&cols(sql)[1]));
    // LATERAL.
    assert!(masked(
        &cols("SELECT l.x FROM customers c, LATERAL (SELECT c.ssn AS x) l")[0]
    ));
}

#[test]
fn base_table_stars_are_resolved_by_row_description() {
    let l = lin("SELECT * FROM customers");
    assert!(
        matches!(&l.columns[0], ColumnLineage::FromTable { tables, masked_if_unresolved: true } if tables[0].name == "customers")
    );
    assert!(matches!(l.column(5), ColumnLineage::FromTable { .. }));
    let l = lin("SELECT c.*, o.total FROM customers c JOIN orders o ON o.cid = c.id");
    assert!(matches!(l.column(0), ColumnLineage::FromTable { .. }));
    // A masked expression after a star of unknown width: its position is
    // unknowable, so the rest is Unknown.
    let l = lin("SELECT *, upper(ssn) FROM customers");
    assert_eq!(l.rest, Some(Unknown));
    let l = lin("TABLE customers");
    assert!(matches!(&l.columns[0], ColumnLineage::FromTable { .. }));
    // Without a bare rule, a star over a table no rule touches is clean when unresolved.
    let l = lin_with("SELECT * FROM orders", &table_rules());
    assert!(matches!(
        &l.columns[0],
        ColumnLineage::FromTable {
            masked_if_unresolved: false,
            ..
        }
    ));
}

#[test]
fn dml_returning() {
    assert_eq!(
        cols("INSERT INTO customers (name, ssn) VALUES ('a', 'b') RETURNING id, ssn"),
        [Clean, SSN]
    );
    assert!(masked(
        &cols("UPDATE customers SET name = 'x' WHERE id = 1 RETURNING upper(ssn)")[0]
    ));
    assert_eq!(
        cols("DELETE FROM customers WHERE id = 1 RETURNING ssn"),
        [SSN]
    );
    assert!(matches!(
        lin("DELETE FROM customers RETURNING *").column(0),
        ColumnLineage::FromTable { .. }
    ));
    assert!(masked(
        &cols("WITH d AS (DELETE FROM customers RETURNING ssn) SELECT * FROM d")[0]
    ));
    assert_eq!(
        lin("UPDATE customers SET name = 'x'").columns,
        Vec::<ColumnLineage>::new()
    );
}

#[test]
fn writes_of_masked_data_are_flagged() {
    for sql in [
        "INSERT INTO notes (body) SELECT ssn FROM customers",
        "UPDATE customers SET name = ssn",
        "CREATE TABLE leak AS SELECT ssn FROM customers",
        "SELECT ssn INTO leak FROM customers",
        "CREATE VIEW v AS SELECT upper(ssn) FROM customers",
        "SELECT pg_notify('ch', ssn) FROM customers",
        "SELECT 1 FROM customers WHERE set_config('x.y', ssn, false) IS NULL",
        "COPY (SELECT ssn FROM customers) TO '/tmp/x'",
        // MERGE copies like INSERT … SELECT and UPDATE … FROM.
        "MERGE INTO notes n USING customers c ON n.id = c.id WHEN NOT MATCHED THEN INSERT (id, body) VALUES (c.id, c.ssn)",
        "MERGE INTO notes n USING customers c ON n.id = c.id WHEN MATCHED THEN UPDATE SET body = c.ssn",
        "MERGE INTO notes n USING (SELECT id, upper(ssn) AS s FROM customers) c ON n.id = c.id WHEN MATCHED THEN UPDATE SET body = c.s",
        "MERGE INTO notes n USING customers c ON false WHEN NOT MATCHED AND c.id > 0 THEN INSERT VALUES (c.id, c.ssn || '')",
        "MERGE INTO customers t USING customers s ON t.id = s.id WHEN MATCHED THEN UPDATE SET name = s.ssn",
        "MERGE INTO notes n USING (SELECT * FROM f()) c ON n.id = c.id WHEN MATCHED THEN UPDATE SET body = c.x",
    ] {
        assert!(analyze_sql(sql, &rules()).writes_masked(), "{sql}");
    }
    for sql in [
        "INSERT INTO notes (body) SELECT name FROM customers",
        "UPDATE customers SET ssn = ssn",
        "SELECT pg_notify('ch', name) FROM customers",
        "SELECT ssn FROM customers",
        "MERGE INTO notes n USING customers c ON n.id = c.id WHEN MATCHED THEN UPDATE SET body = c.name",
        "MERGE INTO notes n USING customers c ON n.id = c.id WHEN NOT MATCHED THEN INSERT (id, body) VALUES (c.id, c.name)",
        "MERGE INTO customers t USING customers s ON t.id = s.id WHEN MATCHED THEN UPDATE SET ssn = s.ssn",
        "MERGE INTO notes n USING customers c ON n.id = c.id AND c.ssn = '1' WHEN MATCHED THEN DELETE",
    ] {
        assert!(!analyze_sql(sql, &rules()).writes_masked(), "{sql}");
    }
}

#[test]
fn cursors_explain_values_and_opaque_statements() {
    let r = rules();
    assert_eq!(
        analyze_query_sql("SELECT name, ssn FROM customers", &r).columns,
        [Clean, SSN]
    );
    assert_eq!(
        analyze_query_sql("DECLARE c CURSOR FOR SELECT name, ssn FROM customers", &r).columns,
        [Clean, SSN]
    );
    assert_eq!(
        lin("FETCH 10 FROM c").column(0),
        &Unknown,
        "FETCH needs the cursor's query"
    );
    assert_eq!(
        lin("EXPLAIN VERBOSE SELECT * FROM customers WHERE ssn = '1'").column(0),
        &Unknown
    );
    assert_eq!(lin("EXPLAIN SELECT * FROM orders").column(0), &Clean);
    assert_eq!(cols("VALUES (1, 'a'), (2, 'b')"), [Clean, Clean]);
    assert!(masked(
        &cols("VALUES (1, (SELECT ssn FROM customers LIMIT 1))")[1]
    ));
    assert_eq!(
        lin("SELECT * FROM my_function()").column(0),
        &Unknown,
        "unknown set-returning function"
    );
    assert_eq!(cols("SELECT g FROM generate_series(1, 3) g"), [Clean]);
    assert!(masked(
        &cols("SELECT u FROM customers c, unnest(ARRAY[c.ssn]) u")[0]
    ));
    assert!(masked(
        &cols("SELECT query_to_xml('select 1', true, false, '')")[0]
    ));
    // Every built-in that runs a query text: its result is unproven.
    for sql in [
        "SELECT ts_rewrite('x'::tsquery, 'SELECT ''x''::tsquery, ssn::tsquery FROM customers')",
        "SELECT * FROM ts_stat('SELECT to_tsvector(ssn) FROM customers')",
        "SELECT word FROM pg_catalog.ts_stat('SELECT to_tsvector(ssn) FROM customers')",
        "SELECT table_to_xml('customers', true, false, '')",
        "SELECT cursor_to_xml('c', 10, true, false, '')",
        "SELECT database_to_xml(true, false, '')",
    ] {
        assert!(masked(&cols(sql)[0]), "{sql}");
    }
    assert_eq!(lin("SHOW search_path").column(0), &Clean);
    assert_eq!(lin("EXECUTE stmt(1)").column(0), &Unknown);
    assert_eq!(lin("CALL proc()").column(0), &Unknown);
}

#[test]
fn unparseable_sql_is_unknown_only_when_column_rules_exist() {
    let all = analyze_sql("SELEC ssn FRM customers", &rules());
    assert!(all.unparsed);
    assert_eq!(all.statement(0).column(0), &Unknown);
    let none =
        MaskRules::new(Vec::new(), Vec::new(), Vec::new(), BinaryUnmaskable::Refuse).unwrap();
    assert_eq!(
        analyze_sql("SELEC ssn FRM customers", &none)
            .statement(0)
            .column(3),
        &Clean
    );
}

#[test]
fn several_statements_each_get_a_lineage() {
    let all = analyze_sql(
        "SELECT name FROM customers; SELECT ssn FROM customers",
        &rules(),
    );
    assert_eq!(all.statement(0).columns, [Clean]);
    assert_eq!(all.statement(1).columns, [SSN]);
}

#[test]
fn views_known_from_the_catalog_are_masked() {
    let mut r = table_rules();
    r.set_masked_relations(vec![(
        TableName {
            schema: Some("public".into()),
            name: "customer_v".into(),
        },
        0,
    )]);
    assert!(masked(
        &lin_with("SELECT upper(anything) FROM customer_v", &r).columns[0]
    ));
    assert!(masked(
        &lin_with("SELECT v.x FROM public.customer_v v", &r).columns[0]
    ));
}

/// Property-style: random compositions of SQL forms around `ssn` never
/// yield `Clean` for the position that textually contains it.
#[test]
fn random_compositions_never_leave_the_masked_column_clean() {
    let wrappers: &[fn(&str) -> String] = &[
        |e| format!("upper({e})"),
        |e| format!("{e} || 'x'"),
        |e| format!("substr({e}, 1, 3)"),
        |e| format!("({e})::text"),
        |e| format!("coalesce({e}, 'n')"),
        |e| format!("CASE WHEN {e} IS NULL THEN 'a' ELSE {e} END"),
        |e| format!("(SELECT {e})"),
        |e| format!("concat_ws('-', 'a', {e})"),
        |e| format!("md5({e})"),
        |e| format!("length({e})"),
        |e| format!("(SELECT max(z) FROM (SELECT {e} AS z) q)"),
        |e| format!("ARRAY[{e}]"),
        |e| format!("row({e}, 1)"),
        |e| format!("json_build_object('k', {e})"),
    ];
    let sources: &[fn(&str, &str) -> String] = &[
        |prefix, item| format!("SELECT id, {item} FROM customers {prefix}"),
        |prefix, item| format!("SELECT id, {item} FROM customers {prefix} UNION ALL SELECT 1, 'x'"),
        |prefix, item| {
            format!("WITH w AS (SELECT * FROM customers {prefix}) SELECT id, {item} FROM w")
        },
        |prefix, item| {
            format!("SELECT d.id, d.v FROM (SELECT id, {item} AS v FROM customers {prefix}) d")
        },
        |prefix, item| {
            format!("WITH w AS (SELECT id, {item} AS v FROM customers {prefix}) SELECT * FROM w")
        },
        |prefix, item| {
            format!("SELECT o.id, (SELECT {item} FROM customers {prefix} LIMIT 1) FROM orders o")
        },
    ];
    let refs = [
        ("", "ssn"),
        ("c", "c.ssn"),
        ("AS c", "c.ssn"),
        ("", "customers.ssn"),
    ];
    // A small deterministic generator (xorshift) keeps the test reproducible.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let r = rules();
    for _ in 0..400 {
        let (prefix, column) = refs[next(refs.len())];
        let mut expr = column.to_owned();
        for _ in 0..next(4) {
            expr = wrappers[next(wrappers.len())](&expr);
        }
        let sql = sources[next(sources.len())](prefix, &expr);
        let all = analyze_sql(&sql, &r);
        assert!(!all.unparsed, "{sql}");
        let l = all.statement(0);
        let pos = l.column(1);
        assert!(masked(pos), "{sql}: {pos:?}");
    }
}

#[test]
fn routines_that_are_not_built_in_are_unproven() {
    // A user's function may return any value it reads.
    assert_eq!(cols("SELECT id, leak(id) FROM orders"), [Clean, Unknown]);
    assert_eq!(cols("SELECT app.fmt(name) FROM orders"), [Unknown]);
    assert_eq!(cols("SELECT public.lower(name) FROM orders"), [Unknown]);
    // Built-ins of clean columns stay clean.
    assert_eq!(
        cols("SELECT lower(name), pg_catalog.upper(name), now() FROM orders"),
        [Clean, Clean, Clean]
    );
    // Rows of a function that only shares a built-in's name.
    assert_eq!(cols("SELECT * FROM app.generate_series(1, 3)"), [Unknown]);
    assert_eq!(cols("SELECT * FROM generate_series(1, 3) g"), [Clean]);
}

#[test]
fn unicode_escaped_identifiers_resolve_as_the_server_resolves_them() {
    // `U&"\0073sn"` is `ssn` to PostgreSQL: masked, or unprovable (masked
    // as unknown), never clean.
    for sql in [
        r#"SELECT U&"\0073sn" FROM customers"#,
        r#"SELECT U&"\0073sn" FROM U&"\0063ustomers""#,
        r#"SELECT U&"!0073sn" UESCAPE '!' FROM customers"#,
        r#"SELECT c.U&"\0073sn" FROM customers c"#,
    ] {
        let all = analyze_sql(sql, &rules());
        assert!(
            all.unparsed || masked(&all.statement(0).column(0).clone()),
            "{sql}: {:?}",
            all.statement(0).column(0)
        );
    }
}

#[test]
fn schema_changes_to_masked_names_are_flagged() {
    for sql in [
        "ALTER TABLE customers RENAME COLUMN ssn TO s",
        "ALTER TABLE customers RENAME TO staff",
        "ALTER TABLE public.customers ADD COLUMN note text",
        "ALTER TABLE other RENAME TO customers",
        "ALTER TABLE other RENAME COLUMN email TO e",
        "ALTER TABLE other RENAME COLUMN x TO email",
        "ALTER TABLE other ALTER COLUMN email TYPE text USING reverse(email)",
        "ALTER TABLE other DROP COLUMN email",
    ] {
        assert!(analyze_sql(sql, &rules()).changes_masked_schema(), "{sql}");
    }
    for sql in [
        "ALTER TABLE orders ADD COLUMN note text",
        "ALTER TABLE orders RENAME COLUMN id TO order_id",
        "ALTER TABLE orders RENAME TO orders_old",
        "CREATE INDEX ON customers (name)",
        "SELECT ssn FROM customers",
    ] {
        assert!(!analyze_sql(sql, &rules()).changes_masked_schema(), "{sql}");
    }
}
