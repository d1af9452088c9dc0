//! The agent's state and its command operations, independent of HTTP.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sandpit_protocol::container::{
    ExecEvent, ExecuteRequest, ExecuteResponse, ExitReason, OutputEncoding,
};
use sandpit_protocol::time::TIMEOUT_EXIT_CODE;
use sandpit_protocol::{DISABLE_SESSION, ErrorCode, time};
use tokio::sync::{mpsc, oneshot};

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::exec::kill::{ClientGone, Deadline, StopReason};
use crate::exec::runner::{Child, Control, Leftovers};
use crate::exec::session::{Sessions, terminated};
use crate::exec::shell::{self, CommandSpec, RunControl, ShellError, Status, StdinFifo};
use crate::exec::stdin::{Input, StdinChannel};
use crate::exec::{self as ex, Sink, StreamKind, child_env, validate_command};
use crate::memcg::{self, OomWatch};
use crate::reaper::Reaper;
use crate::sse;

pub use crate::exec::session::DEFAULT_SESSION;

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

    /// `/api/execute`: runs a command and buffers its output. If the client disconnects, this
    /// future is dropped and with it the [`ClientPresent`](ex::kill::ClientPresent): the
    /// command is stopped.
    pub async fn execute(&self, req: ExecuteRequest) -> Result<ExecuteResponse, ApiError> {
        let target = validate(&req)?;
        let started = Instant::now();
        let (_present, gone) = ex::kill::client_pair();
        let sink = Sink::collect(self.config.output_cap);
        let input = input(&req, None)?;
        let done = self.start(target, &req, input, sink, gone, None).await?;
        let (ran, sink) = done
            .await
            .map_err(|_| ApiError::internal("command task ended unexpectedly"))?;
        let ran = ran?;
        let Sink::Collect { stdout, stderr } = sink else {
            return Err(ApiError::internal("unexpected output sink"));
        };
        let truncated = stdout.truncated() || stderr.truncated();
        let encoding = req.encoding.unwrap_or_default();
        let (stdout, stderr) = match encoding {
            OutputEncoding::Text => (stdout.into_string(), stderr.into_string()),
            OutputEncoding::Base64 => (stdout.into_base64(), stderr.into_base64()),
        };
        Ok(ExecuteResponse {
            success: ran.exit_code == 0,
            exit_code: ran.exit_code,
            stdout,
            stderr,
            command: req.command,
            duration: started.elapsed().as_millis() as u64,
            timestamp: time::now(),
            session_id: req.session_id.or_else(|| Some(DEFAULT_SESSION.to_owned())),
            truncated,
            timed_out: ran.timed_out,
            reason: ran.reason(),
            encoding: (encoding == OutputEncoding::Base64).then_some(encoding),
        })
    }

    /// `/api/execute/stream`: starts a command; its SSE frames arrive on the returned channel.
    /// Errors before the start are returned as such (answered with a non-200 status). When the
    /// receiver is dropped (the client went away) the command is stopped. `stdin` is the
    /// WebSocket transport's channel, used when the request asks for `stdinStream`.
    pub async fn execute_stream(
        &self,
        req: ExecuteRequest,
        stdin: Option<StdinChannel>,
    ) -> Result<mpsc::Receiver<Bytes>, ApiError> {
        let target = validate(&req)?;
        let input = input(&req, stdin)?;
        let (tx, rx) = mpsc::channel(sse::CHANNEL_CAPACITY);
        let start = ExecEvent::Start {
            command: req.command.clone(),
            timestamp: time::now(),
            pid: None,
        };
        let sink = Sink::events(tx, req.encoding.unwrap_or_default());
        let gone = sink
            .reader_gone()
            .map_or_else(ClientGone::never, ClientGone::when);
        let done = self
            .start(target, &req, input, sink, gone, Some(start))
            .await?;
        tokio::spawn(async move {
            let Ok((ran, mut sink)) = done.await else {
                return;
            };
            let event = match ran {
                Ok(ran) => ExecEvent::Complete {
                    exit_code: ran.exit_code,
                    timestamp: time::now(),
                    timed_out: ran.timed_out,
                    reason: ran.reason(),
                },
                Err(e) => ExecEvent::Error {
                    error: e.0.message,
                    timestamp: time::now(),
                },
            };
            sink.event(&event).await;
        });
        Ok(rx)
    }

    /// Starts `req` in a task of its own, which reports how it ended and hands the sink back.
    /// The task owns the command: it stops it at its deadline or when `gone` fires, and keeps
    /// a session consistent (holding its lock until the shell is ready for the next command).
    /// `start` is sent once the command runs (for a session: once it holds the lock).
    async fn start(
        &self,
        target: Target<'_>,
        req: &ExecuteRequest,
        input: Option<Input>,
        mut sink: Sink,
        gone: ClientGone,
        start: Option<ExecEvent>,
    ) -> Result<oneshot::Receiver<(Result<Ran, ApiError>, Sink)>, ApiError> {
        let (tx, rx) = oneshot::channel();
        // Read before the command starts: the OOM-kill counter it may move.
        let oom = OomWatch::start(self.config.memory_cgroup.as_ref());
        match target {
            Target::Sessionless => {
                let limit = req
                    .timeout_ms
                    .unwrap_or(self.config.command_timeout)
                    .limit();
                let (running, cwd) = self.spawn_sessionless(req, input.is_some())?;
                let groups = self.running.clone();
                tokio::spawn(async move {
                    if let Some(start) = start {
                        sink.event(&start).await;
                    }
                    let ran = match running {
                        Some(child) => {
                            let pid = child.pid();
                            let control = Control {
                                deadline: Deadline::start(limit),
                                gone,
                                input,
                                leftovers: Leftovers::Keep,
                            };
                            let outcome = child.run(control, &mut sink).await;
                            sink.finish_output().await;
                            groups
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&pid);
                            let timed_out = outcome.timed_out();
                            let exit_code = match outcome.exit_code {
                                _ if timed_out => TIMEOUT_EXIT_CODE,
                                Some(code) => code,
                                None => -1,
                            };
                            Ran {
                                exit_code,
                                timed_out,
                                oom: memcg::oom_killed(oom.as_ref(), exit_code),
                            }
                        }
                        None => Ran {
                            exit_code: cwd_failure(&mut sink, &cwd).await,
                            timed_out: false,
                            oom: false,
                        },
                    };
                    report_end(&mut sink, &ran, limit, oom.as_ref()).await;
                    let _ = tx.send((Ok(ran), sink));
                });
            }
            Target::Session(id) => {
                let session = self.sessions.get_or_create(id)?;
                // The one timeout rule: the request's, else the session's, else the agent's.
                let limit = req
                    .timeout_ms
                    .or(session.command_timeout)
                    .unwrap_or(self.config.command_timeout)
                    .limit();
                let stdin = input
                    .map(|data| StdinFifo::create().map(|fifo| (fifo, data)))
                    .transpose()
                    .map_err(|e| {
                        ApiError::new(
                            ErrorCode::CommandExecutionError,
                            format!("Failed to set up stdin: {e}"),
                        )
                        .operation("command.execute")
                    })?;
                let mut guard = session.lock().await;
                let spec = CommandSpec {
                    command: &req.command,
                    env: req.env.as_ref(),
                    cwd: req.cwd.as_deref(),
                    stdin: stdin.as_ref().map(|(fifo, _)| fifo.path()),
                };
                let (script, marker) = shell::script(&spec);
                let sessions = self.sessions.clone();
                let id = id.to_owned();
                tokio::spawn(async move {
                    if let Some(start) = start {
                        sink.event(&start).await;
                    }
                    let control = RunControl {
                        deadline: Deadline::start(limit),
                        gone,
                        stdin,
                    };
                    let result = guard.run(&script, &marker, &mut sink, control).await;
                    match &result {
                        Ok(status) => session.set_cwd(status.cwd.clone()),
                        Err(_) => sessions.evict(&session),
                    }
                    drop(guard);
                    let ran = session_outcome(&id, result).map(|ran| Ran {
                        oom: memcg::oom_killed(oom.as_ref(), ran.exit_code),
                        ..ran
                    });
                    if let Ok(ran) = &ran {
                        report_end(&mut sink, ran, limit, oom.as_ref()).await;
                    }
                    let _ = tx.send((ran, sink));
                });
            }
        }
        Ok(rx)
    }

    /// Starts a sessionless command; `None` when the cwd does not exist (reported like the
    /// session shell does, exit code 1).
    fn spawn_sessionless(
        &self,
        req: &ExecuteRequest,
        piped_stdin: bool,
    ) -> Result<(Option<Child>, String), ApiError> {
        let cwd = ex::cwd_in(&self.config, req.cwd.as_deref());
        let cwd_text = cwd.to_string_lossy().into_owned();
        if !cwd.is_dir() {
            return Ok((None, cwd_text));
        }
        let env = child_env(&self.config, req.env.as_ref());
        let running = ex::oneshot::spawn(
            &self.config.shell,
            &req.command,
            &cwd,
            &env,
            piped_stdin,
            &self.reaper,
        )
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

/// How a command ended, as the routes report it.
#[derive(Debug, Clone, Copy)]
struct Ran {
    exit_code: i32,
    /// Killed at its deadline: `exit_code` is 124.
    timed_out: bool,
    /// Killed by the OOM killer: `exit_code` is 137.
    oom: bool,
}

impl Ran {
    fn reason(&self) -> Option<ExitReason> {
        self.oom.then_some(ExitReason::Oom)
    }
}

/// A session command's end as the routes report it: stopped at the deadline is exit code 124
/// (also when its shell had to be killed; the next command then starts a fresh session).
fn session_outcome(id: &str, result: Result<Status, ShellError>) -> Result<Ran, ApiError> {
    match result {
        Ok(status) => {
            let timed_out = status.stopped == Some(StopReason::Deadline);
            Ok(Ran {
                exit_code: if timed_out {
                    TIMEOUT_EXIT_CODE
                } else {
                    status.exit_code
                },
                timed_out,
                oom: false,
            })
        }
        Err(ShellError::Stopped(StopReason::Deadline)) => Ok(Ran {
            exit_code: TIMEOUT_EXIT_CODE,
            timed_out: true,
            oom: false,
        }),
        Err(ShellError::Exited(code)) => Err(terminated(id, code)),
        Err(e) => Err(
            ApiError::new(ErrorCode::CommandExecutionError, e.to_string()).context("sessionId", id),
        ),
    }
}

/// Tells the client why a command ended when it did not end by itself (timed out, or killed by
/// the OOM killer), on its stderr.
async fn report_end(sink: &mut Sink, ran: &Ran, limit: Option<Duration>, oom: Option<&OomWatch>) {
    let note = match (ran.timed_out, limit, oom) {
        (true, Some(limit), _) => format!("{}\n", time::timed_out_message(limit)),
        (false, _, Some(watch)) if ran.oom => watch.message(),
        _ => return,
    };
    sink.output(StreamKind::Stderr, note.as_bytes()).await;
    sink.finish_output().await;
}

async fn cwd_failure(sink: &mut Sink, cwd: &str) -> i32 {
    sink.output(
        StreamKind::Stderr,
        format!("Failed to change directory to {cwd}\n").as_bytes(),
    )
    .await;
    1
}

/// What the command of `req` reads on stdin: the request's bytes, or (`stdinStream`) the
/// chunks of the WebSocket transport's `channel`, which only requests routed through `/ws`
/// have.
fn input(req: &ExecuteRequest, channel: Option<StdinChannel>) -> Result<Option<Input>, ApiError> {
    let bytes = ex::stdin_bytes(
        req.stdin.as_deref(),
        req.stdin_base64.as_deref(),
        ["stdin", "stdinBase64"],
    )?;
    if req.stdin_stream != Some(true) {
        return Ok(bytes.map(Input::Bytes));
    }
    if bytes.is_some() {
        return Err(ApiError::validation(
            "stdinStream",
            "give stdinStream or stdin/stdinBase64, not both",
        ));
    }
    match channel.and_then(|c| c.take()) {
        Some(chunks) => Ok(Some(Input::Stream(chunks))),
        None => Err(ApiError::validation(
            "stdinStream",
            "stdinStream works on /api/execute/stream through the WebSocket control transport \
             (/ws), whose `stdin` frames carry the input; over HTTP send stdin or stdinBase64 \
             with the request, or start a process with \"stdin\": true and write to \
             POST /api/process/{id}/stdin",
        )),
    }
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
