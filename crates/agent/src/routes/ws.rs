//! The WebSocket control transport (`/ws`, reference §2.12): JSON request frames are routed
//! through the same axum router as plain HTTP requests, concurrently; a JSON answer comes back
//! as one `response` frame, an SSE answer as one `stream` frame per event followed by a final
//! `response` frame. `{type:'cancel', id}` aborts a request.
//!
//! sandpit extension: `{type:'stdin', id, data | dataBase64, eof?}` feeds the stdin of request
//! `id` (an `/api/execute/stream` with `stdinStream: true`); `eof: true` closes it. Chunks are
//! flow-controlled: while the command's stdin is full, this connection reads no further frames.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue, Method, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tower::ServiceExt;

use crate::agent::Agent;
use crate::exec::stdin::StdinChannel;
use crate::handler::{ApiResult, AppState};

/// Frames queued for one connection's writer.
const OUTBOX: usize = 64;
/// `stdin` chunks queued per request before the connection waits for the command to read.
const STDIN_QUEUE: usize = 16;

/// A frame from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ClientFrame {
    Request(WsRequest),
    Cancel { id: String },
    Stdin(StdinFrame),
}

/// A chunk of a request's stdin (text `data` or `dataBase64`), and/or its end.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StdinFrame {
    id: String,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    eof: bool,
}

#[derive(Debug, Deserialize)]
struct WsRequest {
    id: String,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    headers: Option<HashMap<String, String>>,
}

/// Builds the router that answers the requests of a connection: the agent's whole router,
/// passed in by it (`crate::http::router`) so this module does not import it.
pub type Dispatch = fn(Arc<Agent>) -> Router;

/// `/ws` and `/api/ws`; each connection's requests are answered by `dispatch`'s router.
pub fn routes(dispatch: Dispatch) -> Router<AppState> {
    Router::new()
        .route("/ws", get(handler))
        .route("/api/ws", get(handler))
        .layer(Extension(dispatch))
}

async fn handler(
    State(agent): State<AppState>,
    Extension(dispatch): Extension<Dispatch>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    Ok(ws.on_upgrade(move |socket| serve(dispatch(agent), socket)))
}

type Active = Arc<Mutex<HashMap<String, AbortHandle>>>;
/// The stdin senders of the active requests, by id.
type Inputs = Arc<Mutex<HashMap<String, mpsc::Sender<Bytes>>>>;

async fn serve(app: Router, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outbox) = mpsc::channel::<Value>(OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outbox.recv().await {
            if sink
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let active: Active = Arc::default();
    let inputs: Inputs = Arc::default();
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            Message::Binary(_) => {
                let _ = out
                    .send(error(
                        None,
                        "INVALID_REQUEST",
                        "binary frames are not supported",
                        400,
                    ))
                    .await;
                continue;
            }
            _ => continue,
        };
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let _ = out
                    .send(error(
                        None,
                        "PARSE_ERROR",
                        &format!("invalid JSON: {e}"),
                        400,
                    ))
                    .await;
                continue;
            }
        };
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        match serde_json::from_value::<ClientFrame>(value) {
            Ok(ClientFrame::Request(request)) => {
                let id = request.id.clone();
                let (stdin, chunks) = mpsc::channel(STDIN_QUEUE);
                lock(&inputs).insert(id.clone(), stdin);
                let channel = StdinChannel::new(chunks);
                let state = (active.clone(), inputs.clone());
                let task = tokio::spawn(run(app.clone(), request, channel, out.clone(), state));
                lock(&active).insert(id, task.abort_handle());
            }
            Ok(ClientFrame::Cancel { id }) => {
                lock(&inputs).remove(&id);
                if let Some(task) = lock(&active).remove(&id) {
                    task.abort();
                }
            }
            Ok(ClientFrame::Stdin(frame)) => {
                if let Err(message) = feed_stdin(&inputs, &frame).await {
                    let _ = out
                        .send(error(Some(&frame.id), "INVALID_REQUEST", &message, 400))
                        .await;
                }
            }
            Err(e) => {
                let message = format!("expected a request or cancel frame: {e}");
                let _ = out
                    .send(error(id.as_deref(), "INVALID_REQUEST", &message, 400))
                    .await;
            }
        }
    }
    // The client left: nothing it asked for is worth finishing.
    lock(&inputs).clear();
    for (_, task) in lock(&active).drain() {
        task.abort();
    }
    drop(out);
    let _ = writer.await;
}

fn lock<T>(map: &Mutex<HashMap<String, T>>) -> std::sync::MutexGuard<'_, HashMap<String, T>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Passes a `stdin` frame's bytes to its request's command (waiting while the command's stdin
/// is full), then closes the input on `eof`. The error message says why the frame was refused.
async fn feed_stdin(inputs: &Inputs, frame: &StdinFrame) -> Result<(), String> {
    let id = &frame.id;
    let chunk = match (&frame.data, &frame.data_base64) {
        (Some(_), Some(_)) => return Err("give data or dataBase64, not both".to_owned()),
        (Some(text), None) => Some(Bytes::from(text.clone().into_bytes())),
        (None, Some(b64)) => {
            Some(Bytes::from(BASE64.decode(b64).map_err(|e| {
                format!("dataBase64 is not valid base64: {e}")
            })?))
        }
        (None, None) => None,
    };
    let not_reading = || {
        format!(
            "request {id:?} does not read stdin (unknown, finished, its stdin closed, or sent \
             without \"stdinStream\": true)"
        )
    };
    let sender = lock(inputs).get(id).cloned().ok_or_else(not_reading)?;
    if let Some(chunk) = chunk.filter(|c| !c.is_empty())
        && sender.send(chunk).await.is_err()
    {
        lock(inputs).remove(id);
        return Err(not_reading());
    }
    if frame.eof {
        lock(inputs).remove(id);
    }
    Ok(())
}

fn error(id: Option<&str>, code: &str, message: &str, status: u16) -> Value {
    let mut frame = json!({"type": "error", "code": code, "message": message, "status": status});
    if let Some(id) = id {
        frame["id"] = Value::from(id);
    }
    frame
}

/// Runs one request and sends its frames.
async fn run(
    app: Router,
    request: WsRequest,
    stdin: StdinChannel,
    out: mpsc::Sender<Value>,
    (active, inputs): (Active, Inputs),
) {
    let id = request.id.clone();
    let frames = answer(app, request, stdin, &out).await;
    if let Some(frame) = frames {
        let _ = out.send(frame).await;
    }
    lock(&inputs).remove(&id);
    lock(&active).remove(&id);
}

/// Sends the stream frames of `request`; returns the final frame. The route may take `stdin`.
async fn answer(
    app: Router,
    request: WsRequest,
    stdin: StdinChannel,
    out: &mpsc::Sender<Value>,
) -> Option<Value> {
    let id = request.id.clone();
    let mut http_request = match build(request) {
        Ok(r) => r,
        Err(message) => return Some(error(Some(&id), "INVALID_REQUEST", &message, 400)),
    };
    http_request.extensions_mut().insert(stdin);
    let Ok(response) = app.oneshot(http_request).await;
    let status = response.status().as_u16();
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = response.into_body();
    if !is_sse {
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return Some(error(Some(&id), "STREAM_ERROR", &e.to_string(), 500)),
        };
        let body = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&bytes).into_owned()));
        return Some(
            json!({"type": "response", "id": id, "status": status, "body": body, "done": true}),
        );
    }
    let mut parser = SseParser::default();
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(e) => return Some(error(Some(&id), "STREAM_ERROR", &e.to_string(), 500)),
        };
        for event in parser.push(&data) {
            let mut frame = json!({"type": "stream", "id": id, "data": event.data});
            if let Some(name) = event.event {
                frame["event"] = Value::from(name);
            }
            if out.send(frame).await.is_err() {
                return None;
            }
        }
    }
    Some(json!({"type": "response", "id": id, "status": status, "done": true}))
}

/// The HTTP request a frame stands for.
fn build(request: WsRequest) -> Result<http::Request<Body>, String> {
    let method = Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid method {:?}", request.method))?;
    if !request.path.starts_with('/') {
        return Err(format!("path must start with '/': {:?}", request.path));
    }
    let mut builder = http::Request::builder()
        .method(method)
        .uri(&request.path)
        .header(header::HOST, "sandbox");
    for (name, value) in request.headers.iter().flatten() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value of header {name}"))?;
        builder = builder.header(name, value);
    }
    let body = match request.body {
        None | Some(Value::Null) => Body::empty(),
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(value.to_string())
        }
    };
    builder
        .body(body)
        .map_err(|e| format!("invalid request: {e}"))
}

/// One server-sent event.
#[derive(Debug, PartialEq)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

/// Splits an SSE byte stream into events (`data:` lines joined by newlines, `event:` kept).
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let mut data: Vec<&str> = Vec::new();
            let mut event = None;
            for line in text.lines() {
                if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                } else if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_owned());
                }
            }
            if !data.is_empty() {
                events.push(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\":").is_empty());
        let events = p.push(b"1}\n\n: comment\n\nevent: x\ndata: 2\n\ndata: 3");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: None,
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: Some("x".into()),
                    data: "2".into()
                },
            ]
        );
        assert_eq!(p.push(b"\n\n")[0].data, "3");
    }

    fn stdin_frame(
        id: &str,
        data: Option<&str>,
        data_base64: Option<&str>,
        eof: bool,
    ) -> StdinFrame {
        StdinFrame {
            id: id.into(),
            data: data.map(Into::into),
            data_base64: data_base64.map(Into::into),
            eof,
        }
    }

    #[tokio::test]
    async fn stdin_frames_feed_their_request_in_order_until_eof() {
        let inputs: Inputs = Arc::default();
        let (tx, mut rx) = mpsc::channel(STDIN_QUEUE);
        lock(&inputs).insert("r".into(), tx);
        feed_stdin(&inputs, &stdin_frame("r", Some("ab"), None, false))
            .await
            .unwrap();
        feed_stdin(&inputs, &stdin_frame("r", None, Some("/w=="), true))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"ab"));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"\xff"));
        assert_eq!(rx.recv().await, None, "eof closes the input");
        let late = feed_stdin(&inputs, &stdin_frame("r", Some("x"), None, false)).await;
        assert!(late.unwrap_err().contains("does not read stdin"));

        let (tx, rx_s) = mpsc::channel(STDIN_QUEUE);
        lock(&inputs).insert("s".into(), tx);
        let both = feed_stdin(&inputs, &stdin_frame("s", Some("a"), Some("YQ=="), false)).await;
        assert!(both.unwrap_err().contains("not both"));
        let bad = feed_stdin(&inputs, &stdin_frame("s", None, Some("!!"), false)).await;
        assert!(bad.unwrap_err().contains("base64"));
        // A frame for a request whose command went away (receiver dropped) is refused.
        drop(rx_s);
        let gone = feed_stdin(&inputs, &stdin_frame("s", Some("a"), None, false)).await;
        assert!(gone.is_err());
        assert!(lock(&inputs).is_empty());
    }

    #[test]
    fn frames_become_requests() {
        let r = build(WsRequest {
            id: "1".into(),
            method: "post".into(),
            path: "/api/execute?x=1".into(),
            body: Some(json!({"command": "true"})),
            headers: Some([("X-Session-Id".to_string(), "s".to_string())].into()),
        })
        .unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri().path(), "/api/execute");
        assert_eq!(r.headers()["x-session-id"], "s");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(
            build(WsRequest {
                id: "1".into(),
                method: "GET".into(),
                path: "api".into(),
                body: None,
                headers: None,
            })
            .is_err()
        );
    }
}
