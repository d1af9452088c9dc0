//! The egress bridge on the host: loopback TCP spliced to a Unix socket.

use std::time::Duration;

use sandpit_agent::egress_bridge::serve;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};

async fn bridge(socket: std::path::PathBuf) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, socket));
    addr
}

#[tokio::test]
async fn splices_each_connection_to_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress.sock");
    let upstream = UnixListener::bind(&path).unwrap();
    // Upstream: answers each connection with what it read, upper-cased, then closes.
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = upstream.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64];
                let n = conn.read(&mut buf).await.unwrap();
                conn.write_all(&buf[..n].to_ascii_uppercase())
                    .await
                    .unwrap();
            });
        }
    });
    let addr = bridge(path).await;
    // Two connections at once, each with its own upstream connection.
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    a.write_all(b"connect a").await.unwrap();
    b.write_all(b"connect b").await.unwrap();
    let (mut ra, mut rb) = (String::new(), String::new());
    tokio::time::timeout(Duration::from_secs(5), async {
        a.read_to_string(&mut ra).await.unwrap();
        b.read_to_string(&mut rb).await.unwrap();
    })
    .await
    .unwrap();
    assert_eq!((ra.as_str(), rb.as_str()), ("CONNECT A", "CONNECT B"));
}

#[tokio::test]
async fn without_the_socket_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let addr = bridge(dir.path().join("missing.sock")).await;
    for _ in 0..2 {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let _ = conn.write_all(b"GET http://x/ HTTP/1.1\r\n\r\n").await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
            .await
            .expect("the bridge must close the connection");
        assert!(read.is_err() || buf.is_empty(), "{buf:?}");
    }
}
