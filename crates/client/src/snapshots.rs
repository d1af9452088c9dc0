//! Snapshots and forks (`/v1/sandboxes/{id}/snapshots`, `/v1/snapshots`,
//! `/v1/sandboxes/{id}/fork`); a sandbox is created from a snapshot with
//! [`Client::create`] and `CreateSandboxRequest::snapshot`.

use reqwest::Method;
use sandpit_protocol::control::{
    CreateSnapshotRequest, ForkRequest, ForkResponse, ImportSnapshotRequest, SnapshotExport,
    SnapshotInfo, SnapshotList,
};

use crate::client::{Client, check_id, percent_encode};
use crate::error::Result;

fn snapshot_path(id: &str) -> String {
    format!("/v1/snapshots/{}", percent_encode(id))
}

impl Client {
    /// Freezes the sandbox's file system into a new snapshot. A running sandbox sleeps for the
    /// snapshot (its processes end) and is woken again.
    pub async fn create_snapshot(&self, id: &str, name: Option<&str>) -> Result<SnapshotInfo> {
        check_id(id)?;
        let body = CreateSnapshotRequest {
            name: name.map(str::to_owned),
        };
        let path = format!("/v1/sandboxes/{id}/snapshots");
        self.json(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// The caller's snapshots, oldest first.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let list: SnapshotList = self
            .json(self.request(Method::GET, "/v1/snapshots"))
            .await?;
        Ok(list.snapshots)
    }

    /// One snapshot (`SNAPSHOT_NOT_FOUND` if the caller has none with this id).
    pub async fn get_snapshot(&self, id: &str) -> Result<SnapshotInfo> {
        self.json(self.request(Method::GET, &snapshot_path(id)))
            .await
    }

    /// Deletes a snapshot (`SNAPSHOT_IN_USE` while sandboxes created from it exist).
    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &snapshot_path(id)))
            .await
    }

    /// Exports snapshot `id` to the server's object store (a zstd-compressed archive with its
    /// SHA-256), so it outlives the server's disk; import it with [`Client::import_snapshot`].
    pub async fn export_snapshot(&self, id: &str) -> Result<SnapshotExport> {
        let path = format!("{}/export", snapshot_path(id));
        self.json(self.request(Method::POST, &path)).await
    }

    /// Imports an export of the caller's tenant (its `object_key`; `sha256`, if given, must be
    /// the export's) as a new snapshot.
    pub async fn import_snapshot(&self, request: &ImportSnapshotRequest) -> Result<SnapshotInfo> {
        self.json(
            self.request(Method::POST, "/v1/snapshots/import")
                .json(request),
        )
        .await
    }

    /// Snapshots the sandbox and creates children from it (`request.count`, or one per id in
    /// `request.ids`), all running, all or none.
    pub async fn fork(&self, id: &str, request: &ForkRequest) -> Result<ForkResponse> {
        check_id(id)?;
        if let Some(ids) = &request.ids {
            for child in ids {
                check_id(child)?;
            }
        }
        let path = format!("/v1/sandboxes/{id}/fork");
        self.json(self.request(Method::POST, &path).json(request))
            .await
    }
}
