//! Code interpreter routes on a host-mode agent: the answers that need no interpreter (501
//! when Python or Node is missing, 404, validation, health). Runs with IPython, matplotlib and
//! Node are in the server's e2e suite (`crates/server/tests/suite/interpreter.rs`), in a real
//! sandbox with the default image.

use serde_json::json;

use super::harness::Agent;

#[tokio::test]
async fn missing_python_and_node_answer_501() {
    let empty = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(|c| {
        c.env("PATH", empty.path());
    });
    let r = agent
        .post("/api/contexts", json!({"language": "python"}))
        .await;
    assert_eq!(r.status, 501, "{:?}", r.json());
    assert_eq!(r.json()["code"], "PYTHON_NOT_AVAILABLE");
    assert_eq!(r.json()["httpStatus"], 501);
    for language in ["javascript", "typescript", "js"] {
        let r = agent
            .post("/api/contexts", json!({"language": language}))
            .await;
        assert_eq!(r.status, 501, "{language}: {:?}", r.json());
        assert_eq!(r.json()["code"], "JAVASCRIPT_NOT_AVAILABLE");
    }
    let r = agent.get("/api/contexts").await;
    assert_eq!(r.json()["contexts"], json!([]));
}

/// A python3 without IPython is as good as none: 501 with the reason.
#[tokio::test]
async fn python_without_ipython_answers_501() {
    let system = std::path::Path::new("/usr/bin/python3");
    let has_ipython = std::process::Command::new(system)
        .args(["-c", "import IPython"])
        .output()
        .map(|o| o.status.success())
        .ok();
    if has_ipython != Some(false) {
        eprintln!("skipped: needs a /usr/bin/python3 without IPython");
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(system, bin.path().join("python3")).unwrap();
    let agent = Agent::start_with(|c| {
        c.env("PATH", bin.path());
    });
    let r = agent.post("/api/contexts", json!({})).await;
    assert_eq!(r.status, 501, "{:?}", r.json());
    assert_eq!(r.json()["code"], "PYTHON_NOT_AVAILABLE");
    assert!(
        r.json()["message"].as_str().unwrap().contains("IPython"),
        "{:?}",
        r.json()
    );
}

#[tokio::test]
async fn unknown_contexts_bad_languages_and_health() {
    let agent = Agent::start();
    let r = agent
        .post(
            "/api/execute/code",
            json!({"context_id": "missing", "code": "1"}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "CONTEXT_NOT_FOUND");
    let r = agent.raw("DELETE", "/api/contexts/missing", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "CONTEXT_NOT_FOUND");
    let r = agent
        .post("/api/contexts", json!({"language": "cobol"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "VALIDATION_FAILED");
    let r = agent.post("/api/execute/code", json!({"code": "1"})).await;
    assert_eq!(r.status, 400, "context_id is required");
    let r = agent.get("/api/interpreter/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "healthy");
    assert_eq!(r.json()["success"], true);
}

/// A pool size set in the environment starts that pool with the agent; by default nothing
/// starts before the first context.
#[tokio::test]
async fn explicit_pool_size_starts_the_pool_at_boot() {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let marker = bin.path().join("started");
    // A stand-in python3 that records its start and lives until the agent closes fd 3.
    let fake = bin.path().join("python3");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho started >> {}\ncat <&3 >/dev/null\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.path().display());

    let lazy = Agent::start_with(|c| {
        c.env("PATH", &path).env_remove("PYTHON_POOL_MIN_SIZE");
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!marker.exists(), "no executor before the first context");
    drop(lazy);

    let _eager = Agent::start_with(|c| {
        c.env("PATH", &path).env("PYTHON_POOL_MIN_SIZE", "2");
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let starts = std::fs::read_to_string(&marker).unwrap_or_default();
        if starts.lines().count() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pool not started: {starts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
