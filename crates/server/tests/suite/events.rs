//! `GET /v1/events`: sandbox changes as server-sent events, per tenant; and `/console`, whose
//! files are public while every API call it makes needs a key.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::{TestServer, assert_error, status_json};

/// An open event stream: parsed `(event, data)` pairs as they come.
struct Events {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Events {
    async fn open(ts: &TestServer, key: &str, query: &str) -> Events {
        let response = ts
            .req_as(key, Method::GET, &format!("/v1/events{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut events = Events {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        };
        let (name, data) = events.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!((name.as_str(), data), ("ready", json!({})));
        events
    }

    /// The next event, or `None` when none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `sandbox` event's (sandboxId, kind, state).
    async fn sandbox(&mut self) -> (String, String, String) {
        let (name, data) = self
            .next(Duration::from_secs(10))
            .await
            .expect("no event within 10 s");
        assert_eq!(name, "sandbox", "{data}");
        assert!(data["seq"].as_u64().is_some_and(|s| s > 0), "{data}");
        assert!(
            data["at"].as_str().is_some_and(|a| a.ends_with('Z')),
            "{data}"
        );
        let s = |k: &str| data[k].as_str().unwrap().to_owned();
        (s("sandboxId"), s("kind"), s("state"))
    }
}

fn ev(id: &str, kind: &str, state: &str) -> (String, String, String) {
    (id.to_owned(), kind.to_owned(), state.to_owned())
}

#[tokio::test]
async fn state_changes_arrive_on_the_tenants_stream_only() {
    let ts = TestServer::start().await;
    let a = ts.create_key("events-a").await;
    let b = ts.create_key("events-b").await;
    let mut a_events = Events::open(&ts, &a, "").await;
    let mut b_events = Events::open(&ts, &b, "").await;
    // The admin watches tenant a's changes with `?tenant=`.
    let mut admin_on_a = Events::open(&ts, &ts.key, "?tenant=events-a").await;

    let (s, body) = ts
        .call_as(&a, Method::POST, "/v1/sandboxes", json!({"id": "ev1"}))
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = ts
        .call_as(
            &a,
            Method::PATCH,
            "/v1/sandboxes/ev1",
            json!({"labels": {"team": "x"}}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = ts
        .call_as(&a, Method::POST, "/v1/sandboxes/ev1/stop", Value::Null)
        .await;
    assert_eq!(s, 200, "{body}");
    // Waking it through the container API is a start too.
    let (s, body) = ts
        .call_as(
            &a,
            Method::POST,
            "/v1/sandboxes/ev1/api/execute",
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = ts
        .call_as(&a, Method::DELETE, "/v1/sandboxes/ev1", Value::Null)
        .await;
    assert_eq!(s, 204, "{body}");

    let want = [
        ev("ev1", "created", "creating"),
        ev("ev1", "started", "running"),
        ev("ev1", "updated", "running"),
        ev("ev1", "stopped", "sleeping"),
        ev("ev1", "started", "running"),
        ev("ev1", "destroyed", "destroyed"),
    ];
    for stream in [&mut a_events, &mut admin_on_a] {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(stream.sandbox().await);
        }
        assert_eq!(got, want);
    }

    // Tenant b's stream saw none of it, but does see b's own sandbox (it is live, not dead).
    let (s, _) = ts
        .call_as(&b, Method::POST, "/v1/sandboxes", json!({"id": "ev1"}))
        .await;
    assert_eq!(s, 201);
    assert_eq!(b_events.sandbox().await, ev("ev1", "created", "creating"));
    assert_eq!(b_events.sandbox().await, ev("ev1", "started", "running"));
    // ...and a's stream does not see b's sandbox of the same name.
    assert!(a_events.next(Duration::from_millis(500)).await.is_none());
    ts.shutdown().await;
}

#[tokio::test]
async fn attack_events_of_another_tenant_need_the_admin_key() {
    let ts = TestServer::start().await;
    let a = ts.create_key("events-a").await;
    let _b = ts.create_key("events-b").await;
    // No key, a wrong key, the key in the query string (only WebSocket routes take it).
    let r = ts.get_anonymous("/v1/events").await;
    let (s, body) = status_json(r).await;
    assert_error(s, &body, 401, "UNAUTHORIZED");
    let (s, body) = ts
        .call_as("sp_wrong", Method::GET, "/v1/events", Value::Null)
        .await;
    assert_error(s, &body, 401, "UNAUTHORIZED");
    let r = ts
        .get_anonymous(&format!("/v1/events?access_token={a}"))
        .await;
    let (s, body) = status_json(r).await;
    assert_error(s, &body, 401, "UNAUTHORIZED");
    // A tenant naming another tenant is refused, not silently given its own stream.
    let (s, body) = ts
        .call_as(&a, Method::GET, "/v1/events?tenant=events-b", Value::Null)
        .await;
    assert_error(s, &body, 403, "PERMISSION_DENIED");
    ts.shutdown().await;
}

#[tokio::test]
async fn open_streams_end_at_shutdown() {
    let ts = TestServer::start().await;
    let key = ts.key.clone();
    let mut events = Events::open(&ts, &key, "").await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(async move { ts.shutdown().await });
    // The stream ends (no hang until the grace period runs out).
    assert!(events.next(Duration::from_secs(5)).await.is_none());
    stopping.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// `/console`: public static files with a strict CSP; nothing under it reaches the API.
#[tokio::test]
async fn attack_console_files_are_public_but_open_no_api() {
    let ts = TestServer::start().await;
    ts.json(Method::POST, "/v1/sandboxes", json!({"id": "secret1"}))
        .await;
    let index = ts.get_anonymous("/console/").await;
    // 200 with a built console, 503 with the "not built" page otherwise: public either way.
    assert!(
        index.status() == 200 || index.status() == 503,
        "{}",
        index.status()
    );
    let csp = index.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(index.headers()["x-content-type-options"], "nosniff");
    let status = index.status();
    let html = index.text().await.unwrap();
    if status == 503 {
        assert!(html.contains("Console not built"), "{html}");
    } else {
        assert!(html.contains(r#"src="app.js""#), "{html}");
        let (s, js) = status_json(ts.get_anonymous("/console/app.js").await).await;
        assert_eq!(s, 200);
        assert!(js.as_str().is_some_and(|js| js.contains("/v1/events")));
    }
    assert!(!html.contains(&ts.key), "the page must not carry a key");
    assert!(!html.contains("secret1"));
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/console", ts.base))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/console/");
    // Paths that try to climb out of the console, or into the source tree, find nothing.
    for path in [
        "/console/..%2Fv1%2Fsandboxes",
        "/console/%2e%2e/v1/sandboxes",
        "/console/../../Cargo.toml",
        "/console/app.ts",
        "/console/dist/index.html",
        "/console/node_modules/@xterm/xterm/package.json",
    ] {
        let addr = ts.server.as_ref().unwrap().addr();
        let answer = super::raw_request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let status = answer.split(' ').nth(1).unwrap_or_default();
        assert!(status == "404" || status == "401", "{path}: {answer}");
        assert!(!answer.contains("secret1"), "{path}: {answer}");
    }
    // The API behind the console still needs the key.
    let (s, body) = status_json(ts.get_anonymous("/v1/sandboxes").await).await;
    assert_error(s, &body, 401, "UNAUTHORIZED");
    ts.shutdown().await;
}
