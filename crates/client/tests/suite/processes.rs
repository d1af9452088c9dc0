//! Background processes, port readiness, git and file watches against a real server.

use std::time::Duration;

use futures::StreamExt;
use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::container::{ChangeStatus, ProcessStatus, WatchEvent};
use sandpit_client::{
    Client, ClientError, ExecOptions, GitOptions, PortWaitOptions, ProcessOptions, WatchOptions,
};

use super::real_server::with_real_server;

const WAIT: Option<Duration> = Some(Duration::from_secs(60));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_client_processes_git_and_watch() {
    with_real_server(
        "serial_client_processes_git_and_watch",
        |client, _| async move {
            processes(&client).await;
            git(&client).await;
            watch(&client).await;
            client.destroy("sdk-proc").await.unwrap();
        },
    )
    .await;
}

async fn processes(client: &Client) {
    let sandbox = client.sandbox("sdk-proc");
    let server = sandbox
        .start_process(
            "echo starting; sleep 1; echo ready >&2; exec python3 -m http.server 18931 --bind 127.0.0.1",
            &ProcessOptions::default().id("web"),
        )
        .await
        .unwrap();
    assert_eq!(server.id, "web");
    assert!(server.pid.is_some());

    // The line comes from stderr, after a line already in the replay.
    let line = server.wait_for_log("ready", WAIT).await.unwrap();
    assert_eq!(line, "ready");
    let re = regex::Regex::new("^start").unwrap();
    assert_eq!(server.wait_for_log(re, WAIT).await.unwrap(), "starting");
    let status = server
        .wait_for_port(
            18931,
            &PortWaitOptions {
                timeout: WAIT,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(status, Some(200));
    assert!(
        sandbox
            .list_processes()
            .await
            .unwrap()
            .iter()
            .any(|p| p.id == "web" && p.status == ProcessStatus::Running)
    );
    let same = sandbox.process("web").await.unwrap();
    assert_eq!(same.pid, server.pid);
    assert_eq!(server.logs().await.unwrap().stdout, "starting\n");

    server.kill(None).await.unwrap();
    let code = server.wait_for_exit(WAIT).await.unwrap();
    assert_eq!(code, 143, "SIGTERM");
    assert_eq!(server.info().await.unwrap().status, ProcessStatus::Killed);

    // A failing process: its exit code, and waits that can no longer succeed fail.
    let failing = sandbox
        .start_process("echo bye; exit 7", &ProcessOptions::default())
        .await
        .unwrap();
    assert_eq!(failing.wait_for_exit(WAIT).await.unwrap(), 7);
    assert_eq!(failing.info().await.unwrap().status, ProcessStatus::Failed);
    let err = failing.wait_for_log("never", WAIT).await.unwrap_err();
    assert!(err.to_string().contains("exited with code 7"), "{err}");
    let err = failing
        .wait_for_port(18932, &PortWaitOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("exited") && err.to_string().contains("18932"),
        "{err}"
    );

    // Client-side timeouts.
    let sleeper = sandbox
        .start_process("sleep 30", &ProcessOptions::default())
        .await
        .unwrap();
    let err = sleeper
        .wait_for_exit(Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    sleeper.kill(Some("SIGKILL")).await.unwrap();
    assert_eq!(sleeper.wait_for_exit(WAIT).await.unwrap(), 137);

    let err = sandbox.process("nope").await.unwrap_err();
    assert_eq!(
        (err.code(), err.http_status()),
        (Some(ErrorCode::ProcessNotFound), Some(404))
    );

    sandbox
        .start_process("sleep 30", &ProcessOptions::default())
        .await
        .unwrap();
    assert_eq!(sandbox.kill_all().await.unwrap(), 1);
}

async fn git(client: &Client) {
    let sandbox = client.sandbox("sdk-proc");
    let made = sandbox
        .exec(
            "set -e; mkdir -p /tmp/origin && cd /tmp/origin && git init -q -b main . \
             && git config user.email t@example.com && git config user.name T \
             && echo hello > README && git add README && git commit -qm init",
            &ExecOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(made.exit_code, 0, "{}", made.stderr);
    let done = sandbox
        .git_checkout("file:///tmp/origin", &GitOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (done.branch.as_str(), done.target_dir.as_str()),
        ("main", "/workspace/origin")
    );
    assert_eq!(
        sandbox
            .read_file("/workspace/origin/README")
            .await
            .unwrap()
            .content,
        "hello\n"
    );
    let err = sandbox
        .git_checkout(
            "file:///tmp/origin",
            &GitOptions {
                branch: Some("nope".into()),
                target_dir: Some("/tmp/other".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::GitBranchNotFound), "{err}");
}

async fn watch(client: &Client) {
    let sandbox = client.sandbox("sdk-proc");
    sandbox.mkdir("/workspace/w", true).await.unwrap();
    let mut events = sandbox
        .watch("/workspace/w", &WatchOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        events.next().await,
        Some(Ok(WatchEvent::Watching { .. }))
    ));
    sandbox
        .exec("echo x > /workspace/w/new.txt", &ExecOptions::default())
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            if let WatchEvent::Event { path, .. } = event.unwrap()
                && path.ends_with("new.txt")
            {
                return path;
            }
        }
        panic!("watch ended");
    })
    .await
    .unwrap();
    assert!(seen.ends_with("new.txt"), "{seen}");
    drop(events);

    let options = WatchOptions::default();
    let first = sandbox
        .check_changes("/workspace/w", None, &options)
        .await
        .unwrap();
    let again = sandbox
        .check_changes("/workspace/w", Some(&first.version), &options)
        .await
        .unwrap();
    assert_eq!(again.status, ChangeStatus::Unchanged);
    sandbox
        .exec("echo y > /workspace/w/other.txt", &ExecOptions::default())
        .await
        .unwrap();
    // Events are coalesced; give the watch a moment to see the write.
    let mut status = ChangeStatus::Unchanged;
    for _ in 0..50 {
        status = sandbox
            .check_changes("/workspace/w", Some(&again.version), &options)
            .await
            .unwrap()
            .status;
        if status != ChangeStatus::Unchanged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, ChangeStatus::Changed);
}
