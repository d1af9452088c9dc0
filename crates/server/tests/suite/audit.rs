//! The audit log through the public API: what is recorded, whose log it lands in, who may
//! read it.

use reqwest::Method;
use serde_json::{Value, json};

use super::keys::{call_as, new_key};
use super::{TestServer, assert_error, status_json};

async fn send_as(ts: &TestServer, key: &str, method: Method, path: &str, body: Value) -> u16 {
    let r = ts
        .req_as(key, method, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    status_json(r).await.0
}

/// `(action, target, result)` of a log page, oldest first.
fn rows(log: &Value) -> Vec<(String, String, String)> {
    let mut rows: Vec<_> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (s("action"), s("target"), s("result"))
        })
        .collect();
    rows.reverse();
    rows
}

fn row(action: &str, target: &str, result: &str) -> (String, String, String) {
    (action.into(), target.into(), result.into())
}

#[tokio::test]
async fn control_plane_actions_are_audited_per_tenant_without_secret_values() {
    let ts = TestServer::start().await;
    let (a, a_id) = new_key(&ts, "tenant-a").await;
    let s = |status: u16, want: u16| assert_eq!(status, want);
    s(
        send_as(&ts, &a, Method::POST, "/v1/sandboxes", json!({"id": "box"})).await,
        201,
    );
    let patch = json!({"env": {"X": "1"}, "limits": {"memoryMb": 256},
        "secrets": {"TOKEN": {"value": "audit-s3cret", "hosts": ["api.example.test"]}}});
    s(
        send_as(&ts, &a, Method::PATCH, "/v1/sandboxes/box", patch).await,
        200,
    );
    s(
        send_as(
            &ts,
            &a,
            Method::POST,
            "/v1/sandboxes/box/ports",
            json!({"port": 8080}),
        )
        .await,
        200,
    );
    s(
        send_as(
            &ts,
            &a,
            Method::DELETE,
            "/v1/sandboxes/box/ports/8080",
            json!(null),
        )
        .await,
        204,
    );
    s(
        send_as(&ts, &a, Method::POST, "/v1/sandboxes/box/stop", json!({})).await,
        200,
    );
    s(
        send_as(&ts, &a, Method::DELETE, "/v1/sandboxes/box", json!(null)).await,
        204,
    );
    s(
        send_as(&ts, &a, Method::DELETE, "/v1/sandboxes/ghost", json!(null)).await,
        404,
    );
    // Reads are not audited.
    s(
        send_as(&ts, &a, Method::GET, "/v1/sandboxes", json!(null)).await,
        200,
    );

    let (status, log) = call_as(&ts, &a, Method::GET, "/v1/audit").await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(
        rows(&log),
        vec![
            // The admin made A's key: it is in A's log, by the admin.
            row("key.create", &a_id, "ok"),
            row("sandbox.create", "box", "ok"),
            row("sandbox.update", "box", "ok"),
            row("port.expose", "box:8080", "ok"),
            row("port.unexpose", "box:8080", "ok"),
            row("sandbox.stop", "box", "ok"),
            row("sandbox.destroy", "box", "ok"),
            row("sandbox.destroy", "ghost", "SANDBOX_NOT_FOUND"),
        ],
        "{log}"
    );
    let entries = log["entries"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["tenant"] == "tenant-a"), "{log}");
    assert_eq!(entries.last().unwrap()["actor"], "admin", "{log}");
    assert!(
        entries[..7].iter().all(|e| e["actor"] == a_id.as_str()),
        "{log}"
    );
    let update = entries
        .iter()
        .find(|e| e["action"] == "sandbox.update")
        .unwrap();
    assert_eq!(update["detail"], "env, limits, secrets: TOKEN", "{update}");
    assert!(!log.to_string().contains("audit-s3cret"), "{log}");

    // Paging: two at a time, newest first, down to the first entry.
    let (_, page) = call_as(&ts, &a, Method::GET, "/v1/audit?limit=2").await;
    let before = page["nextBefore"].as_i64().unwrap();
    let (_, next) = call_as(
        &ts,
        &a,
        Method::GET,
        &format!("/v1/audit?limit=2&before={before}"),
    )
    .await;
    assert_eq!(next["entries"][0]["seq"], entries[2]["seq"], "{next}");

    // The admin reads any tenant's log; its own (default) does not hold A's actions.
    let (_, admin_view) = ts.get("/v1/audit?tenant=tenant-a").await;
    assert_eq!(admin_view["entries"], log["entries"]);
    let (_, own) = ts.get("/v1/audit").await;
    assert!(rows(&own).is_empty(), "{own}");
}

#[tokio::test]
async fn attack_a_tenant_cannot_read_another_tenants_audit_log() {
    let ts = TestServer::start().await;
    let (a, _) = new_key(&ts, "tenant-a").await;
    let (b, _) = new_key(&ts, "tenant-b").await;
    assert_eq!(
        send_as(
            &ts,
            &a,
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "a-secret-box"})
        )
        .await,
        201
    );
    let (status, body) = call_as(&ts, &b, Method::GET, "/v1/audit?tenant=tenant-a").await;
    assert_error(status, &body, 403, "PERMISSION_DENIED");
    let (status, own) = call_as(&ts, &b, Method::GET, "/v1/audit").await;
    assert_eq!(status, 200);
    assert!(!own.to_string().contains("a-secret-box"), "{own}");
    // A key revoked by its tenant is recorded in that tenant's log; B's failed attempt on it
    // goes to B's own log only.
    let (_, a_keys) = call_as(&ts, &a, Method::GET, "/v1/keys").await;
    let a_id = a_keys["keys"][0]["keyId"].as_str().unwrap().to_owned();
    let (status, _) = call_as(&ts, &b, Method::DELETE, &format!("/v1/keys/{a_id}")).await;
    assert_eq!(status, 404);
    let (_, own) = call_as(&ts, &b, Method::GET, "/v1/audit").await;
    assert_eq!(own["entries"][0]["action"], "key.revoke", "{own}");
    assert_eq!(own["entries"][0]["result"], "KEY_NOT_FOUND", "{own}");
    let (_, a_log) = call_as(&ts, &a, Method::GET, "/v1/audit").await;
    assert!(
        a_log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "key.revoke"),
        "{a_log}"
    );
}
