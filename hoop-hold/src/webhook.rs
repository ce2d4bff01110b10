//! Tells a chat room (or anything that takes a Slack-style webhook) that a
//! statement is waiting for approval.
//!
//! Fire and forget: the POST runs in its own task, bounded by the configured
//! timeout, and a failure is logged and counted but never touches the hold.

use std::fmt::Write as _;

use hyper::Method;
use serde::Serialize;

use hoop_config::WebhookConfig;

use crate::{
    HoldView,
    outbound::{self, OutboundRequest},
    registry::HoldMetrics,
};

/// Longest statement excerpt in the one-line text (the full statement is in `hold`).
const TEXT_STATEMENT_CHARS: usize = 300;
/// Webhook responses are not read beyond this.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The JSON body POSTed for a new hold.
#[derive(Debug, Serialize)]
pub(crate) struct WebhookPayload<'a> {
    /// A Slack-compatible one-liner.
    pub(crate) text: String,
    /// The hold as the API shows it.
    pub(crate) hold: &'a HoldView,
}

/// Sends the notification for `hold` from a spawned task.
pub(super) fn notify(webhook: WebhookConfig, hold: HoldView, metrics: &'static HoldMetrics) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(hold = %hold.id, "no async runtime; hold webhook not sent");
        metrics.webhook_errors.inc();
        return;
    };
    runtime.spawn(async move {
        let body = serde_json::to_vec(&WebhookPayload { text: one_liner(&hold), hold: &hold })
            .expect("a hold view serializes");
        let sent = outbound::send(OutboundRequest {
            method: Method::POST,
            url: &webhook.url,
            bearer: None,
            json_body: Some(body),
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

/// Who wants to run what where, and how to decide:
/// ``:hourglass: hold `h-abc`: app@orders (psql, client 10.0.0.7:51234) wants to run `DELETE …` — rule `hold[0]`: … Approve: `hoop holds approve h-abc` · deny: `hoop holds deny h-abc --reason "…"` (expires …)``
pub(crate) fn one_liner(hold: &HoldView) -> String {
    let session = &hold.session;
    let mut who = format!(
        "{}@{}",
        session.user.as_deref().unwrap_or("?"),
        session.database.as_deref().unwrap_or("?")
    );
    let mut details = Vec::new();
    if let Some(app) = &session.application_name {
        details.push(app.clone());
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

    #[test]
    fn excerpt_collapses_whitespace_and_cuts() {
        assert_eq!(excerpt("DELETE\n  FROM orders", 100), "DELETE FROM orders");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }

    #[test]
    fn slack_markup_is_escaped() {
        assert_eq!(
            slack_escape("a < b && <!channel>"),
            "a &lt; b &amp;&amp; &lt;!channel&gt;"
        );
    }
}
