//! Port readiness (`POST /api/port-watch`): tcp and http probes on loopback, the watched
//! process ending first, errors, the polling interval and stopping on disconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::harness::Agent;

/// A loopback port that nothing listens on (right now).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn start(agent: &Agent, body: Value) -> String {
    let r = agent.post("/api/process/start", body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["processId"].as_str().unwrap().to_owned()
}

/// Serves every connection one fixed HTTP answer; counts connections.
async fn fixed_http(listener: TcpListener, status: &'static str, count: Arc<AtomicUsize>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        count.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let _ = conn.write_all(answer.as_bytes()).await;
        });
    }
}

#[tokio::test]
async fn tcp_mode_is_ready_once_something_listens() {
    let agent = Agent::start();
    let port = free_port();
    let mut s = agent
        .sse(
            "/api/port-watch",
            json!({"port": port, "mode": "tcp", "interval": 100}),
        )
        .await;
    let first = s.next().await.unwrap();
    assert_eq!(first, json!({"type": "watching", "port": port}));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("no ready event")
        .unwrap();
    assert_eq!(ready, json!({"type": "ready", "port": port}));
    assert!(s.next().await.is_none());
    s.assert_framing();
}

#[tokio::test]
async fn http_mode_waits_for_a_server_started_as_a_process() {
    let agent = Agent::start();
    let port = free_port();
    let id = start(
        &agent,
        json!({"command": format!("exec python3 -m http.server {port} --bind 127.0.0.1")}),
    )
    .await;
    let events = tokio::time::timeout(
        Duration::from_secs(30),
        agent.sse_all(
            "/api/port-watch",
            json!({"port": port, "mode": "http", "path": "/", "processId": id, "interval": 100}),
        ),
    )
    .await
    .expect("port never became ready");
    assert_eq!(events[0]["type"], "watching");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["type"], "ready");
    assert_eq!(events[1]["statusCode"], 200);
    // A status outside the default range is ready only when asked for.
    let events = agent
        .sse_all(
            "/api/port-watch",
            json!({"port": port, "path": "/missing", "statusMin": 404, "statusMax": 404}),
        )
        .await;
    assert_eq!(events[1]["statusCode"], 404);
    let r = agent.raw("DELETE", &format!("/api/process/{id}"), "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_process_that_exits_first_ends_the_watch() {
    let agent = Agent::start();
    let port = free_port();
    let id = start(&agent, json!({"command": "sleep 0.5; exit 7"})).await;
    let events = tokio::time::timeout(
        Duration::from_secs(15),
        agent.sse_all(
            "/api/port-watch",
            json!({"port": port, "mode": "tcp", "processId": id, "interval": 100}),
        ),
    )
    .await
    .expect("watch did not end");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["watching", "process_exited"]);
    assert_eq!(events[1]["exitCode"], 7);
}

#[tokio::test]
async fn bad_watches_end_with_an_error_event() {
    let agent = Agent::start();
    for (body, text) in [
        (json!({"port": 80, "mode": "tcp"}), "Invalid port"),
        (json!({"port": 70000}), "Invalid port"),
        (json!({"port": 8080, "mode": "udp"}), "Invalid mode"),
        (
            json!({"port": 8080, "statusMin": 500, "statusMax": 200}),
            "status range",
        ),
    ] {
        let events = agent.sse_all("/api/port-watch", body.clone()).await;
        assert_eq!(events.len(), 1, "{body}: {events:?}");
        assert_eq!(events[0]["type"], "error");
        assert!(
            events[0]["error"].as_str().unwrap().contains(text),
            "{events:?}"
        );
    }
    let events = agent
        .sse_all(
            "/api/port-watch",
            json!({"port": free_port(), "mode": "tcp", "processId": "nope"}),
        )
        .await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["watching", "error"]);
    assert!(events[1]["error"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn polling_follows_the_interval_and_stops_when_the_client_leaves() {
    let agent = Agent::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(fixed_http(
        listener,
        "503 Service Unavailable",
        count.clone(),
    ));
    // Asking for 1 ms polls every 100 ms: about 10 probes a second, not 1000.
    let mut s = agent
        .sse("/api/port-watch", json!({"port": port, "interval": 1}))
        .await;
    assert_eq!(s.next().await.unwrap()["type"], "watching");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let polled = count.load(Ordering::SeqCst);
    assert!((3..=30).contains(&polled), "{polled} probes in 1.5 s");
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_drop = count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(count.load(Ordering::SeqCst), after_drop, "still polling");
}

#[tokio::test]
async fn long_intervals_are_capped_at_ten_seconds() {
    let agent = Agent::start();
    let port = free_port();
    let started = Instant::now();
    let mut s = agent
        .sse(
            "/api/port-watch",
            json!({"port": port, "mode": "tcp", "interval": 600000}),
        )
        .await;
    assert_eq!(s.next().await.unwrap()["type"], "watching");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("the interval was not capped")
        .unwrap();
    assert_eq!(ready["type"], "ready");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(9), "{took:?}");
}
