//! Per-sandbox caps and per-tenant quotas through the public API: a non-admin key cannot ask
//! for more than the server allows, nor create or run more than its tenant's quota, nor change
//! that quota. Fast checks use the fake driver; the `serial_` attacks run real sandboxes and
//! look at the host's cgroups.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{Value, json};

use super::e2e::Real;
use super::{TestServer, assert_error};

impl TestServer {
    /// Creates (or gets) a sandbox as `key`.
    async fn create_as(&self, key: &str, body: Value) -> (u16, Value) {
        self.call_as(key, Method::POST, "/v1/sandboxes", body).await
    }

    /// PATCHes sandbox `id`'s limits as `key`.
    async fn patch_limits_as(&self, key: &str, id: &str, limits: Value) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{id}");
        self.call_as(key, Method::PATCH, &path, json!({ "limits": limits }))
            .await
    }

    /// Reads sandbox `id` as `key`.
    async fn sandbox_as(&self, key: &str, id: &str) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{id}");
        self.call_as(key, Method::GET, &path, Value::Null).await
    }

    /// Admin sets `tenant`'s quota; returns its key.
    pub(super) async fn tenant_with_quota(&self, tenant: &str, quota: Value) -> String {
        let key = self.create_key(tenant).await;
        let (s, b) = self
            .json(Method::PUT, &format!("/v1/tenants/{tenant}/quota"), quota)
            .await;
        assert_eq!(s, 200, "{b}");
        key
    }
}

fn create(id: &str) -> Value {
    json!({"id": id})
}

#[tokio::test]
async fn quota_of_n_sandboxes_refuses_the_next_one() {
    let ts = TestServer::start().await;
    let key = ts.tenant_with_quota("acme", json!({"sandboxes": 3})).await;
    for i in 0..3 {
        let (s, b) = ts.create_as(&key, create(&format!("q{i}"))).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = ts.create_as(&key, create("q3")).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    assert_eq!(b["context"]["field"], "sandboxes");
    assert_eq!(b["context"]["quota"], 3);
    assert_eq!(b["context"]["usage"], 3);
    // Also through the forwarding route, which creates unknown ids.
    let (s, b) = ts
        .call_as(
            &key,
            Method::POST,
            "/v1/sandboxes/q4/api/execute",
            json!({"command": "true"}),
        )
        .await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    assert_eq!(ts.driver.counters.starts.load(Ordering::SeqCst), 3);
    // The existing ones are still reachable (create-or-get does not count twice).
    let (s, b) = ts.create_as(&key, create("q0")).await;
    assert_eq!(s, 200, "{b}");
    // Another tenant is not affected.
    let (s, b) = ts.json(Method::POST, "/v1/sandboxes", create("q3")).await;
    assert_eq!(s, 201, "{b}");
    // Destroying one frees its place.
    let (s, _) = ts
        .call_as(&key, Method::DELETE, "/v1/sandboxes/q1", Value::Null)
        .await;
    assert_eq!(s, 204);
    let (s, b) = ts.create_as(&key, create("q3")).await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_cannot_pass_the_quota() {
    let ts = Arc::new(TestServer::start().await);
    let key = ts
        .tenant_with_quota("crowd", json!({"sandboxes": 5, "runningSandboxes": 4}))
        .await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (ts, key) = (ts.clone(), key.clone());
            tokio::spawn(async move { ts.create_as(&key, create(&format!("c{i}"))).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let (s, b) = call.await.unwrap();
        assert!(
            s == 201 || (s == 429 && b["code"] == "QUOTA_EXCEEDED"),
            "{s} {b}"
        );
        statuses.push(s);
    }
    // Every create starts its sandbox, so the running quota (4) is the tighter one.
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        4,
        "{statuses:?}"
    );
    let (_, info) = ts
        .call_as(&key, Method::GET, "/v1/quota", Value::Null)
        .await;
    assert_eq!(info["usage"]["sandboxes"], 4, "{info}");
    assert_eq!(info["usage"]["runningSandboxes"], 4, "{info}");
    assert_eq!(ts.driver.counters.starts.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn running_quota_refuses_a_wake_until_another_sleeps() {
    let ts = TestServer::start().await;
    let key = ts
        .tenant_with_quota("busy", json!({"runningSandboxes": 2}))
        .await;
    for id in ["a", "b"] {
        let (s, b) = ts.create_as(&key, create(id)).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = ts.create_as(&key, create("c")).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    assert_eq!(b["context"]["field"], "runningSandboxes");
    let (s, _) = ts
        .call_as(&key, Method::POST, "/v1/sandboxes/a/stop", Value::Null)
        .await;
    assert_eq!(s, 200);
    let (s, b) = ts.create_as(&key, create("c")).await;
    assert_eq!(s, 201, "{b}");
    // `a` sleeps; waking it would make three running.
    let (s, b) = ts
        .call_as(
            &key,
            Method::POST,
            "/v1/sandboxes/a/api/execute",
            json!({"command": "echo hi"}),
        )
        .await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    let (_, info) = ts.sandbox_as(&key, "a").await;
    assert_eq!(info["state"], "sleeping", "{info}");
    let (s, _) = ts
        .call_as(&key, Method::POST, "/v1/sandboxes/b/stop", Value::Null)
        .await;
    assert_eq!(s, 200);
    let (s, b) = ts
        .call_as(
            &key,
            Method::POST,
            "/v1/sandboxes/a/api/execute",
            json!({"command": "echo hi"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn memory_quota_counts_running_sandboxes_and_disk_quota_all() {
    let ts = TestServer::start().await;
    let key = ts
        .tenant_with_quota("mem", json!({"memoryMb": 1024, "diskMb": 300}))
        .await;
    let with = |id: &str, memory: u64, disk: u64| json!({"id": id, "limits": {"memoryMb": memory, "diskMb": disk}});
    let post = |body: Value| ts.create_as(&key, body);
    assert_eq!(post(with("m1", 512, 100)).await.0, 201);
    assert_eq!(post(with("m2", 512, 100)).await.0, 201);
    let (s, b) = post(with("m3", 1, 100)).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    assert_eq!(b["context"]["field"], "memoryMb");
    // Memory is claimed while running: once m1 sleeps, m3 fits.
    ts.call_as(&key, Method::POST, "/v1/sandboxes/m1/stop", Value::Null)
        .await;
    assert_eq!(post(with("m3", 256, 100)).await.0, 201);
    // Disk is claimed by every sandbox: 300 MiB are taken.
    ts.call_as(&key, Method::POST, "/v1/sandboxes/m2/stop", Value::Null)
        .await;
    let (s, b) = post(with("m4", 64, 1)).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    assert_eq!(b["context"]["field"], "diskMb");
    // Under a disk quota a sandbox must have a disk limit.
    let (s, b) = post(json!({"id": "m5", "limits": {"memoryMb": 64}})).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    // Growing a sandbox's disk past the quota with PATCH is refused too.
    let (s, b) = ts.patch_limits_as(&key, "m3", json!({"diskMb": 101})).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    let (_, b) = ts.sandbox_as(&key, "m3").await;
    assert_eq!(b["limits"]["diskMb"], 100, "{b}");
    let (s, b) = ts.patch_limits_as(&key, "m3", json!({"diskMb": 50})).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn tenant_reads_but_cannot_change_its_quota() {
    let ts = TestServer::start().await;
    let key = ts.tenant_with_quota("self", json!({"sandboxes": 1})).await;
    let other = ts.create_key("other").await;
    let (s, b) = ts
        .call_as(&key, Method::GET, "/v1/quota", Value::Null)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["tenant"], "self");
    assert_eq!(b["quota"], json!({"sandboxes": 1}));
    assert_eq!(b["isDefault"], false);
    assert!(b["caps"]["memoryMb"].as_u64().unwrap() > 0, "{b}");
    let (s, b) = ts
        .call_as(&key, Method::GET, "/v1/tenants/self/quota", Value::Null)
        .await;
    assert_eq!(s, 200, "{b}");
    // Raising its own quota, removing it, or reading another tenant's: refused.
    let (s, b) = ts
        .call_as(
            &key,
            Method::PUT,
            "/v1/tenants/self/quota",
            json!({"sandboxes": 1000}),
        )
        .await;
    assert_error(s, &b, 401, "UNAUTHORIZED");
    let (s, b) = ts
        .call_as(&key, Method::DELETE, "/v1/tenants/self/quota", Value::Null)
        .await;
    assert_error(s, &b, 401, "UNAUTHORIZED");
    let (s, b) = ts
        .call_as(&other, Method::GET, "/v1/tenants/self/quota", Value::Null)
        .await;
    assert_error(s, &b, 401, "UNAUTHORIZED");
    let (_, b) = ts
        .call_as(&key, Method::GET, "/v1/quota", Value::Null)
        .await;
    assert_eq!(b["quota"], json!({"sandboxes": 1}), "unchanged: {b}");
}

#[tokio::test]
async fn admin_sets_and_resets_quotas_and_the_default_applies_to_the_rest() {
    let ts = TestServer::start_with(|c| {
        c.default_quota.sandboxes = Some(1);
    })
    .await;
    let key = ts.create_key("fresh").await;
    let (_, b) = ts
        .call_as(&key, Method::GET, "/v1/quota", Value::Null)
        .await;
    assert_eq!(b["quota"], json!({"sandboxes": 1}), "{b}");
    assert_eq!(b["isDefault"], true);
    assert_eq!(ts.create_as(&key, create("f1")).await.0, 201);
    let (s, b) = ts.create_as(&key, create("f2")).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    // The admin raises it (for a tenant without a key yet too) ...
    let (s, b) = ts
        .json(
            Method::PUT,
            "/v1/tenants/fresh/quota",
            json!({"sandboxes": 2, "runningSandboxes": 10}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["isDefault"], false);
    assert_eq!(b["usage"]["sandboxes"], 1);
    let (s, _) = ts
        .json(
            Method::PUT,
            "/v1/tenants/new-one/quota",
            json!({"sandboxes": 7}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, b) = ts.get("/v1/tenants/new-one/quota").await;
    assert_eq!(b["quota"]["sandboxes"], 7, "{b}");
    assert_eq!(ts.create_as(&key, create("f2")).await.0, 201);
    // ... and removes it: the default applies again.
    let (s, b) = ts
        .json(Method::DELETE, "/v1/tenants/fresh/quota", Value::Null)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["isDefault"], true);
    assert_eq!(b["usage"]["sandboxes"], 2);
    let (s, b) = ts
        .json(Method::PUT, "/v1/tenants/Bad_Name/quota", json!({}))
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = ts
        .json(Method::PUT, "/v1/tenants/x/quota", json!({"sandboxez": 1}))
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn limits_above_the_maxima_are_refused_on_create_and_patch() {
    let ts = TestServer::start_with(|c| {
        c.max_limits.memory_mb = Some(2048);
        c.max_limits.cpus = Some(1.0);
        c.max_limits.pids = Some(2048);
        c.max_exposed_ports = 1;
    })
    .await;
    let key = ts.create_key("greedy").await;
    for (field, limits, max) in [
        ("memoryMb", json!({"memoryMb": 2049}), json!(2048)),
        ("cpus", json!({"cpus": 64}), json!(1.0)),
        ("pids", json!({"pids": 65536}), json!(2048)),
    ] {
        let (s, b) = ts
            .create_as(&key, json!({"id": "g", "limits": limits}))
            .await;
        assert_error(s, &b, 400, "LIMIT_EXCEEDED");
        assert_eq!(b["context"]["field"], field, "{b}");
        assert_eq!(b["context"]["max"], max, "{b}");
        assert!(b["message"].as_str().unwrap().contains(field), "{b}");
    }
    assert_eq!(ts.driver.counters.starts.load(Ordering::SeqCst), 0);
    let (s, b) = ts.create_as(&key, create("g")).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = ts
        .patch_limits_as(&key, "g", json!({"memoryMb": 4096}))
        .await;
    assert_error(s, &b, 400, "LIMIT_EXCEEDED");
    let (_, b) = ts.sandbox_as(&key, "g").await;
    assert_eq!(b["limits"]["memoryMb"], 1024, "unchanged: {b}");
    // Create-or-get of an existing id applies limits like PATCH: capped the same way.
    let (s, b) = ts
        .create_as(&key, json!({"id": "g", "limits": {"cpus": 2}}))
        .await;
    assert_error(s, &b, 400, "LIMIT_EXCEEDED");
    let (_, b) = ts
        .call_as(&key, Method::GET, "/v1/quota", Value::Null)
        .await;
    assert_eq!(b["caps"]["memoryMb"], 2048, "{b}");
    assert_eq!(b["caps"]["exposedPorts"], 1, "{b}");
    // One exposed port per sandbox here: a second is refused, the same one again is not.
    let expose = |port: u16| {
        ts.call_as(
            &key,
            Method::POST,
            "/v1/sandboxes/g/ports",
            json!({"port": port}),
        )
    };
    let (s, b) = expose(8080).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = expose(8081).await;
    assert_error(s, &b, 400, "LIMIT_EXCEEDED");
    assert_eq!(b["context"]["field"], "exposedPorts", "{b}");
    let (s, b) = expose(8080).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn maxima_above_the_host_do_not_start_a_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = super::config(tmp.path());
    config.max_limits.memory_mb = Some(u64::MAX / 2);
    super::make_image(&config, "default");
    let driver = super::fake_agent::FakeDriver::new(tmp.path().join("sockets"));
    let err = sandpit_server::Server::start_with_driver(config, driver)
        .await
        .err()
        .expect("a server with more memory per sandbox than the host has");
    assert!(err.to_string().contains("--max-memory-mb"), "{err:#}");
}

/// Host cgroup directories (every v1 hierarchy and the unified one) whose name starts with
/// `prefix`: a sandbox's cgroups are named after its internal id (`<id>-<hash>`).
pub(super) fn cgroups_named(prefix: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, prefix: &str, depth: u32, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(path.clone());
            }
            if depth > 0 {
                walk(&path, prefix, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new("/sys/fs/cgroup"), prefix, 7, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_limits_above_the_host_are_refused_and_make_no_cgroup() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let key = rs.create_key("atk-caps").await;
    let (_, quota) = rs
        .call_as(&key, Method::GET, "/v1/quota", Value::Null)
        .await;
    let caps = &quota["caps"];
    let host_mb = caps["memoryMb"].as_u64().unwrap();
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(caps["pids"].as_u64().unwrap() <= pid_max / 8, "{caps}");
    for (field, limits) in [
        ("memoryMb", json!({"memoryMb": host_mb * 100})),
        ("pids", json!({"pids": pid_max * 2})),
        ("cpus", json!({"cpus": 64})),
    ] {
        let (s, b) = rs
            .call_as(
                &key,
                Method::POST,
                "/v1/sandboxes",
                json!({"id": "atk-cap-huge", "limits": limits}),
            )
            .await;
        assert_error(s, &b, 400, "LIMIT_EXCEEDED");
        assert_eq!(b["context"]["field"], field, "{b}");
    }
    assert!(cgroups_named("atk-cap-huge-").is_empty());
    let (s, _) = rs
        .call_as(&key, Method::GET, "/v1/sandboxes/atk-cap-huge", Value::Null)
        .await;
    assert_eq!(s, 404, "no record was left behind");

    // Control: a sandbox within the caps gets its cgroups, with the limit asked for; raising it
    // above the cap with PATCH is refused and the cgroup keeps its limit after a restart.
    let (s, b) = rs
        .call_as(
            &key,
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "atk-cap-ok", "limits": {"memoryMb": 256}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let made = cgroups_named("atk-cap-ok-");
    assert!(!made.is_empty(), "the cgroup walk finds sandbox cgroups");
    let (s, b) = rs
        .call_as(
            &key,
            Method::PATCH,
            "/v1/sandboxes/atk-cap-ok",
            json!({"limits": {"memoryMb": host_mb * 100}}),
        )
        .await;
    assert_error(s, &b, 400, "LIMIT_EXCEEDED");
    rs.call_as(
        &key,
        Method::POST,
        "/v1/sandboxes/atk-cap-ok/stop",
        Value::Null,
    )
    .await;
    let (s, b) = rs.exec_as(&key, "atk-cap-ok", "echo awake").await;
    assert_eq!(s, 200, "{b}");
    let limits: Vec<String> = cgroups_named("atk-cap-ok-")
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("memory.limit_in_bytes")).ok())
        .map(|s| s.trim().to_owned())
        .collect();
    assert!(
        limits.iter().any(|l| l == &(256u64 << 20).to_string()),
        "memory limits after the refused PATCH: {limits:?}"
    );
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_quota_holds_under_twenty_concurrent_creates() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let key = rs.create_key("atk-quota").await;
    let (s, b) = rs
        .call(
            Method::PUT,
            "/v1/tenants/atk-quota/quota",
            json!({"sandboxes": 3}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let rs = Arc::new(rs);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (rs, key) = (rs.clone(), key.clone());
            tokio::spawn(async move {
                rs.call_as(
                    &key,
                    Method::POST,
                    "/v1/sandboxes",
                    json!({"id": format!("atk-q{i}"), "limits": {"memoryMb": 64}}),
                )
                .await
            })
        })
        .collect();
    let mut created = 0;
    for call in calls {
        let (s, b) = call.await.unwrap();
        match s {
            201 => created += 1,
            _ => assert_error(s, &b, 429, "QUOTA_EXCEEDED"),
        }
    }
    assert_eq!(created, 3);
    let (_, list) = rs
        .call_as(&key, Method::GET, "/v1/sandboxes", Value::Null)
        .await;
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 3, "{list}");
    let dirs = cgroups_named("atk-q")
        .iter()
        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(dirs.len(), 3, "cgroups of the refused sandboxes: {dirs:?}");
    // The tenant cannot lift its own quota.
    let (s, b) = rs
        .call_as(
            &key,
            Method::PUT,
            "/v1/tenants/atk-quota/quota",
            json!({"sandboxes": 100}),
        )
        .await;
    assert_error(s, &b, 401, "UNAUTHORIZED");
    Arc::into_inner(rs).unwrap().stop().await;
}

#[tokio::test]
async fn a_sandbox_above_a_lowered_cap_does_not_wake_until_patched_down() {
    let ts = TestServer::start().await;
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "old", "limits": {"memoryMb": 4096}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (dir, driver, tmp) = ts.shutdown().await;
    let ts = TestServer::start_in(&dir, driver, |c| c.max_limits.memory_mb = Some(2048)).await;
    let (s, b) = ts.exec("old", "true").await;
    assert_error(s, &b, 400, "LIMIT_EXCEEDED");
    assert_eq!(b["context"]["sandboxId"], "old", "{b}");
    let (s, b) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/old",
            json!({"limits": {"memoryMb": 2048}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = ts.exec("old", "true").await;
    assert_eq!(s, 200, "{b}");
    drop(ts);
    drop(tmp);
}
