//! Background work keeps a real sandbox awake: running background processes (unless
//! `keepAliveWhileBusy` is off), open streams, terminals and preview WebSockets; and exposures
//! go stale at sleep.
//! `sleepAfter` is 2 s; every wait is for a condition, with generous deadlines.

use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::e2e::Real;
use super::preview::{ECHO_JS, get_json, get_when_up, host_of};
use super::{assert_error, eventually, throughout};

/// How long a sandbox must stay awake in these tests: well past its 2 s `sleepAfter` and a few
/// reaper passes.
const PAST_SLEEP_AFTER: Duration = Duration::from_secs(6);
/// How long a sandbox may take to fall asleep once idle (2 s plus a loaded machine).
const SLEEP_DEADLINE: Duration = Duration::from_secs(30);

impl Real {
    /// Asserts that sandbox `id` stays running for [`PAST_SLEEP_AFTER`] (state polls are not
    /// activity).
    async fn stays_running(&self, id: &str, why: &str) {
        let running = throughout(PAST_SLEEP_AFTER, || async {
            self.state(id).await == "running"
        });
        assert!(running.await, "{id} slept although {why}");
    }

    /// Asserts that sandbox `id` falls asleep.
    async fn falls_asleep(&self, id: &str, why: &str) {
        let asleep = eventually(SLEEP_DEADLINE, || async {
            self.state(id).await == "sleeping"
        });
        assert!(asleep.await, "{id} did not sleep {why}");
    }

    /// The `stale` flags of the sandbox's exposed ports, by port.
    async fn stale_flags(&self, id: &str) -> Vec<(u64, bool)> {
        self.ports(id).await["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["port"].as_u64().unwrap(), p["stale"].as_bool().unwrap()))
            .collect()
    }

    /// Opens a forwarded streaming call (`body` JSON, or none) and returns the response once
    /// its headers arrived, so the sandbox runs by then.
    async fn open_stream(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.req_as(&self.key, method, &format!("/v1/sandboxes/{path}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response
    }

    /// Runs `work`, which keeps something open for longer than `sleepAfter`, checking all the
    /// while that sandbox `id` stays running; then that it sleeps once `work` closed it.
    async fn awake_while(&self, id: &str, what: &str, work: impl Future<Output = ()>) {
        let slept = async {
            while self.state(id).await == "running" {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            () = work => {}
            () = slept => panic!("{id} slept with {what} open"),
        }
        self.falls_asleep(id, &format!("once {what} closed")).await;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Real {
    /// Attaches to the terminal of session `session` (started if needed).
    async fn terminal(&self, id: &str, session: &str) -> Ws {
        let url = format!(
            "{}/v1/sandboxes/{id}/ws/pty?sessionId={session}",
            self.base.replace("http://", "ws://")
        );
        let mut request = url.into_client_request().unwrap();
        let bearer = format!("Bearer {}", self.key).parse().unwrap();
        request.headers_mut().insert("authorization", bearer);
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }
}

/// Types `line` into a terminal and reads its output until `expect` appears.
async fn type_line(terminal: &mut Ws, line: &str, expect: &str) {
    let input = format!("{line}\n").into_bytes();
    terminal.send(Message::Binary(input.into())).await.unwrap();
    let mut output = Vec::new();
    while !String::from_utf8_lossy(&output).contains(expect) {
        let frame = tokio::time::timeout(Duration::from_secs(20), terminal.next())
            .await
            .unwrap_or_else(|_| panic!("no {expect:?} in {:?}", String::from_utf8_lossy(&output)))
            .expect("terminal closed")
            .unwrap();
        if let Message::Binary(bytes) = frame {
            output.extend_from_slice(&bytes);
        }
    }
}

/// Reads a response body to its end; returns it as text.
async fn read_to_end(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_awake_dev_server_outlives_sleep_after_until_killed_then_its_port_is_stale() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "aw-dev";
    let info = rs
        .ensure_sandbox(json!({"id": id, "sleepAfter": "2s"}))
        .await;
    assert_eq!(info["keepAliveWhileBusy"], true, "{info}");
    rs.exec(
        id,
        "mkdir -p /workspace/site && echo dev-server-page > /workspace/site/index.html",
    )
    .await;
    let web = rs
        .start_process(id, "cd /workspace/site && exec python3 -m http.server 8000")
        .await;
    let (_, url) = rs
        .expose_ok(id, json!({"port": 8000, "token": "dev"}))
        .await;
    let client = rs.preview_client(&host_of(&url));
    assert_eq!(get_when_up(&client, &url).await.status(), 200);

    // No call for three times sleepAfter: the running server alone keeps the sandbox awake,
    // and its preview URL still answers.
    rs.stays_running(id, "its dev server runs").await;
    let (s, page) = get_json(&client, &url).await;
    assert_eq!((s, page.as_str()), (200, Some("dev-server-page\n")));
    assert_eq!(rs.stale_flags(id).await, [(8000, false)]);

    // Killed, the server no longer keeps it awake.
    let (s, b) = rs
        .call(
            Method::DELETE,
            &format!("/v1/sandboxes/{id}/api/process/{web}"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    rs.falls_asleep(id, "after its only process was killed")
        .await;

    // The exposure went stale at sleep, and stays stale after a wake: nothing listens.
    assert_eq!(rs.stale_flags(id).await, [(8000, true)]);
    let (s, b) = get_json(&client, &url).await;
    assert_error(s, &b, 410, "STALE_PREVIEW_URL");
    rs.exec(id, "true").await;
    assert_eq!(rs.state(id).await, "running");
    assert_eq!(rs.stale_flags(id).await, [(8000, true)]);
    let (s, b) = get_json(&client, &url).await;
    assert_error(s, &b, 410, "STALE_PREVIEW_URL");
    // Started and exposed again (same token, same URL): live.
    rs.start_process(id, "cd /workspace/site && exec python3 -m http.server 8000")
        .await;
    let (_, again) = rs
        .expose_ok(id, json!({"port": 8000, "token": "dev"}))
        .await;
    assert_eq!(again, url);
    assert_eq!(rs.stale_flags(id).await, [(8000, false)]);
    assert_eq!(get_when_up(&client, &url).await.status(), 200);
    // A running server never holds off an explicit stop.
    let (s, b) = rs
        .call(Method::POST, &format!("/v1/sandboxes/{id}/stop"), json!({}))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("sleeping")), "{b}");
    assert_eq!(rs.stale_flags(id).await, [(8000, true)]);
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_awake_off_sleeps_despite_a_process_and_on_sleeps_when_it_ends() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "aw-off";
    let info = rs
        .ensure_sandbox(json!({"id": id, "sleepAfter": "2s", "keepAliveWhileBusy": false}))
        .await;
    assert_eq!(info["keepAliveWhileBusy"], false, "{info}");
    let server = rs
        .start_process(id, "exec python3 -m http.server 8000")
        .await;
    rs.falls_asleep(id, "with keepAliveWhileBusy false").await;
    // The sleep ended the server (its record is archived as killed).
    let (s, b) = rs
        .call(
            Method::GET,
            &format!("/v1/sandboxes/{id}/api/process/{server}"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (s, b["process"]["status"].as_str()),
        (200, Some("killed")),
        "{b}"
    );

    // Turned on: a process that ends by itself (no call marks its end) keeps the sandbox awake
    // while it runs, and it sleeps afterwards.
    let (s, b) = rs
        .call(
            Method::PATCH,
            &format!("/v1/sandboxes/{id}"),
            json!({"keepAliveWhileBusy": true}),
        )
        .await;
    assert_eq!((s, &b["keepAliveWhileBusy"]), (200, &json!(true)), "{b}");
    rs.start_process(id, "sleep 9").await;
    rs.stays_running(id, "a process runs").await;
    rs.falls_asleep(id, "after its process ended").await;
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_awake_open_streams_and_terminals_keep_a_sandbox_awake() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "aw-streams";
    // Processes do not count here, so only the open stream or terminal keeps it awake.
    rs.ensure_sandbox(json!({"id": id, "sleepAfter": "2s", "keepAliveWhileBusy": false}))
        .await;

    let exec = rs
        .open_stream(
            Method::POST,
            &format!("{id}/api/execute/stream"),
            Some(json!({"command": "sleep 6; echo streamed-done"})),
        )
        .await;
    rs.awake_while(id, "a streamed exec", async move {
        assert!(read_to_end(exec).await.contains("streamed-done"));
    })
    .await;

    let tick = rs.start_process(id, "sleep 6; echo process-done").await;
    let logs = rs
        .open_stream(
            Method::GET,
            &format!("{id}/api/process/{tick}/stream"),
            None,
        )
        .await;
    rs.awake_while(id, "a process log stream", async move {
        assert!(read_to_end(logs).await.contains("process-done"));
    })
    .await;

    let watch = rs
        .open_stream(
            Method::POST,
            &format!("{id}/api/watch"),
            Some(json!({"path": "/workspace"})),
        )
        .await;
    rs.awake_while(id, "a file watch", async move {
        let mut events = watch.bytes_stream();
        let first = events.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("watching"));
        tokio::time::sleep(PAST_SLEEP_AFTER).await;
    })
    .await;

    let mut terminal = rs.terminal(id, "term").await;
    rs.awake_while(id, "a terminal", async move {
        // Idle at its prompt: no byte either way. Dropped at the end: the connection closes.
        tokio::time::sleep(PAST_SLEEP_AFTER).await;
        terminal.close(None).await.unwrap();
    })
    .await;

    // A preview WebSocket (an idle dev-server socket, such as hot reload's).
    rs.write_file(id, "/workspace/echo.js", ECHO_JS).await;
    rs.start_process(id, "exec node /workspace/echo.js 5173")
        .await;
    let (_, url) = rs.expose_ok(id, json!({"port": 5173})).await;
    assert_eq!(
        get_when_up(&rs.preview_client(&host_of(&url)), &url)
            .await
            .status(),
        200
    );
    let request = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(rs.addr()).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert!(socket.next().await.unwrap().is_ok(), "no greeting");
    rs.awake_while(id, "a preview WebSocket", async move {
        tokio::time::sleep(PAST_SLEEP_AFTER).await;
        socket.close(None).await.unwrap();
    })
    .await;
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_awake_a_command_in_a_closed_terminal_keeps_a_sandbox_awake() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "aw-term";
    rs.ensure_sandbox(json!({"id": id, "sleepAfter": "2s"}))
        .await;
    // A dev server typed into a terminal that is then closed: the session's shell lives on,
    // running it in the foreground. (`$((6*7))` prints 42 only once the line runs.)
    let mut terminal = rs.terminal(id, "dev").await;
    type_line(
        &mut terminal,
        "echo started-$((6*7)); sleep 600",
        "started-42",
    )
    .await;
    drop(terminal);
    rs.stays_running(id, "a command runs in its terminal").await;

    // Back in the terminal, the command is interrupted; idle at its prompt, the terminal no
    // longer keeps the sandbox awake.
    let mut terminal = rs.terminal(id, "dev").await;
    type_line(&mut terminal, "\u{3}echo back-$((6*7))", "back-42").await;
    drop(terminal);
    rs.falls_asleep(id, "with its terminal idle at the prompt")
        .await;
    rs.stop().await;
}
