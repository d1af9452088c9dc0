//! API keys through the public API: listing, revocation and rotation take effect on the next
//! request, and a tenant can touch only its own keys. Also: `/metrics` behind the admin key,
//! and secrets and CA keys encrypted in the database file.

use reqwest::Method;
use serde_json::{Value, json};

use super::{TestServer, assert_error, status_json};

/// Creates a key for `tenant` with the admin key; returns `(key, key id)`.
pub async fn new_key(ts: &TestServer, tenant: &str) -> (String, String) {
    let (status, body) = ts
        .json(Method::POST, "/v1/keys", json!({"tenant": tenant}))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["keyId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "{body}");
    (body["key"].as_str().unwrap().to_owned(), id)
}

/// Status and body of a request made with `key`.
pub async fn call_as(ts: &TestServer, key: &str, method: Method, path: &str) -> (u16, Value) {
    ts.call_as(key, method, path, Value::Null).await
}

/// Whether `key` is accepted (a plain authenticated read).
async fn works(ts: &TestServer, key: &str) -> bool {
    let (status, body) = call_as(ts, key, Method::GET, "/v1/sandboxes").await;
    match status {
        200 => true,
        401 => {
            assert_error(status, &body, 401, "UNAUTHORIZED");
            false
        }
        other => panic!("unexpected {other}: {body}"),
    }
}

fn key_ids(list: &Value) -> Vec<&str> {
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyId"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn attack_a_revoked_key_is_refused_on_its_next_request() {
    let ts = TestServer::start().await;
    let (key, id) = new_key(&ts, "acme").await;
    // Used once, so the server has it cached.
    assert!(works(&ts, &key).await);
    let (status, body) = call_as(&ts, &ts.key, Method::DELETE, &format!("/v1/keys/{id}")).await;
    assert_eq!(status, 204, "{body}");
    assert!(!works(&ts, &key).await, "revoked key still accepted");

    // A tenant revokes its own key too, even the one it calls with.
    let (key, id) = new_key(&ts, "acme").await;
    assert!(works(&ts, &key).await);
    let (status, body) = call_as(&ts, &key, Method::DELETE, &format!("/v1/keys/{id}")).await;
    assert_eq!(status, 204, "{body}");
    assert!(!works(&ts, &key).await);
    let (status, body) = call_as(&ts, &ts.key, Method::DELETE, &format!("/v1/keys/{id}")).await;
    assert_error(status, &body, 404, "KEY_NOT_FOUND");
}

#[tokio::test]
async fn attack_a_rotated_key_is_refused_and_its_successor_works() {
    let ts = TestServer::start().await;
    let (old, old_id) = new_key(&ts, "acme").await;
    assert!(works(&ts, &old).await);
    let (status, body) = status_json(
        ts.req_as(&old, Method::POST, &format!("/v1/keys/{old_id}/rotate"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tenant"], "acme");
    let new = body["key"].as_str().unwrap().to_owned();
    let new_id = body["keyId"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(!works(&ts, &old).await, "rotated key still accepted");
    assert!(works(&ts, &new).await);
    let (_, list) = call_as(&ts, &new, Method::GET, "/v1/keys").await;
    assert_eq!(key_ids(&list), vec![new_id.as_str()], "{list}");
    // Rotating the old id again finds nothing.
    let (status, body) = call_as(
        &ts,
        &ts.key,
        Method::POST,
        &format!("/v1/keys/{old_id}/rotate"),
    )
    .await;
    assert_error(status, &body, 404, "KEY_NOT_FOUND");
}

#[tokio::test]
async fn attack_a_tenant_cannot_list_revoke_or_rotate_another_tenants_keys() {
    let ts = TestServer::start().await;
    let (a_key, a_id) = new_key(&ts, "tenant-a").await;
    let (b_key, b_id) = new_key(&ts, "tenant-b").await;

    let (status, list) = call_as(&ts, &b_key, Method::GET, "/v1/keys").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(key_ids(&list), vec![b_id.as_str()], "{list}");
    let (status, body) = call_as(&ts, &b_key, Method::GET, "/v1/keys?tenant=tenant-a").await;
    assert_error(status, &body, 403, "PERMISSION_DENIED");
    assert!(!body.to_string().contains(&a_id), "{body}");

    // Revoking or rotating A's key looks exactly like an unknown key, and changes nothing.
    for (method, path) in [
        (Method::DELETE, format!("/v1/keys/{a_id}")),
        (Method::POST, format!("/v1/keys/{a_id}/rotate")),
    ] {
        let (status, body) = call_as(&ts, &b_key, method, &path).await;
        assert_error(status, &body, 404, "KEY_NOT_FOUND");
    }
    assert!(works(&ts, &a_key).await, "B revoked A's key");
    // Creating keys stays with the admin.
    let (status, body) = status_json(
        ts.req_as(&b_key, Method::POST, "/v1/keys")
            .json(&json!({"tenant": "tenant-a"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 401, "UNAUTHORIZED");

    // The admin sees both, or one tenant's.
    let (_, all) = ts.get("/v1/keys").await;
    let mut ids = key_ids(&all);
    ids.sort();
    let mut want = vec![a_id.as_str(), b_id.as_str()];
    want.sort();
    assert_eq!(ids, want, "{all}");
    let (_, only_a) = ts.get("/v1/keys?tenant=tenant-a").await;
    assert_eq!(key_ids(&only_a), vec![a_id.as_str()], "{only_a}");
}

#[tokio::test]
async fn listed_keys_show_ids_and_times_never_keys() {
    let ts = TestServer::start().await;
    let (key, id) = new_key(&ts, "acme").await;
    let (_, before) = call_as(&ts, &ts.key, Method::GET, "/v1/keys?tenant=acme").await;
    assert!(before["keys"][0].get("lastUsedAt").is_none(), "{before}");
    assert!(works(&ts, &key).await);
    let (status, list) = call_as(&ts, &key, Method::GET, "/v1/keys").await;
    assert_eq!(status, 200);
    let entry = &list["keys"][0];
    assert_eq!(entry["keyId"], id.as_str());
    assert_eq!(entry["tenant"], "acme");
    assert!(
        entry["createdAt"].as_str().unwrap().ends_with('Z'),
        "{list}"
    );
    assert!(entry["lastUsedAt"].is_string(), "{list}");
    let text = list.to_string();
    assert!(!text.contains(&key) && !text.contains(&key[3..]), "{text}");
    // The admin key is not in the store and cannot be revoked through it.
    let (status, body) = call_as(&ts, &ts.key, Method::DELETE, "/v1/keys/admin").await;
    assert_error(status, &body, 404, "KEY_NOT_FOUND");
    assert!(works(&ts, &ts.key).await);
}

#[tokio::test]
async fn attack_metrics_need_the_admin_key_when_enabled() {
    let open = TestServer::start().await;
    let r = open.get_anonymous("/metrics").await;
    assert_eq!(r.status(), 200, "metrics are open by default");

    let ts = TestServer::start_with(|c| c.metrics_auth = true).await;
    let (tenant_key, _) = new_key(&ts, "acme").await;
    let anonymous = ts.get_anonymous("/metrics").await;
    let (status, body) = status_json(anonymous).await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
    for key in ["sp_wrong", tenant_key.as_str()] {
        let (status, body) = call_as(&ts, key, Method::GET, "/metrics").await;
        assert_error(status, &body, 401, "UNAUTHORIZED");
    }
    let r = ts.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("sandpit_sandboxes"));
}

/// Every byte SQLite keeps of the database: the file, its WAL and shared memory.
fn database_bytes(data_dir: &std::path::Path) -> Vec<u8> {
    ["sandpit.db", "sandpit.db-wal", "sandpit.db-shm"]
        .iter()
        .flat_map(|name| std::fs::read(data_dir.join(name)).unwrap_or_default())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn attack_secret_values_and_ca_keys_are_not_in_the_database_file() {
    use std::os::unix::fs::PermissionsExt;
    let ts = TestServer::start().await;
    let value = format!("db-s3cret-{}", std::process::id());
    let (status, body) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "enc", "network": {"mode": "allowlist", "allow": ["api.example.test"]},
                "secrets": {"API_TOKEN": {"value": value, "hosts": ["api.example.test"]}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // A second value set at runtime, while the server runs.
    let value2 = format!("{value}-patched");
    let (status, body) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/enc",
            json!({"secrets": {"API_TOKEN": {"value": value2, "hosts": ["api.example.test"]}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data_dir = ts.dir.join("data");
    let key_file = data_dir.join("secrets.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (dir, driver, tmp) = ts.shutdown().await;

    let bytes = database_bytes(&data_dir);
    assert!(
        contains(&bytes, b"api.example.test"),
        "policy missing: wrong file?"
    );
    assert!(
        !contains(&bytes, value.as_bytes()),
        "secret value in the database"
    );
    assert!(
        !contains(&bytes, b"PRIVATE KEY"),
        "CA private key in the database"
    );

    // Restarted on the same data dir, the server reads them back.
    let ts = TestServer::start_in(&dir, driver, |_| {}).await;
    let (status, body) = ts.get("/v1/sandboxes/enc").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["secrets"][0]["name"], "API_TOKEN", "{body}");
    let (status, body) = ts.exec("enc", "echo hi").await;
    assert_eq!(
        status, 200,
        "the sandbox starts with its decrypted CA: {body}"
    );
    drop(tmp);
}

#[tokio::test]
async fn attack_a_websocket_ticket_of_a_revoked_key_is_refused() {
    let ts = TestServer::start().await;
    let (key, id) = new_key(&ts, "acme").await;
    let (status, ticket) = call_as(&ts, &key, Method::POST, "/v1/sandboxes/t/ws-ticket").await;
    assert_eq!(status, 201, "{ticket}");
    let (status, body) = call_as(&ts, &ts.key, Method::DELETE, &format!("/v1/keys/{id}")).await;
    assert_eq!(status, 204, "{body}");
    let path = format!(
        "/v1/sandboxes/t/ws?ticket={}",
        ticket["ticket"].as_str().unwrap()
    );
    let r = ts.get_anonymous(&path).await;
    let (status, body) = status_json(r).await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
}
