//! Command control end to end (real server, namespaces and agent): a timeout kills the command
//! on every route and transport (the file it would touch after the deadline never appears, the
//! answer is exit code 124 with a message, the session answers at once), `0` means no timeout,
//! a client that goes away stops its command, stdin reaches the command byte for byte, and
//! base64 output is byte-exact.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use super::e2e::Real;

/// The deadline the tests give commands that would run for 3 s.
const LIMIT_MS: u64 = 500;

/// How long a command that is killed at [`LIMIT_MS`] may take to answer (sleep dies on
/// SIGTERM at once; the rest is process start-up on a loaded machine).
const ANSWER_WITHIN: Duration = Duration::from_millis(2500);

fn api(id: &str, route: &str) -> String {
    format!("/v1/sandboxes/{id}/api/{route}")
}

/// POSTs `body` to the sandbox's agent route `route` (forwarded by the server).
async fn post(rs: &Real, id: &str, route: &str, body: Value) -> (u16, Value) {
    rs.call(Method::POST, &api(id, route), body).await
}

/// A real server with sandbox `id` created, or `None` where real sandboxes cannot run.
async fn real_with_sandbox(id: &str) -> Option<Real> {
    let rs = Real::start().await?;
    rs.ensure_sandbox(json!({ "id": id })).await;
    Some(rs)
}

/// The `data:` events of a finished SSE body.
fn sse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect()
}

async fn stream(rs: &Real, id: &str, body: Value) -> Vec<Value> {
    let r = rs
        .req_as(&rs.key, Method::POST, &api(id, "execute/stream"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    sse_events(&r.text().await.unwrap())
}

fn complete(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["type"] == "complete")
        .unwrap_or_else(|| panic!("no complete event in {events:?}"))
}

fn joined(events: &[Value], kind: &str) -> String {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

/// Checks the one timeout answer of a buffered call.
fn assert_timed_out(b: &Value) {
    assert_eq!(b["exitCode"], 124, "{b}");
    assert_eq!(b["timedOut"], true, "{b}");
    assert!(
        b["stderr"]
            .as_str()
            .unwrap()
            .contains(&format!("Command timed out after {LIMIT_MS}ms")),
        "{b}"
    );
}

/// Checks the one timeout answer of a stream.
fn assert_stream_timed_out(events: &[Value]) {
    let done = complete(events);
    assert_eq!(done["exitCode"], 124, "{events:?}");
    assert_eq!(done["timedOut"], true, "{events:?}");
    assert!(
        joined(events, "stderr").contains(&format!("Command timed out after {LIMIT_MS}ms")),
        "{events:?}"
    );
}

/// Which of `names` exist in /workspace (asked through a fresh sessionless command).
async fn existing(rs: &Real, id: &str, names: &[&str]) -> Vec<String> {
    let list = names.join(" ");
    let (s, b) = post(
        rs,
        id,
        "execute",
        json!({"command": format!("cd /workspace; for f in {list}; do [ -e $f ] && echo $f; done; true"),
               "sessionId": "__DISABLE_SESSION__"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_exec_timeout_kills_the_command_on_every_route() {
    let id = "tmo";
    let Some(rs) = real_with_sandbox(id).await else {
        return;
    };
    let late = |name: &str| format!("sleep 3; touch /workspace/{name}");

    // Buffered, in a session with state that must survive the kill.
    let (s, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "cd /tmp && export KEEP=yes", "sessionId": "s1"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let t = Instant::now();
    let (s, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": late("b-session"), "sessionId": "s1", "timeoutMs": LIMIT_MS}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_timed_out(&b);
    assert!(t.elapsed() < ANSWER_WITHIN, "{:?}", t.elapsed());
    let t = Instant::now();
    let (s, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "echo $KEEP $PWD", "sessionId": "s1"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], "yes /tmp\n", "the session lost its state: {b}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the session waited for the killed command: {:?}",
        t.elapsed()
    );

    // A function and a builtin loop in the session: the rest of the command is skipped.
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "f() { sleep 3; touch /workspace/fn-body; }; f; touch /workspace/fn-after",
               "sessionId": "s1", "timeoutMs": LIMIT_MS}),
    )
    .await;
    assert_timed_out(&b);
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "while :; do :; done", "sessionId": "s1", "timeoutMs": LIMIT_MS}),
    )
    .await;
    assert_timed_out(&b);
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "echo $KEEP", "sessionId": "s1"}),
    )
    .await;
    assert_eq!(b["stdout"], "yes\n", "{b}");

    // Buffered, sessionless.
    let (s, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": late("b-none"), "sessionId": "__DISABLE_SESSION__", "timeoutMs": LIMIT_MS}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_timed_out(&b);

    // Streamed, in a session and sessionless.
    let t = Instant::now();
    let events = stream(
        &rs,
        id,
        json!({"command": late("s-session"), "sessionId": "s2", "timeoutMs": LIMIT_MS}),
    )
    .await;
    assert_stream_timed_out(&events);
    assert!(t.elapsed() < ANSWER_WITHIN, "{:?}", t.elapsed());
    let events = stream(
        &rs,
        id,
        json!({"command": late("s-none"), "sessionId": "__DISABLE_SESSION__", "timeoutMs": LIMIT_MS}),
    )
    .await;
    assert_stream_timed_out(&events);

    // Over the WebSocket control transport.
    let (s, t) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/ws-ticket"),
            Value::Null,
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let url = format!(
        "{}/v1/sandboxes/{id}/ws?ticket={}",
        rs.base.replace("http://", "ws://"),
        t["ticket"].as_str().unwrap()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let request = json!({"type": "request", "id": "1", "method": "POST", "path": "/api/execute/stream",
        "body": {"command": late("ws"), "sessionId": "s3", "timeoutMs": LIMIT_MS}});
    ws.send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(Ok(Message::Text(frame))) =
        tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
    {
        let f: Value = serde_json::from_str(&frame).unwrap();
        if f["type"] == "response" {
            break;
        }
        events.push(serde_json::from_str(f["data"].as_str().unwrap()).unwrap());
    }
    assert_stream_timed_out(&events);

    // A background process with a timeout.
    let (s, b) = post(
        &rs,
        id,
        "process/start",
        json!({"command": late("process"), "timeoutMs": LIMIT_MS}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let pid = b["processId"].as_str().unwrap().to_owned();
    let mut info = Value::Null;
    for _ in 0..100 {
        let (_, b) = rs
            .call(
                Method::GET,
                &api(id, &format!("process/{pid}")),
                Value::Null,
            )
            .await;
        info = b;
        if info["process"]["status"] != "running" && info["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let process = if info["process"].is_object() {
        &info["process"]
    } else {
        &info
    };
    assert_eq!(process["exitCode"], 124, "{info}");

    // Past every command's 3 s: nothing ran after its deadline.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let names = [
        "b-session",
        "fn-body",
        "fn-after",
        "b-none",
        "s-session",
        "s-none",
        "ws",
        "process",
    ];
    assert_eq!(existing(&rs, id, &names).await, Vec::<String>::new());
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_exec_timeout_zero_means_none_and_defaults_apply() {
    let id = "tmo0";
    let Some(rs) = real_with_sandbox(id).await else {
        return;
    };
    let (s, b) = post(
        &rs,
        id,
        "session/create",
        json!({"id": "short", "commandTimeoutMs": 300}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // The session's default applies when the request says nothing...
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "sleep 1; echo done", "sessionId": "short"}),
    )
    .await;
    assert_eq!(b["exitCode"], 124, "{b}");
    assert!(
        b["stderr"]
            .as_str()
            .unwrap()
            .contains("timed out after 300ms"),
        "{b}"
    );
    // ...and 0 turns it off.
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "sleep 1; echo done", "sessionId": "short", "timeoutMs": 0}),
    )
    .await;
    assert_eq!(b["exitCode"], 0, "{b}");
    assert_eq!(b["stdout"], "done\n", "{b}");
    assert!(b.get("timedOut").is_none(), "{b}");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_exec_client_disconnect_stops_the_command() {
    let id = "gone";
    let Some(rs) = real_with_sandbox(id).await else {
        return;
    };
    let late = |name: &str| format!("sleep 3; touch /workspace/{name}");

    // Buffered: the client gives up after 700 ms.
    for (name, session) in [("buf-session", "s1"), ("buf-none", "__DISABLE_SESSION__")] {
        let r = rs
            .req_as(&rs.key, Method::POST, &api(id, "execute"))
            .timeout(Duration::from_millis(700))
            .json(&json!({"command": late(name), "sessionId": session}))
            .send()
            .await;
        assert!(r.is_err(), "the command answered before the client left");
    }
    // Streamed: read the start event, then drop the stream.
    for (name, session) in [("sse-session", "s2"), ("sse-none", "__DISABLE_SESSION__")] {
        let r = rs
            .req_as(&rs.key, Method::POST, &api(id, "execute/stream"))
            .json(&json!({"command": late(name), "sessionId": session}))
            .send()
            .await
            .unwrap();
        let mut body = r.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("start"));
        drop(body);
    }
    // The session the abandoned command ran in answers at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "echo ok", "sessionId": "s1"}),
    )
    .await;
    assert_eq!(b["stdout"], "ok\n", "{b}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    tokio::time::sleep(Duration::from_secs(4)).await;
    let names = ["buf-session", "buf-none", "sse-session", "sse-none"];
    assert_eq!(existing(&rs, id, &names).await, Vec::<String>::new());
    rs.stop().await;
}

/// 10 MiB of bytes that are not UTF-8 (every value occurs).
fn random_bytes() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..10 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_exec_stdin_and_binary_output_are_byte_exact() {
    let id = "bytes";
    let Some(rs) = real_with_sandbox(id).await else {
        return;
    };
    let input = random_bytes();
    let want = hex::encode(Sha256::digest(&input));

    // 10 MiB in, hashed inside the sandbox, in a session and sessionless.
    for session in ["s1", "__DISABLE_SESSION__"] {
        let (s, b) = post(
            &rs,
            id,
            "execute",
            json!({"command": "sha256sum | cut -d' ' -f1", "sessionId": session,
                   "stdinBase64": BASE64.encode(&input)}),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b["stdout"],
            format!("{want}\n"),
            "{session}: {}",
            b["stderr"]
        );
    }
    // ...and echoed back: buffered as base64, and streamed as base64 chunks.
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "cat", "sessionId": "s1", "encoding": "base64",
               "stdinBase64": BASE64.encode(&input)}),
    )
    .await;
    assert_eq!(b["encoding"], "base64");
    let out = BASE64.decode(b["stdout"].as_str().unwrap()).unwrap();
    assert!(out == input, "buffered echo differs ({} bytes)", out.len());
    let events = stream(
        &rs,
        id,
        json!({"command": "cat", "sessionId": "__DISABLE_SESSION__", "encoding": "base64",
               "stdinBase64": BASE64.encode(&input)}),
    )
    .await;
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e["type"] == "stdout") {
        assert_eq!(e["encoding"], "base64");
        out.extend(BASE64.decode(e["data"].as_str().unwrap()).unwrap());
    }
    assert!(out == input, "streamed echo differs ({} bytes)", out.len());

    // Text stdin, and the session still works after a command that read it.
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "tr a-z A-Z", "sessionId": "s1", "stdin": "data\n"}),
    )
    .await;
    assert_eq!(b["stdout"], "DATA\n", "{b}");
    let (s, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": "cat", "stdin": "x", "stdinBase64": "eA=="}),
    )
    .await;
    super::assert_error(s, &b, 400, "VALIDATION_FAILED");

    // Bytes that are not UTF-8: exact in base64, the seed's text shape by default.
    let cmd = r"printf '\xff\xfe\x00A'";
    let (_, b) = post(
        &rs,
        id,
        "execute",
        json!({"command": cmd, "encoding": "base64"}),
    )
    .await;
    assert_eq!(
        BASE64.decode(b["stdout"].as_str().unwrap()).unwrap(),
        b"\xff\xfe\x00A"
    );
    let (_, b) = post(&rs, id, "execute", json!({"command": cmd})).await;
    assert_eq!(b["stdout"], "\u{fffd}\u{fffd}\u{0}A", "{b}");
    assert!(b.get("encoding").is_none(), "{b}");

    // A running process's stdin: written in pieces (text, then 1 MiB of bytes), then closed.
    let (s, b) = post(
        &rs,
        id,
        "process/start",
        json!({"command": "sha256sum | cut -d' ' -f1", "stdin": true, "processId": "hasher"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let piece = &input[..1 << 20];
    let (s, b) = post(&rs, id, "process/hasher/stdin", json!({"data": "head\n"})).await;
    assert_eq!((s, &b["bytesWritten"]), (200, &json!(5)), "{b}");
    let (s, b) = post(
        &rs,
        id,
        "process/hasher/stdin",
        json!({"dataBase64": BASE64.encode(piece), "close": true}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["closed"], true, "{b}");
    let mut whole = b"head\n".to_vec();
    whole.extend_from_slice(piece);
    let want = format!("{}\n", hex::encode(Sha256::digest(&whole)));
    let mut logs = Value::Null;
    for _ in 0..100 {
        logs = rs
            .call(Method::GET, &api(id, "process/hasher/logs"), Value::Null)
            .await
            .1;
        if logs["stdout"] == want.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs["stdout"], want.as_str(), "{logs}");
    // Closed, and a process started without `stdin: true` has none: 400 with the reason.
    let (s, b) = post(&rs, id, "process/hasher/stdin", json!({"data": "more"})).await;
    super::assert_error(s, &b, 400, "VALIDATION_FAILED");
    post(
        &rs,
        id,
        "process/start",
        json!({"command": "sleep 5", "processId": "deaf"}),
    )
    .await;
    let (s, b) = post(&rs, id, "process/deaf/stdin", json!({"data": "x"})).await;
    super::assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = post(&rs, id, "process/nobody/stdin", json!({"data": "x"})).await;
    super::assert_error(s, &b, 404, "PROCESS_NOT_FOUND");
    rs.stop().await;
}
