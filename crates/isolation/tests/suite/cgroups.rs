//! Real cgroups on this host: limits written, processes killed by both kill paths, removal.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sandpit_isolation::cgroup::{self, CgroupLimits, CgroupManager};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("\n!!! SKIPPED: needs root !!!\n");
        false
    }
}

fn layout() -> (Vec<cgroup::CgroupMount>, Vec<cgroup::OwnCgroup>) {
    (
        cgroup::parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()),
        cgroup::parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap()),
    )
}

/// A group of its own per test: `cargo test` runs both tests at once in one process, and each
/// asserts that its group lists only its own sandbox.
fn group(test: &str) -> String {
    format!("sandpit-itest-{}-{test}", std::process::id())
}

/// Spawns `n` sleeping processes and moves them into the sandbox's cgroups.
fn spawn_members(mgr: &dyn CgroupManager, name: &str, n: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            let child = Command::new("sleep").arg("1000").spawn().unwrap();
            for procs in mgr.procs_files(name) {
                std::fs::write(procs, child.id().to_string()).unwrap();
            }
            child
        })
        .collect()
}

fn check_kill_and_remove(mgr: &dyn CgroupManager, name: &str) {
    let mut children = spawn_members(mgr, name, 3);
    let mut pids = mgr.pids(name).unwrap();
    pids.sort();
    let mut expected: Vec<u32> = children.iter().map(Child::id).collect();
    expected.sort();
    assert_eq!(pids, expected);
    // Busy while members live.
    assert!(mgr.remove(name).is_err());
    mgr.kill_all(name).unwrap();
    for child in &mut children {
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while mgr.remove(name).is_err() {
        assert!(Instant::now() < deadline, "cgroups not removable");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!mgr.exists(name));
    assert!(mgr.list().unwrap().is_empty());
}

fn cleanup_group(mgr: &dyn CgroupManager) {
    for dir in mgr.dirs("x") {
        let _ = std::fs::remove_dir(dir.parent().unwrap());
    }
}

#[test]
fn serial_detected_backend_limits_kill_remove() {
    if !root() {
        return;
    }
    let (mounts, own) = layout();
    let mgr = cgroup::from_layout(&mounts, &own, &group("detected")).unwrap();
    let limits = CgroupLimits {
        memory_bytes: Some(128 << 20),
        pids: Some(50),
        cpus: Some(0.25),
    };
    mgr.create("sb", &limits).unwrap();
    // Creating again (leftover from a crash) works and rewrites the limits.
    mgr.create(
        "sb",
        &CgroupLimits {
            pids: Some(60),
            ..limits
        },
    )
    .unwrap();
    let find = |f: &str| {
        mgr.dirs("sb")
            .into_iter()
            .map(|d| d.join(f))
            .find(|p| p.exists())
    };
    if mgr.kind() == "v1-hybrid" {
        let read = |f: &str| {
            std::fs::read_to_string(find(f).unwrap())
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(read("memory.limit_in_bytes"), (128u64 << 20).to_string());
        if find("memory.memsw.limit_in_bytes").is_some() {
            assert_eq!(
                read("memory.memsw.limit_in_bytes"),
                (128u64 << 20).to_string()
            );
        }
        assert_eq!(read("pids.max"), "60");
        assert_eq!(read("cpu.cfs_quota_us"), "25000");
    }
    assert_eq!(mgr.list().unwrap(), vec!["sb".to_string()]);
    check_kill_and_remove(mgr.as_ref(), "sb");
    cleanup_group(mgr.as_ref());
}

/// Without a cgroup2 mount, v1 kills through the freezer (freeze, SIGKILL, thaw).
#[test]
fn serial_v1_freezer_fallback_kills_everything() {
    if !root() {
        return;
    }
    let (mounts, own) = layout();
    let v1_only: Vec<_> = mounts.into_iter().filter(|m| !m.v2).collect();
    if !v1_only
        .iter()
        .any(|m| m.controllers.iter().any(|c| c == "memory"))
    {
        eprintln!("\n!!! SKIPPED: no cgroup v1 memory hierarchy !!!\n");
        return;
    }
    let mgr = cgroup::from_layout(&v1_only, &own, &group("freezer")).unwrap();
    assert_eq!(mgr.kind(), "v1-hybrid");
    assert!(
        !mgr.dirs("fz")
            .iter()
            .any(|d| d.starts_with("/sys/fs/cgroup/unified"))
    );
    mgr.create("fz", &CgroupLimits::default()).unwrap();
    check_kill_and_remove(mgr.as_ref(), "fz");
    cleanup_group(mgr.as_ref());
}
