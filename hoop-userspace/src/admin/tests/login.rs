//! The approvals page's OIDC login against an issuer run by the test: its
//! discovery document, its token endpoint checking the PKCE verifier, and
//! ID tokens signed with a key of its JWKS.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{Form, Json, Router, extract::State, routing::get};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};

use super::*;

const CLIENT_ID: &str = "hoop-ui";

/// One authorization the issuer granted: what the token request must match.
#[derive(Clone)]
struct Grant {
    challenge: String,
    redirect_uri: String,
    nonce: String,
    email: String,
    groups: Vec<String>,
}

#[derive(Clone)]
struct Issuer {
    base: String,
    key: Arc<TestKey>,
    grants: Arc<Mutex<HashMap<String, Grant>>>,
    /// What discovery says the issuer is (the real one unless a test lies).
    announced: Arc<Mutex<String>>,
}

impl Issuer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Self {
            base: base.clone(),
            key: Arc::new(TestKey::es256("idp-login")),
            grants: Arc::default(),
            announced: Arc::new(Mutex::new(base)),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route(
                "/jwks",
                get(|State(i): State<Issuer>| async move { jwks(&[&i.key]) }),
            )
            .route("/token", axum::routing::post(token))
            .with_state(issuer.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        issuer
    }

    /// Grants a code, as the authorization endpoint would after a login.
    fn grant(&self, code: &str, verifier: &str, nonce: &str, email: &str, groups: &[&str]) {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        self.grants.lock().unwrap().insert(
            code.to_owned(),
            Grant {
                challenge,
                redirect_uri: "http://127.0.0.1/ui/".to_owned(),
                nonce: nonce.to_owned(),
                email: email.to_owned(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            },
        );
    }

    fn config(&self) -> OidcConfig {
        OidcConfig {
            issuer: self.base.clone(),
            audience: "hoop-api".to_owned(),
            jwks_file: None,
            jwks_url: Some(format!("{}/jwks", self.base)),
            groups_claim: "groups".to_owned(),
            client_id: Some(CLIENT_ID.to_owned()),
            scopes: vec!["openid".to_owned(), "email".to_owned(), "groups".to_owned()],
        }
    }
}

async fn discovery(State(issuer): State<Issuer>) -> Json<Value> {
    let claimed = issuer.announced.lock().unwrap().clone();
    Json(json!({
        "issuer": claimed,
        "authorization_endpoint": format!("{}/authorize", issuer.base),
        "token_endpoint": format!("{}/token", issuer.base),
        "jwks_uri": format!("{}/jwks", issuer.base),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn token(
    State(issuer): State<Issuer>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let refuse = |error: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "error_description": "refused by the test issuer" })),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("authorization_code")
        || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
    {
        return refuse("invalid_client");
    }
    // A code is redeemed once.
    let Some(grant) = form
        .get("code")
        .and_then(|code| issuer.grants.lock().unwrap().remove(code))
    else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge
        || form.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return refuse("invalid_grant");
    }
    let id_token = issuer.key.sign(&json!({
        "iss": issuer.base, "aud": CLIENT_ID, "sub": format!("sub-{}", grant.email),
        "email": grant.email, "email_verified": true, "groups": grant.groups,
        "nonce": grant.nonce, "iat": now_plus(0), "exp": now_plus(300),
    }));
    (
        StatusCode::OK,
        Json(
            json!({ "access_token": "opaque", "token_type": "Bearer", "id_token": id_token, "expires_in": 300 }),
        ),
    )
}

async fn server_for(issuer: &Issuer) -> Server {
    let oidc = OidcVerifier::new(&issuer.config()).await.unwrap();
    let auth = Authenticator::new(static_tokens(), Some(oidc));
    let holds = HoldRegistry::new(None);
    let state = AdminState::new(holds.clone(), auth);
    let (addr, stop) = serve_state(state).await;
    Server {
        addr,
        holds,
        oidc_key: TestKey::es256("unused"),
        _stop: stop,
        _jwks_dir: tempfile::tempdir().unwrap(),
    }
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-0123456789";
const NONCE: &str = "n-0S6_WzA2Mj-nonce";

fn token_request(code: &str, verifier: &str, nonce: &str) -> Value {
    json!({
        "code": code, "code_verifier": verifier,
        "redirect_uri": "http://127.0.0.1/ui/", "nonce": nonce,
    })
}

#[tokio::test]
async fn a_code_and_its_verifier_become_a_token_the_api_accepts() {
    let issuer = Issuer::start().await;
    let server = server_for(&issuer).await;

    let settings = server
        .request(Method::GET, "/api/ui/settings", None, None)
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.text);
    assert_eq!(
        settings.json["oidc"],
        json!({
            "authorization_endpoint": format!("{}/authorize", issuer.base),
            "client_id": CLIENT_ID,
            "scope": "openid email groups",
        })
    );

    issuer.grant("code-1", VERIFIER, NONCE, "dana@example.com", &["dba"]);
    let answer = server
        .request(
            Method::POST,
            "/api/ui/oidc/token",
            None,
            Some(token_request("code-1", VERIFIER, NONCE)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["identity"], "dana@example.com");
    assert_eq!(answer.json["groups"], json!(["dba"]));
    let token = answer.json["token"].as_str().unwrap().to_owned();

    // The ID token (aud = the page's client id) is a bearer token like any other.
    let mut ticket = server.hold(MINUTE, 1);
    let me = server
        .request(Method::GET, "/api/whoami", Some(&token), None)
        .await;
    assert_eq!(me.json["identity"], "dana@example.com");
    assert_eq!(
        server.approve(ticket.id(), &token).await.status,
        StatusCode::OK
    );
    assert!(ticket.outcome().await.is_approved());

    // The code was used: it cannot be redeemed again.
    let again = server
        .request(
            Method::POST,
            "/api/ui/oidc/token",
            None,
            Some(token_request("code-1", VERIFIER, NONCE)),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_GATEWAY, "{}", again.text);
    assert!(
        again.json["error"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
}

#[tokio::test]
async fn a_wrong_verifier_or_nonce_is_refused() {
    let issuer = Issuer::start().await;
    let server = server_for(&issuer).await;
    let other_verifier = "x".repeat(43);
    issuer.grant("code-2", VERIFIER, NONCE, "dana@example.com", &["dba"]);
    let wrong_verifier = server
        .request(
            Method::POST,
            "/api/ui/oidc/token",
            None,
            Some(token_request("code-2", &other_verifier, NONCE)),
        )
        .await;
    assert_eq!(wrong_verifier.status, StatusCode::BAD_GATEWAY);

    issuer.grant("code-3", VERIFIER, NONCE, "dana@example.com", &["dba"]);
    let wrong_nonce = server
        .request(
            Method::POST,
            "/api/ui/oidc/token",
            None,
            Some(token_request("code-3", VERIFIER, "another-nonce-0123456")),
        )
        .await;
    assert_eq!(
        wrong_nonce.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        wrong_nonce.text
    );
    assert!(
        wrong_nonce.json["error"]
            .as_str()
            .unwrap()
            .contains("nonce")
    );

    for (what, body) in [
        ("short verifier", token_request("c", "short", NONCE)),
        ("bad characters", token_request("c", &"é".repeat(43), NONCE)),
        ("short nonce", token_request("c", VERIFIER, "n")),
        (
            "redirect with a query",
            json!({"code": "c", "code_verifier": VERIFIER, "redirect_uri": "http://127.0.0.1/ui/?x=1", "nonce": NONCE}),
        ),
        (
            "unknown field",
            json!({"code": "c", "code_verifier": VERIFIER, "redirect_uri": "http://127.0.0.1/ui/", "nonce": NONCE, "client_secret": "x"}),
        ),
    ] {
        let reply = server
            .request(Method::POST, "/api/ui/oidc/token", None, Some(body))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn an_issuer_that_names_another_issuer_is_not_used() {
    let issuer = Issuer::start().await;
    *issuer.announced.lock().unwrap() = "https://evil.example.test".to_owned();
    let server = server_for(&issuer).await;
    let settings = server
        .request(Method::GET, "/api/ui/settings", None, None)
        .await;
    assert!(settings.json["oidc"].is_null(), "{}", settings.text);
    assert!(
        settings.json["oidc_error"]
            .as_str()
            .unwrap()
            .contains("not the configured"),
        "{}",
        settings.text
    );
}

#[tokio::test]
async fn without_a_client_id_there_is_no_login() {
    let server = Server::start().await;
    let settings = server
        .request(Method::GET, "/api/ui/settings", None, None)
        .await;
    assert_eq!(settings.json, json!({"oidc": null, "oidc_error": null}));
    let token = server
        .request(
            Method::POST,
            "/api/ui/oidc/token",
            None,
            Some(token_request("c", VERIFIER, NONCE)),
        )
        .await;
    assert_eq!(token.status, StatusCode::NOT_FOUND);
}
