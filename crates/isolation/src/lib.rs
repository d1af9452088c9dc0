//! Linux isolation primitives for sandpit. All unsafe code of the project lives here, each block
//! with a `// SAFETY:` comment.
//!
//! - [`launch`]: the launcher that turns a process into a sandbox init ([`launch::enter_sandbox`]).
//! - [`cgroup`]: per-sandbox cgroups, v1-hybrid and v2 behind [`cgroup::CgroupManager`].
//! - [`seccomp`]: the sandbox's seccomp profile (a documented allow-list table).
//! - [`process`]: host-side helpers (subreaper, pidfd, passing an fd to a child).
//!
//! See `docs/isolation.md` for the design and the threat model.
#![cfg(target_os = "linux")]

pub mod attach;
pub mod cgroup;
mod hardening;
pub mod launch;
mod mounts;
pub mod process;
pub mod seccomp;
mod sys;
mod syscalls;
mod userns;

pub use hardening::KEPT_CAPABILITIES;
pub use launch::{Entered, LaunchConfig, LaunchError, enter_sandbox, launch_from_stdin};
pub use mounts::{MASKED_PATHS, READONLY_PATHS};
pub use userns::ID_RANGE;
