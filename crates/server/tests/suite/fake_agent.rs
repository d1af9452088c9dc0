//! A driver whose "sandboxes" are in-process fake agents on Unix sockets: enough of the
//! container API to test the control plane (forwarding, streaming, lifecycle) without the real
//! agent or any isolation.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use sandpit_runtime::{Driver, DriverError, SandboxSpec, Started, UnixConnector};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct Counters {
    pub starts: AtomicUsize,
    pub stops: AtomicUsize,
    pub destroys: AtomicUsize,
}

/// Files of one fake sandbox: survive stop unless ephemeral, gone on destroy.
type Workspace = Arc<Mutex<HashMap<String, String>>>;

pub struct FakeDriver {
    dir: PathBuf,
    pub counters: Counters,
    running: Mutex<HashMap<String, JoinHandle<()>>>,
    workspaces: Mutex<HashMap<String, Workspace>>,
    ephemeral: Mutex<HashMap<String, bool>>,
    /// Every spec it was asked to start, in order.
    pub specs: Mutex<Vec<SandboxSpec>>,
    /// What happened, in order: `process list` (an agent was asked for its processes),
    /// `stop` (a sandbox was stopped).
    pub events: Arc<Mutex<Vec<&'static str>>>,
    /// Every uid range hand-over it got (`adopt_uid_ranges`).
    pub adopted: Mutex<Vec<(String, u32)>>,
}

impl FakeDriver {
    pub fn new(dir: PathBuf) -> Arc<Self> {
        std::fs::create_dir_all(&dir).unwrap();
        Arc::new(FakeDriver {
            dir,
            counters: Counters::default(),
            running: Mutex::default(),
            workspaces: Mutex::default(),
            ephemeral: Mutex::default(),
            specs: Mutex::default(),
            events: Arc::default(),
            adopted: Mutex::default(),
        })
    }

    /// Kills an agent behind the control plane's back (a crash).
    pub fn crash(&self, internal: &str) {
        if let Some(task) = self.running.lock().unwrap().remove(internal) {
            task.abort();
        }
        let _ = std::fs::remove_file(self.dir.join(format!("{internal}.sock")));
    }

    pub fn running_ids(&self) -> Vec<String> {
        self.running.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait::async_trait]
impl Driver for FakeDriver {
    async fn start(&self, spec: &SandboxSpec) -> Result<Started, DriverError> {
        if spec.env.iter().any(|(k, _)| k == "FAIL_START") {
            return Err(DriverError::StartFailed {
                id: spec.id.clone(),
                message: "asked to fail".into(),
            });
        }
        if spec.limits.memory_mb.is_some_and(|m| m < 8) {
            return Err(DriverError::InvalidSpec(
                "memoryMb must be at least 8".into(),
            ));
        }
        self.specs.lock().unwrap().push(spec.clone());
        self.counters.starts.fetch_add(1, Ordering::SeqCst);
        let socket = self.dir.join(format!("{}.sock", spec.id));
        let _ = std::fs::remove_file(&socket);
        let listener =
            tokio::net::UnixListener::bind(&socket).map_err(|source| DriverError::Io {
                id: spec.id.clone(),
                stage: "bind",
                source,
            })?;
        let workspace = self
            .workspaces
            .lock()
            .unwrap()
            .entry(spec.id.clone())
            .or_default()
            .clone();
        self.ephemeral
            .lock()
            .unwrap()
            .insert(spec.id.clone(), spec.ephemeral);
        // `HANG_PROCESS_LIST`: the agent never answers its process list (a wedged agent).
        let hang = spec.env.iter().any(|(k, _)| k == "HANG_PROCESS_LIST");
        let app = agent_router(workspace).route(
            "/api/process/list",
            get({
                let events = self.events.clone();
                move || process_list(events, hang)
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.running.lock().unwrap().insert(spec.id.clone(), task);
        Ok(Started {
            agent: Arc::new(UnixConnector::new(socket)),
            pid: std::process::id(),
        })
    }

    async fn stop(&self, id: &str) -> Result<(), DriverError> {
        self.counters.stops.fetch_add(1, Ordering::SeqCst);
        self.events.lock().unwrap().push("stop");
        self.crash(id);
        if self
            .ephemeral
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(false)
        {
            self.workspaces.lock().unwrap().remove(id);
        }
        Ok(())
    }

    async fn destroy(&self, id: &str) -> Result<(), DriverError> {
        self.counters.destroys.fetch_add(1, Ordering::SeqCst);
        self.crash(id);
        self.workspaces.lock().unwrap().remove(id);
        Ok(())
    }

    async fn is_running(&self, id: &str) -> bool {
        self.running.lock().unwrap().contains_key(id)
    }

    async fn adopt_uid_ranges(&self, ranges: &[(String, u32)]) -> Result<(), DriverError> {
        self.adopted.lock().unwrap().extend_from_slice(ranges);
        Ok(())
    }

    async fn reconcile(&self) -> Result<Vec<String>, DriverError> {
        let ids = self.running_ids();
        for id in &ids {
            self.crash(id);
        }
        Ok(ids)
    }
}

#[derive(Deserialize)]
struct StreamQuery {
    n: usize,
    delay_ms: u64,
}

fn agent_router(workspace: Workspace) -> Router {
    Router::new()
        .route(
            "/api/ping",
            get(|| async { Json(json!({"success": true, "message": "pong"})) }),
        )
        .route("/api/execute", post(execute))
        .route("/api/echo", any(echo))
        .route("/api/stream", post(stream))
        .route("/api/upload", post(upload))
        .route("/api/write", post(write))
        .route("/api/read", post(read))
        .route("/api/activity", get(activity))
        .route("/ws", any(ws_echo))
        .with_state(workspace)
}

async fn process_list(events: Arc<Mutex<Vec<&'static str>>>, hang: bool) -> Json<Value> {
    events.lock().unwrap().push("process list");
    if hang {
        std::future::pending::<()>().await;
    }
    Json(json!({"success": true, "processes": [], "timestamp": "2026-01-01T00:00:00Z"}))
}

async fn execute(Json(body): Json<Value>) -> Json<Value> {
    let command = body["command"].as_str().unwrap_or_default().to_owned();
    if let Some(ms) = command.strip_prefix("sleep-ms ") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    Json(json!({"success": true, "stdout": command, "stderr": "", "exitCode": 0}))
}

/// Reports what reached the agent.
async fn echo(request: Request) -> Json<Value> {
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    Json(json!({
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "headers": headers,
    }))
}

async fn stream(Query(q): Query<StreamQuery>) -> impl IntoResponse {
    let events = futures::stream::iter(0..q.n).then(move |i| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(q.delay_ms)).await;
        }
        Ok::<_, Infallible>(Bytes::from(format!("data: {{\"i\":{i}}}\n\n")))
    });
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "text/event-stream".parse().unwrap());
    (headers, Body::from_stream(events))
}

async fn upload(body: Body) -> Json<Value> {
    let mut stream = body.into_data_stream();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => total += c.len(),
            Err(e) => return Json(json!({"success": false, "error": e.to_string()})),
        }
    }
    Json(json!({"success": true, "bytes": total}))
}

async fn write(State(ws): State<Workspace>, Json(body): Json<Value>) -> Json<Value> {
    let path = body["path"].as_str().unwrap_or_default().to_owned();
    let content = body["content"].as_str().unwrap_or_default().to_owned();
    ws.lock().unwrap().insert(path, content);
    Json(json!({"success": true}))
}

async fn read(State(ws): State<Workspace>, Json(body): Json<Value>) -> axum::response::Response {
    let path = body["path"].as_str().unwrap_or_default();
    match ws.lock().unwrap().get(path) {
        Some(c) => Json(json!({"success": true, "content": c})).into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            Json(json!({"code": "FILE_NOT_FOUND", "message": "no such file", "httpStatus": 404})),
        )
            .into_response(),
    }
}

/// `GET /api/activity`: one running process while the file `/busy` holds `yes`. The calls
/// (the reaper's busy checks) are counted in the file `/busy-checks`.
async fn activity(State(ws): State<Workspace>) -> Json<Value> {
    let mut files = ws.lock().unwrap();
    let checks: u64 = files
        .get("/busy-checks")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    files.insert("/busy-checks".into(), (checks + 1).to_string());
    let running = usize::from(files.get("/busy").map(String::as_str) == Some("yes"));
    Json(json!({"runningProcesses": running, "busyTerminals": 0}))
}

async fn ws_echo(ws: axum::extract::ws::WebSocketUpgrade) -> axum::response::Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}
