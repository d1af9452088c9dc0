//! The agent's state and its command operations, independent of HTTP.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sandpit_protocol::container::{ExecEvent, ExecuteRequest, ExecuteResponse};
use sandpit_protocol::{DISABLE_SESSION, ErrorCode, time};
use tokio::sync::{mpsc, oneshot};

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::exec::session::{Session, Sessions, terminated};
use crate::exec::shell::{self, CommandSpec, ShellError, Status};
use crate::exec::{self as ex, Sink, StreamKind, child_env, validate_command};
use crate::reaper::Reaper;
use crate::sse;

/// Session used by `/api/execute` without a `sessionId`.
pub const DEFAULT_SESSION: &str = "default";

/// The agent: configuration, child reaper, sessions.
#[derive(Debug)]
pub struct Agent {
    pub config: Arc<AgentConfig>,
    pub reaper: Arc<Reaper>,
    pub sessions: Arc<Sessions>,
    /// PTY terminals (`/ws/pty`), by session id.
    pub terminals: Arc<crate::pty::Terminals>,
    /// Background processes (`/api/process/*`).
    pub processes: Arc<crate::process::Processes>,
    /// File watches (`/api/watch`, `/api/watch/check`).
    pub watches: Arc<crate::watch::Watches>,
    /// Code contexts and interpreter pools (`/api/contexts`, `/api/execute/code`).
    pub interpreters: Arc<crate::interpreter::Interpreters>,
    /// Process groups of running sessionless commands.
    running: Arc<Mutex<HashSet<i32>>>,
}

/// Where a command runs.
enum Target<'a> {
    Session(&'a str),
    Sessionless,
}

impl Agent {
    pub fn new(config: AgentConfig, reaper: Arc<Reaper>) -> Arc<Self> {
        let config = Arc::new(config);
        let sessions = Arc::new(Sessions::new(config.clone(), reaper.clone()));
        let terminals = Arc::new(crate::pty::Terminals::new(
            config.clone(),
            reaper.clone(),
            sessions.clone(),
        ));
        let processes = Arc::new(crate::process::Processes::new(
            config.clone(),
            reaper.clone(),
            sessions.clone(),
        ));
        let watches = crate::watch::Watches::new(&config);
        let interpreters = Arc::new(crate::interpreter::Interpreters::new(
            config.clone(),
            reaper.clone(),
        ));
        Arc::new(Agent {
            config,
            reaper,
            sessions,
            terminals,
            processes,
            watches,
            interpreters,
            running: Arc::default(),
        })
    }

    /// The directory relative file paths resolve against: the session's cwd, else the
    /// workspace.
    pub fn base_dir(&self, session_id: Option<&str>) -> PathBuf {
        session_id
            .and_then(|id| self.sessions.get(id))
            .map_or_else(|| self.config.workspace.clone(), |s| PathBuf::from(s.cwd()))
    }

    /// `/api/execute`: runs a command and buffers its output.
    pub async fn execute(&self, req: ExecuteRequest) -> Result<ExecuteResponse, ApiError> {
        let target = validate(&req)?;
        let started = Instant::now();
        let mut sink = Sink::collect(self.config.output_cap);
        let exit_code = match target {
            Target::Sessionless => {
                let timeout = millis(req.timeout_ms).or(self.config.command_timeout);
                let (exit_code, sink_back) = self.run_sessionless(&req, timeout, sink).await?;
                sink = sink_back;
                exit_code
            }
            Target::Session(id) => {
                let session = self.sessions.get_or_create(id)?;
                let timeout = millis(req.timeout_ms)
                    .or(session.command_timeout)
                    .or(self.config.command_timeout);
                let rx = self.spawn_in_session(session, &req, sink, None).await;
                let result = match timeout {
                    Some(t) => tokio::time::timeout(t, rx).await.map_err(|_| {
                        ApiError::new(
                            ErrorCode::CommandExecutionError,
                            format!(
                                "Failed to execute command '{}' in session '{id}': Command timeout after {}ms",
                                req.command,
                                t.as_millis()
                            ),
                        )
                        .context("command", req.command.clone())
                        .context("sessionId", id)
                        .operation("command.execute")
                    })?,
                    None => rx.await,
                };
                let (result, sink_back) =
                    result.map_err(|_| ApiError::internal("command task ended unexpectedly"))?;
                sink = sink_back;
                match result {
                    Ok(status) => status.exit_code,
                    Err(ShellError::Exited(code)) => return Err(terminated(id, code)),
                    Err(e @ ShellError::Spawn(_)) => {
                        return Err(ApiError::new(
                            ErrorCode::CommandExecutionError,
                            e.to_string(),
                        ));
                    }
                }
            }
        };
        let Sink::Collect { stdout, stderr } = sink else {
            return Err(ApiError::internal("unexpected output sink"));
        };
        let truncated = stdout.truncated() || stderr.truncated();
        Ok(ExecuteResponse {
            success: exit_code == 0,
            exit_code,
            stdout: stdout.into_string(),
            stderr: stderr.into_string(),
            command: req.command,
            duration: started.elapsed().as_millis() as u64,
            timestamp: time::now(),
            session_id: req.session_id.or_else(|| Some(DEFAULT_SESSION.to_owned())),
            truncated,
        })
    }

    /// `/api/execute/stream`: starts a command; its SSE frames arrive on the returned channel.
    /// Errors before the start are returned as such (answered with a non-200 status).
    pub async fn execute_stream(
        &self,
        req: ExecuteRequest,
    ) -> Result<mpsc::Receiver<Bytes>, ApiError> {
        let target = validate(&req)?;
        let (tx, rx) = mpsc::channel(sse::CHANNEL_CAPACITY);
        let start = ExecEvent::Start {
            command: req.command.clone(),
            timestamp: time::now(),
            pid: None,
        };
        match target {
            Target::Sessionless => {
                let (running, cwd) = self.spawn_sessionless(&req)?;
                let groups = self.running.clone();
                tokio::spawn(async move {
                    let mut sink = Sink::events(tx);
                    sink.event(&start).await;
                    let pid = running.as_ref().map(|r| r.pid());
                    let exit_code = match running {
                        Some(r) => r.finish(None, &mut sink).await.exit_code,
                        None => cwd_failure(&mut sink, &cwd).await,
                    };
                    if let Some(pid) = pid {
                        groups
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&pid);
                    }
                    sink.event(&ExecEvent::Complete {
                        exit_code,
                        timestamp: time::now(),
                    })
                    .await;
                });
            }
            Target::Session(id) => {
                let session = self.sessions.get_or_create(id)?;
                let id = id.to_owned();
                let sink = Sink::events(tx);
                // The start event goes out once the command has the session's lock.
                let rx_done = self
                    .spawn_in_session(session, &req, sink, Some(start))
                    .await;
                tokio::spawn(async move {
                    let Ok((result, mut sink)) = rx_done.await else {
                        return;
                    };
                    let event = match result {
                        Ok(status) => ExecEvent::Complete {
                            exit_code: status.exit_code,
                            timestamp: time::now(),
                        },
                        Err(e) => ExecEvent::Error {
                            error: match e {
                                ShellError::Exited(code) => terminated(&id, code).0.message,
                                other => other.to_string(),
                            },
                            timestamp: time::now(),
                        },
                    };
                    sink.event(&event).await;
                });
            }
        }
        Ok(rx)
    }

    /// Runs the command in the session shell in a task of its own, so a timed-out or abandoned
    /// command keeps the session consistent: the task drains output until the command ends,
    /// holding the session's lock. `start` is sent once the lock is held.
    async fn spawn_in_session(
        &self,
        session: Arc<Session>,
        req: &ExecuteRequest,
        mut sink: Sink,
        start: Option<ExecEvent>,
    ) -> oneshot::Receiver<(Result<Status, ShellError>, Sink)> {
        let mut guard = session.lock().await;
        let spec = CommandSpec {
            command: &req.command,
            env: req.env.as_ref(),
            cwd: req.cwd.as_deref(),
        };
        let (script, marker) = shell::script(&spec);
        let sessions = self.sessions.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            if let Some(start) = start {
                sink.event(&start).await;
            }
            let result = guard.run(&script, &marker, &mut sink).await;
            match &result {
                Ok(status) => session.set_cwd(status.cwd.clone()),
                Err(_) => sessions.evict(&session),
            }
            drop(guard);
            let _ = tx.send((result, sink));
        });
        rx
    }

    /// Starts a sessionless command; `None` when the cwd does not exist (reported like the
    /// session shell does, exit code 1).
    fn spawn_sessionless(
        &self,
        req: &ExecuteRequest,
    ) -> Result<(Option<ex::oneshot::Running>, String), ApiError> {
        let cwd = ex::cwd_in(&self.config, req.cwd.as_deref());
        let cwd_text = cwd.to_string_lossy().into_owned();
        if !cwd.is_dir() {
            return Ok((None, cwd_text));
        }
        let env = child_env(&self.config, req.env.as_ref());
        let running =
            ex::oneshot::spawn(&self.config.shell, &req.command, &cwd, &env, &self.reaper)
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::CommandExecutionError,
                        format!("Failed to start command: {e}"),
                    )
                    .context("command", req.command.clone())
                    .operation("command.execute")
                })?;
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(running.pid());
        Ok((Some(running), cwd_text))
    }

    async fn run_sessionless(
        &self,
        req: &ExecuteRequest,
        timeout: Option<Duration>,
        mut sink: Sink,
    ) -> Result<(i32, Sink), ApiError> {
        let (running, cwd) = self.spawn_sessionless(req)?;
        let Some(running) = running else {
            let code = cwd_failure(&mut sink, &cwd).await;
            return Ok((code, sink));
        };
        let pid = running.pid();
        let groups = self.running.clone();
        // In a task: the command finishes even if the client goes away.
        let task = tokio::spawn(async move {
            let outcome = running.finish(timeout, &mut sink).await;
            groups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pid);
            if outcome.timed_out {
                let ms = timeout.map_or(0, |t| t.as_millis());
                sink.output(
                    StreamKind::Stderr,
                    format!("Command timed out after {ms}ms").as_bytes(),
                )
                .await;
            }
            (outcome.exit_code, sink)
        });
        task.await
            .map_err(|_| ApiError::internal("command task failed"))
    }

    /// Terminates every session and sessionless command: SIGTERM, then SIGKILL after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let mut groups = self.sessions.pids();
        groups.extend(self.terminals.pids());
        groups.extend(self.processes.running_groups());
        groups.extend(
            self.running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .copied(),
        );
        for pid in &groups {
            let _ = killpg(Pid::from_raw(*pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && groups
                .iter()
                .any(|pid| killpg(Pid::from_raw(*pid), None).is_ok())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for pid in &groups {
            let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }

    /// Sends `signal` to every session and sessionless command (SIGHUP forwarding).
    pub fn signal_children(&self, signal: Signal) {
        self.sessions.signal_all(signal);
        for pid in self.processes.running_groups() {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
        for pid in self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = killpg(Pid::from_raw(*pid), signal);
        }
    }
}

async fn cwd_failure(sink: &mut Sink, cwd: &str) -> i32 {
    sink.output(
        StreamKind::Stderr,
        format!("Failed to change directory to {cwd}\n").as_bytes(),
    )
    .await;
    1
}

fn millis(ms: Option<u64>) -> Option<Duration> {
    ms.filter(|ms| *ms > 0).map(Duration::from_millis)
}

fn validate(req: &ExecuteRequest) -> Result<Target<'_>, ApiError> {
    validate_command(&req.command, req.cwd.as_deref(), req.env.as_ref())?;
    if req.background == Some(true) {
        return Err(ApiError::validation(
            "background",
            "background execution is not supported on /api/execute; use /api/process/start",
        ));
    }
    match req.session_id.as_deref() {
        Some(DISABLE_SESSION) => Ok(Target::Sessionless),
        Some("") => Err(ApiError::validation(
            "sessionId",
            "sessionId must not be empty",
        )),
        Some(id) => Ok(Target::Session(id)),
        None => Ok(Target::Session(DEFAULT_SESSION)),
    }
}
