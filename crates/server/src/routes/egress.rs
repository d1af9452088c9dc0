//! `GET /v1/sandboxes/{id}/egress-log`: what a sandbox asked its egress proxy for.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::control::{EgressLogPage, validate_sandbox_id};

use super::ApiJson;
use super::sandboxes::ApiPath;
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};

/// The sandbox's egress log: one entry per request or connection through its egress proxy
/// (host, port, allowed/denied/failed, the refusing rule and reason, bytes up and down, time),
/// oldest first. Kept in memory, the newest 256 per sandbox (`dropped` counts older ones), across
/// sleep until the sandbox is destroyed or the server restarts. Does not wake the sandbox.
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}/egress-log", operation_id = "getEgressLog", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The log", body = EgressLogPage),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn egress_log(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<EgressLogPage>> {
    validate_sandbox_id(&id).map_err(|m| ApiError::validation(m).context("id", id.as_str()))?;
    Ok(ApiJson(app.manager.egress_log(&tenant.name, &id).await?))
}
