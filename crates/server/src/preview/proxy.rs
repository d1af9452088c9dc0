//! The Host-routed reverse proxy: a middleware in front of every route that takes requests for
//! preview hosts and forwards them to the sandbox port through a pooled tunnel.
//!
//! The upstream sees `Host: localhost:{port}` (the same for HTTP and WebSocket, so dev servers
//! that check the Host accept both), `X-Forwarded-Host` (the preview host),
//! `X-Forwarded-Proto` and `X-Forwarded-For`. Redirects and every other answer pass through
//! unfollowed; bodies stream both ways (SSE included, frame by frame); WebSocket and other
//! upgrades are spliced. Each request, stream or WebSocket holds the sandbox's activity guard,
//! so preview traffic keeps it awake.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::{StatusCode, Version};
use sandpit_protocol::ErrorCode;

use super::tunnel::TunnelError;
use super::{Exposure, Previews};
use crate::error::ApiError;
use crate::forward::{relay_response, strip_hop_headers};

/// Middleware: preview hosts go to the proxy, everything else to the API.
pub async fn route_by_host(
    State(previews): State<Arc<Previews>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host());
    let Some((port, label, token)) = host.and_then(|h| previews.config.parse_host(h)) else {
        return next.run(request).await;
    };
    let token = token.to_owned();
    match proxy(&previews, request, port, &label, &token).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn proxy(
    previews: &Previews,
    mut request: Request,
    port: u16,
    label: &str,
    token: &str,
) -> Result<Response, ApiError> {
    let cluster = previews.manager.is_cluster();
    let mut exposure = previews.find(label, port, token);
    if exposure.is_none() && cluster {
        // Another replica may have exposed it: the store has every exposure.
        exposure = previews.find_stored(label, port, token).await;
    }
    let exposure = exposure.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidToken,
            "Access denied: Invalid token or port not exposed",
        )
    })?;
    let running = if cluster {
        // Runs are counted per replica: a sandbox running on its node serves its exposures.
        previews
            .manager
            .lease_running_in_cluster(&exposure.record.tenant, &exposure.record.sandbox_id)
            .await
    } else {
        previews
            .manager
            .lease_running(&exposure.record.tenant, &exposure.record.sandbox_id)
            .await
    };
    let lease = match running {
        Some(lease) if cluster || exposure.is_live(Some(lease.run)) => lease,
        running => return Err(stale(previews, &exposure, running.is_some()).await),
    };

    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = previews.upstream.uri(lease.run, &lease.agent, port, path);
    let is_upgrade = request.headers().contains_key(header::UPGRADE);
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut request));
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (mut parts, body) = request.into_parts();
    strip_hop_headers(&mut parts.headers, is_upgrade);
    let headers = &mut parts.headers;
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert("x-forwarded-host", host);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("localhost:{port}")) {
        headers.insert(header::HOST, v);
    }
    if let Ok(v) = HeaderValue::from_str(&previews.config.scheme) {
        headers.insert("x-forwarded-proto", v);
    }
    if let Some(peer) = peer {
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {peer}"),
            None => peer.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", v);
        }
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let outgoing = http::Request::from_parts(parts, body);

    let response = previews
        .upstream
        .client()
        .request(outgoing)
        .await
        .map_err(|e| upstream_error(&e, port, &exposure))?;

    Ok(relay_response(response, client_upgrade, lease.guard, None))
}

/// The 410 of an authorized URL whose run is over (the store is asked only on this path, for
/// the message).
async fn stale(previews: &Previews, exposure: &Exposure, running: bool) -> ApiError {
    let r = &exposure.record;
    let why = match previews.store().get_sandbox(&r.tenant, &r.sandbox_id).await {
        Ok(None) => format!("sandbox {} was destroyed", r.sandbox_id),
        Ok(Some(s)) if s.created_at_ms > r.created_at_ms => format!(
            "sandbox {} was destroyed and created again; expose port {} again",
            r.sandbox_id, r.port
        ),
        _ if running => format!(
            "sandbox {} restarted since port {} was exposed; expose it again",
            r.sandbox_id, r.port
        ),
        _ => format!(
            "sandbox {} is not running; preview URLs do not wake it: start it and expose port {} again",
            r.sandbox_id, r.port
        ),
    };
    ApiError::new(
        ErrorCode::StalePreviewUrl,
        format!("Preview URL is stale because the sandbox runtime is not active ({why})"),
    )
    .context("sandboxId", r.sandbox_id.as_str())
    .context("port", r.port)
}

fn upstream_error(
    e: &hyper_util::client::legacy::Error,
    port: u16,
    exposure: &Exposure,
) -> ApiError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(tunnel) = s.downcast_ref::<TunnelError>() {
            let code = match tunnel {
                TunnelError::Refused { status, .. } if *status == StatusCode::BAD_GATEWAY => {
                    ErrorCode::ServiceNotResponding
                }
                _ => ErrorCode::SandboxUnavailable,
            };
            return ApiError::new(code, tunnel.to_string())
                .context("sandboxId", exposure.record.sandbox_id.as_str())
                .context("port", port);
        }
        source = s.source();
    }
    ApiError::new(
        ErrorCode::ServiceNotResponding,
        format!("the server on port {port} inside the sandbox failed to answer: {e}"),
    )
    .context("sandboxId", exposure.record.sandbox_id.as_str())
    .context("port", port)
}
