//! `/v1/sandboxes`: create-or-get, list, get, patch, stop, destroy.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{FromRequestParts, State};
use http::StatusCode;
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::control::{
    CreateSandboxRequest, SandboxInfo, SandboxList, SecretSpec, UpdateSandboxRequest,
};
use utoipa::IntoParams;

use super::ApiJson;
use crate::AppState;
use crate::audit::{AuditNote, fields_detail};
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};

/// Default and largest page size of `GET /v1/sandboxes`.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// `axum::extract::Path` with [`ApiError`] rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with [`ApiError`] rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The query of `GET /v1/sandboxes`. Read from the raw pairs (see [`ListQuery::from_pairs`])
/// because `label` repeats.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// `key=value`: only sandboxes with this label. Repeatable; every one must match.
    #[param(value_type = Option<Vec<String>>, style = Form, explode)]
    pub label: Vec<String>,
}

impl ListQuery {
    /// Unknown parameters are ignored, as before `label` existed.
    fn from_pairs(pairs: Vec<(String, String)>) -> ApiResult<Self> {
        let mut query = ListQuery::default();
        for (name, value) in pairs {
            match name.as_str() {
                "limit" => {
                    let limit = value
                        .parse()
                        .map_err(|_| ApiError::validation(format!("limit must be 1-{MAX_PAGE}")))?;
                    query.limit = Some(limit);
                }
                "cursor" => query.cursor = Some(value),
                "label" => query.label.push(value),
                _ => {}
            }
        }
        Ok(query)
    }
}

/// The audit detail of a create or PATCH: the fields given and the names of the secrets.
fn change_detail(
    fields: &[(&'static str, bool)],
    secrets: Option<&BTreeMap<String, SecretSpec>>,
) -> Option<String> {
    fields_detail(
        fields
            .iter()
            .filter(|(_, given)| *given)
            .map(|(name, _)| *name),
        secrets.into_iter().flat_map(|s| s.keys()),
    )
}

/// Create a sandbox, or get the existing one with this id.
///
/// Creation starts the sandbox at once (state `running`). For an existing sandbox the mutable
/// options given (`sleepAfter`, `keepAlive`, `env`, `limits`, `labels`, `ttl`) are applied as by
/// PATCH; a different `image`, `ephemeral` or `isolation` is a 409.
#[utoipa::path(
    post, path = "/v1/sandboxes", operation_id = "createSandbox", tag = "sandboxes",
    request_body = CreateSandboxRequest,
    responses(
        (status = 201, description = "Created and started", body = SandboxInfo),
        (status = 200, description = "Already existed", body = SandboxInfo),
        (status = 400, description = "Invalid id or options (VALIDATION_FAILED), a limit above the server's maximum (LIMIT_EXCEEDED), or an isolation tier this server does not offer (ISOLATION_UNAVAILABLE)", body = ErrorResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorResponse),
        (status = 404, description = "Unknown image (IMAGE_NOT_FOUND)", body = ErrorResponse),
        (status = 409, description = "Exists with another image, ephemeral or isolation (SANDBOX_CONFLICT)", body = ErrorResponse),
        (status = 429, description = "The tenant's quota is used up (QUOTA_EXCEEDED)", body = ErrorResponse),
        (status = 500, description = "Failed to start (SANDBOX_START_FAILED)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiJson(req): ApiJson<CreateSandboxRequest>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<SandboxInfo>)> {
    let detail = change_detail(
        &[
            ("image", req.image.is_some()),
            ("sleepAfter", req.sleep_after.is_some()),
            ("keepAlive", req.keep_alive.is_some()),
            ("env", req.env.is_some()),
            ("limits", req.limits.is_some()),
            ("ephemeral", req.ephemeral.is_some()),
            ("isolation", req.isolation.is_some()),
            ("network", req.network.is_some()),
            ("secrets", req.secrets.is_some()),
            ("labels", req.labels.is_some()),
            ("ttl", req.ttl.is_some()),
        ],
        req.secrets.as_ref(),
    );
    let (info, created) = app.manager.create(&tenant.name, tenant.admin, req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let note = AuditNote::target(info.id.clone()).detail(detail);
    Ok((status, Extension(note), ApiJson(info)))
}

/// List the caller's sandboxes, ordered by id; `label=k=v` (repeatable) keeps those carrying
/// every label given.
#[utoipa::path(
    get, path = "/v1/sandboxes", operation_id = "listSandboxes", tag = "sandboxes",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = SandboxList),
        (status = 400, description = "Invalid limit or label selector (VALIDATION_FAILED)", body = ErrorResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<ApiJson<SandboxList>> {
    let q = ListQuery::from_pairs(pairs)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(format!("limit must be 1-{MAX_PAGE}")));
    }
    let labels = crate::labels::selectors(&q.label)?;
    let (sandboxes, next_cursor) = app
        .manager
        .list(&tenant.name, &labels, q.cursor.as_deref(), limit)
        .await?;
    Ok(ApiJson(SandboxList {
        sandboxes,
        next_cursor,
    }))
}

/// Get one sandbox.
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}", operation_id = "getSandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The sandbox", body = SandboxInfo),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<SandboxInfo>> {
    Ok(ApiJson(app.manager.get(&tenant.name, &id).await?))
}

/// Change options of a sandbox. On a running sandbox `limits.cpus`, `limits.memoryMb` and
/// `limits.pids` apply at once; `env` and `limits.diskMb` at its next start (`pendingRestart`).
/// `labels` are merged (`null` removes one); a `ttl` counts from now (`0`: no expiry).
#[utoipa::path(
    patch, path = "/v1/sandboxes/{id}", operation_id = "updateSandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = UpdateSandboxRequest,
    responses(
        (status = 200, description = "Updated", body = SandboxInfo),
        (status = 400, description = "Invalid options (VALIDATION_FAILED), or a limit above the server's maximum (LIMIT_EXCEEDED)", body = ErrorResponse),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
        (status = 409, description = "A memory limit below what the running sandbox uses now (RESOURCE_BUSY); the old limit stays", body = ErrorResponse),
        (status = 429, description = "A larger diskMb, or more memory for a running sandbox, would pass the tenant's quota (QUOTA_EXCEEDED)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateSandboxRequest>,
) -> ApiResult<(Extension<AuditNote>, ApiJson<SandboxInfo>)> {
    let detail = change_detail(
        &[
            ("sleepAfter", req.sleep_after.is_some()),
            ("keepAlive", req.keep_alive.is_some()),
            ("env", req.env.is_some()),
            ("limits", req.limits.is_some()),
            ("network", req.network.is_some()),
            ("secrets", req.secrets.is_some()),
            ("labels", req.labels.is_some()),
            ("ttl", req.ttl.is_some()),
        ],
        req.secrets.as_ref(),
    );
    let info = app
        .manager
        .update(&tenant.name, tenant.admin, &id, req)
        .await?;
    Ok((
        Extension(AuditNote::target(id).detail(detail)),
        ApiJson(info),
    ))
}

/// Destroy a sandbox: its processes, writable layer and record.
#[utoipa::path(
    delete, path = "/v1/sandboxes/{id}", operation_id = "destroySandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn destroy(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.manager.destroy(&tenant.name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Put a sandbox to sleep now (all processes stop; the workspace is kept unless ephemeral).
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/stop", operation_id = "stopSandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Asleep", body = SandboxInfo),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn stop(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<SandboxInfo>> {
    Ok(ApiJson(app.manager.stop(&tenant.name, &id).await?))
}

macro_rules! forward_doc {
    ($name:ident, $method:ident, $op:literal) => {
        /// Forward a container-API call to the sandbox's agent (`/api/{path}`).
        ///
        /// Any method is forwarded. An unknown id is created with default options and a
        /// sleeping sandbox is woken first. Request and response bodies (including SSE streams)
        /// pass through unchanged; the caller's `Authorization` header is removed and
        /// `X-Sandbox-Id` added. `/v1/sandboxes/{id}/ws` and `/ws/{path}` forward WebSocket
        /// upgrades the same way. Errors of the agent itself use the container codes of the
        /// same error table.
        #[utoipa::path(
            $method, path = "/v1/sandboxes/{id}/api/{path}", operation_id = $op, tag = "forward",
            params(
                ("id" = String, Path, description = "Sandbox id"),
                ("path" = String, Path, description = "Container API path, e.g. `execute`"),
            ),
            responses(
                (status = 200, description = "The agent's answer, streamed"),
                (status = 409, description = "OPERATION_INTERRUPTED: the sandbox was stopped or destroyed while the request ran", body = ErrorResponse),
                (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorResponse),
                (status = 429, description = "QUOTA_EXCEEDED: creating or waking the sandbox would pass the tenant's quota", body = ErrorResponse),
                (status = 500, description = "SANDBOX_START_FAILED", body = ErrorResponse),
                (status = 502, description = "SANDBOX_UNAVAILABLE: the agent did not answer", body = ErrorResponse),
                (status = "default", description = "The agent's own answer for other statuses, e.g. 404 for an unknown API path", body = ErrorResponse),
            ),
            security(("bearer" = []))
        )]
        #[allow(dead_code)] // Documentation only: the route is served by `forward::forward`.
        pub(crate) async fn $name() {}
    };
}

forward_doc!(forward_get, get, "sandboxApiGet");
forward_doc!(forward_post, post, "sandboxApiPost");
forward_doc!(forward_delete, delete, "sandboxApiDelete");
