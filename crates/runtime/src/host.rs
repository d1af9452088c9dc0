//! What the host-side drivers ([`crate::local::LocalDriver`], [`crate::gvisor::GvisorDriver`])
//! share: where a sandbox's files live under its `sandboxes/` dir, the egress bridges they
//! serve, and the steps of teardown and reconcile that do not depend on how a sandbox runs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sandpit_isolation::cgroup::CgroupManager;
use tokio::task::JoinHandle;

use crate::DriverError;
use crate::local::{MAX_SOCKET_PATH, cg_err, io_err, remove_dir_all_if_exists, validate_id};

/// Where a host-side driver keeps each sandbox's files: `<sandboxes>/<id>/` with `run/`,
/// `agent.log`, the `ephemeral` marker and the driver's own (`upper/`, `work/`, ...).
/// [`crate::local::LocalDriver::layout`]: `<data_dir>/sandboxes`;
/// [`crate::gvisor::GvisorDriver::layout`]: `<data_dir>/gvisor/sandboxes`.
#[derive(Debug, Clone)]
pub struct HostLayout {
    sandboxes: PathBuf,
}

impl HostLayout {
    pub(crate) fn new(sandboxes: PathBuf) -> Self {
        Self { sandboxes }
    }

    /// `<sandboxes>/<id>`.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes.join(id)
    }

    /// `<sandboxes>/<id>/run`: root-owned, 0755, created before every start and shown read-only
    /// at `/run/sandpit` inside the sandbox (which can read it but never change it): run files
    /// and the egress bridge's socket.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("run")
    }

    /// `<sandboxes>/<id>/agent.log`: the sandbox's stdout and stderr (truncated at every start,
    /// capped, rotated once to `agent.log.1`; see [`crate::agent_log`]).
    pub fn agent_log(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("agent.log")
    }

    fn ephemeral_marker(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("ephemeral")
    }

    /// Records whether the writable layer of `id` is dropped at its next stop.
    pub(crate) fn mark_ephemeral(&self, id: &str, ephemeral: bool) -> Result<(), DriverError> {
        let marker = self.ephemeral_marker(id);
        if ephemeral {
            std::fs::write(&marker, b"").map_err(io_err(id, "write the ephemeral marker"))
        } else if marker.exists() {
            std::fs::remove_file(&marker).map_err(io_err(id, "remove the ephemeral marker"))
        } else {
            Ok(())
        }
    }

    /// Whether `id`'s writable layer is dropped when it stops.
    pub(crate) fn is_ephemeral(&self, id: &str) -> bool {
        self.ephemeral_marker(id).exists()
    }

    /// Drops `upper/` and `work/` of a sandbox marked ephemeral; whether it was.
    pub(crate) fn drop_ephemeral_layer(&self, id: &str) -> Result<bool, DriverError> {
        if !self.is_ephemeral(id) {
            return Ok(false);
        }
        let dir = self.sandbox_dir(id);
        for name in ["upper", "work"] {
            remove_dir_all_if_exists(&dir.join(name))
                .map_err(io_err(id, "drop the writable layer"))?;
        }
        Ok(true)
    }

    /// Whether the run dir of `id` holds files (of a run that was not cleaned up).
    pub(crate) fn has_run_files(&self, id: &str) -> bool {
        std::fs::read_dir(self.run_dir(id)).is_ok_and(|mut entries| entries.next().is_some())
    }

    /// The sandboxes not in `mine` that left something behind: a cgroup (only those with a
    /// sandbox dir are this driver's: another server may share the cgroup group), `found` by
    /// the driver itself, or a sandbox dir for which `leftover` holds (a server killed while
    /// stopping a sandbox may have left only its run files).
    pub(crate) fn orphans(
        &self,
        cgroups: &dyn CgroupManager,
        mine: &Mutex<HashMap<String, impl Sized>>,
        mut found: BTreeSet<String>,
        leftover: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, DriverError> {
        let mine: BTreeSet<String> = mine
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for id in cgroups
            .list()
            .map_err(cg_err("", "list the sandbox cgroups"))?
        {
            if validate_id(&id).is_ok() && self.sandbox_dir(&id).is_dir() {
                found.insert(id);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.sandboxes) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if validate_id(&id).is_ok() && leftover(&id) {
                    found.insert(id);
                }
            }
        }
        Ok(found.into_iter().filter(|id| !mine.contains(id)).collect())
    }
}

/// A driver's data dir must be absolute (sandbox paths are handed to other processes).
pub(crate) fn check_data_dir(dir: &Path) -> Result<(), DriverError> {
    if dir.is_absolute() {
        Ok(())
    } else {
        Err(DriverError::InvalidSpec(format!(
            "data dir {} must be an absolute path",
            dir.display()
        )))
    }
}

/// A socket path must fit `sun_path`.
pub(crate) fn check_socket_path(socket: &Path) -> Result<(), DriverError> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(DriverError::InvalidSpec(format!(
            "socket path {} is {len} bytes, the limit for Unix sockets is {MAX_SOCKET_PATH}: use a shorter data dir or id",
            socket.display()
        )));
    }
    Ok(())
}

/// Removes the file at `path`, which may be missing.
pub(crate) fn remove_file_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Accept loops of the egress bridges of started sandboxes, by id (aborted at teardown).
#[derive(Debug, Default)]
pub(crate) struct Bridges(Mutex<HashMap<String, JoinHandle<()>>>);

impl Bridges {
    /// Keeps `task` as the bridge of `id`, aborting the one it replaces.
    pub(crate) fn replace(&self, id: &str, task: JoinHandle<()>) {
        if let Some(old) = self.lock().insert(id.to_string(), task) {
            old.abort();
        }
    }

    pub(crate) fn abort(&self, id: &str) {
        let task = self.lock().remove(id);
        if let Some(task) = task {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes the cgroups of `id` once its killed tasks are gone: `rmdir` fails while they are
/// still exiting, so it is retried (killing again) until `deadline`. `alive` names processes
/// outside the cgroups that must be gone too (checked each round); when they outlive the
/// deadline, a warning is logged and the teardown goes on.
pub(crate) async fn remove_cgroups(
    cgroups: &dyn CgroupManager,
    id: &str,
    deadline: Instant,
    mut alive: impl FnMut() -> bool,
) -> Result<(), DriverError> {
    loop {
        let others = alive();
        match cgroups.remove(id) {
            Ok(()) if !others => return Ok(()),
            Ok(()) if Instant::now() >= deadline => {
                tracing::warn!(id, "sandbox processes outlived the stop");
                return Ok(());
            }
            Ok(()) => {}
            Err(e) if Instant::now() >= deadline => {
                return Err(cg_err(id, "remove the cgroups")(e));
            }
            Err(_) => {
                let _ = cgroups.kill_all(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
