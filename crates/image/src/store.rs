//! The on-disk image store: layout, metadata, and the stage-then-commit protocol every build
//! and import goes through.
//!
//! ```text
//! <root>/<name>/rootfs/          the image's root filesystem
//! <root>/<name>/image.json       metadata; written last, atomically = the "ready" marker
//! <root>/.tmp-<name>-<random>/   a build or import in progress (renamed to <name> when done)
//! <root>/.old-<name>-<random>/   a replaced version, kept while a process holds it open
//! <root>/.locks/<name>.lock      flock taken by every build, import and removal of <name>
//! ```
//!
//! A rebuild of a ready image (its recipe changed) swaps the new version in atomically
//! (`renameat2(RENAME_EXCHANGE)`), so `<root>/<name>/rootfs` never goes missing and keeps its
//! path. Sandboxes running on the old version keep their mounts of the old tree; the driver
//! holds the tree open while they run, and old versions are deleted once nothing does.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::fsutil::{held_open, remove_tree, tree_size, write_atomic};
use crate::lock::ImageLock;
use crate::{ImageError, Progress, validate_name};

/// `ImageInfo::source` of the default image.
pub const SOURCE_DEBOOTSTRAP: &str = "debootstrap";
/// `ImageInfo::source` of an imported OCI image layout tarball.
pub const SOURCE_OCI: &str = "oci";
/// `ImageInfo::source` of an imported `docker save` tarball.
pub const SOURCE_DOCKER_SAVE: &str = "docker-save";
/// `ImageInfo::source` of an image made by [`ImageStore::create_with`] callers (tests, tools).
pub const SOURCE_DIR: &str = "dir";

const METADATA: &str = "image.json";
const ROOTFS: &str = "rootfs";
const TMP_PREFIX: &str = ".tmp-";
const OLD_PREFIX: &str = ".old-";

/// Caps applied while unpacking an imported archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Total bytes of file content written (default 20 GiB).
    pub max_bytes: u64,
    /// Total number of archive entries over all layers (default 2,000,000).
    pub max_entries: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_bytes: 20 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// Runtime defaults carried by an image (from an OCI/docker config, or set by the builder).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageConfig {
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// A ready image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    pub name: String,
    /// Apparent size of the rootfs's regular files.
    pub size_bytes: u64,
    /// RFC 3339.
    pub created_at: String,
    /// `"debootstrap"`, `"oci"`, `"docker-save"` or `"dir"`.
    pub source: String,
    #[serde(default)]
    pub config: ImageConfig,
}

/// What `commit` does when the image is already ready.
#[derive(Clone, Copy)]
pub(crate) enum IfReady<'a> {
    /// Fail with `AlreadyExists`.
    Fail,
    /// Return the ready image if it passes the check (the default image is cached by its
    /// recipe); otherwise build a new version and swap it in.
    ReplaceUnless(&'a dyn Fn(&ImageInfo) -> bool),
}

/// A directory of images. Cheap to clone paths out of; all methods are blocking.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: ImportLimits,
}

impl ImageStore {
    /// Opens (creating if missing) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
        let root =
            fs::canonicalize(&root).map_err(io_err(format!("resolving {}", root.display())))?;
        Ok(Self {
            root,
            limits: ImportLimits::default(),
        })
    }

    /// Replaces the caps used by [`ImageStore::import_tar`].
    pub fn with_limits(mut self, limits: ImportLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn limits(&self) -> ImportLimits {
        self.limits
    }

    /// The rootfs directory of a ready image; `NotFound` if absent or not (yet) ready.
    pub fn rootfs(&self, name: &str) -> Result<PathBuf, ImageError> {
        self.info(name)?;
        Ok(self.root.join(name).join(ROOTFS))
    }

    /// Metadata of a ready image; `NotFound` if absent or not (yet) ready.
    pub fn info(&self, name: &str) -> Result<ImageInfo, ImageError> {
        validate_name(name)?;
        read_info(&self.root.join(name)).ok_or_else(|| ImageError::NotFound(name.to_owned()))
    }

    /// All ready images, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let entries =
            fs::read_dir(&self.root).map_err(io_err(format!("reading {}", self.root.display())))?;
        let mut images = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(format!("reading {}", self.root.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_name(&name).is_err() {
                continue;
            }
            if let Some(info) = read_info(&entry.path()) {
                images.push(info);
            }
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Deletes an image (ready or a leftover of an interrupted build). Sandboxes already
    /// running on it keep their mounts, but the files disappear from under them: callers
    /// should stop those first.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        validate_name(name)?;
        let _lock = ImageLock::acquire(&self.root, name)?;
        let dir = self.root.join(name);
        if fs::symlink_metadata(&dir).is_err() {
            return Err(ImageError::NotFound(name.to_owned()));
        }
        // Rename first so the image vanishes atomically, then delete at leisure.
        let doomed = self.tmp_path(name);
        fs::rename(&dir, &doomed).map_err(io_err(format!("removing {}", dir.display())))?;
        remove_tree(&doomed)
    }

    /// Creates image `name` by letting `fill` populate an empty rootfs directory, then
    /// committing it. `fill` returns the image's config. If `fill` fails (or panics), nothing is
    /// left behind and the image is not ready. Fails with `AlreadyExists` if `name` is ready.
    pub fn create_with<F>(
        &self,
        name: &str,
        source: &str,
        progress: &dyn Progress,
        fill: F,
    ) -> Result<ImageInfo, ImageError>
    where
        F: FnOnce(&Path) -> Result<ImageConfig, ImageError>,
    {
        self.commit(name, IfReady::Fail, progress, |staging| {
            Ok((fill(&staging.join(ROOTFS))?, source.to_owned()))
        })
    }

    /// Like [`ImageStore::create_with`], except for a ready image: it is returned as it is if
    /// `is_current` accepts it; otherwise the new version is built next to it (the old one
    /// serves meanwhile) and swapped in atomically at the same path. The replaced version is
    /// deleted at once unless a process holds it open (a running sandbox's driver does); then
    /// a later build of `name` deletes it.
    pub fn replace_with<F>(
        &self,
        name: &str,
        source: &str,
        progress: &dyn Progress,
        is_current: &dyn Fn(&ImageInfo) -> bool,
        fill: F,
    ) -> Result<ImageInfo, ImageError>
    where
        F: FnOnce(&Path) -> Result<ImageConfig, ImageError>,
    {
        self.commit(
            name,
            IfReady::ReplaceUnless(is_current),
            progress,
            |staging| Ok((fill(&staging.join(ROOTFS))?, source.to_owned())),
        )
    }

    /// The stage-then-commit protocol. Under the image's lock: reuse, replace or refuse a ready
    /// image, delete leftovers of earlier attempts, let `fill` work in a fresh `.tmp-<name>-*`
    /// dir (which holds an empty `rootfs/`), write `image.json` into it, then move it into
    /// place (a rename, or an atomic exchange with the version it replaces). `fill` returns
    /// the image's config and source.
    pub(crate) fn commit<F>(
        &self,
        name: &str,
        if_ready: IfReady<'_>,
        progress: &dyn Progress,
        fill: F,
    ) -> Result<ImageInfo, ImageError>
    where
        F: FnOnce(&Path) -> Result<(ImageConfig, String), ImageError>,
    {
        validate_name(name)?;
        let _lock = ImageLock::acquire(&self.root, name)?;
        let dir = self.root.join(name);
        self.remove_unused_old_versions(name, progress)?;
        let replacing = match (read_info(&dir), if_ready) {
            (None, _) => false,
            (Some(_), IfReady::Fail) => return Err(ImageError::AlreadyExists(name.to_owned())),
            (Some(info), IfReady::ReplaceUnless(is_current)) if is_current(&info) => {
                progress.message(&format!("image {name:?} is already built"));
                return Ok(info);
            }
            (Some(_), IfReady::ReplaceUnless(_)) => {
                progress.message(&format!(
                    "image {name:?} is out of date: building a new version (the current one \
                     serves until it is ready)"
                ));
                true
            }
        };
        self.remove_leftovers(name, replacing, progress)?;

        let staging = Staging::create(self.tmp_path(name))?;
        let rootfs = staging.path.join(ROOTFS);
        fs::create_dir(&rootfs).map_err(io_err(format!("creating {}", rootfs.display())))?;
        let (config, source) = fill(&staging.path)?;
        // Anything the builder left next to rootfs/ (downloads, scratch) is not part of the image.
        for entry in fs::read_dir(&staging.path)
            .map_err(io_err(format!("reading {}", staging.path.display())))?
            .flatten()
        {
            if entry.file_name() != ROOTFS {
                remove_tree(&entry.path())?;
            }
        }

        progress.stage("commit", None);
        let info = ImageInfo {
            name: name.to_owned(),
            size_bytes: tree_size(&rootfs)?,
            created_at: sandpit_protocol::time::now(),
            source,
            config,
        };
        let json = serde_json::to_vec_pretty(&info)
            .map_err(|e| ImageError::build("commit", format!("serializing metadata: {e}")))?;
        // The staging dir is never served, so the "ready" marker can go in before the move
        // that makes the whole image visible at once.
        write_atomic(&staging.path.join(METADATA), &json)?;
        if !replacing {
            fs::rename(&staging.path, &dir)
                .map_err(io_err(format!("renaming into {}", dir.display())))?;
            staging.disarm();
            return Ok(info);
        }
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &staging.path,
            nix::fcntl::AT_FDCWD,
            &dir,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| {
            io_err(format!("swapping the new version into {}", dir.display()))(e.into())
        })?;
        // The staging path now holds the old version: never delete it blindly, sandboxes may
        // run on it.
        let swapped = staging.path.clone();
        staging.disarm();
        let old = self.unique_path(OLD_PREFIX, name);
        fs::rename(&swapped, &old).map_err(io_err(format!(
            "renaming the old version to {}",
            old.display()
        )))?;
        self.remove_unused_old_versions(name, progress)?;
        Ok(info)
    }

    /// Deletes the replaced versions of `name` that no process holds open; the others stay
    /// until a later call. Called under the lock.
    fn remove_unused_old_versions(
        &self,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<(), ImageError> {
        for (path, file_name) in self.owned_entries(OLD_PREFIX, name)? {
            if held_open(&path) {
                progress.message(&format!(
                    "keeping the previous version ({file_name}): running sandboxes use it"
                ));
            } else {
                progress.message(&format!("removing the previous version ({file_name})"));
                remove_tree(&path)?;
            }
        }
        Ok(())
    }

    /// Entries `<prefix><name>-<unique>` of the store root: paths and file names.
    fn owned_entries(
        &self,
        prefix: &str,
        name: &str,
    ) -> Result<Vec<(PathBuf, String)>, ImageError> {
        let entries =
            fs::read_dir(&self.root).map_err(io_err(format!("reading {}", self.root.display())))?;
        Ok(entries
            .flatten()
            .filter_map(|entry| {
                let file_name = entry.file_name().to_str()?.to_owned();
                (versioned_owner(prefix, &file_name) == Some(name))
                    .then(|| (entry.path(), file_name))
            })
            .collect())
    }

    /// Deletes `.tmp-<name>-*` dirs and, unless `keep_dir`, a not-ready `<name>` dir. Called
    /// under the lock, so no live build of `name` owns them.
    fn remove_leftovers(
        &self,
        name: &str,
        keep_dir: bool,
        progress: &dyn Progress,
    ) -> Result<(), ImageError> {
        for (path, file_name) in self.owned_entries(TMP_PREFIX, name)? {
            progress.message(&format!("removing leftover {file_name}"));
            remove_tree(&path)?;
        }
        let dir = self.root.join(name);
        if !keep_dir && fs::symlink_metadata(&dir).is_ok() {
            progress.message(&format!("removing unfinished image {name:?}"));
            remove_tree(&dir)?;
        }
        Ok(())
    }

    fn tmp_path(&self, name: &str) -> PathBuf {
        self.unique_path(TMP_PREFIX, name)
    }

    /// `<root>/<prefix><name>-<unique>`.
    fn unique_path(&self, prefix: &str, name: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!(
            "{:x}{:x}{:x}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.root.join(format!("{prefix}{name}-{unique}"))
    }
}

/// The image a `<prefix><name>-<unique>` dir (staging or old version) belongs to. `<unique>`
/// has no '-', so the split is unambiguous even for names that contain '-'.
fn versioned_owner<'a>(prefix: &str, file_name: &'a str) -> Option<&'a str> {
    file_name
        .strip_prefix(prefix)?
        .rsplit_once('-')
        .map(|(name, _)| name)
}

fn read_info(dir: &Path) -> Option<ImageInfo> {
    let data = fs::read(dir.join(METADATA)).ok()?;
    match serde_json::from_slice(&data) {
        Ok(info) => Some(info),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "ignoring image with unreadable metadata");
            None
        }
    }
}

/// A staging directory that deletes itself unless disarmed (so failures and panics in a
/// builder leave nothing behind).
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Staging {
    fn create(path: PathBuf) -> Result<Self, ImageError> {
        fs::create_dir(&path).map_err(io_err(format!("creating {}", path.display())))?;
        Ok(Self { path, armed: true })
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = remove_tree(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove staging dir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{OLD_PREFIX, TMP_PREFIX, versioned_owner};

    #[test]
    fn tmp_and_old_dirs_map_to_their_image() {
        assert_eq!(versioned_owner(TMP_PREFIX, ".tmp-a-1f"), Some("a"));
        assert_eq!(versioned_owner(TMP_PREFIX, ".tmp-a-b-1f"), Some("a-b"));
        assert_eq!(versioned_owner(TMP_PREFIX, ".tmp-a"), None);
        assert_eq!(versioned_owner(TMP_PREFIX, "a-b"), None);
        assert_eq!(versioned_owner(OLD_PREFIX, ".old-a-b-1f"), Some("a-b"));
        assert_eq!(versioned_owner(OLD_PREFIX, ".tmp-a-1f"), None);
    }
}
