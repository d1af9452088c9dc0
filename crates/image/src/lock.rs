//! Per-image exclusive lock (flock on `<root>/.locks/<name>.lock`), so two builds, imports or
//! removals of the same image never interleave. Released when the guard drops (or the process
//! dies: flock locks do not outlive their holder).

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::ImageError;
use crate::error::io_err;

pub(crate) struct ImageLock {
    _lock: Flock<File>,
}

impl ImageLock {
    /// Blocks until the lock on `name` is ours.
    pub(crate) fn acquire(root: &Path, name: &str) -> Result<Self, ImageError> {
        let dir = root.join(".locks");
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let path = dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| ImageError::Io {
                context: format!("locking {}", path.display()),
                source: errno.into(),
            })?;
        Ok(Self { _lock: lock })
    }
}
