//! PID-1 duties: orphans are reaped, SIGTERM ends the sessions.

use std::time::Duration;

use serde_json::json;

use super::harness::{Agent, zombie_children};

#[tokio::test]
async fn orphans_are_reaped_in_serve_mode() {
    // serve mode makes the agent a child subreaper, so orphans come back to it like to PID 1.
    let a = Agent::start();
    for session in ["s", "__DISABLE_SESSION__"] {
        let v = a
            .exec(json!({"command": "for i in 1 2 3; do (sleep 0.1 &) ; done; echo spawned", "sessionId": session}))
            .await;
        assert_eq!(v["stdout"], "spawned\n");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(zombie_children(a.pid()), Vec::<i32>::new());
}

#[test]
fn serial_orphans_are_reaped_when_the_agent_is_pid_1() {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipping: unshare --pid not available");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = Agent::start_wrapped(
            &[
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child=SIGTERM",
            ],
            |_| {},
        );
        let v = a
            .exec(json!({"command": "cat /proc/1/comm", "sessionId": "s"}))
            .await;
        assert_eq!(v["stdout"], "sandpit-agent\n");
        let cmd = "for i in 1 2 3; do (sleep 0.1 &) ; done; sleep 0.8; \
                   grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l";
        for session in ["s", "__DISABLE_SESSION__"] {
            let v = a.exec(json!({"command": cmd, "sessionId": session})).await;
            assert_eq!(v["stdout"], "0\n", "{session}: zombies left");
        }
    });
}

#[tokio::test]
async fn sigterm_terminates_sessions() {
    let mut a = Agent::start();
    let (pid, _, _) = a.sh("s", "sleep 60 & echo $!").await;
    let (shell, _, _) = a.sh("s", "echo $$").await;
    let pids: Vec<i32> = [pid, shell]
        .iter()
        .map(|p| p.trim().parse().unwrap())
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = a.child.as_mut().unwrap().wait().unwrap();
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(200));
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for our test process (not the agent) to reap it.
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "{pid} still running: {stat}"
        );
    }
}
