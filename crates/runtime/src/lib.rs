//! Host-side sandbox lifecycle.
//!
//! The control plane talks to sandboxes only through the [`Driver`] trait: start one (get back
//! the Unix socket of its agent), stop it (every process gone, the writable layer kept), destroy
//! it (everything gone), and reconcile after a crash. [`local::LocalDriver`] implements it with
//! Linux namespaces on this host; a Kubernetes driver can come later.

pub mod agent_log;
pub mod gvisor;
pub mod local;
pub mod network;
mod slirp;
pub mod testnet;
pub mod usage;

use std::path::PathBuf;

use sandpit_protocol::control::{Limits, NetworkPolicy};

/// Everything a driver needs to start one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The sandbox id (also its hostname).
    pub id: String,
    /// Directory of the image's root filesystem (read-only lower layer).
    pub image_rootfs: PathBuf,
    /// Effective limits (server defaults already filled in).
    pub limits: Limits,
    /// Environment given to every process of the sandbox.
    pub env: Vec<(String, String)>,
    /// First host uid/gid of the sandbox's 65536-id range (sandbox root maps to it).
    pub uid_base: u32,
    /// Drop the writable layer when the sandbox stops.
    pub ephemeral: bool,
    /// Network policy at start (`full` gets user-mode networking before `start` returns).
    pub network: NetworkPolicy,
}

/// A started sandbox.
#[derive(Debug, Clone)]
pub struct Started {
    /// Unix socket on which the sandbox's agent serves the container API.
    pub socket: PathBuf,
    /// Host pid of the sandbox's init (the agent).
    pub pid: u32,
}

/// What a sandbox uses now. CPU, memory and processes are zero while it is not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// CPU time of the current run, in microseconds.
    pub cpu_usec: u64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub pids: u64,
    /// Bytes of the writable layer.
    pub disk_bytes: u64,
    /// False when `disk_bytes` is a lower bound (see [`usage::MAX_WALK_ENTRIES`]).
    pub disk_complete: bool,
}

/// Errors of a driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("sandbox {id}: {stage}: {source}")]
    Io {
        id: String,
        stage: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox {id} failed to start: {message}")]
    StartFailed { id: String, message: String },
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// The kernel kept the old limits (e.g. memory below what the sandbox uses now).
    #[error("sandbox {id}: {message}")]
    LimitsRefused { id: String, message: String },
}

/// Runs sandboxes. Implementations must be safe to call concurrently for different ids; the
/// control plane never calls two lifecycle methods for the same id at once.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Starts the sandbox (its writable layer is reused if it exists) and returns once its agent
    /// accepts connections.
    async fn start(&self, spec: &SandboxSpec) -> Result<Started, DriverError>;

    /// Stops every process of the sandbox and releases its cgroups and socket. The writable
    /// layer survives unless the spec was ephemeral. Stopping a stopped sandbox is a no-op.
    async fn stop(&self, id: &str) -> Result<(), DriverError>;

    /// Stops the sandbox and deletes its writable layer and every other trace of it.
    async fn destroy(&self, id: &str) -> Result<(), DriverError>;

    /// Whether the sandbox's init is still alive.
    async fn is_running(&self, id: &str) -> bool;

    /// Called once at server start: stops everything a previous server left running (processes,
    /// cgroups, sockets) and returns the ids it found, so the control plane can mark them asleep.
    async fn reconcile(&self) -> Result<Vec<String>, DriverError>;

    /// Host directory shown read-only at `/run/sandpit` inside the sandbox; files put there
    /// before `start` (the egress socket, CA bundles) are visible to it. `None`: the driver
    /// has none.
    fn run_dir(&self, _id: &str) -> Option<PathBuf> {
        None
    }

    /// Applies new cpu, memory and pids limits to a running sandbox at once (`disk_mb` is
    /// ignored: the writable layer's size is fixed while it runs). Drivers that cannot change
    /// limits live ignore it; the limits then apply at the next start.
    async fn set_limits(&self, _id: &str, _limits: &Limits) -> Result<(), DriverError> {
        Ok(())
    }

    /// Applies a network policy to a running sandbox (`full` starts user-mode networking,
    /// `none`/`allowlist` stop it; the allowlist itself is the egress proxy's job). Drivers
    /// without direct networking ignore it.
    async fn set_network(&self, _id: &str, _policy: &NetworkPolicy) -> Result<(), DriverError> {
        Ok(())
    }

    /// What the sandbox uses now; drivers that cannot tell report nothing used.
    async fn usage(&self, _id: &str) -> Result<ResourceUsage, DriverError> {
        Ok(ResourceUsage {
            disk_complete: true,
            ..ResourceUsage::default()
        })
    }
}
