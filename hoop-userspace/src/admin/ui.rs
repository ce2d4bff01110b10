//! The approvals page at `/ui/`: three files compiled into the binary, so
//! it needs no CDN, no build step and no network beyond hoop itself.
//!
//! The page is plain HTML, CSS and JavaScript (`ui/index.html`, `ui/app.js`,
//! `ui/app.css`). It calls the same authenticated API as `hoop holds`, with
//! the bearer token the approver typed (or got from the OIDC login) kept in
//! `sessionStorage`. It is served with a strict Content-Security-Policy:
//! - scripts, styles, images and requests only from hoop itself: no inline
//!   script or style, no `eval`, nothing fetched from elsewhere;
//! - `require-trusted-types-for 'script'` with no policy allowed, so the
//!   browser itself refuses any string assigned to `innerHTML` or another
//!   HTML sink: held statements (attacker-controlled text) can only ever be
//!   shown as text;
//! - no framing (`frame-ancestors 'none'`), no `<base>`, no form posts.

use axum::{
    Router,
    http::{HeaderName, HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

use super::AdminState;

/// The Content-Security-Policy of the page and its assets.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const ICON_SVG: &str = include_str!("ui/icon.svg");

/// `/ui/` and its assets.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { page(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/ui/icon.svg",
            get(|| async { page(ICON_SVG, "image/svg+xml") }),
        )
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (
                HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            // Revalidate on every load, so an upgraded hoop serves its new page.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Headers every admin answer carries: no content sniffing, no referrer
/// (the OIDC code in `/ui/?code=` must not leak), and, for everything but
/// the page's own files, no caching (holds and statements are sensitive).
pub(super) async fn common_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
