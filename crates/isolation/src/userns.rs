//! The sandbox's user namespace, created by a short-lived holder child so the launcher itself
//! stays in the initial namespace (it needs host root for the idmapped mount and the overlay).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pipe2, read, write};

use crate::launch::LaunchError;
use crate::sys::exit_immediately;
use crate::syscalls::{Syscalls, UsernsHolder};

/// Number of uids and gids mapped into every sandbox.
pub const ID_RANGE: u32 = 65536;

/// Returns an fd of a new user namespace mapping `0..65536` to `base..base+65536` (uids and
/// gids, `setgroups` denied).
pub(crate) fn create(sys: &dyn Syscalls, base: u32) -> Result<OwnedFd, LaunchError> {
    create_shifted(sys, 0, base)
}

/// Returns an fd of a new user namespace mapping `from..from+65536` to `base..base+65536`: as
/// the idmap of a mount, it shows files owned by the range starting at `from` as owned by the
/// range starting at `base` (a snapshot layer of another sandbox, shifted to this one's).
pub(crate) fn create_shifted(
    sys: &dyn Syscalls,
    from: u32,
    base: u32,
) -> Result<OwnedFd, LaunchError> {
    let holder = sys
        .spawn_userns_holder()
        .map_err(LaunchError::sys("start the userns holder"))?;
    let proc_dir = format!("/proc/{}", holder.pid);
    let map = format!("{from} {base} {ID_RANGE}\n");
    let file = |name: &str| Path::new(&proc_dir).join(name);
    sys.write_file(&file("uid_map"), map.as_bytes())
        .map_err(LaunchError::sys("write uid_map"))?;
    sys.write_file(&file("setgroups"), b"deny")
        .map_err(LaunchError::sys("write setgroups"))?;
    sys.write_file(&file("gid_map"), map.as_bytes())
        .map_err(LaunchError::sys("write gid_map"))?;
    let fd = sys
        .open(&file("ns/user"))
        .map_err(LaunchError::sys("open the userns"))?;
    drop(holder);
    Ok(fd)
}

/// Ends a real holder: closing the pipe lets it exit, then it is reaped.
pub(crate) struct HolderRelease {
    done: Option<OwnedFd>,
    child: Pid,
}

impl Drop for HolderRelease {
    fn drop(&mut self) {
        // Closed before the wait: that EOF is what lets the holder exit.
        drop(self.done.take());
        let _ = waitpid(self.child, None);
    }
}

/// Forks the holder: it unshares `CLONE_NEWUSER`, reports, and blocks until released.
pub(crate) fn spawn_holder() -> io::Result<UsernsHolder> {
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (done_r, done_w) = pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: the launcher is single-threaded (checked by `enter_sandbox`), so the child may run
    // any code; it only unshares, writes one byte, blocks on a read and `_exit`s.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = write(&ready_w, &[u8::from(ok)]);
            // Hold the namespace until the parent has opened it (EOF on `done_r`).
            let mut b = [0u8; 1];
            let _ = read(&done_r, &mut b);
            exit_immediately(0)
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let release = HolderRelease {
                done: Some(done_w),
                child,
            };
            let mut b = [0u8; 1];
            let n = read(&ready_r, &mut b)?;
            if n != 1 || b[0] != 1 {
                return Err(io::Error::other(
                    "the userns holder could not unshare CLONE_NEWUSER",
                ));
            }
            Ok(UsernsHolder {
                pid: child.as_raw() as u32,
                _release: Some(release),
            })
        }
    }
}
