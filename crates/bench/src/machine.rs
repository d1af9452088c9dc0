//! What machine the numbers were measured on, and how much memory sandbox processes use.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

/// `nproc`, memory, kernel and CPU model.
pub fn describe() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown");
    // Other work on the machine skews latencies; the load average shows how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "nproc {cpus}, memory {:.1} GiB, kernel {}, CPU {model}; load average at start {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim(),
        load.join(" ")
    )
}

/// pid → parent pid of every process.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces: parse after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// Every descendant of this process: with the server in-process, exactly the sandbox
/// processes (launchers, agents, shells).
pub fn descendants() -> Vec<u32> {
    let me = std::process::id();
    let parents = parents();
    parents
        .keys()
        .copied()
        .filter(|&pid| {
            let mut cur = pid;
            for _ in 0..64 {
                match parents.get(&cur) {
                    Some(&p) if p == me => return true,
                    Some(&p) if p > 1 => cur = p,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Sum of the proportional set size (PSS) of `pids`, in bytes.
pub fn pss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

/// The memory cgroups `pids` live in (v1 `memory` controller, or v2), excluding our own.
fn memory_cgroups(pids: &[u32]) -> BTreeSet<PathBuf> {
    let own = cgroup_of("self");
    pids.iter()
        .filter_map(|pid| cgroup_of(&pid.to_string()))
        .filter(|cg| Some(cg) != own.as_ref())
        .collect()
}

fn cgroup_of(pid: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(PathBuf::from(format!("/sys/fs/cgroup/memory{path}")));
        }
    }
    // cgroup v2 only.
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from(format!("/sys/fs/cgroup{path}")))
}

/// Sum of `memory.usage_in_bytes` (v1) or `memory.current` (v2) over the sandboxes' cgroups,
/// and how many cgroups that was. Includes page cache charged to the sandboxes.
pub fn cgroup_usage(pids: &[u32]) -> (u64, usize) {
    let groups = memory_cgroups(pids);
    let total = groups
        .iter()
        .filter_map(|dir| {
            ["memory.usage_in_bytes", "memory.current"]
                .iter()
                .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum();
    (total, groups.len())
}
