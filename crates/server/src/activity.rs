//! Whether an otherwise idle sandbox is busy: before the reaper puts a `keepAliveWhileBusy`
//! sandbox to sleep it asks the agent (`GET /api/activity`) whether background processes run
//! or a terminal runs a command. Asked only then, so it costs nothing on the request path.

use std::time::Duration;

use sandpit_protocol::container::ActivityResponse;

use crate::agent_client::AgentClient;

/// Largest answer read (a few counters).
const MAX_ANSWER_BYTES: usize = 64 << 10;
/// Time the reaper gives an agent to answer.
pub const BUSY_CHECK_BUDGET: Duration = Duration::from_secs(2);

/// Whether the sandbox of `agent` is busy. An agent that does not answer within
/// [`BUSY_CHECK_BUDGET`] counts as idle, so a wedged sandbox still sleeps (and starts afresh on
/// its next use).
pub async fn is_busy(agent: &AgentClient) -> bool {
    let call = agent.get_json::<ActivityResponse>("/api/activity", MAX_ANSWER_BYTES);
    match tokio::time::timeout(BUSY_CHECK_BUDGET, call).await {
        Ok(Ok(activity)) => activity.is_busy(),
        Ok(Err(e)) => {
            tracing::info!(error = %e.chain(), "busy check failed; counting the sandbox as idle");
            false
        }
        Err(_) => {
            tracing::info!("busy check timed out; counting the sandbox as idle");
            false
        }
    }
}
