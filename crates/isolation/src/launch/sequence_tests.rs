//! The launch sequence, recorded: order and arguments of every mount, map, namespace switch
//! and pivot for the main configurations, checked without privileges. The root tests of
//! `sandpit-runtime` and `sandpit-server` prove that the same sequence works on a real host.

use std::io::{Read, Seek};
use std::path::PathBuf;

use super::*;
use crate::cgroup::CgroupFsMount;
use crate::syscalls::FileKind;
use crate::syscalls::recording::Recording;

/// The launch tests' config with short paths: image `/img`, sandbox dir `/sb`.
fn config() -> LaunchConfig {
    LaunchConfig {
        image_rootfs: PathBuf::from("/img"),
        sandbox_dir: PathBuf::from("/sb"),
        ..super::tests::config()
    }
}

/// A log file the test can read back.
fn log() -> fs::File {
    tempfile::tempfile().unwrap()
}

fn read_log(mut log: &fs::File) -> String {
    let mut text = String::new();
    log.rewind().unwrap();
    log.read_to_string(&mut text).unwrap();
    text
}

fn host_side(sys: &Recording, cfg: &LaunchConfig) -> Result<(), LaunchError> {
    build_host_side(sys, cfg, &log())
}

/// The image's rootfs as the overlay shows it on a first start: /dev, /proc, /sys exist.
fn image_dirs(sys: Recording) -> Recording {
    ["/sb/rootfs/dev", "/sb/rootfs/proc", "/sb/rootfs/sys"]
        .into_iter()
        .fold(sys, |sys, dir| sys.with(dir, FileKind::Dir))
}

/// Calls between the first that starts with `from` and the first after it that starts with
/// `to`, both included.
fn between(calls: &[String], from: &str, to: &str) -> Vec<String> {
    let start = calls
        .iter()
        .position(|c| c.starts_with(from))
        .unwrap_or_else(|| panic!("no {from:?} in {calls:#?}"));
    let len = calls[start..]
        .iter()
        .position(|c| c.starts_with(to))
        .unwrap_or_else(|| panic!("no {to:?} after {from:?} in {calls:#?}"));
    calls[start..=start + len].to_vec()
}

fn assert_calls(sys: &Recording, expected: &[&str]) {
    assert_eq!(sys.calls(), expected, "recorded:\n{:#?}", sys.calls());
}

/// The sandbox's one tmpfs, in the launcher's namespace, with the masking directory.
const SHARED: &[&str] = &[
    "mount sandpit /sb/shared tmpfs MS_NOSUID|MS_NOEXEC mode=755,size=65m,nr_inodes=65536,uid=100000,gid=100000",
    "mkdir /sb/shared/empty 555",
    "chmod /sb/shared/empty 555",
    "chown /sb/shared/empty 100000",
];

/// The /dev of every sandbox: a directory of the shared tmpfs owned by sandbox root, host
/// nodes bound on placeholders, the usual links, /dev/shm a sticky directory bound nodev.
const DEV: &[&str] = &[
    "mkdir /sb/shared/dev 755",
    "chmod /sb/shared/dev 755",
    "chown /sb/shared/dev 100000",
    "mount /sb/shared/dev /sb/rootfs/dev - MS_BIND -",
    "touch /sb/rootfs/dev/null",
    "mount /dev/null /sb/rootfs/dev/null - MS_BIND -",
    "touch /sb/rootfs/dev/zero",
    "mount /dev/zero /sb/rootfs/dev/zero - MS_BIND -",
    "touch /sb/rootfs/dev/full",
    "mount /dev/full /sb/rootfs/dev/full - MS_BIND -",
    "touch /sb/rootfs/dev/random",
    "mount /dev/random /sb/rootfs/dev/random - MS_BIND -",
    "touch /sb/rootfs/dev/urandom",
    "mount /dev/urandom /sb/rootfs/dev/urandom - MS_BIND -",
    "touch /sb/rootfs/dev/tty",
    "mount /dev/tty /sb/rootfs/dev/tty - MS_BIND -",
    "symlink /sb/rootfs/dev/fd -> /proc/self/fd",
    "symlink /sb/rootfs/dev/stdin -> /proc/self/fd/0",
    "symlink /sb/rootfs/dev/stdout -> /proc/self/fd/1",
    "symlink /sb/rootfs/dev/stderr -> /proc/self/fd/2",
    "symlink /sb/rootfs/dev/ptmx -> pts/ptmx",
    "mkdir /sb/rootfs/dev/pts 755",
    "mkdir /sb/rootfs/dev/shm 1777",
    "chmod /sb/rootfs/dev/shm 1777",
    "chown /sb/rootfs/dev/shm 100000",
    "mount /sb/rootfs/dev/shm /sb/rootfs/dev/shm - MS_BIND -",
    "mount - /sb/rootfs/dev/shm - MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
];

/// /sys without sysfs: a read-only tree of the shared tmpfs, bound by host root.
const SYS: &[&str] = &[
    "mkdir /sb/shared/sys 755",
    "chmod /sb/shared/sys 755",
    "chown /sb/shared/sys 100000",
    "mkdir /sb/shared/sys/fs 755",
    "chmod /sb/shared/sys/fs 755",
    "chown /sb/shared/sys/fs 100000",
    "mkdir /sb/shared/sys/fs/cgroup 755",
    "chmod /sb/shared/sys/fs/cgroup 755",
    "chown /sb/shared/sys/fs/cgroup 100000",
    "mount /sb/shared/sys /sb/rootfs/sys - MS_BIND -",
    "mount - /sb/rootfs/sys - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
];

/// Entering the user namespace as its root, then the namespaces it owns.
const ENTER: &[&str] = &[
    "setgroups []",
    "setns /proc/4242/ns/user CLONE_NEWUSER",
    "setresgid 0",
    "setresuid 0",
    "unshare CLONE_NEWNS|CLONE_NEWCGROUP|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID|CLONE_NEWNET",
];

#[test]
fn host_side_of_the_default_image() {
    let sys = image_dirs(Recording::new());
    host_side(&sys, &config()).unwrap();
    let mut expected = vec![
        // The user namespace: maps written before anyone opens it, setgroups denied.
        "spawn userns holder",
        "write /proc/4242/uid_map \"0 100000 65536\\n\"",
        "write /proc/4242/setgroups \"deny\"",
        "write /proc/4242/gid_map \"0 100000 65536\\n\"",
        "open /proc/4242/ns/user",
        // Nothing below propagates to the host.
        "unshare CLONE_NEWNS",
        "mount - / - MS_REC|MS_PRIVATE -",
        "mkdir -p /sb/lower",
        "mkdir -p /sb/rootfs",
        "mkdir -p /sb/shared",
        // The image, read-only and shifted by the sandbox's map, under the writable overlay.
        "open_tree /img",
        "mount_setattr tree(/img) RDONLY|IDMAP userns=/proc/4242/ns/user",
        "move_mount tree(/img) /sb/lower",
        "mount overlay /sb/rootfs overlay MS_NODEV lowerdir=/sb/lower,upperdir=/sb/upper,workdir=/sb/work",
    ];
    expected.extend(SHARED);
    expected.extend(DEV);
    expected.extend(SYS);
    expected.extend(ENTER);
    assert_calls(&sys, &expected);
}

#[test]
fn host_side_with_sysfs_leaves_sys_to_the_init() {
    let sys = image_dirs(Recording::new());
    let mut cfg = config();
    cfg.sysfs = true;
    host_side(&sys, &cfg).unwrap();
    let calls = sys.calls();
    assert!(!calls.iter().any(|c| c.contains("/sys")), "{calls:#?}");
    assert_eq!(
        between(&calls, "mount sandpit ", "setgroups").len(),
        SHARED.len() + DEV.len() + 1
    );
}

#[test]
fn host_side_makes_the_cgroup_mount_points_in_the_read_only_sys_tree() {
    let sys = image_dirs(Recording::new());
    let mut cfg = config();
    cfg.cgroup_mounts = vec![
        cgroup_mount("memory", "/cg/memory/sp/sb"),
        cgroup_mount("cpu,cpuacct", "/cg/cpu,cpuacct/sp/sb"),
    ];
    host_side(&sys, &cfg).unwrap();
    assert_eq!(
        between(
            &sys.calls(),
            "mkdir /sb/shared/sys/fs/cgroup ",
            "mount - /sb/rootfs/sys "
        ),
        [
            "mkdir /sb/shared/sys/fs/cgroup 755",
            "chmod /sb/shared/sys/fs/cgroup 755",
            "chown /sb/shared/sys/fs/cgroup 100000",
            "mkdir /sb/shared/sys/fs/cgroup/memory 755",
            "chmod /sb/shared/sys/fs/cgroup/memory 755",
            "chown /sb/shared/sys/fs/cgroup/memory 100000",
            "mkdir /sb/shared/sys/fs/cgroup/cpu,cpuacct 755",
            "chmod /sb/shared/sys/fs/cgroup/cpu,cpuacct 755",
            "chown /sb/shared/sys/fs/cgroup/cpu,cpuacct 100000",
            "mount /sb/shared/sys /sb/rootfs/sys - MS_BIND -",
            "mount - /sb/rootfs/sys - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
        ]
    );
}

#[test]
fn sys_over_a_planted_symlink_is_not_mounted() {
    let sys = image_dirs(Recording::new()).with("/sb/rootfs/sys", FileKind::Symlink);
    host_side(&sys, &config()).unwrap();
    let calls = sys.calls();
    assert!(
        !calls.iter().any(|c| c.contains("/sb/rootfs/sys")),
        "{calls:#?}"
    );
}

#[test]
fn snapshot_layers_are_idmapped_from_their_owner_and_stacked_above_the_image() {
    let sys = image_dirs(Recording::new());
    let mut cfg = config();
    // Two layers of another sandbox (range 165536) and one of this sandbox's own.
    cfg.layers = vec![
        LayerMount {
            path: PathBuf::from("/layers/c/tree"),
            owner_base: 100_000,
        },
        LayerMount {
            path: PathBuf::from("/layers/b/tree"),
            owner_base: 165_536,
        },
        LayerMount {
            path: PathBuf::from("/layers/a/tree"),
            owner_base: 165_536,
        },
    ];
    host_side(&sys, &cfg).unwrap();
    assert_eq!(
        between(&sys.calls(), "move_mount tree(/img)", "mount overlay"),
        [
            "move_mount tree(/img) /sb/lower",
            "mkdir -p /sb/lowers/0",
            "spawn userns holder",
            "write /proc/4242/uid_map \"100000 100000 65536\\n\"",
            "write /proc/4242/setgroups \"deny\"",
            "write /proc/4242/gid_map \"100000 100000 65536\\n\"",
            "open /proc/4242/ns/user",
            "open_tree /layers/c/tree",
            "mount_setattr tree(/layers/c/tree) RDONLY|IDMAP userns=/proc/4242/ns/user",
            "move_mount tree(/layers/c/tree) /sb/lowers/0",
            "mkdir -p /sb/lowers/1",
            // The other sandbox's files: its range shown as this sandbox's.
            "spawn userns holder",
            "write /proc/4242/uid_map \"165536 100000 65536\\n\"",
            "write /proc/4242/setgroups \"deny\"",
            "write /proc/4242/gid_map \"165536 100000 65536\\n\"",
            "open /proc/4242/ns/user",
            "open_tree /layers/b/tree",
            "mount_setattr tree(/layers/b/tree) RDONLY|IDMAP userns=/proc/4242/ns/user",
            "move_mount tree(/layers/b/tree) /sb/lowers/1",
            // Same owner: the namespace is reused.
            "mkdir -p /sb/lowers/2",
            "open_tree /layers/a/tree",
            "mount_setattr tree(/layers/a/tree) RDONLY|IDMAP userns=/proc/4242/ns/user",
            "move_mount tree(/layers/a/tree) /sb/lowers/2",
            "mount overlay /sb/rootfs overlay MS_NODEV lowerdir=/sb/lowers/0:/sb/lowers/1:/sb/lowers/2:/sb/lower,upperdir=/sb/upper,workdir=/sb/work",
        ]
    );
}

#[test]
fn cgroups_are_joined_by_writing_zero_to_each_procs_file() {
    let sys = Recording::new();
    let mut cfg = config();
    cfg.cgroup_procs = vec![
        PathBuf::from("/sys/fs/cgroup/memory/sandpit/sb/cgroup.procs"),
        PathBuf::from("/sys/fs/cgroup/pids/sandpit/sb/cgroup.procs"),
    ];
    join_cgroups(&sys, &cfg).unwrap();
    assert_calls(
        &sys,
        &[
            "write /sys/fs/cgroup/memory/sandpit/sb/cgroup.procs \"0\"",
            "write /sys/fs/cgroup/pids/sandpit/sb/cgroup.procs \"0\"",
        ],
    );
}

#[test]
fn disk_image_is_loop_mounted_and_holds_the_writable_layer() {
    let sys = image_dirs(Recording::new());
    let mut cfg = config();
    cfg.disk_image = Some(PathBuf::from("/sb/disk.img"));
    host_side(&sys, &cfg).unwrap();
    assert_eq!(
        between(&sys.calls(), "move_mount", "mount overlay"),
        [
            "move_mount tree(/img) /sb/lower",
            "mkdir /sb/disk 755",
            "loop_attach /sb/disk.img",
            "mount /dev/loop7 /sb/disk ext4 MS_NOSUID|MS_NODEV -",
            // First start: the layer's dirs are made on the new file system, for sandbox root.
            "mkdir /sb/disk/upper 755",
            "chown /sb/disk/upper 100000",
            "mkdir /sb/disk/work 700",
            "chown /sb/disk/work 100000",
            "mount overlay /sb/rootfs overlay MS_NODEV lowerdir=/sb/lower,upperdir=/sb/disk/upper,workdir=/sb/disk/work",
        ]
    );
}

#[test]
fn disk_image_keeps_an_existing_writable_layer() {
    let sys = image_dirs(Recording::new())
        .with("/sb/disk", FileKind::Dir)
        .with("/sb/disk/upper", FileKind::Dir)
        .with("/sb/disk/work", FileKind::Dir);
    let mut cfg = config();
    cfg.disk_image = Some(PathBuf::from("/sb/disk.img"));
    host_side(&sys, &cfg).unwrap();
    assert_eq!(
        between(&sys.calls(), "loop_attach", "mount overlay"),
        [
            "loop_attach /sb/disk.img",
            "mount /dev/loop7 /sb/disk ext4 MS_NOSUID|MS_NODEV -",
            "mount overlay /sb/rootfs overlay MS_NODEV lowerdir=/sb/lower,upperdir=/sb/disk/upper,workdir=/sb/disk/work",
        ]
    );
}

#[test]
fn disk_image_with_a_planted_non_directory_layer_fails() {
    // The disk belongs to the sandbox: a file where upper/ should be must not be used.
    let sys = image_dirs(Recording::new()).with("/sb/disk/upper", FileKind::Symlink);
    let mut cfg = config();
    cfg.disk_image = Some(PathBuf::from("/sb/disk.img"));
    let err = host_side(&sys, &cfg).unwrap_err();
    assert!(
        err.to_string().contains("create the writable layer"),
        "{err}"
    );
    assert!(!sys.calls().iter().any(|c| c.starts_with("mount overlay")));
}

#[test]
fn run_dir_is_bound_read_only_by_host_root_before_dev() {
    let sys = image_dirs(Recording::new());
    let mut cfg = config();
    cfg.run_dir = Some(PathBuf::from("/var/lib/sandpit/run/sb"));
    host_side(&sys, &cfg).unwrap();
    assert_eq!(
        between(&sys.calls(), "mount overlay", "mount sandpit "),
        [
            "mount overlay /sb/rootfs overlay MS_NODEV lowerdir=/sb/lower,upperdir=/sb/upper,workdir=/sb/work",
            "mkdir /sb/rootfs/run 755",
            "mkdir /sb/rootfs/run/sandpit 755",
            "mount /var/lib/sandpit/run/sb /sb/rootfs/run/sandpit - MS_BIND -",
            "mount - /sb/rootfs/run/sandpit - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            SHARED[0],
        ]
    );
}

#[test]
fn run_dir_over_a_planted_symlink_is_not_mounted() {
    // A sandbox that replaced /run by a link to a host path must not get the bind there.
    let sys = image_dirs(Recording::new()).with("/sb/rootfs/run", FileKind::Symlink);
    let mut cfg = config();
    cfg.run_dir = Some(PathBuf::from("/var/lib/sandpit/run/sb"));
    let log = log();
    build_host_side(&sys, &cfg, &log).unwrap();
    let calls = sys.calls();
    assert!(
        !calls.iter().any(|c| c.contains("/run/sandpit")),
        "{calls:#?}"
    );
    assert!(calls.iter().any(|c| c.starts_with("unshare CLONE_NEWNS|")));
    let text = read_log(&log);
    assert!(text.contains("/run/sandpit not mounted"), "{text}");
}

#[test]
fn dev_over_a_planted_symlink_stops_the_launch() {
    let sys = Recording::new().with("/sb/rootfs/dev", FileKind::Symlink);
    let err = host_side(&sys, &config()).unwrap_err();
    assert_eq!(
        err.full_message(),
        "mkdir /dev failed: /sb/rootfs/dev exists and is not a directory"
    );
    assert!(!sys.calls().iter().any(|c| c.contains("/sb/rootfs/dev")));
    assert!(!sys.calls().iter().any(|c| c.starts_with("setns")));
}

#[test]
fn a_failed_step_stops_the_sequence_and_names_its_stage() {
    let sys = image_dirs(Recording::new()).fail_on("mount overlay");
    let err = host_side(&sys, &config()).unwrap_err();
    assert_eq!(
        err.full_message(),
        "mount overlay root failed: Operation not permitted (os error 1)"
    );
    let calls = sys.calls();
    assert!(
        calls.last().unwrap().starts_with("mount overlay"),
        "{calls:#?}"
    );
}

/// The image dirs the init side needs, and a host /proc as the fake sees it after the pivot.
fn init_ready() -> Recording {
    image_dirs(Recording::new())
        .with_file("/sb/rootfs/proc/meminfo", "MemTotal: 1 kB\n")
        .with("/proc/sys", FileKind::Dir)
        .with("/proc/kcore", FileKind::Other)
        .with("/proc/acpi", FileKind::Dir)
        .with("/sb/rootfs/proc/acpi", FileKind::Dir)
}

#[test]
fn init_side_with_sysfs_mounts_it_read_only_and_masks_its_firmware() {
    let sys = init_ready().with("/sb/rootfs/sys/firmware", FileKind::Dir);
    let mut cfg = config();
    cfg.sysfs = true;
    build_init_side(&sys, &cfg, &log()).unwrap();
    let calls = sys.calls();
    assert_eq!(
        between(&calls, "mount proc ", "mount devpts"),
        [
            "mount proc /sb/rootfs/proc proc MS_NOSUID|MS_NODEV|MS_NOEXEC -",
            "mount sysfs /sb/rootfs/sys sysfs MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC -",
            "mount devpts /sb/rootfs/dev/pts devpts MS_NOSUID|MS_NOEXEC newinstance,ptmxmode=0666,mode=620,gid=5",
        ]
    );
    assert_eq!(
        between(&calls, "mount /sb/shared/empty ", "sethostname"),
        [
            "mount /sb/shared/empty /sb/rootfs/proc/acpi - MS_BIND -",
            "mount - /sb/rootfs/proc/acpi - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "mount /sb/shared/empty /sb/rootfs/sys/firmware - MS_BIND -",
            "mount - /sb/rootfs/sys/firmware - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "sethostname sb",
        ]
    );
}

#[test]
fn init_side_mounts_kernel_fs_then_pivots_then_masks() {
    let sys = init_ready();
    let mut cfg = config();
    cfg.resolv_conf = Some("nameserver 10.0.0.1\n".into());
    build_init_side(&sys, &cfg, &log()).unwrap();
    assert_calls(
        &sys,
        &[
            // pivot_root refuses the locked overlay mount: an unlocked bind of it first.
            "mount /sb/rootfs /sb/rootfs - MS_BIND|MS_REC -",
            "mount proc /sb/rootfs/proc proc MS_NOSUID|MS_NODEV|MS_NOEXEC -",
            "mount devpts /sb/rootfs/dev/pts devpts MS_NOSUID|MS_NOEXEC newinstance,ptmxmode=0666,mode=620,gid=5",
            "mkdir /sb/rootfs/dev/.sandpit 755",
            "write /sb/rootfs/dev/.sandpit/meminfo \"MemTotal: 1 kB\\n\"",
            "mount /sb/rootfs/dev/.sandpit/meminfo /sb/rootfs/proc/meminfo - MS_BIND -",
            // Masked directories: the shared tmpfs's empty one, while it is reachable.
            "mount /sb/shared/empty /sb/rootfs/proc/acpi - MS_BIND -",
            "mount - /sb/rootfs/proc/acpi - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "sethostname sb",
            "link up lo",
            // No host path stays reachable.
            "chdir /sb/rootfs",
            "pivot_root . .",
            "umount -l .",
            "chdir /",
            // Masks apply to the sandbox's own /proc, after the pivot; missing paths skipped.
            "mount /proc/sys /proc/sys - MS_BIND|MS_REC -",
            "mount - /proc/sys - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "mount /dev/null /proc/kcore - MS_BIND -",
            "write nofollow /etc/resolv.conf 644 \"nameserver 10.0.0.1\\n\"",
            "mkdir /workspace 755",
            "chdir /workspace",
        ],
    );
}

#[test]
fn init_side_falls_back_to_root_when_the_workspace_is_broken() {
    let sys = init_ready().fail_on("chdir /workspace");
    build_init_side(&sys, &config(), &log()).unwrap();
    let calls = sys.calls();
    assert_eq!(calls[calls.len() - 2..], ["chdir /workspace", "chdir /"]);
}

/// The recorded calls that touch `/sys/fs/cgroup`.
fn cgroup_calls(sys: &Recording) -> Vec<String> {
    sys.calls()
        .into_iter()
        .filter(|c| c.contains("/sys/fs/cgroup"))
        .collect()
}

fn cgroup_mount(dir: &str, source: &str) -> CgroupFsMount {
    CgroupFsMount {
        dir: dir.into(),
        source: source.into(),
    }
}

#[test]
fn cgroup_v1_views_over_a_sysfs_are_read_only_binds_under_a_tmpfs() {
    let sys = init_ready();
    let mut cfg = config();
    cfg.sysfs = true;
    cfg.cgroup_mounts = vec![
        cgroup_mount("memory", "/cg/memory/sp/sb"),
        cgroup_mount("pids", "/cg/pids/sp/sb"),
    ];
    build_init_side(&sys, &cfg, &log()).unwrap();
    assert_eq!(
        between(
            &sys.calls(),
            "mkdir /sb/rootfs/sys/fs ",
            "mount - /sb/rootfs/sys/fs/cgroup - "
        ),
        [
            "mkdir /sb/rootfs/sys/fs 755",
            "mkdir /sb/rootfs/sys/fs/cgroup 755",
            "mount cgroup-views /sb/rootfs/sys/fs/cgroup tmpfs MS_NOSUID|MS_NODEV|MS_NOEXEC mode=755,size=64k",
            "mkdir /sb/rootfs/sys/fs/cgroup/memory 755",
            "mount /cg/memory/sp/sb /sb/rootfs/sys/fs/cgroup/memory - MS_BIND -",
            "mount - /sb/rootfs/sys/fs/cgroup/memory - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "mkdir /sb/rootfs/sys/fs/cgroup/pids 755",
            "mount /cg/pids/sp/sb /sb/rootfs/sys/fs/cgroup/pids - MS_BIND -",
            "mount - /sb/rootfs/sys/fs/cgroup/pids - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "mount - /sb/rootfs/sys/fs/cgroup - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT -",
        ]
    );
    // Before the pivot, while the host's hierarchies are still reachable.
    let calls = sys.calls();
    let view = calls
        .iter()
        .position(|c| c.starts_with("mount /cg/memory/sp/sb "))
        .unwrap();
    let pivot = calls.iter().position(|c| c == "pivot_root . .").unwrap();
    assert!(view < pivot);
}

#[test]
fn cgroup_v1_views_without_sysfs_are_bound_on_the_prepared_mount_points() {
    // The host side made /sys/fs/cgroup/<dir> in the read-only /sys tree.
    let sys = init_ready()
        .with("/sb/rootfs/sys/fs/cgroup", FileKind::Dir)
        .with("/sb/rootfs/sys/fs/cgroup/memory", FileKind::Dir)
        .with("/sb/rootfs/sys/fs/cgroup/pids", FileKind::Dir);
    let mut cfg = config();
    cfg.cgroup_mounts = vec![
        cgroup_mount("memory", "/cg/memory/sp/sb"),
        cgroup_mount("pids", "/cg/pids/sp/sb"),
    ];
    build_init_side(&sys, &cfg, &log()).unwrap();
    let cgroup = cgroup_calls(&sys);
    // No tmpfs, no mkdir: nothing but the two read-only binds.
    assert_eq!(
        cgroup,
        [
            "mount /cg/memory/sp/sb /sb/rootfs/sys/fs/cgroup/memory - MS_BIND -",
            "mount - /sb/rootfs/sys/fs/cgroup/memory - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "mount /cg/pids/sp/sb /sb/rootfs/sys/fs/cgroup/pids - MS_BIND -",
            "mount - /sb/rootfs/sys/fs/cgroup/pids - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
        ]
    );
}

#[test]
fn cgroup_v2_view_is_bound_directly() {
    let sys = init_ready().with("/sb/rootfs/sys/fs/cgroup", FileKind::Dir);
    let mut cfg = config();
    cfg.cgroup_mounts = vec![cgroup_mount("", "/cg/sp/sb")];
    build_init_side(&sys, &cfg, &log()).unwrap();
    let cgroup = cgroup_calls(&sys);
    assert_eq!(
        cgroup,
        [
            "mount /cg/sp/sb /sb/rootfs/sys/fs/cgroup - MS_BIND -",
            "mount - /sb/rootfs/sys/fs/cgroup - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
        ]
    );
}

#[test]
fn a_cgroup_view_that_fails_is_skipped_and_logged() {
    let sys = init_ready().fail_on("mount /cg/memory/sp/sb /sb/rootfs/sys/fs/cgroup/memory");
    let mut cfg = config();
    cfg.cgroup_mounts = vec![
        cgroup_mount("memory", "/cg/memory/sp/sb"),
        cgroup_mount("pids", "/cg/pids/sp/sb"),
    ];
    let log = log();
    build_init_side(&sys, &cfg, &log).unwrap();
    let calls = sys.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("mount /cg/pids/sp/sb /sb/rootfs/sys/fs/cgroup/pids"))
    );
    assert!(calls.iter().any(|c| c == "pivot_root . ."));
    let text = read_log(&log);
    assert!(
        text.contains("/sys/fs/cgroup/memory not mounted: bind a cgroup directory failed"),
        "{text}"
    );
}

#[test]
fn a_cgroup_view_that_cannot_be_made_read_only_is_removed() {
    let sys = init_ready().fail_on("mount - /sb/rootfs/sys/fs/cgroup/memory ");
    let mut cfg = config();
    cfg.sysfs = true;
    cfg.cgroup_mounts = vec![cgroup_mount("memory", "/cg/memory/sp/sb")];
    let log = log();
    build_init_side(&sys, &cfg, &log).unwrap();
    assert_eq!(
        between(
            &sys.calls(),
            "mount /cg/memory/sp/sb ",
            "mount - /sb/rootfs/sys/fs/cgroup - "
        ),
        [
            "mount /cg/memory/sp/sb /sb/rootfs/sys/fs/cgroup/memory - MS_BIND -",
            "mount - /sb/rootfs/sys/fs/cgroup/memory - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND -",
            "umount -l /sb/rootfs/sys/fs/cgroup/memory",
            "mount - /sb/rootfs/sys/fs/cgroup - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT -",
        ]
    );
    let text = read_log(&log);
    assert!(
        text.contains("/sys/fs/cgroup/memory not mounted: remount a cgroup directory read-only"),
        "{text}"
    );
}
