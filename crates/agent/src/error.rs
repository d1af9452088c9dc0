//! The agent's error type: an [`ErrorResponse`] envelope that renders itself as the HTTP answer,
//! plus the one mapping from `std::io::Error` to container error codes.

use std::io;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use nix::errno::Errno;
use sandpit_protocol::{ErrorCode, ErrorResponse};
use serde_json::{Value, json};

/// An error answered to the client with the protocol's error envelope.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub Box<ErrorResponse>);

impl ApiError {
    /// An error with the status from the code table.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Box::new(ErrorResponse::new(code, message)))
    }

    /// Adds one context field.
    pub fn context(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.context.insert(key.to_owned(), value.into());
        self
    }

    /// Sets the operation (`file.read`, `command.execute`, ...).
    pub fn operation(mut self, operation: &str) -> Self {
        self.0.operation = Some(operation.to_owned());
        self
    }

    /// 400 VALIDATION_FAILED with `context.validationErrors = [{field, message, code}]`.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let detail = json!([{ "field": field, "message": message, "code": "invalid" }]);
        ApiError::new(ErrorCode::ValidationFailed, message).context("validationErrors", detail)
    }

    /// 500 INTERNAL_ERROR for conditions that are the agent's fault, not the caller's.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InternalError, message)
    }

    /// The code of this error.
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(*self.0)).into_response()
    }
}

impl From<ErrorResponse> for ApiError {
    fn from(e: ErrorResponse) -> Self {
        ApiError(Box::new(e))
    }
}

/// Maps a filesystem error on `path` to the container error code table. The only place where
/// errno values become codes.
pub fn io_error(err: &io::Error, path: &str, operation: &str) -> ApiError {
    let errno = err.raw_os_error().map(Errno::from_raw);
    let (code, message) = match errno {
        Some(Errno::ENOENT) => (ErrorCode::FileNotFound, format!("File not found: {path}")),
        Some(Errno::EACCES | Errno::EPERM) => (
            ErrorCode::PermissionDenied,
            format!("Permission denied: {path}"),
        ),
        Some(Errno::EISDIR) => (
            ErrorCode::IsDirectory,
            format!("Path is a directory: {path}"),
        ),
        Some(Errno::ENOTDIR) => (ErrorCode::NotDirectory, format!("Not a directory: {path}")),
        Some(Errno::EEXIST) => (
            ErrorCode::FileExists,
            format!("File already exists: {path}"),
        ),
        Some(Errno::ENOSPC | Errno::EDQUOT) => (
            ErrorCode::NoSpace,
            format!("No space left on device: {path}"),
        ),
        Some(Errno::EMFILE | Errno::ENFILE) => (
            ErrorCode::TooManyFiles,
            format!("Too many open files: {path}"),
        ),
        Some(Errno::EROFS) => (
            ErrorCode::ReadOnly,
            format!("Read-only file system: {path}"),
        ),
        Some(Errno::ELOOP | Errno::EMLINK) => {
            (ErrorCode::TooManyLinks, format!("Too many links: {path}"))
        }
        Some(Errno::ENAMETOOLONG) => (ErrorCode::NameTooLong, format!("Name too long: {path}")),
        Some(Errno::EBUSY) => (ErrorCode::ResourceBusy, format!("Resource busy: {path}")),
        _ => match err.kind() {
            io::ErrorKind::NotFound => (ErrorCode::FileNotFound, format!("File not found: {path}")),
            io::ErrorKind::PermissionDenied => (
                ErrorCode::PermissionDenied,
                format!("Permission denied: {path}"),
            ),
            io::ErrorKind::AlreadyExists => (
                ErrorCode::FileExists,
                format!("File already exists: {path}"),
            ),
            _ => (
                ErrorCode::FilesystemError,
                format!("Filesystem error on {path}: {err}"),
            ),
        },
    };
    ApiError::new(code, message)
        .context("path", path)
        .context("operation", operation)
        .operation(operation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_codes() {
        let cases = [
            (libc::ENOENT, ErrorCode::FileNotFound),
            (libc::EACCES, ErrorCode::PermissionDenied),
            (libc::EISDIR, ErrorCode::IsDirectory),
            (libc::ENOTDIR, ErrorCode::NotDirectory),
            (libc::ENOSPC, ErrorCode::NoSpace),
            (libc::EMFILE, ErrorCode::TooManyFiles),
            (libc::EROFS, ErrorCode::ReadOnly),
            (libc::EEXIST, ErrorCode::FileExists),
            (libc::EIO, ErrorCode::FilesystemError),
        ];
        for (errno, code) in cases {
            let e = io_error(&io::Error::from_raw_os_error(errno), "/x", "file.read");
            assert_eq!(e.code(), code, "errno {errno}");
            assert_eq!(e.0.context["path"], "/x");
        }
    }
}
