//! What the approvals page relies on: its files and their headers, the
//! per-caller `may_decide`, the waiting list, `whoami`, a hold's session
//! context, and shutdown while a request waits. (The page itself runs in a
//! real browser in `tests/tests/ui.rs`.)

use std::sync::Arc;

use super::*;
use hoop_core::{StatementKind, Submission};
use hoop_hold::HoldState;
use hoop_record::format::{
    Body, ChainWriter, Header, HoldEvent, HoldState as RecordedHold, ResultEvent, RowsEvent,
    RowsMode, StatementEvent, VerdictEvent, VerdictKind,
};

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy() {
    let server = Server::start().await;
    let page = raw_request(server.addr, Method::GET, "/ui/", &[], None).await;
    assert_eq!(page.status, StatusCode::OK);
    let header = |reply: &Reply, name: &str| {
        reply
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval") && !csp.contains('*'),
        "{csp}"
    );
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    assert!(
        page.headers.get(header::SET_COOKIE).is_none(),
        "no cookies, ever"
    );
    assert!(
        page.text
            .contains(r#"<script src="app.js" defer></script>"#)
    );

    for (path, content_type, needle) in [
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "textContent",
        ),
        ("/ui/app.css", "text/css; charset=utf-8", ".hold"),
        ("/ui/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let asset = raw_request(server.addr, Method::GET, path, &[], None).await;
        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert_eq!(header(&asset, "content-type"), content_type, "{path}");
        assert!(asset.text.contains(needle), "{path}");
        assert_eq!(header(&asset, "content-security-policy"), csp, "{path}");
    }
    let bare = raw_request(server.addr, Method::GET, "/ui", &[], None).await;
    assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&bare, "location"), "/ui/");

    // API answers are not cached, and carry the same hygiene headers.
    let api = server
        .request(Method::GET, "/api/holds", Some(ALICE), None)
        .await;
    assert_eq!(api.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert_eq!(
        api.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff"
    );
}

/// The page's own files keep the rules the policy enforces, so a mistake
/// shows here before a browser has to refuse it.
#[test]
fn the_page_has_no_inline_code_and_no_html_sinks() {
    let html = include_str!("../ui/index.html");
    let js = include_str!("../ui/app.js");
    for tag in html.match_indices("<script") {
        let rest = &html[tag.0..];
        let end = rest.find('>').unwrap();
        assert!(
            rest[..end].contains("src="),
            "inline script: {}",
            &rest[..end]
        );
        assert!(
            rest[end + 1..].starts_with("</script>"),
            "script with a body"
        );
    }
    assert!(!html.contains("<style"), "inline style element");
    assert!(!html.contains(" style="), "inline style attribute");
    let lower = html.to_ascii_lowercase();
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        "javascript:",
    ] {
        assert!(!lower.contains(handler), "{handler} in index.html");
    }
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setTimeout('",
        "localStorage",
        "document.cookie",
    ] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
}

#[tokio::test]
async fn each_caller_is_told_whether_they_may_decide() {
    let server = Server::start().await;
    let pending = server.hold(MINUTE, 1);
    let decided = server.hold(MINUTE, 1);
    assert_eq!(
        server.approve(decided.id(), BOB).await.status,
        StatusCode::OK
    );
    let list = |token| server.request(Method::GET, "/api/holds", Some(token), None);
    let alice = list(ALICE).await;
    assert_eq!(alice.json[0]["id"], pending.id());
    assert_eq!(alice.json[0]["may_decide"], true, "a dba decides");
    assert_eq!(alice.json[1]["id"], decided.id());
    assert_eq!(
        alice.json[1]["may_decide"], false,
        "nobody decides a decided hold"
    );
    let carol = list(CAROL).await;
    assert_eq!(carol.json[0]["may_decide"], false, "dev is not an approver");
    assert_eq!(
        carol.json[0]["statement"],
        "DELETE FROM orders WHERE id = $1"
    );
    // The API still refuses her, whatever a page shows.
    assert_eq!(
        server.approve(pending.id(), CAROL).await.status,
        StatusCode::FORBIDDEN
    );
    let one = server
        .request(
            Method::GET,
            &format!("/api/holds/{}", pending.id()),
            Some(CAROL),
            None,
        )
        .await;
    assert_eq!(one.json["may_decide"], false);
    // The CLI reads the same list.
    let mut out = Vec::new();
    cli::list(&server.endpoint(), ALICE, true, &mut out)
        .await
        .unwrap();
    assert!(String::from_utf8(out).unwrap().contains(pending.id()));
}

#[tokio::test]
async fn decided_holds_can_be_limited() {
    let server = Server::start().await;
    let waiting = server.hold(MINUTE, 1);
    for _ in 0..3 {
        let hold = server.hold(MINUTE, 1);
        server.approve(hold.id(), ALICE).await;
    }
    let all = server
        .request(Method::GET, "/api/holds", Some(ALICE), None)
        .await;
    assert_eq!(all.json.as_array().unwrap().len(), 4);
    let few = server
        .request(Method::GET, "/api/holds?decided=1", Some(ALICE), None)
        .await;
    let few = few.json.as_array().unwrap();
    assert_eq!(few.len(), 2, "every pending hold, one decided");
    assert_eq!(few[0]["id"], waiting.id());
    let bad = server
        .request(Method::GET, "/api/holds?decided=many", Some(ALICE), None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.json["error"]
            .as_str()
            .unwrap()
            .contains("invalid query")
    );
    let unknown = server
        .request(Method::GET, "/api/holds?state=pending", Some(ALICE), None)
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_waiting_list_request_returns_when_a_hold_appears() {
    let server = Server::start().await;
    let auth = bearer(ALICE);
    let first = raw_request(
        server.addr,
        Method::GET,
        "/api/holds",
        &[("authorization", &auth)],
        None,
    )
    .await;
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(first.json, json!([]));

    // Nothing changes: 304 once the wait runs out.
    let started = std::time::Instant::now();
    let unchanged = raw_request(
        server.addr,
        Method::GET,
        "/api/holds?wait=1",
        &[("authorization", &auth), ("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(unchanged.headers[header::ETAG], etag.as_str());

    // A hold created while the request waits ends the wait.
    let addr = server.addr;
    let (auth2, etag2) = (auth.clone(), etag.clone());
    let waiting = tokio::spawn(async move {
        raw_request(
            addr,
            Method::GET,
            "/api/holds?wait=30",
            &[("authorization", &auth2), ("if-none-match", &etag2)],
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "nothing changed yet");
    let ticket = server.hold(MINUTE, 1);
    let changed = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the wait ends with the change")
        .unwrap();
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.json[0]["id"], ticket.id());
    assert_ne!(changed.headers[header::ETAG], etag.as_str());

    // An approval and a timeout are changes too.
    let etag = changed.headers[header::ETAG].to_str().unwrap().to_owned();
    let mut short = server.hold(Duration::from_millis(300), 1);
    let after_create = raw_request(
        server.addr,
        Method::GET,
        "/api/holds",
        &[("authorization", &auth), ("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(after_create.status, StatusCode::OK, "the ETag moved");
    let etag = after_create.headers[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    let (auth3, etag3) = (auth.clone(), etag.clone());
    let waiting = tokio::spawn(async move {
        raw_request(
            addr,
            Method::GET,
            "/api/holds?wait=30",
            &[("authorization", &auth3), ("if-none-match", &etag3)],
            None,
        )
        .await
    });
    assert_eq!(short.outcome().await, HoldOutcome::TimedOut);
    let timed_out = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    let state = timed_out
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == short.id())
        .unwrap()["state"]
        .clone();
    assert_eq!(state, "timeout");

    // Waiting needs a token like any other read.
    let anonymous = raw_request(
        server.addr,
        Method::GET,
        "/api/holds?wait=30",
        &[("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn shutdown_ends_a_waiting_request() {
    let mut state = AdminState::new(
        HoldRegistry::new(None),
        Authenticator::new(static_tokens(), None),
    );
    state.recordings = None;
    let (addr, stop) = serve_state(state).await;
    let auth = bearer(ALICE);
    let first = raw_request(
        addr,
        Method::GET,
        "/api/holds",
        &[("authorization", &auth)],
        None,
    )
    .await;
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    let waiting = tokio::spawn(async move {
        raw_request(
            addr,
            Method::GET,
            "/api/holds?wait=30",
            &[("authorization", &auth), ("if-none-match", &etag)],
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(());
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("shutdown does not wait out a 30 s wait")
        .unwrap();
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn whoami_names_the_caller() {
    let server = Server::start().await;
    let me = server
        .request(Method::GET, "/api/whoami", Some(CAROL), None)
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json, json!({"identity": "carol", "groups": ["dev"]}));
    let oidc = server
        .request(
            Method::GET,
            "/api/whoami",
            Some(&server.oidc_key.sign(&claims("dana@example.com", &["dba"]))),
            None,
        )
        .await;
    assert_eq!(oidc.json["identity"], "dana@example.com");
    assert_eq!(
        server
            .request(Method::GET, "/api/whoami", Some("nope"), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// Writes a recording of session `s-42` (the test session) with `bodies`
/// after its header, as the recorder lays it out.
fn write_recording(dir: &std::path::Path, bodies: &[Body]) {
    let mut chain = ChainWriter::new("s-42");
    let mut out = Vec::new();
    chain.append(
        &mut out,
        0,
        "2025-01-01T12:00:00Z",
        &Body::Header(Header {
            format: "hoop-recording".to_owned(),
            version: 1,
            session_id: "s-42".to_owned(),
            writer: "test".to_owned(),
            rows: RowsMode::Full,
            max_row_bytes: 64 * 1024 * 1024,
        }),
    );
    for (n, body) in bodies.iter().enumerate() {
        let ts = format!("2025-01-01T12:00:{:02}Z", (n + 1) % 60);
        chain.append(&mut out, n as u64 + 1, &ts, body);
    }
    std::fs::create_dir_all(dir).unwrap();
    // An older recording of another session, and one of this session from
    // an earlier run (same session id), are not read.
    std::fs::write(dir.join("20250101T115900Z-s-41.jsonl"), b"").unwrap();
    std::fs::write(dir.join("20240101T000000Z-s-42.jsonl"), b"").unwrap();
    std::fs::write(dir.join("20250101T120000Z-s-42.jsonl"), out).unwrap();
}

fn statement(sql: &str, kind: StatementKind) -> Body {
    Body::Statement(StatementEvent {
        sql: sql.into(),
        form: Submission::Text,
        kinds: Arc::from([kind]),
        tables: Arc::from(["orders".to_owned()]),
    })
}

fn verdict(kind: VerdictKind, rule: Option<&str>) -> Body {
    Body::Verdict(VerdictEvent {
        verdict: kind,
        rule: rule.map(str::to_owned),
        message: None,
    })
}

fn result(tag: &str) -> Body {
    Body::Result(ResultEvent {
        tag: Some(tag.to_owned()),
        rows: Some(1),
        sqlstate: None,
    })
}

#[tokio::test]
async fn a_holds_context_is_read_from_its_sessions_recording() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    let server = Server::start_full(
        HoldRegistry::new(None),
        true,
        |auth| auth,
        Some(recordings.clone()),
    )
    .await;
    let earlier = server.hold(MINUTE, 1);
    let current = server.hold(MINUTE, 1);
    // A rows line larger than the reader parses: skipped, not loaded.
    let huge_row = vec![vec![Some(hoop_record::format::Cell::Text(
        "x".repeat(2 * 1024 * 1024),
    ))]];
    write_recording(
        &recordings,
        &[
            statement("SELECT count(*) FROM orders", StatementKind::Select),
            verdict(VerdictKind::Allow, None),
            Body::Rows(RowsEvent {
                rows: huge_row,
                truncated: Vec::new(),
            }),
            result("SELECT 1"),
            statement("DROP TABLE orders", StatementKind::Drop),
            verdict(VerdictKind::Deny, Some("no-drops")),
            Body::Result(ResultEvent {
                tag: None,
                rows: None,
                sqlstate: Some("42501".to_owned()),
            }),
            statement("DELETE FROM orders WHERE id = $1", StatementKind::Delete),
            verdict(VerdictKind::Hold, Some("orders-deletes")),
            Body::Hold(HoldEvent {
                hold_id: earlier.id().to_owned(),
                state: RecordedHold::Denied,
                decider: Some("alice".to_owned()),
                reason: None,
            }),
            statement("SELECT 'after' AS <img src=x>", StatementKind::Select),
            verdict(VerdictKind::Allow, None),
            result("SELECT 1"),
            statement("DELETE FROM orders WHERE id = $1", StatementKind::Delete),
            verdict(VerdictKind::Hold, Some("orders-deletes")),
        ],
    );
    let read = |id: String| {
        let server = &server;
        async move {
            server
                .request(
                    Method::GET,
                    &format!("/api/holds/{id}/context"),
                    Some(CAROL),
                    None,
                )
                .await
        }
    };
    // The pending hold: everything up to the last held statement.
    let context = read(current.id().to_owned()).await;
    assert_eq!(context.status, StatusCode::OK, "{}", context.text);
    assert_eq!(context.json["recording"], "20250101T120000Z-s-42");
    assert_eq!(context.json["session"], "s-42");
    assert!(context.json["note"].is_null(), "{}", context.text);
    let statements = context.json["statements"].as_array().unwrap();
    let sql: Vec<&str> = statements
        .iter()
        .map(|s| s["sql"].as_str().unwrap())
        .collect();
    assert_eq!(
        sql,
        [
            "SELECT count(*) FROM orders",
            "DROP TABLE orders",
            "DELETE FROM orders WHERE id = $1",
            "SELECT 'after' AS <img src=x>",
            "DELETE FROM orders WHERE id = $1",
        ]
    );
    assert_eq!(statements[0]["outcome"], "SELECT 1");
    assert_eq!(statements[0]["verdict"], "allow");
    assert_eq!(statements[1]["verdict"], "deny");
    assert_eq!(statements[1]["rule"], "no-drops");
    assert_eq!(statements[1]["outcome"], "error 42501");
    assert_eq!(
        statements[2]["held"], false,
        "an earlier hold of the session"
    );
    assert_eq!(statements[4]["held"], true);
    assert_eq!(statements[4]["ts"], "2025-01-01T12:00:14Z");

    // The earlier hold, decided: what came after its decision is not shown.
    let context = read(earlier.id().to_owned()).await;
    let statements = context.json["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 3, "{}", context.text);
    assert_eq!(statements[2]["held"], true);
    assert_eq!(statements[2]["sql"], "DELETE FROM orders WHERE id = $1");

    let unknown = read("h-doesnotexi".to_owned()).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let anonymous = server
        .request(
            Method::GET,
            &format!("/api/holds/{}/context", current.id()),
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_context_without_a_recording_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Server::start_full(
        HoldRegistry::new(None),
        true,
        |auth| auth,
        Some(dir.path().join("not-created-yet")),
    )
    .await;
    let hold = missing.hold(MINUTE, 1);
    let context = missing
        .request(
            Method::GET,
            &format!("/api/holds/{}/context", hold.id()),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(context.status, StatusCode::OK, "{}", context.text);
    assert!(
        context.json["note"]
            .as_str()
            .unwrap()
            .contains("no recording of session s-42"),
        "{}",
        context.text
    );
    assert_eq!(context.json["statements"], json!([]));

    let disabled = Server::start().await;
    let hold = disabled.hold(MINUTE, 1);
    let context = disabled
        .request(
            Method::GET,
            &format!("/api/holds/{}/context", hold.id()),
            Some(ALICE),
            None,
        )
        .await;
    assert!(
        context.json["note"]
            .as_str()
            .unwrap()
            .contains("recording is disabled"),
        "{}",
        context.text
    );
    assert_eq!(hold_state(&disabled, hold.id()), HoldState::Pending);
}

fn hold_state(server: &Server, id: &str) -> HoldState {
    server.holds.get(id).unwrap().state
}
