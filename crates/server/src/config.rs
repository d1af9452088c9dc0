//! Server configuration and the lookup of the agent binary.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use sandpit_protocol::control::{Isolation, Limits};
use sandpit_protocol::quota::TenantQuota;

/// Name of the env var that sets the admin key.
pub const ADMIN_KEY_ENV: &str = "SANDPIT_ADMIN_KEY";
/// Name of the env var that points at the agent binary.
pub const AGENT_BIN_ENV: &str = "SANDPIT_AGENT_BIN";

/// The database of the control plane.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum StoreBackend {
    /// `<data_dir>/sandpit.db`, one server process.
    #[default]
    Sqlite,
    /// A PostgreSQL database (`postgres://user[:password]@host[:port]/db`, or
    /// `postgres://user@/db?host=/socket/dir`), which several servers may share.
    Postgres { url: String },
}

impl StoreBackend {
    /// `sqlite`, or a `postgres://` / `postgresql://` URL.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value == "sqlite" {
            return Ok(StoreBackend::Sqlite);
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(StoreBackend::Postgres {
                url: value.to_owned(),
            });
        }
        Err("expected `sqlite` or a URL postgres://USER[:PASSWORD]@HOST[:PORT]/DB".into())
    }

    /// How logs and errors name it: the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreBackend::Sqlite => "sqlite".into(),
            StoreBackend::Postgres { url } => redact_password(url),
        }
    }
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `scheme://user:secret@host...?password=secret` → `scheme://user:***@host...` (the query
/// left out when it has a password).
fn redact_password(url: &str) -> String {
    let url = match url.split_once('?') {
        Some((base, query)) if query.split('&').any(|p| p.starts_with("password=")) => base,
        _ => url,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

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
    /// runsc for the `gvisor` isolation tier (default: `$SANDPIT_RUNSC`, else `runsc` on
    /// `PATH`); `None`: the server offers only `standard`.
    pub runsc: Option<PathBuf>,
    /// Tier of sandboxes created without `isolation` (default `standard`).
    pub default_isolation: Isolation,
    /// Admin key; generated and saved in `<data_dir>/admin.key` when absent.
    pub admin_key: Option<String>,
    /// Where the control plane's state lives (default: SQLite in `<data_dir>/sandpit.db`).
    pub store: StoreBackend,
    /// Cluster mode (`serve --cluster-dir`): the dir of `sandpit cluster init` (CA, join
    /// token); sandboxes then run on nodes that joined, not on this host.
    pub cluster_dir: Option<PathBuf>,
    /// Limits for every field a sandbox leaves unset (each within its maximum).
    pub default_limits: Limits,
    /// The largest limits one sandbox may ask for (`--max-*`); an unset field defaults from
    /// the host (memory: its RAM, cpus: its CPUs, pids: pid_max / 8, disk: the data dir's
    /// filesystem). A value above what the host has is refused at start.
    pub max_limits: Limits,
    /// Most ports one sandbox may expose at preview URLs (default 32).
    pub max_exposed_ports: u64,
    /// Most background processes running at once in one sandbox (default 128).
    pub max_processes: u64,
    /// The quota of every tenant without one of its own (default: none).
    pub default_quota: TenantQuota,
    /// Largest request body forwarded to a sandbox (default 64 MiB).
    pub max_body_bytes: usize,
    /// Largest body of a control-plane request (default 1 MiB).
    pub max_control_body_bytes: usize,
    /// How often the idle reaper looks for sandboxes to put to sleep (default 1 s).
    pub reaper_interval: Duration,
    /// How often background-process records and logs of running sandboxes are checkpointed
    /// into the store, so a crash of the server loses at most this much of them (default 2 s;
    /// zero turns checkpoints off: they are then kept only when a sandbox goes to sleep).
    pub process_checkpoint_every: Duration,
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
    /// Endpoint origins bucket mounts may use besides public https ones (`--mount-endpoint`).
    pub mount_endpoints: Vec<String>,
    /// Most bucket mounts (s3fs processes) one sandbox may have (`--max-mounts-per-sandbox`,
    /// default 8); a mount beyond is refused with `TOO_MANY_MOUNTS`.
    pub max_mounts_per_sandbox: usize,
    /// The operator's blocks (`--egress-block`): no sandbox reaches them, whatever its policy,
    /// through the proxy or in `full` mode. The built-in reserved ranges
    /// (`sandpit_protocol::netrange`) are blocked besides these.
    pub egress_blocked: Vec<IpNet>,
    /// Ranges the operator declares private besides the built-in ones (`--egress-private`):
    /// only a policy set with the admin key opens them.
    pub egress_private: Vec<IpNet>,
    /// Ranges taken out of the built-in reserved classes. For tests, whose servers listen on
    /// loopback; deliberately not a CLI flag.
    pub egress_unblocked: Vec<IpNet>,
    /// Private ranges granted to every sandbox of a tenant (`--egress-grant TENANT=CIDR`).
    pub egress_grants: BTreeMap<String, Vec<IpNet>>,
    /// PEM files trusted for upstream TLS of intercepted connections, besides the host's bundle.
    pub egress_extra_roots: Vec<PathBuf>,
    /// Whether `GET /metrics` needs the admin key (default false: the listener is loopback by
    /// default and the metrics hold counts only).
    pub metrics_auth: bool,
    /// Most egress connections one sandbox keeps open (default 256; each pins host fds).
    pub egress_max_connections_per_sandbox: usize,
    /// Most egress connections all sandboxes of one tenant keep open together (default 1024).
    pub egress_max_connections_per_tenant: usize,
    /// The cgroup holding the sandboxes' cgroups (`--cgroup-root`, default `/sandpit`): an
    /// absolute path is the same directory in every cgroup hierarchy, so a server restarted
    /// from another cgroup finds and cleans the sandboxes of the one before; the gVisor tier
    /// uses `<root>-gvisor`. A bare name is a child of the server's own cgroup.
    pub cgroup_root: String,
    /// Sandboxes get a read-only sysfs at `/sys` (`--sandbox-sysfs`, default off: `/sys` holds
    /// only `/sys/fs/cgroup`, one kernel superblock less per sandbox).
    pub sandbox_sysfs: bool,
    /// No sandbox is created or started while the host's `MemAvailable` is below this many MiB
    /// (`--min-host-memory-mb`, default 512; 0 turns the check off): the request fails with
    /// `HOST_MEMORY_LOW` instead of the host running into its OOM killer.
    pub min_host_memory_mb: u64,
    /// Where backups are stored (default: the directory `<data_dir>/objects`).
    pub object_store: crate::objects::ObjectStoreConfig,
    /// Per-tenant caps on backups (default 100 backups, 100 GiB).
    pub backup_limits: crate::backups::BackupLimits,
}

impl ServeConfig {
    /// Defaults around `data_dir`; the admin key comes from `SANDPIT_ADMIN_KEY` when set.
    pub fn new(data_dir: PathBuf) -> Self {
        let data_dir_objects = data_dir.join("objects");
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            images_dir: data_dir.join("images"),
            data_dir,
            agent_bin: find_agent_binary().unwrap_or_else(|| PathBuf::from("sandpit-agent")),
            runsc: sandpit_runtime::gvisor::find_runsc(),
            default_isolation: Isolation::default(),
            admin_key: std::env::var(ADMIN_KEY_ENV).ok().filter(|k| !k.is_empty()),
            store: StoreBackend::default(),
            default_limits: Limits {
                cpus: Some(1.0),
                memory_mb: Some(1024),
                pids: Some(1024),
                disk_mb: None,
            },
            max_limits: Limits::default(),
            max_exposed_ports: crate::caps::DEFAULT_MAX_EXPOSED_PORTS,
            max_processes: sandpit_protocol::quota::DEFAULT_MAX_PROCESSES,
            default_quota: TenantQuota::default(),
            max_body_bytes: 64 << 20,
            max_control_body_bytes: 1 << 20,
            reaper_interval: Duration::from_secs(1),
            cluster_dir: None,
            process_checkpoint_every: crate::process_archive::CHECKPOINT_EVERY,
            shutdown_grace: Duration::from_secs(5),
            preview_domain: "localhost".into(),
            preview_scheme: "http".into(),
            preview_port: None,
            egress_resolve: BTreeMap::new(),
            egress_blocked: Vec::new(),
            mount_endpoints: Vec::new(),
            max_mounts_per_sandbox: crate::mounts::DEFAULT_MAX_PER_SANDBOX,
            egress_private: Vec::new(),
            egress_unblocked: Vec::new(),
            egress_grants: BTreeMap::new(),
            egress_extra_roots: Vec::new(),
            metrics_auth: false,
            egress_max_connections_per_sandbox: crate::egress::DEFAULT_MAX_CONNECTIONS_PER_SANDBOX,
            egress_max_connections_per_tenant: crate::egress::DEFAULT_MAX_CONNECTIONS_PER_TENANT,
            cgroup_root: sandpit_runtime::local::DEFAULT_CGROUP_ROOT.to_owned(),
            sandbox_sysfs: false,
            min_host_memory_mb: crate::caps::DEFAULT_MIN_HOST_MEMORY_MB,
            object_store: crate::objects::ObjectStoreConfig::Local {
                root: data_dir_objects,
            },
            backup_limits: crate::backups::BackupLimits::default(),
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

#[cfg(test)]
mod store_backend_tests {
    use super::StoreBackend;

    #[test]
    fn store_urls_parse_and_never_show_their_password() {
        assert_eq!(StoreBackend::parse("sqlite"), Ok(StoreBackend::Sqlite));
        assert!(StoreBackend::parse("mysql://db/x").is_err());
        let with_secret = StoreBackend::parse("postgres://app:hunter2@db:5432/sandpit").unwrap();
        assert_eq!(
            format!("{with_secret:?}"),
            "postgres://app:***@db:5432/sandpit"
        );
        let in_query = StoreBackend::parse("postgresql://app@db/sandpit?password=hunter2").unwrap();
        assert!(!in_query.describe().contains("hunter2"), "{in_query:?}");
        let plain = StoreBackend::parse("postgres://app@/sandpit?host=/run/pg").unwrap();
        assert_eq!(plain.describe(), "postgres://app@/sandpit?host=/run/pg");
    }
}
