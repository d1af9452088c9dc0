//! Snapshot export and import for the local driver: a snapshot's layers as one tar stream that
//! another data dir (this machine's after a disk loss, or another machine's) turns back into
//! the same snapshot.
//!
//! The archive (uncompressed tar; the control plane compresses, checksums and stores it):
//!
//! - `sandpit-snapshot.json` first: `{"format": 1, "layers": N}`;
//! - then every entry of layer `i` (0 = top of the stack) under `i/`: directories, regular
//!   files, symlinks and overlay whiteouts (character devices 0:0), with mode, mtime and owner
//!   **relative to the layer's uid range** (0 = the sandbox's root), and the extended
//!   attributes that mean something in another data dir (`trusted.overlay.opaque`, `user.*`)
//!   as PAX `SCHILY.xattr.*` records. Other device nodes, FIFOs and sockets are left out, and so
//!   are other xattrs (file capabilities and ACLs, which name host ids of the exporting
//!   sandbox's range). Hard links become separate files.
//!
//! Import checks every entry (a path `i/...` of plain components with `i` below N, a whiteout
//! as the only device, owners inside one range), writes into a staging directory of the data
//! dir and creates symlinks only after every other entry, so nothing is written through a link
//! and nothing lands outside the staging directory. The layers are moved into the layer store
//! and the snapshot recorded only once the input has been read to its very end without error:
//! the caller makes a corrupt or truncated object an error there (the digest is checked when
//! the stream ends), and an import that fails for any reason leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, lchown};
use std::path::{Component, Path, PathBuf};

use crate::layers::{self, Frozen, Layers};
use crate::usage;

/// The archive's first entry.
pub const MANIFEST: &str = "sandpit-snapshot.json";
/// Version of the archive layout this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest manifest accepted.
const MAX_MANIFEST: u64 = 64 << 10;
const XATTR_PAX: &str = "SCHILY.xattr.";

/// Extended attributes carried over: the overlay's opaque marker and user attributes.
fn portable_xattr(name: &str) -> bool {
    name == layers::OPAQUE_XATTR || name.starts_with("user.")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: u32,
    layers: usize,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes the layers of `stack` (top first; `mounts` gives each one's directory and owner) as
/// the archive to `out`. Returns the number of entries written.
pub fn export(layers: &Layers, stack: &[String], out: impl Write) -> io::Result<u64> {
    let mounts = layers.mounts(stack)?;
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    let manifest = serde_json::to_vec(&Manifest {
        format: FORMAT,
        layers: mounts.len(),
    })
    .map_err(io::Error::other)?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    builder.append_data(&mut header, MANIFEST, manifest.as_slice())?;
    let mut entries = 0;
    for (i, mount) in mounts.iter().enumerate() {
        let mut exporter = Exporter {
            builder: &mut builder,
            owner: mount.owner_base,
            entries: 0,
        };
        exporter.walk(&mount.path, &PathBuf::from(i.to_string()))?;
        entries += exporter.entries;
    }
    builder.into_inner()?.flush()?;
    Ok(entries)
}

struct Exporter<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    owner: u32,
    entries: u64,
}

impl<W: Write> Exporter<'_, W> {
    /// Relative id of host id `id` (outside the range: nobody).
    fn relative(&self, id: u32) -> u64 {
        match id.checked_sub(self.owner) {
            Some(k) if k < sandpit_isolation::ID_RANGE => u64::from(k),
            _ => 65534,
        }
    }

    fn walk(&mut self, path: &Path, name: &Path) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        let kind = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(self.relative(meta.uid()));
        header.set_gid(self.relative(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(0);
        let xattrs: Vec<(String, Vec<u8>)> = if kind.is_symlink() {
            Vec::new()
        } else {
            xattr::list(path)
                .map(|names| {
                    names
                        .filter_map(|n| n.into_string().ok())
                        .filter(|n| portable_xattr(n))
                        .filter_map(|n| {
                            let value = xattr::get(path, &n).ok().flatten()?;
                            Some((format!("{XATTR_PAX}{n}"), value))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        if !xattrs.is_empty() {
            self.builder
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            self.builder.append_data(&mut header, name, io::empty())?;
            self.entries += 1;
            let mut children: Vec<_> = std::fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            children.sort();
            for child in children {
                self.walk(&path.join(&child), &name.join(&child))?;
            }
        } else if kind.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            // Layers never change: the length read is the length written.
            let file = File::open(path)?;
            self.builder
                .append_data(&mut header, name, file.take(meta.len()))?;
            self.entries += 1;
        } else if kind.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = std::fs::read_link(path)?;
            self.builder.append_link(&mut header, name, target)?;
            self.entries += 1;
        } else if layers::is_whiteout(&meta) {
            header.set_entry_type(tar::EntryType::Char);
            header.set_device_major(0)?;
            header.set_device_minor(0)?;
            self.builder.append_data(&mut header, name, io::empty())?;
            self.entries += 1;
        } else {
            tracing::debug!(path = %path.display(), "export: skipping a special file");
        }
        Ok(())
    }
}

/// A directory's attributes, applied after its contents are written (a read-only directory
/// must stay writable until then; its mtime changes with every entry made in it).
struct DirAttrs {
    mode: u32,
    mtime: i64,
}

/// An archive unpacked into a staging directory of the data dir, not yet a snapshot: removed
/// on drop unless [`commit`] took its layers.
pub struct Staged {
    dir: PathBuf,
    /// Bytes of each layer, top first.
    sizes: Vec<u64>,
    owner: u32,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = crate::local::remove_dir_all_if_exists(&self.dir);
    }
}

/// Reads the archive from `input` into a staging directory, as layers owned by the range at
/// `owner`, then reads the input to its very end (where the caller reports a bad digest as an
/// error). Any error removes what was written.
pub fn stage(layers: &Layers, input: impl Read, owner: u32) -> io::Result<Staged> {
    let imports = layers.data_dir().join("imports");
    crate::local::mkdir_mode(&imports, 0o700)?;
    let dir = imports.join(layers::new_name());
    crate::local::mkdir_mode(&dir, 0o700)?;
    let mut staged = Staged {
        dir,
        sizes: Vec::new(),
        owner,
    };
    let count = unpack(&staged.dir, input, owner)?;
    staged.sizes = (0..count)
        .map(|i| usage::tree_usage(&staged.dir.join(i.to_string()), usage::MAX_WALK_ENTRIES).bytes)
        .collect();
    Ok(staged)
}

/// Moves the staged layers into the layer store and records them as snapshot `snapshot` (a
/// few renames; run it under the store's lock, as every change of the layer store).
pub fn commit(layers: &Layers, staged: Staged, snapshot: &str) -> io::Result<Frozen> {
    let mut stack = Vec::with_capacity(staged.sizes.len());
    let result = (|| {
        for (i, size) in staged.sizes.iter().enumerate() {
            let name = layers::new_name();
            let layer = layers.layer_dir(&name);
            stack.push(name);
            crate::local::mkdir_mode(&layer, 0o711)?;
            std::fs::write(layer.join("owner"), staged.owner.to_string())?;
            std::fs::write(layer.join("size"), size.to_string())?;
            std::fs::rename(staged.dir.join(i.to_string()), layer.join("tree"))?;
        }
        layers.record_snapshot(snapshot, &stack)
    })();
    if let Err(e) = result {
        for name in &stack {
            let _ = crate::local::remove_dir_all_if_exists(&layers.layer_dir(name));
        }
        return Err(e);
    }
    Ok(Frozen {
        size_bytes: staged.sizes.iter().sum(),
        stack,
    })
}

/// Unpacks the archive into `staging/<i>` (one tree per layer); returns the number of layers.
fn unpack(staging: &Path, input: impl Read, owner: u32) -> io::Result<usize> {
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries()?;
    let count = {
        let mut first = entries
            .next()
            .ok_or_else(|| invalid("the archive is empty"))??;
        if first.path()?.as_ref() != Path::new(MANIFEST) {
            return Err(invalid(format!(
                "the archive does not start with {MANIFEST}"
            )));
        }
        if first.size() > MAX_MANIFEST {
            return Err(invalid("the manifest is too large"));
        }
        let mut text = Vec::new();
        (&mut first).take(MAX_MANIFEST).read_to_end(&mut text)?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| invalid(format!("the manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(invalid(format!(
                "archive format {} is not supported (this server reads {FORMAT})",
                manifest.format
            )));
        }
        if manifest.layers > layers::MAX_DEPTH {
            return Err(invalid(format!(
                "{} layers: at most {} are allowed",
                manifest.layers,
                layers::MAX_DEPTH
            )));
        }
        manifest.layers
    };
    for i in 0..count {
        std::fs::create_dir(staging.join(i.to_string()))?;
    }
    let mut dirs: BTreeMap<PathBuf, DirAttrs> = BTreeMap::new();
    let mut links: Vec<(PathBuf, PathBuf, u32, u32)> = Vec::new();
    let shift = |id: u64| -> io::Result<u32> {
        u32::try_from(id)
            .ok()
            .filter(|id| *id < sandpit_isolation::ID_RANGE)
            .map(|id| owner + id)
            .ok_or_else(|| invalid(format!("owner id {id} is outside a sandbox's range")))
    };
    for entry in entries {
        let mut entry = entry?;
        let rel = entry.path()?.into_owned();
        let target = staged_path(staging, &rel, count)?;
        let header = entry.header().clone();
        let (uid, gid) = (shift(header.uid()?)?, shift(header.gid()?)?);
        let mode = header.mode()? & 0o7777;
        let mtime = i64::try_from(header.mtime()?).unwrap_or(0);
        let xattrs: Vec<(String, Vec<u8>)> = match entry.pax_extensions()? {
            Some(pax) => pax
                .filter_map(Result::ok)
                .filter_map(|ext| {
                    let name = ext.key().ok()?.strip_prefix(XATTR_PAX)?.to_owned();
                    portable_xattr(&name).then(|| (name, ext.value_bytes().to_vec()))
                })
                .collect(),
            None => Vec::new(),
        };
        let is_root = target.parent() == Some(staging);
        match header.entry_type() {
            tar::EntryType::Directory => {
                if !is_root {
                    match std::fs::create_dir(&target) {
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            let meta = std::fs::symlink_metadata(&target)?;
                            if !meta.is_dir() {
                                return Err(invalid(format!("{}: not a directory", rel.display())));
                            }
                        }
                        other => other?,
                    }
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
                lchown(&target, Some(uid), Some(gid))?;
                set_xattrs(&target, &xattrs)?;
                dirs.insert(target, DirAttrs { mode, mtime });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                no_root(is_root, &rel)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)?;
                io::copy(&mut entry, &mut file)?;
                lchown(&target, Some(uid), Some(gid))?;
                // After the chown, which clears setuid/setgid bits.
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
                set_xattrs(&target, &xattrs)?;
                file.set_modified(system_time(mtime))?;
            }
            tar::EntryType::Symlink => {
                no_root(is_root, &rel)?;
                let link = entry
                    .link_name()?
                    .ok_or_else(|| {
                        invalid(format!("{}: a symlink without a target", rel.display()))
                    })?
                    .into_owned();
                links.push((target, link, uid, gid));
            }
            tar::EntryType::Char => {
                no_root(is_root, &rel)?;
                if header.device_major()? != Some(0) || header.device_minor()? != Some(0) {
                    return Err(invalid(format!(
                        "{}: a device node other than a whiteout (0:0)",
                        rel.display()
                    )));
                }
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )?;
                lchown(&target, Some(uid), Some(gid))?;
            }
            other => {
                return Err(invalid(format!(
                    "{}: entry type {other:?} is not allowed in a snapshot archive",
                    rel.display()
                )));
            }
        }
    }
    // Whatever follows the archive: the caller's verdict on the digest comes at the end.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    for (path, target, uid, gid) in links {
        std::os::unix::fs::symlink(&target, &path)?;
        lchown(&path, Some(uid), Some(gid))?;
    }
    // Deepest first: setting a directory's mtime must come after its children are made.
    for (path, attrs) in dirs.iter().rev() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(attrs.mode))?;
        let t = nix::sys::time::TimeSpec::new(attrs.mtime, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )?;
    }
    Ok(count)
}

fn no_root(is_root: bool, rel: &Path) -> io::Result<()> {
    if is_root {
        return Err(invalid(format!(
            "{}: a layer's root must be a directory",
            rel.display()
        )));
    }
    Ok(())
}

fn system_time(secs: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// `staging/<i>/<rest>` for archive path `i/rest`: plain components only, `i` a layer index.
fn staged_path(staging: &Path, rel: &Path, count: usize) -> io::Result<PathBuf> {
    let mut components = rel.components();
    let layer = match components.next() {
        Some(Component::Normal(first)) => first
            .to_str()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|i| *i < count && first.to_str() == Some(&i.to_string())),
        _ => None,
    }
    .ok_or_else(|| {
        invalid(format!(
            "{}: not under a layer of the archive",
            rel.display()
        ))
    })?;
    let mut path = staging.join(layer.to_string());
    for c in components {
        match c {
            Component::Normal(part) => path.push(part),
            _ => {
                return Err(invalid(format!(
                    "{}: not a plain relative path",
                    rel.display()
                )));
            }
        }
    }
    Ok(path)
}

fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    for (name, value) in xattrs {
        xattr::set(path, name, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_stay_inside_their_layer() {
        let staging = Path::new("/s");
        assert_eq!(
            staged_path(staging, Path::new("1/a/b"), 2).unwrap(),
            Path::new("/s/1/a/b")
        );
        assert_eq!(
            staged_path(staging, Path::new("0"), 1).unwrap(),
            Path::new("/s/0")
        );
        for bad in ["2/a", "../a", "/0/a", "0/../../etc", "01/a", "x/a", "./0/a"] {
            assert!(staged_path(staging, Path::new(bad), 2).is_err(), "{bad}");
        }
    }
}
