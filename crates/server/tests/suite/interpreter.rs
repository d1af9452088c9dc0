//! The code interpreter end to end: a real server, a real sandbox with the default image
//! (python3 + IPython + matplotlib + pandas, Node), `/api/contexts` and `/api/execute/code`
//! through the control plane.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::assert_error;
use super::e2e::Real;

/// One SSE event and when it arrived (since the request was sent).
struct Timed {
    at: Duration,
    event: Value,
}

impl Real {
    async fn create_context(&self, sandbox: &str, body: Value) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{sandbox}/api/contexts");
        self.call(Method::POST, &path, body).await
    }

    async fn context(&self, sandbox: &str, body: Value) -> String {
        let (s, b) = self.create_context(sandbox, body).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["success"], true, "{b}");
        b["contextId"].as_str().unwrap().to_owned()
    }

    /// Runs code and collects every event with its arrival time.
    async fn run_timed(&self, sandbox: &str, body: Value) -> Vec<Timed> {
        let path = format!("/v1/sandboxes/{sandbox}/api/execute/code");
        let start = Instant::now();
        let r = self
            .req_as(&self.key, Method::POST, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut stream = r.bytes_stream();
        let mut buf = Vec::new();
        let mut events = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk.unwrap());
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = buf.drain(..end + 2).collect();
                let text = std::str::from_utf8(&frame).unwrap();
                let json = text.strip_prefix("data: ").expect("data: frame");
                assert!(!json.trim_end().contains('\n'), "multi-line frame");
                events.push(Timed {
                    at: start.elapsed(),
                    event: serde_json::from_str(json.trim_end()).unwrap(),
                });
            }
        }
        assert!(buf.is_empty(), "trailing bytes");
        events
    }

    async fn run(&self, sandbox: &str, context: &str, code: &str) -> Vec<Value> {
        untimed(
            self.run_timed(sandbox, json!({"context_id": context, "code": code}))
                .await,
        )
    }

    /// Runs code with a timeout; returns the last event.
    async fn run_with_timeout(
        &self,
        sandbox: &str,
        context: &str,
        code: &str,
        timeout_ms: u64,
    ) -> Timed {
        let body = json!({"context_id": context, "code": code, "timeout_ms": timeout_ms});
        self.run_timed(sandbox, body)
            .await
            .pop()
            .expect("no events")
    }

    async fn list_contexts(&self, sandbox: &str) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{sandbox}/api/contexts");
        self.call(Method::GET, &path, Value::Null).await
    }

    async fn delete_context(&self, sandbox: &str, context: &str) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{sandbox}/api/contexts/{context}");
        self.call(Method::DELETE, &path, Value::Null).await
    }

    /// Asserts that the process `pid` of the sandbox is gone (an executor that was freed).
    async fn assert_gone(&self, sandbox: &str, pid: &str) {
        let out = self
            .exec(
                sandbox,
                &format!("sleep 0.3; test -e /proc/{pid} && echo alive || echo gone"),
            )
            .await;
        assert_eq!(out["stdout"], "gone\n", "executor {pid} still running");
    }
}

fn untimed(events: Vec<Timed>) -> Vec<Value> {
    events.into_iter().map(|t| t.event).collect()
}

/// Asserts that the line "first\n" came at least 800 ms before the run completed.
fn assert_live(events: &[Timed]) {
    let first = events
        .iter()
        .find(|t| t.event["text"] == "first\n")
        .unwrap();
    let done = events.last().unwrap();
    assert_eq!(done.event["type"], "execution_complete");
    assert!(
        done.at - first.at >= Duration::from_millis(800),
        "first line at {:?}, end at {:?}: not streamed live",
        first.at,
        done.at
    );
}

/// Asserts an error event `ename` whose message names `evalue_part`, ended within `within`.
fn assert_ended_by(end: &Timed, ename: &str, evalue_part: &str, within: Duration) {
    assert_eq!(end.event["ename"], ename, "{}", end.event);
    assert!(
        end.event["evalue"].as_str().unwrap().contains(evalue_part),
        "{}",
        end.event
    );
    assert!(end.at < within, "{ename} after {:?}", end.at);
}

/// Standard base64 (the test needs only decoding; the server crate has no base64 dependency).
fn b64(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("bad base64 byte {c}")),
        };
        acc = ((acc << 6) | u32::from(v)) & 0x3fff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// The events, each cut to 200 characters (for assertion messages).
fn show(events: &[Value]) -> String {
    let cut: Vec<String> = events
        .iter()
        .map(|e| e.to_string().chars().take(200).collect())
        .collect();
    cut.join("\n")
}

fn stdout(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["text"].as_str().unwrap())
        .collect()
}

fn results(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["type"] == "result").collect()
}

fn last(events: &[Value]) -> &Value {
    events.last().expect("no events")
}

fn complete(events: &[Value]) {
    assert_eq!(
        last(events)["type"],
        "execution_complete",
        "{}",
        show(events)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_interpreter_python_state_rich_outputs_and_errors() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let sb = "interp-py";
    let (s, b) = rs
        .call(
            Method::GET,
            &format!("/v1/sandboxes/{sb}/api/interpreter/health"),
            Value::Null,
        )
        .await;
    assert_eq!((s, &b["status"]), (200, &json!("healthy")), "{b}");
    let ctx = rs.context(sb, json!({"language": "python"})).await;

    // State across runs; the last expression's value; execution counts.
    let e = rs.run(sb, &ctx, "x = 40\nprint('set')").await;
    assert_eq!(stdout(&e), "set\n");
    complete(&e);
    let e = rs.run(sb, &ctx, "x + 2").await;
    assert_eq!(results(&e)[0]["text"], "42", "{}", show(&e));
    assert_eq!(last(&e)["execution_count"], 2, "{}", show(&e));

    // The IPython package is whole for the code (the executor defers part of its import).
    let e = rs
        .run(
            sb,
            &ctx,
            "import IPython, os\nfrom IPython import get_ipython\n(IPython.version_info[0] >= 7, get_ipython() is not None, callable(IPython.embed), 'SANDPIT_PYTHON_EXECUTOR' in os.environ)",
        )
        .await;
    assert_eq!(
        results(&e)[0]["text"],
        "(True, True, True, False)",
        "{}",
        show(&e)
    );

    let e = rs.run(sb, &ctx, "import jedi\njedi.__name__").await;
    assert_eq!(
        results(&e)[0]["text"],
        "'jedi'",
        "jedi importable: {}",
        show(&e)
    );

    // Every MIME type of the seed's Result.
    let e = rs
        .run(
            sb,
            &ctx,
            r##"from IPython.display import display, HTML, Markdown, Latex, SVG, Javascript, JSON, Image
import base64
png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
display(HTML("<b>bold</b>"))
display(Markdown("# title"))
display(Latex(r"$\alpha$"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'))
display(Javascript("console.log(1)"))
display(JSON({"k": [1, 2]}))
display(Image(data=png, format="png"))
display(Image(data=b"\xff\xd8\xff\xe0fakejpeg", format="jpeg"))
{"a": 1, "b": [True, None]}"##,
        )
        .await;
    complete(&e);
    let r = results(&e);
    assert_eq!(r.len(), 9, "{}", show(&e));
    assert_eq!(r[0]["html"], "<b>bold</b>");
    assert!(r[0].get("text").is_none(), "default repr dropped: {}", r[0]);
    assert_eq!(r[1]["markdown"], "# title");
    assert_eq!(r[2]["latex"], "$\\alpha$");
    assert!(
        r[3]["svg"].as_str().unwrap().starts_with("<svg"),
        "{}",
        r[3]
    );
    assert_eq!(r[4]["javascript"], "console.log(1)");
    assert_eq!(r[5]["json"], json!({"k": [1, 2]}));
    let png = b64(r[6]["png"].as_str().unwrap()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let jpeg = b64(r[7]["jpeg"].as_str().unwrap()).unwrap();
    assert_eq!(&jpeg[..3], b"\xff\xd8\xff");
    assert_eq!(r[8]["json"], json!({"a": 1, "b": [true, null]}));
    assert_eq!(r[8]["text"], "{'a': 1, 'b': [True, None]}");

    // A DataFrame: HTML and text; a matplotlib figure: PNG, also with plt.show().
    let e = rs
        .run(
            sb,
            &ctx,
            "import pandas as pd\npd.DataFrame({'col': [1, 2, 3]})",
        )
        .await;
    let r = results(&e);
    assert!(
        r[0]["html"].as_str().unwrap().contains("<table"),
        "{}",
        show(&e)
    );
    assert!(
        r[0]["text"].as_str().unwrap().contains("col"),
        "{}",
        show(&e)
    );
    let e = rs
        .run(
            sb,
            &ctx,
            "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()\nprint('after show')",
        )
        .await;
    complete(&e);
    let kinds: Vec<&str> = e
        .iter()
        .map(|v| v["type"].as_str().unwrap())
        .filter(|t| *t != "execution_complete")
        .collect();
    assert_eq!(
        kinds,
        ["result", "stdout"],
        "figure first (plt.show): {}",
        show(&e)
    );
    let png = b64(results(&e)[0]["png"].as_str().unwrap()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 5000, "a real chart: {} bytes", png.len());
    // A figure that is never shown is captured at the end of the run.
    let e = rs
        .run(sb, &ctx, "fig = plt.figure()\n_ = plt.bar([1], [2])")
        .await;
    assert_eq!(results(&e).len(), 1, "{}", show(&e));
    assert!(results(&e)[0]["png"].is_string());

    // Errors: ename, evalue, traceback; stdout before the error still arrives; no
    // execution_complete after an error; the context keeps working.
    let e = rs
        .run(sb, &ctx, "print('before')\ndef f():\n    return 1 / 0\nf()")
        .await;
    assert_eq!(stdout(&e), "before\n");
    let err = last(&e);
    assert_eq!(err["type"], "error", "{}", show(&e));
    assert_eq!(err["ename"], "ZeroDivisionError");
    assert_eq!(err["evalue"], "division by zero");
    assert!(err.get("timed_out_after_ms").is_none(), "{err}");
    let tb = err["traceback"].as_array().unwrap().iter();
    let tb: String = tb
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(tb.contains("1 / 0") && tb.contains("f()"), "{tb}");
    assert!(!tb.contains("\u{1b}["), "no colours: {tb}");
    assert!(!e.iter().any(|v| v["type"] == "execution_complete"));
    let e = rs.run(sb, &ctx, "def broken(:\n  pass").await;
    assert_eq!(last(&e)["ename"], "SyntaxError", "{}", show(&e));
    let e = rs.run(sb, &ctx, "undefined_name").await;
    assert_eq!(last(&e)["ename"], "NameError", "{}", show(&e));
    let e = rs.run(sb, &ctx, "x").await;
    assert_eq!(results(&e)[0]["text"], "40");

    // stderr, and output of subprocesses (raw fd writes) is streamed too.
    let e = rs
        .run(
            sb,
            &ctx,
            "import sys, subprocess\nprint('err', file=sys.stderr)\nsubprocess.run(['echo', 'from child'])\n_ = sys.stdout.buffer.write(b'raw bytes\\n')",
        )
        .await;
    let stderr: String = e
        .iter()
        .filter(|v| v["type"] == "stderr")
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(stderr, "err\n");
    assert!(stdout(&e).contains("from child\n"), "{}", show(&e));
    assert!(stdout(&e).contains("raw bytes\n"), "{}", show(&e));

    // Output of a subprocess that ends just before the run is never overtaken by the end of
    // the run, and the pipe sync markers never show.
    for i in 0..15 {
        let e = rs
            .run(
                sb,
                &ctx,
                &format!("import subprocess\n_ = subprocess.run(['echo', 'child {i}'])"),
            )
            .await;
        complete(&e);
        assert_eq!(stdout(&e), format!("child {i}\n"), "{}", show(&e));
    }
    // Code that points fd 1 elsewhere still ends at once.
    let started = Instant::now();
    let e = rs
        .run(
            sb,
            &ctx,
            "import os\nsaved = os.dup(1)\nnull = os.open('/dev/null', os.O_WRONLY)\nos.dup2(null, 1)\nos.system('echo hidden')\nos.dup2(saved, 1)\n'back'",
        )
        .await;
    assert_eq!(results(&e)[0]["text"], "'back'", "{}", show(&e));
    assert!(!stdout(&e).contains("hidden"), "{}", show(&e));
    assert!(started.elapsed() < Duration::from_secs(1));

    // Listing, unknown contexts, bad requests.
    let (s, b) = rs.list_contexts(sb).await;
    assert_eq!(s, 200);
    assert_eq!(b["contexts"][0]["id"], ctx.as_str(), "{b}");
    assert_eq!(b["contexts"][0]["language"], "python", "{b}");
    assert_eq!(b["contexts"][0]["cwd"], "/workspace", "{b}");
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{sb}/api/execute/code"),
            json!({"context_id": "nope", "code": "1"}),
        )
        .await;
    assert_error(s, &b, 404, "CONTEXT_NOT_FOUND");
    let (s, b) = rs.create_context(sb, json!({"language": "cobol"})).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_interpreter_streams_live_interrupts_and_restarts() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let sb = "interp-live";
    let ctx = rs.context(sb, json!({})).await;

    // Live: the first line arrives while the run still sleeps.
    let e = rs
        .run_timed(
            sb,
            json!({"context_id": ctx, "code": "import time\nprint('first')\ntime.sleep(1)\nprint('second')"}),
        )
        .await;
    assert_live(&e);

    // A timeout interrupts the run (KeyboardInterrupt); the state survives.
    rs.run(sb, &ctx, "kept = 'yes'").await;
    let loop_ = "import time\nwhile True:\n    time.sleep(0.01)";
    let end = rs.run_with_timeout(sb, &ctx, loop_, 500).await;
    assert_ended_by(&end, "KeyboardInterrupt", "500 ms", Duration::from_secs(2));
    // The deadline is named, so a client can tell a timeout from the code's own interrupt.
    assert_eq!(end.event["timed_out_after_ms"], 500, "{}", end.event);
    let traceback = end.event["traceback"].to_string();
    assert!(
        !traceback.contains("sandpit") && !traceback.contains("sigint"),
        "executor frames in the traceback: {traceback}"
    );
    let e = rs.run(sb, &ctx, "kept").await;
    assert_eq!(results(&e)[0]["text"], "'yes'");

    // Code that ignores SIGINT: the context is restarted, the stream says so, state is gone.
    let stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('stubborn')\ntime.sleep(60)";
    let end = rs.run_with_timeout(sb, &ctx, stubborn, 300).await;
    assert_ended_by(&end, "TimeoutError", "restarted", Duration::from_secs(6));
    assert_eq!(end.event["timed_out_after_ms"], 300, "{}", end.event);
    let e = rs.run(sb, &ctx, "kept").await;
    assert_eq!(last(&e)["ename"], "NameError", "fresh state: {}", show(&e));
    let e = rs.run(sb, &ctx, "21 * 2").await;
    assert_eq!(results(&e)[0]["text"], "42");

    // The interpreter process dies: the run says so and the context comes back, empty.
    rs.run(sb, &ctx, "kept = 1").await;
    let e = rs.run(sb, &ctx, "import os\nos._exit(3)").await;
    assert_eq!(last(&e)["ename"], "InterpreterExited", "{}", show(&e));
    let e = rs.run(sb, &ctx, "'kept' in globals()").await;
    assert_eq!(results(&e)[0]["text"], "False", "{}", show(&e));

    // A client that goes away interrupts its run: the context is free again at once.
    let path = format!("/v1/sandboxes/{sb}/api/execute/code");
    let r = rs
        .req_as(&rs.key, Method::POST, &path)
        .json(&json!({"context_id": ctx, "code": "import time\nx = 'survived'\nwhile True:\n    time.sleep(0.01)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(r);
    let started = Instant::now();
    let e = rs.run(sb, &ctx, "x").await;
    assert_eq!(results(&e)[0]["text"], "'survived'", "{}", show(&e));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A result of several MiB, and as much output.
    let e = rs.run(sb, &ctx, "'x' * (6 * 1024 * 1024)").await;
    complete(&e);
    assert_eq!(
        results(&e)[0]["text"].as_str().unwrap().len(),
        6 * 1024 * 1024 + 2
    );
    let e = rs
        .run(sb, &ctx, "for i in range(20000):\n    print('line', i)")
        .await;
    complete(&e);
    let out = stdout(&e);
    assert_eq!(out.lines().count(), 20000);
    assert!(out.ends_with("line 19999\n"));
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_interpreter_contexts_parallel_isolated_deletable() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let sb = "interp-ctx";
    rs.exec(
        sb,
        "mkdir -p /workspace/sub && echo data > /workspace/sub/f.txt",
    )
    .await;

    // Parallel creation, each context with its own cwd and env.
    let creates = (0..4).map(|i| {
        let rs = &rs;
        async move {
            rs.context(
                sb,
                json!({"language": "python", "cwd": "/workspace/sub", "env_vars": {"WHO": format!("ctx{i}")}}),
            )
            .await
        }
    });
    let ids = futures::future::join_all(creates).await;
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4);
    for (i, id) in ids.iter().enumerate() {
        let e = rs
            .run(
                sb,
                id,
                &format!(
                    "import os\nmine = {i}\n(os.getcwd(), os.environ['WHO'], open('f.txt').read())"
                ),
            )
            .await;
        assert_eq!(
            results(&e)[0]["text"],
            format!("('/workspace/sub', 'ctx{i}', 'data\\n')"),
            "{}",
            show(&e)
        );
    }
    // Isolation: each sees its own `mine`.
    for (i, id) in ids.iter().enumerate() {
        let e = rs.run(sb, id, "mine").await;
        assert_eq!(results(&e)[0]["text"], i.to_string());
    }
    // Runs in different contexts proceed in parallel.
    let started = Instant::now();
    let runs = ids[..2]
        .iter()
        .map(|id| rs.run(sb, id, "import time\ntime.sleep(1)\n'ok'"));
    for e in futures::future::join_all(runs).await {
        assert_eq!(results(&e)[0]["text"], "'ok'");
    }
    assert!(started.elapsed() < Duration::from_millis(1900));

    // Deleting a busy context ends its run with an error and frees its process.
    let busy = ids[0].clone();
    let run = rs.run_timed(
        sb,
        json!({"context_id": busy, "code": "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)"}),
    );
    let delete = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        rs.delete_context(sb, &busy).await
    };
    let (e, (s, b)) = tokio::join!(run, delete);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["contextId"], busy.as_str());
    let end = &e.last().unwrap().event;
    assert_eq!(end["ename"], "ContextDeleted", "{end}");
    assert!(e.last().unwrap().at < Duration::from_secs(5));
    let pid = e[0].event["text"].as_str().unwrap().trim().to_owned();
    rs.assert_gone(sb, &pid).await;
    let (s, b) = rs.delete_context(sb, &busy).await;
    assert_error(s, &b, 404, "CONTEXT_NOT_FOUND");
    let (_, b) = rs.list_contexts(sb).await;
    assert_eq!(b["contexts"].as_array().unwrap().len(), 3, "{b}");

    // Deleting an idle context frees its process too.
    let idle = ids[1].clone();
    let e = rs.run(sb, &idle, "import os\nos.getpid()").await;
    let pid = results(&e)[0]["text"].as_str().unwrap().to_owned();
    let (s, b) = rs.delete_context(sb, &idle).await;
    assert_eq!(s, 200, "{b}");
    rs.assert_gone(sb, &pid).await;

    // Six JavaScript and two Python contexts created at once, then deleted at once.
    let languages = ["javascript"; 6].into_iter().chain(["python"; 2]);
    let creates = languages.map(|language| {
        let rs = &rs;
        async move { rs.context(sb, json!({"language": language})).await }
    });
    let many = futures::future::join_all(creates).await;
    for id in &many {
        let e = rs.run(sb, id, "40 + 2").await;
        assert_eq!(results(&e)[0]["text"], "42", "{}", show(&e));
    }
    let deletes = many.iter().map(|id| rs.delete_context(sb, id));
    for (s, b) in futures::future::join_all(deletes).await {
        assert_eq!(s, 200, "{b}");
    }
    let (_, b) = rs.list_contexts(sb).await;
    assert_eq!(b["contexts"].as_array().unwrap().len(), 2, "{b}");

    // A cwd that does not exist is refused.
    let (s, b) = rs
        .create_context(sb, json!({"cwd": "/does/not/exist"}))
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_interpreter_javascript_and_typescript() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let sb = "interp-js";
    let js = rs
        .context(
            sb,
            json!({"language": "javascript", "env_vars": {"GREETING": "hi"}}),
        )
        .await;

    // Declarations persist (and may be declared again); the last expression is the result.
    let e = rs
        .run(sb, &js, "const n = 20; function twice(x) { return 2 * x }")
        .await;
    complete(&e);
    let e = rs.run(sb, &js, "const n2 = twice(n) + 2; n2").await;
    assert_eq!(results(&e)[0]["text"], "42", "{}", show(&e));
    let e = rs.run(sb, &js, "const n = 1; n").await;
    assert_eq!(results(&e)[0]["text"], "1", "{}", show(&e));
    let e = rs
        .run(
            sb,
            &js,
            "({a: 1, list: [1, 2], env: process.env.GREETING, cwd: process.cwd()})",
        )
        .await;
    assert_eq!(
        results(&e)[0]["json"],
        json!({"a": 1, "list": [1, 2], "env": "hi", "cwd": "/workspace"}),
        "{}",
        show(&e)
    );

    // Output of a child process and raw fd writes at the very end of a run belong to the run:
    // they arrive before `execution_complete` (pipe sync markers, never shown).
    for i in 0..10 {
        let code = format!(
            "require('child_process').execSync('echo from-child {i}', {{stdio: 'inherit'}});\n\
             require('fs').writeSync(1, 'raw {i}\\n');"
        );
        let e = rs.run(sb, &js, &code).await;
        complete(&e);
        assert_eq!(
            stdout(&e),
            format!("from-child {i}\nraw {i}\n"),
            "{}",
            show(&e)
        );
    }

    // Top-level await, console output streamed live.
    let e = rs
        .run_timed(
            sb,
            json!({"context_id": js, "code": "console.log('first'); await new Promise(r => setTimeout(r, 1000)); console.log('second'); 'done'"}),
        )
        .await;
    assert_live(&e);
    let events = untimed(e);
    assert_eq!(results(&events)[0]["text"], "'done'", "{}", show(&events));

    // Errors: name, message, stack; syntax errors before the run.
    let e = rs
        .run(
            sb,
            &js,
            "function boom() { throw new TypeError('bad thing') }\nboom()",
        )
        .await;
    let err = last(&e);
    assert_eq!(err["ename"], "TypeError", "{}", show(&e));
    assert_eq!(err["evalue"], "bad thing");
    assert!(err["traceback"].to_string().contains("boom"), "{err}");
    let e = rs.run(sb, &js, "let = = 1").await;
    assert_eq!(last(&e)["ename"], "SyntaxError", "{}", show(&e));
    let e = rs
        .run(sb, &js, "await Promise.reject(new RangeError('late'))")
        .await;
    assert_eq!(last(&e)["ename"], "RangeError", "{}", show(&e));

    // A timeout interrupts a busy loop and the context survives.
    let end = rs.run_with_timeout(sb, &js, "while (true) {}", 500).await;
    assert_eq!(end.event["type"], "error", "{}", end.event);
    assert!(end.at < Duration::from_secs(3), "{:?}", end.at);
    let e = rs.run(sb, &js, "n2").await;
    assert_eq!(results(&e)[0]["text"], "42", "{}", show(&e));

    // TypeScript: interfaces, generics, enums; in a TS context and as a TS run in a JS one.
    let ts = rs.context(sb, json!({"language": "typescript"})).await;
    let e = rs
        .run(
            sb,
            &ts,
            "interface P { name: string; age: number }\nenum Color { Red, Green = 5, Blue }\nfunction first<T>(xs: T[]): T { return xs[0] }\nconst p: P = { name: 'a', age: 3 };\n[first<number>([7, 8]), Color.Blue, Color[5], p.name]",
        )
        .await;
    assert_eq!(
        results(&e)[0]["json"],
        json!([7, 6, "Green", "a"]),
        "{}",
        show(&e)
    );
    let e = rs
        .run_timed(
            sb,
            json!({"context_id": js, "code": "const typed: number = n2 + 1; typed", "language": "typescript"}),
        )
        .await;
    assert_eq!(e.last().unwrap().event["type"], "execution_complete");
    let events = untimed(e);
    assert_eq!(results(&events)[0]["text"], "43", "{}", show(&events));
    let (_, b) = rs.list_contexts(sb).await;
    let languages: Vec<&str> = b["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["language"].as_str().unwrap())
        .collect();
    assert_eq!(languages, ["javascript", "typescript"], "{b}");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_interpreter_zero_timeout_overrides_the_sandbox_default() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let sb = "interp-zero";
    let body = json!({"id": sb, "env": {"INTERPRETER_EXECUTION_TIMEOUT_MS": "400"}});
    let (s, b) = rs.call(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
    let ctx = rs.context(sb, json!({})).await;
    let slow = "import time\ntime.sleep(1.5)\nprint('done')";

    // No `timeout_ms`: the sandbox's default interrupts the run.
    let e = rs.run(sb, &ctx, slow).await;
    assert_eq!(last(&e)["ename"], "KeyboardInterrupt", "{}", show(&e));
    assert_eq!(last(&e)["timed_out_after_ms"], 400, "{}", show(&e));

    // `0`: no limit, whatever the default (one meaning of 0 on every route).
    let e = untimed(
        rs.run_timed(
            sb,
            json!({"context_id": ctx, "code": slow, "timeout_ms": 0}),
        )
        .await,
    );
    complete(&e);
    assert_eq!(stdout(&e), "done\n", "{}", show(&e));
    rs.stop().await;
}
