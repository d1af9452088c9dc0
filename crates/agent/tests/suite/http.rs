//! Routing, envelopes, headers.

use serde_json::json;

use super::harness::Agent;

#[tokio::test]
async fn ping_version_and_cors_headers() {
    let a = Agent::start();
    let r = a.get("/api/ping").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        (v["success"].clone(), v["status"].clone()),
        (json!(true), json!("healthy"))
    );
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "Content-Type, Authorization, X-Session-Id, X-Sandbox-Id, X-Trace-Id"
    );
    let v = a.get("/api/version").await.json();
    assert_eq!(v["version"], sandpit_protocol::VERSION);
}

#[tokio::test]
async fn unknown_route_and_wrong_method_get_the_404_envelope() {
    let a = Agent::start();
    for (method, path) in [
        ("GET", "/api/nope"),
        ("GET", "/api/execute"),
        ("POST", "/api/ping"),
        ("GET", "/"),
    ] {
        let r = a.raw(method, path, "").await;
        assert_eq!(r.status, 404, "{method} {path}");
        let e = r.json();
        assert_eq!(e["code"], "UNKNOWN_ERROR");
        assert_eq!(e["message"], "The requested endpoint was not found");
        assert_eq!(e["httpStatus"], 404);
        assert_eq!(e["context"], json!({}));
        assert_eq!(r.headers["access-control-allow-origin"], "*");
    }
}

#[tokio::test]
async fn bad_bodies_are_400_and_huge_bodies_413() {
    let a = Agent::start();
    let r = a.raw("POST", "/api/execute", "{not json").await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["code"], "VALIDATION_FAILED");
    assert_eq!(e["httpStatus"], 400);
    assert!(e["context"]["validationErrors"].is_array());
    let r = a.post("/api/execute", json!({"sessionId": "s"})).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["context"]["validationErrors"][0]["field"], "command");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("missing field `command`")
    );
    let r = a.post("/api/execute", json!({"command": 5})).await;
    assert_eq!(r.status, 400);
    let r = a.raw("POST", "/api/write", "").await;
    assert_eq!(r.status, 400);
    let huge = format!(
        "{{\"path\":\"x\",\"content\":\"{}\"}}",
        "a".repeat(65 * 1024 * 1024)
    );
    let answer = a
        .send_refusable("POST", "/api/write", huge.as_bytes())
        .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"httpStatus\":413"), "{answer}");
    // The agent is fine afterwards.
    assert_eq!(a.get("/api/ping").await.status, 200);
}
