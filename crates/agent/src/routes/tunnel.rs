//! `GET /tunnel/{port}` with `Upgrade: sandpit-tunnel`: the connection becomes a raw byte pipe
//! to `127.0.0.1:{port}` (or `[::1]:{port}`) inside the sandbox's network namespace. The
//! server's preview proxy reaches sandbox ports this way, so sandboxes need no host-visible
//! address.
//!
//! The TCP connection is made before the `101` is sent: when nothing listens, the caller gets
//! a `502 SERVICE_NOT_RESPONDING` naming the port instead of a pipe that closes at once.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use sandpit_protocol::ErrorCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::error::ApiError;
use crate::handler::{ApiResult, AppState};

/// The `Upgrade` protocol name of a tunnel.
pub const PROTOCOL: &str = "sandpit-tunnel";

/// `/tunnel/{port}`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/tunnel/{port}", get(handler))
}

async fn handler(Path(port): Path<String>, mut request: Request) -> ApiResult<Response> {
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidPort,
                format!("invalid port {port:?}"),
            ));
        }
    };
    let wants_tunnel = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !wants_tunnel {
        return Err(ApiError::validation(
            "upgrade",
            format!("expected `Upgrade: {PROTOCOL}`"),
        ));
    }
    let upstream = connect(port).await.map_err(|e| {
        ApiError::new(
            ErrorCode::ServiceNotResponding,
            format!("nothing is listening on port {port} inside the sandbox ({e})"),
        )
        .context("port", port)
    })?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => splice(TokioIo::new(upgraded), upstream, port).await,
            Err(e) => tracing::debug!(port, error = %e, "tunnel upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(response)
}

/// How long the server's side may be silent before the tunnel checks, without waiting for a
/// readiness event, whether it has ended (see [`splice`]).
const EOF_PROBE: Duration = Duration::from_millis(500);

/// Copies bytes both ways. When the sandbox's server ends its side (EOF), the tunnel is closed
/// whole, so the caller sees the end of an answer delimited by the connection's end (SSE with
/// `Connection: close`). When the caller ends its side first, the server's side is half-closed
/// and its answer still flows.
///
/// Under gVisor (runsc 20221219, netstack) the readiness event of a FIN that arrives right
/// after the last data is sometimes never delivered: the agent's socket sits in CLOSE_WAIT and
/// an awaited read never returns. So while the server's side is silent, a non-blocking read
/// every [`EOF_PROBE`] looks at the socket itself.
async fn splice<C>(client: C, upstream: TcpStream, port: u16)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let to_upstream = async {
        match tokio::io::copy(&mut client_read, &mut upstream_write).await {
            Ok(_) => {
                let _ = upstream_write.shutdown().await;
                std::future::pending::<()>().await;
            }
            Err(e) => tracing::debug!(port, error = %e, "tunnel: the caller's side failed"),
        }
    };
    let to_client = async {
        if let Err(e) = copy_probing(&mut upstream_read, &mut client_write).await {
            tracing::debug!(port, error = %e, "tunnel: the server's side failed");
        }
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        () = to_client => {}
        () = to_upstream => {}
    }
}

/// Copies `from` to `to` until EOF, reading directly (non-blocking) whenever `from` was silent
/// for [`EOF_PROBE`] (see [`splice`]).
async fn copy_probing<W>(from: &mut OwnedReadHalf, to: &mut W) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => read?,
            () = tokio::time::sleep(EOF_PROBE) => {
                let fd = from.as_ref().as_raw_fd();
                match nix::sys::socket::recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN | Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}

/// IPv4 loopback first, then IPv6 (servers bound to `localhost` may listen on `::1` only).
async fn connect(port: u16) -> io::Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = match TcpStream::connect(v4).await {
        Ok(s) => s,
        Err(e4) => match TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
            Ok(s) => s,
            Err(_) => return Err(e4),
        },
    };
    // Small requests and answers must not wait for a delayed ACK.
    stream.set_nodelay(true)?;
    Ok(stream)
}
