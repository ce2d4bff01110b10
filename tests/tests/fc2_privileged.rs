//! Issue 27, class 2: privileged paths around the query. Server files and
//! logs, raw pages, planner statistics, `COPY … PROGRAM` and `COPY` to or
//! from server files, cross-database links, extensions that expose storage
//! and `ALTER SYSTEM` read or move data where row masking never looks.
//! Every attack below leaks a masked value (or moves it, or runs a command)
//! on the bare database; through hoop, `policy.privileged` (deny by default
//! once the policy has a rule) refuses it. The policy allows server code,
//! so that what stops the extension routines is `privileged` and nothing
//! else. The look-alikes use the same words and relations harmlessly and
//! must keep working.

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, attacks, errored, lookalikes, report},
    require_privileged,
};

const SECRETS: [&str; 2] = ["123-45-6789", "987-65-4321"];

const POLICY: &str = "policy:
  server_code: allow
  mask:
    - name: ssn
      columns: [ssn]
      strategy: redact
";

/// Every case's fixtures: two people with SSNs, their statistics, and no
/// file of the case's left over from an earlier run.
const FIXTURE: &str = "CREATE TABLE {t}.people (id int, name text, ssn text);
INSERT INTO {t}.people VALUES (1, 'Ada', '123-45-6789'), (2, 'Bob', '987-65-4321');
ANALYZE {t}.people;
COPY (SELECT 1) TO PROGRAM 'cat >/dev/null; rm -f /tmp/hoop-fc2-{t}*';";

fn with(extra: &str) -> String {
    format!("{FIXTURE}\n{extra}")
}

fn leaked(out: &str) -> bool {
    SECRETS.iter().any(|s| out.contains(s))
}

/// The server-side file `/tmp/hoop-fc2-{t}{suffix}`, read directly ("" when missing).
fn server_file(db: &Db, t: &str, suffix: &str) -> String {
    db.value(&format!(
        "SELECT coalesce(pg_read_file('/tmp/hoop-fc2-{t}{suffix}', 0, 100000, true), '')"
    ))
}

/// The server setting the `ALTER SYSTEM` attack writes: its default value,
/// so that it changes nothing even if a run is cut short before the reset.
const SYSTEM_SETTING: &str = "log_min_duration_sample";

fn system_setting_written(db: &Db) -> bool {
    db.value(&format!(
        "SELECT count(*) FROM pg_file_settings WHERE name = '{SYSTEM_SETTING}' \
         AND sourcefile LIKE '%postgresql.auto.conf'"
    )) != "0"
}

fn reset_system_setting(db: &Db) {
    db.sql(&format!("ALTER SYSTEM RESET {SYSTEM_SETTING}"));
}

fn attack_corpus(db_name: &str) -> Vec<Case> {
    let leak = |_: &Db, _: &str, out: &str| leaked(out);
    let file_leak =
        |suffix: &'static str| move |db: &Db, t: &str, _: &str| leaked(&server_file(db, t, suffix));
    let secret_file = "COPY (SELECT ssn FROM {t}.people) TO '/tmp/hoop-fc2-{t}-secret';";
    vec![
        Case::new(
            "pg_read_file reads a server file holding masked values",
            with(secret_file),
            "SELECT pg_read_file('/tmp/hoop-fc2-{t}-secret');",
            leak,
        ),
        Case::new(
            "pg_read_binary_file, schema-qualified, converted back to text",
            with(secret_file),
            "SELECT convert_from(pg_catalog.pg_read_binary_file('/tmp/hoop-fc2-{t}-secret'), 'UTF8');",
            leak,
        ),
        Case::new(
            "lo_import of a server file read back with lo_get",
            with(secret_file),
            "CREATE TABLE {t}.ids AS SELECT lo_import('/tmp/hoop-fc2-{t}-secret') AS o;\nSELECT convert_from(lo_get(o), 'UTF8') FROM {t}.ids;",
            leak,
        ),
        Case::new(
            "COPY FROM a server file into a table, then read",
            with(secret_file),
            "CREATE TABLE {t}.loot (v text);\nCOPY {t}.loot FROM '/tmp/hoop-fc2-{t}-secret';\nSELECT v FROM {t}.loot;",
            leak,
        ),
        Case::new(
            "COPY TO a server file writes masked values to disk",
            FIXTURE,
            "COPY {t}.people TO '/tmp/hoop-fc2-{t}-out';",
            file_leak("-out"),
        ),
        Case::new(
            "COPY (query) TO PROGRAM ships masked values to a shell command",
            FIXTURE,
            "COPY (SELECT ssn FROM {t}.people) TO PROGRAM 'cat > /tmp/hoop-fc2-{t}-prog';",
            file_leak("-prog"),
        ),
        Case::new(
            "COPY FROM PROGRAM runs a shell command",
            FIXTURE,
            "CREATE TABLE {t}.cmd (v text);\nCOPY {t}.cmd FROM PROGRAM 'id -un';\nSELECT 'ran:' || v FROM {t}.cmd;",
            |_: &Db, _: &str, out: &str| out.contains("ran:postgres"),
        ),
        Case::new(
            "lo_export writes masked values to a server file",
            FIXTURE,
            "CREATE TABLE {t}.ids AS SELECT lo_from_bytea(0, convert_to((SELECT string_agg(ssn, ',') FROM {t}.people), 'UTF8')) AS o;\nSELECT lo_export(o, '/tmp/hoop-fc2-{t}-lo') FROM {t}.ids;",
            file_leak("-lo"),
        ),
        Case::new(
            "planner statistics: pg_stats histogram and most common values",
            FIXTURE,
            "SELECT coalesce(most_common_vals::text, '') || coalesce(histogram_bounds::text, '') FROM pg_stats WHERE schemaname = '{t}' AND tablename = 'people' AND attname = 'ssn';",
            leak,
        ),
        Case::new(
            "planner statistics: pg_statistic's value arrays, quoted name",
            FIXTURE,
            "SELECT coalesce(stavalues1::text, '') || coalesce(stavalues2::text, '') FROM pg_catalog.\"pg_statistic\" WHERE starelid = '{t}.people'::regclass AND staattnum = 3;",
            leak,
        ),
        Case::new(
            "planner statistics through TABLE and a CTE",
            FIXTURE,
            "WITH s AS (TABLE pg_stats) SELECT histogram_bounds FROM s WHERE schemaname = '{t}' AND attname = 'ssn';",
            leak,
        ),
        Case::new(
            "pg_ls_dir lists the data directory",
            FIXTURE,
            "SELECT 'entry:' || f FROM pg_ls_dir('.') f WHERE f = 'PG_VERSION';",
            |_: &Db, _: &str, out: &str| out.contains("entry:PG_VERSION"),
        ),
        Case::new(
            "adminpack (installed) writes masked values to a server file",
            with("CREATE EXTENSION IF NOT EXISTS adminpack;"),
            "SELECT pg_file_write('/tmp/hoop-fc2-{t}-ap', (SELECT string_agg(ssn, ',') FROM {t}.people), false);",
            file_leak("-ap"),
        ),
        Case::new(
            "pageinspect created in the session reads the masked column out of raw heap pages",
            FIXTURE,
            "CREATE EXTENSION pageinspect SCHEMA {t};\nSELECT encode(t_data, 'escape') FROM {t}.heap_page_items({t}.get_raw_page('{t}.people', 0));",
            leak,
        ),
        Case::new(
            "dblink reads the masked column over a second connection",
            with("CREATE EXTENSION dblink SCHEMA {t};"),
            format!(
                "SELECT s FROM {{t}}.dblink('host=127.0.0.1 user=postgres dbname={db_name}', 'SELECT ssn FROM {{t}}.people') AS x(s text);"
            ),
            leak,
        ),
        Case::new(
            "postgres_fdw: a foreign table renames the masked column",
            with("CREATE EXTENSION IF NOT EXISTS postgres_fdw;\nDROP SERVER IF EXISTS {t}_s CASCADE;"),
            format!(
                "CREATE SERVER {{t}}_s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname '{db_name}');
CREATE USER MAPPING FOR CURRENT_USER SERVER {{t}}_s OPTIONS (user 'postgres');
CREATE FOREIGN TABLE {{t}}.remote (id int, plain text OPTIONS (column_name 'ssn')) SERVER {{t}}_s OPTIONS (schema_name '{{t}}', table_name 'people');
SELECT plain FROM {{t}}.remote;"
            ),
            leak,
        ),
        Case::new(
            "ALTER SYSTEM rewrites the server's configuration",
            "",
            format!("ALTER SYSTEM SET {SYSTEM_SETTING} = -1;"),
            |db: &Db, _: &str, _: &str| {
                let written = system_setting_written(db);
                reset_system_setting(db);
                written
            },
        ),
    ]
}

fn lookalike_corpus() -> Vec<Case> {
    let masked_rows = |_: &Db, _: &str, out: &str| {
        !leaked(out) && out.matches("REDACTED").count() >= 2 && !errored(out)
    };
    let ran = |marker: &'static str| {
        move |_: &Db, _: &str, out: &str| out.contains(marker) && !errored(out)
    };
    vec![
        Case::new(
            "COPY TO STDOUT is masked, not refused",
            FIXTURE,
            "COPY {t}.people TO STDOUT;",
            masked_rows,
        ),
        Case::new(
            "psql's \\copy (client side) is masked, not refused",
            FIXTURE,
            "\\copy (SELECT ssn FROM {t}.people) TO STDOUT",
            masked_rows,
        ),
        Case::new(
            "a table of the user's own named pg_stats",
            with("CREATE TABLE {t}.pg_stats (v text); INSERT INTO {t}.pg_stats VALUES ('mine');"),
            "SELECT 'got:' || v FROM {t}.pg_stats;",
            ran("got:mine"),
        ),
        Case::new(
            "statistics that carry no values: pg_stat_user_tables",
            FIXTURE,
            "SELECT 'rel:' || relname FROM pg_stat_user_tables WHERE schemaname = '{t}';",
            ran("rel:people"),
        ),
        Case::new(
            "a table called server and one called system",
            FIXTURE,
            "CREATE TABLE {t}.server (id int);\nCREATE TABLE {t}.system (id int);\nALTER TABLE {t}.system ADD COLUMN x int;\nSELECT 'made:' || count(*) FROM pg_tables WHERE schemaname = '{t}';",
            ran("made:3"),
        ),
        Case::new(
            "the privileged names inside string literals and comments",
            FIXTURE,
            "SELECT 'say:' || 'pg_read_file(''/etc/passwd'')' -- COPY x TO PROGRAM 'y'\n;",
            ran("say:pg_read_file"),
        ),
        Case::new(
            "a user's function named like a built-in file reader, in its own schema",
            with(
                "CREATE TABLE {t}.log (v text);\nCREATE FUNCTION {t}.pg_read_file(text) RETURNS int LANGUAGE sql AS $$ INSERT INTO {t}.log VALUES ($1) RETURNING 1 $$;",
            ),
            "SELECT {t}.pg_read_file('x');",
            |db: &Db, t: &str, out: &str| !errored(out) && db.count(&format!("{t}.log")) == 1,
        ),
        Case::new(
            "sizes and settings",
            FIXTURE,
            "SELECT 'size:' || pg_relation_size('{t}.people');\nSHOW work_mem;\nANALYZE {t}.people;",
            ran("size:"),
        ),
    ]
}

#[test]
fn privileged_paths_are_refused_and_look_alikes_keep_working() {
    require_privileged();
    let db = Db::create("fc2_privileged");
    reset_system_setting(&db);
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks(
        "class 2 privileged paths",
        &db,
        &cfg,
        &attack_corpus(&db.name),
    );
    let passed = lookalikes("class 2 privileged paths", &db, &cfg, &lookalike_corpus());
    reset_system_setting(&db);
    db.sql("COPY (SELECT 1) TO PROGRAM 'cat >/dev/null; rm -f /tmp/hoop-fc2-*'");
    report("class 2 (privileged paths)", &held, &passed);
}
