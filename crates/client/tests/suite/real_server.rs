//! The SDK against a real server started in-process (root, namespaces, default image).

use std::path::PathBuf;

use futures::StreamExt;
use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::container::{
    ExecEvent, FileType, ListFilesOptions, SessionCreateRequest,
};
use sandpit_client::protocol::control::{CreateSandboxRequest, SandboxState, UpdateSandboxRequest};
use sandpit_client::{Client, ExecOptions, ProcessOptions, decode_output};
use sandpit_server::{ServeConfig, Server};

pub fn images_dir_or_skip(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("SANDPIT_IMAGES_DIR").unwrap_or_else(|_| "/var/lib/sandpit/images".into()),
    );
    if dir.join("default").join("image.json").is_file() {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED {test}: no default image in {} (run `sandpit image build`)",
        dir.display()
    );
    None
}

/// Runs `body` against a server started in-process with the default image and the admin key
/// `sdk-test-key`, then shuts the server down (also when `body` panics, whose panic is then
/// raised again). Skips with a message when the default image is missing.
pub async fn with_real_server<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(images) = images_dir_or_skip(test) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::new(data.path().to_path_buf());
    config.listen = ([127, 0, 0, 1], 0).into();
    config.images_dir = images;
    config.admin_key = Some("sdk-test-key".into());
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}", server.addr());
    let client = Client::new(&url, "sdk-test-key").unwrap();
    let result = tokio::spawn(body(client, url)).await;
    server.shutdown().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_client_against_real_server() {
    with_real_server("serial_client_against_real_server", exercise).await;
}

async fn exercise(client: Client, url: String) {
    // Control plane.
    let request = CreateSandboxRequest {
        id: Some("sdk-a".into()),
        env: Some([("GREETING".to_owned(), "hi there".to_owned())].into()),
        ..Default::default()
    };
    let info = client.create(&request).await.unwrap();
    assert_eq!(info.id, "sdk-a");
    assert_eq!(client.get("sdk-a").await.unwrap().id, "sdk-a");
    assert!(
        client
            .list_all()
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == "sdk-a")
    );
    let updated = client
        .update(
            "sdk-a",
            &UpdateSandboxRequest {
                keep_alive: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(updated.keep_alive);

    let sandbox = client.sandbox("sdk-a");
    sandbox.ping().await.unwrap();

    // setEnvVars: seen by the default session and by a session created afterwards.
    sandbox
        .set_env([("SET_LATER".to_owned(), Some("yes".to_owned()))].into())
        .await
        .unwrap();
    let out = sandbox
        .exec("echo $SET_LATER", &ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(out.stdout, "yes\n");
    let later = sandbox.clone().with_session("after-set-env");
    let out = later
        .exec("echo $SET_LATER", &ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(out.stdout, "yes\n");
    sandbox
        .set_env([("SET_LATER".to_owned(), None)].into())
        .await
        .unwrap();
    let out = sandbox
        .exec("echo \"[${SET_LATER-unset}]\"", &ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(out.stdout, "[unset]\n");

    // Commands.
    let out = sandbox
        .exec(
            "echo \"$GREETING\"; echo err >&2; (exit 3)",
            &ExecOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "hi there\n", "err\n")
    );
    let out = sandbox
        .exec(
            "echo \"$A\"; pwd",
            &ExecOptions::default().env("A", "1").cwd("/tmp"),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "1\n/tmp\n");

    let events: Vec<ExecEvent> = sandbox
        .exec_stream(
            "for i in 1 2 3; do echo line$i; done; (exit 4)",
            &ExecOptions::default(),
        )
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert!(
        matches!(events.first(), Some(ExecEvent::Start { .. })),
        "{events:?}"
    );
    let stdout: String = events
        .iter()
        .filter_map(|e| match e {
            ExecEvent::Stdout { data, .. } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(stdout, "line1\nline2\nline3\n");
    assert!(
        matches!(
            events.last(),
            Some(ExecEvent::Complete { exit_code: 4, .. })
        ),
        "{events:?}"
    );

    // Sessions keep shell state.
    let session = SessionCreateRequest {
        id: Some("s1".into()),
        cwd: Some("/tmp".into()),
        ..Default::default()
    };
    sandbox.create_session(&session).await.unwrap();
    let s1 = sandbox.clone().with_session("s1");
    s1.exec("cd / && export X=kept", &ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(
        s1.exec("echo $X; pwd", &ExecOptions::default())
            .await
            .unwrap()
            .stdout,
        "kept\n/\n"
    );
    assert!(
        sandbox
            .list_sessions()
            .await
            .unwrap()
            .contains(&"s1".to_owned())
    );
    sandbox.delete_session("s1").await.unwrap();

    // Files.
    sandbox.mkdir("/workspace/d/e", true).await.unwrap();
    sandbox
        .write_file("/workspace/d/t.txt", "héllo\n")
        .await
        .unwrap();
    assert_eq!(
        sandbox
            .read_file("/workspace/d/t.txt")
            .await
            .unwrap()
            .content,
        "héllo\n"
    );
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    sandbox
        .write_bytes("/workspace/d/b.bin", &binary)
        .await
        .unwrap();
    assert!(sandbox.read_bytes("/workspace/d/b.bin").await.unwrap() == binary);
    let download = sandbox
        .read_stream_bytes("/workspace/d/b.bin")
        .await
        .unwrap();
    assert_eq!(download.size, 300_000);
    let chunks: Vec<Vec<u8>> = download.chunks.map(|c| c.unwrap()).collect().await;
    assert!(chunks.len() > 1);
    assert!(chunks.concat() == binary);

    let files = sandbox
        .list_files("/workspace/d", &ListFilesOptions::default())
        .await
        .unwrap();
    let mut names: Vec<_> = files
        .iter()
        .map(|f| (f.name.as_str(), f.file_type))
        .collect();
    names.sort_by_key(|(n, _)| *n);
    assert_eq!(
        names,
        [
            ("b.bin", FileType::File),
            ("e", FileType::Directory),
            ("t.txt", FileType::File)
        ]
    );

    sandbox
        .rename("/workspace/d/t.txt", "/workspace/d/u.txt")
        .await
        .unwrap();
    sandbox
        .move_file("/workspace/d/u.txt", "/workspace/d/e/u.txt")
        .await
        .unwrap();
    assert!(sandbox.exists("/workspace/d/e/u.txt").await.unwrap());
    assert!(!sandbox.exists("/workspace/d/t.txt").await.unwrap());
    sandbox.delete_file("/workspace/d/e/u.txt").await.unwrap();
    let err = sandbox.read_file("/workspace/d/e/u.txt").await.unwrap_err();
    assert_eq!(
        (err.code(), err.http_status()),
        (Some(ErrorCode::FileNotFound), Some(404))
    );

    // Sleep keeps files; the next call wakes the sandbox.
    client.stop("sdk-a").await.unwrap();
    assert_eq!(
        client.get("sdk-a").await.unwrap().state,
        SandboxState::Sleeping
    );
    assert!(sandbox.exists("/workspace/d/b.bin").await.unwrap());
    assert_eq!(
        client.get("sdk-a").await.unwrap().state,
        SandboxState::Running
    );

    // Errors carry the server's codes.
    let wrong = Client::new(&url, "wrong-key").unwrap();
    assert_eq!(
        wrong.get("sdk-a").await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    client.destroy("sdk-a").await.unwrap();
    assert_eq!(
        client.get("sdk-a").await.unwrap_err().code(),
        Some(ErrorCode::SandboxNotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_client_manages_keys_and_reads_the_audit_log() {
    with_real_server(
        "serial_client_manages_keys_and_reads_the_audit_log",
        |admin, url| async move {
            let created = admin.create_key("sdk-tenant").await.unwrap();
            assert_eq!(created.tenant, "sdk-tenant");
            let tenant = Client::new(&url, &created.key).unwrap();
            let keys = tenant.list_keys(None).await.unwrap();
            assert_eq!(keys.keys.len(), 1);
            assert_eq!(keys.keys[0].key_id, created.key_id);

            let rotated = tenant.rotate_key(&created.key_id).await.unwrap();
            let err = tenant.list_keys(None).await.unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
            let tenant = Client::new(&url, &rotated.key).unwrap();
            let log = tenant
                .audit(&sandpit_client::AuditOptions::default())
                .await
                .unwrap();
            let actions: Vec<&str> = log.entries.iter().map(|e| e.action.as_str()).collect();
            assert_eq!(actions, ["key.rotate", "key.create"]);

            admin.revoke_key(&rotated.key_id).await.unwrap();
            let err = tenant.list_keys(None).await.unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
            let err = admin.revoke_key(&rotated.key_id).await.unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::KeyNotFound), "{err}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_client_stdin_binary_output_and_timeouts() {
    with_real_server(
        "serial_client_stdin_binary_output_and_timeouts",
        |client, _| async move {
            let sandbox = client.sandbox("sdk-bytes");
            let input: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
            // stdin in, raw bytes out (buffered and streamed).
            let options = ExecOptions::default().stdin(input.clone()).binary_output();
            let out = sandbox.exec("cat", &options).await.unwrap();
            let bytes = decode_output(&out.stdout, out.encoding).unwrap();
            assert!(bytes == input, "buffered: {} bytes back", bytes.len());
            let mut events = sandbox.exec_stream("cat", &options).await.unwrap();
            let mut bytes = Vec::new();
            while let Some(event) = events.next().await {
                if let ExecEvent::Stdout { data, encoding, .. } = event.unwrap() {
                    bytes.extend(decode_output(&data, encoding).unwrap());
                }
            }
            assert!(bytes == input, "streamed: {} bytes back", bytes.len());
            // The timeout kills; 0 is none.
            let out = sandbox
                .exec(
                    "sleep 3; echo late",
                    &ExecOptions::default().timeout_ms(300),
                )
                .await
                .unwrap();
            assert_eq!((out.exit_code, out.timed_out), (124, true), "{out:?}");
            assert_eq!(out.stdout, "");
            let out = sandbox
                .exec("sleep 0.5; echo ok", &ExecOptions::default().timeout_ms(0))
                .await
                .unwrap();
            assert_eq!(out.stdout, "ok\n");
            // A process's stdin.
            let options = ProcessOptions {
                stdin: true,
                ..ProcessOptions::default()
            };
            let process = sandbox.start_process("wc -c", &options).await.unwrap();
            process.write_stdin(b"12345", false).await.unwrap();
            process.write_stdin(b"678", true).await.unwrap();
            assert_eq!(process.wait_for_exit(None).await.unwrap(), 0);
            assert_eq!(process.logs().await.unwrap().stdout.trim(), "8");
        },
    )
    .await;
}

/// `Client::events` with real sandboxes: a tenant sees its sandbox's whole life, in order; another
/// tenant's stream stays silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_real_sandboxes_reach_their_tenant_only() {
    use sandpit_client::Event;
    use sandpit_client::protocol::control::SandboxEventKind as Kind;
    use std::time::Duration;
    with_real_server(
        "events_of_real_sandboxes_reach_their_tenant_only",
        |admin, url| async move {
            let a_key = admin.create_key("events-a").await.unwrap().key;
            let b_key = admin.create_key("events-b").await.unwrap().key;
            let a = Client::new(&url, &a_key).unwrap();
            let b = Client::new(&url, &b_key).unwrap();
            let mut a_events = a.events(None).await.unwrap();
            let mut b_events = b.events(None).await.unwrap();
            let out = a
                .sandbox("events-real")
                .exec("true", &ExecOptions::default())
                .await
                .unwrap();
            assert_eq!(out.exit_code, 0);
            a.stop("events-real").await.unwrap();
            a.destroy("events-real").await.unwrap();
            let mut got = Vec::new();
            while got.len() < 4 {
                let next = tokio::time::timeout(Duration::from_secs(10), a_events.next()).await;
                match next {
                    Ok(Some(Ok(Event::Sandbox(e)))) => {
                        assert_eq!(e.sandbox_id, "events-real");
                        got.push((e.kind, e.state));
                    }
                    other => panic!("after {got:?}: {other:?}"),
                }
            }
            assert_eq!(
                got,
                [
                    (Kind::Created, SandboxState::Creating),
                    (Kind::Started, SandboxState::Running),
                    (Kind::Stopped, SandboxState::Sleeping),
                    (Kind::Destroyed, SandboxState::Destroyed),
                ]
            );
            let quiet = tokio::time::timeout(Duration::from_millis(500), b_events.next()).await;
            assert!(quiet.is_err(), "tenant b saw {quiet:?}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_client_snapshots_and_fork() {
    with_real_server("serial_client_snapshots_and_fork", |client, _| async move {
        use sandpit_client::protocol::control::ForkRequest;
        let parent = client.sandbox("snap-parent");
        let out = parent
            .exec("echo kept > /workspace/f", &ExecOptions::default())
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{out:?}");
        let snapshot = client
            .create_snapshot("snap-parent", Some("first"))
            .await
            .unwrap();
        assert_eq!(snapshot.name.as_deref(), Some("first"));
        assert_eq!(snapshot.sandbox_id, "snap-parent");
        let listed = client.list_snapshots().await.unwrap();
        assert_eq!(listed, vec![snapshot.clone()]);
        assert_eq!(client.get_snapshot(&snapshot.id).await.unwrap(), snapshot);

        let child = client
            .create(&CreateSandboxRequest {
                id: Some("snap-child".into()),
                snapshot: Some(snapshot.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(child.state, SandboxState::Running);
        let out = client
            .sandbox("snap-child")
            .exec("cat /workspace/f", &ExecOptions::default())
            .await
            .unwrap();
        assert_eq!(out.stdout, "kept\n");
        let err = client.delete_snapshot(&snapshot.id).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::SnapshotInUse), "{err}");

        let forked = client
            .fork(
                "snap-parent",
                &ForkRequest {
                    count: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(forked.sandboxes.len(), 2);
        for kid in &forked.sandboxes {
            let out = client
                .sandbox(kid.id.clone())
                .exec("cat /workspace/f", &ExecOptions::default())
                .await
                .unwrap();
            assert_eq!(out.stdout, "kept\n");
            client.destroy(&kid.id).await.unwrap();
        }
        client.destroy("snap-child").await.unwrap();
        client.delete_snapshot(&snapshot.id).await.unwrap();
        client.delete_snapshot(&forked.snapshot.id).await.unwrap();
        let err = client.get_snapshot(&snapshot.id).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::SnapshotNotFound), "{err}");
        client.destroy("snap-parent").await.unwrap();
    })
    .await;
}
