//! `limits.diskMb` end to end: the writable layer is capped, survives sleep, and leaves no loop
//! device or mount on the host.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::e2e::Real;
use super::eventually;

fn host_mentions(needle: &str) -> bool {
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    loops.contains(needle) || mounts.contains(needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_disk_limit() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let needle = rs.data_dir.to_string_lossy().into_owned();
    let body = json!({"id": "e2e-disk", "keepAlive": true, "limits": {"diskMb": 64}});
    let (s, b) = rs.call(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");

    let out = rs
        .exec(
            "e2e-disk",
            "dd if=/dev/zero of=/workspace/big bs=1M count=100 2>&1",
        )
        .await;
    assert_ne!(out["exitCode"], 0, "{out}");
    let text = format!("{}{}", out["stdout"], out["stderr"]);
    assert!(text.contains("No space left on device"), "{out}");

    // The disk is full: an upload answers NO_SPACE. The answer may come (and the connection
    // close) before the client finished sending, so send raw, ignore EPIPE, read the answer, and
    // keep this connection out of the harness's pool.
    let body = vec![7u8; 4 << 20];
    let addr = rs.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /v1/sandboxes/e2e-disk/api/files/raw?path=/workspace/up HTTP/1.1\r\n\
         Host: sandpit\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        rs.key,
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("\"NO_SPACE\""), "{answer}");

    let out = rs
        .exec("e2e-disk", "rm /workspace/big && echo kept > /workspace/f")
        .await;
    assert_eq!(out["exitCode"], 0, "{out}");

    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes/e2e-disk/stop", json!({}))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("sleeping")), "{b}");
    let gone = eventually(Duration::from_secs(5), || async { !host_mentions(&needle) });
    assert!(gone.await, "loop device or mount left after stop");
    let out = rs.exec("e2e-disk", "cat /workspace/f").await;
    assert_eq!(out["stdout"], "kept\n", "{out}");

    let r = rs
        .req_as(&rs.key, Method::DELETE, "/v1/sandboxes/e2e-disk")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let gone = eventually(Duration::from_secs(5), || async { !host_mentions(&needle) });
    assert!(gone.await, "loop device or mount left after destroy");
    assert!(!rs.data_dir.join("sandboxes/e2e-disk").exists());
    rs.stop().await;
}
