//! Tool failures as MCP tool errors: `isError: true`, the text `CODE: message` for the model and
//! the protocol's error envelope (`code`, `message`, `httpStatus`, `context`) as structured
//! content for programs. A failing tool never fails the MCP request itself.

use rmcp::model::{CallToolResult, ContentBlock};
use sandpit_client::ClientError;
use sandpit_client::protocol::{ErrorCode, ErrorResponse};

/// Why a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The sandpit API (or the client talking to it) failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The arguments make no sense for this tool (an edit whose string is missing...).
    #[error("{0}")]
    Invalid(String),
    /// The sandbox could not run the command (its stream reported an error).
    #[error("{0}")]
    Command(String),
    /// An HTTP request reached the MCP endpoint without a bearer key to act with.
    #[error("no API key: send Authorization: Bearer <key>")]
    NoKey,
    /// The caller has no sandbox with this id.
    #[error("no sandbox {0:?}: create it with create_sandbox first (list_sandboxes shows yours)")]
    NoSandbox(String),
    /// An HTTP request used an MCP session opened with another API key.
    #[error("this MCP session was opened with another API key")]
    ForeignSession,
    /// The client cancelled the call; the remote command was stopped.
    #[error("cancelled by the client; the command was stopped")]
    Cancelled,
}

impl ToolError {
    /// The error envelope of the protocol's one error table.
    pub fn envelope(&self) -> ErrorResponse {
        match self {
            ToolError::Client(ClientError::Api(envelope)) => (**envelope).clone(),
            ToolError::Client(ClientError::InvalidArgument(message))
            | ToolError::Invalid(message) => {
                ErrorResponse::new(ErrorCode::ValidationFailed, message.clone())
            }
            ToolError::Client(ClientError::Transport(e)) => ErrorResponse::new(
                ErrorCode::ServiceNotResponding,
                format!("the sandpit API did not answer: {e}"),
            ),
            ToolError::Client(other) => {
                ErrorResponse::new(ErrorCode::InternalError, other.to_string())
            }
            ToolError::Command(message) => {
                ErrorResponse::new(ErrorCode::CommandExecutionError, message.clone())
            }
            ToolError::NoKey => ErrorResponse::new(ErrorCode::Unauthorized, self.to_string()),
            ToolError::NoSandbox(id) => {
                ErrorResponse::new(ErrorCode::SandboxNotFound, self.to_string())
                    .with_context("sandboxId", id.clone())
            }
            ToolError::ForeignSession => {
                ErrorResponse::new(ErrorCode::PermissionDenied, self.to_string())
            }
            ToolError::Cancelled => {
                ErrorResponse::new(ErrorCode::OperationInterrupted, self.to_string())
            }
        }
    }

    /// The MCP tool result that reports this error.
    pub fn into_result(self) -> CallToolResult {
        let envelope = self.envelope();
        let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
            "{}: {}",
            envelope.code, envelope.message
        ))]);
        result.structured_content = serde_json::to_value(&envelope).ok();
        result
    }
}

/// What every tool returns before it becomes an MCP result.
pub type ToolResult = Result<CallToolResult, ToolError>;

/// Turns a tool's outcome into the MCP result (errors included).
pub fn finish(outcome: ToolResult) -> CallToolResult {
    outcome.unwrap_or_else(ToolError::into_result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_the_protocol_code_and_message() {
        let envelope = ErrorResponse::new(ErrorCode::FileNotFound, "no such file: /nope");
        let result = ToolError::Client(ClientError::Api(Box::new(envelope))).into_result();
        assert_eq!(result.is_error, Some(true));
        let text = result.content[0].as_text().map(|t| t.text.clone());
        assert_eq!(text.as_deref(), Some("FILE_NOT_FOUND: no such file: /nope"));
        let structured = result.structured_content.unwrap();
        assert_eq!(structured["code"], "FILE_NOT_FOUND");
        assert_eq!(structured["httpStatus"], 404);
    }

    #[test]
    fn local_errors_use_codes_of_the_same_table() {
        let result = ToolError::Invalid("old_string not found".into()).into_result();
        assert_eq!(
            result.structured_content.unwrap()["code"],
            "VALIDATION_FAILED"
        );
    }
}
