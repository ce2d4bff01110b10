//! The admin HTTP server: `/metrics`, `/healthz` and the holds API.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /healthz` | none | `ok` |
//! | `GET /api/holds` | any valid token | JSON array of holds |
//! | `GET /api/holds/{id}` | any valid token | one hold |
//! | `POST /api/holds/{id}/approve` | an approver of the hold's rule | the hold after the decision |
//! | `POST /api/holds/{id}/deny` | an approver of the hold's rule | the hold after the decision |
//!
//! Decisions take an optional JSON body `{"reason": "..."}`. Errors are JSON
//! `{"error": "..."}` with 400, 401 (plus `WWW-Authenticate: Bearer`), 403,
//! 404 or 409.

pub mod auth;
pub use hoop_hold::outbound;

use std::{future::Future, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

pub use auth::Authenticator;
use hoop_hold::{Decider, Decision, HoldError, HoldRegistry, HoldView};

/// Largest request body accepted (a decision's reason).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest decision reason accepted, in characters.
const MAX_REASON_CHARS: usize = 1000;

/// Called before `/metrics` is encoded, to refresh gauges read from elsewhere (eBPF maps).
pub type MetricsRefresh = Arc<dyn Fn() + Send + Sync>;

/// What the admin server serves.
#[derive(Clone)]
pub struct AdminState {
    /// The holds the API lists and decides.
    pub holds: HoldRegistry,
    /// Who may call the holds API.
    pub auth: Arc<Authenticator>,
    /// Refreshes externally sourced metrics before `/metrics` is encoded.
    pub refresh_metrics: Option<MetricsRefresh>,
}

impl AdminState {
    /// State with no metrics refresh hook.
    pub fn new(holds: HoldRegistry, auth: Authenticator) -> Self {
        Self {
            holds,
            auth: Arc::new(auth),
            refresh_metrics: None,
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The admin routes, for embedding or testing.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/holds", get(list_holds))
        .route("/api/holds/{id}", get(get_hold))
        .route("/api/holds/{id}/approve", post(approve_hold))
        .route("/api/holds/{id}/deny", post(deny_hold))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn list_holds(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Vec<HoldView>>, ApiError> {
    authenticate(&state, &headers).await?;
    Ok(Json(state.holds.list()))
}

async fn get_hold(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<HoldView>, ApiError> {
    authenticate(&state, &headers).await?;
    state
        .holds
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no hold with id {id}")))
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
    state
        .holds
        .decide(id, &decider, decision, reason)
        .map(Json)
        .map_err(ApiError::from)
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
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Hold(HoldError::NotFound { .. }) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Hold(HoldError::Forbidden { .. }) => StatusCode::FORBIDDEN,
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
                auth::AuthError::MissingToken | auth::AuthError::NotConfigured => {
                    r#"Bearer realm="hoop""#
                }
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
