//! Issue 4: held statements wait, in-protocol, for a person's decision.
//! Real PostgreSQL, real clients under `hoop exec`, the real admin API and
//! the `hoop holds` CLI.

use std::{
    process::{Child, Command, Output},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hoop_tests::{
    TestConfig, hoop_bin, hoop_exec_spawn, psql_args, psql_direct, require_privileged, text,
    wait_output,
};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const T: Duration = Duration::from_mins(1);
const ALICE: &str = "alice-secret-token";
const BOB: &str = "bob-secret-token";

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

struct Setup {
    cfg: TestConfig,
    key: EcdsaKeyPair,
    /// Holds the tokens file and the JWKS for the test's lifetime.
    _auth_files: tempfile::TempDir,
}

fn setup(timeout: &str) -> Setup {
    psql_direct(
        "DROP TABLE IF EXISTS orders; CREATE TABLE orders (id int PRIMARY KEY, item text);
         INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 10) g;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{token_sha256: {}, identity: alice@example.com, groups: [dba]}}\n\
             - {{token_sha256: {}, identity: bob@example.com, groups: [dev]}}\n",
            sha(ALICE),
            sha(BOB)
        ),
    )
    .expect("tokens");
    // A test OIDC issuer: an EC P-256 key in a local JWKS file.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    let point = key.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "test-1", "alg": "ES256", "use": "sig",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}]});
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).expect("jwks");
    let extra = format!(
        "proxy:\n  hold_reminder_interval: 1s\npolicy:\n  hold:\n    - name: orders-deletes\n      statements: [delete]\n      tables: [orders]\n      approvers: [dba]\n      timeout: {timeout}\n      message: deletes on orders need a DBA\n"
    );
    let cfg = TestConfig::new(&[5432], &extra);
    // TestConfig wrote admin.listen; add the auth keys under it.
    let yaml = std::fs::read_to_string(&cfg.path).expect("config").replace(
        "admin:\n",
        &format!(
            "admin:\n  tokens_file: {}\n  oidc:\n    issuer: https://idp.test\n    audience: hoop\n    jwks_file: {}\n",
            tokens.display(),
            jwks_file.display()
        ),
    );
    std::fs::write(&cfg.path, yaml).expect("config");
    Setup {
        cfg,
        key,
        _auth_files: dir,
    }
}

fn jwt(key: &EcdsaKeyPair, aud: &str, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let header = B64.encode(json!({"alg": "ES256", "typ": "JWT", "kid": "test-1"}).to_string());
    let claims = B64.encode(
        json!({"iss": "https://idp.test", "aud": aud, "sub": "carol", "email": "carol@example.com",
               "groups": ["dba"], "iat": now, "exp": now + exp_offset})
        .to_string(),
    );
    let input = format!("{header}.{claims}");
    let sig = key
        .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

fn holds_cli(cfg: &TestConfig, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(hoop_bin());
    cmd.arg("holds")
        .args(args)
        .arg("--admin")
        .arg(cfg.admin_url())
        .env_remove("HOOP_TOKEN");
    if let Some(t) = token {
        cmd.env("HOOP_TOKEN", t);
    }
    cmd.output().expect("hoop holds")
}

fn list(cfg: &TestConfig) -> Vec<Value> {
    let out = holds_cli(cfg, Some(ALICE), &["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json array")
}

/// Waits for `n` pending holds; returns them.
fn pending(cfg: &TestConfig, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(out) = std::panic::catch_unwind(|| list(cfg)) {
            let p: Vec<Value> = out
                .into_iter()
                .filter(|h| h["state"] == "pending")
                .collect();
            if p.len() >= n {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "no {n} pending holds appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn psql_held(cfg: &TestConfig, sql: &[&str]) -> Child {
    let mut args = psql_args(&[]);
    for s in sql {
        args.push("-c");
        args.push(s);
    }
    hoop_exec_spawn(&cfg.path, &args)
}

fn orders(id: i32) -> String {
    psql_direct(&format!("SELECT count(*) FROM orders WHERE id = {id}"))
        .trim()
        .to_owned()
}

#[test]
fn approve_runs_the_held_delete_once() {
    require_privileged();
    let s = setup("5m");
    // psql, then linger so the admin API can still be asked afterwards.
    let child = hoop_exec_spawn(
        &s.cfg.path,
        &[
            "sh",
            "-c",
            "psql -X -h 127.0.0.1 -U postgres -d test -c 'DELETE FROM orders WHERE id = 1'; sleep 2",
        ],
    );
    let hold = &pending(&s.cfg, 1)[0];
    assert_eq!(hold["rule"], "orders-deletes");
    assert_eq!(hold["session"]["user"], "postgres");
    assert!(
        hold["statement"]
            .as_str()
            .is_some_and(|t| t.contains("DELETE FROM orders")),
        "{hold}"
    );
    assert!(
        hold["expires_at"].is_string() && hold["created_at"].is_string(),
        "{hold}"
    );
    assert_eq!(orders(1), "1", "nothing ran before approval");
    let id = hold["id"].as_str().expect("id").to_owned();
    let out = holds_cli(
        &s.cfg,
        Some(ALICE),
        &["approve", &id, "--reason", "ticket 42"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The decision is recorded with the approver, and cannot be replayed.
    let decided = list(&s.cfg)
        .into_iter()
        .find(|h| h["id"] == id.as_str())
        .expect("still listed");
    assert_eq!(decided["state"], "approved", "{decided}");
    assert!(
        decided.to_string().contains("alice@example.com"),
        "{decided}"
    );
    let again = holds_cli(&s.cfg, Some(ALICE), &["approve", &id]);
    assert!(
        !again.status.success(),
        "a decided hold cannot be approved again"
    );
    let out = wait_output(child, T);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("DELETE 1"), "{stdout}");
    assert!(
        stderr.contains(&format!("hoop holds approve {id}")),
        "the notice names the hold: {stderr}"
    );
    assert_eq!(orders(1), "0");
}

#[test]
fn deny_with_a_reason_leaves_the_row_and_the_session_usable() {
    require_privileged();
    let s = setup("5m");
    let child = psql_held(
        &s.cfg,
        &[
            "DELETE FROM orders WHERE id = 2",
            "SELECT 'still here' AS s",
        ],
    );
    let id = pending(&s.cfg, 1)[0]["id"].as_str().expect("id").to_owned();
    let out = holds_cli(
        &s.cfg,
        Some(ALICE),
        &["deny", &id, "--reason", "not during business hours"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (stdout, stderr) = text(&wait_output(child, T));
    assert!(stderr.contains("not during business hours"), "{stderr}");
    assert!(
        stderr.contains("alice@example.com"),
        "the decider is named: {stderr}"
    );
    assert!(stdout.contains("still here"), "{stdout}");
    assert_eq!(orders(2), "1");
}

#[test]
fn an_undecided_hold_times_out_as_denied() {
    require_privileged();
    let s = setup("2s");
    let started = Instant::now();
    let (_, stderr) = text(&wait_output(
        psql_held(&s.cfg, &["DELETE FROM orders WHERE id = 3"]),
        T,
    ));
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(orders(3), "1");
}

#[test]
fn a_held_prepared_delete_runs_exactly_once_on_approval() {
    require_privileged();
    let s = setup("5m");
    let child = hoop_exec_spawn(
        &s.cfg.path,
        &[
            env!("CARGO_BIN_EXE_pg-client"),
            "execute-param",
            "DELETE FROM orders WHERE id = $1 OR id = 10",
            "4",
        ],
    );
    let id = pending(&s.cfg, 1)[0]["id"].as_str().expect("id").to_owned();
    assert!(
        holds_cli(&s.cfg, Some(ALICE), &["approve", &id])
            .status
            .success()
    );
    let (stdout, stderr) = text(&wait_output(child, T));
    assert_eq!(stdout.trim(), r#"{"affected":2}"#, "{stderr}");
    assert_eq!(orders(4), "0");
    assert_eq!(
        psql_direct("SELECT count(*) FROM orders").trim(),
        "8",
        "ran once, not twice"
    );
}

#[test]
fn a_client_that_leaves_withdraws_its_hold() {
    require_privileged();
    let s = setup("5m");
    let mut cmd = Command::new(hoop_bin());
    cmd.arg("exec").arg("--config").arg(&s.cfg.path).arg("--").args([
        "sh",
        "-c",
        "timeout -s KILL 3 psql -X -h 127.0.0.1 -U postgres -d test -c 'DELETE FROM orders WHERE id = 5'; \
         sleep 2; curl -sf -H \"authorization: Bearer $TOKEN\" $ADMIN/api/holds",
    ]);
    cmd.env("ADMIN", s.cfg.admin_url()).env("TOKEN", ALICE);
    let out = cmd.output().expect("run");
    let (stdout, stderr) = text(&out);
    let holds: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null);
    let states: Vec<&str> = holds
        .as_array()
        .or_else(|| holds["holds"].as_array())
        .map(|a| a.iter().filter_map(|h| h["state"].as_str()).collect())
        .unwrap_or_default();
    assert!(states.contains(&"withdrawn"), "holds: {stdout}\n{stderr}");
    assert_eq!(orders(5), "1", "nothing ran");
}

#[test]
fn tokens_are_checked_401_403_and_oidc() {
    require_privileged();
    let s = setup("5m");
    let child = psql_held(&s.cfg, &["DELETE FROM orders WHERE id = 6"]);
    let id = pending(&s.cfg, 1)[0]["id"].as_str().expect("id").to_owned();
    let curl = |token: Option<&str>, path: &str| -> String {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .arg(format!("{}{path}", s.cfg.admin_url()));
        if let Some(t) = token {
            c.arg("-H").arg(format!("authorization: Bearer {t}"));
        }
        String::from_utf8_lossy(&c.output().expect("curl").stdout).into_owned()
    };
    let approve = format!("/api/holds/{id}/approve");
    assert_eq!(curl(None, &approve), "401", "no token");
    assert_eq!(curl(Some("not-a-token"), &approve), "401", "unknown token");
    assert_eq!(
        curl(Some(BOB), &approve),
        "403",
        "token outside the approver group"
    );
    assert_eq!(
        curl(Some(&jwt(&s.key, "other-audience", 300)), &approve),
        "401",
        "wrong audience"
    );
    assert_eq!(
        curl(Some(&jwt(&s.key, "hoop", -300)), &approve),
        "401",
        "expired"
    );
    assert_eq!(
        curl(Some(&jwt(&s.key, "hoop", 300)), &approve),
        "200",
        "OIDC token from the test issuer"
    );
    let (stdout, _) = text(&wait_output(child, T));
    assert!(stdout.contains("DELETE 1"), "{stdout}");
}

#[test]
fn two_sessions_holds_are_decided_independently() {
    require_privileged();
    let s = setup("5m");
    let dir = s.cfg.dir.path().display().to_string();
    let script = format!(
        "psql -X -h 127.0.0.1 -U postgres -d test -c 'DELETE FROM orders WHERE id = 7' > {dir}/a 2>&1 & \
         psql -X -h 127.0.0.1 -U postgres -d test -c 'DELETE FROM orders WHERE id = 8' > {dir}/b 2>&1 & \
         wait; cat {dir}/a; echo ---; cat {dir}/b"
    );
    let child = hoop_exec_spawn(&s.cfg.path, &["sh", "-c", &script]);
    let holds = pending(&s.cfg, 2);
    let by_row = |n: &str| {
        holds
            .iter()
            .find(|h| {
                h["statement"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("id = {n}")))
            })
            .and_then(|h| h["id"].as_str())
            .expect("hold for the row")
            .to_owned()
    };
    let (seven, eight) = (by_row("7"), by_row("8"));
    assert_ne!(seven, eight);
    assert!(
        holds_cli(&s.cfg, Some(ALICE), &["deny", &eight, "--reason", "keep 8"])
            .status
            .success()
    );
    assert!(
        holds_cli(&s.cfg, Some(ALICE), &["approve", &seven])
            .status
            .success()
    );
    let (stdout, stderr) = text(&wait_output(child, T));
    let (a, b) = stdout.split_once("---").expect("both outputs");
    assert!(a.contains("DELETE 1"), "{stdout}\n{stderr}");
    assert!(b.contains("keep 8"), "{stdout}");
    assert_eq!(orders(7), "0");
    assert_eq!(orders(8), "1");
}
