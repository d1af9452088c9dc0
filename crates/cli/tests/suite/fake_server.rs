//! The commands against a fake server: exact output streams, exit codes and error lines.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::support::sandpit;

const KEY: &str = "test-key";
const TS: &str = "2026-01-01T00:00:00.000Z";

type Bodies = Arc<Mutex<Vec<(String, Value)>>>;

pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn error(status: u16, code: &str, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(status).unwrap(),
        json!({"code": code, "message": message, "context": {}, "httpStatus": status, "timestamp": TS}),
    )
}

pub(super) fn sse(events: &[Value]) -> Response {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn info(id: &str, state: &str) -> Value {
    json!({"id": id, "image": "default", "state": state, "sleepAfterSecs": 600, "keepAlive": id == "b",
           "ephemeral": false, "env": {}, "limits": {}, "createdAt": TS, "lastActiveAt": TS})
}

fn handle(
    bodies: &Bodies,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {KEY}"))
    {
        return error(401, "UNAUTHORIZED", "missing or wrong API key");
    }
    // Raw uploads are logged as their bytes.
    let body: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        if body.is_empty() {
            Value::Null
        } else {
            json!(body.to_vec())
        }
    });
    bodies
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), body.clone()));
    match (method.as_str(), uri.path()) {
        ("GET", "/v1/sandboxes") => json_response(
            StatusCode::OK,
            json!({"sandboxes": [info("a", "running"), info("b", "sleeping")]}),
        ),
        ("POST", "/v1/sandboxes") => json_response(
            StatusCode::CREATED,
            info(body["id"].as_str().unwrap_or("gen-1"), "running"),
        ),
        ("POST", "/v1/sandboxes/nope/stop") => error(404, "SANDBOX_NOT_FOUND", "no sandbox nope"),
        ("POST", "/v1/sandboxes/demo/api/execute/stream") => sse(&[
            json!({"type": "start", "command": body["command"], "timestamp": TS}),
            json!({"type": "stdout", "data": format!("ran: {}\n", body["command"].as_str().unwrap()), "timestamp": TS}),
            json!({"type": "stderr", "data": "to stderr\n", "timestamp": TS}),
            json!({"type": "complete", "exitCode": 7, "timestamp": TS}),
        ]),
        ("POST", "/v1/sandboxes/broken/api/execute/stream") => {
            sse(&[json!({"type": "stdout", "data": "partial", "timestamp": TS})])
        }
        ("PUT", "/v1/sandboxes/demo/files/%2Fworkspace%2Fup.bin") => json_response(
            StatusCode::OK,
            json!({"success": true, "path": "/workspace/up.bin", "size": 4, "timestamp": TS}),
        ),
        ("GET", "/v1/sandboxes/demo/files/%2Fmissing") => {
            error(404, "FILE_NOT_FOUND", "File not found: /missing")
        }
        ("GET", "/v1/sandboxes/demo/files/%2Fworkspace%2Fhello.txt") => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            "hello world",
        )
            .into_response(),
        ("POST", "/v1/sandboxes/demo/ports") => json_response(
            StatusCode::OK,
            json!({"port": body["port"], "name": body["name"], "token": "t0k",
                   "url": format!("http://{}-demo-t0k.localhost:7070/", body["port"])}),
        ),
        ("GET", "/v1/sandboxes/demo/ports") => json_response(
            StatusCode::OK,
            json!({"ports": [
                {"port": 8080, "name": "web", "token": "t0k", "url": "http://8080-demo-t0k.localhost:7070/"},
                {"port": 3000, "token": "abc", "url": "http://3000-demo-abc.localhost:7070/", "stale": true}]}),
        ),
        ("DELETE", "/v1/sandboxes/demo/ports/8080") => StatusCode::NO_CONTENT.into_response(),
        ("GET", "/v1/sandboxes/demo/egress-log") => json_response(
            StatusCode::OK,
            json!({"entries": [
                {"time": "2026-12-07T00:41:02.113Z", "host": "pypi.org", "port": 443,
                 "kind": "connect", "decision": "allowed", "bytesUp": 517, "bytesDown": 4096},
                {"time": "2026-12-07T00:41:05.871Z", "host": "127.0.0.1", "port": 5432,
                 "kind": "http", "decision": "denied", "rule": "always-blocked",
                 "reason": "address 127.0.0.1 in always-blocked range loopback (127.0.0.0/8)",
                 "bytesUp": 0, "bytesDown": 0}],
             "dropped": 2}),
        ),
        ("GET", "/v1/sandboxes/demo/usage") => json_response(
            StatusCode::OK,
            json!({"state": "running", "cpuUsec": 1_500_000, "memoryBytes": 40 << 20,
                   "memoryPeakBytes": 64 << 20, "pids": 3, "diskBytes": 2 << 20,
                   "diskComplete": false, "networkBytesUp": 517, "networkBytesDown": 4096}),
        ),
        ("GET", "/v1/sandboxes/demo") => {
            let mut info = info("demo", "running");
            info["labels"] = json!({"env": "prod", "team": "ml"});
            info["expiresAt"] = json!("2026-01-01T01:00:00.000Z");
            info["network"] = json!({"mode": "allowlist", "allow": ["pypi.org", "10.0.0.0/8"]});
            info["secrets"] = json!([{"name": "TOKEN", "hosts": ["api.example.com", "*.x.org"], "header": "Authorization"},
                                     {"name": "OTHER", "hosts": ["h"]}]);
            json_response(StatusCode::OK, info)
        }
        ("PATCH", "/v1/sandboxes/demo") => {
            let mut info = info("demo", "running");
            info["network"] = body
                .get("network")
                .cloned()
                .unwrap_or(json!({"mode": "none", "allow": []}));
            let secrets: Vec<Value> = body["secrets"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(
                            |(k, v)| json!({"name": k, "hosts": v["hosts"], "header": v["header"]}),
                        )
                        .collect()
                })
                .unwrap_or_default();
            info["secrets"] = json!(secrets);
            json_response(StatusCode::OK, info)
        }
        ("GET", "/v1/sandboxes/broken") => json_response(StatusCode::OK, info("broken", "running")),
        ("POST", "/v1/sandboxes/demo/env") => {
            json_response(StatusCode::OK, json!({"success": true, "timestamp": TS}))
        }
        ("GET", "/v1/sandboxes/demo/api/contexts") => json_response(
            StatusCode::OK,
            json!({"success": true, "timestamp": TS, "contexts": [
                {"id": "ctx-1", "language": "python", "cwd": "/workspace", "createdAt": TS},
                {"id": "js", "language": "javascript", "cwd": "/tmp"}]}),
        ),
        ("DELETE", "/v1/sandboxes/demo/api/contexts/ctx-1") => json_response(
            StatusCode::OK,
            json!({"success": true, "contextId": "ctx-1", "timestamp": TS}),
        ),
        ("DELETE", "/v1/sandboxes/demo/api/contexts/gone") => {
            error(404, "CONTEXT_NOT_FOUND", "Context gone not found")
        }
        ("POST", "/v1/sandboxes/demo/api/list-files") => {
            let file = |name: &str, kind: &str, size: u64, mode: &str| {
                json!({"name": name, "absolutePath": format!("/workspace/{name}"), "relativePath": name,
                       "type": kind, "size": size, "modifiedAt": TS, "mode": mode,
                       "permissions": {"readable": true, "writable": true, "executable": kind == "directory"}})
            };
            json_response(
                StatusCode::OK,
                json!({"success": true, "path": body["path"], "count": 2, "timestamp": TS, "files": [
                    file("src", "directory", 4096, "rwxr-xr-x"), file("a.txt", "file", 1536, "rw-r--r--")]}),
            )
        }
        // Any other sandbox does not exist.
        ("GET", path) if path.starts_with("/v1/sandboxes/") && path.matches('/').count() == 3 => {
            let id = path.rsplit('/').next().unwrap_or_default();
            error(404, "SANDBOX_NOT_FOUND", &format!("no sandbox {id}"))
        }
        _ => error(404, "ROUTE_NOT_FOUND", "unexpected request"),
    }
}

/// Starts the fake server on its own thread and runtime; returns its URL and request log.
fn start() -> (String, Bodies) {
    let bodies: Bodies = Arc::default();
    let app = {
        let bodies = bodies.clone();
        axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
            let bodies = bodies.clone();
            async move { handle(&bodies, &m, &u, &h, &b) }
        })
    };
    (serve(app), bodies)
}

/// Serves `app` on a loopback port from its own thread and runtime; returns its URL.
pub(super) fn serve(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

fn cli(url: &str) -> assert_cmd::Command {
    let mut cmd = sandpit();
    cmd.args(["--url", url, "--key", KEY]);
    cmd
}

#[test]
fn exec_streams_to_matching_fds_and_exits_with_the_command_code() {
    let (url, bodies) = start();
    cli(&url)
        .args([
            "exec",
            "demo",
            "--env",
            "A=1",
            "--cwd",
            "/tmp",
            "--session",
            "s",
            "--",
            "python3",
            "-c",
            "print(2+2)",
        ])
        .assert()
        .code(7)
        .stdout("ran: python3 -c 'print(2+2)'\n")
        .stderr("to stderr\n");
    let (_, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        body,
        json!({"command": "python3 -c 'print(2+2)'", "sessionId": "s", "env": {"A": "1"}, "cwd": "/tmp",
               "encoding": "base64"})
    );
}

#[test]
fn exec_sends_hyphenated_words_without_double_dash() {
    let (url, bodies) = start();
    for (words, command) in [
        (&["ls", "-la"][..], "ls -la"),
        (&["ls / | wc -l"], "ls / | wc -l"),
    ] {
        cli(&url)
            .args(["exec", "-n", "demo"])
            .args(words)
            .assert()
            .code(7);
        let (_, body) = bodies.lock().unwrap().last().cloned().unwrap();
        assert_eq!(body["command"], command, "{words:?}");
    }
}

#[test]
fn exec_reports_a_stream_cut_short() {
    let (url, _) = start();
    cli(&url)
        .args(["exec", "broken", "--", "true"])
        .assert()
        .code(1)
        .stdout("partial")
        .stderr("error: the output stream ended before the command completed\n");
}

#[test]
fn server_errors_print_code_and_message() {
    let (url, _) = start();
    cli(&url)
        .args(["stop", "nope"])
        .assert()
        .code(1)
        .stderr("error: SANDBOX_NOT_FOUND: no sandbox nope\n");
    sandpit()
        .args(["--url", &url, "--key", "wrong", "ls"])
        .assert()
        .code(1)
        .stderr("error: UNAUTHORIZED: missing or wrong API key\n");
}

#[test]
fn the_key_file_in_the_data_dir_is_the_default_key() {
    let (url, _) = start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.key"), format!("{KEY}\n")).unwrap();
    let out = sandpit()
        .args(["--url", &url, "ls", "--data-dir"])
        .arg(dir.path())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID  STATE"), "{table}");
    assert!(lines[1].starts_with("a   running"), "{table}");
    assert!(
        lines[2].starts_with("b   sleeping") && lines[2].ends_with("keep-alive"),
        "{table}"
    );
}

#[test]
fn create_sends_every_option() {
    let (url, bodies) = start();
    cli(&url)
        .args([
            "create",
            "box1",
            "--sleep-after",
            "5m",
            "--keep-alive",
            "--memory-mb",
            "256",
            "--cpus",
            "0.5",
        ])
        .args(["--env", "K=V", "--ephemeral", "--image", "default"])
        .args(["--keep-alive-while-busy", "false"])
        .assert()
        .success()
        .stdout("box1\n");
    let (_, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        body,
        json!({"id": "box1", "image": "default", "sleepAfter": 300, "keepAlive": true,
               "keepAliveWhileBusy": false, "env": {"K": "V"},
               "limits": {"cpus": 0.5, "memoryMb": 256}, "ephemeral": true})
    );
    // A duration the protocol cannot read is refused before anything is sent.
    let sent = bodies.lock().unwrap().len();
    let refused = cli(&url)
        .args(["create", "box2", "--sleep-after", "soon"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(stderr.contains("--sleep-after"), "{stderr}");
    assert_eq!(bodies.lock().unwrap().len(), sent);
}

#[test]
fn cp_copies_both_ways() {
    let (url, bodies) = start();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    std::fs::write(&local, [0u8, 1, 2, 255]).unwrap();
    cli(&url)
        .arg("cp")
        .arg(&local)
        .arg("demo:/workspace/")
        .assert()
        .success();
    let (path, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(path, "/v1/sandboxes/demo/files/%2Fworkspace%2Fup.bin");
    assert_eq!(body, json!([0, 1, 2, 255]));

    cli(&url)
        .arg("cp")
        .arg("demo:/workspace/hello.txt")
        .arg(dir.path())
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(),
        "hello world"
    );

    let target = dir.path().join("missing.txt");
    cli(&url)
        .arg("cp")
        .arg("demo:/missing")
        .arg(&target)
        .assert()
        .code(1)
        .stderr("error: FILE_NOT_FOUND: File not found: /missing\n");
    assert!(!target.exists(), "a failed download leaves no file behind");
}

#[test]
fn create_sends_network_policy_and_secrets() {
    let (url, bodies) = start();
    cli(&url)
        .args([
            "create",
            "box2",
            "--allow",
            "*.example.com",
            "--allow",
            "10.1.0.0/16",
        ])
        .args([
            "--secret",
            "TOKEN=s3;cret;hosts=api.example.com;header=Authorization",
        ])
        .args(["--secret", "FROM_ENV;hosts=h.example.com"])
        .env("FROM_ENV", "env-value")
        .assert()
        .success()
        .stdout("box2\n");
    let (_, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        body,
        json!({"id": "box2",
               "network": {"mode": "allowlist", "allow": ["*.example.com", "10.1.0.0/16"]},
               "secrets": {"TOKEN": {"value": "s3;cret", "hosts": ["api.example.com"], "header": "Authorization"},
                           "FROM_ENV": {"value": "env-value", "hosts": ["h.example.com"]}}})
    );
    cli(&url)
        .args(["create", "box3", "--network", "full"])
        .assert()
        .success();
    let (_, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        body,
        json!({"id": "box3", "network": {"mode": "full", "allow": []}})
    );
    cli(&url)
        .args(["create", "box4", "--network", "open"])
        .assert()
        .code(2);
    cli(&url)
        .args(["create", "box4", "--secret", "NO_HOSTS=x"])
        .assert()
        .code(2);
    cli(&url)
        .args(["create", "box4", "--secret", "SANDPIT_UNSET_VAR;hosts=h"])
        .env_remove("SANDPIT_UNSET_VAR")
        .assert()
        .code(1)
        .stderr("error: secret SANDPIT_UNSET_VAR has no value and $SANDPIT_UNSET_VAR is not set\n");
}

#[test]
fn network_shows_and_replaces_the_policy() {
    let (url, bodies) = start();
    cli(&url)
        .args(["network", "demo"])
        .assert()
        .success()
        .stdout("mode   allowlist\nallow  pypi.org\nallow  10.0.0.0/8\n");
    cli(&url)
        .args(["network", "demo", "--mode", "none"])
        .assert()
        .success()
        .stdout("mode   none\n");
    let (path, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(path, "/v1/sandboxes/demo");
    assert_eq!(body, json!({"network": {"mode": "none", "allow": []}}));
    cli(&url)
        .args(["network", "demo", "--allow", "github.com", "--json"])
        .assert()
        .success()
        .stdout("{\n  \"mode\": \"allowlist\",\n  \"allow\": [\n    \"github.com\"\n  ]\n}\n");
}

#[test]
fn network_log_prints_the_egress_log() {
    let (url, _) = start();
    let out = cli(&url)
        .args(["network", "demo", "--log"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[0]),
        ["TIME", "DECISION", "DESTINATION", "UP", "DOWN", "REASON"]
    );
    assert_eq!(
        words(lines[1]),
        [
            "2026-12-07T00:41:02.113Z",
            "allowed",
            "connect",
            "pypi.org:443",
            "517",
            "4096",
            "-"
        ]
    );
    assert!(
        lines[2].contains("denied")
            && lines[2].contains("http 127.0.0.1:5432")
            && lines[2]
                .ends_with("address 127.0.0.1 in always-blocked range loopback (127.0.0.0/8)"),
        "{out}"
    );
    assert_eq!(lines[3], "(2 older entries dropped)");
    let out = cli(&url)
        .args(["network", "demo", "--log", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let page: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(page["entries"][1]["rule"], "always-blocked");
    cli(&url)
        .args(["network", "demo", "--log", "--mode", "none"])
        .assert()
        .failure();
}

#[test]
fn secret_lists_sets_and_clears() {
    let (url, bodies) = start();
    cli(&url)
        .args(["secret", "ls", "demo"])
        .assert()
        .success()
        .stdout(
            "NAME   HOSTS                    HEADER\n\
             TOKEN  api.example.com,*.x.org  Authorization\n\
             OTHER  h                        -\n",
        );
    cli(&url)
        .args([
            "secret",
            "set",
            "demo",
            "A=1;hosts=a.example.com",
            "B=2;hosts=b.example.com;header=X-Key",
        ])
        .assert()
        .success()
        .stdout(
            "NAME  HOSTS          HEADER\nA     a.example.com  -\nB     b.example.com  X-Key\n",
        );
    let (_, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        body,
        json!({"secrets": {"A": {"value": "1", "hosts": ["a.example.com"]},
                           "B": {"value": "2", "hosts": ["b.example.com"], "header": "X-Key"}}})
    );
    cli(&url)
        .args(["secret", "clear", "demo"])
        .assert()
        .success()
        .stdout("demo secrets removed\n");
    let (_, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(body, json!({"secrets": {}}));
    cli(&url).args(["secret", "set", "demo"]).assert().code(2);
}

#[test]
fn expose_prints_the_url_and_ports_lists_them() {
    let (url, bodies) = start();
    cli(&url)
        .args(["expose", "demo", "8080", "--name", "web", "--token", "t0k"])
        .assert()
        .success()
        .stdout("http://8080-demo-t0k.localhost:7070/\n");
    let (path, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(path, "/v1/sandboxes/demo/ports");
    assert_eq!(body, json!({"port": 8080, "name": "web", "token": "t0k"}));
    cli(&url).args(["ports", "demo"]).assert().success().stdout(
        "PORT  NAME  STATUS  URL\n\
             8080  web   live    http://8080-demo-t0k.localhost:7070/\n\
             3000  -     stale   http://3000-demo-abc.localhost:7070/\n",
    );
    cli(&url)
        .args(["unexpose", "demo", "8080"])
        .assert()
        .success()
        .stdout("demo:8080 unexposed\n");
    cli(&url)
        .args(["unexpose", "nope", "8080"])
        .assert()
        .code(1)
        .stderr("error: ROUTE_NOT_FOUND: unexpected request\n");
    cli(&url).args(["expose", "demo", "99999"]).assert().code(2);
}

/// The request paths the fake server saw, in order.
fn paths(bodies: &Bodies) -> Vec<String> {
    bodies
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect()
}

#[test]
fn a_typo_id_creates_nothing_without_create() {
    let (url, bodies) = start();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("a.txt");
    std::fs::write(&local, "x").unwrap();
    let local = local.to_str().unwrap();
    let commands: [&[&str]; 15] = [
        &["cp", local, "dmeo:/workspace/a.txt"],
        &["cp", "dmeo:/workspace/a.txt", local],
        &["start", "dmeo", "--", "sleep", "1"],
        &["logs", "dmeo", "job"],
        &["run", "dmeo", "-"],
        &["shell", "dmeo"],
        &["env", "dmeo", "K=V"],
        &["ctx", "ls", "dmeo"],
        &["files", "ls", "dmeo", "/workspace"],
        &["ps", "dmeo"],
        &["kill", "dmeo", "--all"],
        &["watch", "dmeo", "/workspace"],
        &["git", "clone", "dmeo", "file:///r"],
        &["expose", "dmeo", "8080"],
        &["ctx", "rm", "dmeo", "c1"],
    ];
    for args in commands {
        bodies.lock().unwrap().clear();
        cli(&url)
            .args(args)
            .write_stdin("print(1)")
            .assert()
            .code(1)
            .stderr(
                "error: no sandbox dmeo — create it with `sandpit create dmeo` or pass --create\n",
            );
        // Only the existence check reached the server: no create, no forwarded call.
        assert_eq!(paths(&bodies), ["/v1/sandboxes/dmeo"], "{args:?}");
    }
}

#[test]
fn create_flag_and_exec_create_a_missing_sandbox_and_say_so() {
    let (url, bodies) = start();
    // (The fake server has no process API: the command fails after the create.)
    let err = stderr_of(cli(&url).args(["start", "fresh", "--create", "--", "sleep", "1"]));
    assert!(err.starts_with("created sandbox fresh\n"), "{err}");
    assert_eq!(
        paths(&bodies)[..3],
        [
            "/v1/sandboxes/fresh",
            "/v1/sandboxes",
            "/v1/sandboxes/fresh/api/process/start"
        ]
    );
    assert_eq!(bodies.lock().unwrap()[1].1, json!({"id": "fresh"}));
    bodies.lock().unwrap().clear();
    let err = stderr_of(cli(&url).args(["exec", "fresh2", "--", "true"]));
    assert!(err.starts_with("created sandbox fresh2\n"), "{err}");
    assert_eq!(
        paths(&bodies),
        [
            "/v1/sandboxes/fresh2",
            "/v1/sandboxes",
            "/v1/sandboxes/fresh2/api/execute/stream"
        ]
    );
}

/// Stderr of a command that fails with exit code 1.
fn stderr_of(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.assert().code(1).get_output().stderr.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn info_shows_a_sandbox_and_its_ports() {
    let (url, _) = start();
    cli(&url).args(["info", "demo"]).assert().success().stdout(
        "id           demo\n\
         state        running\n\
         image        default\n\
         created      2026-01-01T00:00:00.000Z\n\
         last active  2026-01-01T00:00:00.000Z\n\
         sleep after  600s (not while processes run)\n\
         expires      2026-01-01T01:00:00.000Z\n\
         ephemeral    no\n\
         isolation    standard\n\
         memory       unlimited\n\
         cpus         unlimited\n\
         pids         unlimited\n\
         disk         unlimited\n\
         cpu time     1.500s\n\
         memory used  40.0 MiB (peak 64.0 MiB)\n\
         processes    3\n\
         disk used    2.0 MiB or more\n\
         egress       517 B up, 4.0 KiB down\n\
         label        env=prod\n\
         label        team=ml\n\
         network      allowlist\n\
         allow        pypi.org\n\
         allow        10.0.0.0/8\n\
         secret       TOKEN → api.example.com,*.x.org (Authorization)\n\
         secret       OTHER → h\n\
         port         8080 http://8080-demo-t0k.localhost:7070/ (web)\n\
         port         3000 http://3000-demo-abc.localhost:7070/ [stale]\n",
    );
    let out = cli(&url)
        .args(["info", "demo", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let info: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(info["id"], "demo");
    assert_eq!(info["state"], "running");
    assert_eq!(info["network"]["mode"], "allowlist");
    assert_eq!(info["ports"][0]["port"], 8080);
    assert_eq!(info["usage"]["cpuUsec"], 1_500_000);
    assert_eq!(info["labels"]["team"], "ml");
    assert_eq!(
        info["ports"][1]["url"],
        "http://3000-demo-abc.localhost:7070/"
    );
    cli(&url)
        .args(["info", "nope"])
        .assert()
        .code(1)
        .stderr("error: SANDBOX_NOT_FOUND: no sandbox nope\n");
}

#[test]
fn ls_json_parses() {
    let (url, _) = start();
    let out = cli(&url)
        .args(["ls", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let list: Value = serde_json::from_slice(&out).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(list[1]["state"], "sleeping");
}

#[test]
fn env_sets_and_unsets_variables() {
    let (url, bodies) = start();
    cli(&url)
        .args(["env", "demo", "A=1", "B=x=y", "--unset", "OLD"])
        .assert()
        .success()
        .stdout("demo env updated\n");
    let (path, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(path, "/v1/sandboxes/demo/env");
    assert_eq!(body, json!({"env": {"A": "1", "B": "x=y", "OLD": null}}));
    // Nothing to change is a usage error, found before anything is sent.
    bodies.lock().unwrap().clear();
    cli(&url).args(["env", "demo"]).assert().code(2);
    assert!(paths(&bodies).is_empty());
    cli(&url).args(["env", "demo", "NOEQUALS"]).assert().code(2);
}

#[test]
fn ctx_lists_and_removes_contexts() {
    let (url, bodies) = start();
    cli(&url)
        .args(["ctx", "ls", "demo"])
        .assert()
        .success()
        .stdout(
            "ID     LANGUAGE    CWD         CREATED\n\
         ctx-1  python      /workspace  2026-01-01T00:00:00.000Z\n\
         js     javascript  /tmp        -\n",
        );
    let out = cli(&url)
        .args(["ctx", "ls", "demo", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let contexts: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(contexts[1]["language"], "javascript");
    cli(&url)
        .args(["ctx", "rm", "demo", "ctx-1"])
        .assert()
        .success()
        .stdout("ctx-1 removed\n");
    assert_eq!(
        paths(&bodies).last().unwrap(),
        "/v1/sandboxes/demo/api/contexts/ctx-1"
    );
    cli(&url)
        .args(["ctx", "rm", "demo", "gone"])
        .assert()
        .code(1)
        .stderr("error: CONTEXT_NOT_FOUND: Context gone not found\n");
}

#[test]
fn files_ls_prints_a_directory() {
    let (url, bodies) = start();
    cli(&url)
        .args(["files", "ls", "demo", "/workspace", "-a"])
        .assert()
        .success()
        .stdout(
            "MODE       SIZE     MODIFIED                  NAME\n\
             rwxr-xr-x  4.0 KiB  2026-01-01T00:00:00.000Z  src/\n\
             rw-r--r--  1.5 KiB  2026-01-01T00:00:00.000Z  a.txt\n",
        );
    let (_, body) = bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        body,
        json!({"path": "/workspace", "options": {"recursive": false, "includeHidden": true}})
    );
    let out = cli(&url)
        .args(["files", "ls", "demo", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let files: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(files[0]["type"], "directory");
    assert_eq!(files[1]["size"], 1536);
}
