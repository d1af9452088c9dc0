//! `POST /v1/sandboxes/{id}/env`: the seed's `setEnvVars`. The agent exports/unsets the
//! variables in the session and for later sessions (`POST /api/env`), and the sandbox's stored
//! env is updated so the change survives sleep (it is applied at the next start).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::container::{SetEnvRequest, SetEnvResponse};
use sandpit_protocol::control::validate_sandbox_id;

use super::ApiJson;
use super::sandboxes::ApiPath;
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::forward::proxy;

/// Set (string) or unset (`null`) environment variables of a sandbox.
///
/// Runs `export`/`unset` in the session (`sessionId`, default `default`) and changes the
/// environment of every later session and process. The variables are also stored with the
/// sandbox (like `env` of PATCH), so they are set again after it sleeps and wakes. An unknown id
/// is created with default options and a sleeping sandbox is woken first.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/env", operation_id = "setSandboxEnv", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = SetEnvRequest,
    responses(
        (status = 200, description = "Set", body = SetEnvResponse),
        (status = 400, description = "VALIDATION_FAILED (names must match ^[A-Za-z_][A-Za-z0-9_]*$)", body = ErrorResponse),
        (status = 429, description = "QUOTA_EXCEEDED: creating or waking the sandbox would pass the tenant's quota", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn set_env(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SetEnvRequest>,
) -> Response {
    let names = crate::audit::fields_detail(req.env.keys().map(String::as_str), []);
    let mut response = match set_env_inner(&app, &tenant.name, &id, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    let note = crate::audit::AuditNote::target(id).detail(names);
    response.extensions_mut().insert(note);
    response
}

async fn set_env_inner(
    app: &AppState,
    tenant: &str,
    id: &str,
    req: SetEnvRequest,
) -> ApiResult<Response> {
    validate_sandbox_id(id).map_err(|m| ApiError::validation(m).context("id", id))?;
    for (key, value) in &req.env {
        if !valid_name(key) {
            return Err(ApiError::validation(format!(
                "env: invalid variable name {key:?} (must match ^[A-Za-z_][A-Za-z0-9_]*$)"
            )));
        }
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(ApiError::validation(format!(
                "env: variable {key} contains a NUL byte"
            )));
        }
    }
    let body = serde_json::to_vec(&req).map_err(ApiError::internal)?;
    let request = Request::post("/api/env")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(ApiError::internal)?;
    let response = proxy(app, request, tenant, id, "/api/env".into(), None).await?;
    if response.status() == StatusCode::OK {
        app.manager.merge_env(tenant, id, &req.env).await?;
    }
    Ok(response)
}

fn valid_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_shell_identifiers() {
        for ok in ["A", "_a1", "PATH"] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É", "A=B"] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}
