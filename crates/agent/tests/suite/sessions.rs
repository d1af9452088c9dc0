//! `/api/session/*`.

use serde_json::json;

use super::harness::Agent;

#[tokio::test]
async fn create_list_delete() {
    let a = Agent::start();
    std::fs::create_dir(a.ws("proj")).unwrap();
    let r = a
        .post(
            "/api/session/create",
            json!({"id": "s1", "env": {"GREETING": "hello"}, "cwd": a.ws("proj").to_str().unwrap()}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["success"], true);
    assert!(v["containerPlacementId"].is_null());
    assert!(v.as_object().unwrap().contains_key("containerPlacementId"));
    let (out, _, _) = a.sh("s1", "echo $GREETING; pwd; echo $LANG").await;
    assert_eq!(out, format!("hello\n{}\nC.UTF-8\n", a.ws("proj").display()));

    let r = a.post("/api/session/create", json!({"id": "s1"})).await;
    assert_eq!(r.status, 409);
    let e = r.json();
    assert_eq!(e["code"], "SESSION_ALREADY_EXISTS");
    assert_eq!(e["context"]["sessionId"], "s1");
    assert!(e["context"]["containerPlacementId"].is_null());

    a.sh("lazy", "true").await;
    let v = a.get("/api/session/list").await.json();
    assert_eq!(v["data"], json!(["lazy", "s1"]));

    let (pid, _, _) = a.sh("s1", "echo $$").await;
    let pid: i32 = pid.trim().parse().unwrap();
    let r = a
        .post("/api/session/delete", json!({"sessionId": "s1"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["sessionId"], "s1");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "shell still alive"
    );
    let v = a.get("/api/session/list").await.json();
    assert_eq!(v["data"], json!(["lazy"]));

    let r = a.post("/api/session/delete", json!({})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "VALIDATION_FAILED");
}

#[tokio::test]
async fn missing_cwd_falls_back_to_home_and_bad_env_is_rejected() {
    let a = Agent::start_with(|c| {
        c.env("HOME", "/tmp");
    });
    let r = a
        .post(
            "/api/session/create",
            json!({"id": "s", "cwd": "/does/not/exist"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let (out, _, _) = a.sh("s", "pwd").await;
    assert_eq!(out, "/tmp\n");
    let r = a
        .post(
            "/api/session/create",
            json!({"id": "t", "env": {"1X": "y"}}),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn deleting_a_session_with_a_running_command_ends_it() {
    let a = Agent::start();
    a.sh("s", "true").await;
    let run = a.post(
        "/api/execute",
        json!({"command": "sleep 30", "sessionId": "s"}),
    );
    let del = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        a.post("/api/session/delete", json!({"sessionId": "s"}))
            .await
    };
    let (run, del) = tokio::join!(run, del);
    assert_eq!(del.status, 200);
    assert_eq!(run.status, 410);
    let (out, _, _) = a.sh("s", "echo again").await;
    assert_eq!(out, "again\n");
}
