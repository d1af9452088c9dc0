//! The HTTP surface: routes of the container API, the JSON body extractor with the protocol's
//! validation errors, CORS headers, the unknown-route answer.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, middleware};
use http::{HeaderValue, Method, StatusCode, header};
use sandpit_protocol::container::*;
use sandpit_protocol::{ErrorCode, ErrorResponse, VERSION, time};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::error::ApiError;
use crate::exec::session::SessionOptions;
use crate::exec::stdin::StdinChannel;
use crate::{files, files_raw, sse};

type AppState = Arc<Agent>;
type ApiResult<T> = Result<T, ApiError>;

/// The agent's router.
pub fn router(agent: Arc<Agent>) -> Router {
    let limit = agent.config.max_body_bytes;
    Router::new()
        .route("/api/ping", get(ping))
        .route("/api/version", get(version))
        .route("/api/activity", get(activity))
        .route("/api/execute", post(execute))
        .route("/api/execute/stream", post(execute_stream))
        .route("/api/session/create", post(session_create))
        .route("/api/session/list", get(session_list))
        .route("/api/session/delete", post(session_delete))
        .route("/api/read", post(read))
        .route("/api/read/stream", post(read_stream))
        .route("/api/write", post(write))
        .route("/api/delete", post(delete))
        .route("/api/rename", post(rename))
        .route("/api/move", post(move_file))
        .route("/api/mkdir", post(mkdir))
        .route("/api/list-files", post(list_files))
        .route("/api/exists", post(exists))
        .route("/api/env", post(crate::env::set_env_handler))
        .merge(crate::process::routes())
        .merge(crate::port_watch::routes())
        .merge(crate::interpreter::routes::routes())
        .route("/api/git/checkout", post(crate::git::checkout_handler))
        .route("/api/watch", post(crate::watch::watch_handler))
        .route("/api/watch/check", post(crate::watch::check_handler))
        .route(
            "/api/files/raw",
            get(files_raw::download).put(files_raw::upload),
        )
        .route("/ws", get(crate::ws_control::handler))
        .route("/api/ws", get(crate::ws_control::handler))
        .route("/ws/pty", get(crate::pty::handler))
        .route("/tunnel/{port}", get(crate::tunnel::handler))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::map_response(cors))
        .with_state(agent)
}

/// Headers the seed puts on every response (reference §2.1).
async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Content-Type, Authorization, X-Session-Id, X-Sandbox-Id, X-Trace-Id",
        ),
    );
    response
}

async fn unknown_route(method: Method) -> Response {
    if method == Method::OPTIONS {
        // CORS preflight.
        let mut response = StatusCode::OK.into_response();
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        return response;
    }
    ApiError::from(ErrorResponse::unknown_route()).into_response()
}

/// A JSON request body. Malformed JSON and missing or mistyped fields are answered with
/// 400 VALIDATION_FAILED, an oversized body with 413.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "Request body too large")
            } else {
                ApiError::validation("body", format!("Could not read request body: {rejection}"))
            }
        })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            let message = e.to_string();
            let field = message
                .split('`')
                .nth(1)
                .filter(|_| {
                    message.starts_with("missing field") || message.starts_with("unknown field")
                })
                .unwrap_or("body")
                .to_owned();
            ApiError::validation(&field, format!("Invalid request body: {message}"))
        })
    }
}

/// Runs a blocking file operation off the runtime thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(ApiError::internal("file operation failed")))
}

fn resolve(agent: &Agent, path: &str, session: Option<&str>, field: &str) -> ApiResult<PathBuf> {
    files::resolve(path, &agent.base_dir(session), field)
}

async fn ping() -> Json<PingResponse> {
    Json(PingResponse {
        success: true,
        status: "healthy".into(),
        timestamp: time::now(),
    })
}

/// What runs with no client attached (the control plane's idle check).
async fn activity(State(agent): State<AppState>) -> Json<ActivityResponse> {
    Json(ActivityResponse {
        running_processes: agent.processes.running_groups().len(),
        busy_terminals: agent.terminals.busy(),
    })
}

async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        success: true,
        version: VERSION.into(),
        timestamp: time::now(),
    })
}

async fn execute(
    State(agent): State<AppState>,
    Body(req): Body<ExecuteRequest>,
) -> ApiResult<Response> {
    if req.background == Some(true) {
        let req = crate::process::from_execute(req);
        return agent.processes.start(req).map(|r| Json(r).into_response());
    }
    agent.execute(req).await.map(|r| Json(r).into_response())
}

async fn execute_stream(
    State(agent): State<AppState>,
    stdin: Option<Extension<StdinChannel>>,
    Body(req): Body<ExecuteRequest>,
) -> ApiResult<Response> {
    let rx = agent.execute_stream(req, stdin.map(|e| e.0)).await?;
    Ok(sse::response(rx))
}

async fn session_create(
    State(agent): State<AppState>,
    Body(req): Body<SessionCreateRequest>,
) -> ApiResult<Json<SessionCreateResponse>> {
    let id = match req.id {
        Some(id) if id.is_empty() => {
            return Err(ApiError::validation("id", "id must not be empty"));
        }
        Some(id) => id,
        None => format!("session-{:016x}", rand::random::<u64>()),
    };
    if req.cwd.as_deref().is_some_and(|c| c.contains('\0')) {
        return Err(ApiError::validation(
            "cwd",
            "cwd must not contain NUL bytes",
        ));
    }
    let options = SessionOptions {
        env: req.env,
        cwd: req.cwd,
        command_timeout: req.command_timeout_ms,
    };
    let session = agent.sessions.create(&id, options)?;
    Ok(Json(SessionCreateResponse {
        success: true,
        data: SessionInfo {
            id,
            cwd: session.cwd(),
        },
        container_placement_id: None,
        timestamp: time::now(),
    }))
}

async fn session_list(State(agent): State<AppState>) -> Json<SessionListResponse> {
    Json(SessionListResponse {
        success: true,
        data: agent.sessions.list(),
        timestamp: time::now(),
    })
}

async fn session_delete(
    State(agent): State<AppState>,
    Body(req): Body<SessionDeleteRequest>,
) -> ApiResult<Json<SessionDeleteResponse>> {
    let Some(id) = req.session_id.filter(|id| !id.is_empty()) else {
        return Err(ApiError::validation("sessionId", "sessionId is required"));
    };
    // Deleting an unknown session is not an error (the seed answers success too).
    agent.sessions.delete(&id);
    agent.terminals.kill(&id);
    agent.processes.kill_all(Some(&id)).await;
    Ok(Json(SessionDeleteResponse {
        success: true,
        session_id: id,
        timestamp: time::now(),
    }))
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

async fn read_stream(
    State(agent): State<AppState>,
    body: Result<Body<ReadFileRequest>, ApiError>,
) -> Response {
    let (tx, rx) = mpsc::channel(sse::CHANNEL_CAPACITY);
    // Every failure, validation included, is an `error` event with HTTP 200 (reference §2.7).
    let req = match body {
        Ok(Body(req)) => req,
        Err(e) => {
            let _ = tx.try_send(sse::frame(&FileStreamEvent::Error { error: e.0.message }));
            return sse::response(rx);
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
        Err(e) => {
            let _ = tx.try_send(sse::frame(&FileStreamEvent::Error { error: e.0.message }));
        }
    }
    sse::response(rx)
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
    let from = resolve(&agent, &req.old_path, session, "oldPath")?;
    let to = resolve(&agent, &req.new_path, session, "newPath")?;
    let shown = req.old_path.clone();
    blocking(move || files::rename(&from, &shown, &to, "file.rename")).await?;
    Ok(Json(RenameResponse {
        success: true,
        path: req.old_path,
        new_path: req.new_path,
        timestamp: time::now(),
    }))
}

async fn move_file(
    State(agent): State<AppState>,
    Body(req): Body<MoveRequest>,
) -> ApiResult<Json<RenameResponse>> {
    let session = req.session_id.as_deref();
    let from = resolve(&agent, &req.source_path, session, "sourcePath")?;
    let to = resolve(&agent, &req.destination_path, session, "destinationPath")?;
    let shown = req.source_path.clone();
    blocking(move || files::rename(&from, &shown, &to, "file.move")).await?;
    Ok(Json(RenameResponse {
        success: true,
        path: req.source_path,
        new_path: req.destination_path,
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
