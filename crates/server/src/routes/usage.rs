//! `GET /v1/sandboxes/{id}/usage`: what a sandbox uses now.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::control::{SandboxUsage, validate_sandbox_id};

use super::ApiJson;
use super::sandboxes::ApiPath;
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};

/// The sandbox's resource usage: CPU time and memory (current and peak) of its current run and
/// its processes, from its cgroups; the bytes of its writable layer; the bytes through its
/// egress proxy since the server started. Does not wake a sleeping sandbox: it answers with
/// its state, zero CPU, memory and processes, and its disk.
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}/usage", operation_id = "getSandboxUsage", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The usage", body = SandboxUsage),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn usage(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<SandboxUsage>> {
    validate_sandbox_id(&id).map_err(|m| ApiError::validation(m).context("id", id.as_str()))?;
    Ok(ApiJson(app.manager.usage(&tenant.name, &id).await?))
}
