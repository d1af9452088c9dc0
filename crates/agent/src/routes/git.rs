//! `POST /api/git/checkout` (reference §3.5); the clone is [`crate::git::checkout`]. It runs in
//! a task of its own: a client that goes away stops it with the kill policy, and the task still
//! removes the partial clone.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use sandpit_protocol::container::{GitCheckoutRequest, GitCheckoutResponse};

use crate::error::ApiError;
use crate::exec::kill::client_pair;
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
    let (_present, gone) = client_pair();
    tokio::spawn(async move { checkout(&agent, req, gone).await })
        .await
        .map_err(|_| ApiError::internal("git clone task ended unexpectedly"))?
        .map(Json)
}
