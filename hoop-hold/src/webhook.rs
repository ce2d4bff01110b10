//! Tells a chat room (or anything that takes a webhook) that a statement is
//! waiting for approval.
//!
//! Two shapes (`admin.webhook.format`):
//! - `json`: `{"text": "<one line>", "hold": <the hold>}`, for scripts and
//!   any chat that shows `text`;
//! - `slack`: a Block Kit message with the hold's details, Approve and Deny
//!   buttons (`action_id` `approve`/`deny`, `value` the hold id; Slack sends
//!   the clicks to `POST /api/slack/actions`) and a link to the approvals page.
//!   [`slack_message`] also renders the message that replaces it once decided.
//!
//! Fire and forget: the POST runs in its own task, bounded by the configured
//! timeout, and a failure is logged and counted but never touches the hold.

use std::fmt::Write as _;

use hyper::Method;
use serde::Serialize;
use serde_json::{Value, json};

use hoop_config::{AdminConfig, WebhookConfig, WebhookFormat};

use crate::{
    Decision, HoldState, HoldView,
    outbound::{self, OutboundRequest},
    registry::HoldMetrics,
};

/// Longest statement excerpt in the one-line text (the full statement is in `hold`).
const TEXT_STATEMENT_CHARS: usize = 300;
/// Webhook responses are not read beyond this.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest statement shown in a Slack message (Slack refuses blocks over 3000 characters).
const SLACK_STATEMENT_CHARS: usize = 2800;
/// Longest session detail (user, workload, …) shown in a Slack message field.
const SLACK_FIELD_CHARS: usize = 300;

/// The JSON body POSTed for a new hold with `format: json`.
#[derive(Debug, Serialize)]
pub(crate) struct WebhookPayload<'a> {
    /// A Slack-compatible one-liner.
    pub(crate) text: String,
    /// The hold as the API shows it.
    pub(crate) hold: &'a HoldView,
}

/// Where new holds are announced, and how.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `admin.webhook`.
    pub config: WebhookConfig,
    /// `admin.slack.ui_url`: the approvals page, linked from Slack messages.
    pub ui_url: Option<String>,
}

impl Webhook {
    /// The webhook `admin` configures, if any.
    pub fn from_admin(admin: &AdminConfig) -> Option<Self> {
        admin.webhook.clone().map(|config| Self {
            config,
            ui_url: admin.slack.as_ref().and_then(|s| s.ui_url.clone()),
        })
    }

    /// The body announcing `hold`.
    pub(crate) fn body(&self, hold: &HoldView) -> Vec<u8> {
        let body = match self.config.format {
            WebhookFormat::Json => serde_json::to_value(WebhookPayload {
                text: one_liner(hold),
                hold,
            })
            .expect("a hold view serializes"),
            WebhookFormat::Slack => slack_message(hold, self.ui_url.as_deref(), None),
        };
        serde_json::to_vec(&body).expect("JSON values serialize")
    }

    /// Sends the notification for `hold` from a spawned task.
    pub(super) fn notify(&self, hold: HoldView, metrics: &'static HoldMetrics) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(hold = %hold.id, "no async runtime; hold webhook not sent");
            metrics.webhook_errors.inc();
            return;
        };
        let body = self.body(&hold);
        let webhook = self.config.clone();
        runtime.spawn(async move {
            let sent = outbound::send(OutboundRequest {
                method: Method::POST,
                url: &webhook.url,
                bearer: None,
                body: Some(outbound::Body::Json(body)),
                timeout: webhook.timeout,
                max_body: MAX_RESPONSE_BYTES,
            })
            .await;
            // The URL is a secret (Slack's carry a token in the path): log only its origin.
            let target = outbound::redact(&webhook.url);
            match sent {
                Ok(response) if response.status.is_success() => {
                    tracing::debug!(hold = %hold.id, %target, "hold webhook delivered");
                }
                Ok(response) => {
                    metrics.webhook_errors.inc();
                    tracing::warn!(hold = %hold.id, %target, status = %response.status, "hold webhook refused");
                }
                Err(error) => {
                    metrics.webhook_errors.inc();
                    tracing::warn!(hold = %hold.id, %target, %error, "hold webhook failed");
                }
            }
        });
    }
}

impl From<WebhookConfig> for Webhook {
    fn from(config: WebhookConfig) -> Self {
        Self {
            config,
            ui_url: None,
        }
    }
}

/// The Block Kit message for `hold` in its current state: while pending, the
/// details with Approve and Deny buttons; once final, the details with the
/// outcome and no buttons. `slack_user` is the Slack member id who just
/// acted from Slack, when one did (it is mentioned in the outcome).
///
/// Everything a client chose (the statement, `application_name`, the
/// database user) goes into `plain_text` or `rich_text` elements, which
/// Slack shows as typed: no mention, link or formatting can come from them.
pub fn slack_message(hold: &HoldView, ui_url: Option<&str>, slack_user: Option<&str>) -> Value {
    let session = &hold.session;
    let title = match hold.state {
        HoldState::Pending => "Statement held for approval",
        HoldState::Approved => "Held statement approved",
        HoldState::Denied => "Held statement denied",
        HoldState::Timeout => "Held statement timed out",
        HoldState::Withdrawn => "Held statement withdrawn",
    };
    let field = |label: &str, value: &str| json!({ "type": "plain_text", "text": format!("{label}: {}", excerpt(value, SLACK_FIELD_CHARS)), "emoji": false });
    let mut fields = vec![field("Database", &session.who())];
    if let Some(app) = &session.application_name {
        fields.push(field("Application", app));
    }
    if let Some(pod) = &hold.workload {
        fields.push(field(
            "Pod",
            &format!("{pod} (service account {})", pod.service_account),
        ));
    }
    if let Some(workload) = &session.workload {
        fields.push(field("Workload", workload));
    }
    if let Some(client) = &session.client {
        fields.push(field("Client", client));
    }
    fields.push(field("Rule", &hold.rule));
    if !hold.approvers.is_empty() {
        fields.push(field("Approvers", &hold.approvers.join(", ")));
    }
    let mut details = json!({ "type": "section", "fields": fields });
    // Slack refuses an empty text object: a rule without a message shows none.
    if !hold.message.trim().is_empty() {
        details["text"] = json!({ "type": "plain_text", "text": excerpt(&hold.message, SLACK_FIELD_CHARS), "emoji": false });
    }
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": title, "emoji": false } }),
        details,
        json!({ "type": "rich_text", "elements": [{
            "type": "rich_text_preformatted",
            "elements": [{ "type": "text", "text": cut(&hold.statement, SLACK_STATEMENT_CHARS) }],
        }]}),
    ];
    if let Some(outcome) = outcome_text(hold) {
        blocks.push(json!({ "type": "section", "text": { "type": "plain_text", "text": outcome, "emoji": false } }));
    }
    let link = ui_url.map(|url| hold_link(url, &hold.id));
    if hold.state == HoldState::Pending {
        let mut buttons = vec![
            json!({
                "type": "button", "action_id": "approve", "value": hold.id, "style": "primary",
                "text": { "type": "plain_text", "text": "Approve" },
                "confirm": confirm("Run this statement?", "Approve", &hold.id),
            }),
            json!({
                "type": "button", "action_id": "deny", "value": hold.id, "style": "danger",
                "text": { "type": "plain_text", "text": "Deny" },
                "confirm": confirm("Refuse this statement?", "Deny", &hold.id),
            }),
        ];
        if let Some(link) = &link {
            buttons.push(json!({
                "type": "button", "action_id": "open", "url": link,
                "text": { "type": "plain_text", "text": "Open in hoop" },
            }));
        }
        blocks.push(json!({ "type": "actions", "block_id": "hoop_hold", "elements": buttons }));
    }
    // Only hoop's own values go through mrkdwn: the id, a number, a URL.
    let mut context = format!("hold `{}`", hold.id);
    if hold.state == HoldState::Pending {
        let expires = hold.expires_at.unix_timestamp();
        let _ = write!(
            context,
            " · expires <!date^{expires}^{{date_short_pretty}} at {{time_secs}}|{}>",
            rfc3339(hold.expires_at)
        );
    }
    if let Some(user) = slack_user.filter(|u| u.bytes().all(|b| b.is_ascii_alphanumeric())) {
        let _ = write!(context, " · last action by <@{user}>");
    }
    if let Some(link) = &link
        && hold.state != HoldState::Pending
    {
        let _ = write!(context, " · <{}|open in hoop>", slack_escape(link));
    }
    blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": context }] }));
    let text = match hold.state {
        HoldState::Pending => one_liner(hold),
        _ => slack_escape(&format!(
            "hold {}: {}",
            hold.id,
            outcome_text(hold).unwrap_or_else(|| hold.state.to_string())
        )),
    };
    json!({ "text": text, "blocks": blocks })
}

/// Who decided what, for a decided (or partly approved) hold.
fn outcome_text(hold: &HoldView) -> Option<String> {
    let approvers: Vec<&str> = hold
        .decisions
        .iter()
        .filter(|d| d.decision == Decision::Approve)
        .map(|d| d.identity.as_str())
        .collect();
    let reason = hold
        .reason
        .as_deref()
        .map(|r| format!(": {}", excerpt(r, SLACK_FIELD_CHARS)))
        .unwrap_or_default();
    match hold.state {
        HoldState::Pending if approvers.is_empty() => None,
        HoldState::Pending => Some(format!(
            "Approved by {} ({} of {} approvals)",
            approvers.join(", "),
            approvers.len(),
            hold.min_approvals
        )),
        HoldState::Approved => Some(format!("Approved by {}", approvers.join(", "))),
        HoldState::Denied => {
            let by = hold
                .decisions
                .iter()
                .rev()
                .find(|d| d.decision == Decision::Deny)
                .map_or("an approver", |d| d.identity.as_str());
            Some(format!("Denied by {by}{reason}"))
        }
        HoldState::Timeout => Some(format!("Not run: nobody decided in time{reason}")),
        HoldState::Withdrawn => Some(format!("Withdrawn by the client{reason}")),
    }
}

fn confirm(title: &str, verb: &str, id: &str) -> Value {
    json!({
        "title": { "type": "plain_text", "text": title },
        "text": { "type": "plain_text", "text": format!("{verb} hold {id}?") },
        "confirm": { "type": "plain_text", "text": verb },
        "deny": { "type": "plain_text", "text": "Cancel" },
    })
}

/// `ui_url#hold=<id>`: the page opens with that hold in view.
pub fn hold_link(ui_url: &str, id: &str) -> String {
    let base = ui_url.split('#').next().unwrap_or(ui_url);
    format!("{base}#hold={id}")
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The first `max` characters of `text`, as is, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// Who wants to run what where, and how to decide:
/// ``:hourglass: hold `h-abc`: app@orders (psql, client 10.0.0.7:51234) wants to run `DELETE …` — rule `hold[0]`: … Approve: `hoop holds approve h-abc` · deny: `hoop holds deny h-abc --reason "…"` (expires …)``
pub(crate) fn one_liner(hold: &HoldView) -> String {
    let session = &hold.session;
    let mut who = session.who();
    let mut details = Vec::new();
    if let Some(app) = &session.application_name {
        details.push(app.clone());
    }
    if let Some(pod) = &hold.workload {
        details.push(format!(
            "pod {pod}, service account {}",
            pod.service_account
        ));
    }
    if let Some(workload) = &session.workload {
        details.push(format!("workload {workload}"));
    }
    if let Some(client) = &session.client {
        details.push(format!("client {client}"));
    }
    if !details.is_empty() {
        let _ = write!(who, " ({})", details.join(", "));
    }
    let statement = excerpt(&hold.statement, TEXT_STATEMENT_CHARS).replace('`', "'");
    let expires = hold
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let text = format!(
        ":hourglass: hold `{id}`: {who} wants to run `{statement}` — rule `{rule}`: {message}. \
         Approve: `hoop holds approve {id}` · deny: `hoop holds deny {id} --reason \"…\"` (expires {expires})",
        id = hold.id,
        rule = hold.rule,
        message = hold.message,
    );
    slack_escape(&text)
}

/// The first `max` characters of `text`, whitespace collapsed, with `…` when cut.
fn excerpt(text: &str, max: usize) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max {
        collapsed
    } else {
        let mut cut: String = collapsed.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// Slack treats `<`, `>` and `&` as markup; a statement must not become a link or a mention.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Decision;

    #[test]
    fn excerpt_collapses_whitespace_and_cuts() {
        assert_eq!(excerpt("DELETE\n  FROM orders", 100), "DELETE FROM orders");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }

    fn view(state: HoldState) -> HoldView {
        let now = time::OffsetDateTime::now_utc();
        HoldView {
            id: "h-abcdefghij".to_owned(),
            state,
            statement: "DELETE FROM orders WHERE id = 1".to_owned(),
            rule: "orders-deletes".to_owned(),
            message: String::new(),
            session: crate::HoldSession {
                id: "1-2-3".to_owned(),
                user: Some("app".to_owned()),
                database: Some("orders".to_owned()),
                ..Default::default()
            },
            workload: None,
            created_at: now,
            expires_at: now + time::Duration::minutes(5),
            decided_at: None,
            decisions: Vec::new(),
            approvers: vec!["dba".to_owned()],
            min_approvals: 2,
            approvals_needed: 2,
            reason: None,
        }
    }

    fn blocks_of(message: &Value, kind: &str) -> Vec<Value> {
        message["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == kind)
            .cloned()
            .collect()
    }

    /// Within Block Kit's limits: Slack refuses the whole message otherwise.
    fn assert_within_slack_limits(message: &Value) {
        for block in message["blocks"].as_array().unwrap() {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(!text.is_empty() && text.chars().count() <= 3000, "{block}");
            }
            if let Some(fields) = block["fields"].as_array() {
                assert!(fields.len() <= 10);
                for field in fields {
                    let text = field["text"].as_str().unwrap();
                    assert!(!text.is_empty() && text.chars().count() <= 2000);
                }
            }
            for element in block["elements"].as_array().into_iter().flatten() {
                if let Some(confirm) = element.get("confirm") {
                    assert!(confirm["text"]["text"].as_str().unwrap().len() <= 300);
                    assert!(confirm["title"]["text"].as_str().unwrap().len() <= 100);
                }
            }
        }
    }

    #[test]
    fn a_pending_hold_has_buttons_and_a_decided_one_its_outcome() {
        let mut hold = view(HoldState::Pending);
        hold.statement = "x".repeat(10_000);
        let pending = slack_message(&hold, Some("https://hoop.example.com/ui/#old"), None);
        assert_within_slack_limits(&pending);
        let actions = blocks_of(&pending, "actions");
        assert_eq!(actions.len(), 1);
        let ids: Vec<&str> = actions[0]["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["action_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["approve", "deny", "open"]);
        assert_eq!(
            actions[0]["elements"][2]["url"],
            "https://hoop.example.com/ui/#hold=h-abcdefghij"
        );
        let statement = blocks_of(&pending, "rich_text")[0]["elements"][0]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            statement.chars().count(),
            SLACK_STATEMENT_CHARS + 1,
            "cut, with …"
        );
        // No message: the details section has only fields (Slack refuses empty text).
        assert!(blocks_of(&pending, "section")[0].get("text").is_none());

        hold.decisions.push(crate::DecisionRecord {
            identity: "alice".to_owned(),
            decision: Decision::Approve,
            reason: None,
            at: time::OffsetDateTime::now_utc(),
        });
        let partly = slack_message(&hold, None, Some("U0ALICE"));
        assert!(
            partly
                .to_string()
                .contains("Approved by alice (1 of 2 approvals)")
        );
        assert_eq!(
            blocks_of(&partly, "actions").len(),
            1,
            "still pending: buttons stay"
        );
        assert!(partly.to_string().contains("<@U0ALICE>"));

        hold.state = HoldState::Denied;
        hold.decisions.push(crate::DecisionRecord {
            identity: "bob".to_owned(),
            decision: Decision::Deny,
            reason: Some("not now".to_owned()),
            at: time::OffsetDateTime::now_utc(),
        });
        hold.reason = Some("not now".to_owned());
        let denied = slack_message(&hold, Some("https://hoop.example.com/ui/"), Some("U0BOB"));
        assert_within_slack_limits(&denied);
        assert!(blocks_of(&denied, "actions").is_empty());
        assert!(denied.to_string().contains("Denied by bob: not now"));
        assert_eq!(denied["text"], "hold h-abcdefghij: Denied by bob: not now");
        // A Slack user id that is not one is never put in a mention.
        let odd = slack_message(&hold, None, Some("U0<!channel>"));
        assert!(!odd.to_string().contains("channel"));

        hold.state = HoldState::Timeout;
        hold.reason = Some("timed out after 5m".to_owned());
        assert!(
            slack_message(&hold, None, None)
                .to_string()
                .contains("Not run: nobody decided in time: timed out after 5m")
        );
    }

    #[test]
    fn slack_markup_is_escaped() {
        assert_eq!(
            slack_escape("a < b && <!channel>"),
            "a &lt; b &amp;&amp; &lt;!channel&gt;"
        );
    }

    #[test]
    fn a_pod_session_shows_the_pod_and_its_service_account() {
        let mut hold = view(HoldState::Pending);
        hold.workload = Some(hoop_core::PodIdentity {
            namespace: "shop".to_owned(),
            pod: "api-7d9".to_owned(),
            service_account: "api".to_owned(),
            ..Default::default()
        });
        let text = one_liner(&hold);
        assert!(
            text.contains("app@orders (pod shop/api-7d9, service account api)"),
            "{text}"
        );
        let slack = slack_message(&hold, None, None).to_string();
        assert!(
            slack.contains("Pod: shop/api-7d9 (service account api)"),
            "{slack}"
        );
        let json = serde_json::to_value(&hold).expect("json");
        assert_eq!(json["workload"]["namespace"], "shop");
        assert_eq!(json["workload"]["pod"], "api-7d9");
        assert_eq!(json["workload"]["service_account"], "api");
        // Outside Kubernetes there is no such key.
        let json = serde_json::to_value(view(HoldState::Pending)).expect("json");
        assert!(json.get("workload").is_none(), "{json}");
    }

    #[test]
    fn an_injected_session_shows_the_workload_and_the_injected_role() {
        let mut hold = view(HoldState::Pending);
        hold.session.workload = Some("/hoop-exec-1".to_owned());
        hold.session.injected_role = Some("reporting_ro".to_owned());
        hold.session.credential = Some("reporting".to_owned());
        let text = one_liner(&hold);
        assert!(
            text.contains(
                "app@orders as reporting_ro (credential reporting) (workload /hoop-exec-1)"
            ),
            "{text}"
        );
        let message = slack_message(&hold, None, None);
        assert!(
            message
                .to_string()
                .contains("Database: app@orders as reporting_ro (credential reporting)"),
            "{message}"
        );
        assert_within_slack_limits(&message);
        // Old views (and sessions without injection) carry no such keys.
        let json = serde_json::to_value(view(HoldState::Pending).session).unwrap();
        assert!(json.get("injected_role").is_none() && json.get("credential").is_none());
    }
}
