//! The admin HTTP server: `/metrics`, `/healthz`, the holds API, the
//! approvals page and Slack's button callbacks.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /healthz` | none | `ok` (and `policy_sha256 <hex>`) |
//! | `GET /ready` | none | 200 `ready` once hoop governs what it should (programs attached, listeners bound; Kubernetes: first sync done, or this pod governed in sidecar mode), 503 before |
//! | `GET /api/holds` | any valid token | JSON array of holds, each with `may_decide` for the caller |
//! | `GET /api/holds/{id}` | any valid token | one hold |
//! | `GET /api/holds/{id}/context` | any valid token | the statements its session ran before it |
//! | `POST /api/holds/{id}/approve` | an approver of the hold's rule | the hold after the decision |
//! | `POST /api/holds/{id}/deny` | an approver of the hold's rule | the hold after the decision |
//! | `GET /api/whoami` | any valid token | `{identity, groups}` |
//! | `GET /ui/` (and its assets) | none | the approvals page |
//! | `GET /api/ui/settings` | none | how the page can sign in |
//! | `POST /api/ui/oidc/token` | an authorization code + PKCE verifier | an ID token |
//! | `POST /api/slack/actions` | Slack's request signature | 200 (the message is updated through `response_url`) |
//!
//! `GET /api/holds` takes `?decided=N` (at most N decided holds, the most
//! recent; pending ones are always all there) and `?wait=SECONDS` (up to 30):
//! every answer carries an `ETag`, and with `If-None-Match` set to it the
//! request waits until a hold changes (or `wait` runs out: 304). That is how
//! the page stays live without polling hard.
//!
//! Decisions take an optional JSON body `{"reason": "..."}`. Errors are JSON
//! `{"error": "..."}` with 400, 401 (plus `WWW-Authenticate: Bearer`), 403,
//! 404, 409, 502 or 503 (503 also when the shared hold store, the
//! Kubernetes API, cannot be reached: nothing was decided).
//!
//! With `kubernetes.enabled` (node mode) the holds are the cluster's: the
//! list shows every agent's holds, and a decision on any of them is written
//! to its `HoldRequest` with an optimistic-concurrency update (of two
//! concurrent deciders the loser gets 409).
//!
//! No cookie is ever set or read: every call carries its bearer token in
//! `Authorization`, so a page on another site cannot act with a user's
//! authority (no CSRF), and no answer is readable cross-origin (no CORS
//! headers). Every answer says `nosniff` and `no-referrer`; API answers are
//! `no-store`.

pub mod auth;
pub mod context;
pub mod login;
pub use hoop_hold::outbound;
pub mod slack;
pub mod ui;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use auth::Authenticator;
use hoop_hold::{
    DecideError, Decider, Decision, HoldError, HoldRegistry, HoldState, HoldView, StoreError,
};

/// Largest request body accepted (a decision's reason).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest decision reason accepted, in characters.
const MAX_REASON_CHARS: usize = 1000;
/// Longest a `GET /api/holds?wait=` waits for a change.
const MAX_WAIT_SECS: u64 = 30;

/// Called before `/metrics` is encoded, to refresh gauges read from elsewhere (eBPF maps).
pub type MetricsRefresh = Arc<dyn Fn() + Send + Sync>;

/// Answers `GET /ready`: whether hoop governs what it should (Kubernetes:
/// the first sync is done, or in sidecar mode this pod is governed).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// What the admin server serves.
#[derive(Clone)]
pub struct AdminState {
    /// The holds the API lists and decides.
    pub holds: HoldRegistry,
    /// Who may call the holds API.
    pub auth: Arc<Authenticator>,
    /// Refreshes externally sourced metrics before `/metrics` is encoded.
    pub refresh_metrics: Option<MetricsRefresh>,
    /// The recording directory, read for a hold's context (`None`: recording
    /// is disabled, so there is no context to show).
    pub recordings: Option<PathBuf>,
    /// The live policy, whose file hash `/healthz` reports.
    pub policy: Option<hoop_policy::reload::PolicyHandle>,
    /// `GET /ready`'s answer (`None`: ready as soon as the server runs,
    /// which is once the programs are attached and the listeners bound).
    pub ready: Option<Readiness>,
    /// Turns true when the server shuts down, ending waiting requests.
    stopping: watch::Receiver<bool>,
}

impl AdminState {
    /// State with no metrics refresh hook and no recordings.
    pub fn new(holds: HoldRegistry, auth: Authenticator) -> Self {
        Self {
            holds,
            auth: Arc::new(auth),
            refresh_metrics: None,
            recordings: None,
            policy: None,
            ready: None,
            stopping: watch::channel(false).1,
        }
    }

    /// Resolves once the server is shutting down.
    async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        loop {
            if *stopping.borrow_and_update() {
                return;
            }
            if stopping.changed().await.is_err() {
                // No server owns this state (a test): it never stops.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mut state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening (approvals page at /ui/)");
    }
    let (stop, stopping) = watch::channel(false);
    state.stopping = stopping;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Requests waiting for a change end now, so shutdown is not held up.
            let _ = stop.send(true);
        })
        .await
}

/// The admin routes, for embedding or testing.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/ready", get(ready))
        .route("/api/holds", get(list_holds))
        .route("/api/holds/{id}", get(get_hold))
        .route("/api/holds/{id}/context", get(hold_context))
        .route("/api/holds/{id}/approve", post(approve_hold))
        .route("/api/holds/{id}/deny", post(deny_hold))
        .route("/api/whoami", get(whoami))
        .route("/api/ui/settings", get(login::settings))
        .route("/api/ui/oidc/token", post(login::token))
        .route(
            "/api/slack/actions",
            post(slack::actions).layer(DefaultBodyLimit::max(slack::MAX_CALLBACK_BYTES)),
        )
        .merge(ui::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(ui::common_headers))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    if let Some(refresh) = &state.refresh_metrics {
        refresh();
    }
    // Make sure the hold metrics exist even before the first hold.
    let _ = hoop_hold::registry::hold_metrics();
    let families = hoop_core::metrics::metrics().registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            ApiError::Internal("cannot encode metrics".to_owned()).into_response()
        }
    }
}

/// `ok`, then (when a policy is live) `policy_sha256 <hex>` on a line of
/// its own: the SHA-256 of the configuration file whose policy this agent
/// enforces, so an operator can see nodes disagree.
async fn healthz(State(state): State<AdminState>) -> String {
    match &state.policy {
        Some(policy) if !policy.source_sha256().is_empty() => {
            format!("ok\npolicy_sha256 {}\n", policy.source_sha256())
        }
        _ => "ok".to_owned(),
    }
}

/// 200 once what hoop should govern is governed, 503 before: the
/// DaemonSet's readiness probe and a native sidecar's startup probe.
async fn ready(State(state): State<AdminState>) -> Response {
    if state.ready.as_ref().is_none_or(|ready| ready()) {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: hoop does not govern what it should yet\n",
        )
            .into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

/// A hold as one caller sees it.
#[derive(Debug, Serialize)]
struct HoldForCaller<'a> {
    #[serde(flatten)]
    hold: &'a HoldView,
    /// Whether the caller may approve or deny it now (it is pending and they
    /// are among its rule's approvers). The page shows buttons only then;
    /// the API checks again on every decision.
    may_decide: bool,
}

impl<'a> HoldForCaller<'a> {
    fn new(hold: &'a HoldView, caller: &Decider) -> Self {
        Self {
            hold,
            may_decide: hold.state == HoldState::Pending && hold.may_be_decided_by(caller),
        }
    }
}

/// `GET /api/holds` query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// At most this many decided holds (the most recent).
    decided: Option<usize>,
    /// With `If-None-Match`: wait up to this many seconds for a change.
    wait: Option<u64>,
}

async fn list_holds(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let query: ListQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?;
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Subscribed before reading, so a change in between is not missed.
    let mut changes = state.holds.subscribe();
    let (mut version, mut holds) = state.holds.list_versioned();
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    if !wait.is_zero() && known.as_deref() == Some(etag(version).as_str()) {
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(wait) => {}
            () = state.stopped() => {}
        }
        (version, holds) = state.holds.list_versioned();
    }
    let tag = etag(version);
    let tag_header = HeaderValue::from_str(&tag).expect("an ETag is ASCII");
    if known.as_deref() == Some(tag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag_header)]).into_response());
    }
    let mut decided = 0;
    let items: Vec<HoldForCaller<'_>> = holds
        .iter()
        .filter(|hold| {
            if hold.state == HoldState::Pending {
                return true;
            }
            decided += 1;
            query.decided.is_none_or(|limit| decided <= limit)
        })
        .map(|hold| HoldForCaller::new(hold, &caller))
        .collect();
    Ok(([(header::ETAG, tag_header)], Json(items)).into_response())
}

/// The `ETag` of the holds list at `version`.
fn etag(version: u64) -> String {
    format!("\"holds-{version}\"")
}

async fn get_hold(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    let hold = state
        .holds
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no hold with id {id}")))?;
    Ok(Json(HoldForCaller::new(&hold, &caller)).into_response())
}

async fn hold_context(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<context::SessionContext>, ApiError> {
    authenticate(&state, &headers).await?;
    let hold = state
        .holds
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no hold with id {id}")))?;
    let dir = state.recordings.clone();
    let read = tokio::task::spawn_blocking(move || context::read(dir.as_deref(), &hold))
        .await
        .map_err(|_| ApiError::Internal("reading the recording failed".to_owned()))?;
    read.map(Json).map_err(|error| {
        tracing::warn!(%error, hold = %id, "cannot read the session's recording");
        ApiError::Internal(format!("cannot read the session's recording: {error}"))
    })
}

/// `GET /api/whoami`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The caller's identity.
    pub identity: String,
    /// Their groups.
    pub groups: Vec<String>,
}

async fn whoami(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<WhoAmI>, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    Ok(Json(WhoAmI {
        identity: caller.identity,
        groups: caller.groups,
    }))
}

async fn approve_hold(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HoldView>, ApiError> {
    decide(&state, &id, &headers, &body, Decision::Approve).await
}

async fn deny_hold(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HoldView>, ApiError> {
    decide(&state, &id, &headers, &body, Decision::Deny).await
}

/// The optional body of a decision.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why (shown to the client on denial, and recorded).
    #[serde(default)]
    pub reason: Option<String>,
}

async fn decide(
    state: &AdminState,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    decision: Decision,
) -> Result<Json<HoldView>, ApiError> {
    let decider = authenticate(state, headers).await?;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::BadRequest(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    match state
        .holds
        .decide_shared(id, &decider, decision, reason)
        .await
    {
        Ok(view) => Ok(Json(view)),
        Err(DecideError::Hold(e)) => Err(ApiError::Hold(e)),
        Err(DecideError::Store(e)) => Err(ApiError::Store(e)),
    }
}

async fn authenticate(state: &AdminState, headers: &HeaderMap) -> Result<Decider, ApiError> {
    let token = bearer_token(headers)?;
    state.auth.authenticate(token).await.map_err(|error| {
        // The token itself is never logged.
        tracing::debug!(%error, "admin API request not authenticated");
        ApiError::Unauthorized(error)
    })
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(auth::AuthError::MissingToken));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized(auth::AuthError::UnknownToken))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(ApiError::Unauthorized(auth::AuthError::MissingToken)),
    }
}

/// What the admin API answers when a request fails.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request body is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials.
    #[error("{0}")]
    Unauthorized(#[source] auth::AuthError),
    /// 403, 404 or 409 from the hold registry.
    #[error("{0}")]
    Hold(#[from] HoldError),
    /// 401: a Slack callback without a valid, fresh signature.
    #[error("{0}")]
    SlackSignature(#[source] slack::SignatureError),
    /// 403: authenticated, but not allowed (an unmapped Slack user).
    #[error("{0}")]
    Forbidden(String),
    /// 502: the OIDC issuer failed or refused.
    #[error("{0}")]
    Upstream(String),
    /// 503: too many requests of this kind in flight.
    #[error("{0}")]
    Busy(String),
    /// 503: the shared hold store (the Kubernetes API) could not be read or
    /// written; nothing was decided.
    #[error("{0}")]
    Store(#[source] StoreError),
    /// 404: no such route or hold.
    #[error("{0}")]
    NotFound(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::SlackSignature(_) => StatusCode::UNAUTHORIZED,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Busy(_) | Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Hold(HoldError::NotFound { .. }) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Hold(HoldError::Forbidden { .. }) | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Hold(HoldError::AlreadyFinal { .. } | HoldError::AlreadyApproved { .. }) => {
                StatusCode::CONFLICT
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The JSON error body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if let Self::Unauthorized(reason) = &self {
            let challenge = match reason {
                auth::AuthError::MissingToken
                | auth::AuthError::NotConfigured
                | auth::AuthError::NonceMismatch => r#"Bearer realm="hoop""#,
                _ => r#"Bearer realm="hoop", error="invalid_token""#,
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
