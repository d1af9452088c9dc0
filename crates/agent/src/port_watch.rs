//! Port readiness (`POST /api/port-watch`, reference §2.8): an SSE stream that says `watching`,
//! polls a loopback port (HTTP status in a range, or a TCP connect) every `interval` ms, and
//! ends with `ready`, `process_exited` (the watched process ended first) or `error`. Polling
//! stops when the client goes away.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use sandpit_protocol::container::{PortWatchEvent, PortWatchEventKind, PortWatchRequest};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::process::Processes;
use crate::sse;

/// Timeout of one probe (connect plus HTTP answer).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts watching: the returned channel yields the framed SSE events. Invalid input is one
/// `error` event, never an error answer (reference §2.8).
pub fn start(processes: Arc<Processes>, req: PortWatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(sse::CHANNEL_CAPACITY);
    tokio::spawn(run(processes, req, tx));
    rx
}

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp,
    Http {
        path: PathAndQuery,
        min: u16,
        max: u16,
    },
}

/// A validated watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub port: u16,
    pub probe: Probe,
    pub interval: Duration,
    pub process_id: Option<String>,
}

/// The polling interval: `interval` ms clamped to 100..=10000, 500 by default.
pub fn interval(ms: Option<i64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(500).clamp(100, 10_000) as u64)
}

/// Checks a request; the error is the text of the `error` event.
pub fn validate(req: &PortWatchRequest) -> Result<Watch, String> {
    let port = u16::try_from(req.port)
        .ok()
        .filter(|p| *p >= 1024)
        .ok_or_else(|| format!("Invalid port {}: must be between 1024 and 65535", req.port))?;
    let probe = match req.mode.as_deref().unwrap_or("http") {
        "tcp" => Probe::Tcp,
        "http" => {
            let raw = req.path.as_deref().unwrap_or("/");
            let raw = if raw.starts_with('/') {
                raw.to_owned()
            } else {
                format!("/{raw}")
            };
            let path = PathAndQuery::try_from(raw.as_str())
                .map_err(|e| format!("Invalid path {raw:?}: {e}"))?;
            let status = |v: Option<i64>, default: u16, field: &str| {
                u16::try_from(v.unwrap_or(i64::from(default)))
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| format!("Invalid {field}: must be an HTTP status (100-599)"))
            };
            let min = status(req.status_min, 200, "statusMin")?;
            let max = status(req.status_max, 399, "statusMax")?;
            if min > max {
                return Err(format!(
                    "Invalid status range: statusMin {min} > statusMax {max}"
                ));
            }
            Probe::Http { path, min, max }
        }
        other => return Err(format!("Invalid mode {other:?}: use \"http\" or \"tcp\"")),
    };
    Ok(Watch {
        port,
        probe,
        interval: interval(req.interval),
        process_id: req.process_id.clone(),
    })
}

fn event(kind: PortWatchEventKind, port: i64) -> PortWatchEvent {
    PortWatchEvent {
        kind,
        port,
        status_code: None,
        exit_code: None,
        error: None,
    }
}

fn error_event(port: i64, error: String) -> PortWatchEvent {
    PortWatchEvent {
        error: Some(error),
        ..event(PortWatchEventKind::Error, port)
    }
}

async fn run(processes: Arc<Processes>, req: PortWatchRequest, tx: mpsc::Sender<Bytes>) {
    let port = req.port;
    let send = |e: PortWatchEvent| {
        let tx = tx.clone();
        async move { tx.send(sse::frame(&e)).await.is_ok() }
    };
    let watch = match validate(&req) {
        Ok(w) => w,
        Err(e) => {
            send(error_event(port, e)).await;
            return;
        }
    };
    if !send(event(PortWatchEventKind::Watching, port)).await {
        return;
    }
    loop {
        let probed = tokio::select! {
            r = probe(watch.port, &watch.probe) => r,
            () = tx.closed() => return,
        };
        if let Some(status_code) = probed {
            send(PortWatchEvent {
                status_code,
                ..event(PortWatchEventKind::Ready, port)
            })
            .await;
            return;
        }
        if let Some(id) = &watch.process_id {
            match processes.status(id) {
                None => {
                    send(error_event(port, format!("Process not found: {id}"))).await;
                    return;
                }
                Some((status, exit_code)) if status.is_finished() => {
                    send(PortWatchEvent {
                        exit_code,
                        ..event(PortWatchEventKind::ProcessExited, port)
                    })
                    .await;
                    return;
                }
                Some(_) => {}
            }
        }
        tokio::select! {
            () = tokio::time::sleep(watch.interval) => {}
            () = tx.closed() => return,
        }
    }
}

/// One probe: `Some(status code)` (`Some(None)` in tcp mode) when ready.
async fn probe(port: u16, probe: &Probe) -> Option<Option<u16>> {
    tokio::time::timeout(PROBE_TIMEOUT, async {
        let stream = connect(port).await?;
        match probe {
            Probe::Tcp => Some(None),
            Probe::Http { path, min, max } => {
                let status = http_status(stream, port, path).await?;
                (*min..=*max).contains(&status).then_some(Some(status))
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Connects to the port on IPv4 loopback, else IPv6 loopback.
async fn connect(port: u16) -> Option<TcpStream> {
    match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => Some(s),
        Err(_) => TcpStream::connect(("::1", port)).await.ok(),
    }
}

async fn http_status(stream: TcpStream, port: u16, path: &PathAndQuery) -> Option<u16> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get(path.as_str())
        .header(http::header::HOST, format!("localhost:{port}"))
        .header(http::header::USER_AGENT, "sandpit-port-watch")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let status = sender
        .send_request(request)
        .await
        .ok()
        .map(|r| r.status().as_u16());
    // The body is not needed: dropping the connection is enough.
    conn.abort();
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(port: i64) -> PortWatchRequest {
        PortWatchRequest {
            port,
            ..PortWatchRequest::default()
        }
    }

    #[test]
    fn intervals_are_clamped() {
        assert_eq!(interval(None), Duration::from_millis(500));
        assert_eq!(interval(Some(1)), Duration::from_millis(100));
        assert_eq!(interval(Some(-5)), Duration::from_millis(100));
        assert_eq!(interval(Some(250)), Duration::from_millis(250));
        assert_eq!(interval(Some(60_000)), Duration::from_millis(10_000));
    }

    #[test]
    fn requests_are_validated() {
        assert!(validate(&req(80)).is_err());
        assert!(validate(&req(70000)).is_err());
        let w = validate(&req(8080)).unwrap();
        assert_eq!(w.port, 8080);
        assert!(matches!(
            w.probe,
            Probe::Http {
                min: 200,
                max: 399,
                ..
            }
        ));
        let mut r = req(8080);
        r.mode = Some("udp".into());
        assert!(validate(&r).is_err());
        r.mode = Some("http".into());
        r.path = Some("health".into());
        r.status_min = Some(204);
        r.status_max = Some(204);
        let w = validate(&r).unwrap();
        let Probe::Http { path, min, max } = w.probe else {
            panic!("http probe expected");
        };
        assert_eq!((path.as_str(), min, max), ("/health", 204, 204));
        r.status_min = Some(500);
        r.status_max = Some(200);
        assert!(validate(&r).is_err());
    }
}
