//! The sandbox's file system: idmapped image, overlay root, /dev, proc/sys/devpts, pivot_root and
//! the /proc masks. Host-side steps run in the launcher's private mount namespace (as host
//! root); the rest runs in the sandbox init, inside the user namespace.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::cgroup::CgroupFsMount;
use crate::launch::{LaunchError, MEMINFO_VIEW};
use crate::sys;

const NONE: Option<&str> = None;

/// A directory to mount on: created if missing. A symlink or a non-directory (possibly planted
/// in the image or the writable layer) is refused, so no step follows a link the sandbox
/// controls.
fn mount_point(path: &Path, stage: &'static str) -> Result<(), LaunchError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(LaunchError::sys(stage)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", path.display()),
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .map_err(LaunchError::sys(stage)),
        Err(e) => Err(LaunchError::sys(stage)(e)),
    }
}

fn touch(path: &Path) -> Result<(), LaunchError> {
    match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) => Err(LaunchError::sys("create /dev node placeholder")(e)),
    }
}

/// Makes every mount of the (new, private) mount namespace private, so nothing mounted here
/// propagates to the host and vice versa.
pub(crate) fn make_rprivate() -> Result<(), LaunchError> {
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(LaunchError::sys("make / rprivate"))
}

/// Read-only bind of `image` at `target` whose owners are shifted by `userns`'s map, so the
/// image's root-owned files appear owned by sandbox root.
pub(crate) fn idmapped_bind(
    image: &Path,
    target: &Path,
    userns: impl AsFd,
) -> Result<(), LaunchError> {
    let tree =
        sys::open_tree_clone(image).map_err(LaunchError::sys("open_tree of the image rootfs"))?;
    sys::mount_setattr_idmap(
        tree.as_fd(),
        libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_RDONLY,
        userns.as_fd(),
    )
    .map_err(LaunchError::sys("mount_setattr(MOUNT_ATTR_IDMAP)"))?;
    sys::move_mount_to(tree.as_fd(), target)
        .map_err(LaunchError::sys("move_mount of the idmapped image"))
}

/// Overlay of `lower` (read-only) and `upper`/`work` (the sandbox's persistent layer) at `target`.
pub(crate) fn overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), LaunchError> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
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
pub(crate) fn disk(image: &Path, target: &Path, owner: u32) -> Result<(), LaunchError> {
    mount_point(target, "create the disk mount point")?;
    let (dev, keep) = sys::loop_attach(image).map_err(LaunchError::sys("attach the disk image"))?;
    mount(
        Some(&dev),
        target,
        Some("ext4"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        NONE,
    )
    .map_err(LaunchError::sys("mount the disk image"))?;
    // The mount holds the device now; with autoclear, closing ours leaves it to the mount.
    drop(keep);
    for (name, mode) in [("upper", 0o755), ("work", 0o700)] {
        let dir = target.join(name);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => continue,
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
        fs::DirBuilder::new()
            .mode(mode)
            .create(&dir)
            .map_err(LaunchError::sys("create the writable layer"))?;
        std::os::unix::fs::chown(&dir, Some(owner), Some(owner))
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
pub(crate) fn bind_run_dir(run_dir: &Path, root: &Path, log: &fs::File) -> Result<(), LaunchError> {
    let target = root.join("run/sandpit");
    for (dir, stage) in [
        (root.join("run"), "mkdir /run"),
        (target.clone(), "mkdir /run/sandpit"),
    ] {
        if let Err(e) = mount_point(&dir, stage) {
            let mut out = log;
            let _ = writeln!(
                out,
                "sandpit launch: /run/sandpit not mounted: {}",
                e.full_message()
            );
            return Ok(());
        }
    }
    mount(Some(run_dir), &target, NONE, MsFlags::MS_BIND, NONE)
        .map_err(LaunchError::sys("bind the run dir"))?;
    remount_read_only(&target, "remount the run dir read-only")
}

/// Makes the bind mount at `target` read-only, nosuid, nodev and noexec.
fn remount_read_only(target: &Path, stage: &'static str) -> Result<(), LaunchError> {
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(NONE, target, NONE, flags, NONE).map_err(LaunchError::sys(stage))
}

/// A small tmpfs /dev with the usual nodes (bound from the host), links and /dev/shm.
pub(crate) fn prepare_dev(root: &Path, owner: u32) -> Result<(), LaunchError> {
    let dev = root.join("dev");
    mount_point(&dev, "mkdir /dev")?;
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let opts = format!("mode=755,size=1m,nr_inodes=4096,uid={owner},gid={owner}");
    mount(
        Some("sandpit-dev"),
        &dev,
        Some("tmpfs"),
        tmpfs_flags,
        Some(opts.as_str()),
    )
    .map_err(LaunchError::sys("mount tmpfs /dev"))?;
    for node in DEV_NODES {
        let target = dev.join(node);
        touch(&target)?;
        let source = Path::new("/dev").join(node);
        mount(Some(&source), &target, NONE, MsFlags::MS_BIND, NONE)
            .map_err(LaunchError::sys("bind a /dev node"))?;
    }
    for (name, to) in DEV_LINKS {
        symlink(to, dev.join(name)).map_err(LaunchError::sys("symlink in /dev"))?;
    }
    mount_point(&dev.join("pts"), "mkdir /dev/pts")?;
    let shm = dev.join("shm");
    mount_point(&shm, "mkdir /dev/shm")?;
    let opts = format!("mode=1777,size=64m,uid={owner},gid={owner}");
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    )
    .map_err(LaunchError::sys("mount /dev/shm"))
}

/// Inside the sandbox's mount namespace, before pivot_root: an unlocked bind of the root onto
/// itself (pivot_root refuses mounts inherited from a more privileged namespace), then proc,
/// sysfs and a private devpts.
pub(crate) fn mount_kernel_fs(root: &Path) -> Result<(), LaunchError> {
    mount(
        Some(root),
        root,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .map_err(LaunchError::sys("bind the root onto itself"))?;
    let proc_dir = root.join("proc");
    mount_point(&proc_dir, "mkdir /proc")?;
    let fs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), &proc_dir, Some("proc"), fs_flags, NONE)
        .map_err(LaunchError::sys("mount /proc"))?;
    let sys_dir = root.join("sys");
    if mount_point(&sys_dir, "mkdir /sys").is_ok() {
        // Optional: sysfs needs a netns owned by our userns and an unobstructed host /sys.
        let _ = mount(
            Some("sysfs"),
            &sys_dir,
            Some("sysfs"),
            fs_flags | MsFlags::MS_RDONLY,
            NONE,
        );
    }
    mount(
        Some("devpts"),
        &root.join("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620,gid=5"),
    )
    .map_err(LaunchError::sys("mount /dev/pts"))
}

/// Inside the sandbox's mount and cgroup namespaces, before pivot_root: its own cgroups,
/// read-only, under `/sys/fs/cgroup` (a small read-only tmpfs holds the v1 mount points). The
/// cgroup namespace makes each hierarchy's root the sandbox's cgroup, so it sees its limits
/// and usage and nothing of the host. Best effort: a hierarchy that cannot be mounted is
/// skipped and logged (the sandbox only loses the view).
pub(crate) fn cgroup_fs(
    root: &Path,
    mounts: &[CgroupFsMount],
    log: &fs::File,
) -> Result<(), LaunchError> {
    if mounts.is_empty() {
        return Ok(());
    }
    let target = root.join("sys/fs/cgroup");
    if !target.is_dir() {
        mount_point(&root.join("sys/fs"), "mkdir /sys/fs")?;
        mount_point(&target, "mkdir /sys/fs/cgroup")?;
    }
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let needs_dirs = mounts.iter().any(|m| !m.dir.is_empty());
    if needs_dirs {
        mount(
            Some("cgroup-views"),
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
        let mounted = mount_point(&dir, "mkdir a cgroup mount point").and_then(|()| {
            mount(
                Some("cgroup"),
                &dir,
                Some(m.fstype.as_str()),
                flags,
                Some(m.options.as_str()),
            )
            .map_err(LaunchError::sys("mount a cgroup hierarchy"))
        });
        if let Err(e) = mounted {
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
        mount(NONE, &target, NONE, flags | MsFlags::MS_REMOUNT, NONE)
            .map_err(LaunchError::sys("remount /sys/fs/cgroup read-only"))?;
    }
    Ok(())
}

/// Binds a file of the sandbox's own over `/proc/meminfo` (lxcfs-style masking without FUSE):
/// the agent rewrites it from the memory cgroup, so tools see the sandbox's limit as MemTotal.
/// It starts as a copy of the host's file, so a sandbox whose agent never refreshes it still
/// reads a well-formed file.
pub(crate) fn meminfo_view(root: &Path) -> Result<(), LaunchError> {
    let view = root.join(MEMINFO_VIEW.trim_start_matches('/'));
    if let Some(dir) = view.parent() {
        mount_point(dir, "mkdir the meminfo view dir")?;
    }
    let proc_meminfo = root.join("proc/meminfo");
    let host = fs::read(&proc_meminfo).map_err(LaunchError::sys("read /proc/meminfo"))?;
    fs::write(&view, host).map_err(LaunchError::sys("write the meminfo view"))?;
    mount(Some(&view), &proc_meminfo, NONE, MsFlags::MS_BIND, NONE)
        .map_err(LaunchError::sys("bind the meminfo view over /proc/meminfo"))
}

/// `pivot_root(".", ".")` + lazy unmount of the old root: no host path stays reachable.
pub(crate) fn pivot_into(root: &Path) -> Result<(), LaunchError> {
    nix::unistd::chdir(root).map_err(LaunchError::sys("chdir to the new root"))?;
    nix::unistd::pivot_root(".", ".").map_err(LaunchError::sys("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(LaunchError::sys("detach the old root"))?;
    nix::unistd::chdir("/").map_err(LaunchError::sys("chdir /"))
}

/// Paths made read-only inside the sandbox (as Docker does).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];
/// Paths hidden inside the sandbox: files get /dev/null bound over them, directories an empty
/// read-only tmpfs.
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

/// Applies [`READONLY_PATHS`] and [`MASKED_PATHS`] (after pivot_root); missing paths are skipped.
pub(crate) fn mask_paths() -> Result<(), LaunchError> {
    for p in READONLY_PATHS {
        let path = Path::new(p);
        if !path.exists() {
            continue;
        }
        mount(
            Some(path),
            path,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .map_err(LaunchError::sys("bind a read-only /proc path"))?;
        remount_read_only(path, "remount a /proc path read-only")?;
    }
    for p in MASKED_PATHS {
        let path = Path::new(p);
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        let res = if meta.is_dir() {
            mount(
                Some("masked"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )
        } else {
            mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE)
        };
        res.map_err(LaunchError::sys("mask a path"))?;
    }
    Ok(())
}

/// Creates `dir` unless it exists (called after pivot_root, so links resolve inside the
/// sandbox, and sandbox root owns the result).
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}
