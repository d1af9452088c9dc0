//! `/console`: the web console's static files, embedded in the binary at build time (see
//! `build.rs` and `console/README.md`). They are public, like any web page: the console asks
//! for an API key and sends it as a bearer header on every API call it makes, so serving them
//! opens nothing (no route here reads a key, a cookie or a sandbox).

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderValue, StatusCode, header};

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Served at `/console/` when the binary was built before the console's assets were.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>sandpit console not built</title></head><body><main><h1>Console not built</h1>\
<p>This sandpit binary was built without the web console. Run <code>scripts/serve.sh</code>, \
or <code>npm ci &amp;&amp; npm run build</code> in <code>crates/server/console</code> and then \
<code>cargo build</code> again.</p></main></body></html>\n";

/// Only our own scripts and styles; the API, WebSockets and preview links on this origin.
/// xterm.js adds `<style>` elements for its themes, hence `'unsafe-inline'` for styles only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
frame-ancestors 'none'; form-action 'self'";

/// Whether the binary holds a built console.
pub fn built() -> bool {
    ASSETS.iter().any(|(name, _)| *name == "index.html")
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn page(status: StatusCode, content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Small files on the same host: always revalidated, so an upgrade shows at once.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _)| *n == name) {
        Some((n, bytes)) => page(StatusCode::OK, content_type(n), bytes),
        None if name == "index.html" => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            NOT_BUILT.as_bytes(),
        ),
        None => page(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            b"no such console file\n",
        ),
    }
}

/// `GET /console`: to `/console/`, so relative asset URLs resolve under it.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/`.
pub async fn index() -> Response {
    asset("index.html")
}

/// `GET /console/{*path}`: an embedded file (the table is fixed at build time: a path is
/// looked up, never joined onto a directory).
pub async fn file(Path(path): Path<String>) -> Response {
    asset(if path.is_empty() { "index.html" } else { &path })
}
