//! PTY terminals over WebSocket (`/ws/pty?sessionId=&cols=&rows=&shell=`, reference §2.13):
//! binary frames are raw terminal bytes both ways; text frames from the client are JSON
//! control messages (`{type:'resize', cols, rows}`); text frames from the agent are status
//! messages (`ready` after the replay, `exit`, `error`).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::agent::Agent;
use crate::error::ApiError;
use crate::handler::{ApiResult, AppState};
use crate::pty::{Attachment, PtyEvent, PtyOptions, Terminal};

/// `/ws/pty`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/ws/pty", get(handler))
}

/// Query of `/ws/pty`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PtyQuery {
    pub session_id: Option<String>,
    pub cols: Option<String>,
    pub rows: Option<String>,
    pub shell: Option<String>,
}

/// A control message from a client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ClientControl {
    Resize { cols: u16, rows: u16 },
}

/// `GET /ws/pty`: 400 without `sessionId`, else the WebSocket upgrade. The query is checked
/// before the upgrade headers, so both rejections are taken as values; a failed upgrade keeps
/// axum's own answer.
async fn handler(
    State(agent): State<AppState>,
    query: Result<Query<PtyQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::validation("query", "invalid query string"));
    };
    let Some(session_id) = query.session_id.filter(|s| !s.is_empty()) else {
        return Err(ApiError::validation("sessionId", "sessionId is required"));
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let size = |v: Option<String>| v.and_then(|v| v.parse::<u16>().ok()).filter(|n| *n > 0);
    let options = PtyOptions {
        cols: size(query.cols),
        rows: size(query.rows),
        shell: query.shell,
    };
    Ok(ws.on_upgrade(move |socket| attach(agent, session_id, options, socket)))
}

fn status(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: "shell exited".into(),
    }))
}

fn exit_message(code: Option<i32>) -> Message {
    match code {
        Some(code) => status(json!({"type": "exit", "code": code})),
        None => status(json!({"type": "error", "message": "the shell's exit status is unknown"})),
    }
}

/// Serves one attached client until it leaves or the shell exits.
async fn attach(agent: Arc<Agent>, session_id: String, options: PtyOptions, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let terminal = match agent.terminals.open(&session_id, &options) {
        Ok(t) => t,
        Err(e) => {
            let message = sandpit_protocol::display_chain(&e);
            tracing::warn!(session = %session_id, error = %message, "terminal not created");
            let _ = tx
                .send(status(json!({"type": "error", "message": message})))
                .await;
            let _ = tx
                .send(Message::Close(Some(CloseFrame {
                    code: close_code::ERROR,
                    reason: "PTY creation failed".into(),
                })))
                .await;
            return;
        }
    };
    let Attachment {
        replay,
        mut events,
        exited,
    } = terminal.attach();
    if !replay.is_empty() && tx.send(Message::Binary(replay.into())).await.is_err() {
        return;
    }
    if tx.send(status(json!({"type": "ready"}))).await.is_err() {
        return;
    }
    if let Some(code) = exited {
        let _ = tx.send(exit_message(code)).await;
        let _ = tx.send(normal_close()).await;
        return;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(PtyEvent::Output(bytes)) => {
                    if tx.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                Ok(PtyEvent::Exit(code)) => {
                    let _ = tx.send(exit_message(code)).await;
                    let _ = tx.send(normal_close()).await;
                    return;
                }
                // A client too slow to keep up skips output rather than stalling the shell.
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(session = %session_id, skipped, "terminal client lagged");
                }
                Err(RecvError::Closed) => return,
            },
            message = rx.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Err(e) = terminal.write(&bytes).await {
                        tracing::debug!(session = %session_id, error = %e, "terminal write failed");
                    }
                }
                Some(Ok(Message::Text(text))) => control(&terminal, &text),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

fn control(terminal: &Terminal, text: &str) {
    match serde_json::from_str::<ClientControl>(text) {
        Ok(ClientControl::Resize { cols, rows }) if cols > 0 && rows > 0 => {
            if let Err(e) = terminal.resize(cols, rows) {
                tracing::debug!(error = %e, "terminal resize failed");
            }
        }
        // Unknown or malformed control messages are ignored, like the seed does.
        _ => {}
    }
}
