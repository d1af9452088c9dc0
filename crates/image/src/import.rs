//! Import of OCI image layout tarballs and `docker save` tarballs.
//!
//! The outer tarball is indexed once (name → byte range), then manifests, configs and layers
//! are read straight out of it. Every blob with a known digest is verified: OCI blobs
//! (`blobs/sha256/<hex>`, also used by docker ≥ 25) against their name, and each layer's
//! uncompressed stream against the config's `rootfs.diff_ids`. Layers are applied in order by
//! [`Unpacker`]. A gzip-compressed outer tarball is first decompressed into the staging dir.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::read::{GzDecoder, MultiGzDecoder};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::io_err;
use crate::store::{IfReady, ImageConfig, SOURCE_DOCKER_SAVE, SOURCE_OCI};
use crate::unpack::Unpacker;
use crate::{ImageError, ImageInfo, ImageStore, Progress};

/// JSON documents (manifests, configs) larger than this are refused.
const MAX_JSON: u64 = 16 << 20;
const MAX_LINK_HOPS: usize = 8;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl ImageStore {
    /// Imports an OCI image layout tarball or a `docker save` tarball (optionally gzipped) as
    /// image `name`. Fails with `AlreadyExists` if `name` is ready (remove it first).
    pub fn import_tar(
        &self,
        tar: &Path,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<ImageInfo, ImageError> {
        let limits = self.limits();
        self.commit(name, IfReady::Fail, progress, |staging| {
            progress.stage("index", None);
            let archive = Archive::open(tar, staging, limits.max_bytes)?;
            let (plan, source) = if archive.has("oci-layout") && archive.has("index.json") {
                (oci_plan(&archive)?, SOURCE_OCI)
            } else if archive.has("manifest.json") {
                (docker_plan(&archive)?, SOURCE_DOCKER_SAVE)
            } else {
                return Err(ImageError::InvalidArchive(
                    "neither an OCI image layout (oci-layout, index.json) nor a docker save \
                     tarball (manifest.json)"
                        .into(),
                ));
            };
            progress.message(&format!("{source} image with {} layers", plan.layers.len()));

            let total: u64 = plan
                .layers
                .iter()
                .filter_map(|l| archive.size(&l.path))
                .sum();
            progress.stage("layers", Some(total));
            let mut unpacker = Unpacker::new(&staging.join("rootfs"), limits);
            let mut done = 0u64;
            for (i, layer) in plan.layers.iter().enumerate() {
                progress.message(&format!(
                    "layer {}/{}: {}",
                    i + 1,
                    plan.layers.len(),
                    layer.path
                ));
                done = apply_layer(&archive, layer, &mut unpacker, progress, done)?;
            }
            let skipped = unpacker.finish()?;
            if skipped > 0 {
                progress.message(&format!("skipped {skipped} device nodes"));
            }
            Ok((plan.config, source.to_owned()))
        })
    }
}

/// What to unpack, in order, and the runtime config.
struct Plan {
    layers: Vec<Layer>,
    config: ImageConfig,
}

struct Layer {
    /// Path of the layer inside the outer tarball.
    path: String,
    /// sha256 (hex) of the stored blob, when known.
    blob_digest: Option<String>,
    /// sha256 (hex) of the uncompressed tar (`diff_id`), when known.
    diff_id: Option<String>,
}

/// The outer tarball: an index of its regular files and symlinks.
struct Archive {
    file: File,
    files: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
}

impl Archive {
    /// `max_plain` caps the decompressed size of a gzipped tarball (a gzip bomb must not fill
    /// the disk).
    fn open(path: &Path, scratch: &Path, max_plain: u64) -> Result<Self, ImageError> {
        let ctx = || format!("reading {}", path.display());
        let mut file = File::open(path).map_err(io_err(ctx()))?;
        let mut magic = [0u8; 2];
        let is_gzip = file.read_exact(&mut magic).is_ok() && magic == GZIP_MAGIC;
        let file = if is_gzip {
            let plain = scratch.join("archive.tar");
            let mut out =
                File::create(&plain).map_err(io_err(format!("writing {}", plain.display())))?;
            let input = File::open(path).map_err(io_err(ctx()))?;
            let mut plain_bytes = MultiGzDecoder::new(input).take(max_plain.saturating_add(1));
            let written = io::copy(&mut plain_bytes, &mut out).map_err(io_err(ctx()))?;
            if written > max_plain {
                return Err(ImageError::TooLarge(format!(
                    "the decompressed tarball exceeds {max_plain} bytes"
                )));
            }
            File::open(&plain).map_err(io_err(ctx()))?
        } else {
            File::open(path).map_err(io_err(ctx()))?
        };

        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let mut archive = tar::Archive::new(&file);
        let entries = archive.entries_with_seek().map_err(bad_outer)?;
        for entry in entries {
            let entry = entry.map_err(bad_outer)?;
            let Some(name) = clean_name(&entry.path_bytes()) else {
                continue;
            };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    files.insert(name, (entry.raw_file_position(), entry.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = entry.link_name_bytes() {
                        let target = String::from_utf8_lossy(&target).into_owned();
                        links.insert(name, target);
                    }
                }
                _ => {}
            }
        }
        Ok(Self { file, files, links })
    }

    /// Follows outer-tarball links (old `docker save` links layers between image dirs).
    fn resolve(&self, name: &str) -> Option<(String, (u64, u64))> {
        let mut current = clean_name(name.as_bytes())?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(range) = self.files.get(&current) {
                return Some((current, *range));
            }
            let target = self.links.get(&current)?;
            current = if target.starts_with('/') {
                clean_name(target.as_bytes())?
            } else {
                let base = current.rsplit_once('/').map_or("", |(dir, _)| dir);
                join_clean(base, target)?
            };
        }
        None
    }

    fn has(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    fn size(&self, name: &str) -> Option<u64> {
        self.resolve(name).map(|(_, (_, size))| size)
    }

    fn open_member(&self, name: &str) -> Result<Section<'_>, ImageError> {
        let (_, (offset, size)) = self.resolve(name).ok_or_else(|| {
            ImageError::InvalidArchive(format!("{name} is missing from the archive"))
        })?;
        Ok(Section {
            file: &self.file,
            pos: offset,
            end: offset + size,
        })
    }

    /// Reads a JSON member, verifying its sha256 when `digest` is given.
    fn json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
        digest: Option<&str>,
    ) -> Result<T, ImageError> {
        let section = self.open_member(name)?;
        if section.end - section.pos > MAX_JSON {
            return Err(ImageError::InvalidArchive(format!("{name} is too large")));
        }
        let mut data = Vec::new();
        let mut hashing = Hashing::new(section);
        hashing
            .read_to_end(&mut data)
            .map_err(io_err(format!("reading {name}")))?;
        if let Some(expected) = digest {
            check_digest(name, expected, &hashing.hex())?;
        }
        serde_json::from_slice(&data)
            .map_err(|e| ImageError::InvalidArchive(format!("{name}: invalid JSON: {e}")))
    }
}

/// A byte range of the outer tarball, read with positional reads.
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive member is truncated",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Reads the rest, then returns the hex digest of everything.
    fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hex())
    }

    fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Unpacks one layer; returns the new progress position (compressed bytes read overall).
fn apply_layer(
    archive: &Archive,
    layer: &Layer,
    unpacker: &mut Unpacker,
    progress: &dyn Progress,
    done: u64,
) -> Result<u64, ImageError> {
    let blob = Hashing::new(archive.open_member(&layer.path)?);
    let mut blob = Reporting {
        inner: blob,
        progress,
        base: done,
        last: 0,
    };
    let ctx = || format!("reading layer {}", layer.path);
    let diff_id = {
        let mut buffered = BufReader::new(&mut blob);
        let head = buffered.fill_buf().map_err(io_err(ctx()))?;
        let decompressed: Box<dyn Read + '_> = if head.starts_with(&GZIP_MAGIC) {
            Box::new(GzDecoder::new(buffered))
        } else if head.starts_with(&ZSTD_MAGIC) {
            return Err(ImageError::InvalidArchive(format!(
                "layer {} is zstd-compressed, which is not supported",
                layer.path
            )));
        } else {
            Box::new(buffered)
        };
        let mut diff = Hashing::new(decompressed);
        unpacker.apply_layer(&mut diff)?;
        diff.finish().map_err(io_err(ctx()))?
    };
    io::copy(&mut blob, &mut io::sink()).map_err(io_err(ctx()))?;
    let position = blob.base + blob.inner.read;
    if let Some(expected) = &layer.blob_digest {
        check_digest(&layer.path, expected, &blob.inner.hex())?;
    }
    if let Some(expected) = &layer.diff_id {
        check_digest(
            &format!("{} (uncompressed)", layer.path),
            expected,
            &diff_id,
        )?;
    }
    Ok(position)
}

/// Passes the position to [`Progress::advance`] about every MiB.
struct Reporting<'a, R> {
    inner: Hashing<R>,
    progress: &'a dyn Progress,
    base: u64,
    last: u64,
}

impl<R: Read> Read for Reporting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.inner.read - self.last >= 1 << 20 || n == 0 {
            self.last = self.inner.read;
            self.progress.advance(self.base + self.inner.read);
        }
        Ok(n)
    }
}

fn check_digest(entry: &str, expected: &str, actual: &str) -> Result<(), ImageError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            entry: entry.to_owned(),
            expected: format!("sha256:{expected}"),
            actual: format!("sha256:{actual}"),
        })
    }
}

// ---- OCI image layout ----

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn oci_plan(archive: &Archive) -> Result<Plan, ImageError> {
    let mut index: Index = archive.json("index.json", None)?;
    // Nested indexes (multi-platform images) are followed a few levels down.
    for _ in 0..4 {
        let chosen = pick_manifest(&index.manifests)?;
        let (path, hex) = blob_path(&chosen.digest)?;
        if chosen.media_type.contains("index") || chosen.media_type.contains("manifest.list") {
            index = archive.json(&path, Some(&hex))?;
            continue;
        }
        let manifest: Manifest = archive.json(&path, Some(&hex))?;
        let (config_path, config_hex) = blob_path(&manifest.config.digest)?;
        let config: ConfigFile = archive.json(&config_path, Some(&config_hex))?;
        let diff_ids = config.diff_ids(manifest.layers.len())?;
        let layers = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| {
                let (path, hex) = blob_path(&layer.digest)?;
                Ok(Layer {
                    path,
                    blob_digest: Some(hex),
                    diff_id,
                })
            })
            .collect::<Result<_, ImageError>>()?;
        return Ok(Plan {
            layers,
            config: config.into_config(),
        });
    }
    Err(ImageError::InvalidArchive(
        "image indexes nested too deeply".into(),
    ))
}

/// The manifest for this machine's platform, else the first one.
fn pick_manifest(manifests: &[Descriptor]) -> Result<&Descriptor, ImageError> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| manifests.first())
        .ok_or_else(|| ImageError::InvalidArchive("index.json lists no manifests".into()))
}

/// `sha256:<hex>` → (`blobs/sha256/<hex>`, hex). Only well-formed sha256 digests are accepted,
/// which also keeps digests from smuggling path components.
fn blob_path(digest: &str) -> Result<(String, String), ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ImageError::InvalidArchive(format!("unsupported digest {digest:?}")))?
        .to_ascii_lowercase();
    Ok((format!("blobs/sha256/{hex}"), hex))
}

// ---- docker save ----

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn docker_plan(archive: &Archive) -> Result<Plan, ImageError> {
    let manifests: Vec<DockerManifest> = archive.json("manifest.json", None)?;
    let manifest = manifests
        .into_iter()
        .next()
        .ok_or_else(|| ImageError::InvalidArchive("manifest.json lists no images".into()))?;
    let config: ConfigFile = archive.json(
        &manifest.config,
        digest_in_name(&manifest.config).as_deref(),
    )?;
    let diff_ids = config.diff_ids(manifest.layers.len())?;
    let layers = manifest
        .layers
        .into_iter()
        .zip(diff_ids)
        .map(|(path, diff_id)| Layer {
            blob_digest: digest_in_name(&path),
            path,
            diff_id,
        })
        .collect();
    Ok(Plan {
        layers,
        config: config.into_config(),
    })
}

/// The sha256 a docker-save member name states: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(name: &str) -> Option<String> {
    let name = clean_name(name.as_bytes())?;
    let hex = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json").filter(|h| !h.contains('/')))?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

// ---- image config (shared by both formats) ----

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ConfigFile {
    /// One expected uncompressed digest per layer (`None` for all when the config has none).
    fn diff_ids(&self, layers: usize) -> Result<Vec<Option<String>>, ImageError> {
        let ids = self
            .rootfs
            .as_ref()
            .map(|r| r.diff_ids.as_slice())
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(vec![None; layers]);
        }
        if ids.len() != layers {
            return Err(ImageError::InvalidArchive(format!(
                "config lists {} diff_ids for {layers} layers",
                ids.len()
            )));
        }
        ids.iter()
            .map(|id| blob_path(id).map(|(_, hex)| Some(hex)))
            .collect()
    }

    fn into_config(self) -> ImageConfig {
        let run = self.config.unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            env: run.env.unwrap_or_default(),
            working_dir: non_empty(run.working_dir),
            user: non_empty(run.user),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            labels: run.labels.unwrap_or_default(),
        }
    }
}

// ---- names inside the outer tarball ----

/// Normalises a member name (`./a//b` → `a/b`); `None` for names with `..` or empty names.
fn clean_name(raw: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(raw).ok()?;
    let parts: Vec<&str> = name
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// `base` + relative `target`, with `..` resolved lexically inside the archive.
fn join_clean(base: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn bad_outer(e: io::Error) -> ImageError {
    ImageError::InvalidArchive(format!("corrupt tarball: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_member_names() {
        assert_eq!(clean_name(b"./a//b/"), Some("a/b".into()));
        assert_eq!(clean_name(b"../a"), None);
        assert_eq!(clean_name(b"."), None);
        assert_eq!(
            join_clean("abc", "../def/layer.tar"),
            Some("def/layer.tar".into())
        );
        assert_eq!(join_clean("", "../x"), None);
    }

    #[test]
    fn parses_digests() {
        let hex = "a".repeat(64);
        assert_eq!(
            blob_path(&format!("sha256:{hex}")).unwrap().0,
            format!("blobs/sha256/{hex}")
        );
        assert!(blob_path("sha256:../../etc/passwd").is_err());
        assert!(blob_path(&format!("sha512:{hex}")).is_err());
        assert_eq!(digest_in_name(&format!("{hex}.json")), Some(hex.clone()));
        assert_eq!(digest_in_name(&format!("./blobs/sha256/{hex}")), Some(hex));
        assert_eq!(digest_in_name("config.json"), None);
    }
}
