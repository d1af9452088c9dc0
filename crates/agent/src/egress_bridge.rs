//! The egress bridge: inside the sandbox, `127.0.0.1:3128` (what `HTTP_PROXY` names) is
//! spliced to the server's egress proxy, a Unix socket the host puts at
//! `/run/sandpit/egress.sock`. The sandbox has no route out in `none`/`allowlist` mode; this is
//! its only way to the proxy, which decides per request.
//!
//! Fails soft: without the socket (a host without an egress proxy) each connection is closed at
//! once and a line is logged (rate-limited); the agent itself keeps working.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sandpit_protocol::throttle::Throttle;
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// The egress proxy's socket inside the sandbox.
pub const SOCKET: &str = "/run/sandpit/egress.sock";

/// The bridge's warnings: any sandbox process can trigger them in a loop (connect to the
/// bridge while the proxy is gone, exhaust its fds), so they are rate-limited.
static WARNINGS: std::sync::LazyLock<Throttle> = std::sync::LazyLock::new(Throttle::default);

fn warn_allowed() -> bool {
    WARNINGS
        .allow(|suppressed| tracing::warn!(suppressed, "similar egress bridge warnings suppressed"))
}

/// Where the bridge listens and where it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub listen: SocketAddr,
    pub socket: PathBuf,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], sandpit_protocol::EGRESS_PROXY_PORT)),
            socket: PathBuf::from(SOCKET),
        }
    }
}

/// Binds the listener and serves in a background task. A bind failure is logged, not fatal.
pub async fn spawn(config: BridgeConfig) {
    match TcpListener::bind(config.listen).await {
        Ok(listener) => {
            tracing::info!(listen = %config.listen, socket = %config.socket.display(), "egress bridge");
            tokio::spawn(serve(listener, config.socket));
        }
        Err(err) => {
            tracing::warn!(listen = %config.listen, %err, "egress bridge not started");
        }
    }
}

/// Accepts forever; each connection is spliced to a new connection to `socket`.
pub async fn serve(listener: TcpListener, socket: PathBuf) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let socket = socket.clone();
                tokio::spawn(async move { bridge(client, &socket).await });
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                if warn_allowed() {
                    tracing::warn!(%err, "egress bridge accept failed");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn bridge(mut client: TcpStream, socket: &Path) {
    let _ = client.set_nodelay(true);
    let mut upstream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(err) => {
            if warn_allowed() {
                tracing::warn!(socket = %socket.display(), %err, "egress proxy unreachable; connection closed");
            }
            return;
        }
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
