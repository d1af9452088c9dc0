//! Raw file bytes, a sandpit extension of the container API (the JSON file API caps reads at
//! 32 MiB and base64-inflates writes):
//!
//! * `GET /api/files/raw?path=P[&sessionId=S]`: the file's bytes, `application/octet-stream`
//!   with `Content-Length`. A file that shrinks while it is sent ends the response early with a
//!   broken connection, never a silently short body.
//! * `PUT /api/files/raw?path=P[&sessionId=S]`: the request body becomes the file's content,
//!   written to a temp file beside it and renamed over it (missing parents are created, an
//!   existing file keeps its permissions). A failed or aborted upload leaves nothing behind.
//!   Answers [`FileUploadResponse`].
//!
//! Paths follow the file API: absolute, or relative to the session's cwd (the workspace).
//! Both directions stream in pieces of [`PIECE`] bytes, so memory stays flat for any size.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::body::{Body, BodyDataStream};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderValue, header};
use sandpit_protocol::container::FileUploadResponse;
use sandpit_protocol::time;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::Agent;
use crate::error::{ApiError, io_error};
use crate::files::{self, WriteTarget};
use crate::handler::{ApiResult, AppState, blocking};

/// Read and write granularity.
pub const PIECE: usize = 256 * 1024;
/// How much of an upload's remaining body is read and dropped after it fails, so the
/// error reaches the client as an answer rather than a broken connection.
const DRAIN_AFTER_ERROR: usize = 64 << 20;

/// The query of both endpoints.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawQuery {
    pub path: String,
    pub session_id: Option<String>,
}

type RawParams = Result<Query<RawQuery>, QueryRejection>;

/// `/api/files/raw`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/files/raw", get(download).put(upload))
}

/// The checked path (resolved, and as given) of a request.
fn target(agent: &Agent, params: RawParams) -> Result<(PathBuf, String), ApiError> {
    let Query(q) = params.map_err(|e| ApiError::validation("path", e.body_text()))?;
    let path = files::resolve(&q.path, &agent.base_dir(q.session_id.as_deref()), "path")?;
    Ok((path, q.path))
}

/// `GET /api/files/raw`.
async fn download(State(agent): State<AppState>, params: RawParams) -> ApiResult<Response> {
    let (path, shown) = target(&agent, params)?;
    let (file, size) = blocking(move || open_regular(&path, &shown)).await?;
    let stream = futures::stream::unfold(
        (tokio::fs::File::from_std(file), size),
        |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let want = left.min(PIECE as u64) as usize;
            let mut buf = BytesMut::with_capacity(want);
            let item = match (&mut file).take(want as u64).read_buf(&mut buf).await {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while it was read",
                )),
                Ok(n) => Ok((buf.freeze(), n as u64)),
                Err(e) => Err(e),
            };
            match item {
                Ok((bytes, n)) => Some((Ok::<Bytes, std::io::Error>(bytes), (file, left - n))),
                // Ends the body with an error: hyper breaks the connection.
                Err(e) => Some((Err(e), (file, 0))),
            }
        },
    );
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

/// Opens a regular file for reading: a directory is `IS_DIRECTORY`, a missing file
/// `FILE_NOT_FOUND`, anything else that is not a regular file (FIFO, device) is refused.
fn open_regular(path: &Path, shown: &str) -> Result<(fs::File, u64), ApiError> {
    files::regular_file(path, shown, None)?;
    // O_NONBLOCK: a FIFO swapped in after the check must not block the open.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io_error(&e, shown, "file.read"))?;
    let meta = file
        .metadata()
        .map_err(|e| io_error(&e, shown, "file.read"))?;
    if !meta.is_file() {
        return Err(ApiError::validation(
            "path",
            format!("not a regular file: {shown}"),
        ));
    }
    Ok((file, meta.len()))
}

/// Removes the temp file of an upload unless the upload got to the rename. Runs on errors and
/// when the request is dropped (the client went away).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// `PUT /api/files/raw`.
async fn upload(
    State(agent): State<AppState>,
    params: RawParams,
    body: Body,
) -> ApiResult<Json<FileUploadResponse>> {
    let mut stream = body.into_data_stream();
    match upload_inner(&agent, params, &mut stream).await {
        Ok(answer) => Ok(answer),
        Err(e) => {
            // Read what the client is still sending (up to a bound) before answering, whether
            // the upload failed before its first byte (a directory, a read-only path) or
            // midway: an answer sent while the request body is in flight makes the sender's
            // write fail, and a proxy in between (the control plane) then reports that
            // instead of this error.
            let mut drained = 0usize;
            while drained < DRAIN_AFTER_ERROR {
                match stream.next().await {
                    Some(Ok(piece)) => drained += piece.len(),
                    _ => break,
                }
            }
            Err(e)
        }
    }
}

async fn upload_inner(
    agent: &Agent,
    params: RawParams,
    stream: &mut BodyDataStream,
) -> ApiResult<Json<FileUploadResponse>> {
    let (path, shown) = target(agent, params)?;
    let err = {
        let shown = shown.clone();
        move |e: std::io::Error| io_error(&e, &shown, "file.write")
    };
    let prepared = {
        let shown = shown.clone();
        blocking(move || {
            let target = files::write_target(&path, &shown)?;
            let temp = match &target {
                WriteTarget::InPlace(_) => None,
                WriteTarget::Replace { target, .. } => Some(files::temp_beside(target, &shown)?),
            };
            Ok((target, temp))
        })
        .await?
    };
    let (target, temp) = prepared;
    let mut guard = TempGuard(temp.clone());
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true);
    let file = match (&target, &temp) {
        (WriteTarget::InPlace(dest), _) => options.open(dest).await,
        (WriteTarget::Replace { .. }, Some(temp)) => options.create_new(true).open(temp).await,
        (WriteTarget::Replace { .. }, None) => return Err(ApiError::internal("no temp file")),
    };
    let mut file = file.map_err(&err)?;
    if let WriteTarget::Replace {
        existing: Some(meta),
        ..
    } = &target
    {
        file.set_permissions(meta.permissions())
            .await
            .map_err(&err)?;
    }

    let mut size = 0u64;
    let written = async {
        let mut buf = BytesMut::with_capacity(PIECE);
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| {
                ApiError::validation("body", format!("upload broke off after {size} bytes: {e}"))
            })?;
            size += piece.len() as u64;
            buf.extend_from_slice(&piece);
            if buf.len() >= PIECE {
                file.write_all(&buf).await.map_err(&err)?;
                buf.clear();
            }
        }
        file.write_all(&buf).await.map_err(&err)?;
        // Waits for the last write and reports its error.
        file.flush().await.map_err(&err)
    }
    .await;
    written?;
    drop(file);

    if let (WriteTarget::Replace { target, .. }, Some(temp)) = (&target, &temp) {
        tokio::fs::rename(temp, target).await.map_err(&err)?;
    }
    guard.0 = None;
    Ok(Json(FileUploadResponse {
        success: true,
        path: shown,
        size,
        timestamp: time::now(),
    }))
}
