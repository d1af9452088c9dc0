//! `POST /api/env` (setEnvVars): the session sees the change at once, later sessions, processes
//! and sessionless commands inherit it, `null` unsets.

use serde_json::json;

use super::harness::Agent;

#[tokio::test]
async fn set_env_reaches_default_and_new_sessions_and_null_unsets() {
    let a = Agent::start();
    a.sh("default", "export KEEP=old").await;
    let r = a
        .post(
            "/api/env",
            json!({"env": {"GREETING": "it's here", "KEEP": null}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["success"], true);
    assert!(v["timestamp"].is_string());

    let (out, _, _) = a.sh("default", "echo \"$GREETING|${KEEP-unset}\"").await;
    assert_eq!(out, "it's here|unset\n");
    let (out, _, _) = a.sh("fresh", "echo \"$GREETING\"").await;
    assert_eq!(out, "it's here\n");
    let v = a
        .exec(json!({"command": "echo \"$GREETING\"", "sessionId": "__DISABLE_SESSION__"}))
        .await;
    assert_eq!(v["stdout"], "it's here\n", "{v}");

    // Another session named in the request; null unsets there and for the future.
    let r = a
        .post(
            "/api/env",
            json!({"env": {"GREETING": null}, "sessionId": "fresh"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (out, _, _) = a.sh("fresh", "echo \"${GREETING-unset}\"").await;
    assert_eq!(out, "unset\n");
    let (out, _, _) = a.sh("later", "echo \"${GREETING-unset}\"").await;
    assert_eq!(out, "unset\n");
}

#[tokio::test]
async fn set_env_rejects_bad_names() {
    let a = Agent::start();
    for body in [
        json!({"env": {"A-B": "x"}}),
        json!({"env": {"1A": "x"}}),
        json!({"env": {"A": "x;y"}, "sessionId": ""}),
        json!({"nope": 1}),
    ] {
        let r = a.post("/api/env", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.json()["code"], "VALIDATION_FAILED");
    }
    let (out, _, _) = a.sh("default", "echo \"${A-unset}\"").await;
    assert_eq!(out, "unset\n");
}
