//! The SDK against a tiny axum server that records every request and answers canned bodies:
//! proves request shapes, auth, pagination, error decoding and SSE decoding.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sandpit_client::protocol::container::{ExecEvent, ListFilesOptions, SessionCreateRequest};
use sandpit_client::protocol::control::{CreateSandboxRequest, NetworkMode};
use sandpit_client::protocol::{ErrorCode, ErrorResponse};
use sandpit_client::{
    Client, ClientError, ExecOptions, ExposeOptions, ListOptions, allowlist, secret,
};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    auth: Option<String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn info(id: &str) -> Value {
    json!({
        "id": id, "image": "default", "state": "running", "sleepAfterSecs": 600,
        "keepAlive": false, "ephemeral": false, "env": {}, "limits": {"memoryMb": 512},
        "createdAt": "t", "lastActiveAt": "t"
    })
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn sse(events: &[Value]) -> Response {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn error(code: ErrorCode, message: &str) -> Response {
    let e = ErrorResponse::new(code, message).with_context("path", "/missing");
    json_response(
        StatusCode::from_u16(e.http_status).unwrap(),
        serde_json::to_value(e).unwrap(),
    )
}

async fn handle(log: Log, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned());
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        uri: uri.to_string(),
        auth,
        body: body_json.clone(),
    });
    let ts = "2026-01-01T00:00:00.000Z";
    match (method.as_str(), uri.path()) {
        ("POST", "/v1/sandboxes") => json_response(
            StatusCode::CREATED,
            info(body_json["id"].as_str().unwrap_or("gen")),
        ),
        ("GET", "/v1/sandboxes") => match uri.query() {
            Some(q) if q.contains("cursor=c%201") => {
                json_response(StatusCode::OK, json!({"sandboxes": [info("b")]}))
            }
            _ => json_response(
                StatusCode::OK,
                json!({"sandboxes": [info("a")], "nextCursor": "c 1"}),
            ),
        },
        ("GET", "/v1/sandboxes/missing") => error(ErrorCode::SandboxNotFound, "no sandbox missing"),
        ("GET", "/v1/events") => (
            [(header::CONTENT_TYPE, "text/event-stream")],
            concat!(
                "event: ready\ndata: {}\n\n",
                ": keep-alive\n\n",
                "event: sandbox\nid: 4\ndata: {\"seq\":4,\"sandboxId\":\"a\",\"kind\":\"started\",",
                "\"state\":\"running\",\"at\":\"2026-01-01T00:00:00.000Z\"}\n\n",
                "event: lagged\ndata: {\"missed\":3}\n\n",
                "event: somethingnew\ndata: {\"x\":1}\n\n",
            ),
        )
            .into_response(),
        ("DELETE", "/v1/sandboxes/a") => StatusCode::NO_CONTENT.into_response(),
        ("POST", "/v1/sandboxes/a/stop") => json_response(StatusCode::OK, info("a")),
        ("GET", "/v1/sandboxes/broken/api/ping") => {
            (StatusCode::BAD_GATEWAY, "upstream went away").into_response()
        }
        ("GET", "/v1/sandboxes/a/api/ping") => json_response(
            StatusCode::OK,
            json!({"success": true, "status": "healthy", "timestamp": ts}),
        ),
        ("POST", "/v1/sandboxes/a/api/execute") => json_response(
            StatusCode::OK,
            json!({"success": false, "exitCode": 3, "stdout": "out\n", "stderr": "", "command": body_json["command"],
                   "duration": 1, "timestamp": ts}),
        ),
        ("POST", "/v1/sandboxes/a/api/execute/stream") => sse(&[
            json!({"type": "start", "command": body_json["command"], "timestamp": ts}),
            json!({"type": "stdout", "data": "4\n", "timestamp": ts}),
            json!({"type": "stderr", "data": "warn\n", "timestamp": ts}),
            json!({"type": "complete", "exitCode": 0, "timestamp": ts}),
        ]),
        ("POST", "/v1/sandboxes/a/api/read/stream") if body_json["path"] == "/missing" => {
            sse(&[json!({"type": "error", "error": "File not found: /missing"})])
        }
        ("POST", "/v1/sandboxes/a/api/read/stream") => sse(&[
            json!({"type": "metadata", "mimeType": "application/octet-stream", "size": 4, "isBinary": true, "encoding": "base64"}),
            json!({"type": "chunk", "data": "AAE="}),
            json!({"type": "chunk", "data": "/v8="}),
            json!({"type": "complete", "bytesRead": 4}),
        ]),
        ("POST", "/v1/sandboxes/a/api/read") if body_json["path"] == "/missing" => {
            error(ErrorCode::FileNotFound, "File not found: /missing")
        }
        ("POST", "/v1/sandboxes/a/api/read") => json_response(
            StatusCode::OK,
            json!({"success": true, "path": body_json["path"], "content": "AAH/", "timestamp": ts,
                   "encoding": "base64", "isBinary": true, "mimeType": "application/octet-stream", "size": 3}),
        ),
        ("POST", "/v1/sandboxes/a/api/write" | "/v1/sandboxes/a/api/delete") => json_response(
            StatusCode::OK,
            json!({"success": true, "path": body_json["path"], "timestamp": ts}),
        ),
        ("POST", "/v1/sandboxes/a/api/exists") => json_response(
            StatusCode::OK,
            json!({"success": true, "path": body_json["path"], "exists": true, "timestamp": ts}),
        ),
        ("POST", "/v1/sandboxes/a/api/list-files") => json_response(
            StatusCode::OK,
            json!({"success": true, "path": "/w", "count": 1, "timestamp": ts, "files": [{
                "name": "x", "absolutePath": "/w/x", "relativePath": "x", "type": "file", "size": 2,
                "modifiedAt": ts, "mode": "rw-r--r--",
                "permissions": {"readable": true, "writable": true, "executable": false}}]}),
        ),
        ("POST", "/v1/sandboxes/a/api/session/create") => json_response(
            StatusCode::OK,
            json!({"success": true, "data": {"id": body_json["id"], "cwd": "/workspace"},
                   "containerPlacementId": null, "timestamp": ts}),
        ),
        ("POST", "/v1/sandboxes/a/api/process/start") => json_response(
            StatusCode::OK,
            json!({"success": true, "processId": "p 1", "pid": 42, "command": body_json["command"], "timestamp": ts}),
        ),
        ("DELETE", "/v1/sandboxes/a/api/process/p%201") => json_response(
            StatusCode::OK,
            json!({"success": true, "processId": "p 1", "signal": "SIGINT", "timestamp": ts}),
        ),
        // Ends without an `exit` event: waits must fail, not invent an exit code.
        ("GET", "/v1/sandboxes/a/api/process/p%201/stream") => sse(&[
            json!({"type": "process_info", "processId": "p 1", "command": "x", "status": "running", "timestamp": ts}),
            json!({"type": "stdout", "data": "half a li", "processId": "p 1", "timestamp": ts}),
        ]),
        ("POST", "/v1/sandboxes/a/api/port-watch") => sse(&[
            json!({"type": "watching", "port": body_json["port"]}),
            json!({"type": "process_exited", "port": body_json["port"], "exitCode": 1}),
        ]),
        ("POST", "/v1/sandboxes/a/ports") => json_response(
            StatusCode::OK,
            json!({"port": body_json["port"], "name": body_json["name"], "token": "t0k",
                   "url": format!("http://{}-a-t0k.localhost:7070/", body_json["port"])}),
        ),
        ("GET", "/v1/sandboxes/a/ports") => json_response(
            StatusCode::OK,
            json!({"ports": [{"port": 8080, "token": "t0k", "url": "http://8080-a-t0k.localhost:7070/"}]}),
        ),
        ("DELETE", "/v1/sandboxes/a/ports/8080") => StatusCode::NO_CONTENT.into_response(),
        ("DELETE", "/v1/sandboxes/a/ports/9090") => {
            error(ErrorCode::InvalidToken, "port 9090 is not exposed")
        }
        ("PATCH", "/v1/sandboxes/a") => {
            let mut info = info("a");
            if let Some(network) = body_json.get("network") {
                info["network"] = network.clone();
            }
            info["secrets"] = json!(
                body_json["secrets"]
                    .as_object()
                    .map(|m| m
                        .iter()
                        .map(|(k, v)| json!({"name": k, "hosts": v["hosts"]}))
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            );
            json_response(StatusCode::OK, info)
        }
        _ => (StatusCode::IM_A_TEAPOT, Body::from("unexpected request")).into_response(),
    }
}

async fn start() -> (Client, Log) {
    let log: Log = Arc::default();
    let app = {
        let log = log.clone();
        axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
            handle(log.clone(), m, u, h, b)
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Client::new(format!("http://{addr}/"), "k3y").unwrap(), log)
}

fn last(log: &Log) -> Seen {
    log.lock().unwrap().last().cloned().unwrap()
}

/// Asserts the last request's method, URI and JSON body; returns it.
fn assert_last(log: &Log, method: Method, uri: &str, body: Value) -> Seen {
    let seen = last(log);
    assert_eq!((&seen.method, seen.uri.as_str()), (&method, uri));
    assert_eq!(seen.body, body);
    seen
}

#[tokio::test]
async fn control_plane_calls_send_the_documented_requests() {
    let (client, log) = start().await;
    let req = CreateSandboxRequest {
        id: Some("a".into()),
        keep_alive: Some(true),
        sleep_after: Some("5m".parse().unwrap()),
        ..Default::default()
    };
    let created = client.create(&req).await.unwrap();
    assert_eq!(created.id, "a");
    let seen = assert_last(
        &log,
        Method::POST,
        "/v1/sandboxes",
        // A duration string goes out as whole seconds (the one wire form SleepAfter writes).
        json!({"id": "a", "keepAlive": true, "sleepAfter": 300}),
    );
    assert_eq!(seen.auth.as_deref(), Some("Bearer k3y"));

    client.stop("a").await.unwrap();
    assert_eq!(last(&log).uri, "/v1/sandboxes/a/stop");
    client.destroy("a").await.unwrap();
    assert_eq!(last(&log).method, Method::DELETE);
}

#[tokio::test]
async fn list_all_follows_cursors() {
    let (client, log) = start().await;
    let page = client
        .list(&ListOptions {
            limit: Some(1),
            ..ListOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("c 1"));
    assert_eq!(last(&log).uri, "/v1/sandboxes?limit=1");
    let all = client.list_all().await.unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(last(&log).uri, "/v1/sandboxes?cursor=c%201");
}

#[tokio::test]
async fn error_envelopes_become_typed_api_errors() {
    let (client, _log) = start().await;
    let err = client.get("missing").await.unwrap_err();
    match &err {
        ClientError::Api(e) => {
            assert_eq!(e.code, ErrorCode::SandboxNotFound);
            assert_eq!(e.http_status, 404);
            assert_eq!(e.context["path"], "/missing");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    let err = client.sandbox("a").read_file("/missing").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FileNotFound));

    let err = client.sandbox("broken").ping().await.unwrap_err();
    assert_eq!(err.http_status(), Some(502));
    assert!(err.to_string().contains("upstream went away"), "{err}");
}

#[tokio::test]
async fn invalid_ids_are_refused_locally() {
    let (client, log) = start().await;
    let err = client.sandbox("../etc").ping().await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn transport_errors_are_reported_as_such() {
    // Nothing listens on port 1 of loopback.
    let client = Client::new("http://127.0.0.1:1", "k").unwrap();
    let err = client.get("a").await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");
}

#[tokio::test]
async fn exec_sends_per_command_options() {
    let (client, log) = start().await;
    let sandbox = client.sandbox("a").with_session("s1");
    let options = ExecOptions::default()
        .env("A", "1")
        .cwd("/tmp")
        .timeout_ms(5000);
    let out = sandbox.exec("exit 3", &options).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str()), (3, "out\n"));
    assert_eq!(
        last(&log).body,
        json!({"command": "exit 3", "sessionId": "s1", "timeoutMs": 5000, "env": {"A": "1"}, "cwd": "/tmp"})
    );
    let other = ExecOptions::default().session("s2");
    sandbox.exec("true", &other).await.unwrap();
    assert_eq!(last(&log).body["sessionId"], "s2");
}

#[tokio::test]
async fn exec_stream_yields_typed_events() {
    let (client, _log) = start().await;
    let events: Vec<ExecEvent> = client
        .sandbox("a")
        .exec_stream("echo 4", &ExecOptions::default())
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert!(matches!(&events[0], ExecEvent::Start { command, .. } if command == "echo 4"));
    assert!(matches!(&events[1], ExecEvent::Stdout { data, .. } if data == "4\n"));
    assert!(matches!(&events[2], ExecEvent::Stderr { data, .. } if data == "warn\n"));
    assert!(matches!(
        events[3],
        ExecEvent::Complete { exit_code: 0, .. }
    ));
}

#[tokio::test]
async fn file_calls_encode_and_decode_content() {
    let (client, log) = start().await;
    let sandbox = client.sandbox("a");
    sandbox.write_bytes("/w/b", &[0, 1, 255]).await.unwrap();
    assert_eq!(
        last(&log).body,
        json!({"path": "/w/b", "content": "AAH/", "encoding": "base64"})
    );
    sandbox.write_file("/w/t", "héllo").await.unwrap();
    assert_eq!(last(&log).body["encoding"], "utf-8");
    assert_eq!(sandbox.read_bytes("/w/b").await.unwrap(), [0, 1, 255]);
    assert_eq!(last(&log).body["encoding"], "base64");
    assert!(sandbox.exists("/w/b").await.unwrap());
    let files = sandbox
        .list_files(
            "/w",
            &ListFilesOptions {
                recursive: Some(true),
                include_hidden: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(files[0].absolute_path, "/w/x");
    assert_eq!(last(&log).body["options"], json!({"recursive": true}));
    let request = SessionCreateRequest {
        id: Some("s9".into()),
        ..Default::default()
    };
    let session = sandbox.create_session(&request).await.unwrap();
    assert_eq!(
        (session.id.as_str(), session.cwd.as_str()),
        ("s9", "/workspace")
    );
    assert_eq!(
        last(&log).body,
        json!({"id": "s9", "env": null, "cwd": null, "commandTimeoutMs": null})
    );
}

#[tokio::test]
async fn streamed_reads_are_decoded_chunk_by_chunk() {
    let (client, _log) = start().await;
    let sandbox = client.sandbox("a");
    let download = sandbox.read_stream_bytes("/w/b").await.unwrap();
    assert!(download.is_binary);
    assert_eq!(download.size, 4);
    let chunks: Vec<Vec<u8>> = download.chunks.map(|c| c.unwrap()).collect().await;
    assert_eq!(chunks, [vec![0, 1], vec![0xfe, 0xff]]);

    let err = sandbox.read_stream_bytes("/missing").await.err().unwrap();
    assert!(
        matches!(&err, ClientError::Stream(m) if m.contains("not found")),
        "{err}"
    );
}

#[tokio::test]
async fn streamed_uploads_are_one_valid_json_body() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (client, log) = start().await;
    let sandbox = client.sandbox("a").with_session("s");
    let content: Vec<u8> = (0..200_001u32).map(|i| (i % 251) as u8).collect();
    let reported = Arc::new(AtomicU64::new(0));
    let seen = reported.clone();
    sandbox
        .write_bytes_with_progress("/w/big", content.clone().into(), move |n| {
            seen.store(n, Ordering::SeqCst)
        })
        .await
        .unwrap();
    assert_eq!(reported.load(Ordering::SeqCst), 200_001);
    let body = last(&log).body;
    assert_eq!(
        (body["path"].as_str(), body["sessionId"].as_str()),
        (Some("/w/big"), Some("s"))
    );
    assert_eq!(body["encoding"], "base64");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body["content"].as_str().unwrap())
        .unwrap();
    assert!(decoded == content, "content differs after the round trip");
}

#[tokio::test]
async fn process_calls_send_the_documented_requests() {
    use sandpit_client::{PortMode, PortWaitOptions, ProcessOptions};
    use std::time::Duration;

    let (client, log) = start().await;
    let sandbox = client.sandbox("a").with_session("s");
    let process = sandbox
        .start_process(
            "npm start",
            &ProcessOptions::default().env("A", "1").cwd("/w"),
        )
        .await
        .unwrap();
    assert_eq!((process.id.as_str(), process.pid), ("p 1", Some(42)));
    assert_eq!(
        last(&log).body,
        json!({"command": "npm start", "sessionId": "s", "env": {"A": "1"}, "cwd": "/w"})
    );

    process.kill(Some("SIGINT")).await.unwrap();
    let seen = last(&log);
    assert_eq!(
        (seen.method, seen.uri.as_str()),
        (
            Method::DELETE,
            "/v1/sandboxes/a/api/process/p%201?signal=SIGINT"
        )
    );

    let wait = Some(Duration::from_secs(10));
    let err = process.wait_for_exit(wait).await.unwrap_err();
    assert!(matches!(err, ClientError::Stream(_)), "{err}");
    let err = process.wait_for_log("ready", wait).await.unwrap_err();
    assert!(matches!(err, ClientError::Stream(_)), "{err}");

    let options = PortWaitOptions {
        mode: PortMode::Tcp,
        status: Some(200..=204),
        interval: Some(Duration::from_millis(250)),
        ..Default::default()
    };
    let err = process.wait_for_port(8080, &options).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("process p 1 exited (code 1) before port 8080 was ready"),
        "{err}"
    );
    assert_eq!(
        last(&log).body,
        json!({"port": 8080, "mode": "tcp", "statusMin": 200, "statusMax": 204,
               "processId": "p 1", "interval": 250})
    );
}

#[tokio::test]
async fn port_and_network_calls_send_the_documented_requests() {
    let (client, log) = start().await;
    let sandbox = client.sandbox("a");
    let exposed = sandbox
        .expose_port(8080, &ExposeOptions::default().name("web").token("t0k"))
        .await
        .unwrap();
    assert_eq!(exposed.url, "http://8080-a-t0k.localhost:7070/");
    assert_eq!(exposed.name.as_deref(), Some("web"));
    assert_last(
        &log,
        Method::POST,
        "/v1/sandboxes/a/ports",
        json!({"port": 8080, "name": "web", "token": "t0k"}),
    );
    sandbox
        .expose_port(3000, &ExposeOptions::default())
        .await
        .unwrap();
    assert_eq!(last(&log).body, json!({"port": 3000}));

    let ports = sandbox.exposed_ports().await.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!((ports[0].port, ports[0].token.as_str()), (8080, "t0k"));
    sandbox.unexpose_port(8080).await.unwrap();
    assert_eq!(last(&log).method, Method::DELETE);
    let err = sandbox.unexpose_port(9090).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken));
    assert!(client.sandbox("../x").exposed_ports().await.is_err());

    let info = client
        .set_network("a", &allowlist(["*.example.com", "10.0.0.0/8"]))
        .await
        .unwrap();
    assert_eq!(info.network.mode, NetworkMode::Allowlist);
    assert_last(
        &log,
        Method::PATCH,
        "/v1/sandboxes/a",
        json!({"network": {"mode": "allowlist", "allow": ["*.example.com", "10.0.0.0/8"]}}),
    );
    let secrets = BTreeMap::from([("TOKEN".to_owned(), secret("s3cret", ["api.example.com"]))]);
    let info = client.set_secrets("a", &secrets).await.unwrap();
    assert_eq!(info.secrets[0].name, "TOKEN");
    assert_eq!(
        last(&log).body,
        json!({"secrets": {"TOKEN": {"value": "s3cret", "hosts": ["api.example.com"]}}})
    );
}

#[tokio::test]
async fn events_decode_sandbox_and_lagged_items_and_skip_the_rest() {
    use sandpit_client::Event;
    use sandpit_client::protocol::control::{SandboxEventKind, SandboxState};
    let (client, log) = start().await;
    let events: Vec<Event> = client
        .events(Some("acme co"))
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    let seen = last(&log);
    assert_eq!(seen.uri, "/v1/events?tenant=acme%20co");
    assert_eq!(seen.auth.as_deref(), Some("Bearer k3y"));
    assert_eq!(events.len(), 2, "{events:?}");
    let Event::Sandbox(e) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (e.seq, e.sandbox_id.as_str(), e.kind, e.state),
        (4, "a", SandboxEventKind::Started, SandboxState::Running)
    );
    assert!(matches!(&events[1], Event::Lagged(l) if l.missed == 3));
}
