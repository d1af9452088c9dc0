//! Snapshot export and import through the object store (docs/persistence.md, "Export and
//! import"): a snapshot's layers as one zstd-compressed, SHA-256-checked archive, so it
//! outlives the server's disk and moves to another server using the same store.
//!
//! Export: the driver writes the archive (a tar stream) into a pipe; a blocking task compresses
//! it, hashes it and uploads it in parts as it comes ([`Objects::writer`]); nothing is held
//! whole in memory. Next to the archive `<key>` the server stores `<key>.json`: the tenant, the
//! snapshot's record and the archive's size and digest. Import reads that record first (another
//! tenant's export answers exactly like a missing one), then streams the archive through
//! SHA-256, a size cap and zstd into the driver, and ends the stream with an error instead of
//! its end when the digest or size differ, so the driver keeps nothing.

use std::io;

use bytes::Bytes;
use futures::TryStreamExt;
use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::{
    ImportSnapshotRequest, Isolation, SNAPSHOT_EXPORT_PREFIX, SnapshotExport, SnapshotInfo,
};
use sandpit_store::SnapshotRecord;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::snapshots::{snapshot_info, snapshot_not_found, validate_name};
use super::{Manager, now_ms};
use crate::backups::{HashingWriter, decode_verified, encode};
use crate::error::{ApiError, ApiResult};
use crate::objects::Objects;

/// Version of the record stored next to an export.
const RECORD_FORMAT: u32 = 1;
/// Largest export record read.
const MAX_RECORD: usize = 64 << 10;
/// Longest object key accepted.
const MAX_KEY: usize = 512;

/// `<key>.json`: what the server needs to import an export, and whose it is.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportRecord {
    format: u32,
    tenant: String,
    snapshot_id: String,
    name: Option<String>,
    sandbox_id: String,
    image: String,
    isolation: Isolation,
    /// The archive as stored.
    size_bytes: u64,
    raw_bytes: u64,
    sha256: String,
    exported_at_ms: i64,
}

fn record_key(key: &str) -> String {
    format!("{key}.json")
}

fn export_not_found(key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SnapshotExportNotFound,
        format!("no snapshot export {key:?} of yours in the object store"),
    )
    .context("objectKey", key)
}

fn import_failed(key: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::SnapshotImportFailed,
        format!("importing {key:?} failed: {message}; nothing was kept"),
    )
    .context("objectKey", key)
}

/// Keys of exports: `snapshot-exports/<tenant>/<name>.tar.zst`, plain segments.
fn check_key(key: &str, tenant: &str) -> ApiResult<()> {
    let Some(rest) = key.strip_prefix(SNAPSHOT_EXPORT_PREFIX) else {
        return Err(ApiError::validation(format!(
            "objectKey must start with {SNAPSHOT_EXPORT_PREFIX:?} (the objectKey of an export)"
        ))
        .context("objectKey", key));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let plain = key.len() <= MAX_KEY
        && key.ends_with(".tar.zst")
        && segments.len() == 2
        && segments.iter().all(|s| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if !plain {
        return Err(
            ApiError::validation(format!("objectKey {key:?} is not an export's key"))
                .context("objectKey", key),
        );
    }
    if segments[0] != tenant {
        return Err(export_not_found(key));
    }
    Ok(())
}

impl Manager {
    /// `POST /v1/snapshots/{id}/export`.
    pub async fn export_snapshot(
        &self,
        tenant: &str,
        id: &str,
        objects: &Objects,
    ) -> ApiResult<SnapshotExport> {
        // Held while the layers are read: the snapshot cannot be deleted meanwhile.
        let _guard = self.snapshot_lock.lock().await;
        let record = self
            .store
            .get_snapshot(tenant, id)
            .await?
            .ok_or_else(|| snapshot_not_found(id))?;
        let driver = self.snapshot_driver(record.isolation)?;
        let key = format!(
            "{SNAPSHOT_EXPORT_PREFIX}{tenant}/{id}-{}.tar.zst",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let failed = |m: String| {
            ApiError::new(
                ErrorCode::SnapshotExportFailed,
                format!("exporting snapshot {id:?} failed: {m}"),
            )
            .context("snapshotId", id)
        };
        let (pipe_in, pipe_out) = tokio::io::duplex(1 << 20);
        let reader = SyncIoBridge::new(pipe_out);
        let writer = SyncIoBridge::new(objects.writer(&key));
        let upload = tokio::task::spawn_blocking(move || {
            let mut out = HashingWriter::new(writer, u64::MAX);
            let result = encode(reader, &mut out, 1);
            (result, out)
        });
        let exported = driver.export_snapshot(id, Box::new(pipe_in)).await;
        let (result, out) = upload
            .await
            .map_err(|e| failed(format!("upload task: {e}")))?;
        let HashingWriter {
            inner,
            hasher,
            written,
            ..
        } = out;
        let mut writer = inner.into_inner();
        let raw = match (exported, result) {
            (Ok(()), Ok(raw)) => raw,
            (exported, result) => {
                let _ = writer.abort().await;
                let _ = objects.delete(&key).await;
                let message = match (exported, result) {
                    (Err(e), _) => e.to_string(),
                    (_, Err(e)) => format!("writing to {}: {e}", objects.describe),
                    _ => unreachable!("one of them failed"),
                };
                return Err(failed(message));
            }
        };
        if let Err(e) = writer.shutdown().await {
            let _ = objects.delete(&key).await;
            return Err(failed(format!(
                "completing the upload to {}: {e}",
                objects.describe
            )));
        }
        let sha256 = hex::encode(hasher.finalize());
        let stored = ExportRecord {
            format: RECORD_FORMAT,
            tenant: tenant.to_owned(),
            snapshot_id: record.id.clone(),
            name: record.name.clone(),
            sandbox_id: record.sandbox_id.clone(),
            image: record.image.clone(),
            isolation: record.isolation,
            size_bytes: written,
            raw_bytes: raw,
            sha256: sha256.clone(),
            exported_at_ms: now_ms(),
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(ApiError::internal)?;
        if let Err(e) = objects.put(&record_key(&key), json).await {
            let _ = objects.delete(&key).await;
            return Err(failed(format!(
                "writing the export's record to {}: {e}",
                objects.describe
            )));
        }
        tracing::info!(
            tenant,
            snapshot = id,
            key,
            bytes = written,
            "snapshot exported"
        );
        Ok(SnapshotExport {
            object_key: key,
            size_bytes: written,
            raw_bytes: raw,
            sha256,
            snapshot_id: record.id,
        })
    }

    /// `POST /v1/snapshots/import`.
    pub async fn import_snapshot(
        &self,
        tenant: &str,
        req: ImportSnapshotRequest,
        objects: &Objects,
    ) -> ApiResult<SnapshotInfo> {
        let key = req.object_key.as_str();
        check_key(key, tenant)?;
        validate_name(req.name.as_deref())?;
        if let Some(sha) = &req.sha256
            && !(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ApiError::validation(
                "sha256 must be 64 hexadecimal digits (the SHA-256 the export answered)",
            )
            .context("field", "sha256"));
        }
        let stored = match objects.get_small(&record_key(key), MAX_RECORD).await {
            Ok(Some(bytes)) => serde_json::from_slice::<ExportRecord>(&bytes)
                .map_err(|e| import_failed(key, format!("the export's record: {e}")))?,
            Ok(None) => return Err(export_not_found(key)),
            Err(e) => {
                return Err(import_failed(
                    key,
                    format!("reading the export's record from {}: {e}", objects.describe),
                ));
            }
        };
        // Another tenant's export answers exactly like a missing one.
        if stored.tenant != tenant {
            return Err(export_not_found(key));
        }
        if stored.format != RECORD_FORMAT {
            return Err(import_failed(
                key,
                format!("record format {} is not supported", stored.format),
            ));
        }
        // The caller's expectation, not the archive, is what does not match: a 400.
        if let Some(sha) = &req.sha256
            && !sha.eq_ignore_ascii_case(&stored.sha256)
        {
            return Err(ApiError::validation(format!(
                "the export's SHA-256 is {}, not the expected {sha}; nothing was imported",
                stored.sha256
            ))
            .context("objectKey", key));
        }
        let driver = self.snapshot_driver(stored.isolation)?;
        let object = match objects.read(key).await {
            Ok(s) => s,
            Err(object_store::Error::NotFound { .. }) => return Err(export_not_found(key)),
            Err(e) => {
                return Err(import_failed(
                    key,
                    format!("reading from {}: {e}", objects.describe),
                ));
            }
        };
        // Blocking side: download → hash → zstd → size cap → channel. The channel's last item
        // is an error when anything did not check out, so the driver never takes the archive.
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        let reader = SyncIoBridge::new(StreamReader::new(
            object.map_err(|e| io::Error::other(format!("reading the archive: {e}"))),
        ));
        let (expected_sha, expected_raw) = (stored.sha256.clone(), stored.raw_bytes);
        let feed = tokio::task::spawn_blocking(move || {
            let outcome = decode_verified(reader, expected_raw, &expected_sha, |piece| {
                // A closed channel: the driver stopped reading (it failed), nothing to check.
                Ok(tx.blocking_send(Ok(piece)).is_ok())
            });
            if let Err(e) = &outcome {
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
            outcome
        });
        let input = StreamReader::new(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })));
        let id = format!("snap-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
        let imported = driver.import_snapshot(&id, Box::new(input)).await;
        let checked = feed
            .await
            .map_err(|e| import_failed(key, format!("download task: {e}")))?;
        let taken = match (imported, checked) {
            (Ok(taken), Ok(())) => taken,
            (Ok(_), Err(e)) => {
                // Cannot happen (the driver reads to the error), but never keep it.
                let _ = driver.delete_snapshot(&id).await;
                return Err(import_failed(key, e));
            }
            (Err(_), Err(e)) => return Err(import_failed(key, e)),
            (Err(e), Ok(())) => return Err(import_failed(key, e)),
        };
        let record = SnapshotRecord {
            id: id.clone(),
            tenant: tenant.to_owned(),
            name: req.name.or(stored.name),
            sandbox_id: stored.sandbox_id,
            image: stored.image,
            isolation: stored.isolation,
            size_bytes: taken.size_bytes,
            created_at_ms: now_ms(),
        };
        if let Err(e) = self.store.create_snapshot(&record).await {
            let _ = driver.delete_snapshot(&id).await;
            return Err(e.into());
        }
        tracing::info!(tenant, snapshot = %id, key, "snapshot imported");
        Ok(snapshot_info(&record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_callers_export_keys_are_accepted() {
        assert!(check_key("snapshot-exports/t1/snap-1-abc.tar.zst", "t1").is_ok());
        let not_found = check_key("snapshot-exports/t2/snap-1-abc.tar.zst", "t1").unwrap_err();
        assert_eq!(not_found.code(), ErrorCode::SnapshotExportNotFound);
        for bad in [
            "backups/x",
            "snapshot-exports/t1/../t2/x.tar.zst",
            "snapshot-exports/t1/x.tar.zst.json",
            "snapshot-exports/t1/.x.tar.zst",
            "snapshot-exports/t1//x.tar.zst",
            "snapshot-exports/t1/a/x.tar.zst",
            "snapshot-exports/t1/x y.tar.zst",
        ] {
            let e = check_key(bad, "t1").unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationFailed, "{bad}");
        }
    }
}
