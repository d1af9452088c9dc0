//! Host hygiene under churn (issue 16), through a real server: creating, using and destroying
//! sandboxes, and sleeping and waking them, leaves no dying memory cgroups in the kernel; and the
//! server refuses new sandboxes with `HOST_MEMORY_LOW` below its host-memory floor.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::assert_error;
use super::e2e::Real;

/// Sandboxes created, used and destroyed, and sleep → wake cycles (each at least 1,000 as the
/// issue asks; `SANDPIT_CHURN` lowers both for a quick local run).
fn churn_count() -> usize {
    std::env::var("SANDPIT_CHURN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Operations in flight at once.
const PARALLEL: usize = 8;

/// Memory cgroups the kernel still holds but that no longer exist as directories ("dying"):
/// `nr_dying_descendants` of the root on a pure v2 host, else `/proc/cgroups`'s count for the
/// v1 memory controller minus the directories of its hierarchy.
fn dying_memory_cgroups() -> i64 {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
    if !v1.join("cgroup.procs").exists() {
        let stat = std::fs::read_to_string("/sys/fs/cgroup/cgroup.stat").unwrap();
        return stat
            .lines()
            .find_map(|l| l.strip_prefix("nr_dying_descendants "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap();
    }
    let counted: i64 = std::fs::read_to_string("/proc/cgroups")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"memory")).then(|| f[2].parse().unwrap())
        })
        .unwrap();
    let mut existing = 0i64;
    let mut stack = vec![v1.to_owned()];
    while let Some(dir) = stack.pop() {
        existing += 1;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    counted - existing
}

async fn ok(rs: &Real, method: Method, path: &str, body: Value) {
    let (s, b) = rs.call(method, path, body).await;
    assert!((200..300).contains(&s), "{path}: {s} {b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_churn_leaves_no_dying_memory_cgroups() {
    let root = format!("/sp-churn-{}", std::process::id());
    let Some(rs) = Real::start_with(|c| c.cgroup_root = root.clone()).await else {
        return;
    };
    let n = churn_count();
    let before = dying_memory_cgroups();

    // create → exec → destroy, PARALLEL at a time.
    futures::stream::iter(0..n)
        .for_each_concurrent(PARALLEL, |i| {
            let rs = &rs;
            async move {
                let id = format!("churn-{i}");
                ok(rs, Method::POST, "/v1/sandboxes", json!({"id": id})).await;
                let out = rs
                    .exec(&id, "echo hi > /workspace/f && cat /workspace/f")
                    .await;
                assert_eq!(out["stdout"], "hi\n", "{out}");
                ok(
                    rs,
                    Method::DELETE,
                    &format!("/v1/sandboxes/{id}"),
                    Value::Null,
                )
                .await;
            }
        })
        .await;
    // sleep → wake cycles on PARALLEL sandboxes, n in all.
    futures::stream::iter(0..PARALLEL)
        .for_each_concurrent(PARALLEL, |s| {
            let rs = &rs;
            async move {
                let id = format!("nap-{s}");
                ok(rs, Method::POST, "/v1/sandboxes", json!({"id": id})).await;
                for _ in 0..n.div_ceil(PARALLEL) {
                    let out = rs.exec(&id, "true").await;
                    assert_eq!(out["exitCode"], 0, "{out}");
                    ok(
                        rs,
                        Method::POST,
                        &format!("/v1/sandboxes/{id}/stop"),
                        Value::Null,
                    )
                    .await;
                }
                ok(
                    rs,
                    Method::DELETE,
                    &format!("/v1/sandboxes/{id}"),
                    Value::Null,
                )
                .await;
            }
        })
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let grown = dying_memory_cgroups() - before;
    eprintln!("dying memory cgroups: {before} before, +{grown} after {n} + {n} cycles");
    assert!(
        grown < 100,
        "{grown} more dying memory cgroups after {n} create/destroy and {n} sleep/wake cycles"
    );
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_no_sandbox_starts_below_the_host_memory_floor() {
    let data = tempfile::Builder::new().prefix("spm").tempdir().unwrap();
    let dir = data.path().join("d");
    // One sandbox made (and put to sleep) on a server without a floor.
    let Some(rs) = Real::start_on(&dir).await else {
        return;
    };
    ok(
        &rs,
        Method::POST,
        "/v1/sandboxes",
        json!({"id": "floor-old"}),
    )
    .await;
    rs.exec("floor-old", "true").await;
    rs.stop().await;

    // The same data dir with a floor above what this host has: no create, no wake.
    let floor = 1u64 << 40;
    let Some(rs) = Real::start_on_with(&dir, |c| c.min_host_memory_mb = floor).await else {
        return;
    };
    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes", json!({"id": "floor-new"}))
        .await;
    assert_error(s, &b, 507, "HOST_MEMORY_LOW");
    let message = b["message"].as_str().unwrap();
    assert!(message.contains("--min-host-memory-mb"), "{message}");
    assert_eq!(b["context"]["minHostMemoryMb"], floor, "{b}");
    assert!(b["context"]["availableMb"].as_u64().unwrap() < floor, "{b}");
    let (s, b) = rs.exec_as(&rs.key.clone(), "floor-old", "true").await;
    assert_error(s, &b, 507, "HOST_MEMORY_LOW");
    assert_eq!(rs.state("floor-old").await, "sleeping");
    // Listing and destroying still work.
    ok(&rs, Method::DELETE, "/v1/sandboxes/floor-old", Value::Null).await;
    rs.stop().await;
}

/// A one-answer HTTP upstream on the host's loopback: `hello` to every request.
async fn hello_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    addr
}

/// ATTACK (issue 16): every sandbox's `egress.sock` is now a link to one shared listener, and
/// the server tells sandboxes apart by the host uid the kernel reports for the connecting
/// process. A sandbox of another tenant, started after the first, gets its own policy (not the
/// first's), the first keeps its own, and a host process outside every sandbox uid range (here
/// root, connecting to the shared socket directly) gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_the_shared_egress_listener_tells_sandboxes_apart() {
    let upstream = hello_upstream().await;
    let Some(rs) = Real::start_with(|c| {
        c.egress_resolve
            .insert("ok.example.test".into(), "127.0.0.1".parse().unwrap());
        c.egress_unblocked = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    let url = format!("http://ok.example.test:{}/", upstream.port());
    let curl = format!("curl -sS --noproxy '' --max-time 10 -w ' %{{http_code}}' {url}");
    let (ta, tb) = (
        rs.create_key("egress-a").await,
        rs.create_key("egress-b").await,
    );
    let allowed = |id: &str| json!({"id": id, "network": {"mode": "allowlist", "allow": ["ok.example.test"]}});
    let (s, b) = rs
        .call_as(&ta, Method::POST, "/v1/sandboxes", allowed("shared-a"))
        .await;
    assert_eq!(s, 201, "{b}");
    let other = json!({"id": "shared-b", "network": {"mode": "allowlist", "allow": ["other.example.test"]}});
    let (s, b) = rs.call_as(&tb, Method::POST, "/v1/sandboxes", other).await;
    assert_eq!(s, 201, "{b}");
    for _ in 0..2 {
        let (s, out) = rs.exec_as(&ta, "shared-a", &curl).await;
        assert_eq!(s, 200, "{out}");
        assert_eq!(out["stdout"], "hello 200", "{out}");
        let (s, out) = rs.exec_as(&tb, "shared-b", &curl).await;
        assert_eq!(s, 200, "{out}");
        let text = out["stdout"].as_str().unwrap();
        assert!(text.ends_with(" 403") && !text.contains("hello"), "{out}");
        // Straight to the socket in B's run dir (bypassing the agent's bridge): still B.
        let raw = format!(
            "curl -sS --noproxy '' --max-time 10 --unix-socket /run/sandpit/egress.sock \
             -w ' %{{http_code}}' {url}"
        );
        let (s, out) = rs.exec_as(&tb, "shared-b", &raw).await;
        assert_eq!(s, 200, "{out}");
        assert!(!out["stdout"].as_str().unwrap().contains("hello"), "{out}");
    }
    // The host's root is no sandbox: the connection is closed unanswered.
    let socket = rs.data_dir.join("egress.sock");
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut unix = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        unix.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!("GET {url} HTTP/1.1\r\nHost: ok.example.test\r\n\r\n");
        let _ = unix.write_all(request.as_bytes());
        let mut answer = Vec::new();
        let _ = unix.read_to_end(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    rs.stop().await;
}
