//! Mounts added to a running sandbox from the host: a mount that exists on the host (a FUSE
//! file system served by a host process) is cloned with `open_tree` and attached inside the
//! sandbox's mount namespace with `move_mount`, by a short-lived fork of the caller that joins
//! that namespace (`setns` needs a process that shares its file-system state with no other
//! thread). The fork works with the sandbox's own credentials for file access (`setfsuid`), so
//! the mount point it creates belongs to the sandbox's root and a path the sandbox controls can
//! never make it touch anything the sandbox could not touch itself. Inside the namespace, every
//! path resolves under the sandbox's root (its `/` after `setns`).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use crate::sys;

/// `MOUNT_ATTR_RDONLY`, `MOUNT_ATTR_NOSUID`, `MOUNT_ATTR_NODEV` (linux/mount.h).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Attaches a copy of the host mount at `source` at `target` (absolute, no `.`/`..`) inside the
/// mount namespace of host process `ns_pid` (a sandbox's init), creating missing directories
/// of `target` as host uid/gid `owner` (the sandbox's root). The copy is `nosuid,nodev`, and
/// read-only with `read_only`.
pub fn attach_into(
    ns_pid: u32,
    source: &Path,
    target: &Path,
    owner: u32,
    read_only: bool,
) -> io::Result<()> {
    let prefixes = plain_prefixes(target)?;
    let mntns = open_mntns(ns_pid)?;
    let tree = sys::open_tree_clone(source)?;
    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if read_only {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(tree.as_fd(), attrs, None)?;
    let Some(target) = prefixes.last() else {
        return Err(invalid("the target must not be /"));
    };
    let (tree_fd, ns_fd) = (tree.as_raw_fd(), mntns.as_raw_fd());
    run_in_fork(|| {
        enter(ns_fd, owner)?;
        for dir in &prefixes {
            // SAFETY: `dir` is a NUL-terminated string built before the fork; mkdir is a
            // plain syscall.
            if unsafe { libc::mkdir(dir.as_ptr(), 0o755) } < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
        }
        sys::move_mount_raw(tree_fd, target)
    })
}

/// Detaches (lazily: open files keep working until closed) the mount at `target` inside the
/// mount namespace of host process `ns_pid`.
pub fn detach_from(ns_pid: u32, target: &Path) -> io::Result<()> {
    let prefixes = plain_prefixes(target)?;
    let Some(target) = prefixes.last() else {
        return Err(invalid("the target must not be /"));
    };
    let mntns = open_mntns(ns_pid)?;
    let ns_fd = mntns.as_raw_fd();
    run_in_fork(|| {
        enter(ns_fd, 0)?;
        // SAFETY: `target` is a NUL-terminated string built before the fork.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}

/// Detaches the host mount at `path` (lazily) from the caller's mount namespace.
pub fn detach_host(path: &Path) -> io::Result<()> {
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_string())
}

/// `/a`, `/a/b`, ... `target` as C strings; refuses relative paths, `.`, `..` and NULs.
fn plain_prefixes(target: &Path) -> io::Result<Vec<CString>> {
    if !target.is_absolute() {
        return Err(invalid("the target must be an absolute path"));
    }
    let mut out = Vec::new();
    let mut current = std::path::PathBuf::from("/");
    for component in target.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => {
                current.push(name);
                out.push(
                    CString::new(current.as_os_str().as_bytes())
                        .map_err(|_| invalid("the target contains a NUL byte"))?,
                );
            }
            _ => return Err(invalid("the target must not contain . or ..")),
        }
    }
    Ok(out)
}

fn open_mntns(pid: u32) -> io::Result<OwnedFd> {
    let file = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    Ok(OwnedFd::from(file))
}

/// Joins the mount namespace `ns_fd` and, unless `owner` is 0, does file access as `owner`.
fn enter(ns_fd: i32, owner: u32) -> io::Result<()> {
    // SAFETY: setns on an open integer fd takes no pointer.
    if unsafe { libc::setns(ns_fd, libc::CLONE_NEWNS) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if owner != 0 {
        // SAFETY: setfsgid/setfsuid take integers and only change this process's credentials.
        unsafe {
            libc::setfsgid(owner);
            libc::setfsuid(owner);
        }
    }
    Ok(())
}

/// Runs `f` in a forked child and returns its outcome (the errno travels as the exit status).
/// `f` must only make async-signal-safe calls and not allocate: the caller may have threads.
fn run_in_fork(f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    // SAFETY: the child only runs `f` (syscalls on data prepared before the fork, no
    // allocation, no locks) and leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            let code = match f() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO).clamp(1, 255),
            };
            sys::exit_immediately(code)
        }
        nix::unistd::ForkResult::Parent { child } => loop {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                    return Err(io::Error::from_raw_os_error(code));
                }
                Ok(status) => {
                    return Err(io::Error::other(format!("mount helper ended: {status:?}")));
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_plain_absolute_paths() {
        let p = plain_prefixes(Path::new("/mnt/data")).unwrap();
        assert_eq!(p, vec![c"/mnt".to_owned(), c"/mnt/data".to_owned()]);
        for bad in ["mnt", "/a/../b"] {
            assert!(plain_prefixes(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(plain_prefixes(Path::new("/")).unwrap().is_empty());
    }
}
