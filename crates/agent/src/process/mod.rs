//! Background processes (`/api/process/*`, `/api/execute` with `background: true`): each runs
//! as `bash -c <command>` in a process group of its own, from the cwd and environment of the
//! session it was started from, with bounded logs kept after it ends.
//!
//! * [`Processes`]: start, list, inspect, kill and stream processes.
//!
//! Their HTTP routes are in `crate::routes::process`.

mod ring;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::Signal;
use sandpit_protocol::container::{
    ExecuteRequest, KillResponse, ProcessInfo, ProcessLogsResponse, ProcessStartRequest,
    ProcessStartResult, ProcessStatus, ProcessStdinResponse, ProcessStreamEvent,
};
use sandpit_protocol::time::TimeoutMs;
use sandpit_protocol::{DISABLE_SESSION, ErrorCode, time};
use tokio::sync::mpsc;

pub use crate::exec::tree::parse_signal;

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::exec::oneshot;
use crate::exec::output::Utf8Carry;
use crate::exec::runner::{Child, Control, OutputSink};
use crate::exec::session::{DEFAULT_SESSION, Sessions};
use crate::exec::{StreamKind, child_env, tree, validate_command};
use crate::memcg::OomWatch;
use crate::reaper::Reaper;
use crate::sse;
use store::{Record, Refused, Store};

/// Bytes of log kept per process and stream.
pub const LOG_CAP_BYTES: usize = 1024 * 1024;

/// Finished process records kept (the oldest is evicted first).
pub const MAX_FINISHED: usize = 256;

/// Log bytes kept across finished records (older finished records are evicted beyond it). The
/// agent's memory counts against the sandbox's limit, and the agent is its PID 1.
pub const MAX_FINISHED_LOG_BYTES: usize = 64 * 1024 * 1024;

/// Time between the asked-for signal (SIGTERM by default) and SIGKILL: the one kill policy.
pub use crate::exec::kill::KILL_GRACE;

/// The background processes of the agent.
#[derive(Debug)]
pub struct Processes {
    config: Arc<AgentConfig>,
    reaper: Arc<Reaper>,
    sessions: Arc<Sessions>,
    store: Arc<Store>,
    log_cap: usize,
}

impl Processes {
    pub fn new(config: Arc<AgentConfig>, reaper: Arc<Reaper>, sessions: Arc<Sessions>) -> Self {
        let store = Store::new(config.max_processes, MAX_FINISHED, MAX_FINISHED_LOG_BYTES);
        Processes {
            config,
            reaper,
            sessions,
            store: Arc::new(store),
            log_cap: LOG_CAP_BYTES,
        }
    }

    /// Starts a process. Its id is `processId` if given (409 while a running process has it),
    /// else `proc_<ms>_<rand6>`.
    pub fn start(&self, req: ProcessStartRequest) -> Result<ProcessStartResult, ApiError> {
        validate_command(&req.command, req.cwd.as_deref(), req.env.as_ref())?;
        let id = match req.process_id.clone() {
            Some(id) => {
                validate_id(&id)?;
                id
            }
            None => new_id(),
        };
        let session_id = match req.session_id.as_deref() {
            Some(DISABLE_SESSION) => None,
            Some("") => {
                return Err(ApiError::validation(
                    "sessionId",
                    "sessionId must not be empty",
                ));
            }
            Some(s) => Some(s.to_owned()),
            None => Some(DEFAULT_SESSION.to_owned()),
        };
        let (cwd, env) = self.context(session_id.as_deref(), &req);
        let refused = |why| match why {
            Refused::Busy => ApiError::new(
                ErrorCode::ResourceBusy,
                format!("Process {id} is already running"),
            )
            .context("processId", id.clone())
            .operation("process.start"),
            Refused::Full { running } => ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{running} background processes are running, this sandbox's maximum: \
                     kill one or wait for one to exit"
                ),
            )
            .context("field", "processes")
            .context("requested", running + 1)
            .context("max", running)
            .operation("process.start"),
        };
        let mut spawned = None;
        // Read before the process starts: the OOM-kill counter it may move.
        let oom = OomWatch::start(self.config.memory_cgroup.as_ref());
        let record = self.store.insert_with(
            &id,
            |seq| {
                let piped = req.stdin == Some(true);
                let child = existing_dir(&cwd)
                    .and_then(|()| {
                        oneshot::spawn(
                            &self.config.shell,
                            &req.command,
                            &cwd,
                            &env,
                            piped,
                            &self.reaper,
                        )
                    })
                    .map_err(|e| {
                        ApiError::new(
                            ErrorCode::ProcessError,
                            format!("Failed to start process: {e}"),
                        )
                        .context("processId", id.clone())
                        .context("command", req.command.clone())
                        .context("cwd", cwd.to_string_lossy().into_owned())
                        .operation("process.start")
                    })?;
                let pid = child.pid();
                spawned = Some(child);
                Ok(Record::new(
                    id.clone(),
                    req.command.clone(),
                    session_id.clone(),
                    pid,
                    seq,
                    self.log_cap,
                ))
            },
            refused,
        )?;
        let Some(mut child) = spawned else {
            return Err(ApiError::internal("process spawn lost"));
        };
        if let Some(stdin) = child.take_stdin()
            && let Ok(mut slot) = record.stdin.try_lock()
        {
            *slot = Some(stdin);
        }
        // Absent or `0`: no limit (a process has no default).
        let timeout = req.timeout_ms.and_then(TimeoutMs::limit);
        tokio::spawn(supervise(
            record.clone(),
            child,
            timeout,
            oom,
            self.store.clone(),
        ));
        Ok(ProcessStartResult {
            success: true,
            process_id: id,
            pid: u32::try_from(record.pid).ok(),
            command: req.command,
            timestamp: time::now(),
        })
    }

    /// The cwd and environment of a process started from `session_id`: the session shell's
    /// current directory and the environment it was started with (the agent's env plus the
    /// session's env; variables exported later inside the shell are not seen), then the
    /// request's `cwd` (relative to the session's) and `env`.
    fn context(
        &self,
        session_id: Option<&str>,
        req: &ProcessStartRequest,
    ) -> (PathBuf, BTreeMap<String, String>) {
        let session = session_id.and_then(|id| self.sessions.get(id));
        let base = session
            .as_ref()
            .map_or_else(|| self.config.workspace.clone(), |s| PathBuf::from(s.cwd()));
        let cwd = req.cwd.as_deref().map_or(base.clone(), |c| base.join(c));
        let mut env = session
            .as_ref()
            .and_then(|s| environ_of(s.pid))
            .unwrap_or_else(|| child_env(&self.config, None));
        for (key, value) in req.env.iter().flatten() {
            match value {
                Some(v) => env.insert(key.clone(), v.clone()),
                None => env.remove(key),
            };
        }
        (cwd, env)
    }

    fn record(&self, id: &str) -> Result<Arc<Record>, ApiError> {
        self.store.get(id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::ProcessNotFound,
                format!("Process {id} not found"),
            )
            .context("processId", id)
        })
    }

    /// Every process, oldest first; only those with `status` if given.
    pub fn list(&self, status: Option<&str>) -> Vec<ProcessInfo> {
        self.store
            .all()
            .iter()
            .map(|r| r.info())
            .filter(|info| status.is_none_or(|s| info.status.as_str() == s))
            .collect()
    }

    pub fn get(&self, id: &str) -> Result<ProcessInfo, ApiError> {
        Ok(self.record(id)?.info())
    }

    /// The status and exit code of `id`, `None` if there is no such process.
    pub fn status(&self, id: &str) -> Option<(ProcessStatus, Option<i32>)> {
        self.store.get(id).map(|r| {
            let state = r.state();
            (state.status, state.exit_code)
        })
    }

    pub fn logs(&self, id: &str) -> Result<ProcessLogsResponse, ApiError> {
        let record = self.record(id)?;
        let state = record.state();
        Ok(ProcessLogsResponse {
            success: true,
            process_id: id.to_owned(),
            stdout: state.stdout.text(),
            stderr: state.stderr.text(),
            timestamp: time::now(),
            stdout_dropped_bytes: state.stdout.dropped(),
            stderr_dropped_bytes: state.stderr.dropped(),
        })
    }

    /// Kills the process tree of `id` with `signal` (SIGTERM by default), then SIGKILL after
    /// [`KILL_GRACE`]; returns once the tree is gone. A finished process is left alone.
    pub async fn kill(&self, id: &str, signal: Option<Signal>) -> Result<KillResponse, ApiError> {
        let record = self.record(id)?;
        let signal = signal.unwrap_or(Signal::SIGTERM);
        kill_tree(&record, signal).await;
        Ok(KillResponse {
            success: true,
            process_id: id.to_owned(),
            signal: Some(signal.as_str().to_owned()),
            timestamp: time::now(),
        })
    }

    /// Kills every running process (of `session_id` only, if given) and what finished ones left
    /// running in their process groups; returns how many processes were running.
    pub async fn kill_all(&self, session_id: Option<&str>) -> usize {
        let live = tree::live_groups();
        let (running, leftovers): (Vec<Arc<Record>>, Vec<Arc<Record>>) = self
            .store
            .all()
            .into_iter()
            .filter(|r| session_id.is_none_or(|s| r.session_id.as_deref() == Some(s)))
            .filter(|r| !r.is_finished() || live.contains(&r.pid))
            .partition(|r| !r.is_finished());
        let all = running.iter().chain(&leftovers);
        futures::future::join_all(all.map(|r| kill_tree(r, Signal::SIGTERM))).await;
        running.len()
    }

    /// `POST /api/process/{id}/stdin`: writes `input` to the process's stdin, then closes it
    /// if `close`. Answers once the bytes are in the pipe (the process may still read them).
    pub async fn write_stdin(
        &self,
        id: &str,
        input: &[u8],
        close: bool,
    ) -> Result<ProcessStdinResponse, ApiError> {
        use tokio::io::AsyncWriteExt as _;
        let record = self.record(id)?;
        let closed_error = || {
            ApiError::validation(
                "stdin",
                format!("Process {id} has no open stdin (start it with \"stdin\": true; it closes when the process ends or after \"close\": true)"),
            )
            .context("processId", id)
        };
        let mut slot = record.stdin.lock().await;
        let Some(stdin) = slot.as_mut() else {
            return Err(closed_error());
        };
        if let Err(e) = stdin.write_all(input).await {
            *slot = None;
            return Err(if e.kind() == std::io::ErrorKind::BrokenPipe {
                closed_error()
            } else {
                ApiError::new(
                    ErrorCode::ProcessError,
                    format!("Writing to stdin failed: {e}"),
                )
                .context("processId", id)
            });
        }
        if close {
            *slot = None;
        }
        Ok(ProcessStdinResponse {
            success: true,
            process_id: id.to_owned(),
            bytes_written: input.len() as u64,
            closed: slot.is_none(),
            timestamp: time::now(),
        })
    }

    /// Process groups of running processes (for agent shutdown and signal forwarding).
    pub fn running_groups(&self) -> Vec<i32> {
        self.store
            .all()
            .iter()
            .filter(|r| !r.is_finished())
            .map(|r| r.pid)
            .collect()
    }

    /// `GET /api/process/{id}/stream`: `process_info`, the replay of the kept output, live
    /// output, then `exit` (or `error` when the exit code is unknown).
    pub fn stream(&self, id: &str) -> Result<mpsc::Receiver<Bytes>, ApiError> {
        let record = self.record(id)?;
        let (tx, rx) = mpsc::channel(sse::CHANNEL_CAPACITY);
        tokio::spawn(follow(record, tx));
        Ok(rx)
    }
}

async fn follow(record: Arc<Record>, tx: mpsc::Sender<Bytes>) {
    let mut changed = record.subscribe();
    changed.borrow_and_update();
    let info = record.info();
    let first = ProcessStreamEvent::ProcessInfo {
        process_id: record.id.clone(),
        command: record.command.clone(),
        status: info.status,
        timestamp: time::now(),
        pid: info.pid,
    };
    if tx.send(sse::frame(&first)).await.is_err() {
        return;
    }
    let (mut out_pos, mut err_pos) = (0u64, 0u64);
    let (mut out_text, mut err_text) = (Utf8Carry::default(), Utf8Carry::default());
    loop {
        changed.borrow_and_update();
        let (out, err, end) = {
            let state = record.state();
            let out = state.stdout.since(out_pos);
            let err = state.stderr.since(err_pos);
            out_pos = state.stdout.end();
            err_pos = state.stderr.end();
            let end =
                state
                    .status
                    .is_finished()
                    .then_some((state.status, state.exit_code, state.reason));
            (out, err, end)
        };
        let mut texts = vec![
            (StreamKind::Stdout, out_text.push(&out)),
            (StreamKind::Stderr, err_text.push(&err)),
        ];
        if end.is_some() {
            texts.push((StreamKind::Stdout, out_text.finish()));
            texts.push((StreamKind::Stderr, err_text.finish()));
        }
        for (kind, data) in texts {
            if data.is_empty() {
                continue;
            }
            let process_id = record.id.clone();
            let timestamp = time::now();
            let event = match kind {
                StreamKind::Stdout => ProcessStreamEvent::Stdout {
                    data,
                    process_id,
                    timestamp,
                },
                StreamKind::Stderr => ProcessStreamEvent::Stderr {
                    data,
                    process_id,
                    timestamp,
                },
            };
            if tx.send(sse::frame(&event)).await.is_err() {
                return;
            }
        }
        if let Some((status, exit_code, reason)) = end {
            let process_id = record.id.clone();
            let timestamp = time::now();
            let event = match exit_code {
                Some(exit_code) => ProcessStreamEvent::Exit {
                    process_id,
                    exit_code,
                    data: format!("Process {} with exit code {exit_code}", status.as_str()),
                    timestamp,
                    reason,
                },
                None => ProcessStreamEvent::Error {
                    process_id,
                    data: "The process ended but its exit status could not be determined".into(),
                    timestamp,
                },
            };
            let _ = tx.send(sse::frame(&event)).await;
            return;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            () = tx.closed() => return,
        }
    }
}

/// Signals the tree, waits up to the grace period, then SIGKILLs what is left and waits for the
/// process to be recorded as finished.
async fn kill_tree(record: &Record, signal: Signal) {
    let pgid = record.pid;
    // After the process ended its pid may be reused: only its group (which keeps the id
    // reserved while it has members) still belongs to it.
    let root = if record.is_finished() {
        None
    } else {
        record.state().kill_signal = Some(signal);
        Some(pgid)
    };
    let targets = tree::members(root, pgid);
    if targets.is_empty() && root.is_none() {
        return;
    }
    tree::signal(pgid, &targets, signal);
    let gone = |targets: &[i32]| {
        record.is_finished()
            && !tree::any_alive(targets)
            && !tree::any_alive(&tree::members(root, pgid))
    };
    if signal != Signal::SIGKILL && wait_until(KILL_GRACE, || gone(&targets)).await {
        return;
    }
    let mut left = tree::members(root, pgid);
    left.extend(targets.iter().copied());
    tree::signal(pgid, &left, Signal::SIGKILL);
    wait_until(Duration::from_secs(5), || gone(&left)).await;
}

/// Polls `done` until it holds or `limit` passes; true if it held.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A process's working directory must exist (its start fails with a message naming it).
fn existing_dir(cwd: &Path) -> std::io::Result<()> {
    if !cwd.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("working directory {} does not exist", cwd.display()),
        ));
    }
    Ok(())
}

/// A process's output goes into its record's logs.
impl OutputSink for Arc<Record> {
    fn output(&mut self, kind: StreamKind, bytes: &[u8]) -> impl Future<Output = ()> + Send {
        self.append(kind, bytes);
        std::future::ready(())
    }
}

/// Runs the process with the one runner (output into the record, `timeout` enforced with the
/// kill policy), then records the end (telling an OOM kill that `oom` saw from other ends).
async fn supervise(
    mut record: Arc<Record>,
    child: Child,
    timeout: Option<Duration>,
    oom: Option<OomWatch>,
    store: Arc<Store>,
) {
    let outcome = child.run(Control::limit(timeout), &mut record).await;
    // The process is gone: close its stdin (a writer waiting on a full pipe gets EPIPE).
    *record.stdin.lock().await = None;
    match (outcome.timed_out(), outcome.limit) {
        (true, Some(limit)) => {
            // The one timeout answer: exit code 124 and a message on stderr.
            let message = format!("{}\n", time::timed_out_message(limit));
            record.append(StreamKind::Stderr, message.as_bytes());
            record.finish_timed_out();
        }
        _ => match (outcome.exit_code, oom) {
            (Some(code), Some(watch)) if watch.killed(code) => {
                record.append(StreamKind::Stderr, watch.message().as_bytes());
                record.finish_oom(code);
            }
            (code, _) => record.finish(code),
        },
    }
    store.finished(&record);
}

/// The environment a process was started with, from `/proc/<pid>/environ`.
fn environ_of(pid: i32) -> Option<BTreeMap<String, String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let env: BTreeMap<String, String> = bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let text = std::str::from_utf8(entry).ok()?;
            let (key, value) = text.split_once('=')?;
            (!key.is_empty()).then(|| (key.to_owned(), value.to_owned()))
        })
        .collect();
    (!env.is_empty()).then_some(env)
}

/// `/api/execute` with `background: true`: the same as `/api/process/start`.
pub fn from_execute(req: ExecuteRequest) -> ProcessStartRequest {
    ProcessStartRequest {
        command: req.command,
        session_id: req.session_id,
        timeout_ms: req.timeout_ms,
        env: req.env,
        cwd: req.cwd,
        origin: req.origin,
        ..ProcessStartRequest::default()
    }
}

fn validate_id(id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 256
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ["list", "start", "kill-all"].contains(&id) {
        return Err(ApiError::validation(
            "processId",
            format!("processId {id:?} is reserved (it names a route)"),
        ));
    }
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(
            "processId",
            format!("Invalid processId {id:?}: use 1-256 characters of [A-Za-z0-9_.:-]"),
        ))
    }
}

/// `proc_<ms>_<rand6>`.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let suffix: String = (0..6)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("proc_{ms}_{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_seed_shape() {
        let id = new_id();
        let parts: Vec<&str> = id.split('_').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0], "proc");
        assert!(parts[1].parse::<u64>().is_ok());
        assert_eq!(parts[2].len(), 6);
        assert!(validate_id(&id).is_ok());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("").is_err());
        assert!(validate_id("kill-all").is_err());
    }
}
