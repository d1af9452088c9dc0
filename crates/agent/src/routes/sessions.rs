//! `POST /api/session/create`, `GET /api/session/list`, `POST /api/session/delete`
//! (reference §2.4).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use sandpit_protocol::container::{
    SessionCreateRequest, SessionCreateResponse, SessionDeleteRequest, SessionDeleteResponse,
    SessionInfo, SessionListResponse,
};
use sandpit_protocol::time;

use crate::error::ApiError;
use crate::exec::session::SessionOptions;
use crate::handler::{ApiResult, AppState, Body};

/// `/api/session/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/session/create", post(create))
        .route("/api/session/list", get(list))
        .route("/api/session/delete", post(delete))
}

async fn create(
    State(agent): State<AppState>,
    Body(req): Body<SessionCreateRequest>,
) -> ApiResult<Json<SessionCreateResponse>> {
    let id = match req.id {
        Some(id) if id.is_empty() => {
            return Err(ApiError::validation("id", "id must not be empty"));
        }
        Some(id) => id,
        None => format!("session-{:016x}", rand::random::<u64>()),
    };
    if req.cwd.as_deref().is_some_and(|c| c.contains('\0')) {
        return Err(ApiError::validation(
            "cwd",
            "cwd must not contain NUL bytes",
        ));
    }
    let options = SessionOptions {
        env: req.env,
        cwd: req.cwd,
        command_timeout: req.command_timeout_ms,
    };
    let session = agent.sessions.create(&id, options)?;
    Ok(Json(SessionCreateResponse {
        success: true,
        data: SessionInfo {
            id,
            cwd: session.cwd(),
        },
        container_placement_id: None,
        timestamp: time::now(),
    }))
}

async fn list(State(agent): State<AppState>) -> ApiResult<Json<SessionListResponse>> {
    Ok(Json(SessionListResponse {
        success: true,
        data: agent.sessions.list(),
        timestamp: time::now(),
    }))
}

/// Ends the session's shell, its terminal and the processes started from it.
async fn delete(
    State(agent): State<AppState>,
    Body(req): Body<SessionDeleteRequest>,
) -> ApiResult<Json<SessionDeleteResponse>> {
    let Some(id) = req.session_id.filter(|id| !id.is_empty()) else {
        return Err(ApiError::validation("sessionId", "sessionId is required"));
    };
    // Deleting an unknown session is not an error (the seed answers success too).
    agent.sessions.delete(&id);
    agent.terminals.kill(&id);
    agent.processes.kill_all(Some(&id)).await;
    Ok(Json(SessionDeleteResponse {
        success: true,
        session_id: id,
        timestamp: time::now(),
    }))
}
