//! The sandbox launcher: turns the calling (single-threaded, host-root) process into a sandbox.
//!
//! The host starts `<agent> launch` with a [`LaunchConfig`] as JSON on stdin and the listening
//! socket as fd [`LISTEN_FD`]. [`launch_from_stdin`] (or [`enter_sandbox`]) then forks: the
//! launcher prints `{"pid": N}` (the sandbox init's host pid) on stdout once the sandbox is ready
//! and exits 0 (or prints `{"error": "..."}` and exits 1); the child returns to the caller as
//! PID 1 of the sandbox, with the root, namespaces, limits and seccomp filter in place.
#![allow(unsafe_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, fork, pipe2};
use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupFsMount;
use crate::syscalls::{Linux, Syscalls};
use crate::{hardening, mounts, sys, userns};

/// The fd number on which the launcher receives the listening socket.
pub const LISTEN_FD: RawFd = 3;
/// The sandbox's working directory (created in the writable layer on first start).
pub const WORKSPACE: &str = "/workspace";
/// Default RLIMIT_NOFILE inside the sandbox (capped at the host's hard limit).
pub const DEFAULT_NOFILE: u64 = 65536;
/// Where [`LaunchConfig::run_dir`] appears inside the sandbox.
pub const RUN_DIR: &str = "/run/sandpit";
/// The file bound over `/proc/meminfo` inside the sandbox; the agent keeps it current.
pub const MEMINFO_VIEW: &str = "/dev/.sandpit/meminfo";

fn default_listen_fd() -> RawFd {
    LISTEN_FD
}

fn default_nofile() -> u64 {
    DEFAULT_NOFILE
}

/// Everything the launcher needs, written by the host as JSON on the launcher's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchConfig {
    /// Sandbox id (for messages).
    pub id: String,
    /// Hostname inside the sandbox (usually the id).
    pub hostname: String,
    /// The image's root directory (host path, read-only lower layer).
    pub image_rootfs: PathBuf,
    /// Host directory holding `upper/`, `work/` (the writable layer), `lower/` and `rootfs/`
    /// (mount points; nothing is ever mounted on them in the host's namespace).
    pub sandbox_dir: PathBuf,
    /// First host uid/gid of the sandbox's 65536 ids; sandbox root maps to it.
    pub uid_base: u32,
    /// `cgroup.procs` files the launcher joins before anything else.
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// fd number of the inherited listening socket (the sandbox init keeps it open).
    #[serde(default = "default_listen_fd")]
    pub listen_fd: RawFd,
    /// RLIMIT_NOFILE (soft and hard) inside the sandbox.
    #[serde(default = "default_nofile")]
    pub nofile: u64,
    /// Environment for processes of the sandbox (the launcher does not apply it; the agent
    /// reads it).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Host file that receives the sandbox init's stdout and stderr (truncated at start);
    /// `None` sends them to /dev/null.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Inherited fd (the write end of a pipe the host reads and caps) that receives the sandbox
    /// init's stdout and stderr; wins over [`LaunchConfig::log_file`].
    #[serde(default)]
    pub log_fd: Option<RawFd>,
    /// The agent's own tracing filter, set by the host. Never taken from `env`: the tenant's
    /// variables reach its processes, not the agent's settings.
    #[serde(default)]
    pub agent_log_filter: Option<String>,
    /// Host directory bind-mounted read-only at [`RUN_DIR`] inside the sandbox (the egress
    /// socket and CA files); `None` mounts nothing there.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// Written to the sandbox's `/etc/resolv.conf` at every start (left alone if that is a
    /// symlink): the only DNS server a sandbox can reach is its network driver's.
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// ext4 image (host path) loop-mounted at `<sandbox_dir>/disk` inside the launcher's mount
    /// namespace; the writable layer then lives on it, so its size caps the sandbox's disk use.
    /// `None`: the writable layer is `<sandbox_dir>/upper` and `work` on the host file system.
    #[serde(default)]
    pub disk_image: Option<PathBuf>,
    /// The sandbox's cgroup hierarchies, mounted read-only under `/sys/fs/cgroup` inside.
    #[serde(default)]
    pub cgroup_mounts: Vec<CgroupFsMount>,
    /// Mount a (read-only) sysfs at `/sys`. Off: `/sys` is a small read-only tree holding only
    /// the cgroup views; a sysfs is one more superblock per sandbox (and one per network
    /// namespace the kernel compares every new one with), which limits how many sandboxes a
    /// host holds.
    #[serde(default)]
    pub sysfs: bool,
    /// Read-only layers between the writable layer and the image, top first (the frozen
    /// writable layers of snapshots). Each is idmapped from its owner's uid range to this
    /// sandbox's.
    #[serde(default)]
    pub layers: Vec<LayerMount>,
}

/// Most [`LaunchConfig::layers`] a launch accepts (the runtime squashes stacks long before).
pub const MAX_LAYERS: usize = 64;

/// One read-only layer under a sandbox's writable layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerMount {
    /// Host directory holding the layer's tree (an overlay upper dir frozen as it was: whiteouts
    /// and opaque markers included).
    pub path: PathBuf,
    /// First host uid of the range that owns its files (the sandbox whose writable layer it
    /// was); shifted to this sandbox's range by the layer's idmapped mount.
    pub owner_base: u32,
}

impl LaunchConfig {
    /// Where the writable layer's file system is: the disk image's mount point, or the
    /// sandbox dir itself.
    fn layer_root(&self) -> PathBuf {
        match self.disk_image {
            Some(_) => self.disk_dir(),
            None => self.sandbox_dir.clone(),
        }
    }
    pub fn upper_dir(&self) -> PathBuf {
        self.layer_root().join("upper")
    }
    pub fn work_dir(&self) -> PathBuf {
        self.layer_root().join("work")
    }
    /// Mount point of [`LaunchConfig::disk_image`] (empty on the host).
    pub fn disk_dir(&self) -> PathBuf {
        self.sandbox_dir.join("disk")
    }
    pub fn lower_dir(&self) -> PathBuf {
        self.sandbox_dir.join("lower")
    }
    pub fn rootfs_dir(&self) -> PathBuf {
        self.sandbox_dir.join("rootfs")
    }
    /// Mount point of the sandbox's one tmpfs (/dev, /dev/shm, the /sys tree, the masks),
    /// inside the launcher's mount namespace only (empty on the host).
    pub fn shared_dir(&self) -> PathBuf {
        self.sandbox_dir.join("shared")
    }
    /// Mount point of [`LaunchConfig::layers`]`[index]` (empty on the host).
    pub fn layer_dir(&self, index: usize) -> PathBuf {
        self.sandbox_dir.join("lowers").join(index.to_string())
    }

    /// Checks what the kernel would otherwise reject with an obscure error.
    pub fn validate(&self) -> Result<(), LaunchError> {
        let bad = |m: String| Err(LaunchError::Config(m));
        if self.hostname.is_empty() || self.hostname.len() > 64 {
            return bad(format!("hostname {:?} must be 1-64 bytes", self.hostname));
        }
        if self.uid_base == 0 || self.uid_base.checked_add(userns::ID_RANGE).is_none() {
            return bad(format!(
                "uid_base {} must be > 0 and leave room for 65536 ids",
                self.uid_base
            ));
        }
        if self.listen_fd < 3 {
            return bad(format!("listen_fd {} must be >= 3", self.listen_fd));
        }
        if let Some(fd) = self.log_fd
            && (fd < 3 || fd == self.listen_fd)
        {
            return bad(format!("log_fd {fd} must be >= 3 and not listen_fd"));
        }
        for (what, p) in [
            ("image_rootfs", &self.image_rootfs),
            ("sandbox_dir", &self.sandbox_dir),
        ] {
            let s = p.to_string_lossy();
            if !p.is_absolute() || s.contains([',', ':', '\\']) || s.contains(char::is_whitespace) {
                return bad(format!(
                    "{what} {s:?} must be absolute and free of ',', ':', '\\' and whitespace (overlay options)"
                ));
            }
        }
        if self.layers.len() > MAX_LAYERS {
            return bad(format!(
                "{} layers: at most {MAX_LAYERS}",
                self.layers.len()
            ));
        }
        for layer in &self.layers {
            if !layer.path.is_absolute()
                || layer.owner_base == 0
                || layer.owner_base.checked_add(userns::ID_RANGE).is_none()
            {
                return bad(format!(
                    "layer {} (owner {}) must be absolute with a valid uid range",
                    layer.path.display(),
                    layer.owner_base
                ));
            }
        }
        if let Some(image) = &self.disk_image
            && !image.is_absolute()
        {
            return bad(format!("disk_image {} must be absolute", image.display()));
        }
        if let Some(run_dir) = &self.run_dir
            && !run_dir.is_absolute()
        {
            return bad(format!("run_dir {} must be absolute", run_dir.display()));
        }
        if !self.image_rootfs.is_dir() {
            return bad(format!(
                "image rootfs {} is not a directory",
                self.image_rootfs.display()
            ));
        }
        Ok(())
    }
}

/// What [`enter_sandbox`] returns in the process that continues: the sandbox init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// The caller is now PID 1 of the sandbox: root in its user namespace, cwd `/workspace`,
    /// stdin `/dev/null`, stdout/stderr the log file, fd `listen_fd` the listener, no other fds,
    /// single-threaded, seccomp filter and capability limits in force.
    Sandbox,
}

/// Errors of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid launch config: {0}")]
    Config(String),
    #[error("{stage} failed")]
    Sys {
        stage: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("{stage} failed")]
    Caps {
        stage: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("sandbox init: {0}")]
    Init(String),
}

impl LaunchError {
    pub(crate) fn sys<E: Into<io::Error>>(stage: &'static str) -> impl FnOnce(E) -> LaunchError {
        move |e| LaunchError::Sys {
            stage,
            source: e.into(),
        }
    }

    /// The message with its causes, e.g. `pivot_root failed: Invalid argument (os error 22)`.
    /// A cause that its parent's message already ends with is not repeated (seccompiler's
    /// errors print their source and return it too).
    pub fn full_message(&self) -> String {
        let mut msg = self.to_string();
        let mut parent: &dyn std::error::Error = self;
        while let Some(cause) = parent.source() {
            let text = cause.to_string();
            if !parent.to_string().ends_with(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            parent = cause;
        }
        msg
    }
}

fn ensure_single_threaded() -> Result<(), LaunchError> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(LaunchError::sys("read /proc/self/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|v| v.trim().to_string());
    if threads.as_deref() != Some("1") {
        return Err(LaunchError::Config(format!(
            "enter_sandbox must run in a single-threaded process (threads: {})",
            threads.unwrap_or_default()
        )));
    }
    Ok(())
}

fn open_log(path: Option<&Path>) -> Result<fs::File, LaunchError> {
    match path {
        Some(p) => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(p)
            .map_err(LaunchError::sys("open the log file")),
        None => fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/null")
            .map_err(LaunchError::sys("open /dev/null")),
    }
}

/// The inherited log pipe at `fd`, close-on-exec from now on (init dups it onto stdout/stderr).
fn take_log_fd(fd: RawFd) -> Result<fs::File, LaunchError> {
    // SAFETY: fcntl(F_SETFD) on an integer fd touches no memory; a closed fd gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(LaunchError::sys("take the inherited log fd")(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the fd is open (fcntl succeeded) and was passed by the host for this purpose
    // only; `enter_sandbox` runs once per process, so nothing else owns it.
    Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Reads a [`LaunchConfig`] from stdin and enters the sandbox. Returns only in the sandbox init;
/// in the launcher it prints the result line and exits the process.
pub fn launch_from_stdin() -> LaunchConfig {
    let mut input = String::new();
    let config = io::stdin()
        .read_to_string(&mut input)
        .map_err(LaunchError::sys("read the launch config from stdin"))
        .and_then(|_| {
            serde_json::from_str::<LaunchConfig>(&input)
                .map_err(|e| LaunchError::Config(e.to_string()))
        });
    match config.and_then(|c| enter_sandbox(&c).map(|_| c)) {
        Ok(c) => c,
        Err(e) => report_failure(&e),
    }
}

/// Prints `{"error": ...}` on stdout (and the message on stderr) and exits 1.
pub fn report_failure(err: &LaunchError) -> ! {
    let msg = err.full_message();
    eprintln!("sandpit launch: {msg}");
    let line = serde_json::json!({ "error": msg });
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    std::process::exit(1)
}

/// Builds the sandbox around the calling process (see the module docs and docs/isolation.md
/// for the sequence). Must be called by a single-threaded host-root process before any thread
/// (tokio runtime, ...) exists.
///
/// Returns `Ok(Entered::Sandbox)` only in the sandbox init. In the launcher it never returns on
/// success (it prints `{"pid": N}` and exits 0); an `Err` is returned only in the launcher, whose
/// caller should pass it to [`report_failure`]. Errors inside the sandbox init are sent to the
/// launcher, which returns them.
pub fn enter_sandbox(cfg: &LaunchConfig) -> Result<Entered, LaunchError> {
    cfg.validate()?;
    ensure_single_threaded()?;
    let sys: &dyn Syscalls = &Linux;

    join_cgroups(sys, cfg)?;
    let log = match cfg.log_fd {
        Some(fd) => take_log_fd(fd)?,
        None => open_log(cfg.log_file.as_deref())?,
    };
    build_host_side(sys, cfg, &log)?;

    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(LaunchError::sys("pipe"))?;
    // SAFETY: the process is single-threaded (checked above), so the child may run arbitrary
    // code; it becomes the sandbox init and continues as the caller.
    match unsafe { fork() }.map_err(LaunchError::sys("fork the sandbox init"))? {
        ForkResult::Child => {
            drop(ready_r);
            match init(sys, cfg, log) {
                Ok(()) => {
                    let mut ready = fs::File::from(ready_w);
                    let _ = ready.write_all(&[0]);
                    drop(ready);
                    // Nothing but stdio and the listener survives into the sandbox.
                    let fd = cfg.listen_fd as u32;
                    let _ = sys::close_range(3, fd - 1);
                    let _ = sys::close_range(fd + 1, u32::MAX);
                    Ok(Entered::Sandbox)
                }
                Err(e) => {
                    let mut ready = fs::File::from(ready_w);
                    let mut msg = vec![1u8];
                    msg.extend_from_slice(e.full_message().as_bytes());
                    let _ = ready.write_all(&msg);
                    sys::exit_immediately(1)
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(log);
            let mut reply = Vec::new();
            let _ = fs::File::from(ready_r).read_to_end(&mut reply);
            match reply.split_first() {
                Some((0, _)) => {
                    let mut out = io::stdout().lock();
                    let _ = writeln!(out, "{}", serde_json::json!({ "pid": child.as_raw() }));
                    let _ = out.flush();
                    std::process::exit(0)
                }
                Some((_, msg)) => {
                    // Reap it here: once we exit it would be a zombie of the host's subreaper.
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(LaunchError::Init(String::from_utf8_lossy(msg).into_owned()))
                }
                None => {
                    let status = nix::sys::wait::waitpid(child, None);
                    Err(LaunchError::Init(format!(
                        "sandbox init died before it was ready: {status:?}"
                    )))
                }
            }
        }
    }
}

/// a. Joins the cgroups first, so everything below (and every process of the sandbox) is
/// accounted and limited.
fn join_cgroups(sys: &dyn Syscalls, cfg: &LaunchConfig) -> Result<(), LaunchError> {
    for procs in &cfg.cgroup_procs {
        sys.write_file(procs, b"0")
            .map_err(LaunchError::sys("join the sandbox cgroup"))?;
    }
    Ok(())
}

/// Steps b to f, in the launcher (host root): the user namespace, the root file system in a
/// private mount namespace, then the switch into the sandbox's namespaces. What is left for
/// the init after the fork is [`build_init_side`].
fn build_host_side(
    sys: &dyn Syscalls,
    cfg: &LaunchConfig,
    log: &fs::File,
) -> Result<(), LaunchError> {
    // b. The user namespace (0 -> uid_base, 65536 ids).
    let userns = userns::create(sys, cfg.uid_base)?;

    // c. A private mount namespace for the launcher: nothing below is visible on the host.
    sys.unshare(CloneFlags::CLONE_NEWNS)
        .map_err(LaunchError::sys("unshare(CLONE_NEWNS)"))?;
    mounts::make_rprivate(sys)?;

    // d. Idmapped, read-only image (and snapshot layers) under a writable overlay.
    let (lower, root, shared) = (cfg.lower_dir(), cfg.rootfs_dir(), cfg.shared_dir());
    for dir in [&lower, &root, &shared] {
        sys.create_dir_all(dir)
            .map_err(LaunchError::sys("create the mount points"))?;
    }
    mounts::idmapped_bind(sys, &cfg.image_rootfs, &lower, &userns)?;
    let mut lowers = mount_layers(sys, cfg)?;
    lowers.push(lower);
    if let Some(image) = &cfg.disk_image {
        mounts::disk(sys, image, &cfg.disk_dir(), cfg.uid_base)?;
    }
    mounts::overlay(sys, &lowers, &cfg.upper_dir(), &cfg.work_dir(), &root)?;
    // Mounted here, by host root, so the sandbox's own mount namespace gets it locked.
    if let Some(run_dir) = &cfg.run_dir {
        mounts::bind_run_dir(sys, run_dir, &root, log)?;
    }

    // e. The sandbox's one tmpfs: /dev, /dev/shm, /sys without sysfs, the masking directory.
    mounts::shared_tmpfs(sys, &shared, cfg.uid_base)?;
    mounts::prepare_dev(sys, &root, &shared, cfg.uid_base)?;
    if !cfg.sysfs {
        mounts::sys_tree(sys, &root, &shared, cfg.uid_base, &cfg.cgroup_mounts)?;
    }

    // f. Become root of the user namespace and create the remaining namespaces.
    sys.clear_groups().map_err(LaunchError::sys("setgroups"))?;
    sys.setns(userns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(LaunchError::sys("setns(user)"))?;
    drop(userns);
    sys.setresgid(0).map_err(LaunchError::sys("setresgid(0)"))?;
    sys.setresuid(0).map_err(LaunchError::sys("setresuid(0)"))?;
    sys.unshare(SANDBOX_NAMESPACES)
        .map_err(LaunchError::sys("unshare(mnt|pid|net|uts|ipc|cgroup)"))
}

/// Mounts each of the config's layers read-only at its mount point, idmapped from its owner's
/// uid range to the sandbox's (one user namespace per distinct owner). Returns the mount
/// points, top first.
fn mount_layers(sys: &dyn Syscalls, cfg: &LaunchConfig) -> Result<Vec<PathBuf>, LaunchError> {
    let mut maps: Vec<(u32, std::os::fd::OwnedFd)> = Vec::new();
    let mut points = Vec::with_capacity(cfg.layers.len());
    for (index, layer) in cfg.layers.iter().enumerate() {
        let target = cfg.layer_dir(index);
        sys.create_dir_all(&target)
            .map_err(LaunchError::sys("create the layer mount points"))?;
        let known = maps
            .iter()
            .position(|(owner, _)| *owner == layer.owner_base);
        let slot = match known {
            Some(slot) => slot,
            None => {
                let ns = userns::create_shifted(sys, layer.owner_base, cfg.uid_base)?;
                maps.push((layer.owner_base, ns));
                maps.len() - 1
            }
        };
        mounts::idmapped_bind(sys, &layer.path, &target, &maps[slot].1)?;
        points.push(target);
    }
    Ok(points)
}

/// The namespaces created after entering the user namespace (owned by it).
const SANDBOX_NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWCGROUP);

/// Step g, in the sandbox init: kernel file systems, views, hostname, loopback, pivot_root,
/// masks, resolv.conf and the working directory.
fn build_init_side(
    sys: &dyn Syscalls,
    cfg: &LaunchConfig,
    log: &fs::File,
) -> Result<(), LaunchError> {
    let root = cfg.rootfs_dir();
    mounts::mount_kernel_fs(sys, &root, cfg.sysfs)?;
    mounts::cgroup_fs(sys, &root, &cfg.cgroup_mounts, log, cfg.sysfs)?;
    mounts::meminfo_view(sys, &root)?;
    mounts::mask_dirs(sys, &root, &cfg.shared_dir().join(mounts::EMPTY_DIR))?;
    sys.sethostname(&cfg.hostname)
        .map_err(LaunchError::sys("sethostname"))?;
    sys.set_link_up("lo")
        .map_err(LaunchError::sys("bring lo up"))?;
    mounts::pivot_into(sys, &root)?;
    mounts::mask_paths(sys)?;
    if let Some(text) = &cfg.resolv_conf {
        // Best effort: the file belongs to the sandbox; a broken one only breaks its DNS.
        let resolv = Path::new("/etc/resolv.conf");
        let _ = sys.write_file_nofollow(resolv, text.as_bytes(), 0o644);
    }
    // A workspace the sandbox broke (e.g. replaced by a dangling link) must not brick it.
    let workspace = Path::new(WORKSPACE);
    let _ = mounts::ensure_dir(sys, workspace);
    if sys.chdir(workspace).is_err() {
        sys.chdir(Path::new("/"))
            .map_err(LaunchError::sys("chdir /"))?;
    }
    Ok(())
}

/// The sandbox init's half of the setup: step g, then (h) stdio and the final hardening.
fn init(sys: &dyn Syscalls, cfg: &LaunchConfig, log: fs::File) -> Result<(), LaunchError> {
    build_init_side(sys, cfg, &log)?;

    let null = fs::File::open("/dev/null").map_err(LaunchError::sys("open /dev/null"))?;
    sys::dup2_raw(null.as_raw_fd(), 0).map_err(LaunchError::sys("dup2 stdin"))?;
    sys::dup2_raw(log.as_raw_fd(), 1).map_err(LaunchError::sys("dup2 stdout"))?;
    sys::dup2_raw(log.as_raw_fd(), 2).map_err(LaunchError::sys("dup2 stderr"))?;
    drop(null);
    drop(log);

    hardening::harden(cfg.nofile)
}

static LISTENER_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the inherited listening socket at `fd` (normally
/// [`LaunchConfig::listen_fd`]). Succeeds once per process; the fd must be a socket.
pub fn take_listener(fd: RawFd) -> io::Result<UnixListener> {
    let meta = fs::metadata(format!("/proc/self/fd/{fd}"))?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a socket"),
        ));
    }
    if LISTENER_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the listener was already taken",
        ));
    }
    // SAFETY: the fd is open (checked above) and was inherited from the launcher for this
    // purpose; no other Rust object owns it, and the flag above ensures we wrap it only once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Never inherit it into processes the agent spawns.
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Ok(UnixListener::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn config() -> LaunchConfig {
        LaunchConfig {
            id: "sb".into(),
            hostname: "sb".into(),
            image_rootfs: PathBuf::from("/"),
            sandbox_dir: PathBuf::from("/var/lib/sandpit/sandboxes/sb"),
            uid_base: 100_000,
            cgroup_procs: vec![],
            listen_fd: 3,
            nofile: 1024,
            env: vec![("A".into(), "b".into())],
            log_file: None,
            log_fd: None,
            agent_log_filter: None,
            run_dir: None,
            resolv_conf: None,
            disk_image: None,
            cgroup_mounts: vec![],
            layers: vec![],
            sysfs: false,
        }
    }

    #[test]
    fn config_roundtrips_and_defaults() {
        let c = config();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"imageRootfs\""));
        assert_eq!(serde_json::from_str::<LaunchConfig>(&json).unwrap(), c);
        let minimal =
            r#"{"id":"a","hostname":"a","imageRootfs":"/","sandboxDir":"/x","uidBase":100000}"#;
        let m: LaunchConfig = serde_json::from_str(minimal).unwrap();
        assert_eq!(m.listen_fd, LISTEN_FD);
        assert_eq!(m.nofile, DEFAULT_NOFILE);
        assert!(serde_json::from_str::<LaunchConfig>(r#"{"id":"a","bogus":1}"#).is_err());
    }

    #[test]
    fn validate_rejects_bad_input() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.hostname = "x".repeat(65);
        assert!(c.validate().is_err());
        let mut c = config();
        c.uid_base = 0;
        assert!(c.validate().is_err());
        let mut c = config();
        c.sandbox_dir = PathBuf::from("/a,b");
        assert!(c.validate().is_err());
        let mut c = config();
        c.sandbox_dir = PathBuf::from("relative");
        assert!(c.validate().is_err());
        let mut c = config();
        c.image_rootfs = PathBuf::from("/nonexistent-rootfs");
        assert!(c.validate().is_err());
        let mut c = config();
        c.listen_fd = 1;
        assert!(c.validate().is_err());
    }

    #[test]
    fn disk_image_moves_the_writable_layer() {
        let mut c = config();
        assert_eq!(c.upper_dir(), c.sandbox_dir.join("upper"));
        c.disk_image = Some(c.sandbox_dir.join("disk.img"));
        assert_eq!(c.upper_dir(), c.sandbox_dir.join("disk/upper"));
        assert_eq!(c.work_dir(), c.sandbox_dir.join("disk/work"));
        assert!(c.validate().is_ok());
        c.disk_image = Some(PathBuf::from("disk.img"));
        assert!(c.validate().is_err());
    }

    #[test]
    fn enter_sandbox_refuses_threads() {
        // The test harness runs tests on threads, so this process is multi-threaded.
        let _t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        let err = enter_sandbox(&config()).unwrap_err();
        assert!(err.to_string().contains("single-threaded"), "{err}");
    }

    #[test]
    fn full_message_prints_each_cause_once() {
        let errno = io::Error::from_raw_os_error(libc::EINVAL);
        let e = LaunchError::from(crate::seccomp::SeccompError::Install(
            seccompiler::Error::Seccomp(errno),
        ));
        assert_eq!(
            e.full_message(),
            "installing the seccomp filter: Error calling `seccomp`: Invalid argument (os error 22)"
        );
        let e = LaunchError::Caps {
            stage: "drop bounding capability",
            source: caps::errors::CapsError::from("prctl failed"),
        };
        assert_eq!(
            e.full_message(),
            "drop bounding capability failed: caps error: prctl failed"
        );
    }

    #[test]
    fn full_message_includes_causes() {
        let e = LaunchError::sys("pivot_root")(io::Error::from_raw_os_error(libc::EINVAL));
        assert!(e.full_message().starts_with("pivot_root failed: "));
    }
}

#[cfg(test)]
mod sequence_tests;
