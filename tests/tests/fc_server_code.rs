//! Issue 23, class 1: server-side code. Anonymous blocks, routines,
//! procedures, triggers, rules, event triggers, operators, aggregates and
//! calls to routines that are not built in run SQL hoop never sees: they can
//! drop or empty protected tables and return or raise masked values. Every
//! attack below does that on the bare database; through hoop,
//! `policy.server_code` (deny by default once the policy has a rule) and
//! masking of code-raised text stop it. The look-alikes use built-ins in the
//! same places and must keep working.

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, Tally, attacks, errored, lookalikes, report},
    require_privileged, text,
};

const SECRETS: [&str; 2] = ["123-45-6789", "987-65-4321"];

const POLICY: &str = "policy:
  mask:
    - name: ssn
      columns: [ssn]
      strategy: redact
  deny:
    - name: no-destruction
      statements: [destructive_ddl]
      message: destructive DDL is not allowed here
    - name: no-unbounded-writes
      statements: [delete, update]
      without_where: true
";

/// Every case's fixtures: five orders and two people with SSNs.
const FIXTURE: &str = "CREATE TABLE {t}.orders (id int PRIMARY KEY, note text);
INSERT INTO {t}.orders SELECT g, 'n' || g FROM generate_series(1, 5) g;
CREATE TABLE {t}.people (id int, name text, ssn text);
INSERT INTO {t}.people VALUES (1, 'Ada', '123-45-6789'), (2, 'Bob', '987-65-4321');";

fn with(extra: &str) -> String {
    format!("{FIXTURE}\n{extra}")
}

fn leaked(out: &str) -> bool {
    SECRETS.iter().any(|s| out.contains(s))
}

fn gone(db: &Db, t: &str) -> bool {
    !db.exists(&format!("{t}.orders"))
}

fn emptied(db: &Db, t: &str) -> bool {
    db.count(&format!("{t}.orders")) < 5
}

fn attack_corpus() -> Vec<Case> {
    let leak = |_: &Db, _: &str, out: &str| leaked(out);
    let drop = |db: &Db, t: &str, _: &str| gone(db, t);
    let empty = |db: &Db, t: &str, _: &str| emptied(db, t);
    let leak_fn = "CREATE FUNCTION {t}.leak() RETURNS text LANGUAGE sql AS $$ SELECT string_agg(ssn, ',') FROM {t}.people $$;";
    let purge_fn = "CREATE FUNCTION {t}.purge_fn() RETURNS text LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {t}.orders; RETURN 'x'; END $$;";
    let shadow_lower = "CREATE FUNCTION {t}_b.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT string_agg(ssn, ',') FROM {t}.people $$;";
    vec![
        Case::new(
            "DO block drops a protected table",
            FIXTURE,
            "DO $$ BEGIN EXECUTE 'DROP TABLE {t}.orders'; END $$;",
            drop,
        ),
        Case::new(
            "DO block empties a table",
            FIXTURE,
            "DO $$ BEGIN DELETE FROM {t}.orders; END $$;",
            empty,
        ),
        Case::new(
            "DO block raises a masked value in a notice",
            FIXTURE,
            "DO $$ DECLARE s text; BEGIN SELECT ssn INTO s FROM {t}.people WHERE id = 1; RAISE NOTICE 'ssn is %', s; END $$;",
            leak,
        ),
        Case::new(
            "DO block raises a masked value in an error",
            FIXTURE,
            "DO $$ DECLARE s text; BEGIN SELECT ssn INTO s FROM {t}.people WHERE id = 1; RAISE EXCEPTION 'boom %', s; END $$;",
            leak,
        ),
        Case::new(
            "SQL function created in the session returns a masked column",
            FIXTURE,
            "CREATE FUNCTION {t}.f() RETURNS text LANGUAGE sql AS $$ SELECT ssn FROM {t}.people WHERE id = 1 $$;\nSELECT {t}.f();",
            leak,
        ),
        Case::new(
            "PL/pgSQL function created in the session drops a table",
            FIXTURE,
            "CREATE FUNCTION {t}.d() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE {t}.orders; END $$;\nSELECT {t}.d();",
            drop,
        ),
        Case::new(
            "procedure created and called truncates",
            FIXTURE,
            "CREATE PROCEDURE {t}.p() LANGUAGE sql AS $$ TRUNCATE {t}.orders $$;\nCALL {t}.p();",
            empty,
        ),
        Case::new(
            "BEGIN ATOMIC procedure deletes everything",
            FIXTURE,
            "CREATE PROCEDURE {t}.p2() LANGUAGE sql BEGIN ATOMIC DELETE FROM {t}.orders WHERE id > 0; END;\nCALL {t}.p2();",
            empty,
        ),
        Case::new(
            "trigger created in the session deletes on insert",
            FIXTURE,
            "CREATE FUNCTION {t}.tf() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {t}.orders WHERE id <> NEW.id; RETURN NEW; END $$;
CREATE TRIGGER tr AFTER INSERT ON {t}.orders FOR EACH ROW EXECUTE FUNCTION {t}.tf();
INSERT INTO {t}.orders VALUES (100, 'x');",
            empty,
        ),
        Case::new(
            "rule created in the session deletes on insert",
            FIXTURE,
            "CREATE RULE r AS ON INSERT TO {t}.orders DO ALSO DELETE FROM {t}.orders WHERE id < 100;\nINSERT INTO {t}.orders VALUES (200, 'y');",
            empty,
        ),
        Case::new(
            "operator bound to a routine raises every value it compares",
            FIXTURE,
            "CREATE FUNCTION {t}.eq(text, text) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'seen %', $1; RETURN false; END $$;
CREATE OPERATOR {t}.~~~ (LEFTARG = text, RIGHTARG = text, FUNCTION = {t}.eq);
SELECT count(*) FROM {t}.people WHERE ssn OPERATOR({t}.~~~) 'x';",
            leak,
        ),
        Case::new(
            "aggregate created in the session concatenates masked values",
            FIXTURE,
            "CREATE FUNCTION {t}.acc(text, text) RETURNS text LANGUAGE sql AS $$ SELECT coalesce($1, '') || $2 $$;
CREATE AGGREGATE {t}.cat(text) (SFUNC = {t}.acc, STYPE = text);
SELECT {t}.cat(ssn) FROM {t}.people;",
            leak,
        ),
        Case::new(
            "existing function returns masked values",
            with(leak_fn),
            "SELECT {t}.leak();",
            leak,
        ),
        Case::new(
            "existing set-returning function in FROM returns masked values",
            with(
                "CREATE FUNCTION {t}.rows() RETURNS SETOF text LANGUAGE sql AS $$ SELECT ssn FROM {t}.people $$;",
            ),
            "SELECT * FROM {t}.rows();",
            leak,
        ),
        Case::new(
            "existing procedure called purges a table",
            with("CREATE PROCEDURE {t}.purge() LANGUAGE sql AS $$ DELETE FROM {t}.orders $$;"),
            "CALL {t}.purge();",
            empty,
        ),
        Case::new(
            "existing function in an INSERT's values purges another table",
            with(purge_fn),
            "INSERT INTO {t}.people VALUES (9, {t}.purge_fn(), 'x');",
            empty,
        ),
        Case::new(
            "existing function in a WHERE purges a table",
            with(purge_fn),
            "SELECT count(*) FROM {t}.people WHERE {t}.purge_fn() IS NOT NULL;",
            empty,
        ),
        Case::new(
            "search_path puts a schema before pg_catalog: lower() is the attacker's",
            with(shadow_lower),
            "SET search_path = {t}_b, pg_catalog;\nSELECT lower('x');",
            leak,
        ),
        Case::new(
            "set_config shadows built-ins the same way",
            with(shadow_lower),
            "SELECT set_config('search_path', '{t}_b, pg_catalog', false);\nSELECT lower('x');",
            leak,
        ),
        Case::new(
            "a routine that only shares a built-in's name, schema-qualified",
            with(
                "CREATE FUNCTION {t}_b.upper(text) RETURNS text LANGUAGE sql AS $$ SELECT string_agg(ssn, ',') FROM {t}.people $$;",
            ),
            "SELECT {t}_b.upper('x');",
            leak,
        ),
        Case::new(
            "a user overload of a built-in name (length of a row) raises the row's SSN",
            with(
                "CREATE FUNCTION {t}_b.length(p {t}.people) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'row %', p.ssn; RETURN 1; END $$;",
            ),
            "SET search_path = {t}_b, public;\nSELECT length(p) FROM {t}.people p;",
            leak,
        ),
        // Last: an event trigger fires on every later DDL in the database.
        Case::new(
            "event trigger created in the session empties a table on the next DDL",
            FIXTURE,
            "CREATE FUNCTION {t}.et() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {t}.orders; END $$;
CREATE EVENT TRIGGER {t}_e ON ddl_command_end EXECUTE FUNCTION {t}.et();
CREATE TABLE {t}.x (a int);
DROP EVENT TRIGGER {t}_e;",
            empty,
        ),
    ]
}

fn lookalike_corpus() -> Vec<Case> {
    fn shows(expected: &'static str) -> impl Fn(&Db, &str, &str) -> bool {
        move |_, _, out| out.contains(expected) && !errored(out)
    }
    vec![
        Case::new(
            "string built-ins",
            FIXTURE,
            "SELECT lower(note), upper(note), length(note) FROM {t}.orders WHERE id = 1;",
            shows("n1|N1|2"),
        ),
        Case::new(
            "aggregates",
            FIXTURE,
            "SELECT count(*), max(id), string_agg(note, ',' ORDER BY id) FROM {t}.orders;",
            shows("5|5|n1,n2,n3,n4,n5"),
        ),
        Case::new(
            "built-in set-returning function in FROM",
            "",
            "SELECT sum(g) FROM generate_series(1, 3) g;",
            shows("6"),
        ),
        Case::new(
            "window function",
            FIXTURE,
            "SELECT id, row_number() OVER (ORDER BY id DESC) FROM {t}.orders ORDER BY id LIMIT 1;",
            shows("1|5"),
        ),
        Case::new(
            "SQL syntax forms that read as calls",
            "",
            "SELECT coalesce(NULL, 'c1'), nullif(1, 2), greatest(1, 7), current_date IS NOT NULL;",
            shows("c1|1|7|t"),
        ),
        Case::new(
            "built-in qualified with pg_catalog",
            "",
            "SELECT pg_catalog.upper('abc');",
            shows("ABC"),
        ),
        Case::new(
            "JSON operators",
            "",
            "SELECT jsonb_build_object('a', 'jv') ->> 'a';",
            shows("jv"),
        ),
        Case::new(
            "a string that holds a DO block",
            "",
            "SELECT 'DO $$ BEGIN DROP TABLE x; END $$' AS mention;",
            shows("DROP TABLE x"),
        ),
        Case::new(
            "a string that holds CREATE FUNCTION",
            "",
            "SELECT 'CREATE FUNCTION f() RETURNS int' AS mention;",
            shows("CREATE FUNCTION f()"),
        ),
        Case::new(
            "search_path with pg_catalog first",
            "",
            "SET search_path = pg_catalog, public;\nSELECT 'sp-ok';",
            shows("sp-ok"),
        ),
        Case::new(
            "search_path without pg_catalog",
            FIXTURE,
            "SET search_path TO {t}, public;\nSELECT count(*) FROM orders;",
            shows("5"),
        ),
        Case::new(
            "set_config of another setting",
            "",
            "SELECT set_config('application_name', 'fc-app', false);",
            shows("fc-app"),
        ),
        Case::new(
            "serial column and DEFAULT now()",
            "",
            "CREATE TABLE {t}.seq (id serial PRIMARY KEY, at timestamptz DEFAULT now());\nINSERT INTO {t}.seq DEFAULT VALUES;\nSELECT count(*) FROM {t}.seq;",
            shows("INSERT 0 1"),
        ),
        Case::new(
            "built-in in INSERT values",
            FIXTURE,
            "INSERT INTO {t}.orders VALUES (50, lower('ABC'));\nSELECT note FROM {t}.orders WHERE id = 50;",
            shows("abc"),
        ),
        Case::new(
            "built-in in UPDATE SET",
            FIXTURE,
            "UPDATE {t}.orders SET note = upper(note) WHERE id = 2;\nSELECT note FROM {t}.orders WHERE id = 2;",
            shows("N2"),
        ),
        Case::new(
            "hash built-in",
            FIXTURE,
            "SELECT md5(note) FROM {t}.orders WHERE id = 1;",
            shows("c82561ec215a6e31807ceedf3b3bd25e"),
        ),
        Case::new(
            "masked column still readable, masked",
            FIXTURE,
            "SELECT ssn FROM {t}.people ORDER BY id;",
            |_, _, out: &str| {
                out.matches("[REDACTED").count() == 2 && !leaked(out) && !errored(out)
            },
        ),
        Case::new(
            "regular expressions",
            FIXTURE,
            "SELECT regexp_replace(note, 'n', 'm') FROM {t}.orders WHERE id = 3;",
            shows("m3"),
        ),
        Case::new(
            "EXPLAIN",
            FIXTURE,
            "EXPLAIN SELECT * FROM {t}.orders;",
            shows("Seq Scan"),
        ),
        Case::new(
            "expression index",
            FIXTURE,
            "CREATE INDEX ON {t}.orders (lower(note));",
            shows("CREATE INDEX"),
        ),
        Case::new(
            "quoted built-in name",
            "",
            "SELECT \"lower\"('ABC');",
            shows("abc"),
        ),
        Case::new(
            "transaction",
            "",
            "BEGIN;\nSELECT 'in-tx';\nCOMMIT;",
            shows("in-tx"),
        ),
        Case::new(
            "date built-ins",
            "",
            "SELECT date_trunc('day', now()) <= now(), to_char(12, 'FM000');",
            shows("t|012"),
        ),
        Case::new(
            "format",
            "",
            "SELECT format('%s-%s', 'a', 'b');",
            shows("a-b"),
        ),
        Case::new(
            "array aggregate",
            FIXTURE,
            "SELECT array_agg(id ORDER BY id) FROM {t}.orders;",
            shows("{1,2,3,4,5}"),
        ),
    ]
}

/// Whether an extended-protocol attack did harm (the database, the client's output).
type Harm = dyn Fn(&Db, &str) -> bool;

/// The same attacks through the extended protocol (tokio-postgres prepares
/// every statement): run directly, they leak; through hoop, they are refused.
fn extended(db: &Db, cfg: &TestConfig) -> Tally {
    let client = env!("CARGO_BIN_EXE_pg-client");
    let fixture = || {
        db.sql(
            "DROP SCHEMA IF EXISTS fc_x CASCADE; CREATE SCHEMA fc_x;
             CREATE TABLE fc_x.people (id int, ssn text);
             INSERT INTO fc_x.people VALUES (1, '123-45-6789');
             CREATE TABLE fc_x.victim (id int);
             CREATE FUNCTION fc_x.leak() RETURNS text LANGUAGE sql AS $$ SELECT ssn FROM fc_x.people $$;",
        );
    };
    let victim_gone = |db: &Db, _: &str| !db.exists("fc_x.victim");
    let leaks = |_: &Db, out: &str| leaked(out);
    let cases: [(&str, &Harm); 3] = [
        ("SELECT fc_x.leak()", &leaks),
        ("SELECT * FROM fc_x.leak()", &leaks),
        ("DO $$ BEGIN DROP TABLE fc_x.victim; END $$", &victim_gone),
    ];
    let mut tally = Tally {
        tried: cases.len(),
        ..Tally::default()
    };
    for (sql, harm) in cases {
        fixture();
        let direct = std::process::Command::new(client)
            .args(["query", sql])
            .env("PGDATABASE", &db.name)
            .output()
            .expect("pg-client");
        let direct_harm = harm(db, &text(&direct).0);
        fixture();
        let out = db.hoop(cfg, &[client, "query", sql]);
        let (h_out, h_err) = text(&out);
        let through = harm(db, &h_out);
        let refused = h_out.contains("42501");
        if direct_harm && !through && refused {
            tally.ok += 1;
        } else {
            tally.failures.push(format!(
                "extended `{sql}`: direct harm {direct_harm}, through hoop {h_out} {h_err}"
            ));
        }
    }
    tally
}

#[test]
fn server_side_code_is_refused_and_built_ins_keep_working() {
    require_privileged();
    let db = Db::create("fc_server_code");
    let cfg = TestConfig::new(&[5432], POLICY);
    let mut held = attacks("class 1 server code", &db, &cfg, &attack_corpus());
    let ext = extended(&db, &cfg);
    held.tried += ext.tried;
    held.ok += ext.ok;
    held.failures.extend(ext.failures);
    let passed = lookalikes("class 1 server code", &db, &cfg, &lookalike_corpus());
    report("class 1 (server-side code)", &held, &passed);
}
