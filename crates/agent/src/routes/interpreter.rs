//! HTTP routes of the code interpreter (reference §2.3, §2.9).

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use sandpit_protocol::container::{
    CodeContextInfo, CreateContextRequest, CreateContextResponse, DeleteContextResponse,
    ExecuteCodeRequest, InterpreterHealthResponse, ListContextsResponse,
};
use sandpit_protocol::{ErrorCode, time};

use crate::error::ApiError;
use crate::handler::{ApiResult, AppState, Body};
use crate::interpreter::Language;
use crate::sse;

/// `/api/contexts`, `/api/execute/code`, `/api/interpreter/health`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/contexts", post(create).get(list))
        .route("/api/contexts/{id}", delete(remove))
        .route("/api/execute/code", post(execute))
        .route("/api/interpreter/health", get(health))
}

fn language(name: Option<&str>, field: &str) -> ApiResult<Option<Language>> {
    match name.filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(n) => Language::parse(n).map(Some).ok_or_else(|| {
            ApiError::validation(
                field,
                format!("Unsupported language {n:?}: use python, javascript or typescript"),
            )
        }),
    }
}

async fn create(
    State(agent): State<AppState>,
    Body(req): Body<CreateContextRequest>,
) -> ApiResult<Json<CreateContextResponse>> {
    let language = language(req.language.as_deref(), "language")?.unwrap_or(Language::Python);
    let context = agent
        .interpreters
        .create(language, req.cwd, req.env_vars.unwrap_or_default())
        .await?;
    Ok(Json(CreateContextResponse {
        success: true,
        context_id: context.id.clone(),
        language: context.language.as_str().into(),
        cwd: context.cwd.clone(),
        timestamp: time::now(),
    }))
}

async fn list(State(agent): State<AppState>) -> ApiResult<Json<ListContextsResponse>> {
    let contexts = agent
        .interpreters
        .list()
        .iter()
        .map(|c| CodeContextInfo {
            id: c.id.clone(),
            language: c.language.as_str().into(),
            cwd: c.cwd.clone(),
            created_at: Some(c.created_at.clone()),
        })
        .collect();
    Ok(Json(ListContextsResponse {
        success: true,
        contexts,
        timestamp: time::now(),
    }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ContextNotFound,
        format!("Context not found: {id}"),
    )
    .context("contextId", id)
    .operation("code.execute")
}

async fn remove(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeleteContextResponse>> {
    agent
        .interpreters
        .delete(&id)
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(DeleteContextResponse {
        success: true,
        context_id: id,
        timestamp: time::now(),
    }))
}

async fn execute(
    State(agent): State<AppState>,
    Body(req): Body<ExecuteCodeRequest>,
) -> ApiResult<Response> {
    let requested = language(req.language.as_deref(), "language")?;
    let context = agent
        .interpreters
        .get(&req.context_id)
        .ok_or_else(|| not_found(&req.context_id))?;
    let rx = agent
        .interpreters
        .execute(context, req.code, requested, req.timeout_ms);
    Ok(sse::response(rx))
}

async fn health() -> ApiResult<Json<InterpreterHealthResponse>> {
    Ok(Json(InterpreterHealthResponse {
        success: true,
        status: "healthy".into(),
        timestamp: time::now(),
    }))
}
