//! The object store backups (and snapshot exports) live in: a local directory (the default,
//! `<data_dir>/objects`) or an S3-compatible bucket, configured at `sandpit serve`.
//!
//! Built on `object_store` (Apache Arrow's crate: S3 SigV4, multipart uploads, retries). Writes
//! go through [`Objects::writer`], an `AsyncWrite` that uploads in parts of
//! [`PART_BYTES`] as data arrives (S3 multipart; a temp file renamed on completion locally),
//! so no archive is ever held in memory whole; an aborted writer leaves no object.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt};
use serde::Deserialize;

/// Size of one uploaded part (S3's minimum is 5 MiB).
pub const PART_BYTES: usize = 16 << 20;
/// Size of the pieces a local object is read in.
pub const READ_PIECE: usize = 1 << 20;

/// Where objects are kept.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectStoreConfig {
    /// A directory of this host (created if missing).
    Local { root: PathBuf },
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// An S3-compatible bucket. Credentials come from the config (`--s3-credentials-file` or
/// `SANDPIT_S3_ACCESS_KEY_ID` / `SANDPIT_S3_SECRET_ACCESS_KEY`); without them the standard AWS
/// environment variables are used.
#[derive(Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// `http(s)://host:port` of a non-AWS endpoint; `None`: AWS.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), what most non-AWS servers need.
    pub path_style: bool,
    /// Key prefix inside the bucket (e.g. `sandpit/`).
    pub prefix: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The credentials file: JSON `{"accessKeyId": …, "secretAccessKey": …, "sessionToken"?: …}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsFile {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

impl CredentialsFile {
    pub fn load(path: &std::path::Path) -> Result<Self, ObjectsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ObjectsError::Credentials {
            path: path.to_path_buf(),
            message: source.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| ObjectsError::Credentials {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Why the object store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("object store directory {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("S3 credentials file {}: {message}", path.display())]
    Credentials { path: PathBuf, message: String },
    #[error("object store configuration")]
    Config(#[source] object_store::Error),
}

/// The configured object store.
#[derive(Debug, Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// For logs and errors: `local:/path` or `s3://bucket`.
    pub describe: String,
}

impl Objects {
    pub fn open(config: &ObjectStoreConfig) -> Result<Self, ObjectsError> {
        match config {
            ObjectStoreConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|source| ObjectsError::Dir {
                    path: root.clone(),
                    source,
                })?;
                let store = LocalFileSystem::new_with_prefix(root)
                    .map_err(ObjectsError::Config)?
                    .with_automatic_cleanup(true);
                Ok(Objects {
                    store: Arc::new(store),
                    prefix: String::new(),
                    describe: format!("local:{}", root.display()),
                })
            }
            ObjectStoreConfig::S3(s3) => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_virtual_hosted_style_request(!s3.path_style);
                if let Some(endpoint) = &s3.endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let (Some(k), Some(s)) = (&s3.access_key_id, &s3.secret_access_key) {
                    b = b.with_access_key_id(k).with_secret_access_key(s);
                }
                if let Some(t) = &s3.session_token {
                    b = b.with_token(t);
                }
                let store = b.build().map_err(ObjectsError::Config)?;
                Ok(Objects {
                    store: Arc::new(store),
                    prefix: s3.prefix.trim_matches('/').to_owned(),
                    describe: format!("s3://{}", s3.bucket),
                })
            }
        }
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// A streaming writer of object `key`: `shutdown()` completes it, `abort()` drops it.
    pub fn writer(&self, key: &str) -> BufWriter {
        BufWriter::with_capacity(self.store.clone(), self.path(key), PART_BYTES)
    }

    /// The bytes of object `key`, streamed. A local object is read in pieces of
    /// [`READ_PIECE`] bytes (`object_store`'s own file stream reads 8 KiB per blocking task,
    /// which caps a restore's download at a fraction of the disk's speed).
    pub async fn read(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, object_store::Error> {
        let got = self.store.get(&self.path(key)).await?;
        match got.payload {
            GetResultPayload::File(file, _) => Ok(file_stream(file, got.range)),
            GetResultPayload::Stream(s) => Ok(s),
        }
    }

    /// Stores a small object whole (`bytes` in one request).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), object_store::Error> {
        self.store
            .put(&self.path(key), bytes.into())
            .await
            .map(|_| ())
    }

    /// The bytes of a small object; `Ok(None)` when it does not exist, an error when it has more
    /// than `max` bytes.
    pub async fn get_small(
        &self,
        key: &str,
        max: usize,
    ) -> Result<Option<Vec<u8>>, object_store::Error> {
        let mut stream = match self.read(key).await {
            Ok(s) => s,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() > max {
                return Err(object_store::Error::Generic {
                    store: "objects",
                    source: format!("object {key:?} is larger than {max} bytes").into(),
                });
            }
        }
        Ok(Some(out))
    }

    /// Deletes object `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether object `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, object_store::Error> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `range` of a local object's file, in pieces of [`READ_PIECE`] bytes, each read on a blocking
/// thread.
fn file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    use std::io::{Read, Seek, SeekFrom};
    let failed = |e: std::io::Error| object_store::Error::Generic {
        store: "objects",
        source: Box::new(e),
    };
    futures::stream::try_unfold(
        (file, range.start, range.end - range.start),
        move |(mut file, at, left)| async move {
            if left == 0 {
                return Ok(None);
            }
            tokio::task::spawn_blocking(move || {
                file.seek(SeekFrom::Start(at))?;
                let want = left.min(READ_PIECE as u64);
                let mut piece = Vec::with_capacity(want as usize);
                let n = (&mut file).take(want).read_to_end(&mut piece)? as u64;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the object is shorter than its recorded size",
                    ));
                }
                Ok(Some((Bytes::from(piece), (file, at + n, left - n))))
            })
            .await
            .map_err(|e| failed(std::io::Error::other(e)))?
            .map_err(failed)
        },
    )
    .boxed()
}
