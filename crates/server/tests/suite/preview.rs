//! Preview URLs end to end: servers inside real sandboxes reached through the Host-routed
//! proxy and the agent tunnel (traffic only to the server's loopback address).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::e2e::Real;
use super::{assert_error, eventually, status_json};

/// A server answering `/headers` (the request headers as JSON), `/redirect` (307),
/// `/sse` (two events 1.5 s apart) and `/slow` (200 after 0.3 s), on HTTP/1.1 keep-alive.
const APP_PY: &str = r#"
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def send_body(self, status, ctype, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/headers":
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self.send_body(200, "application/json", body)
        elif self.path == "/redirect":
            self.send_body(307, "text/plain", b"moved", [("Location", "/target")])
        elif self.path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"data: first\n\n")
            self.wfile.flush()
            time.sleep(1.5)
            self.wfile.write(b"data: second\n\n")
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_body(200, "text/plain", ("path " + self.path).encode())
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self.send_body(200, "application/octet-stream", data)

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// An RFC 6455 echo server in plain Node (no `ws` package): the first message it sends is
/// the Host header it saw.
pub(super) const ECHO_JS: &str = r#"
const http = require("http");
const crypto = require("crypto");
const server = http.createServer((req, res) => { res.end("plain http " + req.headers.host); });
server.on("upgrade", (req, socket) => {
  const key = req.headers["sec-websocket-key"];
  const accept = crypto.createHash("sha1")
    .update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
    "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  const frame = (opcode, payload) => {
    const len = payload.length;
    let head;
    if (len < 126) { head = Buffer.from([0x80 | opcode, len]); }
    else if (len < 65536) { head = Buffer.alloc(4); head[0] = 0x80 | opcode; head[1] = 126; head.writeUInt16BE(len, 2); }
    else { head = Buffer.alloc(10); head[0] = 0x80 | opcode; head[1] = 127; head.writeBigUInt64BE(BigInt(len), 2); }
    socket.write(Buffer.concat([head, payload]));
  };
  frame(1, Buffer.from("host " + req.headers.host));
  let buf = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      const masked = (buf[1] & 0x80) !== 0;
      const need = off + (masked ? 4 : 0) + len;
      if (buf.length < need) return;
      const mask = masked ? buf.subarray(off, off + 4) : null;
      const payload = Buffer.from(buf.subarray(off + (masked ? 4 : 0), need));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      buf = buf.subarray(need);
      if (opcode === 8) { frame(8, Buffer.alloc(0)); socket.end(); return; }
      if (opcode === 9) { frame(10, payload); continue; }
      if (opcode === 1 || opcode === 2) frame(opcode, payload);
    }
  });
});
server.listen(Number(process.argv[2]));
"#;

impl Real {
    pub(super) fn addr(&self) -> SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }

    /// A client that sends every preview host to the server's address, following no
    /// redirects.
    pub(super) fn preview_client(&self, host: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve(host, self.addr())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap()
    }

    pub(super) async fn expose(&self, id: &str, body: Value) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{id}/ports");
        self.call(Method::POST, &path, body).await
    }

    pub(super) async fn write_file(&self, id: &str, path: &str, content: &str) {
        let (s, b) = self
            .call(
                Method::POST,
                &format!("/v1/sandboxes/{id}/api/write"),
                json!({"path": path, "content": content}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Starts a background process; returns its id.
    pub(super) async fn start_process(&self, id: &str, command: &str) -> String {
        let (s, b) = self
            .call(
                Method::POST,
                &format!("/v1/sandboxes/{id}/api/process/start"),
                json!({"command": command}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["processId"].as_str().unwrap().to_owned()
    }

    /// Writes APP_PY into the sandbox and starts it on `port`.
    async fn start_app(&self, id: &str, port: u16) {
        self.write_file(id, "/workspace/app.py", APP_PY).await;
        self.start_process(id, &format!("exec python3 /workspace/app.py {port}"))
            .await;
    }

    /// Exposes a port, which must succeed; returns the exposure and its URL.
    pub(super) async fn expose_ok(&self, id: &str, body: Value) -> (Value, String) {
        let (s, b) = self.expose(id, body).await;
        assert_eq!(s, 200, "{b}");
        let url = b["url"].as_str().unwrap().to_owned();
        (b, url)
    }

    /// The sandbox's exposed ports, which must list.
    pub(super) async fn ports(&self, id: &str) -> Value {
        let path = format!("/v1/sandboxes/{id}/ports");
        let (s, list) = self.call(Method::GET, &path, Value::Null).await;
        assert_eq!(s, 200, "{list}");
        list
    }

    async fn unexpose(&self, id: &str, port: u16) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{id}/ports/{port}");
        self.call(Method::DELETE, &path, Value::Null).await
    }
}

/// GETs `url`; the status and the JSON body (or the text as a JSON string).
pub(super) async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    status_json(client.get(url).send().await.unwrap()).await
}

/// Host (without port) of a preview URL.
pub(super) fn host_of(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    u.host_str().unwrap().to_owned()
}

/// The sandbox label of a preview URL: the host's first label without port and token.
fn label_of(url: &str) -> String {
    let host = host_of(url);
    let first = host.split_once('.').unwrap().0;
    let (_port, rest) = first.split_once('-').unwrap();
    rest.rsplit_once('-').unwrap().0.to_owned()
}

/// GETs `url` until the upstream answers (the server inside may still be starting).
pub(super) async fn get_when_up(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.get(url).send().await.unwrap();
        if r.status() != 502 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn curl(url: &str, resolve_to: SocketAddr) -> (String, String) {
    let host = host_of(url);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--resolve",
        ])
        .arg(format!("{host}:{}:{}", resolve_to.port(), resolve_to.ip()))
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_owned(), code.to_owned())
}

/// How long one request through the preview proxy may take, body included, before the test
/// fails (instead of hanging) with reqwest's timeout error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn serial_preview_http_server_sse_redirect_and_forwarded_headers() {
    for tier in Real::tiers() {
        let Some(rs) = Real::start_tier(tier).await else {
            return;
        };
        preview_http_server_sse_redirect_and_forwarded_headers(&rs).await;
        rs.stop().await;
    }
}

async fn preview_http_server_sse_redirect_and_forwarded_headers(rs: &Real) {
    let id = "Pv-Http";
    rs.exec(
        id,
        "mkdir -p /workspace/site && echo hello-from-sandbox > /workspace/site/index.html",
    )
    .await;
    rs.start_process(id, "cd /workspace/site && exec python3 -m http.server 8000")
        .await;
    rs.start_app(id, 8001).await;

    let (static_port, url) = rs
        .expose_ok(id, json!({"port": 8000, "name": "site"}))
        .await;
    let token = static_port["token"].as_str().unwrap();
    assert_eq!(token.len(), 16);
    // `{port}-{label}-{token}`: the label is the id lowercased plus 12 hex of the hash.
    let label = label_of(&url);
    assert!(
        label.starts_with("pv-http-")
            && label.len() == "pv-http-".len() + 12
            && label.bytes().skip(8).all(|b| b.is_ascii_hexdigit()),
        "{url}"
    );
    assert_eq!(
        url,
        format!(
            "http://8000-{label}-{token}.localhost:{}/",
            rs.addr().port()
        )
    );
    let client = rs.preview_client(&host_of(&url));
    let r = get_when_up(&client, &url).await;
    assert_eq!(r.status(), 200);
    // The host's curl, as a user would.
    let (body, code) = curl(&format!("{url}index.html"), rs.addr());
    assert_eq!(code, "200", "{body}");
    assert_eq!(body.trim(), "hello-from-sandbox");
    // python's http.server redirects a directory without its slash: passed through.
    rs.exec(id, "mkdir -p /workspace/site/sub").await;
    let r = client.get(format!("{url}sub")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/sub/");

    let (_, app_url) = rs.expose_ok(id, json!({"port": 8001})).await;
    let app_host = host_of(&app_url);
    let client = rs.preview_client(&app_host);
    let r = get_when_up(&client, &format!("{app_url}headers")).await;
    assert_eq!(r.status(), 200);
    let headers: Value = r.json().await.unwrap();
    assert_eq!(headers["host"], "localhost:8001", "{headers}");
    assert_eq!(
        headers["x-forwarded-host"],
        format!("{app_host}:{}", rs.addr().port())
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers.get("authorization").is_none(), "{headers}");

    // 307 passed through, not followed.
    let r = client
        .get(format!("{app_url}redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "/target");
    assert_eq!(r.text().await.unwrap(), "moved");

    // Request bodies stream through both ways, on kept-alive connections.
    let big = vec![b'x'; 3 << 20];
    for _ in 0..3 {
        let r = client
            .post(format!("{app_url}echo"))
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), big.len());
    }
    let started = Instant::now();
    for i in 0..50 {
        let r = client
            .get(format!("{app_url}n{i}?q=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), format!("path /n{i}?q=1"));
    }
    eprintln!(
        "50 sequential requests through the proxy: {:?}",
        started.elapsed()
    );

    // SSE: the first event arrives while the server still holds the stream open.
    let started = Instant::now();
    let r = client.get(format!("{app_url}sse")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("data: first"));
    assert!(first_at < Duration::from_millis(1200), "{first_at:?}");
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("data: second"));
    assert!(started.elapsed() >= Duration::from_millis(1400));

    // An exposed port where nothing listens: a clear 502.
    let (_, closed_url) = rs.expose_ok(id, json!({"port": 8002})).await;
    let (s, b) = get_json(&rs.preview_client(&host_of(&closed_url)), &closed_url).await;
    assert_error(s, &b, 502, "SERVICE_NOT_RESPONDING");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("nothing is listening on port 8002"),
        "{b}"
    );

    // The API is untouched by the proxy: same listener, other hosts.
    let list = rs.ports(id).await;
    let ports: Vec<u64> = list["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8000, 8001, 8002]);
    assert_eq!(list["ports"][0]["name"], "site");
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_preview_websocket_echo_through_node() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "pv-ws";
    rs.write_file(id, "/workspace/echo.js", ECHO_JS).await;
    rs.start_process(id, "exec node /workspace/echo.js 5173")
        .await;
    let (_, url) = rs
        .expose_ok(id, json!({"port": 5173, "token": "hmr_1"}))
        .await;
    let host = host_of(&url);
    // Plain HTTP first (also waits for node to listen).
    let r = get_when_up(&rs.preview_client(&host), &url).await;
    assert_eq!(r.text().await.unwrap(), "plain http localhost:5173");

    let ws_url = url.replacen("http://", "ws://", 1);
    let request = ws_url.as_str().into_client_request().unwrap();
    let tcp = tokio::net::TcpStream::connect(rs.addr()).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(response.status(), 101);
    let Some(Ok(Message::Text(hello))) = ws.next().await else {
        panic!("no greeting");
    };
    // The same Host rewrite as for HTTP.
    assert_eq!(hello.as_str(), "host localhost:5173");
    for text in ["one", "two", &"x".repeat(70_000)] {
        ws.send(Message::Text(text.into())).await.unwrap();
        let Some(Ok(Message::Text(back))) = ws.next().await else {
            panic!("no echo");
        };
        assert_eq!(back.as_str(), text);
    }
    ws.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    let Some(Ok(Message::Binary(back))) = ws.next().await else {
        panic!("no binary echo");
    };
    assert_eq!(&back[..], &[1, 2, 3]);
    ws.close(None).await.unwrap();
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_preview_tokens_rotation_staleness_and_destroy() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "pv-tokens";
    rs.start_app(id, 9000).await;

    // Input checks.
    let (s, b) = rs.expose(id, json!({"port": 80})).await;
    assert_error(s, &b, 400, "INVALID_PORT_NUMBER");
    // The egress bridge's port would hand the sandbox's proxy (and its secrets) to anyone.
    let (s, b) = rs.expose(id, json!({"port": 3128})).await;
    assert_error(s, &b, 400, "INVALID_PORT_NUMBER");
    let (s, b) = rs
        .expose(id, json!({"port": 9000, "token": "Bad-Token"}))
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = rs.expose("pv-nobody", json!({"port": 9000})).await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");

    let (_, first_url) = rs
        .expose_ok(id, json!({"port": 9000, "token": "first"}))
        .await;
    let port = rs.addr().port();
    let label = label_of(&first_url);
    let client = reqwest::Client::builder()
        .resolve(&host_of(&first_url), rs.addr())
        .resolve(&format!("9000-{label}-wrong.localhost"), rs.addr())
        .resolve(&format!("9001-{label}-first.localhost"), rs.addr())
        .build()
        .unwrap();
    let r = get_when_up(&client, &format!("{first_url}x")).await;
    assert_eq!(r.text().await.unwrap(), "path /x");

    // Wrong token, unexposed port: 404 INVALID_TOKEN.
    for bad in [
        format!("http://9000-{label}-wrong.localhost:{port}/"),
        format!("http://9001-{label}-first.localhost:{port}/"),
    ] {
        let (s, b) = get_json(&client, &bad).await;
        assert_error(s, &b, 404, "INVALID_TOKEN");
        assert_eq!(
            b["message"],
            "Access denied: Invalid token or port not exposed"
        );
    }

    // Rotation: exposing again without a token makes a new one; the old URL is dead.
    let (second, second_url) = rs.expose_ok(id, json!({"port": 9000})).await;
    assert_ne!(second_url, first_url);
    let (s, b) = get_json(&client, &first_url).await;
    assert_error(s, &b, 404, "INVALID_TOKEN");
    let second_client = rs.preview_client(&host_of(&second_url));
    let r = second_client.get(&second_url).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Asleep: 410, and the request does not wake the sandbox.
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/stop"),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = get_json(&second_client, &second_url).await;
    assert_error(s, &b, 410, "STALE_PREVIEW_URL");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("Preview URL is stale because the sandbox runtime is not active"),
        "{b}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rs.state(id).await, "sleeping");

    // Woken by other means: still stale until exposed again.
    rs.start_app(id, 9000).await;
    let (s, b) = get_json(&second_client, &second_url).await;
    assert_error(s, &b, 410, "STALE_PREVIEW_URL");
    let (_, again_url) = rs
        .expose_ok(id, json!({"port": 9000, "token": second["token"]}))
        .await;
    assert_eq!(again_url, second_url);
    let r = get_when_up(&second_client, &second_url).await;
    assert_eq!(r.status(), 200);

    // Unexposed: 404.
    let (s, b) = rs.unexpose(id, 9000).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = get_json(&second_client, &second_url).await;
    assert_error(s, &b, 404, "INVALID_TOKEN");
    let (s, b) = rs.unexpose(id, 9000).await;
    assert_error(s, &b, 404, "PORT_NOT_EXPOSED");

    // Destroyed: 410 naming it, also after a server restart.
    let (_, last_url) = rs
        .expose_ok(id, json!({"port": 9000, "token": "last"}))
        .await;
    let (s, b) = rs
        .call(Method::DELETE, &format!("/v1/sandboxes/{id}"), Value::Null)
        .await;
    assert_eq!(s, 204, "{b}");
    let last_client = rs.preview_client(&host_of(&last_url));
    let (s, b) = get_json(&last_client, &last_url).await;
    assert_error(s, &b, 410, "STALE_PREVIEW_URL");
    assert!(
        b["message"].as_str().unwrap().contains("was destroyed"),
        "{b}"
    );
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_preview_traffic_keeps_the_sandbox_awake() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "pv-awake";
    // The app is a background process: with keepAliveWhileBusy it alone would keep the sandbox
    // awake, so here only the preview traffic may.
    rs.ensure_sandbox(json!({"id": id, "sleepAfter": "2s", "keepAliveWhileBusy": false}))
        .await;
    rs.start_app(id, 9100).await;
    let (_, url) = rs.expose_ok(id, json!({"port": 9100})).await;
    let client = rs.preview_client(&host_of(&url));
    assert_eq!(get_when_up(&client, &url).await.status(), 200);
    // Only preview traffic for 4 s, twice the idle timeout.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let r = client.get(format!("{url}ping")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(rs.state(id).await, "running");
    // Then idle: it sleeps, and its URL goes stale.
    assert!(
        eventually(Duration::from_secs(10), || async {
            rs.state(id).await == "sleeping"
        })
        .await
    );
    let (s, b) = get_json(&client, &url).await;
    assert_error(s, &b, 410, "STALE_PREVIEW_URL");
    assert_eq!(rs.state(id).await, "sleeping");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_preview_exposures_outlive_a_restart_as_stale() {
    let tmp = tempfile::Builder::new().prefix("spp").tempdir().unwrap();
    let data_dir = tmp.path().join("d");
    let Some(rs) = Real::start_on(&data_dir).await else {
        return;
    };
    let id = "pv-restart";
    rs.exec(id, "true").await;
    let (_, before) = rs
        .expose_ok(id, json!({"port": 9200, "token": "keep", "name": "api"}))
        .await;
    rs.stop().await;

    let rs = Real::start_on(&data_dir).await.unwrap();
    let list = rs.ports(id).await;
    let port = rs.addr().port();
    // The label survives the restart (it hashes the data dir's instance id, not the process).
    let label = label_of(&before);
    let url = format!("http://9200-{label}-keep.localhost:{port}/");
    assert_eq!(list["ports"][0]["url"], url);
    assert_eq!(list["ports"][0]["name"], "api");
    assert_eq!(list["ports"][0]["stale"], true, "{list}");
    let client = rs.preview_client(&host_of(&url));
    let (s, b) = get_json(&client, &url).await;
    assert_error(s, &b, 410, "STALE_PREVIEW_URL");
    assert_eq!(rs.state(id).await, "sleeping");
    rs.stop().await;
}

/// ATTACK (issue 9): tenant B creates a sandbox with tenant A's id, exposes the same port with
/// A's token, and A re-exposes as the docs ask after a wake. Before, the index was keyed by the
/// bare id and told tenants apart by token, so A's URL then served B's content; now B's URL is
/// its own (another label) and A's URL keeps serving A.
#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_preview_url_takeover_across_tenants_fails() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let b_key = rs.create_key("pv-tenant-b").await;
    let id = "pv-shared";
    let serve = |who: &str| {
        format!(
            "mkdir -p /workspace/w && echo content-of-{who} > /workspace/w/index.html && \
             cd /workspace/w && exec python3 -m http.server 9300"
        )
    };
    // Tenant A (the admin key's tenant).
    rs.start_process(id, &serve("a")).await;
    let (a, a_url) = rs.expose_ok(id, json!({"port": 9300})).await;
    let a_token = a["token"].as_str().unwrap().to_owned();
    let client = rs.preview_client(&host_of(&a_url));
    let r = get_when_up(&client, &a_url).await;
    assert_eq!(r.text().await.unwrap().trim(), "content-of-a");

    // Tenant B: same id, same port, A's token.
    let (s, b) = rs
        .call_as(
            &b_key,
            Method::POST,
            "/v1/sandboxes/pv-shared/api/process/start",
            json!({"command": serve("b")}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b_exposed) = rs
        .call_as(
            &b_key,
            Method::POST,
            "/v1/sandboxes/pv-shared/ports",
            json!({"port": 9300, "token": a_token}),
        )
        .await;
    assert_eq!(s, 200, "{b_exposed}");
    let b_url = b_exposed["url"].as_str().unwrap().to_owned();
    assert_ne!(b_url, a_url, "two tenants' sandboxes share a preview URL");
    assert_ne!(label_of(&b_url), label_of(&a_url));

    // A re-exposes with its token (same URL), then both URLs serve their own tenant's content.
    let (_, again) = rs
        .expose_ok(id, json!({"port": 9300, "token": a_token}))
        .await;
    assert_eq!(again, a_url);
    for _ in 0..5 {
        let r = get_when_up(&client, &a_url).await;
        assert_eq!(r.text().await.unwrap().trim(), "content-of-a");
    }
    let b_client = rs.preview_client(&host_of(&b_url));
    let r = get_when_up(&b_client, &b_url).await;
    assert_eq!(r.text().await.unwrap().trim(), "content-of-b");
    // B unexposing its port leaves A's URL alone.
    let (s, _) = rs
        .call_as(
            &b_key,
            Method::DELETE,
            "/v1/sandboxes/pv-shared/ports/9300",
            Value::Null,
        )
        .await;
    assert_eq!(s, 204);
    let r = get_when_up(&client, &a_url).await;
    assert_eq!(r.text().await.unwrap().trim(), "content-of-a");
    rs.stop().await;
}
