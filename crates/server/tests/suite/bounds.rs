//! Attack tests of the host-resource bounds (docs/isolation.md, "Host-resource bounds"): from
//! inside a real sandbox, through the public API, a tenant tries to grow a host file, the
//! server's log or the server's descriptors without bound. Same requirements as `e2e`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::attacks::{python, run, stdout};
use super::e2e::Real;

/// The one `agent.log` under the server's data dir (each test's server runs one sandbox).
fn agent_log(rs: &Real) -> PathBuf {
    let dir = rs.data_dir.join("sandboxes");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("agent.log"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(logs.len(), 1, "one agent.log in {}", dir.display());
    logs.pop().unwrap()
}

/// Bytes of `agent.log` and its rotated copy.
fn agent_log_bytes(log: &Path) -> u64 {
    let rotated = sandpit_runtime::agent_log::rotated(log);
    [log, rotated.as_path()]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Runs Python `code` in a new code context of sandbox `id`; returns the SSE body.
async fn run_in_context(rs: &Real, id: &str, code: &str) -> String {
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/contexts"),
            json!({"language": "python"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let context = b["contextId"].as_str().unwrap().to_owned();
    let r = rs
        .req_as(
            &rs.key,
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/execute/code"),
        )
        .json(&json!({"context_id": context, "code": code, "timeout_ms": 120_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Code in a context writes 72 MiB of forged events to its own fd 4 (newline-separated garbage
/// and one 40 MiB line without a newline), and a plain exec finds the executor and tries to
/// write to its fd 4 through /proc (refused: the executor is non-dumpable). agent.log (a host
/// file) stays small and never holds the bytes; the context keeps working. Before: every bad line was logged in full (200 MiB/s with diskMb 32).
#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_executor_event_flood_leaves_agent_log_bounded() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "atk-fd4";
    let out = run_in_context(
        &rs,
        id,
        "import os\n\
         line = b'forgedforged' * 5461 + b'\\n'\n\
         for _ in range(512):\n    os.write(4, line)\n\
         big = b'y' * (1 << 20)\n\
         for _ in range(40):\n    os.write(4, big)\n\
         os.write(4, b'\\n')\n\
         print('flooded')",
    )
    .await;
    assert!(out.contains("flooded"), "{out}");

    let out = python(
        &rs,
        id,
        "import os\n\
         hit = 0\n\
         for pid in os.listdir('/proc'):\n\
         \x20   if not pid.isdigit() or int(pid) == os.getpid():\n        continue\n\
         \x20   try:\n\
         \x20       cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n\
         \x20       if cmd[:3] != [b'python3', b'-u', b'-c']:\n            continue\n\
         \x20       fd = os.open(f'/proc/{pid}/fd/4', os.O_WRONLY)\n\
         \x20   except OSError as e:\n        print('open failed', pid, e)\n        continue\n\
         \x20   for _ in range(256):\n        os.write(fd, b'viaproc' * 9000 + b'\\n')\n\
         \x20   hit += 1\n\
         print(f'hit={hit}')",
    )
    .await;
    // The Python executor is non-dumpable: its fd 4 cannot be opened from another process.
    assert!(stdout(&out).contains("hit=0"), "{out}");
    assert!(
        stdout(&out).contains("open failed"),
        "no executor found: {out}"
    );

    let after = run_in_context(&rs, id, "print(6 * 7)").await;
    assert!(after.contains("42"), "the interpreter still works: {after}");

    // The host copies the agent's stderr asynchronously: let it catch up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = agent_log(&rs);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("forgedforged") && !text.contains("viaproc") && !text.contains("yyyy"),
        "user bytes in agent.log: {}",
        &text[..text.len().min(2000)]
    );
    let bytes = agent_log_bytes(&log);
    eprintln!("agent.log after the flood: {bytes} bytes");
    assert!(bytes < 64 * 1024, "agent.log grew to {bytes} bytes");
}

/// `RUST_LOG=trace` in the sandbox's env reaches the user's processes but not the agent's own
/// log filter. Before: the agent logged at trace level into agent.log on the host.
#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_tenant_rust_log_does_not_reach_the_agent() {
    let Some(rs) = Real::start().await else {
        return;
    };
    rs.ensure_sandbox(json!({"id": "atk-rustlog", "env": {"RUST_LOG": "trace"}}))
        .await;
    for _ in 0..5 {
        let out = run(&rs, "atk-rustlog", "echo rust_log=$RUST_LOG", 30_000).await;
        assert!(stdout(&out).contains("rust_log=trace"), "{out}");
    }
    let log = std::fs::read_to_string(agent_log(&rs)).unwrap_or_default();
    assert!(
        !log.contains("TRACE") && !log.contains("DEBUG") && !log.contains(" INFO "),
        "the agent logged below warn: {}",
        &log[..log.len().min(2000)]
    );
}

/// Everything the server logs, for tests that count log lines (one global subscriber).
fn server_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "sandpit_server=info,sandpit_egress=info",
            ))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lines of the captured server log that mention `needle`.
fn log_lines_with(log: &Mutex<Vec<u8>>, needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&log.lock().unwrap())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Python that opens `n` connections to the egress bridge and reports each one's fate
/// (`codes=held,503,...`): the proxy answers a connection over a limit with an unsolicited
/// 503; an accepted one is either kept idle (`hold`: it keeps its slots, printed `held`) or
/// sent a request, which mode `none` refuses with 403 (and closes).
fn egress_client(n: usize, hold: bool) -> String {
    format!(
        "import select, socket, time\n\
         conns, codes = [], []\n\
         for _ in range({n}):\n\
         \x20   s = socket.create_connection(('127.0.0.1', 3128))\n\
         \x20   conns.append(s)\n\
         time.sleep(0.5)\n\
         for s in conns:\n\
         \x20   if not select.select([s], [], [], 0)[0]:\n\
         \x20       if {hold}:\n\
         \x20           codes.append('held')\n\
         \x20           continue\n\
         \x20       s.sendall(b'GET http://example.test/ HTTP/1.1\\r\\nHost: example.test\\r\\n\\r\\n')\n\
         \x20   data = s.recv(64)\n\
         \x20   codes.append(data.split(b' ')[1].decode() if data else 'eof')\n\
         print('codes=' + ','.join(codes), flush=True)\n\
         if {hold}:\n\
         \x20   time.sleep(600)\n",
        hold = if hold { "True" } else { "False" },
    )
}

/// A sandbox with network `none` connects to its egress proxy in a loop: each request is
/// refused, and the server logs at most a burst per window plus "suppressed" summaries.
/// Before: one line per refused connection (57-71 MiB of server log in 10 s).
#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_egress_connect_loop_keeps_the_server_log_bounded() {
    let log = server_log();
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "atk-loop";
    rs.ensure_sandbox(json!({"id": id, "network": {"mode": "none"}}))
        .await;
    let attempts = 3000;
    let out = python(
        &rs,
        id,
        &format!(
            "import socket\n\
             refused = 0\n\
             for i in range({attempts}):\n\
             \x20   s = socket.create_connection(('127.0.0.1', 3128))\n\
             \x20   s.sendall(b'CONNECT host-%d.example.test:443 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' % i)\n\
             \x20   if b' 403 ' in s.recv(256):\n        refused += 1\n\
             \x20   s.close()\n\
             print(f'refused={{refused}}')"
        ),
    )
    .await;
    assert!(
        stdout(&out).contains(&format!("refused={attempts}")),
        "every request answered 403: {out}"
    );
    let lines = log_lines_with(&log, &format!("sandbox={id}-"));
    let bytes: usize = lines.iter().map(String::len).sum();
    eprintln!(
        "{} server log lines ({bytes} bytes) for {attempts} refused connections",
        lines.len()
    );
    assert!(
        lines.len() <= 40 && bytes < 16 * 1024,
        "{} log lines ({bytes} bytes) for {attempts} refused connections: {:?}",
        lines.len(),
        &lines[..lines.len().min(20)]
    );
    assert!(!lines.is_empty(), "the refusals are still logged (a burst)");
}

/// Two sandboxes of one tenant hold egress connections: past the per-sandbox and per-tenant
/// limits the proxy answers 503 at once. Before: 256 per sandbox and no tenant limit, so every
/// sandbox of a tenant pinned ~512 more server fds.
#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_egress_connections_are_capped_per_sandbox_and_tenant() {
    let Some(rs) = Real::start_with(|c| {
        c.egress_max_connections_per_sandbox = 8;
        c.egress_max_connections_per_tenant = 12;
    })
    .await
    else {
        return;
    };
    for id in ["atk-fds-a", "atk-fds-b"] {
        rs.ensure_sandbox(json!({"id": id, "network": {"mode": "none"}}))
            .await;
    }
    // Sandbox A: 10 connections, 8 under its own limit; it keeps them.
    let script = egress_client(10, true);
    let out = run(
        &rs,
        "atk-fds-a",
        &format!("cat > /tmp/hold.py <<'PYEOF'\n{script}\nPYEOF"),
        30_000,
    )
    .await;
    assert_eq!(out["exitCode"], 0, "{out}");
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes/atk-fds-a/api/process/start",
            json!({"command": "python3 /tmp/hold.py > /tmp/hold.out 2>&1"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let out = run(&rs, "atk-fds-a", "cat /tmp/hold.out 2>/dev/null", 10_000).await;
        if stdout(&out).contains("codes=") {
            break stdout(&out).to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the holder never reported: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let codes_a = held.lines().find(|l| l.starts_with("codes=")).unwrap();
    assert_eq!(codes_a.matches("held").count(), 8, "{held}");
    assert_eq!(codes_a.matches("503").count(), 2, "{held}");

    // Sandbox B: only 4 of the tenant's 12 slots are left.
    let out = python(&rs, "atk-fds-b", &egress_client(8, false)).await;
    let codes_b = stdout(&out);
    assert_eq!(codes_b.matches("403").count(), 4, "{out}");
    assert_eq!(codes_b.matches("503").count(), 4, "{out}");
}

/// Twelve background processes each leave 2 MiB of logs (the agent's per-process cap), then
/// the sandbox sleeps: the archive in the host database keeps at most the per-sandbox byte cap,
/// the newest processes first. Before: all 12 (24 MiB per sleep, outside any quota).
#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_process_archive_is_bounded_in_bytes() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let base = "/v1/sandboxes/atk-arch/api/process";
    let count = 12;
    for n in 0..count {
        let (s, b) = rs
            .call(
                Method::POST,
                &format!("{base}/start"),
                json!({
                    "command": "head -c 1048576 /dev/zero | tr '\\0' o; head -c 1048576 /dev/zero | tr '\\0' e >&2",
                    "processId": format!("p{n:02}"),
                }),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        // Distinct start times, so "newest" is well defined.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = super::eventually(Duration::from_secs(60), || async {
        let (_, b) = rs
            .call(Method::GET, &format!("{base}/list"), Value::Null)
            .await;
        b["processes"]
            .as_array()
            .is_some_and(|p| p.len() == count && p.iter().all(|p| p["status"] == "completed"))
    });
    assert!(done.await, "the processes did not finish");
    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes/atk-arch/stop", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");

    // Waking: the new agent knows none of them; what is listed is the archive.
    let ids = rs.process_ids("atk-arch").await;
    let mut bytes = 0u64;
    for id in &ids {
        let (s, logs) = rs
            .call(Method::GET, &format!("{base}/{id}/logs"), Value::Null)
            .await;
        assert_eq!(s, 200, "{logs}");
        bytes += (logs["stdout"].as_str().unwrap().len() + logs["stderr"].as_str().unwrap().len())
            as u64;
    }
    assert!(
        bytes <= sandpit_store::MAX_ARCHIVE_BYTES_PER_SANDBOX,
        "{} processes, {bytes} bytes archived",
        ids.len()
    );
    assert!(!ids.is_empty() && ids.len() < count, "{ids:?}");
    assert_eq!(
        ids.last().map(String::as_str),
        Some("p11"),
        "the newest stays"
    );
}
