//! The approvals page's OIDC login: authorization code with PKCE.
//!
//! 1. The page asks `GET /api/ui/settings` for the issuer's authorization
//!    endpoint, the client id and the scopes. hoop reads the endpoints from
//!    the issuer's discovery document
//!    (`<issuer>/.well-known/openid-configuration`), whose `issuer` must be
//!    the configured one.
//! 2. The page makes a code verifier, its S256 challenge, a `state` and a
//!    `nonce` (kept in `sessionStorage`), and sends the browser to the
//!    authorization endpoint.
//! 3. Back on `/ui/` with `?code=…&state=…`, the page checks `state` and
//!    hands the code and verifier to `POST /api/ui/oidc/token`. hoop
//!    redeems them at the token endpoint, verifies the ID token exactly as it
//!    verifies every bearer token (signature, `iss`, `aud`, `exp`), checks
//!    the `nonce`, and returns the ID token to the page, which sends it as
//!    its bearer token from then on.
//!
//! hoop redeems the code (rather than the page) so the page's
//! Content-Security-Policy can keep `connect-src 'self'`, and so the issuer
//! need not allow cross-origin requests. hoop keeps nothing: the token lives
//! in the page's `sessionStorage`, no cookie is set.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, body::Bytes, extract::State, http::StatusCode};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use super::{
    AdminState, ApiError,
    outbound::{self, OutboundError, OutboundRequest},
};
use hoop_config::OidcConfig;

/// How long a discovery document is trusted before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_hours(1);
/// Least time between two discovery attempts after a failure.
const DISCOVERY_RETRY: Duration = Duration::from_secs(10);
/// Bound on one call to the issuer.
const ISSUER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the issuer.
const ISSUER_MAX_BYTES: usize = 256 * 1024;
/// Code redemptions in flight at once (the endpoint needs no token).
const MAX_CONCURRENT_EXCHANGES: usize = 8;

/// Why the OIDC login could not go on.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The discovery document could not be fetched.
    #[error("cannot fetch the issuer's discovery document {url}: {source}")]
    Discovery {
        /// The document's URL, path and query left out.
        url: String,
        /// What failed.
        source: OutboundError,
    },
    /// The discovery document or token answer is not what OIDC specifies.
    #[error("the issuer answered {what}: {detail}")]
    Issuer {
        /// Which request.
        what: &'static str,
        /// What is wrong with the answer.
        detail: String,
    },
    /// Discovery failed a moment ago; not retried yet.
    #[error("the issuer's discovery document is unavailable (last error: {0}); retrying shortly")]
    RecentlyFailed(String),
    /// The token endpoint could not be reached.
    #[error("cannot reach the issuer's token endpoint: {0}")]
    TokenEndpoint(#[source] OutboundError),
    /// The token endpoint refused the code (expired, used, wrong verifier…).
    #[error("the issuer refused the login: {0}")]
    Refused(String),
}

/// What the page needs to start a login.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginSettings {
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// The page's OAuth client id.
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
}

#[derive(Debug, Clone)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Debug, Default)]
struct DiscoveryCache {
    found: Option<(Instant, Discovery)>,
    failed: Option<(Instant, String)>,
}

/// The page's login against one issuer.
#[derive(Debug)]
pub struct OidcLogin {
    issuer: String,
    client_id: String,
    scopes: Vec<String>,
    cache: Mutex<DiscoveryCache>,
    exchanges: Arc<Semaphore>,
}

impl OidcLogin {
    /// The login `config` describes; `None` without a `client_id`.
    pub fn from_config(config: &OidcConfig) -> Option<Self> {
        let client_id = config.client_id.clone()?;
        Some(Self {
            issuer: config.issuer.clone(),
            client_id,
            scopes: config.scopes.clone(),
            cache: Mutex::new(DiscoveryCache::default()),
            exchanges: Arc::new(Semaphore::new(MAX_CONCURRENT_EXCHANGES)),
        })
    }

    /// What the page needs to send the browser to the issuer.
    pub async fn settings(&self) -> Result<LoginSettings, LoginError> {
        let discovery = self.discovery().await?;
        Ok(LoginSettings {
            authorization_endpoint: discovery.authorization_endpoint,
            client_id: self.client_id.clone(),
            scope: self.scopes.join(" "),
        })
    }

    async fn discovery(&self) -> Result<Discovery, LoginError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, found)) = &cache.found
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(found.clone());
        }
        if let Some((at, error)) = &cache.failed
            && at.elapsed() < DISCOVERY_RETRY
        {
            return Err(LoginError::RecentlyFailed(error.clone()));
        }
        match self.fetch_discovery().await {
            Ok(found) => {
                cache.found = Some((Instant::now(), found.clone()));
                cache.failed = None;
                Ok(found)
            }
            Err(error) => {
                tracing::warn!(%error, "OIDC discovery failed");
                // A document fetched earlier still serves while the issuer is down.
                if let Some((_, found)) = &cache.found {
                    return Ok(found.clone());
                }
                cache.failed = Some((Instant::now(), error.to_string()));
                Err(error)
            }
        }
    }

    async fn fetch_discovery(&self) -> Result<Discovery, LoginError> {
        #[derive(Deserialize)]
        struct Document {
            issuer: String,
            authorization_endpoint: String,
            token_endpoint: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let response = outbound::send(OutboundRequest {
            method: Method::GET,
            url: &url,
            bearer: None,
            body: None,
            timeout: ISSUER_TIMEOUT,
            max_body: ISSUER_MAX_BYTES,
        })
        .await
        .map_err(|source| LoginError::Discovery {
            url: outbound::redact(&url),
            source,
        })?;
        let issuer_error = |detail: String| LoginError::Issuer {
            what: "its discovery document",
            detail,
        };
        if response.status != StatusCode::OK {
            return Err(issuer_error(format!("HTTP {}", response.status)));
        }
        let document: Document = serde_json::from_slice(&response.body)
            .map_err(|e| issuer_error(format!("not a discovery document: {e}")))?;
        // OpenID Connect Discovery 1.0, 4.3: the document must name the very issuer asked.
        if document.issuer != self.issuer {
            return Err(issuer_error(format!(
                "its `issuer` is {:?}, not the configured {:?}",
                document.issuer, self.issuer
            )));
        }
        for endpoint in [&document.authorization_endpoint, &document.token_endpoint] {
            let uri: hyper::Uri = endpoint
                .parse()
                .map_err(|_| issuer_error(format!("{endpoint:?} is not a URL")))?;
            if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
                return Err(issuer_error(format!("{endpoint:?} is not an http(s) URL")));
            }
        }
        Ok(Discovery {
            authorization_endpoint: document.authorization_endpoint,
            token_endpoint: document.token_endpoint,
        })
    }

    /// Redeems an authorization code; returns the ID token.
    async fn redeem(&self, request: &TokenRequest) -> Result<String, LoginError> {
        #[derive(Serialize)]
        struct Form<'a> {
            grant_type: &'a str,
            code: &'a str,
            redirect_uri: &'a str,
            client_id: &'a str,
            code_verifier: &'a str,
        }
        let discovery = self.discovery().await?;
        let form = serde_urlencoded::to_string(Form {
            grant_type: "authorization_code",
            code: &request.code,
            redirect_uri: &request.redirect_uri,
            client_id: &self.client_id,
            code_verifier: &request.code_verifier,
        })
        .expect("a form of strings encodes");
        let response = outbound::send(OutboundRequest {
            method: Method::POST,
            url: &discovery.token_endpoint,
            bearer: None,
            body: Some(outbound::Body::Form(form.into_bytes())),
            timeout: ISSUER_TIMEOUT,
            max_body: ISSUER_MAX_BYTES,
        })
        .await
        .map_err(LoginError::TokenEndpoint)?;
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if !response.status.is_success() {
            // RFC 6749 5.2: {"error": "...", "error_description": "..."}.
            let error = answer["error"].as_str().unwrap_or("no error code");
            let description = answer["error_description"].as_str().unwrap_or_default();
            return Err(LoginError::Refused(printable(&format!(
                "HTTP {}: {error} {description}",
                response.status
            ))));
        }
        answer["id_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| LoginError::Issuer {
                what: "the code",
                detail: "no id_token in the token response (is `openid` among the scopes?)"
                    .to_owned(),
            })
    }
}

/// At most 300 printable characters of what an issuer said, for an error.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// What the page tells about the server, before anyone signs in.
#[derive(Debug, Serialize, Deserialize)]
pub struct PageSettings {
    /// The OIDC login, when `admin.oidc.client_id` is set and the issuer answered.
    pub oidc: Option<LoginSettings>,
    /// Why the OIDC login is configured but unavailable.
    pub oidc_error: Option<String>,
}

/// `GET /api/ui/settings` (no token needed: it says how to get one).
pub(super) async fn settings(State(state): State<AdminState>) -> Json<PageSettings> {
    let Some(login) = state.auth.oidc().and_then(|oidc| oidc.login()) else {
        return Json(PageSettings {
            oidc: None,
            oidc_error: None,
        });
    };
    Json(match login.settings().await {
        Ok(settings) => PageSettings {
            oidc: Some(settings),
            oidc_error: None,
        },
        Err(error) => PageSettings {
            oidc: None,
            oidc_error: Some(error.to_string()),
        },
    })
}

/// The body of `POST /api/ui/oidc/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The authorization code from the redirect.
    pub code: String,
    /// The PKCE verifier whose S256 challenge went with the authorization request.
    pub code_verifier: String,
    /// The redirect URI of the authorization request.
    pub redirect_uri: String,
    /// The nonce of the authorization request; the ID token must carry it.
    pub nonce: String,
}

/// The answer of `POST /api/ui/oidc/token`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenAnswer {
    /// The ID token: the page's bearer token from now on.
    pub token: String,
    /// Who it names.
    pub identity: String,
    /// Their groups.
    pub groups: Vec<String>,
}

/// `POST /api/ui/oidc/token`.
pub(super) async fn token(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<TokenAnswer>, ApiError> {
    let Some(oidc) = state.auth.oidc() else {
        return Err(ApiError::NotFound("OIDC is not configured".to_owned()));
    };
    let Some(login) = oidc.login() else {
        return Err(ApiError::NotFound(
            "OIDC login is not configured (admin.oidc.client_id)".to_owned(),
        ));
    };
    let request: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    check_token_request(&request)?;
    let Ok(_permit) = login.exchanges.clone().try_acquire_owned() else {
        return Err(ApiError::Busy(
            "too many logins in progress; try again in a moment".to_owned(),
        ));
    };
    let id_token = login.redeem(&request).await.map_err(|error| {
        tracing::warn!(%error, "OIDC login failed");
        ApiError::Upstream(error.to_string())
    })?;
    let decider = oidc.verify(&id_token).await.map_err(|error| {
        tracing::warn!(%error, "the issuer's ID token is not accepted");
        ApiError::Unauthorized(error)
    })?;
    // Signature and claims are verified: reading the nonce needs no more checks.
    let nonce = id_token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .and_then(|claims| claims["nonce"].as_str().map(str::to_owned));
    if nonce.as_deref() != Some(request.nonce.as_str()) {
        tracing::warn!(identity = %decider.identity, "OIDC login refused: the ID token's nonce does not match");
        return Err(ApiError::Unauthorized(
            super::auth::AuthError::NonceMismatch,
        ));
    }
    tracing::info!(identity = %decider.identity, "signed in to the approvals page with OIDC");
    Ok(Json(TokenAnswer {
        token: id_token,
        identity: decider.identity,
        groups: decider.groups,
    }))
}

fn check_token_request(request: &TokenRequest) -> Result<(), ApiError> {
    let bad = |what: &str| Err(ApiError::BadRequest(what.to_owned()));
    if request.code.is_empty() || request.code.len() > 4096 {
        return bad("code must be 1 to 4096 characters");
    }
    // RFC 7636 4.1: 43 to 128 characters of [A-Za-z0-9-._~].
    let verifier = &request.code_verifier;
    if !(43..=128).contains(&verifier.len())
        || !verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return bad("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~");
    }
    if request.nonce.len() < 16 || request.nonce.len() > 256 {
        return bad("nonce must be 16 to 256 characters");
    }
    let redirect_ok = request.redirect_uri.len() <= 2048
        && request.redirect_uri.parse::<hyper::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some()
                && uri.query().is_none()
        });
    if !redirect_ok {
        return bad("redirect_uri must be an absolute http(s) URL without a query");
    }
    Ok(())
}
