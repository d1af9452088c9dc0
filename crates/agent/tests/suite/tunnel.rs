//! `GET /tunnel/{port}`: an upgraded connection becomes a byte pipe to a loopback port.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

use super::harness::Agent;

/// Sends the upgrade request by hand and returns the stream and the response head.
async fn open(agent: &Agent, port: u16, upgrade: &str) -> (UnixStream, String) {
    let mut s = UnixStream::connect(&agent.socket).await.unwrap();
    let head = format!(
        "GET /tunnel/{port} HTTP/1.1\r\nHost: sandbox\r\nConnection: upgrade\r\nUpgrade: {upgrade}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Read byte by byte up to the end of the head: what follows belongs to the pipe.
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&got)
        );
        got.push(b[0]);
    }
    (s, String::from_utf8(got).unwrap())
}

#[tokio::test]
async fn tunnel_pipes_bytes_both_ways() {
    let agent = Agent::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut c, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = c.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&buf[..n]);
            c.write_all(&out).await.unwrap();
        }
    });
    let (mut s, head) = open(&agent, port, "sandpit-tunnel").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for word in ["hello", "again"] {
        s.write_all(word.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 5 + word.len()];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, format!("echo:{word}").as_bytes());
    }
}

#[tokio::test]
async fn tunnel_to_a_closed_port_is_a_clear_502() {
    let agent = Agent::start();
    // A port that was free a moment ago: nothing listens on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (mut s, head) = open(&agent, port, "sandpit-tunnel").await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let mut body = vec![0u8; 4096];
    let n = s.read(&mut body).await.unwrap();
    let body = String::from_utf8_lossy(&body[..n]);
    assert!(body.contains("SERVICE_NOT_RESPONDING"), "{body}");
    assert!(
        body.contains(&format!("nothing is listening on port {port}")),
        "{body}"
    );
}

#[tokio::test]
async fn tunnel_needs_the_upgrade_header_and_a_valid_port() {
    let agent = Agent::start();
    let r = agent.get("/tunnel/8080").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = agent.get("/tunnel/99999").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "INVALID_PORT");
}
