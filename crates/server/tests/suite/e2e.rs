//! End to end through `Server::start`: the real LocalDriver, `sandpit-agent` and the default
//! image. Needs root, the agent binary (`cargo build -p sandpit-agent`, or `SANDPIT_AGENT_BIN`)
//! and an image in `$SANDPIT_IMAGES_DIR` (default `/var/lib/sandpit/images`); each test returns
//! early with a loud message when one is missing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use sandpit_image::ImageStore;
use sandpit_protocol::control::Isolation;
use sandpit_runtime::Driver;
use sandpit_runtime::local::LocalDriver;
use sandpit_server::{ServeConfig, Server, find_agent_binary};
use serde_json::{Value, json};

use super::{assert_error, eventually, status_json};

fn images_dir() -> PathBuf {
    std::env::var_os("SANDPIT_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/sandpit/images"))
}

fn skip(why: &str) -> Option<Real> {
    eprintln!("\n!!! SKIPPED: {why} !!!\n");
    None
}

/// The config of a real server on `data_dir`, or `None` (said loudly) when it cannot run here.
fn real_config(data_dir: &Path) -> Option<ServeConfig> {
    if !nix_is_root() {
        skip("needs root");
        return None;
    }
    let images = images_dir();
    if ImageStore::open(&images)
        .and_then(|s| s.rootfs("default"))
        .is_err()
    {
        skip(&format!(
            "no default image in {} (sandpit image build)",
            images.display()
        ));
        return None;
    }
    let Some(agent_bin) = find_agent_binary() else {
        skip("no sandpit-agent binary (cargo build -p sandpit-agent or set SANDPIT_AGENT_BIN)");
        return None;
    };
    let mut config = ServeConfig::new(data_dir.to_path_buf());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.images_dir = images;
    config.agent_bin = agent_bin;
    config.admin_key = None;
    config.reaper_interval = Duration::from_millis(200);
    config.shutdown_grace = Duration::from_secs(1);
    Some(config)
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub(super) struct Real {
    pub(super) server: Option<Server>,
    pub(super) client: reqwest::Client,
    pub(super) base: String,
    pub(super) key: String,
    pub(super) data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Real {
    pub(super) async fn start() -> Option<Real> {
        // Short path: sockets live under it (sun_path is 108 bytes).
        let tmp = tempfile::Builder::new().prefix("sps").tempdir().unwrap();
        let mut real = Self::start_on(&tmp.path().join("d")).await?;
        real._tmp = Some(tmp);
        Some(real)
    }

    /// [`Real::start`] with a config changed by `tweak`.
    pub(super) async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Option<Real> {
        let tmp = tempfile::Builder::new().prefix("sps").tempdir().unwrap();
        let mut real = Self::start_on_with(&tmp.path().join("d"), tweak).await?;
        real._tmp = Some(tmp);
        Some(real)
    }

    /// The isolation tiers this host runs: `standard`, and `gvisor` when runsc is installed.
    /// Under `CI=true` a missing runsc fails the test (CI installs it, see scripts/lib.sh);
    /// elsewhere the gvisor run is skipped with a printed reason.
    pub(super) fn tiers() -> Vec<Isolation> {
        let mut tiers = vec![Isolation::Standard];
        if sandpit_runtime::gvisor::find_runsc().is_some() {
            tiers.push(Isolation::Gvisor);
        } else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "runsc is missing: the gvisor tier must be tested in CI"
            );
            eprintln!("\n!!! SKIPPED for gvisor: runsc is not installed !!!\n");
        }
        tiers
    }

    /// [`Real::start`] with sandboxes of `tier` by default (explicit and implicit creates),
    /// so a test body runs unchanged under each tier of [`Real::tiers`].
    pub(super) async fn start_tier(tier: Isolation) -> Option<Real> {
        Self::start_tier_with(tier, |_| {}).await
    }

    /// [`Real::start_tier`] with a config changed by `tweak`.
    pub(super) async fn start_tier_with(
        tier: Isolation,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> Option<Real> {
        eprintln!("--- isolation tier {tier} ---");
        Self::start_with(|config| {
            config.default_isolation = tier;
            tweak(config);
        })
        .await
    }

    pub(super) async fn start_on(data_dir: &Path) -> Option<Real> {
        Self::start_on_with(data_dir, |_| {}).await
    }

    pub(super) async fn start_on_with(
        data_dir: &Path,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> Option<Real> {
        let mut config = real_config(data_dir)?;
        tweak(&mut config);
        let server = Server::start(config).await.unwrap();
        Some(Real {
            base: format!("http://{}", server.addr()),
            key: server.admin_key().to_owned(),
            server: Some(server),
            client: reqwest::Client::new(),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        })
    }

    pub(super) fn req_as(&self, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
    }

    pub(super) async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        super::send_json(self.req_as(key, method, path), &body).await
    }

    pub(super) async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        self.call_as(&self.key.clone(), method, path, body).await
    }

    /// `method path` as `key`, which must answer `status`; the answer's body.
    pub(super) async fn expect_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Value,
        status: u16,
    ) -> Value {
        let what = format!("{method} {path}");
        let (s, b) = self.call_as(key, method, path, body).await;
        assert_eq!(s, status, "{what}: {b}");
        b
    }

    /// Creates a sandbox as `key`, which must succeed (201); its info.
    pub(super) async fn create_as(&self, key: &str, body: Value) -> Value {
        self.expect_as(key, Method::POST, "/v1/sandboxes", body, 201)
            .await
    }

    /// [`Real::create_as`] with the admin key.
    pub(super) async fn create(&self, body: Value) -> Value {
        self.create_as(&self.key.clone(), body).await
    }

    pub(super) async fn exec_as(&self, key: &str, id: &str, command: &str) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{id}/api/execute");
        self.call_as(key, Method::POST, &path, json!({"command": command}))
            .await
    }

    pub(super) async fn exec(&self, id: &str, command: &str) -> Value {
        let (s, b) = self.exec_as(&self.key.clone(), id, command).await;
        assert_eq!(s, 200, "{b}");
        b
    }

    pub(super) async fn state(&self, id: &str) -> String {
        let (_, b) = self
            .call(Method::GET, &format!("/v1/sandboxes/{id}"), Value::Null)
            .await;
        b["state"].as_str().unwrap_or("?").to_owned()
    }

    pub(super) async fn stop(mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
    }
}

/// A test that panics drops its server without `stop`: kill what it left running, as the next
/// server on that data dir would, so a failed test cannot leak sandboxes.
impl Drop for Real {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        drop(server);
        let (data_dir, agent) = (self.data_dir.clone(), find_agent_binary());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let driver = LocalDriver::new(data_dir, agent.unwrap()).unwrap();
            runtime.block_on(driver.reconcile())
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("cleanup after a failed test: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_create_exec_sleep_and_wake_with_workspace() {
    for tier in Real::tiers() {
        let Some(rs) = Real::start_tier(tier).await else {
            return;
        };
        let (s, b) = rs
            .call(
                Method::POST,
                "/v1/sandboxes",
                json!({"id": "e2e-nap", "sleepAfter": "2s"}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["state"], "running");
        assert_eq!(b["isolation"], tier.as_str(), "{b}");
        let (s, again) = rs
            .call(Method::POST, "/v1/sandboxes", json!({"id": "e2e-nap"}))
            .await;
        assert_eq!(s, 200, "{again}");

        let out = rs
            .exec(
                "e2e-nap",
                "echo kept > /workspace/f && cat /workspace/f && id -u",
            )
            .await;
        assert_eq!(out["exitCode"], 0, "{out}");
        assert_eq!(out["stdout"], "kept\n0\n", "{out}");

        let slept = eventually(Duration::from_secs(10), || async {
            rs.state("e2e-nap").await == "sleeping"
        });
        assert!(slept.await, "did not sleep after 2s idle");
        let woke = Instant::now();
        let out = rs.exec("e2e-nap", "cat /workspace/f").await;
        assert_eq!(out["stdout"], "kept\n", "{out}");
        eprintln!("wake + exec took {:?}", woke.elapsed());
        assert_eq!(rs.state("e2e-nap").await, "running");
        rs.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_keep_alive_stop_and_destroy() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let body = json!({"id": "e2e-awake", "sleepAfter": 1, "keepAlive": true});
    let (s, b) = rs.call(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
    rs.exec("e2e-awake", "touch /workspace/x").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(rs.state("e2e-awake").await, "running", "keepAlive slept");

    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes/e2e-awake/stop", json!({}))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("sleeping")), "{b}");
    let out = rs.exec("e2e-awake", "ls /workspace").await;
    assert_eq!(out["stdout"], "x\n");

    let sandboxes = rs.data_dir.join("sandboxes");
    let before = std::fs::read_dir(&sandboxes)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(before, 1, "one sandbox dir");
    let r = rs
        .req_as(&rs.key, Method::DELETE, "/v1/sandboxes/e2e-awake")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, b) = rs
        .call(Method::GET, "/v1/sandboxes/e2e-awake", Value::Null)
        .await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let after = std::fs::read_dir(&sandboxes)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(after, 0, "destroy removes the sandbox's directory");
    // The id is free again: a new, empty sandbox.
    let out = rs.exec("e2e-awake", "ls /workspace | wc -l").await;
    assert_eq!(out["stdout"], "0\n");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_tenants_cannot_reach_each_other() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let b_key = rs.create_key("tenant-b").await;
    rs.exec("e2e-shared", "echo secret-of-a > /workspace/secret")
        .await;

    let (s, b) = rs
        .call_as(&b_key, Method::GET, "/v1/sandboxes/e2e-shared", Value::Null)
        .await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let (s, b) = rs
        .call_as(
            &b_key,
            Method::DELETE,
            "/v1/sandboxes/e2e-shared",
            Value::Null,
        )
        .await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let (s, out) = rs
        .exec_as(&b_key, "e2e-shared", "cat /workspace/secret; hostname")
        .await;
    assert_eq!(s, 200, "{out}");
    assert!(
        !out["stdout"].as_str().unwrap().contains("secret-of-a"),
        "{out}"
    );
    let a_out = rs
        .exec("e2e-shared", "cat /workspace/secret; hostname")
        .await;
    assert!(
        a_out["stdout"]
            .as_str()
            .unwrap()
            .starts_with("secret-of-a\n"),
        "{a_out}"
    );
    assert_ne!(
        out["stdout"], a_out["stdout"],
        "different hostnames: different sandboxes"
    );
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_restart_keeps_state_and_sandboxes_wake() {
    let tmp = tempfile::Builder::new().prefix("sps").tempdir().unwrap();
    let data_dir = tmp.path().join("d");
    let Some(rs) = Real::start_on(&data_dir).await else {
        return;
    };
    rs.exec("e2e-durable", "echo v1 > /workspace/state").await;
    let key = rs.key.clone();
    rs.stop().await;

    let rs = Real::start_on(&data_dir).await.unwrap();
    assert_eq!(rs.key, key);
    assert_eq!(rs.state("e2e-durable").await, "sleeping");
    let out = rs.exec("e2e-durable", "cat /workspace/state").await;
    assert_eq!(out["stdout"], "v1\n");
    assert_eq!(rs.state("e2e-durable").await, "running");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_streams_metrics_and_bad_requests() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let r = rs
        .req_as(
            &rs.key,
            Method::POST,
            "/v1/sandboxes/e2e-stream/api/execute/stream",
        )
        .json(&json!({"command": "echo one; sleep 2; echo two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let start = Instant::now();
    let mut stream = r.bytes_stream();
    let mut text = String::new();
    let mut one_at = None;
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if one_at.is_none() && text.contains("one\\n") {
            one_at = Some(start.elapsed());
        }
    }
    assert!(text.contains("\"complete\""), "{text}");
    assert!(
        one_at.unwrap() < Duration::from_millis(1500),
        "first line arrived late: buffered?"
    );

    rs.exec("e2e-stream", "true").await;
    let metrics = rs
        .client
        .get(format!("{}/metrics", rs.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("sandpit_sandboxes{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sandpit_exec_duration_seconds_count 1"),
        "{metrics}"
    );

    // Bad input, then the server and the sandbox still answer.
    let r = rs
        .req_as(&rs.key, Method::POST, "/v1/sandboxes")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    let (s, b) = status_json(r).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "x", "memory": 1}),
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes", json!({"id": "Bad_Id"}))
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes",
            json!({"image": "no-such-image"}),
        )
        .await;
    assert_error(s, &b, 404, "IMAGE_NOT_FOUND");
    let body = json!({"id": "e2e-tiny", "limits": {"memoryMb": 1}});
    let (s, b) = rs.call(Method::POST, "/v1/sandboxes", body).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    // Announce a body over 64 MiB and send none: the answer must come from the header alone
    // (a client still sending would see the connection close under it).
    let addr = rs.server.as_ref().unwrap().addr();
    let head = format!(
        "POST /v1/sandboxes/e2e-stream/api/write HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        rs.key,
        (64u64 << 20) + 1
    );
    let answer = super::raw_request(addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    let out = rs.exec("e2e-stream", "echo alive").await;
    assert_eq!(out["stdout"], "alive\n");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_concurrent_first_calls_make_one_sandbox() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let rs = std::sync::Arc::new(rs);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let rs = rs.clone();
            tokio::spawn(
                async move { rs.exec_as(&rs.key, "e2e-crowd", &format!("echo {i}")).await },
            )
        })
        .collect();
    for call in calls {
        let (s, b) = call.await.unwrap();
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["exitCode"], 0, "{b}");
    }
    let (_, list) = rs.call(Method::GET, "/v1/sandboxes", Value::Null).await;
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 1);
    let dirs = std::fs::read_dir(rs.data_dir.join("sandboxes"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1);
    let rs = std::sync::Arc::into_inner(rs).unwrap();
    rs.stop().await;
}

/// The processes of one sandbox of this test's server, found by its internal id (the name of
/// its dir under `<data dir>/sandboxes` and of its cgroup). Only this server's: other servers
/// on the host (other test runs) may run sandboxes with the same id.
struct SandboxProcs {
    internal: String,
    socket: PathBuf,
}

impl SandboxProcs {
    fn of(rs: &Real, id: &str) -> Self {
        let prefix = format!("{}-", id.to_ascii_lowercase());
        let internal = std::fs::read_dir(rs.data_dir.join("sandboxes"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|name| name.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no sandbox dir for {id}"));
        let socket = rs.data_dir.join("run").join(format!("{internal}.sock"));
        SandboxProcs { internal, socket }
    }

    /// Connections waiting in the accept queue of the agent's socket (`ss` shows it as the
    /// Recv-Q of a listening socket).
    fn queued_connections(&self) -> usize {
        let out = std::process::Command::new("ss")
            .args(["-xlnH", "src"])
            .arg(&self.socket)
            .output()
            .expect("running ss (iproute2)");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Drives `request` until it waits, unanswered, in the accept queue of the (stopped) agent.
    async fn until_queued<F>(&self, request: &mut F)
    where
        F: std::future::Future + Unpin,
    {
        let queued = eventually(Duration::from_secs(20), || async {
            self.queued_connections() > 0
        });
        tokio::select! {
            _ = request => panic!("a stopped agent answered"),
            queued = queued => assert!(queued, "the request never reached the agent's socket"),
        }
    }

    /// Host pids of the live (not zombie) processes in the sandbox's cgroup.
    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            let ours = cgroups
                .lines()
                .any(|l| l.split('/').any(|c| c == self.internal));
            if ours && !has_exited(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// The agent: PID 1 of the sandbox's pid namespace.
    fn agent(&self) -> i32 {
        self.pids()
            .into_iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.starts_with("NSpid:") && l.split_whitespace().last() == Some("1"))
            })
            .expect("no agent in the sandbox's cgroup")
    }

    /// SIGKILLs every process of the sandbox and returns once all of them have exited (a
    /// delivered signal is not yet an exit: the agent may still accept a connection).
    async fn kill_all(&self) {
        let pids = self.pids();
        assert!(!pids.is_empty(), "no processes in the sandbox's cgroup");
        for &pid in &pids {
            let _ = signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        // These pids, not the cgroup: a request in flight may restart the sandbox meanwhile.
        let dead = eventually(Duration::from_secs(10), || async {
            pids.iter().all(|&pid| has_exited(pid))
        })
        .await;
        assert!(dead, "the sandbox's processes outlived SIGKILL");
    }
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
}

/// Whether `pid` has exited (a zombie not yet reaped, or gone).
fn has_exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        // The state follows the command name, which is in parentheses and may hold spaces.
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_killed_sandbox_restarts_on_next_call() {
    let Some(rs) = Real::start().await else {
        return;
    };
    rs.exec("e2e-crash", "echo up > /workspace/f").await;
    let procs = SandboxProcs::of(&rs, "e2e-crash");
    let before = procs.agent();
    procs.kill_all().await;
    // Never a hang: nothing listens any more, so the call restarts the sandbox and goes through.
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        rs.exec("e2e-crash", "cat /workspace/f"),
    )
    .await
    .expect("a call to a killed sandbox hung");
    assert_eq!(out["stdout"], "up\n", "{out}");
    eprintln!("recovery took {:?}", started.elapsed());
    assert_ne!(procs.agent(), before, "running again, with a new agent");
    rs.stop().await;
}

/// The agent dies with a request on its socket that it never answered (here: stopped, so the
/// connection waits in its backlog, then killed). A safe body-less request is sent again to the
/// restarted sandbox; anything else may have run before the death, so it fails with a clear
/// `SANDBOX_UNAVAILABLE` (not a raw transport error) and the next call restarts the sandbox.
/// Before: both failed with `502 "sandbox agent did not answer: connection error"`.
#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_agent_killed_with_a_request_on_its_socket() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "e2e-dies";
    rs.exec(id, "echo up > /workspace/f").await;
    let procs = SandboxProcs::of(&rs, id);

    let ping = format!("/v1/sandboxes/{id}/api/ping");
    let agent = procs.agent();
    signal(agent, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut get = Box::pin(rs.req_as(&rs.key, Method::GET, &ping).send());
    procs.until_queued(&mut get).await;
    procs.kill_all().await;
    let r = tokio::time::timeout(Duration::from_secs(20), get)
        .await
        .expect("a GET to a dying agent hung")
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "the GET was not sent again: {body}");
    let restarted = procs.agent();
    assert_ne!(restarted, agent, "running again, with a new agent");

    signal(restarted, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let execute = format!("/v1/sandboxes/{id}/api/execute");
    let mut post = Box::pin(rs.call(Method::POST, &execute, json!({"command": "true"})));
    procs.until_queued(&mut post).await;
    procs.kill_all().await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), post)
        .await
        .expect("a POST to a dying agent hung");
    assert_error(status, &body, 502, "SANDBOX_UNAVAILABLE");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("exited before answering"), "{body}");
    assert_eq!(body["context"]["sandboxId"], id, "{body}");
    let out = rs.exec(id, "cat /workspace/f").await;
    assert_eq!(out["stdout"], "up\n", "{out}");
    rs.stop().await;
}

/// A forwarded call that a stop or destroy of its sandbox cuts short is the caller's doing:
/// `409 OPERATION_INTERRUPTED`, not a `502 SANDBOX_UNAVAILABLE` that reads like a broken
/// sandbox (found by the API fuzzer, scripts/fuzz-api.sh). A crashed agent stays a 502.
#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_call_cut_by_stop_or_destroy_is_interrupted() {
    let Some(rs) = Real::start().await else {
        return;
    };
    for (id, method, path) in [
        (
            "e2e-cut-stop",
            Method::POST,
            "/v1/sandboxes/e2e-cut-stop/stop",
        ),
        (
            "e2e-cut-destroy",
            Method::DELETE,
            "/v1/sandboxes/e2e-cut-destroy",
        ),
    ] {
        rs.exec(id, "true").await;
        // Sessionless, so the polling commands (default session) are not queued behind it.
        let execute = format!("/v1/sandboxes/{id}/api/execute");
        let long = rs.call(
            Method::POST,
            &execute,
            json!({"command": "touch /tmp/started; sleep 30", "sessionId": "__DISABLE_SESSION__"}),
        );
        let end = async {
            // Only once the agent runs the long command, so the stop cuts it.
            let started = eventually(Duration::from_secs(20), || async {
                rs.exec(id, "test -e /tmp/started && echo yes").await["stdout"] == "yes\n"
            })
            .await;
            assert!(started, "the long command never started");
            let r = rs.req_as(&rs.key, method, path).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        };
        let ((status, body), ()) = tokio::join!(long, end);
        assert_error(status, &body, 409, "OPERATION_INTERRUPTED");
        assert_eq!(body["context"]["sandboxId"], id, "{body}");
    }
    rs.stop().await;
}

/// An event stream that a stop or destroy breaks off ends with an `event: error` carrying the
/// `OPERATION_INTERRUPTED` envelope and the reason (and `type: error` for the seed's clients),
/// not with a broken connection.
#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_stream_cut_by_stop_or_destroy_ends_with_an_error_event() {
    let Some(rs) = Real::start().await else {
        return;
    };
    for (id, method, path, reason) in [
        (
            "e2e-sse-stop",
            Method::POST,
            "/v1/sandboxes/e2e-sse-stop/stop",
            "stopped",
        ),
        (
            "e2e-sse-destroy",
            Method::DELETE,
            "/v1/sandboxes/e2e-sse-destroy",
            "destroyed",
        ),
    ] {
        rs.exec(id, "true").await;
        let r = rs
            .req_as(
                &rs.key,
                Method::POST,
                &format!("/v1/sandboxes/{id}/api/execute/stream"),
            )
            .json(&json!({"command": "echo started; sleep 60", "sessionId": "__DISABLE_SESSION__"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        let mut text = String::new();
        while !text.contains("\"data\":\"started") {
            let chunk = stream.next().await.expect("stream ended early").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let cut = rs.req_as(&rs.key, method, path).send().await.unwrap();
        assert!(cut.status().is_success(), "{}", cut.status());
        let rest = tokio::time::timeout(Duration::from_secs(60), async {
            let mut rest = String::new();
            while let Some(chunk) = stream.next().await {
                rest.push_str(&String::from_utf8_lossy(&chunk.expect("a broken stream")));
            }
            rest
        })
        .await
        .expect("the stream did not end");
        // The last event (keep-alive comments may come before it).
        let data = rest
            .split_once("event: error\ndata: ")
            .and_then(|(_, d)| d.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("{rest:?}"));
        let event: Value = serde_json::from_str(data).unwrap();
        assert_eq!(event["type"], "error", "{event}");
        assert_eq!(event["code"], "OPERATION_INTERRUPTED", "{event}");
        assert_eq!(event["httpStatus"], 409, "{event}");
        assert_eq!(event["context"]["reason"], reason, "{event}");
        assert_eq!(event["context"]["sandboxId"], id, "{event}");
        assert_eq!(
            event["error"],
            format!("sandbox {id} was {reason}"),
            "{event}"
        );
    }
    rs.stop().await;
}

/// The longest sandbox id starts under a data dir long enough that the sandbox's egress socket
/// path (`<data>/sandboxes/<internal id>/run/egress.sock`) exceeds `sun_path` (108 bytes), while
/// its agent socket (`<data>/run/<internal id>.sock`) still fits. Found by the API fuzzer: a
/// valid id answered 500 SANDBOX_START_FAILED ("path must be shorter than SUN_LEN").
#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_longest_id_starts_under_a_long_data_dir() {
    let tmp = tempfile::Builder::new().prefix("sps").tempdir().unwrap();
    const DATA_DIR_LEN: usize = 30;
    let base = tmp.path().as_os_str().len();
    assert!(base < DATA_DIR_LEN - 1, "TMPDIR too long for this test");
    let data_dir = tmp.path().join("d".repeat(DATA_DIR_LEN - base - 1));
    let Some(rs) = Real::start_on(&data_dir).await else {
        return;
    };
    let id = "x".repeat(63);
    let out = rs.exec(&id, "echo ok").await;
    assert_eq!(out["stdout"], "ok\n", "{out}");
    rs.stop().await;
}
