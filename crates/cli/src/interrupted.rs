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

/// Runs `work`, a command streaming from sandbox `id`; if it fails because the sandbox was
/// stopped or removed meanwhile, the error says so.
pub async fn explained<T>(
    client: &Client,
    id: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match work.await {
        Ok(value) => Ok(value),
        Err(error) => Err(explain(client, id, error).await),
    }
}

async fn explain(client: &Client, id: &str, error: anyhow::Error) -> anyhow::Error {
    let api = error
        .chain()
        .find_map(|c| match c.downcast_ref::<ClientError>() {
            Some(ClientError::Api(envelope)) => Some(envelope),
            _ => None,
        });
    match api {
        Some(envelope) if envelope.code == ErrorCode::OperationInterrupted => {
            let reason = envelope.context.get("reason").and_then(|r| r.as_str());
            return anyhow::anyhow!(ended(id, reason.unwrap_or("stopped")));
        }
        // Any other answer of the server is its own explanation.
        Some(_) => return error,
        None => {}
    }
    match stopped_or_removed(client, id).await {
        Some(reason) => anyhow::anyhow!(ended(id, reason)),
        None => error,
    }
}

/// After a stream of sandbox `id` broke without saying why: waits (up to [`SETTLE`]) for the
/// sandbox to show as stopped (`Some("stopped")`) or removed (`Some("destroyed")`); `None`
/// while it keeps running or cannot be asked.
pub async fn stopped_or_removed(client: &Client, id: &str) -> Option<&'static str> {
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
