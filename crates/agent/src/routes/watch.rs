//! `POST /api/watch` (SSE) and `POST /api/watch/check` (reference §2.10); the watches are
//! [`crate::watch::Watches`].

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use sandpit_protocol::container::{CheckChangesRequest, CheckChangesResult, WatchRequest};

use crate::handler::{ApiResult, AppState, Body};
use crate::sse;

/// `/api/watch`, `/api/watch/check`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/watch", post(watch))
        .route("/api/watch/check", post(check))
}

async fn watch(
    State(agent): State<AppState>,
    Body(req): Body<WatchRequest>,
) -> ApiResult<Response> {
    let rx = agent.watches.subscribe(&req).await?;
    Ok(sse::response(rx))
}

async fn check(
    State(agent): State<AppState>,
    Body(req): Body<CheckChangesRequest>,
) -> ApiResult<Json<CheckChangesResult>> {
    agent.watches.check(&req).await.map(Json)
}
