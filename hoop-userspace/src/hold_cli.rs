//! `hoop holds list | approve ID | deny ID [--reason TEXT]`: a client of the
//! admin API.
//!
//! The lead's clap layer resolves the base URL (`--admin URL`, else the
//! config's `admin.listen`, see [`AdminEndpoint`]) and the token (`--token`,
//! else `HOOP_TOKEN`, see [`resolve_token`]) and calls [`list`], [`approve`]
//! or [`deny`]. Every failure is a [`CliError`]; map it to a non-zero exit.

use std::{fmt::Write as _, io::Write, net::SocketAddr, time::Duration};

use hyper::{Method, StatusCode};
use time::OffsetDateTime;

use crate::admin::{
    DecisionBody, ErrorBody,
    outbound::{self, OutboundError, OutboundRequest},
};
use hoop_hold::{HoldState, HoldView};

/// The environment variable holding the admin API token.
pub const TOKEN_ENV: &str = "HOOP_TOKEN";
/// Bound on one admin API call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest admin API response read (1000 decided holds plus the pending ones).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Statement characters shown in the table.
const TABLE_STATEMENT_CHARS: usize = 60;

/// Why a `hoop holds` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--admin` is not a usable URL.
    #[error("invalid admin URL {0:?}: expected http://HOST:PORT or HOST:PORT")]
    InvalidAdminUrl(String),
    /// Neither `--token` nor `HOOP_TOKEN` is set.
    #[error("no admin token: pass --token or set {TOKEN_ENV}")]
    MissingToken,
    /// The admin API could not be reached.
    #[error(
        "cannot reach the hoop admin API at {url}: {source} (is `hoop agent` running, and is --admin right?)"
    )]
    Unreachable {
        /// The base URL.
        url: String,
        /// What failed.
        source: OutboundError,
    },
    /// 401: the token is missing, unknown or expired.
    #[error("not authenticated: {0} (check --token / {TOKEN_ENV})")]
    Unauthorized(String),
    /// 403: the token is valid but not an approver for this hold.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: no such hold.
    #[error("not found: {0}")]
    NotFound(String),
    /// 409: the hold was already decided, timed out or withdrawn.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 400: the API rejected the request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Any other status.
    #[error("admin API answered HTTP {status}: {message}")]
    Unexpected {
        /// The status.
        status: StatusCode,
        /// The error body, or the raw body.
        message: String,
    },
    /// The API answered 200 with a body that is not what was expected.
    #[error("unexpected response from the admin API: {0}")]
    InvalidResponse(#[source] serde_json::Error),
    /// Writing to the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Where the admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminEndpoint {
    base: String,
}

impl AdminEndpoint {
    /// `--admin`: `http://host:port`, `https://host:port[/prefix]`, or a bare `host:port`.
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let text = text.trim().trim_end_matches('/');
        let base = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let uri: hyper::Uri = base
            .parse()
            .map_err(|_| CliError::InvalidAdminUrl(text.to_owned()))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
            return Err(CliError::InvalidAdminUrl(text.to_owned()));
        }
        Ok(Self { base })
    }

    /// The config's `admin.listen`. An unspecified address (`0.0.0.0`, `::`)
    /// means "this machine", so it is reached on loopback.
    pub fn from_listen(listen: SocketAddr) -> Self {
        let ip = match listen.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
            ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        Self {
            base: format!("http://{}", SocketAddr::new(ip, listen.port())),
        }
    }

    /// The base URL.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `--token`, else `HOOP_TOKEN`.
pub fn resolve_token(flag: Option<String>) -> Result<String, CliError> {
    flag.or_else(|| std::env::var(TOKEN_ENV).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or(CliError::MissingToken)
}

/// `hoop holds list [--json]`: JSON array, or a table.
pub async fn list(
    admin: &AdminEndpoint,
    token: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let body = call(admin, token, Method::GET, "/api/holds", None).await?;
    let holds: Vec<HoldView> = serde_json::from_slice(&body).map_err(CliError::InvalidResponse)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &holds).map_err(CliError::InvalidResponse)?;
        writeln!(out)?;
    } else {
        write_table(&holds, OffsetDateTime::now_utc(), out)?;
    }
    Ok(())
}

/// `hoop holds approve ID [--reason TEXT]`.
pub async fn approve(
    admin: &AdminEndpoint,
    token: &str,
    id: &str,
    reason: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    decide(admin, token, id, "approve", reason, out).await
}

/// `hoop holds deny ID [--reason TEXT]`.
pub async fn deny(
    admin: &AdminEndpoint,
    token: &str,
    id: &str,
    reason: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    decide(admin, token, id, "deny", reason, out).await
}

async fn decide(
    admin: &AdminEndpoint,
    token: &str,
    id: &str,
    action: &str,
    reason: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(CliError::NotFound(format!("no hold with id {id:?}")));
    }
    let body = serde_json::to_vec(&DecisionBody {
        reason: reason.map(str::to_owned),
    })
    .expect("a decision body serializes");
    let path = format!("/api/holds/{id}/{action}");
    let response = call(admin, token, Method::POST, &path, Some(body)).await?;
    let hold: HoldView = serde_json::from_slice(&response).map_err(CliError::InvalidResponse)?;
    match hold.state {
        HoldState::Pending => writeln!(
            out,
            "{}: approval recorded; {} more approval(s) needed",
            hold.id, hold.approvals_needed
        )?,
        state => writeln!(out, "{}: {state}", hold.id)?,
    }
    Ok(())
}

async fn call(
    admin: &AdminEndpoint,
    token: &str,
    method: Method,
    path: &str,
    json_body: Option<Vec<u8>>,
) -> Result<bytes::Bytes, CliError> {
    let url = admin.url(path);
    let response = outbound::send(OutboundRequest {
        method,
        url: &url,
        bearer: Some(token),
        body: json_body.map(outbound::Body::Json),
        timeout: REQUEST_TIMEOUT,
        max_body: MAX_RESPONSE_BYTES,
    })
    .await
    .map_err(|source| match source {
        OutboundError::InvalidUrl(_) => CliError::InvalidAdminUrl(admin.base.clone()),
        source => CliError::Unreachable {
            url: outbound::redact(&admin.base),
            source,
        },
    })?;
    if response.status.is_success() {
        return Ok(response.body);
    }
    let message = serde_json::from_slice::<ErrorBody>(&response.body).map_or_else(
        |_| String::from_utf8_lossy(&response.body).trim().to_owned(),
        |e| e.error,
    );
    Err(match response.status {
        StatusCode::BAD_REQUEST => CliError::BadRequest(message),
        StatusCode::UNAUTHORIZED => CliError::Unauthorized(message),
        StatusCode::FORBIDDEN => CliError::Forbidden(message),
        StatusCode::NOT_FOUND => CliError::NotFound(message),
        StatusCode::CONFLICT => CliError::Conflict(message),
        status => CliError::Unexpected { status, message },
    })
}

/// The human-readable listing.
fn write_table(
    holds: &[HoldView],
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if holds.is_empty() {
        writeln!(out, "no holds")?;
        return Ok(());
    }
    let rows: Vec<[String; 6]> = holds
        .iter()
        .map(|hold| {
            let session = &hold.session;
            let mut who = session.who();
            if let Some(app) = &session.application_name {
                let _ = write!(who, " ({app})");
            }
            if let Some(pod) = &hold.workload {
                let _ = write!(who, " pod {pod} sa {}", pod.service_account);
            }
            let when = match hold.state {
                HoldState::Pending => {
                    format!("expires in {}", short_duration(hold.expires_at - now))
                }
                _ => hold.decided_at.map_or_else(String::new, |at| {
                    format!("{} ago", short_duration(now - at))
                }),
            };
            let state = match hold.state {
                HoldState::Pending if hold.min_approvals > 1 => {
                    format!(
                        "pending {}/{}",
                        hold.min_approvals - hold.approvals_needed,
                        hold.min_approvals
                    )
                }
                state => state.to_string(),
            };
            [
                hold.id.clone(),
                state,
                when,
                hold.rule.clone(),
                who,
                one_line(&hold.statement, TABLE_STATEMENT_CHARS),
            ]
        })
        .collect();
    let headers = ["ID", "STATE", "WHEN", "RULE", "WHO", "STATEMENT"];
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == cells.len() - 1 {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        text
    };
    writeln!(out, "{}", line(headers))?;
    for row in &rows {
        writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
    }
    Ok(())
}

/// `1h2m`, `4m10s`, `12s`: precise enough for a table.
fn short_duration(duration: time::Duration) -> String {
    let secs = duration.whole_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max {
        collapsed
    } else {
        let mut cut: String = collapsed.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn admin_endpoint_accepts_bare_host_port_and_urls() {
        assert_eq!(
            AdminEndpoint::parse("127.0.0.1:9464").unwrap().as_str(),
            "http://127.0.0.1:9464"
        );
        assert_eq!(
            AdminEndpoint::parse("http://h:1/").unwrap().as_str(),
            "http://h:1"
        );
        assert!(AdminEndpoint::parse("ftp://h:1").is_err());
        assert!(AdminEndpoint::parse("http://h:1/?x=1").is_err());
    }

    #[test]
    fn unspecified_listen_address_is_reached_on_loopback() {
        let endpoint = AdminEndpoint::from_listen("0.0.0.0:9464".parse().unwrap());
        assert_eq!(endpoint.as_str(), "http://127.0.0.1:9464");
        let endpoint = AdminEndpoint::from_listen("[::]:9464".parse().unwrap());
        assert_eq!(endpoint.as_str(), "http://[::1]:9464");
    }

    #[test]
    fn short_durations_read_well() {
        assert_eq!(short_duration(time::Duration::seconds(12)), "12s");
        assert_eq!(short_duration(time::Duration::seconds(250)), "4m10s");
        assert_eq!(short_duration(time::Duration::seconds(3720)), "1h2m");
        assert_eq!(short_duration(time::Duration::seconds(-5)), "0s");
    }
}
