//! `sandpit-agent launch`: become the sandbox's PID 1, then serve.
//!
//! The host starts this with a `LaunchConfig` (JSON) on stdin and the listening socket as fd 3.
//! `launch_from_stdin` builds the sandbox around this process before any thread exists; in the
//! launcher branch it reports `{"pid": N}` and exits, so only the sandbox init returns here.

use std::collections::BTreeMap;

use anyhow::Context;
use sandpit_agent::AgentConfig;
use sandpit_agent::memcg::MemoryCgroup;
use sandpit_isolation::launch::{MEMINFO_VIEW, WORKSPACE, launch_from_stdin, take_listener};

pub fn launch() -> anyhow::Result<()> {
    let launch = launch_from_stdin();
    // The agent's own settings come from the host, never from the sandbox's env (the tenant's):
    // a tenant's RUST_LOG=trace would make the agent log every request into a host file.
    crate::init_tracing(launch.agent_log_filter.as_deref());
    // The process env of the sandbox is the config's, not the launcher's.
    let env: BTreeMap<String, String> = launch.env.iter().cloned().collect();
    let listener = take_listener(launch.listen_fd).context("taking the listening socket")?;
    let mut config = AgentConfig::from_env(env);
    config.workspace = WORKSPACE.into();
    config.egress_bridge = Some(sandpit_agent::egress_bridge::BridgeConfig::default());
    // The launcher mounted the sandbox's own cgroups here and bound the view over /proc/meminfo.
    config.memory_cgroup = MemoryCgroup::find(std::path::Path::new("/sys/fs/cgroup"));
    config.meminfo_view = Some(MEMINFO_VIEW.into());
    tracing::info!(sandbox = %launch.id, "agent started as sandbox init");
    sandpit_agent::run(listener, config).context("agent failed")
}
