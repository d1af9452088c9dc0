//! `sandpit run` against a fake server (exact output, files, requests, exit codes) and against a
//! real server (a Python file with a figure and a table, live output, errors, JavaScript).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::fake_server::{error, json_response, serve, sse};
use super::support::{Served, images_dir_or_skip, sandpit};

const KEY: &str = "run-key";
const TS: &str = "2026-01-01T00:00:00.000Z";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\nfake image";

type Requests = Arc<Mutex<Vec<(String, String, Value)>>>;

fn handle(requests: &Requests, method: &Method, uri: &Uri, body: &Bytes) -> Response {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    requests
        .lock()
        .unwrap()
        .push((method.to_string(), uri.path().to_owned(), body.clone()));
    match (method.as_str(), uri.path()) {
        ("GET", "/v1/sandboxes/demo") => json_response(
            StatusCode::OK,
            json!({"id": "demo", "image": "default", "state": "running", "sleepAfterSecs": 600,
                   "keepAlive": false, "ephemeral": false, "env": {}, "limits": {},
                   "createdAt": TS, "lastActiveAt": TS}),
        ),
        ("POST", "/v1/sandboxes/demo/api/contexts") => json_response(
            StatusCode::OK,
            json!({"success": true, "contextId": "ctx-1", "language": body["language"],
                   "cwd": body.get("cwd").cloned().unwrap_or(json!("/workspace")), "timestamp": TS}),
        ),
        ("DELETE", path) if path.starts_with("/v1/sandboxes/demo/api/contexts/") => json_response(
            StatusCode::OK,
            json!({"success": true, "contextId": path.rsplit('/').next(), "timestamp": TS}),
        ),
        ("POST", "/v1/sandboxes/demo/api/execute/code") => {
            let code = body["code"].as_str().unwrap_or_default();
            if body["context_id"] == "gone" {
                return json_response(
                    StatusCode::NOT_FOUND,
                    json!({"code": "CONTEXT_NOT_FOUND", "message": "Context gone not found",
                           "context": {"contextId": "gone"}, "httpStatus": 404, "timestamp": TS}),
                );
            }
            let mut events = vec![
                json!({"type": "stdout", "text": "hello\n"}),
                json!({"type": "stderr", "text": "warn\n"}),
            ];
            if code.contains("raise") {
                events.push(json!({"type": "error", "ename": "ValueError", "evalue": "bad",
                    "traceback": ["Traceback (most recent call last):", "  File \"<cell>\", line 1", "ValueError: bad\n"]}));
            } else if code.contains("cut") {
                // The stream ends without a final event.
            } else {
                events.extend([
                    json!({"type": "result", "metadata": {}, "text": "42"}),
                    json!({"type": "result", "metadata": {}, "text": "<Figure size 640x480 with 1 Axes>",
                           "png": base64(PNG)}),
                    json!({"type": "result", "metadata": {}, "text": "   a\n0  1", "html": "<table><td>1</td></table>"}),
                    json!({"type": "result", "metadata": {}, "svg": "<svg xmlns=\"http://www.w3.org/2000/svg\"/>"}),
                    json!({"type": "result", "metadata": {}, "json": {"a": [1, 2]}}),
                    json!({"type": "result", "metadata": {}, "markdown": "# Title"}),
                    json!({"type": "execution_complete", "execution_count": 1}),
                ]);
            }
            sse(&events)
        }
        _ => error(404, "ROUTE_NOT_FOUND", "unexpected request"),
    }
}

/// Standard base64 (the test crate has no base64 dependency).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Starts the fake server on its own thread; returns its URL and request log.
fn start() -> (String, Requests) {
    let requests: Requests = Arc::default();
    let app = {
        let requests = requests.clone();
        axum::Router::new().fallback(move |m: Method, u: Uri, b: Bytes| {
            let requests = requests.clone();
            async move { handle(&requests, &m, &u, &b) }
        })
    };
    (serve(app), requests)
}

/// `sandpit` against the fake server, in a scratch directory (result files land there).
fn cli(url: &str, scratch: &tempfile::TempDir) -> assert_cmd::Command {
    let mut cmd = sandpit();
    cmd.args(["--url", url, "--key", KEY])
        .current_dir(scratch.path());
    cmd
}

fn paths(requests: &Requests) -> Vec<String> {
    requests
        .lock()
        .unwrap()
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect()
}

fn body_of(requests: &Requests, path: &str) -> Value {
    requests
        .lock()
        .unwrap()
        .iter()
        .find(|(_, p, _)| p.ends_with(path))
        .map(|(_, _, b)| b.clone())
        .unwrap()
}

#[test]
fn run_prints_text_saves_files_and_deletes_its_context() {
    let (url, requests) = start();
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let file = dir.path().join("plot.py");
    std::fs::write(&file, "print('hello')\n").unwrap();
    // A result file that exists already is never overwritten.
    std::fs::write(dir.path().join("sandpit-out-1.png"), "mine").unwrap();
    let out = dir.path().display().to_string();
    cli(&url, &scratch)
        .args(["run", "demo", "--cwd", "/tmp", "--env", "A=1", "--out-dir", &out])
        .arg(&file)
        .assert()
        .success()
        .stdout("hello\n42\n<Figure size 640x480 with 1 Axes>\n   a\n0  1\n{\n  \"a\": [\n    1,\n    2\n  ]\n}\n# Title\n")
        .stderr(format!(
            "warn\nsaved {out}/sandpit-out-2.png\nsaved {out}/sandpit-out-3.html\nsaved {out}/sandpit-out-4.svg\n"
        ));
    assert_eq!(
        std::fs::read(dir.path().join("sandpit-out-1.png")).unwrap(),
        b"mine"
    );
    assert_eq!(
        std::fs::read(dir.path().join("sandpit-out-2.png")).unwrap(),
        PNG
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sandpit-out-3.html")).unwrap(),
        "<table><td>1</td></table>"
    );
    assert_eq!(
        paths(&requests),
        [
            "GET /v1/sandboxes/demo",
            "POST /v1/sandboxes/demo/api/contexts",
            "POST /v1/sandboxes/demo/api/execute/code",
            "DELETE /v1/sandboxes/demo/api/contexts/ctx-1",
        ]
    );
    assert_eq!(
        body_of(&requests, "/api/contexts"),
        json!({"language": "python", "cwd": "/tmp", "env_vars": {"A": "1"}})
    );
    assert_eq!(
        body_of(&requests, "/execute/code"),
        json!({"context_id": "ctx-1", "code": "print('hello')\n"})
    );
}

#[test]
fn run_reads_stdin_into_an_existing_context() {
    let (url, requests) = start();
    let scratch = tempfile::tempdir().unwrap();
    cli(&url, &scratch)
        .args(["run", "demo", "--lang", "ts", "--context", "c7", "-"])
        .write_stdin("const x: number = 1; x")
        .assert()
        .success();
    assert_eq!(
        paths(&requests),
        [
            "GET /v1/sandboxes/demo",
            "POST /v1/sandboxes/demo/api/execute/code"
        ]
    );
    // Without --out-dir, result files land in the current directory.
    let mut saved: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    assert_eq!(
        saved,
        [
            "sandpit-out-1.png",
            "sandpit-out-2.html",
            "sandpit-out-3.svg"
        ]
    );
    assert_eq!(
        body_of(&requests, "/execute/code"),
        json!({"context_id": "c7", "code": "const x: number = 1; x", "language": "typescript"})
    );
}

#[test]
fn run_takes_the_language_from_the_extension_and_can_keep_the_context() {
    let (url, requests) = start();
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.mjs");
    std::fs::write(&file, "1").unwrap();
    let assert = cli(&url, &scratch)
        .args(["run", "demo", "--keep-context", "--out-dir"])
        .arg(dir.path())
        .arg(&file)
        .assert()
        .success();
    assert!(stderr_of(&assert).starts_with("context: ctx-1\nwarn\n"));
    assert_eq!(
        body_of(&requests, "/api/contexts"),
        json!({"language": "javascript"})
    );
    assert!(!paths(&requests).iter().any(|p| p.starts_with("DELETE")));
}

fn stderr_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

#[test]
fn an_exception_prints_the_traceback_and_exits_1() {
    let (url, requests) = start();
    let scratch = tempfile::tempdir().unwrap();
    cli(&url, &scratch)
        .args(["run", "demo", "-"])
        .write_stdin("raise ValueError('bad')")
        .assert()
        .code(1)
        .stdout("hello\n")
        .stderr("warn\nTraceback (most recent call last):\n  File \"<cell>\", line 1\nValueError: bad\n");
    // The temporary context is deleted after a failed run too.
    assert_eq!(
        paths(&requests).last().unwrap(),
        "DELETE /v1/sandboxes/demo/api/contexts/ctx-1"
    );
}

#[test]
fn a_stream_cut_short_and_server_errors_fail_clearly() {
    let (url, _) = start();
    let scratch = tempfile::tempdir().unwrap();
    cli(&url, &scratch)
        .args(["run", "demo", "--context", "c1", "-"])
        .write_stdin("cut")
        .assert()
        .code(1)
        .stdout("hello\n")
        .stderr("warn\nerror: the output stream ended before the run completed\n");
    cli(&url, &scratch)
        .args(["run", "demo", "--context", "gone", "-"])
        .write_stdin("1")
        .assert()
        .code(1)
        .stderr("error: CONTEXT_NOT_FOUND: Context gone not found\n");
}

#[test]
fn bad_arguments_are_refused_before_anything_is_sent() {
    let out = sandpit()
        .args(["run", "demo", "--lang", "ruby", "-"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown language"),
        "{out:?}"
    );
    let out = sandpit()
        .args(["run", "demo", "--context", "c", "--cwd", "/tmp", "-"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{out:?}"
    );
    let (url, requests) = start();
    let scratch = tempfile::tempdir().unwrap();
    let assert = cli(&url, &scratch)
        .args(["run", "demo", "/nonexistent/code.py"])
        .assert()
        .code(1);
    assert!(stderr_of(&assert).starts_with("error: reading /nonexistent/code.py"));
    assert!(paths(&requests).is_empty());
}

/// The real thing: a Python file with output, a figure, a table and an error; live output;
/// JavaScript; a context kept across two invocations.
#[test]
fn serial_cli_run_against_real_server() {
    let Some(images) = images_dir_or_skip("serial_cli_run_against_real_server") else {
        return;
    };
    let served = Served::start(&images);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("report.py");
    std::fs::write(
        &script,
        "import matplotlib.pyplot as plt\nimport pandas as pd\nprint('rows:', 2)\n\
         plt.plot([1, 2, 3], [3, 1, 2])\nplt.show()\n\
         pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})\n",
    )
    .unwrap();
    let assert = served
        .cli()
        .args(["run", "py1", "--create", "--out-dir"])
        .arg(dir.path())
        .arg(&script)
        .assert()
        .success();
    let output = assert.get_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.starts_with("rows: 2\n"), "{stdout}");
    assert!(stdout.contains("   a  b\n0  1  x\n1  2  y"), "{stdout}");
    let saved: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("saved "))
        .collect();
    assert_eq!(saved.len(), 2, "{stderr}");
    let png = saved.iter().find(|p| p.ends_with(".png")).unwrap();
    let png = std::fs::read(png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 5_000, "{} bytes", png.len());
    let html = saved.iter().find(|p| p.ends_with(".html")).unwrap();
    assert!(
        std::fs::read_to_string(html)
            .unwrap()
            .contains("<td>x</td>")
    );

    // An exception: traceback on stderr, exit 1.
    let assert = served
        .cli()
        .current_dir(dir.path())
        .args(["run", "py1", "-"])
        .write_stdin("def f():\n    return 1/0\nf()\n")
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("ZeroDivisionError"), "{stderr}");

    // --timeout-ms interrupts the run long before the sleep ends: output so far, then exec's
    // timeout message (no traceback of the interrupt), exit 124.
    let started = Instant::now();
    served
        .cli()
        .current_dir(dir.path())
        .args(["run", "py1", "--timeout-ms", "500", "-"])
        .write_stdin("import time\nprint('before', flush=True)\ntime.sleep(30)\n")
        .assert()
        .code(124)
        .stdout("before\n")
        .stderr("Command timed out after 500ms\n");
    assert!(started.elapsed() < Duration::from_secs(15));

    // State persists in a kept context.
    let assert = served
        .cli()
        .current_dir(dir.path())
        .args(["run", "py1", "--keep-context", "-"])
        .write_stdin("x = 41")
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let context = stderr
        .lines()
        .find_map(|l| l.strip_prefix("context: "))
        .unwrap()
        .to_owned();
    served
        .cli()
        .current_dir(dir.path())
        .args(["run", "py1", "--context", &context, "-"])
        .write_stdin("x + 1")
        .assert()
        .success()
        .stdout("42\n");

    // JavaScript from the extension.
    let js = dir.path().join("a.js");
    std::fs::write(&js, "console.log('js', 1 + 1);\nawait Promise.resolve(7)\n").unwrap();
    served
        .cli()
        .current_dir(dir.path())
        .args(["run", "py1"])
        .arg(&js)
        .assert()
        .success()
        .stdout("js 2\n7\n");

    // Output is live: the first line arrives while the code still runs.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .current_dir(dir.path())
        .args([
            "--url",
            &served.url,
            "--key",
            &served.key,
            "run",
            "py1",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')\n")
            .unwrap();
    }
    let started = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    let first_after = started.elapsed();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the first line was read"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());
    assert!(
        started.elapsed() - first_after > Duration::from_secs(2),
        "first line after {first_after:?}, end after {:?}",
        started.elapsed()
    );
}
