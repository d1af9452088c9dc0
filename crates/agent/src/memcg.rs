//! The sandbox's memory cgroup as the agent sees it: the launcher binds the sandbox's own
//! cgroup directories read-only under `/sys/fs/cgroup` (each the root of its view), so the
//! agent reads its limit, its usage and the kernel's OOM-kill counter there. The counter lets
//! a command the OOM killer ended be reported as such instead of as a bare exit code 137.

use std::fs;
use std::path::{Path, PathBuf};

/// Exit code of a command ended by SIGKILL (128 + 9), as the shell reports it.
const SIGKILL_EXIT_CODE: i32 = 137;

/// One memory cgroup: v1 (`memory.limit_in_bytes`, `memory.oom_control`) or v2 (`memory.max`,
/// `memory.events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

/// What the cgroup's files say about memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// `None`: no limit.
    pub limit: Option<u64>,
    /// Everything charged to the cgroup (anonymous memory and page cache).
    pub usage: u64,
    /// Page cache (file-backed pages).
    pub cache: u64,
    /// Page cache the kernel can drop at once.
    pub inactive_file: u64,
    pub active_file: u64,
    pub active_anon: u64,
    pub inactive_anon: u64,
    pub shmem: u64,
}

/// v1 reports "no limit" as a page-aligned `LONG_MAX`; anything this large is unlimited.
const UNLIMITED_FROM: u64 = 1 << 62;

fn read_number(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` lines: memory.stat, memory.events,
/// memory.oom_control).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl MemoryCgroup {
    /// The memory cgroup mounted under `root` (normally `/sys/fs/cgroup`), v1 first.
    pub fn find(root: &Path) -> Option<Self> {
        let v1 = root.join("memory");
        if v1.join("memory.limit_in_bytes").is_file() {
            return Some(MemoryCgroup { dir: v1, v2: false });
        }
        root.join("memory.max").is_file().then(|| MemoryCgroup {
            dir: root.to_path_buf(),
            v2: true,
        })
    }

    /// How many processes of the cgroup the OOM killer has killed so far.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        keyed(&fs::read_to_string(self.dir.join(file)).ok()?, "oom_kill")
    }

    /// The limit and usage now.
    pub fn usage(&self) -> Option<MemoryUsage> {
        let (limit_file, usage_file) = if self.v2 {
            ("memory.max", "memory.current")
        } else {
            ("memory.limit_in_bytes", "memory.usage_in_bytes")
        };
        let limit = read_number(&self.dir.join(limit_file)).filter(|l| *l < UNLIMITED_FROM);
        let usage = read_number(&self.dir.join(usage_file))?;
        let stat = fs::read_to_string(self.dir.join("memory.stat")).unwrap_or_default();
        // v1's `total_*` keys include child cgroups (the sandbox may create none, but can).
        let get = |v1: &str, v2: &str| {
            if self.v2 {
                keyed(&stat, v2)
            } else {
                keyed(&stat, &format!("total_{v1}")).or_else(|| keyed(&stat, v1))
            }
            .unwrap_or(0)
        };
        Some(MemoryUsage {
            limit,
            usage,
            cache: get("cache", "file"),
            inactive_file: get("inactive_file", "inactive_file"),
            active_file: get("active_file", "active_file"),
            active_anon: get("active_anon", "active_anon"),
            inactive_anon: get("inactive_anon", "inactive_anon"),
            shmem: get("shmem", "shmem"),
        })
    }
}

/// Watches one command for an OOM kill: the counter before it ran, compared when it ends.
#[derive(Debug, Clone)]
pub struct OomWatch {
    cgroup: MemoryCgroup,
    before: u64,
}

impl OomWatch {
    /// Starts watching (`None` when there is no memory cgroup to read).
    pub fn start(cgroup: Option<&MemoryCgroup>) -> Option<Self> {
        let cgroup = cgroup?.clone();
        let before = cgroup.oom_kills()?;
        Some(OomWatch { cgroup, before })
    }

    /// Whether a command that ended with `exit_code` was the OOM killer's: it died of SIGKILL
    /// and the cgroup's kill counter moved while it ran. (With several commands running, one
    /// killed by hand while another was OOM-killed could be misreported; the counter is per
    /// sandbox.)
    pub fn killed(&self, exit_code: i32) -> bool {
        exit_code == SIGKILL_EXIT_CODE
            && self
                .cgroup
                .oom_kills()
                .is_some_and(|after| after > self.before)
    }

    /// The note added to the stderr of a command the OOM killer ended.
    pub fn message(&self) -> String {
        let limit = self.cgroup.usage().and_then(|u| u.limit).map_or_else(
            || "no limit".to_owned(),
            |l| format!("limit {} MiB", l >> 20),
        );
        format!("sandpit: killed: out of memory ({limit})\n")
    }
}

/// Whether a command watched by `watch` ended by OOM kill.
pub fn oom_killed(watch: Option<&OomWatch>, exit_code: i32) -> bool {
    watch.is_some_and(|w| w.killed(exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_tree(limit: &str, oom_kill: u64) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("memory");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.limit_in_bytes"), limit).unwrap();
        fs::write(dir.join("memory.usage_in_bytes"), "10485760\n").unwrap();
        fs::write(
            dir.join("memory.stat"),
            "cache 100\ntotal_cache 4194304\ntotal_inactive_file 1048576\ntotal_shmem 4096\n",
        )
        .unwrap();
        fs::write(
            dir.join("memory.oom_control"),
            format!("oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n"),
        )
        .unwrap();
        tmp
    }

    #[test]
    fn reads_a_v1_cgroup() {
        let tmp = v1_tree("134217728\n", 0);
        let cg = MemoryCgroup::find(tmp.path()).unwrap();
        let u = cg.usage().unwrap();
        assert_eq!(u.limit, Some(128 << 20));
        assert_eq!(u.usage, 10 << 20);
        assert_eq!(u.cache, 4 << 20, "total_ keys win");
        assert_eq!(u.inactive_file, 1 << 20);
        assert_eq!(u.shmem, 4096);
        assert_eq!(cg.oom_kills(), Some(0));
        let unlimited = v1_tree("9223372036854771712\n", 0);
        let cg = MemoryCgroup::find(unlimited.path()).unwrap();
        assert_eq!(cg.usage().unwrap().limit, None);
    }

    #[test]
    fn reads_a_v2_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("memory.max"), "max\n").unwrap();
        fs::write(dir.join("memory.current"), "2048\n").unwrap();
        fs::write(dir.join("memory.stat"), "anon 1024\nfile 512\nshmem 8\n").unwrap();
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .unwrap();
        let cg = MemoryCgroup::find(dir).unwrap();
        let u = cg.usage().unwrap();
        assert_eq!((u.limit, u.usage, u.cache, u.shmem), (None, 2048, 512, 8));
        assert_eq!(cg.oom_kills(), Some(2));
        assert!(MemoryCgroup::find(&dir.join("nothing")).is_none());
    }

    #[test]
    fn an_oom_kill_is_a_sigkill_while_the_counter_moved() {
        let tmp = v1_tree("134217728\n", 1);
        let cg = MemoryCgroup::find(tmp.path()).unwrap();
        let watch = OomWatch::start(Some(&cg)).unwrap();
        assert!(!watch.killed(137), "counter unchanged: a kill by hand");
        fs::write(
            tmp.path().join("memory/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(watch.killed(137));
        assert!(!watch.killed(1), "another exit code is the command's own");
        assert_eq!(
            watch.message(),
            "sandpit: killed: out of memory (limit 128 MiB)\n"
        );
        assert!(!oom_killed(None, 137));
    }
}
