//! [`RemoteDriver`]: the control plane's driver in cluster mode. Sandboxes run on nodes
//! (`sandpit node`); this driver places new ones, records each sandbox's node in the store,
//! calls the node API over mutually authenticated TLS and reaches agents through a tunnel on
//! it, so [`crate::agent_client::AgentClient`] works unchanged (exec, files, PTY, preview).
//!
//! Heartbeats: every [`HEARTBEAT_EVERY`] each replica asks every node for its status and
//! records the time in the store; a node whose last recorded heartbeat is older than
//! [`DOWN_AFTER`] is `down` for every replica. Its sandboxes answer `NODE_UNAVAILABLE` and
//! new sandboxes go to other nodes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sandpit_protocol::control::{NodeCapacity, NodeInfo, NodeState};
use sandpit_runtime::{
    AgentConnector, AgentStream, Driver, DriverError, RunFile, SandboxSpec, Started,
};
use sandpit_store::{NodeRecord, Store};
use serde::de::DeserializeOwned;

use super::pki;
use super::wire::{
    AGENT_UPGRADE, NODE_API, NodeError, NodeErrorKind, NodeStatus, RunningResponse, StartRequest,
    StartResponse, WireRunFile,
};
use crate::lifecycle::{ms_timestamp, now_ms};

/// How often each replica asks every node for its status.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A node whose last heartbeat is older than this is `down`.
pub const DOWN_AFTER: Duration = Duration::from_secs(10);
/// Longest a node API call may take before the node counts as not answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a connection to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest a connection may wait idle in a pool before it is dropped instead of reused.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Idle connections kept per node (beyond this, connections are closed after use).
const MAX_IDLE: usize = 16;
/// Connections a pool keeps ready for agent tunnels, which consume one each.
const WARM: usize = 2;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle keep-alive connections (mTLS, HTTP/1) to one node, shared by its API calls and its
/// agent tunnels. Calls give their connection back when the answer is read; a tunnel takes
/// one for good (HTTP Upgrade), and the pool opens a replacement in the background so the
/// next tunnel finds a connection whose TCP and TLS handshakes are done. A pooled connection
/// whose node went away is seen closed (its connection task ended) and skipped; one that fails
/// at its first use is retried once on a fresh connection (every node API request is
/// idempotent), so a restarted node never leaves a replica waiting on dead connections.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<(Sender, std::time::Instant)>>,
    /// Background connects in flight (at most [`WARM`]).
    warming: std::sync::atomic::AtomicUsize,
}

/// How to reach one node's API.
#[derive(Clone)]
struct NodeClient {
    id: String,
    address: String,
    tls: tokio_rustls::TlsConnector,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} at {}", self.id, self.address)
    }
}

type NodeStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Whether a connection was taken from the pool (so a failure may be a stale connection).
#[derive(Clone, Copy, PartialEq)]
enum Origin {
    Pooled,
    Fresh,
}

impl NodeClient {
    /// A new TCP + TLS connection. The client certificate is presented on each; TLS 1.3
    /// session tickets (rustls' in-memory caches on both sides) spare repeated connections
    /// the certificate checks.
    async fn connect(&self) -> std::io::Result<NodeStream> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(pki::node_dns_name(&self.id))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS timed out"))?
    }

    /// A new connection ready for requests (upgrades included).
    async fn open(&self) -> std::io::Result<Sender> {
        let stream = self.connect().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// An idle pooled connection, else a new one.
    async fn checkout(&self) -> std::io::Result<(Sender, Origin)> {
        loop {
            let taken = lock(&self.pool.idle).pop();
            let Some((mut sender, since)) = taken else {
                break;
            };
            if sender.is_closed() || since.elapsed() > IDLE_FOR {
                continue;
            }
            // An idle HTTP/1 connection is ready at once; one whose node went away errors.
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(50), sender.ready()).await
            {
                return Ok((sender, Origin::Pooled));
            }
        }
        Ok((self.open().await?, Origin::Fresh))
    }

    /// Gives a connection whose last answer was read in full back to the pool.
    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.pool.idle);
        idle.retain(|(s, since)| !s.is_closed() && since.elapsed() <= IDLE_FOR);
        if idle.len() < MAX_IDLE {
            idle.push((sender, std::time::Instant::now()));
        }
    }

    /// Opens connections in the background until [`WARM`] are idle (for the next tunnels).
    fn warm_up(&self) {
        use std::sync::atomic::Ordering;
        let idle = lock(&self.pool.idle).len();
        let warming = self.pool.warming.load(Ordering::Relaxed);
        for _ in (idle + warming)..WARM {
            self.pool.warming.fetch_add(1, Ordering::Relaxed);
            let client = self.clone();
            tokio::spawn(async move {
                if let Ok(sender) = client.open().await {
                    client.checkin(sender);
                }
                client.pool.warming.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// Sends `request` on a pooled connection, once more on a fresh one when a pooled
    /// connection fails before an answer (it may have died with its node).
    async fn send(
        &self,
        request: impl Fn() -> Result<Request<Full<Bytes>>, http::Error>,
    ) -> std::io::Result<(http::Response<hyper::body::Incoming>, Sender)> {
        let mut fresh_only = false;
        loop {
            let (mut sender, origin) = if fresh_only {
                (self.open().await?, Origin::Fresh)
            } else {
                self.checkout().await?
            };
            match sender
                .send_request(request().map_err(std::io::Error::other)?)
                .await
            {
                Ok(response) => return Ok((response, sender)),
                Err(e) if origin == Origin::Pooled => {
                    tracing::debug!(node = %self.id, error = %e, "pooled node connection failed; retrying on a new one");
                    // Its siblings likely died with it: drop them all.
                    lock(&self.pool.idle).clear();
                    fresh_only = true;
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
    }

    /// One request; `Ok(Err(..))` is the node's error answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Result<T, (StatusCode, NodeError)>, String> {
        let body = Bytes::from(body.unwrap_or_default());
        let json = !body.is_empty();
        let uri = format!("{NODE_API}{path}");
        let exchange = async {
            let (response, sender) = self
                .send(|| {
                    let mut request = Request::builder()
                        .method(method.clone())
                        .uri(&uri)
                        .header(header::HOST, "node");
                    if json {
                        request = request.header(header::CONTENT_TYPE, "application/json");
                    }
                    request.body(Full::new(body.clone()))
                })
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            self.checkin(sender);
            if status.is_success() {
                let bytes = if bytes.is_empty() {
                    &b"null"[..]
                } else {
                    &bytes[..]
                };
                serde_json::from_slice(bytes)
                    .map(Ok)
                    .map_err(|e| format!("node answer: {e}"))
            } else {
                let error = serde_json::from_slice(&bytes).unwrap_or_else(|_| NodeError {
                    kind: NodeErrorKind::Other,
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                });
                Ok(Err((status, error)))
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| "the node did not answer in time".to_owned())?
    }
}

/// Opens tunnels to one sandbox's agent through its node.
#[derive(Debug)]
struct RemoteConnector {
    node: NodeClient,
    id: String,
}

#[async_trait::async_trait]
impl AgentConnector for RemoteConnector {
    async fn connect(&self) -> std::io::Result<AgentStream> {
        let uri = format!("{NODE_API}/sandboxes/{}/agent", self.id);
        let (response, sender) = tokio::time::timeout(
            CALL_TIMEOUT,
            self.node.send(|| {
                Request::builder()
                    .method(Method::GET)
                    .uri(&uri)
                    .header(header::HOST, "node")
                    .header(header::CONNECTION, "upgrade")
                    .header(header::UPGRADE, AGENT_UPGRADE)
                    .body(Full::new(Bytes::new()))
            }),
        )
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "node tunnel timed out")
        })??;
        match response.status() {
            StatusCode::SWITCHING_PROTOCOLS => {
                drop(sender);
                // This connection is the tunnel's now: have the next one ready.
                self.node.warm_up();
                let upgraded = hyper::upgrade::on(response)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(Box::new(TokioIo::new(upgraded)))
            }
            status => {
                // A refusal is a complete answer: the connection can serve again.
                let _ = response.into_body().collect().await;
                self.node.checkin(sender);
                if status == StatusCode::NOT_FOUND {
                    // The sandbox does not run there (the node restarted, or it was stopped).
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("sandbox {} does not run on node {}", self.id, self.node.id),
                    ))
                } else {
                    Err(std::io::Error::other(format!(
                        "node {} answered {status} to an agent tunnel",
                        self.node.id
                    )))
                }
            }
        }
    }
}

/// What a replica knows about a node from the store and its last status.
#[derive(Debug, Clone)]
struct NodeView {
    record: NodeRecord,
    capacity: NodeCapacity,
    /// Sandboxes running at the last status this replica received, and when it came.
    running: HashSet<String>,
    status_at_ms: i64,
}

/// The run files as sent to a node. The egress CA bundle (the image's bundle plus the sandbox
/// CA) goes as the sandbox CA alone, and the node puts its own copy of the image's bundle
/// before it.
fn wire_run_files(files: &[RunFile]) -> Vec<WireRunFile> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca = files.iter().find(|f| f.name == sandpit_egress::CA_NAME);
    files
        .iter()
        .map(|f| match ca {
            Some(ca)
                if f.name == sandpit_egress::BUNDLE_NAME && f.contents.ends_with(&ca.contents) =>
            {
                WireRunFile {
                    name: f.name.clone(),
                    contents: b64.encode(&ca.contents),
                    after_image_ca_bundle: true,
                }
            }
            _ => WireRunFile {
                name: f.name.clone(),
                contents: b64.encode(&f.contents),
                after_image_ca_bundle: false,
            },
        })
        .collect()
}

/// The driver of a control-plane replica in cluster mode.
pub struct RemoteDriver {
    store: Arc<dyn Store>,
    tls: tokio_rustls::TlsConnector,
    nodes: Mutex<HashMap<String, NodeView>>,
    /// Sandboxes per node (refreshed from the store at each heartbeat, counted up at each
    /// placement in between).
    placed: Mutex<HashMap<String, u64>>,
    /// Node of each sandbox this replica looked up or placed.
    node_of: Mutex<HashMap<String, String>>,
    /// When this replica last started each sandbox (its node's status older than that cannot
    /// tell whether it runs).
    started_ms: Mutex<HashMap<String, i64>>,
    /// Connection pools by node id and address (a node that moves gets a new pool).
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
}

fn unavailable(node: &str, message: impl Into<String>) -> DriverError {
    DriverError::NodeUnavailable {
        node: node.to_owned(),
        message: message.into(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RemoteDriver {
    pub fn new(store: Arc<dyn Store>, tls: Arc<rustls::ClientConfig>) -> Self {
        RemoteDriver {
            store,
            tls: tokio_rustls::TlsConnector::from(tls),
            nodes: Mutex::default(),
            placed: Mutex::default(),
            node_of: Mutex::default(),
            started_ms: Mutex::default(),
            pools: Mutex::default(),
        }
    }

    fn is_down(record: &NodeRecord, now: i64) -> bool {
        now - record.last_heartbeat_ms > DOWN_AFTER.as_millis() as i64
    }

    fn client(&self, record: &NodeRecord) -> NodeClient {
        let pool = lock(&self.pools)
            .entry((record.id.clone(), record.address.clone()))
            .or_default()
            .clone();
        NodeClient {
            id: record.id.clone(),
            address: record.address.clone(),
            tls: self.tls.clone(),
            pool,
        }
    }

    /// One heartbeat round: every node is asked for its status (concurrently); answers are
    /// recorded in the store; the views are refreshed from the store.
    pub async fn heartbeat(&self) {
        let records = match self.store.list_nodes().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %sandpit_protocol::ErrorChain(&e), "listing nodes");
                return;
            }
        };
        let polls = records.iter().map(|record| async move {
            let client = self.client(record);
            let answer = tokio::time::timeout(
                HEARTBEAT_EVERY,
                client.call::<NodeStatus>(Method::GET, "/status", None),
            )
            .await;
            match answer {
                Ok(Ok(Ok(status))) if status.node_id == record.id => Some(status),
                _ => None,
            }
        });
        let statuses = futures::future::join_all(polls).await;
        let now = now_ms();
        for (record, status) in records.iter().zip(&statuses) {
            if let Some(status) = status {
                let capacity = serde_json::to_string(&status.capacity).unwrap_or_default();
                if let Err(e) = self.store.node_heartbeat(&record.id, now, &capacity).await {
                    tracing::warn!(node = %record.id, error = %sandpit_protocol::ErrorChain(&e), "recording a heartbeat");
                }
            }
        }
        let records = self.store.list_nodes().await.unwrap_or(records);
        let counts = self.store.node_sandbox_counts().await.unwrap_or_default();
        let mut views = lock(&self.nodes);
        for record in records {
            let status = statuses
                .iter()
                .flatten()
                .find(|s| s.node_id == record.id)
                .cloned();
            let previous = views.remove(&record.id);
            let capacity = serde_json::from_str(&record.capacity).unwrap_or_default();
            let view = match (status, previous) {
                (Some(status), _) => NodeView {
                    record,
                    capacity: status.capacity,
                    running: status.running.into_iter().collect(),
                    status_at_ms: now,
                },
                (None, Some(previous)) => NodeView {
                    record,
                    capacity,
                    ..previous
                },
                (None, None) => NodeView {
                    record,
                    capacity,
                    running: HashSet::new(),
                    status_at_ms: 0,
                },
            };
            views.insert(view.record.id.clone(), view);
        }
        *lock(&self.placed) = counts.into_iter().collect();
    }

    /// Heartbeats until `stop` says so.
    pub async fn heartbeat_forever(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.heartbeat().await,
                _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => return,
            }
        }
    }

    /// `GET /v1/nodes`: every node with its state and sandbox count.
    pub async fn list(&self) -> sandpit_store::Result<Vec<NodeInfo>> {
        let records = self.store.list_nodes().await?;
        let counts: HashMap<String, u64> = self
            .store
            .node_sandbox_counts()
            .await?
            .into_iter()
            .collect();
        let now = now_ms();
        Ok(records
            .into_iter()
            .map(|r| NodeInfo {
                state: if Self::is_down(&r, now) {
                    NodeState::Down
                } else {
                    NodeState::Ready
                },
                capacity: serde_json::from_str(&r.capacity).unwrap_or_default(),
                sandboxes: counts.get(&r.id).copied().unwrap_or(0),
                last_heartbeat_at: ms_timestamp(r.last_heartbeat_ms),
                id: r.id,
                address: r.address,
            })
            .collect())
    }

    /// The node of sandbox `id`, from this replica's memory or the store.
    async fn placement(&self, id: &str) -> Result<Option<String>, DriverError> {
        if let Some(node) = lock(&self.node_of).get(id) {
            return Ok(Some(node.clone()));
        }
        let node = self.store.sandbox_node(id).await.map_err(|e| {
            unavailable("?", format!("store: {}", sandpit_protocol::ErrorChain(&e)))
        })?;
        if let Some(node) = &node {
            lock(&self.node_of).insert(id.to_owned(), node.clone());
        }
        Ok(node)
    }

    /// The node record of `node`, fresh from the store when this replica has no view of it.
    async fn record(&self, node: &str) -> Result<NodeRecord, DriverError> {
        if let Some(view) = lock(&self.nodes).get(node) {
            return Ok(view.record.clone());
        }
        self.heartbeat().await;
        lock(&self.nodes)
            .get(node)
            .map(|v| v.record.clone())
            .ok_or_else(|| unavailable(node, "the node is not registered"))
    }

    /// The ready node with the most free room for a new sandbox of `image`: the lowest share
    /// of its `maxSandboxes` placed, nodes that have the image first.
    fn place(&self, image: &str) -> Option<String> {
        let now = now_ms();
        let views = lock(&self.nodes);
        let mut placed = lock(&self.placed);
        let best = views
            .values()
            .filter(|v| !Self::is_down(&v.record, now))
            .map(|v| {
                let count = placed.get(&v.record.id).copied().unwrap_or(0);
                let max = v.capacity.max_sandboxes.max(1);
                let has_image = v.capacity.images.iter().any(|i| i == image);
                // Full nodes only when every node is full.
                let full = count >= max;
                (
                    (full, !has_image, count * 1000 / max, count),
                    v.record.id.clone(),
                )
            })
            .min()?
            .1;
        *placed.entry(best.clone()).or_default() += 1;
        Some(best)
    }

    fn node_down(&self, node: &str) -> bool {
        let now = now_ms();
        lock(&self.nodes)
            .get(node)
            .is_some_and(|v| Self::is_down(&v.record, now))
    }

    async fn call_on<T: DeserializeOwned>(
        &self,
        node: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, DriverError> {
        let record = self.record(node).await?;
        match self.client(&record).call(method, path, body).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((_, error))) => Err(match error.kind {
                NodeErrorKind::InvalidSpec => DriverError::InvalidSpec(error.message),
                NodeErrorKind::ImageNotFound => DriverError::ImageNotFound(error.message),
                NodeErrorKind::Unsupported => DriverError::Unsupported(error.message),
                _ => DriverError::StartFailed {
                    id: node.to_owned(),
                    message: format!("node {node}: {}", error.message),
                },
            }),
            Err(message) => Err(unavailable(node, message)),
        }
    }
}

#[async_trait::async_trait]
impl Driver for RemoteDriver {
    async fn start(&self, spec: &SandboxSpec) -> Result<Started, DriverError> {
        if !spec.mounts.is_empty() {
            return Err(DriverError::Unsupported(
                "bucket mounts are not supported on cluster nodes yet".into(),
            ));
        }
        let node = match self.placement(&spec.id).await? {
            Some(node) => node,
            None => {
                if lock(&self.nodes).is_empty() {
                    self.heartbeat().await;
                }
                let node = self
                    .place(&spec.image)
                    .ok_or_else(|| unavailable("none", "no node is ready"))?;
                self.store
                    .set_sandbox_node(&spec.id, Some(&node))
                    .await
                    .map_err(|e| {
                        unavailable(
                            &node,
                            format!("store: {}", sandpit_protocol::ErrorChain(&e)),
                        )
                    })?;
                lock(&self.node_of).insert(spec.id.clone(), node.clone());
                node
            }
        };
        if self.node_down(&node) {
            return Err(unavailable(
                &node,
                format!("no heartbeat for more than {} s", DOWN_AFTER.as_secs()),
            ));
        }
        let request = StartRequest {
            image: spec.image.clone(),
            limits: spec.limits.clone(),
            env: spec.env.clone(),
            ephemeral: spec.ephemeral,
            network: spec.network.clone(),
            run_files: wire_run_files(&spec.run_files),
        };
        let body =
            serde_json::to_vec(&request).map_err(|e| DriverError::InvalidSpec(e.to_string()))?;
        let started: StartResponse = self
            .call_on(
                &node,
                Method::POST,
                &format!("/sandboxes/{}/start", spec.id),
                Some(body),
            )
            .await?;
        lock(&self.started_ms).insert(spec.id.clone(), now_ms());
        let record = self.record(&node).await?;
        Ok(Started {
            agent: Arc::new(RemoteConnector {
                node: self.client(&record),
                id: spec.id.clone(),
            }),
            pid: started.pid,
        })
    }

    async fn stop(&self, id: &str) -> Result<(), DriverError> {
        let Some(node) = self.placement(id).await? else {
            return Ok(());
        };
        self.call_on::<()>(&node, Method::POST, &format!("/sandboxes/{id}/stop"), None)
            .await
    }

    async fn destroy(&self, id: &str) -> Result<(), DriverError> {
        let Some(node) = self.placement(id).await? else {
            return Ok(());
        };
        self.call_on::<()>(
            &node,
            Method::POST,
            &format!("/sandboxes/{id}/destroy"),
            None,
        )
        .await?;
        self.store.set_sandbox_node(id, None).await.map_err(|e| {
            unavailable(
                &node,
                format!("store: {}", sandpit_protocol::ErrorChain(&e)),
            )
        })?;
        lock(&self.node_of).remove(id);
        lock(&self.started_ms).remove(id);
        if let Some(count) = lock(&self.placed).get_mut(&node) {
            *count = count.saturating_sub(1);
        }
        Ok(())
    }

    async fn is_running(&self, id: &str) -> bool {
        let Ok(Some(node)) = self.placement(id).await else {
            return false;
        };
        let started = lock(&self.started_ms).get(id).copied().unwrap_or(0);
        {
            let views = lock(&self.nodes);
            if let Some(view) = views.get(&node)
                && view.status_at_ms > started
            {
                return view.running.contains(id);
            }
        }
        matches!(
            self.call_on::<RunningResponse>(
                &node,
                Method::GET,
                &format!("/sandboxes/{id}/running"),
                None
            )
            .await,
            Ok(RunningResponse { running: true })
        )
    }

    /// Nodes reconcile themselves when they start; a control-plane replica starting must not
    /// stop what other replicas run.
    async fn reconcile(&self) -> Result<Vec<String>, DriverError> {
        self.heartbeat().await;
        Ok(Vec::new())
    }

    async fn node_of(&self, id: &str) -> Option<String> {
        self.placement(id).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, contents: &[u8]) -> RunFile {
        RunFile {
            name: name.to_owned(),
            contents: contents.to_vec(),
        }
    }

    #[test]
    fn the_ca_bundle_travels_as_the_sandbox_ca_only() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let ca = b"-----BEGIN CERTIFICATE-----\nsandbox\n-----END CERTIFICATE-----\n";
        let mut bundle = b"image roots\n".repeat(1000);
        bundle.extend_from_slice(ca);
        let wire = wire_run_files(&[
            file(sandpit_egress::CA_NAME, ca),
            file(sandpit_egress::BUNDLE_NAME, &bundle),
            file("other", b"x"),
        ]);
        assert_eq!(wire.len(), 3);
        assert!(!wire[0].after_image_ca_bundle);
        assert_eq!(wire[0].contents, b64.encode(ca));
        assert!(wire[1].after_image_ca_bundle);
        assert_eq!(wire[1].contents, b64.encode(ca));
        assert!(!wire[2].after_image_ca_bundle);

        // A bundle that does not end with the CA goes whole, as does one without a CA file.
        let odd = wire_run_files(&[
            file(sandpit_egress::CA_NAME, ca),
            file(sandpit_egress::BUNDLE_NAME, b"something else"),
        ]);
        assert!(!odd[1].after_image_ca_bundle);
        assert_eq!(odd[1].contents, b64.encode(b"something else"));
        let alone = wire_run_files(&[file(sandpit_egress::BUNDLE_NAME, &bundle)]);
        assert!(!alone[0].after_image_ca_bundle);
        assert_eq!(alone[0].contents, b64.encode(&bundle));
    }
}
