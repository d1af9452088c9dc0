//! Background processes outlive their sandbox's sleep: just before a running sandbox is
//! stopped, [`ProcessArchive`] (a lifecycle listener) copies the agent's process records and
//! logs into the store; after a wake, [`forward`] answers the process routes for them (the agent only knows processes of its
//! own run).
//!
//! They also outlive a crash of the server: every [`CHECKPOINT_EVERY`] (configurable),
//! [`checkpoint_forever`] copies the records and logs that changed since its last pass into the
//! same archive (running processes are stored as `killed` at the checkpoint's time: that is
//! what they are if the server dies before the next one; the live record wins while it runs). Only sandboxes that may have background processes are read —
//! those a `POST /api/process/start` or a WebSocket upgrade (which can carry one) went to in
//! their current run —, only the logs of processes that still run or are new are fetched, and
//! only records whose status or log sizes changed are written: a process printing a lot costs
//! one logs read and one store write per checkpoint, not one per chunk. The caps of the archive
//! are the same as for sleeps.
//!
//! * `GET /api/process/list`: the agent's list plus archived records (the live record wins when
//!   ids clash).
//! * `GET /api/process/{id}`, `/logs`, `/stream`: the agent's answer, unless it says
//!   `PROCESS_NOT_FOUND` and the archive knows the id.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use sandpit_protocol::container::{
    ProcessGetResponse, ProcessInfo, ProcessListResponse, ProcessLogsResponse, ProcessStatus,
    ProcessStreamEvent,
};
use sandpit_protocol::time::{now, timestamp};
use sandpit_store::{ArchivedProcess, MAX_ARCHIVE_BYTES_PER_SANDBOX, Store};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use crate::AppState;
use crate::agent_client::AgentClient;
use crate::error::ApiResult;
use crate::forward::proxy;
use crate::lifecycle::{LifecycleListener, Manager, SandboxRef};
use sandpit_protocol::control::{SandboxEventKind, SandboxState};

/// Most processes archived per sleep (the store also caps bytes per sandbox and per tenant:
/// [`MAX_ARCHIVE_BYTES_PER_SANDBOX`], [`sandpit_store::MAX_ARCHIVE_BYTES_PER_TENANT`]).
pub const MAX_ARCHIVED: usize = 256;
/// Time the whole capture may take; the stop goes ahead afterwards whatever happened.
pub const CAPTURE_BUDGET: Duration = Duration::from_secs(2);
/// Largest agent answer read (logs are capped at 1 MiB per stream by the agent; JSON escaping
/// can grow them).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// How often [`checkpoint_forever`] copies changed process records and logs into the store by
/// default (`ServeConfig::process_checkpoint_every`): a crash of the server loses at most this
/// much of their output (and a process started and ended within it).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// Time one sandbox's checkpoint may take to read its agent.
const CHECKPOINT_BUDGET: Duration = Duration::from_secs(2);
/// Sandboxes checkpointed at once.
const CHECKPOINT_CONCURRENCY: usize = 8;

/// Captures the processes of every sandbox about to stop (subscribed to the lifecycle when
/// the server is built), and keeps the sandboxes whose processes [`checkpoint_forever`] copies.
pub struct ProcessArchive {
    store: Arc<dyn Store>,
    /// Sandboxes (by internal id) that may have background processes in their current run.
    watched: Mutex<HashMap<String, Arc<Watched>>>,
}

/// A sandbox whose processes are checkpointed.
struct Watched {
    tenant: String,
    id: String,
    internal: String,
    /// Set when the run ends (stop, destroy): no checkpoint may write after the final capture.
    ended: AtomicBool,
    /// Held while a checkpoint or the final capture writes to the store.
    state: tokio::sync::Mutex<Seen>,
}

/// What the last checkpoint of a sandbox stored, by process id.
#[derive(Default)]
struct Seen {
    processes: HashMap<String, Version>,
}

/// What tells one stored state of a process from the next (logs only grow, or drop their head
/// and count it).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Version {
    status: ProcessStatus,
    exit_code: Option<i32>,
    stdout_len: usize,
    stderr_len: usize,
    stdout_dropped: u64,
    stderr_dropped: u64,
}

impl Version {
    /// The version of `p` as the agent reported it (before a running process is recorded as
    /// killed).
    fn of(p: &ArchivedProcess) -> Version {
        Version {
            status: p.info.status,
            exit_code: p.info.exit_code,
            stdout_len: p.stdout.len(),
            stderr_len: p.stderr.len(),
            stdout_dropped: p.stdout_dropped_bytes,
            stderr_dropped: p.stderr_dropped_bytes,
        }
    }
}

impl ProcessArchive {
    pub fn new(store: Arc<dyn Store>) -> Self {
        ProcessArchive {
            store,
            watched: Mutex::default(),
        }
    }

    /// Notes that sandbox `(tenant, id)` may have background processes in its current run
    /// (called by the forwarder before a process start or a WebSocket upgrade goes through).
    pub(crate) fn watch(&self, tenant: &str, id: &str, internal: &str) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.entry(internal.to_owned()).or_insert_with(|| {
            Arc::new(Watched {
                tenant: tenant.to_owned(),
                id: id.to_owned(),
                internal: internal.to_owned(),
                ended: AtomicBool::new(false),
                state: tokio::sync::Mutex::default(),
            })
        });
    }

    /// Ends the checkpoints of `internal`'s current run; returns its entry, if it had one.
    fn unwatch(&self, internal: &str) -> Option<Arc<Watched>> {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let gone = watched.remove(internal)?;
        gone.ended.store(true, Ordering::SeqCst);
        Some(gone)
    }

    fn all_watched(&self) -> Vec<Arc<Watched>> {
        let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.values().cloned().collect()
    }

    /// One checkpoint of every watched sandbox.
    pub(crate) async fn checkpoint_all(&self, manager: &Manager) {
        use futures::StreamExt;
        futures::stream::iter(self.all_watched())
            .for_each_concurrent(CHECKPOINT_CONCURRENCY, |w| async move {
                self.checkpoint(manager, &w).await;
            })
            .await;
    }

    /// Copies the changed processes of one sandbox into the store.
    async fn checkpoint(&self, manager: &Manager, watched: &Watched) {
        let Some(agent) = manager.running_agent(&watched.tenant, &watched.id) else {
            return;
        };
        let deadline = Instant::now() + CHECKPOINT_BUDGET;
        let known: HashMap<String, Version> = watched.state.lock().await.processes.clone();
        let (fetched, _) = fetch(&agent, deadline, &known).await;
        let (changed, versions): (Vec<ArchivedProcess>, Vec<(String, Version)>) = fetched
            .into_iter()
            .filter(|(p, v)| known.get(&p.info.id) != Some(v))
            .map(|(p, v)| {
                let id = p.info.id.clone();
                (p, (id, v))
            })
            .unzip();
        if changed.is_empty() {
            return;
        }
        let mut seen = watched.state.lock().await;
        // The final capture of a stop (or a destroy) came first: its records are newer.
        if watched.ended.load(Ordering::SeqCst) {
            return;
        }
        match self
            .store
            .checkpoint_processes(&watched.internal, changed)
            .await
        {
            Ok(_) => seen.processes.extend(versions),
            Err(e) => {
                tracing::warn!(sandbox = %watched.id, error = %e, "checkpointing processes failed")
            }
        }
    }
}

#[async_trait::async_trait]
impl LifecycleListener for ProcessArchive {
    async fn about_to_stop(&self, sandbox: SandboxRef<'_>, agent: &AgentClient) {
        let watched = self.unwatch(sandbox.internal);
        // Waits for a checkpoint writing now; later ones see `ended` and write nothing.
        let _writing = match &watched {
            Some(w) => Some(w.state.lock().await),
            None => None,
        };
        capture(self.store.as_ref(), sandbox.id, sandbox.internal, agent).await;
    }

    fn stopped(&self, sandbox: SandboxRef<'_>) {
        self.unwatch(sandbox.internal);
    }

    fn changed(&self, sandbox: SandboxRef<'_>, kind: SandboxEventKind, _state: SandboxState) {
        if kind == SandboxEventKind::Destroyed {
            self.unwatch(sandbox.internal);
        }
    }
}

/// Checkpoints the processes of watched sandboxes `every` (by default [`CHECKPOINT_EVERY`];
/// `ServeConfig::process_checkpoint_every`) until `stop`.
pub(crate) async fn checkpoint_forever(
    archive: Arc<ProcessArchive>,
    manager: Arc<Manager>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => archive.checkpoint_all(&manager).await,
            _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => return,
        }
    }
}

/// Copies the process records and logs of `agent` into the archive of sandbox `internal`.
/// Never fails: problems are logged and the stop proceeds.
async fn capture(store: &dyn Store, sandbox_id: &str, internal: &str, agent: &AgentClient) {
    let deadline = Instant::now() + CAPTURE_BUDGET;
    let (fetched, complete) = fetch(agent, deadline, &HashMap::new()).await;
    let processes: Vec<ArchivedProcess> = fetched.into_iter().map(|(p, _)| p).collect();
    if !complete {
        tracing::warn!(
            sandbox = %sandbox_id,
            archived = processes.len(),
            "archived only the newest processes (time, count or size cap)"
        );
    }
    if processes.is_empty() {
        return;
    }
    if let Err(e) = store.archive_processes(internal, processes).await {
        tracing::warn!(sandbox = %sandbox_id, error = %e, "archiving processes failed");
    }
}

/// The agent's processes, as many as could be read before `deadline`, and whether that was all.
/// Each comes with its [`Version`] as reported. Processes that had ended when stored as `known`
/// are skipped (their record and logs no longer change).
async fn fetch(
    agent: &AgentClient,
    deadline: Instant,
    known: &HashMap<String, Version>,
) -> (Vec<(ArchivedProcess, Version)>, bool) {
    let mut out = Vec::new();
    let list: ProcessListResponse = match get_json(agent, "/api/process/list", deadline).await {
        Ok(list) => list,
        Err(e) => {
            tracing::debug!(error = %e, "process list");
            return (out, false);
        }
    };
    let slept_at = timestamp(SystemTime::now());
    let total = list.processes.len();
    // Newest first: what does not fit the archive's byte cap is the oldest (and is not even
    // read, so a sleep never holds more than the cap in memory).
    let mut listed_all = list.processes;
    listed_all.sort_by(|a, b| b.start_time.cmp(&a.start_time));
    let mut bytes = 0u64;
    for listed in listed_all.into_iter().take(MAX_ARCHIVED) {
        if known
            .get(&listed.id)
            .is_some_and(|v| v.status.is_finished() && listed.status.is_finished())
        {
            continue;
        }
        let id = encode(&listed.id);
        let info = if listed.status.is_finished() {
            // The list omits endTime; the single record has it.
            match get_json::<ProcessGetResponse>(agent, &format!("/api/process/{id}"), deadline)
                .await
            {
                Ok(r) => r.process,
                Err(_) => return (out, false),
            }
        } else {
            listed
        };
        let logs: ProcessLogsResponse =
            match get_json(agent, &format!("/api/process/{id}/logs"), deadline).await {
                Ok(logs) => logs,
                Err(_) => return (out, false),
            };
        bytes += (info.command.len() + logs.stdout.len() + logs.stderr.len()) as u64;
        if bytes > MAX_ARCHIVE_BYTES_PER_SANDBOX {
            return (out, false);
        }
        let mut process = ArchivedProcess {
            info,
            stdout: logs.stdout,
            stderr: logs.stderr,
            stdout_dropped_bytes: logs.stdout_dropped_bytes,
            stderr_dropped_bytes: logs.stderr_dropped_bytes,
        };
        let version = Version::of(&process);
        if !process.info.status.is_finished() {
            // It dies with the sandbox (or with the server, for a checkpoint).
            process.info.status = ProcessStatus::Killed;
            process.info.end_time = Some(slept_at.clone());
        }
        out.push((process, version));
    }
    (out, total <= MAX_ARCHIVED)
}

/// Percent-encodes a process id for a path segment.
fn encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET path` from `agent`, as JSON, before `deadline`.
async fn get_json<T: serde::de::DeserializeOwned>(
    agent: &AgentClient,
    path: &str,
    deadline: Instant,
) -> Result<T, String> {
    match timeout_at(deadline, agent.get_json(path, MAX_ANSWER_BYTES)).await {
        Ok(answer) => answer.map_err(|e| e.chain()),
        Err(_) => Err(format!("{path}: timed out")),
    }
}

/// A process route the archive can answer.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    List { status: Option<String> },
    Get(String),
    Logs(String),
    Stream(String),
}

impl Route {
    /// The route of a `GET` to `target` (agent path and query), if it is a process route.
    fn parse(method: &Method, target: &str) -> Option<Route> {
        if method != Method::GET {
            return None;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let rest = path.strip_prefix("/api/process/")?;
        if rest == "list" {
            let status = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("status="))
                .map(str::to_owned);
            return Some(Route::List { status });
        }
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if id.is_empty() {
            return None;
        }
        let id = decode(id)?;
        match tail {
            "" => Some(Route::Get(id)),
            "logs" => Some(Route::Logs(id)),
            "stream" => Some(Route::Stream(id)),
            _ => None,
        }
    }
}

/// Percent-decodes a path segment.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Forwards `request` to the agent like [`proxy`], completing process answers from the archive.
/// `None` when the request is not a process route (the caller forwards it as usual).
pub(crate) async fn forward(
    app: &AppState,
    request: Request,
    tenant: &str,
    id: &str,
    target: &str,
    limit: Option<usize>,
) -> Result<ApiResult<Response>, Request> {
    let Some(route) = Route::parse(request.method(), target) else {
        return Err(request);
    };
    let response = match proxy(app, request, tenant, id, target.to_owned(), limit).await {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let is_list = matches!(route, Route::List { .. });
    if !is_list && response.status() != StatusCode::NOT_FOUND {
        return Ok(Ok(response));
    }
    let internal = app.manager.internal_id_of(tenant, id);
    let store = app.manager.store().as_ref();
    Ok(Ok(match route {
        Route::List { status } => merge_list(store, &internal, status, response).await,
        Route::Get(pid) => from_archive(store, &internal, &pid, response, get_answer).await,
        Route::Logs(pid) => from_archive(store, &internal, &pid, response, logs_answer).await,
        Route::Stream(pid) => from_archive(store, &internal, &pid, response, stream_answer).await,
    }))
}

/// Reads a whole (small) answer; `None` if it is too big or broken.
async fn read_all(response: Response) -> (http::response::Parts, Option<Bytes>) {
    let (parts, body) = response.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes());
    (parts, bytes)
}

fn rebuild(parts: http::response::Parts, bytes: Option<Bytes>) -> Response {
    match bytes {
        Some(b) => Response::from_parts(parts, Body::from(b)),
        None => crate::error::ApiError::new(
            sandpit_protocol::ErrorCode::SandboxUnavailable,
            "the sandbox agent's answer could not be read",
        )
        .into_response(),
    }
}

async fn merge_list(
    store: &dyn Store,
    internal: &str,
    status: Option<String>,
    response: Response,
) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, bytes) = read_all(response).await;
    let Some(mut list) = bytes
        .as_ref()
        .and_then(|b| serde_json::from_slice::<ProcessListResponse>(b).ok())
    else {
        return rebuild(parts, bytes);
    };
    let archived = match store.archived_processes(internal).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "reading archived processes");
            return rebuild(parts, bytes);
        }
    };
    let live: HashSet<String> = list.processes.iter().map(|p| p.id.clone()).collect();
    let mut merged: Vec<ProcessInfo> = archived
        .into_iter()
        .map(|a| a.info)
        .filter(|p| !live.contains(&p.id))
        .filter(|p| status.as_deref().is_none_or(|s| p.status.as_str() == s))
        .map(|mut p| {
            // Like the agent's list.
            p.end_time = None;
            p
        })
        .collect();
    merged.append(&mut list.processes);
    list.processes = merged;
    json_response(StatusCode::OK, &list)
}

/// The agent's 404 unless it is `PROCESS_NOT_FOUND` for a process the archive has; then
/// `answer` of the archived process.
async fn from_archive(
    store: &dyn Store,
    internal: &str,
    process_id: &str,
    response: Response,
    answer: fn(ArchivedProcess) -> Response,
) -> Response {
    let (parts, bytes) = read_all(response).await;
    let not_found = bytes
        .as_ref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .is_some_and(|v| v["code"] == "PROCESS_NOT_FOUND");
    if !not_found {
        return rebuild(parts, bytes);
    }
    match store.archived_process(internal, process_id).await {
        Ok(Some(p)) => answer(p),
        Ok(None) => rebuild(parts, bytes),
        Err(e) => {
            tracing::warn!(error = %e, "reading an archived process");
            rebuild(parts, bytes)
        }
    }
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn get_answer(p: ArchivedProcess) -> Response {
    json_response(
        StatusCode::OK,
        &ProcessGetResponse {
            success: true,
            process: p.info,
            timestamp: now(),
        },
    )
}

fn logs_answer(p: ArchivedProcess) -> Response {
    json_response(
        StatusCode::OK,
        &ProcessLogsResponse {
            success: true,
            process_id: p.info.id,
            stdout: p.stdout,
            stderr: p.stderr,
            timestamp: now(),
            stdout_dropped_bytes: p.stdout_dropped_bytes,
            stderr_dropped_bytes: p.stderr_dropped_bytes,
        },
    )
}

/// The events the agent's stream would have sent for the ended process: `process_info`, the
/// buffered output, then `exit` (or `error` when no exit code is known, e.g. killed by sleep).
fn stream_events(p: ArchivedProcess) -> Vec<ProcessStreamEvent> {
    let process_id = p.info.id.clone();
    let mut events = vec![ProcessStreamEvent::ProcessInfo {
        process_id: process_id.clone(),
        command: p.info.command.clone(),
        status: p.info.status,
        timestamp: now(),
        pid: p.info.pid,
    }];
    if !p.stdout.is_empty() {
        events.push(ProcessStreamEvent::Stdout {
            data: p.stdout,
            process_id: process_id.clone(),
            timestamp: now(),
        });
    }
    if !p.stderr.is_empty() {
        events.push(ProcessStreamEvent::Stderr {
            data: p.stderr,
            process_id: process_id.clone(),
            timestamp: now(),
        });
    }
    events.push(match p.info.exit_code {
        Some(exit_code) => ProcessStreamEvent::Exit {
            process_id,
            exit_code,
            data: format!(
                "Process {} with exit code {exit_code}",
                p.info.status.as_str()
            ),
            timestamp: now(),
            reason: p.info.reason,
        },
        None => ProcessStreamEvent::Error {
            process_id,
            data: format!(
                "The process was {} when the sandbox went to sleep; its exit code is unknown",
                p.info.status.as_str()
            ),
            timestamp: now(),
        },
    });
    events
}

fn stream_answer(p: ArchivedProcess) -> Response {
    let mut body = String::new();
    for event in stream_events(p) {
        let json = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
        body.push_str("data: ");
        body.push_str(&json);
        body.push_str("\n\n");
    }
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_routes_parse() {
        let get = Method::GET;
        assert_eq!(
            Route::parse(&get, "/api/process/list?status=running"),
            Some(Route::List {
                status: Some("running".into())
            })
        );
        assert_eq!(
            Route::parse(&get, "/api/process/a%20b"),
            Some(Route::Get("a b".into()))
        );
        assert_eq!(
            Route::parse(&get, "/api/process/p1/logs"),
            Some(Route::Logs("p1".into()))
        );
        assert_eq!(
            Route::parse(&get, "/api/process/p1/stream?x=1"),
            Some(Route::Stream("p1".into()))
        );
        assert_eq!(Route::parse(&Method::DELETE, "/api/process/p1"), None);
        assert_eq!(Route::parse(&get, "/api/process/p1/other"), None);
        assert_eq!(Route::parse(&get, "/api/execute"), None);
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(decode(&encode("a b/é")).as_deref(), Some("a b/é"));
    }

    #[test]
    fn a_process_killed_by_sleep_streams_an_error_not_an_invented_exit_code() {
        let p = ArchivedProcess {
            info: ProcessInfo {
                id: "p".into(),
                pid: None,
                command: "sleep 100".into(),
                status: ProcessStatus::Killed,
                start_time: now(),
                end_time: Some(now()),
                exit_code: None,
                session_id: None,
                reason: None,
            },
            stdout: "out".into(),
            stderr: String::new(),
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
        };
        let events = stream_events(p);
        assert_eq!(events.len(), 3);
        assert!(matches!(events[0], ProcessStreamEvent::ProcessInfo { .. }));
        assert!(matches!(&events[1], ProcessStreamEvent::Stdout { data, .. } if data == "out"));
        assert!(matches!(events[2], ProcessStreamEvent::Error { .. }));
    }
}
