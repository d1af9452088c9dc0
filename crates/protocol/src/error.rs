//! The one error-code table of sandpit and the error envelope every component returns.
//!
//! The container codes and statuses are those of the Cloudflare Sandbox SDK (reference §2.2),
//! so the published client maps them to its typed errors. Control-plane codes are added at the
//! end of the table.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

macro_rules! error_codes {
    ($($variant:ident = $status:literal,)*) => {
        /// A machine-readable error code. Serialized as its SCREAMING_SNAKE_CASE name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The HTTP status this code is answered with.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }
        }
    };
}

error_codes! {
    // 400
    IsDirectory = 400,
    NotDirectory = 400,
    InvalidCommand = 400,
    InvalidPortNumber = 400,
    InvalidPort = 400,
    InvalidGitUrl = 400,
    CustomDomainRequired = 400,
    InvalidJsonResponse = 400,
    NameTooLong = 400,
    ValidationFailed = 400,
    MissingCredentials = 400,
    InvalidMountConfig = 400,
    BackupExpired = 400,
    InvalidBackupConfig = 400,
    // 401
    GitAuthFailed = 401,
    // 403
    PermissionDenied = 403,
    CommandPermissionDenied = 403,
    ProcessPermissionDenied = 403,
    ReadOnly = 403,
    // 404
    FileNotFound = 404,
    CommandNotFound = 404,
    ProcessNotFound = 404,
    PortNotExposed = 404,
    GitRepositoryNotFound = 404,
    GitBranchNotFound = 404,
    ContextNotFound = 404,
    WatchNotFound = 404,
    BackupNotFound = 404,
    // 408
    ProcessReadyTimeout = 408,
    // 409
    FileExists = 409,
    PortAlreadyExposed = 409,
    PortInUse = 409,
    ResourceBusy = 409,
    SessionAlreadyExists = 409,
    OperationInterrupted = 409,
    // 410
    SessionDestroyed = 410,
    SessionTerminated = 410,
    // 413
    FileTooLarge = 413,
    // 501
    PythonNotAvailable = 501,
    JavascriptNotAvailable = 501,
    // 502
    ServiceNotResponding = 502,
    GitNetworkError = 502,
    // 503
    InterpreterNotReady = 503,
    OpencodeStartupFailed = 503,
    RpcTransportError = 503,
    ContainerUnavailable = 503,
    // 500
    ProcessExitedBeforeReady = 500,
    NoSpace = 500,
    TooManyFiles = 500,
    TooManyLinks = 500,
    FilesystemError = 500,
    CommandExecutionError = 500,
    StreamStartError = 500,
    ProcessError = 500,
    PortOperationError = 500,
    GitCloneFailed = 500,
    GitCheckoutFailed = 500,
    GitOperationFailed = 500,
    CodeExecutionError = 500,
    BucketMountError = 500,
    BucketUnmountError = 500,
    S3fsMountError = 500,
    WatchStartError = 500,
    WatchStopError = 500,
    BackupCreateFailed = 500,
    BackupRestoreFailed = 500,
    UnknownError = 500,
    InternalError = 500,
    // Control plane (sandpit's own).
    Unauthorized = 401,
    // A limit above the server's per-sandbox cap (like VALIDATION_FAILED, the request is wrong).
    LimitExceeded = 400,
    SandboxNotFound = 404,
    ImageNotFound = 404,
    RouteNotFound = 404,
    MethodNotAllowed = 405,
    SandboxConflict = 409,
    PayloadTooLarge = 413,
    // The tenant's quota is used up; frees up when sandboxes sleep or are destroyed.
    QuotaExceeded = 429,
    UnsupportedMediaType = 415,
    SandboxStartFailed = 500,
    SandboxUnavailable = 502,
    // Preview URLs (the seed's codes, §3.6 of the reference).
    InvalidToken = 404,
    StalePreviewUrl = 410,
    // The egress proxy's answer to a program inside a sandbox.
    EgressDenied = 403,
    // API keys.
    KeyNotFound = 404,
    // The isolation tier asked for has no driver on this server (e.g. `gvisor` without runsc):
    // like LIMIT_EXCEEDED, the request asks for what this server does not offer.
    IsolationUnavailable = 400,
    // Snapshots and forks.
    SnapshotNotFound = 404,
    // Sandboxes created from the snapshot still exist (destroy them first).
    SnapshotInUse = 409,
    // This sandbox cannot be snapshotted (gVisor tier, a diskMb disk image, ephemeral).
    SnapshotUnsupported = 400,
    // The host's available memory is below the operator's floor (`--min-host-memory-mb`): no
    // sandbox starts until others sleep or go. Not 503: the published SDK retries every 503
    // for minutes (see `only_not_ready_codes_are_503`); 507 says "the server cannot hold more".
    HostMemoryLow = 507,
    // Snapshot export/import: the object key names no export of the caller's tenant.
    SnapshotExportNotFound = 404,
    // Writing the snapshot's archive to the object store failed (nothing is left there).
    SnapshotExportFailed = 500,
    // The export could not be imported: corrupt, truncated, digest mismatch (nothing is kept).
    SnapshotImportFailed = 500,
    // The sandbox has as many bucket mounts as the server allows (`--max-mounts-per-sandbox`):
    // unmount one first.
    TooManyMounts = 409,
    // Cluster mode: the node that holds the sandbox stopped answering its heartbeats (it is
    // `down`); the sandbox stays on that node and answers again when the node is back.
    NodeUnavailable = 502,
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `FILE_NOT_FOUND`.
    pub fn as_str(self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::String(s)) => s,
            _ => String::from("UNKNOWN_ERROR"),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// The error envelope (reference §2.2): every non-2xx JSON body of the agent and the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub context: Map<String, Value>,
    pub http_status: u16,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

impl ErrorResponse {
    /// An error with the status taken from the code table.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorResponse {
            code,
            message: message.into(),
            operation: None,
            context: Map::new(),
            http_status: code.http_status(),
            timestamp: crate::time::now(),
            suggestion: None,
        }
    }

    /// Adds one context field.
    pub fn with_context(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.context.insert(key.to_owned(), value.into());
        self
    }

    /// Sets the operation, e.g. `file.read`.
    pub fn with_operation(mut self, operation: &str) -> Self {
        self.operation = Some(operation.to_owned());
        self
    }

    /// The "endpoint not found" answer of the container router (reference §2.2).
    pub fn unknown_route() -> Self {
        let mut e = ErrorResponse::new(
            ErrorCode::UnknownError,
            "The requested endpoint was not found",
        );
        e.http_status = 404;
        e
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorResponse {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_screaming_snake() {
        assert_eq!(ErrorCode::FileNotFound.as_str(), "FILE_NOT_FOUND");
        assert_eq!(ErrorCode::S3fsMountError.as_str(), "S3FS_MOUNT_ERROR");
        assert_eq!(ErrorCode::SessionTerminated.http_status(), 410);
        assert_eq!(ErrorCode::ContainerUnavailable.http_status(), 503);
    }

    #[test]
    fn only_not_ready_codes_are_503() {
        // The published SDK retries every 503 for minutes, so nothing else may use it.
        let retryable: Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|c| c.http_status() == 503)
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            retryable,
            [
                "INTERPRETER_NOT_READY",
                "OPENCODE_STARTUP_FAILED",
                "RPC_TRANSPORT_ERROR",
                "CONTAINER_UNAVAILABLE"
            ]
        );
    }

    #[test]
    fn envelope_round_trips() {
        let e = ErrorResponse::new(ErrorCode::FileNotFound, "File not found: /x")
            .with_context("path", "/x")
            .with_operation("file.read");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["code"], "FILE_NOT_FOUND");
        assert_eq!(json["httpStatus"], 404);
        assert_eq!(json["context"]["path"], "/x");
        let back: ErrorResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
