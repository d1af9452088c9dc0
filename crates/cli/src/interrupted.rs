//! Streams cut short because their sandbox was stopped or removed (`sandpit stop`, `sandpit
//! rm`, the server shutting down) are reported in those words, not as a transport error.
//!
//! The server ends an event stream it cut that way with an `OPERATION_INTERRUPTED` error event
//! naming the reason. A WebSocket (`shell`) has no such event, and a stream may break before
//! the event is sent: then the sandbox's state tells.

use std::future::Future;
use std::time::{Duration, Instant};

use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::control::SandboxState;
use sandpit_client::{Client, ClientError};

/// How long a sandbox whose stream broke may take to show as stopped (its record changes once
/// its processes are gone).
const SETTLE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

/// A stream from a sandbox that ended before its final event (`complete`, `exit`...).
#[derive(Debug)]
pub struct EndedEarly(pub &'static str);

impl std::fmt::Display for EndedEarly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for EndedEarly {}

/// Runs `work`, a command streaming from sandbox `id`; if it fails because the sandbox was
/// stopped or removed meanwhile, the error says so.
pub async fn explained<T>(
    client: &Client,
    id: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match work.await {
        Ok(value) => Ok(value),
        Err(error) => match cut_by_stop_or_rm(client, id, &error).await {
            Some(reason) => Err(anyhow::anyhow!(ended(id, reason))),
            None => Err(error),
        },
    }
}

/// Whether `error`, which ended a stream of sandbox `id`, came from a stop (`Some("stopped")`,
/// or `"shutdown"`) or removal (`Some("destroyed")`) of the sandbox.
pub async fn cut_by_stop_or_rm(
    client: &Client,
    id: &str,
    error: &anyhow::Error,
) -> Option<&'static str> {
    for cause in error.chain() {
        if let Some(ClientError::Api(envelope)) = cause.downcast_ref::<ClientError>() {
            if envelope.code != ErrorCode::OperationInterrupted {
                return None; // any other answer of the server is its own explanation
            }
            return Some(
                match envelope.context.get("reason").and_then(|r| r.as_str()) {
                    Some("destroyed") => "destroyed",
                    Some("shutdown") => "shutdown",
                    _ => "stopped",
                },
            );
        }
    }
    if !broke_off(error) {
        return None;
    }
    // Nothing said why (a WebSocket has no error event): the sandbox's state tells.
    let deadline = Instant::now() + SETTLE;
    loop {
        match client.get(id).await {
            Err(e) if e.code() == Some(ErrorCode::SandboxNotFound) => return Some("destroyed"),
            Ok(info) if info.state != SandboxState::Running => return Some("stopped"),
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            _ => return None,
        }
    }
}

/// Whether `error` is a connection to the server that broke or a stream that ended early (as
/// opposed to a refusal, a local error or a connection that never started).
fn broke_off(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<EndedEarly>()
            || cause.is::<tokio_tungstenite::tungstenite::Error>()
            || matches!(
                cause.downcast_ref::<ClientError>(),
                Some(ClientError::Stream(_))
            )
            || matches!(cause.downcast_ref::<ClientError>(),
                Some(ClientError::Transport(e)) if !e.is_connect())
    })
}

/// What the user is told, by the server's `reason`.
fn ended(id: &str, reason: &str) -> String {
    match reason {
        "destroyed" => format!("sandbox {id} was removed"),
        "shutdown" => format!("sandbox {id} was stopped: the server shut down"),
        _ => format!("sandbox {id} was stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_the_commands_that_caused_them() {
        assert_eq!(ended("a", "destroyed"), "sandbox a was removed");
        assert_eq!(ended("a", "stopped"), "sandbox a was stopped");
        assert!(ended("a", "shutdown").contains("server shut down"));
    }
}
