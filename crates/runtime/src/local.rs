//! [`LocalDriver`]: sandboxes as Linux namespaces on this host.
//!
//! Per start: cgroups under `<cgroup root>/<id>` (default `/sandpit` in every hierarchy), host
//! dirs under
//! `<data_dir>/sandboxes/<id>` (`upper/` + `work/` are the persistent writable layer), a listening
//! socket `<data_dir>/run/<id>.sock` (0600, host root), then `<agent_bin> launch` with a
//! [`LaunchConfig`] on stdin and the socket as fd 3. The launcher prints `{"pid": N}` and exits;
//! the sandbox init (the agent) is re-parented to this process (a child subreaper), which watches
//! it with a pidfd and reaps it.
//!
//! The driver owns what is host-shaped about a sandbox: its image is resolved in the image store
//! named by the config; its host uid range is allocated on first start and recorded in
//! `<data_dir>/sandboxes/<id>/uid_base` for the sandbox's life ([`UidRanges`]); the run files
//! and the egress bridge (`egress.sock`, whose connections go to the spec's
//! [`EgressEndpoint`](crate::EgressEndpoint)) are put in its run dir.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use sandpit_image::{ImageError, ImageStore};
use sandpit_isolation::cgroup::{CgroupError, CgroupLimits, CgroupManager};
use sandpit_isolation::launch::{LISTEN_FD, LaunchConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::bucket::{self, ActiveMount, BucketMount};
use crate::egress_hub::EgressHub;
use crate::host::{
    Bridges, HostLayout, check_data_dir, check_socket_path, remove_cgroups, remove_file_if_exists,
};
use crate::slirp::Slirp;
use crate::{
    AgentConnector, Driver, DriverError, EgressEndpoint, ResourceUsage, RunFile, SandboxSpec,
    SnapshotTaken, Started, UnixConnector, agent_log, layers, network, usage,
};
use sandpit_protocol::control::{Limits, NetworkMode};
use sandpit_protocol::netpolicy::EgressPolicy;

/// Longest usable `sun_path` (108 bytes including the terminating NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;
/// Smallest memory limit a sandbox can start with.
pub(crate) const MIN_MEMORY_MB: u64 = 8;
/// Smallest pids limit a sandbox can start with.
const MIN_PIDS: u64 = 4;
/// fd number of the log pipe in the launcher (after [`LISTEN_FD`]).
const LOG_FD: i32 = LISTEN_FD + 1;
/// Cap on the launcher stderr kept for error messages.
const MAX_STDERR: usize = 16 * 1024;
/// Smallest and largest `diskMb` (ext4 with a journal needs a few MiB of its own).
const MIN_DISK_MB: u64 = 16;
const MAX_DISK_MB: u64 = 1 << 24;
/// Name of a disk image while it is being formatted (renamed to `disk.img` when done).
const DISK_IMAGE_TMP: &str = "disk.img.tmp";
/// The egress bridge's socket in the run dir (the agent inside bridges `127.0.0.1:3128` to it).
pub const EGRESS_SOCKET: &str = "egress.sock";
/// The shared egress listener in the data dir; every run dir's [`EGRESS_SOCKET`] is a hard link
/// to it.
const EGRESS_HUB_SOCKET: &str = "egress.sock";
/// File in the sandbox dir recording the first host uid of the sandbox's range.
const UID_BASE_FILE: &str = "uid_base";
/// In the data dir: the uid range of imported snapshot layers.
const IMPORT_OWNER_FILE: &str = "import-owner";

/// Settings of a [`LocalDriver`]; [`LocalDriverConfig::new`] fills in defaults.
#[derive(Debug, Clone)]
pub struct LocalDriverConfig {
    /// Holds `sandboxes/<id>/` and `run/<id>.sock`.
    pub data_dir: PathBuf,
    /// The image store that [`SandboxSpec::image`] names are resolved in.
    pub images_dir: PathBuf,
    /// First host uid handed to sandboxes (range `n` starts at `first_uid + n * 65536`).
    pub first_uid: u32,
    /// Binary started as `<agent_bin> launch`.
    pub agent_bin: PathBuf,
    /// The cgroup that holds the sandboxes' cgroups: an absolute path is the same directory in
    /// every hierarchy (default `/sandpit`, found again by a server restarted from another
    /// cgroup); a bare name is a child of the server's own cgroup.
    pub cgroup_group: String,
    /// How long the launcher may take before the start fails.
    pub start_timeout: Duration,
    /// How long `stop` waits for the processes to go away.
    pub stop_timeout: Duration,
    /// RLIMIT_NOFILE inside sandboxes (capped at the host's hard limit).
    pub nofile: u64,
    /// User-mode networking for the `full` network mode.
    pub slirp4netns: PathBuf,
    /// `nft`, run inside a sandbox's network namespace to load its firewall.
    pub nft: PathBuf,
    /// `mkfs.ext4`, which formats the disk image of sandboxes with `diskMb`.
    pub mkfs_ext4: PathBuf,
    /// `s3fs`, which serves bucket mounts (see [`crate::bucket`]).
    pub s3fs: PathBuf,
    /// The operator's blocked and declared-private CIDRs, which the `full` mode's firewall
    /// refuses like the built-in ones (IPv4 entries; slirp routes no IPv6).
    pub operator: network::OperatorRanges,
    /// Cap of each sandbox's `agent.log` (it rotates once to `agent.log.1`).
    pub agent_log_max_bytes: u64,
    /// The agent's tracing filter (default `warn`); the sandbox's env never changes it.
    pub agent_log_filter: Option<String>,
    /// Sandboxes get a read-only sysfs at `/sys` (default off: `/sys` holds only the cgroup
    /// views; see [`sandpit_isolation::launch::LaunchConfig::sysfs`]).
    pub sysfs: bool,
}

impl LocalDriverConfig {
    /// Images are looked up in `<data_dir>/images` unless `images_dir` is changed.
    pub fn new(data_dir: PathBuf, agent_bin: PathBuf) -> Self {
        Self {
            images_dir: data_dir.join("images"),
            first_uid: DEFAULT_FIRST_UID,
            data_dir,
            agent_bin,
            cgroup_group: DEFAULT_CGROUP_ROOT.to_string(),
            start_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            nofile: sandpit_isolation::launch::DEFAULT_NOFILE,
            slirp4netns: PathBuf::from("/usr/bin/slirp4netns"),
            nft: PathBuf::from("/usr/sbin/nft"),
            mkfs_ext4: PathBuf::from("/usr/sbin/mkfs.ext4"),
            s3fs: PathBuf::from("/usr/bin/s3fs"),
            operator: network::OperatorRanges::default(),
            agent_log_max_bytes: agent_log::DEFAULT_MAX_BYTES,
            agent_log_filter: None,
            sysfs: false,
        }
    }
}

/// Default of [`LocalDriverConfig::cgroup_group`].
pub const DEFAULT_CGROUP_ROOT: &str = "/sandpit";

/// Default of [`LocalDriverConfig::first_uid`] (above the uids and subuids of a usual host).
pub const DEFAULT_FIRST_UID: u32 = 100_000;

/// The host uid ranges of this driver's sandboxes: one [`sandpit_isolation::ID_RANGE`]-sized
/// range each, allocated at first start (the lowest free one) and kept, recorded in the
/// sandbox dir, until the sandbox is destroyed, so a woken sandbox finds its files with the
/// owners it left them with.
#[derive(Debug)]
struct UidRanges {
    first: u32,
    used: BTreeSet<u32>,
}

impl UidRanges {
    /// The lowest free range base, if one is left below `u32::MAX`.
    fn allocate(&mut self) -> Option<u32> {
        let range = sandpit_isolation::ID_RANGE;
        let mut base = self.first;
        for used in &self.used {
            if *used >= base.checked_add(range)? {
                break;
            }
            base = base.max(used.checked_add(range)?);
        }
        base.checked_add(range)?;
        self.used.insert(base);
        Some(base)
    }
}

/// What the driver resolved for one start of a sandbox.
struct HostSide {
    /// The image's rootfs directory.
    rootfs: PathBuf,
    uid_base: u32,
    /// The disk image holding the writable layer, if it has one.
    disk: Option<PathBuf>,
    /// Snapshot layers under the writable layer, top first.
    layers: Vec<sandpit_isolation::launch::LayerMount>,
}

/// A sandbox started by this driver.
struct Running {
    pid: u32,
    agent: Arc<dyn AgentConnector>,
    exited: watch::Receiver<bool>,
    /// The image's rootfs, held open while the sandbox runs: a rebuilt image keeps the version
    /// this sandbox's mounts use until nothing holds it (see sandpit-image's `replace_with`).
    /// One descriptor per image version, shared by its sandboxes ([`LocalDriver::hold_image`]).
    _image: Arc<std::fs::File>,
}

/// The local namespace driver. See the module docs.
pub struct LocalDriver {
    config: LocalDriverConfig,
    images: ImageStore,
    cgroups: Box<dyn CgroupManager>,
    uids: Mutex<UidRanges>,
    /// Open image rootfs versions by (device, inode), shared by the sandboxes running them.
    held_images: Mutex<HashMap<(u64, u64), std::sync::Weak<std::fs::File>>>,
    /// The one egress listener all sandboxes' `egress.sock` links lead to (made at the first
    /// start; see [`crate::egress_hub`]).
    egress_hub: Mutex<Option<Arc<EgressHub>>>,
    /// `<data_dir>/sandboxes/<id>/...`.
    layout: HostLayout,
    /// Accept loops of per-sandbox egress listeners, used only where the run dir cannot link
    /// to the shared one (another file system); aborted at teardown.
    bridges: Bridges,
    running: Mutex<HashMap<String, Running>>,
    /// slirp4netns of the sandboxes in `full` network mode.
    slirps: Mutex<HashMap<String, Slirp>>,
    /// The `s3fs` processes of each running sandbox's bucket mounts.
    mounts: Mutex<HashMap<String, Vec<ActiveMount>>>,
    /// Names the host mount points of bucket mounts (unique per driver).
    mount_seq: std::sync::atomic::AtomicU64,
    /// Snapshot layers (`<data_dir>/layers`, `<data_dir>/snapshots`).
    layers: layers::Layers,
    /// Held while stacks change or unused layers are collected.
    layers_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LocalDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDriver")
            .field("config", &self.config)
            .field("cgroups", &self.cgroups)
            .finish_non_exhaustive()
    }
}

pub(crate) fn io_err<'a>(
    id: &'a str,
    stage: &'static str,
) -> impl FnOnce(std::io::Error) -> DriverError + 'a {
    move |source| DriverError::Io {
        id: id.to_string(),
        stage,
        source,
    }
}

pub(crate) fn cg_err<'a>(
    id: &'a str,
    stage: &'static str,
) -> impl FnOnce(sandpit_isolation::cgroup::CgroupError) -> DriverError + 'a {
    move |e| DriverError::Io {
        id: id.to_string(),
        stage,
        source: std::io::Error::other(e.to_string()),
    }
}

/// Sandbox ids become hostnames, directory and cgroup names: 1-63 of `[A-Za-z0-9._-]`, starting
/// with a letter or digit.
pub fn validate_id(id: &str) -> Result<(), DriverError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DriverError::InvalidSpec(format!(
            "sandbox id {id:?} must be 1-63 characters of [A-Za-z0-9._-] starting with a letter or digit"
        )))
    }
}

pub(crate) fn cgroup_limits(l: &Limits) -> Result<CgroupLimits, DriverError> {
    let invalid = |m: String| Err(DriverError::InvalidSpec(m));
    if let Some(m) = l.memory_mb
        && !(MIN_MEMORY_MB..=(u64::MAX >> 20)).contains(&m)
    {
        return invalid(format!("memoryMb {m} must be at least {MIN_MEMORY_MB}"));
    }
    if let Some(p) = l.pids
        && p < MIN_PIDS
    {
        return invalid(format!("pids {p} must be at least {MIN_PIDS}"));
    }
    if let Some(c) = l.cpus
        && !(c.is_finite() && c > 0.0 && c <= 4096.0)
    {
        return invalid(format!("cpus {c} must be a positive number"));
    }
    Ok(CgroupLimits {
        memory_bytes: l.memory_mb.map(|m| m << 20),
        pids: l.pids,
        cpus: l.cpus,
    })
}

/// Adds search permission for everyone (the sandbox init, an unprivileged uid on the host,
/// must traverse the path to its rootfs mount point).
pub(crate) fn ensure_traversable(dir: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode((mode & 0o7777) | 0o011),
        )?;
    }
    Ok(())
}

pub(crate) fn mkdir_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// The sandbox's environment: the spec's, plus (unless the spec sets them) the egress proxy
/// variables, and the CA variables when the run dir has a CA bundle.
pub(crate) fn sandbox_env(env: &[(String, String)], run_dir: &Path) -> Vec<(String, String)> {
    const NO_PROXY: &str = "localhost,127.0.0.1,::1";
    let proxy = format!("http://127.0.0.1:{}", sandpit_protocol::EGRESS_PROXY_PORT);
    let mut extra: Vec<(&str, String)> = vec![
        ("HTTP_PROXY", proxy.clone()),
        ("HTTPS_PROXY", proxy.clone()),
        ("http_proxy", proxy.clone()),
        ("https_proxy", proxy),
        ("NO_PROXY", NO_PROXY.into()),
        ("no_proxy", NO_PROXY.into()),
    ];
    if run_dir.join("ca-bundle.crt").is_file() {
        let bundle = format!("{}/ca-bundle.crt", sandpit_isolation::launch::RUN_DIR);
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "PIP_CERT",
        ] {
            extra.push((name, bundle.clone()));
        }
        extra.push((
            "NODE_EXTRA_CA_CERTS",
            format!("{}/ca.crt", sandpit_isolation::launch::RUN_DIR),
        ));
    }
    let mut out = env.to_vec();
    for (name, value) in extra {
        if !env.iter().any(|(k, _)| k == name) {
            out.push((name.to_string(), value));
        }
    }
    out
}

pub(crate) fn remove_dir_all_if_exists(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes everything inside `dir` (a missing `dir` is empty).
pub(crate) fn empty_dir(dir: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// SIGKILLs the launcher and reaps it (bounded: a process stuck in the kernel is left to
/// tokio's orphan reaping).
async fn kill_and_reap(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
}

/// Binds a Unix socket at `dir/name` even when that path is longer than `sun_path` (108 bytes):
/// through `/proc/self/fd/<dir fd>/name`.
pub(crate) fn bind_in(dir: &Path, name: &str) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(dir)?;
    let short = format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
    let listener = UnixListener::bind(short)?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// Writes new limits into a running sandbox's cgroups. The kernel refusing them (memory below
/// what is used) or no cgroups (not running) is `LimitsRefused`.
pub(crate) fn update_cgroups(
    cgroups: &dyn CgroupManager,
    id: &str,
    limits: &CgroupLimits,
) -> Result<(), DriverError> {
    cgroups.update(id, limits).map_err(|e| match e {
        CgroupError::MemoryBusy { .. } | CgroupError::NotFound(_) => DriverError::LimitsRefused {
            id: id.to_string(),
            message: e.to_string(),
        },
        e => cg_err(id, "update the cgroups")(e),
    })
}

/// A sandbox's cgroup counters plus its writable layer as `disk` measures it (on a blocking
/// thread: it may walk a large tree).
pub(crate) async fn sandbox_usage(
    cgroups: &dyn CgroupManager,
    id: &str,
    disk: impl FnOnce() -> usage::DiskUsage + Send + 'static,
) -> Result<ResourceUsage, DriverError> {
    let cgroup = cgroups
        .usage(id)
        .map_err(cg_err(id, "read the cgroup counters"))?;
    let disk = tokio::task::spawn_blocking(disk)
        .await
        .map_err(|e| io_err(id, "count the disk use")(std::io::Error::other(e.to_string())))?;
    Ok(ResourceUsage {
        cpu_usec: cgroup.cpu_usec,
        memory_bytes: cgroup.memory_bytes,
        memory_peak_bytes: cgroup.memory_peak_bytes,
        pids: cgroup.pids,
        disk_bytes: disk.bytes,
        disk_complete: disk.complete,
    })
}

/// The rootfs of the spec's image in `images`.
pub(crate) fn resolve_image(
    images: &ImageStore,
    spec: &SandboxSpec,
) -> Result<PathBuf, DriverError> {
    images.rootfs(&spec.image).map_err(|e| match e {
        ImageError::NotFound(_) | ImageError::InvalidName { .. } => {
            DriverError::ImageNotFound(spec.image.clone())
        }
        e => io_err(&spec.id, "resolve the image")(std::io::Error::other(e.to_string())),
    })
}

/// Run files are plain names in the run dir, never the egress socket's.
pub(crate) fn check_run_files(files: &[RunFile]) -> Result<(), DriverError> {
    match files.iter().find(|f| {
        matches!(f.name.as_str(), "" | "." | ".." | EGRESS_SOCKET) || f.name.contains('/')
    }) {
        Some(file) => Err(DriverError::InvalidSpec(format!(
            "run file name {:?} must be a plain file name",
            file.name
        ))),
        None => Ok(()),
    }
}

pub(crate) fn write_run_files(run: &Path, files: &[RunFile]) -> std::io::Result<()> {
    for file in files {
        std::fs::write(run.join(&file.name), &file.contents)?;
    }
    Ok(())
}

/// Binds [`EGRESS_SOCKET`] in the run dir `run` (0666: any user of the sandbox may connect)
/// and hands every connection to `endpoint`, until the returned task is aborted.
pub(crate) fn serve_egress(
    run: &Path,
    endpoint: &EgressEndpoint,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let socket = run.join(EGRESS_SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = bind_in(run, EGRESS_SOCKET)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
    Ok(tokio::spawn(bridge_egress(listener, endpoint.clone())))
}

/// Hands every connection made to `listener` (the sandbox's egress bridge) to `endpoint`.
async fn bridge_egress(listener: tokio::net::UnixListener, endpoint: EgressEndpoint) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => endpoint.accept(Box::new(stream)),
            Err(e) => {
                tracing::debug!(error = %e, "egress bridge accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reaps `pid` once its pidfd reports the exit, then flips `exited` to true.
pub(crate) async fn watch_exit(pid: u32, pidfd: OwnedFd, exited: watch::Sender<bool>) {
    // `with_interest` is deprecated because it accepts any `AsRawFd`; an `OwnedFd` we exclusively
    // own is exactly the I/O-safe case (its unsafe replacement is not allowed in this crate).
    #[allow(deprecated)]
    let registered = tokio::io::unix::AsyncFd::with_interest(pidfd, tokio::io::Interest::READABLE);
    match registered {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            // No reactor support: poll for the exit instead.
            while nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_ok() && !is_zombie(pid)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(Errno::EINTR) => {}
            // Reaped, or not our child (then whoever is its parent reaps it).
            _ => break,
        }
    }
    let _ = exited.send(true);
}

/// Reaps `pid` (on a thread that may block), whose exit is under way, then flips `exited` to
/// true. Polls with a growing pause: the init closes its files before the kernel makes it a
/// zombie.
pub(crate) fn reap_blocking(pid: u32, exited: &watch::Sender<bool>) {
    let mut pause = Duration::from_millis(1);
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(Errno::EINTR) => {}
            // Reaped, or not our child (then whoever is its parent reaps it).
            _ => break,
        }
    }
    let _ = exited.send(true);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The uid range bases recorded in `sandboxes/*/uid_base`.
fn recorded_uid_bases(sandboxes: &Path) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| read_uid_base(&e.path()))
        .collect()
}

fn read_uid_base(sandbox_dir: &Path) -> Option<u32> {
    read_number(&sandbox_dir.join(UID_BASE_FILE))
}

fn read_number(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

impl LocalDriver {
    /// A driver with default settings. Makes this process a child subreaper and detects the
    /// cgroup layout.
    pub fn new(data_dir: PathBuf, agent_bin: PathBuf) -> Result<Self, DriverError> {
        Self::with_config(LocalDriverConfig::new(data_dir, agent_bin))
    }

    pub fn with_config(config: LocalDriverConfig) -> Result<Self, DriverError> {
        let setup = |stage: &'static str| io_err("", stage);
        check_data_dir(&config.data_dir)?;
        sandpit_isolation::process::set_child_subreaper()
            .map_err(setup("PR_SET_CHILD_SUBREAPER"))?;
        let cgroups = sandpit_isolation::cgroup::detect(&config.cgroup_group).map_err(|e| {
            DriverError::Io {
                id: String::new(),
                stage: "detect cgroups",
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        std::fs::create_dir_all(&config.data_dir).map_err(setup("create the data dir"))?;
        ensure_traversable(&config.data_dir).map_err(setup("chmod the data dir"))?;
        mkdir_mode(&config.data_dir.join("sandboxes"), 0o711)
            .map_err(setup("create sandboxes/"))?;
        mkdir_mode(&config.data_dir.join("run"), 0o700).map_err(setup("create run/"))?;
        let images = ImageStore::open(&config.images_dir).map_err(|e| DriverError::Io {
            id: String::new(),
            stage: "open the image store",
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut used = recorded_uid_bases(&config.data_dir.join("sandboxes"));
        used.extend(read_number(&config.data_dir.join(IMPORT_OWNER_FILE)));
        let uids = UidRanges {
            first: config.first_uid,
            used,
        };
        let layers =
            layers::Layers::new(&config.data_dir).map_err(setup("create the layer store"))?;
        Ok(Self {
            layout: HostLayout::new(config.data_dir.join("sandboxes")),
            layers,
            layers_lock: tokio::sync::Mutex::new(()),
            config,
            images,
            cgroups,
            uids: Mutex::new(uids),
            held_images: Mutex::default(),
            egress_hub: Mutex::default(),
            bridges: Bridges::default(),
            running: Mutex::new(HashMap::new()),
            slirps: Mutex::new(HashMap::new()),
            mounts: Mutex::new(HashMap::new()),
            mount_seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &LocalDriverConfig {
        &self.config
    }

    /// The cgroup backend (e.g. to read a sandbox's limits or list its processes).
    pub fn cgroups(&self) -> &dyn CgroupManager {
        self.cgroups.as_ref()
    }

    /// Where each sandbox's files are (`sandbox_dir`, `run_dir`, `agent.log`).
    pub fn layout(&self) -> &HostLayout {
        &self.layout
    }

    /// `<data_dir>/run/<id>.sock`.
    pub fn socket_path(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("run").join(format!("{id}.sock"))
    }

    /// Host pid of the sandbox's init, if this driver started it and it is alive.
    pub fn pid(&self, id: &str) -> Option<u32> {
        let map = self.running.lock().ok()?;
        map.get(id).filter(|r| !*r.exited.borrow()).map(|r| r.pid)
    }

    /// `<data_dir>/sandboxes/<id>/disk.img`: the ext4 image holding the writable layer of a
    /// sandbox first started with `diskMb`.
    pub fn disk_image(&self, id: &str) -> PathBuf {
        self.layout.sandbox_dir(id).join("disk.img")
    }

    /// The disk image to start `spec` with, formatted on first use: only with `diskMb`, and
    /// only for a sandbox whose writable layer is not already on the host file system (its
    /// first start). The image keeps the size it was made with.
    async fn prepare_disk(
        &self,
        spec: &SandboxSpec,
        uid_base: u32,
    ) -> Result<Option<PathBuf>, DriverError> {
        let Some(mb) = spec.limits.disk_mb else {
            return Ok(None);
        };
        let id = spec.id.as_str();
        mkdir_mode(&self.layout.sandbox_dir(id), 0o711)
            .map_err(io_err(id, "create the sandbox dir"))?;
        let image = self.disk_image(id);
        if image.is_file() {
            return Ok(Some(image));
        }
        if self.layout.sandbox_dir(id).join("upper").exists() {
            tracing::warn!(
                id,
                "diskMb set on a sandbox created without it: not enforced"
            );
            return Ok(None);
        }
        // Formatted under a temporary name, so a failed start never leaves a half-made image.
        let tmp = self.layout.sandbox_dir(id).join(DISK_IMAGE_TMP);
        let file = std::fs::File::create(&tmp).map_err(io_err(id, "create the disk image"))?;
        file.set_len(mb << 20)
            .map_err(io_err(id, "size the disk image"))?;
        drop(file);
        let owner = format!("root_owner={uid_base}:{uid_base},nodiscard");
        let mut cmd = tokio::process::Command::new(&self.config.mkfs_ext4);
        cmd.args(["-q", "-F", "-m", "0", "-E", &owner])
            .arg(&tmp)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(self.config.start_timeout, cmd.output()).await;
        let failure = match output {
            Ok(Ok(out)) if out.status.success() => None,
            Ok(Ok(out)) => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            Ok(Err(e)) => Some(format!("running {}: {e}", self.config.mkfs_ext4.display())),
            Err(_) => Some("mkfs.ext4 did not finish in time".to_string()),
        };
        if let Some(message) = failure {
            let _ = std::fs::remove_file(&tmp);
            return Err(DriverError::StartFailed {
                id: id.to_string(),
                message: format!("formatting the disk image failed: {message}"),
            });
        }
        std::fs::rename(&tmp, &image).map_err(io_err(id, "install the disk image"))?;
        Ok(Some(image))
    }

    /// The snapshot layers under the sandbox's writable layer (after finishing a snapshot a
    /// crash interrupted).
    async fn layer_mounts(
        &self,
        id: &str,
    ) -> Result<Vec<sandpit_isolation::launch::LayerMount>, DriverError> {
        let dir = self.layout.sandbox_dir(id);
        if !dir.join(layers::STACK_FILE).exists() && !dir.join("layers.new").exists() {
            return Ok(Vec::new());
        }
        let _layers = self.layers_lock.lock().await;
        self.layers
            .recover(&dir)
            .and_then(|()| self.layers.stack_of(&dir))
            .and_then(|stack| self.layers.mounts(&stack))
            .map_err(io_err(id, "read the snapshot layers"))
    }

    /// The sandbox's uid range: the recorded one, else a new one (recorded before use).
    fn uid_base(&self, id: &str) -> Result<u32, DriverError> {
        let dir = self.layout.sandbox_dir(id);
        if let Some(base) = read_uid_base(&dir) {
            return Ok(base);
        }
        let mut uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        let base = uids.allocate().ok_or_else(|| DriverError::StartFailed {
            id: id.to_string(),
            message: "no free host uid range".into(),
        })?;
        let recorded = mkdir_mode(&dir, 0o711)
            .and_then(|()| std::fs::write(dir.join(UID_BASE_FILE), base.to_string()));
        if let Err(e) = recorded {
            uids.used.remove(&base);
            return Err(io_err(id, "record the uid range")(e));
        }
        Ok(base)
    }

    /// The uid range imported layers belong to: one range of the allocator, reserved for them
    /// at the first import and recorded in `<data_dir>/import-owner` (never a sandbox's, never
    /// host root: a setuid file of an imported layer gives no host identity anyone uses).
    fn import_owner(&self) -> Result<u32, DriverError> {
        let file = self.config.data_dir.join(IMPORT_OWNER_FILE);
        let mut uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(base) = read_number(&file) {
            return Ok(base);
        }
        let base = uids.allocate().ok_or_else(|| DriverError::StartFailed {
            id: String::new(),
            message: "no free host uid range for imported layers".into(),
        })?;
        if let Err(e) = std::fs::write(&file, base.to_string()) {
            uids.used.remove(&base);
            return Err(io_err("", "record the uid range of imported layers")(e));
        }
        Ok(base)
    }

    /// Frees the uid range of a destroyed sandbox.
    fn release_uid_base(&self, id: &str) {
        if let Some(base) = read_uid_base(&self.layout.sandbox_dir(id)) {
            let mut uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
            uids.used.remove(&base);
        }
    }

    /// `disk`: the writable layer is on that image (the launcher creates `upper/` and `work/`).
    fn prepare_dirs(
        &self,
        spec: &SandboxSpec,
        uid_base: u32,
        disk: Option<&Path>,
    ) -> Result<(), DriverError> {
        let id = spec.id.as_str();
        let dir = self.layout.sandbox_dir(id);
        mkdir_mode(&dir, 0o711).map_err(io_err(id, "create the sandbox dir"))?;
        for (name, mode) in [("upper", 0o755), ("work", 0o700)] {
            let d = dir.join(name);
            if disk.is_none() && !d.exists() {
                mkdir_mode(&d, mode).map_err(io_err(id, "create the writable layer"))?;
                chown(&d, Some(uid_base), Some(uid_base))
                    .map_err(io_err(id, "chown the writable layer"))?;
            }
        }
        if disk.is_some() {
            mkdir_mode(&dir.join("disk"), 0o755).map_err(io_err(id, "create the mount points"))?;
        }
        for name in ["lower", "rootfs"] {
            mkdir_mode(&dir.join(name), 0o755).map_err(io_err(id, "create the mount points"))?;
        }
        let run = self.layout.run_dir(id);
        mkdir_mode(&run, 0o755).map_err(io_err(id, "create the run dir"))?;
        chown(&run, Some(0), Some(0)).map_err(io_err(id, "chown the run dir"))?;
        write_run_files(&run, &spec.run_files).map_err(io_err(id, "write the run files"))?;
        self.layout.mark_ephemeral(id, spec.ephemeral)
    }

    /// Binds the agent's socket (returned, for the launcher) and, when the spec has an egress
    /// endpoint, the egress bridge's socket in the run dir (served until teardown).
    /// Opens `rootfs` and returns the open file of that version that running sandboxes share
    /// (the new one if none is open).
    fn hold_image(&self, rootfs: &Path) -> std::io::Result<Arc<std::fs::File>> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(rootfs)?;
        let meta = file.metadata()?;
        let key = (meta.dev(), meta.ino());
        let mut held = self.held_images.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, open| open.strong_count() > 0);
        if let Some(open) = held.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok(open);
        }
        let file = Arc::new(file);
        held.insert(key, Arc::downgrade(&file));
        Ok(file)
    }

    /// The shared egress listener, bound at the first call.
    fn egress_hub(&self) -> std::io::Result<Arc<EgressHub>> {
        let mut hub = self.egress_hub.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hub) = hub.as_ref() {
            return Ok(hub.clone());
        }
        let made = Arc::new(EgressHub::bind(&self.config.data_dir, EGRESS_HUB_SOCKET)?);
        *hub = Some(made.clone());
        Ok(made)
    }

    fn bind_sockets(&self, spec: &SandboxSpec, uid_base: u32) -> Result<UnixListener, DriverError> {
        let id = spec.id.as_str();
        if let Some(endpoint) = &spec.egress {
            let link = self.layout.run_dir(id).join(EGRESS_SOCKET);
            let shared = self
                .egress_hub()
                .and_then(|hub| hub.attach(id, uid_base, endpoint.clone(), &link));
            match shared {
                Ok(()) => return self.bind_agent_socket(id),
                Err(e) => {
                    tracing::warn!(id, error = %e, "no shared egress listener: one of its own");
                }
            }
            let task = serve_egress(&self.layout.run_dir(id), endpoint)
                .map_err(io_err(id, "bind the egress socket"))?;
            self.bridges.replace(id, task);
        }
        self.bind_agent_socket(id)
    }

    /// Binds `run/<id>.sock`, handed to the launcher (the server keeps no descriptor of it).
    fn bind_agent_socket(&self, id: &str) -> Result<UnixListener, DriverError> {
        let path = self.socket_path(id);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io_err(id, "bind the agent socket"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(id, "chmod the agent socket"))?;
        Ok(listener)
    }

    fn validate(&self, spec: &SandboxSpec) -> Result<CgroupLimits, DriverError> {
        validate_id(&spec.id)?;
        check_run_files(&spec.run_files)?;
        check_socket_path(&self.socket_path(&spec.id))?;
        if let Some(mb) = spec.limits.disk_mb
            && !(MIN_DISK_MB..=MAX_DISK_MB).contains(&mb)
        {
            return Err(DriverError::InvalidSpec(format!(
                "diskMb {mb} must be between {MIN_DISK_MB} and {MAX_DISK_MB}"
            )));
        }
        cgroup_limits(&spec.limits)
    }

    /// Runs the launcher and waits for its `{"pid": N}` line.
    async fn launch(
        &self,
        spec: &SandboxSpec,
        host: &HostSide,
        listener: UnixListener,
        eof: Arc<agent_log::Eof>,
    ) -> Result<u32, DriverError> {
        let id = spec.id.as_str();
        let dir = self.layout.sandbox_dir(id);
        let config = LaunchConfig {
            id: id.to_string(),
            hostname: id.to_string(),
            image_rootfs: host.rootfs.clone(),
            sandbox_dir: dir.clone(),
            uid_base: host.uid_base,
            cgroup_procs: self.cgroups.procs_files(id),
            listen_fd: LISTEN_FD,
            nofile: self.config.nofile,
            env: sandbox_env(&spec.env, &self.layout.run_dir(id)),
            log_file: None,
            log_fd: Some(LOG_FD),
            agent_log_filter: self.config.agent_log_filter.clone(),
            run_dir: Some(self.layout.run_dir(id)),
            resolv_conf: Some(network::RESOLV_CONF.to_string()),
            disk_image: host.disk.clone(),
            cgroup_mounts: self.cgroups.sandbox_mounts(id),
            layers: host.layers.clone(),
            sysfs: self.config.sysfs,
        };
        let input = serde_json::to_vec(&config).map_err(|e| DriverError::StartFailed {
            id: id.to_string(),
            message: format!("serialising the launch config: {e}"),
        })?;
        let mut cmd = std::process::Command::new(&self.config.agent_bin);
        cmd.arg("launch")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The init's stdout/stderr: a pipe whose only reader is our capped copy into agent.log.
        let (log_read, log_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err(id, "create the log pipe")(e.into()))?;
        let log = agent_log::CappedLog::create(
            &self.layout.agent_log(id),
            self.config.agent_log_max_bytes,
        )
        .map_err(io_err(id, "create agent.log"))?;
        agent_log::spawn_pump(log_read, log, eof)
            .map_err(io_err(id, "start the agent.log copier"))?;
        sandpit_isolation::process::pass_fds(
            &mut cmd,
            vec![(OwnedFd::from(listener), LISTEN_FD), (log_write, LOG_FD)],
        );
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io_err(id, "spawn the launcher"))?;
        drop(cmd); // closes our copy of the listener
        let failed = |message: String| DriverError::StartFailed {
            id: id.to_string(),
            message,
        };
        let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failed("launcher stdio missing".into()));
        };
        let stderr_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr)
                .take(MAX_STDERR as u64)
                .read_to_end(&mut buf)
                .await;
            String::from_utf8_lossy(&buf).trim().to_string()
        });
        let exchange = async {
            stdin
                .write_all(&input)
                .await
                .map_err(|e| format!("writing the launch config: {e}"))?;
            drop(stdin);
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .await
                .map_err(|e| format!("reading the launcher's reply: {e}"))?;
            Ok::<String, String>(line)
        };
        let outcome = tokio::time::timeout(self.config.start_timeout, exchange).await;
        let line = match outcome {
            Ok(Ok(line)) => line,
            Ok(Err(message)) => {
                kill_and_reap(&mut child).await;
                return Err(failed(message));
            }
            Err(_) => {
                kill_and_reap(&mut child).await;
                let _ = self.cgroups.kill_all(id);
                let stderr = tokio::time::timeout(Duration::from_millis(200), stderr_task)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                return Err(failed(format!(
                    "launcher did not report within {:?}; stderr: {stderr}",
                    self.config.start_timeout
                )));
            }
        };
        let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        let reply: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_default();
        if let Some(pid) = reply
            .get("pid")
            .and_then(|p| p.as_u64())
            .and_then(|p| u32::try_from(p).ok())
        {
            return Ok(pid);
        }
        let stderr = tokio::time::timeout(Duration::from_secs(1), stderr_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = match reply.get("error").and_then(|e| e.as_str()) {
            Some(e) => e.to_string(),
            None => format!(
                "launcher replied {:?}, exit status {:?}; stderr: {stderr}",
                line.trim(),
                status.ok()
            ),
        };
        Err(failed(message))
    }

    /// Reaps zombie children of this process that are (forks of) the launcher: when a launcher
    /// dies mid-start (timeout), its holder and init children are re-parented to us without a
    /// watcher. The launcher never execs, so they all carry its name. Taking the status of
    /// another start's launcher or init this way is harmless: both treat ECHILD as "exited".
    fn reap_orphaned_launchers(&self) {
        let Some(name) = self
            .config
            .agent_bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            return;
        };
        // The kernel keeps 15 bytes of the command name.
        let comm: String = name.chars().take(15).collect();
        let me = std::process::id().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let (state, ppid) = (fields.next(), fields.next());
            let proc_comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
            if state == Some("Z") && ppid == Some(me.as_str()) && proc_comm == comm {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }

    /// Starts `s3fs` for `m` in the sandbox's cgroups, waits for its host mount, attaches a copy
    /// at `m.mount_path` inside the sandbox (init `pid`) and detaches the host one.
    async fn mount_bucket(
        &self,
        id: &str,
        pid: u32,
        uid_base: u32,
        m: &BucketMount,
    ) -> Result<(), DriverError> {
        let failed = |message: String| DriverError::MountFailed {
            id: id.to_string(),
            message,
        };
        let already = self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|l| l.iter().any(|a| a.mount_path == m.mount_path));
        if already {
            return Err(failed(format!(
                "{} is already a bucket mount",
                m.mount_path.display()
            )));
        }
        let dir = self.layout.sandbox_dir(id).join("mounts");
        let n = self
            .mount_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (host, tmp, log) = (
            dir.join(n.to_string()),
            dir.join(format!("{n}.tmp")),
            dir.join(format!("{n}.log")),
        );
        let cleanup = |host: &Path| {
            if bucket::is_fuse_mount(host) {
                let _ = sandpit_isolation::attach::detach_host(host);
            }
            let _ = std::fs::remove_dir(host);
            let _ = remove_dir_all_if_exists(&tmp);
        };
        bucket::private_dir(&dir)
            .and_then(|()| bucket::private_dir(&host))
            .and_then(|()| bucket::private_dir(&tmp))
            .map_err(io_err(id, "create the bucket mount dirs"))?;
        let log_file = std::fs::File::create(&log).map_err(io_err(id, "create the s3fs log"))?;
        let mut cmd = bucket::s3fs_command(&self.config.s3fs, m, &host, &tmp, uid_base);
        cmd.stderr(Stdio::from(log_file));
        sandpit_isolation::process::join_cgroups(&mut cmd, &self.cgroups.procs_files(id))
            .map_err(io_err(id, "prepare s3fs"))?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                cleanup(&host);
                return Err(failed(format!(
                    "starting {}: {e}",
                    self.config.s3fs.display()
                )));
            }
        };
        if let Err(e) = bucket::wait_mounted(&mut child, &host, &log).await {
            let _ = child.start_kill();
            let _ = child.wait().await;
            cleanup(&host);
            return Err(failed(e.0));
        }
        let (source, target, read_only) = (host.clone(), m.mount_path.clone(), m.read_only);
        let attached = tokio::task::spawn_blocking(move || {
            sandpit_isolation::attach::attach_into(pid, &source, &target, uid_base, read_only)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
        // The sandbox's copy keeps the file system alive; the host's goes now.
        let _ = sandpit_isolation::attach::detach_host(&host);
        let _ = std::fs::remove_dir(&host);
        if let Err(e) = attached {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = remove_dir_all_if_exists(&tmp);
            return Err(failed(format!(
                "attaching at {}: {e}",
                m.mount_path.display()
            )));
        }
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .push(ActiveMount {
                mount_path: m.mount_path.clone(),
                child,
            });
        Ok(())
    }

    /// `full`: loads the firewall (before slirp exists, so no packet leaves unfiltered), then
    /// starts slirp4netns unless it runs. Other modes: stops slirp4netns (the tap device goes
    /// with it, leaving only loopback).
    async fn apply_network(
        &self,
        id: &str,
        pid: u32,
        policy: &EgressPolicy,
    ) -> Result<(), DriverError> {
        if policy.mode != NetworkMode::Full {
            let slirp = self.slirps.lock().ok().and_then(|mut m| m.remove(id));
            if let Some(slirp) = slirp {
                slirp.stop().await;
            }
            return Ok(());
        }
        let script = network::nft_script(
            &network::allowed_v4(policy),
            &network::host_addresses(),
            &self.config.operator,
        );
        self.load_firewall(id, pid, &script).await?;
        // A slirp4netns that died (crash, OOM kill) is replaced.
        let running = self
            .slirps
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(id).map(Slirp::is_alive))
            .unwrap_or(false);
        if !running {
            let log = self.layout.sandbox_dir(id).join("slirp4netns.log");
            let slirp = Slirp::start(
                &self.config.slirp4netns,
                pid,
                &log,
                self.config.start_timeout,
            )
            .await
            .map_err(io_err(id, "start slirp4netns"))?;
            if let Ok(mut map) = self.slirps.lock() {
                map.insert(id.to_string(), slirp);
            }
        }
        Ok(())
    }

    /// Runs `nft -f -` with `script` inside the network namespace of `pid`.
    async fn load_firewall(&self, id: &str, pid: u32, script: &str) -> Result<(), DriverError> {
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .map_err(io_err(id, "open the sandbox's network namespace"))?;
        let mut cmd = std::process::Command::new(&self.config.nft);
        cmd.args(["-f", "-"])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        sandpit_isolation::process::enter_netns(&mut cmd, OwnedFd::from(netns));
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io_err(id, "run nft"))?;
        drop(cmd);
        let run = async {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(script.as_bytes()).await?;
            }
            child.wait_with_output().await
        };
        let output = tokio::time::timeout(self.config.start_timeout, run)
            .await
            .map_err(|_| DriverError::StartFailed {
                id: id.to_string(),
                message: "nft did not finish in time".into(),
            })?
            .map_err(io_err(id, "run nft"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(DriverError::StartFailed {
                id: id.to_string(),
                message: format!(
                    "loading the sandbox firewall failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        }
    }

    /// Empties the sandbox's run dir (egress socket, CA files: written for one run) and drops
    /// a disk image a killed server left half-formatted.
    fn clear_run_files(&self, id: &str) -> Result<(), DriverError> {
        empty_dir(&self.layout.run_dir(id)).map_err(io_err(id, "clear the run dir"))?;
        remove_file_if_exists(&self.layout.sandbox_dir(id).join(DISK_IMAGE_TMP))
            .map_err(io_err(id, "remove a half-made disk image"))
    }

    /// Whether a stopped sandbox still has files of a run (see [`Self::clear_run_files`]).
    fn has_run_files(&self, id: &str) -> bool {
        self.layout.has_run_files(id) || self.layout.sandbox_dir(id).join(DISK_IMAGE_TMP).exists()
    }

    /// Kills every process of `id`, waits for them (and the init) to be gone, removes the
    /// cgroups and the socket.
    async fn teardown(&self, id: &str, running: Option<Running>) -> Result<(), DriverError> {
        let deadline = Instant::now() + self.config.stop_timeout;
        self.bridges.abort(id);
        let hub = self
            .egress_hub
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hub) = hub {
            hub.detach(id);
        }
        let slirp = self.slirps.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(slirp) = slirp {
            slirp.stop().await;
        }
        let mounts = self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        for mount in mounts.into_iter().flatten() {
            mount.stop().await;
        }
        bucket::clear_host_dirs(&self.layout.sandbox_dir(id).join("mounts"));
        if self.cgroups.exists(id) {
            self.cgroups
                .kill_all(id)
                .map_err(cg_err(id, "kill the sandbox"))?;
        }
        if let Some(mut r) = running {
            let waited =
                tokio::time::timeout(self.config.stop_timeout, r.exited.wait_for(|e| *e)).await;
            if waited.is_err() {
                let _ = nix::sys::signal::kill(
                    Pid::from_raw(r.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        remove_cgroups(self.cgroups.as_ref(), id, deadline, || false).await?;
        remove_file_if_exists(&self.socket_path(id)).map_err(io_err(id, "remove the socket"))
    }
}

#[async_trait::async_trait]
impl Driver for LocalDriver {
    async fn start(&self, spec: &SandboxSpec) -> Result<Started, DriverError> {
        let limits = self.validate(spec)?;
        let id = spec.id.as_str();
        if let Ok(map) = self.running.lock()
            && let Some(r) = map.get(id).filter(|r| !*r.exited.borrow())
        {
            return Ok(Started {
                agent: r.agent.clone(),
                pid: r.pid,
            });
        }
        let stale = self.running.lock().ok().and_then(|mut m| m.remove(id));
        // Leftovers of an earlier run (crash, failed start) would break the new one.
        if stale.is_some() || self.cgroups.exists(id) {
            self.teardown(id, stale).await?;
        }
        let rootfs = resolve_image(&self.images, spec)?;
        // Opened before the launch resolves the path, so this is the version the sandbox mounts
        // (or an older one, which is then merely kept longer).
        let image = self
            .hold_image(&rootfs)
            .map_err(io_err(id, "open the image rootfs"))?;
        let uid_base = self.uid_base(id)?;
        let layers = self.layer_mounts(id).await?;
        let disk = self.prepare_disk(spec, uid_base).await?;
        self.prepare_dirs(spec, uid_base, disk.as_deref())?;
        let host = HostSide {
            rootfs,
            uid_base,
            disk,
            layers,
        };
        self.cgroups
            .create(id, &limits)
            .map_err(cg_err(id, "create the cgroups"))?;
        let started_at = Instant::now();
        let eof = Arc::new(agent_log::Eof::default());
        let result = match self.bind_sockets(spec, host.uid_base) {
            Ok(listener) => self.launch(spec, &host, listener, eof.clone()).await,
            Err(e) => Err(e),
        };
        let pid = match result {
            Ok(pid) => pid,
            Err(e) => {
                let _ = self.teardown(id, None).await;
                self.reap_orphaned_launchers();
                return Err(e);
            }
        };
        tracing::debug!(id, pid, elapsed = ?started_at.elapsed(), "sandbox launched");
        // The end of the init's log pipe says it exited: no descriptor per sandbox (a pidfd)
        // held while it runs.
        let (tx, rx) = watch::channel(false);
        eof.arm(move || reap_blocking(pid, &tx));
        let agent: Arc<dyn AgentConnector> = Arc::new(UnixConnector::new(self.socket_path(id)));
        if let Ok(mut map) = self.running.lock() {
            map.insert(
                id.to_string(),
                Running {
                    pid,
                    agent: agent.clone(),
                    exited: rx,
                    _image: image,
                },
            );
        }
        if spec.network.mode == NetworkMode::Full
            && let Err(e) = self.apply_network(id, pid, &spec.network).await
        {
            let running = self.running.lock().ok().and_then(|mut m| m.remove(id));
            let _ = self.teardown(id, running).await;
            return Err(e);
        }
        for mount in &spec.mounts {
            if let Err(e) = self.mount_bucket(id, pid, uid_base, mount).await {
                tracing::warn!(id, path = %mount.mount_path.display(), error = %e, "bucket mount not restored");
            }
        }
        Ok(Started { agent, pid })
    }

    async fn stop(&self, id: &str) -> Result<(), DriverError> {
        validate_id(id)?;
        let running = self.running.lock().ok().and_then(|mut m| m.remove(id));
        // Per-run files go first: should the server die halfway, the socket and cgroups that
        // remain make `reconcile` finish the job.
        self.clear_run_files(id)?;
        self.teardown(id, running).await?;
        if self.layout.drop_ephemeral_layer(id)? {
            remove_file_if_exists(&self.disk_image(id))
                .map_err(io_err(id, "drop the disk image"))?;
        }
        Ok(())
    }

    async fn destroy(&self, id: &str) -> Result<(), DriverError> {
        self.stop(id).await?;
        self.release_uid_base(id);
        let _layers = self.layers_lock.lock().await;
        remove_dir_all_if_exists(&self.layout.sandbox_dir(id))
            .map_err(io_err(id, "remove the sandbox dir"))?;
        self.layers
            .collect_garbage()
            .map_err(io_err(id, "delete unused layers"))
    }

    fn supports_snapshots(&self) -> bool {
        true
    }

    /// Freezes `upper/` into a layer (one rename; see [`layers`]). The sandbox must be
    /// stopped: a mounted overlay's upper dir cannot be swapped, and overlayfs forbids changing
    /// a layer under a mounted overlay.
    async fn snapshot(&self, id: &str, snapshot: &str) -> Result<SnapshotTaken, DriverError> {
        validate_id(id)?;
        if !layers::valid_name(snapshot) {
            return Err(DriverError::InvalidSpec(format!(
                "snapshot name {snapshot:?} must be [A-Za-z0-9._-]"
            )));
        }
        if self.pid(id).is_some() {
            return Err(DriverError::InvalidSpec(format!(
                "sandbox {id} must be stopped to be snapshotted"
            )));
        }
        if self.disk_image(id).exists() {
            return Err(DriverError::Unsupported(
                "snapshots of sandboxes with limits.diskMb are not supported: their writable layer is a disk image".into(),
            ));
        }
        if self.layout.is_ephemeral(id) {
            return Err(DriverError::Unsupported(
                "ephemeral sandboxes cannot be snapshotted: their writable layer is dropped when they stop".into(),
            ));
        }
        let uid_base = self.uid_base(id)?;
        let _layers = self.layers_lock.lock().await;
        let (store, dir, name) = (
            self.layers.clone(),
            self.layout.sandbox_dir(id),
            snapshot.to_owned(),
        );
        let frozen = tokio::task::spawn_blocking(move || {
            let frozen = store.freeze(&dir, uid_base)?;
            store.record_snapshot(&name, &frozen.stack)?;
            Ok::<_, std::io::Error>(frozen)
        })
        .await
        .map_err(|e| io_err(id, "snapshot")(std::io::Error::other(e.to_string())))?
        .map_err(io_err(id, "freeze the writable layer"))?;
        Ok(SnapshotTaken {
            size_bytes: frozen.size_bytes,
        })
    }

    async fn seed_from_snapshot(&self, id: &str, snapshot: &str) -> Result<(), DriverError> {
        validate_id(id)?;
        let _layers = self.layers_lock.lock().await;
        let stack = self
            .layers
            .snapshot_stack(snapshot)
            .map_err(io_err(id, "read the snapshot"))?
            .ok_or_else(|| DriverError::SnapshotNotFound(snapshot.to_owned()))?;
        let dir = self.layout.sandbox_dir(id);
        if dir.join("upper").exists() || self.disk_image(id).exists() {
            return Err(DriverError::InvalidSpec(format!(
                "sandbox {id} already has a file system"
            )));
        }
        self.layers
            .seed(&dir, &stack)
            .map_err(io_err(id, "record the snapshot's layers"))
    }

    async fn delete_snapshot(&self, snapshot: &str) -> Result<(), DriverError> {
        let _layers = self.layers_lock.lock().await;
        self.layers
            .forget_snapshot(snapshot)
            .and_then(|()| self.layers.collect_garbage())
            .map_err(io_err(snapshot, "delete the snapshot"))
    }

    async fn export_snapshot(
        &self,
        snapshot: &str,
        out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    ) -> Result<(), DriverError> {
        let stack = self
            .layers
            .snapshot_stack(snapshot)
            .map_err(io_err(snapshot, "read the snapshot"))?
            .ok_or_else(|| DriverError::SnapshotNotFound(snapshot.to_owned()))?;
        let layers = self.layers.clone();
        let writer = tokio_util::io::SyncIoBridge::new(out);
        let written = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            crate::snapshot_archive::export(&layers, &stack, &mut writer)?;
            writer.shutdown()
        })
        .await
        .map_err(|e| io_err(snapshot, "export")(std::io::Error::other(e.to_string())))?;
        written.map_err(io_err(snapshot, "export the snapshot"))
    }

    async fn import_snapshot(
        &self,
        snapshot: &str,
        input: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ) -> Result<SnapshotTaken, DriverError> {
        if !layers::valid_name(snapshot)
            || self
                .layers
                .snapshot_stack(snapshot)
                .ok()
                .flatten()
                .is_some()
        {
            return Err(DriverError::InvalidSpec(format!(
                "snapshot name {snapshot:?} must be new and [A-Za-z0-9._-]"
            )));
        }
        let owner = self.import_owner()?;
        let layers = self.layers.clone();
        let reader = tokio_util::io::SyncIoBridge::new(input);
        let staged = tokio::task::spawn_blocking(move || {
            crate::snapshot_archive::stage(&layers, reader, owner)
        })
        .await
        .map_err(|e| io_err(snapshot, "import")(std::io::Error::other(e.to_string())))?
        .map_err(|e| DriverError::InvalidSpec(format!("the snapshot archive: {e}")))?;
        let _layers = self.layers_lock.lock().await;
        let frozen = crate::snapshot_archive::commit(&self.layers, staged, snapshot)
            .map_err(io_err(snapshot, "record the imported layers"))?;
        Ok(SnapshotTaken {
            size_bytes: frozen.size_bytes,
        })
    }

    async fn adopt_uid_ranges(&self, ranges: &[(String, u32)]) -> Result<(), DriverError> {
        for (id, base) in ranges {
            validate_id(id)?;
            let dir = self.layout.sandbox_dir(id);
            if read_uid_base(&dir).is_some() {
                continue;
            }
            mkdir_mode(&dir, 0o711)
                .and_then(|()| std::fs::write(dir.join(UID_BASE_FILE), base.to_string()))
                .map_err(io_err(id, "record the uid range"))?;
            let mut uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
            uids.used.insert(*base);
        }
        Ok(())
    }

    async fn is_running(&self, id: &str) -> bool {
        self.pid(id).is_some()
    }

    /// A stopped sandbox gets its policy from the spec at its next start.
    async fn set_limits(&self, id: &str, limits: &Limits) -> Result<(), DriverError> {
        validate_id(id)?;
        update_cgroups(self.cgroups.as_ref(), id, &cgroup_limits(limits)?)
    }

    async fn set_network(&self, id: &str, policy: &EgressPolicy) -> Result<(), DriverError> {
        validate_id(id)?;
        match self.pid(id) {
            Some(pid) => self.apply_network(id, pid, policy).await,
            None => Ok(()),
        }
    }

    /// cgroup counters (zero once the cgroups are gone, i.e. asleep) and the writable layer:
    /// the blocks its disk image holds (`diskMb`; they grow with writes and are not returned
    /// on delete), else a bounded walk of `upper/`.
    async fn mount(&self, id: &str, mount: &BucketMount) -> Result<(), DriverError> {
        validate_id(id)?;
        let pid = self.pid(id).ok_or_else(|| DriverError::MountFailed {
            id: id.to_string(),
            message: "the sandbox is not running".into(),
        })?;
        let uid_base = self.uid_base(id)?;
        self.mount_bucket(id, pid, uid_base, mount).await
    }

    async fn unmount(&self, id: &str, mount_path: &Path) -> Result<(), DriverError> {
        validate_id(id)?;
        let active = {
            let mut map = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
            let list = map.entry(id.to_string()).or_default();
            let found = list.iter().position(|m| m.mount_path == mount_path);
            found.map(|i| list.remove(i))
        };
        let Some(active) = active else {
            return Err(DriverError::NotMounted {
                id: id.to_string(),
                path: mount_path.display().to_string(),
            });
        };
        if let Some(pid) = self.pid(id) {
            let target = mount_path.to_owned();
            let detached = tokio::task::spawn_blocking(move || {
                sandpit_isolation::attach::detach_from(pid, &target)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
            if let Err(e) = detached {
                tracing::warn!(id, path = %mount_path.display(), error = %e, "detaching a bucket mount");
            }
        }
        active.stop().await;
        Ok(())
    }

    async fn mounted(&self, id: &str) -> Vec<PathBuf> {
        let map = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .map(|list| list.iter().map(|m| m.mount_path.clone()).collect())
            .unwrap_or_default()
    }

    async fn usage(&self, id: &str) -> Result<ResourceUsage, DriverError> {
        validate_id(id)?;
        let (image, upper) = (
            self.disk_image(id),
            self.layout.sandbox_dir(id).join("upper"),
        );
        sandbox_usage(
            self.cgroups.as_ref(),
            id,
            move || match usage::allocated_bytes(&image) {
                Some(bytes) => usage::DiskUsage {
                    bytes,
                    complete: true,
                },
                None => usage::tree_usage(&upper, usage::MAX_WALK_ENTRIES),
            },
        )
        .await
    }

    async fn shutdown(&self) {
        let hub = self
            .egress_hub
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(hub) = hub {
            hub.close();
        }
        if let Err(e) = self.cgroups.remove_roots() {
            tracing::warn!(error = %e, "removing the empty cgroup root");
        }
    }

    async fn reconcile(&self) -> Result<Vec<String>, DriverError> {
        let mut sockets = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(self.config.data_dir.join("run")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".sock")
                    && validate_id(id).is_ok()
                {
                    sockets.insert(id.to_string());
                }
            }
        }
        let found = self
            .layout
            .orphans(self.cgroups.as_ref(), &self.running, sockets, |id| {
                self.has_run_files(id)
            })?;
        for id in &found {
            self.stop(id).await?;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "sb-1", "A.b_c", &"x".repeat(63)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "..", &"x".repeat(64), "ü"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_checked_and_converted() {
        let l = cgroup_limits(
            &(Limits {
                cpus: Some(1.5),
                memory_mb: Some(256),
                pids: Some(64),
                disk_mb: None,
            }),
        )
        .unwrap();
        assert_eq!(l.memory_bytes, Some(256 << 20));
        assert_eq!(l.cpu_quota_us(), Some(150_000));
        for bad in [
            Limits {
                memory_mb: Some(1),
                ..Default::default()
            },
            Limits {
                pids: Some(1),
                ..Default::default()
            },
            Limits {
                cpus: Some(-1.0),
                ..Default::default()
            },
            Limits {
                cpus: Some(f64::INFINITY),
                ..Default::default()
            },
        ] {
            assert!(matches!(
                cgroup_limits(&bad),
                Err(DriverError::InvalidSpec(_))
            ));
        }
    }
}
