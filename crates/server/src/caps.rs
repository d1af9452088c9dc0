//! Per-sandbox caps: the largest limits one sandbox may ask for on this server.
//!
//! The operator sets them (`sandpit serve --max-memory-mb ...`); unset ones default from the
//! host, so a sandbox can never ask for more than the machine has: memory ≤ RAM, cpus ≤ the
//! CPUs this process may use, pids ≤ pid_max / 8 (fork bombs of several sandboxes cannot
//! exhaust the host's pid space), disk ≤ the size of the data dir's filesystem.

use std::path::Path;

use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::Limits;
use sandpit_protocol::quota::SandboxCaps;

use crate::error::{ApiError, ApiResult};

/// Default cap on ports one sandbox exposes at preview URLs.
pub const DEFAULT_MAX_EXPOSED_PORTS: u64 = 32;

/// Share of the host's pid_max one sandbox may use by default (1/8).
const PID_MAX_SHARE: u64 = 8;

/// What the host has, as far as sandboxes are concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct HostResources {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pid_max: u64,
    /// Size of the filesystem holding the data dir; `None` when it cannot be learnt.
    pub disk_mb: Option<u64>,
}

impl HostResources {
    /// Reads `/proc/meminfo`, `/proc/sys/kernel/pid_max`, the CPU affinity and `statvfs` of
    /// `data_dir`. Values that cannot be read fall back to conservative guesses.
    pub fn detect(data_dir: &Path) -> Self {
        let memory_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_mem_total_kb(&m))
            .map_or(1024, |kb| kb / 1024);
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32_768);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let disk_mb = nix::sys::statvfs::statvfs(data_dir)
            .ok()
            .map(|s| s.blocks() * s.fragment_size() / (1024 * 1024));
        HostResources {
            memory_mb,
            cpus,
            pid_max,
            disk_mb,
        }
    }
}

/// Default of `sandpit serve --min-host-memory-mb`.
pub const DEFAULT_MIN_HOST_MEMORY_MB: u64 = 512;

/// The host's `MemAvailable` in MiB (what the kernel can hand out without swapping), `None`
/// when `/proc/meminfo` cannot be read.
pub fn mem_available_mb() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_field_kb(&meminfo, "MemAvailable:").map(|kb| kb / 1024)
}

/// Refuses to start another sandbox (`HOST_MEMORY_LOW`) while the host's `MemAvailable` is
/// below `floor_mb` (`--min-host-memory-mb`; 0 turns the check off): starting sandboxes until
/// the kernel runs out would end in the host's OOM killer, not in a clear error.
pub fn check_host_memory(floor_mb: u64) -> ApiResult<()> {
    if floor_mb == 0 {
        return Ok(());
    }
    match mem_available_mb() {
        Some(available) if available < floor_mb => Err(ApiError::new(
            ErrorCode::HostMemoryLow,
            format!(
                "the host has {available} MiB of memory available, below the server's floor of                  {floor_mb} MiB (--min-host-memory-mb): no new sandbox starts until sandboxes                  sleep or are destroyed"
            ),
        )
        .context("availableMb", available)
        .context("minHostMemoryMb", floor_mb)),
        _ => Ok(()),
    }
}

fn parse_mem_total_kb(meminfo: &str) -> Option<u64> {
    meminfo_field_kb(meminfo, "MemTotal:")
}

fn meminfo_field_kb(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Invalid operator settings, reported at server start.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CapsError {
    #[error("--max-{field} {value} is more than the host has ({host})")]
    AboveHost {
        field: &'static str,
        value: String,
        host: String,
    },
    #[error("--max-{field} must be a number greater than zero")]
    Zero { field: &'static str },
    #[error("the default {field} ({value}) is above --max-{field} ({max})")]
    DefaultAboveCap {
        field: &'static str,
        value: String,
        max: String,
    },
}

/// The caps in force: the operator's `max` where set (never above the host), else the
/// host-derived default; checked against the server's default limits.
pub fn resolve(
    max: &Limits,
    max_exposed_ports: u64,
    max_processes: u64,
    host: &HostResources,
    defaults: &Limits,
) -> Result<SandboxCaps, CapsError> {
    fn pick<T: PartialOrd + Copy + std::fmt::Display + Default>(
        field: &'static str,
        set: Option<T>,
        host: T,
        default: T,
    ) -> Result<T, CapsError> {
        match set {
            // Also NaN, which no comparison would ever catch later.
            Some(v) if v.partial_cmp(&T::default()) != Some(std::cmp::Ordering::Greater) => {
                Err(CapsError::Zero { field })
            }
            Some(v) if v > host => Err(CapsError::AboveHost {
                field,
                value: v.to_string(),
                host: host.to_string(),
            }),
            Some(v) => Ok(v),
            None => Ok(default),
        }
    }
    let memory_mb = pick("memory-mb", max.memory_mb, host.memory_mb, host.memory_mb)?;
    let cpus = pick("cpus", max.cpus, host.cpus, host.cpus)?;
    let pids = pick(
        "pids",
        max.pids,
        host.pid_max,
        (host.pid_max / PID_MAX_SHARE).max(1),
    )?;
    let disk_mb = match host.disk_mb {
        Some(h) => Some(pick("disk-mb", max.disk_mb, h, h)?),
        None => max.disk_mb,
    };
    if max_exposed_ports == 0 {
        return Err(CapsError::Zero {
            field: "exposed-ports",
        });
    }
    if max_processes == 0 {
        return Err(CapsError::Zero { field: "processes" });
    }
    let caps = SandboxCaps {
        memory_mb,
        cpus,
        pids,
        disk_mb,
        exposed_ports: max_exposed_ports,
        processes: max_processes,
    };
    if let Some(over) = first_over_cap(defaults, &caps) {
        return Err(CapsError::DefaultAboveCap {
            field: over.field_flag,
            value: over.requested.to_string(),
            max: over.max.to_string(),
        });
    }
    Ok(caps)
}

/// A limit above its cap.
#[derive(Debug, PartialEq)]
struct OverCap {
    /// Wire name (`memoryMb`).
    field: &'static str,
    /// Flag name (`memory-mb`).
    field_flag: &'static str,
    requested: serde_json::Value,
    max: serde_json::Value,
}

fn first_over_cap(limits: &Limits, caps: &SandboxCaps) -> Option<OverCap> {
    fn over<T: PartialOrd + Into<serde_json::Value>>(
        field: &'static str,
        field_flag: &'static str,
        value: Option<T>,
        max: Option<T>,
    ) -> Option<OverCap> {
        match (value, max) {
            (Some(v), Some(m)) if v > m => Some(OverCap {
                field,
                field_flag,
                requested: v.into(),
                max: m.into(),
            }),
            _ => None,
        }
    }
    over(
        "memoryMb",
        "memory-mb",
        limits.memory_mb,
        Some(caps.memory_mb),
    )
    .or_else(|| over("cpus", "cpus", limits.cpus, Some(caps.cpus)))
    .or_else(|| over("pids", "pids", limits.pids, Some(caps.pids)))
    .or_else(|| over("diskMb", "disk-mb", limits.disk_mb, caps.disk_mb))
}

/// Refuses limits above the caps with `LIMIT_EXCEEDED`, naming the field, the value asked
/// for and the maximum.
pub fn check(limits: &Limits, caps: &SandboxCaps) -> ApiResult<()> {
    let Some(o) = first_over_cap(limits, caps) else {
        return Ok(());
    };
    Err(ApiError::new(
        ErrorCode::LimitExceeded,
        format!(
            "limits.{} {} is above this server's maximum of {}",
            o.field, o.requested, o.max
        ),
    )
    .context("field", o.field)
    .context("requested", o.requested)
    .context("max", o.max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostResources {
        HostResources {
            memory_mb: 8192,
            cpus: 2.0,
            pid_max: 32_768,
            disk_mb: Some(100_000),
        }
    }

    fn defaults() -> Limits {
        Limits {
            cpus: Some(1.0),
            memory_mb: Some(1024),
            pids: Some(1024),
            disk_mb: None,
        }
    }

    #[test]
    fn caps_default_to_what_the_host_has() {
        let caps = resolve(&Limits::default(), 32, 128, &host(), &defaults()).unwrap();
        assert_eq!(
            caps,
            SandboxCaps {
                memory_mb: 8192,
                cpus: 2.0,
                pids: 4096,
                disk_mb: Some(100_000),
                exposed_ports: 32,
                processes: 128,
            }
        );
    }

    #[test]
    fn operator_caps_above_the_host_or_below_the_defaults_are_refused() {
        let max = Limits {
            memory_mb: Some(9000),
            ..Limits::default()
        };
        assert!(matches!(
            resolve(&max, 32, 128, &host(), &defaults()),
            Err(CapsError::AboveHost {
                field: "memory-mb",
                ..
            })
        ));
        let max = Limits {
            pids: Some(512),
            ..Limits::default()
        };
        assert!(matches!(
            resolve(&max, 32, 128, &host(), &defaults()),
            Err(CapsError::DefaultAboveCap { field: "pids", .. })
        ));
        let max = Limits {
            cpus: Some(0.0),
            ..Limits::default()
        };
        assert_eq!(
            resolve(&max, 32, 128, &host(), &defaults()),
            Err(CapsError::Zero { field: "cpus" })
        );
        let max = Limits {
            cpus: Some(f64::NAN),
            ..Limits::default()
        };
        assert_eq!(
            resolve(&max, 32, 128, &host(), &defaults()),
            Err(CapsError::Zero { field: "cpus" })
        );
    }

    #[test]
    fn limits_above_a_cap_name_the_field_the_request_and_the_max() {
        let caps = resolve(&Limits::default(), 32, 128, &host(), &defaults()).unwrap();
        let asked = Limits {
            memory_mb: Some(819_200),
            ..Limits::default()
        };
        let err = check(&asked, &caps).unwrap_err();
        assert_eq!(err.code(), ErrorCode::LimitExceeded);
        assert_eq!(err.0.context["field"], "memoryMb");
        assert_eq!(err.0.context["requested"], 819_200);
        assert_eq!(err.0.context["max"], 8192);
        assert!(
            err.0.message.contains("memoryMb 819200"),
            "{}",
            err.0.message
        );
        for asked in [
            Limits {
                cpus: Some(64.0),
                ..Limits::default()
            },
            Limits {
                pids: Some(65_536),
                ..Limits::default()
            },
            Limits {
                disk_mb: Some(100_001),
                ..Limits::default()
            },
        ] {
            assert!(check(&asked, &caps).is_err(), "{asked:?}");
        }
        let at_cap = Limits {
            cpus: Some(2.0),
            memory_mb: Some(8192),
            pids: Some(4096),
            disk_mb: Some(100_000),
        };
        check(&at_cap, &caps).unwrap();
    }

    #[test]
    fn mem_total_is_read_from_meminfo() {
        let meminfo = "MemFree:  1 kB\nMemTotal:       24684220 kB\n";
        assert_eq!(parse_mem_total_kb(meminfo), Some(24_684_220));
        let meminfo = "MemTotal: 2 kB\nMemAvailable:    1048576 kB\n";
        assert_eq!(meminfo_field_kb(meminfo, "MemAvailable:"), Some(1_048_576));
        assert_eq!(parse_mem_total_kb("nothing"), None);
    }
}
