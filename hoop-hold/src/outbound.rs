//! A small HTTP/1.1 client for hoop's own outbound calls: the hold webhook,
//! Slack message updates, JWKS and OIDC discovery fetches, the OIDC token
//! exchange and the `hoop holds` CLI.
//!
//! `http://` and `https://` (rustls, the system's trust roots). One request
//! per connection: these calls are rare, so pooling buys nothing.

use std::{sync::Arc, sync::OnceLock, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    Method, Request, StatusCode, Uri,
    header::{self, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An outbound request that did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The URL is not an absolute `http://` or `https://` URL.
    #[error("not an http:// or https:// URL: {0}")]
    InvalidUrl(String),
    /// The TCP connection failed.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate not trusted, wrong name, …).
    #[error("TLS with {authority} failed: {source}")]
    Tls {
        /// `host:port`.
        authority: String,
        /// The I/O error carrying the rustls error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with {authority} failed: {source}")]
    Http {
        /// `host:port`.
        authority: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The request could not be built (bad header value).
    #[error("cannot build request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The response body was larger than allowed.
    #[error("response from {authority} is larger than {limit} bytes")]
    TooLarge {
        /// `host:port`.
        authority: String,
        /// The limit.
        limit: usize,
    },
    /// No response within the timeout.
    #[error("no response from {authority} within {}", humantime::format_duration(*timeout))]
    Timeout {
        /// `host:port`.
        authority: String,
        /// The timeout.
        timeout: Duration,
    },
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// A request body, with its content type.
#[derive(Debug, Clone)]
pub enum Body {
    /// `application/json`.
    Json(Vec<u8>),
    /// `application/x-www-form-urlencoded` (OAuth token requests).
    Form(Vec<u8>),
}

/// One outbound request.
#[derive(Debug)]
pub struct OutboundRequest<'a> {
    /// `GET`, `POST`, …
    pub method: Method,
    /// An absolute `http://` or `https://` URL.
    pub url: &'a str,
    /// `Authorization: Bearer …`, if any.
    pub bearer: Option<&'a str>,
    /// The body, if any.
    pub body: Option<Body>,
    /// Bound on the whole exchange.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
}

/// Sends `request` and reads the whole response.
///
/// Errors never include the URL's path or query: webhook URLs carry secrets.
pub async fn send(request: OutboundRequest<'_>) -> Result<Response, OutboundError> {
    let uri: Uri = request
        .url
        .parse()
        .map_err(|_| OutboundError::InvalidUrl(redact(request.url)))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(OutboundError::InvalidUrl(redact(request.url))),
    };
    let host = uri
        .host()
        .ok_or_else(|| OutboundError::InvalidUrl(redact(request.url)))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = format!("{host}:{port}");
    let timeout = request.timeout;
    match tokio::time::timeout(
        timeout,
        exchange(request, &uri, https, &host, port, &authority),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(OutboundError::Timeout { authority, timeout }),
    }
}

async fn exchange(
    request: OutboundRequest<'_>,
    uri: &Uri,
    https: bool,
    host: &str,
    port: u16,
    authority: &str,
) -> Result<Response, OutboundError> {
    // `[::1]` in a URL is `::1` to the resolver.
    let connect_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((connect_host, port))
        .await
        .map_err(|source| OutboundError::Connect {
            authority: authority.to_owned(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);

    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = Request::builder()
        .method(request.method)
        .uri(path)
        .header(header::HOST, uri.authority().map_or(host, |a| a.as_str()))
        .header(
            header::USER_AGENT,
            concat!("hoop/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, "application/json");
    if let Some(token) = request.bearer {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| OutboundError::Request(hyper::http::Error::from(e)))?;
        value.set_sensitive(true);
        builder = builder.header(header::AUTHORIZATION, value);
    }
    let body = match request.body {
        Some(Body::Json(json)) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(json)
        }
        Some(Body::Form(form)) => {
            builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Bytes::from(form)
        }
        None => Bytes::new(),
    };
    let http_request = builder.body(Full::new(body))?;

    if https {
        let server_name = rustls::pki_types::ServerName::try_from(connect_host.to_owned())
            .map_err(|_| OutboundError::InvalidUrl(format!("https://{authority}")))?;
        let tls = tokio_rustls::TlsConnector::from(tls_client_config())
            .connect(server_name, tcp)
            .await
            .map_err(|source| OutboundError::Tls {
                authority: authority.to_owned(),
                source,
            })?;
        round_trip(TokioIo::new(tls), http_request, authority, request.max_body).await
    } else {
        round_trip(TokioIo::new(tcp), http_request, authority, request.max_body).await
    }
}

async fn round_trip<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
    authority: &str,
    max_body: usize,
) -> Result<Response, OutboundError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http_error = |source| OutboundError::Http {
        authority: authority.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http_error)?;
    let driver = tokio::spawn(async move {
        // Errors surface through `send_request`; the connection ends with the exchange.
        let _ = connection.await;
    });
    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(source) => http_error(*source),
            Err(_) => OutboundError::TooLarge {
                authority: authority.to_owned(),
                limit: max_body,
            },
        })?;
    driver.abort();
    Ok(Response {
        status,
        headers,
        body: body.to_bytes(),
    })
}

/// The client TLS configuration: the system's trust roots, loaded once.
fn tls_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "could not load some system CA certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(
            added,
            ignored,
            "system CA certificates loaded for outbound HTTPS"
        );
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }))
}

/// `scheme://host:port` of a URL, for errors and logs: paths and queries
/// (Slack webhook tokens, for one) never leave this module.
pub fn redact(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => {
                // Drop `user:password@` too.
                let host_port = authority.as_str().rsplit('@').next().unwrap_or_default();
                format!("{scheme}://{host_port}")
            }
            _ => "<invalid URL>".to_owned(),
        },
        Err(_) => "<invalid URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn redaction_keeps_only_scheme_host_and_port() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            redact("http://user:pw@127.0.0.1:8080/x?token=1"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(redact("not a url"), "<invalid URL>");
    }

    /// An HTTPS server with a self-signed certificate: the handshake runs,
    /// and the client refuses the untrusted certificate.
    #[tokio::test]
    async fn https_refuses_an_untrusted_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("this test needs the openssl command");
        assert!(made.success());
        let certs = rustls_pemfile::certs(&mut std::fs::read(&cert).unwrap().as_slice())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut std::fs::read(&key).unwrap().as_slice())
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });

        let url = format!("https://localhost:{port}/jwks.json");
        let result = send(OutboundRequest {
            method: Method::GET,
            url: &url,
            bearer: None,
            body: None,
            timeout: Duration::from_secs(5),
            max_body: 1024,
        })
        .await;
        let error = result.unwrap_err();
        assert!(matches!(error, OutboundError::Tls { .. }), "{error:?}");
        assert!(
            !error.to_string().contains("jwks.json"),
            "paths stay out of errors: {error}"
        );
    }
}
