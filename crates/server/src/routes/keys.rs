//! `POST /v1/keys`: the admin creates an API key for a tenant.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use sandpit_protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiJson;
use crate::AppState;
use crate::auth::{Tenant, generate_key, key_digest, validate_tenant};
use crate::error::{ApiError, ApiResult};

/// `POST /v1/keys` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Tenant the key belongs to (created if new): 1–32 chars of `[a-z0-9-]`, no `-` at
    /// either end.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")]
    pub tenant: String,
}

/// A new API key. The key is shown once; the server keeps only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyResponse {
    pub tenant: String,
    pub key: String,
}

/// Create an API key for a tenant (admin key only).
#[utoipa::path(
    post, path = "/v1/keys", operation_id = "createKey", tag = "keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Key created", body = CreateKeyResponse),
        (status = 400, description = "Invalid tenant", body = sandpit_protocol::ErrorResponse),
        (status = 401, description = "Not the admin key", body = sandpit_protocol::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, ApiJson<CreateKeyResponse>)> {
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
    store.add_api_key(&req.tenant, &key_digest(&key)).await?;
    tracing::info!(tenant = %req.tenant, "API key created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreateKeyResponse {
            tenant: req.tenant,
            key,
        }),
    ))
}
