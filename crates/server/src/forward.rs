//! Forwarding `/v1/sandboxes/{id}/api/*` (and `/ws*`) to the sandbox's agent over its Unix
//! socket.
//!
//! One HTTP/1 connection per request (a Unix-socket connect costs tens of microseconds, less
//! than the bookkeeping of a pool, and a fresh connection can never be a stale one left by a
//! sandbox that slept). Bodies stream both ways without buffering; the response body carries
//! the sandbox's [`ActivityGuard`], so an open SSE stream keeps the sandbox awake until the
//! client has read it to the end or gone away. WebSocket upgrades are spliced through.

use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use http_body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::validate_sandbox_id;
use tokio::net::UnixStream;

use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{ActivityGuard, Entry, Lease};

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1). `Expect` is answered by
/// our own server when the body is read; the agent must not answer it a second time.
const HOP_HEADERS: [HeaderName; 9] = [
    header::EXPECT,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(crate) fn strip_hop_headers(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in HOP_HEADERS.iter().chain(&listed) {
        headers.remove(name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// `/v1/sandboxes/{id}/<rest>` → (`id`, `/<rest>?query`).
fn split_path(uri: &Uri) -> Option<(String, String)> {
    let rest = uri.path().strip_prefix("/v1/sandboxes/")?;
    let (id, tail) = rest.split_once('/')?;
    let mut target = format!("/{tail}");
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    Some((id.to_owned(), target))
}

/// Handler of every forwarded route.
pub async fn forward(State(app): State<Arc<AppState>>, request: Request) -> Response {
    match forward_inner(app, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn forward_inner(app: Arc<AppState>, request: Request) -> ApiResult<Response> {
    let tenant = request
        .extensions()
        .get::<Tenant>()
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing API key"))?;
    let (id, target) = split_path(request.uri())
        .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "no such route"))?;
    validate_sandbox_id(&id).map_err(|m| ApiError::validation(m).context("id", id.as_str()))?;
    let too_large = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > app.max_body_bytes as u64);
    if too_large {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {} bytes", app.max_body_bytes),
        ));
    }

    let limit = Some(app.max_body_bytes);
    let request =
        match crate::process_archive::forward(&app, request, &tenant.name, &id, &target, limit)
            .await
        {
            Ok(answer) => return answer,
            Err(request) => request,
        };
    proxy(&app, request, &tenant.name, &id, target, limit).await
}

/// Sends `request` to the agent of sandbox `id` (leasing, waking or creating it) at `target`
/// (path and query) and streams the answer back. `limit` caps the request body.
pub(crate) async fn proxy(
    app: &AppState,
    mut request: Request,
    tenant: &str,
    id: &str,
    target: String,
    limit: Option<usize>,
) -> ApiResult<Response> {
    let is_upgrade = request.headers().contains_key(header::UPGRADE);
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    strip_hop_headers(&mut parts.headers, is_upgrade);
    // The sandbox must never see the caller's key.
    parts.headers.remove(header::AUTHORIZATION);
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_static("sandbox"));
    if let Ok(v) = HeaderValue::from_str(id) {
        parts.headers.insert("x-sandbox-id", v);
    }
    parts.uri = target
        .parse()
        .map_err(|_| ApiError::validation("invalid request path"))?;
    parts.version = http::Version::HTTP_11;
    let body = match limit {
        Some(limit) => Body::new(http_body_util::Limited::new(body, limit)),
        None => body,
    };
    let outgoing = http::Request::from_parts(parts, body);

    let (stream, mut guard, entry, run) = connect(app, tenant, id).await?;
    if target.split('?').next() == Some("/api/execute") {
        guard.time_exec(app.metrics.clone());
    }
    let unavailable = |what: &str, e: hyper::Error| {
        // A stop or destroy of this run cut the request: the caller's doing, not a failure.
        let error = if entry.ended_on_request(run) {
            ApiError::new(
                ErrorCode::OperationInterrupted,
                "the sandbox was stopped or destroyed while the request ran",
            )
        } else {
            ApiError::new(
                ErrorCode::SandboxUnavailable,
                format!("sandbox agent {what}: {e}"),
            )
        };
        error.context("sandboxId", id)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable("handshake failed", e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent connection ended with an error");
        }
    });
    let response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| unavailable("did not answer", e))?;

    Ok(relay_response(response, client_upgrade, guard))
}

/// Turns an upstream answer into the caller's: a `101` splices the two upgraded connections,
/// anything else streams its body back. Either way `guard` keeps the sandbox marked active until
/// the exchange ends.
pub(crate) fn relay_response(
    mut response: http::Response<hyper::body::Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    guard: ActivityGuard,
) -> Response {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(splice(client_upgrade, upstream_upgrade, guard));
        let (mut parts, _) = response.into_parts();
        strip_hop_headers(&mut parts.headers, true);
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_headers(&mut parts.headers, false);
    Response::from_parts(
        parts,
        Body::new(GuardedBody {
            inner: body,
            _guard: guard,
        }),
    )
}

/// Leases the sandbox (creating or waking it) and connects to its agent; also returns the
/// entry and run of the lease. When nothing listens any more (the agent died), the sandbox is
/// restarted once: the request has not been sent yet, so the retry is safe.
async fn connect(
    app: &AppState,
    tenant: &str,
    id: &str,
) -> ApiResult<(UnixStream, ActivityGuard, Arc<Entry>, u64)> {
    let mut retried = false;
    loop {
        let Lease {
            socket,
            pid,
            guard,
            entry,
            run,
        } = app.manager.acquire(tenant, id).await?;
        match UnixStream::connect(&socket).await {
            Ok(stream) => return Ok((stream, guard, entry, run)),
            Err(e)
                if !retried
                    && matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) =>
            {
                drop(guard);
                app.manager.agent_gone(&entry, pid).await;
                retried = true;
            }
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::SandboxUnavailable,
                    format!("sandbox agent is not reachable: {e}"),
                )
                .context("sandboxId", id));
            }
        }
    }
}

/// Copies bytes between the client's and the agent's upgraded connections until both close.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    agent: hyper::upgrade::OnUpgrade,
    _guard: ActivityGuard,
) {
    let (client, agent) = match tokio::try_join!(client, agent) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
        tracing::debug!(error = %e, "websocket splice ended");
    }
}

/// The agent's response body, holding the sandbox's activity guard until it ends or drops.
struct GuardedBody {
    inner: hyper::body::Incoming,
    _guard: ActivityGuard,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_id_and_target() {
        let uri: Uri = "/v1/sandboxes/abc/api/execute?x=1".parse().unwrap();
        assert_eq!(
            split_path(&uri),
            Some(("abc".into(), "/api/execute?x=1".into()))
        );
        let uri: Uri = "/v1/sandboxes/abc/ws".parse().unwrap();
        assert_eq!(split_path(&uri), Some(("abc".into(), "/ws".into())));
    }

    #[test]
    fn hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-foo"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        strip_hop_headers(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
