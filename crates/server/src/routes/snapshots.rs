//! Snapshots and forks: `POST /v1/sandboxes/{id}/snapshots`, `GET /v1/snapshots`,
//! `GET`/`DELETE /v1/snapshots/{snapshotId}`, `POST /v1/sandboxes/{id}/fork` (create from a
//! snapshot is `POST /v1/sandboxes {snapshot}`). See docs/persistence.md.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::control::{
    CreateSnapshotRequest, ForkRequest, ForkResponse, ImportSnapshotRequest, SnapshotExport,
    SnapshotInfo, SnapshotList,
};

use super::ApiJson;
use super::sandboxes::ApiPath;
use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Tenant;
use crate::error::ApiResult;

/// Snapshot a sandbox's file system (image + writable layer) into an immutable snapshot.
///
/// A running sandbox is put to sleep for the snapshot and woken again: its running processes
/// end, as at any sleep (processes and memory are not captured). Cost does not grow with the
/// workspace: the writable layer becomes a read-only layer shared with the snapshot.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/snapshots", operation_id = "createSnapshot", tag = "snapshots",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = CreateSnapshotRequest,
    responses(
        (status = 201, description = "Taken", body = SnapshotInfo),
        (status = 400, description = "Invalid name (VALIDATION_FAILED), or a sandbox that cannot be snapshotted: gVisor tier, limits.diskMb, ephemeral (SNAPSHOT_UNSUPPORTED)", body = ErrorResponse),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateSnapshotRequest>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<SnapshotInfo>)> {
    let info = app.manager.snapshot(&tenant.name, &id, req.name).await?;
    let note = AuditNote::target(format!("{id}:{}", info.id));
    Ok((StatusCode::CREATED, Extension(note), ApiJson(info)))
}

/// List the caller's snapshots, oldest first.
#[utoipa::path(
    get, path = "/v1/snapshots", operation_id = "listSnapshots", tag = "snapshots",
    responses((status = 200, description = "The snapshots", body = SnapshotList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
) -> ApiResult<ApiJson<SnapshotList>> {
    let snapshots = app.manager.list_snapshots(&tenant.name).await?;
    Ok(ApiJson(SnapshotList { snapshots }))
}

/// Get one snapshot.
#[utoipa::path(
    get, path = "/v1/snapshots/{snapshotId}", operation_id = "getSnapshot", tag = "snapshots",
    params(("snapshotId" = String, Path, description = "Snapshot id")),
    responses(
        (status = 200, description = "The snapshot", body = SnapshotInfo),
        (status = 404, description = "SNAPSHOT_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<SnapshotInfo>> {
    Ok(ApiJson(app.manager.get_snapshot(&tenant.name, &id).await?))
}

/// Delete a snapshot; refused while sandboxes created from it exist.
#[utoipa::path(
    delete, path = "/v1/snapshots/{snapshotId}", operation_id = "deleteSnapshot", tag = "snapshots",
    params(("snapshotId" = String, Path, description = "Snapshot id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "SNAPSHOT_NOT_FOUND", body = ErrorResponse),
        (status = 409, description = "Sandboxes created from it exist (SNAPSHOT_IN_USE; `context.sandboxes` names them)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.manager.delete_snapshot(&tenant.name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fork a sandbox: snapshot it and create `count` running sandboxes from the snapshot.
///
/// Children get the parent's image, env, limits, sleepAfter, keepAlive and labels (not its
/// network policy or secrets) and an empty writable layer of their own above the snapshot: each
/// sees the parent's files; their writes are private. All or none: a child that fails (e.g.
/// over the tenant's quota) undoes the others and the snapshot.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/fork", operation_id = "forkSandbox", tag = "snapshots",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = ForkRequest,
    responses(
        (status = 201, description = "Forked", body = ForkResponse),
        (status = 400, description = "Invalid count or ids (VALIDATION_FAILED), SNAPSHOT_UNSUPPORTED", body = ErrorResponse),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
        (status = 409, description = "A child id exists already (SANDBOX_CONFLICT)", body = ErrorResponse),
        (status = 429, description = "The children would pass the tenant's quota (QUOTA_EXCEEDED)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn fork(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ForkRequest>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<ForkResponse>)> {
    let forked = app
        .manager
        .fork(&tenant.name, tenant.admin, &id, req)
        .await?;
    let children: Vec<&str> = forked.sandboxes.iter().map(|s| s.id.as_str()).collect();
    let note = AuditNote::target(id.clone()).detail(Some(format!(
        "snapshot {}, children: {}",
        forked.snapshot.id,
        children.join(", ")
    )));
    Ok((StatusCode::CREATED, Extension(note), ApiJson(forked)))
}

/// Export a snapshot to the server's object store, so it outlives this server's disk and can be
/// imported on another server using the same store.
///
/// The snapshot's layers are streamed as one zstd-compressed tar (SHA-256 recorded) to
/// `snapshot-exports/<tenant>/…`; nothing is held whole in memory. Processes are not part of a
/// snapshot, so not of an export either.
#[utoipa::path(
    post, path = "/v1/snapshots/{snapshotId}/export", operation_id = "exportSnapshot", tag = "snapshots",
    params(("snapshotId" = String, Path, description = "Snapshot id")),
    responses(
        (status = 201, description = "Exported", body = SnapshotExport),
        (status = 400, description = "The snapshot's tier cannot export (SNAPSHOT_UNSUPPORTED)", body = ErrorResponse),
        (status = 404, description = "SNAPSHOT_NOT_FOUND", body = ErrorResponse),
        (status = 500, description = "Writing to the object store failed; nothing is left there (SNAPSHOT_EXPORT_FAILED)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn export(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<SnapshotExport>)> {
    let exported = app
        .manager
        .export_snapshot(&tenant.name, &id, app.backups.objects())
        .await?;
    let note = AuditNote::target(id).detail(Some(exported.object_key.clone()));
    Ok((StatusCode::CREATED, Extension(note), ApiJson(exported)))
}

/// Import a snapshot from an export of the caller's tenant (`objectKey` of an export): a new
/// snapshot with the export's files and image, usable like any (create from it, fork its
/// sandboxes, export it again).
///
/// The archive's size and SHA-256 are checked while it is read; a corrupt, truncated or
/// tampered object fails with SNAPSHOT_IMPORT_FAILED and leaves nothing behind. Another
/// tenant's export answers SNAPSHOT_EXPORT_NOT_FOUND, like a missing one.
#[utoipa::path(
    post, path = "/v1/snapshots/import", operation_id = "importSnapshot", tag = "snapshots",
    request_body = ImportSnapshotRequest,
    responses(
        (status = 201, description = "Imported", body = SnapshotInfo),
        (status = 400, description = "A key that is not an export's, a bad name, a malformed sha256 or one that is not the export's (VALIDATION_FAILED), SNAPSHOT_UNSUPPORTED", body = ErrorResponse),
        (status = 404, description = "No export of the caller's tenant with this key (SNAPSHOT_EXPORT_NOT_FOUND)", body = ErrorResponse),
        (status = 500, description = "Corrupt, truncated or tampered archive, digest mismatch (SNAPSHOT_IMPORT_FAILED)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn import(
    State(app): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ApiJson(req): ApiJson<ImportSnapshotRequest>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<SnapshotInfo>)> {
    let key = req.object_key.clone();
    let info = app
        .manager
        .import_snapshot(&tenant.name, req, app.backups.objects())
        .await?;
    let note = AuditNote::target(info.id.clone()).detail(Some(key));
    Ok((StatusCode::CREATED, Extension(note), ApiJson(info)))
}
