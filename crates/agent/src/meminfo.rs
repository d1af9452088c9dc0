//! The sandbox's `/proc/meminfo`: the launcher binds a file of the sandbox over it and the
//! agent keeps that file current from the memory cgroup (lxcfs-style masking without FUSE), so
//! `free`, `top`, Python's `os.sysconf` users and JVMs size themselves by the sandbox's limit,
//! not the host's RAM. Every request to the agent (a command, a process, a terminal, a file)
//! first brings a view older than [`REFRESH`] up to date, so what a new command reads is
//! current; in between, the view is refreshed every [`REFRESH`] while it changes and backs off
//! to [`IDLE_REFRESH`] while it does not. An idle agent thus wakes every 30 s, not every
//! second: with 10,000 idle sandboxes the per-second refreshes (each parsing `memory.stat`)
//! took more CPU than the host had (issue 16).

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::memcg::{MemoryCgroup, MemoryUsage};

/// How often the view is brought up to date while it changes, and how old it may be when a
/// request arrives.
pub const REFRESH: Duration = Duration::from_secs(1);
/// The longest wait between two refreshes of a view that stopped changing.
pub const IDLE_REFRESH: Duration = Duration::from_secs(30);

/// The `/proc/meminfo` text for `u` on a host with `host_total` bytes of RAM. The lines the
/// cgroup cannot fill (kernel slabs, page tables...) are left out; parsers take the ones
/// present. Values are right-aligned as the kernel prints them.
pub fn render(u: &MemoryUsage, host_total: u64) -> String {
    let total = u.limit.map_or(host_total, |l| l.min(host_total));
    let used = u.usage.min(total);
    let free = total - used;
    let available = (free + u.inactive_file).min(total);
    let kb = |bytes: u64| bytes / 1024;
    let lines: [(&str, u64); 15] = [
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", available),
        ("Buffers", 0),
        ("Cached", u.cache.min(used)),
        ("SwapCached", 0),
        ("Active", u.active_anon + u.active_file),
        ("Inactive", u.inactive_anon + u.inactive_file),
        ("Active(anon)", u.active_anon),
        ("Inactive(anon)", u.inactive_anon),
        ("Active(file)", u.active_file),
        ("Inactive(file)", u.inactive_file),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("Shmem", u.shmem),
    ];
    lines
        .iter()
        .map(|(name, bytes)| format!("{:<16}{:>8} kB\n", format!("{name}:"), kb(*bytes)))
        .collect()
}

/// Rewrites the view in place (the bind mount pins its inode, so no rename): the whole text in
/// one write from offset 0, then the length.
fn write_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(text.as_bytes())?;
    file.set_len(text.len() as u64)
}

/// The view, its source and when it was last brought up to date.
struct Refresher {
    cgroup: MemoryCgroup,
    view: PathBuf,
    host_total: u64,
    /// The text last written, and when the view was last refreshed.
    state: Mutex<(String, Option<Instant>)>,
    /// Wakes the background loop: a request came, refresh at the fast pace again.
    busy: Notify,
}

impl Refresher {
    /// Rewrites the view if its text changed; returns whether it did.
    fn refresh(&self) -> bool {
        let Some(usage) = self.cgroup.usage() else {
            return false;
        };
        let text = render(&usage, self.host_total);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1 = Some(Instant::now());
        if text == state.0 {
            return false;
        }
        match write_in_place(&self.view, &text) {
            Ok(()) => {
                state.0 = text;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "meminfo view not written");
                false
            }
        }
    }

    fn is_stale(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1.is_none_or(|at| at.elapsed() >= REFRESH)
    }
}

static REFRESHER: OnceLock<Arc<Refresher>> = OnceLock::new();

/// The next wait of the background loop: [`REFRESH`] after a change, else twice the last one,
/// up to [`IDLE_REFRESH`].
pub fn next_period(period: Duration, changed: bool) -> Duration {
    if changed {
        REFRESH
    } else {
        (period * 2).min(IDLE_REFRESH)
    }
}

/// Before a request is handled: refreshes a view older than [`REFRESH`] at once (so the
/// command it starts reads current values) and puts the background loop back at the fast
/// pace. Does nothing without a view.
pub fn refresh_now() {
    let Some(refresher) = REFRESHER.get() else {
        return;
    };
    if refresher.is_stale() {
        refresher.refresh();
    }
    refresher.busy.notify_one();
}

/// Writes `view` now (so the first command already sees the limit), then keeps it current
/// until the agent exits (rewriting it only when the text changed). One view per agent: a
/// second call keeps the first.
pub fn spawn_refresher(cgroup: MemoryCgroup, view: PathBuf) {
    let host_total = nix::sys::sysinfo::sysinfo().map_or(u64::MAX, |i| i.ram_total());
    let refresher = Arc::new(Refresher {
        cgroup,
        view,
        host_total,
        state: Mutex::new((String::new(), None)),
        busy: Notify::new(),
    });
    if REFRESHER.set(refresher.clone()).is_err() {
        return;
    }
    refresher.refresh();
    tokio::spawn(async move {
        let mut period = REFRESH;
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {
                    period = next_period(period, refresher.refresh());
                }
                () = refresher.busy.notified() => period = REFRESH,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_view_backs_off_to_the_idle_period_and_a_change_resets_it() {
        let mut period = REFRESH;
        let mut waits = Vec::new();
        for _ in 0..7 {
            period = next_period(period, false);
            waits.push(period.as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(next_period(IDLE_REFRESH, true), REFRESH);
    }

    fn field(text: &str, name: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap()
    }

    #[test]
    fn the_limit_is_mem_total_and_usage_is_taken_from_it() {
        let u = MemoryUsage {
            limit: Some(256 << 20),
            usage: 100 << 20,
            cache: 30 << 20,
            inactive_file: 20 << 20,
            ..Default::default()
        };
        let text = render(&u, 8 << 30);
        assert_eq!(field(&text, "MemTotal"), 256 * 1024);
        assert_eq!(field(&text, "MemFree"), 156 * 1024);
        assert_eq!(field(&text, "MemAvailable"), 176 * 1024);
        assert_eq!(field(&text, "SwapTotal"), 0);
        assert!(text.starts_with("MemTotal:         262144 kB\n"), "{text}");
    }

    #[test]
    fn no_limit_or_a_limit_above_the_host_shows_the_host() {
        let u = MemoryUsage {
            limit: None,
            usage: 1 << 20,
            ..Default::default()
        };
        assert_eq!(field(&render(&u, 4 << 30), "MemTotal"), 4 << 20);
        let big = MemoryUsage {
            limit: Some(64 << 30),
            ..u
        };
        assert_eq!(field(&render(&big, 4 << 30), "MemTotal"), 4 << 20);
        // Usage above the limit (charged before a lower limit was set) shows as full.
        let over = MemoryUsage {
            limit: Some(1 << 20),
            usage: 2 << 20,
            ..Default::default()
        };
        assert_eq!(field(&render(&over, 4 << 30), "MemFree"), 0);
    }

    #[test]
    fn rewriting_in_place_keeps_the_inode_and_drops_the_old_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("meminfo");
        fs::write(&path, "a much longer previous text\n").unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        write_in_place(&path, "short\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n");
        let after = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert_eq!(inode, after);
    }
}
