//! `/ws/pty`: terminals over WebSocket, driven by a real WebSocket client over the agent's
//! Unix socket.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::harness::Agent;

pub type Ws = WebSocketStream<UnixStream>;

/// Patience for anything a loaded machine's shell does.
const WAIT: Duration = Duration::from_secs(20);

/// Opens a WebSocket to `path` (with query) on the agent.
pub async fn connect(a: &Agent, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let stream = UnixStream::connect(&a.socket).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://sandbox{path}"), stream).await?;
    Ok(ws)
}

/// A terminal client: everything received so far.
pub struct Term {
    pub ws: Ws,
    /// Terminal output (binary frames), lossily decoded.
    pub output: String,
    /// Status messages (text frames).
    pub status: Vec<Value>,
    pub closed: Option<Option<u16>>,
}

impl Term {
    /// Attaches and reads up to `ready`; `output` then holds the replay.
    pub async fn attach(a: &Agent, query: &str) -> Term {
        let ws = connect(a, &format!("/ws/pty?{query}")).await.unwrap();
        let mut t = Term {
            ws,
            output: String::new(),
            status: Vec::new(),
            closed: None,
        };
        t.until(|t| t.status.iter().any(|s| s["type"] == "ready"))
            .await;
        t
    }

    async fn recv(&mut self) -> bool {
        match self.ws.next().await {
            Some(Ok(Message::Binary(b))) => self.output.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Text(t))) => self.status.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                self.closed = Some(frame.map(|f| u16::from(f.code)));
                return false;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                self.closed.get_or_insert(None);
                return false;
            }
        }
        true
    }

    /// Reads until `done` holds (panics after [`WAIT`] or if the socket closes first).
    pub async fn until(&mut self, done: impl Fn(&Term) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            let open = tokio::time::timeout_at(deadline, self.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out; output {:?}, status {:?}",
                        self.output, self.status
                    )
                });
            if !open && !done(self) {
                panic!(
                    "closed ({:?}); output {:?}, status {:?}",
                    self.closed, self.output, self.status
                );
            }
        }
    }

    /// Waits for `text` in the output.
    pub async fn expect(&mut self, text: &str) {
        self.until(|t| t.output.contains(text)).await;
    }

    pub async fn type_(&mut self, keys: &str) {
        self.ws
            .send(Message::Binary(keys.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }

    pub async fn control(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// Runs `command` and returns the text between two markers it prints (`$((…))` keeps the
    /// echoed command line from matching).
    pub async fn run(&mut self, command: &str) -> String {
        let n = rand_tag();
        let start = format!("<{n}>");
        let end = format!("</{n}>");
        self.type_(&format!(
            "echo \"<$(({n}))>\"; {command}; echo \"</$(({n}))>\"\r"
        ))
        .await;
        self.until(|t| t.output.contains(&end)).await;
        let from = self.output.rfind(&start).unwrap() + start.len();
        let to = self.output.rfind(&end).unwrap();
        self.output[from..to].trim().replace("\r\n", "\n")
    }
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn typed_command_output_and_terminal_env() {
    let a = Agent::start();
    let mut t = Term::attach(&a, "sessionId=t1").await;
    t.type_("echo $((6*7))\r").await;
    t.expect("42").await;
    assert_eq!(
        t.run("echo $TERM; tty -s && echo tty").await,
        "xterm-256color\ntty"
    );
    assert_eq!(t.run("pwd").await, a.workspace.display().to_string());
}

#[tokio::test]
async fn size_from_query_and_resize() {
    let a = Agent::start();
    let mut t = Term::attach(&a, "sessionId=sz&cols=100&rows=30").await;
    assert_eq!(t.run("stty size").await, "30 100");
    t.control(json!({"type": "resize", "cols": 120, "rows": 40}))
        .await;
    // Resize frames and keystrokes are handled in order on one connection.
    assert_eq!(t.run("stty size").await, "40 120");
    // Default size.
    let mut d = Term::attach(&a, "sessionId=default-size").await;
    assert_eq!(d.run("stty size").await, "24 80");
    // Garbage control messages are ignored.
    d.control(json!({"type": "bogus"})).await;
    d.ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(d.run("echo still $((1+1))").await, "still 2");
}

#[tokio::test]
async fn replay_on_reconnect_and_broadcast() {
    let a = Agent::start();
    let mut first = Term::attach(&a, "sessionId=r").await;
    first.type_("echo $((1000+234))\r").await;
    first.expect("1234").await;
    drop(first);

    let mut second = Term::attach(&a, "sessionId=r").await;
    // The replay came before `ready`.
    assert!(second.output.contains("1234"), "{:?}", second.output);
    let mut third = Term::attach(&a, "sessionId=r").await;
    second.type_("echo $((4000+321))\r").await;
    second.expect("4321").await;
    // Typed by one client, seen by the other.
    third.expect("4321").await;
    third.type_("echo $((5000+555))\r").await;
    second.expect("5555").await;
}

#[tokio::test]
async fn sessions_have_independent_terminals() {
    let a = Agent::start();
    let mut s1 = Term::attach(&a, "sessionId=one").await;
    let mut s2 = Term::attach(&a, "sessionId=two").await;
    let pid1 = s1.run("echo $$").await;
    let pid2 = s2.run("echo $$").await;
    assert_ne!(pid1, pid2);
    s1.run("export X=only-one").await;
    assert_eq!(s2.run("echo \"[$X]\"").await, "[]");
    assert_eq!(s1.run("echo \"[$X]\"").await, "[only-one]");
    assert!(!s2.output.contains("only-one"));
}

#[tokio::test]
async fn exit_status_is_sent_then_a_fresh_shell_starts() {
    let a = Agent::start();
    let mut t = Term::attach(&a, "sessionId=ex").await;
    let pid = t.run("echo $$").await;
    t.type_("exit 3\r").await;
    t.until(|t| t.closed.is_some()).await;
    let exit: Vec<&Value> = t.status.iter().filter(|s| s["type"] == "exit").collect();
    assert_eq!(exit.len(), 1, "{:?}", t.status);
    assert_eq!(exit[0]["code"], 3);
    assert_eq!(t.closed, Some(Some(1000)));

    let mut again = Term::attach(&a, "sessionId=ex").await;
    assert_ne!(again.run("echo $$").await, pid);
    // A signal kills the shell: the shell-style code.
    again.type_("kill -9 $$\r").await;
    again.until(|t| t.closed.is_some()).await;
    let exit = again.status.iter().find(|s| s["type"] == "exit").unwrap();
    assert_eq!(exit["code"], 128 + 9);
}

#[tokio::test]
async fn missing_session_id_is_400_and_bad_shell_is_1011() {
    let a = Agent::start();
    let r = a.get("/ws/pty?cols=80").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "VALIDATION_FAILED");
    match connect(&a, "/ws/pty").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade without sessionId accepted"),
    }

    let ws = connect(&a, "/ws/pty?sessionId=bad&shell=/nonexistent/shell")
        .await
        .unwrap();
    let mut t = Term {
        ws,
        output: String::new(),
        status: Vec::new(),
        closed: None,
    };
    t.until(|t| t.closed.is_some()).await;
    assert_eq!(t.status.len(), 1, "{:?}", t.status);
    assert_eq!(t.status[0]["type"], "error");
    // What failed, then why: the cause is printed once.
    let message = t.status[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("could not start /nonexistent/shell: "),
        "{message}"
    );
    assert_eq!(
        message.matches("No such file or directory").count(),
        1,
        "{message}"
    );
    assert_eq!(t.closed, Some(Some(1011)));
}

#[tokio::test]
async fn terminal_starts_in_the_session_cwd_and_env_and_dies_with_it() {
    let a = Agent::start();
    std::fs::create_dir(a.ws("proj")).unwrap();
    let r = a
        .post(
            "/api/session/create",
            json!({"id": "dev", "cwd": a.ws("proj").to_str().unwrap(), "env": {"GREETING": "hi"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut t = Term::attach(&a, "sessionId=dev").await;
    assert_eq!(
        t.run("pwd; echo $GREETING").await,
        format!("{}\nhi", a.ws("proj").display())
    );
    let r = a
        .post("/api/session/delete", json!({"sessionId": "dev"}))
        .await;
    assert_eq!(r.status, 200);
    t.until(|t| t.closed.is_some()).await;
    let exit = t.status.iter().find(|s| s["type"] == "exit").unwrap();
    assert_eq!(exit["code"], 128 + 9);
}

#[tokio::test]
async fn replay_keeps_only_the_last_256_kib() {
    let a = Agent::start();
    let mut t = Term::attach(&a, "sessionId=big").await;
    // ~400 KiB of output, then a marker.
    t.type_("head -c 409600 /dev/zero | tr '\\0' x; echo; echo $((777*1000))\r")
        .await;
    t.expect("777000").await;
    let later = Term::attach(&a, "sessionId=big").await;
    let replay = later.output.len();
    assert!(
        replay <= 256 * 1024 && replay > 200 * 1024,
        "replay of {replay} bytes"
    );
    assert!(later.output.contains("777000"));
}
