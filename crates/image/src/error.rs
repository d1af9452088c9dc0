//! The crate's error type.

use std::io;

/// Everything that can go wrong with an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("image {0:?} already exists")]
    AlreadyExists(String),
    #[error("image build failed at stage {stage}: {message}")]
    Build { stage: String, message: String },
    /// An archive entry tried something unsafe (path escape, link out of the image...).
    #[error("unsafe archive entry {entry:?}: {reason}")]
    UnsafeArchive { entry: String, reason: String },
    /// The archive is not a usable OCI layout or `docker save` tarball.
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    #[error("digest mismatch for {entry:?}: expected {expected}, got {actual}")]
    DigestMismatch {
        entry: String,
        expected: String,
        actual: String,
    },
    #[error("archive exceeds the import limit: {0}")]
    TooLarge(String),
    /// A path that should be deleted still has something mounted below it.
    #[error("{0} has mount points below it; refusing to delete it")]
    Busy(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn build(stage: &str, message: impl Into<String>) -> Self {
        Self::Build {
            stage: stage.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn unsafe_entry(entry: &str, reason: impl Into<String>) -> Self {
        Self::UnsafeArchive {
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }
}

/// `map_err(io_err("reading x"))`: wraps an io::Error with what we were doing.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}
