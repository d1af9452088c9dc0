//! Snapshots and forks: a sandbox's file system frozen by its driver into an immutable
//! snapshot, sandboxes created from one, and fork (both at once).
//!
//! The control plane keeps the records (tenant-scoped, in the store) and the rule that a
//! snapshot is not deleted while sandboxes created from it exist; the driver keeps the data
//! (`Driver::snapshot`, `seed_from_snapshot`, `delete_snapshot`) and never deletes data a
//! sandbox still stands on. A snapshot is taken of a stopped sandbox: a running one is put to
//! sleep first (its processes end, as at any sleep) and woken again afterwards.

use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::{
    CreateSandboxRequest, ForkRequest, ForkResponse, Isolation, MAX_FORK_COUNT, MAX_SNAPSHOT_NAME,
    SnapshotInfo, validate_sandbox_id,
};
use sandpit_runtime::{Driver, DriverError};
use sandpit_store::{SandboxRecord, SnapshotRecord};

use super::{EndReason, Entry, Inner, Manager, ms_timestamp, now_ms};
use crate::error::{ApiError, ApiResult};

/// The public view of a stored snapshot.
pub fn snapshot_info(r: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        sandbox_id: r.sandbox_id.clone(),
        image: r.image.clone(),
        size_bytes: r.size_bytes,
        created_at: ms_timestamp(r.created_at_ms),
    }
}

pub(super) fn snapshot_not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SnapshotNotFound,
        format!("snapshot {id:?} not found"),
    )
    .context("snapshotId", id)
}

/// A driver's refusal or failure of a snapshot operation, as answered.
fn driver_error(e: DriverError, sandbox: &str) -> ApiError {
    match e {
        DriverError::Unsupported(m) => ApiError::new(ErrorCode::SnapshotUnsupported, m),
        DriverError::SnapshotNotFound(id) => snapshot_not_found(&id),
        DriverError::InvalidSpec(m) => ApiError::validation(m),
        e => ApiError::internal(format!("snapshot: {e}")),
    }
    .context("sandboxId", sandbox)
}

pub(super) fn validate_name(name: Option<&str>) -> ApiResult<()> {
    if let Some(name) = name
        && (name.is_empty() || name.len() > MAX_SNAPSHOT_NAME || name.chars().any(char::is_control))
    {
        return Err(ApiError::validation(format!(
            "name must be 1-{MAX_SNAPSHOT_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

impl Manager {
    /// `POST /v1/sandboxes/{id}/snapshots`.
    pub async fn snapshot(
        &self,
        tenant: &str,
        id: &str,
        name: Option<String>,
    ) -> ApiResult<SnapshotInfo> {
        validate_name(name.as_deref())?;
        let entry = self.known_entry(tenant, id).await?;
        let (mut inner, record) = self.lock_loaded(&entry).await?;
        let (snapshot, stopped) = self
            .snapshot_locked(&entry, &mut inner, &record, name)
            .await?;
        if stopped {
            self.rewake(&entry, &mut inner).await;
        }
        Ok(snapshot_info(&snapshot))
    }

    /// Takes a snapshot of a loaded sandbox (the caller holds its lock): sleeps it if it runs,
    /// has the driver freeze its file system and records the snapshot. Returns it and whether
    /// the sandbox was stopped for it (the caller then wakes it: [`Manager::rewake`]).
    async fn snapshot_locked(
        &self,
        entry: &Entry,
        inner: &mut Inner,
        record: &SandboxRecord,
        name: Option<String>,
    ) -> ApiResult<(SnapshotRecord, bool)> {
        let o = &record.options;
        if o.ephemeral {
            return Err(ApiError::new(
                ErrorCode::SnapshotUnsupported,
                "ephemeral sandboxes cannot be snapshotted: their writable layer is dropped when they stop",
            )
            .context("sandboxId", entry.id.as_str()));
        }
        if o.limits.disk_mb.is_some() {
            return Err(ApiError::new(
                ErrorCode::SnapshotUnsupported,
                "snapshots of sandboxes with limits.diskMb are not supported: their writable layer is a disk image",
            )
            .context("sandboxId", entry.id.as_str()));
        }
        let driver = self
            .snapshot_driver(o.isolation)
            .map_err(|e| e.context("sandboxId", entry.id.as_str()))?;
        let was_running = inner.started.is_some();
        if was_running {
            entry.end_on_request(inner, EndReason::Stopped);
            self.sleep(entry, inner).await?;
        }
        let id = format!("snap-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
        let taken = driver.snapshot(&entry.internal, &id).await;

        let result = match taken {
            Ok(taken) => {
                let snapshot = SnapshotRecord {
                    id: id.clone(),
                    tenant: entry.tenant.clone(),
                    name,
                    sandbox_id: entry.id.clone(),
                    image: o.image.clone(),
                    isolation: o.isolation,
                    size_bytes: taken.size_bytes,
                    created_at_ms: now_ms(),
                };
                match self.store.create_snapshot(&snapshot).await {
                    Ok(()) => Ok(snapshot),
                    Err(e) => {
                        let _ = driver.delete_snapshot(&id).await;
                        Err(e.into())
                    }
                }
            }
            Err(e) => Err(driver_error(e, &entry.id)),
        };
        if result.is_err() && was_running {
            self.rewake(entry, inner).await;
        }
        if let Ok(s) = &result {
            tracing::info!(sandbox = %entry.id, tenant = %entry.tenant, snapshot = %s.id, bytes = s.size_bytes, "snapshot taken");
        }
        result.map(|snapshot| (snapshot, was_running))
    }

    /// Wakes a sandbox stopped for a snapshot (the caller holds its lock), so it keeps working
    /// on its new writable layer. Should that fail, its next call wakes it: the snapshot
    /// itself is done.
    async fn rewake(&self, entry: &Entry, inner: &mut Inner) {
        if inner.started.is_some() {
            return;
        }
        if let Some(record) = inner.record.clone()
            && let Err(e) = self.wake(entry, inner, &record).await
        {
            tracing::warn!(sandbox = %entry.id, error = %e, "waking after a snapshot");
        }
    }

    /// `GET /v1/snapshots`.
    pub async fn list_snapshots(&self, tenant: &str) -> ApiResult<Vec<SnapshotInfo>> {
        let records = self.store.list_snapshots(tenant).await?;
        Ok(records.iter().map(snapshot_info).collect())
    }

    /// `GET /v1/snapshots/{id}`.
    pub async fn get_snapshot(&self, tenant: &str, id: &str) -> ApiResult<SnapshotInfo> {
        let record = self
            .store
            .get_snapshot(tenant, id)
            .await?
            .ok_or_else(|| snapshot_not_found(id))?;
        Ok(snapshot_info(&record))
    }

    /// `DELETE /v1/snapshots/{id}`: refused while sandboxes created from it exist.
    pub async fn delete_snapshot(&self, tenant: &str, id: &str) -> ApiResult<()> {
        let _guard = self.snapshot_lock.lock().await;
        let record = self
            .store
            .get_snapshot(tenant, id)
            .await?
            .ok_or_else(|| snapshot_not_found(id))?;
        let users = self.store.snapshot_users(tenant, id).await?;
        if !users.is_empty() {
            return Err(ApiError::new(
                ErrorCode::SnapshotInUse,
                format!(
                    "snapshot {id:?} is in use by {} sandbox(es) created from it ({}); destroy them first",
                    users.len(),
                    users.join(", ")
                ),
            )
            .context("snapshotId", id)
            .context("sandboxes", users));
        }
        self.store.delete_snapshot(tenant, id).await?;
        self.driver(record.isolation)?
            .delete_snapshot(id)
            .await
            .map_err(|e| ApiError::internal(format!("deleting snapshot {id:?}: {e}")))
    }

    /// The tenant's snapshot a create names, checked against the request's fixed options.
    pub(super) async fn snapshot_for_create(
        &self,
        tenant: &str,
        snapshot: &str,
        image: Option<&str>,
        isolation: Option<Isolation>,
    ) -> ApiResult<SnapshotRecord> {
        let record = self
            .store
            .get_snapshot(tenant, snapshot)
            .await?
            .ok_or_else(|| snapshot_not_found(snapshot))?;
        if let Some(image) = image
            && image != record.image
        {
            return Err(ApiError::validation(format!(
                "image {image:?} differs from snapshot {snapshot:?}'s image {:?}",
                record.image
            )));
        }
        if let Some(isolation) = isolation
            && isolation != record.isolation
        {
            return Err(ApiError::validation(format!(
                "isolation {isolation} differs from snapshot {snapshot:?}'s {}",
                record.isolation
            )));
        }
        Ok(record)
    }

    /// Gives a sandbox being created (record stored, not started) the snapshot's file system,
    /// and records that it uses the snapshot.
    pub(super) async fn seed_from(
        &self,
        entry: &Entry,
        driver: &dyn Driver,
        snapshot: &SnapshotRecord,
    ) -> ApiResult<()> {
        let _guard = self.snapshot_lock.lock().await;
        self.store
            .set_sandbox_snapshot(&entry.tenant, &entry.id, &snapshot.id)
            .await?;
        driver
            .seed_from_snapshot(&entry.internal, &snapshot.id)
            .await
            .map_err(|e| driver_error(e, &entry.id))
    }

    /// `POST /v1/sandboxes/{id}/fork`: snapshots the sandbox and creates the children from it,
    /// all or none (a child that fails, e.g. over the tenant's quota, undoes the others).
    pub async fn fork(
        &self,
        tenant: &str,
        by_operator: bool,
        id: &str,
        req: ForkRequest,
    ) -> ApiResult<ForkResponse> {
        let count = match (req.count, &req.ids) {
            (Some(count), Some(ids)) if count as usize != ids.len() => {
                return Err(ApiError::validation(format!(
                    "count {count} differs from the number of ids ({})",
                    ids.len()
                )));
            }
            (Some(count), _) => count as usize,
            (None, Some(ids)) => ids.len(),
            (None, None) => 1,
        };
        if !(1..=MAX_FORK_COUNT as usize).contains(&count) {
            return Err(ApiError::validation(format!(
                "count must be 1-{MAX_FORK_COUNT}"
            )));
        }
        let ids = match req.ids {
            Some(ids) => {
                for child in &ids {
                    validate_sandbox_id(child)
                        .map_err(|m| ApiError::validation(m).context("id", child.as_str()))?;
                }
                let mut unique = ids.clone();
                unique.sort();
                unique.dedup();
                if unique.len() != ids.len() || ids.iter().any(|c| c == id) {
                    return Err(ApiError::validation(
                        "ids must be distinct and differ from the forked sandbox's",
                    ));
                }
                ids
            }
            None => (0..count)
                .map(|_| format!("sb-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]))
                .collect(),
        };
        for child in &ids {
            if self.store.get_sandbox(tenant, child).await?.is_some() {
                return Err(ApiError::new(
                    ErrorCode::SandboxConflict,
                    format!("sandbox {child:?} exists already"),
                )
                .context("sandboxId", child.as_str()));
            }
        }
        let entry = self.known_entry(tenant, id).await?;
        let (snapshot, parent, stopped) = {
            let (mut inner, record) = self.lock_loaded(&entry).await?;
            let name = Some(format!("fork of {id}"));
            let (snapshot, stopped) = self
                .snapshot_locked(&entry, &mut inner, &record, name)
                .await?;
            (snapshot, record, stopped)
        };
        let o = &parent.options;
        let creates = ids.iter().map(|child| {
            let request = CreateSandboxRequest {
                id: Some(child.clone()),
                sleep_after: Some(o.sleep_after),
                keep_alive: Some(o.keep_alive),
                keep_alive_while_busy: Some(o.keep_alive_while_busy),
                env: Some(o.env.clone()),
                limits: Some(o.limits.clone()),
                labels: Some(o.labels.clone()),
                snapshot: Some(snapshot.id.clone()),
                ..CreateSandboxRequest::default()
            };
            self.create(tenant, by_operator, request)
        });
        // The parent wakes while the children start (it is not on their path).
        let parent_woken = async {
            if stopped {
                let mut inner = entry.inner.lock().await;
                self.rewake(&entry, &mut inner).await;
            }
        };
        let (results, ()) =
            futures::future::join(futures::future::join_all(creates), parent_woken).await;

        let mut children = Vec::with_capacity(results.len());
        let mut failure = None;
        for (child, result) in ids.iter().zip(results) {
            match result {
                Ok((info, true)) => children.push(info),
                Ok((_, false)) => {
                    failure.get_or_insert_with(|| {
                        ApiError::new(
                            ErrorCode::SandboxConflict,
                            format!("sandbox {child:?} was created meanwhile"),
                        )
                        .context("sandboxId", child.as_str())
                    });
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(error) = failure {
            for child in &children {
                if let Err(e) = self.destroy(tenant, &child.id).await {
                    tracing::warn!(sandbox = %child.id, error = %e, "undoing a failed fork");
                }
            }
            if let Err(e) = self.delete_snapshot(tenant, &snapshot.id).await {
                tracing::warn!(snapshot = %snapshot.id, error = %e, "undoing a failed fork");
            }
            return Err(error);
        }
        Ok(ForkResponse {
            snapshot: snapshot_info(&snapshot),
            sandboxes: children,
        })
    }
}
