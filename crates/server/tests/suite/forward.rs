//! `/v1/sandboxes/{id}/api/*`: forwarding, header hygiene, streaming, limits, crashes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{TestServer, status_json};

#[tokio::test]
async fn first_call_creates_the_sandbox_and_forwards() {
    let ts = TestServer::start().await;
    let (s, b) = ts.exec("fresh", "echo hello").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], "echo hello");
    let (s, info) = ts.get("/v1/sandboxes/fresh").await;
    assert_eq!(s, 200);
    assert_eq!(info["state"], "running");
    let (s, b) = ts.get("/v1/sandboxes/fresh/api/ping").await;
    assert_eq!((s, b["message"].as_str()), (200, Some("pong")));
    assert_eq!(ts.driver.counters.starts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_caller_key_never_reaches_the_sandbox() {
    let ts = TestServer::start().await;
    let r = ts
        .req(Method::PUT, "/v1/sandboxes/hdr/api/echo?a=1&b=two")
        .header("x-custom", "kept")
        .header("connection", "x-hop")
        .header("x-hop", "dropped")
        .send()
        .await
        .unwrap();
    let (s, b) = status_json(r).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["method"], "PUT");
    assert_eq!(b["uri"], "/api/echo?a=1&b=two");
    let headers = b["headers"].as_object().unwrap();
    assert!(!headers.contains_key("authorization"), "{b}");
    assert!(!headers.contains_key("x-hop"), "{b}");
    assert_eq!(headers["x-sandbox-id"], "hdr");
    assert_eq!(headers["x-custom"], "kept");
    assert!(!b.to_string().contains(&ts.key));
}

#[tokio::test]
async fn sse_events_arrive_as_produced() {
    let ts = TestServer::start().await;
    ts.exec("sse", "warm up").await;
    let start = Instant::now();
    let r = ts
        .req(
            Method::POST,
            "/v1/sandboxes/sse/api/stream?n=3&delay_ms=800",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = start.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("\"i\":0"));
    assert!(
        first_at < Duration::from_millis(700),
        "first event after {first_at:?}: buffered?"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("\"i\":2"));
    assert!(start.elapsed() >= Duration::from_millis(1600));
}

#[tokio::test]
async fn bodies_stream_up_to_the_limit() {
    let ts = TestServer::start_with(|c| c.max_body_bytes = 2 << 20).await;
    let body = vec![b'x'; (2 << 20) - 10];
    let r = ts
        .req(Method::POST, "/v1/sandboxes/up/api/upload")
        .body(body)
        .send()
        .await
        .unwrap();
    let (s, b) = status_json(r).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["bytes"], (2 << 20) - 10);
    // Over the limit by Content-Length: answered from the header, nothing is forwarded.
    let head = format!(
        "POST /v1/sandboxes/up/api/upload HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        ts.key,
        (2 << 20) + 1
    );
    let answer = super::raw_request(ts.server.as_ref().unwrap().addr(), head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"PAYLOAD_TOO_LARGE\""), "{answer}");
    // A chunked body over the limit is cut off: the agent sees an error, never the whole body.
    let chunks =
        futures::stream::iter((0..3).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 1 << 20])));
    let r = ts
        .req(Method::POST, "/v1/sandboxes/up/api/upload")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (s, b) = status_json(r).await;
    assert!(s != 200 || b["bytes"] != 3 << 20, "{s} {b}");
    let (s, _) = ts.exec("up", "still alive").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_crashed_agent_is_restarted_transparently() {
    let ts = TestServer::start().await;
    ts.json(
        Method::POST,
        "/v1/sandboxes/crashy/api/write",
        json!({"path": "f", "content": "1"}),
    )
    .await;
    let internal = ts.driver.specs.lock().unwrap()[0].id.clone();
    ts.driver.crash(&internal);
    // Nothing listens any more: the call restarts the sandbox and goes through.
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes/crashy/api/read",
            json!({"path": "f"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["content"], "1", "same workspace after the restart");
    assert_eq!(ts.driver.counters.starts.load(Ordering::SeqCst), 2);
    assert_eq!(
        ts.driver.counters.stops.load(Ordering::SeqCst),
        1,
        "leftovers cleaned up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_first_calls_make_one_sandbox() {
    let ts = std::sync::Arc::new(TestServer::start().await);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let ts = ts.clone();
            tokio::spawn(async move { ts.exec("crowd", &format!("n{i}")).await })
        })
        .collect();
    for call in calls {
        let (s, b) = call.await.unwrap();
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(ts.driver.counters.starts.load(Ordering::SeqCst), 1);
    let (_, list) = ts.get("/v1/sandboxes").await;
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn websocket_upgrades_are_spliced() {
    let ts = TestServer::start().await;
    ts.exec("wsbox", "warm").await;
    let addr = ts.server.as_ref().unwrap().addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET /v1/sandboxes/wsbox/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ts.key
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed during handshake: {}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // One masked text frame "hi"; the echo comes back unmasked.
    let mask = [1u8, 2, 3, 4];
    let payload: Vec<u8> = b"hi"
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    tcp.write_all(&frame).await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, [0x81, 2, b'h', b'i']);
}

#[tokio::test]
async fn forwarded_errors_pass_through() {
    let ts = TestServer::start().await;
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes/fe/api/read",
            json!({"path": "/nope"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(b["code"], "FILE_NOT_FOUND");
}
