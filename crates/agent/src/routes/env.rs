//! `POST /api/env` (sandpit extension, the seed's `setEnvVars`); the work is [`crate::env`].

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use sandpit_protocol::container::{SetEnvRequest, SetEnvResponse};

use crate::env::set_env;
use crate::handler::{ApiResult, AppState, Body};

/// `/api/env`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/env", post(set))
}

async fn set(
    State(agent): State<AppState>,
    Body(req): Body<SetEnvRequest>,
) -> ApiResult<Json<SetEnvResponse>> {
    set_env(&agent, req).await.map(Json)
}
