//! `GET /v1/quota` (the caller's own) and `GET|PUT|DELETE /v1/tenants/{tenant}/quota` (the
//! admin's): per-tenant quotas, their usage and the server's per-sandbox caps.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use sandpit_protocol::quota::{QuotaInfo, TenantQuota};
use sandpit_protocol::{ErrorCode, ErrorResponse};

use super::ApiJson;
use super::sandboxes::ApiPath;
use crate::AppState;
use crate::auth::{Tenant, validate_tenant};
use crate::error::{ApiError, ApiResult};

/// The caller's quota, usage and the server's per-sandbox caps.
#[utoipa::path(
    get, path = "/v1/quota", operation_id = "getOwnQuota", tag = "quotas",
    responses(
        (status = 200, description = "Quota, usage and caps", body = QuotaInfo),
        (status = 401, description = "Missing or invalid API key", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn own(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
) -> ApiResult<ApiJson<QuotaInfo>> {
    Ok(ApiJson(app.manager.quota_info(&caller.name).await?))
}

/// A tenant's quota and usage (the admin key, or the tenant's own key).
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/quota", operation_id = "getTenantQuota", tag = "quotas",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "Quota, usage and caps", body = QuotaInfo),
        (status = 400, description = "Invalid tenant name", body = ErrorResponse),
        (status = 401, description = "Neither the admin key nor the tenant's key", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<ApiJson<QuotaInfo>> {
    validate_tenant(&tenant)?;
    if !caller.admin && caller.name != tenant {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "reading another tenant's quota needs the admin key",
        ));
    }
    Ok(ApiJson(app.manager.quota_info(&tenant).await?))
}

/// Set a tenant's quota (admin key only). Replaces the whole quota: an absent field is not
/// limited. Applies to the next create or wake; sandboxes above it keep running.
#[utoipa::path(
    put, path = "/v1/tenants/{tenant}/quota", operation_id = "setTenantQuota", tag = "quotas",
    params(("tenant" = String, Path, description = "Tenant name (created if new)")),
    request_body = TenantQuota,
    responses(
        (status = 200, description = "The quota in force", body = QuotaInfo),
        (status = 400, description = "Invalid tenant name or quota", body = ErrorResponse),
        (status = 401, description = "Not the admin key", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn set(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(quota): ApiJson<TenantQuota>,
) -> ApiResult<ApiJson<QuotaInfo>> {
    require_admin(&caller)?;
    validate_tenant(&tenant)?;
    let store = app.manager.store();
    store.ensure_tenant(&tenant).await?;
    store.set_tenant_quota(&tenant, Some(&quota)).await?;
    tracing::info!(%tenant, ?quota, "tenant quota set");
    Ok(ApiJson(app.manager.quota_info(&tenant).await?))
}

/// Remove a tenant's own quota: the server's default applies again (admin key only).
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/quota", operation_id = "resetTenantQuota", tag = "quotas",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "The quota in force (the default)", body = QuotaInfo),
        (status = 400, description = "Invalid tenant name", body = ErrorResponse),
        (status = 401, description = "Not the admin key", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn reset(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<ApiJson<QuotaInfo>> {
    require_admin(&caller)?;
    validate_tenant(&tenant)?;
    app.manager.store().set_tenant_quota(&tenant, None).await?;
    tracing::info!(%tenant, "tenant quota reset to the default");
    Ok(ApiJson(app.manager.quota_info(&tenant).await?))
}

fn require_admin(caller: &Tenant) -> ApiResult<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "changing quotas needs the admin key",
        ))
    }
}
