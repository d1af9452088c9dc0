//! Code interpreter routes on a host-mode agent: the answers that need no interpreter (501
//! when Python or Node is missing, 404, validation, health), and JavaScript runs with the
//! host's Node when it has one. Runs with IPython, matplotlib and Node are in the server's e2e
//! suite (`crates/server/tests/suite/interpreter.rs`), in a real
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

/// Output a JavaScript run writes past the executor's event channel (a child process on the
/// inherited fd 1, a raw fd write) just before it ends belongs to that run: it arrives before
/// `execution_complete`, and the pipe sync markers never show.
#[tokio::test]
async fn javascript_pipe_output_at_the_end_of_a_run_is_not_lost() {
    if !has_node() {
        eprintln!("skipped: needs node on PATH");
        return;
    }
    let agent = Agent::start();
    let r = agent
        .post("/api/contexts", json!({"language": "javascript"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let id = r.json()["contextId"].as_str().unwrap().to_owned();
    // A pipe of 1 MiB (pipe size belongs to the pipe, so a child may set it): the last write
    // of a run can then be big enough that the agent is still reading it at `done`.
    let grow = "require('child_process').execSync(`python3 -c 'import fcntl; fcntl.fcntl(1, 1031, 1 << 20)'`, {stdio: 'inherit'})";
    let events = agent
        .sse_all("/api/execute/code", json!({"context_id": id, "code": grow}))
        .await;
    assert_eq!(
        events.last().unwrap()["type"],
        "execution_complete",
        "{events:?}"
    );
    let big = 256 * 1024;
    for i in 0..5 {
        // The agent (the executor's parent) is stopped while the run ends, so its output and
        // `done` wait side by side; a detached shell wakes it up.
        let code = format!(
            "require('child_process').execSync('echo from-child {i}', {{stdio: 'inherit'}});\n\
             require('child_process').spawn('sh', ['-c', 'sleep 0.2; kill -CONT ' + process.ppid], \
               {{detached: true, stdio: 'ignore'}}).unref();\n\
             process.kill(process.ppid, 'SIGSTOP');\n\
             require('fs').writeSync(2, 'raw err {i}\\n');\n\
             require('fs').writeSync(1, 'x'.repeat({big}) + 'raw {i}\\n');"
        );
        let events = agent
            .sse_all("/api/execute/code", json!({"context_id": id, "code": code}))
            .await;
        let text = |kind: &str| -> String {
            events
                .iter()
                .filter(|e| e["type"] == kind)
                .map(|e| e["text"].as_str().unwrap())
                .collect()
        };
        assert_eq!(
            events.last().map(|e| e["type"].clone()),
            Some(json!("execution_complete")),
            "{:?}",
            events.last()
        );
        // Compared as a whole, shown by its end: a lost tail is the failure to look for.
        let stdout = text("stdout");
        let tail = &stdout[stdout.len().saturating_sub(60)..];
        assert!(
            stdout == format!("from-child {i}\n{}raw {i}\n", "x".repeat(big)),
            "run {i}: {} bytes of stdout, ending {tail:?}",
            stdout.len()
        );
        assert_eq!(text("stderr"), format!("raw err {i}\n"), "run {i}");
    }
}

/// The Node executor answers a run request with `sync` by the marker on its stdout and its
/// stderr, after the run's own output on them.
#[test]
fn node_executor_writes_sync_markers_after_a_run() {
    if !has_node() {
        eprintln!("skipped: needs node on PATH");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/interpreter/executors/node.js"
    );
    let request = r#"{"op":"run","code":"require('fs').writeSync(1, 'out'); require('fs').writeSync(2, 'err')","sync":7}"#;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"printf '%s\n' "$1" | node "$0" 3<&0 4>/dev/null"#)
        .arg(script)
        .arg(request)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"out\0sandpit-sync:7\0", "{out:?}");
    assert_eq!(out.stderr, b"err\0sandpit-sync:7\0", "{out:?}");
}

fn has_node() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
