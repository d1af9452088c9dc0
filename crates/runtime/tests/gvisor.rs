//! The gVisor driver with the real static agent under runsc: lifecycle, the writable layer,
//! limits, the egress socket, and that nothing (mounts, cgroups, runsc state, processes)
//! outlives a stop, a destroy or a reconcile.
//!
//! Needs root, the default image, runsc and `SANDPIT_AGENT_BIN` (the static agent; see
//! scripts/lib.sh `build_sandpit`). Without them the tests skip with a printed reason, except
//! under `CI=true`, where a missing runsc or agent fails them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sandpit_protocol::control::{Limits, NetworkMode};
use sandpit_protocol::netpolicy::EgressPolicy;
use sandpit_runtime::gvisor::{GvisorConfig, GvisorDriver, PIDS_OVERHEAD};
use sandpit_runtime::{Driver, EgressEndpoint, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The image store with the default image (`SANDPIT_IMAGES_DIR`, as for the server tests).
fn images_dir() -> PathBuf {
    std::env::var_os("SANDPIT_IMAGES_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/sandpit/images"), PathBuf::from)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A unique sandbox id (test processes share the host's cgroup group).
fn unique_id(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A requirement is missing: fail under CI, else skip loudly.
fn missing(what: &str) -> Option<GvEnv> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "gVisor tests need {what} in CI"
    );
    eprintln!("\n!!! SKIPPED: gVisor tests need {what} !!!\n");
    None
}

struct GvEnv {
    driver: GvisorDriver,
    dir: tempfile::TempDir,
}

impl GvEnv {
    fn new() -> Option<GvEnv> {
        if !nix::unistd::geteuid().is_root() {
            return missing("root");
        }
        let Some(runsc) = sandpit_runtime::gvisor::find_runsc() else {
            return missing("runsc (apt-get install runsc)");
        };
        let Some(agent) = std::env::var_os("SANDPIT_AGENT_BIN").map(PathBuf::from) else {
            return missing("SANDPIT_AGENT_BIN (the static agent)");
        };
        if !images_dir().join("default").is_dir() {
            return missing("the default image in SANDPIT_IMAGES_DIR");
        }
        let dir = tempfile::Builder::new().prefix("gv").tempdir().unwrap();
        let config = GvisorConfig {
            runsc,
            images_dir: images_dir(),
            ..GvisorConfig::new(dir.path().to_path_buf(), agent)
        };
        let driver = GvisorDriver::with_config(config).unwrap();
        Some(GvEnv { driver, dir })
    }

    fn spec(&self, id: &str) -> SandboxSpec {
        SandboxSpec {
            id: id.to_string(),
            image: "default".to_string(),
            limits: Limits {
                cpus: Some(1.0),
                memory_mb: Some(256),
                pids: Some(64),
                disk_mb: None,
            },
            env: vec![("SANDPIT_TEST".into(), "yes".into())],
            ephemeral: false,
            network: EgressPolicy::default(),
            run_files: Vec::new(),
            egress: None,
            mounts: Vec::new(),
        }
    }

    /// Starts the sandbox; returns the host path of its agent's socket.
    async fn start(&self, spec: &SandboxSpec) -> PathBuf {
        match self.driver.start(spec).await {
            Ok(_) => self.driver.socket_path(&spec.id),
            Err(e) => {
                let log = std::fs::read_to_string(self.driver.layout().agent_log(&spec.id))
                    .unwrap_or_default();
                panic!("start failed: {e}\nagent.log: {log}");
            }
        }
    }

    /// Asserts that no trace of a run of `id` is left on the host.
    async fn assert_no_run_left(&self, id: &str, pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let needle = self.dir.path().to_string_lossy().into_owned();
        loop {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let leftovers = [
                (alive(pid), "the sandbox process"),
                (self.driver.cgroups().exists(id), "the cgroups"),
                (self.driver.socket_path(id).exists(), "the agent socket"),
                (mounts.contains(&needle), "a mount"),
                (
                    std::fs::read_dir(self.driver.state_dir())
                        .unwrap()
                        .next()
                        .is_some(),
                    "runsc state",
                ),
            ];
            let left: Vec<&str> = leftovers
                .iter()
                .filter(|(is_left, _)| *is_left)
                .map(|(_, what)| *what)
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left on the host: {left:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for GvEnv {
    fn drop(&mut self) {
        let cg = self.driver.cgroups();
        for id in cg.list().unwrap_or_default() {
            if self.driver.layout().sandbox_dir(&id).exists() {
                let _ = cg.kill_all(&id);
                let deadline = Instant::now() + Duration::from_secs(3);
                while cg.remove(&id).is_err() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// `POST /api/execute` on the agent's socket; returns the raw response.
async fn exec_raw(socket: &Path, command: &str) -> String {
    let body = serde_json::json!({ "command": command }).to_string();
    let request = format!(
        "POST /api/execute HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let fut = async {
        let mut conn = tokio::net::UnixStream::connect(socket).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("command timed out: {command}"))
}

/// `POST /api/execute` on the agent's socket; returns (exit code, stdout + stderr).
async fn exec(socket: &Path, command: &str) -> (i64, String) {
    let raw = exec_raw(socket, command).await;
    let (_, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"));
    let out = format!(
        "{}{}",
        json["stdout"].as_str().unwrap_or_default(),
        json["stderr"].as_str().unwrap_or_default()
    );
    (json["exitCode"].as_i64().unwrap_or(-1), out)
}

async fn ok(socket: &Path, command: &str) -> String {
    let (code, out) = exec(socket, command).await;
    assert_eq!(code, 0, "`{command}` failed: {out}");
    out.trim().to_string()
}

fn cgroup_file(driver: &GvisorDriver, id: &str, file: &str) -> String {
    let dir = driver
        .cgroups()
        .dirs(id)
        .into_iter()
        .find(|d| d.join(file).exists())
        .unwrap_or_else(|| panic!("no cgroup dir with {file}"));
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_gvisor_sleep_wake_keeps_the_workspace_and_leaves_nothing_behind() {
    let Some(env) = GvEnv::new() else { return };
    let id = unique_id("gv");
    let spec = env.spec(&id);
    let t = Instant::now();
    let socket = env.start(&spec).await;
    eprintln!("gvisor cold start: {} ms", t.elapsed().as_millis());
    // The guest runs on gVisor's kernel, not the host's.
    let host_release = nix::sys::utsname::uname().unwrap();
    let guest_release = ok(&socket, "uname -r").await;
    assert_ne!(
        guest_release,
        host_release.release().to_string_lossy(),
        "uname -r shows the host kernel"
    );
    assert_eq!(ok(&socket, "hostname").await, id);
    assert_eq!(ok(&socket, "echo $SANDPIT_TEST").await, "yes");
    ok(
        &socket,
        "echo kept > /workspace/note; apt-get --version > /dev/null",
    )
    .await;
    // The writable layer is the host's upper dir, through the overlay.
    assert_eq!(
        std::fs::read_to_string(
            env.driver
                .layout()
                .sandbox_dir(&id)
                .join("upper/workspace/note")
        )
        .unwrap(),
        "kept\n"
    );
    let pid = env.driver.pid(&id).unwrap();
    assert!(env.driver.is_running(&id).await);

    env.driver.stop(&id).await.unwrap();
    assert!(!env.driver.is_running(&id).await);
    env.assert_no_run_left(&id, pid).await;

    let t = Instant::now();
    let socket = env.start(&spec).await;
    eprintln!("gvisor wake: {} ms", t.elapsed().as_millis());
    assert_eq!(ok(&socket, "cat /workspace/note").await, "kept");
    let pid = env.driver.pid(&id).unwrap();

    env.driver.destroy(&id).await.unwrap();
    env.assert_no_run_left(&id, pid).await;
    assert!(!env.driver.layout().sandbox_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_gvisor_ephemeral_drops_the_layer_on_stop() {
    let Some(env) = GvEnv::new() else { return };
    let id = unique_id("gveph");
    let mut spec = env.spec(&id);
    spec.ephemeral = true;
    let socket = env.start(&spec).await;
    ok(&socket, "echo gone > /workspace/note").await;
    env.driver.stop(&id).await.unwrap();
    assert!(!env.driver.layout().sandbox_dir(&id).join("upper").exists());
    let socket = env.start(&spec).await;
    let (code, _) = exec(&socket, "cat /workspace/note").await;
    assert_ne!(code, 0, "an ephemeral sandbox kept its layer");
    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_gvisor_limits_are_the_sandboxes_cgroup_and_change_live() {
    let Some(env) = GvEnv::new() else { return };
    let id = unique_id("gvlim");
    let socket = env.start(&env.spec(&id)).await;
    assert_eq!(
        cgroup_file(&env.driver, &id, "memory.limit_in_bytes"),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        cgroup_file(&env.driver, &id, "pids.max"),
        (64 + PIDS_OVERHEAD).to_string()
    );
    // runsc, its sentry and gofer are all inside: the guest cannot escape the accounting.
    let procs = env.driver.cgroups().pids(&id).unwrap();
    assert!(procs.contains(&env.driver.pid(&id).unwrap()), "{procs:?}");
    let usage = env.driver.usage(&id).await.unwrap();
    assert!(usage.memory_bytes > 0 && usage.pids > 0, "{usage:?}");

    // A fork bomb hits the host pids limit: the host is protected, the sandbox dies with it
    // (gVisor's kernel panics when it cannot create a host thread; see docs/isolation.md).
    let bomb = exec_raw(
        &socket,
        "for i in $(seq 1 400); do sleep 30 & done; echo done",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.driver.is_running(&id).await && !bomb.contains("done") {
        assert!(
            Instant::now() < deadline,
            "neither finished nor died: {bomb}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "after the fork bomb: running={}, response {bomb:?}",
        env.driver.is_running(&id).await
    );
    // Either way, the next start cleans up and works.
    let socket = env.start(&env.spec(&id)).await;
    assert_eq!(ok(&socket, "echo alive").await, "alive");

    env.driver
        .set_limits(
            &id,
            &Limits {
                cpus: Some(0.5),
                memory_mb: Some(512),
                pids: Some(100),
                disk_mb: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        cgroup_file(&env.driver, &id, "memory.limit_in_bytes"),
        (512u64 << 20).to_string()
    );
    assert_eq!(
        cgroup_file(&env.driver, &id, "pids.max"),
        (100 + PIDS_OVERHEAD).to_string()
    );
    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_gvisor_reaches_only_the_egress_socket() {
    let Some(env) = GvEnv::new() else { return };
    let id = unique_id("gvnet");
    // A host TCP server the sandbox must not reach (network none: gVisor's own netstack).
    let host_server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_server.local_addr().unwrap().port();
    // The egress endpoint: the driver hands it every connection to /run/sandpit/egress.sock.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut spec = env.spec(&id);
    spec.egress = Some(EgressEndpoint::new(move |stream| {
        let _ = tx.send(stream);
    }));
    spec.run_files = vec![sandpit_runtime::RunFile {
        name: "ca.crt".into(),
        contents: b"not a real CA".to_vec(),
    }];
    let proxy = tokio::spawn(async move {
        let mut conn = rx.recv().await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = conn.read(&mut buf).await.unwrap();
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nvia-proxy")
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let socket = env.start(&spec).await;
    assert_eq!(
        ok(&socket, "cat /run/sandpit/ca.crt").await,
        "not a real CA"
    );
    let (code, out) = exec(
        &socket,
        &format!("timeout 5 bash -c 'echo x > /dev/tcp/127.0.0.1/{host_port}' 2>&1"),
    )
    .await;
    assert_ne!(code, 0, "reached the host's loopback: {out}");
    let out = ok(
        &socket,
        &format!(
            "curl -sS --max-time 10 -x http://127.0.0.1:{} http://example.invalid/",
            sandpit_protocol::EGRESS_PROXY_PORT
        ),
    )
    .await;
    assert_eq!(out, "via-proxy");
    let seen = tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .unwrap()
        .unwrap();
    assert!(seen.contains("example.invalid"), "{seen}");
    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_gvisor_reconcile_removes_what_a_previous_server_left() {
    let Some(env) = GvEnv::new() else { return };
    let id = unique_id("gvrec");
    let socket = env.start(&env.spec(&id)).await;
    ok(&socket, "echo kept > /workspace/note").await;
    let pid = env.driver.pid(&id).unwrap();
    // A second driver on the same data dir is a restarted server.
    let restarted = GvisorDriver::with_config(env.driver.config().clone()).unwrap();
    assert_eq!(restarted.reconcile().await.unwrap(), vec![id.clone()]);
    env.assert_no_run_left(&id, pid).await;
    restarted.start(&env.spec(&id)).await.unwrap();
    let socket = restarted.socket_path(&id);
    assert_eq!(ok(&socket, "cat /workspace/note").await, "kept");
    restarted.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn gvisor_refuses_what_it_cannot_do() {
    let Some(env) = GvEnv::new() else { return };
    let id = unique_id("gvbad");
    let mut spec = env.spec(&id);
    spec.network = EgressPolicy::new(NetworkMode::Full, Vec::new());
    let err = env.driver.start(&spec).await.unwrap_err().to_string();
    assert!(err.contains("network mode full"), "{err}");
    let mut spec = env.spec(&id);
    spec.limits.disk_mb = Some(64);
    let err = env.driver.start(&spec).await.unwrap_err().to_string();
    assert!(err.contains("diskMb"), "{err}");
}
