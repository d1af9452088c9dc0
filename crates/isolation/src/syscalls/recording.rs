//! A [`Syscalls`] that performs nothing and writes every side effect down as one line, so
//! tests can assert the launch sequence (order and arguments) without privileges.
//!
//! The fake keeps a tiny file-system model: the directories and files the test seeds plus
//! those the sequence creates, so `lstat`/`stat` answer as the real host would. Queries are
//! not recorded; every side effect is. [`Recording::fail_on`] makes a call fail with `EPERM`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::{FileKind, Syscalls, UsernsHolder};

/// The pid the fake gives its user-namespace holder.
pub(crate) const HOLDER_PID: u32 = 4242;
/// The device the fake's `loop_attach` hands out.
pub(crate) const LOOP_DEVICE: &str = "/dev/loop7";

#[derive(Default)]
pub(crate) struct Recording {
    calls: RefCell<Vec<String>>,
    files: RefCell<BTreeMap<PathBuf, FileKind>>,
    contents: RefCell<BTreeMap<PathBuf, Vec<u8>>>,
    /// What each fd handed out stands for (`tree(/image)`, `/proc/4242/ns/user`).
    fd_labels: RefCell<HashMap<RawFd, String>>,
    fail_on: RefCell<Vec<String>>,
}

impl Recording {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Seeds a path of the model (e.g. an image dir, or a symlink the sandbox planted).
    pub(crate) fn with(self, path: &str, kind: FileKind) -> Self {
        self.files.borrow_mut().insert(PathBuf::from(path), kind);
        self
    }

    /// Seeds a file with contents (readable through `read_file`).
    pub(crate) fn with_file(self, path: &str, data: &str) -> Self {
        self.contents
            .borrow_mut()
            .insert(PathBuf::from(path), data.as_bytes().to_vec());
        self.with(path, FileKind::Other)
    }

    /// Every call whose recorded line starts with `prefix` fails with `EPERM` (after being
    /// recorded).
    pub(crate) fn fail_on(self, prefix: &str) -> Self {
        self.fail_on.borrow_mut().push(prefix.to_owned());
        self
    }

    /// The recorded side effects, in order.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let fails = self.fail_on.borrow().iter().any(|p| line.starts_with(p));
        self.calls.borrow_mut().push(line);
        if fails {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        } else {
            Ok(())
        }
    }

    fn kind(&self, path: &Path) -> io::Result<FileKind> {
        self.files
            .borrow()
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// A real (harmless) fd that the log names `label`.
    fn fd(&self, label: String) -> io::Result<OwnedFd> {
        let fd = OwnedFd::from(fs::File::open("/dev/null")?);
        self.fd_labels.borrow_mut().insert(fd.as_raw_fd(), label);
        Ok(fd)
    }

    fn label(&self, fd: BorrowedFd<'_>) -> String {
        let raw = fd.as_raw_fd();
        self.fd_labels
            .borrow()
            .get(&raw)
            .cloned()
            .unwrap_or_else(|| format!("fd {raw}"))
    }
}

fn ms_flags(flags: MsFlags) -> String {
    let names: Vec<&str> = flags.iter_names().map(|(n, _)| n).collect();
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

fn clone_flags(flags: CloneFlags) -> String {
    let names: Vec<&str> = flags.iter_names().map(|(n, _)| n).collect();
    names.join("|")
}

fn mount_attrs(attrs: u64) -> String {
    let known = [
        (libc::MOUNT_ATTR_RDONLY, "RDONLY"),
        (libc::MOUNT_ATTR_IDMAP, "IDMAP"),
    ];
    let names: Vec<&str> = known
        .iter()
        .filter(|(bit, _)| attrs & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    names.join("|")
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl Syscalls for Recording {
    fn lstat(&self, path: &Path) -> io::Result<FileKind> {
        self.kind(path)
    }
    fn stat(&self, path: &Path) -> io::Result<FileKind> {
        // The model has no link targets: a link counts as dangling.
        match self.kind(path)? {
            FileKind::Symlink => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            kind => Ok(kind),
        }
    }
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("mkdir {} {mode:o}", path.display()))?;
        if self.kind(path).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.files
            .borrow_mut()
            .insert(path.to_path_buf(), FileKind::Dir);
        Ok(())
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.record(format!("mkdir -p {}", path.display()))?;
        self.files
            .borrow_mut()
            .insert(path.to_path_buf(), FileKind::Dir);
        Ok(())
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        self.record(format!("touch {}", path.display()))?;
        self.files
            .borrow_mut()
            .entry(path.to_path_buf())
            .or_insert(FileKind::Other);
        Ok(())
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(format!(
            "symlink {} -> {}",
            link.display(),
            target.display()
        ))?;
        self.files
            .borrow_mut()
            .insert(link.to_path_buf(), FileKind::Symlink);
        Ok(())
    }
    fn chown(&self, path: &Path, uid: u32) -> io::Result<()> {
        self.record(format!("chown {} {uid}", path.display()))
    }
    fn chmod(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("chmod {} {mode:o}", path.display()))
    }
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.contents
            .borrow()
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(data);
        self.record(format!("write {} {text:?}", path.display()))
    }
    fn write_file_nofollow(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        let text = String::from_utf8_lossy(data);
        self.record(format!(
            "write nofollow {} {mode:o} {text:?}",
            path.display()
        ))
    }
    fn open(&self, path: &Path) -> io::Result<OwnedFd> {
        self.record(format!("open {}", path.display()))?;
        self.fd(path.display().to_string())
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {} {} {} {} {}",
            opt(source.map(Path::display)),
            target.display(),
            opt(fstype),
            ms_flags(flags),
            opt(data),
        ))
    }
    fn umount_detach(&self, target: &Path) -> io::Result<()> {
        self.record(format!("umount -l {}", target.display()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ))
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", path.display()))
    }
    fn open_tree_clone(&self, path: &Path) -> io::Result<OwnedFd> {
        self.record(format!("open_tree {}", path.display()))?;
        self.fd(format!("tree({})", path.display()))
    }
    fn mount_setattr_idmap(
        &self,
        tree: BorrowedFd<'_>,
        attr_set: u64,
        userns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        self.record(format!(
            "mount_setattr {} {} userns={}",
            self.label(tree),
            mount_attrs(attr_set),
            self.label(userns)
        ))
    }
    fn move_mount(&self, tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        self.record(format!(
            "move_mount {} {}",
            self.label(tree),
            target.display()
        ))
    }
    fn loop_attach(&self, image: &Path) -> io::Result<(PathBuf, OwnedFd)> {
        self.record(format!("loop_attach {}", image.display()))?;
        Ok((PathBuf::from(LOOP_DEVICE), self.fd(LOOP_DEVICE.into())?))
    }

    fn spawn_userns_holder(&self) -> io::Result<UsernsHolder> {
        self.record("spawn userns holder".into())?;
        Ok(UsernsHolder {
            pid: HOLDER_PID,
            _release: None,
        })
    }
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        self.record(format!("unshare {}", clone_flags(flags)))
    }
    fn setns(&self, fd: BorrowedFd<'_>, flags: CloneFlags) -> io::Result<()> {
        self.record(format!("setns {} {}", self.label(fd), clone_flags(flags)))
    }
    fn clear_groups(&self) -> io::Result<()> {
        self.record("setgroups []".into())
    }
    fn setresgid(&self, gid: u32) -> io::Result<()> {
        self.record(format!("setresgid {gid}"))
    }
    fn setresuid(&self, uid: u32) -> io::Result<()> {
        self.record(format!("setresuid {uid}"))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("sethostname {name}"))
    }
    fn set_link_up(&self, name: &str) -> io::Result<()> {
        self.record(format!("link up {name}"))
    }
}
