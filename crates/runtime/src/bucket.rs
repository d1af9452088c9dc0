//! S3 bucket mounts: `s3fs` (FUSE) on the host, its mount attached inside the sandbox.
//!
//! The credentials go only to the `s3fs` process, through its environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`); it runs on the host, outside the sandbox's pid namespace, so no
//! process, file or environment of the sandbox ever holds them. `s3fs` mounts at a private host
//! path (`<sandbox dir>/mounts/<n>`, under a 0700 directory); the mount is then cloned into the
//! sandbox's mount namespace at the requested path ([`sandpit_isolation::attach`]) and detached
//! from the host at once, so the file system lives exactly as long as the sandbox's namespace
//! (or an unmount) and nothing is left on the host. `s3fs` runs in the sandbox's cgroups: its
//! memory, CPU and threads count against the sandbox's limits, and it dies with the sandbox.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `f_type` of a FUSE file system (statfs).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
/// How long `s3fs` may take to answer for its mount.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(15);
/// Seconds `s3fs` keeps an object's attributes before asking the server again (an object
/// changed from outside shows its new size and content after at most this long; new objects
/// show at once).
pub const STAT_CACHE_SECS: u32 = 5;

/// A bucket mount as a driver gets it. The credentials are never shown to the sandbox.
#[derive(Clone, PartialEq, Eq)]
pub struct BucketMount {
    pub bucket: String,
    /// Absolute path inside the sandbox.
    pub mount_path: PathBuf,
    /// `http(s)://host[:port]` of the S3 API (path-style requests).
    pub endpoint: String,
    /// SigV4 signing region (`us-east-1` when `None`).
    pub region: Option<String>,
    /// `/dir/`: only keys under it are visible, relative to it.
    pub prefix: Option<String>,
    pub read_only: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for BucketMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketMount")
            .field("bucket", &self.bucket)
            .field("mount_path", &self.mount_path)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// A bucket mount of a running sandbox: its `s3fs` process.
#[derive(Debug)]
pub(crate) struct ActiveMount {
    pub mount_path: PathBuf,
    pub child: tokio::process::Child,
}

impl ActiveMount {
    /// Ends `s3fs` (its mount inside the sandbox then answers ENOTCONN until detached).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}

/// Why a mount failed: a message for the caller (never holding the credentials).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MountError(pub String);

/// The `s3fs` command line for `m` mounted at `host_dir`, with its scratch files in `tmp_dir`
/// and files owned by host uid `owner`.
pub(crate) fn s3fs_command(
    s3fs: &Path,
    m: &BucketMount,
    host_dir: &Path,
    tmp_dir: &Path,
    owner: u32,
) -> std::process::Command {
    let source = match m.prefix.as_deref().map(|p| p.trim_end_matches('/')) {
        Some(p) if !p.is_empty() => format!("{}:{p}", m.bucket),
        _ => m.bucket.clone(),
    };
    let mut options = vec![
        format!("url={}", m.endpoint),
        "use_path_request_style".to_string(),
        format!("endpoint={}", m.region.as_deref().unwrap_or("us-east-1")),
        "allow_other".to_string(),
        format!("uid={owner}"),
        format!("gid={owner}"),
        "umask=0022".to_string(),
        "mp_umask=0022".to_string(),
        format!("tmpdir={}", tmp_dir.display()),
        format!("stat_cache_expire={STAT_CACHE_SECS}"),
        "retries=2".to_string(),
        "connect_timeout=10".to_string(),
        "readwrite_timeout=60".to_string(),
        "multipart_size=16".to_string(),
        "parallel_count=8".to_string(),
        "dbglevel=err".to_string(),
    ];
    if m.read_only {
        options.push("ro".to_string());
    }
    let mut cmd = std::process::Command::new(s3fs);
    cmd.arg(source)
        .arg(host_dir)
        .arg("-f")
        .arg("-o")
        .arg(options.join(","))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_ACCESS_KEY_ID", &m.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &m.secret_access_key)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// Whether a FUSE file system is mounted at `dir`.
pub(crate) fn is_fuse_mount(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type().0 == FUSE_SUPER_MAGIC)
}

/// Waits until `child` serves its mount at `dir`; the error carries the tail of its log.
pub(crate) async fn wait_mounted(
    child: &mut tokio::process::Child,
    dir: &Path,
    log: &Path,
) -> Result<(), MountError> {
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        let d = dir.to_owned();
        // statfs of a FUSE mount waits for its server: bounded, so a wedged s3fs cannot hang us.
        let probe = tokio::task::spawn_blocking(move || is_fuse_mount(&d));
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(MountError(format!(
                "s3fs exited ({status}): {}",
                log_tail(log)
            )));
        }
        if Instant::now() >= deadline {
            return Err(MountError(format!(
                "s3fs did not mount within {MOUNT_TIMEOUT:?}: {}",
                log_tail(log)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last lines of an `s3fs` log (its stderr), for an error message.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "no output".to_string()
    } else {
        tail.chars().take(600).collect()
    }
}

/// Removes what a mount left in `<sandbox dir>/mounts` (host mount points a crash left
/// mounted are detached first).
pub(crate) fn clear_host_dirs(mounts_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(mounts_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if is_fuse_mount(&path) {
            let _ = sandpit_isolation::attach::detach_host(&path);
        }
        let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

/// Creates `dir` (and its parent) for root only.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount() -> BucketMount {
        BucketMount {
            bucket: "b".into(),
            mount_path: "/data".into(),
            endpoint: "http://127.0.0.1:9000".into(),
            region: None,
            prefix: Some("/p/q/".into()),
            read_only: true,
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET-xyz".into(),
        }
    }

    #[test]
    fn credentials_only_in_the_environment() {
        let cmd = s3fs_command(
            Path::new("/usr/bin/s3fs"),
            &mount(),
            Path::new("/d/mounts/0"),
            Path::new("/d/mounts/0.tmp"),
            100_000,
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "b:/p/q");
        assert!(
            args.iter()
                .all(|a| !a.contains("SECRET") && !a.contains("AKID"))
        );
        let options = &args[4];
        for want in [
            "ro",
            "uid=100000",
            "allow_other",
            "url=http://127.0.0.1:9000",
        ] {
            assert!(options.split(',').any(|o| o == want), "{options}");
        }
        let env: Vec<_> = cmd.get_envs().collect();
        assert!(env.iter().any(|(k, v)| *k == "AWS_SECRET_ACCESS_KEY"
            && v.is_some_and(|v| v == "SECRET-xyz")));
        assert!(!format!("{:?}", mount()).contains("SECRET"));
    }
}
