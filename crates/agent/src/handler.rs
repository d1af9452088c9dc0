//! What every route handler shares: the router's state, the result type, the JSON body
//! extractor with the protocol's validation errors, and running blocking work off the runtime
//! thread.
//!
//! A leaf of the module graph: it imports no route module, so every `routes::*` module can use
//! it without a loop through the top-level router (`crate::http`). The handler convention
//! (extractors in the signature, `ApiResult<_>` out) is described in the crate README, "Where
//! does a new route go".

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http::StatusCode;
use sandpit_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use crate::agent::Agent;
use crate::error::ApiError;

/// The state of every route: the agent.
pub type AppState = Arc<Agent>;

/// What a handler returns: an answer, or the protocol's error envelope.
pub type ApiResult<T> = Result<T, ApiError>;

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

/// Runs a blocking (file) operation on the blocking pool, off the runtime thread.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(ApiError::internal("file operation failed")))
}
