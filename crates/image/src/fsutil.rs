//! Small filesystem helpers: tree size, mount-aware deletion, atomic file writes.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::ImageError;
use crate::error::io_err;

/// Apparent size of all regular files below `root` (hard links counted once, symlinks not
/// followed).
pub(crate) fn tree_size(root: &Path) -> Result<u64, ImageError> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| ImageError::Io {
            context: format!("walking {}", root.display()),
            source: e.into(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let meta = entry.metadata().map_err(|e| ImageError::Io {
            context: format!("stat {}", entry.path().display()),
            source: e.into(),
        })?;
        if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total = total.saturating_add(meta.len());
    }
    Ok(total)
}

/// Mount points at or below `path`, from /proc/self/mountinfo.
pub(crate) fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount| mount.starts_with(path))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(value) = u8::try_from(value) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether any process has a file descriptor open at or below `dir` (from /proc/*/fd; processes
/// whose fds cannot be read are skipped). A sandbox driver holds its image's rootfs open while
/// the sandbox runs, which is how a replaced image version knows it is still in use.
pub(crate) fn held_open(dir: &Path) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|p| fs::read_dir(p.path().join("fd")).ok())
        .flat_map(|fds| fds.flatten())
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .any(|target| target.starts_with(dir))
}

/// Deletes a directory tree without following symlinks, refusing if anything is mounted inside
/// it (deleting through a leaked bind mount of /dev or /proc would reach the host).
pub(crate) fn remove_tree(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("stat {}", path.display()))(e)),
        Ok(meta) if !meta.is_dir() => {
            return fs::remove_file(path).map_err(io_err(format!("removing {}", path.display())));
        }
        Ok(_) => {}
    }
    if !mounts_under(path).is_empty() {
        return Err(ImageError::Busy(path.display().to_string()));
    }
    fs::remove_dir_all(path).map_err(io_err(format!("removing {}", path.display())))
}

/// Writes `data` to `path` atomically: a temporary sibling, fsync, rename, fsync of the dir.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension("tmp");
    let ctx = || format!("writing {}", path.display());
    let mut file = File::create(&tmp).map_err(io_err(ctx()))?;
    file.write_all(data).map_err(io_err(ctx()))?;
    file.sync_all().map_err(io_err(ctx()))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(ctx()))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = File::open(parent)
    {
        // Best effort: makes the rename durable; failure here does not undo the write.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\"), "/x\\");
    }

    #[test]
    fn a_directory_held_open_is_seen_from_proc() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("image");
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        assert!(!held_open(&dir));
        let held = File::open(dir.join("rootfs")).unwrap();
        assert!(held_open(&dir));
        // Renaming the directory does not lose track of it.
        let moved = tmp.path().join("moved");
        fs::rename(&dir, &moved).unwrap();
        assert!(held_open(&moved));
        drop(held);
        assert!(!held_open(&moved));
    }

    #[test]
    fn proc_is_a_mount() {
        assert!(!mounts_under(Path::new("/proc")).is_empty());
    }
}
