//! The JSON file API (reference §2.5): `POST /api/read`, `/api/read/stream` (SSE), `/api/write`,
//! `/api/delete`, `/api/rename`, `/api/move`, `/api/mkdir`, `/api/list-files`, `/api/exists`.
//! Paths resolve against the session's cwd; the operations themselves are in [`crate::files`]
//! and run on the blocking pool.

use std::path::PathBuf;

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use sandpit_protocol::container::{
    ExistsResponse, FileStreamEvent, ListFilesRequest, ListFilesResponse, MkdirRequest,
    MkdirResponse, MoveRequest, PathRequest, PathResponse, ReadFileRequest, ReadFileResponse,
    RenameRequest, RenameResponse, WriteFileRequest,
};
use sandpit_protocol::time;
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::error::ApiError;
use crate::handler::{ApiResult, AppState, Body, blocking};
use crate::{files, sse};

/// The JSON file routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/read", post(read))
        .route("/api/read/stream", post(read_stream))
        .route("/api/write", post(write))
        .route("/api/delete", post(delete))
        .route("/api/rename", post(rename))
        .route("/api/move", post(move_file))
        .route("/api/mkdir", post(mkdir))
        .route("/api/list-files", post(list_files))
        .route("/api/exists", post(exists))
}

fn resolve(agent: &Agent, path: &str, session: Option<&str>, field: &str) -> ApiResult<PathBuf> {
    files::resolve(path, &agent.base_dir(session), field)
}

async fn read(
    State(agent): State<AppState>,
    Body(req): Body<ReadFileRequest>,
) -> ApiResult<Json<ReadFileResponse>> {
    let path = resolve(&agent, &req.path, req.session_id.as_deref(), "path")?;
    let shown = req.path.clone();
    let encoding = req.encoding.clone();
    let r = blocking(move || files::read(&path, &shown, encoding.as_deref())).await?;
    Ok(Json(ReadFileResponse {
        success: true,
        path: req.path,
        content: r.content,
        timestamp: time::now(),
        encoding: r.encoding.into(),
        is_binary: r.is_binary,
        mime_type: r.mime_type,
        size: r.size,
    }))
}

/// Every failure, validation included, is an `error` event with HTTP 200 (reference §2.7), so
/// the body's rejection is taken as a value and this handler never fails.
async fn read_stream(
    State(agent): State<AppState>,
    body: ApiResult<Body<ReadFileRequest>>,
) -> ApiResult<Response> {
    let (tx, rx) = mpsc::channel(sse::CHANNEL_CAPACITY);
    let fail = |e: ApiError| {
        let _ = tx.try_send(sse::frame(&FileStreamEvent::Error { error: e.0.message }));
    };
    let req = match body {
        Ok(Body(req)) => req,
        Err(e) => {
            fail(e);
            return Ok(sse::response(rx));
        }
    };
    match resolve(&agent, &req.path, req.session_id.as_deref(), "path") {
        Ok(path) => {
            tokio::task::spawn_blocking(move || {
                files::read_stream(&path, &req.path, |event| {
                    tx.blocking_send(sse::frame(&event)).is_ok()
                });
            });
        }
        Err(e) => fail(e),
    }
    Ok(sse::response(rx))
}
async fn write(
    State(agent): State<AppState>,
    Body(req): Body<WriteFileRequest>,
) -> ApiResult<Json<PathResponse>> {
    let path = resolve(&agent, &req.path, req.session_id.as_deref(), "path")?;
    let shown = req.path.clone();
    blocking(move || files::write(&path, &req.path, &req.content, req.encoding.as_deref())).await?;
    Ok(Json(PathResponse {
        success: true,
        path: shown,
        timestamp: time::now(),
    }))
}

async fn delete(
    State(agent): State<AppState>,
    Body(req): Body<PathRequest>,
) -> ApiResult<Json<PathResponse>> {
    let path = resolve(&agent, &req.path, req.session_id.as_deref(), "path")?;
    let shown = req.path.clone();
    blocking(move || files::delete(&path, &req.path)).await?;
    Ok(Json(PathResponse {
        success: true,
        path: shown,
        timestamp: time::now(),
    }))
}

async fn rename(
    State(agent): State<AppState>,
    Body(req): Body<RenameRequest>,
) -> ApiResult<Json<RenameResponse>> {
    let session = req.session_id.as_deref();
    let from = (req.old_path, "oldPath");
    let to = (req.new_path, "newPath");
    relocate(&agent, session, from, to, "file.rename").await
}

async fn move_file(
    State(agent): State<AppState>,
    Body(req): Body<MoveRequest>,
) -> ApiResult<Json<RenameResponse>> {
    let session = req.session_id.as_deref();
    let from = (req.source_path, "sourcePath");
    let to = (req.destination_path, "destinationPath");
    relocate(&agent, session, from, to, "file.move").await
}

/// `rename` and `move` are one operation (`mv`) with other field names: each path comes with
/// the field it is reported under.
async fn relocate(
    agent: &Agent,
    session: Option<&str>,
    (from, from_field): (String, &str),
    (to, to_field): (String, &str),
    operation: &'static str,
) -> ApiResult<Json<RenameResponse>> {
    let source = resolve(agent, &from, session, from_field)?;
    let target = resolve(agent, &to, session, to_field)?;
    let shown = from.clone();
    blocking(move || files::rename(&source, &shown, &target, operation)).await?;
    Ok(Json(RenameResponse {
        success: true,
        path: from,
        new_path: to,
        timestamp: time::now(),
    }))
}

async fn mkdir(
    State(agent): State<AppState>,
    Body(req): Body<MkdirRequest>,
) -> ApiResult<Json<MkdirResponse>> {
    let path = resolve(&agent, &req.path, req.session_id.as_deref(), "path")?;
    let recursive = req.recursive.unwrap_or(false);
    let shown = req.path.clone();
    blocking(move || files::mkdir(&path, &shown, recursive)).await?;
    Ok(Json(MkdirResponse {
        success: true,
        path: req.path,
        recursive,
        timestamp: time::now(),
    }))
}

async fn list_files(
    State(agent): State<AppState>,
    Body(req): Body<ListFilesRequest>,
) -> ApiResult<Json<ListFilesResponse>> {
    let path = resolve(&agent, &req.path, req.session_id.as_deref(), "path")?;
    let options = req.options.unwrap_or_default();
    let recursive = options.recursive.unwrap_or(false);
    let hidden = options.include_hidden.unwrap_or(false);
    let shown = req.path.clone();
    let files = blocking(move || files::list(&path, &shown, recursive, hidden)).await?;
    Ok(Json(ListFilesResponse {
        success: true,
        path: req.path,
        count: files.len(),
        files,
        timestamp: time::now(),
    }))
}

async fn exists(
    State(agent): State<AppState>,
    Body(req): Body<PathRequest>,
) -> ApiResult<Json<ExistsResponse>> {
    let path = resolve(&agent, &req.path, req.session_id.as_deref(), "path")?;
    let exists = blocking(move || Ok(files::exists(&path))).await?;
    Ok(Json(ExistsResponse {
        success: true,
        path: req.path,
        exists,
        timestamp: time::now(),
    }))
}
