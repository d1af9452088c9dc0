//! WebSockets through the control plane with the real agent as a host process: the PTY and the
//! control transport, with the key as a header, as `?access_token=` and as a single-use ticket.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::host_agent::Host;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

impl Host {
    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.server.addr())
    }

    async fn connect(&self, path: &str, bearer: Option<&str>) -> Result<Ws, WsError> {
        let mut request = self.url(path).into_client_request().unwrap();
        if let Some(key) = bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
    }

    async fn ticket(&self, id: &str) -> Value {
        let r = reqwest::Client::new()
            .post(format!(
                "http://{}/v1/sandboxes/{id}/ws-ticket",
                self.server.addr()
            ))
            .bearer_auth(self.server.admin_key())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        r.json().await.unwrap()
    }
}

fn refused_with(result: Result<Ws, WsError>, status: u16) {
    match result {
        Err(WsError::Http(r)) => assert_eq!(r.status().as_u16(), status),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade accepted, expected {status}"),
    }
}

/// A PTY WebSocket with the output read so far and not yet matched. Output arrives in frames
/// that need not line up with what a test waits for (one frame may hold both `20 90` and `42`),
/// so whatever follows a match stays buffered for the next [`Terminal::expect`].
struct Terminal {
    ws: Ws,
    unread: Vec<u8>,
}

impl Terminal {
    fn new(ws: Ws) -> Self {
        Terminal {
            ws,
            unread: Vec::new(),
        }
    }

    /// Reads output until it contains `text`, and consumes it up to the end of the match.
    /// Bytes, not strings, are kept: a frame may end inside a UTF-8 character.
    async fn expect(&mut self, text: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = find(&self.unread, text.as_bytes()) {
                self.unread.drain(..at + text.len());
                return;
            }
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no {text:?} in {:?}", String::from_utf8_lossy(&self.unread))
                })
                .expect("closed")
                .unwrap();
            if let Message::Binary(b) = m {
                self.unread.extend_from_slice(&b);
            }
        }
    }

    /// The next JSON text frame; terminal output read meanwhile stays buffered.
    async fn next_json(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame")
                .expect("closed")
                .unwrap();
            match m {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Binary(b) => self.unread.extend_from_slice(&b),
                _ => {}
            }
        }
    }

    async fn send(&mut self, input: &[u8]) {
        self.ws
            .send(Message::Binary(input.to_vec().into()))
            .await
            .unwrap();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The next JSON text frame.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame")
            .expect("closed")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_through_the_control_plane_with_header_or_access_token() {
    let Some(h) = Host::start().await else { return };
    let key = h.server.admin_key().to_owned();
    let mut ws = Terminal::new(
        h.connect(
            "/v1/sandboxes/ws-pty/ws/pty?sessionId=a&cols=90&rows=20",
            Some(&key),
        )
        .await
        .unwrap(),
    );
    assert_eq!(ws.next_json().await["type"], "ready");
    // Type only once bash shows its prompt: its terminal set-up discards earlier input.
    ws.expect("# ").await;
    ws.send(b"stty size; echo $((6*7))\r").await;
    ws.expect("20 90").await;
    ws.expect("42").await;

    // The key in the query string, for browsers; the terminal is shared by session id.
    let mut second = Terminal::new(
        h.connect(
            &format!("/v1/sandboxes/ws-pty/ws/pty?access_token={key}&sessionId=a"),
            None,
        )
        .await
        .unwrap(),
    );
    second.expect("42").await; // replayed
    second.send(b"exit 7\r").await;
    let exit = loop {
        let v = ws.next_json().await;
        if v["type"] == "exit" {
            break v;
        }
    };
    assert_eq!(exit["code"], 7);

    refused_with(
        h.connect("/v1/sandboxes/ws-pty/ws/pty?sessionId=a", None)
            .await,
        401,
    );
    refused_with(
        h.connect(
            "/v1/sandboxes/ws-pty/ws/pty?sessionId=a&access_token=sp_wrong",
            None,
        )
        .await,
        401,
    );
    // Without sessionId the agent's 400 comes through.
    refused_with(
        h.connect("/v1/sandboxes/ws-pty/ws/pty", Some(&key)).await,
        400,
    );
    // access_token works on WebSocket routes only.
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/sandboxes?access_token={key}",
            h.server.addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn control_transport_with_a_single_use_ticket() {
    let Some(h) = Host::start().await else { return };
    let t = h.ticket("ws-ctl").await;
    let ticket = t["ticket"].as_str().unwrap().to_owned();
    assert!(t["expiresAt"].as_str().unwrap().ends_with('Z'));

    let mut ws = h
        .connect(&format!("/v1/sandboxes/ws-ctl/ws?ticket={ticket}"), None)
        .await
        .unwrap();
    let request = json!({"type": "request", "id": "1", "method": "POST",
        "path": "/api/execute/stream", "body": {"command": "echo via-ws"}});
    ws.send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
    let mut stdout = String::new();
    loop {
        let f = next_json(&mut ws).await;
        assert_eq!(f["id"], "1");
        if f["type"] == "response" {
            assert_eq!(f["status"], 200);
            assert_eq!(f["done"], true);
            break;
        }
        let event: Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
        if event["type"] == "stdout" {
            stdout.push_str(event["data"].as_str().unwrap());
        }
    }
    assert_eq!(stdout, "via-ws\n");

    // Used up; bound to its sandbox; unknown tickets are refused.
    refused_with(
        h.connect(&format!("/v1/sandboxes/ws-ctl/ws?ticket={ticket}"), None)
            .await,
        401,
    );
    let other = h.ticket("ws-ctl").await;
    let other = other["ticket"].as_str().unwrap();
    refused_with(
        h.connect(&format!("/v1/sandboxes/elsewhere/ws?ticket={other}"), None)
            .await,
        401,
    );
    refused_with(
        h.connect("/v1/sandboxes/ws-ctl/ws?ticket=wst_nope", None)
            .await,
        401,
    );
}

/// The events of control-transport request `id` up to its final `response` frame, handed to
/// `each`; returns the final frame.
async fn events_of(
    frames: &mut (impl StreamExt<Item = Result<Message, WsError>> + Unpin),
    id: &str,
    mut each: impl FnMut(Value),
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(120), frames.next())
            .await
            .expect("no frame")
            .expect("closed")
            .unwrap();
        let Message::Text(t) = m else { continue };
        let f: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(f["id"], id, "{f}");
        match f["type"].as_str() {
            Some("stream") => each(serde_json::from_str(f["data"].as_str().unwrap()).unwrap()),
            _ => return f,
        }
    }
}

fn frame(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

/// Incremental stdin over the control transport (sandpit extension): `cat` echoes each chunk
/// before its input ends, `eof` ends it; frames for a request that reads no stdin are refused;
/// `stdinStream` over plain HTTP is refused with the routes that do take stdin.
#[tokio::test(flavor = "multi_thread")]
async fn control_transport_streams_stdin_interactively() {
    let Some(h) = Host::start().await else { return };
    let key = h.server.admin_key().to_owned();
    let mut ws = h
        .connect("/v1/sandboxes/ws-stdin/ws", Some(&key))
        .await
        .unwrap();
    let request = json!({"type": "request", "id": "cat", "method": "POST",
        "path": "/api/execute/stream", "body": {"command": "cat", "stdinStream": true}});
    ws.send(frame(request)).await.unwrap();
    for chunk in ["hello\n", "wörld\n"] {
        ws.send(frame(json!({"type": "stdin", "id": "cat", "data": chunk})))
            .await
            .unwrap();
        // The echo comes back while stdin is still open.
        let mut echoed = String::new();
        while echoed != chunk {
            let f = next_json(&mut ws).await;
            assert_eq!(f["type"], "stream", "{f}");
            let event: Value = serde_json::from_str(f["data"].as_str().unwrap()).unwrap();
            if event["type"] == "stdout" {
                echoed.push_str(event["data"].as_str().unwrap());
            }
            assert!(chunk.starts_with(&echoed), "{echoed:?}");
        }
    }
    ws.send(frame(json!({"type": "stdin", "id": "cat", "eof": true})))
        .await
        .unwrap();
    let mut exit = None;
    let last = events_of(&mut ws, "cat", |e| {
        if e["type"] == "complete" {
            exit = e["exitCode"].as_i64();
        }
    })
    .await;
    assert_eq!(
        (last["type"].as_str(), last["status"].as_i64()),
        (Some("response"), Some(200))
    );
    assert_eq!(exit, Some(0));

    // A finished request, and one that never asked for stdin, refuse stdin frames.
    ws.send(frame(json!({"type": "stdin", "id": "cat", "data": "late"})))
        .await
        .unwrap();
    let f = next_json(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["code"].as_str()),
        (Some("error"), Some("INVALID_REQUEST"))
    );
    assert!(
        f["message"].as_str().unwrap().contains("stdinStream"),
        "{f}"
    );

    // Plain HTTP cannot stream stdin: a clear 400 that names the alternatives.
    let (s, b) = h
        .call(
            reqwest::Method::POST,
            "/v1/sandboxes/ws-stdin/api/execute/stream",
            json!({"command": "cat", "stdinStream": true}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let message = b["message"].as_str().unwrap();
    assert!(
        message.contains("/ws") && message.contains("/api/process/{id}/stdin"),
        "{b}"
    );
}

/// 10 MiB of random bytes through streamed stdin and back as base64 output, in a session and
/// sessionless: byte-identical (same sha256). Writing and reading run concurrently, as a client
/// of a pipe must.
#[tokio::test(flavor = "multi_thread")]
async fn control_transport_stdin_round_trips_10_mib_byte_exact() {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(h) = Host::start().await else { return };
    let key = h.server.admin_key().to_owned();
    // xorshift: incompressible, every byte value, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let input: Vec<u8> = (0..10 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    for session in ["default", "__DISABLE_SESSION__"] {
        let ws = h
            .connect("/v1/sandboxes/ws-bulk/ws", Some(&key))
            .await
            .unwrap();
        let (mut tx, mut rx) = ws.split();
        let request = json!({"type": "request", "id": "bulk", "method": "POST",
            "path": "/api/execute/stream", "body": {"command": "cat", "stdinStream": true,
            "sessionId": session, "encoding": "base64"}});
        tx.send(frame(request)).await.unwrap();
        let chunks: Vec<Message> = input
            .chunks(64 << 10)
            .map(|c| frame(json!({"type": "stdin", "id": "bulk", "dataBase64": b64.encode(c)})))
            .collect();
        let writer = tokio::spawn(async move {
            for chunk in chunks {
                tx.send(chunk).await.unwrap();
            }
            tx.send(frame(json!({"type": "stdin", "id": "bulk", "eof": true})))
                .await
                .unwrap();
            tx
        });
        let mut output = Vec::new();
        let mut exit = None;
        let last = events_of(&mut rx, "bulk", |e| match e["type"].as_str() {
            Some("stdout") => {
                assert_eq!(e["encoding"], "base64", "{e}");
                output.extend(b64.decode(e["data"].as_str().unwrap()).unwrap());
            }
            Some("complete") => exit = e["exitCode"].as_i64(),
            _ => {}
        })
        .await;
        let _tx = writer.await.unwrap();
        assert_eq!(last["status"], 200, "{last}");
        assert_eq!(exit, Some(0), "{session}");
        assert_eq!(output.len(), input.len(), "{session}");
        assert_eq!(
            hex::encode(Sha256::digest(&output)),
            hex::encode(Sha256::digest(&input)),
            "{session}"
        );
        assert!(output == input, "{session}");
    }
}
