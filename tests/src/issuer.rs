//! A small OpenID Connect issuer for the approvals page's login test.
//!
//! It does what a real issuer does for an authorization-code login with
//! PKCE, and nothing more: a discovery document, a JWKS with one P-256 key,
//! an authorization endpoint that shows a sign-in page and redirects back
//! with a one-time code, and a token endpoint that redeems the code only
//! with the right client, redirect URI and PKCE verifier (S256), answering
//! with an ES256-signed ID token carrying the login's `nonce`.

use std::{
    collections::HashMap,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const KEY_ID: &str = "ui-test-1";

/// Who signs in at this issuer.
#[derive(Debug, Clone)]
pub struct IssuedUser {
    /// The `email` claim.
    pub email: String,
    /// The `groups` claim.
    pub groups: Vec<String>,
}

/// What the issuer has seen, for assertions.
#[derive(Debug, Default, Clone)]
pub struct IssuerLog {
    /// Authorization requests accepted (valid client, redirect, S256 challenge).
    pub authorizations: usize,
    /// Codes redeemed with a correct PKCE verifier.
    pub tokens_issued: usize,
    /// Token requests refused, with why.
    pub refusals: Vec<String>,
}

struct Pending {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    state: String,
}

struct Inner {
    base: String,
    client_id: String,
    user: IssuedUser,
    key: EcdsaKeyPair,
    /// Sign-in pages shown, by request id.
    requests: HashMap<String, Pending>,
    /// Codes handed out and not yet redeemed.
    codes: HashMap<String, Pending>,
    log: IssuerLog,
}

/// A running issuer on 127.0.0.1; stops with the test process.
pub struct TestIssuer {
    /// `http://127.0.0.1:PORT`: the issuer identifier.
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

type Shared = Arc<Mutex<Inner>>;

impl TestIssuer {
    /// Starts an issuer that knows one client and signs `user` in.
    pub fn start(client_id: &str, user: IssuedUser) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the issuer");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("a P-256 key");
        let inner = Arc::new(Mutex::new(Inner {
            base: base.clone(),
            client_id: client_id.to_owned(),
            user,
            key,
            requests: HashMap::new(),
            codes: HashMap::new(),
            log: IssuerLog::default(),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/sign-in", post(sign_in))
            .route("/token", post(token))
            .with_state(Arc::clone(&inner));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the issuer");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                axum::serve(listener, app).await.expect("the issuer serves");
            });
        });
        Self { base, inner }
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    /// What happened so far.
    pub fn log(&self) -> IssuerLog {
        lock(&self.inner).log.clone()
    }
}

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_id() -> String {
    let mut bytes = [0u8; 18];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).expect("random bytes");
    B64.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn discovery(State(inner): State<Shared>) -> Json<Value> {
    let base = lock(&inner).base.clone();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(State(inner): State<Shared>) -> Json<Value> {
    let inner = lock(&inner);
    let point = inner.key.public_key().as_ref();
    Json(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": KEY_ID, "alg": "ES256", "use": "sig",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
    }]}))
}

fn bad_request(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("test issuer: {why}")).into_response()
}

/// `GET /authorize`: checks the request, then shows a sign-in page.
async fn authorize(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let get = |name: &str| query.get(name).cloned().unwrap_or_default();
    let mut inner = lock(&inner);
    if get("response_type") != "code" {
        return bad_request("response_type must be code");
    }
    if get("client_id") != inner.client_id {
        return bad_request("unknown client_id");
    }
    if !get("scope").split(' ').any(|s| s == "openid") {
        return bad_request("the openid scope is missing");
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
        return bad_request("PKCE with S256 is required");
    }
    if get("state").is_empty() || get("nonce").is_empty() || !get("redirect_uri").ends_with("/ui/")
    {
        return bad_request("state, nonce and a /ui/ redirect_uri are required");
    }
    let id = random_id();
    inner.requests.insert(
        id.clone(),
        Pending {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            state: get("state"),
        },
    );
    inner.log.authorizations += 1;
    let email = inner.user.email.clone();
    Html(format!(
        "<!doctype html><title>Test issuer</title><h1>Test issuer</h1>\
         <form method=post action=/sign-in><input type=hidden name=request value=\"{id}\">\
         <button id=sign-in type=submit>Sign in as {email}</button></form>"
    ))
    .into_response()
}

/// `POST /sign-in`: the user agreed; back to the client with a code.
async fn sign_in(
    State(inner): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut inner = lock(&inner);
    let Some(pending) = form.get("request").and_then(|id| inner.requests.remove(id)) else {
        return bad_request("no such sign-in request");
    };
    let code = random_id();
    let target = format!(
        "{}?code={code}&state={}",
        pending.redirect_uri,
        url_escape(&pending.state)
    );
    inner.codes.insert(code, pending);
    Redirect::to(&target).into_response()
}

fn url_escape(text: &str) -> String {
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

/// `POST /token`: redeems a code once, with the matching verifier.
async fn token(State(inner): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    let get = |name: &str| form.get(name).cloned().unwrap_or_default();
    let mut inner = lock(&inner);
    let refuse = |inner: &mut Inner, why: &str| {
        inner.log.refusals.push(why.to_owned());
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if get("grant_type") != "authorization_code" {
        return refuse(&mut inner, "grant_type");
    }
    let Some(pending) = inner.codes.remove(&get("code")) else {
        return refuse(&mut inner, "unknown or used code");
    };
    if get("client_id") != pending.client_id || get("redirect_uri") != pending.redirect_uri {
        return refuse(&mut inner, "client_id or redirect_uri differs");
    }
    let challenge = B64.encode(Sha256::digest(get("code_verifier").as_bytes()));
    if challenge != pending.challenge {
        return refuse(&mut inner, "PKCE verifier does not match the challenge");
    }
    let header = B64.encode(json!({"alg": "ES256", "typ": "JWT", "kid": KEY_ID}).to_string());
    let claims = B64.encode(
        json!({
            "iss": inner.base, "aud": pending.client_id, "sub": format!("sub-{}", inner.user.email),
            "email": inner.user.email, "email_verified": true, "groups": inner.user.groups,
            "nonce": pending.nonce, "iat": now(), "exp": now() + 600,
        })
        .to_string(),
    );
    let input = format!("{header}.{claims}");
    let signature = inner
        .key
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("ES256 signs");
    let id_token = format!("{input}.{}", B64.encode(signature.as_ref()));
    inner.log.tokens_issued += 1;
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": random_id(), "token_type": "Bearer", "expires_in": 600,
            "id_token": id_token,
        })),
    )
        .into_response()
}
