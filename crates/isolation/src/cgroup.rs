//! Per-sandbox cgroups behind one trait: [`V1Hybrid`] (v1 controllers plus an optional cgroup2
//! mount used only for `cgroup.kill`) and [`V2`] (pure unified hierarchy).
//!
//! Sandbox cgroups live at `<root>/<name>` in every hierarchy. The root is either fixed (an
//! absolute path such as `/sandpit`: `<mount point>/sandpit` in each hierarchy, so a server
//! restarted from any cgroup finds the sandboxes of the one before) or a bare name, then a
//! child of the calling process's own cgroup (`<own cgroup>/<group>`, from `/proc/self/cgroup`).
//!
//! Removing a sandbox's cgroups first asks the kernel to reclaim the memory still charged to
//! them (`memory.force_empty` on v1, `memory.reclaim` on v2): a memory cgroup removed with
//! charged page cache stays in the kernel as a "dying" cgroup (about 1 MB of unreclaimable slab
//! each) until those pages happen to be reclaimed, and churn then grows kernel memory without
//! bound. Everything here is plain file I/O.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// CFS period used for CPU quotas (100 ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Resource limits of one sandbox. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupLimits {
    /// Memory limit in bytes; swap is not allowed on top of it.
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
    /// CPU quota in cores (e.g. `0.5`).
    pub cpus: Option<f64>,
}

impl CgroupLimits {
    /// CFS quota in microseconds per [`CPU_PERIOD_US`], at least 1 ms.
    pub fn cpu_quota_us(&self) -> Option<u64> {
        self.cpus
            .filter(|c| c.is_finite() && *c > 0.0)
            .map(|c| ((c * CPU_PERIOD_US as f64) as u64).max(1_000))
    }
}

/// What the processes of one sandbox use now, as its cgroups account it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time of all its processes, in microseconds.
    pub cpu_usec: u64,
    /// Memory charged now, in bytes.
    pub memory_bytes: u64,
    /// The most memory charged since the cgroup was made (the current value where the kernel
    /// keeps no peak).
    pub memory_peak_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
}

/// Errors of cgroup management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no usable cgroup hierarchy: {0}")]
    Unsupported(String),
    #[error("invalid cgroup name {0:?}")]
    InvalidName(String),
    #[error("cgroup {0:?} does not exist (the sandbox is not running)")]
    NotFound(String),
    /// Lowering the memory limit below what the sandbox uses and the kernel cannot reclaim
    /// (v1 answers EBUSY); the old limit stays.
    #[error(
        "memory limit of {limit_mib} MiB is below what the sandbox uses now and could not be \
         reclaimed; the old limit stays"
    )]
    MemoryBusy { limit_mib: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err(path))
}

/// A counter file holding one number; 0 when the file does not exist (a controller the host
/// lacks).
fn read_counter(path: &Path) -> Result<u64, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// `usage_usec` of a v2 `cpu.stat` file.
fn cpu_stat_usec(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A number from a cgroup file (`max` and v1's huge "unlimited" values read as `u64::MAX`).
fn read_u64(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.split_whitespace().next()?;
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

/// Writes a memory limit, turning the kernel's EBUSY (cannot shrink below usage) into
/// [`CgroupError::MemoryBusy`].
fn write_memory_limit(path: &Path, bytes: Option<u64>, unlimited: &str) -> Result<(), CgroupError> {
    let value = bytes.map_or_else(|| unlimited.to_string(), |b| b.to_string());
    fs::write(path, value).map_err(|source| {
        if source.raw_os_error() == Some(libc::EBUSY) {
            CgroupError::MemoryBusy {
                limit_mib: bytes.unwrap_or(u64::MAX) >> 20,
            }
        } else {
            CgroupError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Parses a cpu list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.trim().parse::<u32>().ok()),
        }
    }
    cpus
}

/// The cpuset of a sandbox: `ceil(cpus)` of the `available` CPUs (all of them when unlimited),
/// consecutive from an offset derived from the name so sandboxes spread over the host. The
/// CFS quota still bounds the time; the cpuset makes `nproc` inside match the limit.
pub fn pick_cpus(name: &str, cpus: Option<f64>, available: &[u32]) -> Vec<u32> {
    let wanted = cpus
        .filter(|c| c.is_finite() && *c > 0.0)
        .map_or(available.len(), |c| c.ceil() as usize)
        .clamp(1, available.len().max(1));
    if available.is_empty() {
        return Vec::new();
    }
    // FNV-1a: stable across runs, so a sandbox keeps its CPUs after a restart.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let start = (hash % available.len() as u64) as usize;
    let mut picked: Vec<u32> = (0..wanted)
        .map(|i| available[(start + i) % available.len()])
        .collect();
    picked.sort_unstable();
    picked
}

fn format_cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A sandbox root: a bare name, or an absolute path of plain components.
fn check_root(root: &str) -> Result<(), CgroupError> {
    match root.strip_prefix('/') {
        Some(path) => {
            if path.split('/').any(|c| check_name(c).is_err()) {
                return Err(CgroupError::InvalidName(root.to_string()));
            }
            Ok(())
        }
        None => check_name(root),
    }
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(CgroupError::InvalidName(name.to_string()));
    }
    Ok(())
}

fn read_pids(procs: &Path) -> Result<Vec<u32>, CgroupError> {
    match fs::read_to_string(procs) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(procs)(e)),
    }
}

/// Asks the kernel to reclaim what is still charged to the memory cgroup `dir` (no member
/// processes left), so that `rmdir` frees it at once instead of leaving a dying cgroup. Best
/// effort: v1 answers EBUSY while tasks remain, v2 EAGAIN when not all could be reclaimed.
fn reclaim_memory(dir: &Path) {
    let force_empty = dir.join("memory.force_empty");
    if force_empty.exists() {
        let _ = fs::write(force_empty, "0");
        return;
    }
    let reclaim = dir.join("memory.reclaim");
    if let Some(current) = read_u64(&dir.join("memory.current"))
        && current > 0
        && reclaim.exists()
    {
        let _ = fs::write(reclaim, current.to_string());
    }
}

/// rmdir of a sandbox root that is left alone when it still has children (another server's
/// sandboxes) or is gone already.
fn remove_root_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EBUSY | libc::ENOTEMPTY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// `mkdir -p` that retries when another server removes an empty sandbox root between the
/// creation of the root and of the sandbox's directory.
fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut tries = 0;
    loop {
        match fs::create_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
            r => return r.map_err(io_err(dir)),
        }
    }
}

/// rmdir that treats "already gone" as success.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

fn list_children(base: &Path, out: &mut BTreeSet<String>) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(base)(e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && let Some(name) = entry.file_name().to_str()
        {
            out.insert(name.to_string());
        }
    }
    Ok(())
}

fn kill_pids(pids: &[u32]) {
    for pid in pids {
        if let Ok(pid) = i32::try_from(*pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// One cgroup backend. All methods take the sandbox name (a single path component).
pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    /// `"v1-hybrid"` or `"v2"`.
    fn kind(&self) -> &'static str;
    /// Creates the sandbox's cgroups (reusing leftovers) and writes the limits.
    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError>;
    /// Writes new limits into the existing cgroups of a running sandbox; they apply at once.
    /// A memory limit below what the sandbox uses fails with [`CgroupError::MemoryBusy`] and
    /// leaves the old limit.
    fn update(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError>;
    /// The sandbox's own cgroup directories, one per hierarchy, to bind (read-only) under
    /// `/sys/fs/cgroup` inside it: each shows the sandbox's cgroup as the root, as its cgroup
    /// namespace does. Binds, not fresh cgroup mounts: a cgroup mount in a new cgroup namespace
    /// makes a superblock of its own, and the kernel compares every new one with all existing
    /// ones, so creation slowed with the number of live sandboxes (issue 16).
    fn sandbox_mounts(&self, name: &str) -> Vec<CgroupFsMount>;
    /// The `cgroup.procs` files a process must write its pid to, to join every hierarchy.
    fn procs_files(&self, name: &str) -> Vec<PathBuf>;
    /// Every directory of the sandbox (one per hierarchy), whether or not it exists.
    fn dirs(&self, name: &str) -> Vec<PathBuf>;
    /// Whether any directory of the sandbox exists.
    fn exists(&self, name: &str) -> bool {
        self.dirs(name).iter().any(|d| d.is_dir())
    }
    /// Pids (host namespace) of the processes in the sandbox.
    fn pids(&self, name: &str) -> Result<Vec<u32>, CgroupError>;
    /// Sends SIGKILL to every process of the sandbox (asynchronously: they may still be exiting
    /// when this returns).
    fn kill_all(&self, name: &str) -> Result<(), CgroupError>;
    /// Removes the sandbox's directories. Fails (EBUSY) while processes are still exiting;
    /// callers retry.
    fn remove(&self, name: &str) -> Result<(), CgroupError>;
    /// Names of every sandbox cgroup that exists under the group.
    fn list(&self) -> Result<Vec<String>, CgroupError>;
    /// The sandbox root directory of every hierarchy (`<root>`, the parent of each sandbox's
    /// directory).
    fn roots(&self) -> Vec<PathBuf>;
    /// Removes the sandbox roots that are empty (no sandbox cgroups left, e.g. at shutdown);
    /// roots still holding sandboxes (of this or another server) stay.
    fn remove_roots(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for root in self.roots() {
            if let Err(e) = remove_root_dir(&root) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
    /// What the sandbox uses now (zeros for a sandbox without cgroups).
    fn usage(&self, name: &str) -> Result<CgroupUsage, CgroupError>;
}

/// Detects the host's layout and returns the matching backend for sandboxes under `group`: an
/// absolute path (`/sandpit`) is the same directory under every hierarchy's mount point; a bare
/// name is a child of this process's own cgroup.
pub fn detect(group: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
    check_root(group)?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err(Path::new("/proc/self/mountinfo")))?;
    let own =
        fs::read_to_string("/proc/self/cgroup").map_err(io_err(Path::new("/proc/self/cgroup")))?;
    from_layout(
        &parse_mountinfo(&mountinfo),
        &parse_proc_cgroup(&own),
        group,
    )
}

/// One cgroup directory of a sandbox as it sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CgroupFsMount {
    /// Directory under `/sys/fs/cgroup` (`memory`, `cpu,cpuacct`, `unified`; empty: the
    /// directory itself, for a pure v2 host).
    pub dir: String,
    /// The sandbox's directory in the host's hierarchy (`/sys/fs/cgroup/memory/sandpit/<id>`),
    /// bound read-only at `dir`.
    pub source: PathBuf,
}

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupMount {
    /// Root of the mount inside the hierarchy (`/` unless a subtree is mounted).
    pub root: String,
    pub mount_point: PathBuf,
    /// Controllers of a v1 mount (e.g. `["cpu", "cpuacct"]`, `["name=systemd"]`); empty for v2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// A line of `/proc/self/cgroup`.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnCgroup {
    /// Controllers of the hierarchy (empty for the unified one).
    pub controllers: Vec<String>,
    pub path: String,
}

fn unescape_mount_path(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the cgroup mounts out of `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let (fstype, super_opts) = (right[0], right[2]);
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            super_opts
                .split(',')
                .filter(|o| {
                    !matches!(
                        *o,
                        "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"
                    ) && !o.starts_with("release_agent")
                        && *o != "clone_children"
                        && *o != "xattr"
                        && *o != "noprefix"
                })
                .map(str::to_string)
                .collect()
        };
        out.push(CgroupMount {
            root: unescape_mount_path(left[3]),
            mount_point: PathBuf::from(unescape_mount_path(left[4])),
            controllers,
            v2,
        });
    }
    out
}

/// Parses `/proc/self/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Vec<OwnCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(OwnCgroup {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// `<mount point>/<own path relative to the mount root>/<group>`, or `<mount point>/<group>` for
/// an absolute `group`.
fn group_base(mount: &CgroupMount, own_path: &str, group: &str) -> PathBuf {
    if let Some(fixed) = group.strip_prefix('/') {
        let mut p = mount.mount_point.clone();
        for comp in fixed.split('/') {
            p.push(comp);
        }
        return p;
    }
    let rel = own_path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .unwrap_or(own_path);
    let mut p = mount.mount_point.clone();
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(comp);
    }
    p.push(group);
    p
}

/// Picks the backend for a parsed layout.
pub fn from_layout(
    mounts: &[CgroupMount],
    own: &[OwnCgroup],
    group: &str,
) -> Result<Box<dyn CgroupManager>, CgroupError> {
    check_root(group)?;
    let own_v1 = |m: &CgroupMount| {
        own.iter()
            .find(|o| {
                !o.controllers.is_empty() && {
                    let mut a = o.controllers.clone();
                    let mut b = m.controllers.clone();
                    a.sort();
                    b.sort();
                    a == b
                }
            })
            .map(|o| o.path.clone())
            .unwrap_or_else(|| "/".to_string())
    };
    let own_v2 = own
        .iter()
        .find(|o| o.controllers.is_empty())
        .map(|o| o.path.clone())
        .unwrap_or_else(|| "/".to_string());
    let v2_mount = mounts.iter().find(|m| m.v2);
    let find_v1 = |ctrl: &str| {
        mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == ctrl))
    };

    if let Some(memory) = find_v1("memory") {
        let hierarchy = |controller: &'static str, m: &CgroupMount| {
            V1Hierarchy::new(controller, m, group_base(m, &own_v1(m), group))
        };
        let mut hierarchies = vec![hierarchy("memory", memory)];
        let Some(pids) = find_v1("pids") else {
            return Err(CgroupError::Unsupported(
                "v1 memory hierarchy without pids".into(),
            ));
        };
        hierarchies.push(hierarchy("pids", pids));
        if let Some(cpu) = find_v1("cpu") {
            hierarchies.push(hierarchy("cpu", cpu));
        }
        // cpuacct may share the cpu mount (then it is already covered).
        if let Some(acct) = find_v1("cpuacct").filter(|m| !m.controllers.iter().any(|c| c == "cpu"))
        {
            hierarchies.push(hierarchy("cpuacct", acct));
        }
        if let Some(freezer) = find_v1("freezer") {
            hierarchies.push(hierarchy("freezer", freezer));
        }
        // Optional: makes `nproc` inside follow the cpu limit.
        if let Some(cpuset) = find_v1("cpuset") {
            hierarchies.push(hierarchy("cpuset", cpuset));
        }
        let unified = v2_mount.map(|m| group_base(m, &own_v2, group));
        return Ok(Box::new(V1Hybrid {
            hierarchies,
            unified,
        }));
    }
    match v2_mount {
        Some(m) => {
            let base = group_base(m, &own_v2, group);
            Ok(Box::new(V2::new(base)))
        }
        None => Err(CgroupError::Unsupported(
            "neither a v1 memory hierarchy nor a cgroup2 mount found".into(),
        )),
    }
}

/// One v1 hierarchy: the controller it is used for and `<mount>/<own>/<group>`.
#[derive(Debug, Clone)]
pub struct V1Hierarchy {
    pub controller: &'static str,
    pub base: PathBuf,
    /// Every controller of the hierarchy, comma-separated (`cpu,cpuacct`): the name of its
    /// directory under `/sys/fs/cgroup` inside a sandbox.
    pub controllers: String,
}

impl V1Hierarchy {
    fn new(controller: &'static str, mount: &CgroupMount, base: PathBuf) -> Self {
        Self {
            controller,
            base,
            controllers: mount.controllers.join(","),
        }
    }
}

/// cgroup v1 controllers (memory, pids, cpu, cpuacct, freezer) plus, if mounted, a cgroup2 child
/// used for `cgroup.kill`.
#[derive(Debug, Clone)]
pub struct V1Hybrid {
    pub hierarchies: Vec<V1Hierarchy>,
    pub unified: Option<PathBuf>,
}

impl V1Hybrid {
    fn dir_of(&self, controller: &str, name: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.controller == controller)
            .map(|h| h.base.join(name))
    }

    /// memsw must stay >= limit: lowering writes the limit first, raising memsw first. A
    /// refused (EBUSY) lowering thus changes nothing.
    fn write_memory(dir: &Path, bytes: Option<u64>) -> Result<(), CgroupError> {
        let limit = dir.join("memory.limit_in_bytes");
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        let current = read_u64(&limit).unwrap_or(u64::MAX);
        let lowering = bytes.unwrap_or(u64::MAX) < current;
        let order = if lowering {
            [&limit, &memsw]
        } else {
            [&memsw, &limit]
        };
        for path in order {
            if path == &memsw && !memsw.exists() {
                continue; // swap accounting is off
            }
            write_memory_limit(path, bytes, "-1")?;
        }
        Ok(())
    }

    /// A new `<group>` cpuset starts empty in v1: give it its parent's CPUs and memory nodes.
    fn prepare_cpuset_group(base: &Path) -> Result<(), CgroupError> {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = base.join(file);
            if fs::read_to_string(&own).is_ok_and(|v| !v.trim().is_empty()) {
                continue;
            }
            if let Some(parent) = base.parent() {
                let value = fs::read_to_string(parent.join(file)).map_err(io_err(parent))?;
                write_file(&own, value.trim())?;
            }
        }
        Ok(())
    }

    /// Writes every limit into the sandbox's existing directories.
    fn write_limits(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        if let Some(dir) = self.dir_of("memory", name) {
            Self::write_memory(&dir, limits.memory_bytes)?;
        }
        if let Some(dir) = self.dir_of("pids", name) {
            let v = limits
                .pids
                .map_or_else(|| "max".to_string(), |p| p.to_string());
            write_file(&dir.join("pids.max"), &v)?;
        }
        if let Some(dir) = self.dir_of("cpu", name) {
            write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            let quota = limits
                .cpu_quota_us()
                .map_or_else(|| "-1".to_string(), |q| q.to_string());
            write_file(&dir.join("cpu.cfs_quota_us"), &quota)?;
        }
        if let Some(dir) = self.dir_of("cpuset", name) {
            let parent = dir.parent().unwrap_or(&dir);
            let available = fs::read_to_string(parent.join("cpuset.cpus")).unwrap_or_default();
            let cpus = pick_cpus(name, limits.cpus, &parse_cpu_list(&available));
            if fs::read_to_string(dir.join("cpuset.mems")).is_ok_and(|v| v.trim().is_empty()) {
                let mems = fs::read_to_string(parent.join("cpuset.mems")).unwrap_or_default();
                write_file(&dir.join("cpuset.mems"), mems.trim())?;
            }
            write_file(&dir.join("cpuset.cpus"), &format_cpu_list(&cpus))?;
        }
        Ok(())
    }

    /// Freeze, SIGKILL every member, thaw: the v1 way to kill without racing forks.
    fn kill_with_freezer(&self, name: &str) -> Result<(), CgroupError> {
        let Some(freezer) = self.dir_of("freezer", name).filter(|d| d.is_dir()) else {
            for _ in 0..3 {
                kill_pids(&self.pids(name)?);
            }
            return Ok(());
        };
        let state = freezer.join("freezer.state");
        write_file(&state, "FROZEN")?;
        for _ in 0..200 {
            if fs::read_to_string(&state)
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(true)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        kill_pids(&read_pids(&freezer.join("cgroup.procs"))?);
        write_file(&state, "THAWED")
    }
}

impl CgroupManager for V1Hybrid {
    fn kind(&self) -> &'static str {
        "v1-hybrid"
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        check_name(name)?;
        if let Some(h) = self.hierarchies.iter().find(|h| h.controller == "cpuset") {
            fs::create_dir_all(&h.base).map_err(io_err(&h.base))?;
            Self::prepare_cpuset_group(&h.base)?;
        }
        for dir in self.dirs(name) {
            make_dir(&dir)?;
        }
        self.write_limits(name, limits)
    }

    fn update(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        check_name(name)?;
        if !self.dir_of("memory", name).is_some_and(|d| d.is_dir()) {
            return Err(CgroupError::NotFound(name.to_string()));
        }
        self.write_limits(name, limits)
    }

    fn sandbox_mounts(&self, name: &str) -> Vec<CgroupFsMount> {
        let mut mounts: Vec<CgroupFsMount> = self
            .hierarchies
            .iter()
            .map(|h| CgroupFsMount {
                dir: h.controllers.clone(),
                source: h.base.join(name),
            })
            .collect();
        if let Some(unified) = &self.unified {
            mounts.push(CgroupFsMount {
                dir: "unified".into(),
                source: unified.join(name),
            });
        }
        mounts
    }

    fn procs_files(&self, name: &str) -> Vec<PathBuf> {
        self.dirs(name)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.hierarchies.iter().map(|h| h.base.join(name)).collect();
        if let Some(u) = &self.unified {
            v.push(u.join(name));
        }
        v
    }

    fn pids(&self, name: &str) -> Result<Vec<u32>, CgroupError> {
        let mut all = BTreeSet::new();
        for dir in self.dirs(name) {
            all.extend(read_pids(&dir.join("cgroup.procs"))?);
        }
        Ok(all.into_iter().collect())
    }

    fn kill_all(&self, name: &str) -> Result<(), CgroupError> {
        check_name(name)?;
        if let Some(kill) = self
            .unified
            .as_ref()
            .map(|u| u.join(name).join("cgroup.kill"))
            && kill.exists()
            && write_file(&kill, "1").is_ok()
        {
            return Ok(());
        }
        self.kill_with_freezer(name)
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        check_name(name)?;
        if let Some(memory) = self.dir_of("memory", name).filter(|d| d.is_dir()) {
            reclaim_memory(&memory);
        }
        let mut first_err = None;
        for dir in self.dirs(name) {
            if let Err(e) = remove_dir(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn roots(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.hierarchies.iter().map(|h| h.base.clone()).collect();
        v.extend(self.unified.clone());
        v
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = BTreeSet::new();
        for h in &self.hierarchies {
            list_children(&h.base, &mut names)?;
        }
        if let Some(u) = &self.unified {
            list_children(u, &mut names)?;
        }
        Ok(names.into_iter().collect())
    }

    fn usage(&self, name: &str) -> Result<CgroupUsage, CgroupError> {
        check_name(name)?;
        let read = |controller: &str, file: &str| match self.dir_of(controller, name) {
            Some(dir) => read_counter(&dir.join(file)),
            None => Ok(0),
        };
        // cpuacct has its own hierarchy here, or shares the cpu one ("cpu,cpuacct").
        let cpu_ns = match self.dir_of("cpuacct", name) {
            Some(dir) => read_counter(&dir.join("cpuacct.usage"))?,
            None => read("cpu", "cpuacct.usage")?,
        };
        let memory_bytes = read("memory", "memory.usage_in_bytes")?;
        Ok(CgroupUsage {
            cpu_usec: cpu_ns / 1_000,
            memory_bytes,
            memory_peak_bytes: read("memory", "memory.max_usage_in_bytes")?.max(memory_bytes),
            pids: read("pids", "pids.current")?,
        })
    }
}

/// Pure cgroup v2: memory.max, memory.swap.max, pids.max, cpu.max and cgroup.kill in one tree.
#[derive(Debug, Clone)]
pub struct V2 {
    /// `<mount>/<own>/<group>`.
    pub base: PathBuf,
}

impl V2 {
    /// A v2 backend rooted at `base` (`<mount>/<own cgroup>/<group>`); `base`'s parent is the
    /// cgroup of the server. Tests pass a plain directory.
    pub fn new(base: PathBuf) -> Self {
        Self { base }
    }

    /// Writes every limit into the sandbox's directory `dir`.
    fn write_limits(
        &self,
        dir: &Path,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<(), CgroupError> {
        Self::write_memory(dir, limits.memory_bytes)?;
        let pids = limits
            .pids
            .map_or_else(|| "max".to_string(), |p| p.to_string());
        write_file(&dir.join("pids.max"), &pids)?;
        let cpu = match limits.cpu_quota_us() {
            Some(q) => format!("{q} {CPU_PERIOD_US}"),
            None => format!("max {CPU_PERIOD_US}"),
        };
        write_file(&dir.join("cpu.max"), &cpu)?;
        let available = fs::read_to_string(self.base.join("cpuset.cpus.effective"));
        if let Ok(available) = available
            && dir.join("cpuset.cpus").exists()
        {
            let cpus = pick_cpus(name, limits.cpus, &parse_cpu_list(&available));
            write_file(&dir.join("cpuset.cpus"), &format_cpu_list(&cpus))?;
        }
        Ok(())
    }

    /// v2 never refuses a lower `memory.max`: it reclaims, then OOM-kills. To keep v1's
    /// promise (a limit below usage is refused, nothing dies), ask the kernel to reclaim the
    /// difference first and refuse if usage stays above the new limit.
    fn write_memory(dir: &Path, bytes: Option<u64>) -> Result<(), CgroupError> {
        if let Some(b) = bytes
            && let Some(current) = read_u64(&dir.join("memory.current"))
            && current > b
        {
            let _ = fs::write(dir.join("memory.reclaim"), (current - b).to_string());
            if read_u64(&dir.join("memory.current")).is_some_and(|c| c > b) {
                return Err(CgroupError::MemoryBusy { limit_mib: b >> 20 });
            }
        }
        write_memory_limit(&dir.join("memory.max"), bytes, "max")?;
        if bytes.is_some() {
            write_file(&dir.join("memory.swap.max"), "0")?;
        }
        Ok(())
    }

    /// Enables the controllers sandboxes need in `dir/cgroup.subtree_control`.
    fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
        let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<String> = ["memory", "pids", "cpu", "cpuset"]
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let path = dir.join("cgroup.subtree_control");
        fs::write(&path, wanted.join(" ")).map_err(|source| {
            if source.raw_os_error() == Some(libc::EBUSY) {
                CgroupError::Unsupported(format!(
                    "cannot enable controllers in {}: the cgroup has member processes \
                     (run the server in a leaf of a delegated cgroup)",
                    dir.display()
                ))
            } else {
                CgroupError::Io { path, source }
            }
        })
    }
}

impl CgroupManager for V2 {
    fn kind(&self) -> &'static str {
        "v2"
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        check_name(name)?;
        if let Some(parent) = self.base.parent() {
            Self::enable_controllers(parent)?;
        }
        fs::create_dir_all(&self.base).map_err(io_err(&self.base))?;
        Self::enable_controllers(&self.base)?;
        let dir = self.base.join(name);
        make_dir(&dir)?;
        self.write_limits(&dir, name, limits)
    }

    fn update(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        check_name(name)?;
        let dir = self.base.join(name);
        if !dir.is_dir() {
            return Err(CgroupError::NotFound(name.to_string()));
        }
        self.write_limits(&dir, name, limits)
    }

    fn sandbox_mounts(&self, name: &str) -> Vec<CgroupFsMount> {
        vec![CgroupFsMount {
            dir: String::new(),
            source: self.base.join(name),
        }]
    }

    fn procs_files(&self, name: &str) -> Vec<PathBuf> {
        vec![self.base.join(name).join("cgroup.procs")]
    }

    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        vec![self.base.join(name)]
    }

    fn pids(&self, name: &str) -> Result<Vec<u32>, CgroupError> {
        read_pids(&self.base.join(name).join("cgroup.procs"))
    }

    fn kill_all(&self, name: &str) -> Result<(), CgroupError> {
        check_name(name)?;
        let dir = self.base.join(name);
        if !dir.is_dir() {
            return Ok(());
        }
        write_file(&dir.join("cgroup.kill"), "1")
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        check_name(name)?;
        let dir = self.base.join(name);
        if dir.is_dir() {
            reclaim_memory(&dir);
        }
        remove_dir(&dir)
    }

    fn roots(&self) -> Vec<PathBuf> {
        vec![self.base.clone()]
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = BTreeSet::new();
        list_children(&self.base, &mut names)?;
        Ok(names.into_iter().collect())
    }

    fn usage(&self, name: &str) -> Result<CgroupUsage, CgroupError> {
        check_name(name)?;
        let dir = self.base.join(name);
        let cpu_stat = dir.join("cpu.stat");
        let cpu_usec = match fs::read_to_string(&cpu_stat) {
            Ok(text) => cpu_stat_usec(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&cpu_stat)(e)),
        };
        let memory_bytes = read_counter(&dir.join("memory.current"))?;
        Ok(CgroupUsage {
            cpu_usec,
            memory_bytes,
            // memory.peak exists from Linux 5.19.
            memory_peak_bytes: read_counter(&dir.join("memory.peak"))?.max(memory_bytes),
            pids: read_counter(&dir.join("pids.current"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_OWN: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn parses_hybrid_layout() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 7);
        assert_eq!(mounts[2].controllers, vec!["memory".to_string()]);
        assert!(mounts[6].v2);
        let mgr = from_layout(&mounts, &parse_proc_cgroup(HYBRID_OWN), "sandpit").unwrap();
        assert_eq!(mgr.kind(), "v1-hybrid");
        let dirs = mgr.dirs("sb1");
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/sandpit/sb1"),
                PathBuf::from("/sys/fs/cgroup/pids/sandpit/sb1"),
                PathBuf::from("/sys/fs/cgroup/cpu/sandpit/sb1"),
                PathBuf::from("/sys/fs/cgroup/cpuacct/sandpit/sb1"),
                PathBuf::from("/sys/fs/cgroup/freezer/sandpit/sb1"),
                PathBuf::from("/sys/fs/cgroup/unified/sandpit/sb1"),
            ]
        );
        assert_eq!(mgr.procs_files("sb1").len(), 6);
    }

    #[test]
    fn an_absolute_root_is_fixed_whatever_the_own_cgroup() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let mgr = from_layout(&mounts, &parse_proc_cgroup(HYBRID_OWN), "/sandpit").unwrap();
        assert_eq!(
            mgr.dirs("sb1")[0],
            PathBuf::from("/sys/fs/cgroup/memory/sandpit/sb1")
        );
        let deeper = from_layout(&mounts, &parse_proc_cgroup(HYBRID_OWN), "/ops/sb").unwrap();
        assert_eq!(
            deeper.roots()[0],
            PathBuf::from("/sys/fs/cgroup/memory/ops/sb")
        );
        assert_eq!(deeper.roots().len(), 6);
        for bad in ["/", "/a//b", "/a/../b", "/a/"] {
            assert!(matches!(
                from_layout(&mounts, &[], bad),
                Err(CgroupError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn v2_remove_asks_for_reclaim_and_empty_roots_go() {
        let tmp = tempfile::tempdir().unwrap();
        let mgr = V2::new(tmp.path().join("g"));
        let dir = mgr.base.join("sb");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.current"), "12288\n").unwrap();
        fs::write(dir.join("memory.reclaim"), "").unwrap();
        // A fake dir holds files, so rmdir fails; the reclaim request was written first.
        assert!(mgr.remove("sb").is_err());
        assert_eq!(
            fs::read_to_string(dir.join("memory.reclaim")).unwrap(),
            "12288"
        );
        // A root with a sandbox in it stays; an empty one goes.
        mgr.remove_roots().unwrap();
        assert!(mgr.base.is_dir());
        fs::remove_dir_all(&dir).unwrap();
        mgr.remove_roots().unwrap();
        assert!(!mgr.base.exists());
    }

    #[test]
    fn combined_cpu_cpuacct_is_one_hierarchy() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let own = "3:cpu,cpuacct:/x\n4:memory:/x\n8:pids:/x\n";
        let mgr = from_layout(&parse_mountinfo(mi), &parse_proc_cgroup(own), "g").unwrap();
        let dirs = mgr.dirs("s");
        assert_eq!(dirs.len(), 3);
        assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/x/g/s")));
    }

    #[test]
    fn pure_v2_layout() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = "0::/system.slice/sandpit.service\n";
        let mgr = from_layout(&parse_mountinfo(mi), &parse_proc_cgroup(own), "sandpit").unwrap();
        assert_eq!(mgr.kind(), "v2");
        assert_eq!(
            mgr.dirs("a"),
            vec![PathBuf::from(
                "/sys/fs/cgroup/system.slice/sandpit.service/sandpit/a"
            )]
        );
    }

    #[test]
    fn no_cgroups_is_an_error() {
        let r = from_layout(
            &parse_mountinfo("22 27 0:21 / /proc rw - proc proc rw\n"),
            &[],
            "g",
        );
        assert!(matches!(r, Err(CgroupError::Unsupported(_))));
    }

    #[test]
    fn rejects_bad_names() {
        let mgr = V2::new(PathBuf::from("/nonexistent"));
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                mgr.create(bad, &CgroupLimits::default()),
                Err(CgroupError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn v2_writes_limits_into_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("server");
        fs::create_dir_all(&own).unwrap();
        fs::write(
            own.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let mgr = V2::new(own.join("sandpit"));
        fs::create_dir_all(&mgr.base).unwrap();
        fs::write(mgr.base.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let limits = CgroupLimits {
            memory_bytes: Some(256 << 20),
            pids: Some(100),
            cpus: Some(0.5),
        };
        mgr.create("sb", &limits).unwrap();
        let dir = mgr.base.join("sb");
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (256u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "100");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(
            fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu +cpuset"
        );
        assert_eq!(mgr.list().unwrap(), vec!["sb".to_string()]);
        mgr.kill_all("sb").unwrap();
        assert_eq!(read("cgroup.kill"), "1");
        assert_eq!(mgr.procs_files("sb"), vec![dir.join("cgroup.procs")]);
        // A fake dir has files in it, so rmdir fails like a busy cgroup would.
        assert!(mgr.remove("sb").is_err());
    }

    #[test]
    fn v2_usage_reads_the_accounting_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mgr = V2::new(tmp.path().join("g"));
        let dir = mgr.base.join("sb");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n",
        )
        .unwrap();
        fs::write(dir.join("memory.current"), "4096\n").unwrap();
        fs::write(dir.join("memory.peak"), "8192\n").unwrap();
        fs::write(dir.join("pids.current"), "3\n").unwrap();
        let want = CgroupUsage {
            cpu_usec: 1_234_567,
            memory_bytes: 4096,
            memory_peak_bytes: 8192,
            pids: 3,
        };
        assert_eq!(mgr.usage("sb").unwrap(), want);
        // No memory.peak (kernels before 5.19): the current value stands in.
        fs::remove_file(dir.join("memory.peak")).unwrap();
        assert_eq!(mgr.usage("sb").unwrap().memory_peak_bytes, 4096);
        // A sandbox without cgroups (asleep) uses nothing.
        assert_eq!(mgr.usage("gone").unwrap(), CgroupUsage::default());
    }

    #[test]
    fn v1_usage_reads_each_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let h = |c: &'static str| V1Hierarchy {
            controller: c,
            base: tmp.path().join(c),
            controllers: c.to_owned(),
        };
        let mgr = V1Hybrid {
            hierarchies: vec![h("memory"), h("pids"), h("cpu"), h("cpuacct")],
            unified: None,
        };
        let write = |c: &str, file: &str, v: &str| {
            let dir = tmp.path().join(c).join("sb");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), v).unwrap();
        };
        write("cpuacct", "cpuacct.usage", "2500000000\n");
        write("memory", "memory.usage_in_bytes", "1048576\n");
        write("memory", "memory.max_usage_in_bytes", "2097152\n");
        write("pids", "pids.current", "7\n");
        let want = CgroupUsage {
            cpu_usec: 2_500_000,
            memory_bytes: 1 << 20,
            memory_peak_bytes: 2 << 20,
            pids: 7,
        };
        assert_eq!(mgr.usage("sb").unwrap(), want);
        assert!(matches!(mgr.usage("a/b"), Err(CgroupError::InvalidName(_))));
    }

    #[test]
    fn v2_unlimited_values() {
        let tmp = tempfile::tempdir().unwrap();
        let mgr = V2::new(tmp.path().join("g"));
        mgr.create("sb", &CgroupLimits::default()).unwrap();
        let dir = mgr.base.join("sb");
        assert_eq!(fs::read_to_string(dir.join("memory.max")).unwrap(), "max");
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "max");
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "max 100000"
        );
        assert!(!dir.join("memory.swap.max").exists());
    }

    #[test]
    fn cpu_quota_rounding() {
        let l = |c| CgroupLimits {
            cpus: Some(c),
            ..Default::default()
        };
        assert_eq!(l(2.0).cpu_quota_us(), Some(200_000));
        assert_eq!(l(0.001).cpu_quota_us(), Some(1_000));
        assert_eq!(l(0.0).cpu_quota_us(), None);
        assert_eq!(l(f64::NAN).cpu_quota_us(), None);
    }

    #[test]
    fn cpu_lists_and_picks() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        let host = [0, 1, 2, 3];
        assert_eq!(pick_cpus("a", None, &host), host.to_vec());
        assert_eq!(pick_cpus("a", Some(0.5), &host).len(), 1);
        assert_eq!(pick_cpus("a", Some(1.5), &host).len(), 2);
        assert_eq!(pick_cpus("a", Some(64.0), &host), host.to_vec());
        assert_eq!(
            pick_cpus("a", Some(2.0), &host),
            pick_cpus("a", Some(2.0), &host)
        );
        let spread: BTreeSet<Vec<u32>> = (0..32)
            .map(|i| pick_cpus(&format!("sb{i}"), Some(1.0), &host))
            .collect();
        assert!(spread.len() > 1, "one-CPU sandboxes spread over the host");
        assert!(pick_cpus("a", Some(1.0), &[]).is_empty());
    }

    #[test]
    fn v2_update_rewrites_limits_and_cpuset_of_an_existing_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let mgr = V2::new(tmp.path().join("g"));
        assert!(matches!(
            mgr.update("sb", &CgroupLimits::default()),
            Err(CgroupError::NotFound(_))
        ));
        let dir = mgr.base.join("sb");
        fs::create_dir_all(&dir).unwrap();
        fs::write(mgr.base.join("cpuset.cpus.effective"), "0-3\n").unwrap();
        fs::write(dir.join("cpuset.cpus"), "").unwrap();
        let limits = CgroupLimits {
            memory_bytes: Some(64 << 20),
            pids: Some(50),
            cpus: Some(2.0),
        };
        mgr.update("sb", &limits).unwrap();
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("pids.max"), "50");
        assert_eq!(read("cpu.max"), "200000 100000");
        assert_eq!(parse_cpu_list(&read("cpuset.cpus")).len(), 2);
        // Usage the kernel cannot reclaim below the new limit: refused, old limit kept.
        fs::write(dir.join("memory.current"), (100u64 << 20).to_string()).unwrap();
        let lower = CgroupLimits {
            memory_bytes: Some(32 << 20),
            ..limits
        };
        assert!(matches!(
            mgr.update("sb", &lower),
            Err(CgroupError::MemoryBusy { limit_mib: 32 })
        ));
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(
            mgr.sandbox_mounts("sb"),
            vec![CgroupFsMount {
                dir: String::new(),
                source: dir.clone(),
            }]
        );
    }

    #[test]
    fn v1_mounts_name_each_hierarchy_and_update_needs_the_cgroup() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
                  34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let own = "3:cpu,cpuacct:/\n4:memory:/\n8:pids:/\n2:cpuset:/\n0::/\n";
        let mgr = from_layout(&parse_mountinfo(mi), &parse_proc_cgroup(own), "g").unwrap();
        let mounts = mgr.sandbox_mounts("s");
        let dirs: Vec<&str> = mounts.iter().map(|m| m.dir.as_str()).collect();
        assert_eq!(dirs, ["memory", "pids", "cpu,cpuacct", "cpuset", "unified"]);
        assert_eq!(
            mounts[2].source,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/g/s")
        );
        assert_eq!(
            mounts[4].source,
            PathBuf::from("/sys/fs/cgroup/unified/g/s")
        );
        assert!(
            mgr.dirs("s")
                .contains(&PathBuf::from("/sys/fs/cgroup/cpuset/g/s"))
        );
        assert!(matches!(
            mgr.update("never-made", &CgroupLimits::default()),
            Err(CgroupError::NotFound(_))
        ));
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
