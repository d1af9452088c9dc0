//! Preview proxy overhead: a small `GET` through a preview URL (client → server's Host-routed
//! proxy → agent tunnel → Node server inside the sandbox) against a direct connection to the
//! same Node program on the host's loopback, and requests/s through the proxy with several
//! keep-alive connections from a hyper load generator. All traffic stays on 127.0.0.1.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sandpit_client::protocol::control::CreateSandboxRequest;
use sandpit_client::{Client, ExposeOptions, PortMode, PortWaitOptions, ProcessOptions};
use tokio::net::TcpStream;

use crate::stats::Samples;

/// The server program, run both inside the sandbox and on the host: a 2-byte answer per
/// request, keep-alive. `node server.js PORT HOST`.
const SERVER_JS: &str = r#"
const http = require('http');
const [port, host] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
  res.end('ok');
});
server.keepAliveTimeout = 60000;
server.listen(Number(port), host);
"#;

/// The port the server listens on inside the sandbox.
const SANDBOX_PORT: u16 = 8080;
/// No single request may take longer than this (a stuck proxy fails the run, never hangs it).
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

pub struct PreviewBench {
    /// One keep-alive connection, sequential `GET /` through the preview proxy.
    pub proxy: Samples,
    /// The same through a direct loopback connection to the same program on the host.
    pub direct: Samples,
    pub proxy_load: Load,
    pub direct_load: Load,
    pub connections: usize,
}

/// Requests/s of a fixed-duration run with many connections.
pub struct Load {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl Load {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Where to send requests: a loopback address plus the Host header that selects the target.
#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    host: String,
}

/// Measures in a fresh sandbox `id` of the server at `server_addr`; `rootfs` provides the Node
/// binary for the host side, so both sides run the same program on the same runtime.
pub async fn measure(
    client: &Client,
    server_addr: std::net::SocketAddr,
    rootfs: &Path,
    id: &str,
    samples: usize,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<PreviewBench> {
    client
        .create(&CreateSandboxRequest {
            id: Some(id.to_owned()),
            keep_alive: Some(true),
            ..Default::default()
        })
        .await?;
    let sandbox = client.sandbox(id);
    sandbox
        .write_file("/workspace/server.js", SERVER_JS)
        .await?;
    let process = sandbox
        .start_process(
            &format!("node /workspace/server.js {SANDBOX_PORT} 0.0.0.0"),
            &ProcessOptions::default(),
        )
        .await?;
    process
        .wait_for_port(
            SANDBOX_PORT,
            &PortWaitOptions {
                mode: PortMode::Tcp,
                interval: Some(Duration::from_millis(50)),
                timeout: Some(Duration::from_secs(30)),
                ..Default::default()
            },
        )
        .await?;
    let exposed = sandbox
        .expose_port(SANDBOX_PORT, &ExposeOptions::default())
        .await?;
    let url = exposed.url.trim_end_matches('/');
    let host = url
        .strip_prefix("http://")
        .with_context(|| format!("unexpected preview URL {url}"))?
        .to_owned();
    let proxy = Target {
        addr: server_addr,
        host,
    };

    let host_server = HostServer::start(rootfs)?;
    let direct = Target {
        addr: host_server.addr,
        host: host_server.addr.to_string(),
    };

    let (proxy_samples, direct_samples) = latency(&proxy, &direct, samples).await?;
    let duration = Duration::from_secs(seconds);
    let proxy_load = load(&proxy, connections, duration).await;
    let direct_load = load(&direct, connections, duration).await;
    Ok(PreviewBench {
        proxy: proxy_samples,
        direct: direct_samples,
        proxy_load,
        direct_load,
        connections,
    })
}

/// Alternates one request on each of two keep-alive connections, so both see the same
/// machine load; warms both up first.
async fn latency(proxy: &Target, direct: &Target, n: usize) -> anyhow::Result<(Samples, Samples)> {
    let mut to_proxy = connect(proxy).await?;
    let mut to_direct = connect(direct).await?;
    for _ in 0..50 {
        get(&mut to_proxy, proxy).await?;
        get(&mut to_direct, direct).await?;
    }
    let (mut p, mut d) = (Samples::default(), Samples::default());
    for _ in 0..n {
        let t = Instant::now();
        get(&mut to_proxy, proxy).await?;
        p.push(t.elapsed());
        let t = Instant::now();
        get(&mut to_direct, direct).await?;
        d.push(t.elapsed());
    }
    Ok((p, d))
}

/// `connections` keep-alive connections, each sending requests back to back for `duration`.
async fn load(target: &Target, connections: usize, duration: Duration) -> Load {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (target, ok, errors, stop, first_error) = (
                target.clone(),
                ok.clone(),
                errors.clone(),
                stop.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) {
                    let result = match &mut conn {
                        Some(sender) => get(sender, &target).await,
                        None => match connect(&target).await {
                            Ok(sender) => {
                                conn = Some(sender);
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                    };
                    match result {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert_with(|| format!("{e:#}"));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    let first_error = first_error.lock().ok().and_then(|mut e| e.take());
    Load {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        first_error,
    }
}

async fn connect(target: &Target) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One `GET /` on the connection; the answer must be `200 ok`.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, target: &Target) -> anyhow::Result<()> {
    let request = http::Request::get("/")
        .header(http::header::HOST, &target.host)
        .body(Empty::new())?;
    let exchange = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .context("no answer within 10 s")??;
    if status != http::StatusCode::OK || body.as_ref() != b"ok" {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// The server program on the host's loopback, killed on drop.
struct HostServer {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl HostServer {
    fn start(rootfs: &Path) -> anyhow::Result<HostServer> {
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("server.js");
        std::fs::write(&script, SERVER_JS)?;
        let image_node = rootfs.join("usr/local/bin/node");
        let node = if image_node.is_file() {
            image_node
        } else {
            "node".into()
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&node)
            .arg(&script)
            .arg(port.to_string())
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", node.display()))?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let server = HostServer {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("the host Node server did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
