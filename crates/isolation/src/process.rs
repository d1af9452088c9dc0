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

/// Like [`pass_fd`] for several descriptors at once (targets below 256): each is first
/// duplicated above 256 (close-on-exec), so a target number that happens to hold another source is not
/// clobbered before that source is moved.
pub fn pass_fds(cmd: &mut std::process::Command, fds: Vec<(OwnedFd, RawFd)>) {
    let mut moved: Vec<RawFd> = vec![-1; fds.len()];
    let hook = move || {
        for ((fd, _), slot) in fds.iter().zip(moved.iter_mut()) {
            // SAFETY: fcntl(F_DUPFD) on an open integer fd has no memory-safety requirements
            // and is async-signal-safe.
            let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 256) };
            if new < 0 {
                return Err(io::Error::last_os_error());
            }
            *slot = new;
        }
        for ((_, target), raw) in fds.iter().zip(moved.iter()) {
            crate::sys::dup2_raw(*raw, *target)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only calls fcntl/dup2, which are
    // async-signal-safe; it writes into a vector allocated before the fork and never allocates.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Makes the process that `cmd` spawns join the network namespace `netns` (an open
/// `/proc/<pid>/ns/net`) before it execs: how the host runs `nft` inside a sandbox's netns.
pub fn enter_netns(cmd: &mut std::process::Command, netns: OwnedFd) {
    let hook = move || {
        // SAFETY: setns on an open integer fd takes no pointer and is async-signal-safe.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only makes the async-signal-safe call above and does not allocate.
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

/// The overlay that [`private_overlay`] mounts: `lower` read-only, `upper`/`work` the writable
/// layer, shown at `target`.
#[derive(Debug, Clone)]
pub struct OverlayMount {
    pub lower: std::path::PathBuf,
    pub upper: std::path::PathBuf,
    pub work: std::path::PathBuf,
    pub target: std::path::PathBuf,
}

/// Runs the process that `cmd` spawns in a new, private mount namespace in which `overlay` is
/// mounted (nodev). The host never sees the mount: it lives exactly as long as the last process
/// in that namespace (for runsc, its gofer), so no stop path can leak it.
///
/// Fails (`InvalidInput`) for paths holding `,` `:` or NUL, which overlay options cannot carry.
pub fn private_overlay(cmd: &mut std::process::Command, overlay: &OverlayMount) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let plain = |p: &std::path::Path| {
        let bytes = p.as_os_str().as_bytes();
        if bytes.iter().any(|b| matches!(b, b',' | b':' | 0)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} cannot be an overlay path", p.display()),
            ));
        }
        Ok(p.display().to_string())
    };
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        plain(&overlay.lower)?,
        plain(&overlay.upper)?,
        plain(&overlay.work)?
    );
    // Everything the hook needs is allocated here, before the fork.
    let options = CString::new(options)?;
    let target = CString::new(plain(&overlay.target)?)?;
    let (fstype, root) = (c"overlay", c"/");
    let hook = move || {
        // SAFETY: unshare takes no pointer and is async-signal-safe.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: every pointer is a NUL-terminated string that lives as long as the closure
        // (or null where mount(2) allows it); mount is a plain syscall.
        let private = unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        if private < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let mounted = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        if mounted < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only makes the async-signal-safe syscalls above and does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
    Ok(())
}

/// Moves the process that `cmd` spawns into the cgroups whose `cgroup.procs` files are `procs`
/// before it execs ("0" names the writer), so it and everything it forks are limited from
/// their first instruction.
pub fn join_cgroups(
    cmd: &mut std::process::Command,
    procs: &[std::path::PathBuf],
) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let files = procs
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let hook = move || {
        for file in &files {
            // SAFETY: `file` is a NUL-terminated path owned by the closure; open is a syscall.
            let fd = unsafe { libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: writes one byte from a static buffer to the fd opened above.
            let written = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
            let err = io::Error::last_os_error();
            // SAFETY: closes the fd opened above, once.
            unsafe { libc::close(fd) };
            if written != 1 {
                return Err(err);
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes the async-signal-safe syscalls above and does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
    Ok(())
}
