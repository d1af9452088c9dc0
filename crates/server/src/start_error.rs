//! Why [`Server::start`](crate::Server::start) failed: one variant per step, each naming what
//! it was doing and keeping the cause as its `#[source]` (print the whole chain with
//! [`sandpit_protocol::ErrorChain`] or anyhow's `{:#}`).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::caps::CapsError;
use crate::egress::EgressError;
use crate::error::ApiError;

/// A cause that is not (yet) a typed error of its own (the manager's reconcile and the
/// preview store report through `anyhow`).
pub type BoxedCause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or directory of the data dir.
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another sandpit server is using {} (lock {} is held)", data_dir.display(), lock.display())]
    Locked { data_dir: PathBuf, lock: PathBuf },
    /// Its message names the key file.
    #[error(transparent)]
    DataKey(sandpit_store::KeyError),
    #[error("opening the store {}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: sandpit_store::StoreError,
    },
    /// The cluster dir of `serve --cluster-dir` (CA, key, join token).
    #[error("loading the cluster dir {}", dir.display())]
    Cluster {
        dir: PathBuf,
        #[source]
        source: crate::cluster::pki::PkiError,
    },
    #[error("connecting to the PostgreSQL store {url}")]
    Postgres {
        /// Without its password.
        url: String,
        #[source]
        source: sandpit_store::StoreError,
    },
    #[error("opening the object store")]
    ObjectStore(#[source] crate::objects::ObjectsError),
    #[error("creating the default tenant")]
    DefaultTenant(#[source] sandpit_store::StoreError),
    #[error("opening the images at {}", path.display())]
    Images {
        path: PathBuf,
        #[source]
        source: sandpit_image::ImageError,
    },
    /// Operator maxima that cannot hold (its message names the flag).
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error("setting up the egress proxy")]
    Egress(#[source] EgressError),
    /// A `--mount-endpoint` that is not an http(s) origin (the message says which).
    #[error("--mount-endpoint: {0}")]
    MountEndpoint(String),
    #[error("setting up the local sandbox driver")]
    Driver(#[source] sandpit_runtime::DriverError),
    #[error("setting up the gVisor sandbox driver")]
    GvisorDriver(#[source] sandpit_runtime::DriverError),
    /// `default_isolation` names a tier this server has no driver for.
    #[error("default isolation")]
    DefaultIsolation(#[source] ApiError),
    #[error("initialising the sandbox manager")]
    Manager(#[source] ApiError),
    #[error("reconciling sandboxes of a previous run")]
    Reconcile(#[source] BoxedCause),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("loading exposed ports")]
    Previews(#[source] BoxedCause),
    #[error("setting up /mcp")]
    Mcp(#[source] BoxedCause),
}

impl StartError {
    /// Maps an I/O error on `path` to [`StartError::Io`].
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StartError {
        let path = path.into();
        move |source| StartError::Io { what, path, source }
    }
}
