//! `/api/execute`: session semantics, output exactness, timeouts, output cap.

use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::Agent;

#[tokio::test]
async fn session_state_persists_across_commands() {
    let a = Agent::start();
    let (_, _, code) = a
        .sh("s", "mkdir -p sub && cd sub && export FOO='a b' && greet() { echo \"hi $1\"; } && alias say='echo said'")
        .await;
    assert_eq!(code, 0);
    let (out, err, code) = a.sh("s", "pwd; echo \"$FOO\"; greet you; say it").await;
    assert_eq!(err, "");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("{}\na b\nhi you\nsaid it\n", a.ws("sub").display())
    );
    // Another session does not share it.
    let (out, _, _) = a.sh("other", "echo \"[$FOO]\"; pwd").await;
    assert_eq!(out, format!("[]\n{}\n", a.workspace.display()));
}

#[tokio::test]
async fn output_is_exact_and_streams_are_separated() {
    let a = Agent::start();
    let v = a
        .exec(json!({"command": "printf 'out1\\n'; printf 'err1' >&2; printf 'no newline'; exit_code() { return 7; }; exit_code", "sessionId": "s"}))
        .await;
    assert_eq!(v["stdout"], "out1\nno newline");
    assert_eq!(v["stderr"], "err1");
    assert_eq!(v["exitCode"], 7);
    assert_eq!(v["success"], false);
    assert_eq!(v["sessionId"], "s");
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    // Empty lines, carriage returns, tabs and the exit code of a pipeline survive unchanged.
    let (out, _, code) = a
        .sh("s", "printf '\\n\\na\\r\\n\\tb\\n\\n'; false | true")
        .await;
    assert_eq!(out, "\n\na\r\n\tb\n\n");
    assert_eq!(code, 0);
    let (_, err, code) = a.sh("s", "no-such-command-xyz").await;
    assert_eq!(code, 127);
    assert!(err.contains("no-such-command-xyz"), "{err}");
}

#[tokio::test]
async fn default_session_is_used_without_session_id() {
    let a = Agent::start();
    let v = a.exec(json!({"command": "export X=1"})).await;
    assert_eq!(v["sessionId"], "default");
    let (out, _, _) = a.sh("default", "echo $X").await;
    assert_eq!(out, "1\n");
}

#[tokio::test]
async fn per_command_env_and_cwd_do_not_leak() {
    let a = Agent::start();
    a.sh("s", "export KEEP=session; export GONE=present; LOCAL=1")
        .await;
    let v = a
        .exec(json!({
            "command": "echo \"$KEEP|$NEW|${GONE-unset}|$LOCAL\"; pwd; env | grep -c '^NEW='",
            "sessionId": "s",
            "env": {"KEEP": "it's \"quoted\" $HOME", "NEW": "n", "GONE": null, "LOCAL": "2"},
            "cwd": "/tmp"
        }))
        .await;
    assert_eq!(v["stdout"], "it's \"quoted\" $HOME|n|unset|2\n/tmp\n1\n");
    let (out, _, _) = a
        .sh(
            "s",
            "echo \"$KEEP|${NEW-unset}|$GONE|$LOCAL\"; pwd; env | grep -c '^LOCAL=' || true",
        )
        .await;
    assert_eq!(
        out,
        format!("session|unset|present|1\n{}\n0\n", a.workspace.display())
    );
}

#[tokio::test]
async fn cd_failure_and_bad_env_names() {
    let a = Agent::start();
    let v = a
        .exec(json!({"command": "echo never", "sessionId": "s", "cwd": "/no/such/dir"}))
        .await;
    assert_eq!(v["exitCode"], 1);
    assert_eq!(v["stdout"], "");
    assert_eq!(v["stderr"], "Failed to change directory to /no/such/dir\n");
    let r = a
        .post(
            "/api/execute",
            json!({"command": "true", "env": {"BAD-NAME": "x"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "VALIDATION_FAILED");
    let r = a.post("/api/execute", json!({"command": "  "})).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn stdin_is_dev_null() {
    let a = Agent::start();
    let started = Instant::now();
    let (out, _, code) = a.sh("s", "cat; read -r line; echo \"read=$?\"").await;
    assert_eq!(out, "read=1\n");
    assert_eq!(code, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    let v = a
        .exec(json!({"command": "cat; echo ok", "sessionId": "__DISABLE_SESSION__"}))
        .await;
    assert_eq!(v["stdout"], "ok\n");
}

#[tokio::test]
async fn heredocs_and_multiline_commands() {
    let a = Agent::start();
    let cmd = "cat <<'EOF'\nline $1 'q'\n  indented\nEOF\nfor i in 1 2; do\n  echo \"n$i\"\ndone\nx=$(cat <<EOT\nexpanded $((1+1))\nEOT\n)\necho \"$x\"";
    let (out, err, code) = a.sh("s", cmd).await;
    assert_eq!(err, "");
    assert_eq!(code, 0);
    assert_eq!(out, "line $1 'q'\n  indented\nn1\nn2\nexpanded 2\n");
}

#[tokio::test]
async fn syntax_error_does_not_kill_the_session() {
    let a = Agent::start();
    a.sh("s", "export ALIVE=yes").await;
    let (_, err, code) = a.sh("s", "if then fi (").await;
    assert_eq!(code, 2);
    assert!(err.contains("syntax error"), "{err}");
    let (_, _, code) = a.sh("s", "echo 'unterminated").await;
    assert_eq!(code, 2);
    let (out, _, _) = a.sh("s", "echo $ALIVE").await;
    assert_eq!(out, "yes\n");
}

#[tokio::test]
async fn exit_terminates_the_session_which_is_then_recreated() {
    let a = Agent::start();
    a.sh("s", "export GONE_AFTER_EXIT=1").await;
    let r = a
        .post(
            "/api/execute",
            json!({"command": "echo bye; exit 3", "sessionId": "s"}),
        )
        .await;
    assert_eq!(r.status, 410);
    let e = r.json();
    assert_eq!(e["code"], "SESSION_TERMINATED");
    assert_eq!(e["httpStatus"], 410);
    assert_eq!(e["context"]["sessionId"], "s");
    assert_eq!(e["context"]["exitCode"], 3);
    let (out, _, code) = a.sh("s", "echo \"fresh ${GONE_AFTER_EXIT-unset}\"").await;
    assert_eq!((out.as_str(), code), ("fresh unset\n", 0));
}

#[tokio::test]
async fn session_timeout_kills_the_command_and_keeps_the_session() {
    let a = Agent::start();
    a.sh("s", "cd /tmp && export KEPT=yes").await;
    let started = Instant::now();
    let r = a
        .post(
            "/api/execute",
            json!({"command": "sleep 1; echo done > finished.txt", "sessionId": "s", "timeoutMs": 200, "cwd": a.workspace}),
        )
        .await;
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["exitCode"], 124);
    assert_eq!(v["timedOut"], true);
    assert!(
        v["stderr"]
            .as_str()
            .unwrap()
            .ends_with("Command timed out after 200ms\n"),
        "{v}"
    );
    // The next command runs at once, in the same shell.
    let started = Instant::now();
    let (out, _, _) = a.sh("s", "echo $KEPT $PWD").await;
    assert_eq!(out, "yes /tmp\n");
    assert!(started.elapsed() < Duration::from_millis(900));
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!a.ws("finished.txt").exists());
}

#[tokio::test]
async fn session_command_timeout_comes_from_the_session_or_the_env() {
    let a = Agent::start_with(|c| {
        c.env("COMMAND_TIMEOUT_MS", "300");
    });
    let timed_out = |v: &serde_json::Value, ms: u64| {
        assert_eq!(v["exitCode"], 124, "{v}");
        let message = format!("timed out after {ms}ms");
        assert!(v["stderr"].as_str().unwrap().contains(&message), "{v}");
    };
    let v = a
        .exec(json!({"command": "sleep 2", "sessionId": "env"}))
        .await;
    timed_out(&v, 300);
    let r = a
        .post(
            "/api/session/create",
            json!({"id": "own", "commandTimeoutMs": 150}),
        )
        .await;
    assert_eq!(r.status, 200);
    let v = a
        .exec(json!({"command": "sleep 2", "sessionId": "own"}))
        .await;
    timed_out(&v, 150);
    // 0 turns a default off, for one command or for a session.
    let v = a
        .exec(json!({"command": "sleep 0.5; echo ok", "sessionId": "own", "timeoutMs": 0}))
        .await;
    assert_eq!(v["stdout"], "ok\n", "{v}");
    a.post(
        "/api/session/create",
        json!({"id": "unlimited", "commandTimeoutMs": 0}),
    )
    .await;
    let v = a
        .exec(json!({"command": "sleep 0.5; echo ok", "sessionId": "unlimited"}))
        .await;
    assert_eq!(v["stdout"], "ok\n", "{v}");
}

#[tokio::test]
async fn sessionless_commands_share_nothing_and_time_out_with_124() {
    let a = Agent::start();
    let none = "__DISABLE_SESSION__";
    a.exec(json!({"command": "export X=1; cd /tmp", "sessionId": none}))
        .await;
    let v = a
        .exec(json!({"command": "echo \"[$X]\"; pwd", "sessionId": none}))
        .await;
    assert_eq!(v["stdout"], format!("[]\n{}\n", a.workspace.display()));
    let v = a
        .exec(json!({"command": "echo $V; pwd", "sessionId": none, "env": {"V": "v"}, "cwd": "/"}))
        .await;
    assert_eq!(v["stdout"], "v\n/\n");
    let started = Instant::now();
    let v = a
        .exec(json!({"command": "echo before; sleep 5; echo after", "sessionId": none, "timeoutMs": 300}))
        .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(v["exitCode"], 124);
    assert_eq!(v["stdout"], "before\n");
    assert_eq!(v["stderr"], "Command timed out after 300ms\n");
    let v = a
        .exec(json!({"command": "exit 5", "sessionId": none}))
        .await;
    assert_eq!(v["exitCode"], 5);
}

#[tokio::test]
async fn sessionless_timeout_kills_the_whole_group_even_if_sigterm_is_ignored() {
    let a = Agent::start();
    let started = Instant::now();
    let v = a
        .exec(json!({
            "command": "trap '' TERM; (trap '' TERM; sleep 30) & sleep 30",
            "sessionId": "__DISABLE_SESSION__",
            "timeoutMs": 200
        }))
        .await;
    let took = started.elapsed();
    assert_eq!(v["exitCode"], 124);
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "{took:?}"
    );
}

#[tokio::test]
async fn two_sessions_run_concurrently_and_one_session_serialises() {
    let a = Agent::start();
    a.sh("one", "true").await;
    a.sh("two", "true").await;
    let started = Instant::now();
    let (x, y) = tokio::join!(
        a.sh("one", "sleep 1; echo 1"),
        a.sh("two", "sleep 1; echo 2")
    );
    let took = started.elapsed();
    assert_eq!((x.0.as_str(), y.0.as_str()), ("1\n", "2\n"));
    assert!(
        took < Duration::from_millis(1700),
        "sessions ran serially: {took:?}"
    );

    let started = Instant::now();
    let (x, y) = tokio::join!(
        a.sh("one", "sleep 0.5; echo a"),
        a.sh("one", "sleep 0.5; echo b")
    );
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(x.0.len() + y.0.len(), 4);
}

#[tokio::test]
async fn flooding_output_is_capped_and_flagged() {
    let a = Agent::start();
    let started = Instant::now();
    let v = a
        .exec(json!({"command": "yes | head -c 200M; echo tail >&2", "sessionId": "s"}))
        .await;
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(v["exitCode"], 0);
    assert_eq!(v["truncated"], true);
    let out = v["stdout"].as_str().unwrap();
    let cap = 16 * 1024 * 1024;
    assert!(out.starts_with("y\ny\n"));
    assert!(out.ends_with(&format!(
        "[sandpit: output truncated, {} bytes dropped]",
        200 * 1024 * 1024 - cap
    )));
    assert_eq!(v["stderr"], "tail\n");
    // The agent did not buffer the whole flood.
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(hwm_kb < 160 * 1024, "peak RSS {hwm_kb} kB");
    // The session is still usable.
    let (out, _, _) = a.sh("s", "echo ok").await;
    assert_eq!(out, "ok\n");
}

#[tokio::test]
async fn background_jobs_do_not_block_commands() {
    let a = Agent::start();
    let started = Instant::now();
    let (_, _, code) = a.sh("s", "sleep 30 &").await;
    assert_eq!(code, 0);
    let v = a
        .exec(json!({"command": "sleep 30 & echo started", "sessionId": "__DISABLE_SESSION__"}))
        .await;
    assert_eq!(v["stdout"], "started\n");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_flooding_sessionless_command_still_times_out() {
    let a = Agent::start();
    let started = Instant::now();
    let v = a
        .exec(json!({"command": "yes", "sessionId": "__DISABLE_SESSION__", "timeoutMs": 500}))
        .await;
    // The run itself (the agent's `duration`) ends near its deadline; the whole request also
    // carries 16 MiB of JSON, which a debug build on a busy host takes seconds to move.
    assert!(
        v["duration"].as_u64().unwrap() < 10_000,
        "{}",
        v["duration"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(v["exitCode"], 124);
    assert_eq!(v["truncated"], true);
    assert!(
        v["stderr"]
            .as_str()
            .unwrap()
            .ends_with("Command timed out after 500ms\n")
    );
}

#[tokio::test]
async fn redirecting_the_shells_own_descriptors_does_not_hang_the_session() {
    let a = Agent::start();
    let started = Instant::now();
    let (out, _, code) = a.sh("s", "exec 3>/dev/null; echo three").await;
    assert_eq!((out.as_str(), code), ("three\n", 0));
    let (out, err, code) = a
        .sh("s", "echo before; exec >/dev/null 2>&1; echo hidden")
        .await;
    assert_eq!((out.as_str(), err.as_str(), code), ("before\n", "", 0));
    // Later output goes where the session's stdout now points, and commands still complete.
    let (out, _, code) = a
        .sh("s", "echo gone; exit_status() { return 4; }; exit_status")
        .await;
    assert_eq!((out.as_str(), code), ("", 4));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The agent's descriptors (control pipe, saved stdout/stderr) are not inherited by commands.
    // (Other descriptors the test runner leaked into the agent may be; in a sandbox there are
    // none, see the launch test.)
    let (out, _, _) = a
        .sh("t", "echo $__sp_o $__sp_e; sh -c 'ls /proc/$$/fd'")
        .await;
    let mut lines = out.lines();
    let saved: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let fds: Vec<&str> = lines.collect();
    assert_eq!(saved.len(), 2);
    for fd in saved.iter().chain(&["3"]) {
        assert!(!fds.contains(fd), "fd {fd} leaked: {fds:?}");
    }
    assert!(fds.starts_with(&["0", "1"]));
}
