//! `GET /tunnel/{port}` with `Upgrade: sandpit-tunnel`: the connection becomes a raw byte pipe
//! to `127.0.0.1:{port}` (or `[::1]:{port}`) inside the sandbox's network namespace. The
//! server's preview proxy reaches sandbox ports this way, so sandboxes need no host-visible
//! address.
//!
//! The TCP connection is made before the `101` is sent: when nothing listens, the caller gets
//! a `502 SERVICE_NOT_RESPONDING` naming the port instead of a pipe that closes at once.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::Router;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use sandpit_protocol::ErrorCode;
use tokio::net::TcpStream;

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
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(port, error = %e, "tunnel ended");
                }
            }
            Err(e) => tracing::debug!(port, error = %e, "tunnel upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(response)
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
