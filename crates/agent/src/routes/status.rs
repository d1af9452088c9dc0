//! `GET /api/ping`, `GET /api/version` and `GET /api/activity` (sandpit extension: what runs
//! with no client attached, the control plane's idle check).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use sandpit_protocol::container::{ActivityResponse, PingResponse, VersionResponse};
use sandpit_protocol::{VERSION, time};

use crate::handler::{ApiResult, AppState};

/// `/api/ping`, `/api/version`, `/api/activity`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/ping", get(ping))
        .route("/api/version", get(version))
        .route("/api/activity", get(activity))
}

async fn ping() -> ApiResult<Json<PingResponse>> {
    Ok(Json(PingResponse {
        success: true,
        status: "healthy".into(),
        timestamp: time::now(),
    }))
}

async fn version() -> ApiResult<Json<VersionResponse>> {
    Ok(Json(VersionResponse {
        success: true,
        version: VERSION.into(),
        timestamp: time::now(),
    }))
}

async fn activity(State(agent): State<AppState>) -> ApiResult<Json<ActivityResponse>> {
    Ok(Json(ActivityResponse {
        running_processes: agent.processes.running_groups().len(),
        busy_terminals: agent.terminals.busy(),
    }))
}
