//! Code contexts: request shapes and event decoding against a fake server, and the real
//! interpreter through a real server (`serial_*`, needs the default image).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::container::CodeEvent;
use sandpit_client::{
    Client, ClientError, ContextOptions, Execution, Language, RunOptions, result_files,
};
use serde_json::{Value, json};

use super::real_server::with_real_server;

type Log = Arc<Mutex<Vec<(String, String, Value)>>>;

fn json_response(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn handle(log: &Log, method: &Method, uri: &Uri, body: &Bytes) -> Response {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    log.lock()
        .unwrap()
        .push((method.to_string(), uri.path().to_owned(), body.clone()));
    match (method.as_str(), uri.path()) {
        ("POST", "/v1/sandboxes/box/api/contexts") => json_response(
            200,
            json!({"success": true, "contextId": "c-1", "language": body["language"],
                   "cwd": "/srv", "timestamp": "t0"}),
        ),
        ("GET", "/v1/sandboxes/box/api/contexts") => json_response(
            200,
            json!({"success": true, "timestamp": "t",
                   "contexts": [{"id": "c-1", "language": "python", "cwd": "/srv"}]}),
        ),
        ("DELETE", "/v1/sandboxes/box/api/contexts/c%201") => json_response(
            200,
            json!({"success": true, "contextId": "c 1", "timestamp": "t"}),
        ),
        ("POST", "/v1/sandboxes/box/api/execute/code") if body["context_id"] == "c-1" => {
            let events = [
                json!({"type": "stdout", "text": "a"}),
                json!({"type": "stdout", "text": "b\n"}),
                json!({"type": "stderr", "text": "w\n"}),
                json!({"type": "result", "metadata": {}, "text": "   a\n0  1", "html": "<table/>"}),
                json!({"type": "result", "metadata": {}, "png": "iVBORw0KGgo="}),
                json!({"type": "execution_complete", "execution_count": 4}),
            ];
            let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        ("POST", "/v1/sandboxes/box/api/execute/code") if body["context_id"] == "short" => (
            [(header::CONTENT_TYPE, "text/event-stream")],
            "data: {\"type\":\"stdout\",\"text\":\"x\"}\n\n",
        )
            .into_response(),
        _ => json_response(
            404,
            json!({"code": "CONTEXT_NOT_FOUND", "message": "Context nope not found",
                   "context": {"contextId": "nope"}, "httpStatus": 404, "timestamp": "t"}),
        ),
    }
}

async fn fake() -> (Client, Log) {
    let log: Log = Arc::default();
    let app = {
        let log = log.clone();
        axum::Router::new().fallback(move |m: Method, u: Uri, b: Bytes| {
            let log = log.clone();
            async move { handle(&log, &m, &u, &b) }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Client::new(url, "k").unwrap(), log)
}

#[tokio::test]
async fn context_calls_send_the_documented_requests() {
    let (client, log) = fake().await;
    let sandbox = client.sandbox("box");
    let options = ContextOptions::new(Language::Typescript)
        .cwd("/srv")
        .env("A", "1");
    let context = sandbox.create_context(&options).await.unwrap();
    assert_eq!(
        (
            context.id.as_str(),
            context.language.as_str(),
            context.cwd.as_str()
        ),
        ("c-1", "typescript", "/srv")
    );
    assert_eq!(context.created_at.as_deref(), Some("t0"));
    let listed = sandbox.list_contexts().await.unwrap();
    assert_eq!(listed.len(), 1);
    sandbox.delete_context("c 1").await.unwrap();
    let run = sandbox
        .run_code(
            "c-1",
            "print(1)",
            &RunOptions::default()
                .language(Language::Python)
                .timeout_ms(500),
        )
        .await
        .unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.iter()
            .map(|(m, p, b)| (m.as_str(), p.as_str(), b.clone()))
            .collect::<Vec<_>>(),
        [
            (
                "POST",
                "/v1/sandboxes/box/api/contexts",
                json!({"language": "typescript", "cwd": "/srv", "env_vars": {"A": "1"}})
            ),
            ("GET", "/v1/sandboxes/box/api/contexts", Value::Null),
            (
                "DELETE",
                "/v1/sandboxes/box/api/contexts/c%201",
                Value::Null
            ),
            (
                "POST",
                "/v1/sandboxes/box/api/execute/code",
                json!({"context_id": "c-1", "code": "print(1)", "language": "python", "timeout_ms": 500})
            ),
        ]
    );
    assert_eq!(run.stdout, "ab\n");
    assert_eq!(run.stderr, "w\n");
    assert_eq!(run.execution_count, Some(4));
    assert_eq!(run.results.len(), 2);
    assert_eq!(run.text(), Some("   a\n0  1"));
    let files = result_files(&run.results[1]).unwrap();
    assert_eq!(files[0].bytes, b"\x89PNG\r\n\x1a\n");
}

#[tokio::test]
async fn streams_and_errors_of_runs() {
    let (client, _) = fake().await;
    let sandbox = client.sandbox("box");
    let mut events = sandbox
        .run_code_stream("c-1", "x", &RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        events.next().await.unwrap().unwrap(),
        CodeEvent::Stdout { text: "a".into() }
    );
    assert_eq!(events.count().await, 5);
    let cut = sandbox
        .run_code("short", "x", &RunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(cut, ClientError::Stream(_)), "{cut}");
    let missing = sandbox
        .run_code("nope", "x", &RunOptions::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::ContextNotFound));
    assert_eq!(missing.http_status(), Some(404));
    assert!(matches!(
        sandbox.run_code("", "x", &RunOptions::default()).await,
        Err(ClientError::InvalidArgument(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Real server

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_client_interpreter_against_real_server() {
    with_real_server(
        "serial_client_interpreter_against_real_server",
        |client, _| async move {
            python(&client).await;
            javascript(&client).await;
            client.destroy("sdk-interp").await.unwrap();
        },
    )
    .await;
}

async fn run(sandbox: &sandpit_client::SandboxHandle, context: &str, code: &str) -> Execution {
    sandbox
        .run_code(context, code, &RunOptions::default())
        .await
        .unwrap()
}

async fn python(client: &Client) {
    let sandbox = client.sandbox("sdk-interp");
    let options = ContextOptions::new(Language::Python)
        .cwd("/tmp")
        .env("SDK_VAR", "v1");
    let ctx = sandbox.create_context(&options).await.unwrap();
    assert_eq!(
        (ctx.language.as_str(), ctx.cwd.as_str()),
        ("python", "/tmp")
    );
    assert!(
        sandbox
            .list_contexts()
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == ctx.id)
    );
    let id = ctx.id.as_str();

    // State, cwd and env.
    assert_eq!(run(&sandbox, id, "1+1").await.text(), Some("2"));
    run(&sandbox, id, "import os\nn = 41").await;
    let out = run(
        &sandbox,
        id,
        "n += 1\nprint(n)\n(os.getcwd(), os.environ['SDK_VAR'])",
    )
    .await;
    assert_eq!(out.stdout, "42\n");
    assert_eq!(out.text(), Some("('/tmp', 'v1')"));

    // Every MIME type.
    let out = run(
        &sandbox,
        id,
        r#"from IPython.display import display, HTML, Markdown, Latex, SVG, JSON, Javascript, Image
import io
from PIL import Image as Pil
buf = io.BytesIO(); Pil.new('RGB', (8, 8), 'red').save(buf, 'JPEG')
display(HTML('<b>bold</b>'))
display(Markdown('# Title'))
display(Latex(r'$x^2$'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'))
display(JSON({'k': [1, 2]}))
display(Javascript('console.log(1)'))
display(Image(buf.getvalue(), format='jpeg'))
import matplotlib.pyplot as plt
plt.plot([1, 2], [2, 1]); plt.show()
{'a': 1}"#,
    )
    .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let has = |f: &dyn Fn(&sandpit_client::protocol::container::CodeResult) -> bool| {
        out.results.iter().any(f)
    };
    assert!(has(&|r| r.html.as_deref() == Some("<b>bold</b>")));
    assert!(has(&|r| r.markdown.as_deref() == Some("# Title")));
    assert!(has(&|r| r.latex.as_deref() == Some("$x^2$")));
    assert!(has(&|r| r
        .svg
        .as_deref()
        .is_some_and(|s| s.contains("<svg"))));
    assert!(has(&|r| r.json == Some(json!({"k": [1, 2]}))));
    assert!(has(&|r| r.javascript.as_deref() == Some("console.log(1)")));
    assert!(has(&|r| r.json == Some(json!({"a": 1}))));
    let jpeg = out.results.iter().find(|r| r.jpeg.is_some()).unwrap();
    assert_eq!(&result_files(jpeg).unwrap()[0].bytes[..2], b"\xff\xd8");
    let png = out.results.iter().find(|r| r.png.is_some()).unwrap();
    let png = &result_files(png).unwrap()[0].bytes;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // Errors.
    let out = run(&sandbox, id, "def f():\n    return 1/0\nf()").await;
    let error = out.error.unwrap();
    assert_eq!(error.name, "ZeroDivisionError");
    assert!(error.message.contains("division by zero"), "{error:?}");
    assert!(error.traceback.join("\n").contains("f()"), "{error:?}");

    // Live: the first line arrives well before the run ends.
    let started = Instant::now();
    let mut events = sandbox
        .run_code_stream(
            id,
            "import time\nprint('one', flush=True)\ntime.sleep(2)\nprint('two')",
            &RunOptions::default(),
        )
        .await
        .unwrap();
    let mut first = None;
    while let Some(event) = events.next().await {
        match event.unwrap() {
            CodeEvent::Stdout { .. } if first.is_none() => first = Some(started.elapsed()),
            CodeEvent::ExecutionComplete { .. } => break,
            other => assert!(matches!(other, CodeEvent::Stdout { .. }), "{other:?}"),
        }
    }
    let first = first.unwrap();
    assert!(
        started.elapsed() - first > Duration::from_millis(1500),
        "first line after {first:?}, end after {:?}",
        started.elapsed()
    );

    // A timeout interrupts the run; the context lives on.
    let out = sandbox
        .run_code(
            id,
            "import time\ntime.sleep(30)",
            &RunOptions::default().timeout_ms(500),
        )
        .await
        .unwrap();
    assert!(out.error.is_some());
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(run(&sandbox, id, "n").await.text(), Some("42"));

    // Parallel contexts are isolated from each other.
    let fresh = ContextOptions::new(Language::Python);
    let (a, b) = tokio::join!(
        sandbox.create_context(&fresh),
        sandbox.create_context(&fresh)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.id, b.id);
    run(&sandbox, &a.id, "secret = 'a'").await;
    let out = run(&sandbox, &b.id, "secret").await;
    assert_eq!(out.error.unwrap().name, "NameError");

    // A result of several MiB.
    let out = run(&sandbox, id, "'x' * (3 * 1024 * 1024)").await;
    assert_eq!(out.text().unwrap().len(), 3 * 1024 * 1024 + 2);

    // Deleting a busy context ends its run and frees the id.
    let mut busy = sandbox
        .run_code_stream(&a.id, "import time\ntime.sleep(60)", &RunOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sandbox.delete_context(&a.id).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = None;
        while let Some(event) = busy.next().await {
            last = Some(event);
        }
        last
    })
    .await
    .expect("the busy run did not end after its context was deleted");
    assert!(
        !matches!(ended, Some(Ok(CodeEvent::ExecutionComplete { .. }))),
        "{ended:?}"
    );
    let gone = sandbox
        .run_code(&a.id, "1", &RunOptions::default())
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::ContextNotFound));
    for c in [&b.id, id] {
        sandbox.delete_context(c).await.unwrap();
    }
}

async fn javascript(client: &Client) {
    let sandbox = client.sandbox("sdk-interp");
    let js = sandbox
        .create_context(&ContextOptions::new(Language::Javascript))
        .await
        .unwrap();
    run(&sandbox, &js.id, "const base = 40;").await;
    let out = run(
        &sandbox,
        &js.id,
        "const v = await Promise.resolve(base + 2);\nconsole.log('v', v);\nv",
    )
    .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.stdout, "v 42\n");
    assert_eq!(out.text(), Some("42"));
    let out = run(&sandbox, &js.id, "undefinedThing.x").await;
    assert_eq!(out.error.unwrap().name, "ReferenceError");
    // TypeScript in the JavaScript context (transpiled per run).
    let out = sandbox
        .run_code(
            &js.id,
            "enum E { A = 2, B }\nfunction id<T>(x: T): T { return x; }\ninterface I { n: number }\nconst i: I = { n: E.B };\nid(i.n)",
            &RunOptions::default().language(Language::Typescript),
        )
        .await
        .unwrap();
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.text(), Some("3"));
    sandbox.delete_context(&js.id).await.unwrap();
}
