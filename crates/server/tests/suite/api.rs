//! Control-plane routes: auth, create-or-get, list, patch, delete, bad input, tenants, metrics.

use reqwest::Method;
use serde_json::json;

use super::{TestServer, assert_error, status_json};

#[tokio::test]
async fn every_v1_route_needs_a_key() {
    let ts = TestServer::start().await;
    for (method, path) in [
        (Method::GET, "/v1/sandboxes"),
        (Method::POST, "/v1/sandboxes"),
        (Method::GET, "/v1/sandboxes/a"),
        (Method::POST, "/v1/sandboxes/a/api/ping"),
        (Method::POST, "/v1/keys"),
    ] {
        let r = ts
            .client
            .request(method.clone(), format!("{}{path}", ts.base))
            .send()
            .await;
        let (status, body) = status_json(r.unwrap()).await;
        assert_error(status, &body, 401, "UNAUTHORIZED");
        let (status, body) =
            status_json(ts.req_as("sp_wrong", method, path).send().await.unwrap()).await;
        assert_error(status, &body, 401, "UNAUTHORIZED");
    }
    // Nothing was created by the rejected calls.
    assert_eq!(
        ts.driver
            .counters
            .starts
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let r = ts.get_anonymous("/v1/openapi.json").await;
    assert_eq!(r.status(), 200);
    let r = ts.get_anonymous("/healthz").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn admin_key_is_generated_and_saved_privately() {
    use std::os::unix::fs::PermissionsExt;
    let ts = TestServer::start().await;
    let server = ts.server.as_ref().unwrap();
    let saved = std::fs::read_to_string(server.key_file()).unwrap();
    assert_eq!(saved.trim(), ts.key);
    assert!(ts.key.starts_with("sp_"));
    let mode = std::fs::metadata(server.key_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn create_is_create_or_get() {
    let ts = TestServer::start().await;
    let (status, body) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "alpha", "sleepAfter": "5m", "env": {"A": "1"}, "limits": {"memoryMb": 256}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "alpha");
    assert_eq!(body["state"], "running");
    assert_eq!(body["image"], "default");
    assert_eq!(body["sleepAfterSecs"], 300);
    assert_eq!(body["keepAlive"], false);
    assert_eq!(body["env"]["A"], "1");
    assert_eq!(body["limits"]["memoryMb"], 256);
    assert_eq!(body["limits"]["cpus"], 1.0, "defaults fill unset limits");
    let (status, again) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"id": "alpha"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["createdAt"], body["createdAt"]);
    let spec = ts.driver.specs.lock().unwrap()[0].clone();
    // The sandbox's env, then the agent's process cap (set by the server, last).
    assert_eq!(
        spec.env,
        vec![
            ("A".to_owned(), "1".to_owned()),
            ("SANDPIT_MAX_PROCESSES".to_owned(), "128".to_owned())
        ]
    );
    assert_eq!(spec.limits.memory_mb, Some(256));
    assert_eq!(spec.image, "default");
    assert!(spec.id.len() <= 63 && spec.id.starts_with("alpha-"));

    // Without an id one is generated.
    let (status, body) = ts.json(Method::POST, "/v1/sandboxes", json!({})).await;
    assert_eq!(status, 201);
    assert!(body["id"].as_str().unwrap().starts_with("sb-"));
}

#[tokio::test]
async fn existing_sandbox_takes_new_mutable_options_but_not_a_new_image() {
    let ts = TestServer::start().await;
    ts.json(Method::POST, "/v1/sandboxes", json!({"id": "opt"}))
        .await;
    let (status, body) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "opt", "keepAlive": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["keepAlive"], true);
    super::make_image(&super::config(&ts.dir), "other");
    let (status, body) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "opt", "image": "other"}),
        )
        .await;
    assert_error(status, &body, 409, "SANDBOX_CONFLICT");
}

#[tokio::test]
async fn list_is_paginated() {
    let ts = TestServer::start().await;
    for i in 0..5 {
        ts.json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": format!("p{i}")}),
        )
        .await;
    }
    let (status, page) = ts.get("/v1/sandboxes?limit=2").await;
    assert_eq!(status, 200);
    let ids: Vec<_> = page["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, [json!("p0"), json!("p1")]);
    let mut seen = 2;
    let mut cursor = page["nextCursor"].as_str().unwrap().to_owned();
    loop {
        let (_, page) = ts
            .get(&format!("/v1/sandboxes?limit=2&cursor={cursor}"))
            .await;
        seen += page["sandboxes"].as_array().unwrap().len();
        match page["nextCursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, 5);
    let (_, all) = ts.get("/v1/sandboxes").await;
    assert_eq!(all["sandboxes"].as_array().unwrap().len(), 5);
    assert!(all.get("nextCursor").is_none());
    for bad in ["0", "501", "x"] {
        let (status, body) = ts.get(&format!("/v1/sandboxes?limit={bad}")).await;
        assert_error(status, &body, 400, "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn patch_get_and_delete() {
    let ts = TestServer::start().await;
    ts.json(Method::POST, "/v1/sandboxes", json!({"id": "pd"}))
        .await;
    let (status, body) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/pd",
            json!({"sleepAfter": 42, "keepAlive": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sleepAfterSecs"], 42);
    let (status, body) = ts.get("/v1/sandboxes/pd").await;
    assert_eq!(status, 200);
    assert_eq!(body["keepAlive"], true);

    let r = ts
        .req(Method::DELETE, "/v1/sandboxes/pd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        ts.driver
            .counters
            .destroys
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let (status, body) = ts.get("/v1/sandboxes/pd").await;
    assert_error(status, &body, 404, "SANDBOX_NOT_FOUND");
    let (status, body) = status_json(
        ts.req(Method::DELETE, "/v1/sandboxes/pd")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 404, "SANDBOX_NOT_FOUND");
    let (status, body) = ts
        .json(Method::PATCH, "/v1/sandboxes/nope", json!({}))
        .await;
    assert_error(status, &body, 404, "SANDBOX_NOT_FOUND");
    let (status, body) = ts
        .json(Method::POST, "/v1/sandboxes/nope/stop", json!({}))
        .await;
    assert_error(status, &body, 404, "SANDBOX_NOT_FOUND");
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_server_keeps_answering() {
    let ts = TestServer::start_with(|c| c.max_control_body_bytes = 4096).await;
    let post_raw = |body: &'static str, ctype: &'static str| {
        ts.req(Method::POST, "/v1/sandboxes")
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let (s, b) = status_json(post_raw("{not json", "application/json").await.unwrap()).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = status_json(post_raw("{\"id\": 3}", "application/json").await.unwrap()).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = status_json(post_raw("{\"id\":\"a\"}", "text/plain").await.unwrap()).await;
    assert_error(s, &b, 415, "UNSUPPORTED_MEDIA_TYPE");

    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "a", "sleepAfterr": 3}),
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    assert!(
        b["message"].as_str().unwrap().contains("sleepAfterr"),
        "{b}"
    );
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"limits": {"memory": 1}}),
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    assert!(b["message"].as_str().unwrap().contains("memory"), "{b}");
    let (s, b) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"sleepAfter": "soon"}))
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"limits": {"cpus": -1}}),
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"env": {"A=B": "x"}}))
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    for bad in ["-x", "admin", "a_b", &"a".repeat(64)] {
        let (s, b) = ts
            .json(Method::POST, "/v1/sandboxes", json!({"id": bad}))
            .await;
        assert_error(s, &b, 400, "VALIDATION_FAILED");
        let (s, b) = ts.exec(bad, "true").await;
        assert_error(s, &b, 400, "VALIDATION_FAILED");
    }
    let (s, b) = ts.json(Method::POST, "/v1/keys", json!({})).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    assert!(b["message"].as_str().unwrap().contains("tenant"), "{b}");

    let big = json!({"id": "big", "env": {"X": "y".repeat(10_000)}});
    let (s, b) = ts.json(Method::POST, "/v1/sandboxes", big).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");

    let (s, b) = ts.get("/v2/nothing").await;
    assert_error(s, &b, 404, "ROUTE_NOT_FOUND");
    let (s, b) = status_json(ts.req(Method::PUT, "/v1/sandboxes").send().await.unwrap()).await;
    assert_error(s, &b, 405, "METHOD_NOT_ALLOWED");

    let (s, b) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"image": "nope"}))
        .await;
    assert_error(s, &b, 404, "IMAGE_NOT_FOUND");
    let (s, b) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"image": "../etc"}))
        .await;
    assert_error(s, &b, 404, "IMAGE_NOT_FOUND");
    assert_eq!(ts.get("/v1/sandboxes").await.1["sandboxes"], json!([]));

    let (s, _) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"id": "fine"}))
        .await;
    assert_eq!(s, 201, "still serving");
}

#[tokio::test]
async fn failed_first_start_leaves_nothing() {
    let ts = TestServer::start().await;
    let (s, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "boom", "env": {"FAIL_START": "1"}}),
        )
        .await;
    assert_error(s, &b, 500, "SANDBOX_START_FAILED");
    let (s, b) = ts.get("/v1/sandboxes/boom").await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    // Limits the driver refuses are the caller's mistake.
    let body = json!({"id": "tiny", "limits": {"memoryMb": 1}});
    let (s, b) = ts.json(Method::POST, "/v1/sandboxes", body).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    assert!(b["message"].as_str().unwrap().contains("memoryMb"), "{b}");
    let (s, b) = ts.get("/v1/sandboxes/tiny").await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
}

#[tokio::test]
async fn tenants_are_isolated() {
    let ts = TestServer::start().await;
    let acme = ts.create_key("acme").await;
    let (s, b) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"id": "shared-name"}))
        .await;
    assert_eq!(s, 201, "{b}");
    ts.json(
        Method::POST,
        "/v1/sandboxes/shared-name/api/write",
        json!({"path": "/workspace/secret", "content": "admin's"}),
    )
    .await;

    // acme cannot see, change, stop or delete the admin's sandbox.
    let path = "/v1/sandboxes/shared-name";
    let (s, b) = status_json(ts.req_as(&acme, Method::GET, path).send().await.unwrap()).await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let (s, b) = status_json(ts.req_as(&acme, Method::DELETE, path).send().await.unwrap()).await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let stop = format!("{path}/stop");
    let (s, b) = status_json(ts.req_as(&acme, Method::POST, &stop).send().await.unwrap()).await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let (_, list) = status_json(
        ts.req_as(&acme, Method::GET, "/v1/sandboxes")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["sandboxes"], json!([]));

    // The same id used by acme is acme's own sandbox: the admin's file is not there.
    let read = ts
        .req_as(&acme, Method::POST, "/v1/sandboxes/shared-name/api/read")
        .json(&json!({"path": "/workspace/secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 404);
    let (_, list) = status_json(
        ts.req_as(&acme, Method::GET, "/v1/sandboxes")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 1);
    let specs = ts.driver.specs.lock().unwrap().clone();
    assert_eq!(specs.len(), 2);
    assert_ne!(specs[0].id, specs[1].id);

    // The admin's sandbox is untouched; a tenant key cannot mint keys.
    let (s, _) = ts.get(path).await;
    assert_eq!(s, 200);
    let r = ts
        .req_as(&acme, Method::POST, "/v1/keys")
        .json(&json!({"tenant": "acme"}))
        .send();
    let (s, b) = status_json(r.await.unwrap()).await;
    assert_error(s, &b, 401, "UNAUTHORIZED");
    let (s, b) = ts
        .json(Method::POST, "/v1/keys", json!({"tenant": "Bad Name"}))
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn metrics_and_request_ids() {
    let ts = TestServer::start().await;
    ts.exec("m1", "echo hi").await;
    ts.get("/v1/sandboxes/missing").await;
    let text = ts.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("sandpit_sandboxes{state=\"running\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sandpit_sandboxes{state=\"sleeping\"} 0"),
        "{text}"
    );
    assert!(text.contains("sandpit_sandbox_starts_total 1"), "{text}");
    assert!(
        text.contains("sandpit_exec_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("sandpit_exec_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("sandpit_errors_total{code=\"SANDBOX_NOT_FOUND\"} 1"),
        "{text}"
    );

    let r = ts.req(Method::GET, "/v1/sandboxes").send().await.unwrap();
    assert!(
        r.headers()
            .get("x-request-id")
            .is_some_and(|v| !v.is_empty())
    );
    let r = ts
        .req(Method::GET, "/v1/sandboxes")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
}
