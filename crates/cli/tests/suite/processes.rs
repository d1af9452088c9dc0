//! `start`, `ps`, `logs`, `kill`, `git clone` and `watch` against a real `sandpit serve`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::support::{Served, images_dir_or_skip};

fn stdout(assert: assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

#[test]
fn serial_cli_processes_git_and_watch() {
    let Some(images) = images_dir_or_skip("serial_cli_processes_git_and_watch") else {
        return;
    };
    let served = Served::start(&images);

    // start prints the id; ps lists it; logs --follow exits with the process's code.
    let id = stdout(
        served
            .cli()
            .args([
                "start", "box", "--create", "--id", "job", "--env", "W=world", "--",
            ])
            .arg("echo hello $W; sleep 1; echo oops >&2; exit 3")
            .assert()
            .success(),
    );
    assert_eq!(id, "job\n");
    let ps = stdout(served.cli().args(["ps", "box"]).assert().success());
    assert!(ps.starts_with("ID"), "{ps}");
    assert!(ps.lines().any(|l| l.starts_with("job ")), "{ps}");
    served
        .cli()
        .args(["logs", "box", "job", "--follow"])
        .assert()
        .code(3)
        .stdout("hello world\n")
        .stderr("oops\n");
    served
        .cli()
        .args(["logs", "box", "job"])
        .assert()
        .success()
        .stdout("hello world\n");
    let ps = stdout(
        served
            .cli()
            .args(["ps", "box", "--json"])
            .assert()
            .success(),
    );
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(ps[0]["status"], "failed", "{ps}");
    assert_eq!(ps[0]["exitCode"], 3, "{ps}");

    // kill with a signal; kill --all; unknown ids are coded errors.
    served
        .cli()
        .args(["start", "box", "--id", "sleeper", "--", "sleep", "60"])
        .assert()
        .success();
    served
        .cli()
        .args(["kill", "box", "sleeper", "--signal", "SIGINT"])
        .assert()
        .success()
        .stdout("sleeper killed\n");
    served
        .cli()
        .args(["logs", "box", "sleeper", "--follow"])
        .assert()
        .code(130);
    served
        .cli()
        .args(["start", "box", "--", "sleep", "60"])
        .assert()
        .success();
    served
        .cli()
        .args(["kill", "box", "--all"])
        .assert()
        .success()
        .stdout("1 killed\n");
    let nope = served
        .cli()
        .args(["logs", "box", "nope"])
        .assert()
        .failure();
    assert_stderr_has(nope, "error: PROCESS_NOT_FOUND: ");

    // git clone of a repository made inside the sandbox.
    served
        .cli()
        .args(["exec", "box", "--"])
        .arg(
            "set -e; mkdir -p /tmp/repo && cd /tmp/repo && git init -q -b trunk . \
             && git config user.email t@example.com && git config user.name T \
             && echo hi > f && git add f && git commit -qm one",
        )
        .assert()
        .success();
    served
        .cli()
        .args([
            "git",
            "clone",
            "box",
            "file:///tmp/repo",
            "--target-dir",
            "/workspace/r",
        ])
        .assert()
        .success()
        .stdout("/workspace/r (trunk)\n");
    served
        .cli()
        .args(["exec", "box", "--", "cat", "/workspace/r/f"])
        .assert()
        .success()
        .stdout("hi\n");
    let missing = served
        .cli()
        .args(["git", "clone", "box", "file:///tmp/missing"])
        .assert()
        .failure();
    assert_stderr_has(missing, "error: GIT_REPOSITORY_NOT_FOUND: ");

    // watch prints one line per change until killed.
    served
        .cli()
        .args(["exec", "box", "--", "mkdir", "-p", "/workspace/wd"])
        .assert()
        .success();
    let mut watch = Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .args([
            "--url",
            &served.url,
            "--key",
            &served.key,
            "watch",
            "box",
            "/workspace/wd",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err_tx = tx.clone();
    let out = BufReader::new(watch.stdout.take().unwrap());
    let err = BufReader::new(watch.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(format!("out {line}"));
        }
    });
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = err_tx.send(format!("err {line}"));
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(first, "err watching /workspace/wd");
    served
        .cli()
        .args(["exec", "box", "--", "touch", "/workspace/wd/new.txt"])
        .assert()
        .success();
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // ctrl-c ends it cleanly.
    Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            watch.kill().unwrap();
            watch.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        line.starts_with("out create ") && line.ends_with("new.txt"),
        "{line}"
    );

    served.cli().args(["rm", "box"]).assert().success();
}

fn assert_stderr_has(assert: assert_cmd::assert::Assert, text: &str) {
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains(text), "{stderr}");
}
