//! `/ws`: the multiplexed WebSocket control transport.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::harness::Agent;
use super::pty::{Ws, connect};

const WAIT: Duration = Duration::from_secs(20);

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON frame.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame in time")
            .expect("socket closed")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Frames until the final frame of request `id` (a `response` with done, or an `error`).
async fn until_done(ws: &mut Ws, id: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = next(ws).await;
        let last = f["id"] == id && (f["type"] == "error" || f["done"] == true);
        frames.push(f);
        if last {
            return frames;
        }
    }
}

fn request(id: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut f = json!({"type": "request", "id": id, "method": method, "path": path});
    if let Some(body) = body {
        f["body"] = body;
    }
    f
}

#[tokio::test]
async fn requests_are_routed_like_http() {
    let a = Agent::start();
    for path in ["/ws", "/api/ws"] {
        let mut ws = connect(&a, path).await.unwrap();
        send(&mut ws, request("p", "GET", "/api/ping", None)).await;
        let f = next(&mut ws).await;
        assert_eq!(f["type"], "response");
        assert_eq!(f["id"], "p");
        assert_eq!(f["status"], 200);
        assert_eq!(f["done"], true);
        assert_eq!(f["body"]["status"], "healthy");
    }
    let mut ws = connect(&a, "/ws").await.unwrap();
    send(
        &mut ws,
        request(
            "e",
            "POST",
            "/api/execute",
            Some(json!({"command": "echo hi; (exit 2)", "sessionId": "w"})),
        ),
    )
    .await;
    let f = next(&mut ws).await;
    assert_eq!(f["status"], 200);
    assert_eq!(f["body"]["stdout"], "hi\n");
    assert_eq!(f["body"]["exitCode"], 2);
    // Errors of the API keep their status and envelope.
    send(
        &mut ws,
        request("v", "POST", "/api/execute", Some(json!({"command": ""}))),
    )
    .await;
    let f = next(&mut ws).await;
    assert_eq!(f["status"], 400);
    assert_eq!(f["body"]["code"], "VALIDATION_FAILED");
    send(&mut ws, request("n", "GET", "/api/nope", None)).await;
    let f = next(&mut ws).await;
    assert_eq!(f["status"], 404);
    assert_eq!(f["done"], true);
}

#[tokio::test]
async fn sse_answers_become_stream_frames() {
    let a = Agent::start();
    let mut ws = connect(&a, "/ws").await.unwrap();
    send(
        &mut ws,
        request(
            "s",
            "POST",
            "/api/execute/stream",
            Some(json!({"command": "echo one; echo two >&2; (exit 4)"})),
        ),
    )
    .await;
    let frames = until_done(&mut ws, "s").await;
    let (last, streamed) = frames.split_last().unwrap();
    assert_eq!(last["type"], "response");
    assert_eq!(last["status"], 200);
    assert!(last.get("body").is_none());
    let events: Vec<Value> = streamed
        .iter()
        .map(|f| {
            assert_eq!(f["type"], "stream");
            serde_json::from_str(f["data"].as_str().unwrap()).unwrap()
        })
        .collect();
    assert_eq!(events.first().unwrap()["type"], "start");
    let complete = events.last().unwrap();
    assert_eq!(complete["type"], "complete");
    assert_eq!(complete["exitCode"], 4);
    let text = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text("stdout"), "one\n");
    assert_eq!(text("stderr"), "two\n");
}

#[tokio::test]
async fn requests_multiplex_and_cancel_stops_a_stream() {
    let a = Agent::start();
    let mut ws = connect(&a, "/ws").await.unwrap();
    send(
        &mut ws,
        request(
            "slow",
            "POST",
            "/api/execute/stream",
            Some(json!({"command": "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done", "sessionId": "loop"})),
        ),
    )
    .await;
    // Wait for the stream to be under way.
    loop {
        let f = next(&mut ws).await;
        if f["id"] == "slow" && f["data"].as_str().is_some_and(|d| d.contains("tick")) {
            break;
        }
    }
    // Another request answers while the stream is open.
    send(&mut ws, request("fast", "GET", "/api/ping", None)).await;
    loop {
        let f = next(&mut ws).await;
        if f["id"] == "fast" {
            assert_eq!(f["status"], 200);
            break;
        }
        assert_eq!(f["id"], "slow");
    }
    send(&mut ws, json!({"type": "cancel", "id": "slow"})).await;
    // After the cancel, at most the frames already in flight arrive, then silence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_millis(50), ws.next()).await {}
    let quiet = tokio::time::timeout(Duration::from_millis(1500), ws.next()).await;
    assert!(quiet.is_err(), "frames after cancel: {quiet:?}");
    // The connection still serves requests.
    send(&mut ws, request("after", "GET", "/api/ping", None)).await;
    assert_eq!(next(&mut ws).await["id"], "after");
}

#[tokio::test]
async fn concurrent_requests_do_not_wait_for_each_other() {
    let a = Agent::start();
    let mut ws = connect(&a, "/ws").await.unwrap();
    let slow = json!({"command": "sleep 2; echo late", "sessionId": "a"});
    send(&mut ws, request("slow", "POST", "/api/execute", Some(slow))).await;
    let fast = json!({"command": "echo early", "sessionId": "b"});
    send(&mut ws, request("fast", "POST", "/api/execute", Some(fast))).await;
    let first = next(&mut ws).await;
    assert_eq!(first["id"], "fast");
    assert_eq!(first["body"]["stdout"], "early\n");
    let second = next(&mut ws).await;
    assert_eq!(second["id"], "slow");
    assert_eq!(second["body"]["stdout"], "late\n");
}

#[tokio::test]
async fn bad_frames_get_protocol_errors() {
    let a = Agent::start();
    let mut ws = connect(&a, "/ws").await.unwrap();
    ws.send(Message::Text("{nope".into())).await.unwrap();
    let f = next(&mut ws).await;
    assert_eq!(f["type"], "error");
    assert_eq!(f["code"], "PARSE_ERROR");
    assert_eq!(f["status"], 400);
    send(&mut ws, json!({"type": "response", "id": "x"})).await;
    let f = next(&mut ws).await;
    assert_eq!(f["code"], "INVALID_REQUEST");
    assert_eq!(f["id"], "x");
    send(
        &mut ws,
        json!({"type": "request", "id": "y", "method": "GET"}),
    )
    .await;
    let f = next(&mut ws).await;
    assert_eq!(f["code"], "INVALID_REQUEST");
    send(&mut ws, request("z", "GET", "no-slash", None)).await;
    let f = next(&mut ws).await;
    assert_eq!(f["code"], "INVALID_REQUEST");
    assert_eq!(f["id"], "z");
    // Still usable.
    send(&mut ws, request("ok", "GET", "/api/version", None)).await;
    assert_eq!(next(&mut ws).await["status"], 200);
}
