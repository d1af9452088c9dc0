//! `/v1/keys`: API keys. The admin creates keys for any tenant and lists, revokes and rotates
//! any key; a tenant lists, revokes and rotates its own. A key of another tenant answers
//! `KEY_NOT_FOUND`, as an unknown one does.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use sandpit_protocol::control::{ApiKeyInfo, ApiKeyList, CreateKeyRequest, CreateKeyResponse};
use sandpit_protocol::{ErrorCode, ErrorResponse};
use sandpit_store::ApiKeyRecord;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiJson;
use super::sandboxes::{ApiPath, ApiQuery};
use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::{Tenant, generate_key, key_digest, validate_tenant};
use crate::error::{ApiError, ApiResult};

fn info(record: ApiKeyRecord) -> ApiKeyInfo {
    ApiKeyInfo {
        key_id: record.key_id,
        tenant: record.tenant,
        created_at: crate::lifecycle::ms_timestamp(record.created_at_ms),
        last_used_at: record.last_used_at_ms.map(crate::lifecycle::ms_timestamp),
    }
}

fn key_not_found(key_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::KeyNotFound,
        format!("API key {key_id:?} not found"),
    )
    .context("keyId", key_id)
}

/// The key `key_id` if the caller may manage it.
async fn own_key(app: &AppState, caller: &Tenant, key_id: &str) -> ApiResult<ApiKeyRecord> {
    match app.manager.store().api_key_by_id(key_id).await? {
        Some(key) if caller.admin || key.tenant == caller.name => Ok(key),
        _ => Err(key_not_found(key_id)),
    }
}

/// Create an API key for a tenant (admin key only).
#[utoipa::path(
    post, path = "/v1/keys", operation_id = "createKey", tag = "keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Key created", body = CreateKeyResponse),
        (status = 400, description = "Invalid tenant", body = ErrorResponse),
        (status = 401, description = "Not the admin key", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<CreateKeyResponse>)> {
    if !caller.admin {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "creating keys needs the admin key",
        ));
    }
    validate_tenant(&req.tenant)?;
    let key = generate_key();
    let store = app.manager.store();
    store.ensure_tenant(&req.tenant).await?;
    let record = store.add_api_key(&req.tenant, &key_digest(&key)).await?;
    tracing::info!(tenant = %req.tenant, key_id = %record.key_id, "API key created");
    let note = AuditNote {
        tenant: Some(req.tenant.clone()),
        target: Some(record.key_id.clone()),
        detail: None,
    };
    Ok((
        StatusCode::CREATED,
        Extension(note),
        ApiJson(CreateKeyResponse {
            tenant: req.tenant,
            key,
            key_id: record.key_id,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// Only this tenant's keys (another tenant than the caller's needs the admin key). The
    /// admin key lists every tenant's keys when absent.
    pub tenant: Option<String>,
}

/// List API keys: ids, tenants and times, never the keys.
#[utoipa::path(
    get, path = "/v1/keys", operation_id = "listKeys", tag = "keys",
    params(KeysQuery),
    responses(
        (status = 200, description = "The keys", body = ApiKeyList),
        (status = 400, description = "Invalid tenant (VALIDATION_FAILED)", body = ErrorResponse),
        (status = 403, description = "Another tenant without the admin key (PERMISSION_DENIED)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list_keys(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiQuery(q): ApiQuery<KeysQuery>,
) -> ApiResult<ApiJson<ApiKeyList>> {
    let tenant = match (&q.tenant, caller.admin) {
        (None, true) => None,
        (requested, _) => Some(caller.scope(requested.as_deref())?),
    };
    let keys = app.manager.store().list_api_keys(tenant.as_deref()).await?;
    Ok(ApiJson(ApiKeyList {
        keys: keys.into_iter().map(info).collect(),
    }))
}

/// Revoke an API key: the next request with it is refused (401).
#[utoipa::path(
    delete, path = "/v1/keys/{keyId}", operation_id = "revokeKey", tag = "keys",
    params(("keyId" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key of the caller's tenant (KEY_NOT_FOUND)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Extension<AuditNote>)> {
    let key = own_key(&app, &caller, &key_id).await?;
    if !app.manager.store().revoke_api_key(&key_id).await? {
        return Err(key_not_found(&key_id));
    }
    app.auth.forget(&key_id);
    tracing::info!(tenant = %key.tenant, key_id, "API key revoked");
    let note = AuditNote {
        tenant: Some(key.tenant),
        ..AuditNote::target(key_id)
    };
    Ok((StatusCode::NO_CONTENT, Extension(note)))
}

/// Rotate an API key: a new key for the same tenant; the old one is revoked at once.
#[utoipa::path(
    post, path = "/v1/keys/{keyId}/rotate", operation_id = "rotateKey", tag = "keys",
    params(("keyId" = String, Path, description = "Key id")),
    responses(
        (status = 201, description = "The new key (shown once)", body = CreateKeyResponse),
        (status = 404, description = "No such key of the caller's tenant (KEY_NOT_FOUND)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn rotate_key(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<CreateKeyResponse>)> {
    own_key(&app, &caller, &key_id).await?;
    let key = generate_key();
    let Some(record) = app
        .manager
        .store()
        .rotate_api_key(&key_id, &key_digest(&key))
        .await?
    else {
        return Err(key_not_found(&key_id));
    };
    app.auth.forget(&key_id);
    tracing::info!(tenant = %record.tenant, old = key_id, new = %record.key_id, "API key rotated");
    let note = AuditNote {
        tenant: Some(record.tenant.clone()),
        target: Some(key_id),
        detail: Some(format!("new key {}", record.key_id)),
    };
    Ok((
        StatusCode::CREATED,
        Extension(note),
        ApiJson(CreateKeyResponse {
            tenant: record.tenant,
            key,
            key_id: record.key_id,
        }),
    ))
}
