//! The control plane with the real `sandpit-agent` run as host processes
//! ([`sandpit_server::testing::HostDriver`]): no root needed. Skipped loudly when the agent
//! binary is missing (`cargo build -p sandpit-agent`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use sandpit_server::testing::HostDriver;
use sandpit_server::{Server, find_agent_binary};
use serde_json::{Value, json};

use super::{eventually, send_json};

pub(super) struct Host {
    pub(super) server: Server,
    client: reqwest::Client,
    base: String,
    _tmp: tempfile::TempDir,
}

impl Host {
    pub(super) async fn start() -> Option<Host> {
        Self::start_with(|_| {}).await
    }

    /// [`Host::start`] with a config changed by `tweak`.
    pub(super) async fn start_with(
        tweak: impl FnOnce(&mut sandpit_server::ServeConfig),
    ) -> Option<Host> {
        let Some(agent) = find_agent_binary() else {
            eprintln!(
                "\n!!! SKIPPED: no sandpit-agent binary (cargo build -p sandpit-agent) !!!\n"
            );
            return None;
        };
        let tmp = tempfile::Builder::new().prefix("sph").tempdir().unwrap();
        let mut config = super::config(tmp.path());
        tweak(&mut config);
        super::make_image(&config, "default");
        let driver = Arc::new(HostDriver::new(tmp.path().join("agents"), agent));
        let server = Server::start_with_driver(config, driver).await.unwrap();
        Some(Host {
            base: format!("http://{}", server.addr()),
            server,
            client: reqwest::Client::new(),
            _tmp: tmp,
        })
    }

    pub(super) async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.server.admin_key());
        send_json(req, &body).await
    }

    async fn exec(&self, id: &str, command: &str) -> Value {
        let path = format!("/v1/sandboxes/{id}/api/execute");
        let (s, b) = self
            .call(Method::POST, &path, json!({"command": command}))
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    async fn state(&self, id: &str) -> String {
        let (_, b) = self
            .call(Method::GET, &format!("/v1/sandboxes/{id}"), Value::Null)
            .await;
        b["state"].as_str().unwrap_or("?").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn real_agent_sleeps_and_wakes_with_its_workspace() {
    let Some(h) = Host::start().await else { return };
    let body = json!({"id": "host-nap", "sleepAfter": 1, "env": {"GREETING": "hello"}});
    let (s, b) = h.call(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
    let out = h
        .exec("host-nap", "echo $GREETING > note && cat note")
        .await;
    assert_eq!(out["stdout"], "hello\n", "{out}");
    assert!(
        eventually(Duration::from_secs(6), || async {
            h.state("host-nap").await == "sleeping"
        })
        .await
    );
    let out = h.exec("host-nap", "cat note").await;
    assert_eq!(out["stdout"], "hello\n", "{out}");
    assert_eq!(h.state("host-nap").await, "running");
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_agent_streams_exec_output_through_the_server() {
    let Some(h) = Host::start().await else { return };
    let r = h
        .client
        .post(format!(
            "{}/v1/sandboxes/host-sse/api/execute/stream",
            h.base
        ))
        .bearer_auth(h.server.admin_key())
        .json(&json!({"command": "echo one; sleep 2; echo two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let start = std::time::Instant::now();
    let mut stream = r.bytes_stream();
    let mut text = String::new();
    let mut first = None;
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if first.is_none() && text.contains("one\\n") {
            first = Some(start.elapsed());
        }
    }
    assert!(
        first.unwrap() < Duration::from_millis(1500),
        "buffered: {text}"
    );
    assert!(
        text.contains("two\\n") && text.contains("\"complete\""),
        "{text}"
    );
    // The agent answers its own errors with the shared envelope; they pass through.
    let (s, b) = h
        .call(
            Method::POST,
            "/v1/sandboxes/host-sse/api/read",
            json!({"path": "missing"}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("FILE_NOT_FOUND")),
        "{b}"
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_agent_ephemeral_sandbox_forgets_on_stop() {
    let Some(h) = Host::start().await else { return };
    h.call(
        Method::POST,
        "/v1/sandboxes",
        json!({"id": "host-eph", "ephemeral": true}),
    )
    .await;
    h.exec("host-eph", "echo x > f").await;
    let (s, _) = h
        .call(Method::POST, "/v1/sandboxes/host-eph/stop", json!({}))
        .await;
    assert_eq!(s, 200);
    let out = h.exec("host-eph", "ls").await;
    assert_eq!(out["stdout"], "", "{out}");
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_agent_caps_running_background_processes() {
    let Some(h) = Host::start_with(|c| c.max_processes = 2).await else {
        return;
    };
    // The sandbox's own env cannot lift the cap: the server sets it last.
    let body = json!({"id": "host-procs", "env": {"SANDPIT_MAX_PROCESSES": "1000"}});
    let (s, b) = h.call(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
    let start = |id: &'static str| {
        let body = json!({"command": "sleep 30", "processId": id});
        h.call(
            Method::POST,
            "/v1/sandboxes/host-procs/api/process/start",
            body,
        )
    };
    assert_eq!(start("p1").await.0, 200);
    assert_eq!(start("p2").await.0, 200);
    let (s, b) = start("p3").await;
    super::assert_error(s, &b, 400, "LIMIT_EXCEEDED");
    assert_eq!(b["context"]["field"], "processes", "{b}");
    assert_eq!(b["context"]["max"], 2, "{b}");
    let (s, b) = h
        .call(
            Method::DELETE,
            "/v1/sandboxes/host-procs/api/process/p1",
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            start("p3").await.0 == 200
        })
        .await,
        "a killed process frees its place"
    );
    h.call(Method::DELETE, "/v1/sandboxes/host-procs", Value::Null)
        .await;
}
