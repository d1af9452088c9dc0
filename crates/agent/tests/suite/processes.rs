//! Background processes: `/api/process/*` and `/api/execute` with `background: true`, against
//! the real agent and real bash.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Agent, children_of};

/// Starts a process and returns its id.
async fn start(agent: &Agent, body: Value) -> String {
    let r = agent.post("/api/process/start", body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["success"], true);
    assert!(v["pid"].as_i64().unwrap() > 0);
    v["processId"].as_str().unwrap().to_owned()
}

async fn info(agent: &Agent, id: &str) -> Value {
    let r = agent.get(&format!("/api/process/{id}")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["process"].clone()
}

/// Waits until the process is no longer running and returns its record.
async fn wait_done(agent: &Agent, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let p = info(agent, id).await;
        if p["status"] != "running" {
            return p;
        }
        assert!(Instant::now() < deadline, "{id} still running: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn logs(agent: &Agent, id: &str) -> Value {
    let r = agent.get(&format!("/api/process/{id}/logs")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Waits until the stdout log of `id` contains `text`.
async fn wait_log(agent: &Agent, id: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs(agent, id).await["stdout"]
        .as_str()
        .unwrap()
        .contains(text)
    {
        assert!(Instant::now() < deadline, "{text:?} never logged by {id}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn kill(agent: &Agent, path: &str, body: &str) -> Value {
    let r = agent.raw("DELETE", path, body.to_owned()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = t[t.rfind(')')? + 1..].to_owned();
            rest.split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

/// All events of a process stream.
async fn stream_all(agent: &Agent, id: &str) -> Vec<Value> {
    let mut s = agent.sse_get(&format!("/api/process/{id}/stream")).await;
    let mut events = Vec::new();
    while let Some(e) = s.next().await {
        events.push(e);
    }
    s.assert_framing();
    events
}

fn text_of(events: &[Value], kind: &str) -> String {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_fast_command_is_listed_with_pid_status_and_logs() {
    let agent = Agent::start();
    let id = start(
        &agent,
        json!({"command": "echo out; echo err >&2; exit 3", "processId": "fast-1"}),
    )
    .await;
    assert_eq!(id, "fast-1");
    let p = wait_done(&agent, &id, Duration::from_secs(10)).await;
    assert_eq!(p["status"], "failed");
    assert_eq!(p["exitCode"], 3);
    assert!(p["pid"].as_i64().unwrap() > 0);
    assert!(
        p["startTime"].is_string() && p["endTime"].is_string(),
        "{p}"
    );
    let l = logs(&agent, &id).await;
    assert_eq!(l["processId"], "fast-1");
    assert_eq!(l["stdout"], "out\n");
    assert_eq!(l["stderr"], "err\n");
    assert!(l.get("stdoutDroppedBytes").is_none());

    // A generated id, and the list (which omits endTime).
    let other = start(&agent, json!({"command": "exit 0"})).await;
    assert!(other.starts_with("proc_"), "{other}");
    assert_eq!(other.split('_').nth(2).unwrap().len(), 6);
    wait_done(&agent, &other, Duration::from_secs(10)).await;
    let list = agent.get("/api/process/list").await.json();
    let procs = list["processes"].as_array().unwrap();
    let ids: Vec<&str> = procs.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fast-1", other.as_str()]);
    assert!(procs.iter().all(|p| p.get("endTime").is_none()));
    assert_eq!(procs[1]["status"], "completed");
    let failed = agent.get("/api/process/list?status=failed").await.json();
    assert_eq!(failed["processes"].as_array().unwrap().len(), 1);

    let r = agent.get("/api/process/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "PROCESS_NOT_FOUND");
    let r = agent.raw("DELETE", "/api/process/nope", "").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn ids_of_running_processes_are_exclusive_and_bad_input_is_rejected() {
    let agent = Agent::start();
    start(&agent, json!({"command": "sleep 30", "processId": "dup"})).await;
    let r = agent
        .post(
            "/api/process/start",
            json!({"command": "true", "processId": "dup"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    for bad in [
        json!({"command": ""}),
        json!({"command": "true", "processId": "a/b"}),
        json!({"command": "true", "env": {"A-B": "1"}}),
    ] {
        let r = agent.post("/api/process/start", bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["code"], "VALIDATION_FAILED");
    }
    let r = agent
        .post(
            "/api/process/start",
            json!({"command": "true", "cwd": "/does/not/exist"}),
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], "PROCESS_ERROR");
    let r = agent
        .raw("DELETE", "/api/process/dup?signal=SIGNOPE", "")
        .await;
    assert_eq!(r.status, 400);
    kill(&agent, "/api/process/dup", "").await;
    // Once finished, the id can be used again.
    start(&agent, json!({"command": "true", "processId": "dup"})).await;
}

#[tokio::test]
async fn background_execute_starts_a_process() {
    let agent = Agent::start();
    let r = agent
        .post(
            "/api/execute",
            json!({"command": "echo bg", "background": true, "sessionId": "s"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["command"], "echo bg");
    let id = v["processId"].as_str().unwrap();
    assert!(v["pid"].as_i64().unwrap() > 0);
    wait_done(&agent, id, Duration::from_secs(10)).await;
    assert_eq!(logs(&agent, id).await["stdout"], "bg\n");
}

#[tokio::test]
async fn processes_start_from_the_session_cwd_and_env() {
    let agent = Agent::start();
    let r = agent
        .post(
            "/api/session/create",
            json!({"id": "s1", "env": {"FOO": "bar"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    agent.sh("s1", "cd /tmp").await;
    let id = start(
        &agent,
        json!({"command": "pwd; echo $FOO $BAZ", "sessionId": "s1", "env": {"BAZ": "qux"}}),
    )
    .await;
    wait_done(&agent, &id, Duration::from_secs(10)).await;
    assert_eq!(logs(&agent, &id).await["stdout"], "/tmp\nbar qux\n");
    // Sessionless: the workspace and the agent's env.
    let id = start(
        &agent,
        json!({"command": "pwd; echo \"[$FOO]\"", "sessionId": "__DISABLE_SESSION__"}),
    )
    .await;
    wait_done(&agent, &id, Duration::from_secs(10)).await;
    let expected = format!("{}\n[]\n", agent.workspace.display());
    assert_eq!(logs(&agent, &id).await["stdout"], expected.as_str());
}

#[tokio::test]
async fn stream_replays_then_follows_then_exits() {
    let agent = Agent::start();
    let id = start(
        &agent,
        json!({"command": "echo first; echo warn >&2; sleep 1; echo second", "processId": "p"}),
    )
    .await;
    wait_log(&agent, &id, "first").await;
    let events = stream_all(&agent, &id).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"process_info"));
    assert_eq!(events[0]["status"], "running");
    assert_eq!(events[0]["processId"], "p");
    assert_eq!(types.last(), Some(&"exit"), "{events:?}");
    // The replay comes first (stdout then stderr), the live line after it.
    assert_eq!(events[1]["type"], "stdout");
    assert_eq!(events[1]["data"], "first\n");
    assert_eq!(events[2]["type"], "stderr");
    assert_eq!(events[2]["data"], "warn\n");
    assert_eq!(text_of(&events, "stdout"), "first\nsecond\n");
    let exit = events.last().unwrap();
    assert_eq!(exit["exitCode"], 0);
    assert_eq!(exit["processId"], "p");
    assert!(exit["data"].as_str().unwrap().contains("exit code 0"));

    // After the end: info, replay, exit, then the stream closes.
    let events = stream_all(&agent, &id).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["process_info", "stdout", "stderr", "exit"]);
    assert_eq!(events[0]["status"], "completed");
    assert_eq!(events[1]["data"], "first\nsecond\n");

    let r = agent.get("/api/process/nope/stream").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn stream_delivers_the_first_line_before_the_command_ends() {
    let agent = Agent::start();
    let id = start(&agent, json!({"command": "echo one; sleep 3; echo two"})).await;
    let started = Instant::now();
    let mut s = agent.sse_get(&format!("/api/process/{id}/stream")).await;
    assert_eq!(s.next().await.unwrap()["type"], "process_info");
    let first = s.next().await.unwrap();
    assert_eq!(first["type"], "stdout");
    assert_eq!(first["data"], "one\n");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(e) = s.next().await {
        rest.push(e);
    }
    assert_eq!(text_of(&rest, "stdout"), "two\n");
    assert_eq!(rest.last().unwrap()["type"], "exit");
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn kill_takes_the_whole_tree() {
    let agent = Agent::start();
    let r = agent
        .post(
            "/api/process/start",
            json!({"command": "sleep 100 & sleep 100 & wait"}),
        )
        .await;
    let v = r.json();
    let id = v["processId"].as_str().unwrap().to_owned();
    let pid = v["pid"].as_i64().unwrap() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tree = children_of(pid);
    while tree.len() < 2 {
        assert!(Instant::now() < deadline, "children never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
        tree = children_of(pid);
    }
    tree.push(pid);
    let started = Instant::now();
    let v = kill(&agent, &format!("/api/process/{id}"), "").await;
    assert_eq!(v["processId"], id.as_str());
    assert_eq!(v["signal"], "SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no escalation needed"
    );
    for p in &tree {
        assert!(!alive(*p), "{p} survived");
    }
    let p = info(&agent, &id).await;
    assert_eq!(p["status"], "killed");
    assert_eq!(p["exitCode"], 143);
    // Killing a finished process is harmless.
    kill(&agent, &format!("/api/process/{id}"), "").await;
}

#[tokio::test]
async fn a_trapped_sigterm_escalates_to_sigkill() {
    let agent = Agent::start();
    let id = start(
        &agent,
        json!({"command": "trap '' TERM; echo ready; while true; do sleep 0.2; done"}),
    )
    .await;
    wait_log(&agent, &id, "ready").await;
    let started = Instant::now();
    kill(&agent, &format!("/api/process/{id}"), "").await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(4500), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let p = info(&agent, &id).await;
    assert_eq!(p["status"], "killed");
    assert_eq!(p["exitCode"], 137);
}

#[tokio::test]
async fn the_requested_signal_is_sent() {
    let agent = Agent::start();
    let trap = "trap 'exit 42' INT; echo ready; while true; do sleep 0.1; done";
    // As a query parameter: the trap runs and its exit code is the process's.
    let a = start(&agent, json!({"command": trap})).await;
    wait_log(&agent, &a, "ready").await;
    let started = Instant::now();
    let v = kill(&agent, &format!("/api/process/{a}?signal=SIGINT"), "").await;
    assert_eq!(v["signal"], "SIGINT");
    assert!(started.elapsed() < Duration::from_secs(4));
    let p = info(&agent, &a).await;
    assert_eq!(
        (p["status"].as_str(), p["exitCode"].as_i64()),
        (Some("failed"), Some(42))
    );
    // In the body; a process dying of the signal it was sent counts as killed.
    let b = start(&agent, json!({"command": "echo ready; sleep 100"})).await;
    wait_log(&agent, &b, "ready").await;
    kill(&agent, &format!("/api/process/{b}"), r#"{"signal":"INT"}"#).await;
    let p = info(&agent, &b).await;
    assert_eq!(
        (p["status"].as_str(), p["exitCode"].as_i64()),
        (Some("killed"), Some(130))
    );
}

#[tokio::test]
async fn kill_all_counts_the_running_processes() {
    let agent = Agent::start();
    let done = start(&agent, json!({"command": "true"})).await;
    wait_done(&agent, &done, Duration::from_secs(10)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(start(&agent, json!({"command": "sleep 100"})).await);
    }
    let v = kill(&agent, "/api/process/kill-all", "").await;
    assert_eq!(v["cleanedCount"], 3);
    for id in &ids {
        let p = info(&agent, id).await;
        assert_eq!(p["status"], "killed");
        assert!(!alive(p["pid"].as_i64().unwrap() as i32));
    }
    assert_eq!(info(&agent, &done).await["status"], "completed");
    let running = agent.get("/api/process/list?status=running").await.json();
    assert_eq!(running["processes"], json!([]));
    let v = kill(&agent, "/api/process/kill-all", "").await;
    assert_eq!(v["cleanedCount"], 0);
}

#[tokio::test]
async fn what_a_finished_process_left_running_is_killed_too() {
    let agent = Agent::start();
    let mut leftovers = Vec::new();
    for _ in 0..2 {
        let id = start(&agent, json!({"command": "sleep 100 & echo $!"})).await;
        let p = wait_done(&agent, &id, Duration::from_secs(10)).await;
        assert_eq!(p["status"], "completed");
        let out = logs(&agent, &id).await["stdout"]
            .as_str()
            .unwrap()
            .to_owned();
        let pid: i32 = out.trim().parse().unwrap();
        assert!(alive(pid));
        leftovers.push((id, pid));
    }
    // By id...
    let (id, pid) = &leftovers[0];
    kill(&agent, &format!("/api/process/{id}"), "").await;
    assert!(!alive(*pid));
    assert_eq!(info(&agent, id).await["status"], "completed");
    // ...and by kill-all, which counts only running processes.
    let v = kill(&agent, "/api/process/kill-all", "").await;
    assert_eq!(v["cleanedCount"], 0);
    assert!(!alive(leftovers[1].1));
}

#[tokio::test]
async fn logs_are_bounded_and_count_what_was_dropped() {
    let agent = Agent::start();
    let total = 3_000_000u64;
    let id = start(
        &agent,
        json!({"command": format!("head -c {total} /dev/zero | tr '\\0' a; echo -n end >&2")}),
    )
    .await;
    wait_done(&agent, &id, Duration::from_secs(20)).await;
    let l = logs(&agent, &id).await;
    let kept = l["stdout"].as_str().unwrap().len() as u64;
    assert_eq!(kept, 1024 * 1024);
    assert_eq!(l["stdoutDroppedBytes"], total - kept);
    assert_eq!(l["stderr"], "end");
    assert!(l.get("stderrDroppedBytes").is_none());
    // The replay of a stream is bounded the same way.
    let events = stream_all(&agent, &id).await;
    assert_eq!(text_of(&events, "stdout").len() as u64, kept);
    assert_eq!(events.last().unwrap()["exitCode"], 0);
}

#[tokio::test]
async fn deleting_a_session_kills_its_processes() {
    let agent = Agent::start();
    agent.sh("s1", "true").await;
    agent.sh("s2", "true").await;
    let a = start(&agent, json!({"command": "sleep 100", "sessionId": "s1"})).await;
    let b = start(&agent, json!({"command": "sleep 100", "sessionId": "s2"})).await;
    let r = agent
        .post("/api/session/delete", json!({"sessionId": "s1"}))
        .await;
    assert_eq!(r.status, 200);
    let p = info(&agent, &a).await;
    assert_eq!(p["status"], "killed");
    assert!(!alive(p["pid"].as_i64().unwrap() as i32));
    assert_eq!(info(&agent, &b).await["status"], "running");
    kill(&agent, &format!("/api/process/{b}"), "").await;
}

#[tokio::test]
async fn foreground_commands_are_not_blocked_by_background_processes() {
    let agent = Agent::start();
    agent.sh("default", "true").await;
    start(&agent, json!({"command": "sleep 100"})).await;
    start(
        &agent,
        json!({"command": "yes | head -c 100000000 > /dev/null; sleep 100"}),
    )
    .await;
    let started = Instant::now();
    let (out, _, code) = agent.sh("default", "echo hi").await;
    assert_eq!((out.as_str(), code), ("hi\n", 0));
    assert!(started.elapsed() < Duration::from_secs(5));
    kill(&agent, "/api/process/kill-all", "").await;
}

#[tokio::test]
async fn concurrent_streams_each_see_everything() {
    let agent = Agent::start();
    let id = start(
        &agent,
        json!({"command": "for i in 1 2 3 4; do echo $i; sleep 0.3; done"}),
    )
    .await;
    let streams = (0..4).map(|_| stream_all(&agent, &id));
    for events in futures::future::join_all(streams).await {
        assert_eq!(text_of(&events, "stdout"), "1\n2\n3\n4\n");
        assert_eq!(events.first().unwrap()["type"], "process_info");
        assert_eq!(events.last().unwrap()["type"], "exit");
        assert_eq!(events.last().unwrap()["exitCode"], 0);
    }
}

#[tokio::test]
async fn rapid_connect_and_disconnect_leave_the_process_and_agent_fine() {
    let agent = Agent::start();
    let id = start(
        &agent,
        json!({"command": "for i in $(seq 1 20); do echo line$i; sleep 0.05; done"}),
    )
    .await;
    for i in 0..30 {
        let mut s = agent.sse_get(&format!("/api/process/{id}/stream")).await;
        if i % 2 == 0 {
            s.next().await.unwrap();
        }
        drop(s);
    }
    wait_done(&agent, &id, Duration::from_secs(10)).await;
    let events = stream_all(&agent, &id).await;
    let expected: String = (1..=20).map(|i| format!("line{i}\n")).collect();
    assert_eq!(text_of(&events, "stdout"), expected);
    assert_eq!(events.last().unwrap()["type"], "exit");
    assert_eq!(agent.get("/api/ping").await.status, 200);
}

#[tokio::test]
async fn a_timeout_kills_the_process() {
    let agent = Agent::start();
    let id = start(&agent, json!({"command": "sleep 100", "timeoutMs": 300})).await;
    let p = wait_done(&agent, &id, Duration::from_secs(10)).await;
    assert_eq!(p["status"], "killed");
    assert_eq!(p["exitCode"], 124);
    let logs = agent.get(&format!("/api/process/{id}/logs")).await.json();
    assert_eq!(logs["stderr"], "Command timed out after 300ms\n", "{logs}");
}
