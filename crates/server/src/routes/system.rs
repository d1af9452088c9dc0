//! Unauthenticated endpoints: health, readiness, metrics, the OpenAPI document.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use http::{StatusCode, header};
use sandpit_protocol::control::Readiness;
use serde_json::json;

use crate::AppState;
use crate::error::ApiResult;

/// `GET /healthz`.
pub async fn health() -> impl IntoResponse {
    Json(json!({"ok": true, "version": sandpit_protocol::VERSION}))
}

/// How long `GET /readyz` waits for the store before it answers 503. Below the readiness
/// probe's `timeoutSeconds` in deploy/kubernetes (3 s), so the probe sees the JSON answer.
const READY_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this replica can serve requests (its store answers).
///
/// `GET /readyz`: 200 when the store answers a `SELECT 1` within 2 s, 503 otherwise, naming
/// the failed check. Unlike `/healthz` (the process is up), this fails while the database is
/// unreachable, so a load balancer or Kubernetes stops sending requests to the replica without
/// restarting it. The reason is generic; the store's own error goes to the server log, not to
/// this unauthenticated answer.
#[utoipa::path(
    get, path = "/readyz", operation_id = "readiness", tag = "system",
    responses(
        (status = 200, description = "Ready: every check passed", body = Readiness),
        (status = 503, description = "Not ready: `notReady` names the failed checks", body = Readiness),
    )
)]
pub async fn ready(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let mut checks = BTreeMap::new();
    let mut not_ready = Vec::new();
    let store = match tokio::time::timeout(READY_STORE_TIMEOUT, app.manager.store().ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the store did not answer");
            "the store query failed (the server log has the error)".to_owned()
        }
        Err(_) => format!(
            "the store did not answer within {} s",
            READY_STORE_TIMEOUT.as_secs()
        ),
    };
    if store != "ok" {
        not_ready.push("store".to_owned());
    }
    checks.insert("store".to_owned(), store);
    let ready = not_ready.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            not_ready,
            checks,
        }),
    )
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
