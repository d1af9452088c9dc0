//! Directory backups, inside the sandbox: a tar stream of a directory as the sandbox sees it,
//! and its safe, atomic extraction.
//!
//! Both run in the agent, so they see exactly the sandbox's view (overlay, mounts) and act with
//! the sandbox's own (unprivileged) identity: whatever an archive holds, extraction cannot reach
//! a path the sandbox itself cannot write. The host only moves, compresses and checks bytes.
//!
//! * [`write_archive`] walks the directory without following symlinks (a symlink is stored as a
//!   symlink, whatever it points at) and without crossing into other filesystems (bucket mounts,
//!   `/proc`); it honours `excludes` (gitignore-style globs relative to the directory) and, with
//!   `gitignore`, the `.gitignore` files in the tree. Regular files, directories and symlinks
//!   are stored with their mode, owner and mtime; sockets, FIFOs and devices are skipped, hard
//!   links are stored as separate files.
//! * [`extract`] unpacks into a fresh staging directory beside the target, then swaps it in with
//!   one `renameat2(RENAME_EXCHANGE)` (or a rename when the target does not exist) and removes
//!   the old tree. The swap happens only once the stream reached a clean end; any error before
//!   (a broken stream, a bad entry, a full disk) removes the staging directory and leaves the
//!   target as it was. Entries with absolute paths or `..` are refused; symlinks are created
//!   after every other entry, and no entry is written through an existing symlink, so an
//!   archive cannot make extraction write outside the staging directory. Runs of zeros are
//!   left as holes (sparse files stay sparse).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the archive stream broke: {0}")]
    Stream(#[source] io::Error),
    #[error(
        "unsafe archive entry {0:?}: absolute paths, `..` and writes through symlinks are refused"
    )]
    UnsafeEntry(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What to archive.
#[derive(Debug, Clone, Default)]
pub struct ArchiveOptions {
    /// Gitignore-style globs, relative to the directory, of paths to leave out.
    pub excludes: Vec<String>,
    /// Also honour the `.gitignore` files found in the tree.
    pub gitignore: bool,
}

/// Counts of what was archived or extracted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub file_bytes: u64,
    /// Entries left out (special files, hard links in an archive).
    pub skipped: u64,
}

/// Checks that `dir` is an existing directory (not a symlink to one).
pub fn check_dir(dir: &Path) -> Result<(), BackupError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(BackupError::Invalid(format!(
            "dir is a symlink, not a directory: {}",
            dir.display()
        ))),
        Ok(_) => Err(BackupError::Invalid(format!(
            "dir is not a directory: {}",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BackupError::Invalid(format!(
            "dir does not exist: {}",
            dir.display()
        ))),
        Err(e) => Err(BackupError::Io {
            path: dir.display().to_string(),
            source: e,
        }),
    }
}

/// Writes a tar stream of `dir` to `out`.
pub fn write_archive(
    dir: &Path,
    options: &ArchiveOptions,
    out: impl ArchiveSink,
) -> Result<Stats, BackupError> {
    check_dir(dir)?;
    let mut overrides = ignore::overrides::OverrideBuilder::new(dir);
    for pattern in &options.excludes {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            continue;
        }
        overrides
            .add(&format!("!{pattern}"))
            .map_err(|e| BackupError::Invalid(format!("excludes: {pattern:?}: {e}")))?;
    }
    let overrides = overrides
        .build()
        .map_err(|e| BackupError::Invalid(format!("excludes: {e}")))?;
    let walker = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .hidden(false)
        .git_ignore(options.gitignore)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .same_file_system(true)
        .overrides(overrides)
        .build();

    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut stats = Stats::default();
    for item in walker {
        let entry =
            item.map_err(|e| BackupError::Invalid(format!("walking {}: {e}", dir.display())))?;
        let path = entry.path();
        let rel = match path.strip_prefix(dir) {
            Ok(r) if r.as_os_str().is_empty() => PathBuf::from("."),
            Ok(r) => r.to_path_buf(),
            Err(_) => continue,
        };
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            // Removed while we walked: not part of the backup.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_at(path)(e)),
        };
        let ft = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder
                .append_data(&mut header, &rel, io::empty())
                .map_err(BackupError::Stream)?;
        } else if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(path)(e)),
            };
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, &rel, &target)
                .map_err(BackupError::Stream)?;
        } else if ft.is_file() {
            // O_NOFOLLOW: a file swapped for a symlink after the walk is not followed;
            // O_NONBLOCK: nor does a FIFO swapped in block the open.
            let file = match fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => continue,
                Err(e) => return Err(io_at(path)(e)),
            };
            let meta = file.metadata().map_err(io_at(path))?;
            if !meta.is_file() {
                stats.skipped += 1;
                continue;
            }
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            let size = meta.len();
            // Fewer blocks than bytes: it has holes; store only its data (a GNU sparse entry).
            let segments = if meta.blocks().saturating_mul(512) < size {
                data_segments(&file, size)
            } else {
                None
            };
            match segments {
                Some(segments) => append_sparse(
                    &mut builder,
                    &mut header,
                    &rel,
                    &file,
                    path,
                    size,
                    &segments,
                )?,
                None => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(size);
                    // The header alone, then the data straight from the file in large pieces
                    // (the tar writer would copy it 8 KiB at a time, twice).
                    builder
                        .append_data(&mut header, &rel, io::empty())
                        .map_err(BackupError::Stream)?;
                    copy_data(builder.get_mut(), &file, path, 0, size)?;
                    pad_block(builder.get_mut(), size)?;
                }
            }
            stats.file_bytes += size;
        } else {
            stats.skipped += 1;
            continue;
        }
        stats.entries += 1;
    }
    builder
        .into_inner()
        .map_err(BackupError::Stream)?
        .flush()
        .map_err(BackupError::Stream)?;
    Ok(stats)
}

/// Where [`write_archive`] writes: any `Write`, plus [`ArchiveSink::put_piece`], which takes a
/// piece of file data whole so that a sink that can keep it (the agent's HTTP body) sends it
/// without another copy.
pub trait ArchiveSink: Write {
    /// Writes all of `piece`.
    fn put_piece(&mut self, piece: Vec<u8>) -> io::Result<()> {
        self.write_all(&piece)
    }
}

impl ArchiveSink for Vec<u8> {}

impl<S: ArchiveSink + ?Sized> ArchiveSink for &mut S {
    fn put_piece(&mut self, piece: Vec<u8>) -> io::Result<()> {
        (**self).put_piece(piece)
    }
}

/// Size of the reads of a file being archived.
const READ_PIECE: usize = 1 << 20;

/// Most data segments a sparse file is stored with; one with more is stored whole.
const MAX_SEGMENTS: usize = 4096;

/// Entries of a sparse map in a GNU header, and in each extension block after it.
const MAP_IN_HEADER: usize = 4;
const MAP_PER_EXTENSION: usize = 21;

/// Sends `len` bytes of `file` from offset `at` to `out`, in pieces of [`READ_PIECE`]: exactly
/// `len` bytes even if the file changes meanwhile (zeros where it shrank), so the stream stays
/// a valid archive.
fn copy_data(
    out: &mut impl ArchiveSink,
    file: &File,
    path: &Path,
    mut at: u64,
    len: u64,
) -> Result<(), BackupError> {
    use std::os::unix::fs::FileExt;
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(READ_PIECE as u64)).unwrap_or(READ_PIECE);
        let mut piece = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match file.read_at(&mut piece[filled..], at + filled as u64) {
                // Shrunk meanwhile: the rest stays zeros.
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_at(path)(e)),
            }
        }
        out.put_piece(piece).map_err(BackupError::Stream)?;
        at += want as u64;
        left -= want as u64;
    }
    Ok(())
}

/// Pads an entry's `len` bytes of data to a whole number of 512-byte blocks.
fn pad_block(out: &mut impl Write, len: u64) -> Result<(), BackupError> {
    let rest = (len % 512) as usize;
    if rest > 0 {
        out.write_all(&[0u8; 512][rest..])
            .map_err(BackupError::Stream)?;
    }
    Ok(())
}

/// The data segments `(offset, length)` of a file with holes (`SEEK_DATA`/`SEEK_HOLE`), on
/// 512-byte boundaries (every segment but a last one that ends at `size` is a whole number of
/// blocks, as the GNU sparse format wants). `None`: store the file whole (no holes found, the
/// file system cannot tell, or more than [`MAX_SEGMENTS`]).
fn data_segments(file: &File, size: u64) -> Option<Vec<(u64, u64)>> {
    use nix::unistd::{Whence, lseek};
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match lseek(file, i64::try_from(at).ok()?, Whence::SeekData) {
            Ok(s) => u64::try_from(s).ok()?,
            // Nothing but a hole from `at` to the end.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(_) => return None,
        };
        if start >= size {
            break;
        }
        let end = match lseek(file, i64::try_from(start).ok()?, Whence::SeekHole) {
            Ok(e) => u64::try_from(e).ok()?.min(size),
            Err(_) => return None,
        };
        if end <= start {
            return None;
        }
        let from = start / 512 * 512;
        let to = end.div_ceil(512).saturating_mul(512).min(size);
        match out.last_mut() {
            Some(last) if from <= last.0 + last.1 => {
                last.1 = to.max(last.0 + last.1) - last.0;
            }
            _ => out.push((from, to - from)),
        }
        if out.len() > MAX_SEGMENTS {
            return None;
        }
        at = end;
    }
    if out.len() == 1 && out[0] == (0, size) {
        return None;
    }
    Some(out)
}

/// Appends `file` as a GNU sparse entry (type `S`, the format GNU tar writes with `--sparse`
/// and the `tar` crate reads): the header holds the real size and the first
/// [`MAP_IN_HEADER`] segments, extension blocks the rest, and only the segments' bytes follow.
fn append_sparse<S: ArchiveSink>(
    builder: &mut tar::Builder<S>,
    header: &mut tar::Header,
    rel: &Path,
    file: &File,
    path: &Path,
    size: u64,
    segments: &[(u64, u64)],
) -> Result<(), BackupError> {
    let stored: u64 = segments.iter().map(|s| s.1).sum();
    // Ended by an empty segment at the end of the file, as GNU tar writes it.
    let mut map = segments.to_vec();
    map.push((size, 0));
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(stored);
    let gnu = header
        .as_gnu_mut()
        .ok_or_else(|| BackupError::Invalid("not a GNU tar header".into()))?;
    gnu.set_real_size(size);
    for (slot, (offset, len)) in gnu.sparse.iter_mut().zip(&map) {
        slot.set_offset(*offset);
        slot.set_length(*len);
    }
    let rest = map.get(MAP_IN_HEADER..).unwrap_or(&[]);
    gnu.set_is_extended(!rest.is_empty());
    let blocks: Vec<&[(u64, u64)]> = rest.chunks(MAP_PER_EXTENSION).collect();
    let mut extensions = Vec::with_capacity(blocks.len() * 512);
    for (i, chunk) in blocks.iter().enumerate() {
        let mut ext = tar::GnuExtSparseHeader::new();
        for (slot, (offset, len)) in ext.sparse.iter_mut().zip(chunk.iter()) {
            slot.set_offset(*offset);
            slot.set_length(*len);
        }
        ext.set_is_extended(i + 1 < blocks.len());
        extensions.extend_from_slice(ext.as_bytes());
    }
    builder
        .append_data(header, rel, io::empty())
        .map_err(BackupError::Stream)?;
    let out = builder.get_mut();
    out.write_all(&extensions).map_err(BackupError::Stream)?;
    for (offset, len) in segments {
        copy_data(out, file, path, *offset, *len)?;
    }
    pad_block(out, stored)
}

/// Unpacks the tar stream `input` into `dir`, atomically replacing what is there (see the
/// module docs). `input` must end cleanly (EOF, not an error) for the swap to happen.
pub fn extract(dir: &Path, input: impl Read) -> Result<Stats, BackupError> {
    let name = dir
        .file_name()
        .ok_or_else(|| BackupError::Invalid(format!("cannot restore into {}", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = dir
        .parent()
        .ok_or_else(|| BackupError::Invalid(format!("cannot restore into {}", dir.display())))?;
    fs::create_dir_all(parent).map_err(io_at(parent))?;
    match fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(BackupError::Invalid(format!(
                "restore target exists and is not a directory: {}",
                dir.display()
            )));
        }
        _ => {}
    }
    let tag = format!("{:016x}", rand::random::<u64>());
    // A target that is a mount point (e.g. `/workspace`) cannot be renamed: stage inside it
    // and move the entries over (see `commit_inside`).
    let inside = is_mount_point(dir);
    let staging = if inside {
        dir.join(format!(".sandpit-restore-{tag}"))
    } else {
        parent.join(format!(".{name}.sandpit-restore-{tag}"))
    };
    fs::create_dir(&staging).map_err(io_at(&staging))?;
    let guard = RemoveOnDrop(Some(staging.clone()));
    let stats = unpack_into(&staging, input)?;
    // The staging tree is complete: swap it in.
    if inside {
        commit_inside(dir, &staging, &tag)?;
    } else if fs::symlink_metadata(dir).is_ok() {
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &staging,
            nix::fcntl::AT_FDCWD,
            dir,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        ) {
            // `staging` now holds the old tree; the guard removes it.
            Ok(()) => {}
            // overlayfs refuses to move a directory of the image's layer: move the entries.
            Err(nix::errno::Errno::EXDEV) => commit_inside(dir, &staging, &tag)?,
            Err(e) => return Err(io_at(dir)(io::Error::from(e))),
        }
    } else {
        fs::rename(&staging, dir).map_err(io_at(dir))?;
    }
    drop(guard);
    Ok(stats)
}

/// Whether `dir` is a mount point of this mount namespace (`/proc/self/mountinfo`).
fn is_mount_point(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|m| Path::new(&unescape_mountinfo(m)) == dir)
    })
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces the content of `dir` with that of `staging` (inside `dir`, or beside it when
/// overlayfs refused to exchange the two):
/// the old entries move into a sibling holding directory, the new ones up, and the holding
/// directory is removed. Renames within one filesystem, so nothing is copied; a failed rename
/// moves everything back. Not one atomic step like the exchange, but it starts only once the
/// whole archive is unpacked and checked.
fn commit_inside(dir: &Path, staging: &Path, tag: &str) -> Result<(), BackupError> {
    let old = dir.join(format!(".sandpit-old-{tag}"));
    fs::create_dir(&old).map_err(io_at(&old))?;
    let _old_guard = RemoveOnDrop(Some(old.clone()));
    let names = |d: &Path, skip: &[&Path]| -> Result<Vec<std::ffi::OsString>, BackupError> {
        let mut out = Vec::new();
        for e in fs::read_dir(d).map_err(io_at(d))? {
            let e = e.map_err(io_at(d))?;
            if !skip.iter().any(|s| e.path() == *s) {
                out.push(e.file_name());
            }
        }
        Ok(out)
    };
    let old_names = names(dir, &[staging, &old])?;
    let mut moved_out = Vec::new();
    for n in &old_names {
        if let Err(e) = fs::rename(dir.join(n), old.join(n)) {
            for m in &moved_out {
                let _ = fs::rename(old.join(m), dir.join(m));
            }
            return Err(io_at(dir)(e));
        }
        moved_out.push(n.clone());
    }
    let new_names = names(staging, &[])?;
    let mut moved_in = Vec::new();
    for n in &new_names {
        if let Err(e) = fs::rename(staging.join(n), dir.join(n)) {
            for m in &moved_in {
                let _ = fs::rename(dir.join(m), staging.join(m));
            }
            for m in &moved_out {
                let _ = fs::rename(old.join(m), dir.join(m));
            }
            return Err(io_at(dir)(e));
        }
        moved_in.push(n.clone());
    }
    // The archive's own `.` entry set the staging directory's mode and mtime.
    if let Ok(meta) = fs::metadata(staging) {
        let _ = fs::set_permissions(dir, meta.permissions());
        let mtime = (meta.mtime(), meta.mtime_nsec());
        set_times(dir, mtime, true);
    }
    Ok(())
}

/// Removes a directory tree when dropped (unless taken).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = make_writable_and_remove(&path);
        }
    }
}

/// `remove_dir_all`, after giving the owner write permission on directories that lack it.
fn make_writable_and_remove(path: &Path) -> io::Result<()> {
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
        }
    }
    fs::remove_dir_all(path)
}

/// A directory's attributes, applied once its content is in place.
struct DirAttrs {
    path: PathBuf,
    mode: u32,
    mtime: (i64, i64),
    owner: Option<(u32, u32)>,
}

/// A symlink to create once every other entry is in place: path, target, mtime, owner.
type PendingLink = (PathBuf, PathBuf, (i64, i64), Option<(u32, u32)>);

const PIECE: usize = 1 << 20;
const HOLE_GRAIN: usize = 64 * 1024;

fn unpack_into(root: &Path, mut input: impl Read) -> Result<Stats, BackupError> {
    let mut stats = Stats::default();
    let mut dirs: Vec<DirAttrs> = Vec::new();
    let mut links: Vec<PendingLink> = Vec::new();
    let mut made: HashSet<PathBuf> = HashSet::new();
    let is_root = nix::unistd::geteuid().is_root();
    let mut buf = vec![0u8; PIECE];
    {
        let mut archive = tar::Archive::new(&mut input);
        let entries = archive.entries().map_err(BackupError::Stream)?;
        for entry in entries {
            let mut entry = entry.map_err(BackupError::Stream)?;
            let raw = entry.path().map_err(BackupError::Stream)?.into_owned();
            let rel = safe_relative(&raw)?;
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let mtime = (header.mtime().unwrap_or(0) as i64, 0);
            let owner = match (header.uid(), header.gid()) {
                (Ok(u), Ok(g)) if is_root => Some((u as u32, g as u32)),
                _ => None,
            };
            let kind = header.entry_type();
            let target = root.join(&rel);
            match kind {
                tar::EntryType::Directory => {
                    if rel.as_os_str().is_empty() {
                        dirs.push(DirAttrs {
                            path: root.to_path_buf(),
                            mode,
                            mtime,
                            owner,
                        });
                    } else {
                        ensure_dirs(root, &rel, true, &mut made)?;
                        dirs.push(DirAttrs {
                            path: target,
                            mode,
                            mtime,
                            owner,
                        });
                    }
                }
                // `S`: a GNU sparse entry (what `write_archive` stores a file with holes as);
                // the tar reader fills its holes with zeros, which become holes again below.
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    if rel.as_os_str().is_empty() {
                        return Err(BackupError::UnsafeEntry(raw.display().to_string()));
                    }
                    ensure_dirs(root, &rel, false, &mut made)?;
                    let size = entry.size();
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .mode(0o600)
                        .open(&target)
                        .map_err(io_at(&target))?;
                    write_sparse(&mut entry, &mut file, size, &mut buf, &target)?;
                    if let Some((u, g)) = owner {
                        let _ = std::os::unix::fs::fchown(&file, Some(u), Some(g));
                    }
                    file.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(io_at(&target))?;
                    // Through the open file: no second path lookup.
                    let t = TimeSpec::new(mtime.0, mtime.1);
                    let _ = nix::sys::stat::futimens(&file, &t, &t);
                    stats.file_bytes += size;
                }
                tar::EntryType::Symlink => {
                    if rel.as_os_str().is_empty() {
                        return Err(BackupError::UnsafeEntry(raw.display().to_string()));
                    }
                    let link = entry
                        .link_name()
                        .map_err(BackupError::Stream)?
                        .ok_or_else(|| BackupError::UnsafeEntry(raw.display().to_string()))?
                        .into_owned();
                    links.push((rel, link, mtime, owner));
                }
                _ => {
                    stats.skipped += 1;
                    continue;
                }
            }
            stats.entries += 1;
        }
    }
    // The archive's end marker is not the stream's end: only a clean EOF says the sender
    // finished (a sender that detects a bad checksum breaks the stream instead).
    io::copy(&mut input, &mut io::sink()).map_err(BackupError::Stream)?;

    for (rel, link, mtime, owner) in links {
        ensure_dirs(root, &rel, false, &mut made)?;
        let target = root.join(&rel);
        if fs::symlink_metadata(&target).is_ok() {
            return Err(BackupError::UnsafeEntry(rel.display().to_string()));
        }
        std::os::unix::fs::symlink(&link, &target).map_err(io_at(&target))?;
        if let Some((u, g)) = owner {
            let _ = std::os::unix::fs::lchown(&target, Some(u), Some(g));
        }
        set_times(&target, mtime, true);
    }
    // Deepest first, so a read-only parent is made read-only after its children are done.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in dirs {
        if let Some((u, g)) = d.owner {
            let _ = std::os::unix::fs::lchown(&d.path, Some(u), Some(g));
        }
        fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode)).map_err(io_at(&d.path))?;
        set_times(&d.path, d.mtime, true);
    }
    Ok(stats)
}

/// Writes `size` bytes from `from` into `file`, leaving holes for all-zero runs.
fn write_sparse(
    from: &mut impl Read,
    file: &mut File,
    size: u64,
    buf: &mut [u8],
    path: &Path,
) -> Result<(), BackupError> {
    let mut left = size;
    let mut pending_hole: i64 = 0;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = from.read(&mut buf[..want]).map_err(BackupError::Stream)?;
        if n == 0 {
            return Err(BackupError::Stream(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ended inside a file",
            )));
        }
        // Runs of data are written with one call; all-zero grains become holes.
        let mut data_from: Option<usize> = None;
        for (i, chunk) in buf[..n].chunks(HOLE_GRAIN).enumerate() {
            let at = i * HOLE_GRAIN;
            if is_zero(chunk) {
                if let Some(from) = data_from.take() {
                    file.write_all(&buf[from..at]).map_err(io_at(path))?;
                }
                pending_hole += chunk.len() as i64;
            } else if data_from.is_none() {
                if pending_hole > 0 {
                    file.seek(SeekFrom::Current(pending_hole))
                        .map_err(io_at(path))?;
                    pending_hole = 0;
                }
                data_from = Some(at);
            }
        }
        if let Some(from) = data_from {
            file.write_all(&buf[from..n]).map_err(io_at(path))?;
        }
        left -= n as u64;
    }
    if pending_hole > 0 {
        file.set_len(size).map_err(io_at(path))?;
    }
    Ok(())
}

/// Whether `bytes` are all zero: an OR over runs of 256 bytes (which the compiler turns into
/// vector instructions), stopping at the first run with a non-zero byte.
fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(256)
        .all(|run| run.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

fn set_times(path: &Path, (secs, nanos): (i64, i64), nofollow: bool) {
    let t = TimeSpec::new(secs, nanos);
    let flags = if nofollow {
        UtimensatFlags::NoFollowSymlink
    } else {
        UtimensatFlags::FollowSymlink
    };
    let _ = utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, flags);
}

/// The entry path as a plain relative path, or an error for absolute paths and `..`.
fn safe_relative(raw: &Path) -> Result<PathBuf, BackupError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(BackupError::UnsafeEntry(raw.display().to_string()));
            }
        }
    }
    Ok(out)
}

/// Creates the directories of `rel` under `root` (all of it when `whole`, else its parents),
/// refusing any component that exists as something other than a real directory.
fn ensure_dirs(
    root: &Path,
    rel: &Path,
    whole: bool,
    made: &mut HashSet<PathBuf>,
) -> Result<(), BackupError> {
    let comps: Vec<_> = rel.components().collect();
    let upto = if whole {
        comps.len()
    } else {
        comps.len().saturating_sub(1)
    };
    let mut p = root.to_path_buf();
    let mut r = PathBuf::new();
    for c in &comps[..upto] {
        p.push(c);
        r.push(c);
        if made.contains(&r) {
            continue;
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(BackupError::UnsafeEntry(rel.display().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .map_err(io_at(&p))?;
            }
            Err(e) => return Err(io_at(&p)(e)),
        }
        made.insert(r.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(src: &Path, dst: &Path, options: &ArchiveOptions) -> Stats {
        let mut tar = Vec::new();
        write_archive(src, options, &mut tar).unwrap();
        extract(dst, &tar[..]).unwrap()
    }

    #[test]
    fn roundtrip_keeps_modes_symlinks_empty_dirs_unicode_and_holes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("empty")).unwrap();
        fs::create_dir_all(src.join("ünïcødé/深い")).unwrap();
        fs::write(src.join("ünïcødé/深い/ファイル.txt"), "こんにちは").unwrap();
        fs::write(src.join("x.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("x.sh"), fs::Permissions::from_mode(0o751)).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", src.join("shadow")).unwrap();
        std::os::unix::fs::symlink("x.sh", src.join("rel")).unwrap();
        let sparse = File::create(src.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        drop(sparse);
        let dst = t.path().join("dst");
        roundtrip(&src, &dst, &ArchiveOptions::default());
        assert_eq!(
            fs::read_link(dst.join("shadow")).unwrap(),
            Path::new("/etc/shadow")
        );
        assert_eq!(fs::read_link(dst.join("rel")).unwrap(), Path::new("x.sh"));
        assert!(dst.join("empty").is_dir());
        assert_eq!(
            fs::read_to_string(dst.join("ünïcødé/深い/ファイル.txt")).unwrap(),
            "こんにちは"
        );
        let m = fs::metadata(dst.join("x.sh")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o751);
        let s = fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!(s.len(), 64 << 20);
        assert!(
            s.blocks() * 512 < 1 << 20,
            "restored sparse file is not sparse"
        );
        assert!(fs::read_dir(t.path()).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("sandpit-restore")
        }));
    }

    #[test]
    fn excludes_and_gitignore() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("node_modules/x")).unwrap();
        fs::create_dir_all(src.join("build")).unwrap();
        fs::write(src.join("node_modules/x/a.js"), "x").unwrap();
        fs::write(src.join("build/out.o"), "x").unwrap();
        fs::write(src.join("keep.txt"), "x").unwrap();
        fs::write(src.join("debug.log"), "x").unwrap();
        fs::write(src.join(".gitignore"), "build/\n").unwrap();
        let dst = t.path().join("dst");
        let options = ArchiveOptions {
            excludes: vec!["node_modules".into(), "*.log".into()],
            gitignore: true,
        };
        roundtrip(&src, &dst, &options);
        assert!(dst.join("keep.txt").is_file());
        assert!(dst.join(".gitignore").is_file());
        assert!(!dst.join("node_modules").exists());
        assert!(!dst.join("debug.log").exists());
        assert!(!dst.join("build").exists());
    }

    fn entry(builder: &mut tar::Builder<Vec<u8>>, path: &[u8], kind: tar::EntryType, link: &str) {
        let mut h = tar::Header::new_gnu();
        // Written raw: the tar crate refuses to *write* `..`, an attacker's tool does not.
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(if kind == tar::EntryType::Regular {
            3
        } else {
            0
        });
        if kind == tar::EntryType::Symlink {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"pwn"
        } else {
            b""
        };
        builder.append(&h, data).unwrap();
    }

    #[test]
    fn hostile_archives_write_nothing_outside_and_keep_the_old_tree() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let dst = t.path().join("dst");
        fs::create_dir(&dst).unwrap();
        fs::write(dst.join("old.txt"), "old").unwrap();
        let cases: Vec<Vec<(&[u8], tar::EntryType, String)>> = vec![
            vec![(b"../outside/evil", tar::EntryType::Regular, String::new())],
            vec![(b"/tmp/evil-abs", tar::EntryType::Regular, String::new())],
            vec![
                (
                    b"link",
                    tar::EntryType::Symlink,
                    outside.display().to_string(),
                ),
                (b"link/evil", tar::EntryType::Regular, String::new()),
            ],
            vec![
                (
                    b"link",
                    tar::EntryType::Symlink,
                    outside.display().to_string(),
                ),
                (b"link/evil", tar::EntryType::Symlink, "/x".into()),
            ],
        ];
        for case in cases {
            let mut b = tar::Builder::new(Vec::new());
            for (p, k, l) in &case {
                entry(&mut b, p, *k, l);
            }
            let tar = b.into_inner().unwrap();
            assert!(extract(&dst, &tar[..]).is_err(), "{case:?}");
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
            assert!(!Path::new("/tmp/evil-abs").exists());
            assert_eq!(fs::read_to_string(dst.join("old.txt")).unwrap(), "old");
            assert_eq!(
                fs::read_dir(t.path()).unwrap().count(),
                2,
                "staging left behind"
            );
        }
    }

    /// The entries of an archive: path, type and stored size.
    fn listing(tar: &[u8]) -> Vec<(String, tar::EntryType, u64)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.entry_size().unwrap(),
                )
            })
            .collect()
    }

    /// Files with holes: 30 extents 1 MiB apart (the map needs two extension blocks) ending in
    /// a hole, one extent at an unaligned end, nothing but a hole; and a dense file.
    fn holey_tree(src: &Path) {
        use std::os::unix::fs::FileExt;
        fs::create_dir_all(src).unwrap();
        let many = File::create(src.join("many")).unwrap();
        many.set_len(40 << 20).unwrap();
        for k in 0..30u64 {
            many.write_all_at(&[k as u8 + 1; 4096], k << 20).unwrap();
        }
        let tail = File::create(src.join("tail")).unwrap();
        tail.set_len(8 << 20).unwrap();
        tail.write_all_at(b"end", (8 << 20) - 3).unwrap();
        File::create(src.join("hole"))
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        fs::write(src.join("dense"), vec![7u8; 3 << 20]).unwrap();
    }

    const HOLEY: [&str; 4] = ["many", "tail", "hole", "dense"];

    fn assert_same_and_sparse(src: &Path, dst: &Path) {
        for name in HOLEY {
            assert_eq!(
                fs::read(src.join(name)).unwrap(),
                fs::read(dst.join(name)).unwrap(),
                "{name}"
            );
            if name != "dense" {
                let m = fs::metadata(dst.join(name)).unwrap();
                assert!(m.blocks() * 512 < 1 << 20, "{name} was restored dense");
            }
        }
    }

    #[test]
    fn files_with_holes_are_stored_as_their_data_and_restored_sparse() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        holey_tree(&src);
        let mut tar = Vec::new();
        write_archive(&src, &ArchiveOptions::default(), &mut tar).unwrap();
        // 120 KiB of extents, 3 bytes and 3 MiB of dense data: the holes are not in it.
        assert!(
            tar.len() < 4 << 20,
            "the holes were stored: {} bytes",
            tar.len()
        );
        let entries = listing(&tar);
        let sparse: Vec<&str> = entries
            .iter()
            .filter(|e| e.1 == tar::EntryType::GNUSparse)
            .map(|e| e.0.as_str())
            .collect();
        assert_eq!(sparse.len(), 3, "{entries:?}");
        assert!(!sparse.contains(&"dense"));
        let dst = t.path().join("dst");
        extract(&dst, &tar[..]).unwrap();
        assert_same_and_sparse(&src, &dst);

        // GNU tar reads the sparse entries too.
        let gnu = t.path().join("gnu");
        fs::create_dir(&gnu).unwrap();
        let mut child = std::process::Command::new("tar")
            .arg("-xf")
            .arg("-")
            .arg("-C")
            .arg(&gnu)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        assert!(child.wait().unwrap().success());
        for name in HOLEY {
            assert_eq!(
                fs::read(src.join(name)).unwrap(),
                fs::read(gnu.join(name)).unwrap(),
                "{name} as GNU tar extracts it"
            );
        }
    }

    #[test]
    fn sparse_archives_of_gnu_tar_are_extracted_sparse() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        holey_tree(&src);
        let out = std::process::Command::new("tar")
            .args(["--sparse", "--format=gnu", "-cf", "-", "-C"])
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success());
        let dst = t.path().join("dst");
        extract(&dst, &out.stdout[..]).unwrap();
        assert_same_and_sparse(&src, &dst);
    }

    #[test]
    fn archives_that_store_holes_as_zeros_still_restore_sparse() {
        // What `write_archive` wrote before sparse entries: the file whole, zeros included.
        let t = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 8 << 20];
        data[(4 << 20)..(4 << 20) + 3].copy_from_slice(b"mid");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o640);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "old.img", &data[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let dst = t.path().join("dst");
        extract(&dst, &tar[..]).unwrap();
        assert_eq!(fs::read(dst.join("old.img")).unwrap(), data);
        let m = fs::metadata(dst.join("old.img")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert!(m.blocks() * 512 < 1 << 20, "restored dense");
    }

    /// A reader that yields `data` and then an error instead of EOF.
    struct Broken<'a>(&'a [u8]);
    impl Read for Broken<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("sender gave up"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_stream_that_breaks_even_after_the_end_marker_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("new.txt"), "new").unwrap();
        let mut tar = Vec::new();
        write_archive(&src, &ArchiveOptions::default(), &mut tar).unwrap();
        let dst = t.path().join("dst");
        fs::create_dir(&dst).unwrap();
        fs::write(dst.join("old.txt"), "old").unwrap();
        assert!(extract(&dst, Broken(&tar)).is_err());
        assert_eq!(fs::read_to_string(dst.join("old.txt")).unwrap(), "old");
        assert!(!dst.join("new.txt").exists());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 2);
        // Cut in the middle.
        assert!(extract(&dst, Broken(&tar[..tar.len() / 2])).is_err());
        assert!(!dst.join("new.txt").exists());
        extract(&dst, &tar[..]).unwrap();
        assert!(dst.join("new.txt").exists());
        assert!(!dst.join("old.txt").exists());
    }
}
