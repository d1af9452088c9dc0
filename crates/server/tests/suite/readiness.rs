//! `GET /readyz`: ready while the store answers, 503 naming the store once it does not, and no
//! key needed either way. `/healthz` (liveness) stays 200 throughout.

use serde_json::{Value, json};

use super::TestServer;

async fn readyz(ts: &TestServer) -> (u16, Value) {
    let r = ts.get_anonymous("/readyz").await;
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn readyz_answers_200_on_a_healthy_server_without_a_key() {
    let ts = TestServer::start().await;
    let (status, body) = readyz(&ts).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ready": true, "notReady": [], "checks": {"store": "ok"}})
    );
    // A wrong key is not looked at: the probe has none.
    let r = ts
        .client
        .get(format!("{}/readyz", ts.base))
        .bearer_auth("sp_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn readyz_answers_503_naming_the_store_when_postgres_stops() {
    let Some(pg) = sandpit_store::test_postgres::TestPostgres::start() else {
        return;
    };
    let url = pg.url();
    let ts = TestServer::start_with(|c| {
        c.store = sandpit_server::StoreBackend::Postgres { url };
    })
    .await;
    let (status, body) = readyz(&ts).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["store"], "ok");

    // The database goes away (immediate stop, socket removed): not ready, and the body says
    // which check failed without the store's own error text (it is in the server log).
    drop(pg);
    let (status, body) = readyz(&ts).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["notReady"], json!(["store"]));
    let reason = body["checks"]["store"].as_str().unwrap();
    assert_ne!(reason, "ok");
    assert!(!reason.contains("sandpit-pg-"), "{reason}");
    // Liveness does not depend on the database: Kubernetes must not restart the replica.
    assert_eq!(ts.get_anonymous("/healthz").await.status(), 200);
}
