//! Upstream connections of the preview proxy: HTTP/1.1 over the agent's `/tunnel/{port}`
//! upgrade, kept alive and pooled by hyper's client.
//!
//! A pooled connection is named by the URI authority `r{run}.sandpit:{port}`: one pool per run
//! of a sandbox and port, so a connection can never outlive the run it was made for (the
//! agent's death closes it, and a new run has a new name). The connector finds the
//! [`AgentClient`] of a run in a small map filled by the proxy before each request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::{StatusCode, Uri};
use hyper::upgrade::Upgraded;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioExecutor;

use crate::agent_client::{AgentClient, AgentError};

/// Runs remembered by the connector before the map is cleared (it refills on demand).
const MAX_RUNS: usize = 4096;

/// Why no tunnel was opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The agent answered instead of upgrading (nothing listens on the port, ...).
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    #[error("sandbox agent is not reachable: {0}")]
    Agent(String),
    #[error("unknown sandbox run {0}")]
    UnknownRun(String),
}

/// The pooled HTTP client and the sockets of the runs it may connect to.
pub(super) struct Upstream {
    sockets: Arc<Mutex<HashMap<u64, AgentClient>>>,
    client: Client<Connector, Body>,
}

impl Upstream {
    pub(super) fn new() -> Self {
        let sockets = Arc::new(Mutex::new(HashMap::new()));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(Connector {
                sockets: sockets.clone(),
            });
        Upstream { sockets, client }
    }

    /// The URI of `path_and_query` on `port` of run `run`, whose agent `agent` connects to.
    pub(super) fn uri(
        &self,
        run: u64,
        agent: &AgentClient,
        port: u16,
        path_and_query: &str,
    ) -> Uri {
        {
            let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
            if !sockets.contains_key(&run) {
                if sockets.len() >= MAX_RUNS {
                    sockets.clear();
                }
                sockets.insert(run, agent.clone());
            }
        }
        let uri = format!("http://r{run}.sandpit:{port}{path_and_query}");
        uri.parse()
            .unwrap_or_else(|_| Uri::from_static("http://invalid.sandpit/"))
    }

    pub(super) fn client(&self) -> &Client<Connector, Body> {
        &self.client
    }
}

/// Opens tunnels for hyper's pool.
#[derive(Clone)]
pub(super) struct Connector {
    sockets: Arc<Mutex<HashMap<u64, AgentClient>>>,
}

impl tower::Service<Uri> for Connector {
    type Response = TunnelIo;
    type Error = TunnelError;
    type Future = Pin<Box<dyn Future<Output = Result<TunnelIo, TunnelError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TunnelError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = uri
            .host()
            .and_then(|h| h.strip_prefix('r'))
            .and_then(|h| h.strip_suffix(".sandpit"))
            .and_then(|r| r.parse::<u64>().ok())
            .zip(uri.port_u16());
        let socket = target.and_then(|(run, _)| {
            let sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
            sockets.get(&run).cloned()
        });
        Box::pin(async move {
            match (socket, target) {
                (Some(agent), Some((_, port))) => open(&agent, port).await.map(TunnelIo),
                _ => Err(TunnelError::UnknownRun(uri.to_string())),
            }
        })
    }
}

/// Asks `agent` for a byte pipe to `port` inside its sandbox.
pub(super) async fn open(agent: &AgentClient, port: u16) -> Result<Upgraded, TunnelError> {
    let path = format!("/tunnel/{port}");
    agent
        .upgrade(&path, "sandpit-tunnel")
        .await
        .map_err(|e| match e {
            AgentError::Refused { status, message } => TunnelError::Refused { status, message },
            e => TunnelError::Agent(e.chain()),
        })
}

/// An open tunnel as hyper's pool sees it.
pub(super) struct TunnelIo(Upgraded);

impl Connection for TunnelIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}
