//! Raw file bytes: `GET`/`PUT /api/files/raw`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use rand::RngCore;
use tokio::io::AsyncWriteExt;

use super::harness::{Agent, Resp};

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["httpStatus"], status, "{v}");
}

/// Files in `dir` whose name looks like an upload's temp file.
fn temp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sandpit-write-"))
        .collect()
}

#[tokio::test]
async fn fifty_mib_round_trip_creates_parents_and_streams_back() {
    let a = Agent::start();
    let content = random_bytes(50 << 20);
    let r = a
        .raw(
            "PUT",
            "/api/files/raw?path=deep/er/big.bin",
            content.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["path"], "deep/er/big.bin");
    assert_eq!(v["size"], 50 << 20);
    assert!(std::fs::read(a.ws("deep/er/big.bin")).unwrap() == content);
    assert!(temp_files(&a.ws("deep/er")).is_empty());

    let absolute = a.ws("deep/er/big.bin");
    let r = a
        .get(&format!(
            "/api/files/raw?path={}",
            absolute.to_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    assert_eq!(r.headers["content-length"], (50u64 << 20).to_string());
    assert!(r.body == content, "downloaded bytes differ");
}

#[tokio::test]
async fn overwrite_keeps_permissions_and_encoded_names_work() {
    let a = Agent::start();
    let path = a.ws("run me é.sh");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
    let query = "/api/files/raw?path=run%20me%20%C3%A9.sh";
    let r = a.raw("PUT", query, "#!/bin/sh\necho new\n").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "#!/bin/sh\necho new\n"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o750);
    // An empty body makes an empty file; an empty file downloads as zero bytes.
    let r = a.raw("PUT", "/api/files/raw?path=empty", "").await;
    assert_eq!(r.json()["size"], 0);
    let r = a.get("/api/files/raw?path=empty").await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.headers["content-length"], "0");
    // Relative paths follow the session's cwd.
    a.sh("s", "mkdir -p /tmp/sub && cd /tmp/sub && echo hi > f")
        .await;
    let r = a.get("/api/files/raw?path=f&sessionId=s").await;
    assert_eq!(r.body.as_ref(), b"hi\n");
}

#[tokio::test]
async fn errors_are_envelopes() {
    let a = Agent::start();
    assert_error(
        &a.get("/api/files/raw?path=nope.bin").await,
        404,
        "FILE_NOT_FOUND",
    );
    std::fs::create_dir(a.ws("d")).unwrap();
    assert_error(&a.get("/api/files/raw?path=d").await, 400, "IS_DIRECTORY");
    assert_error(
        &a.raw("PUT", "/api/files/raw?path=d", "x").await,
        400,
        "IS_DIRECTORY",
    );
    assert_error(
        &a.get("/api/files/raw?path=a%00b").await,
        400,
        "VALIDATION_FAILED",
    );
    assert_error(&a.get("/api/files/raw").await, 400, "VALIDATION_FAILED");
    // A FIFO is not a file to stream (and must not hang the request).
    let fifo = a.ws("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let r = tokio::time::timeout(Duration::from_secs(10), a.get("/api/files/raw?path=fifo"))
        .await
        .expect("a FIFO download must not hang");
    assert_error(&r, 400, "VALIDATION_FAILED");
    // A parent that is a file cannot hold the upload (the same answer as /api/write).
    std::fs::write(a.ws("plain"), "x").unwrap();
    let r = a.raw("PUT", "/api/files/raw?path=plain/child", "x").await;
    assert_error(&r, 409, "FILE_EXISTS");
}

#[tokio::test]
async fn aborted_upload_leaves_nothing_behind() {
    let a = Agent::start();
    std::fs::write(a.ws("keep.bin"), "original").unwrap();
    for name in ["new.bin", "keep.bin"] {
        let mut stream = tokio::net::UnixStream::connect(&a.socket).await.unwrap();
        let head = format!(
            "PUT /api/files/raw?path={name} HTTP/1.1\r\nhost: sandbox\r\n\
             content-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            10 << 20
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&random_bytes(3 << 20)).await.unwrap();
        stream.flush().await.unwrap();
        // Let the agent write some of it before the client goes away.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(stream);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !temp_files(&a.workspace).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "temp files left: {:?}",
            temp_files(&a.workspace)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!a.ws("new.bin").exists(), "a partial upload became a file");
    assert_eq!(
        std::fs::read_to_string(a.ws("keep.bin")).unwrap(),
        "original"
    );
    // The agent still serves.
    let r = a.get("/api/files/raw?path=keep.bin").await;
    assert_eq!(r.body.as_ref(), b"original");
}

/// Root only: mounts a 1 MiB tmpfs in the workspace and fills it.
#[tokio::test]
async fn serial_full_disk_is_no_space_and_leaves_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("\n!!! SKIPPED: needs root (tmpfs mount) !!!\n");
        return;
    }
    let a = Agent::start();
    let small = a.ws("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success());
    let body = random_bytes(4 << 20);
    let answer = a
        .send_refusable("PUT", "/api/files/raw?path=small/f.bin", &body)
        .await;
    let leftovers = std::fs::read_dir(&small).unwrap().count();
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert!(answer.contains("\"code\":\"NO_SPACE\""), "{answer}");
    assert_eq!(leftovers, 0, "the failed upload left files behind");
}

/// An upload refused before its first byte is written (here: the target is a directory) still
/// reads the body it was sent before answering, so a sender that writes the whole body first
/// (the control plane's proxy, any HTTP client) gets the answer instead of a broken
/// connection (which the control plane reported as `SANDBOX_UNAVAILABLE`).
#[tokio::test]
async fn an_upload_refused_up_front_is_answered_after_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Agent::start();
    std::fs::create_dir(a.ws("dir")).unwrap();
    let body = random_bytes(8 << 20);
    let mut stream = tokio::net::UnixStream::connect(&a.socket).await.unwrap();
    let head = format!(
        "PUT /api/files/raw?path=dir HTTP/1.1\r\nHost: sandbox\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body)
        .await
        .expect("the agent stopped reading the body before answering");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"IS_DIRECTORY\""), "{answer}");
    assert!(a.ws("dir").is_dir());
}
