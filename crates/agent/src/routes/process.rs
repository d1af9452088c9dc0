//! HTTP routes of background processes (reference §2.3, §2.6).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use sandpit_protocol::container::{
    KillAllResponse, KillRequest, KillResponse, ProcessGetResponse, ProcessListResponse,
    ProcessLogsResponse, ProcessStartRequest, ProcessStartResult, ProcessStdinRequest,
    ProcessStdinResponse,
};
use sandpit_protocol::time;

use crate::error::ApiError;
use crate::handler::{ApiResult, AppState, Body};
use crate::process::parse_signal;
use crate::sse;

/// `/api/process/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/process/start", post(start))
        .route("/api/process/list", get(list))
        .route("/api/process/kill-all", delete(kill_all))
        .route("/api/process/{id}", get(info).delete(kill))
        .route("/api/process/{id}/logs", get(logs))
        .route("/api/process/{id}/stream", get(stream))
        .route("/api/process/{id}/stdin", post(stdin))
}

async fn start(
    State(agent): State<AppState>,
    Body(req): Body<ProcessStartRequest>,
) -> ApiResult<Json<ProcessStartResult>> {
    agent.processes.start(req).map(Json)
}

async fn stdin(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Body(req): Body<ProcessStdinRequest>,
) -> ApiResult<Json<ProcessStdinResponse>> {
    let input = crate::exec::stdin_bytes(
        req.data.as_deref(),
        req.data_base64.as_deref(),
        ["data", "dataBase64"],
    )?
    .unwrap_or_default();
    agent
        .processes
        .write_stdin(&id, &input, req.close)
        .await
        .map(Json)
}

async fn list(
    State(agent): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<ProcessListResponse>> {
    let mut processes = agent
        .processes
        .list(query.get("status").map(String::as_str));
    // The seed's list omits endTime.
    for p in &mut processes {
        p.end_time = None;
    }
    Ok(Json(ProcessListResponse {
        success: true,
        processes,
        timestamp: time::now(),
    }))
}

async fn info(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessGetResponse>> {
    Ok(Json(ProcessGetResponse {
        success: true,
        process: agent.processes.get(&id)?,
        timestamp: time::now(),
    }))
}

/// The signal comes from `?signal=` or a JSON body `{"signal": ...}`; SIGTERM if neither.
async fn kill(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<KillResponse>> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<KillRequest>(&body)
            .map_err(|e| ApiError::validation("body", format!("Invalid request body: {e}")))?
            .signal
    };
    let signal =
        match query.get("signal").cloned().or(from_body) {
            Some(text) => Some(parse_signal(&text).ok_or_else(|| {
                ApiError::validation("signal", format!("Unknown signal {text:?}"))
            })?),
            None => None,
        };
    agent.processes.kill(&id, signal).await.map(Json)
}

async fn kill_all(State(agent): State<AppState>) -> ApiResult<Json<KillAllResponse>> {
    let cleaned_count = agent.processes.kill_all(None).await;
    Ok(Json(KillAllResponse {
        success: true,
        cleaned_count,
        timestamp: time::now(),
    }))
}

async fn logs(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessLogsResponse>> {
    agent.processes.logs(&id).map(Json)
}

async fn stream(State(agent): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(sse::response(agent.processes.stream(&id)?))
}
