//! The host side effects of the launch, behind one trait.
//!
//! [`enter_sandbox`](crate::launch::enter_sandbox) builds a sandbox by a long, order-sensitive
//! sequence of mounts, id maps, namespace switches and a pivot. The sequence itself is plain
//! logic; only its effects need root. [`Syscalls`] is the seam between the two: the launch
//! code calls nothing but these methods for its file-system and namespace changes, [`Linux`]
//! performs them (all `unsafe` stays in this crate, in [`crate::sys`]), and the tests' recording
//! fake (`syscalls::recording`) writes them down, so the order and arguments of every step
//! are unit-tested without privileges. The root tests (runtime, server) prove the real thing.
//!
//! What is NOT behind the trait: the two forks (userns holder, sandbox init), the pipes that
//! synchronise them, stdio placement and the final hardening (rlimits, capabilities,
//! no_new_privs, seccomp). Those act on the calling process itself and cannot be recorded
//! usefully.

use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

/// What a path is, as far as the launch cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Dir,
    Symlink,
    Other,
}

impl From<fs::FileType> for FileKind {
    fn from(t: fs::FileType) -> Self {
        if t.is_dir() {
            FileKind::Dir
        } else if t.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        }
    }
}

/// The short-lived child that holds a fresh user namespace until its maps are written and the
/// namespace is opened ([`Syscalls::spawn_userns_holder`]).
pub(crate) struct UsernsHolder {
    /// Host pid of the holder: its `/proc/<pid>/` files set and open the namespace.
    pub pid: u32,
    /// Releases and reaps the real holder when dropped (held only for that); `None` for a recorded one.
    pub(crate) _release: Option<crate::userns::HolderRelease>,
}

/// Every host side effect of the launch sequence. Each method is one syscall (or a short,
/// fixed sequence of them) with the same meaning as its namesake; errors are the raw
/// `io::Error`, and the caller names the stage.
pub(crate) trait Syscalls {
    /// `lstat`: never follows a final symlink (so no step trusts a link the sandbox planted).
    fn lstat(&self, path: &Path) -> io::Result<FileKind>;
    /// `stat`: follows symlinks.
    fn stat(&self, path: &Path) -> io::Result<FileKind>;
    /// `mkdir(path, mode)`.
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// `mkdir -p` with the default mode.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates an empty file if missing (a bind-mount target), never truncating.
    fn touch(&self, path: &Path) -> io::Result<()>;
    /// `symlink(target, link)`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// `chown(path, uid, uid)`.
    fn chown(&self, path: &Path, uid: u32) -> io::Result<()>;
    /// `chmod(path, mode)` (what `mkdir` left out under the umask, e.g. the sticky bit).
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates or truncates `path` and writes `data` (`/proc` control files, the meminfo view).
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Like [`Syscalls::write_file`] with `mode` for a new file, refusing a final symlink.
    fn write_file_nofollow(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()>;
    /// Opens `path` read-only (a namespace file).
    fn open(&self, path: &Path) -> io::Result<OwnedFd>;

    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `umount2(target, MNT_DETACH)`.
    fn umount_detach(&self, target: &Path) -> io::Result<()>;
    /// `pivot_root(new_root, put_old)`.
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// `open_tree(path, OPEN_TREE_CLONE)`: a detached copy of the mount at `path`.
    fn open_tree_clone(&self, path: &Path) -> io::Result<OwnedFd>;
    /// `mount_setattr` of `attr_set` (with `userns` for `MOUNT_ATTR_IDMAP`) on a detached tree.
    fn mount_setattr_idmap(
        &self,
        tree: BorrowedFd<'_>,
        attr_set: u64,
        userns: BorrowedFd<'_>,
    ) -> io::Result<()>;
    /// `move_mount` of a detached tree onto `target`.
    fn move_mount(&self, tree: BorrowedFd<'_>, target: &Path) -> io::Result<()>;
    /// Attaches `image` to a free loop device (autoclear): the device path and an fd that keeps
    /// it attached until it is mounted.
    fn loop_attach(&self, image: &Path) -> io::Result<(PathBuf, OwnedFd)>;

    /// Forks a child that unshares a user namespace and holds it (see [`UsernsHolder`]).
    fn spawn_userns_holder(&self) -> io::Result<UsernsHolder>;
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    fn setns(&self, fd: BorrowedFd<'_>, flags: CloneFlags) -> io::Result<()>;
    /// `setgroups(0, NULL)`: drops the supplementary groups.
    fn clear_groups(&self) -> io::Result<()>;
    /// `setresgid(gid, gid, gid)`.
    fn setresgid(&self, gid: u32) -> io::Result<()>;
    /// `setresuid(uid, uid, uid)`.
    fn setresuid(&self, uid: u32) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Sets `IFF_UP` on the interface `name`.
    fn set_link_up(&self, name: &str) -> io::Result<()>;
}

/// The real thing: each method is the syscall it names.
pub(crate) struct Linux;

impl Syscalls for Linux {
    fn lstat(&self, path: &Path) -> io::Result<FileKind> {
        fs::symlink_metadata(path).map(|m| m.file_type().into())
    }
    fn stat(&self, path: &Path) -> io::Result<FileKind> {
        fs::metadata(path).map(|m| m.file_type().into())
    }
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new().mode(mode).create(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        symlink(target, link)
    }
    fn chown(&self, path: &Path, uid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(uid))
    }
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        fs::write(path, data)
    }
    fn write_file_nofollow(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .and_then(|mut f| f.write_all(data))
    }
    fn open(&self, path: &Path) -> io::Result<OwnedFd> {
        fs::File::open(path).map(OwnedFd::from)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        Ok(nix::mount::mount(source, target, fstype, flags, data)?)
    }
    fn umount_detach(&self, target: &Path) -> io::Result<()> {
        Ok(nix::mount::umount2(target, MntFlags::MNT_DETACH)?)
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        Ok(nix::unistd::pivot_root(new_root, put_old)?)
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        Ok(nix::unistd::chdir(path)?)
    }
    fn open_tree_clone(&self, path: &Path) -> io::Result<OwnedFd> {
        crate::sys::open_tree_clone(path)
    }
    fn mount_setattr_idmap(
        &self,
        tree: BorrowedFd<'_>,
        attr_set: u64,
        userns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        crate::sys::mount_setattr(tree, attr_set, Some(userns))
    }
    fn move_mount(&self, tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        crate::sys::move_mount_to(tree, target)
    }
    fn loop_attach(&self, image: &Path) -> io::Result<(PathBuf, OwnedFd)> {
        crate::sys::loop_attach(image)
    }

    fn spawn_userns_holder(&self) -> io::Result<UsernsHolder> {
        crate::userns::spawn_holder()
    }
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::unshare(flags)?)
    }
    fn setns(&self, fd: BorrowedFd<'_>, flags: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::setns(fd, flags)?)
    }
    fn clear_groups(&self) -> io::Result<()> {
        Ok(nix::unistd::setgroups(&[])?)
    }
    fn setresgid(&self, gid: u32) -> io::Result<()> {
        let g = Gid::from_raw(gid);
        Ok(nix::unistd::setresgid(g, g, g)?)
    }
    fn setresuid(&self, uid: u32) -> io::Result<()> {
        let u = Uid::from_raw(uid);
        Ok(nix::unistd::setresuid(u, u, u)?)
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        Ok(nix::unistd::sethostname(name)?)
    }
    fn set_link_up(&self, name: &str) -> io::Result<()> {
        crate::sys::set_link_up(name)
    }
}

#[cfg(test)]
pub(crate) mod recording;
