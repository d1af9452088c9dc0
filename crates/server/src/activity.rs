//! Whether an otherwise idle sandbox is busy: before the reaper puts a `keepAliveWhileBusy`
//! sandbox to sleep it asks the agent (`GET /api/activity`) whether background processes run
//! or a terminal runs a command. Asked only then, so it costs nothing on the request path.

use std::time::Duration;

use sandpit_protocol::container::ActivityResponse;
use sandpit_runtime::AgentConnector;
use tokio::time::Instant;

use crate::process_archive::get_json;

/// Time the reaper gives an agent to answer.
pub const BUSY_CHECK_BUDGET: Duration = Duration::from_secs(2);

/// Whether the sandbox of `agent` is busy. An agent that does not answer within
/// [`BUSY_CHECK_BUDGET`] counts as idle, so a wedged sandbox still sleeps (and starts afresh on
/// its next use).
pub async fn is_busy(agent: &dyn AgentConnector) -> bool {
    let deadline = Instant::now() + BUSY_CHECK_BUDGET;
    match get_json::<ActivityResponse>(agent, "/api/activity", deadline).await {
        Ok(activity) => activity.is_busy(),
        Err(e) => {
            tracing::info!(error = %e, "busy check failed; counting the sandbox as idle");
            false
        }
    }
}
