//! Host-side process plumbing for the runtime: subreaper, pidfds, passing a descriptor to a
//! launcher at a fixed number.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

pub use crate::sys::pidfd_open;

/// Makes the calling process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER),
/// so a sandbox init is re-parented to it when its launcher exits.
pub fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Arranges for `fd` to be open at number `target` (without `FD_CLOEXEC`) in the process that
/// `cmd` spawns. `fd` stays owned by `cmd` and is closed in the parent when `cmd` is dropped.
pub fn pass_fd(cmd: &mut std::process::Command, fd: OwnedFd, target: RawFd) {
    let raw = fd.as_raw_fd();
    let hook = move || {
        let _owned = &fd;
        crate::sys::dup2_raw(raw, target)
    };
    // SAFETY: the hook runs between fork and exec and only calls dup2/fcntl, which are
    // async-signal-safe and do not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Makes the process that `cmd` spawns a session leader whose controlling terminal is its
/// stdin (`setsid` + `TIOCSCTTY` on fd 0): what a terminal's shell needs for job control and
/// for `SIGWINCH`/`SIGHUP` delivery. Set stdin to the PTY's slave end.
pub fn controlling_terminal(cmd: &mut std::process::Command) {
    let hook = || {
        // SAFETY: setsid takes no arguments and is async-signal-safe.
        if unsafe { libc::setsid() } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: ioctl(TIOCSCTTY) on fd 0 takes no pointer and is async-signal-safe.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only makes the async-signal-safe calls above and does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
}
