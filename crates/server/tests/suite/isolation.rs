//! The isolation tier of a sandbox: chosen at create, stored, shown, and run by that tier's
//! driver; a tier the server has no driver for is refused with its own code.

use std::sync::atomic::Ordering;

use reqwest::Method;
use sandpit_protocol::control::Isolation;
use sandpit_server::{Drivers, Server};
use serde_json::json;

use super::fake_agent::FakeDriver;
use super::{TestServer, config, make_image, send_json};

#[tokio::test]
async fn sandboxes_are_standard_by_default_and_show_their_tier() {
    let ts = TestServer::start().await;
    let (status, created) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"id": "plain"}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["isolation"], "standard");
    let (status, explicit) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "explicit", "isolation": "standard"}),
        )
        .await;
    assert_eq!(status, 201, "{explicit}");
    let (_, got) = ts.get("/v1/sandboxes/plain").await;
    assert_eq!(got["isolation"], "standard");
    let (_, list) = ts.get("/v1/sandboxes").await;
    let tiers: Vec<_> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["isolation"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tiers, ["standard", "standard"]);
}

#[tokio::test]
async fn an_unknown_tier_is_a_validation_error() {
    let ts = TestServer::start().await;
    let (status, body) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "x", "isolation": "firecracker"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "VALIDATION_FAILED");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("firecracker") && message.contains("gvisor"),
        "{message}"
    );
    assert_eq!(ts.get("/v1/sandboxes/x").await.0, 404);
}

#[tokio::test]
async fn a_tier_without_a_driver_is_refused_and_nothing_is_created() {
    let ts = TestServer::start().await;
    let (status, body) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "g", "isolation": "gvisor"}),
        )
        .await;
    assert_eq!(status, 501, "{body}");
    assert_eq!(body["code"], "ISOLATION_UNAVAILABLE");
    assert_eq!(body["context"]["isolation"], "gvisor");
    assert!(
        body["message"].as_str().unwrap().contains("standard"),
        "the message names what the server offers: {body}"
    );
    assert_eq!(ts.get("/v1/sandboxes/g").await.0, 404);
    assert_eq!(ts.driver.counters.starts.load(Ordering::SeqCst), 0);
}

/// Each sandbox runs on its tier's driver, for its whole life (start, stop, wake, destroy).
#[tokio::test]
async fn each_tier_runs_on_its_own_driver() {
    let tmp = tempfile::tempdir().unwrap();
    let standard = FakeDriver::new(tmp.path().join("standard"));
    let gvisor = FakeDriver::new(tmp.path().join("gvisor"));
    let cfg = config(tmp.path());
    make_image(&cfg, "default");
    let drivers = Drivers::new(standard.clone()).with(Isolation::Gvisor, gvisor.clone());
    let server = Server::start_with_drivers(cfg, drivers).await.unwrap();
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(server.admin_key())
    };

    let (status, body) = send_json(
        call(Method::POST, "/v1/sandboxes"),
        &json!({"id": "g", "isolation": "gvisor"}),
    )
    .await;
    assert_eq!(
        (status, body["isolation"].as_str()),
        (201, Some("gvisor")),
        "{body}"
    );
    let (status, body) = send_json(call(Method::POST, "/v1/sandboxes"), &json!({"id": "s"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(standard.running_ids().len(), 1);
    assert_eq!(gvisor.running_ids().len(), 1);

    // Create-or-get with another tier is a conflict, not a silent change.
    let (status, body) = send_json(
        call(Method::POST, "/v1/sandboxes"),
        &json!({"id": "g", "isolation": "standard"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("SANDBOX_CONFLICT"))
    );

    // Stop and wake go to the same driver.
    let stopped = call(Method::POST, "/v1/sandboxes/g/stop")
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    assert_eq!(gvisor.counters.stops.load(Ordering::SeqCst), 1);
    assert_eq!(standard.counters.stops.load(Ordering::SeqCst), 0);
    let (status, _) = send_json(
        call(Method::POST, "/v1/sandboxes/g/api/execute"),
        &json!({"command": "echo hi"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(gvisor.counters.starts.load(Ordering::SeqCst), 2);
    assert_eq!(standard.counters.starts.load(Ordering::SeqCst), 1);

    let gone = call(Method::DELETE, "/v1/sandboxes/g")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    assert_eq!(gvisor.counters.destroys.load(Ordering::SeqCst), 1);
    assert_eq!(standard.counters.destroys.load(Ordering::SeqCst), 0);
    server.shutdown().await.unwrap();
}

/// A data dir from before store migration 12 (uid slots in the store): at start the server
/// hands each old sandbox's range to the standard driver, once, and the sandbox is `standard`.
#[tokio::test]
async fn an_upgraded_server_hands_old_uid_ranges_to_the_driver_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let path = cfg.data_dir.join("sandpit.db");
    sandpit_store::create_schema_before(&path, 12).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "INSERT INTO tenants (name, created_at) VALUES ('default', 1);
         INSERT INTO sandboxes (tenant, id, internal_id, image, state, sleep_after, keep_alive,
             ephemeral, env, limits, slot, created_at, last_active_at)
         VALUES ('default', 'old', 'old-0123456789ab', 'default', 'sleeping', 600, 0, 0, '{}',
             '{}', 3, 1, 1);",
    )
    .unwrap();
    drop(db);

    let driver = FakeDriver::new(tmp.path().join("sockets"));
    let ts = TestServer::start_in(tmp.path(), driver.clone(), |_| {}).await;
    assert_eq!(
        *driver.adopted.lock().unwrap(),
        [("old-0123456789ab".to_owned(), 100_000 + 3 * 65_536)]
    );
    let (status, old) = ts.get("/v1/sandboxes/old").await;
    assert_eq!((status, old["isolation"].as_str()), (200, Some("standard")));
    drop(ts);

    // The hand-over is not repeated at the next start.
    let again = FakeDriver::new(tmp.path().join("sockets"));
    let _ts = TestServer::start_in(tmp.path(), again.clone(), |_| {}).await;
    assert!(again.adopted.lock().unwrap().is_empty());
}
