//! Serving the API on a Unix socket, with signal handling: SIGTERM/SIGINT terminate the
//! sessions and stop the agent, SIGHUP is forwarded to them.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::agent::Agent;
use crate::config::AgentConfig;
use crate::http;
use crate::reaper::Reaper;

/// Time children get between SIGTERM and SIGKILL when the agent stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves until SIGTERM or SIGINT. Must run on the runtime that owns the process's children
/// (it starts the reaper).
pub async fn serve(listener: UnixListener, config: AgentConfig) -> io::Result<()> {
    let reaper = Reaper::start()?;
    let bridge_config = config.egress_bridge.clone();
    if let (Some(cgroup), Some(view)) = (&config.memory_cgroup, &config.meminfo_view) {
        crate::meminfo::spawn_refresher(cgroup.clone(), view.clone());
    }
    let agent = Agent::new(config, reaper);
    agent.sessions.prewarm();
    if let Some(bridge) = bridge_config {
        crate::egress_bridge::spawn(bridge).await;
    }
    let app = http::router(agent.clone());
    let stop = stop_signal(agent.clone())?;
    tokio::select! {
        result = axum::serve(listener, app).into_future() => result,
        () = stop => {
            tracing::info!("stopping: terminating sessions");
            agent.shutdown(SHUTDOWN_GRACE).await;
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT; forwards SIGHUP to the children meanwhile.
fn stop_signal(agent: Arc<Agent>) -> io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => agent.signal_children(Signal::SIGHUP),
            }
        }
    })
}

/// Runs the agent on a single-threaded runtime (memory per idle sandbox matters) until it is
/// told to stop. `listener` must already be bound.
pub fn run(listener: std::os::unix::net::UnixListener, config: AgentConfig) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .thread_keep_alive(Duration::from_secs(2))
        .build()?;
    runtime.block_on(async move {
        let listener = UnixListener::from_std(listener)?;
        serve(listener, config).await
    })
}
