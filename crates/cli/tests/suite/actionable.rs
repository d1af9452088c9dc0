//! Errors a person can act on, against a real `sandpit serve`: streams cut by `stop`/`rm`
//! (exec, `logs --follow`, `watch`, `shell`, `run`) say what happened and wake nothing, and a `git clone` the network
//! policy refused names the rule and the `sandpit network` command that allows the host (a git
//! server in a network namespace the test creates).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use sandpit_runtime::testnet::TestNet;

use super::support::{Served, images_dir_or_skip};

/// `sandpit ARGS` against `served` as a child process with piped stdio.
fn spawn(served: &Served, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .args(["--url", &served.url, "--key", &served.key])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (generously) for `child` to exit; returns its exit code and the rest of its stderr.
fn finish(mut child: Child, stderr: Option<BufReader<ChildStderr>>) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the cut command did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    match stderr {
        Some(mut reader) => reader.read_to_string(&mut text).unwrap(),
        None => child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap(),
    };
    (status.code(), text)
}

/// The first line `reader` gives.
fn first_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

/// Stops (`stop`) or removes (`rm`) sandbox `id` under `child` and checks that the child then
/// exits 1 saying so.
fn cut(
    served: &Served,
    child: Child,
    stderr: Option<BufReader<ChildStderr>>,
    verb: &str,
    id: &str,
) {
    served.cli().args([verb, id]).assert().success();
    let what = if verb == "rm" { "removed" } else { "stopped" };
    assert_eq!(
        finish(child, stderr),
        (Some(1), format!("error: sandbox {id} was {what}\n"))
    );
}

fn wait_for_file(served: &Served, id: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let done = served
            .cli()
            .args(["exec", id, "--", &format!("test -e {path}")])
            .output()
            .unwrap();
        if done.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{path} never appeared in {id}");
}

#[test]
fn serial_cli_streams_cut_by_stop_or_rm_say_so() {
    let Some(images) = images_dir_or_skip("serial_cli_streams_cut_by_stop_or_rm_say_so") else {
        return;
    };
    let served = Served::start(&images);

    // exec, then `sandpit stop`.
    served.cli().args(["create", "cut1"]).assert().success();
    let child = spawn(
        &served,
        &["exec", "-n", "cut1", "touch /tmp/started; sleep 60"],
    );
    wait_for_file(&served, "cut1", "/tmp/started");
    cut(&served, child, None, "stop", "cut1");
    assert_eq!(state(&served, "cut1"), "sleeping");

    // logs --follow, then `sandpit rm`.
    served
        .cli()
        .args(["start", "cut1", "--id", "job", "--", "echo ready; sleep 60"])
        .assert()
        .success();
    let mut child = spawn(&served, &["logs", "cut1", "job", "--follow"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(first_line(&mut out), "ready\n");
    cut(&served, child, None, "rm", "cut1");

    // watch, then `sandpit stop`.
    served.cli().args(["create", "cut2"]).assert().success();
    let mut child = spawn(&served, &["watch", "cut2", "/workspace"]);
    let mut err = BufReader::new(child.stderr.take().unwrap());
    assert_eq!(first_line(&mut err), "watching /workspace\n");
    cut(&served, child, Some(err), "stop", "cut2");

    // shell (a WebSocket: no error event, the sandbox's state tells), then `sandpit rm`.
    let mut child = spawn(&served, &["shell", "cut2"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo rea''dy\n").unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the shell ended early"
        );
        if line.trim_end().ends_with("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "the shell never answered");
    }
    served.cli().args(["rm", "cut2"]).assert().success();
    let (code, stderr) = finish(child, None);
    drop(stdin);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.ends_with("error: sandbox cut2 was removed\n"),
        "{stderr}"
    );

    // run (its temporary context is not deleted afterwards: that would wake the sandbox).
    served.cli().args(["create", "cut3"]).assert().success();
    let mut child = spawn(&served, &["run", "cut3", "-"]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(first_line(&mut out), "ready\n");
    cut(&served, child, None, "stop", "cut3");
    assert_eq!(state(&served, "cut3"), "sleeping");

    // Nothing was woken or re-created by the commands that were cut.
    let ls = served.cli().args(["ls", "--json"]).assert().success();
    let ls: serde_json::Value = serde_json::from_slice(&ls.get_output().stdout).unwrap();
    let ids: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cut3"], "{ls}");
}

fn state(served: &Served, id: &str) -> String {
    let info = served.cli().args(["info", id, "--json"]).assert().success();
    let info: serde_json::Value = serde_json::from_slice(&info.get_output().stdout).unwrap();
    info["state"].as_str().unwrap().to_owned()
}

/// A bare repository `repo.git` with one commit on `main`, prepared for git's "dumb" HTTP
/// protocol (plain files), under a new temp dir.
fn bare_repository() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let script = "set -e; git init -q -b main work && cd work \
        && git -c user.email=t@example.com -c user.name=T commit -q --allow-empty -m one \
        && echo hi > f && git add f \
        && git -c user.email=t@example.com -c user.name=T commit -q -m two \
        && cd .. && git clone -q --bare work repo.git && cd repo.git && git update-server-info";
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let root = dir.path().to_path_buf();
    (dir, root)
}

/// Serves the files under `root` over HTTP/1.0 on `listener` (what a dumb git clone needs).
fn file_server(listener: TcpListener, root: PathBuf) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let path = request.split(' ').nth(1).unwrap_or("/");
            let path = path
                .split('?')
                .next()
                .unwrap_or("/")
                .trim_start_matches('/');
            let file = root.join(path);
            let answer = match (path.contains(".."), std::fs::read(&file)) {
                (false, Ok(body)) => {
                    let mut a = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    a.extend(body);
                    a
                }
                _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&answer);
        }
    });
}

/// The command between the backticks of `message`.
fn quoted_command(message: &str) -> Vec<String> {
    let command = message
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("{message}"));
    command
        .split(' ')
        .map(|w| w.trim_matches('\'').to_owned())
        .collect()
}

#[test]
fn serial_cli_git_clone_refused_by_policy_names_the_fix() {
    let Some(images) = images_dir_or_skip("serial_cli_git_clone_refused_by_policy_names_the_fix")
    else {
        return;
    };
    let (_dir, root) = bare_repository();
    // The "remote": a server in a network namespace the test creates (a private 10.x address;
    // the host's loopback is always blocked, whatever the policy).
    let net = TestNet::create().unwrap();
    let inner = net.inner.to_string();
    let port = 7104;
    file_server(net.listen(port).unwrap(), root);
    let served = Served::start(&images);
    served
        .cli()
        .args(["create", "gitbox", "--allow", "pypi.org"])
        .assert()
        .success();
    let url = format!("http://{inner}:{port}/repo.git");
    let assert = served
        .cli()
        .args(["git", "clone", "gitbox", &url])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert_eq!(
        stderr,
        format!(
            "error: git clone refused: the network policy of sandbox gitbox (mode allowlist) \
             does not let it reach {inner} (rule allow-list-address: address not in allow-list \
             (direct connections to an IP address need a CIDR that contains it)); allow it with \
             `sandpit network gitbox --allow pypi.org --allow {inner}/32`\n"
        )
    );

    // The command it names works: the clone then succeeds.
    let fix = quoted_command(&stderr);
    assert_eq!(fix[0], "sandpit");
    served.cli().args(&fix[1..]).assert().success();
    served
        .cli()
        .args(["git", "clone", "gitbox", &url])
        .assert()
        .success()
        .stdout("/workspace/repo (main)\n");
    served
        .cli()
        .args(["exec", "gitbox", "--", "cat /workspace/repo/f"])
        .assert()
        .success()
        .stdout("hi\n");

    // A clone that fails for another reason (no such repository) keeps git's own error.
    let assert = served
        .cli()
        .args([
            "git",
            "clone",
            "gitbox",
            &format!("http://{inner}:{port}/nope.git"),
        ])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(!stderr.contains("network policy"), "{stderr}");
    assert!(stderr.starts_with("error: GIT_"), "{stderr}");
}
