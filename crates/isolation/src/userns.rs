//! The sandbox's user namespace, created by a short-lived holder child so the launcher itself
//! stays in the initial namespace (it needs host root for the idmapped mount and the overlay).
#![allow(unsafe_code)]

use std::fs;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe2, read, write};

use crate::launch::LaunchError;
use crate::sys::exit_immediately;

/// Number of uids and gids mapped into every sandbox.
pub const ID_RANGE: u32 = 65536;

/// Returns an fd of a new user namespace mapping `0..65536` to `base..base+65536` (uids and
/// gids, `setgroups` denied).
pub(crate) fn create(base: u32) -> Result<OwnedFd, LaunchError> {
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(LaunchError::sys("pipe"))?;
    let (done_r, done_w) = pipe2(OFlag::O_CLOEXEC).map_err(LaunchError::sys("pipe"))?;
    // SAFETY: the launcher is single-threaded (checked by `enter_sandbox`), so the child may run
    // any code; it only unshares, writes one byte, blocks on a read and `_exit`s.
    match unsafe { fork() }.map_err(LaunchError::sys("fork the userns holder"))? {
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
            let result = (|| {
                let mut b = [0u8; 1];
                let n = read(&ready_r, &mut b)
                    .map_err(LaunchError::sys("wait for the userns holder"))?;
                if n != 1 || b[0] != 1 {
                    return Err(LaunchError::Init(
                        "the userns holder could not unshare CLONE_NEWUSER".into(),
                    ));
                }
                let proc_dir = format!("/proc/{child}");
                let map = format!("0 {base} {ID_RANGE}\n");
                fs::write(format!("{proc_dir}/uid_map"), &map)
                    .map_err(LaunchError::sys("write uid_map"))?;
                fs::write(format!("{proc_dir}/setgroups"), "deny")
                    .map_err(LaunchError::sys("write setgroups"))?;
                fs::write(format!("{proc_dir}/gid_map"), &map)
                    .map_err(LaunchError::sys("write gid_map"))?;
                let fd = fs::File::open(format!("{proc_dir}/ns/user"))
                    .map_err(LaunchError::sys("open the userns"))?;
                Ok(OwnedFd::from(fd))
            })();
            drop(done_w);
            let _ = waitpid(child, None);
            result
        }
    }
}
