//! Directory backups: the control plane's half (issue 13 item 2).
//!
//! **Create**: the sandbox's agent streams a tar of the directory (`POST /api/backup/archive`;
//! the archive is made inside the sandbox, so it is what the sandbox sees and nothing outside
//! its view can be read). Here it is compressed with zstd (with zstd's frame checksum),
//! SHA-256-hashed and uploaded to the object store in parts as it arrives: memory stays flat
//! whatever the size. The record (tenant, sizes, checksum, expiry) is in the store; it is
//! listed only once the upload completed.
//!
//! **Restore**: the archive is downloaded, hashed, decompressed (capped at the recorded raw
//! size, so a tampered object cannot inflate) and streamed to the agent
//! (`POST /api/backup/extract`), which unpacks into a staging directory and swaps it in only
//! when the stream ends cleanly. A checksum or size mismatch is detected at the end of the
//! download and breaks the stream instead of ending it, so the agent discards the staging
//! directory and the target stays as it was.
//!
//! Backups are tenant-scoped (another tenant's id is "not found"); expired ones answer
//! `BACKUP_EXPIRED` until the reaper deletes them (every [`REAP_EVERY`]).

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::{StatusCode, header};
use http_body_util::BodyExt;
use sandpit_protocol::backup::{
    ArchiveRequest, BackupInfo, CreateBackupRequest, DEFAULT_TTL_SECS, ExtractResponse,
    MAX_NAME_CHARS, RestoreBackupRequest, RestoreBackupResponse, validate_dir,
};
use sandpit_protocol::control::validate_sandbox_id;
use sandpit_protocol::{ErrorCode, ErrorResponse};
use sandpit_store::{BackupRecord, BackupState, Store};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{ms_timestamp, now_ms};
use crate::objects::Objects;

/// How often expired backups are deleted.
pub const REAP_EVERY: Duration = Duration::from_secs(60);
/// A create older than this that never finished (the server died meanwhile) is reaped.
const STALE_CREATE_MS: i64 = 24 * 3600 * 1000;
/// Longest time to live.
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;
/// Most exclude patterns, and longest one.
const MAX_EXCLUDES: usize = 1000;
const MAX_PATTERN_CHARS: usize = 4096;
/// Largest error answer read from the agent.
const MAX_AGENT_ERROR: usize = 64 << 10;
/// Default zstd level: the fastest (the archive is made to move, not to be smallest).
const DEFAULT_LEVEL: i32 = 1;

/// The per-tenant caps on backups (`sandpit serve --max-backup-*`). Reaching one refuses a new
/// backup with `QUOTA_EXCEEDED`; a backup that would pass the byte cap while it is written is
/// aborted with the same code and leaves nothing behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupLimits {
    /// Most backups one tenant keeps (default 100).
    pub max_count: u64,
    /// Most stored (compressed) bytes of one tenant's backups (default 100 GiB).
    pub max_bytes: u64,
}

impl Default for BackupLimits {
    fn default() -> Self {
        BackupLimits {
            max_count: 100,
            max_bytes: 100 << 30,
        }
    }
}

/// Backups over an object store.
pub struct Backups {
    store: Arc<dyn Store>,
    objects: Objects,
    limits: BackupLimits,
}

fn key_of(id: &str) -> String {
    format!("backups/{id}.tar.zst")
}

fn info(r: &BackupRecord) -> BackupInfo {
    BackupInfo {
        id: r.id.clone(),
        dir: r.dir.clone(),
        name: r.name.clone(),
        sandbox_id: r.sandbox_id.clone(),
        size_bytes: r.size_bytes,
        raw_bytes: r.raw_bytes,
        sha256: r.sha256.clone(),
        created_at: ms_timestamp(r.created_at_ms),
        expires_at: ms_timestamp(r.expires_at_ms),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidBackupConfig, message)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BackupNotFound,
        format!("backup {id:?} not found"),
    )
    .context("backupId", id)
}

impl Backups {
    /// The object store backups (and snapshot exports) are kept in.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    pub fn new(store: Arc<dyn Store>, objects: Objects, limits: BackupLimits) -> Self {
        Backups {
            store,
            objects,
            limits,
        }
    }

    /// A tenant's ready backup, or `BACKUP_NOT_FOUND` (also for another tenant's id).
    async fn ready(&self, tenant: &str, id: &str) -> ApiResult<BackupRecord> {
        match self.store.get_backup(tenant, id).await? {
            Some(r) if r.state == BackupState::Ready => Ok(r),
            _ => Err(not_found(id)),
        }
    }

    pub async fn list(&self, tenant: &str) -> ApiResult<Vec<BackupInfo>> {
        let records = self.store.list_backups(tenant).await?;
        Ok(records.iter().map(info).collect())
    }

    /// A backup's metadata (also when expired: its `expiresAt` says so).
    pub async fn get(&self, tenant: &str, id: &str) -> ApiResult<BackupInfo> {
        Ok(info(&self.ready(tenant, id).await?))
    }

    /// Deletes a backup's archive and record.
    pub async fn delete(&self, tenant: &str, id: &str) -> ApiResult<()> {
        let record = self.ready(tenant, id).await?;
        self.objects
            .delete(&key_of(&record.id))
            .await
            .map_err(|e| ApiError::internal(format!("deleting the archive: {e}")))?;
        self.store.delete_backup(tenant, id).await?;
        Ok(())
    }

    /// Deletes expired backups and creates that never finished. Returns how many.
    pub async fn reap(&self) -> usize {
        let now = now_ms();
        let records = match self
            .store
            .expired_backups(now, now - STALE_CREATE_MS, 100)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "listing expired backups");
                return 0;
            }
        };
        let mut n = 0;
        for r in records {
            if let Err(e) = self.objects.delete(&key_of(&r.id)).await {
                tracing::warn!(backup = %r.id, error = %e, "deleting an expired backup's archive");
                continue;
            }
            if self.store.delete_backup(&r.tenant, &r.id).await.is_ok() {
                n += 1;
            }
        }
        n
    }

    /// `POST /v1/sandboxes/{id}/backups`.
    pub(crate) async fn create(
        &self,
        app: &AppState,
        tenant: &str,
        sandbox_id: &str,
        req: CreateBackupRequest,
    ) -> ApiResult<BackupInfo> {
        validate_sandbox_id(sandbox_id)
            .map_err(|m| ApiError::validation(m).context("id", sandbox_id))?;
        validate_dir(&req.dir).map_err(invalid)?;
        if let Some(name) = &req.name
            && name.chars().count() > MAX_NAME_CHARS
        {
            return Err(invalid(format!(
                "name is longer than {MAX_NAME_CHARS} characters"
            )));
        }
        let ttl = match &req.ttl {
            None => Duration::from_secs(DEFAULT_TTL_SECS),
            Some(v) => sandpit_protocol::time::parse_duration(v)
                .map_err(|m| invalid(format!("ttl: {m}")))?,
        };
        if ttl > Duration::from_secs(MAX_TTL_SECS) {
            return Err(invalid(format!(
                "ttl is longer than {} days",
                MAX_TTL_SECS / 86_400
            )));
        }
        if req.excludes.len() > MAX_EXCLUDES
            || req
                .excludes
                .iter()
                .any(|p| p.chars().count() > MAX_PATTERN_CHARS || p.contains('\0'))
        {
            return Err(invalid(format!(
                "excludes: at most {MAX_EXCLUDES} patterns of at most {MAX_PATTERN_CHARS} \
                 characters, without NUL"
            )));
        }
        let mut level = DEFAULT_LEVEL;
        if let Some(c) = &req.compression {
            match c.format.as_deref() {
                None | Some("zstd") => {}
                Some(other) => {
                    return Err(invalid(format!(
                        "compression.format {other:?} is not supported (only \"zstd\")"
                    )));
                }
            }
            if let Some(l) = c.level {
                if !(1..=19).contains(&l) {
                    return Err(invalid("compression.level must be 1 to 19"));
                }
                level = l;
            }
        }
        // A backup of a sandbox that does not exist is an error, not a reason to create it.
        if self.store.get_sandbox(tenant, sandbox_id).await?.is_none() {
            return Err(ApiError::sandbox_not_found(sandbox_id));
        }
        let (count, used) = self.store.backup_usage(tenant).await?;
        if count >= self.limits.max_count {
            return Err(ApiError::new(
                ErrorCode::QuotaExceeded,
                format!("the tenant has {count} backups, the most allowed (delete some first)"),
            ));
        }
        if used >= self.limits.max_bytes {
            return Err(ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the tenant's backups use {used} bytes, the most allowed is {}",
                    self.limits.max_bytes
                ),
            ));
        }

        let now = now_ms();
        let record = BackupRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: tenant.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
            dir: req.dir.trim_end_matches('/').to_owned(),
            name: req.name.clone(),
            state: BackupState::Creating,
            size_bytes: 0,
            raw_bytes: 0,
            sha256: String::new(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl.as_millis() as i64),
        };
        self.store.insert_backup(&record).await?;
        let budget = self.limits.max_bytes - used;
        match self.upload(app, &record, &req, level, budget).await {
            Ok((size, raw, sha)) => {
                self.store
                    .finish_backup(&record.id, size, raw, &sha)
                    .await?;
                let mut done = record;
                done.state = BackupState::Ready;
                done.size_bytes = size;
                done.raw_bytes = raw;
                done.sha256 = sha;
                Ok(info(&done))
            }
            Err(e) => {
                let _ = self.store.delete_backup(tenant, &record.id).await;
                Err(e)
            }
        }
    }

    /// Streams the agent's tar through zstd and SHA-256 into the object store.
    async fn upload(
        &self,
        app: &AppState,
        record: &BackupRecord,
        req: &CreateBackupRequest,
        level: i32,
        budget: u64,
    ) -> ApiResult<(u64, u64, String)> {
        let body = serde_json::to_vec(&ArchiveRequest {
            dir: record.dir.clone(),
            excludes: req.excludes.clone(),
            gitignore: req.gitignore,
        })
        .map_err(ApiError::internal)?;
        let request = Request::post("/api/backup/archive")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(ApiError::internal)?;
        let response = crate::forward::proxy(
            app,
            request,
            &record.tenant,
            &record.sandbox_id,
            "/api/backup/archive".into(),
            None,
        )
        .await?;
        if response.status() != StatusCode::OK {
            return Err(agent_error(response, ErrorCode::BackupCreateFailed).await);
        }
        let mut tar = TryStreamExt::map_err(response.into_body().into_data_stream(), |e| {
            io::Error::other(format!("the sandbox's archive stream broke: {e}"))
        });
        let writer = SyncIoBridge::new(self.objects.writer(&key_of(&record.id)));
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let mut out = HashingWriter::new(writer, budget);
            let result = encode_pieces(|| runtime.block_on(tar.next()), &mut out, level);
            (result, out)
        });
        let (result, out) = task
            .await
            .map_err(|e| ApiError::internal(format!("backup task: {e}")))?;
        let HashingWriter {
            inner,
            hasher,
            written,
            ..
        } = out;
        let mut writer = inner.into_inner();
        match result {
            Ok(raw) => {
                writer.shutdown().await.map_err(|e| {
                    ApiError::new(
                        ErrorCode::BackupCreateFailed,
                        format!("completing the upload to {}: {e}", self.objects.describe),
                    )
                })?;
                Ok((written, raw, hex::encode(hasher.finalize())))
            }
            Err(e) => {
                let _ = writer.abort().await;
                let _ = self.objects.delete(&key_of(&record.id)).await;
                if e.kind() == io::ErrorKind::QuotaExceeded {
                    return Err(ApiError::new(ErrorCode::QuotaExceeded, e.to_string()));
                }
                Err(ApiError::new(
                    ErrorCode::BackupCreateFailed,
                    format!("backup of {} failed: {e}", record.dir),
                ))
            }
        }
    }

    /// `POST /v1/sandboxes/{id}/restore`.
    pub(crate) async fn restore(
        &self,
        app: &AppState,
        tenant: &str,
        sandbox_id: &str,
        req: RestoreBackupRequest,
    ) -> ApiResult<RestoreBackupResponse> {
        validate_sandbox_id(sandbox_id)
            .map_err(|m| ApiError::validation(m).context("id", sandbox_id))?;
        let record = self.ready(tenant, &req.backup_id).await?;
        if record.expires_at_ms <= now_ms() {
            return Err(ApiError::new(
                ErrorCode::BackupExpired,
                format!(
                    "backup {:?} expired at {}",
                    record.id,
                    ms_timestamp(record.expires_at_ms)
                ),
            )
            .context("backupId", record.id.as_str()));
        }
        let dir = req
            .dir
            .as_deref()
            .map(|d| d.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| record.dir.clone());
        validate_dir(&dir).map_err(invalid)?;
        let object = match self.objects.read(&key_of(&record.id)).await {
            Ok(s) => s,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ApiError::new(
                    ErrorCode::BackupNotFound,
                    format!(
                        "the archive of backup {:?} is missing from the object store",
                        record.id
                    ),
                )
                .context("backupId", record.id.as_str()));
            }
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::BackupRestoreFailed,
                    format!("reading the archive from {}: {e}", self.objects.describe),
                ));
            }
        };

        // Download → (hash on a thread of its own) → zstd → cap → channel, on blocking threads;
        // the body reads the channel and ends cleanly only if the blocking side says everything
        // checked out (size and checksum, known once the whole archive was read). The pieces
        // go to the body as they were decompressed, without a copy.
        let (piece_tx, piece_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let verdict: Arc<Mutex<Option<Result<(), String>>>> = Arc::new(Mutex::new(None));
        let (hash_tx, hash_rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut rx = hash_rx;
            let mut hasher = Sha256::new();
            while let Some(piece) = rx.blocking_recv() {
                hasher.update(&piece);
            }
            hex::encode(hasher.finalize())
        });
        let object = object
            .map_err(|e| io::Error::other(format!("reading the archive: {e}")))
            .and_then(move |piece| {
                let tx = hash_tx.clone();
                async move {
                    tx.send(piece.clone())
                        .await
                        .map_err(|_| io::Error::other("the checksum thread stopped"))?;
                    Ok(piece)
                }
            })
            .boxed();
        let reader = SyncIoBridge::new(StreamReader::new(object));
        let (expected_sha, expected_raw) = (record.sha256.clone(), record.raw_bytes);
        let slot = verdict.clone();
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            // Owned out here: the channel must close only after the verdict is set.
            let tx = piece_tx;
            let outcome = decode_capped(reader, expected_raw, |piece| {
                // A closed channel: the body is gone (the agent answered or the request
                // failed); nothing more to check.
                Ok(tx.blocking_send(piece).is_ok())
            })
            .and_then(|complete| {
                if !complete {
                    return Ok(());
                }
                // The reader (and with it the hash channel) is gone: the hash is final.
                let sha = runtime
                    .block_on(hasher)
                    .map_err(|e| io::Error::other(format!("checksum thread: {e}")))?;
                check_sha(&sha, &expected_sha)
            });
            if let Ok(mut v) = slot.lock() {
                *v = Some(outcome.map_err(|e| e.to_string()));
            }
            drop(tx);
        });
        let checked = verdict.clone();
        let pieces = futures::stream::unfold(piece_rx, |mut rx| async move {
            rx.recv().await.map(|piece| (Ok::<_, io::Error>(piece), rx))
        });
        let body_stream = pieces.chain(
            futures::stream::once(async move {
                let v = checked.lock().ok().and_then(|v| v.clone());
                match v {
                    Some(Ok(())) => Ok(Bytes::new()),
                    Some(Err(m)) => Err(io::Error::other(m)),
                    None => Err(io::Error::other("the archive stream ended early")),
                }
            })
            .filter(|item| futures::future::ready(!matches!(item, Ok(b) if b.is_empty()))),
        );
        let target = format!("/api/backup/extract?dir={}", percent_encode_query(&dir));
        let request = Request::post(target.as_str())
            .header(header::CONTENT_TYPE, "application/x-tar")
            .body(Body::from_stream(body_stream))
            .map_err(ApiError::internal)?;
        let answer =
            crate::forward::proxy(app, request, tenant, sandbox_id, target.clone(), None).await;
        // The agent may have answered without reading the whole body; the channel is closed then
        // and the task ends at its next write.
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        let problem = verdict
            .lock()
            .ok()
            .and_then(|v| v.clone())
            .and_then(Result::err);
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                return Err(match problem {
                    Some(m) => restore_failed(&record.id, m),
                    None => e,
                });
            }
        };
        if response.status() != StatusCode::OK {
            let e = agent_error(response, ErrorCode::BackupRestoreFailed).await;
            return Err(match problem {
                Some(m) => restore_failed(&record.id, m),
                None => e,
            });
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| restore_failed(&record.id, e.to_string()))?
            .to_bytes();
        let done: ExtractResponse = serde_json::from_slice(&bytes)
            .map_err(|e| restore_failed(&record.id, format!("agent answer: {e}")))?;
        Ok(RestoreBackupResponse {
            success: true,
            id: record.id,
            dir,
            entries: done.entries,
            file_bytes: done.file_bytes,
        })
    }
}

fn restore_failed(id: &str, message: String) -> ApiError {
    ApiError::new(
        ErrorCode::BackupRestoreFailed,
        format!("restore of backup {id:?} failed, the directory was left as it was: {message}"),
    )
    .context("backupId", id)
}

/// The agent's error answer as ours: its code when it is a protocol envelope, else `fallback`.
async fn agent_error(response: axum::response::Response, fallback: ErrorCode) -> ApiError {
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_AGENT_ERROR)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match serde_json::from_slice::<ErrorResponse>(&body) {
        Ok(e) => ApiError(Box::new(e)),
        Err(_) => ApiError::new(
            fallback,
            format!(
                "the sandbox agent answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        ),
    }
}

/// Encodes a query value (`/`, letters and digits stay; everything else is `%XX`).
fn percent_encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Hashes and counts what passes; refuses to pass more than `budget` bytes.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) written: u64,
    pub(crate) budget: u64,
}

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W, budget: u64) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
            budget,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.budget {
            return Err(io::Error::new(
                io::ErrorKind::QuotaExceeded,
                format!(
                    "the backup would pass the tenant's backup byte quota ({} bytes left)",
                    self.budget
                ),
            ));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read through it.
pub(crate) struct HashingReader<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Compresses everything `reader` yields into `out` with zstd (frame checksum on); returns the
/// number of raw bytes.
///
/// The compression runs on [`compression_workers`] threads of zstd's own (the frame is the same
/// single zstd frame any decoder reads), so this thread only moves the bytes: reading the input
/// in pieces of [`COPY_PIECE`] and hashing and storing the output overlap with compression.
pub(crate) fn encode(reader: impl Read, out: &mut impl Write, level: i32) -> io::Result<u64> {
    let mut encoder = new_encoder(out, level)?;
    // `io::copy` from a `BufReader` reads straight into its buffer: one read per piece.
    let mut reader = io::BufReader::with_capacity(COPY_PIECE, reader);
    let raw = io::copy(&mut reader, &mut encoder)?;
    encoder.finish()?;
    Ok(raw)
}

/// [`encode`] of input that arrives in pieces (an HTTP body): each piece goes to zstd as it
/// is, without first being copied into a read buffer.
pub(crate) fn encode_pieces(
    mut next: impl FnMut() -> Option<io::Result<Bytes>>,
    out: &mut impl Write,
    level: i32,
) -> io::Result<u64> {
    let mut encoder = new_encoder(out, level)?;
    let mut raw = 0u64;
    while let Some(piece) = next() {
        let piece = piece?;
        encoder.write_all(&piece)?;
        raw += piece.len() as u64;
    }
    encoder.finish()?;
    Ok(raw)
}

/// A zstd encoder at `level` with the frame checksum, on [`compression_workers`] threads.
fn new_encoder<W: Write>(
    out: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    encoder.include_checksum(true)?;
    let workers = compression_workers();
    if workers > 0 {
        encoder.multithread(workers)?;
    }
    Ok(encoder)
}

/// Size of the pieces [`encode`] reads its input in.
const COPY_PIECE: usize = 1 << 20;

/// zstd worker threads per compression: one per CPU, at most 4 (0: compress on the caller's
/// thread, on a one-CPU host).
pub(crate) fn compression_workers() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus <= 1 { 0 } else { cpus.min(4) as u32 }
}

/// Decompresses a stored archive (zstd) from `input` and hands the raw bytes to `emit` in pieces
/// of up to [`COPY_PIECE`] bytes, then checks them against the record: no more than `expected_raw` bytes are inflated,
/// and the SHA-256 of everything read (including what follows the zstd frame) must be
/// `expected_sha`. `emit` answers `false` when its reader is gone: the rest is not checked.
pub(crate) fn decode_verified(
    input: impl Read,
    expected_raw: u64,
    expected_sha: &str,
    emit: impl FnMut(Bytes) -> io::Result<bool>,
) -> io::Result<()> {
    let mut hashing = HashingReader {
        inner: input,
        hasher: Sha256::new(),
    };
    if !decode_capped(&mut hashing, expected_raw, emit)? {
        return Ok(());
    }
    check_sha(&hex::encode(hashing.hasher.finalize()), expected_sha)
}

/// The SHA-256 check of [`decode_verified`].
fn check_sha(sha: &str, expected_sha: &str) -> io::Result<()> {
    if sha != expected_sha {
        return Err(io::Error::other(format!(
            "the archive's SHA-256 is {sha}, {expected_sha} was recorded"
        )));
    }
    Ok(())
}

/// [`decode_verified`] without the checksum: decompresses all of `input` (reading it to its
/// end, also past the zstd frame) and checks the raw size. `Ok(false)`: `emit`'s reader is
/// gone, nothing more was read. `input` is dropped before this returns.
fn decode_capped(
    mut input: impl Read,
    expected_raw: u64,
    mut emit: impl FnMut(Bytes) -> io::Result<bool>,
) -> io::Result<bool> {
    let mut raw = 0u64;
    {
        let decoder = zstd::stream::read::Decoder::new(&mut input)?;
        // One byte more than recorded: enough to tell "too much" without inflating further.
        let mut capped = decoder.take(expected_raw + 1);
        loop {
            // A fresh piece each time, filled as far as the decoder goes (it answers after each
            // block of input), handed over without a copy.
            let mut piece = vec![0u8; COPY_PIECE];
            let mut filled = 0;
            while filled < piece.len() {
                match capped.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                break;
            }
            raw += filled as u64;
            piece.truncate(filled);
            if !emit(Bytes::from(piece))? {
                return Ok(false);
            }
        }
    }
    // Whatever follows the zstd frame counts towards the checksum too.
    io::copy(&mut input, &mut io::sink())?;
    if raw != expected_raw {
        return Err(io::Error::other(format!(
            "the archive decompresses to {}{raw} bytes, {expected_raw} were recorded",
            if raw > expected_raw { "more than " } else { "" }
        )));
    }
    Ok(true)
}

/// Deletes expired backups every [`REAP_EVERY`] until `stop`.
pub async fn reap_forever(backups: Arc<Backups>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // One replica of a cluster per round (PostgreSQL advisory lock); a single
                // box always holds it.
                let Ok(Some(_job)) = backups.store.try_lock_job("backup-expiry").await else {
                    continue;
                };
                let n = backups.reap().await;
                if n > 0 {
                    tracing::info!(deleted = n, "reaped expired backups");
                }
            }
            _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            percent_encode_query("/workspace/a b&c"),
            "/workspace/a%20b%26c"
        );
        assert_eq!(percent_encode_query("/tmp/ü"), "/tmp/%C3%BC");
    }
}
