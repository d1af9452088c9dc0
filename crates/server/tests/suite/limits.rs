//! Limits apply when set: a PATCH of cpus, memory and pids changes a running sandbox's cgroups
//! at once (read on the host and inside), the sandbox sees its own limits (`nproc`,
//! `/proc/meminfo`, `/sys/fs/cgroup`), and an OOM kill is reported as such. Fast checks use the
//! fake driver; the `serial_` tests run real sandboxes.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::e2e::Real;
use super::quotas::cgroups_named;
use super::{TestServer, assert_error, eventually};

/// The host directory of sandbox `id`'s cgroup in the v1 hierarchy mounted at
/// `/sys/fs/cgroup/<hierarchy>`.
fn host_cgroup(id: &str, hierarchy: &str) -> PathBuf {
    let root = PathBuf::from("/sys/fs/cgroup").join(hierarchy);
    let found: Vec<PathBuf> = cgroups_named(&format!("{id}-"))
        .into_iter()
        .filter(|d| d.starts_with(&root))
        .collect();
    assert_eq!(found.len(), 1, "{hierarchy} cgroup of {id}: {found:?}");
    found[0].clone()
}

fn read_trimmed(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// `MemTotal` of the sandbox's `/proc/meminfo`, in kB.
async fn mem_total_kb(rs: &Real, id: &str) -> u64 {
    let out = rs
        .exec(id, "awk '/^MemTotal:/ {print $2}' /proc/meminfo")
        .await;
    out["stdout"].as_str().unwrap().trim().parse().unwrap()
}

/// How many children a Python loop can fork before the pids limit stops it (they sleep, and
/// are killed once counted), and `pids.current` of the sandbox's cgroup at that moment.
const FORK_UNTIL_REFUSED: &str = r#"python3 - <<'EOF'
import os, signal, time
children = []
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
current = open('/sys/fs/cgroup/pids/pids.current').read().strip()
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(len(children), current)
EOF"#;

async fn fork_until_refused(rs: &Real, id: &str) -> (u64, u64) {
    let out = rs.exec(id, FORK_UNTIL_REFUSED).await;
    assert_eq!(out["exitCode"], 0, "{out}");
    let text = out["stdout"].as_str().unwrap().to_owned();
    let mut parts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Creates a running, kept-alive sandbox `id` with `limits` as `key`.
async fn create_running(rs: &Real, key: &str, id: &str, limits: Value) {
    let body = json!({"id": id, "keepAlive": true, "limits": limits});
    let (s, b) = rs.call_as(key, Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
}

/// The host's memory limit of sandbox `id`, in MiB.
fn host_memory_limit_mb(id: &str) -> u64 {
    let limit = read_trimmed(host_cgroup(id, "memory").join("memory.limit_in_bytes"));
    limit.parse::<u64>().unwrap() >> 20
}

async fn patch_limits(rs: &Real, key: &str, id: &str, limits: Value) -> (u16, Value) {
    rs.call_as(
        key,
        Method::PATCH,
        &format!("/v1/sandboxes/{id}"),
        json!({ "limits": limits }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_patch_changes_a_running_sandboxs_cgroups_and_views_at_once() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let key = rs.key.clone();
    let id = "lim-live";
    create_running(
        &rs,
        &key,
        id,
        json!({"memoryMb": 256, "pids": 100, "cpus": 2}),
    )
    .await;
    let pids = host_cgroup(id, "pids");
    let cpu = host_cgroup(id, "cpu");
    let cpuset = host_cgroup(id, "cpuset");
    assert_eq!(host_memory_limit_mb(id), 256);
    let host_cpus = std::thread::available_parallelism().unwrap().get();
    let out = rs.exec(id, "nproc").await;
    assert_eq!(out["stdout"], format!("{}\n", host_cpus.min(2)), "{out}");
    assert_eq!(mem_total_kb(&rs, id).await, 256 * 1024);

    // The sandbox's own cgroups are mounted inside, read-only, rooted at its cgroup.
    let out = rs
        .exec(
            id,
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; \
             grep -c ':/$' /proc/self/cgroup >/dev/null && echo rooted; \
             echo 1 > /sys/fs/cgroup/pids/pids.max 2>/dev/null || echo read-only",
        )
        .await;
    assert_eq!(
        out["stdout"],
        format!("{}\n100\nrooted\nread-only\n", 256u64 << 20),
        "{out}"
    );
    // Each view is the sandbox's own directory (bound, not a cgroup mount): nothing above or
    // beside it, no host path in the mount table, and it cannot be remounted writable.
    let out = rs
        .exec(
            id,
            "find /sys/fs/cgroup/memory/.. /sys/fs/cgroup/pids/.. -mindepth 2 -type d | wc -l; \
             awk '{for (i = 7; i < NF; i++) if ($i == \"-\" && $(i+1) ~ /^cgroup/) print $4}' /proc/self/mountinfo | sort -u; \
             mount -o remount,bind,rw /sys/fs/cgroup/pids 2>/dev/null || echo no-remount",
        )
        .await;
    assert_eq!(out["stdout"], "0\n/\nno-remount\n", "{out}");

    // Lower pids and cpus, raise nothing: applied before the answer, without a restart.
    let (s, b) = patch_limits(
        &rs,
        &key,
        id,
        json!({"memoryMb": 192, "pids": 40, "cpus": 1}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "running");
    assert_eq!(b["limits"]["memoryMb"], 192);
    assert!(b.get("pendingRestart").is_none(), "{b}");
    assert_eq!(host_memory_limit_mb(id), 192);
    assert_eq!(read_trimmed(pids.join("pids.max")), "40");
    assert_eq!(read_trimmed(cpu.join("cpu.cfs_quota_us")), "100000");
    let cpus = read_trimmed(cpuset.join("cpuset.cpus"));
    assert!(cpus.parse::<u32>().is_ok(), "one CPU in the cpuset: {cpus}");
    let out = rs
        .exec(
            id,
            "nproc; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
        )
        .await;
    assert_eq!(out["stdout"], format!("1\n{}\n40\n", 192u64 << 20), "{out}");
    let followed = eventually(Duration::from_secs(15), || async {
        mem_total_kb(&rs, id).await == 192 * 1024
    });
    assert!(followed.await, "/proc/meminfo did not follow the PATCH");

    // The new pids cap holds at once: forking stops at it...
    let (children, current) = fork_until_refused(&rs, id).await;
    assert!(current <= 40, "pids.current {current} above the new cap");
    assert!(
        children > 0 && children < 40,
        "{children} children under a cap of 40"
    );
    // ...and a raised cap lets more through than the old one allowed.
    let (s, b) = patch_limits(&rs, &key, id, json!({"pids": 120})).await;
    assert_eq!(s, 200, "{b}");
    let (more, _) = fork_until_refused(&rs, id).await;
    assert!(more > 40, "only {more} children after raising pids to 120");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_memory_below_usage_is_refused_and_the_old_limit_stays() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let key = rs.key.clone();
    let id = "lim-busy";
    create_running(&rs, &key, id, json!({"memoryMb": 256})).await;
    // 120 MiB of anonymous memory held by a background process (no swap to push it to).
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/process/start"),
            json!({"command": "python3 -c \"import time; b = b'x' * (120 << 20); print('held', flush=True); time.sleep(600)\"",
                   "processId": "hog"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let memory = host_cgroup(id, "memory");
    let held = eventually(Duration::from_secs(30), || async {
        read_trimmed(memory.join("memory.usage_in_bytes"))
            .parse::<u64>()
            .unwrap()
            > 120 << 20
    });
    assert!(held.await, "the hog never held its memory");
    let (s, b) = patch_limits(&rs, &key, id, json!({"memoryMb": 64})).await;
    assert_error(s, &b, 409, "RESOURCE_BUSY");
    assert!(b["message"].as_str().unwrap().contains("64 MiB"), "{b}");
    assert_eq!(host_memory_limit_mb(id), 256);
    let (_, info) = rs
        .call(Method::GET, &format!("/v1/sandboxes/{id}"), Value::Null)
        .await;
    assert_eq!(info["limits"]["memoryMb"], 256, "{info}");
    let (_, p) = rs
        .call(
            Method::GET,
            &format!("/v1/sandboxes/{id}/api/process/hog"),
            Value::Null,
        )
        .await;
    assert_eq!(p["process"]["status"], "running", "nothing was killed: {p}");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_a_tenant_cannot_patch_memory_past_its_quota() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let key = rs.create_key("lim-atk").await;
    let (s, b) = rs
        .call(
            Method::PUT,
            "/v1/tenants/lim-atk/quota",
            json!({"memoryMb": 512}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let id = "lim-atk-box";
    create_running(&rs, &key, id, json!({"memoryMb": 256})).await;
    // Before: the PATCH was stored unchecked and applied at the next start.
    let (s, b) = patch_limits(&rs, &key, id, json!({"memoryMb": 1024})).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    assert_eq!(b["context"]["field"], "memoryMb", "{b}");
    assert_eq!(host_memory_limit_mb(id), 256);
    // Nor by sleeping and waking: the record kept the old limit.
    rs.call_as(
        &key,
        Method::POST,
        &format!("/v1/sandboxes/{id}/stop"),
        Value::Null,
    )
    .await;
    let (s, b) = rs
        .exec_as(&key, id, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], format!("{}\n", 256u64 << 20), "{b}");
    // Within the quota, a live raise is fine.
    let (s, b) = patch_limits(&rs, &key, id, json!({"memoryMb": 512})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(host_memory_limit_mb(id), 512);
    rs.stop().await;
}

/// Python that fills 200 MiB with bytes the kernel must charge (a zeroed bytearray would not be).
const EAT_MEMORY: &str = "python3 -c \"b = b'x' * (200 << 20); print('survived')\"";
const OOM_NOTE: &str = "sandpit: killed: out of memory (limit 64 MiB)";

#[tokio::test(flavor = "multi_thread")]
async fn serial_an_oom_kill_is_reported_on_exec_stream_and_process_routes() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "lim-oom";
    create_running(&rs, &rs.key, id, json!({"memoryMb": 64})).await;

    // Buffered, in the default session and sessionless.
    for session in [None, Some("none")] {
        let mut body = json!({"command": EAT_MEMORY});
        if let Some(s) = session {
            body["sessionId"] = json!(s);
        }
        let (s, out) = rs
            .call(
                Method::POST,
                &format!("/v1/sandboxes/{id}/api/execute"),
                body,
            )
            .await;
        assert_eq!(s, 200, "{out}");
        assert_eq!(out["exitCode"], 137, "{out}");
        assert_eq!(out["reason"], "oom", "{out}");
        assert!(out["stderr"].as_str().unwrap().contains(OOM_NOTE), "{out}");
    }
    // A command that ends by itself has no reason.
    let out = rs.exec(id, "sh -c 'exit 3'").await;
    assert_eq!(out["exitCode"], 3, "{out}");
    assert!(out.get("reason").is_none(), "{out}");

    // Streamed: the complete event carries the reason.
    let text = rs
        .req_as(
            &rs.key,
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/execute/stream"),
        )
        .json(&json!({"command": EAT_MEMORY}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let complete: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|e| e["type"] == "complete")
        .unwrap_or_else(|| panic!("no complete event: {text}"));
    assert_eq!(complete["exitCode"], 137, "{complete}");
    assert_eq!(complete["reason"], "oom", "{complete}");
    assert!(text.contains(OOM_NOTE), "{text}");

    // Background process: status killed, reason oom, the note in its log.
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/process/start"),
            json!({"command": EAT_MEMORY, "processId": "eater"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let path = format!("/v1/sandboxes/{id}/api/process/eater");
    let ended = eventually(Duration::from_secs(60), || async {
        let (_, p) = rs.call(Method::GET, &path, Value::Null).await;
        p["process"]["status"] != "running"
    });
    assert!(ended.await, "the process never ended");
    let (_, p) = rs.call(Method::GET, &path, Value::Null).await;
    assert_eq!(p["process"]["status"], "killed", "{p}");
    assert_eq!(p["process"]["exitCode"], 137, "{p}");
    assert_eq!(p["process"]["reason"], "oom", "{p}");
    let (_, logs) = rs
        .call(Method::GET, &format!("{path}/logs"), Value::Null)
        .await;
    assert!(
        logs["stderr"].as_str().unwrap().contains(OOM_NOTE),
        "{logs}"
    );
    let stream = rs
        .req_as(&rs.key, Method::GET, &format!("{path}/stream"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(stream.contains(r#""reason":"oom""#), "{stream}");
    // The sandbox itself survived its commands' OOM kills.
    assert_eq!(rs.exec(id, "echo alive").await["stdout"], "alive\n");
    // The reason survives sleep (the process archive keeps it).
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/stop"),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, p) = rs.call(Method::GET, &path, Value::Null).await;
    assert_eq!(p["process"]["reason"], "oom", "after sleep: {p}");
    rs.stop().await;
}

#[tokio::test]
async fn patching_a_running_sandboxs_disk_or_env_says_it_waits_for_the_next_start() {
    let ts = TestServer::start().await;
    let (s, b) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"id": "pend"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/pend",
            json!({"limits": {"diskMb": 256, "pids": 64}, "env": {"A": "1"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["pendingRestart"], json!(["env", "limits.diskMb"]), "{b}");
    assert_eq!(b["limits"]["diskMb"], 256);
    // Live limits alone wait for nothing; a sleeping sandbox takes everything at its start.
    let (_, b) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/pend",
            json!({"limits": {"pids": 70}}),
        )
        .await;
    assert!(b.get("pendingRestart").is_none(), "{b}");
    ts.json(Method::POST, "/v1/sandboxes/pend/stop", Value::Null)
        .await;
    let (_, b) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/pend",
            json!({"limits": {"diskMb": 300}}),
        )
        .await;
    assert!(b.get("pendingRestart").is_none(), "{b}");
}

#[tokio::test]
async fn a_live_memory_raise_counts_against_the_quota_at_once() {
    let ts = TestServer::start().await;
    let key = ts
        .tenant_with_quota("grow", json!({"memoryMb": 1024}))
        .await;
    let create = |id: &str, mb: u64| json!({"id": id, "limits": {"memoryMb": mb}});
    for id in ["g1", "g2"] {
        let (s, b) = ts
            .call_as(&key, Method::POST, "/v1/sandboxes", create(id, 256))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let patch = |mb: u64| json!({"limits": {"memoryMb": mb}});
    let (s, b) = ts
        .call_as(&key, Method::PATCH, "/v1/sandboxes/g1", patch(769))
        .await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    let (s, b) = ts
        .call_as(&key, Method::PATCH, "/v1/sandboxes/g1", patch(768))
        .await;
    assert_eq!(s, 200, "{b}");
    // Asleep, a sandbox claims no memory: its raise is admitted when it starts.
    ts.call_as(&key, Method::POST, "/v1/sandboxes/g2/stop", Value::Null)
        .await;
    let (s, b) = ts
        .call_as(&key, Method::PATCH, "/v1/sandboxes/g2", patch(900))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = ts
        .call_as(
            &key,
            Method::POST,
            "/v1/sandboxes/g2/api/execute",
            json!({"command": "true"}),
        )
        .await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
}
