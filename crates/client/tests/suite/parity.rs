//! What the TypeScript and Python SDKs can do and the Rust client gained for parity: `get_process`
//! answering `None` for an unknown id, `is_port_exposed`, WebSocket tickets and the terminal URL,
//! and the typed reason of a call cut short (`interrupted_reason`) — against a fake server (exact
//! requests) and a real one (with labels, ttl, keepAliveWhileBusy, label-filtered lists, usage,
//! pendingRestart and stale ports).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sandpit_client::protocol::container::ExecEvent;
use sandpit_client::protocol::control::{CreateSandboxRequest, UpdateSandboxRequest};
use sandpit_client::protocol::{ErrorCode, ErrorResponse};
use sandpit_client::{
    Client, ClientError, ExecOptions, ExposeOptions, InterruptReason, ProcessOptions,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::real_server::with_real_server;

fn envelope(code: ErrorCode, message: &str, reason: Option<&str>) -> String {
    let mut envelope = ErrorResponse::new(code, message);
    if let Some(reason) = reason {
        envelope.context.insert("reason".into(), reason.into());
    }
    serde_json::to_string(&envelope).unwrap()
}

async fn fake(method: Method, uri: Uri) -> Response {
    let json = |status: StatusCode, body: String| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    match (method.as_str(), uri.path()) {
        ("GET", "/v1/sandboxes/a/api/process/nope") => json(
            StatusCode::NOT_FOUND,
            envelope(ErrorCode::ProcessNotFound, "no process nope", None),
        ),
        ("GET", "/v1/sandboxes/a/ports") => json(
            StatusCode::OK,
            json!({"ports": [{"port": 8080, "token": "t", "url": "http://8080-a-t.localhost/", "stale": true}]})
                .to_string(),
        ),
        ("POST", "/v1/sandboxes/a/ws-ticket") => json(
            StatusCode::CREATED,
            json!({"ticket": "tk1", "expiresAt": "2026-01-01T00:01:00Z"}).to_string(),
        ),
        ("POST", "/v1/sandboxes/a/api/execute/stream") => {
            let cut = envelope(ErrorCode::OperationInterrupted, "sandbox a was destroyed", Some("destroyed"));
            let body = format!(
                "data: {{\"type\":\"start\",\"command\":\"x\",\"timestamp\":\"t\"}}\n\nevent: error\ndata: {cut}\n\n"
            );
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        _ => (StatusCode::IM_A_TEAPOT, Body::from("unexpected request")).into_response(),
    }
}

#[tokio::test]
async fn parity_helpers_send_the_documented_requests() {
    let app = axum::Router::new().fallback(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::new(format!("http://{addr}"), "k").unwrap();
    let sandbox = client.sandbox("a");

    assert!(sandbox.get_process("nope").await.unwrap().is_none());
    assert!(sandbox.is_port_exposed(8080).await.unwrap());
    assert!(!sandbox.is_port_exposed(8081).await.unwrap());
    assert_eq!(sandbox.ws_ticket().await.unwrap().ticket, "tk1");
    assert_eq!(
        sandbox.terminal_url(Some("s 1"), 120, 40).await.unwrap(),
        format!("ws://{addr}/v1/sandboxes/a/ws/pty?sessionId=s+1&cols=120&rows=40&ticket=tk1")
    );

    let mut events = sandbox
        .exec_stream("x", &ExecOptions::default())
        .await
        .unwrap();
    assert!(events.next().await.unwrap().is_ok());
    let err = events.next().await.unwrap().unwrap_err();
    assert_eq!(
        err.interrupted_reason(),
        Some(InterruptReason::Destroyed),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_client_parity_against_real_server() {
    with_real_server("serial_client_parity_against_real_server", parity).await;
}

async fn parity(client: Client, _url: String) {
    // Labels, ttl and keepAliveWhileBusy on create; label-filtered lists.
    let request = CreateSandboxRequest {
        id: Some("parity".into()),
        labels: Some(BTreeMap::from([("team".into(), "sdk".into())])),
        ttl: Some("1h".parse().unwrap()),
        keep_alive_while_busy: Some(false),
        ..Default::default()
    };
    let info = client.create(&request).await.unwrap();
    assert_eq!(info.labels.get("team").map(String::as_str), Some("sdk"));
    assert!(info.expires_at.is_some(), "{info:?}");
    assert!(!info.keep_alive_while_busy);
    let listed = client.list_labelled(&["team=sdk".into()]).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["parity"]
    );
    assert!(
        client
            .list_labelled(&["team=none".into()])
            .await
            .unwrap()
            .is_empty()
    );

    // PATCH merges labels and names what waits for the next start.
    let update = UpdateSandboxRequest {
        labels: Some(BTreeMap::from([
            ("team".into(), None),
            ("env".into(), Some("ci".into())),
        ])),
        env: Some(BTreeMap::from([("A".into(), "1".into())])),
        ..Default::default()
    };
    let updated = client.update("parity", &update).await.unwrap();
    assert_eq!(
        updated.labels,
        BTreeMap::from([("env".into(), "ci".into())])
    );
    assert!(
        updated.pending_restart.contains(&"env".to_owned()),
        "{updated:?}"
    );

    // Usage of a running sandbox.
    let sandbox = client.sandbox("parity");
    sandbox.exec("true", &ExecOptions::default()).await.unwrap();
    let usage = client.usage("parity").await.unwrap();
    assert!(usage.memory_bytes > 0 && usage.pids > 0, "{usage:?}");

    // get_process: None for an unknown id, a handle for a real one.
    assert!(sandbox.get_process("nope").await.unwrap().is_none());
    let sleeper = sandbox
        .start_process("sleep 600", &ProcessOptions::default().id("sleeper"))
        .await
        .unwrap();
    let found = sandbox.get_process("sleeper").await.unwrap().unwrap();
    assert_eq!(found.pid, sleeper.pid);

    // A terminal through the ticket URL (no key in it): the PTY answers `ready`.
    let url = sandbox.terminal_url(None, 100, 30).await.unwrap();
    assert!(!url.contains("sdk-test-key"), "{url}");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.unwrap()
                && text.contains("\"ready\"")
            {
                return;
            }
        }
        panic!("terminal closed before ready");
    });
    ready.await.expect("the terminal did not get ready");
    socket.close(None).await.unwrap();
    // The ticket was used up: the same URL is refused.
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());

    // stdin fed while the command runs: each line is sent only after the previous one was
    // answered, so the input really arrives during the run (the WebSocket control transport).
    let (feed, input) = futures::channel::mpsc::unbounded::<bytes::Bytes>();
    let mut events = sandbox
        .exec_stream_with_stdin(
            "while read -r l; do echo \"got $l\"; done; echo bye",
            &ExecOptions::default(),
            input,
        )
        .await
        .unwrap();
    let mut stdout = String::new();
    feed.unbounded_send("one\n".into()).unwrap();
    let mut exit = None;
    while let Some(event) = events.next().await {
        match event.unwrap() {
            ExecEvent::Stdout { data, .. } => {
                stdout.push_str(&data);
                if stdout == "got one\n" {
                    feed.unbounded_send(bytes::Bytes::from_static(b"two\n"))
                        .unwrap();
                } else if stdout == "got one\ngot two\n" {
                    feed.close_channel(); // EOF
                }
            }
            ExecEvent::Complete { exit_code, .. } => exit = Some(exit_code),
            _ => {}
        }
    }
    assert_eq!(
        (stdout.as_str(), exit),
        ("got one\ngot two\nbye\n", Some(0))
    );
    let refused = sandbox
        .exec_stream_with_stdin(
            "cat",
            &ExecOptions::default().stdin("x"),
            futures::stream::empty(),
        )
        .await;
    assert!(matches!(refused, Err(ClientError::InvalidArgument(_))));

    // Exposed ports: exposed, then stale once the sandbox sleeps.
    sandbox
        .expose_port(8080, &ExposeOptions::default())
        .await
        .unwrap();
    assert!(sandbox.is_port_exposed(8080).await.unwrap());

    // A stream the sandbox's stop cuts short ends with a typed, reasoned error.
    let mut events = sandbox
        .exec_stream("echo started; sleep 600", &ExecOptions::default())
        .await
        .unwrap();
    loop {
        let event = events.next().await.unwrap().unwrap();
        if format!("{event:?}").contains("started") {
            break;
        }
    }
    client.stop("parity").await.unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => panic!("the stream ended without an error event"),
            }
        }
    })
    .await
    .expect("the cut stream did not end");
    assert_eq!(
        cut.interrupted_reason(),
        Some(InterruptReason::Stopped),
        "{cut}"
    );
    let ports = sandbox.exposed_ports().await.unwrap();
    assert!(ports.iter().any(|p| p.port == 8080 && p.stale), "{ports:?}");
    client.destroy("parity").await.unwrap();
}
