//! Raw file transfers through the control plane (`GET`/`PUT /v1/sandboxes/{id}/files/*`) with
//! the real sandbox (see `e2e.rs` for what the `Real` harness needs).

use bytes::Bytes;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::assert_error;
use super::e2e::Real;

const MIB: u64 = 1 << 20;
const PIECE: usize = 256 * 1024;

/// A deterministic stream of `total` bytes: one random block, each piece stamped with its
/// index so no two pieces are equal (reordering or repetition would change the hash).
fn pieces(total: u64) -> impl Iterator<Item = Bytes> {
    let mut block = vec![0u8; PIECE];
    rand::Rng::fill(&mut rand::rng(), &mut block[..]);
    let count = total.div_ceil(PIECE as u64);
    (0..count).map(move |i| {
        let mut piece = block.clone();
        piece[..8].copy_from_slice(&i.to_le_bytes());
        let len = (total - i * PIECE as u64).min(PIECE as u64) as usize;
        piece.truncate(len);
        Bytes::from(piece)
    })
}

/// `(VmRSS, VmHWM)` of this process in bytes: the server runs in it.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so it measures the peak of what follows.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

fn files_url(id: &str, path: &str) -> String {
    format!("/v1/sandboxes/{id}/files/{path}")
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_files_200_mib_round_trip_in_flat_memory() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "files-big";
    rs.exec(id, "true").await;
    let total = 200 * MIB;

    // Upload, hashing what is sent.
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
    let sent = hasher.clone();
    let body = futures::stream::iter(pieces(total)).map(move |piece| {
        sent.lock().unwrap().update(&piece);
        Ok::<_, std::io::Error>(piece)
    });
    reset_peak();
    let (base_rss, _) = rss();
    let started = std::time::Instant::now();
    let r = rs
        .req_as(
            &rs.key,
            Method::PUT,
            &files_url(id, "%2Fworkspace%2Fdir%2Fbig.bin"),
        )
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let up_secs = started.elapsed().as_secs_f64();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["size"], total, "{v}");
    assert_eq!(v["path"], "/workspace/dir/big.bin", "{v}");
    let (_, up_peak) = rss();
    let sent_hash = hex::encode(hasher.lock().unwrap().clone().finalize());

    // The file in the sandbox is exactly what was sent.
    let out = rs.exec(id, "sha256sum /workspace/dir/big.bin").await;
    let in_sandbox = out["stdout"].as_str().unwrap();
    assert!(
        in_sandbox.starts_with(&sent_hash),
        "{in_sandbox} vs {sent_hash}"
    );

    // Download (relative to the workspace), hashing what arrives.
    reset_peak();
    let started = std::time::Instant::now();
    let r = rs
        .req_as(&rs.key, Method::GET, &files_url(id, "dir/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.content_length(), Some(total));
    let mut body = r.bytes_stream();
    let mut received = Sha256::new();
    let mut n = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece.unwrap();
        n += piece.len() as u64;
        received.update(&piece);
    }
    let down_secs = started.elapsed().as_secs_f64();
    let (_, down_peak) = rss();
    assert_eq!(n, total);
    assert_eq!(hex::encode(received.finalize()), sent_hash);

    let mb = total as f64 / 1e6;
    let growth = |peak: u64| peak.saturating_sub(base_rss) / MIB;
    eprintln!(
        "200 MiB: upload {:.0} MB/s, download {:.0} MB/s; RSS growth: upload {} MiB, download {} MiB",
        mb / up_secs,
        mb / down_secs,
        growth(up_peak),
        growth(down_peak)
    );
    // Nothing on the way holds the file: the whole process (server and this client) grows by
    // a small fraction of its size.
    assert!(
        growth(up_peak) < 40,
        "upload grew RSS by {} MiB",
        growth(up_peak)
    );
    assert!(
        growth(down_peak) < 40,
        "download grew RSS by {} MiB",
        growth(down_peak)
    );
    rs.stop().await;
}

async fn get_text(rs: &Real, id: &str, path: &str) -> (u16, String) {
    let r = rs
        .req_as(&rs.key, Method::GET, &files_url(id, path))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_files_paths_errors_and_auth() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "files-errs";
    let put = |path: &str, key: &str, body: &'static str| {
        rs.req_as(key, Method::PUT, &files_url(id, path)).body(body)
    };
    let json = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };

    // A relative path lands in the workspace; parents are created.
    let (s, v) = json(put("a%20b/c.txt", &rs.key, "hello").send().await.unwrap()).await;
    assert_eq!(s, 200, "{v}");
    let out = rs.exec(id, "cat '/workspace/a b/c.txt'").await;
    assert_eq!(out["stdout"], "hello");
    // Absolute paths: an encoded or a doubled leading slash.
    for path in ["%2Fworkspace%2Fa%20b%2Fc.txt", "/workspace/a%20b/c.txt"] {
        assert_eq!(
            get_text(&rs, id, path).await,
            (200, "hello".into()),
            "{path}"
        );
    }

    // A sleeping sandbox is woken by a download.
    let (s, v) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/stop"),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(rs.state(id).await, "sleeping");
    let r = get_text(&rs, id, "a%20b/c.txt").await;
    assert_eq!(r, (200, "hello".to_owned()));
    assert_eq!(rs.state(id).await, "running");

    // HEAD answers the download's headers.
    let r = rs
        .req_as(&rs.key, Method::HEAD, &files_url(id, "a%20b/c.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "5");

    // An upload whose body breaks off leaves neither the file nor a temp file, and an existing
    // file keeps its content.
    for name in ["fresh.bin", "a%20b%2Fc.txt"] {
        let body = futures::stream::iter(pieces(3 * MIB).map(Ok::<_, std::io::Error>)).chain(
            futures::stream::once(async { Err(std::io::Error::other("client gave up")) }),
        );
        let sent = rs
            .req_as(&rs.key, Method::PUT, &files_url(id, name))
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        assert!(sent.is_err(), "{name}: {sent:?}");
    }
    let mut left = String::new();
    for _ in 0..100 {
        let out = rs
            .exec(
                id,
                "ls -A /workspace '/workspace/a b'; cat '/workspace/a b/c.txt'",
            )
            .await;
        left = out["stdout"].as_str().unwrap().to_owned();
        if !left.contains(".sandpit-write") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!left.contains(".sandpit-write"), "{left}");
    assert!(!left.contains("fresh.bin"), "{left}");
    assert!(left.ends_with("c.txt\nhello"), "{left}");

    // Wrong key: 401 both ways, and nothing is written.
    let (s, v) = json(put("x.txt", "wrong-key", "no").send().await.unwrap()).await;
    assert_error(s, &v, 401, "UNAUTHORIZED");
    let r = rs
        .req_as("wrong-key", Method::GET, &files_url(id, "a%20b/c.txt"))
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_error(s, &v, 401, "UNAUTHORIZED");
    let out = rs.exec(id, "test -e /workspace/x.txt; echo $?").await;
    assert_eq!(out["stdout"], "1\n");

    // Agent errors come through as envelopes.
    let get = |path: &str| rs.req_as(&rs.key, Method::GET, &files_url(id, path)).send();
    let (s, v) = json(get("missing.bin").await.unwrap()).await;
    assert_error(s, &v, 404, "FILE_NOT_FOUND");
    let (s, v) = json(get("a%20b").await.unwrap()).await;
    assert_error(s, &v, 400, "IS_DIRECTORY");
    let (s, v) = json(put("a%20b", &rs.key, "x").send().await.unwrap()).await;
    assert_error(s, &v, 400, "IS_DIRECTORY");
    let (s, v) = json(get("a%00b").await.unwrap()).await;
    assert_error(s, &v, 400, "VALIDATION_FAILED");
    // Other methods are not routes of this resource.
    let r = rs
        .req_as(&rs.key, Method::POST, &files_url(id, "a%20b/c.txt"))
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_error(s, &v, 405, "METHOD_NOT_ALLOWED");
    rs.stop().await;
}
