//! The server's error type: always answered as an [`ErrorResponse`] JSON body.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use sandpit_protocol::{ErrorChain, ErrorCode, ErrorResponse};

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError(pub Box<ErrorResponse>);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Box::new(ErrorResponse::new(code, message)))
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InternalError, message.to_string())
    }

    pub fn sandbox_not_found(id: &str) -> Self {
        Self::new(
            ErrorCode::SandboxNotFound,
            format!("sandbox {id:?} not found"),
        )
        .context("sandboxId", id)
    }

    pub fn context(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.0.context.insert(key.to_owned(), value.into());
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// So a caller outside a request (e.g. [`crate::StartError::Manager`]) can keep it as a cause.
impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = self.0.code;
        let mut response = (status, Json(*self.0)).into_response();
        // Read back by the metrics layer (`sandpit_errors_total{code}`).
        response.extensions_mut().insert(code);
        response
    }
}

impl From<sandpit_store::StoreError> for ApiError {
    fn from(e: sandpit_store::StoreError) -> Self {
        let chain = ErrorChain(&e);
        tracing::error!(error = %chain, "store error");
        ApiError::internal(format!("store: {chain}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a JSON body with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
            }
            // serde's message names the offending field ("unknown field `sleepAfterr`,
            // expected one of ...", "missing field `tenant`"); body_text() keeps it.
            other => ApiError::validation(format!("invalid JSON body: {}", other.body_text())),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::validation(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::validation(format!("invalid query: {}", rejection.body_text()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
