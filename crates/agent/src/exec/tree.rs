//! Process trees: finding every live process that belongs to a command, background process or
//! session shell (its process group, plus descendants that moved to another group while their
//! ancestors still live) and signalling them. Processes are read from `/proc`; zombies count as
//! dead. Used by the runner's kill policy, session stops and process kills.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy)]
struct Stat {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    zombie: bool,
}

fn scan() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid pgrp ...`; comm may contain spaces and parentheses.
            let rest = &text[text.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            Some(Stat {
                pid,
                ppid,
                pgrp,
                zombie: state == "Z" || state == "X",
            })
        })
        .collect()
}

/// Live members of process group `pgid` and live descendants of `root` (if given).
pub fn members(root: Option<i32>, pgid: i32) -> Vec<i32> {
    let stats = scan();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for s in &stats {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    let mut found: HashSet<i32> = stats
        .iter()
        .filter(|s| s.pgrp == pgid)
        .map(|s| s.pid)
        .collect();
    let mut todo: Vec<i32> = root.into_iter().collect();
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.insert(child);
            todo.push(child);
        }
    }
    let live: HashSet<i32> = stats.iter().filter(|s| !s.zombie).map(|s| s.pid).collect();
    let mut pids: Vec<i32> = found.into_iter().filter(|p| live.contains(p)).collect();
    pids.sort_unstable();
    pids
}

/// Process groups that have at least one live member.
pub fn live_groups() -> HashSet<i32> {
    scan()
        .into_iter()
        .filter(|s| !s.zombie)
        .map(|s| s.pgrp)
        .collect()
}

/// Whether any of `pids` still runs (not a zombie).
pub fn any_alive(pids: &[i32]) -> bool {
    pids.iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| {
                let rest = &t[t.rfind(')')? + 1..];
                rest.split_whitespace().next().map(|s| s != "Z" && s != "X")
            })
            .unwrap_or(false)
    })
}

/// Sends `signal` to the group `pgid` and to each of `pids`.
pub fn signal(pgid: i32, pids: &[i32], signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Parses a signal as `SIGINT`, `INT`, `sigint` or `2`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("SIGINT"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("int"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }

    #[test]
    fn members_include_the_own_process() {
        let me = std::process::id() as i32;
        let pgid = nix::unistd::getpgrp().as_raw();
        assert!(members(Some(me), pgid).contains(&me));
        assert!(members(None, pgid).contains(&me));
        assert!(any_alive(&[me]));
        assert!(!any_alive(&[i32::MAX]));
    }
}
