//! `/v1/sandboxes/{id}/mounts`: S3 bucket mounts (the seed's `mountBucket` / `unmountBucket`).
//! The credentials stay on the host: see `sandpit_runtime::bucket` and docs/persistence.md.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::control::{
    BucketMountInfo, BucketMountList, MountBucketRequest, validate_sandbox_id,
};

use super::ApiJson;
use super::sandboxes::{ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};

fn check_id(id: &str) -> ApiResult<()> {
    validate_sandbox_id(id).map_err(|m| ApiError::validation(m).context("id", id))
}

/// Mount an S3-compatible bucket at `mountPath` inside the sandbox.
///
/// The FUSE process (`s3fs`) runs on the host with the credentials; the sandbox sees only the
/// directory. Files belong to the sandbox's root; `readOnly` mounts refuse writes with EROFS;
/// `prefix` shows only the objects under it. The mount is stored (credentials encrypted) and
/// made again whenever the sandbox wakes; destroy removes it. A sleeping sandbox is woken.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/mounts", operation_id = "mountBucket", tag = "mounts",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = MountBucketRequest,
    responses(
        (status = 201, description = "Mounted", body = BucketMountInfo),
        (status = 400, description = "INVALID_MOUNT_CONFIG (bad field, path in use, endpoint not allowed), MISSING_CREDENTIALS", body = ErrorResponse),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
        (status = 409, description = "TOO_MANY_MOUNTS: the sandbox has as many mounts as the server allows (`--max-mounts-per-sandbox`, default 8)", body = ErrorResponse),
        (status = 500, description = "S3FS_MOUNT_ERROR: s3fs could not mount (endpoint, bucket or keys wrong; its message)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn mount(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<MountBucketRequest>,
) -> ApiResult<(StatusCode, ApiJson<BucketMountInfo>)> {
    check_id(&id)?;
    let info = app.manager.mount_bucket(&tenant.name, &id, &req).await?;
    Ok((StatusCode::CREATED, ApiJson(info)))
}

/// The sandbox's bucket mounts (never their credentials).
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}/mounts", operation_id = "listMounts", tag = "mounts",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The mounts", body = BucketMountList),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<BucketMountList>> {
    check_id(&id)?;
    Ok(ApiJson(app.manager.list_mounts(&tenant.name, &id).await?))
}

/// `?path=` of an unmount.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnmountQuery {
    /// The mount's `mountPath`.
    pub path: Option<String>,
}

/// Unmount the bucket mounted at `path` and forget it.
#[utoipa::path(
    delete, path = "/v1/sandboxes/{id}/mounts", operation_id = "unmountBucket", tag = "mounts",
    params(("id" = String, Path, description = "Sandbox id"), UnmountQuery),
    responses(
        (status = 204, description = "Unmounted"),
        (status = 400, description = "INVALID_MOUNT_CONFIG: no mount at that path", body = ErrorResponse),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn unmount(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<UnmountQuery>,
) -> ApiResult<StatusCode> {
    check_id(&id)?;
    let Some(path) = query.path else {
        return Err(ApiError::new(
            sandpit_protocol::ErrorCode::InvalidMountConfig,
            "the mount path is required: ?path=/mount/path",
        ));
    };
    app.manager.unmount_bucket(&tenant.name, &id, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}
