//! Applying image layers (tar streams) to a rootfs without ever writing outside it.
//!
//! The rules, in the order an entry meets them:
//! - Paths are split on `/`; empty and `.` components are dropped (so a leading `/` is
//!   stripped) and any `..` component rejects the archive (`UnsafeArchive`, naming the entry).
//! - Parent directories are resolved one component at a time *inside* the rootfs: a symlink
//!   met on the way is followed as if the rootfs were `/` (absolute targets restart at the
//!   rootfs, `..` stops at it), like a chrooted resolver; missing parents are created. The last
//!   component is never followed: whatever is there is replaced.
//! - Hard links must name an existing non-directory inside the rootfs (absolute or `..`
//!   targets are rejected; the target's parents resolve like above).
//! - Device nodes are skipped (the sandbox provides /dev); fifos are created.
//! - OCI whiteouts: `.wh.<name>` deletes `<name>` from lower layers; `.wh..wh..opq` empties
//!   the directory of everything lower layers put there.
//! - Ownership (numeric uid/gid) is kept when running as root; modes are kept including
//!   setuid/setgid bits, which is acceptable because sandboxes run in a user namespace with
//!   `no_new_privs`. File mtimes are kept; directory mtimes and xattrs are not.
//! - Total file bytes and entry count are capped ([`ImportLimits`]).
//!
//! The staging rootfs is private to one import and nothing else writes to it meanwhile, so
//! checking a component with `symlink_metadata` and then using it is not racy.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tar::EntryType;

use crate::error::io_err;
use crate::{ImageError, ImportLimits};

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const MAX_SYMLINK_HOPS: u32 = 40;

/// Applies layers, in order, to one rootfs.
pub(crate) struct Unpacker {
    root: PathBuf,
    limits: ImportLimits,
    bytes: u64,
    entries: u64,
    /// Directory modes are applied at the end, so a read-only directory can still be filled.
    dir_modes: Vec<(PathBuf, u32)>,
    as_root: bool,
    /// Device nodes skipped so far.
    pub(crate) skipped_devices: u64,
}

impl Unpacker {
    pub(crate) fn new(root: &Path, limits: ImportLimits) -> Self {
        Self {
            root: root.to_owned(),
            limits,
            bytes: 0,
            entries: 0,
            dir_modes: Vec::new(),
            as_root: nix::unistd::geteuid().is_root(),
            skipped_devices: 0,
        }
    }

    /// Applies one uncompressed layer tar stream.
    pub(crate) fn apply_layer(&mut self, layer: impl Read) -> Result<(), ImageError> {
        let mut archive = tar::Archive::new(layer);
        // Paths this layer wrote (and their parents): an opaque marker must not delete them.
        let mut written: HashSet<PathBuf> = HashSet::new();
        let entries = archive.entries().map_err(bad_tar)?;
        for entry in entries {
            let mut entry = entry.map_err(bad_tar)?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(ImageError::TooLarge(format!(
                    "more than {} entries",
                    self.limits.max_entries
                )));
            }
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw).into_owned();
            self.apply_entry(&mut entry, &raw, &name, &mut written)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        name: &str,
        written: &mut HashSet<PathBuf>,
    ) -> Result<(), ImageError> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let components =
            components(raw).map_err(|reason| ImageError::unsafe_entry(name, reason))?;
        let Some((file_name, parents)) = components.split_last() else {
            return Ok(()); // The root itself ("./"): keep the rootfs dir as it is.
        };

        if file_name.as_bytes() == OPAQUE {
            if let Some(dir) = self.resolve_dir(parents, false, name)? {
                remove_unwritten(&dir, written)?;
            }
            return Ok(());
        }
        if let Some(hidden) = file_name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            if matches!(hidden, b"" | b"." | b"..") || hidden.contains(&b'/') {
                return Err(ImageError::unsafe_entry(name, "invalid whiteout name"));
            }
            if let Some(dir) = self.resolve_dir(parents, false, name)? {
                let target = dir.join(OsStr::from_bytes(hidden));
                if !written.contains(&target) {
                    remove_any(&target)?;
                }
            }
            return Ok(());
        }

        let Some(dir) = self.resolve_dir(parents, true, name)? else {
            return Err(ImageError::unsafe_entry(
                name,
                "parent directory could not be created",
            ));
        };
        let path = dir.join(file_name);
        let header = entry.header();
        let mode = header.mode().map_err(bad_tar)? & 0o7777;
        let owner = (
            u32::try_from(header.uid().map_err(bad_tar)?).ok(),
            u32::try_from(header.gid().map_err(bad_tar)?).ok(),
        );
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        remove_any(&path)?;
                        create_dir(&path)?;
                    }
                    Err(_) => create_dir(&path)?,
                }
                self.chown(&path, owner)?;
                self.dir_modes.push((path.clone(), mode));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mtime = header.mtime().ok();
                self.write_file(entry, &path, mode, owner, mtime, name)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ImageError::unsafe_entry(name, "symlink without a target"))?;
                remove_any(&path)?;
                // The target is stored verbatim: symlinks are only ever followed by our own
                // in-root resolver here, and by the sandbox inside its own root later.
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(io_err(format!("creating symlink {name}")))?;
                self.chown(&path, owner)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ImageError::unsafe_entry(name, "hard link without a target"))?;
                let source = self.hard_link_source(&target, name)?;
                if source != path {
                    remove_any(&path)?;
                    // Does not follow a symlink source: links the symlink itself.
                    fs::hard_link(&source, &path)
                        .map_err(io_err(format!("creating hard link {name}")))?;
                }
            }
            EntryType::Fifo => {
                remove_any(&path)?;
                let perm = nix::sys::stat::Mode::from_bits_truncate(mode);
                nix::unistd::mkfifo(&path, perm).map_err(|e| ImageError::Io {
                    context: format!("creating fifo {name}"),
                    source: e.into(),
                })?;
                self.chown(&path, owner)?;
            }
            EntryType::Char | EntryType::Block => {
                self.skipped_devices += 1;
                return Ok(());
            }
            _ => return Ok(()), // Unknown or metadata-only entry types carry no file.
        }
        // Mark the entry and every parent up to the root as written by this layer.
        let mut marked = Some(path.as_path());
        while let Some(p) = marked.filter(|p| p.starts_with(&self.root) && *p != self.root) {
            written.insert(p.to_owned());
            marked = p.parent();
        }
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        mode: u32,
        owner: (Option<u32>, Option<u32>),
        mtime: Option<u64>,
        name: &str,
    ) -> Result<(), ImageError> {
        let remaining = self.limits.max_bytes.saturating_sub(self.bytes);
        if entry.size() > remaining {
            return Err(self.too_many_bytes());
        }
        remove_any(path)?;
        let ctx = || format!("writing {name}");
        // create_new: never opens through whatever might sit at the final component.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(ctx()))?;
        let copied =
            io::copy(&mut entry.by_ref().take(remaining + 1), &mut file).map_err(io_err(ctx()))?;
        if copied > remaining {
            return Err(self.too_many_bytes());
        }
        self.bytes += copied;
        if let Some(secs) = mtime {
            let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(secs));
        }
        drop(file);
        // chown before chmod: chown clears setuid/setgid.
        self.chown(path, owner)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(ctx()))
    }

    fn too_many_bytes(&self) -> ImageError {
        ImageError::TooLarge(format!(
            "more than {} bytes of files",
            self.limits.max_bytes
        ))
    }

    fn chown(&self, path: &Path, (uid, gid): (Option<u32>, Option<u32>)) -> Result<(), ImageError> {
        if !self.as_root {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, uid, gid)
            .map_err(io_err(format!("chown {}", path.display())))
    }

    /// The existing file a hard link entry points at, resolved inside the rootfs.
    fn hard_link_source(&self, target: &[u8], name: &str) -> Result<PathBuf, ImageError> {
        if target.starts_with(b"/") {
            return Err(ImageError::unsafe_entry(
                name,
                "hard link target is an absolute path",
            ));
        }
        let parts = components(target)
            .map_err(|_| ImageError::unsafe_entry(name, "hard link target contains '..'"))?;
        let missing =
            || ImageError::unsafe_entry(name, "hard link target does not exist in the image");
        let (file_name, parents) = parts.split_last().ok_or_else(missing)?;
        let dir = self
            .resolve_dir(parents, false, name)?
            .ok_or_else(missing)?;
        let source = dir.join(file_name);
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.is_dir() => Err(ImageError::unsafe_entry(
                name,
                "hard link target is a directory",
            )),
            Ok(_) => Ok(source),
            Err(_) => Err(missing()),
        }
    }

    /// Resolves `parents` to a real directory inside the rootfs, following symlinks as if the
    /// rootfs were `/`. Creates missing directories when `create`; otherwise a missing one
    /// gives `None`.
    fn resolve_dir(
        &self,
        parents: &[OsString],
        create: bool,
        name: &str,
    ) -> Result<Option<PathBuf>, ImageError> {
        let mut resolved = self.root.clone();
        let mut depth = 0usize; // components of `resolved` below the root
        let mut pending: VecDeque<OsString> = parents.iter().cloned().collect();
        let mut hops = 0;
        while let Some(part) = pending.pop_front() {
            match part.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if depth > 0 {
                        resolved.pop();
                        depth -= 1;
                    }
                    continue;
                }
                _ => {}
            }
            let next = resolved.join(&part);
            match fs::symlink_metadata(&next) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(ImageError::unsafe_entry(
                            name,
                            "too many levels of symbolic links",
                        ));
                    }
                    let target = fs::read_link(&next)
                        .map_err(io_err(format!("reading link {}", next.display())))?;
                    let target = target.into_os_string().into_vec();
                    if target.starts_with(b"/") {
                        resolved = self.root.clone();
                        depth = 0;
                    }
                    for piece in target.split(|b| *b == b'/').rev() {
                        pending.push_front(OsString::from_vec(piece.to_vec()));
                    }
                }
                Ok(meta) if meta.is_dir() => {
                    resolved = next;
                    depth += 1;
                }
                Ok(_) => {
                    return Err(ImageError::unsafe_entry(
                        name,
                        "a parent path component is not a directory",
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    create_dir(&next)?;
                    resolved = next;
                    depth += 1;
                }
                Err(e) => return Err(io_err(format!("stat {}", next.display()))(e)),
            }
        }
        Ok(Some(resolved))
    }

    /// Applies the deferred directory modes, deepest first. Returns the number of device nodes
    /// that were skipped.
    pub(crate) fn finish(mut self) -> Result<u64, ImageError> {
        self.dir_modes
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, mode) in &self.dir_modes {
            // The dir may have been deleted by a later whiteout.
            if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                    .map_err(io_err(format!("chmod {}", path.display())))?;
            }
        }
        Ok(self.skipped_devices)
    }
}

/// Splits an archive path into components, dropping empty and `.` ones; `..` is an error.
fn components(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path contains a '..' component"),
            _ => out.push(OsString::from_vec(part.to_vec())),
        }
    }
    Ok(out)
}

fn create_dir(path: &Path) -> Result<(), ImageError> {
    fs::create_dir(path).map_err(io_err(format!("creating {}", path.display())))
}

/// Removes whatever is at `path` (a directory tree, file, or the symlink itself).
fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.map_err(io_err(format!("removing {}", path.display())))
}

/// An opaque directory: delete everything below `dir` that this layer did not write.
fn remove_unwritten(dir: &Path, written: &HashSet<PathBuf>) -> Result<(), ImageError> {
    let entries = fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("reading {}", dir.display())))?;
        let path = entry.path();
        if !written.contains(&path) {
            remove_any(&path)?;
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_unwritten(&path, written)?;
        }
    }
    Ok(())
}

fn bad_tar(e: io::Error) -> ImageError {
    ImageError::InvalidArchive(format!("corrupt layer tar: {e}"))
}

#[cfg(test)]
mod tests {
    use super::components;

    #[test]
    fn splits_and_rejects_dotdot() {
        let parts = |s: &str| {
            components(s.as_bytes()).map(|v| {
                v.iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(parts("./a//b/./c/").unwrap(), ["a", "b", "c"]);
        assert_eq!(parts("/etc/x").unwrap(), ["etc", "x"]);
        assert!(parts("").unwrap().is_empty());
        assert!(parts("a/../b").is_err());
        assert!(parts("..").is_err());
        assert_eq!(parts("a/..b/c..").unwrap(), ["a", "..b", "c.."]);
    }
}
