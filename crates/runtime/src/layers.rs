//! Snapshot layers of the local driver: a sandbox's writable layer frozen into an immutable
//! directory, stacked read-only under a fresh writable layer (its own and its children's).
//!
//! On disk, under the data dir:
//!
//! - `layers/<layer>/tree/`: an overlay upper dir exactly as the sandbox left it (whiteouts and
//!   opaque directories included), owned by the host uid range whose first uid is in
//!   `layers/<layer>/owner`; `layers/<layer>/size` holds its bytes. Never changed once written,
//!   and self-contained: one directory per layer, so a layer can be exported as it is.
//! - `snapshots/<snapshot>`: the snapshot's stack, layer names top first, one a line.
//! - `sandboxes/<id>/layers`: the stack under that sandbox's writable layer (absent: none).
//!
//! A layer is deleted once no snapshot and no sandbox lists it ([`Layers::collect_garbage`]):
//! reference counting by listing, so a crash can leave at most an unreferenced directory that
//! the next collection removes. Stacks deeper than [`MAX_DEPTH`] are squashed into one layer
//! when a snapshot would pass it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, chown, lchown};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sandpit_isolation::launch::LayerMount;

use crate::usage;

/// Most layers under a writable layer; a snapshot that would stack more squashes them into one.
/// Each layer is one idmapped mount and one `lowerdir` entry (the overlay's options must fit in
/// a page), and lookups cost a little per layer.
pub const MAX_DEPTH: usize = 16;

/// The file listing a sandbox's stack, in its sandbox dir.
pub const STACK_FILE: &str = "layers";
/// A stack being switched to by [`Layers::freeze`] (see [`Layers::recover`]).
const STACK_NEW: &str = "layers.new";
/// The overlay's marker of an opaque directory.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh layer name (unique in one data dir: time, pid and a counter).
pub(crate) fn new_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "l{nanos:x}-{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Snapshot and layer names are single path components of `[A-Za-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What freezing a writable layer made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    /// The sandbox's stack now (and the snapshot's), top first.
    pub stack: Vec<String>,
    /// Bytes of the layers of the stack.
    pub size_bytes: u64,
}

/// The layer store of one data dir. Callers serialise changes with their own lock.
#[derive(Debug, Clone)]
pub struct Layers {
    data_dir: PathBuf,
}

fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn read_list(path: &Path) -> io::Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn list_text(stack: &[String]) -> String {
    stack.iter().map(|l| format!("{l}\n")).collect()
}

impl Layers {
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn new(data_dir: &Path) -> io::Result<Self> {
        for dir in ["layers", "snapshots"] {
            crate::local::mkdir_mode(&data_dir.join(dir), 0o711)?;
        }
        Ok(Layers {
            data_dir: data_dir.to_path_buf(),
        })
    }

    pub(crate) fn layer_dir(&self, layer: &str) -> PathBuf {
        self.data_dir.join("layers").join(layer)
    }

    fn snapshot_file(&self, snapshot: &str) -> PathBuf {
        self.data_dir.join("snapshots").join(snapshot)
    }

    /// The stack under sandbox dir `dir`'s writable layer, top first.
    pub fn stack_of(&self, dir: &Path) -> io::Result<Vec<String>> {
        read_list(&dir.join(STACK_FILE))
    }

    /// The stack of a snapshot; `None` when there is no such snapshot.
    pub fn snapshot_stack(&self, snapshot: &str) -> io::Result<Option<Vec<String>>> {
        if !valid_name(snapshot) || !self.snapshot_file(snapshot).is_file() {
            return Ok(None);
        }
        read_list(&self.snapshot_file(snapshot)).map(Some)
    }

    /// The mounts of a stack, for the launcher.
    pub fn mounts(&self, stack: &[String]) -> io::Result<Vec<LayerMount>> {
        stack
            .iter()
            .map(|layer| {
                let dir = self.layer_dir(layer);
                let owner = std::fs::read_to_string(dir.join("owner"))?
                    .trim()
                    .parse::<u32>()
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("{layer}: owner: {e}"))
                    })?;
                Ok(LayerMount {
                    path: dir.join("tree"),
                    owner_base: owner,
                })
            })
            .collect()
    }

    /// Bytes of the layers of `stack` (as recorded when each was frozen).
    pub fn size_of(&self, stack: &[String]) -> u64 {
        stack
            .iter()
            .filter_map(|l| std::fs::read_to_string(self.layer_dir(l).join("size")).ok())
            .filter_map(|s| s.trim().parse::<u64>().ok())
            .sum()
    }

    /// Finishes or undoes a [`Layers::freeze`] a crash interrupted in sandbox dir `dir`: if the
    /// writable layer was already moved into its layer, the new stack is taken; otherwise the
    /// new stack is dropped (its layer, unreferenced, goes at the next collection).
    pub fn recover(&self, dir: &Path) -> io::Result<()> {
        let pending = dir.join(STACK_NEW);
        if !pending.exists() {
            return Ok(());
        }
        if dir.join("upper").exists() {
            std::fs::remove_file(&pending)
        } else {
            std::fs::rename(&pending, dir.join(STACK_FILE))
        }
    }

    /// Freezes the writable layer (`upper/`) of the stopped sandbox in dir `dir`, whose files
    /// belong to the range at `owner`, into a new layer on top of its stack, and gives it a
    /// fresh empty writable layer. Constant time whatever the layer holds (one rename), except
    /// every [`MAX_DEPTH`] snapshots of one lineage, when the stack is squashed. An empty
    /// writable layer adds no layer.
    pub fn freeze(&self, dir: &Path, owner: u32) -> io::Result<Frozen> {
        self.recover(dir)?;
        let old = self.stack_of(dir)?;
        let upper = dir.join("upper");
        let empty = std::fs::read_dir(&upper).map_or(true, |mut d| d.next().is_none());
        if empty {
            return Ok(Frozen {
                size_bytes: self.size_of(&old),
                stack: old,
            });
        }
        let name = new_name();
        let layer = self.layer_dir(&name);
        crate::local::mkdir_mode(&layer, 0o711)?;
        std::fs::write(layer.join("owner"), owner.to_string())?;
        let size = usage::tree_usage(&upper, usage::MAX_WALK_ENTRIES).bytes;
        std::fs::write(layer.join("size"), size.to_string())?;
        let mut stack = vec![name];
        stack.extend(old);
        // The switch: the new stack is written aside, the writable layer moved into the layer
        // (one rename), then the stack file replaced. `recover` completes or undoes it.
        write_atomic(&dir.join(STACK_NEW), list_text(&stack).as_bytes())?;
        std::fs::rename(&upper, layer.join("tree"))?;
        std::fs::rename(dir.join(STACK_NEW), dir.join(STACK_FILE))?;
        // A fresh writable layer and work dir (the old work dir belonged to the old upper).
        crate::local::remove_dir_all_if_exists(&dir.join("work"))?;
        for (name, mode) in [("upper", 0o755), ("work", 0o700)] {
            let d = dir.join(name);
            crate::local::mkdir_mode(&d, mode)?;
            chown(&d, Some(owner), Some(owner))?;
        }
        if stack.len() > MAX_DEPTH {
            let squashed = self.squash(&stack, owner)?;
            stack = vec![squashed];
            write_atomic(&dir.join(STACK_FILE), list_text(&stack).as_bytes())?;
        }
        Ok(Frozen {
            size_bytes: self.size_of(&stack),
            stack,
        })
    }

    /// Records `stack` as snapshot `snapshot`.
    pub fn record_snapshot(&self, snapshot: &str, stack: &[String]) -> io::Result<()> {
        write_atomic(&self.snapshot_file(snapshot), list_text(stack).as_bytes())
    }

    /// Gives the sandbox in dir `dir` (new: no writable layer yet) the snapshot's stack.
    pub fn seed(&self, dir: &Path, stack: &[String]) -> io::Result<()> {
        crate::local::mkdir_mode(dir, 0o711)?;
        write_atomic(&dir.join(STACK_FILE), list_text(stack).as_bytes())
    }

    /// Forgets a snapshot (its layers stay while sandboxes use them).
    pub fn forget_snapshot(&self, snapshot: &str) -> io::Result<()> {
        if !valid_name(snapshot) {
            return Ok(());
        }
        match std::fs::remove_file(self.snapshot_file(snapshot)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes every layer that no snapshot and no sandbox lists.
    pub fn collect_garbage(&self) -> io::Result<()> {
        let mut used = BTreeSet::new();
        for entry in std::fs::read_dir(self.data_dir.join("snapshots"))?.flatten() {
            if !entry.file_name().to_string_lossy().ends_with(".tmp") {
                used.extend(read_list(&entry.path())?);
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.data_dir.join("sandboxes")) {
            for entry in entries.flatten() {
                for file in [STACK_FILE, STACK_NEW] {
                    used.extend(read_list(&entry.path().join(file))?);
                }
            }
        }
        for entry in std::fs::read_dir(self.data_dir.join("layers"))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !used.contains(&name) {
                tracing::debug!(layer = %name, "deleting an unused layer");
                crate::local::remove_dir_all_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Merges the layers of `stack` (top first) into one new layer owned by the range at
    /// `owner`, as the overlay would show them over any image: whiteouts and opaque
    /// directories are kept where they hide something below. Files of layers with the same
    /// owner are hard links (layers never change), others are copied with shifted owners.
    fn squash(&self, stack: &[String], owner: u32) -> io::Result<String> {
        let name = new_name();
        let layer = self.layer_dir(&name);
        crate::local::mkdir_mode(&layer, 0o711)?;
        std::fs::write(layer.join("owner"), owner.to_string())?;
        let tree = layer.join("tree.tmp");
        crate::local::remove_dir_all_if_exists(&tree)?;
        let mounts = self.mounts(stack)?;
        let bottom = mounts
            .last()
            .map(|m| m.path.clone())
            .ok_or_else(|| io::Error::other("empty stack"))?;
        // The bottom layer's root dir gives the tree's root attributes.
        std::fs::create_dir(&tree)?;
        copy_attrs(
            &bottom,
            &tree,
            Shift::new(mounts[mounts.len() - 1].owner_base, owner),
        )?;
        for mount in mounts.iter().rev() {
            apply(&mount.path, &tree, Shift::new(mount.owner_base, owner))?;
        }
        let size = usage::tree_usage(&tree, usage::MAX_WALK_ENTRIES).bytes;
        std::fs::write(layer.join("size"), size.to_string())?;
        std::fs::rename(&tree, layer.join("tree"))?;
        Ok(name)
    }
}

/// Moves ids of one 65536-id range to another; ids outside it (root-owned whiteouts) stay.
#[derive(Debug, Clone, Copy)]
struct Shift {
    from: u32,
    to: u32,
}

impl Shift {
    fn new(from: u32, to: u32) -> Self {
        Shift { from, to }
    }

    fn id(self, id: u32) -> u32 {
        match id.checked_sub(self.from) {
            Some(k) if k < sandpit_isolation::ID_RANGE => self.to + k,
            _ => id,
        }
    }

    fn identity(self) -> bool {
        self.from == self.to
    }
}

pub(crate) fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    matches!(xattr::get(path, OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

/// Removes whatever is at `path` (nothing there is fine).
fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Owner, mode and extended attributes of `src` onto `dst` (a directory or file we made).
fn copy_attrs(src: &Path, dst: &Path, shift: Shift) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    lchown(dst, Some(shift.id(meta.uid())), Some(shift.id(meta.gid())))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    if let Ok(names) = xattr::list(src) {
        for name in names {
            if name.to_string_lossy().starts_with("trusted.overlay.") {
                continue;
            }
            if let Ok(Some(value)) = xattr::get(src, &name) {
                let _ = xattr::set(dst, &name, &value);
            }
        }
    }
    Ok(())
}

/// Applies layer `src` over the merged tree `dst`, as the overlay puts an upper layer over a
/// lower one.
fn apply(src: &Path, dst: &Path, shift: Shift) -> io::Result<()> {
    let mut entries: Vec<(OsString, PathBuf)> = std::fs::read_dir(src)?
        .map(|e| e.map(|e| (e.file_name(), e.path())))
        .collect::<io::Result<_>>()?;
    entries.sort();
    for (name, from) in entries {
        let to = dst.join(&name);
        let meta = std::fs::symlink_metadata(&from)?;
        if is_whiteout(&meta) {
            remove_any(&to)?;
            nix::sys::stat::mknod(
                &to,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )?;
        } else if meta.is_dir() {
            let existing = std::fs::symlink_metadata(&to).ok();
            let opaque = is_opaque(&from);
            let merge = existing.as_ref().is_some_and(|m| m.is_dir()) && !opaque;
            if !merge {
                remove_any(&to)?;
                std::fs::create_dir(&to)?;
                // Over a non-directory, a whiteout or nothing merged yet: whatever is below
                // (the image) must stay hidden only if something here hid it before.
                if opaque || existing.is_some() {
                    xattr::set(&to, OPAQUE_XATTR, b"y")?;
                }
            }
            copy_attrs(&from, &to, shift)?;
            apply(&from, &to, shift)?;
        } else {
            remove_any(&to)?;
            let kind = meta.file_type();
            if kind.is_file() && shift.identity() {
                std::fs::hard_link(&from, &to)?;
                continue;
            }
            if kind.is_file() {
                std::fs::copy(&from, &to)?;
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else {
                let sflag = if kind.is_fifo() {
                    nix::sys::stat::SFlag::S_IFIFO
                } else if kind.is_socket() {
                    nix::sys::stat::SFlag::S_IFSOCK
                } else if kind.is_block_device() {
                    nix::sys::stat::SFlag::S_IFBLK
                } else {
                    nix::sys::stat::SFlag::S_IFCHR
                };
                nix::sys::stat::mknod(
                    &to,
                    sflag,
                    nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777),
                    meta.rdev(),
                )?;
            }
            copy_attrs(&from, &to, shift)?;
            if !kind.is_symlink() {
                let mtime = filetime_of(&meta);
                let _ = nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    &to,
                    &mtime,
                    &mtime,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn filetime_of(meta: &std::fs::Metadata) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name(&new_name()));
        assert_ne!(new_name(), new_name());
        for bad in ["", ".", "..", "a/b", ".x", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn shift_moves_only_the_range() {
        let s = Shift::new(165_536, 100_000);
        assert_eq!(s.id(165_536), 100_000);
        assert_eq!(s.id(165_536 + 1000), 101_000);
        assert_eq!(s.id(0), 0);
        assert_eq!(s.id(231_072), 231_072);
    }

    /// Root-only: whiteouts need mknod and opaque markers trusted xattrs.
    #[test]
    fn squash_keeps_what_the_overlay_would_show() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layers = Layers::new(tmp.path()).unwrap();
        let make = |files: &[(&str, Option<&str>)], opaque: &[&str]| {
            let name = new_name();
            let dir = layers.layer_dir(&name);
            std::fs::create_dir_all(dir.join("tree")).unwrap();
            std::fs::write(dir.join("owner"), "100000").unwrap();
            for (path, content) in files {
                let p = dir.join("tree").join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                match content {
                    Some(c) if c.ends_with('/') => std::fs::create_dir_all(&p).unwrap(),
                    Some(c) => std::fs::write(&p, c).unwrap(),
                    None => nix::sys::stat::mknod(
                        &p,
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::empty(),
                        0,
                    )
                    .unwrap(),
                }
            }
            for dir_path in opaque {
                xattr::set(dir.join("tree").join(dir_path), OPAQUE_XATTR, b"y").unwrap();
            }
            name
        };
        let bottom = make(
            &[("a", Some("1")), ("d/x", Some("x")), ("gone", Some("g"))],
            &[],
        );
        let middle = make(&[("a", Some("2")), ("gone", None), ("d/y", Some("y"))], &[]);
        let top = make(
            &[("d/", Some("/")), ("d/z", Some("z")), ("new", Some("n"))],
            &["d"],
        );
        let squashed = layers.squash(&[top, middle, bottom], 100_000).unwrap();
        let tree = layers.layer_dir(&squashed).join("tree");
        assert_eq!(std::fs::read_to_string(tree.join("a")).unwrap(), "2");
        assert_eq!(std::fs::read_to_string(tree.join("new")).unwrap(), "n");
        // The opaque dir of the top layer hides what lower layers had in it.
        assert_eq!(std::fs::read_to_string(tree.join("d/z")).unwrap(), "z");
        assert!(!tree.join("d/x").exists() && !tree.join("d/y").exists());
        assert!(is_opaque(&tree.join("d")));
        // A deletion stays a whiteout, hiding the file in the image below.
        assert!(is_whiteout(
            &std::fs::symlink_metadata(tree.join("gone")).unwrap()
        ));
    }
}
