//! S3 bucket mounts of a sandbox (`/v1/sandboxes/{id}/mounts`): the seed's `mountBucket` /
//! `unmountBucket`. The credentials go to the server, which hands them only to the FUSE process
//! it runs on the host; the sandbox never sees them.

use reqwest::Method;
use sandpit_protocol::control::{
    BucketMountInfo, BucketMountList, MountBucketRequest, MountCredentials,
};

use crate::client::{check_id, percent_encode};
use crate::error::Result;
use crate::sandbox::SandboxHandle;

/// Options of [`SandboxHandle::mount_bucket`] (the seed's `MountBucketOptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// `http(s)://host[:port]` of the S3 API (path-style requests).
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `/dir/`: only objects under it are visible.
    pub prefix: Option<String>,
    /// Writes fail with EROFS.
    pub read_only: bool,
    /// SigV4 region (default `us-east-1`).
    pub region: Option<String>,
}

impl MountOptions {
    pub fn new(
        endpoint: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        MountOptions {
            endpoint: endpoint.into(),
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            prefix: None,
            read_only: false,
            region: None,
        }
    }

    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }
}

impl SandboxHandle {
    /// Mounts `bucket` at `mount_path` inside the sandbox (woken first); the mount comes back
    /// every time the sandbox wakes, until [`SandboxHandle::unmount_bucket`] or destroy.
    pub async fn mount_bucket(
        &self,
        bucket: &str,
        mount_path: &str,
        options: &MountOptions,
    ) -> Result<BucketMountInfo> {
        let body = MountBucketRequest {
            bucket: bucket.to_owned(),
            mount_path: mount_path.to_owned(),
            endpoint: options.endpoint.clone(),
            credentials: Some(MountCredentials {
                access_key_id: options.access_key_id.clone(),
                secret_access_key: options.secret_access_key.clone(),
            }),
            prefix: options.prefix.clone(),
            read_only: options.read_only,
            region: options.region.clone(),
            provider: None,
        };
        let request = self
            .client()
            .request(Method::POST, &self.mounts_path()?)
            .json(&body);
        self.client().json(request).await
    }

    /// Unmounts the bucket mounted at `mount_path` and forgets it.
    pub async fn unmount_bucket(&self, mount_path: &str) -> Result<()> {
        let path = format!(
            "{}?path={}",
            self.mounts_path()?,
            percent_encode(mount_path)
        );
        let request = self.client().request(Method::DELETE, &path);
        self.client().empty(request).await
    }

    /// The sandbox's bucket mounts (never their credentials).
    pub async fn bucket_mounts(&self) -> Result<Vec<BucketMountInfo>> {
        let request = self.client().request(Method::GET, &self.mounts_path()?);
        let list: BucketMountList = self.client().json(request).await?;
        Ok(list.mounts)
    }

    fn mounts_path(&self) -> Result<String> {
        check_id(self.id())?;
        Ok(format!("/v1/sandboxes/{}/mounts", self.id()))
    }
}
