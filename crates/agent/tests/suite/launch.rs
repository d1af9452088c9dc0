//! `sandpit-agent launch`: the agent as PID 1 of a real sandbox (root and an image rootfs
//! needed; skipped otherwise).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{Agent, BIN};

const ROOTFS: &str = "/var/lib/sandpit/images/default/rootfs";
/// A uid range unlikely to be used by other tests on this host.
const UID_BASE: u32 = 2_949_120;

fn rootfs() -> Option<PathBuf> {
    let path = std::env::var_os("SANDPIT_TEST_ROOTFS")
        .map_or_else(|| PathBuf::from(ROOTFS), PathBuf::from);
    let usable = path.join("bin/bash").exists() && nix::unistd::geteuid().is_root();
    if !usable {
        eprintln!(
            "\n!!! SKIPPED: needs root and an image rootfs with bash at {} !!!\n",
            path.display()
        );
    }
    usable.then_some(path)
}

/// Launches the agent in a sandbox; returns the sandbox init's host pid.
fn launch(dir: &Path, rootfs: &Path, socket: &Path) -> i32 {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, mode) in [("upper", 0o755), ("work", 0o700)] {
        let d = dir.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        chown(&d, Some(UID_BASE), Some(UID_BASE)).unwrap();
    }
    for name in ["lower", "rootfs"] {
        std::fs::create_dir(dir.join(name)).unwrap();
    }
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let config = json!({
        "id": "agent-launch-test", "hostname": "agent-launch-test",
        "imageRootfs": rootfs, "sandboxDir": dir, "uidBase": UID_BASE, "listenFd": 3,
        "env": [["PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], ["MARK", "from-config"]],
        "logFile": dir.join("agent.log"),
    });
    let mut cmd = Command::new(BIN);
    cmd.arg("launch")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    sandpit_isolation::process::pass_fd(&mut cmd, OwnedFd::from(listener), 3);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let mut reply = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut reply)
        .unwrap();
    assert!(child.wait().unwrap().success(), "launcher failed: {reply}");
    let reply: serde_json::Value = serde_json::from_str(reply.trim()).unwrap();
    reply["pid"].as_i64().unwrap() as i32
}

/// Stops the sandbox init even when an assertion fails.
struct StopOnDrop(i32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

#[test]
fn serial_agent_serves_as_sandbox_init() {
    let Some(rootfs) = rootfs() else { return };
    let dir = tempfile::Builder::new()
        .prefix("sandpit-agent-launch")
        .tempdir_in("/tmp")
        .unwrap();
    let socket = dir.path().join("agent.sock");
    let pid = launch(dir.path(), &rootfs, &socket);
    let _stop = StopOnDrop(pid);
    let client = Agent::client_for(&socket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(client.get("/api/ping").await.status, 200);
        let v = client
            .exec(json!({"command": "cat /proc/1/comm; echo $MARK; pwd; id -u; (sleep 0.1 &); sleep 0.6; \
                                     grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l; sh -c 'ls /proc/$$/fd'"}))
            .await;
        assert_eq!(v["stdout"], "sandpit-agent\nfrom-config\n/workspace\n0\n0\n0\n1\n2\n");
        let w = client.post("/api/write", json!({"path": "hello.txt", "content": "hi"})).await;
        assert_eq!(w.status, 200);
        let v = client.exec(json!({"command": "cat /workspace/hello.txt", "sessionId": "__DISABLE_SESSION__"})).await;
        assert_eq!(v["stdout"], "hi");
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}/status"))
        .exists()
        .then(|| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
        .is_some_and(|s| !s.contains("State:\tZ"))
    {
        assert!(
            Instant::now() < deadline,
            "sandbox init did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
