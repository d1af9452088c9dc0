//! Host hygiene of a real `sandpit serve` (issue 16): sandbox cgroups under a fixed root that a
//! server restarted from another cgroup finds and cleans, and that is removed at shutdown; no
//! socket file without a listener after sleep or shutdown; an honest banner about where the
//! admin key came from.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::leftovers::{self, Snapshot};
use super::support::{Served, free_port, images_dir_or_skip};

/// The v1 `memory` hierarchy, or the unified one on a pure v2 host.
fn memory_hierarchy() -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    if v1.join("cgroup.procs").exists() {
        v1.to_owned()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// A fresh memory cgroup of the test (removed on drop) to move a server into.
struct FreshCgroup(PathBuf);

impl FreshCgroup {
    fn new(name: &str) -> FreshCgroup {
        let dir = memory_hierarchy().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        FreshCgroup(dir)
    }

    /// Moves process `pid` (with all its threads) into this cgroup.
    fn take(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let rel = self.0.strip_prefix(memory_hierarchy()).unwrap();
        assert!(
            own.lines()
                .any(|l| l.ends_with(&format!("/{}", rel.display()))),
            "{pid} not moved: {own}"
        );
    }
}

impl Drop for FreshCgroup {
    fn drop(&mut self) {
        // Its processes are gone by now; move any stragglers out first.
        if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(memory_hierarchy().join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Sandbox cgroup directories under the root `root` (e.g. `/sp-x`) of the memory hierarchy.
fn sandbox_cgroups(root: &str) -> Vec<String> {
    std::fs::read_dir(memory_hierarchy().join(root.trim_start_matches('/')))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every socket file under `dir` that nothing listens on (connect is refused).
fn dead_sockets(dir: &Path) -> Vec<String> {
    let mut dead = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                // Not into sandbox file systems: only run files are of interest.
                if !matches!(
                    entry.file_name().to_str(),
                    Some("upper" | "work" | "images" | "layers")
                ) {
                    stack.push(entry.path());
                }
            } else if kind.is_socket()
                && std::os::unix::net::UnixStream::connect(entry.path()).is_err()
            {
                dead.push(entry.path().display().to_string());
            }
        }
    }
    dead
}

#[test]
fn serial_restart_from_another_cgroup_finds_and_cleans_the_old_cgroups() {
    let Some(images) = images_dir_or_skip("serial_restart_from_another_cgroup") else {
        return;
    };
    let tag = std::process::id();
    let root = format!("/sp-restart-{tag}");
    let data = tempfile::Builder::new().prefix("sph").tempdir().unwrap();
    let first_home = FreshCgroup::new(&format!("sp-first-server-{tag}"));
    let mut first = Served::start_in(&images, data.path(), &["--cgroup-root", &root]);
    first_home.take(first.pid());
    for id in ["cg-a", "cg-b"] {
        first
            .cli()
            .args(["exec", id, "--", "true"])
            .assert()
            .success();
    }
    let made = sandbox_cgroups(&root);
    assert_eq!(made.len(), 2, "two sandbox cgroups under {root}: {made:?}");
    // The sandboxes' cgroups are under the fixed root, not under the server's own cgroup.
    assert!(
        std::fs::read_dir(&first_home.0)
            .unwrap()
            .flatten()
            .all(|e| !e.file_type().unwrap().is_dir()),
        "nothing of the sandboxes under the server's own cgroup"
    );
    let before = Snapshot::of_descendants(first.pid());
    first.kill9();
    drop(first);

    // A second server from another cgroup (the test's own) on the same data dir.
    let second = Served::start_in(&images, data.path(), &["--cgroup-root", &root]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandbox_cgroups(&root).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sandbox_cgroups(&root),
        Vec::<String>::new(),
        "the restarted server removed the old sandboxes' cgroups"
    );
    for id in made {
        let left = leftovers::find(&id, data.path(), &before);
        assert!(left.is_empty(), "left of {id}: {left:#?}");
    }
    // It runs sandboxes under the same root, and removes the root at shutdown once empty.
    second
        .cli()
        .args(["exec", "cg-a", "--", "true"])
        .assert()
        .success();
    assert_eq!(sandbox_cgroups(&root).len(), 1);
    drop(second);
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = hierarchy.path().join(root.trim_start_matches('/'));
        assert!(!dir.exists(), "{} left after shutdown", dir.display());
    }
    let memory_root = memory_hierarchy().join(root.trim_start_matches('/'));
    assert!(!memory_root.exists(), "{}", memory_root.display());
}

#[test]
fn serial_no_socket_without_a_listener_after_sleep_or_shutdown() {
    let Some(images) = images_dir_or_skip("serial_no_socket_without_a_listener") else {
        return;
    };
    let data = tempfile::Builder::new().prefix("sph").tempdir().unwrap();
    let served = Served::start_in(&images, data.path(), &[]);
    for id in ["sock-a", "sock-b"] {
        served
            .cli()
            .args(["exec", id, "--", "true"])
            .assert()
            .success();
    }
    // While they run, their sockets have listeners (the check can tell one from none).
    let sockets = |dir: &Path| {
        let mut n = 0;
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let kind = e.file_type().unwrap();
                if kind.is_dir() && e.file_name() != "upper" && e.file_name() != "images" {
                    stack.push(e.path());
                } else if kind.is_socket() {
                    n += 1;
                }
            }
        }
        n
    };
    assert!(sockets(data.path()) >= 2, "agent and egress sockets exist");
    assert_eq!(dead_sockets(data.path()), Vec::<String>::new());
    served.cli().args(["stop", "sock-a"]).assert().success();
    assert_eq!(
        dead_sockets(data.path()),
        Vec::<String>::new(),
        "after sleep"
    );
    let egress = data.path().join("sandboxes");
    for sandbox in std::fs::read_dir(&egress).unwrap().flatten() {
        let sock = sandbox.path().join("run/egress.sock");
        if sock.exists() {
            assert!(
                std::os::unix::net::UnixStream::connect(&sock).is_ok(),
                "{} has no listener",
                sock.display()
            );
        }
    }
    drop(served);
    assert_eq!(
        dead_sockets(data.path()),
        Vec::<String>::new(),
        "after shutdown"
    );
}

#[test]
fn serve_with_the_admin_key_from_the_environment_says_so() {
    let Some(images) = images_dir_or_skip("serve_with_the_admin_key_from_the_environment") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data.path())
        .arg("--images-dir")
        .arg(&images)
        .env("SANDPIT_ADMIN_KEY", "from-the-env-0123456789")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("sandpit listening on") && text.contains("admin key") {
            break text;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve exited early:\n{text}"
        );
        assert!(Instant::now() < deadline, "no banner after 60 s:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        text.contains("admin key taken from $SANDPIT_ADMIN_KEY"),
        "{text}"
    );
    assert!(!text.contains("admin key stored in"), "{text}");
    assert!(!data.path().join("admin.key").exists());
}
