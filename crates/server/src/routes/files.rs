//! `/v1/sandboxes/{id}/files/{*path}`: raw file bytes of any size, streamed both ways.
//!
//! `GET` and `PUT` map onto the agent's raw endpoints (`/api/files/raw?path=`) through the
//! forwarding path, so authentication, wake-on-use and activity tracking are the same as for
//! `/api/*`, but without the forwarded-body cap: bodies stream through in constant memory.
//!
//! The path is the rest of the URL, percent-decoded: `files/notes.txt` is relative to the
//! workspace (the session's cwd), `files/%2Fetc/hostname` (or `files//etc/hostname`) is
//! absolute.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::container::FileUploadResponse;
use sandpit_protocol::control::validate_sandbox_id;
use serde::Deserialize;
use utoipa::IntoParams;

use super::sandboxes::{ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::forward;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct FilesQuery {
    /// Session whose cwd relative paths resolve against (default: the workspace).
    pub session_id: Option<String>,
}

/// Download a file's bytes.
///
/// Streams the file as `application/octet-stream` with `Content-Length`, whatever its size.
/// `{path}` is percent-decoded; without a leading `/` (write it as `%2F`) it is relative to the
/// workspace.
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}/files/{path}", operation_id = "downloadFile", tag = "files",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Path, description = "File path, percent-encoded"),
        FilesQuery,
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "IS_DIRECTORY, VALIDATION_FAILED", body = ErrorResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorResponse),
        (status = 404, description = "FILE_NOT_FOUND", body = ErrorResponse),
        (status = 409, description = "OPERATION_INTERRUPTED: the sandbox was stopped or destroyed meanwhile", body = ErrorResponse),
        (status = 429, description = "QUOTA_EXCEEDED: creating or waking the sandbox would pass the tenant's quota", body = ErrorResponse),
        (status = 502, description = "SANDBOX_UNAVAILABLE", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn download(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath((id, path)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<FilesQuery>,
    request: Request,
) -> Response {
    respond(raw(&app, &tenant, &id, &path, query, request).await)
}

/// Upload a file's bytes.
///
/// The request body (any size, streamed) replaces the file atomically: it is written beside
/// the target and renamed over it once complete, so a failed or aborted upload leaves no
/// partial file. Missing parent directories are created; an existing file keeps its
/// permissions.
#[utoipa::path(
    put, path = "/v1/sandboxes/{id}/files/{path}", operation_id = "uploadFile", tag = "files",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Path, description = "File path, percent-encoded"),
        FilesQuery,
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Written", body = FileUploadResponse),
        (status = 400, description = "IS_DIRECTORY, VALIDATION_FAILED", body = ErrorResponse),
        (status = 401, description = "Missing or invalid API key", body = ErrorResponse),
        (status = 500, description = "NO_SPACE", body = ErrorResponse),
        (status = 409, description = "OPERATION_INTERRUPTED: the sandbox was stopped or destroyed meanwhile", body = ErrorResponse),
        (status = 429, description = "QUOTA_EXCEEDED: creating or waking the sandbox would pass the tenant's quota", body = ErrorResponse),
        (status = 502, description = "SANDBOX_UNAVAILABLE", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn upload(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath((id, path)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<FilesQuery>,
    request: Request,
) -> Response {
    respond(raw(&app, &tenant, &id, &path, query, request).await)
}

fn respond(result: ApiResult<Response>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn raw(
    app: &AppState,
    tenant: &Tenant,
    id: &str,
    path: &str,
    query: FilesQuery,
    request: Request,
) -> ApiResult<Response> {
    validate_sandbox_id(id).map_err(|m| ApiError::validation(m).context("id", id))?;
    forward::proxy(
        app,
        request,
        &tenant.name,
        id,
        agent_target(path, query.session_id.as_deref())?,
        None,
    )
    .await
}

/// The agent's raw endpoint for `path` (already percent-decoded).
fn agent_target(path: &str, session_id: Option<&str>) -> ApiResult<String> {
    if path.contains('\0') {
        return Err(ApiError::validation("path must not contain NUL bytes"));
    }
    let mut target = format!("/api/files/raw?path={}", encode(path));
    if let Some(session) = session_id {
        target.push_str("&sessionId=");
        target.push_str(&encode(session));
    }
    Ok(target)
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_carry_the_decoded_path_encoded_once() {
        assert_eq!(
            agent_target("/w/a b&c=%.txt", None).unwrap(),
            "/api/files/raw?path=/w/a%20b%26c%3D%25.txt"
        );
        assert_eq!(
            agent_target("rel/é", Some("s 1")).unwrap(),
            "/api/files/raw?path=rel/%C3%A9&sessionId=s%201"
        );
        assert!(agent_target("a\0b", None).is_err());
    }
}
