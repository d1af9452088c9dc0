//! Disk use of a sandbox's writable layer, counted on the host with a bounded cost.

use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most directory entries one count looks at; a layer with more is reported as a lower bound
/// (so a sandbox holding millions of files cannot make a usage call expensive).
pub const MAX_WALK_ENTRIES: usize = 100_000;

/// Bytes a file tree occupies and whether every entry was counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    /// False when the walk stopped at its entry bound.
    pub complete: bool,
}

/// Allocated bytes (blocks, so sparse files count what they hold) under `root`, without
/// following symlinks or counting a hard-linked file twice. A missing `root` uses nothing; an
/// entry that vanishes or cannot be read mid-walk is skipped (the sandbox may be writing).
pub fn tree_usage(root: &Path, max_entries: usize) -> DiskUsage {
    let mut usage = DiskUsage {
        bytes: 0,
        complete: true,
    };
    let mut seen_links: HashSet<(u64, u64)> = HashSet::new();
    let mut pending: VecDeque<PathBuf> = VecDeque::from([root.to_path_buf()]);
    let mut visited = 0usize;
    while let Some(dir) = pending.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if visited >= max_entries {
                usage.complete = false;
                return usage;
            }
            visited += 1;
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.nlink() > 1 && !meta.is_dir() && !seen_links.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.bytes += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push_back(entry.path());
            }
        }
    }
    usage
}

/// Bytes a (sparse) disk image file holds on the host: what its file system allocated so far.
pub fn allocated_bytes(file: &Path) -> Option<u64> {
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
        let after = tree_usage(root, MAX_WALK_ENTRIES);
        assert!(
            after.bytes < before.bytes + 64 * 1024,
            "{before:?} {after:?}"
        );
        let cut = tree_usage(root, 2);
        assert!(!cut.complete);
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
