//! The one error type of the SDK.

use sandpit_protocol::{ErrorCode, ErrorResponse};

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server (or the sandbox agent behind it) answered with an error envelope. Non-JSON
    /// error bodies are turned into an envelope with code `INTERNAL_ERROR`, as the published
    /// TypeScript client does.
    #[error("{0}")]
    Api(Box<ErrorResponse>),
    /// The request could not be sent or the connection broke.
    #[error("transport error")]
    Transport(#[from] reqwest::Error),
    /// A 2xx answer whose body was not what the protocol says.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// A stream reported an error event or ended before its final event.
    #[error("stream error: {0}")]
    Stream(String),
    /// A client-side wait (`wait_for_exit`, `wait_for_log`, `wait_for_port`) gave up.
    #[error("timed out: {0}")]
    Timeout(String),
    /// An argument the SDK refused before sending anything (e.g. an invalid sandbox id).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The machine-readable code of an [`ClientError::Api`] error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// Why a call or stream was cut short by the server: the `context.reason` of an
    /// `OPERATION_INTERRUPTED` error (an HTTP 409 answer, or the `event: error` a stream the
    /// sandbox's stop or destroy broke off ends with). `None` for every other error.
    pub fn interrupted_reason(&self) -> Option<InterruptReason> {
        match self {
            ClientError::Api(e) if e.code == ErrorCode::OperationInterrupted => {
                match e.context.get("reason").and_then(|r| r.as_str()) {
                    Some("stopped") => Some(InterruptReason::Stopped),
                    Some("destroyed") => Some(InterruptReason::Destroyed),
                    Some("shutdown") => Some(InterruptReason::Shutdown),
                    _ => Some(InterruptReason::Other),
                }
            }
            _ => None,
        }
    }

    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ClientError::Api(e) => Some(e.http_status),
            _ => None,
        }
    }
}

/// Why the server cut a call or stream short ([`ClientError::interrupted_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptReason {
    /// The sandbox was put to sleep (`POST …/stop`, idle sleep).
    Stopped,
    /// The sandbox was destroyed.
    Destroyed,
    /// The server shut down.
    Shutdown,
    /// `OPERATION_INTERRUPTED` without a reason this SDK knows.
    Other,
}

/// Result alias of the SDK.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Builds the error of a non-2xx answer from its status and body.
pub(crate) fn error_from_body(status: u16, body: &[u8]) -> ClientError {
    if let Ok(envelope) = serde_json::from_slice::<ErrorResponse>(body) {
        return ClientError::Api(Box::new(envelope));
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut message = format!("HTTP error! status: {status}");
    if !text.is_empty() {
        message.push_str(": ");
        message.extend(text.chars().take(500));
    }
    let mut envelope = ErrorResponse::new(ErrorCode::InternalError, message);
    envelope.http_status = status;
    ClientError::Api(Box::new(envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_bodies_keep_code_and_status() {
        let body =
            serde_json::to_vec(&ErrorResponse::new(ErrorCode::FileNotFound, "nope")).unwrap();
        let err = error_from_body(404, &body);
        assert_eq!(err.code(), Some(ErrorCode::FileNotFound));
        assert_eq!(err.http_status(), Some(404));
        assert_eq!(err.to_string(), "FILE_NOT_FOUND: nope");
    }

    #[test]
    fn interrupted_errors_carry_their_reason() {
        let mut envelope =
            ErrorResponse::new(ErrorCode::OperationInterrupted, "sandbox a was stopped");
        envelope.context.insert("reason".into(), "destroyed".into());
        let err = ClientError::Api(Box::new(envelope.clone()));
        assert_eq!(err.interrupted_reason(), Some(InterruptReason::Destroyed));
        envelope.context.clear();
        let err = ClientError::Api(Box::new(envelope));
        assert_eq!(err.interrupted_reason(), Some(InterruptReason::Other));
        let other = error_from_body(404, b"nope");
        assert_eq!(other.interrupted_reason(), None);
    }

    #[test]
    fn other_bodies_become_internal_errors_with_the_real_status() {
        let err = error_from_body(502, b"Bad Gateway");
        assert_eq!(err.code(), Some(ErrorCode::InternalError));
        assert_eq!(err.http_status(), Some(502));
        assert!(
            err.to_string().contains("status: 502: Bad Gateway"),
            "{err}"
        );
    }
}
