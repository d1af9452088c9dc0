//! `/api/execute/stream`: SSE framing, liveness, disconnects, UTF-8.

use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::Agent;

#[tokio::test]
async fn events_are_start_output_complete() {
    let a = Agent::start();
    let events = a
        .sse_all(
            "/api/execute/stream",
            json!({"command": "echo out; echo err >&2; (exit 3)", "sessionId": "s"}),
        )
        .await;
    assert_eq!(events.first().unwrap()["type"], "start");
    assert_eq!(events[0]["command"], "echo out; echo err >&2; (exit 3)");
    assert!(events[0].get("pid").is_none());
    let last = events.last().unwrap();
    assert_eq!(last["type"], "complete");
    assert_eq!(last["exitCode"], 3);
    let joined = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(joined("stdout"), "out\n");
    assert_eq!(joined("stderr"), "err\n");
    for e in &events {
        assert!(e["timestamp"].is_string());
    }
}

#[tokio::test]
async fn stream_runs_in_the_session_shell() {
    let a = Agent::start();
    a.sse_all(
        "/api/execute/stream",
        json!({"command": "cd /tmp; export S=1", "sessionId": "s"}),
    )
    .await;
    let (out, _, _) = a.sh("s", "pwd; echo $S").await;
    assert_eq!(out, "/tmp\n1\n");
    let events = a
        .sse_all(
            "/api/execute/stream",
            json!({"command": "echo $S; pwd", "sessionId": "__DISABLE_SESSION__"}),
        )
        .await;
    let out: String = events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(out, format!("\n{}\n", a.workspace.display()));
    assert_eq!(events.last().unwrap()["type"], "complete");
}

#[tokio::test]
async fn first_chunk_arrives_before_the_command_ends() {
    let a = Agent::start();
    for session in ["s", "__DISABLE_SESSION__"] {
        let started = Instant::now();
        let mut s = a
            .sse(
                "/api/execute/stream",
                json!({"command": "printf first; sleep 1; echo second", "sessionId": session}),
            )
            .await;
        assert_eq!(s.next().await.unwrap()["type"], "start");
        let first = s.next().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{session}: {:?}",
            started.elapsed()
        );
        assert_eq!(first["type"], "stdout");
        assert_eq!(first["data"], "first");
        let mut rest = Vec::new();
        while let Some(e) = s.next().await {
            rest.push(e);
        }
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(rest.last().unwrap()["type"], "complete");
        s.assert_framing();
    }
}

#[tokio::test]
async fn exit_in_a_stream_is_an_error_event_not_a_fake_exit_code() {
    let a = Agent::start();
    let events = a
        .sse_all(
            "/api/execute/stream",
            json!({"command": "exit 4", "sessionId": "s"}),
        )
        .await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error");
    assert!(last["error"].as_str().unwrap().contains("code 4"));
    assert!(events.iter().all(|e| e["type"] != "complete"));
}

#[tokio::test]
async fn client_disconnect_stops_the_command_and_keeps_the_session() {
    let a = Agent::start();
    let mut s = a
        .sse(
            "/api/execute/stream",
            json!({"command": "export KEPT=1; echo go; sleep 2; seq 1 200000; echo done > after.txt", "sessionId": "s"}),
        )
        .await;
    assert_eq!(s.next().await.unwrap()["type"], "start");
    assert_eq!(s.next().await.unwrap()["data"], "go\n");
    drop(s);
    // The abandoned command is stopped: the session answers at once, with its state.
    let started = Instant::now();
    let (out, _, code) = a.sh("s", "echo $KEPT; echo next").await;
    assert_eq!((out.as_str(), code), ("1\nnext\n", 0));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!a.ws("after.txt").exists());
}

#[tokio::test]
async fn multibyte_characters_are_not_split_across_events() {
    let a = Agent::start();
    let events = a
        .sse_all(
            "/api/execute/stream",
            json!({"command": "printf '\\xe2\\x82'; sleep 0.3; printf '\\xac|\\xff|\\n'", "sessionId": "s"}),
        )
        .await;
    let out: String = events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(out, "€|\u{fffd}|\n");
}

#[tokio::test]
async fn stream_validation_errors_are_plain_error_responses() {
    let a = Agent::start();
    let r = a
        .post("/api/execute/stream", json!({"sessionId": "s"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "VALIDATION_FAILED");
}

#[tokio::test]
async fn a_slow_client_slows_the_command_instead_of_filling_memory() {
    let a = Agent::start();
    let mut s = a
        .sse(
            "/api/execute/stream",
            json!({"command": "yes | head -c 40M; echo end", "sessionId": "__DISABLE_SESSION__"}),
        )
        .await;
    let rss_kb = |pid: i32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    assert_eq!(s.next().await.unwrap()["type"], "start");
    let before = rss_kb(a.pid());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Not reading for 1.5 s: the agent holds a few chunks, not the 40 MB produced.
    let growth = rss_kb(a.pid()).saturating_sub(before);
    assert!(growth < 16 * 1024, "agent RSS grew by {growth} kB");
    let mut bytes = 0usize;
    let mut last = None;
    while let Some(e) = s.next().await {
        if e["type"] == "stdout" {
            bytes += e["data"].as_str().unwrap().len();
        }
        last = Some(e);
    }
    assert_eq!(bytes, 40 * 1024 * 1024 + 4);
    assert_eq!(last.unwrap()["type"], "complete");
}
