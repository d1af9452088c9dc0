//! What a crashed server can leave on the host, read from /proc, /sys and the data dir: the
//! crash-safety test takes a snapshot of the server's process tree just before it kills it, and
//! after the restart lists everything of that run that is still there.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// A process, identified across pid reuse by its start time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub pid: u32,
    pub start_time: u64,
    pub comm: String,
}

/// (comm, state, ppid, start time) of a live process.
fn stat(pid: u32) -> Option<(String, char, u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state (field 3), ppid (4), ..., starttime (22).
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((comm, state, ppid, start_time))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn netns_inode(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The server's processes at one moment: every descendant (launchers, sandbox inits it reaps
/// as subreaper, slirp4netns, nft, mkfs) and the network namespaces they are in (other than
/// the server's own).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub procs: BTreeSet<Proc>,
    pub netns: BTreeSet<u64>,
}

impl Snapshot {
    /// Call with the server stopped (SIGSTOP) so its tree cannot change under the walk.
    pub fn of_descendants(root: u32) -> Snapshot {
        let mut children: HashMap<u32, Vec<(u32, String, u64)>> = HashMap::new();
        for pid in all_pids() {
            if let Some((comm, _, ppid, start)) = stat(pid) {
                children.entry(ppid).or_default().push((pid, comm, start));
            }
        }
        let own_netns = netns_inode(root);
        let mut snapshot = Snapshot::default();
        let mut stack = vec![root];
        while let Some(parent) = stack.pop() {
            for (pid, comm, start_time) in children.remove(&parent).unwrap_or_default() {
                if let Some(ns) = netns_inode(pid).filter(|ns| Some(*ns) != own_netns) {
                    snapshot.netns.insert(ns);
                }
                snapshot.procs.insert(Proc {
                    pid,
                    start_time,
                    comm,
                });
                stack.push(pid);
            }
        }
        snapshot
    }
}

/// What is left on the host of sandboxes whose names start with `prefix`, of processes in
/// `before`, and in `data_dir`. Empty means clean.
pub fn find(prefix: &str, data_dir: &Path, before: &Snapshot) -> Vec<String> {
    let mut found = Vec::new();
    let pids = all_pids();
    for p in &before.procs {
        // A zombie has released everything but its pid; reaping it is its new parent's job.
        if let Some((_, state, _, start)) = stat(p.pid)
            && start == p.start_time
            && state != 'Z'
        {
            found.push(format!(
                "process {} ({}) of the killed server",
                p.pid, p.comm
            ));
        }
    }
    for pid in &pids {
        let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        if cgroups.lines().any(|l| l.contains(&format!("/{prefix}")))
            && stat(*pid).is_some_and(|s| s.1 != 'Z')
        {
            found.push(format!("process {pid} in a sandbox cgroup:\n{cgroups}"));
        }
    }
    for pid in &pids {
        if let Some(ns) = netns_inode(*pid)
            && before.netns.contains(&ns)
        {
            found.push(format!(
                "network namespace {ns} still used by process {pid}"
            ));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = data_dir.to_string_lossy();
    for line in mountinfo.lines() {
        let nsfs_of_ours = line.contains(" nsfs ")
            && before
                .netns
                .iter()
                .any(|ns| line.contains(&format!("net:[{ns}]")));
        if line.contains(dir.as_ref()) || nsfs_of_ours {
            found.push(format!("mount: {line}"));
        }
    }
    found.extend(loop_devices_under(data_dir));
    found.extend(cgroups_named(prefix));
    found.extend(run_files(data_dir));
    found
}

/// Loop devices whose backing file is under `dir` (a sandbox's disk image).
fn loop_devices_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return found;
    };
    for entry in entries.flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing)
            && Path::new(file.trim()).starts_with(dir)
        {
            found.push(format!(
                "loop device {:?} on {}",
                entry.file_name(),
                file.trim()
            ));
        }
    }
    found
}

/// Cgroup directories (every v1 hierarchy and the unified one) named `prefix*`.
fn cgroups_named(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    let mut stack: Vec<(std::path::PathBuf, usize)> =
        mounts.flatten().map(|e| (e.path(), 0)).collect();
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(format!("cgroup {}", entry.path().display()));
            } else if depth < 5 {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    found
}

/// Files of a run that must not outlive it: agent sockets in `run/`, and anything in a
/// sandbox's run dir (`sandboxes/<id>/run`: egress socket, CA files), or a half-made disk image.
fn run_files(data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let listed = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|e| e.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for path in listed(&data_dir.join("run")) {
        found.push(format!("run file {}", path.display()));
    }
    for sandbox in listed(&data_dir.join("sandboxes")) {
        for path in listed(&sandbox.join("run")) {
            let kind = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_socket() => "socket",
                _ => "file",
            };
            found.push(format!("sandbox run-dir {kind} {}", path.display()));
        }
        let tmp = sandbox.join("disk.img.tmp");
        if tmp.exists() {
            found.push(format!("half-made disk image {}", tmp.display()));
        }
    }
    found
}
