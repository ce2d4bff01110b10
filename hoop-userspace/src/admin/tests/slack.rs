//! Slack over real HTTP: the Block Kit message a hold posts to the webhook,
//! and signed button callbacks at `POST /api/slack/actions`, with a local
//! server standing in for Slack's `response_url`.

use std::collections::BTreeMap;

use hyper::HeaderMap;

use super::*;
use crate::admin::slack::{SlackAuth, tests::signed_headers};
use hoop_config::SlackUser;
use hoop_hold::Webhook;

const SECRET: &[u8] = b"slack-signing-secret-for-tests";
const UI_URL: &str = "https://hoop.example.com/ui/";

fn slack_auth() -> SlackAuth {
    let user = |identity: &str, groups: Option<&[&str]>| SlackUser {
        identity: identity.to_owned(),
        groups: groups.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
    };
    SlackAuth::new(
        SECRET.to_vec(),
        BTreeMap::from([
            // Groups from alice's static token (dba).
            ("U0ALICE".to_owned(), user("alice", None)),
            // Groups given here.
            (
                "U0DANA".to_owned(),
                user("dana@example.com", Some(&["dba"])),
            ),
            // carol's token says dev: not an approver.
            ("U0CAROL".to_owned(), user("carol", None)),
        ]),
        Some(UI_URL.to_owned()),
    )
}

async fn slack_server() -> Server {
    Server::start_full(
        HoldRegistry::new(None),
        true,
        |auth| auth.with_slack(slack_auth()),
        None,
    )
    .await
}

/// The form body Slack POSTs when `user` clicks `action_id` on `hold`.
fn click(user: &str, action_id: &str, hold: &str, response_url: &str) -> Vec<u8> {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": "someone", "team_id": "T0001" },
        "team": { "id": "T0001", "domain": "example" },
        "api_app_id": "A0001",
        "container": { "type": "message", "message_ts": "1700000000.000100", "channel_id": "C0001" },
        "trigger_id": "1.2.3",
        "channel": { "id": "C0001", "name": "approvals" },
        "response_url": response_url,
        "actions": [{
            "type": "button", "action_id": action_id, "block_id": "hoop_hold", "value": hold,
            "text": { "type": "plain_text", "text": "Approve" }, "action_ts": "1700000001.000200",
        }],
    });
    serde_urlencoded::to_string([("payload", payload.to_string())])
        .unwrap()
        .into_bytes()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn post_callback(server: &Server, headers: &HeaderMap, body: Vec<u8>) -> Reply {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    raw_request(
        server.addr,
        Method::POST,
        "/api/slack/actions",
        &borrowed,
        Some(("application/x-www-form-urlencoded", body)),
    )
    .await
}

async fn signed_click(server: &Server, user: &str, action: &str, hold: &str, url: &str) -> Reply {
    let body = click(user, action, hold, url);
    post_callback(server, &signed_headers(SECRET, now(), &body), body).await
}

async fn next(received: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .expect("Slack's stand-in hears from hoop")
        .unwrap()
}

fn has_buttons(message: &Value) -> bool {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["type"] == "actions")
}

#[tokio::test]
async fn a_slack_webhook_posts_block_kit_with_approve_and_deny_buttons() {
    let (url, mut received) = webhook_sink(StatusCode::OK).await;
    let registry = HoldRegistry::new(Some(Webhook {
        config: WebhookConfig {
            url,
            timeout: Duration::from_secs(5),
            format: WebhookFormat::Slack,
        },
        ui_url: Some(UI_URL.to_owned()),
    }));
    let server = Server::start_with(registry, true).await;
    let mut session = session();
    session.application_name = Some("<!channel> *bold* <https://evil.test|click>".to_owned());
    let ticket = server.holds.create(
        &session,
        "DELETE FROM orders WHERE note = '<img src=x onerror=alert(1)>'",
        &requirement(MINUTE, 1),
    );
    let message = next(&mut received).await;
    let blocks = message["blocks"].as_array().unwrap();
    let actions = blocks
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("an actions block");
    let buttons = actions["elements"].as_array().unwrap();
    let button = |action_id: &str| {
        buttons
            .iter()
            .find(|b| b["action_id"] == action_id)
            .unwrap_or_else(|| panic!("no {action_id} button in {actions}"))
    };
    assert_eq!(button("approve")["value"], ticket.id());
    assert_eq!(button("approve")["style"], "primary");
    assert_eq!(button("deny")["value"], ticket.id());
    assert_eq!(button("deny")["style"], "danger");
    assert!(button("deny")["confirm"].is_object());
    assert_eq!(
        button("open")["url"],
        format!("{UI_URL}#hold={}", ticket.id())
    );
    // The statement is in a preformatted rich-text element, as typed.
    let statement = blocks.iter().find(|b| b["type"] == "rich_text").unwrap();
    assert_eq!(
        statement["elements"][0]["elements"][0]["text"],
        "DELETE FROM orders WHERE note = '<img src=x onerror=alert(1)>'"
    );
    // Client-chosen text is plain_text only: no mention or link can come from it.
    let fields = &blocks[1]["fields"];
    let app = fields
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["text"].as_str().unwrap().starts_with("Application"))
        .unwrap();
    assert_eq!(app["type"], "plain_text");
    for block in blocks {
        if block["type"] == "context" {
            let text = block["elements"][0]["text"].as_str().unwrap();
            assert!(
                !text.contains("channel") && !text.contains("evil"),
                "{text}"
            );
        }
    }
    assert!(
        message["text"].as_str().unwrap().contains(ticket.id()),
        "{message}"
    );
    assert!(!message["text"].as_str().unwrap().contains("<!channel>"));
}

#[tokio::test]
async fn a_signed_approve_click_approves_and_updates_the_message() {
    let (response_url, mut received) = webhook_sink(StatusCode::OK).await;
    let server = slack_server().await;
    let mut ticket = server.hold(MINUTE, 1);
    let reply = signed_click(&server, "U0ALICE", "approve", ticket.id(), &response_url).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Approved {
            by: vec!["alice".to_owned()]
        }
    );
    let update = next(&mut received).await;
    assert_eq!(update["replace_original"], true);
    assert!(
        !has_buttons(&update),
        "a decided hold has no buttons: {update}"
    );
    let shown = update.to_string();
    assert!(shown.contains("Approved by alice"), "{shown}");
    assert!(shown.contains("<@U0ALICE>"), "{shown}");
    assert_eq!(
        server.holds.get(ticket.id()).unwrap().decisions[0].identity,
        "alice"
    );
}

#[tokio::test]
async fn a_signed_deny_click_denies() {
    let (response_url, mut received) = webhook_sink(StatusCode::OK).await;
    let server = slack_server().await;
    let mut ticket = server.hold(MINUTE, 1);
    let reply = signed_click(&server, "U0DANA", "deny", ticket.id(), &response_url).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Denied {
            by: Some("dana@example.com".to_owned()),
            reason: None
        }
    );
    let update = next(&mut received).await;
    assert!(
        update.to_string().contains("Denied by dana@example.com"),
        "{update}"
    );
    assert!(!has_buttons(&update));

    // A second click on the decided hold: 409, and the message shows the outcome.
    let late = signed_click(&server, "U0ALICE", "approve", ticket.id(), &response_url).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.text);
    let update = next(&mut received).await;
    assert_eq!(update["replace_original"], true);
    assert!(update.to_string().contains("Denied by dana@example.com"));
}

#[tokio::test]
async fn a_bad_signature_or_an_old_timestamp_gets_401() {
    let (response_url, mut received) = webhook_sink(StatusCode::OK).await;
    let server = slack_server().await;
    let ticket = server.hold(MINUTE, 1);
    let body = click("U0ALICE", "approve", ticket.id(), &response_url);

    let forged = post_callback(
        &server,
        &signed_headers(b"not the secret", now(), &body),
        body.clone(),
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{}", forged.text);
    assert!(forged.json["error"].as_str().unwrap().contains("signature"));

    let old = now() - 6 * 60;
    let stale = post_callback(&server, &signed_headers(SECRET, old, &body), body.clone()).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.text);
    assert!(stale.json["error"].as_str().unwrap().contains("clock"));

    let unsigned = post_callback(&server, &HeaderMap::new(), body.clone()).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);

    // Signed for another body (a different hold id).
    let other = click("U0ALICE", "approve", "h-aaaaaaaaaa", &response_url);
    let swapped = post_callback(
        &server,
        &signed_headers(SECRET, now(), &other),
        body.clone(),
    )
    .await;
    assert_eq!(swapped.status, StatusCode::UNAUTHORIZED);

    // A valid request, replayed.
    let headers = signed_headers(SECRET, now(), &body);
    assert_eq!(
        post_callback(&server, &headers, body.clone()).await.status,
        StatusCode::OK
    );
    let replayed = post_callback(&server, &headers, body).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert!(replayed.json["error"].as_str().unwrap().contains("replay"));

    // Only the one valid click decided anything; nothing else reached Slack's stand-in.
    let update = next(&mut received).await;
    assert!(update.to_string().contains("Approved by alice"));
    assert!(received.try_recv().is_err());
}

#[tokio::test]
async fn an_unmapped_or_outsider_slack_user_gets_403() {
    let (response_url, mut received) = webhook_sink(StatusCode::OK).await;
    let server = slack_server().await;
    let ticket = server.hold(MINUTE, 1);

    let unmapped = signed_click(&server, "U0EVE", "approve", ticket.id(), &response_url).await;
    assert_eq!(unmapped.status, StatusCode::FORBIDDEN, "{}", unmapped.text);
    assert!(unmapped.json["error"].as_str().unwrap().contains("U0EVE"));
    let note = next(&mut received).await;
    assert_eq!(note["response_type"], "ephemeral");
    assert_eq!(note["replace_original"], false);
    assert!(note["text"].as_str().unwrap().contains("admin.slack.users"));

    let outsider = signed_click(&server, "U0CAROL", "deny", ticket.id(), &response_url).await;
    assert_eq!(outsider.status, StatusCode::FORBIDDEN, "{}", outsider.text);
    assert!(outsider.json["error"].as_str().unwrap().contains("dba"));
    let note = next(&mut received).await;
    assert_eq!(note["response_type"], "ephemeral");

    assert_eq!(
        server.holds.get(ticket.id()).unwrap().state,
        hoop_hold::HoldState::Pending
    );
}

#[tokio::test]
async fn other_interactions_and_the_link_button_do_nothing() {
    let (response_url, mut received) = webhook_sink(StatusCode::OK).await;
    let server = slack_server().await;
    let ticket = server.hold(MINUTE, 1);
    let open = signed_click(&server, "U0ALICE", "open", ticket.id(), &response_url).await;
    assert_eq!(open.status, StatusCode::OK);
    let payload = json!({ "type": "view_submission", "user": { "id": "U0ALICE" } });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())])
        .unwrap()
        .into_bytes();
    let view = post_callback(&server, &signed_headers(SECRET, now(), &body), body).await;
    assert_eq!(view.status, StatusCode::OK);
    let garbage = b"payload=not-json".to_vec();
    let bad = post_callback(&server, &signed_headers(SECRET, now(), &garbage), garbage).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(received.try_recv().is_err());
    assert_eq!(
        server.holds.get(ticket.id()).unwrap().state,
        hoop_hold::HoldState::Pending
    );
}

#[tokio::test]
async fn without_admin_slack_the_route_refuses() {
    let server = Server::start().await;
    let ticket = server.hold(MINUTE, 1);
    let body = click("U0ALICE", "approve", ticket.id(), "http://127.0.0.1:1/");
    let reply = post_callback(&server, &signed_headers(SECRET, now(), &body), body).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_large_slack_payload_is_accepted() {
    let (response_url, _received) = webhook_sink(StatusCode::OK).await;
    let server = slack_server().await;
    let ticket = server.hold(MINUTE, 1);
    let payload = json!({
        "type": "block_actions",
        "user": { "id": "U0ALICE" },
        "response_url": response_url,
        "message": { "text": "x".repeat(100_000) },
        "actions": [{ "action_id": "approve", "value": ticket.id() }],
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())])
        .unwrap()
        .into_bytes();
    assert!(body.len() > 64 * 1024);
    let reply = post_callback(&server, &signed_headers(SECRET, now(), &body), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}
