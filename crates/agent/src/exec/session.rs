//! Sessions: named persistent shells. Commands within a session are serialised by its lock;
//! sessions run concurrently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sandpit_protocol::ErrorCode;
use sandpit_protocol::container::EnvMap;
use sandpit_protocol::time::TimeoutMs;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::shell::{self, ShellError, ShellIo};
use super::{child_env, cwd_in, validate_env};
use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::reaper::Reaper;

/// Session used by `/api/execute` (and the routes that act on a session) without a `sessionId`.
pub const DEFAULT_SESSION: &str = "default";

/// Options of a new session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub env: Option<EnvMap>,
    pub cwd: Option<String>,
    /// Default timeout of the session's commands (absent: the agent's; 0: none).
    pub command_timeout: Option<TimeoutMs>,
}

/// A live session shell.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    /// Pid (and process-group id) of the shell.
    pub pid: i32,
    /// The shell's cwd after its last command.
    cwd: Mutex<String>,
    pub command_timeout: Option<TimeoutMs>,
    io: Arc<AsyncMutex<ShellIo>>,
}

impl Session {
    /// Waits for the session's turn and returns exclusive access to its shell.
    pub async fn lock(&self) -> OwnedMutexGuard<ShellIo> {
        self.io.clone().lock_owned().await
    }

    /// The shell's current directory as last reported.
    pub fn cwd(&self) -> String {
        self.cwd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_cwd(&self, cwd: String) {
        if !cwd.is_empty() {
            *self.cwd.lock().unwrap_or_else(PoisonError::into_inner) = cwd;
        }
    }

    /// Kills the shell and everything in its process group.
    pub fn kill(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.pid), signal);
    }
}

/// All sessions of the agent.
#[derive(Debug)]
pub struct Sessions {
    config: Arc<AgentConfig>,
    reaper: Arc<Reaper>,
    map: Mutex<HashMap<String, Arc<Session>>>,
    /// A shell started with default options before any command asked for it, so the first
    /// session of a fresh sandbox does not wait for bash to start (see [`Sessions::prewarm`]).
    spare: Mutex<Option<SpareShell>>,
}

#[derive(Debug)]
struct SpareShell {
    pid: i32,
    cwd: PathBuf,
    io: ShellIo,
}

impl Sessions {
    pub fn new(config: Arc<AgentConfig>, reaper: Arc<Reaper>) -> Self {
        Sessions {
            config,
            reaper,
            map: Mutex::new(HashMap::new()),
            spare: Mutex::new(None),
        }
    }

    /// Starts the spare shell that the next session with default options adopts.
    pub fn prewarm(&self) {
        match self.start_shell(None, None) {
            Ok(shell) => *self.spare() = Some(shell),
            Err(e) => tracing::debug!("no spare shell: {e}"),
        }
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Option<SpareShell>> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a session; 409 SESSION_ALREADY_EXISTS if the id is taken.
    pub fn create(&self, id: &str, options: SessionOptions) -> Result<Arc<Session>, ApiError> {
        if let Some(env) = &options.env {
            validate_env(env)?;
        }
        let session = {
            let mut map = self.map();
            if map.contains_key(id) {
                return Err(ApiError::new(
                    ErrorCode::SessionAlreadyExists,
                    format!("Session '{id}' already exists"),
                )
                .context("sessionId", id)
                .context("containerPlacementId", serde_json::Value::Null));
            }
            let session = self.spawn(id, &options)?;
            map.insert(id.to_owned(), session.clone());
            session
        };
        Ok(session)
    }

    /// The session `id`, created with default options if it does not exist.
    pub fn get_or_create(&self, id: &str) -> Result<Arc<Session>, ApiError> {
        let mut map = self.map();
        if let Some(session) = map.get(id) {
            return Ok(session.clone());
        }
        let session = self.spawn(id, &SessionOptions::default())?;
        map.insert(id.to_owned(), session.clone());
        Ok(session)
    }

    /// The session `id` if it exists.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    /// Ids of live sessions, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.map().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Removes the session and kills its process group. False if it did not exist.
    pub fn delete(&self, id: &str) -> bool {
        let removed = self.map().remove(id);
        match removed {
            Some(session) => {
                session.kill(Signal::SIGKILL);
                true
            }
            None => false,
        }
    }

    /// Forgets a session whose shell exited (only if the map still holds that very session).
    pub fn evict(&self, session: &Arc<Session>) {
        let mut map = self.map();
        if map
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            map.remove(&session.id);
        }
        drop(map);
        // Background jobs of the dead shell are left to themselves, like after a logout.
    }

    /// Sends `signal` to every session's process group (and the spare shell's).
    pub fn signal_all(&self, signal: Signal) {
        for pid in self.pids() {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    /// Process-group ids of all sessions and of the spare shell.
    pub fn pids(&self) -> Vec<i32> {
        let spare = self.spare().as_ref().map(|s| s.pid);
        self.map().values().map(|s| s.pid).chain(spare).collect()
    }

    fn spawn(&self, id: &str, options: &SessionOptions) -> Result<Arc<Session>, ApiError> {
        let default_options = options.env.is_none() && options.cwd.is_none();
        let adopted = if default_options {
            self.spare().take()
        } else {
            None
        };
        let shell = match adopted {
            Some(shell) => shell,
            None => self
                .start_shell(options.env.as_ref(), options.cwd.as_deref())
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::CommandExecutionError,
                        format!("Failed to create session '{id}': {e}"),
                    )
                    .context("sessionId", id)
                })?,
        };
        tracing::debug!(session = id, pid = shell.pid, "session shell started");
        Ok(Arc::new(Session {
            id: id.to_owned(),
            pid: shell.pid,
            cwd: Mutex::new(shell.cwd.to_string_lossy().into_owned()),
            command_timeout: options.command_timeout,
            io: Arc::new(AsyncMutex::new(shell.io)),
        }))
    }

    fn start_shell(
        &self,
        env: Option<&EnvMap>,
        cwd: Option<&str>,
    ) -> Result<SpareShell, ShellError> {
        let env = child_env(&self.config, env);
        let requested = cwd_in(&self.config, cwd);
        let cwd = pick_cwd(&requested, env.get("HOME").map(String::as_str));
        let (pid, io) = shell::spawn(&self.config.shell, &env, &cwd, &self.reaper)?;
        Ok(SpareShell { pid, cwd, io })
    }
}

/// The requested cwd if it is a directory, else `$HOME`, else `/`.
fn pick_cwd(requested: &Path, home: Option<&str>) -> PathBuf {
    if requested.is_dir() {
        return requested.to_path_buf();
    }
    match home.map(PathBuf::from) {
        Some(home) if home.is_dir() => home,
        _ => PathBuf::from("/"),
    }
}

/// 410 SESSION_TERMINATED for a shell that exited with `exit_code`.
pub fn terminated(session_id: &str, exit_code: i32) -> ApiError {
    ApiError::new(
        ErrorCode::SessionTerminated,
        format!("Session '{session_id}' terminated: its shell exited with code {exit_code}"),
    )
    .context("sessionId", session_id)
    .context("exitCode", exit_code)
}
