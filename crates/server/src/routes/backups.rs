//! Backups of a sandbox directory (issue 13; the seed's `createBackup`/`restoreBackup`):
//! `POST /v1/sandboxes/{id}/backups`, `POST /v1/sandboxes/{id}/restore`, and the tenant's
//! `GET /v1/backups`, `GET`/`DELETE /v1/backups/{backupId}`. The work is in
//! [`crate::backups`]; another tenant's backup answers `BACKUP_NOT_FOUND`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::backup::{
    BackupInfo, BackupList, CreateBackupRequest, RestoreBackupRequest, RestoreBackupResponse,
};

use super::ApiJson;
use super::sandboxes::ApiPath;
use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Tenant;
use crate::error::ApiResult;

/// Back up a directory of a sandbox.
///
/// The sandbox archives `dir` as it sees it (symlinks are stored, never followed; other
/// filesystems mounted below `dir` are left out); the server compresses it with zstd,
/// checksums it and streams it to the object store. Answers once the archive is stored.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/backups", operation_id = "createBackup", tag = "backups",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = CreateBackupRequest,
    responses(
        (status = 201, description = "Backup stored", body = BackupInfo),
        (status = 400, description = "INVALID_BACKUP_CONFIG: bad dir, name, ttl, excludes or compression", body = ErrorResponse),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
        (status = 429, description = "QUOTA_EXCEEDED: the tenant's backup count or bytes cap", body = ErrorResponse),
        (status = 500, description = "BACKUP_CREATE_FAILED", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateBackupRequest>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<BackupInfo>)> {
    // Its own task: a client that goes away does not cut a backup off halfway (it completes,
    // or fails and cleans up, either way).
    let task = {
        let (app, tenant, id) = (app.clone(), tenant.name.clone(), id.clone());
        tokio::spawn(async move { app.backups.create(&app, &tenant, &id, req).await })
    };
    let info = task
        .await
        .map_err(|e| crate::error::ApiError::internal(format!("backup task: {e}")))??;
    let note = AuditNote::target(info.id.clone()).detail(Some(format!("{}:{}", id, info.dir)));
    Ok((StatusCode::CREATED, Extension(note), ApiJson(info)))
}

/// Restore a backup into a sandbox of the same tenant.
///
/// Atomic: the archive is unpacked beside the target and swapped in only when it arrived
/// whole and its checksum matched; a failed or interrupted restore leaves the directory as it
/// was. The target sandbox is started (or created) like any `/api` call does.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/restore", operation_id = "restoreBackup", tag = "backups",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = RestoreBackupRequest,
    responses(
        (status = 200, description = "Restored", body = RestoreBackupResponse),
        (status = 400, description = "BACKUP_EXPIRED, INVALID_BACKUP_CONFIG", body = ErrorResponse),
        (status = 404, description = "BACKUP_NOT_FOUND (also another tenant's backup)", body = ErrorResponse),
        (status = 500, description = "BACKUP_RESTORE_FAILED: the directory is unchanged", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn restore(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RestoreBackupRequest>,
) -> ApiResult<(Extension<AuditNote>, ApiJson<RestoreBackupResponse>)> {
    let backup_id = req.backup_id.clone();
    let done = app.backups.restore(&app, &tenant.name, &id, req).await?;
    let note = AuditNote::target(id).detail(Some(format!("{backup_id}:{}", done.dir)));
    Ok((Extension(note), ApiJson(done)))
}

/// List the tenant's backups, newest first.
#[utoipa::path(
    get, path = "/v1/backups", operation_id = "listBackups", tag = "backups",
    responses((status = 200, description = "The tenant's backups", body = BackupList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
) -> ApiResult<ApiJson<BackupList>> {
    let backups = app.backups.list(&tenant.name).await?;
    Ok(ApiJson(BackupList { backups }))
}

/// A backup's metadata.
#[utoipa::path(
    get, path = "/v1/backups/{backupId}", operation_id = "getBackup", tag = "backups",
    params(("backupId" = String, Path, description = "Backup id")),
    responses(
        (status = 200, description = "The backup", body = BackupInfo),
        (status = 404, description = "BACKUP_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(backup_id): ApiPath<String>,
) -> ApiResult<ApiJson<BackupInfo>> {
    Ok(ApiJson(app.backups.get(&tenant.name, &backup_id).await?))
}

/// Delete a backup (its archive and record).
#[utoipa::path(
    delete, path = "/v1/backups/{backupId}", operation_id = "deleteBackup", tag = "backups",
    params(("backupId" = String, Path, description = "Backup id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "BACKUP_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(backup_id): ApiPath<String>,
) -> ApiResult<(StatusCode, Extension<AuditNote>)> {
    app.backups.delete(&tenant.name, &backup_id).await?;
    Ok((
        StatusCode::NO_CONTENT,
        Extension(AuditNote::target(backup_id)),
    ))
}
