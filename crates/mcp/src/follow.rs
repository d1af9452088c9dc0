//! Following a long run (a command's or a code cell's event stream) for a tool call: progress
//! notifications to the client while it runs, and cancellation from the client stopping the
//! remote work.

use std::time::{Duration, Instant};

use futures::StreamExt;
use rmcp::RoleServer;
use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use sandpit_client::{ClientError, EventStream};

use crate::error::ToolError;

/// How often a client that asked for progress (`_meta.progressToken`) hears of a run.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Feeds `events` to `on_event` until it returns true (the run's last event). Meanwhile sends a
/// progress notification every [`PROGRESS_EVERY`] (progress = seconds elapsed) if the client
/// gave a progress token. When the client cancels the call, returns
/// [`ToolError::Cancelled`] and drops the stream: the sandbox sees its client go away and stops
/// the command (or interrupts the code).
pub async fn follow<T>(
    ctx: &RequestContext<RoleServer>,
    mut events: EventStream<T>,
    mut on_event: impl FnMut(T) -> bool,
) -> Result<(), ToolError> {
    let token = ctx.meta.get_progress_token();
    let started = Instant::now();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            _ = ctx.ct.cancelled() => return Err(ToolError::Cancelled),
            _ = ticker.tick() => {
                if let Some(token) = &token {
                    let secs = started.elapsed().as_secs();
                    let note = ProgressNotificationParam::new(token.clone(), secs as f64)
                        .with_message(format!("still running after {secs} s"));
                    // A client that stopped listening for progress is no reason to fail.
                    let _ = ctx.peer.notify_progress(note).await;
                }
            }
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if on_event(event) {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(ClientError::Stream(
                        "the stream ended before the run finished".into(),
                    )
                    .into());
                }
            },
        }
    }
}
