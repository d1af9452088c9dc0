//! Labels, time-to-live and resource usage through the public API: label filters (AND,
//! paged, tenant-scoped), PATCH merges, expiry destroying a sandbox (with an audit row), and
//! usage numbers that move with what a real sandbox does.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::e2e::Real;
use super::{TestServer, assert_error, eventually, status_json};

/// Ids of a list answer, in order.
fn ids(list: &Value) -> Vec<String> {
    list["sandboxes"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn create(ts: &TestServer, body: Value) -> Value {
    let (s, b) = ts.json(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
    b
}

#[tokio::test]
async fn label_filters_return_exactly_the_matching_sandboxes() {
    let ts = TestServer::start().await;
    let b = create(
        &ts,
        json!({"id": "a", "labels": {"env": "prod", "team": "ml"}}),
    )
    .await;
    assert_eq!(b["labels"], json!({"env": "prod", "team": "ml"}));
    create(&ts, json!({"id": "b", "labels": {"env": "prod"}})).await;
    create(
        &ts,
        json!({"id": "c", "labels": {"env": "dev", "team": "ml"}}),
    )
    .await;
    create(&ts, json!({"id": "d"})).await;

    let (s, list) = ts.get("/v1/sandboxes?label=env=prod").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(ids(&list), ["a", "b"]);
    let (_, list) = ts.get("/v1/sandboxes?label=env%3Dprod&label=team=ml").await;
    assert_eq!(ids(&list), ["a"], "selectors are ANDed");
    let (_, list) = ts.get("/v1/sandboxes?label=team=ml").await;
    assert_eq!(ids(&list), ["a", "c"]);
    let (_, list) = ts.get("/v1/sandboxes?label=team=none").await;
    assert_eq!(ids(&list), Vec::<String>::new());
    let (_, list) = ts.get("/v1/sandboxes").await;
    assert_eq!(ids(&list), ["a", "b", "c", "d"]);

    // Pages hold only matching sandboxes and the cursor walks them.
    let (_, page) = ts.get("/v1/sandboxes?label=team=ml&limit=1").await;
    assert_eq!(ids(&page), ["a"]);
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let (_, page) = ts
        .get(&format!(
            "/v1/sandboxes?label=team=ml&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&page), ["c"]);
    assert!(page.get("nextCursor").is_none(), "{page}");

    // PATCH merges: a string sets, null removes, others stay.
    let (s, b) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/a",
            json!({"labels": {"env": null, "tier": "gold"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["labels"], json!({"team": "ml", "tier": "gold"}));
    let (_, list) = ts.get("/v1/sandboxes?label=env=prod").await;
    assert_eq!(ids(&list), ["b"]);
    let (_, got) = ts.get("/v1/sandboxes/a").await;
    assert_eq!(got["labels"], json!({"team": "ml", "tier": "gold"}));

    // Another tenant with the same labels sees only its own.
    let acme = ts.create_key("acme").await;
    let (s, _) = ts
        .call_as(
            &acme,
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "x", "labels": {"env": "prod"}}),
        )
        .await;
    assert_eq!(s, 201);
    let (_, list) = ts
        .call_as(
            &acme,
            Method::GET,
            "/v1/sandboxes?label=env=prod",
            Value::Null,
        )
        .await;
    assert_eq!(ids(&list), ["x"]);
    let (_, list) = ts.get("/v1/sandboxes?label=env=prod").await;
    assert_eq!(ids(&list), ["b"]);
}

#[tokio::test]
async fn labels_are_validated_and_bounded() {
    let ts = TestServer::start().await;
    for body in [
        json!({"id": "v", "labels": {"bad key": "x"}}),
        json!({"id": "v", "labels": {"k": "a,b"}}),
        json!({"id": "v", "labels": {"k": "v".repeat(129)}}),
        json!({"id": "v", "labels": {"k": 3}}),
    ] {
        let (s, b) = ts.json(Method::POST, "/v1/sandboxes", body).await;
        assert_eq!(s, 400, "{b}");
    }
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "v", "labels": many}),
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    assert!(b["message"].as_str().unwrap().contains("at most 32"), "{b}");

    // A PATCH that would pass the bound changes nothing.
    let full: serde_json::Map<String, Value> =
        (0..32).map(|i| (format!("k{i}"), json!("v"))).collect();
    create(&ts, json!({"id": "v", "labels": full})).await;
    let (s, b) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/v",
            json!({"labels": {"one-more": "v"}}),
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (_, got) = ts.get("/v1/sandboxes/v").await;
    assert_eq!(got["labels"].as_object().unwrap().len(), 32);

    for query in ["label=env", "label=%20=x", "label=a=b=c"] {
        let (s, b) = ts.get(&format!("/v1/sandboxes?{query}")).await;
        assert_error(s, &b, 400, "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn a_ttl_destroys_the_sandbox_at_expiry_and_is_audited() {
    let ts = TestServer::start().await;
    let b = create(&ts, json!({"id": "brief", "ttl": "1s"})).await;
    assert!(b["expiresAt"].is_string(), "{b}");
    let b = create(&ts, json!({"id": "kept", "ttl": 1})).await;
    assert!(b["expiresAt"].is_string(), "{b}");
    // `0` removes the expiry; a later ttl moves it.
    let (s, b) = ts
        .json(Method::PATCH, "/v1/sandboxes/kept", json!({"ttl": 0}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("expiresAt").is_none(), "{b}");
    let b = create(&ts, json!({"id": "later", "ttl": "1s"})).await;
    let first = b["expiresAt"].as_str().unwrap().to_owned();
    let (_, b) = ts
        .json(Method::PATCH, "/v1/sandboxes/later", json!({"ttl": "1h"}))
        .await;
    assert!(b["expiresAt"].as_str().unwrap() > first.as_str(), "{b}");

    let gone = eventually(Duration::from_secs(20), || async {
        ts.get("/v1/sandboxes/brief").await.0 == 404
    })
    .await;
    assert!(gone, "the expired sandbox is still there");
    assert!(
        ts.driver
            .counters
            .destroys
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    // Sandboxes whose expiry was removed or moved survive the reaper's passes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ts.get("/v1/sandboxes/kept").await.0, 200);
    assert_eq!(ts.get("/v1/sandboxes/later").await.0, 200);

    let (_, log) = ts.get("/v1/audit").await;
    let expired: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "sandbox.expire")
        .collect();
    assert_eq!(expired.len(), 1, "{log}");
    assert_eq!(expired[0]["target"], "brief");
    assert_eq!(expired[0]["actor"], "ttl");
    assert_eq!(expired[0]["result"], "ok");

    for ttl in [json!("soon"), json!(-1), json!(1e300), json!(true)] {
        let (s, b) = ts
            .json(
                Method::POST,
                "/v1/sandboxes",
                json!({"id": "bad", "ttl": ttl}),
            )
            .await;
        assert_error(s, &b, 400, "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn attack_a_tenant_cannot_read_another_tenants_usage() {
    let ts = TestServer::start().await;
    create(&ts, json!({"id": "mine"})).await;
    let (s, b) = ts.get("/v1/sandboxes/mine/usage").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "running");
    for field in [
        "cpuUsec",
        "memoryBytes",
        "memoryPeakBytes",
        "pids",
        "diskBytes",
    ] {
        assert!(b[field].is_u64(), "{field}: {b}");
    }
    // Another tenant's key cannot read it, nor tell it exists.
    let acme = ts.create_key("acme").await;
    let r = ts
        .req_as(&acme, Method::GET, "/v1/sandboxes/mine/usage")
        .send()
        .await
        .unwrap();
    let (s, b) = status_json(r).await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let (s, b) = ts.get("/v1/sandboxes/nope/usage").await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
}

/// `GET /v1/sandboxes/{id}/usage` of the real server.
async fn usage(rs: &Real, id: &str) -> Value {
    let (s, b) = rs
        .call(
            Method::GET,
            &format!("/v1/sandboxes/{id}/usage"),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field}: {v}"))
}

/// Writes `mib` MiB of random bytes to `/workspace/blob` and returns by how much the reported
/// `diskBytes` grew (the count must be complete).
async fn disk_growth_of_writing(rs: &Real, id: &str, mib: u64) -> u64 {
    let before = num(&usage(rs, id).await, "diskBytes");
    let command = format!(
        "head -c {} /dev/urandom > /workspace/blob && sync",
        mib << 20
    );
    let out = rs.exec(id, &command).await;
    assert_eq!(out["exitCode"], 0, "{out}");
    let after = usage(rs, id).await;
    assert_eq!(after["diskComplete"], true, "{after}");
    num(&after, "diskBytes").saturating_sub(before)
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_usage_moves_with_cpu_memory_and_disk() {
    let Some(rs) = Real::start().await else {
        return;
    };
    rs.ensure_sandbox(json!({"id": "e2e-usage", "keepAlive": true}))
        .await;
    let before = usage(&rs, "e2e-usage").await;
    assert_eq!(before["state"], "running");
    assert!(num(&before, "pids") >= 1, "{before}");

    // Burn about a second of CPU while holding 96 MiB.
    let out = rs
        .exec(
            "e2e-usage",
            "python3 -c 'import time\nb = bytearray(96 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass'",
        )
        .await;
    assert_eq!(out["exitCode"], 0, "{out}");
    let after = usage(&rs, "e2e-usage").await;
    let burnt = num(&after, "cpuUsec") - num(&before, "cpuUsec");
    assert!(burnt >= 800_000, "{burnt} µs of CPU: {before} → {after}");
    assert!(
        num(&after, "memoryPeakBytes") >= 96 << 20,
        "peak below the 96 MiB held: {after}"
    );
    assert!(num(&after, "memoryBytes") > 0, "{after}");

    // Disk grows by what a file takes.
    let grown = disk_growth_of_writing(&rs, "e2e-usage", 20).await;
    assert!(grown >= 20 << 20, "disk grew by {grown}");
    eprintln!(
        "usage: {burnt} µs CPU burnt, memory peak {} MiB, disk +{} MiB for a 20 MiB file",
        num(&after, "memoryPeakBytes") >> 20,
        grown >> 20
    );

    // Asleep: no CPU, memory or processes; the disk stays.
    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes/e2e-usage/stop", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let asleep = usage(&rs, "e2e-usage").await;
    assert_eq!(asleep["state"], "sleeping");
    assert_eq!(num(&asleep, "cpuUsec"), 0);
    assert_eq!(num(&asleep, "pids"), 0);
    assert!(num(&asleep, "diskBytes") >= 20 << 20, "{asleep}");
    assert_eq!(
        rs.state("e2e-usage").await,
        "sleeping",
        "usage must not wake it"
    );

    // With diskMb the layer is an ext4 image: its allocated blocks grow with a file too.
    rs.ensure_sandbox(json!({"id": "e2e-usage-img", "keepAlive": true, "limits": {"diskMb": 64}}))
        .await;
    let grown = disk_growth_of_writing(&rs, "e2e-usage-img", 8).await;
    assert!(grown >= 8 << 20, "image grew by {grown}");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_ttl_destroys_the_sandbox_and_its_workspace() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let b = rs
        .ensure_sandbox(json!({"id": "e2e-ttl", "ttl": "3s", "labels": {"job": "nightly"}}))
        .await;
    assert!(b["expiresAt"].is_string(), "{b}");
    let out = rs.exec("e2e-ttl", "echo data > /workspace/f").await;
    assert_eq!(out["exitCode"], 0, "{out}");
    let sandboxes = rs.data_dir.join("sandboxes");
    let dirs = || {
        std::fs::read_dir(&sandboxes)
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(dirs(), 1, "the sandbox has its dir");

    let gone = eventually(Duration::from_secs(60), || async {
        rs.call(Method::GET, "/v1/sandboxes/e2e-ttl", Value::Null)
            .await
            .0
            == 404
    })
    .await;
    assert!(gone, "the sandbox outlived its ttl");
    assert_eq!(dirs(), 0, "its writable layer is gone");
    let (_, log) = rs.call(Method::GET, "/v1/audit", Value::Null).await;
    let expired = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "sandbox.expire" && e["target"] == "e2e-ttl");
    assert!(expired, "{log}");
    rs.stop().await;
}
