//! The admin API over real HTTP on 127.0.0.1, with the CLI as a client.
#![allow(clippy::unwrap_used)] // A test that cannot set up should fail loudly, right there.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use hyper::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{
    AdminState, Authenticator,
    auth::{OidcVerifier, parse_tokens},
    outbound::{self, OutboundRequest},
    test_support::{AUDIENCE, ISSUER, TestKey, claims, jwks, now_plus, token_entry},
};
use crate::hold_cli::{self as cli, AdminEndpoint, CliError};
use hoop_config::{OidcConfig, WebhookConfig, WebhookFormat};
use hoop_core::{HoldRequirement, SessionIdentity};
use hoop_hold::{HoldOutcome, HoldRegistry, HoldTicket};

const ALICE: &str = "token-alice-dba";
const BOB: &str = "token-bob-dba";
const CAROL: &str = "token-carol-dev";

/// A live admin server; stops when dropped.
struct Server {
    addr: SocketAddr,
    holds: HoldRegistry,
    oidc_key: TestKey,
    _stop: oneshot::Sender<()>,
    _jwks_dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(HoldRegistry::new(None), true).await
    }

    async fn start_with(holds: HoldRegistry, with_auth: bool) -> Self {
        Self::start_full(holds, with_auth, |auth| auth, None).await
    }

    /// A server whose authenticator `customize` may extend (Slack), reading
    /// recordings from `recordings`.
    async fn start_full(
        holds: HoldRegistry,
        with_auth: bool,
        customize: impl FnOnce(Authenticator) -> Authenticator,
        recordings: Option<PathBuf>,
    ) -> Self {
        let oidc_key = TestKey::es256("idp-1");
        let jwks_dir = tempfile::tempdir().unwrap();
        let jwks_file = jwks_dir.path().join("jwks.json");
        std::fs::write(&jwks_file, jwks(&[&oidc_key])).unwrap();
        let auth = if with_auth {
            let oidc = OidcVerifier::new(&oidc_config(jwks_file)).await.unwrap();
            Authenticator::new(static_tokens(), Some(oidc))
        } else {
            Authenticator::default()
        };
        let mut state = AdminState::new(holds.clone(), customize(auth));
        state.recordings = recordings;
        let (addr, stop) = serve_state(state).await;
        Self {
            addr,
            holds,
            oidc_key,
            _stop: stop,
            _jwks_dir: jwks_dir,
        }
    }

    fn hold(&self, timeout: Duration, min_approvals: u32) -> HoldTicket {
        self.holds.create(
            &session(),
            "DELETE FROM orders WHERE id = $1",
            &requirement(timeout, min_approvals),
        )
    }

    fn endpoint(&self) -> AdminEndpoint {
        AdminEndpoint::parse(&self.addr.to_string()).unwrap()
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let url = format!("http://{}{path}", self.addr);
        let response = outbound::send(OutboundRequest {
            method,
            url: &url,
            bearer: token,
            body: body.map(|b| outbound::Body::Json(serde_json::to_vec(&b).unwrap())),
            timeout: Duration::from_secs(5),
            max_body: 16 * 1024 * 1024,
        })
        .await
        .unwrap();
        let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        Reply {
            status: response.status,
            headers: response.headers,
            text: String::from_utf8_lossy(&response.body).into_owned(),
            json,
        }
    }

    async fn approve(&self, id: &str, token: &str) -> Reply {
        self.request(
            Method::POST,
            &format!("/api/holds/{id}/approve"),
            Some(token),
            None,
        )
        .await
    }
}

/// alice and bob (dba) and carol (dev).
fn static_tokens() -> Vec<super::auth::StaticToken> {
    let yaml = token_entry(ALICE, "alice", &["dba"])
        + &token_entry(BOB, "bob", &["dba"])
        + &token_entry(CAROL, "carol", &["dev"]);
    parse_tokens(&yaml, "test").unwrap()
}

/// Serves `state` on a free loopback port until the sender is dropped or fires.
async fn serve_state(state: AdminState) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(super::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// One request to `addr`, with any headers.
async fn raw_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Reply {
    use http_body_util::{BodyExt as _, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let bytes = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            bytes
        }
        None => Vec::new(),
    };
    let response = sender
        .send_request(request.body(Full::new(bytes::Bytes::from(bytes))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&body).into_owned(),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    text: String,
    json: Value,
}

fn oidc_config(jwks_file: PathBuf) -> OidcConfig {
    OidcConfig {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_file: Some(jwks_file),
        jwks_url: None,
        groups_claim: "groups".to_owned(),
        client_id: None,
        scopes: vec!["openid".to_owned()],
    }
}

fn session() -> SessionIdentity {
    SessionIdentity {
        id: "s-42".to_owned(),
        user: Some("app".to_owned()),
        database: Some("orders".to_owned()),
        application_name: Some("psql".to_owned()),
        workload: Some("/sys/fs/cgroup/app.slice".to_owned()),
        client: Some("127.0.0.1:50000".parse().unwrap()),
        ..SessionIdentity::default()
    }
}

fn requirement(timeout: Duration, min_approvals: u32) -> HoldRequirement {
    HoldRequirement {
        rule: "orders-deletes".to_owned(),
        message: "deletes from orders need approval".to_owned(),
        timeout,
        approvers: vec!["dba".to_owned()],
        min_approvals,
        max_rows: None,
    }
}

const MINUTE: Duration = Duration::from_mins(1);

#[tokio::test]
async fn healthz_and_metrics_need_no_token() {
    let server = Server::start().await;
    let health = server.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (health.status, health.text.as_str()),
        (StatusCode::OK, "ok")
    );
    let metrics = server.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.text.contains("hoop_holds_pending"),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("hoop_connections_total"));
}

#[tokio::test]
async fn metrics_refresh_hook_runs_before_encoding() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    let mut state = AdminState::new(HoldRegistry::new(None), Authenticator::default());
    state.refresh_metrics = Some(std::sync::Arc::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    tokio::spawn(super::serve(listener, state, std::future::pending()));
    let url = format!("http://{addr}/metrics");
    let request = OutboundRequest {
        method: Method::GET,
        url: &url,
        bearer: None,
        body: None,
        timeout: Duration::from_secs(5),
        max_body: 1 << 20,
    };
    assert_eq!(
        outbound::send(request).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ready_follows_the_readiness_hook() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&ready);
    let mut state = AdminState::new(HoldRegistry::new(None), Authenticator::default());
    state.ready = Some(std::sync::Arc::new(move || {
        flag.load(std::sync::atomic::Ordering::SeqCst)
    }));
    tokio::spawn(super::serve(listener, state, std::future::pending()));
    let url = format!("http://{addr}/ready");
    let get = || OutboundRequest {
        method: Method::GET,
        url: &url,
        bearer: None,
        body: None,
        timeout: Duration::from_secs(5),
        max_body: 1 << 20,
    };
    assert_eq!(
        outbound::send(get()).await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(outbound::send(get()).await.unwrap().status, StatusCode::OK);
    // Without a hook (hoop exec, static cgroups) it is ready once serving.
    let plain = Server::start().await;
    let reply = plain.request(Method::GET, "/ready", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn approve_over_http_resolves_the_ticket() {
    let server = Server::start().await;
    let mut ticket = server.hold(MINUTE, 1);
    let reply = server.approve(ticket.id(), ALICE).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["state"], "approved");
    assert_eq!(reply.json["decisions"][0]["identity"], "alice");
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Approved {
            by: vec!["alice".to_owned()]
        }
    );
}

#[tokio::test]
async fn deny_over_http_carries_the_reason() {
    let server = Server::start().await;
    let mut ticket = server.hold(MINUTE, 1);
    let path = format!("/api/holds/{}/deny", ticket.id());
    let reply = server
        .request(
            Method::POST,
            &path,
            Some(BOB),
            Some(json!({ "reason": "add a WHERE clause" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["state"], "denied");
    assert_eq!(reply.json["reason"], "add a WHERE clause");
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Denied {
            by: Some("bob".to_owned()),
            reason: Some("add a WHERE clause".to_owned())
        }
    );
}

#[tokio::test]
async fn a_timed_out_hold_shows_as_timeout() {
    let server = Server::start().await;
    let mut ticket = server.hold(Duration::from_millis(200), 1);
    assert_eq!(ticket.outcome().await, HoldOutcome::TimedOut);
    let reply = server
        .request(
            Method::GET,
            &format!("/api/holds/{}", ticket.id()),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(reply.json["state"], "timeout");
    assert_eq!(reply.json["reason"], "timed out after 200ms");
    assert_eq!(
        server.approve(ticket.id(), ALICE).await.status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn a_withdrawn_hold_cannot_be_approved() {
    let server = Server::start().await;
    let id = server.hold(MINUTE, 1).id().to_owned(); // the ticket is dropped here
    let reply = server
        .request(Method::GET, &format!("/api/holds/{id}"), Some(ALICE), None)
        .await;
    assert_eq!(reply.json["state"], "withdrawn");
    let late = server.approve(&id, ALICE).await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert!(
        late.json["error"].as_str().unwrap().contains("withdrawn"),
        "{}",
        late.text
    );
}

#[tokio::test]
async fn two_approvals_need_two_identities() {
    let server = Server::start().await;
    let mut ticket = server.hold(MINUTE, 2);
    let first = server.approve(ticket.id(), ALICE).await;
    assert_eq!(
        (first.status, first.json["state"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    assert_eq!(first.json["approvals_needed"], 1);
    assert_eq!(
        server.approve(ticket.id(), ALICE).await.status,
        StatusCode::CONFLICT
    );
    let second = server.approve(ticket.id(), BOB).await;
    assert_eq!(second.json["state"], "approved");
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Approved {
            by: vec!["alice".to_owned(), "bob".to_owned()]
        }
    );
}

#[tokio::test]
async fn missing_or_unknown_tokens_get_401_with_a_bearer_challenge() {
    let server = Server::start().await;
    let ticket = server.hold(MINUTE, 1);
    for token in [None, Some("not-a-token"), Some("a.b.c")] {
        let reply = server.request(Method::GET, "/api/holds", token, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}");
        let challenge = reply
            .headers
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(reply.json["error"].is_string());
        let approve = server
            .request(
                Method::POST,
                &format!("/api/holds/{}/approve", ticket.id()),
                token,
                None,
            )
            .await;
        assert_eq!(approve.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        server.holds.get(ticket.id()).unwrap().state,
        hoop_hold::HoldState::Pending
    );
}

#[tokio::test]
async fn a_valid_token_outside_the_approvers_gets_403_but_may_list() {
    let server = Server::start().await;
    let ticket = server.hold(MINUTE, 1);
    let reply = server.approve(ticket.id(), CAROL).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert!(reply.json["error"].as_str().unwrap().contains("dba"));
    let listed = server
        .request(Method::GET, "/api/holds", Some(CAROL), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json[0]["id"], ticket.id());
}

#[tokio::test]
async fn oidc_tokens_are_verified() {
    let server = Server::start().await;
    let mut ticket = server.hold(MINUTE, 1);
    let key = &server.oidc_key;

    let mut expired = claims("dana@example.com", &["dba"]);
    expired["exp"] = json!(now_plus(-120));
    let mut audience = claims("dana@example.com", &["dba"]);
    audience["aud"] = json!("another-app");
    let mut issuer = claims("dana@example.com", &["dba"]);
    issuer["iss"] = json!("https://other-idp.example.test");
    for (what, claims) in [
        ("expired", expired),
        ("wrong audience", audience),
        ("wrong issuer", issuer),
    ] {
        let reply = server.approve(ticket.id(), &key.sign(&claims)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            reply.text
        );
        assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
    }
    let outsider = server
        .approve(
            ticket.id(),
            &key.sign(&claims("erin@example.com", &["dev"])),
        )
        .await;
    assert_eq!(outsider.status, StatusCode::FORBIDDEN);

    let reply = server
        .approve(
            ticket.id(),
            &key.sign(&claims("dana@example.com", &["dba"])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        ticket.outcome().await,
        HoldOutcome::Approved {
            by: vec!["dana@example.com".to_owned()]
        }
    );
}

#[tokio::test]
async fn without_configured_auth_everyone_gets_401() {
    let server = Server::start_with(HoldRegistry::new(None), false).await;
    let ticket = server.hold(MINUTE, 1);
    let listed = server
        .request(Method::GET, "/api/holds", Some(ALICE), None)
        .await;
    assert_eq!(listed.status, StatusCode::UNAUTHORIZED);
    assert!(
        listed.json["error"]
            .as_str()
            .unwrap()
            .contains("no authentication configured")
    );
    assert_eq!(
        server.approve(ticket.id(), ALICE).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .request(Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_bodies_and_unknown_holds() {
    let server = Server::start().await;
    let ticket = server.hold(MINUTE, 1);
    let path = format!("/api/holds/{}/deny", ticket.id());
    let unknown_field = server
        .request(
            Method::POST,
            &path,
            Some(ALICE),
            Some(json!({ "why": "x" })),
        )
        .await;
    assert_eq!(
        unknown_field.status,
        StatusCode::BAD_REQUEST,
        "{}",
        unknown_field.text
    );
    let too_long = server
        .request(
            Method::POST,
            &path,
            Some(ALICE),
            Some(json!({ "reason": "x".repeat(2000) })),
        )
        .await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        server.approve("h-doesnotexi", ALICE).await.status,
        StatusCode::NOT_FOUND
    );
    let get = server
        .request(Method::GET, "/api/holds/h-doesnotexi", Some(ALICE), None)
        .await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    assert!(get.json["error"].is_string());
    assert_eq!(
        server
            .request(Method::GET, "/nope", None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.holds.get(ticket.id()).unwrap().state,
        hoop_hold::HoldState::Pending
    );
}

#[tokio::test]
async fn concurrent_holds_are_decided_independently_over_http() {
    let server = Server::start().await;
    let mut first = server.hold(MINUTE, 1);
    let mut second = server.hold(MINUTE, 1);
    let second_id = second.id().to_owned();
    let waiting = tokio::spawn(async move { second.outcome().await });
    assert_eq!(
        server.approve(first.id(), ALICE).await.status,
        StatusCode::OK
    );
    assert!(first.outcome().await.is_approved());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !waiting.is_finished(),
        "deciding one hold must not decide another"
    );
    let path = format!("/api/holds/{second_id}/deny");
    assert_eq!(
        server
            .request(Method::POST, &path, Some(BOB), None)
            .await
            .status,
        StatusCode::OK
    );
    assert!(matches!(waiting.await.unwrap(), HoldOutcome::Denied { .. }));
}

/// A webhook sink that forwards every POSTed JSON body, answering `status`.
async fn webhook_sink(status: StatusCode) -> (String, mpsc::UnboundedReceiver<Value>) {
    let (sender, received) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hooks/T000/secret",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(body);
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/T000/secret",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test]
async fn the_webhook_receives_the_hold() {
    let (url, mut received) = webhook_sink(StatusCode::OK).await;
    let registry = HoldRegistry::new(Some(
        WebhookConfig {
            url,
            timeout: Duration::from_secs(5),
            format: WebhookFormat::Json,
        }
        .into(),
    ));
    let server = Server::start_with(registry, true).await;
    let mut ticket = server.hold(MINUTE, 1);
    let body = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["hold"]["id"], ticket.id());
    assert_eq!(body["hold"]["state"], "pending");
    assert_eq!(body["hold"]["session"]["user"], "app");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("hoop holds approve {}", ticket.id())),
        "{text}"
    );
    assert!(
        text.contains("app@orders") && text.contains("DELETE FROM orders"),
        "{text}"
    );
    server.approve(ticket.id(), ALICE).await;
    assert!(ticket.outcome().await.is_approved());
}

#[tokio::test]
async fn a_failing_webhook_does_not_affect_the_hold() {
    let errors = hoop_hold::registry::hold_metrics().webhook_errors.clone();
    let before = errors.get();
    let (refusing, mut received) = webhook_sink(StatusCode::INTERNAL_SERVER_ERROR).await;
    let registry = HoldRegistry::new(Some(
        WebhookConfig {
            url: refusing,
            timeout: Duration::from_secs(5),
            format: WebhookFormat::Json,
        }
        .into(),
    ));
    let server = Server::start_with(registry, true).await;
    let mut ticket = server.hold(MINUTE, 1);
    received.recv().await.unwrap();

    // An unreachable webhook too: nothing listens on a port we just closed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = HoldRegistry::new(Some(
        WebhookConfig {
            url: format!("http://{closed}/hook"),
            timeout: Duration::from_secs(2),
            format: WebhookFormat::Json,
        }
        .into(),
    ));
    let other = unreachable.create(&session(), "DELETE FROM orders", &requirement(MINUTE, 1));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while errors.get() < before + 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(errors.get() >= before + 2, "both failures counted");
    assert_eq!(
        server.approve(ticket.id(), ALICE).await.status,
        StatusCode::OK
    );
    assert!(ticket.outcome().await.is_approved());
    assert_eq!(
        unreachable.get(other.id()).unwrap().state,
        hoop_hold::HoldState::Pending
    );
}

#[tokio::test]
async fn cli_lists_approves_and_denies_against_the_live_server() {
    let server = Server::start().await;
    let mut approved = server.hold(MINUTE, 1);
    let denied = server.hold(MINUTE, 1);
    let endpoint = server.endpoint();

    let mut out = Vec::new();
    cli::list(&endpoint, ALICE, true, &mut out).await.unwrap();
    let listed: Value = serde_json::from_slice(&out).unwrap();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        for key in [
            "id",
            "state",
            "statement",
            "rule",
            "session",
            "created_at",
            "expires_at",
        ] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
        assert_eq!(row["state"], "pending");
        assert_eq!(row["session"]["database"], "orders");
    }

    let mut table = Vec::new();
    cli::list(&endpoint, ALICE, false, &mut table)
        .await
        .unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(approved.id()) && table.contains("app@orders (psql)"),
        "{table}"
    );

    let mut out = Vec::new();
    cli::approve(
        &endpoint,
        ALICE,
        approved.id(),
        Some("ticket OPS-1"),
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{}: approved\n", approved.id())
    );
    assert!(approved.outcome().await.is_approved());

    let mut out = Vec::new();
    let again = cli::approve(&endpoint, BOB, approved.id(), None, &mut out).await;
    assert!(matches!(again, Err(CliError::Conflict(_))), "{again:?}");
    let forbidden = cli::deny(&endpoint, CAROL, denied.id(), None, &mut out).await;
    assert!(
        matches!(forbidden, Err(CliError::Forbidden(_))),
        "{forbidden:?}"
    );
    let unauthorized = cli::list(&endpoint, "wrong", true, &mut out).await;
    assert!(
        matches!(unauthorized, Err(CliError::Unauthorized(_))),
        "{unauthorized:?}"
    );
    let missing = cli::approve(&endpoint, ALICE, "h-doesnotexi", None, &mut out).await;
    assert!(matches!(missing, Err(CliError::NotFound(_))), "{missing:?}");

    let mut out = Vec::new();
    cli::deny(
        &endpoint,
        BOB,
        denied.id(),
        Some("not during business hours"),
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{}: denied\n", denied.id())
    );
    assert_eq!(
        server.holds.get(denied.id()).unwrap().reason.as_deref(),
        Some("not during business hours")
    );
}

#[tokio::test]
async fn cli_reports_an_unreachable_api() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = AdminEndpoint::parse(&format!("http://{closed}")).unwrap();
    let error = cli::list(&endpoint, ALICE, false, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(error, CliError::Unreachable { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("cannot reach the hoop admin API"),
        "{error}"
    );
}

mod login;
mod page;
mod slack;
