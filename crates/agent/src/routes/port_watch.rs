//! `POST /api/port-watch` (reference §2.8): an SSE stream from [`crate::port_watch`]; invalid
//! input is an `error` event in it.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use sandpit_protocol::container::PortWatchRequest;

use crate::handler::{ApiResult, AppState, Body};
use crate::{port_watch, sse};

/// `/api/port-watch`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/port-watch", post(watch))
}

async fn watch(
    State(agent): State<AppState>,
    Body(req): Body<PortWatchRequest>,
) -> ApiResult<Response> {
    let rx = port_watch::start(agent.processes.clone(), req);
    Ok(sse::response(rx))
}
