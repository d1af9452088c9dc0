//! Shared helpers: a driver on a temporary data dir, the probe as the agent, command execution
//! through the sandbox's socket.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sandpit_protocol::control::Limits;
use sandpit_runtime::local::{LocalDriver, LocalDriverConfig};
use sandpit_runtime::{Driver, SandboxSpec, Started};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ROOTFS_ENV: &str = "SANDPIT_TEST_ROOTFS";
pub const DEFAULT_ROOTFS: &str = "/var/lib/sandpit/images/default/rootfs";

/// The image rootfs for tests, or `None` (with a loud message) when there is none.
pub fn rootfs() -> Option<PathBuf> {
    let path = std::env::var_os(ROOTFS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOTFS));
    if path.join("bin/sh").exists() {
        Some(path)
    } else {
        eprintln!(
            "\n!!! SKIPPED: no image rootfs at {} (set {ROOTFS_ENV} to a debootstrap rootfs) !!!\n",
            path.display()
        );
        None
    }
}

/// The image the specs name: the test rootfs's image in its store (`<store>/<name>/rootfs`).
pub const TEST_IMAGE: &str = "default";

/// The image store holding the test rootfs.
fn images_dir(rootfs: &std::path::Path) -> PathBuf {
    rootfs
        .parent()
        .and_then(|image| image.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn probe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sandpit-launch-probe"))
}

pub struct Env {
    pub driver: LocalDriver,
    pub rootfs: PathBuf,
    pub dir: tempfile::TempDir,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique sandbox id (the test processes share the host's cgroup group).
pub fn unique_id(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

impl Env {
    /// `None` when not root or without a rootfs (the test then returns early).
    pub fn new() -> Option<Env> {
        Self::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut LocalDriverConfig)) -> Option<Env> {
        if !is_root() {
            eprintln!("\n!!! SKIPPED: needs root !!!\n");
            return None;
        }
        let rootfs = rootfs()?;
        let dir = tempfile::Builder::new().prefix("sp").tempdir().unwrap();
        let mut config = LocalDriverConfig::new(dir.path().to_path_buf(), probe_bin());
        config.images_dir = images_dir(&rootfs);
        tweak(&mut config);
        let driver = LocalDriver::with_config(config).unwrap();
        Some(Env {
            driver,
            rootfs,
            dir,
        })
    }

    /// A spec of the test image (see [`TEST_IMAGE`]).
    pub fn spec(&self, id: &str) -> SandboxSpec {
        SandboxSpec {
            id: id.to_string(),
            image: TEST_IMAGE.to_string(),
            limits: Limits {
                cpus: Some(1.0),
                memory_mb: Some(256),
                pids: Some(128),
                disk_mb: None,
            },
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
                ),
                ("SANDPIT_TEST".into(), "yes".into()),
            ],
            ephemeral: false,
            network: Default::default(),
            run_files: Vec::new(),
            egress: None,
            mounts: Vec::new(),
        }
    }

    pub async fn start(&self, spec: &SandboxSpec) -> Started {
        match self.driver.start(spec).await {
            Ok(s) => s,
            Err(e) => {
                let log = std::fs::read_to_string(self.driver.layout().agent_log(&spec.id))
                    .unwrap_or_default();
                panic!("start failed: {e}\nagent.log: {log}");
            }
        }
    }

    /// A second driver on the same data dir that finds its images in `images_dir`.
    pub fn driver_with_images(&self, images_dir: &std::path::Path) -> LocalDriver {
        let mut config = self.driver.config().clone();
        config.images_dir = images_dir.to_path_buf();
        LocalDriver::with_config(config).unwrap()
    }

    /// Creates image `name` in the store at `images_dir` from what `fill` puts in its rootfs.
    pub fn make_image(
        images_dir: &std::path::Path,
        name: &str,
        fill: impl FnOnce(&std::path::Path),
    ) {
        let store = sandpit_image::ImageStore::open(images_dir).unwrap();
        store
            .create_with(
                name,
                sandpit_image::SOURCE_DIR,
                &sandpit_image::NoProgress,
                |rootfs| {
                    fill(rootfs);
                    Ok(sandpit_image::ImageConfig::default())
                },
            )
            .unwrap();
    }

    pub fn host_path(&self, id: &str, rel: &str) -> PathBuf {
        self.driver.layout().sandbox_dir(id).join("upper").join(rel)
    }
}

/// Runs `cmd` with `/bin/sh -c` in the sandbox; returns (exit code, combined output).
pub async fn exec(sandbox: &Started, cmd: &str) -> (i32, String) {
    let fut = async {
        let mut conn = sandbox.agent.connect().await.unwrap();
        conn.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("command timed out: {cmd}"));
    let Some(at) = out.rfind("__EXIT__ ") else {
        panic!("no exit trailer in {out:?} for {cmd}");
    };
    let code = out[at + 9..].trim().parse().unwrap();
    (code, out[..at].to_string())
}

/// Like [`exec`] but asserts success and returns trimmed output.
pub async fn ok(sandbox: &Started, cmd: &str) -> String {
    let (code, out) = exec(sandbox, cmd).await;
    assert_eq!(code, 0, "`{cmd}` failed: {out}");
    out.trim().to_string()
}

pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Alive and not a zombie: a process killed by one driver may wait a moment to be reaped by
/// the driver (in this same test process) that spawned it.
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
    })
}

/// A failed (panicking) test must not leave sandboxes running: kill and remove the cgroups of
/// every sandbox of this data dir.
impl Drop for Env {
    fn drop(&mut self) {
        let cg = self.driver.cgroups();
        let ids: Vec<String> = cg
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|id| self.driver.layout().sandbox_dir(id).exists())
            .collect();
        for id in ids {
            let _ = cg.kill_all(&id);
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while cg.remove(&id).is_err() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
