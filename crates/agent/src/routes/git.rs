//! `POST /api/git/checkout` (reference §3.5); the clone is [`crate::git::checkout`].

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use sandpit_protocol::container::{GitCheckoutRequest, GitCheckoutResponse};

use crate::git::checkout;
use crate::handler::{ApiResult, AppState, Body};

/// `/api/git/checkout`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/git/checkout", post(clone))
}

async fn clone(
    State(agent): State<AppState>,
    Body(req): Body<GitCheckoutRequest>,
) -> ApiResult<Json<GitCheckoutResponse>> {
    checkout(&agent, req).await.map(Json)
}
