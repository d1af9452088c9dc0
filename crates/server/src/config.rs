//! Server configuration and the lookup of the agent binary.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use sandpit_protocol::control::Limits;

/// Name of the env var that sets the admin key.
pub const ADMIN_KEY_ENV: &str = "SANDPIT_ADMIN_KEY";
/// Name of the env var that points at the agent binary.
pub const AGENT_BIN_ENV: &str = "SANDPIT_AGENT_BIN";

/// Everything `sandpit serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (default `127.0.0.1:7070`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// State directory: `sandpit.db`, `admin.key`, the driver's per-sandbox data.
    pub data_dir: PathBuf,
    /// Image store root (default `<data_dir>/images`).
    pub images_dir: PathBuf,
    /// The `sandpit-agent` binary the driver starts in every sandbox.
    pub agent_bin: PathBuf,
    /// Admin key; generated and saved in `<data_dir>/admin.key` when absent.
    pub admin_key: Option<String>,
    /// Limits for every field a sandbox leaves unset.
    pub default_limits: Limits,
    /// Largest request body forwarded to a sandbox (default 64 MiB).
    pub max_body_bytes: usize,
    /// Largest body of a control-plane request (default 1 MiB).
    pub max_control_body_bytes: usize,
    /// How often the idle reaper looks for sandboxes to put to sleep (default 1 s).
    pub reaper_interval: Duration,
    /// How long shutdown waits for open requests before stopping sandboxes (default 5 s).
    pub shutdown_grace: Duration,
    /// Parent domain of preview URLs (default `localhost`, which resolves to loopback).
    pub preview_domain: String,
    /// Scheme of preview URLs (default `http`; `https` behind a TLS front proxy).
    pub preview_scheme: String,
    /// Port in preview URLs (default: the port the server listens on).
    pub preview_port: Option<u16>,
    /// Names the egress proxy resolves without DNS ("api.example.test" → 127.0.0.1).
    pub egress_resolve: BTreeMap<String, IpAddr>,
    /// Addresses sandboxes never reach unless their policy allows the CIDR (default: loopback,
    /// private, CGNAT, link-local and metadata, unspecified, multicast, reserved).
    pub egress_blocked: Vec<IpNet>,
    /// PEM files trusted for upstream TLS of intercepted connections, besides the host's bundle.
    pub egress_extra_roots: Vec<PathBuf>,
    /// Most egress connections one sandbox keeps open (default 256; each pins host fds).
    pub egress_max_connections_per_sandbox: usize,
    /// Most egress connections all sandboxes of one tenant keep open together (default 1024).
    pub egress_max_connections_per_tenant: usize,
}

impl ServeConfig {
    /// Defaults around `data_dir`; the admin key comes from `SANDPIT_ADMIN_KEY` when set.
    pub fn new(data_dir: PathBuf) -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            images_dir: data_dir.join("images"),
            data_dir,
            agent_bin: find_agent_binary().unwrap_or_else(|| PathBuf::from("sandpit-agent")),
            admin_key: std::env::var(ADMIN_KEY_ENV).ok().filter(|k| !k.is_empty()),
            default_limits: Limits {
                cpus: Some(1.0),
                memory_mb: Some(1024),
                pids: Some(1024),
                disk_mb: None,
            },
            max_body_bytes: 64 << 20,
            max_control_body_bytes: 1 << 20,
            reaper_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            preview_domain: "localhost".into(),
            preview_scheme: "http".into(),
            preview_port: None,
            egress_resolve: BTreeMap::new(),
            egress_blocked: crate::egress::default_blocked(),
            egress_extra_roots: Vec::new(),
            egress_max_connections_per_sandbox: crate::egress::DEFAULT_MAX_CONNECTIONS_PER_SANDBOX,
            egress_max_connections_per_tenant: crate::egress::DEFAULT_MAX_CONNECTIONS_PER_TENANT,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self::new(PathBuf::from("/var/lib/sandpit"))
    }
}

/// Finds `sandpit-agent`: `$SANDPIT_AGENT_BIN`, else next to the current executable, else in
/// its parent directory (cargo puts test executables in `target/<profile>/deps`).
pub fn find_agent_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(AGENT_BIN_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("sandpit-agent"))
        .find(|p| p.is_file())
}
