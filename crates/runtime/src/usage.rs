//! Disk use of a sandbox's writable layer, counted on the host with a bounded cost.
//!
//! The layer is written by the sandbox while it is counted, so the walk never resolves a path:
//! every directory is opened relative to its parent's descriptor with `O_NOFOLLOW`, and entries
//! are inspected with `fstatat(AT_SYMLINK_NOFOLLOW)`. A directory swapped for a symlink to `/`
//! mid-walk fails to open instead of leading the host's root into the count.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

/// Most directory entries one count looks at; a layer with more is reported as a lower bound
/// (so a sandbox holding millions of files cannot make a usage call expensive).
pub const MAX_WALK_ENTRIES: usize = 100_000;

/// Deepest directory level counted (one descriptor is open per level).
pub const MAX_WALK_DEPTH: usize = 128;

/// Bytes a file tree occupies and whether every entry was counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    /// False when the walk stopped at its entry or depth bound.
    pub complete: bool,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// One open directory of the walk and its subdirectories still to visit.
struct Level {
    fd: OwnedFd,
    subdirs: Vec<CString>,
}

/// The running count.
struct Walk {
    usage: DiskUsage,
    visited: usize,
    max_entries: usize,
    /// `(dev, ino)` of multiply-linked files already counted.
    seen_links: HashSet<(u64, u64)>,
}

impl Walk {
    /// Counts the entries of the directory `fd` and returns it with its subdirectories.
    fn scan(&mut self, fd: OwnedFd) -> Level {
        let mut subdirs = Vec::new();
        let entries = fd.try_clone().ok().and_then(|dup| Dir::from_fd(dup).ok());
        for entry in entries.into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            if self.visited >= self.max_entries {
                self.usage.complete = false;
                break;
            }
            self.visited += 1;
            // Vanished or unreadable mid-walk: the sandbox may be writing; skip it.
            let Ok(stat) = fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
            let key = (stat.st_dev, stat.st_ino);
            if !is_dir && stat.st_nlink > 1 && !self.seen_links.insert(key) {
                continue;
            }
            self.usage.bytes += (stat.st_blocks.max(0) as u64) * 512;
            if is_dir {
                subdirs.push(name.to_owned());
            }
        }
        Level { fd, subdirs }
    }
}

/// Allocated bytes (blocks, so sparse files count what they hold) under `root`, without
/// following symlinks or counting a hard-linked file twice. A missing `root` uses nothing.
pub fn tree_usage(root: &Path, max_entries: usize) -> DiskUsage {
    let mut walk = Walk {
        usage: DiskUsage {
            bytes: 0,
            complete: true,
        },
        visited: 0,
        max_entries,
        seen_links: HashSet::new(),
    };
    let Ok(root) = open(root, DIR_FLAGS, Mode::empty()) else {
        return walk.usage;
    };
    let mut stack = vec![walk.scan(root)];
    while walk.usage.complete {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else {
            break;
        };
        let Some(name) = level.subdirs.pop() else {
            stack.pop();
            continue;
        };
        if depth >= MAX_WALK_DEPTH {
            walk.usage.complete = false;
            break;
        }
        if let Ok(fd) = openat(&level.fd, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
            let next = walk.scan(fd);
            stack.push(next);
        }
    }
    walk.usage
}

/// Bytes a (sparse) disk image file holds on the host: what its file system allocated so far.
pub fn allocated_bytes(file: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(file)
        .ok()
        .map(|m| m.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_once_and_stops_at_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(tree_usage(&root.join("missing"), 10).bytes, 0);
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/big"), vec![1u8; 1 << 20]).unwrap();
        let before = tree_usage(root, MAX_WALK_ENTRIES);
        assert!(before.complete);
        assert!(before.bytes >= 1 << 20, "{before:?}");
        // A hard link adds nothing; a symlink is not followed.
        std::fs::hard_link(root.join("a/b/big"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("sym")).unwrap();
        // What a sandbox would plant to have the host's root counted (or walked) as its own.
        std::os::unix::fs::symlink("/", root.join("host")).unwrap();
        let after = tree_usage(root, MAX_WALK_ENTRIES);
        assert!(
            after.bytes < before.bytes + 64 * 1024,
            "{before:?} {after:?}"
        );
        let cut = tree_usage(root, 2);
        assert!(!cut.complete);
        // A symlinked root is not followed either.
        assert_eq!(tree_usage(&root.join("sym"), MAX_WALK_ENTRIES).bytes, 0);
    }

    #[test]
    fn a_deeper_tree_than_the_bound_is_a_lower_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = tmp.path().to_path_buf();
        for _ in 0..MAX_WALK_DEPTH + 2 {
            dir.push("d");
        }
        std::fs::create_dir_all(&dir).unwrap();
        let usage = tree_usage(tmp.path(), MAX_WALK_ENTRIES);
        assert!(!usage.complete);
        assert!(usage.bytes > 0);
    }

    #[test]
    fn a_sparse_image_counts_what_it_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("disk.img");
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(1 << 30).unwrap();
        assert!(allocated_bytes(&image).unwrap() < 1 << 20);
        assert_eq!(allocated_bytes(&tmp.path().join("none")), None);
    }
}
