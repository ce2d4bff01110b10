//! Policy compilation and judgement, end to end from YAML text.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;
use hoop_config::ConfigError;
use hoop_core::{Submission, Verdict};
use hoop_sql::pg::Postgres;

fn load(yaml: &str) -> LoadedPolicy {
    match crate::parse_checked(Path::new("hoop.yaml"), yaml) {
        Ok(loaded) => LoadedPolicy {
            policy: loaded.policy,
            warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
        },
        Err(e) => panic!("expected a valid policy, got:\n{e}"),
    }
}

fn errors(yaml: &str) -> Vec<String> {
    match crate::parse_checked(Path::new("hoop.yaml"), yaml) {
        Ok(_) => panic!("expected errors"),
        Err(ConfigError::Invalid { diagnostics, .. }) => diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

struct LoadedPolicy {
    policy: Policy,
    warnings: Vec<String>,
}

fn session(user: &str) -> SessionIdentity {
    SessionIdentity {
        user: Some(user.into()),
        database: Some("app".into()),
        workload: Some("/kubepods/burstable/pod42/ctr".into()),
        ..Default::default()
    }
}

fn verdict(policy: &Policy, sql: &str) -> (&'static str, Option<String>) {
    let judgement = policy.judge(&Postgres, sql, Submission::Text, &session("alice"));
    let word = match judgement.verdict {
        Verdict::Allow => "allow",
        Verdict::Deny(_) => "deny",
        Verdict::Hold(_) => "hold",
    };
    (word, judgement.rule)
}

const POLICY: &str = r"
policy:
  detectors:
    - name: employee_id
      regex: 'EMP-\d{6}'
  mask:
    - name: ssn-columns
      columns: [customers.ssn, ssn, public.customers.card]
      strategy: partial
      keep_last: 4
    - detect: [email, credit_card, employee_id]
      strategy: redact
      when: {user: [analyst-*]}
  deny:
    - name: no-ddl
      statements: [drop, truncate]
      message: destructive DDL is not allowed here
    - name: no-unfiltered-writes
      statements: [delete, update]
      without_where: true
    - name: no-payments-writes
      statements: [insert, update, delete]
      tables: [public.payments]
      when: {user: [intern]}
  hold:
    - statements: [delete, update]
      tables: [orders]
      timeout: 10m
      approvers: [dba]
      message: deletes on orders need a DBA
";

#[test]
fn default_policy_allows_sql_and_denies_unparsed() {
    let policy = load("{}").policy;
    assert_eq!(verdict(&policy, "select 1"), ("allow", None));
    assert_eq!(
        verdict(&policy, "utter garbage"),
        ("deny", Some(UNPARSED_RULE.to_owned()))
    );
    // One unparseable statement denies the whole text.
    assert_eq!(
        verdict(&policy, "select 1; utter garbage"),
        ("deny", Some(UNPARSED_RULE.to_owned()))
    );
    assert_eq!(verdict(&policy, ""), ("allow", None));
}

#[test]
fn unparsed_hold_and_allow() {
    let hold = load("policy: {unparsed: hold}").policy;
    assert_eq!(verdict(&hold, "garbage").0, "hold");
    let allow = load("policy: {unparsed: allow}");
    assert_eq!(verdict(&allow.policy, "garbage").0, "allow");
    assert!(
        allow.warnings.iter().any(|w| w.contains("fail open")),
        "{:?}",
        allow.warnings
    );
    // A deny rule still applies to the parsed statements around an unparsed one.
    let mixed = load("policy: {unparsed: allow, deny: [{statements: [drop]}]}").policy;
    assert_eq!(
        verdict(&mixed, "garbage; drop table t"),
        ("deny", Some("deny[0]".to_owned()))
    );
}

#[test]
fn deny_beats_hold_and_first_rule_names_the_verdict() {
    let policy = load(POLICY).policy;
    assert_eq!(
        verdict(&policy, "drop table orders"),
        ("deny", Some("no-ddl".into()))
    );
    assert_eq!(
        verdict(&policy, "delete from orders"),
        ("deny", Some("no-unfiltered-writes".into()))
    );
    assert_eq!(
        verdict(&policy, "delete from orders where id = 1"),
        ("hold", Some("hold[0]".into()))
    );
    assert_eq!(
        verdict(&policy, "delete from public.orders where id = 1").0,
        "hold"
    );
    assert_eq!(
        verdict(&policy, "delete from app.orders where id = 1").0,
        "hold"
    );
    assert_eq!(
        verdict(&policy, "delete from invoices where id = 1"),
        ("allow", None)
    );
    // A multi-statement text with a hold and a deny is denied as a whole.
    assert_eq!(
        verdict(&policy, "delete from orders where id = 1; truncate logs"),
        ("deny", Some("no-ddl".into()))
    );
    // Hidden in a CTE, behind EXPLAIN ANALYZE, in a PREPARE.
    assert_eq!(
        verdict(
            &policy,
            "with d as (delete from orders returning *) select * from d"
        )
        .0,
        "deny"
    );
    assert_eq!(
        verdict(&policy, "explain analyze delete from orders where id = 1").0,
        "hold"
    );
    assert_eq!(verdict(&policy, "explain delete from orders").0, "allow");
    assert_eq!(
        verdict(&policy, "prepare p as delete from orders").0,
        "deny"
    );
    assert_eq!(
        verdict(
            &policy,
            "with orders as (select 1) delete from orders where true"
        )
        .0,
        "deny"
    );
    // The hold carries the rule's requirement.
    let judgement = policy.judge(
        &Postgres,
        "update orders set x = 1 where id = 2",
        Submission::Prepared,
        &session("bob"),
    );
    let Verdict::Hold(requirement) = judgement.verdict else {
        panic!("{judgement:?}")
    };
    assert_eq!(requirement.timeout, std::time::Duration::from_mins(10));
    assert_eq!(requirement.approvers, ["dba"]);
    assert_eq!(requirement.min_approvals, 1);
    assert_eq!(requirement.message, "deletes on orders need a DBA");
    let Verdict::Deny(denial) = policy
        .judge(&Postgres, "drop table x", Submission::Text, &session("bob"))
        .verdict
    else {
        panic!()
    };
    assert_eq!(denial.message, "destructive DDL is not allowed here");
}

#[test]
fn when_selects_sessions_and_schema_qualified_rules_match_only_their_schema() {
    let policy = load(POLICY).policy;
    let intern = session("intern");
    let judge =
        |sql: &str, s: &SessionIdentity| policy.judge(&Postgres, sql, Submission::Text, s).rule;
    assert_eq!(
        judge("insert into payments values (1)", &intern).as_deref(),
        Some("no-payments-writes")
    );
    assert_eq!(
        judge("insert into public.payments values (1)", &intern).as_deref(),
        Some("no-payments-writes")
    );
    assert_eq!(judge("insert into app.payments values (1)", &intern), None);
    assert_eq!(
        judge("insert into payments values (1)", &session("alice")),
        None
    );
    assert_eq!(
        judge(r#"insert into "Payments" values (1)"#, &intern),
        None,
        "a different table"
    );
}

#[test]
fn function_calls_are_judged_as_opaque_calls() {
    let policy = load("policy: {deny: [{statements: [call, do]}]}").policy;
    let judgement = policy.judge(&Postgres, "", Submission::FunctionCall, &session("a"));
    assert!(matches!(judgement.verdict, Verdict::Deny(_)));
    assert!(judgement.statements[0].opaque);
    assert_eq!(verdict(&policy, "DO $$ BEGIN PERFORM 1; END $$").0, "deny");
}

#[test]
fn mask_rules_are_exposed_filtered_by_session() {
    let policy = load(POLICY).policy;
    let all = policy.mask_rules_for(&session("analyst-7"));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].name, "ssn-columns");
    assert_eq!(all[0].strategy, Strategy::Partial);
    assert_eq!(all[0].keep_last, Some(4));
    assert_eq!(all[0].columns[2].to_string(), "public.customers.card");
    assert_eq!(all[1].name, "mask[1]");
    let Detector::Custom { name, regex } = &all[1].detectors[2] else {
        panic!()
    };
    assert_eq!(name, "employee_id");
    assert!(regex.is_match("id EMP-123456"));
    assert!(matches!(
        all[1].detectors[0],
        Detector::Builtin(BuiltinDetector::Email)
    ));
    assert_eq!(policy.mask_rules_for(&session("bob")).len(), 1);
    assert_eq!(policy.binary_unmaskable(), BinaryUnmaskable::Refuse);
}

#[test]
fn hash_key_comes_from_env_or_file_and_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let yaml = format!(
        "policy:\n  hash_key_file: {}\n  mask:\n    - columns: [email]\n      strategy: hash\n",
        key_file.display()
    );
    let policy = load(&yaml).policy;
    let key = policy.hash_key().unwrap();
    assert_eq!(key.bytes(), b"0123456789abcdef0123456789abcdef");
    assert!(!format!("{policy:?}").contains("0123456789abcdef"));

    let errs = errors("policy:\n  mask:\n    - columns: [email]\n      strategy: hash\n");
    assert!(errs[0].contains("`strategy: hash` needs a key"), "{errs:?}");
    let errs = errors(
        "policy:\n  hash_key_env: HOOP_TEST_SURELY_UNSET_VAR\n  mask:\n    - columns: [email]\n      strategy: hash\n",
    );
    assert!(
        errs[0].starts_with("hoop.yaml:2:17: error: policy.hash_key_env: environment variable"),
        "{errs:?}"
    );
}

#[test]
fn every_semantic_error_is_reported_with_its_location() {
    let yaml = "\
policy:
  detectors:
    - name: bad_re
      regex: '(unclosed'
  mask:
    - columns: [ssn]
      detect: [email]
    - detect: [emial]
      strategy: redact
    - columns: [name]
      strategy: redact
      keep_last: 2
    - strategy: null
  deny:
    - statements: [drop, truncat]
    - statements: []
    - statements: [select, delete]
      without_where: true
    - statements: [unparsed]
  hold:
    - statements: [update]
      tables: []
      when: {user: []}
      min_approvals: 0
";
    let errs = errors(yaml);
    let expect = [
        "hoop.yaml:4:14: error: policy.detectors[0].regex: invalid regex",
        "hoop.yaml:6:7: error: policy.mask[0]: a mask rule takes `columns` or `detect`, not both (hint: split it into two rules)",
        "hoop.yaml:8:16: error: policy.mask[1].detect[0]: unknown detector `emial` (hint: did you mean \"email\"?)",
        "hoop.yaml:12:18: error: policy.mask[2].keep_last: `keep_last` only applies to `strategy: partial`",
        "hoop.yaml:13:7: error: policy.mask[3]: a mask rule needs `columns` or `detect`",
        "hoop.yaml:15:26: error: policy.deny[0].statements[1]: unknown statement kind `truncat` (hint: did you mean \"truncate\"?)",
        "hoop.yaml:16:19: error: policy.deny[1].statements: an empty `statements` list matches nothing",
        "hoop.yaml:17:20: error: policy.deny[2].statements[0]: `without_where` only matches update and delete",
        "hoop.yaml:19:20: error: policy.deny[3].statements[0]: `unparsed` is not matched by rules",
        "hoop.yaml:22:15: error: policy.hold[0].tables: an empty `tables` list matches nothing",
        "hoop.yaml:23:20: error: policy.hold[0].when.user: an empty list matches no session",
        "hoop.yaml:24:22: error: policy.hold[0].min_approvals: `min_approvals: 0`",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e}\nin:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(errs.len(), expect.len(), "{}", errs.join("\n"));
}

#[test]
fn conflicts_are_errors_and_shadowing_is_a_warning() {
    let errs = errors(
        "policy:\n  mask:\n    - columns: [customers.ssn]\n      strategy: redact\n    - columns: [Customers.SSN]\n      strategy: hash\n",
    );
    assert!(errs.iter().any(|e| e.starts_with("hoop.yaml:5:17: error: policy.mask[1].columns[0]: column customers.ssn is already masked by `mask[0]`")), "{errs:?}");
    // Different `when`: no conflict.
    load(
        "policy:\n  mask:\n    - columns: [ssn]\n      strategy: redact\n    - columns: [ssn]\n      strategy: partial\n      when: {user: [support]}\n",
    );

    let loaded = load(
        "policy:\n  deny:\n    - name: no-writes\n      statements: [delete, update, insert]\n  hold:\n    - statements: [delete]\n      tables: [orders]\n",
    );
    assert!(
        loaded.warnings.iter().any(|w| w.starts_with("hoop.yaml:6:7: warning: policy.hold[0]: hold rule `hold[0]` never holds anything: deny rule `no-writes` (line 3)")),
        "{:?}",
        loaded.warnings
    );
    // A deny scoped to other users does not shadow.
    let loaded = load(
        "policy:\n  deny:\n    - statements: [delete]\n      when: {user: [intern]}\n  hold:\n    - statements: [delete]\n",
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn check_file_reports_everything_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hoop.yaml");
    std::fs::write(
        &path,
        "intercept:\n  prots: [5432]\npolicy:\n  deny:\n    - statements: [dorp]\n",
    )
    .unwrap();
    let report = check_file(&path);
    assert!(!report.is_ok());
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with(
            ":2:3: error: intercept.prots: unknown key `prots` (hint: did you mean \"ports\"?)"
        ),
        "{text}"
    );
    assert!(
        lines[1]
            .contains(":5:20: error: policy.deny[0].statements[0]: unknown statement kind `dorp`"),
        "{text}"
    );

    let missing = check_file(&dir.path().join("nope.yaml"));
    assert!(!missing.is_ok());
    assert!(missing.to_string().contains("cannot read"));

    std::fs::write(&path, "policy:\n  deny:\n    - statements: [drop]\n").unwrap();
    assert!(check_file(&path).is_ok());
}

#[test]
fn bare_null_is_the_null_strategy() {
    let policy = load(
        "policy:\n  binary_unmaskable: null\n  mask:\n    - columns: [ssn]\n      strategy: null\n",
    )
    .policy;
    assert_eq!(policy.mask_rules()[0].strategy, Strategy::Null);
    assert_eq!(policy.binary_unmaskable(), BinaryUnmaskable::Null);
    let errs = errors("policy:\n  mask:\n    - columns: [ssn]\n      strategy: partal\n");
    assert!(
        errs[0].starts_with(
            "hoop.yaml:4:17: error: policy.mask[0].strategy: unknown variant `partal`"
        ),
        "{errs:?}"
    );
    assert!(
        errs[0].ends_with("(hint: did you mean \"partial\"?)"),
        "{errs:?}"
    );
}

#[test]
fn the_design_example_loads() {
    let yaml = "
intercept:
  ports: [5432]
admin:
  listen: 127.0.0.1:9464
recording:
  dir: ./recordings
policy:
  unparsed: deny
  mask:
    - columns: [customers.ssn]
      strategy: partial
      keep_last: 4
    - detect: [email, credit_card]
      strategy: redact
  deny:
    - statements: [drop, truncate]
      message: destructive DDL is not allowed here
    - statements: [delete, update]
      without_where: true
  hold:
    - statements: [delete, update]
      tables: [orders]
      timeout: 5m
";
    let loaded = load(yaml);
    assert_eq!(
        verdict(&loaded.policy, "DELETE FROM orders WHERE id = 7"),
        ("hold", Some("hold[0]".into()))
    );
    assert_eq!(
        verdict(&loaded.policy, "UPDATE customers SET name = 'x'"),
        ("deny", Some("deny[1]".into()))
    );
    assert_eq!(
        verdict(&loaded.policy, "SELECT * FROM customers"),
        ("allow", None)
    );
    // The only warning: table-scoped drop/truncate rules are not involved here.
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn every_section_and_policy_error_is_reported_at_once_with_location_and_key() {
    let yaml = "\
intercept:
  ports: [5432, notaport]
admin:
  oidc:
    issuer: x
    audiance: y
bogus: 1
policy:
  mask:
    - columns: [ssn]
      stratgy: redact
";
    let found = errors(yaml);
    let expect = [
        "hoop.yaml:2:10: error: intercept.ports: invalid type: string \"notaport\", expected u16",
        "hoop.yaml:4:3: error: admin.oidc: missing field `audience`",
        "hoop.yaml:6:5: error: admin.oidc.audiance: unknown key `audiance` (hint: did you mean \"audience\"?)",
        "hoop.yaml:7:1: error: bogus: unknown key `bogus`",
        "hoop.yaml:11:7: error: policy.mask[0].stratgy: unknown key `stratgy` (hint: did you mean \"strategy\"?)",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing {e}\nin:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));
}

fn judged(policy: &Policy, sql: &str, rows: RowCount) -> Judgement {
    let parsed = ParsedSql::parse(&Postgres, sql);
    policy.judge_rows(&parsed, Submission::Text, &session("alice"), rows)
}

#[test]
fn server_code_is_denied_by_default_once_the_policy_has_rules() {
    // No rules: nothing to protect, nothing denied.
    let empty = load("{}").policy;
    assert_eq!(empty.server_code(), ServerCodeAction::Allow);
    assert_eq!(verdict(&empty, "DO $$ BEGIN NULL; END $$").0, "allow");
    // Any deny, hold or mask rule makes it deny.
    for yaml in [
        "policy: {deny: [{statements: [drop]}]}",
        "policy: {hold: [{statements: [delete]}]}",
        "policy: {mask: [{columns: [ssn]}]}",
    ] {
        let policy = load(yaml).policy;
        assert_eq!(policy.server_code(), ServerCodeAction::Deny, "{yaml}");
        for code in [
            "DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            "CREATE RULE r AS ON SELECT TO t DO INSTEAD SELECT 1",
            "SELECT leak(ssn) FROM customers",
            "CALL purge_orders()",
        ] {
            assert_eq!(
                verdict(&policy, code),
                ("deny", Some(SERVER_CODE_RULE.to_owned())),
                "{yaml}: {code}"
            );
        }
        assert_eq!(
            verdict(&policy, "SELECT lower(name), now() FROM customers").0,
            "allow"
        );
    }
    // The refusal says what the code is.
    let policy = load("policy: {mask: [{columns: [ssn]}]}").policy;
    let Verdict::Deny(denial) = judged(&policy, "SELECT app.leak(1)", RowCount::NotCounted).verdict
    else {
        panic!("denied")
    };
    assert!(denial.message.contains("`app.leak`"), "{}", denial.message);
    // A fast-path call of a built-in (by its OID) is not server code; one of
    // a user's routine is.
    let builtin = policy.judge(
        &Postgres,
        "function 952",
        Submission::FunctionCall,
        &session("a"),
    );
    assert_eq!(builtin.verdict, Verdict::Allow);
    let users = policy.judge(
        &Postgres,
        "function 16500",
        Submission::FunctionCall,
        &session("a"),
    );
    assert!(matches!(users.verdict, Verdict::Deny(_)));
}

#[test]
fn server_code_hold_allow_and_precedence() {
    let hold = load("policy: {server_code: hold, deny: [{name: no-drop, statements: [drop]}]}");
    assert_eq!(
        verdict(&hold.policy, "DO $$ BEGIN NULL; END $$"),
        ("hold", Some(SERVER_CODE_RULE.to_owned()))
    );
    // A deny rule still names its own denial.
    assert_eq!(
        verdict(&hold.policy, "DROP TABLE t; DO $$ BEGIN NULL; END $$"),
        ("deny", Some("no-drop".to_owned()))
    );
    let allow = load("policy: {server_code: allow, deny: [{statements: [drop]}]}");
    assert_eq!(verdict(&allow.policy, "SELECT leak()").0, "allow");
    assert!(
        allow
            .warnings
            .iter()
            .any(|w| w.contains("server_code") && w.contains("fail open")),
        "{:?}",
        allow.warnings
    );
    assert!(errors("policy: {server_code: maybe}")[0].contains("server_code"));
}

#[test]
fn privileged_paths_are_denied_by_default_once_the_policy_has_rules() {
    let empty = load("{}").policy;
    assert_eq!(empty.privileged(), PrivilegedAction::Allow);
    assert_eq!(verdict(&empty, "SELECT pg_read_file('x')").0, "allow");
    for yaml in [
        "policy: {deny: [{statements: [drop]}]}",
        "policy: {hold: [{statements: [delete]}]}",
        "policy: {mask: [{columns: [ssn]}]}",
    ] {
        let policy = load(yaml).policy;
        assert_eq!(policy.privileged(), PrivilegedAction::Deny, "{yaml}");
        for path in [
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT most_common_vals FROM pg_stats WHERE attname = 'ssn'",
            "COPY customers TO '/tmp/c.csv'",
            "COPY (SELECT ssn FROM customers) TO PROGRAM 'nc x 1'",
            "ALTER SYSTEM SET archive_command = 'sh -c x'",
            "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw",
        ] {
            assert_eq!(
                verdict(&policy, path),
                ("deny", Some(PRIVILEGED_RULE.to_owned())),
                "{yaml}: {path}"
            );
        }
        for innocent in [
            "COPY customers TO STDOUT",
            "SELECT * FROM pg_stat_user_tables",
            "SELECT * FROM app.pg_stats",
        ] {
            assert_eq!(verdict(&policy, innocent).0, "allow", "{innocent}");
        }
    }
    let policy = load("policy: {mask: [{columns: [ssn]}]}").policy;
    let Verdict::Deny(denial) =
        judged(&policy, "SELECT * FROM pg_stats", RowCount::NotCounted).verdict
    else {
        panic!("denied")
    };
    assert!(
        denial.message.contains("`pg_stats` carries column values"),
        "{}",
        denial.message
    );
}

#[test]
fn privileged_hold_allow_and_precedence() {
    let hold = load(
        "policy: {privileged: hold, server_code: allow, deny: [{name: no-drop, statements: [drop]}]}",
    );
    assert_eq!(
        verdict(&hold.policy, "SELECT pg_ls_dir('.')"),
        ("hold", Some(PRIVILEGED_RULE.to_owned()))
    );
    // Extension routines are privileged in any schema, even where server
    // code is allowed.
    assert_eq!(
        verdict(
            &hold.policy,
            "SELECT * FROM ext.get_raw_page('customers', 0)"
        ),
        ("hold", Some(PRIVILEGED_RULE.to_owned()))
    );
    assert_eq!(
        verdict(&hold.policy, "DROP TABLE t; SELECT pg_ls_dir('.')"),
        ("deny", Some("no-drop".to_owned()))
    );
    let allow = load("policy: {privileged: allow, deny: [{statements: [drop]}]}");
    assert_eq!(
        verdict(&allow.policy, "SELECT pg_read_file('x')").0,
        "allow"
    );
    assert!(
        allow
            .warnings
            .iter()
            .any(|w| w.contains("privileged") && w.contains("fail open")),
        "{:?}",
        allow.warnings
    );
    assert!(errors("policy: {privileged: sometimes}")[0].contains("privileged"));
}

#[test]
fn destructive_ddl_is_a_statement_group() {
    let policy = load(
        "policy:
  unparsed: allow
  deny:
    - name: no-destruction
      statements: [destructive_ddl]
",
    )
    .policy;
    for destructive in [
        "DROP TABLE t",
        "DROP SCHEMA s CASCADE",
        "TRUNCATE t",
        "ALTER TABLE t DROP COLUMN c",
        "ALTER TABLE t RENAME TO u",
        "ALTER TABLE t RENAME COLUMN a TO b",
        // Unparsed, but its words say it (and unparsed: allow would let it by).
        "DROP OWNED BY bob",
        "ALTER TABLE t SET SCHEMA s",
    ] {
        assert_eq!(
            verdict(&policy, destructive),
            ("deny", Some("no-destruction".to_owned())),
            "{destructive}"
        );
    }
    for fine in [
        "ALTER TABLE t ADD COLUMN c int",
        "DELETE FROM t",
        "CREATE TABLE t (a int)",
    ] {
        assert_eq!(verdict(&policy, fine).0, "allow", "{fine}");
    }
    // A typo gets a hint that knows the group.
    let e = errors("policy: {deny: [{statements: [destructive_dl]}]}");
    assert!(e[0].contains("destructive_ddl"), "{e:?}");
    let e = errors("policy: {deny: [{statements: [destructive_ddl], without_where: true}]}");
    assert!(e[0].contains("without_where"), "{e:?}");
}

#[test]
fn max_rows_asks_for_a_dry_run_and_judges_the_count() {
    let policy = load(
        "policy:
  deny:
    - name: few-deletes
      statements: [delete]
      tables: [orders]
      max_rows: 10
      message: deletes on orders are limited
  hold:
    - name: big-updates
      statements: [update]
      max_rows: 100
      message: big updates need a DBA
",
    )
    .policy;
    let sql = "DELETE FROM orders WHERE created < now()";
    let Verdict::Deny(first) = judged(&policy, sql, RowCount::NotCounted).verdict else {
        panic!("a conditional denial")
    };
    assert_eq!(
        (first.rule.as_str(), first.max_rows),
        ("few-deletes", Some(10))
    );
    assert_eq!(
        judged(&policy, sql, RowCount::Counted(Some(10))).verdict,
        Verdict::Allow
    );
    let Verdict::Deny(over) = judged(&policy, sql, RowCount::Counted(Some(11))).verdict else {
        panic!("over the limit")
    };
    assert_eq!(over.max_rows, None);
    assert!(
        over.message.contains("11 rows") && over.message.contains("limit is 10"),
        "{}",
        over.message
    );
    assert!(matches!(
        judged(&policy, sql, RowCount::Counted(None)).verdict,
        Verdict::Deny(_)
    ));
    // A hold with max_rows: dry run first; the approver sees the count.
    let update = "UPDATE accounts SET flag = true WHERE id > 5";
    let Verdict::Hold(h) = judged(&policy, update, RowCount::NotCounted).verdict else {
        panic!("a conditional hold")
    };
    assert_eq!(h.max_rows, Some(100));
    assert_eq!(
        judged(&policy, update, RowCount::Counted(Some(3))).verdict,
        Verdict::Allow
    );
    let Verdict::Hold(h) = judged(&policy, update, RowCount::Counted(Some(500))).verdict else {
        panic!("held")
    };
    assert!(
        h.message.contains("500 rows") && h.max_rows.is_none(),
        "{}",
        h.message
    );
    // What a dry run cannot count is judged as over the limit, and says why.
    for uncountable in [
        "DELETE FROM orders WHERE id = 1; SELECT 1",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d",
        "PREPARE p AS DELETE FROM orders",
    ] {
        let Verdict::Deny(d) = judged(&policy, uncountable, RowCount::NotCounted).verdict else {
            panic!("{uncountable}: denied outright")
        };
        assert_eq!(d.max_rows, None, "{uncountable}");
        assert!(d.message.contains("cannot be checked"), "{}", d.message);
    }
    // An unconditional deny later in the file still wins over a dry run.
    let strict = load(
        "policy:
  deny:
    - {name: limited, statements: [delete], max_rows: 5}
    - {name: never-orders, statements: [delete], tables: [orders]}
",
    )
    .policy;
    assert_eq!(
        verdict(&strict, "DELETE FROM orders WHERE id = 1"),
        ("deny", Some("never-orders".to_owned()))
    );
    let Verdict::Deny(d) = judged(
        &strict,
        "DELETE FROM other WHERE id = 1",
        RowCount::NotCounted,
    )
    .verdict
    else {
        panic!("conditional")
    };
    assert_eq!(d.max_rows, Some(5));
    // Rules whose kinds report no rows warn that max_rows cannot apply.
    let warned = load("policy: {deny: [{statements: [truncate], max_rows: 5}]}");
    assert!(
        warned
            .warnings
            .iter()
            .any(|w| w.contains("max_rows") && w.contains("cannot be checked")),
        "{:?}",
        warned.warnings
    );
}

#[test]
fn predicates_option_on_column_rules() {
    let policy = load(
        "policy:
  mask:
    - {name: ssn, columns: [customers.ssn], predicates: deny}
    - {name: email, columns: [email], predicates: hold}
    - {name: phone, columns: [phone]}
",
    )
    .policy;
    let actions: Vec<_> = policy.mask_rules().iter().map(|r| r.predicates).collect();
    assert_eq!(
        actions,
        [
            PredicateAction::Deny,
            PredicateAction::Hold,
            PredicateAction::Allow
        ]
    );
    let e = errors("policy: {mask: [{detect: [email], predicates: deny}]}");
    assert!(e[0].contains("predicates"), "{e:?}");
    assert!(
        errors("policy: {mask: [{columns: [ssn], predicates: sometimes}]}")[0]
            .contains("predicates")
    );
}

#[test]
fn the_design_contract_names_and_the_bundled_example_load() {
    // DESIGN.md's policy block, with the fail-closed names of issue 23.
    let yaml = "
policy:
  unparsed: deny
  server_code: deny
  mask:
    - columns: [customers.ssn]
      strategy: partial
      keep_last: 4
      predicates: allow
    - detect: [email, credit_card]
      strategy: redact
  deny:
    - statements: [destructive_ddl]
      message: destructive DDL is not allowed here
    - statements: [delete]
      tables: [orders]
      max_rows: 100
    - statements: [delete, update]
      without_where: true
  hold:
    - statements: [delete, update]
      tables: [orders]
      timeout: 5m
";
    let loaded = load(yaml);
    assert_eq!(
        verdict(&loaded.policy, "ALTER TABLE customers RENAME TO c2"),
        ("deny", Some("deny[0]".into()))
    );
    assert_eq!(
        verdict(&loaded.policy, "DELETE FROM orders WHERE id = id"),
        ("deny", Some("deny[2]".into()))
    );
    let example = include_str!("../../examples/hoop.yaml");
    let loaded = crate::parse_checked(Path::new("examples/hoop.yaml"), example)
        .unwrap_or_else(|e| panic!("examples/hoop.yaml: {e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        verdict(&loaded.policy, "DROP TABLE customers"),
        ("deny", Some("no-destructive-ddl".into()))
    );
}

#[test]
fn kubernetes_when_selectors_from_yaml() {
    use hoop_core::PodIdentity;
    use std::{collections::BTreeMap, sync::Arc};
    let policy = load(
        "policy:
  deny:
    - name: no-deletes-in-shop
      statements: [delete]
      when: {namespace: [shop], service_account: ['api-*'], labels: {tier: [web, 'edge-*']}}
    - name: no-updates-from-the-batch-pod
      statements: [update]
      when: {pod: ['batch-*'], labels: {team: payments}}
",
    )
    .policy;
    let pod = |namespace: &str, name: &str, sa: &str, labels: &[(&str, &str)]| SessionIdentity {
        pod: Some(Arc::new(PodIdentity {
            namespace: namespace.into(),
            pod: name.into(),
            service_account: sa.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..PodIdentity::default()
        })),
        ..session("alice")
    };
    let rule =
        |sql: &str, s: &SessionIdentity| policy.judge(&Postgres, sql, Submission::Text, s).rule;
    let shop = pod("shop", "api-1", "api-rw", &[("tier", "edge-3")]);
    assert_eq!(
        rule("delete from t", &shop).as_deref(),
        Some("no-deletes-in-shop")
    );
    let other_ns = pod("shop-dev", "api-1", "api-rw", &[("tier", "edge-3")]);
    assert_eq!(rule("delete from t", &other_ns), None);
    let other_label = pod("shop", "api-1", "api-rw", &[("tier", "db")]);
    assert_eq!(rule("delete from t", &other_label), None);
    assert_eq!(rule("delete from t", &session("alice")), None, "not a pod");
    let batch = pod("jobs", "batch-42", "default", &[("team", "payments")]);
    assert_eq!(
        rule("update t set a = 1", &batch).as_deref(),
        Some("no-updates-from-the-batch-pod")
    );

    let errs = errors(
        "policy:
  deny:
    - statements: [delete]
      when: {namespace: [], labels: {}, cluster: [x]}
",
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("policy.deny[0].when.cluster: unknown key")),
        "{errs:?}"
    );
}
