//! The default image: Debian bookworm (debootstrap, minbase) plus the tools sandboxes expect,
//! and a current Node LTS.
//!
//! Stages (reported through [`Progress`]): `bootstrap` (debootstrap), `packages` (apt-get in a
//! chroot, percent from `APT::Status-Fd`), `node` (optional Node LTS), `finalize` (trim and
//! sandbox-specific files). Every chroot command runs in a private mount namespace, so a
//! failed or killed build never leaves /proc mounted inside the staging directory.

pub(crate) mod cmd;
pub mod mirror;
mod node;
pub mod status;

use std::fs;
use std::path::Path;
use std::time::Duration;

pub use node::NODE_VERSION;

use crate::error::io_err;
use crate::fsutil::remove_tree;
use crate::store::{IfReady, ImageConfig, SOURCE_DEBOOTSTRAP};
use crate::{DEFAULT_IMAGE, ImageError, ImageInfo, ImageStore, Progress};
use cmd::{clean_command, in_rootfs, run_lines};
use sha2::{Digest, Sha256};
use status::{AptProgress, AptStatus, parse_apt_status, parse_debootstrap_line};

const CODENAME: &str = "bookworm";
/// Where Debian keeps locally added CA certificates (on the host and in the image).
const HOST_LOCAL_CAS: &str = "/usr/local/share/ca-certificates";

// Backstops against a stalled mirror or a hung maintainer script (a build takes ~2 minutes).
const BOOTSTRAP_LIMIT: Duration = Duration::from_secs(30 * 60);
const PACKAGES_LIMIT: Duration = Duration::from_secs(60 * 60);
const FINALIZE_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Installed on top of debootstrap's minbase.
pub(crate) const PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "procps",
    "file",
    "git",
    "curl",
    "wget",
    "jq",
    "ca-certificates",
    "python3",
    "ipython3",
    "python3-matplotlib",
    "python3-numpy",
    "python3-pandas",
    "nodejs",
    "npm",
    // What users reach for first (issue 10).
    "python3-requests",
    "python3-pip",
    "vim-tiny",
    "nano",
    "less",
    "zip",
    "unzip",
    "gcc",
    "libc6-dev",
    "make",
    "sqlite3",
    "ripgrep",
];

/// The label of the default image that holds its [`recipe`] hash.
pub const RECIPE_LABEL: &str = "sandpit.recipe";

/// Bump when the build changes in a way the inputs hashed by [`recipe`] do not show (a new
/// step in [`build`], a different cleanup), so existing machines rebuild.
const BUILD_REVISION: &str = "2";

/// The image config's environment.
const IMAGE_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    // The official Node build ships its own CA list; this adds the system one (with any
    // host-local CAs) so node agrees with curl, git and pip.
    "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
];

/// apt settings of the image (also for installs inside sandboxes).
const APT_CONF: &str = "APT::Install-Recommends \"false\";\n";

/// `/etc/pip.conf`. pip takes the sandbox's proxy variables (`HTTP(S)_PROXY`) and, when the
/// egress proxy intercepts TLS, its CA bundle from `PIP_CERT` (set by the runtime; the
/// environment wins over this file). Without interception it trusts the system bundle, which
/// holds the host's local CAs. Sandboxes are disposable, so `pip install` may write to the
/// system site-packages (`/usr/local/lib/python3*/dist-packages`) without a venv (PEP 668),
/// and sandbox root is the normal user (no "running pip as root" warning).
const PIP_CONF: &str = "\
[global]
cert = /etc/ssl/certs/ca-certificates.crt
break-system-packages = true
disable-pip-version-check = true
root-user-action = ignore
";

/// The apt runs of the `packages` stage, in a private mount namespace (`$R` = the rootfs, the
/// packages are the arguments). Each announces itself on stdout so the progress figure can
/// give it a slice. Status lines go to stdout too (fd 3 → 1), apt's human output to stderr.
/// `upgrade` brings debootstrap's packages up to the security/updates suites.
const INSTALL_SCRIPT: &str = "apt() { chroot \"$R\" apt-get -q -y -o APT::Status-Fd=3 -o Dpkg::Use-Pty=0 \"$@\" 3>&1 1>&2; }; \
    echo phase:update; apt update; \
    echo phase:upgrade; apt upgrade; \
    echo phase:install; apt install --no-install-recommends \"$@\"";

/// The default image's recipe: a hash of everything that decides its content (release,
/// packages, configuration files, scripts, Node version, env). [`ImageStore::build_default`]
/// rebuilds an image whose [`RECIPE_LABEL`] differs, so machines that keep their images pick
/// up a changed recipe. (The mirror's package versions are not part of it: a rebuild for
/// security updates is `sandpit image build --force`.)
pub fn recipe() -> String {
    let packages = PACKAGES.join(" ");
    let env = IMAGE_ENV.join("\n");
    let mut hash = Sha256::new();
    for part in [
        BUILD_REVISION,
        CODENAME,
        NODE_VERSION,
        &packages,
        DPKG_EXCLUDES,
        APT_CONF,
        PIP_CONF,
        INSTALL_SCRIPT,
        &env,
    ] {
        hash.update(part.as_bytes());
        // A separator, so moving text between parts changes the hash.
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// Keeps documentation out of the image, now and for later `apt-get install`s inside it
/// (copyright files stay).
const DPKG_EXCLUDES: &str = "\
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/lintian/*
";

impl ImageStore {
    /// Builds the image [`DEFAULT_IMAGE`] (needs root, debootstrap and network access to a
    /// Debian mirror). Returns at once if it is already built from the current [`recipe`];
    /// an image of another recipe is rebuilt and swapped in (see
    /// [`ImageStore::replace_with`]). Takes several minutes.
    pub fn build_default(&self, progress: &dyn Progress) -> Result<ImageInfo, ImageError> {
        let recipe = recipe();
        self.build_default_unless(progress, &|info| {
            info.config.labels.get(RECIPE_LABEL) == Some(&recipe)
        })
    }

    /// Builds a new version of [`DEFAULT_IMAGE`] whatever the one there is (for package
    /// updates of the mirror), swapped in like a changed recipe.
    pub fn rebuild_default(&self, progress: &dyn Progress) -> Result<ImageInfo, ImageError> {
        self.build_default_unless(progress, &|_| false)
    }

    fn build_default_unless(
        &self,
        progress: &dyn Progress,
        is_current: &dyn Fn(&ImageInfo) -> bool,
    ) -> Result<ImageInfo, ImageError> {
        self.commit(
            DEFAULT_IMAGE,
            IfReady::ReplaceUnless(is_current),
            progress,
            |staging| Ok((build(staging, progress)?, SOURCE_DEBOOTSTRAP.to_owned())),
        )
    }
}

fn build(staging: &Path, progress: &dyn Progress) -> Result<ImageConfig, ImageError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::build(
            "bootstrap",
            "building the default image needs root",
        ));
    }
    let rootfs = staging.join("rootfs");
    let sources = mirror::host_sources(Path::new("/etc/apt"), CODENAME);
    bootstrap(
        &rootfs,
        mirror::bootstrap_mirror(&sources, CODENAME),
        progress,
    )?;
    configure_apt(&rootfs, &sources)?;
    copy_local_cas(
        Path::new(HOST_LOCAL_CAS),
        &rootfs.join(HOST_LOCAL_CAS.trim_start_matches('/')),
        progress,
    )?;
    install_packages(&rootfs, progress)?;

    let mut config = ImageConfig {
        env: IMAGE_ENV.iter().map(|kv| (*kv).to_owned()).collect(),
        working_dir: Some("/workspace".to_owned()),
        cmd: vec!["/bin/bash".to_owned()],
        ..ImageConfig::default()
    };
    config.labels.insert(RECIPE_LABEL.to_owned(), recipe());
    progress.stage("node", Some(3));
    match node::install(&rootfs, &staging.join("node-pack"), progress) {
        Ok(version) => {
            progress.message(&format!("node {version} installed in /usr/local/bin"));
            config.labels.insert("sandpit.node".to_owned(), version);
        }
        Err(reason) => {
            progress.message(&format!(
                "keeping Debian's node 18: Node {NODE_VERSION} failed: {reason}"
            ));
            tracing::warn!(%reason, "default image keeps Debian's node 18");
            config
                .labels
                .insert("sandpit.node".to_owned(), "debian".to_owned());
        }
    }
    finalize(&rootfs, progress)?;
    Ok(config)
}

fn bootstrap(
    rootfs: &Path,
    mirror: Option<String>,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    progress.stage("bootstrap", None);
    match &mirror {
        Some(mirror) => progress.message(&format!(
            "debootstrap {CODENAME} from the host's mirror {mirror}"
        )),
        None => progress.message(&format!(
            "debootstrap {CODENAME} from debootstrap's default mirror"
        )),
    }
    // A private mount namespace: debootstrap mounts /proc and /sys in the target and would leak
    // them on the host if killed half-way.
    let mut cmd = clean_command("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "debootstrap",
        "--variant=minbase",
    ])
    .arg(CODENAME)
    .arg(rootfs);
    if let Some(mirror) = mirror {
        cmd.arg(mirror);
    }
    let mut lines = 0u64;
    let mut on_line = |line: &str| {
        if let Some(message) = parse_debootstrap_line(line) {
            lines += 1;
            progress.advance(lines);
            progress.message(&message);
        }
    };
    // debootstrap reports on stderr; stdout only has the occasional dpkg line.
    let stderr_progress = |line: &str| {
        if let Some(message) = parse_debootstrap_line(line) {
            progress.message(&message);
        }
    };
    run_lines(
        &mut cmd,
        "bootstrap",
        BOOTSTRAP_LIMIT,
        &mut on_line,
        stderr_progress,
    )
}

/// Points the image's apt at the host's sources for the release (when there are any; otherwise
/// debootstrap's sources.list stays) and keeps docs out of future installs.
fn configure_apt(rootfs: &Path, sources: &[mirror::AptSource]) -> Result<(), ImageError> {
    let write = |rel: &str, data: &str| {
        let path = rootfs.join(rel);
        fs::write(&path, data).map_err(io_err(format!("writing {}", path.display())))
    };
    write("etc/dpkg/dpkg.cfg.d/sandpit-nodoc", DPKG_EXCLUDES)?;
    write("etc/apt/apt.conf.d/90sandpit", APT_CONF)?;
    write("etc/pip.conf", PIP_CONF)?;
    if !sources.is_empty() {
        write(
            "etc/apt/sources.list.d/debian.sources",
            &mirror::render_deb822(sources, rootfs),
        )?;
        let list = rootfs.join("etc/apt/sources.list");
        if list.exists() {
            fs::remove_file(&list).map_err(io_err(format!("removing {}", list.display())))?;
        }
    }
    Ok(())
}

/// Copies the host's local CA certificates (`*.crt`) into the image before `ca-certificates`
/// is installed, whose postinst then adds them to the image's bundle: on hosts whose network
/// intercepts TLS, https inside sandboxes works like on the host. Certificates are public.
fn copy_local_cas(from: &Path, to: &Path, progress: &dyn Progress) -> Result<(), ImageError> {
    let Ok(entries) = fs::read_dir(from) else {
        return Ok(());
    };
    let mut copied = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_crt = path.extension().is_some_and(|e| e == "crt");
        if !is_crt || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        fs::create_dir_all(to).map_err(io_err(format!("creating {}", to.display())))?;
        let target = to.join(entry.file_name());
        fs::copy(&path, &target).map_err(io_err(format!("copying {}", path.display())))?;
        copied += 1;
    }
    if copied > 0 {
        progress.message(&format!(
            "trusting {copied} local CA certificate(s) of the host ({HOST_LOCAL_CAS})"
        ));
    }
    Ok(())
}

fn install_packages(rootfs: &Path, progress: &dyn Progress) -> Result<(), ImageError> {
    progress.stage("packages", Some(100));
    let mut cmd = in_rootfs(rootfs, INSTALL_SCRIPT);
    cmd.args(PACKAGES);
    let mut percent = AptProgress::default();
    let on_status = |line: &str| {
        let done = match line.strip_prefix("phase:") {
            Some("update") => percent.phase(0.0, 5.0),
            Some("upgrade") => percent.phase(5.0, 25.0),
            Some(_) => percent.phase(25.0, 100.0),
            None => {
                let Some(status) = parse_apt_status(line) else {
                    return;
                };
                if let AptStatus::Install { message, .. } = &status {
                    progress.message(message);
                } else if let AptStatus::Error { package, message } = &status {
                    progress.message(&format!("error: {package}: {message}"));
                }
                percent.update(&status)
            }
        };
        progress.advance(done);
    };
    run_lines(&mut cmd, "packages", PACKAGES_LIMIT, on_status, |_| {})
}

/// Shrinks the image and writes the files sandboxes expect.
fn finalize(rootfs: &Path, progress: &dyn Progress) -> Result<(), ImageError> {
    progress.stage("finalize", None);
    progress.message("cleaning apt caches and docs");
    let mut clean = in_rootfs(rootfs, "chroot \"$R\" apt-get clean");
    run_lines(&mut clean, "finalize", FINALIZE_LIMIT, |_| {}, |_| {})?;
    for dir in [
        "var/lib/apt/lists",
        "var/cache/apt",
        "usr/share/man",
        "usr/share/info",
        "var/log/apt",
        "tmp",
    ] {
        clear_dir(&rootfs.join(dir))?;
    }
    remove_docs_except_copyright(&rootfs.join("usr/share/doc"))?;
    for file in [
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/bootstrap.log",
    ] {
        let _ = fs::remove_file(rootfs.join(file));
    }

    progress.message("writing /workspace, /etc/resolv.conf, /etc/hostname");
    let workspace = rootfs.join("workspace");
    fs::create_dir_all(&workspace).map_err(io_err(format!("creating {}", workspace.display())))?;
    // debootstrap copies the host's resolv.conf and hostname; the sandbox runtime provides its
    // own, and the host's should not leak into images.
    for (file, content) in [("etc/resolv.conf", ""), ("etc/hostname", "sandbox\n")] {
        let path = rootfs.join(file);
        let _ = fs::remove_file(&path);
        fs::write(&path, content).map_err(io_err(format!("writing {}", path.display())))?;
    }
    Ok(())
}

/// Empties a directory of the (trusted, just built) rootfs without following symlinks.
fn clear_dir(dir: &Path) -> Result<(), ImageError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        remove_tree(&entry.path())?;
    }
    Ok(())
}

fn remove_docs_except_copyright(doc: &Path) -> Result<(), ImageError> {
    for entry in walkdir::WalkDir::new(doc).min_depth(1).contents_first(true) {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if entry.file_type().is_dir() {
            // Fails (harmlessly) while a copyright file is left inside.
            let _ = fs::remove_dir(path);
        } else if entry.file_name() != "copyright" {
            let _ = fs::remove_file(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_is_a_stable_hash_of_the_inputs() {
        let r = recipe();
        assert_eq!(r.len(), 64);
        assert!(r.bytes().all(|b| b.is_ascii_hexdigit()), "{r}");
        assert_eq!(recipe(), r, "deterministic");
    }

    #[test]
    fn copies_only_crt_files_of_the_host() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("corp.crt"), "cert").unwrap();
        std::fs::write(host.path().join("notes.txt"), "x").unwrap();
        std::fs::create_dir(host.path().join("dir.crt")).unwrap();
        let image = tempfile::tempdir().unwrap();
        let target = image.path().join("usr/local/share/ca-certificates");
        copy_local_cas(host.path(), &target, &crate::NoProgress).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["corp.crt"]);
        // A host without local CAs changes nothing.
        let empty = tempfile::tempdir().unwrap();
        copy_local_cas(
            &empty.path().join("missing"),
            &empty.path().join("t"),
            &crate::NoProgress,
        )
        .unwrap();
        assert!(!empty.path().join("t").exists());
    }
}
