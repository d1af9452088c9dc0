//! Sleep, wake, keepAlive, stop, restart of the server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;

use super::{TestServer, eventually, throughout};

async fn state(ts: &TestServer, id: &str) -> String {
    ts.get(&format!("/v1/sandboxes/{id}")).await.1["state"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

#[tokio::test]
async fn idle_sandboxes_sleep_and_wake_with_their_files() {
    let ts = TestServer::start().await;
    ts.json(
        Method::POST,
        "/v1/sandboxes",
        json!({"id": "nap", "sleepAfter": "1s"}),
    )
    .await;
    let (s, _) = ts
        .json(
            Method::POST,
            "/v1/sandboxes/nap/api/write",
            json!({"path": "/workspace/f", "content": "kept"}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            state(&ts, "nap").await == "sleeping"
        })
        .await
    );
    assert_eq!(ts.driver.counters.stops.load(Ordering::SeqCst), 1);
    assert!(ts.driver.running_ids().is_empty());
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes/nap/api/read",
            json!({"path": "/workspace/f"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["content"], "kept");
    assert_eq!(state(&ts, "nap").await, "running");
    assert_eq!(ts.driver.counters.starts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_open_stream_keeps_the_sandbox_awake() {
    let ts = TestServer::start().await;
    ts.json(
        Method::POST,
        "/v1/sandboxes",
        json!({"id": "streamer", "sleepAfter": 1}),
    )
    .await;
    let r = ts
        .req(
            Method::POST,
            "/v1/sandboxes/streamer/api/stream?n=6&delay_ms=500",
        )
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let mut events = 0;
    while let Some(chunk) = stream.next().await {
        events += String::from_utf8_lossy(&chunk.unwrap())
            .matches("data:")
            .count();
        assert_eq!(
            state(&ts, "streamer").await,
            "running",
            "slept during a stream"
        );
    }
    assert_eq!(events, 6);
    // A long request (no bytes for 2 s) counts too.
    let (s, _) = ts.exec("streamer", "sleep-ms 2000").await;
    assert_eq!(s, 200);
    assert_eq!(ts.driver.counters.stops.load(Ordering::SeqCst), 0);
    assert!(
        eventually(Duration::from_secs(5), || async {
            state(&ts, "streamer").await == "sleeping"
        })
        .await
    );
}

#[tokio::test]
async fn keep_alive_never_sleeps_and_stop_sleeps_now() {
    let ts = TestServer::start().await;
    ts.json(
        Method::POST,
        "/v1/sandboxes",
        json!({"id": "awake", "sleepAfter": 1, "keepAlive": true}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(state(&ts, "awake").await, "running");
    let (s, b) = ts
        .json(Method::POST, "/v1/sandboxes/awake/stop", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "sleeping");
    assert!(ts.driver.running_ids().is_empty());
    // Stopping a sleeping sandbox is fine.
    let (s, _) = ts
        .json(Method::POST, "/v1/sandboxes/awake/stop", json!({}))
        .await;
    assert_eq!(s, 200);
}

/// Writes `content` to `path` in the fake sandbox `id` (the fake agent's processes follow the
/// file `/busy`).
async fn write(ts: &TestServer, id: &str, path: &str, content: &str) {
    let (s, b) = ts
        .json(
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/write"),
            json!({"path": path, "content": content}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

/// How often the reaper asked the fake sandbox `id` for running processes.
async fn busy_checks(ts: &TestServer, id: &str) -> u64 {
    let (_, b) = ts
        .json(
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/read"),
            json!({"path": "/busy-checks"}),
        )
        .await;
    b["content"].as_str().map_or(0, |n| n.parse().unwrap())
}

/// Asserts that sandbox `id` stays running for `how_long`.
async fn stays_running(ts: &TestServer, id: &str, how_long: Duration) {
    let running = throughout(how_long, || async { state(ts, id).await == "running" });
    assert!(running.await, "{id} slept while busy");
}

#[tokio::test]
async fn running_processes_keep_a_sandbox_awake_until_they_end() {
    let ts = TestServer::start().await;
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "busy", "sleepAfter": 1}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["keepAliveWhileBusy"], true, "{b}");
    write(&ts, "busy", "/busy", "yes").await;
    stays_running(&ts, "busy", Duration::from_millis(3500)).await;
    // The agent is asked only once the sandbox would sleep, then again a `sleepAfter` later
    // (not on every 100 ms reaper pass).
    let checks = busy_checks(&ts, "busy").await;
    assert!((1..=5).contains(&checks), "{checks} busy checks in 3.5 s");
    // The process ends: the sandbox sleeps, without any call.
    write(&ts, "busy", "/busy", "no").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            state(&ts, "busy").await == "sleeping"
        })
        .await
    );
    assert_eq!(ts.driver.counters.stops.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keep_alive_while_busy_off_sleeps_despite_processes_and_stop_always_works() {
    let ts = TestServer::start().await;
    let body = json!({"id": "lazy", "sleepAfter": 1, "keepAliveWhileBusy": false});
    let (s, b) = ts.json(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["keepAliveWhileBusy"], false, "{b}");
    write(&ts, "lazy", "/busy", "yes").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            state(&ts, "lazy").await == "sleeping"
        })
        .await,
        "a busy sandbox with keepAliveWhileBusy false must sleep"
    );
    // Its agent was never asked.
    assert_eq!(busy_checks(&ts, "lazy").await, 0);

    // Turned on by PATCH (the read above woke it, /busy is still "yes"): awake past sleepAfter.
    let (s, b) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/lazy",
            json!({"keepAliveWhileBusy": true}),
        )
        .await;
    assert_eq!((s, &b["keepAliveWhileBusy"]), (200, &json!(true)), "{b}");
    assert_eq!(
        ts.get("/v1/sandboxes/lazy").await.1["keepAliveWhileBusy"],
        true
    );
    stays_running(&ts, "lazy", Duration::from_millis(2500)).await;
    // Busy never blocks an explicit stop or destroy.
    let (s, b) = ts
        .json(Method::POST, "/v1/sandboxes/lazy/stop", json!({}))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("sleeping")), "{b}");
    let (s, _) = ts.exec("lazy", "true").await;
    assert_eq!(s, 200);
    assert_eq!(state(&ts, "lazy").await, "running");
    let r = ts
        .req(Method::DELETE, "/v1/sandboxes/lazy")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(ts.driver.running_ids().is_empty());
}

#[tokio::test]
async fn ephemeral_sandboxes_lose_files_on_sleep() {
    let ts = TestServer::start().await;
    ts.json(
        Method::POST,
        "/v1/sandboxes",
        json!({"id": "eph", "ephemeral": true}),
    )
    .await;
    ts.json(
        Method::POST,
        "/v1/sandboxes/eph/api/write",
        json!({"path": "/f", "content": "x"}),
    )
    .await;
    ts.json(Method::POST, "/v1/sandboxes/eph/stop", json!({}))
        .await;
    let (s, _) = ts
        .json(
            Method::POST,
            "/v1/sandboxes/eph/api/read",
            json!({"path": "/f"}),
        )
        .await;
    assert_eq!(s, 404);
    assert!(ts.driver.specs.lock().unwrap().iter().all(|s| s.ephemeral));
}

#[tokio::test]
async fn state_survives_a_restart_and_sandboxes_wake() {
    let ts = TestServer::start().await;
    let key = ts.key.clone();
    let tenant_key = ts.create_key("acme").await;
    ts.json(
        Method::POST,
        "/v1/sandboxes",
        json!({"id": "durable", "keepAlive": true}),
    )
    .await;
    ts.json(
        Method::POST,
        "/v1/sandboxes/durable/api/write",
        json!({"path": "/f", "content": "v1"}),
    )
    .await;
    let (dir, driver, tmp) = ts.shutdown().await;
    assert_eq!(
        driver.counters.stops.load(Ordering::SeqCst),
        1,
        "shutdown puts sandboxes to sleep"
    );
    assert!(driver.running_ids().is_empty());

    let ts = TestServer::start_in(&dir, driver.clone(), |_| {}).await;
    assert_eq!(ts.key, key, "the generated admin key is reused");
    let (s, info) = ts.get("/v1/sandboxes/durable").await;
    assert_eq!(s, 200);
    assert_eq!(info["state"], "sleeping");
    assert_eq!(info["keepAlive"], true);
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes/durable/api/read",
            json!({"path": "/f"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["content"], "v1");
    assert_eq!(state(&ts, "durable").await, "running");
    let r = ts
        .req_as(&tenant_key, Method::GET, "/v1/sandboxes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "tenant keys survive restarts");
    drop(tmp);
}

#[tokio::test]
async fn restart_after_a_crash_reconciles_running_sandboxes() {
    let ts = TestServer::start().await;
    ts.exec("orphan", "x").await;
    // Simulate a crash: the server goes away without putting sandboxes to sleep.
    let TestServer {
        server,
        dir,
        driver,
        _tmp,
        ..
    } = ts;
    drop(server);
    assert_eq!(driver.running_ids().len(), 1);
    let ts = TestServer::start_in(&dir, driver.clone(), |_| {}).await;
    assert!(
        driver.running_ids().is_empty(),
        "reconcile stopped the leftover"
    );
    assert_eq!(state(&ts, "orphan").await, "sleeping");
    let (s, _) = ts.exec("orphan", "y").await;
    assert_eq!(s, 200);
    drop(_tmp);
}

#[tokio::test]
async fn one_server_per_data_dir() {
    let ts = TestServer::start().await;
    let cfg = super::config(&ts.dir);
    let err = sandpit_server::Server::start_with_driver(cfg, ts.driver.clone()).await;
    let message = format!("{:#}", err.err().expect("a second server must not start"));
    assert!(message.contains("another sandpit server"), "{message}");
    let (s, _) = ts.get("/v1/sandboxes").await;
    assert_eq!(s, 200, "the first one is unaffected");
}

#[tokio::test]
async fn a_dead_agent_is_noticed_without_a_call() {
    let ts = TestServer::start().await;
    ts.json(
        Method::POST,
        "/v1/sandboxes",
        json!({"id": "ghost", "keepAlive": true}),
    )
    .await;
    let internal = ts.driver.specs.lock().unwrap()[0].id.clone();
    ts.driver.crash(&internal);
    assert!(
        eventually(Duration::from_secs(3), || async {
            state(&ts, "ghost").await == "sleeping"
        })
        .await
    );
    assert_eq!(
        ts.driver.counters.stops.load(Ordering::SeqCst),
        1,
        "the driver cleaned up"
    );
    let (s, _) = ts.exec("ghost", "back").await;
    assert_eq!(s, 200);
}

/// The process archive (a lifecycle listener) reads the agent's processes before the driver
/// stops the sandbox, on every kind of stop.
#[tokio::test]
async fn processes_are_captured_before_the_driver_stops_the_sandbox() {
    let ts = TestServer::start().await;
    let (status, _) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            serde_json::json!({"id": "cap"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = ts
        .json(
            Method::POST,
            "/v1/sandboxes/cap/stop",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(*ts.driver.events.lock().unwrap(), ["process list", "stop"]);
}

/// A wedged agent cannot hold a stop: the listeners get a bounded time, then the driver stops
/// the sandbox.
#[tokio::test]
async fn a_wedged_agent_delays_the_stop_only_by_the_budget() {
    let ts = TestServer::start().await;
    let body = serde_json::json!({"id": "wedged", "env": {"HANG_PROCESS_LIST": "1"}});
    assert_eq!(ts.json(Method::POST, "/v1/sandboxes", body).await.0, 201);
    let t = std::time::Instant::now();
    let (status, _) = ts
        .json(
            Method::POST,
            "/v1/sandboxes/wedged/stop",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let took = t.elapsed();
    assert!(
        took < sandpit_server::lifecycle::ABOUT_TO_STOP_BUDGET + std::time::Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(*ts.driver.events.lock().unwrap(), ["process list", "stop"]);
    assert_eq!(ts.get("/v1/sandboxes/wedged").await.1["state"], "sleeping");
}
