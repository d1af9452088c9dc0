//! `sandpit node`: the daemon of one machine of a cluster. It owns the local driver (the
//! sandboxes, their cgroups, images and agents), joins the control plane at start (token →
//! certificate issued by the cluster CA) and serves the node API over mutually authenticated
//! TLS: start, stop, destroy, status (the heartbeat) and tunnels to agents (an HTTP upgrade
//! that becomes a byte pipe to the sandbox's agent socket). At start it reconciles: whatever
//! a previous run left (processes, cgroups, mounts) is stopped before it joins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use sandpit_image::ImageStore;
use sandpit_protocol::control::NodeCapacity;
use sandpit_runtime::local::{LocalDriver, LocalDriverConfig};
use sandpit_runtime::{AgentConnector, Driver, DriverError, RunFile, SandboxSpec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::pki;
use super::wire::{
    AGENT_UPGRADE, JoinRequest, JoinResponse, NODE_API, NodeError, NodeErrorKind, NodeStatus,
    RunningResponse, StartRequest, StartResponse,
};

/// File in the node's data dir holding its id (kept across restarts).
pub const NODE_ID_FILE: &str = "node-id";

/// What `sandpit node` is started with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the node API (mutual TLS) listens.
    pub listen: SocketAddr,
    /// `host:port` the control plane reaches the node API at (default: the listen address).
    pub advertise: Option<String>,
    /// Plain-HTTP `GET /healthz` (for kubelet probes).
    pub health_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub images_dir: PathBuf,
    pub agent_bin: PathBuf,
    /// The control plane's URL (`http://host:port`).
    pub join_url: String,
    pub token: String,
    /// The node's id (default: the one kept in the data dir, else a new random one).
    pub node_id: Option<String>,
    /// First host uid of the sandboxes' ranges (nodes sharing one host need disjoint ones).
    pub first_uid: u32,
    /// The cgroup group of the sandboxes (nodes sharing one host need distinct ones).
    pub cgroup_root: String,
    /// Most sandboxes running at once (what placement fills up to).
    pub max_sandboxes: u64,
}

/// A sandbox this node started: its agent and its init's pid.
type Run = (Arc<dyn AgentConnector>, u32);

struct Node {
    id: String,
    boot_id: String,
    driver: LocalDriver,
    images: ImageStore,
    max_sandboxes: u64,
    /// Connectors and pids of the sandboxes this run started.
    runs: std::sync::Mutex<HashMap<String, Run>>,
    /// One lifecycle call per sandbox at a time (replicas may race on one id).
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cpus: u32,
    memory_mb: u64,
}

/// A running node daemon.
pub struct NodeDaemon {
    addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    id: String,
    node: Arc<Node>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeDaemon {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Serves until ctrl-c or SIGTERM, then stops the sandboxes it runs (their files stay;
    /// the control plane starts them again on their next use) and releases its cgroups. A
    /// node killed without this is reconciled at its next start.
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        tracing::info!("signal received, stopping the node");
        self.shutdown().await;
        Ok(())
    }

    /// Stops serving, stops the sandboxes this node runs and releases its cgroups.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let ids: Vec<String> = {
            let runs = self.node.runs.lock().unwrap_or_else(|p| p.into_inner());
            runs.keys().cloned().collect()
        };
        for id in ids {
            let lock = self.node.lock(&id);
            let _held = lock.lock().await;
            self.node.forget(&id);
            if let Err(e) = self.node.driver.stop(&id).await {
                tracing::warn!(sandbox = %id, error = %sandpit_protocol::ErrorChain(&e), "stopping");
            }
        }
        self.node.driver.shutdown().await;
    }
}

fn node_id(config: &NodeConfig) -> anyhow::Result<String> {
    let file = config.data_dir.join(NODE_ID_FILE);
    let id = match &config.node_id {
        Some(id) => id.clone(),
        None => match std::fs::read_to_string(&file) {
            Ok(id) => id.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("node-{}", hex::encode(rand::random::<[u8; 4]>()))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        },
    };
    anyhow::ensure!(
        pki::valid_node_id(&id),
        "invalid node id {id:?}: 1 to 50 characters a-z, 0-9 and -, not starting with -"
    );
    std::fs::write(&file, format!("{id}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(id)
}

impl Node {
    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_owned()).or_default().clone()
    }

    fn connector(&self, id: &str) -> Option<Arc<dyn AgentConnector>> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(id).map(|(c, _)| c.clone())
    }

    fn pid(&self, id: &str) -> u32 {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(id).map(|(_, pid)| *pid).unwrap_or(0)
    }

    fn forget(&self, id: &str) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn capacity(&self, running: u64) -> NodeCapacity {
        NodeCapacity {
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            max_sandboxes: self.max_sandboxes,
            running,
            images: self
                .images
                .list()
                .map(|l| l.into_iter().map(|i| i.name).collect())
                .unwrap_or_default(),
        }
    }

    async fn running(&self) -> Vec<String> {
        let ids: Vec<String> = {
            let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            runs.keys().cloned().collect()
        };
        let mut running = Vec::new();
        for id in ids {
            if self.driver.is_running(&id).await {
                running.push(id);
            }
        }
        running
    }
}

/// Starts a node: reconciles the local driver, joins the control plane (retrying until it
/// answers) and serves the node API.
pub async fn start(config: NodeConfig) -> anyhow::Result<NodeDaemon> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let data_dir = std::path::absolute(&config.data_dir)?;
    let id = node_id(&config)?;
    let mut driver_config = LocalDriverConfig::new(data_dir.clone(), config.agent_bin.clone());
    driver_config.images_dir = std::path::absolute(&config.images_dir)?;
    driver_config.first_uid = config.first_uid;
    driver_config.cgroup_group = config.cgroup_root.clone();
    let driver = LocalDriver::with_config(driver_config).context("starting the local driver")?;
    let left = driver.reconcile().await.context("reconciling")?;
    if !left.is_empty() {
        tracing::info!(
            count = left.len(),
            "stopped sandboxes left by a previous run"
        );
    }
    let images = ImageStore::open(&config.images_dir)
        .with_context(|| format!("opening images in {}", config.images_dir.display()))?;
    let host = crate::caps::HostResources::detect(&data_dir);
    let node = Arc::new(Node {
        id: id.clone(),
        boot_id: hex::encode(rand::random::<[u8; 8]>()),
        driver,
        images,
        max_sandboxes: config.max_sandboxes,
        runs: Default::default(),
        locks: Default::default(),
        cpus: host.cpus.ceil() as u32,
        memory_mb: host.memory_mb,
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut health_addr = None;
    if let Some(health) = config.health_listen {
        let listener = TcpListener::bind(health)
            .await
            .with_context(|| format!("binding {health}"))?;
        health_addr = Some(listener.local_addr()?);
        let router = Router::new().route("/healthz", get(|| async { "ok\n" }));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        }));
    }
    let (key, csr) = pki::node_key_and_request(&id)?;
    let join = JoinRequest {
        token: config.token.clone(),
        node_id: id.clone(),
        address: advertise,
        boot_id: node.boot_id.clone(),
        csr,
        capacity: node.capacity(0),
    };
    let joined = match join_until_accepted(&config.join_url, &join).await {
        Ok(joined) => joined,
        Err(e) => {
            node.driver.shutdown().await;
            return Err(e);
        }
    };
    let tls = pki::node_server_config(&joined.ca, &joined.certificate, &key)?;
    tracing::info!(node = %id, %addr, "joined the cluster; node API listening");
    let router = router(node.clone());
    let serve_stop = stop.clone();
    tasks.push(tokio::spawn(serve_tls(listener, tls, router, serve_stop)));
    Ok(NodeDaemon {
        addr,
        health_addr,
        id,
        node,
        stop,
        tasks,
    })
}

/// Joins, retrying every second while the control plane is unreachable or answers 5xx; a
/// refused token or request fails at once.
async fn join_until_accepted(url: &str, join: &JoinRequest) -> anyhow::Result<JoinResponse> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let endpoint = format!("{}/v1/cluster/join", url.trim_end_matches('/'));
    let mut warned = false;
    loop {
        match client.post(&endpoint).json(join).send().await {
            Ok(answer) if answer.status().is_success() => {
                return answer.json().await.context("reading the join answer");
            }
            Ok(answer) if answer.status().is_client_error() => {
                let status = answer.status();
                let body = answer.text().await.unwrap_or_default();
                anyhow::bail!("the control plane at {url} refused the join ({status}): {body}");
            }
            Ok(answer) => {
                if !warned {
                    tracing::warn!(status = %answer.status(), "join failed; retrying");
                    warned = true;
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %sandpit_protocol::ErrorChain(&e), "control plane unreachable; retrying");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "node API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "node API: TLS handshake refused");
                        return;
                    }
                    Err(_) => return,
                };
            let service = TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "node API connection ended");
            }
        });
    }
}

fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(&format!("{NODE_API}/status"), get(status))
        .route(
            &format!("{NODE_API}/sandboxes/{{id}}/start"),
            post(start_sandbox),
        )
        .route(
            &format!("{NODE_API}/sandboxes/{{id}}/stop"),
            post(stop_sandbox),
        )
        .route(
            &format!("{NODE_API}/sandboxes/{{id}}/destroy"),
            post(destroy_sandbox),
        )
        .route(
            &format!("{NODE_API}/sandboxes/{{id}}/running"),
            get(running),
        )
        .route(
            &format!("{NODE_API}/sandboxes/{{id}}/agent"),
            get(agent_tunnel),
        )
        .with_state(node)
}

fn node_error(status: StatusCode, kind: NodeErrorKind, message: String) -> Response {
    (status, Json(NodeError { kind, message })).into_response()
}

fn driver_error(e: DriverError) -> Response {
    let kind = match &e {
        DriverError::InvalidSpec(_) => NodeErrorKind::InvalidSpec,
        DriverError::ImageNotFound(_) => NodeErrorKind::ImageNotFound,
        DriverError::StartFailed { .. } => NodeErrorKind::StartFailed,
        DriverError::LimitsRefused { .. } => NodeErrorKind::LimitsRefused,
        DriverError::Unsupported(_) => NodeErrorKind::Unsupported,
        _ => NodeErrorKind::Other,
    };
    let message = match &e {
        DriverError::ImageNotFound(image) => image.clone(),
        _ => sandpit_protocol::display_chain(&e),
    };
    node_error(StatusCode::UNPROCESSABLE_ENTITY, kind, message)
}

/// Ids are the control plane's internal ids: path components of the driver's dirs.
fn check_id(id: &str) -> Result<(), Box<Response>> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Box::new(node_error(
            StatusCode::BAD_REQUEST,
            NodeErrorKind::InvalidSpec,
            format!("invalid sandbox id {id:?}"),
        )))
    }
}

async fn status(State(node): State<Arc<Node>>) -> Json<NodeStatus> {
    let running = node.running().await;
    Json(NodeStatus {
        node_id: node.id.clone(),
        boot_id: node.boot_id.clone(),
        capacity: node.capacity(running.len() as u64),
        running,
    })
}

async fn start_sandbox(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Json(req): Json<StartRequest>,
) -> Response {
    if let Err(r) = check_id(&id) {
        return *r;
    }
    let lock = node.lock(&id);
    let _held = lock.lock().await;
    // A second replica starting a sandbox that runs gets the run that exists.
    if node.connector(&id).is_some() && node.driver.is_running(&id).await {
        let pid = node.pid(&id);
        return Json(StartResponse { pid }).into_response();
    }
    let mut run_files = Vec::new();
    for f in req.run_files {
        match base64::engine::general_purpose::STANDARD.decode(&f.contents) {
            Ok(contents) if f.after_image_ca_bundle => {
                let rootfs = match node.images.rootfs(&req.image) {
                    Ok(rootfs) => rootfs,
                    Err(_) => {
                        return node_error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            NodeErrorKind::ImageNotFound,
                            req.image.clone(),
                        );
                    }
                };
                run_files.push(RunFile {
                    name: f.name,
                    contents: sandpit_egress::ca_bundle(&rootfs, &contents),
                });
            }
            Ok(contents) => run_files.push(RunFile {
                name: f.name,
                contents,
            }),
            Err(e) => {
                return node_error(
                    StatusCode::BAD_REQUEST,
                    NodeErrorKind::InvalidSpec,
                    format!("run file {:?}: {e}", f.name),
                );
            }
        }
    }
    let spec = SandboxSpec {
        id: id.clone(),
        image: req.image,
        limits: req.limits,
        env: req.env,
        ephemeral: req.ephemeral,
        network: req.network,
        run_files,
        egress: None,
        mounts: Vec::new(),
    };
    match node.driver.start(&spec).await {
        Ok(started) => {
            node.runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, (started.agent, started.pid));
            Json(StartResponse { pid: started.pid }).into_response()
        }
        Err(e) => driver_error(e),
    }
}

async fn stop_sandbox(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    end_sandbox(&node, &id, false).await
}

async fn destroy_sandbox(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    end_sandbox(&node, &id, true).await
}

/// Stops the sandbox (its files stay), or destroys it (everything goes).
async fn end_sandbox(node: &Node, id: &str, destroy: bool) -> Response {
    if let Err(r) = check_id(id) {
        return *r;
    }
    let lock = node.lock(id);
    let _held = lock.lock().await;
    node.forget(id);
    let ended = if destroy {
        node.driver.destroy(id).await
    } else {
        node.driver.stop(id).await
    };
    match ended {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => driver_error(e),
    }
}

async fn running(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    if let Err(r) = check_id(&id) {
        return *r;
    }
    let running = node.connector(&id).is_some() && node.driver.is_running(&id).await;
    Json(RunningResponse { running }).into_response()
}

/// `GET /v1/node/sandboxes/{id}/agent` with `Upgrade: sandpit-agent`: after `101`, the
/// connection is a byte pipe to a fresh connection to the sandbox's agent. `404` when the
/// sandbox does not run here (the control plane takes it as "agent gone").
async fn agent_tunnel(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    mut req: Request,
) -> Response {
    if let Err(r) = check_id(&id) {
        return *r;
    }
    let wants_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(AGENT_UPGRADE.as_bytes()));
    if !wants_upgrade {
        return node_error(
            StatusCode::BAD_REQUEST,
            NodeErrorKind::Other,
            format!("expected Upgrade: {AGENT_UPGRADE}"),
        );
    }
    let not_here = || {
        node_error(
            StatusCode::NOT_FOUND,
            NodeErrorKind::NotFound,
            format!("sandbox {id} does not run on this node"),
        )
    };
    let Some(connector) = node.connector(&id) else {
        return not_here();
    };
    let mut agent = match connector.connect().await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return not_here();
        }
        Err(e) => {
            return node_error(
                StatusCode::BAD_GATEWAY,
                NodeErrorKind::Other,
                format!("connecting to the agent: {e}"),
            );
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut upgraded = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut agent).await;
            }
            Err(e) => tracing::debug!(error = %e, "agent tunnel upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(AGENT_UPGRADE));
    response
}
