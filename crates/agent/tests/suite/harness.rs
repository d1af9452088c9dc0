//! Starts `sandpit-agent serve` in a temp dir and talks HTTP/1.1 to it over the Unix socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_sandpit-agent");

/// A running agent; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    /// `None` for a client of an agent started elsewhere.
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub workspace: PathBuf,
    pub _dir: Option<tempfile::TempDir>,
}

/// A buffered response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Agent {
    pub fn start() -> Agent {
        Agent::start_with(|_| {})
    }

    /// Starts the agent; `tweak` may change the command (env, wrapper...).
    pub fn start_with(tweak: impl FnOnce(&mut Command)) -> Agent {
        Agent::start_wrapped(&[], tweak)
    }

    /// Starts the agent behind `wrapper` (e.g. `unshare --pid --fork`).
    pub fn start_wrapped(wrapper: &[&str], tweak: impl FnOnce(&mut Command)) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let workspace = dir.path().join("workspace");
        std::fs::create_dir(&workspace).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--workspace")
            .arg(&workspace);
        cmd.env_remove("COMMAND_TIMEOUT_MS").stdin(Stdio::null());
        tweak(&mut cmd);
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent {
            child: Some(child),
            socket,
            workspace,
            _dir: Some(dir),
        }
    }

    /// A client for an agent listening on `socket` (not stopped on drop).
    pub fn client_for(socket: &Path) -> Agent {
        Agent {
            child: None,
            socket: socket.to_path_buf(),
            workspace: PathBuf::from("/workspace"),
            _dir: None,
        }
    }

    pub fn ws(&self, rel: &str) -> PathBuf {
        self.workspace.join(rel)
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> hyper::Response<hyper::body::Incoming> {
        let stream = UnixStream::connect(&self.socket).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    }

    pub async fn raw(&self, method: &str, path: &str, body: impl Into<Bytes>) -> Resp {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://sandbox{path}"))
            .header("content-type", "application/json")
            .header("x-sandbox-id", "test")
            .body(Full::new(body.into()))
            .unwrap();
        let resp = self.send(req).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sends a request whose body the agent may refuse before reading it all (413, a full
    /// disk): it answers early and closes, so the client's write of the rest may fail (EPIPE).
    /// Sends raw, ignores that, and returns everything the agent answered.
    pub async fn send_refusable(&self, method: &str, path: &str, body: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = UnixStream::connect(&self.socket).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: sandbox\r\nContent-Type: application/json\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(body).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.raw("POST", path, body.to_string()).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.raw("GET", path, Bytes::new()).await
    }

    /// POST /api/execute and the JSON answer (asserting 200).
    pub async fn exec(&self, body: Value) -> Value {
        let r = self.post("/api/execute", body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// Runs `command` in session `session` and returns (stdout, stderr, exitCode).
    pub async fn sh(&self, session: &str, command: &str) -> (String, String, i64) {
        let v = self
            .exec(serde_json::json!({"command": command, "sessionId": session}))
            .await;
        (
            v["stdout"].as_str().unwrap().to_owned(),
            v["stderr"].as_str().unwrap().to_owned(),
            v["exitCode"].as_i64().unwrap(),
        )
    }

    /// Opens an SSE stream; events are read with [`Sse::next`].
    pub async fn sse(&self, path: &str, body: Value) -> Sse {
        self.sse_with("POST", path, Bytes::from(body.to_string()))
            .await
    }

    /// Opens an SSE stream with a GET request.
    pub async fn sse_get(&self, path: &str) -> Sse {
        self.sse_with("GET", path, Bytes::new()).await
    }

    async fn sse_with(&self, method: &str, path: &str, body: Bytes) -> Sse {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://sandbox{path}"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        let resp = self.send(req).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Sse {
            body: resp.into_body(),
            buf: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// All events of an SSE stream.
    pub async fn sse_all(&self, path: &str, body: Value) -> Vec<Value> {
        let mut s = self.sse(path, body).await;
        let mut events = Vec::new();
        while let Some(e) = s.next().await {
            events.push(e);
        }
        s.assert_framing();
        events
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // The agent, or the agent behind a wrapper like `unshare --fork` (which ignores SIGTERM).
        let pid = child.id() as i32;
        let mut targets = children_of(pid);
        targets.push(pid);
        for pid in targets {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// An SSE response body read event by event.
pub struct Sse {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    raw: Vec<u8>,
}

impl Sse {
    /// The next event's JSON, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = std::str::from_utf8(&frame).unwrap();
                let json = text
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("bad frame {text:?}"));
                return Some(serde_json::from_str(json.trim_end()).unwrap());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                        self.raw.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => panic!("stream error: {e}"),
                None => {
                    assert!(self.buf.is_empty(), "trailing bytes {:?}", self.buf);
                    return None;
                }
            }
        }
    }

    /// Every frame was exactly `data: <json>\n\n`.
    pub fn assert_framing(&self) {
        let text = String::from_utf8(self.raw.clone()).unwrap();
        for frame in text.split_terminator("\n\n") {
            assert!(frame.starts_with("data: {"), "frame {frame:?}");
            assert!(!frame.contains('\n'), "multi-line frame {frame:?}");
        }
    }
}

/// Processes whose parent is `parent` and that are zombies.
pub fn zombie_children(parent: i32) -> Vec<i32> {
    children_where(parent, |state| state.starts_with('Z'))
}

/// Direct children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    children_where(parent, |_| true)
}

fn children_where(parent: i32, state_matches: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) =
            std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if field("PPid:").as_deref() == Some(&parent.to_string())
            && field("State:").is_some_and(|s| state_matches(&s))
        {
            zombies.push(pid);
        }
    }
    zombies
}
