//! Agent configuration.

use sandpit_protocol::quota::{DEFAULT_MAX_PROCESSES, MAX_PROCESSES_ENV};
use sandpit_protocol::time::TimeoutMs;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Default working directory of sessions and sessionless commands.
pub const DEFAULT_WORKSPACE: &str = "/workspace";

/// Largest request body accepted (a base64 file write of the 32 MiB read limit fits).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Largest amount of each output stream buffered for `/api/execute`.
pub const OUTPUT_CAP_BYTES: usize = 16 * 1024 * 1024;

/// How the agent runs commands.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Default cwd for sessions and sessionless commands, and base of relative file paths.
    pub workspace: PathBuf,
    /// The environment every shell and command starts from (the "container env").
    pub env: BTreeMap<String, String>,
    /// Default timeout of commands (`COMMAND_TIMEOUT_MS`; unset or `0`: none).
    pub command_timeout: TimeoutMs,
    /// Request body limit; bigger bodies get 413.
    pub max_body_bytes: usize,
    /// Per-stream buffer cap of `/api/execute`.
    pub output_cap: usize,
    /// The shell used for sessions and sessionless commands.
    pub shell: PathBuf,
    /// Changes to `env` made at run time by `POST /api/env` (`None` unsets); shared by every
    /// clone so sessions and processes started later see them.
    pub env_overrides: std::sync::Arc<std::sync::RwLock<sandpit_protocol::container::EnvMap>>,
    /// Serve the egress bridge (launch mode only: it listens in the sandbox's netns).
    pub egress_bridge: Option<crate::egress_bridge::BridgeConfig>,
    /// Most background processes running at once (`SANDPIT_MAX_PROCESSES`, set by the server).
    pub max_processes: usize,
    /// The sandbox's memory cgroup (launch mode): OOM kills of commands are reported as such.
    pub memory_cgroup: Option<crate::memcg::MemoryCgroup>,
    /// The file bound over `/proc/meminfo` (launch mode), kept current from `memory_cgroup`.
    pub meminfo_view: Option<PathBuf>,
}

impl AgentConfig {
    /// A configuration from an environment (the agent's own, or the one the launcher passes).
    /// Reads `COMMAND_TIMEOUT_MS`, `SANDPIT_WORKSPACE` and `SANDPIT_MAX_PROCESSES`.
    pub fn from_env(env: BTreeMap<String, String>) -> Self {
        let command_timeout = env
            .get("COMMAND_TIMEOUT_MS")
            .and_then(|v| TimeoutMs::parse_env(v))
            .unwrap_or(TimeoutMs::NONE);
        let workspace = env
            .get("SANDPIT_WORKSPACE")
            .map_or_else(|| PathBuf::from(DEFAULT_WORKSPACE), PathBuf::from);
        let max_processes = env
            .get(MAX_PROCESSES_ENV)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_MAX_PROCESSES);
        AgentConfig {
            max_processes: usize::try_from(max_processes).unwrap_or(usize::MAX),
            workspace,
            env,
            command_timeout,
            max_body_bytes: MAX_BODY_BYTES,
            output_cap: OUTPUT_CAP_BYTES,
            shell: PathBuf::from("/bin/bash"),
            env_overrides: Default::default(),
            egress_bridge: None,
            memory_cgroup: None,
            meminfo_view: None,
        }
    }

    /// The configuration from this process's environment (non-UTF-8 entries are skipped).
    pub fn from_process_env() -> Self {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        AgentConfig::from_env(env)
    }
}
