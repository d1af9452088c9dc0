//! `exec_stream` with stdin fed while the command runs. A plain HTTP request sends its whole body
//! before the answer starts, so this goes over the sandbox's WebSocket control transport
//! (`/v1/sandboxes/{id}/ws`, docs/api.md "WebSockets"): one `request` frame for
//! `/api/execute/stream` with `stdinStream: true`, `stdin` frames while the command runs, then
//! `eof`; the events come back as `stream` frames.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use sandpit_protocol::container::ExecEvent;
use sandpit_protocol::{ErrorCode, ErrorResponse};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::error::{ClientError, Result, error_from_body};
use crate::sandbox::{ExecOptions, SandboxHandle};
use crate::sse::EventStream;

/// The id of the one request on the socket.
const REQUEST_ID: &str = "exec";

impl SandboxHandle {
    /// Runs `command` like [`SandboxHandle::exec_stream`], feeding `stdin`'s chunks to its stdin
    /// while it runs and closing it (EOF) when `stdin` ends; the command can answer one chunk
    /// before the next is produced. `options.stdin` must be empty. Dropping the returned stream
    /// cancels the request, which stops the command. A refused request is the stream's first
    /// (and last) item.
    pub async fn exec_stream_with_stdin<S>(
        &self,
        command: &str,
        options: &ExecOptions,
        stdin: S,
    ) -> Result<EventStream<ExecEvent>>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        if options.stdin.is_some() {
            return Err(ClientError::InvalidArgument(
                "give either ExecOptions::stdin (all at once) or a stdin stream, not both".into(),
            ));
        }
        let mut body = self.execute_request(command, options);
        body.stdin_stream = Some(true);
        self.ping().await?; // creates or wakes the sandbox, as a forwarded HTTP call would
        let mut request = self
            .ws_url("/ws")?
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::InvalidArgument(format!("WebSocket URL: {e}")))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.client().api_key()))
            .map_err(|_| {
                ClientError::InvalidArgument("the API key is not a header value".into())
            })?;
        request.headers_mut().insert("authorization", bearer);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| ClientError::Stream(format!("opening the control WebSocket: {e}")))?;
        let (mut sink, frames) = socket.split();
        let frame = json!({"type": "request", "id": REQUEST_ID, "method": "POST",
                           "path": "/api/execute/stream", "body": body});
        sink.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| ClientError::Stream(format!("sending the request: {e}")))?;
        // The writer: stdin frames, then EOF; a cancel when the caller drops the events.
        let (dropped, cancelled) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let feed = async {
                futures::pin_mut!(stdin);
                while let Some(chunk) = stdin.next().await {
                    let frame = json!({"type": "stdin", "id": REQUEST_ID,
                                       "dataBase64": BASE64.encode(&chunk)});
                    sink.send(Message::text(frame.to_string())).await?;
                }
                let eof = json!({"type": "stdin", "id": REQUEST_ID, "eof": true});
                sink.send(Message::text(eof.to_string())).await?;
                std::future::pending::<()>().await;
                Ok::<_, tokio_tungstenite::tungstenite::Error>(())
            };
            tokio::select! {
                _ = feed => {}
                _ = cancelled => {
                    let cancel = json!({"type": "cancel", "id": REQUEST_ID});
                    let _ = sink.send(Message::text(cancel.to_string())).await;
                    let _ = sink.close().await;
                }
            }
        });
        let events = futures::stream::unfold(Some((frames, dropped)), |state| async move {
            let (mut frames, dropped) = state?;
            loop {
                let text = match frames.next().await {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => {
                        let err = ClientError::Stream(
                            "the control WebSocket closed before the command completed".into(),
                        );
                        return Some((Err(err), None));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        return Some((Err(ClientError::Stream(e.to_string())), None));
                    }
                };
                match decode_frame(&text) {
                    Frame::Event(event) => return Some((event, Some((frames, dropped)))),
                    Frame::Done => return None,
                    Frame::Failed(err) => return Some((Err(err), None)),
                    Frame::Other => continue,
                }
            }
        });
        Ok(Box::pin(events))
    }
}

/// What one frame of the control transport means for the caller.
enum Frame {
    Event(Result<ExecEvent>),
    Done,
    Failed(ClientError),
    Other,
}

fn decode_frame(text: &str) -> Frame {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return Frame::Failed(ClientError::Decode(format!("bad frame {text:?}")));
    };
    if frame["id"].as_str().is_some_and(|id| id != REQUEST_ID) {
        return Frame::Other;
    }
    let data = frame["data"].as_str().unwrap_or_default();
    match frame["type"].as_str() {
        Some("stream") if frame["event"] == "error" => {
            Frame::Failed(match serde_json::from_str::<ErrorResponse>(data) {
                Ok(envelope) => ClientError::Api(Box::new(envelope)),
                Err(_) => ClientError::Stream(data.to_owned()),
            })
        }
        Some("stream") => Frame::Event(
            serde_json::from_str(data)
                .map_err(|e| ClientError::Decode(format!("bad event {data:?}: {e}"))),
        ),
        Some("response") => match frame["status"].as_u64() {
            Some(status) if status >= 400 => {
                let body = serde_json::to_vec(&frame["body"]).unwrap_or_default();
                Frame::Failed(error_from_body(status as u16, &body))
            }
            _ => Frame::Done,
        },
        Some("error") => {
            let message = frame["message"].as_str().unwrap_or("refused");
            let mut envelope = ErrorResponse::new(ErrorCode::ValidationFailed, message);
            envelope.http_status = frame["status"].as_u64().unwrap_or(400) as u16;
            Frame::Failed(ClientError::Api(Box::new(envelope)))
        }
        _ => Frame::Other,
    }
}
