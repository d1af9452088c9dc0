//! Backups of sandbox directories (`/v1/sandboxes/{id}/backups`, `/v1/sandboxes/{id}/restore`,
//! `/v1/backups`). The calls answer once the archive is stored or restored.

use reqwest::Method;
use sandpit_protocol::backup::{
    BackupInfo, BackupList, CreateBackupRequest, RestoreBackupRequest, RestoreBackupResponse,
};

use crate::client::{Client, check_id, percent_encode};
use crate::error::Result;

impl Client {
    /// Backs up `request.dir` of sandbox `id` (see [`CreateBackupRequest`]).
    pub async fn create_backup(
        &self,
        id: &str,
        request: &CreateBackupRequest,
    ) -> Result<BackupInfo> {
        check_id(id)?;
        let path = format!("/v1/sandboxes/{id}/backups");
        self.json(self.request(Method::POST, &path).json(request))
            .await
    }

    /// Restores backup `backup_id` into sandbox `id`, at `dir` (default: the backup's own dir).
    pub async fn restore_backup(
        &self,
        id: &str,
        backup_id: &str,
        dir: Option<&str>,
    ) -> Result<RestoreBackupResponse> {
        check_id(id)?;
        let path = format!("/v1/sandboxes/{id}/restore");
        let body = RestoreBackupRequest {
            backup_id: backup_id.to_owned(),
            dir: dir.map(str::to_owned),
        };
        self.json(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// The caller's backups, newest first.
    pub async fn list_backups(&self) -> Result<Vec<BackupInfo>> {
        let list: BackupList = self.json(self.request(Method::GET, "/v1/backups")).await?;
        Ok(list.backups)
    }

    /// One backup's metadata.
    pub async fn get_backup(&self, backup_id: &str) -> Result<BackupInfo> {
        let path = format!("/v1/backups/{}", percent_encode(backup_id));
        self.json(self.request(Method::GET, &path)).await
    }

    /// Deletes a backup.
    pub async fn delete_backup(&self, backup_id: &str) -> Result<()> {
        let path = format!("/v1/backups/{}", percent_encode(backup_id));
        self.empty(self.request(Method::DELETE, &path)).await
    }
}
