//! Slack's Approve and Deny buttons: `POST /api/slack/actions`.
//!
//! A click reaches hoop as Slack's interactive callback: a form-encoded body
//! whose `payload` field is JSON. hoop acts on it only when:
//! 1. the request carries Slack's signature: `X-Slack-Signature` is
//!    `v0=` + hex HMAC-SHA256 over `v0:<X-Slack-Request-Timestamp>:<body>`
//!    keyed with the app's signing secret, compared in constant time;
//! 2. the timestamp is within 5 minutes of hoop's clock, and this signature
//!    was not seen before (a captured request cannot be replayed);
//! 3. the Slack user is in `admin.slack.users`, which names their hoop
//!    identity; their groups are those given there, or else those of that
//!    identity's static tokens;
//! 4. the hold registry accepts the decision from that identity and those
//!    groups, exactly as for the API (so a rule's `approvers` apply).
//!
//! Anything else is refused before the payload is even parsed: 401 for a
//! signature or timestamp problem, 403 for an unknown user or one outside
//! the approvers. When the payload is authentic, hoop also answers the user
//! through the callback's `response_url`: the message is replaced with the
//! outcome (no buttons once decided), or a note only they see explains why
//! nothing happened.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use hmac::{Hmac, Mac as _};
use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{
    AdminState, ApiError,
    outbound::{self, OutboundRequest},
};
use hoop_config::{SlackConfig, SlackUser};
use hoop_hold::{DecideError, Decider, Decision, HoldError, HoldView, webhook::slack_message};

/// Slack's own limit: requests older (or newer) than this are refused.
const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;
/// Largest callback body accepted (a payload carries the whole message).
pub const MAX_CALLBACK_BYTES: usize = 512 * 1024;
/// Bound on the signatures remembered against replays.
const MAX_REMEMBERED_SIGNATURES: usize = 100_000;
/// Bound on the `response_url` POST.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// `admin.slack` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SlackConfigError {
    /// The signing secret file could not be read.
    #[error("signing_secret_file {path}: cannot read: {source}")]
    ReadSecret {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The signing secret file may be read (or written) by others than its owner.
    #[error(
        "signing_secret_file {path}: mode {mode:o} lets group or others use it; make it readable by hoop only (chmod 600)"
    )]
    SecretFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The environment variable named by `signing_secret_env` is not set.
    #[error("signing_secret_env: environment variable {var} is not set")]
    SecretEnvMissing {
        /// The variable.
        var: String,
    },
    /// The secret is empty.
    #[error("the signing secret from {origin} is empty")]
    EmptySecret {
        /// `signing_secret_file <path>` or `signing_secret_env <VAR>`.
        origin: String,
    },
    /// Neither or both of the secret's sources are set (the config check reports this first).
    #[error("set exactly one of signing_secret_file and signing_secret_env")]
    SecretSource,
}

/// Why a callback was not accepted as coming from Slack. Every variant means 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// `X-Slack-Signature` or `X-Slack-Request-Timestamp` is missing.
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp")]
    Missing,
    /// A header is not of Slack's form.
    #[error("malformed Slack signature headers")]
    Malformed,
    /// The timestamp is more than 5 minutes from hoop's clock.
    #[error(
        "the request timestamp is {skew_secs} s away from hoop's clock (at most 300 s accepted)"
    )]
    Stale {
        /// How far off, in seconds.
        skew_secs: i64,
    },
    /// The signature does not match the body.
    #[error("the Slack signature does not match")]
    Mismatch,
    /// This exact signed request was already accepted once.
    #[error("this Slack request was already received (replay)")]
    Replayed,
}

/// Verifies Slack's callbacks and maps Slack users to hoop identities.
pub struct SlackAuth {
    secret: Vec<u8>,
    users: BTreeMap<String, SlackUser>,
    ui_url: Option<String>,
    /// Signatures accepted in the last 5 minutes, with their timestamps.
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl std::fmt::Debug for SlackAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackAuth")
            .field("users", &self.users.len())
            .field("ui_url", &self.ui_url)
            .finish_non_exhaustive()
    }
}

impl SlackAuth {
    /// Loads the signing secret (`env` reads environment variables).
    pub fn from_config(
        config: &SlackConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SlackConfigError> {
        let (secret, origin) = match (&config.signing_secret_file, &config.signing_secret_env) {
            (Some(path), None) => (
                read_secret_file(path)?,
                format!("signing_secret_file {}", path.display()),
            ),
            (None, Some(var)) => (
                env(var)
                    .ok_or_else(|| SlackConfigError::SecretEnvMissing { var: var.clone() })?
                    .into_bytes(),
                format!("signing_secret_env {var}"),
            ),
            _ => return Err(SlackConfigError::SecretSource),
        };
        let secret = trim_secret(secret);
        if secret.is_empty() {
            return Err(SlackConfigError::EmptySecret { origin });
        }
        Ok(Self::new(
            secret,
            config.users.clone(),
            config.ui_url.clone(),
        ))
    }

    /// From already-loaded parts.
    pub fn new(
        secret: Vec<u8>,
        users: BTreeMap<String, SlackUser>,
        ui_url: Option<String>,
    ) -> Self {
        Self {
            secret,
            users,
            ui_url,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The approvals page, for links in messages.
    pub fn ui_url(&self) -> Option<&str> {
        self.ui_url.as_deref()
    }

    /// Checks that `body` was signed by Slack within 5 minutes of `now`
    /// (Unix seconds), and was not seen before.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().map_err(|_| SignatureError::Malformed))
                .transpose()
        };
        let (Some(timestamp), Some(signature)) = (
            header("x-slack-request-timestamp")?,
            header("x-slack-signature")?,
        ) else {
            return Err(SignatureError::Missing);
        };
        let at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::Malformed)?;
        let skew_secs = now.saturating_sub(at);
        if skew_secs.abs() > MAX_CLOCK_SKEW_SECS {
            return Err(SignatureError::Stale { skew_secs });
        }
        let claimed: [u8; 32] = signature
            .trim()
            .strip_prefix("v0=")
            .and_then(|hex| hex::decode(hex).ok())
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(SignatureError::Malformed)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(b"v0:");
        mac.update(timestamp.trim().as_bytes());
        mac.update(b":");
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&claimed)
            .map_err(|_| SignatureError::Mismatch)?;
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, at| now.saturating_sub(*at) <= MAX_CLOCK_SKEW_SECS);
        if seen.contains_key(&claimed) {
            return Err(SignatureError::Replayed);
        }
        if seen.len() >= MAX_REMEMBERED_SIGNATURES {
            // Only a flood of authentic requests gets here; forgetting the
            // oldest would let those be replayed, so refuse instead.
            return Err(SignatureError::Replayed);
        }
        seen.insert(claimed, at);
        Ok(())
    }

    /// The hoop identity of Slack user `user_id`, with its groups
    /// (`token_groups` finds an identity's groups in the token lists).
    pub fn decider(
        &self,
        user_id: &str,
        token_groups: impl FnOnce(&str) -> Vec<String>,
    ) -> Option<Decider> {
        let user = self.users.get(user_id)?;
        let groups = match &user.groups {
            Some(groups) => groups.clone(),
            None => token_groups(&user.identity),
        };
        Some(Decider {
            identity: user.identity.clone(),
            groups,
        })
    }
}

fn read_secret_file(path: &Path) -> Result<Vec<u8>, SlackConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let read_error = |source| SlackConfigError::ReadSecret {
        path: path.to_owned(),
        source,
    };
    // The mode of what the path leads to (a Kubernetes secret volume links to it).
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SlackConfigError::SecretFileMode {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    std::fs::read(path).map_err(read_error)
}

/// Drops the line end an editor or `echo` leaves after the secret.
fn trim_secret(mut secret: Vec<u8>) -> Vec<u8> {
    while secret.last().is_some_and(u8::is_ascii_whitespace) {
        secret.pop();
    }
    secret
}

/// The form Slack POSTs.
#[derive(Debug, Deserialize)]
struct CallbackForm {
    payload: String,
}

/// The parts of an interaction payload hoop reads.
#[derive(Debug, Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUserRef,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    response_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlackUserRef {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

/// `POST /api/slack/actions`.
pub(super) async fn actions(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&state, &headers, &body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn handle(state: &AdminState, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let Some(slack) = state.auth.slack() else {
        return Err(ApiError::NotFound(
            "Slack callbacks are not configured (admin.slack)".to_owned(),
        ));
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    slack.verify(headers, body, now).map_err(|error| {
        tracing::warn!(%error, "Slack callback refused");
        ApiError::SlackSignature(error)
    })?;
    let form: CallbackForm = serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::BadRequest(format!("not a Slack callback form: {e}")))?;
    let interaction: Interaction = serde_json::from_str(&form.payload)
        .map_err(|e| ApiError::BadRequest(format!("not a Slack interaction payload: {e}")))?;
    if interaction.kind != "block_actions" {
        tracing::debug!(kind = %interaction.kind, "Slack interaction ignored");
        return Ok(());
    }
    let Some((decision, hold_id)) = interaction.actions.iter().find_map(|action| {
        let decision = match action.action_id.as_str() {
            "approve" => Decision::Approve,
            "deny" => Decision::Deny,
            // "open" (the link button) and anything else: nothing to do.
            _ => return None,
        };
        Some((decision, action.value.clone().unwrap_or_default()))
    }) else {
        return Ok(());
    };
    let slack_user = interaction.user.id.as_str();
    let reply = Reply {
        response_url: interaction.response_url.clone(),
        ui_url: slack.ui_url().map(str::to_owned),
        slack_user: slack_user.to_owned(),
    };
    let Some(decider) = slack.decider(slack_user, |identity| state.auth.groups_of(identity)) else {
        tracing::warn!(slack_user, hold = %hold_id, "Slack user not in admin.slack.users");
        reply.note(&format!(
            "hoop does not know your Slack user ({slack_user}): ask an operator to add it to admin.slack.users. Nothing was decided."
        ));
        return Err(ApiError::Forbidden(format!(
            "Slack user {slack_user} is not mapped to a hoop identity (admin.slack.users)"
        )));
    };
    match state
        .holds
        .decide_shared(&hold_id, &decider, decision, None)
        .await
    {
        Ok(view) => {
            tracing::info!(hold = %hold_id, approver = %decider.identity, slack_user, ?decision, "hold decided from Slack");
            reply.replace(&view);
            Ok(())
        }
        Err(DecideError::Hold(error)) => {
            match &error {
                HoldError::AlreadyFinal { .. } => {
                    // Show everyone what became of it.
                    if let Some(view) = state.holds.get(&hold_id) {
                        reply.replace(&view);
                    }
                }
                HoldError::Forbidden { .. }
                | HoldError::NotFound { .. }
                | HoldError::AlreadyApproved { .. } => {
                    reply.note(&format!("Nothing was decided: {error}."));
                }
            }
            tracing::info!(hold = %hold_id, approver = %decider.identity, slack_user, %error, "Slack decision refused");
            Err(ApiError::Hold(error))
        }
        Err(DecideError::Store(error)) => {
            reply.note(&format!("Nothing was decided: {error}. Try again."));
            tracing::warn!(hold = %hold_id, approver = %decider.identity, slack_user, %error, "Slack decision not stored");
            Err(ApiError::Store(error))
        }
    }
}

/// Answers the user through the callback's `response_url`, in the background
/// (Slack wants the HTTP answer within 3 s).
struct Reply {
    response_url: Option<String>,
    ui_url: Option<String>,
    slack_user: String,
}

impl Reply {
    /// Replaces the message with `view`'s current state.
    fn replace(&self, view: &HoldView) {
        let mut message = slack_message(view, self.ui_url.as_deref(), Some(&self.slack_user));
        message["replace_original"] = json!(true);
        self.post(message);
    }

    /// A note only the clicking user sees; the message stays.
    fn note(&self, text: &str) {
        self.post(json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": text,
        }));
    }

    fn post(&self, message: Value) {
        let Some(url) = self.response_url.clone() else {
            return;
        };
        tokio::spawn(async move {
            let body = serde_json::to_vec(&message).expect("JSON values serialize");
            let sent = outbound::send(OutboundRequest {
                method: Method::POST,
                url: &url,
                bearer: None,
                body: Some(outbound::Body::Json(body)),
                timeout: RESPONSE_TIMEOUT,
                max_body: 64 * 1024,
            })
            .await;
            let target = outbound::redact(&url);
            match sent {
                Ok(response) if response.status.is_success() => {}
                Ok(response) => {
                    tracing::warn!(%target, status = %response.status, "Slack refused the message update");
                }
                Err(error) => tracing::warn!(%target, %error, "Slack message update failed"),
            }
        });
    }
}

#[cfg(test)]
pub(crate) mod tests;
