//! Shared helpers: tarball builders and a scratch store with a sentinel directory outside it.

mod default_image;
mod docker_save;
mod hostile;
mod oci;
mod store;
mod unpack_props;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sandpit_image::ImageStore;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// One layer entry. Names are written raw (no validation), so hostile paths are possible.
pub enum E<'a> {
    File(&'a str, &'a [u8]),
    FileMode(&'a str, &'a [u8], u32, u64),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Fifo(&'a str),
    CharDev(&'a str),
}

pub fn layer(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (name, kind, data, mode, uid, link): (
            &str,
            tar::EntryType,
            &[u8],
            u32,
            u64,
            Option<&str>,
        ) = match *entry {
            E::File(n, d) => (n, tar::EntryType::Regular, d, 0o644, 0, None),
            E::FileMode(n, d, m, u) => (n, tar::EntryType::Regular, d, m, u, None),
            E::Dir(n) => (n, tar::EntryType::Directory, b"", 0o755, 0, None),
            E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", 0o777, 0, Some(t)),
            E::Hard(n, t) => (n, tar::EntryType::Link, b"", 0o644, 0, Some(t)),
            E::Fifo(n) => (n, tar::EntryType::Fifo, b"", 0o644, 0, None),
            E::CharDev(n) => (n, tar::EntryType::Char, b"", 0o666, 0, None),
        };
        let mut header = tar::Header::new_gnu();
        let slot = &mut header.as_old_mut().name;
        assert!(
            name.len() < slot.len(),
            "test names must fit the old header"
        );
        slot[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(uid);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        if let Some(target) = link {
            header.set_link_name_literal(target).unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An outer tarball from (name, content) members.
pub fn outer(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, name, data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "FOO=bar"],
            "WorkingDir": "/app",
            "Cmd": ["sh"],
            "Labels": {"org.example": "yes"}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()}
    }))
    .unwrap()
}

/// A `docker save` tarball (classic layout: `<id>/layer.tar`, `<config hex>.json`).
pub fn docker_save(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    docker_save_with(layers, &diff_ids)
}

pub fn docker_save_with(layers: &[Vec<u8>], diff_ids: &[String]) -> Vec<u8> {
    let config = config_json(diff_ids);
    let config_name = format!("{}.json", sha(&config));
    let mut members = vec![(config_name.clone(), config)];
    let mut layer_names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("{:064x}/layer.tar", i + 1);
        members.push((name.clone(), layer.clone()));
        layer_names.push(name);
    }
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": ["test:latest"], "Layers": layer_names
    }]);
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    outer(&members)
}

/// An OCI image layout tarball with gzip layers. `tamper` may change a layer blob after its
/// digest was computed.
pub fn oci_layout(layers: &[Vec<u8>], mut tamper: impl FnMut(usize, &mut Vec<u8>)) -> Vec<u8> {
    let mut members = vec![(
        "oci-layout".to_owned(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut descriptors = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let mut blob = gzip(layer);
        let digest = sha(&blob);
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{digest}"), "size": blob.len()
        }));
        tamper(i, &mut blob);
        members.push((format!("blobs/sha256/{digest}"), blob));
    }
    let config = config_json(&layers.iter().map(|l| sha(l)).collect::<Vec<_>>());
    let config_digest = sha(&config);
    members.push((format!("blobs/sha256/{config_digest}"), config.clone()));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": descriptors
    }))
    .unwrap();
    let manifest_digest = sha(&manifest);
    members.push((format!("blobs/sha256/{manifest_digest}"), manifest.clone()));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}]
    });
    members.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    outer(&members)
}

/// A scratch store at `<tmp>/images` next to a sentinel directory `<tmp>/outside` that no
/// import may ever touch.
pub struct Env {
    pub dir: TempDir,
    pub store: ImageStore,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        Self { dir, store }
    }

    pub fn sentinel(&self) -> PathBuf {
        fs::canonicalize(self.dir.path().join("outside")).unwrap()
    }

    /// Writes a tarball next to the store and imports it as `name`.
    pub fn import(
        &self,
        name: &str,
        tarball: &[u8],
    ) -> Result<sandpit_image::ImageInfo, sandpit_image::ImageError> {
        let path = self.dir.path().join(format!("{name}.tar"));
        fs::write(&path, tarball).unwrap();
        let result = self
            .store
            .import_tar(&path, name, &sandpit_image::NoProgress);
        fs::remove_file(&path).unwrap();
        result
    }

    /// Every path in the scratch dir outside image rootfs dirs and the lock dir, sorted.
    pub fn stray_paths(&self) -> Vec<String> {
        let root = self.dir.path();
        let mut out = Vec::new();
        let mut walker = walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .into_iter();
        while let Some(entry) = walker.next() {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            // images/<name>/{rootfs,image.json} and images/.locks are the store's own.
            if parts.len() >= 3
                && parts[0] == "images"
                && (parts[2] == "rootfs" || parts[2] == "image.json")
                || parts.len() >= 2 && parts[0] == "images" && parts[1] == ".locks"
            {
                if entry.file_type().is_dir() {
                    walker.skip_current_dir();
                }
                continue;
            }
            out.push(rel);
        }
        out.sort();
        out
    }

    /// Asserts the failed import left nothing: not ready, no staging dirs, sentinel empty.
    pub fn assert_clean_failure(&self, name: &str) {
        assert!(matches!(
            self.store.rootfs(name),
            Err(sandpit_image::ImageError::NotFound(_))
        ));
        assert!(self.store.list().unwrap().is_empty());
        assert_eq!(self.stray_paths(), ["images", "outside"]);
    }
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}
