//! Issue 25: approvals where approvers are. The page at `/ui/` in a real
//! browser, and Slack's buttons, deciding real psql sessions held by a real
//! `hoop exec`.
//!
//! The browser test drives Debian's `chromium` with `playwright-core`
//! (`tests/ui/approvals.mjs`, installed by `npm ci` from the committed lock
//! file; `cargo xtask test` installs both when missing). Without them it
//! fails under CI=true and is skipped, saying so, elsewhere.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hoop_tests::{
    TestConfig, hoop_exec_spawn,
    issuer::{IssuedUser, TestIssuer},
    psql_direct, require_privileged,
    sink::JsonSink,
    text, wait_output,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const ALICE: &str = "ui-alice-token";
const BOB: &str = "ui-bob-token";
const T: Duration = Duration::from_mins(3);

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `ui_orders`, rows 1 to 10: the tests' own table (others run concurrently).
fn fresh_table() {
    psql_direct(
        "DROP TABLE IF EXISTS ui_orders; CREATE TABLE ui_orders (id int PRIMARY KEY, item text);
         INSERT INTO ui_orders SELECT g, 'item ' || g FROM generate_series(1, 10) g;",
    );
}

fn remaining(ids: &str) -> String {
    psql_direct(&format!(
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM ui_orders WHERE id IN ({ids})"
    ))
    .trim()
    .to_owned()
}

/// A config holding DELETEs on `ui_orders` for a dba, with alice (dba) and
/// bob (dev) as static tokens and `admin_extra` under `admin:`.
fn config(admin_extra: &str) -> TestConfig {
    let cfg = TestConfig::new(
        &[5432],
        "proxy:\n  hold_reminder_interval: 5s\npolicy:\n  hold:\n    - name: ui-orders-deletes\n      \
         statements: [delete]\n      tables: [ui_orders]\n      approvers: [dba]\n      timeout: 3m\n      \
         message: deletes on ui_orders need a DBA\n",
    );
    let tokens = cfg.dir.path().join("tokens.yaml");
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
    let yaml = std::fs::read_to_string(&cfg.path).expect("config").replace(
        "admin:\n",
        &format!("admin:\n  tokens_file: {}\n{admin_extra}", tokens.display()),
    );
    std::fs::write(&cfg.path, yaml).expect("config");
    cfg
}

/// Waits until the admin API answers.
fn wait_for_admin(cfg: &TestConfig) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let up = Command::new("curl")
            .args(["-sf", "-o", "/dev/null"])
            .arg(format!("{}/healthz", cfg.admin_url()))
            .status()
            .is_ok_and(|s| s.success());
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("hoop's admin API did not come up");
}

/// When dropped: denies what is still pending and creates `done`, so a
/// failing test never leaves psql (and hoop) waiting for the hold timeout.
struct Release {
    done: PathBuf,
    admin: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let listed = Command::new("curl")
            .args(["-sf", "-H"])
            .arg(format!("authorization: Bearer {ALICE}"))
            .arg(format!("{}/api/holds", self.admin))
            .output();
        let holds: Vec<Value> = listed
            .ok()
            .and_then(|out| serde_json::from_slice(&out.stdout).ok())
            .unwrap_or_default();
        for hold in holds.iter().filter(|h| h["state"] == "pending") {
            let id = hold["id"].as_str().unwrap_or_default();
            let _ = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-X", "POST", "-H"])
                .arg(format!("authorization: Bearer {ALICE}"))
                .arg(format!("{}/api/holds/{id}/deny", self.admin))
                .status();
        }
        let _ = std::fs::write(&self.done, "done\n");
    }
}

/// `node`, Debian's chromium and playwright-core, or why not.
fn browser_tools(ui_dir: &Path) -> Result<(), String> {
    let mut missing = Vec::new();
    if !Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        missing.push("node".to_owned());
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        missing.push(format!("chromium ({chromium})"));
    }
    if !ui_dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push(format!("playwright-core (npm ci in {})", ui_dir.display()));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing: {}; `cargo xtask test` installs them",
            missing.join(", ")
        ))
    }
}

#[test]
fn approvers_decide_held_statements_in_a_real_browser() {
    require_privileged();
    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    if let Err(why) = browser_tools(&ui_dir) {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "the browser test cannot run under CI=true: {why}");
        eprintln!("SKIPPED approvers_decide_held_statements_in_a_real_browser: {why}");
        return;
    }
    fresh_table();
    let issuer = TestIssuer::start(
        "hoop-ui",
        IssuedUser {
            email: "carol@example.com".to_owned(),
            groups: vec!["dba".to_owned()],
        },
    );
    let cfg = config(&format!(
        "  oidc:\n    issuer: {}\n    audience: hoop-api\n    jwks_url: {}\n    client_id: hoop-ui\n    \
         scopes: [openid, email, groups]\n",
        issuer.base,
        issuer.jwks_url()
    ));
    let dir = cfg.dir.path().to_owned();
    let psql = |name: &str, sql: &str| {
        std::fs::write(dir.join(format!("{name}.sql")), sql).expect("sql file");
        format!(
            "psql -X -h 127.0.0.1 -U postgres -d test -f {d}/{name}.sql > {d}/{name}.out 2>&1 &",
            d = dir.display()
        )
    };
    let script = format!(
        "while [ ! -e {d}/go ]; do sleep 0.05; done\n{a}\n{b}\n{c}\nwait\n\
         while [ ! -e {d}/done ]; do sleep 0.1; done\n",
        d = dir.display(),
        a = psql(
            "a",
            "SELECT 'ui context probe' AS probe;\nSELECT count(*) FROM ui_orders;\nDELETE FROM ui_orders WHERE id = 1;\n"
        ),
        b = psql("b", "DELETE FROM ui_orders WHERE id = 2;\n"),
        c = psql(
            "c",
            "DELETE FROM ui_orders WHERE id = 3 OR item = '<img src=x onerror=\"window.__hoopXss=1\">';\n"
        ),
    );
    let release = Release {
        done: dir.join("done"),
        admin: cfg.admin_url(),
    };
    let hoop = hoop_exec_spawn(&cfg.path, &["sh", "-c", &script]);
    wait_for_admin(&cfg);

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact directory");
    let screenshot = artifacts.join("pending-holds.png");
    let _ = std::fs::remove_file(&screenshot);
    let node = Command::new("node")
        .arg("approvals.mjs")
        .current_dir(&ui_dir)
        .env("HOOP_UI", format!("{}/ui/", cfg.admin_url()))
        .env("ALICE_TOKEN", ALICE)
        .env("BOB_TOKEN", BOB)
        .env("GO_FILE", dir.join("go"))
        .env("SCREENSHOT", &screenshot)
        .env("OIDC_EMAIL", "carol@example.com")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let browser = wait_output(node, T);
    drop(release);
    let hoop = wait_output(hoop, T);
    let (browser_out, browser_err) = text(&browser);
    let (_, hoop_err) = text(&hoop);
    let outcome: Value = serde_json::from_str(browser_out.trim().lines().last().unwrap_or("null"))
        .unwrap_or(Value::Null);
    assert!(
        browser.status.success() && outcome["ok"] == true,
        "the browser test failed: {outcome}\n--- browser log\n{browser_err}\n--- hoop\n{hoop_err}"
    );
    let read =
        |name: &str| std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default();
    let (a, b, c) = (read("a"), read("b"), read("c"));
    assert!(a.contains("DELETE 1"), "approved in the page: {a}");
    assert!(
        b.contains("ui test: not during the freeze") && b.contains("alice@example.com"),
        "denied in the page, with the reason: {b}"
    );
    assert!(c.contains("DELETE 1"), "approved after the OIDC login: {c}");
    assert_eq!(remaining("1,2,3"), "2", "rows 1 and 3 deleted, 2 kept");
    let issued = issuer.log();
    assert_eq!(issued.authorizations, 1, "{issued:?}");
    assert_eq!(issued.tokens_issued, 1, "{issued:?}");
    assert!(issued.refusals.is_empty(), "{issued:?}");
    assert!(screenshot.exists(), "the screenshot artifact");
    eprintln!("screenshot of the pending holds: {}", screenshot.display());
    psql_direct("DROP TABLE IF EXISTS ui_orders");
}

/// Slack's request signature over `body` at `at`.
fn slack_signature(secret: &[u8], at: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, format!("v0:{at}:{body}").as_bytes());
    format!("v0={}", hex::encode(tag.as_ref()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// POSTs a Slack-style callback with curl; returns the status code.
fn slack_callback(
    cfg: &TestConfig,
    secret: &[u8],
    at: i64,
    user: &str,
    action: &str,
    hold: &str,
    response_url: &str,
) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": user.to_lowercase(), "team_id": "T0UI" },
        "team": { "id": "T0UI" },
        "response_url": response_url,
        "actions": [{ "type": "button", "action_id": action, "block_id": "hoop_hold", "value": hold }],
    });
    let body = format!("payload={}", urlencode(&payload.to_string()));
    let file = cfg.dir.path().join("callback.form");
    std::fs::write(&file, &body).expect("callback body");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/x-www-form-urlencoded"])
        .arg("-H")
        .arg(format!("x-slack-request-timestamp: {at}"))
        .arg("-H")
        .arg(format!(
            "x-slack-signature: {}",
            slack_signature(secret, at, &body)
        ))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/api/slack/actions", cfg.admin_url()))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn slack_buttons_decide_held_statements() {
    require_privileged();
    fresh_table();
    let slack = JsonSink::start();
    let secret = b"ui-test-slack-signing-secret";
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret_file = secrets.path().join("slack-signing-secret");
    std::fs::write(&secret_file, secret).expect("secret");
    std::fs::set_permissions(
        &secret_file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("chmod 600");
    let cfg = config(&format!(
        "  webhook: {{url: {}/services/T0UI/B0UI/secret, format: slack}}\n  slack:\n    \
         signing_secret_file: {}\n    users: {{U0ALICE: alice@example.com, U0BOB: bob@example.com}}\n    \
         ui_url: https://hoop.example.test/ui/\n",
        slack.base,
        secret_file.display()
    ));
    let dir = cfg.dir.path().to_owned();
    let script = format!(
        "psql -X -h 127.0.0.1 -U postgres -d test -c 'DELETE FROM ui_orders WHERE id = 4' > {d}/approve.out 2>&1 &\n\
         psql -X -h 127.0.0.1 -U postgres -d test -c 'DELETE FROM ui_orders WHERE id = 5' > {d}/deny.out 2>&1 &\n\
         wait\n",
        d = dir.display()
    );
    let hoop = hoop_exec_spawn(&cfg.path, &["sh", "-c", &script]);

    // Both holds are announced in Block Kit, with the buttons Slack will send back.
    let messages = slack.wait_for("/services/T0UI/B0UI/secret", 2, Duration::from_secs(30));
    let mut holds = Vec::new();
    for message in &messages {
        let blocks = message["blocks"].as_array().expect("blocks");
        let statement = blocks
            .iter()
            .find(|b| b["type"] == "rich_text")
            .and_then(|b| b["elements"][0]["elements"][0]["text"].as_str())
            .expect("the statement")
            .to_owned();
        let buttons = blocks
            .iter()
            .find(|b| b["type"] == "actions")
            .and_then(|b| b["elements"].as_array())
            .expect("buttons")
            .clone();
        let button = |id: &str| {
            buttons
                .iter()
                .find(|b| b["action_id"] == id)
                .unwrap_or_else(|| panic!("no {id} button in {message}"))
                .clone()
        };
        let hold = button("approve")["value"]
            .as_str()
            .expect("a hold id")
            .to_owned();
        assert_eq!(button("deny")["value"], hold.as_str());
        assert_eq!(
            button("open")["url"],
            format!("https://hoop.example.test/ui/#hold={hold}")
        );
        holds.push((statement, hold));
    }
    let hold_for = |row: &str| {
        holds
            .iter()
            .find(|(s, _)| s.contains(&format!("id = {row}")))
            .map(|(_, h)| h.clone())
            .expect("a hold for the row")
    };
    let (approve, deny) = (hold_for("4"), hold_for("5"));
    let respond = format!("{}/actions/T0UI/response", slack.base);

    // Refused: forged, stale, unknown user, a user outside the approvers.
    assert_eq!(
        slack_callback(
            &cfg,
            b"forged",
            now(),
            "U0ALICE",
            "approve",
            &approve,
            &respond
        ),
        "401"
    );
    assert_eq!(
        slack_callback(
            &cfg,
            secret,
            now() - 400,
            "U0ALICE",
            "approve",
            &approve,
            &respond
        ),
        "401"
    );
    assert_eq!(
        slack_callback(&cfg, secret, now(), "U0EVE", "approve", &approve, &respond),
        "403"
    );
    assert_eq!(
        slack_callback(&cfg, secret, now(), "U0BOB", "approve", &approve, &respond),
        "403"
    );
    // Decided: alice approves one and denies the other.
    assert_eq!(
        slack_callback(
            &cfg,
            secret,
            now(),
            "U0ALICE",
            "approve",
            &approve,
            &respond
        ),
        "200"
    );
    assert_eq!(
        slack_callback(&cfg, secret, now(), "U0ALICE", "deny", &deny, &respond),
        "200"
    );
    let (_, hoop_err) = text(&wait_output(hoop, T));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let (approved, denied) = (read("approve.out"), read("deny.out"));
    assert!(approved.contains("DELETE 1"), "{approved}\n{hoop_err}");
    assert!(
        denied.contains("denied by alice@example.com"),
        "{denied}\n{hoop_err}"
    );
    assert_eq!(remaining("4,5"), "5");

    // Slack heard back: two notes for the refused users, two updated messages.
    let answers = slack.wait_for("/actions/T0UI/response", 4, Duration::from_secs(10));
    let notes = answers
        .iter()
        .filter(|a| a["response_type"] == "ephemeral")
        .count();
    assert_eq!(notes, 2, "{answers:?}");
    let updates: Vec<String> = answers
        .iter()
        .filter(|a| a["replace_original"] == true)
        .map(Value::to_string)
        .collect();
    assert!(
        updates
            .iter()
            .any(|u| u.contains("Approved by alice@example.com")),
        "{updates:?}"
    );
    assert!(
        updates
            .iter()
            .any(|u| u.contains("Denied by alice@example.com")),
        "{updates:?}"
    );
    assert!(
        updates.iter().all(|u| !u.contains("\"actions\"")),
        "decided messages have no buttons: {updates:?}"
    );
    psql_direct("DROP TABLE IF EXISTS ui_orders");
}
