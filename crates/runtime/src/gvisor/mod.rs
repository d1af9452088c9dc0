//! [`GvisorDriver`]: sandboxes under gVisor (`runsc --platform=ptrace --network=none`).
//!
//! Per start, under `<data_dir>/gvisor/sandboxes/<id>/`: `upper/` + `work/` (the persistent
//! writable layer), `rootfs/` (mount point), `sock/` (the agent's socket dir), `run/` (shown
//! read-only at `/run/sandpit`: the egress socket), `bundle/config.json` and `agent.log`.
//! runsc runs in a private mount namespace in which the image and `upper/` are overlaid at
//! `rootfs/`: the mount lives exactly as long as the sandbox's gofer, the host never sees it.
//! The runsc process is moved into the sandbox's cgroups before it execs, so the sentry, the
//! gofer and every guest process are counted and limited there (runsc itself is told to leave
//! cgroups alone).
//!
//! How the host reaches the agent: the agent binds `/.sandpit/sock/agent.sock`; with
//! `--host-uds=all` runsc's gofer creates that socket on the host (in `sock/`), so the driver
//! connects to a plain host Unix socket, as with the local driver. The same flag lets the
//! agent's egress bridge connect out to `/run/sandpit/egress.sock`. gVisor's netstack stays
//! sealed (`--network=none`).
//!
//! runsc state lives in `<data_dir>/gvisor/state` (its `--root`); stop, destroy and reconcile
//! delete it with the cgroups, the socket and every process.

pub mod bundle;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use sandpit_isolation::cgroup::{CgroupLimits, CgroupManager};
use sandpit_isolation::process::OverlayMount;
use sandpit_protocol::control::{Limits, NetworkMode};
use sandpit_protocol::netpolicy::EgressPolicy;
use tokio::sync::watch;

use sandpit_image::ImageStore;

use crate::host::{
    Bridges, HostLayout, check_data_dir, check_socket_path, remove_cgroups, remove_file_if_exists,
};
use crate::local::{
    cg_err, cgroup_limits, check_run_files, empty_dir, ensure_traversable, io_err, mkdir_mode,
    remove_dir_all_if_exists, resolve_image, sandbox_env, sandbox_usage, serve_egress,
    update_cgroups, validate_id, watch_exit, write_run_files,
};
use crate::{
    Driver, DriverError, ResourceUsage, SandboxSpec, Started, UnixConnector, agent_log, usage,
};

/// Smallest memory limit: the gVisor kernel (sentry) and gofer live in the sandbox's cgroup.
pub const MIN_MEMORY_MB: u64 = 64;
/// Host tasks the sentry and the gofer need on top of the guest's (Go runtime threads): the
/// `pids` limit counts host tasks, and under the ptrace platform every guest process is one.
pub const PIDS_OVERHEAD: u64 = 96;
/// Why `full` networking is refused: gVisor's netstack runs with `--network=none` here.
const FULL_NETWORK_REFUSED: &str =
    "network mode full is not available with gvisor isolation (use none or allowlist)";
/// How often a start polls the agent's socket.
const READY_POLL: Duration = Duration::from_millis(20);
/// Lines of agent.log quoted in a failed start's message.
const LOG_TAIL_BYTES: u64 = 2048;

/// Settings of a [`GvisorDriver`]; [`GvisorConfig::new`] fills in defaults.
#[derive(Debug, Clone)]
pub struct GvisorConfig {
    /// Holds `gvisor/state` and `gvisor/sandboxes/<id>/`.
    pub data_dir: PathBuf,
    /// The image store that [`SandboxSpec::image`] names are resolved in.
    pub images_dir: PathBuf,
    /// The static agent, bound read-only into every sandbox.
    pub agent_bin: PathBuf,
    /// The runsc binary.
    pub runsc: PathBuf,
    /// The cgroup that holds the gVisor sandboxes' cgroups (absolute: fixed in every hierarchy;
    /// a bare name: a child of the server's own cgroup). Default `/sandpit-gvisor`.
    pub cgroup_group: String,
    /// How long runsc and the agent may take before the start fails.
    pub start_timeout: Duration,
    /// How long `stop` waits for the processes to go away.
    pub stop_timeout: Duration,
    /// RLIMIT_NOFILE of the agent (inside gVisor's kernel).
    pub nofile: u64,
    /// Cap of each sandbox's `agent.log`.
    pub agent_log_max_bytes: u64,
    /// The agent's tracing filter (default `warn`).
    pub agent_log_filter: Option<String>,
}

impl GvisorConfig {
    pub fn new(data_dir: PathBuf, agent_bin: PathBuf) -> Self {
        Self {
            images_dir: data_dir.join("images"),
            data_dir,
            agent_bin,
            runsc: PathBuf::from("/usr/bin/runsc"),
            cgroup_group: format!("{}-gvisor", crate::local::DEFAULT_CGROUP_ROOT),
            start_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(10),
            nofile: sandpit_isolation::launch::DEFAULT_NOFILE,
            agent_log_max_bytes: agent_log::DEFAULT_MAX_BYTES,
            agent_log_filter: None,
        }
    }
}

/// Where runsc is installed, if it is: `$SANDPIT_RUNSC`, else `runsc` on `PATH`.
pub fn find_runsc() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SANDPIT_RUNSC") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("runsc"))
        .find(|candidate| candidate.is_file())
}

struct Running {
    pid: u32,
    exited: watch::Receiver<bool>,
    /// The image's rootfs, held open while the sandbox runs (see the local driver).
    _image: std::fs::File,
}

/// The gVisor driver. See the module docs.
pub struct GvisorDriver {
    config: GvisorConfig,
    images: ImageStore,
    cgroups: Box<dyn CgroupManager>,
    running: Mutex<HashMap<String, Running>>,
    /// `<data_dir>/gvisor/sandboxes/<id>/...`.
    layout: HostLayout,
    bridges: Bridges,
}

impl std::fmt::Debug for GvisorDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GvisorDriver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The host cgroup limits for the guest's: the memory limit covers the sentry too; pids get
/// the sentry's and gofer's threads on top.
fn host_limits(limits: &Limits) -> Result<CgroupLimits, DriverError> {
    if let Some(m) = limits.memory_mb
        && m < MIN_MEMORY_MB
    {
        return Err(DriverError::InvalidSpec(format!(
            "memoryMb {m} must be at least {MIN_MEMORY_MB} with gvisor isolation (the gVisor kernel runs inside the limit)"
        )));
    }
    let mut host = cgroup_limits(limits)?;
    host.pids = host.pids.map(|p| p.saturating_add(PIDS_OVERHEAD));
    Ok(host)
}

/// Reaps whichever of `pids` are exited children of this process (runsc's sandbox and gofer
/// are re-parented to us, a child subreaper); returns those still alive.
fn reap(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            loop {
                match waitpid(Pid::from_raw(*pid as i32), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => break true,
                    Err(Errno::EINTR) => {}
                    // Reaped, or not our child: then alive only while signal 0 reaches it.
                    Err(Errno::ECHILD) => {
                        break nix::sys::signal::kill(Pid::from_raw(*pid as i32), None).is_ok();
                    }
                    _ => break false,
                }
            }
        })
        .collect()
}

impl GvisorDriver {
    /// A driver with default settings and the given runsc.
    pub fn new(data_dir: PathBuf, agent_bin: PathBuf, runsc: PathBuf) -> Result<Self, DriverError> {
        Self::with_config(GvisorConfig {
            runsc,
            ..GvisorConfig::new(data_dir, agent_bin)
        })
    }

    pub fn with_config(config: GvisorConfig) -> Result<Self, DriverError> {
        let setup = |stage: &'static str| io_err("", stage);
        check_data_dir(&config.data_dir)?;
        if !config.runsc.is_file() {
            return Err(DriverError::InvalidSpec(format!(
                "runsc not found at {}",
                config.runsc.display()
            )));
        }
        sandpit_isolation::process::set_child_subreaper()
            .map_err(setup("PR_SET_CHILD_SUBREAPER"))?;
        let cgroups = sandpit_isolation::cgroup::detect(&config.cgroup_group)
            .map_err(|e| setup("detect cgroups")(std::io::Error::other(e.to_string())))?;
        let root = config.data_dir.join("gvisor");
        std::fs::create_dir_all(&root).map_err(setup("create the data dir"))?;
        ensure_traversable(&config.data_dir).map_err(setup("chmod the data dir"))?;
        mkdir_mode(&root.join("sandboxes"), 0o700).map_err(setup("create sandboxes/"))?;
        mkdir_mode(&root.join("state"), 0o700).map_err(setup("create state/"))?;
        let images = ImageStore::open(&config.images_dir)
            .map_err(|e| setup("open the image store")(std::io::Error::other(e.to_string())))?;
        Ok(Self {
            layout: HostLayout::new(root.join("sandboxes")),
            config,
            images,
            cgroups,
            running: Mutex::new(HashMap::new()),
            bridges: Bridges::default(),
        })
    }

    pub fn config(&self) -> &GvisorConfig {
        &self.config
    }

    /// The cgroup backend (tests read the limits through it).
    pub fn cgroups(&self) -> &dyn CgroupManager {
        self.cgroups.as_ref()
    }

    /// Where each sandbox's files are (`sandbox_dir`, `run_dir`, `agent.log`).
    pub fn layout(&self) -> &HostLayout {
        &self.layout
    }

    /// runsc's `--root`.
    pub fn state_dir(&self) -> PathBuf {
        self.config.data_dir.join("gvisor/state")
    }

    /// The host side of the agent's socket.
    pub fn socket_path(&self, id: &str) -> PathBuf {
        self.layout
            .sandbox_dir(id)
            .join("sock")
            .join(bundle::AGENT_SOCKET)
    }

    /// Host pid of the sandbox (runsc's sandbox process), if this driver started it and it is
    /// alive.
    pub fn pid(&self, id: &str) -> Option<u32> {
        let map = self.running.lock().ok()?;
        map.get(id).filter(|r| !*r.exited.borrow()).map(|r| r.pid)
    }

    fn validate(&self, spec: &SandboxSpec) -> Result<CgroupLimits, DriverError> {
        validate_id(&spec.id)?;
        check_run_files(&spec.run_files)?;
        self.check_network(&spec.network)?;
        if spec.limits.disk_mb.is_some() {
            return Err(DriverError::InvalidSpec(
                "diskMb is not available with gvisor isolation".into(),
            ));
        }
        check_socket_path(&self.socket_path(&spec.id))?;
        host_limits(&spec.limits)
    }

    fn prepare_dirs(&self, spec: &SandboxSpec) -> Result<(), DriverError> {
        let id = spec.id.as_str();
        let dir = self.layout.sandbox_dir(id);
        mkdir_mode(&dir, 0o700).map_err(io_err(id, "create the sandbox dir"))?;
        for (name, mode) in [
            ("upper", 0o755),
            ("work", 0o700),
            ("rootfs", 0o755),
            ("sock", 0o700),
            ("run", 0o755),
            ("bundle", 0o700),
        ] {
            mkdir_mode(&dir.join(name), mode).map_err(io_err(id, "create the sandbox dirs"))?;
        }
        let _ = std::fs::remove_file(self.socket_path(id));
        write_run_files(&self.layout.run_dir(id), &spec.run_files)
            .map_err(io_err(id, "write the run files"))?;
        if let Some(endpoint) = &spec.egress {
            let task = serve_egress(&self.layout.run_dir(id), endpoint)
                .map_err(io_err(id, "bind the egress socket"))?;
            self.bridges.replace(id, task);
        }
        self.layout.mark_ephemeral(id, spec.ephemeral)
    }

    fn write_bundle(&self, spec: &SandboxSpec) -> Result<(), DriverError> {
        let id = spec.id.as_str();
        let dir = self.layout.sandbox_dir(id);
        let env = sandbox_env(&spec.env, &self.layout.run_dir(id));
        let rootfs = dir.join("rootfs");
        let socket_dir = dir.join("sock");
        let run_dir = self.layout.run_dir(id);
        let params = bundle::BundleParams {
            hostname: id,
            rootfs: &rootfs,
            agent_bin: &self.config.agent_bin,
            agent_socket_dir: &socket_dir,
            run_dir: &run_dir,
            env: &env,
            nofile: self.config.nofile,
            // Always set: without it the agent would read RUST_LOG from the tenant's env.
            log_filter: Some(self.config.agent_log_filter.as_deref().unwrap_or("warn")),
        };
        let failed = |e: oci_spec::OciSpecError| DriverError::StartFailed {
            id: id.to_string(),
            message: format!("building the OCI bundle: {e}"),
        };
        let oci = bundle::spec(&params).map_err(failed)?;
        oci.save(dir.join("bundle/config.json")).map_err(failed)
    }

    /// `runsc` with the flags every call shares.
    fn runsc(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.config.runsc);
        cmd.arg("--root")
            .arg(self.state_dir())
            .args([
                "--platform=ptrace",
                "--network=none",
                "--host-uds=all",
                "--ignore-cgroups",
            ])
            .env_clear()
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a runsc subcommand to its end; its stderr becomes the error message.
    async fn runsc_call(&self, id: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = tokio::process::Command::from(self.runsc());
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(self.config.stop_timeout, cmd.output())
            .await
            .map_err(|_| format!("runsc {} {id} did not finish in time", args[0]))?
            .map_err(|e| format!("running runsc: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }

    /// `runsc run --detach` inside the sandbox's cgroups and private overlay; returns the
    /// sandbox's host pid.
    async fn launch(&self, spec: &SandboxSpec, rootfs: &Path) -> Result<u32, DriverError> {
        let id = spec.id.as_str();
        let dir = self.layout.sandbox_dir(id);
        let failed = |message: String| DriverError::StartFailed {
            id: id.to_string(),
            message,
        };
        let log = agent_log::CappedLog::create(
            &self.layout.agent_log(id),
            self.config.agent_log_max_bytes,
        )
        .map_err(io_err(id, "create agent.log"))?;
        let (log_read, log_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err(id, "create the log pipe")(e.into()))?;
        // runsc's exit is watched with a pidfd; the log's end is not used for it here.
        agent_log::spawn_pump(log_read, log, Default::default())
            .map_err(io_err(id, "start the agent.log copier"))?;
        let pid_file = dir.join("bundle/pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut cmd = self.runsc();
        cmd.arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(dir.join("bundle"))
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdout(
                log_write
                    .try_clone()
                    .map_err(io_err(id, "dup the log pipe"))?,
            )
            .stderr(log_write);
        sandpit_isolation::process::join_cgroups(&mut cmd, &self.cgroups.procs_files(id))
            .map_err(io_err(id, "prepare joining the cgroups"))?;
        let overlay = OverlayMount {
            lower: rootfs.to_path_buf(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            target: dir.join("rootfs"),
        };
        sandpit_isolation::process::private_overlay(&mut cmd, &overlay)
            .map_err(|e| DriverError::InvalidSpec(e.to_string()))?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io_err(id, "spawn runsc"))?;
        drop(cmd);
        let status = tokio::time::timeout(self.config.start_timeout, child.wait())
            .await
            .map_err(|_| {
                failed(format!(
                    "runsc run did not return within {:?}",
                    self.config.start_timeout
                ))
            })?
            .map_err(io_err(id, "wait for runsc"))?;
        if !status.success() {
            return Err(failed(format!(
                "runsc run failed ({status}): {}",
                self.log_tail(id)
            )));
        }
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or_else(|| failed("runsc run wrote no pid file".into()))
    }

    /// The end of agent.log, for error messages.
    fn log_tail(&self, id: &str) -> String {
        let text = std::fs::read(self.layout.agent_log(id)).unwrap_or_default();
        let start = text.len().saturating_sub(LOG_TAIL_BYTES as usize);
        String::from_utf8_lossy(&text[start..]).trim().to_string()
    }

    /// Waits until the agent accepts on its socket, or the sandbox exits, or the start timeout.
    async fn wait_ready(
        &self,
        id: &str,
        exited: &watch::Receiver<bool>,
        deadline: Instant,
    ) -> Result<(), DriverError> {
        let socket = self.socket_path(id);
        loop {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                return Ok(());
            }
            let message = if *exited.borrow() {
                "the sandbox exited before its agent listened"
            } else if Instant::now() >= deadline {
                "the agent did not listen in time"
            } else {
                tokio::time::sleep(READY_POLL).await;
                continue;
            };
            return Err(DriverError::StartFailed {
                id: id.to_string(),
                message: format!("{message}; agent.log: {}", self.log_tail(id)),
            });
        }
    }

    /// Kills every process of `id` (runsc's sandbox, gofer and the guest), deletes runsc's
    /// state, removes the cgroups and the socket.
    async fn teardown(&self, id: &str, running: Option<Running>) -> Result<(), DriverError> {
        let deadline = Instant::now() + self.config.stop_timeout;
        self.bridges.abort(id);
        let mut pids = self.cgroups.pids(id).unwrap_or_default();
        if let Some(r) = &running {
            pids.push(r.pid);
        }
        if self.cgroups.exists(id) {
            self.cgroups
                .kill_all(id)
                .map_err(cg_err(id, "kill the sandbox"))?;
        }
        if let Some(mut r) = running {
            let _ = tokio::time::timeout(self.config.stop_timeout, r.exited.wait_for(|e| *e)).await;
        }
        // Everything is dead already; this only drops runsc's record of the container.
        if let Err(message) = self.runsc_call(id, &["delete", "--force", id]).await
            && self.state_has(id)
        {
            tracing::warn!(id, message, "runsc delete failed");
        }
        // runsc's sandbox and gofer are reaped too (they are our children, not in the cgroups
        // once they exit).
        remove_cgroups(self.cgroups.as_ref(), id, deadline, || {
            pids = reap(&pids);
            !pids.is_empty()
        })
        .await?;
        remove_file_if_exists(&self.socket_path(id)).map_err(io_err(id, "remove the socket"))
    }

    fn started(&self, id: &str, pid: u32) -> Started {
        Started {
            agent: std::sync::Arc::new(UnixConnector::new(self.socket_path(id))),
            pid,
        }
    }

    /// Whether runsc's state dir still names `id`.
    fn state_has(&self, id: &str) -> bool {
        self.state_ids().contains(id)
    }

    /// Container ids in runsc's state dir (its files are named `<id>_sandbox:<id>.state` and
    /// similar; every name starts with the id and an underscore or dot).
    fn state_ids(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(self.state_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let id = name.split(['_', ':']).next().unwrap_or_default();
                let id = id.strip_suffix(".state").unwrap_or(id);
                if validate_id(id).is_ok() {
                    ids.insert(id.to_string());
                }
            }
        }
        ids
    }
}

#[async_trait::async_trait]
impl Driver for GvisorDriver {
    async fn start(&self, spec: &SandboxSpec) -> Result<Started, DriverError> {
        let limits = self.validate(spec)?;
        let id = spec.id.as_str();
        if let Some(pid) = self.pid(id) {
            return Ok(self.started(id, pid));
        }
        let stale = self.running.lock().ok().and_then(|mut m| m.remove(id));
        if stale.is_some() || self.cgroups.exists(id) || self.state_has(id) {
            self.teardown(id, stale).await?;
        }
        let rootfs = resolve_image(&self.images, spec)?;
        // Held open while the sandbox runs (see the local driver).
        let image = std::fs::File::open(&rootfs).map_err(io_err(id, "open the image rootfs"))?;
        self.prepare_dirs(spec)?;
        self.write_bundle(spec)?;
        self.cgroups
            .create(id, &limits)
            .map_err(cg_err(id, "create the cgroups"))?;
        let started_at = Instant::now();
        let deadline = started_at + self.config.start_timeout;
        let pid = match self.launch(spec, &rootfs).await {
            Ok(pid) => pid,
            Err(e) => {
                let _ = self.teardown(id, None).await;
                return Err(e);
            }
        };
        let pidfd = match sandpit_isolation::process::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = self.teardown(id, None).await;
                return Err(io_err(id, "pidfd_open the sandbox")(e));
            }
        };
        let (tx, rx) = watch::channel(false);
        tokio::spawn(watch_exit(pid, pidfd, tx));
        if let Err(e) = self.wait_ready(id, &rx, deadline).await {
            let running = Running {
                pid,
                exited: rx,
                _image: image,
            };
            let _ = self.teardown(id, Some(running)).await;
            return Err(e);
        }
        tracing::debug!(id, pid, elapsed = ?started_at.elapsed(), "gvisor sandbox ready");
        if let Ok(mut map) = self.running.lock() {
            map.insert(
                id.to_string(),
                Running {
                    pid,
                    exited: rx,
                    _image: image,
                },
            );
        }
        Ok(self.started(id, pid))
    }

    async fn stop(&self, id: &str) -> Result<(), DriverError> {
        validate_id(id)?;
        let running = self.running.lock().ok().and_then(|mut m| m.remove(id));
        empty_dir(&self.layout.run_dir(id)).map_err(io_err(id, "clear the run dir"))?;
        self.teardown(id, running).await?;
        self.layout.drop_ephemeral_layer(id)?;
        Ok(())
    }

    async fn destroy(&self, id: &str) -> Result<(), DriverError> {
        self.stop(id).await?;
        remove_dir_all_if_exists(&self.layout.sandbox_dir(id))
            .map_err(io_err(id, "remove the sandbox dir"))
    }

    async fn is_running(&self, id: &str) -> bool {
        self.pid(id).is_some()
    }

    async fn set_limits(&self, id: &str, limits: &Limits) -> Result<(), DriverError> {
        validate_id(id)?;
        update_cgroups(self.cgroups.as_ref(), id, &host_limits(limits)?)
    }

    /// `none` and `allowlist` both mean "only the egress bridge"; `full` is refused.
    async fn set_network(&self, id: &str, policy: &EgressPolicy) -> Result<(), DriverError> {
        validate_id(id)?;
        self.check_network(policy)
    }

    fn check_network(&self, policy: &EgressPolicy) -> Result<(), DriverError> {
        if policy.mode == NetworkMode::Full {
            return Err(DriverError::InvalidSpec(FULL_NETWORK_REFUSED.into()));
        }
        Ok(())
    }

    /// cgroup counters (they include the gVisor kernel's own memory and threads) and a bounded
    /// walk of `upper/`.
    async fn usage(&self, id: &str) -> Result<ResourceUsage, DriverError> {
        validate_id(id)?;
        let upper = self.layout.sandbox_dir(id).join("upper");
        sandbox_usage(self.cgroups.as_ref(), id, move || {
            usage::tree_usage(&upper, usage::MAX_WALK_ENTRIES)
        })
        .await
    }

    async fn shutdown(&self) {
        if let Err(e) = self.cgroups.remove_roots() {
            tracing::warn!(error = %e, "removing the empty cgroup root");
        }
    }

    async fn reconcile(&self) -> Result<Vec<String>, DriverError> {
        let found = self.layout.orphans(
            self.cgroups.as_ref(),
            &self.running,
            self.state_ids(),
            |id| self.layout.has_run_files(id) || self.socket_path(id).exists(),
        )?;
        for id in &found {
            self.stop(id).await?;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_limits_add_the_gvisor_overhead() {
        let host = host_limits(&Limits {
            cpus: Some(0.5),
            memory_mb: Some(256),
            pids: Some(32),
            disk_mb: None,
        })
        .unwrap();
        assert_eq!(host.memory_bytes, Some(256 << 20));
        assert_eq!(host.pids, Some(32 + PIDS_OVERHEAD));
        assert_eq!(host.cpu_quota_us(), Some(50_000));
        let small = host_limits(&Limits {
            memory_mb: Some(32),
            ..Default::default()
        });
        assert!(matches!(small, Err(DriverError::InvalidSpec(m)) if m.contains("gvisor")));
    }
}
