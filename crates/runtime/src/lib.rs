//! Host-side sandbox lifecycle.
//!
//! The control plane talks to sandboxes only through the [`Driver`] trait: start one (get back
//! an [`AgentConnector`] that opens byte streams to its agent), stop it (every process gone, the
//! writable layer kept), destroy it (everything gone), and reconcile after a crash. How a driver
//! isolates a sandbox, where it keeps its files, which host uids it maps and how the agent is
//! reached are its own business. [`local::LocalDriver`] implements it with Linux namespaces on
//! this host.

pub mod agent_log;
pub mod bucket;
mod egress_hub;
pub mod gvisor;
mod host;
pub use host::HostLayout;
pub mod layers;
pub mod local;
pub mod network;
mod slirp;
pub mod snapshot_archive;
pub mod testnet;
pub mod usage;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use sandpit_protocol::control::Limits;
use sandpit_protocol::netpolicy::EgressPolicy;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream (to an agent, or from a sandbox's egress bridge).
pub trait ByteIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteIo for T {}

/// A boxed [`ByteIo`]: what an [`AgentConnector`] yields.
pub type AgentStream = Box<dyn ByteIo>;

/// Opens connections to one run of a sandbox's agent, which serves the container API (HTTP/1.1)
/// on each. Cheap to clone behind its `Arc`; valid for the run it was returned for.
#[async_trait::async_trait]
pub trait AgentConnector: Send + Sync + fmt::Debug {
    /// A fresh connection to the agent. An error of kind `ConnectionRefused` or `NotFound`
    /// means the agent is gone (its sandbox stopped or died); other errors are transient.
    async fn connect(&self) -> std::io::Result<AgentStream>;
}

/// An agent listening on a Unix socket of this host (the local drivers' endpoint).
#[derive(Debug, Clone)]
pub struct UnixConnector {
    path: PathBuf,
}

impl UnixConnector {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UnixConnector { path: path.into() }
    }
}

#[async_trait::async_trait]
impl AgentConnector for UnixConnector {
    async fn connect(&self) -> std::io::Result<AgentStream> {
        let stream = tokio::net::UnixStream::connect(&self.path).await?;
        Ok(Box::new(stream))
    }
}

/// Where the connections a sandbox opens to its egress bridge (`/run/sandpit/egress.sock`
/// inside) are handed over: the control plane's egress proxy. The driver decides how those
/// connections leave the sandbox.
#[derive(Clone)]
pub struct EgressEndpoint(Arc<dyn Fn(AgentStream) + Send + Sync>);

impl EgressEndpoint {
    pub fn new(accept: impl Fn(AgentStream) + Send + Sync + 'static) -> Self {
        EgressEndpoint(Arc::new(accept))
    }

    /// Hands one connection from the sandbox to the proxy (which serves it on its own task).
    pub fn accept(&self, stream: AgentStream) {
        (self.0)(stream)
    }
}

impl fmt::Debug for EgressEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EgressEndpoint")
    }
}

/// A file shown read-only in `/run/sandpit` inside the sandbox for one run (the egress CA
/// bundle, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFile {
    /// A plain file name (no `/`).
    pub name: String,
    pub contents: Vec<u8>,
}

/// Everything a driver needs to start one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The sandbox id (also its hostname).
    pub id: String,
    /// Name of the image in the image store (resolved by the driver).
    pub image: String,
    /// Resources requested (server defaults already filled in).
    pub limits: Limits,
    /// Environment given to every process of the sandbox.
    pub env: Vec<(String, String)>,
    /// Drop the writable layer when the sandbox stops.
    pub ephemeral: bool,
    /// Network policy at start (`full` gets user-mode networking before `start` returns).
    pub network: EgressPolicy,
    /// Files for `/run/sandpit` (written for this run only).
    pub run_files: Vec<RunFile>,
    /// Where the sandbox's egress bridge leads; `None`: it leads nowhere.
    pub egress: Option<EgressEndpoint>,
    /// Bucket mounts made before `start` returns (one that fails is logged and left out; see
    /// [`Driver::mounted`]).
    pub mounts: Vec<bucket::BucketMount>,
}

/// A started sandbox.
#[derive(Debug, Clone)]
pub struct Started {
    /// Connections to the sandbox's agent.
    pub agent: Arc<dyn AgentConnector>,
    /// Identifies this run of the sandbox to the driver (the local drivers: host pid of the
    /// sandbox's init).
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
    #[error("sandbox {id}: {stage}")]
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
    /// The spec names an image the driver's image store does not have.
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// The kernel kept the old limits (e.g. memory below what the sandbox uses now).
    #[error("sandbox {id}: {message}")]
    LimitsRefused { id: String, message: String },
    /// A bucket mount could not be made (bad endpoint, credentials, bucket; s3fs's words).
    #[error("sandbox {id}: mounting the bucket failed: {message}")]
    MountFailed { id: String, message: String },
    /// Nothing is mounted at that path.
    #[error("sandbox {id}: nothing is mounted at {path}")]
    NotMounted { id: String, path: String },
    /// The driver cannot do this (e.g. bucket mounts under gVisor).
    #[error("{0}")]
    Unsupported(String),
    /// No snapshot of this name.
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),
    /// Cluster mode: the sandbox's node (or every node, for a new sandbox) does not answer.
    #[error("node {node} is unavailable: {message}")]
    NodeUnavailable { node: String, message: String },
}

/// A snapshot the driver took ([`Driver::snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotTaken {
    /// Bytes of the writable-layer data the snapshot holds above its image (every layer of its
    /// stack, shared ones included).
    pub size_bytes: u64,
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

    /// Called once at an orderly server shutdown, after every sandbox was stopped: releases
    /// what the driver holds for all sandboxes (e.g. removes its cgroup root when empty).
    async fn shutdown(&self) {}

    /// Store migration 12 hands over the uid ranges the control plane allocated before drivers
    /// owned them, as `(id, first host uid)`, once at server start. A driver that maps uids
    /// keeps each as the sandbox's range unless it recorded one already (so files keep their
    /// owners); others ignore it.
    async fn adopt_uid_ranges(&self, _ranges: &[(String, u32)]) -> Result<(), DriverError> {
        Ok(())
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
    async fn set_network(&self, _id: &str, _policy: &EgressPolicy) -> Result<(), DriverError> {
        Ok(())
    }

    /// Refuses (`InvalidSpec`) a network policy this driver cannot run, before the control
    /// plane stores it; the default accepts every policy.
    fn check_network(&self, _policy: &EgressPolicy) -> Result<(), DriverError> {
        Ok(())
    }

    /// Mounts `mount` in the running sandbox `id` (the control plane woke it first).
    async fn mount(&self, _id: &str, _mount: &bucket::BucketMount) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(
            "bucket mounts are not supported by this isolation tier".into(),
        ))
    }

    /// Removes the bucket mount at `mount_path` of sandbox `id` (a stopped sandbox has none).
    async fn unmount(&self, _id: &str, _mount_path: &std::path::Path) -> Result<(), DriverError> {
        Ok(())
    }

    /// The mount paths of the bucket mounts that are up in sandbox `id` now.
    async fn mounted(&self, _id: &str) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Whether [`Driver::snapshot`] and [`Driver::seed_from_snapshot`] work at all on this
    /// driver (asked before a sandbox is stopped for a snapshot).
    fn supports_snapshots(&self) -> bool {
        false
    }

    /// Freezes the file system of the stopped sandbox `id` (its writable layer over its image)
    /// into the immutable snapshot `snapshot` (a name the caller chose, unique on this
    /// driver). The sandbox keeps its files and continues above the snapshot. Running
    /// processes and memory are not part of a snapshot; the caller stops the sandbox first.
    async fn snapshot(&self, _id: &str, _snapshot: &str) -> Result<SnapshotTaken, DriverError> {
        Err(DriverError::Unsupported(
            "snapshots are not supported for this isolation tier".into(),
        ))
    }

    /// Makes snapshot `snapshot` the file system of the new sandbox `id` (before its first
    /// start): it starts with the snapshot's files under an empty writable layer of its own.
    async fn seed_from_snapshot(&self, _id: &str, _snapshot: &str) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(
            "snapshots are not supported for this isolation tier".into(),
        ))
    }

    /// Deletes snapshot `snapshot`; data that sandboxes made from it still use stays until
    /// they are destroyed. Deleting an unknown snapshot is a no-op.
    async fn delete_snapshot(&self, _snapshot: &str) -> Result<(), DriverError> {
        Ok(())
    }

    /// Writes snapshot `snapshot` to `out` as one self-contained archive (a tar stream, see
    /// [`snapshot_archive`]) that [`Driver::import_snapshot`] of any data dir reads back. The
    /// caller keeps the snapshot from being deleted meanwhile. Returns once `out` is shut down.
    async fn export_snapshot(
        &self,
        _snapshot: &str,
        _out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    ) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(
            "snapshot export is not supported for this isolation tier".into(),
        ))
    }

    /// Reads an archive of [`Driver::export_snapshot`] from `input` to its end and records it
    /// as the new snapshot `snapshot`. An input that ends in an error (the caller's verdict on
    /// its digest) or an archive that fails a check leaves nothing behind.
    async fn import_snapshot(
        &self,
        _snapshot: &str,
        _input: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ) -> Result<SnapshotTaken, DriverError> {
        Err(DriverError::Unsupported(
            "snapshot import is not supported for this isolation tier".into(),
        ))
    }

    /// The node the sandbox is placed on (cluster mode); drivers of this host answer `None`.
    async fn node_of(&self, _id: &str) -> Option<String> {
        None
    }

    /// What the sandbox uses now; drivers that cannot tell report nothing used.
    async fn usage(&self, _id: &str) -> Result<ResourceUsage, DriverError> {
        Ok(ResourceUsage {
            disk_complete: true,
            ..ResourceUsage::default()
        })
    }
}
