//! Process records and env survive sleep (real LocalDriver + agent, see `e2e.rs`).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::e2e::Real;
use super::{assert_error, eventually};

async fn sse_events(rs: &Real, path: &str) -> Vec<Value> {
    let r = rs.req_as(&rs.key, Method::GET, path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(20), r.text())
        .await
        .expect("stream did not end")
        .unwrap();
    text.split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_process_logs_and_status_survive_sleep_until_destroy() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let base = "/v1/sandboxes/e2e-arch/api/process";
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("{base}/start"),
            json!({"command": "echo done-out; echo done-err >&2; exit 3", "processId": "short"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("{base}/start"),
            json!({"command": "echo started; sleep 600", "processId": "long"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let ready = eventually(Duration::from_secs(10), || async {
        let (_, short) = rs
            .call(Method::GET, &format!("{base}/short"), Value::Null)
            .await;
        let (_, long) = rs
            .call(Method::GET, &format!("{base}/long/logs"), Value::Null)
            .await;
        short["process"]["status"] == "failed" && long["stdout"] == "started\n"
    });
    assert!(ready.await, "processes did not run");

    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes/e2e-arch/stop", json!({}))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("sleeping")), "{b}");

    // These calls wake the sandbox; its new agent knows neither process.
    let (s, b) = rs
        .call(Method::GET, &format!("{base}/short"), Value::Null)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["process"]["status"], "failed", "{b}");
    assert_eq!(b["process"]["exitCode"], 3, "{b}");
    assert!(b["process"]["endTime"].is_string(), "{b}");
    assert_eq!(rs.state("e2e-arch").await, "running");
    let (s, b) = rs
        .call(Method::GET, &format!("{base}/short/logs"), Value::Null)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["stdout"].as_str(), b["stderr"].as_str()),
        (Some("done-out\n"), Some("done-err\n"))
    );
    let (s, b) = rs
        .call(Method::GET, &format!("{base}/long"), Value::Null)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["process"]["status"], "killed", "{b}");
    assert!(b["process"]["endTime"].is_string(), "{b}");
    let (_, b) = rs
        .call(Method::GET, &format!("{base}/long/logs"), Value::Null)
        .await;
    assert_eq!(b["stdout"], "started\n", "{b}");

    // The list merges archived records with the live ones.
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("{base}/start"),
            json!({"command": "true", "processId": "fresh"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let ids = rs.process_ids("e2e-arch").await;
    assert_eq!(ids, ["fresh", "long", "short"]);
    let (_, b) = rs
        .call(
            Method::GET,
            &format!("{base}/list?status=killed"),
            Value::Null,
        )
        .await;
    assert_eq!(b["processes"].as_array().unwrap().len(), 1, "{b}");

    // The stream of an archived process: info, replay, and its real end.
    let events = sse_events(&rs, &format!("{base}/short/stream")).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["process_info", "stdout", "stderr", "exit"],
        "{events:?}"
    );
    assert_eq!(events[3]["exitCode"], 3);
    let events = sse_events(&rs, &format!("{base}/long/stream")).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "no invented exit code: {events:?}");
    let (s, b) = rs
        .call(Method::GET, &format!("{base}/ghost"), Value::Null)
        .await;
    assert_error(s, &b, 404, "PROCESS_NOT_FOUND");

    // Destroy forgets them.
    let r = rs
        .req_as(&rs.key, Method::DELETE, "/v1/sandboxes/e2e-arch")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, b) = rs
        .call(Method::GET, &format!("{base}/short"), Value::Null)
        .await;
    assert_error(s, &b, 404, "PROCESS_NOT_FOUND");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_set_env_survives_sleep() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes/e2e-env/env",
            json!({"env": {"COLOR": "teal blue", "GONE": null}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["success"], true, "{b}");
    let out = rs.exec("e2e-env", "echo \"$COLOR\"").await;
    assert_eq!(out["stdout"], "teal blue\n", "{out}");
    let (_, info) = rs
        .call(Method::GET, "/v1/sandboxes/e2e-env", Value::Null)
        .await;
    assert_eq!(info["env"]["COLOR"], "teal blue", "{info}");

    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes/e2e-env/stop", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes/e2e-env/api/execute",
            json!({"command": "echo \"$COLOR\"", "sessionId": "brand-new"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], "teal blue\n", "{b}");

    // null unsets, in the stored env too.
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes/e2e-env/env",
            json!({"env": {"COLOR": null}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, info) = rs
        .call(Method::GET, "/v1/sandboxes/e2e-env", Value::Null)
        .await;
    assert!(info["env"].get("COLOR").is_none(), "{info}");
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes/e2e-env/env",
            json!({"env": {"BAD-NAME": "x"}}),
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    rs.stop().await;
}
