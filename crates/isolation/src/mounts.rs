//! The sandbox's file system: idmapped image, overlay root, /dev, proc/sys/devpts, pivot_root and
//! the /proc masks. Host-side steps run in the launcher's private mount namespace (as host
//! root); the rest runs in the sandbox init, inside the user namespace.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::MsFlags;

use crate::cgroup::CgroupFsMount;
use crate::launch::{LaunchError, MEMINFO_VIEW};
use crate::syscalls::{FileKind, Syscalls};

/// A directory to mount on: created if missing. A symlink or a non-directory (possibly planted
/// in the image or the writable layer) is refused, so no step follows a link the sandbox
/// controls.
fn mount_point(sys: &dyn Syscalls, path: &Path, stage: &'static str) -> Result<(), LaunchError> {
    match sys.lstat(path) {
        Ok(FileKind::Dir) => Ok(()),
        Ok(_) => Err(LaunchError::sys(stage)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", path.display()),
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            sys.mkdir(path, 0o755).map_err(LaunchError::sys(stage))
        }
        Err(e) => Err(LaunchError::sys(stage)(e)),
    }
}

/// Makes every mount of the (new, private) mount namespace private, so nothing mounted here
/// propagates to the host and vice versa.
pub(crate) fn make_rprivate(sys: &dyn Syscalls) -> Result<(), LaunchError> {
    let flags = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    sys.mount(None, Path::new("/"), None, flags, None)
        .map_err(LaunchError::sys("make / rprivate"))
}

/// Read-only bind of `image` at `target` whose owners are shifted by `userns`'s map, so the
/// image's root-owned files appear owned by sandbox root.
pub(crate) fn idmapped_bind(
    sys: &dyn Syscalls,
    image: &Path,
    target: &Path,
    userns: impl AsFd,
) -> Result<(), LaunchError> {
    let tree = sys
        .open_tree_clone(image)
        .map_err(LaunchError::sys("open_tree of the image rootfs"))?;
    sys.mount_setattr_idmap(
        tree.as_fd(),
        libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_RDONLY,
        userns.as_fd(),
    )
    .map_err(LaunchError::sys("mount_setattr(MOUNT_ATTR_IDMAP)"))?;
    sys.move_mount(tree.as_fd(), target)
        .map_err(LaunchError::sys("move_mount of the idmapped image"))
}

/// Overlay of `lowers` (read-only, top first) and `upper`/`work` (the sandbox's persistent
/// layer) at `target`.
pub(crate) fn overlay(
    sys: &dyn Syscalls,
    lowers: &[std::path::PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), LaunchError> {
    let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    sys.mount(
        Some(Path::new("overlay")),
        target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(LaunchError::sys("mount overlay root"))
}

/// Loop-mounts the ext4 image `image` at `target` (nodev, nosuid) and makes sure `upper/`
/// (0755) and `work/` (0700) exist on it, owned by `owner` (sandbox root). Runs in the
/// launcher's private mount namespace: the mount never shows on the host, and the loop device
/// (autoclear) is detached once the last namespace holding the mount is gone.
pub(crate) fn disk(
    sys: &dyn Syscalls,
    image: &Path,
    target: &Path,
    owner: u32,
) -> Result<(), LaunchError> {
    mount_point(sys, target, "create the disk mount point")?;
    let (dev, keep) = sys
        .loop_attach(image)
        .map_err(LaunchError::sys("attach the disk image"))?;
    sys.mount(
        Some(&dev),
        target,
        Some("ext4"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None,
    )
    .map_err(LaunchError::sys("mount the disk image"))?;
    // The mount holds the device now; with autoclear, closing ours leaves it to the mount.
    drop(keep);
    for (name, mode) in [("upper", 0o755), ("work", 0o700)] {
        let dir = target.join(name);
        match sys.lstat(&dir) {
            Ok(FileKind::Dir) => continue,
            Ok(_) => {
                return Err(LaunchError::sys("create the writable layer")(
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is not a directory", dir.display()),
                    ),
                ));
            }
            Err(_) => {}
        }
        sys.mkdir(&dir, mode)
            .map_err(LaunchError::sys("create the writable layer"))?;
        sys.chown(&dir, owner)
            .map_err(LaunchError::sys("chown the writable layer"))?;
    }
    Ok(())
}

/// Host device nodes bind-mounted into the sandbox's /dev.
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Symlinks of the sandbox's /dev.
const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Binds the host's `run_dir` read-only (and nosuid, nodev, noexec) at `<root>/run/sandpit`.
/// Runs in the launcher as host root, so the sandbox's mount namespace gets the mount locked:
/// it can neither unmount it nor make it writable, and the host dir (root-owned) stays out of
/// its reach. If the sandbox replaced `/run` or `/run/sandpit` in its writable layer by something
/// other than a directory, nothing is mounted (the sandbox only loses egress) and the log says so.
pub(crate) fn bind_run_dir(
    sys: &dyn Syscalls,
    run_dir: &Path,
    root: &Path,
    log: &fs::File,
) -> Result<(), LaunchError> {
    let target = root.join("run/sandpit");
    for (dir, stage) in [
        (root.join("run"), "mkdir /run"),
        (target.clone(), "mkdir /run/sandpit"),
    ] {
        if let Err(e) = mount_point(sys, &dir, stage) {
            let mut out = log;
            let _ = writeln!(
                out,
                "sandpit launch: /run/sandpit not mounted: {}",
                e.full_message()
            );
            return Ok(());
        }
    }
    sys.mount(Some(run_dir), &target, None, MsFlags::MS_BIND, None)
        .map_err(LaunchError::sys("bind the run dir"))?;
    remount_read_only(sys, &target, "remount the run dir read-only")
}

/// Makes the bind mount at `target` read-only, nosuid, nodev and noexec.
fn remount_read_only(
    sys: &dyn Syscalls,
    target: &Path,
    stage: &'static str,
) -> Result<(), LaunchError> {
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    sys.mount(None, target, None, flags, None)
        .map_err(LaunchError::sys(stage))
}

/// Directory of the shared tmpfs that masks directories (see [`mask_dirs`]).
pub(crate) const EMPTY_DIR: &str = "empty";

/// Makes `dir` in the shared tmpfs (owned by sandbox root, whatever the umask).
fn shared_dir(
    sys: &dyn Syscalls,
    dir: &Path,
    mode: u32,
    owner: u32,
    stage: &'static str,
) -> Result<(), LaunchError> {
    sys.mkdir(dir, mode).map_err(LaunchError::sys(stage))?;
    sys.chmod(dir, mode).map_err(LaunchError::sys(stage))?;
    sys.chown(dir, owner).map_err(LaunchError::sys(stage))
}

/// The sandbox's one tmpfs, mounted at `shared` (a host mount point, in the launcher's private
/// mount namespace; the sandbox init loses it at pivot_root). Its directories are bound where
/// the sandbox sees them: `dev/` at /dev (with /dev/shm a sticky directory of it), `sys/` at
/// /sys when the sandbox gets no sysfs (read-only: the mount points of its cgroup views), and
/// `empty/` over the masked directories of /proc. One superblock where there were up to seven
/// (tmpfs /dev, tmpfs /dev/shm, sysfs, a tmpfs for the cgroup views, a tmpfs per masked
/// directory): the kernel's reclaim walks every superblock's shrinker for every memory cgroup,
/// which made each sandbox's cost grow with the number of live ones.
pub(crate) fn shared_tmpfs(
    sys: &dyn Syscalls,
    shared: &Path,
    owner: u32,
) -> Result<(), LaunchError> {
    // /dev (1 MiB before) and /dev/shm (64 MiB before) share one size limit now.
    let opts = format!("mode=755,size=65m,nr_inodes=65536,uid={owner},gid={owner}");
    sys.mount(
        Some(Path::new("sandpit")),
        shared,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    )
    .map_err(LaunchError::sys("mount the sandbox's tmpfs"))?;
    shared_dir(
        sys,
        &shared.join(EMPTY_DIR),
        0o555,
        owner,
        "mkdir the masking dir",
    )
}

/// /dev from the shared tmpfs: the usual nodes (bound from the host), links and /dev/shm.
pub(crate) fn prepare_dev(
    sys: &dyn Syscalls,
    root: &Path,
    shared: &Path,
    owner: u32,
) -> Result<(), LaunchError> {
    let dev = root.join("dev");
    mount_point(sys, &dev, "mkdir /dev")?;
    let staged = shared.join("dev");
    shared_dir(sys, &staged, 0o755, owner, "mkdir the /dev tree")?;
    sys.mount(Some(&staged), &dev, None, MsFlags::MS_BIND, None)
        .map_err(LaunchError::sys("bind /dev"))?;
    for node in DEV_NODES {
        let target = dev.join(node);
        sys.touch(&target)
            .map_err(LaunchError::sys("create /dev node placeholder"))?;
        let source = Path::new("/dev").join(node);
        sys.mount(Some(&source), &target, None, MsFlags::MS_BIND, None)
            .map_err(LaunchError::sys("bind a /dev node"))?;
    }
    for (name, to) in DEV_LINKS {
        sys.symlink(Path::new(to), &dev.join(name))
            .map_err(LaunchError::sys("symlink in /dev"))?;
    }
    mount_point(sys, &dev.join("pts"), "mkdir /dev/pts")?;
    let shm = dev.join("shm");
    shared_dir(sys, &shm, 0o1777, owner, "mkdir /dev/shm")?;
    // A bind of itself, to add nodev (the rest of /dev holds the bound host nodes).
    sys.mount(Some(&shm), &shm, None, MsFlags::MS_BIND, None)
        .map_err(LaunchError::sys("bind /dev/shm"))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    sys.mount(None, &shm, None, flags, None)
        .map_err(LaunchError::sys("remount /dev/shm nodev"))
}

/// /sys for a sandbox without sysfs: a read-only tree of the shared tmpfs holding
/// `fs/cgroup` and the mount points of its cgroup views (bound by [`cgroup_fs`] in the
/// sandbox init). Bound by host root, so the sandbox's mount namespace gets it locked
/// read-only. If the sandbox replaced `/sys` by something other than a directory, nothing is
/// mounted (as sysfs was skipped before).
pub(crate) fn sys_tree(
    sys: &dyn Syscalls,
    root: &Path,
    shared: &Path,
    owner: u32,
    views: &[CgroupFsMount],
) -> Result<(), LaunchError> {
    let staged = shared.join("sys");
    let cgroup = staged.join("fs/cgroup");
    for dir in [&staged, &staged.join("fs"), &cgroup] {
        shared_dir(sys, dir, 0o755, owner, "mkdir the /sys tree")?;
    }
    for view in views.iter().filter(|v| !v.dir.is_empty()) {
        shared_dir(
            sys,
            &cgroup.join(&view.dir),
            0o755,
            owner,
            "mkdir a cgroup mount point",
        )?;
    }
    let target = root.join("sys");
    if mount_point(sys, &target, "mkdir /sys").is_err() {
        return Ok(());
    }
    sys.mount(Some(&staged), &target, None, MsFlags::MS_BIND, None)
        .map_err(LaunchError::sys("bind /sys"))?;
    remount_read_only(sys, &target, "remount /sys read-only")
}

/// Inside the sandbox's mount namespace, before pivot_root: an unlocked bind of the root onto
/// itself (pivot_root refuses mounts inherited from a more privileged namespace), then proc,
/// sysfs (when `sysfs`) and a private devpts.
pub(crate) fn mount_kernel_fs(
    sys: &dyn Syscalls,
    root: &Path,
    sysfs: bool,
) -> Result<(), LaunchError> {
    sys.mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(LaunchError::sys("bind the root onto itself"))?;
    let proc_dir = root.join("proc");
    mount_point(sys, &proc_dir, "mkdir /proc")?;
    let fs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        fs_flags,
        None,
    )
    .map_err(LaunchError::sys("mount /proc"))?;
    let sys_dir = root.join("sys");
    if sysfs && mount_point(sys, &sys_dir, "mkdir /sys").is_ok() {
        // Optional: sysfs needs a netns owned by our userns and an unobstructed host /sys.
        let _ = sys.mount(
            Some(Path::new("sysfs")),
            &sys_dir,
            Some("sysfs"),
            fs_flags | MsFlags::MS_RDONLY,
            None,
        );
    }
    sys.mount(
        Some(Path::new("devpts")),
        &root.join("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620,gid=5"),
    )
    .map_err(LaunchError::sys("mount /dev/pts"))
}

/// Inside the sandbox's mount and cgroup namespaces, before pivot_root: its own cgroup
/// directories, bound read-only under `/sys/fs/cgroup` (the v1 mount points are in the
/// read-only /sys tree, or, over a sysfs, on a small read-only tmpfs), so it sees its limits and usage and nothing of the host — the view a cgroup
/// mount in its cgroup namespace would give, without a new superblock per sandbox and
/// hierarchy (the kernel compares each new cgroup superblock with every existing one, which
/// made creation slow down with the number of live sandboxes). Best effort: a hierarchy that
/// cannot be bound is skipped and logged (the sandbox only loses the view).
pub(crate) fn cgroup_fs(
    sys: &dyn Syscalls,
    root: &Path,
    mounts: &[CgroupFsMount],
    log: &fs::File,
    sysfs: bool,
) -> Result<(), LaunchError> {
    if mounts.is_empty() {
        return Ok(());
    }
    let target = root.join("sys/fs/cgroup");
    if sys.stat(&target).ok() != Some(FileKind::Dir) {
        mount_point(sys, &root.join("sys/fs"), "mkdir /sys/fs")?;
        mount_point(sys, &target, "mkdir /sys/fs/cgroup")?;
    }
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Without sysfs, the mount points are already in the read-only /sys tree ([`sys_tree`]).
    let needs_dirs = sysfs && mounts.iter().any(|m| !m.dir.is_empty());
    if needs_dirs {
        sys.mount(
            Some(Path::new("cgroup-views")),
            &target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755,size=64k"),
        )
        .map_err(LaunchError::sys("mount tmpfs /sys/fs/cgroup"))?;
    }
    for m in mounts {
        let dir = if m.dir.is_empty() {
            target.clone()
        } else {
            target.join(&m.dir)
        };
        let mounted = mount_point(sys, &dir, "mkdir a cgroup mount point")
            .and_then(|()| {
                sys.mount(Some(&m.source), &dir, None, MsFlags::MS_BIND, None)
                    .map_err(LaunchError::sys("bind a cgroup directory"))
            })
            .and_then(|()| {
                // A bind takes the flags of the mount it comes from: read-only needs a remount.
                sys.mount(
                    None,
                    &dir,
                    None,
                    flags | MsFlags::MS_REMOUNT | MsFlags::MS_BIND,
                    None,
                )
                .map_err(LaunchError::sys("remount a cgroup directory read-only"))
            });
        if let Err(e) = mounted {
            // Never leave a writable view behind.
            let _ = sys.umount_detach(&dir);
            let mut out = log;
            let _ = writeln!(
                out,
                "sandpit launch: /sys/fs/cgroup/{} not mounted: {}",
                m.dir,
                e.full_message()
            );
        }
    }
    if needs_dirs {
        sys.mount(None, &target, None, flags | MsFlags::MS_REMOUNT, None)
            .map_err(LaunchError::sys("remount /sys/fs/cgroup read-only"))?;
    }
    Ok(())
}

/// Binds a file of the sandbox's own over `/proc/meminfo` (lxcfs-style masking without FUSE):
/// the agent rewrites it from the memory cgroup, so tools see the sandbox's limit as MemTotal.
/// It starts as a copy of the host's file, so a sandbox whose agent never refreshes it still
/// reads a well-formed file.
pub(crate) fn meminfo_view(sys: &dyn Syscalls, root: &Path) -> Result<(), LaunchError> {
    let view = root.join(MEMINFO_VIEW.trim_start_matches('/'));
    if let Some(dir) = view.parent() {
        mount_point(sys, dir, "mkdir the meminfo view dir")?;
    }
    let proc_meminfo = root.join("proc/meminfo");
    let host = sys
        .read_file(&proc_meminfo)
        .map_err(LaunchError::sys("read /proc/meminfo"))?;
    sys.write_file(&view, &host)
        .map_err(LaunchError::sys("write the meminfo view"))?;
    sys.mount(Some(&view), &proc_meminfo, None, MsFlags::MS_BIND, None)
        .map_err(LaunchError::sys("bind the meminfo view over /proc/meminfo"))
}

/// `pivot_root(".", ".")` + lazy unmount of the old root: no host path stays reachable.
pub(crate) fn pivot_into(sys: &dyn Syscalls, root: &Path) -> Result<(), LaunchError> {
    let here = Path::new(".");
    sys.chdir(root)
        .map_err(LaunchError::sys("chdir to the new root"))?;
    sys.pivot_root(here, here)
        .map_err(LaunchError::sys("pivot_root"))?;
    sys.umount_detach(here)
        .map_err(LaunchError::sys("detach the old root"))?;
    sys.chdir(Path::new("/"))
        .map_err(LaunchError::sys("chdir /"))
}

/// Paths made read-only inside the sandbox (as Docker does).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];
/// Paths hidden inside the sandbox: files get /dev/null bound over them, directories a
/// read-only bind of the shared tmpfs's empty directory.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
];

/// Before pivot_root (the shared tmpfs is out of reach after it): binds `empty` read-only
/// over every directory of [`MASKED_PATHS`] under `root`; missing paths are skipped. One empty
/// directory for all of them, where each had its own tmpfs (a superblock) before.
pub(crate) fn mask_dirs(sys: &dyn Syscalls, root: &Path, empty: &Path) -> Result<(), LaunchError> {
    for p in MASKED_PATHS {
        let path = root.join(p.trim_start_matches('/'));
        if sys.lstat(&path).ok() != Some(FileKind::Dir) {
            continue;
        }
        sys.mount(Some(empty), &path, None, MsFlags::MS_BIND, None)
            .map_err(LaunchError::sys("mask a directory"))?;
        remount_read_only(sys, &path, "remount a masked directory read-only")?;
    }
    Ok(())
}

/// Applies [`READONLY_PATHS`] and the files of [`MASKED_PATHS`] (after pivot_root; the
/// directories are masked by [`mask_dirs`] before it); missing paths are skipped.
pub(crate) fn mask_paths(sys: &dyn Syscalls) -> Result<(), LaunchError> {
    for p in READONLY_PATHS {
        let path = Path::new(p);
        if sys.stat(path).is_err() {
            continue;
        }
        sys.mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(LaunchError::sys("bind a read-only /proc path"))?;
        remount_read_only(sys, path, "remount a /proc path read-only")?;
    }
    for p in MASKED_PATHS {
        let path = Path::new(p);
        let Ok(kind) = sys.lstat(path) else {
            continue;
        };
        if kind == FileKind::Dir {
            continue;
        }
        let null = Path::new("/dev/null");
        sys.mount(Some(null), path, None, MsFlags::MS_BIND, None)
            .map_err(LaunchError::sys("mask a path"))?;
    }
    Ok(())
}

/// Creates `dir` unless it exists (called after pivot_root, so links resolve inside the
/// sandbox, and sandbox root owns the result).
pub(crate) fn ensure_dir(sys: &dyn Syscalls, dir: &Path) -> io::Result<()> {
    match sys.mkdir(dir, 0o755) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}
