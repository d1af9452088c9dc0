//! Server-sent events exactly as the seed frames them: `data: <json>\n\n`, no `event:` or `id:`
//! lines, no keep-alive comments.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{StatusCode, header};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Frames one event.
pub fn frame<T: Serialize>(event: &T) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_else(|_| String::from("{}"));
    Bytes::from(format!("data: {json}\n\n"))
}

/// An SSE response whose body is fed by `rx` (already framed events). The channel is bounded,
/// so a slow client slows the producer instead of growing a buffer.
pub fn response(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response
}

/// Capacity of the event channel between a producer and the HTTP body.
pub const CHANNEL_CAPACITY: usize = 8;
