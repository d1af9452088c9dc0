//! Directory backups (a sandpit extension; the control plane drives them, see
//! `crate::backup` for what is archived and how extraction stays inside its target):
//!
//! * `POST /api/backup/archive` `{dir, excludes?, gitignore?}`: answers the tar stream of `dir`
//!   (`application/x-tar`, chunked). A failure before the first byte is an error envelope
//!   (`INVALID_BACKUP_CONFIG` for a missing or non-directory `dir`); one midway breaks the
//!   stream, never a silently short archive.
//! * `POST /api/backup/extract?dir=D`: the body is a tar stream; it is unpacked into a staging
//!   directory and swapped in over `D` only when the body ended cleanly. Answers
//!   [`ExtractResponse`]; a failure (`BACKUP_RESTORE_FAILED`) leaves `D` as it was.
//!
//! Paths are absolute or relative to the workspace.

use std::io::{self, Read, Write};

use axum::Router;
use axum::body::Body as RawBody;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use bytes::{Buf, Bytes};
use futures::StreamExt;
use http::{HeaderValue, header};
use sandpit_protocol::ErrorCode;
use sandpit_protocol::backup::{ArchiveRequest, ExtractResponse};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::backup::{self, ArchiveOptions, ArchiveSink, BackupError};
use crate::error::ApiError;
use crate::files;
use crate::handler::{ApiResult, AppState, Body, blocking};

/// Size of the pieces the archive is sent in.
const PIECE: usize = 1 << 20;

/// `/api/backup/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/backup/archive", post(archive))
        .route("/api/backup/extract", post(extract))
}

fn config_error(e: BackupError) -> ApiError {
    match e {
        BackupError::Invalid(m) => ApiError::new(ErrorCode::InvalidBackupConfig, m),
        other => ApiError::new(ErrorCode::BackupCreateFailed, other.to_string()),
    }
}

/// `POST /api/backup/archive`.
async fn archive(
    State(agent): State<AppState>,
    Body(req): Body<ArchiveRequest>,
) -> ApiResult<Response> {
    let dir = files::resolve(&req.dir, &agent.base_dir(None), "dir")?;
    {
        let dir = dir.clone();
        blocking(move || backup::check_dir(&dir).map_err(config_error)).await?;
    }
    let options = ArchiveOptions {
        excludes: req.excludes,
        gitignore: req.gitignore,
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(PIECE),
        };
        let result = backup::write_archive(&dir, &options, &mut out);
        match result {
            Ok(stats) => {
                tracing::debug!(
                    entries = stats.entries,
                    bytes = stats.file_bytes,
                    "archived"
                );
            }
            Err(e) => {
                // Ends the body with an error: hyper breaks the connection.
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut response = RawBody::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

/// Sends what is written to it in pieces of [`PIECE`] bytes; fails once the receiver is gone.
/// Large pieces of file data ([`ArchiveSink::put_piece`]) are sent as they are, without a copy.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.send_bytes(piece)
    }

    fn send_bytes(&self, piece: Bytes) -> io::Result<()> {
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "receiver went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = PIECE - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Pieces smaller than this are gathered with what else is written (small files), larger ones
/// go out whole.
const WHOLE_PIECE: usize = 64 << 10;

impl ArchiveSink for ChannelWriter {
    fn put_piece(&mut self, piece: Vec<u8>) -> io::Result<()> {
        if piece.len() < WHOLE_PIECE {
            return self.write_all(&piece);
        }
        // What was written before (the entry's header) goes first.
        self.send()?;
        self.send_bytes(Bytes::from(piece))
    }
}

/// The query of `/api/backup/extract`.
#[derive(Debug, Deserialize)]
pub struct ExtractQuery {
    pub dir: String,
}

/// `POST /api/backup/extract`.
async fn extract(
    State(agent): State<AppState>,
    params: Result<Query<ExtractQuery>, QueryRejection>,
    body: RawBody,
) -> ApiResult<Json<ExtractResponse>> {
    let Query(q) = params.map_err(|e| ApiError::validation("dir", e.body_text()))?;
    let dir = files::resolve(&q.dir, &agent.base_dir(None), "dir")?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let mut stream = body.into_data_stream();
    let pump = tokio::spawn(async move {
        while let Some(piece) = stream.next().await {
            let item = piece.map_err(|e| io::Error::other(format!("request body broke: {e}")));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    let shown = q.dir.clone();
    let result = blocking(move || {
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        backup::extract(&dir, reader)
            .map_err(|e| ApiError::new(ErrorCode::BackupRestoreFailed, e.to_string()))
    })
    .await;
    pump.abort();
    let stats = result?;
    Ok(Json(ExtractResponse {
        success: true,
        dir: shown,
        entries: stats.entries,
        file_bytes: stats.file_bytes,
        skipped: stats.skipped,
    }))
}

/// Reads the pieces a channel delivers; an `Err` piece is a read error, a closed channel EOF.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
