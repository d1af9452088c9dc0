mod api;
mod archive;
mod attacks;
mod audit;
mod awake;
mod backups;
mod bounds;
mod disk;
mod e2e;
mod egress;
mod events;
mod exec_control;
mod fake_agent;
mod files;
mod forward;
mod gvisor;
mod host_agent;
mod hygiene;
mod image_tools;
mod interpreter;
mod isolation;
mod keys;
mod lifecycle;
mod limits;
mod mounts;
mod network;
mod openapi;
mod preview;
mod quotas;
mod readiness;
mod real_steps;
mod snapshot_transfer;
mod snapshots;
mod usage;
mod websocket;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_agent::FakeDriver;
use reqwest::{Method, RequestBuilder, Response};
use sandpit_image::{ImageConfig, ImageStore, NoProgress, SOURCE_DIR};
use sandpit_server::{ServeConfig, Server};
use serde_json::Value;

/// A server with the fake driver on a private data dir.
pub struct TestServer {
    pub server: Option<Server>,
    pub driver: Arc<FakeDriver>,
    pub client: reqwest::Client,
    pub base: String,
    pub key: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn config(dir: &Path) -> ServeConfig {
    let mut config = ServeConfig::new(dir.join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_key = None;
    config.reaper_interval = Duration::from_millis(100);
    config.shutdown_grace = Duration::from_millis(500);
    config.max_body_bytes = 8 << 20;
    config
}

/// Makes an empty image `name` in the config's image store.
pub fn make_image(config: &ServeConfig, name: &str) {
    let images = ImageStore::open(&config.images_dir).unwrap();
    if images.rootfs(name).is_err() {
        images
            .create_with(
                name,
                SOURCE_DIR,
                &NoProgress,
                |_| Ok(ImageConfig::default()),
            )
            .unwrap();
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut ts = Self::start_in(&dir, FakeDriver::new(dir.join("sockets")), tweak).await;
        ts._tmp = Some(tmp);
        ts
    }

    /// A server on an existing directory (to test restarts).
    pub async fn start_in(
        dir: &Path,
        driver: Arc<FakeDriver>,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> TestServer {
        let mut cfg = config(dir);
        tweak(&mut cfg);
        make_image(&cfg, "default");
        let server = Server::start_with_driver(cfg, driver.clone())
            .await
            .unwrap();
        TestServer {
            base: format!("http://{}", server.addr()),
            key: server.admin_key().to_owned(),
            server: Some(server),
            driver,
            client: reqwest::Client::new(),
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.req_as(&self.key, method, path)
    }

    pub fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
    }

    pub async fn json(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        send_json(self.req(method, path), &body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        status_json(self.req(Method::GET, path).send().await.unwrap()).await
    }

    /// `POST /v1/sandboxes/{id}/api/execute`.
    pub async fn exec(&self, id: &str, command: &str) -> (u16, Value) {
        let body = serde_json::json!({"command": command});
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/execute"),
            body,
        )
        .await
    }

    /// Status and body of a request made with `key` (a JSON `body` unless it is null).
    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let req = self.req_as(key, method, path);
        if body.is_null() {
            status_json(req.send().await.unwrap()).await
        } else {
            send_json(req, &body).await
        }
    }

    /// A GET without any key: public routes, or to see that a route needs one.
    pub async fn get_anonymous(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn create_key(&self, tenant: &str) -> String {
        created_key(
            self.json(Method::POST, "/v1/keys", key_request(tenant))
                .await,
        )
    }

    pub async fn shutdown(mut self) -> (PathBuf, Arc<FakeDriver>, Option<tempfile::TempDir>) {
        self.server.take().unwrap().shutdown().await.unwrap();
        (self.dir.clone(), self.driver.clone(), self._tmp.take())
    }
}

/// The body of `POST /v1/keys` for `tenant`.
pub fn key_request(tenant: &str) -> Value {
    serde_json::json!({ "tenant": tenant })
}

/// The new key from the answer to `POST /v1/keys`, which must be a 201.
pub fn created_key((status, body): (u16, Value)) -> String {
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// Sends `req` with `body` as its JSON body; returns the status and the JSON answer.
pub async fn send_json(req: RequestBuilder, body: &Value) -> (u16, Value) {
    status_json(req.json(body).send().await.unwrap()).await
}

pub async fn status_json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// Asserts an `ErrorResponse` with this status and code.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert_eq!(body["httpStatus"], want_status, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["timestamp"].is_string(), "{body}");
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `f` stays true for all of `duration` (checked every 100 ms): the counterpart of
/// [`eventually`] for "never happens".
pub async fn throughout<F, Fut>(duration: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < until {
        if !f().await {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Sends raw bytes to the server and returns what it answers until it closes the connection,
/// a whole JSON body arrived, or 2 s pass without data.
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
