//! `POST /api/execute` (JSON answer; `background: true` starts a process instead) and
//! `POST /api/execute/stream` (SSE), reference §2.2.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use sandpit_protocol::container::ExecuteRequest;

use crate::exec::stdin::StdinChannel;
use crate::handler::{ApiResult, AppState, Body};
use crate::{process, sse};

/// `/api/execute`, `/api/execute/stream`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/execute", post(execute))
        .route("/api/execute/stream", post(execute_stream))
}

async fn execute(
    State(agent): State<AppState>,
    Body(req): Body<ExecuteRequest>,
) -> ApiResult<Response> {
    if req.background == Some(true) {
        let req = process::from_execute(req);
        return agent.processes.start(req).map(|r| Json(r).into_response());
    }
    agent.execute(req).await.map(|r| Json(r).into_response())
}

/// The stdin channel is there when the request came through the `/ws` transport.
async fn execute_stream(
    State(agent): State<AppState>,
    stdin: Option<Extension<StdinChannel>>,
    Body(req): Body<ExecuteRequest>,
) -> ApiResult<Response> {
    let rx = agent.execute_stream(req, stdin.map(|e| e.0)).await?;
    Ok(sse::response(rx))
}
