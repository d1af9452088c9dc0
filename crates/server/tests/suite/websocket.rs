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
