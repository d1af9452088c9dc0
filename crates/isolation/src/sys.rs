//! Thin, safe wrappers over the raw Linux syscalls that neither `nix` nor `std` offer.
//!
//! Every `unsafe` block of the launcher that is not a plain `fork` lives here, so the rest of the
//! crate reads as ordinary Rust.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`: a detached copy of the mount
/// at `path` (not its submounts).
pub(crate) fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; the kernel returns a
    // new fd or -1.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })?;
    // SAFETY: the syscall succeeded, so `fd` is a fresh descriptor that we exclusively own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH, {attr_set, userns_fd})` on a detached tree
/// (`userns_fd` only with `MOUNT_ATTR_IDMAP` in `attr_set`).
pub(crate) fn mount_setattr(
    tree: BorrowedFd<'_>,
    attr_set: u64,
    userns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    let empty = c"";
    // SAFETY: `attr` is a properly initialised `struct mount_attr` whose size we pass; `empty` is
    // a static NUL-terminated string; the fds in it and `tree` are borrowed and valid for the
    // call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(())
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attach a detached tree.
pub(crate) fn move_mount_to(tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    move_mount_raw(tree.as_raw_fd(), &cstring(target)?)
}

/// [`move_mount_to`] with a target prepared before a fork (no allocation).
pub(crate) fn move_mount_raw(tree: RawFd, target: &std::ffi::CStr) -> io::Result<()> {
    let empty = c"";
    // SAFETY: both strings are valid NUL-terminated C strings alive for the call; `tree` is an
    // fd the caller keeps open.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: plain syscall with integer arguments; returns a new fd or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
    // SAFETY: the syscall succeeded, so `fd` is a fresh descriptor that we exclusively own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Closes every descriptor in `first..=last` (close_range(2)); no-op for an empty range.
pub(crate) fn close_range(first: u32, last: u32) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: closing descriptors is memory-safe; callers only use this in the single-threaded
    // sandbox init right after the fork, where no Rust object owns the closed fds any more.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) })?;
    Ok(())
}

/// `dup2(old, new)` on raw numbers (used to place stdio and the listener at fixed numbers).
/// When `old == new` it clears `FD_CLOEXEC` instead, which `dup2` would silently not do.
pub(crate) fn dup2_raw(old: RawFd, new: RawFd) -> io::Result<()> {
    if old == new {
        // SAFETY: fcntl on an integer fd has no memory-safety requirements.
        let flags = check(unsafe { libc::fcntl(old, libc::F_GETFD) } as libc::c_long)?;
        let cleared = flags as libc::c_int & !libc::FD_CLOEXEC;
        // SAFETY: as above.
        let ret = unsafe { libc::fcntl(old, libc::F_SETFD, cleared) };
        check(ret as libc::c_long)?;
        return Ok(());
    }
    // SAFETY: dup2 on integer fds has no memory-safety requirements; it is async-signal-safe,
    // so it may run in a `pre_exec` hook.
    check(unsafe { libc::dup2(old, new) } as libc::c_long)?;
    Ok(())
}

/// Sets or clears `IFF_UP` on a network interface through `SIOCSIFFLAGS`.
pub(crate) fn set_link_up(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: plain socket(2) call; returns a new fd or -1.
    let sock =
        check(
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
                as libc::c_long,
        )?;
    // SAFETY: the call succeeded, so `sock` is a fresh descriptor that we exclusively own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock as RawFd) };
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers and sockaddrs),
    // for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid, NUL-terminated ifreq for the ioctl to fill in.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } as libc::c_long)?;
    // SAFETY: SIOCGIFFLAGS initialised the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: `req` is a valid ifreq with the name and the new flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } as libc::c_long)?;
    Ok(())
}

/// `_exit(code)`: leaves a forked child without running atexit handlers or flushing stdio
/// buffers inherited from the parent.
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: `_exit` never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
#[allow(dead_code)] // filled in for the kernel, never read
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
#[allow(dead_code)] // filled in for the kernel, never read
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// Attaches `image` to a free loop device with `LO_FLAGS_AUTOCLEAR` (the kernel detaches it
/// when the last user, the fd returned here or a mount, goes away). Returns the device's path
/// and an open fd that keeps it attached until the caller has mounted it.
pub(crate) fn loop_attach(image: &Path) -> io::Result<(std::path::PathBuf, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(image)?;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    // Another start may take the same free device between GET_FREE and CONFIGURE: retry.
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = std::path::PathBuf::from(format!("/dev/loop{n}"));
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        // SAFETY: an all-zero `loop_config` is valid (plain integers and byte arrays).
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: `cfg` is a properly initialised `struct loop_config` that outlives the call;
        // both fds are open.
        let ret =
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if ret == 0 {
            return Ok((path, OwnedFd::from(dev)));
        }
        last = io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::EBUSY) {
            return Err(last);
        }
    }
    Err(last)
}
