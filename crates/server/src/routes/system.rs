//! Unauthenticated endpoints: health, metrics, the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use http::header;
use serde_json::json;

use crate::AppState;
use crate::error::ApiResult;

/// `GET /healthz`.
pub async fn health() -> impl IntoResponse {
    Json(json!({"ok": true, "version": sandpit_protocol::VERSION}))
}

/// `GET /metrics` (Prometheus text format).
pub async fn metrics(State(app): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    let counts = app.manager.store().count_by_state().await?;
    let text = app.metrics.render(&counts);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
