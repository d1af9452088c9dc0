//! Forwarding `/v1/sandboxes/{id}/api/*` (and `/ws*`) to the sandbox's agent through its
//! [`AgentClient`](crate::agent_client::AgentClient).
//!
//! One HTTP/1 connection per request (see the client's docs). Bodies stream both ways without buffering; the response body carries
//! the sandbox's [`ActivityGuard`], so an open SSE stream keeps the sandbox awake until the
//! client has read it to the end or gone away. WebSocket upgrades are spliced through.

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
use sandpit_runtime::AgentStream;

use crate::agent_client::AgentClient;

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
    // A background process may start: its records are checkpointed from now on (a WebSocket
    // can carry a process start too).
    let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
    let starts_process = request.headers().contains_key(header::UPGRADE)
        || (request.method() == http::Method::POST && path == "/api/process/start");
    let answer = proxy(&app, request, &tenant.name, &id, target, limit).await;
    if starts_process && answer.is_ok() {
        let internal = app.manager.internal_id_of(&tenant.name, &id);
        app.processes.watch(&tenant.name, &id, &internal);
    }
    answer
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
    // Kept to send the request again should the agent die before answering it.
    let replay = replayable(&parts, &body).then(|| Replay::of(&parts));
    let body = match limit {
        Some(limit) => Body::new(http_body_util::Limited::new(body, limit)),
        None => body,
    };
    let mut outgoing = http::Request::from_parts(parts, body);
    let mut retried = false;
    loop {
        let (stream, lease) = connect(app, tenant, id).await?;
        let Lease {
            agent,
            pid,
            mut guard,
            entry,
            run,
        } = lease;
        if target.split('?').next() == Some("/api/execute") {
            guard.time_exec(app.metrics.clone());
        }
        let error = match AgentClient::send_on(stream, outgoing).await {
            Ok(response) => {
                let cut = StreamCut {
                    entry,
                    run,
                    id: id.to_owned(),
                };
                return Ok(relay_response(response, client_upgrade, guard, Some(cut)));
            }
            Err(error) => error,
        };
        drop(guard);
        // A stop or destroy of this run cut the request: the caller's doing, not a failure.
        if let Some(reason) = entry.ended_by(run) {
            return Err(reason.error(id));
        }
        if !agent.is_gone().await {
            return Err(ApiError::new(ErrorCode::SandboxUnavailable, error.chain())
                .context("sandboxId", id));
        }
        // The agent died (crash, OOM kill) with the request on its socket: record it gone now,
        // so this retry or the caller's next call starts the sandbox afresh.
        app.manager.agent_gone(&entry, pid).await;
        match &replay {
            Some(replay) if !retried => {
                retried = true;
                outgoing = replay.request();
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::SandboxUnavailable,
                    "the sandbox agent exited before answering (it crashed or was killed), so \
                     the request may or may not have taken effect; the next call restarts the \
                     sandbox",
                )
                .context("sandboxId", id));
            }
        }
    }
}

/// A request that can be sent again when the agent died before answering it: a safe method
/// (RFC 9110 §9.2.1: no effect the caller asked for) without a body. Anything else may have
/// run in the agent before it died, so the caller decides whether to repeat it.
fn replayable(parts: &http::request::Parts, body: &Body) -> bool {
    use http_body::Body as _;
    parts.method.is_safe() && body.is_end_stream()
}

/// What is needed to build a body-less request again.
struct Replay {
    method: http::Method,
    uri: Uri,
    version: http::Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(parts: &http::request::Parts) -> Self {
        Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    fn request(&self) -> http::Request<Body> {
        let mut request = http::Request::new(Body::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Turns an upstream answer into the caller's: a `101` splices the two upgraded connections,
/// anything else streams its body back. Either way `guard` keeps the sandbox marked active until
/// the exchange ends. With `cut`, an event stream that a stop or destroy breaks off ends with
/// an error event saying so (see [`GuardedBody`]).
pub(crate) fn relay_response(
    mut response: http::Response<hyper::body::Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    guard: ActivityGuard,
    cut: Option<StreamCut>,
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
    let is_event_stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    Response::from_parts(
        parts,
        Body::new(GuardedBody {
            inner: body,
            _guard: guard,
            cut: cut.filter(|_| is_event_stream),
            ended: false,
        }),
    )
}

/// Leases the sandbox (creating or waking it) and connects to its agent. When nothing listens
/// any more (the agent died), the sandbox is restarted once: the request has not been sent yet,
/// so the retry is safe.
async fn connect(app: &AppState, tenant: &str, id: &str) -> ApiResult<(AgentStream, Lease)> {
    let mut retried = false;
    loop {
        let lease = app.manager.acquire(tenant, id).await?;
        match lease.agent.connect().await {
            Ok(stream) => return Ok((stream, lease)),
            Err(e) if !retried && e.agent_gone() => {
                let Lease {
                    pid, guard, entry, ..
                } = lease;
                drop(guard);
                app.manager.agent_gone(&entry, pid).await;
                retried = true;
            }
            Err(e) => {
                return Err(ApiError::new(ErrorCode::SandboxUnavailable, e.chain())
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

/// Which run of which sandbox an event stream belongs to, to tell a stream broken off by a
/// stop or destroy from one whose sandbox failed.
pub(crate) struct StreamCut {
    entry: Arc<Entry>,
    run: u64,
    id: String,
}

impl StreamCut {
    /// The last event of a stream that a stop or destroy broke off, or `None` if neither did.
    /// It is an SSE `error` event whose data is the error envelope (`code`
    /// `OPERATION_INTERRUPTED`, `context.reason` `stopped`/`destroyed`/`shutdown`) plus
    /// `"type":"error"` and `"error"`: the message, so clients that only read `data` lines
    /// and switch on `type` (the seed's) see an error event too.
    fn final_event(&self) -> Option<Bytes> {
        let reason = self.entry.ended_by(self.run)?;
        let envelope = reason.error(&self.id).0;
        let mut data = serde_json::to_value(&*envelope).ok()?;
        if let Some(fields) = data.as_object_mut() {
            fields.insert("type".into(), "error".into());
            fields.insert("error".into(), envelope.message.clone().into());
        }
        Some(Bytes::from(format!("event: error\ndata: {data}\n\n")))
    }
}

/// The agent's response body, holding the sandbox's activity guard until it ends or drops.
/// An event stream (`cut` set) that breaks because its sandbox was stopped or destroyed ends
/// with [`StreamCut::final_event`] instead of a broken connection.
struct GuardedBody {
    inner: hyper::body::Incoming,
    _guard: ActivityGuard,
    cut: Option<StreamCut>,
    /// The final event was sent: the body is over.
    ended: bool,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled
            && let Some(event) = self.cut.as_ref().and_then(StreamCut::final_event)
        {
            self.ended = true;
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
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
