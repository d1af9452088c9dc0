//! `/api/git/checkout` against repositories the tests make (`file://` and local paths), plus a
//! loopback listener that never answers (timeouts) and a closed loopback port (network errors).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{Agent, children_of};

/// Runs git in `dir` with a fixed identity; panics on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A repository `<tmp>/proj.git` with two commits on `main` and a third on `feature`.
fn origin() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("proj.git");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    std::fs::write(repo.join("a.txt"), "two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("feature.txt"), "f\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "three"]);
    git(&repo, &["checkout", "-q", "main"]);
    (tmp, repo)
}

fn file_url(repo: &Path) -> String {
    format!("file://{}", repo.display())
}

fn commits(dir: &Path) -> String {
    git(dir, &["rev-list", "--count", "HEAD"]).trim().to_owned()
}

#[tokio::test]
async fn clone_into_the_default_directory() {
    let a = Agent::start();
    let (_tmp, repo) = origin();
    let r = a
        .post("/api/git/checkout", json!({"repoUrl": file_url(&repo)}))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["repoUrl"], file_url(&repo));
    assert_eq!(v["branch"], "main");
    let target = a.ws("proj");
    assert_eq!(v["targetDir"], target.to_str().unwrap());
    assert!(v["timestamp"].is_string());
    assert_eq!(
        std::fs::read_to_string(target.join("a.txt")).unwrap(),
        "two\n"
    );
    assert_eq!(commits(&target), "2");
    // The same target again: it exists and is not empty.
    let r = a
        .post("/api/git/checkout", json!({"repoUrl": file_url(&repo)}))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["code"], "FILE_EXISTS");
}

#[tokio::test]
async fn branch_depth_and_relative_target() {
    let a = Agent::start();
    let (_tmp, repo) = origin();
    let r = a
        .post(
            "/api/git/checkout",
            json!({"repoUrl": file_url(&repo), "branch": "feature", "depth": 1,
                   "targetDir": "clones/shallow", "timeoutMs": 60000}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["branch"], "feature");
    let target = a.ws("clones/shallow");
    assert_eq!(v["targetDir"], target.to_str().unwrap());
    assert!(target.join("feature.txt").exists());
    assert_eq!(commits(&target), "1");
    // A plain local path is accepted too (git ignores depth for those: full history).
    let r = a
        .post(
            "/api/git/checkout",
            json!({"repoUrl": repo.to_str().unwrap(), "targetDir": a.ws("plain").to_str().unwrap()}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(commits(&a.ws("plain")), "2");
}

#[tokio::test]
async fn missing_repository_and_branch() {
    let a = Agent::start();
    let (tmp, repo) = origin();
    let missing = tmp.path().join("nope");
    let r = a
        .post("/api/git/checkout", json!({"repoUrl": file_url(&missing)}))
        .await;
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["code"], "GIT_REPOSITORY_NOT_FOUND");
    assert_eq!(v["operation"], "git.clone");
    assert!(!a.ws("nope").exists());

    let r = a
        .post(
            "/api/git/checkout",
            json!({"repoUrl": file_url(&repo), "branch": "no-such-branch"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "GIT_BRANCH_NOT_FOUND");
    assert!(
        !a.ws("proj").exists(),
        "a failed clone leaves nothing behind"
    );
}

#[tokio::test]
async fn invalid_urls_and_options() {
    let a = Agent::start();
    for url in [
        "",
        "-uhttps://example.com/x",
        "--upload-pack=touch /tmp/x",
        "ext::sh -c touch% /tmp/pwned",
        "relative/path",
        "ftp://example.com/x.git",
    ] {
        let r = a.post("/api/git/checkout", json!({"repoUrl": url})).await;
        assert_eq!(r.status, 400, "{url}");
        assert_eq!(r.json()["code"], "INVALID_GIT_URL", "{url}");
    }
    let (_tmp, repo) = origin();
    for body in [
        json!({"repoUrl": file_url(&repo), "depth": 0}),
        json!({"repoUrl": file_url(&repo), "branch": "--upload-pack=x"}),
        json!({"branch": "main"}),
    ] {
        let r = a.post("/api/git/checkout", body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["code"], "VALIDATION_FAILED", "{body}");
    }
    // `timeoutMs: 0` is "no timeout", as on every route.
    let body = json!({"repoUrl": file_url(&repo), "timeoutMs": 0, "targetDir": "no-limit"});
    let r = a.post("/api/git/checkout", body).await;
    assert_eq!(r.status, 200, "{}", r.json());
}

#[tokio::test]
async fn credentials_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let file = std::fs::File::create(&log).unwrap();
    let a = Agent::start_with(|cmd| {
        cmd.env("RUST_LOG", "debug").stderr(file);
    });
    // Loopback port 1: nothing listens, the connection is refused at once.
    let r = a
        .post(
            "/api/git/checkout",
            json!({"repoUrl": "https://user:s3cr3t@127.0.0.1:1/x.git"}),
        )
        .await;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 502, "{body}");
    let v = r.json();
    assert_eq!(v["code"], "GIT_NETWORK_ERROR");
    assert!(!body.contains("s3cr3t"), "{body}");
    assert_eq!(v["context"]["repository"], "https://***@127.0.0.1:1/x.git");
    assert!(v["message"].as_str().unwrap().contains("***@127.0.0.1"));
    // An invalid URL with credentials is not echoed either.
    let r = a
        .post(
            "/api/git/checkout",
            json!({"repoUrl": "ftp://user:s3cr3t@127.0.0.1/x"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(!String::from_utf8_lossy(&r.body).contains("s3cr3t"));
    drop(a);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("git clone"), "debug log expected: {logged}");
    assert!(!logged.contains("s3cr3t"), "{logged}");
}

/// A git daemon on loopback that accepts one connection and never answers (for 60 s).
fn silent_daemon() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(60));
        drop(conn);
    });
    (port, hold)
}

/// The agent's children that run git.
fn git_children(a: &Agent) -> Vec<i32> {
    children_of(a.pid())
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("git"))
        })
        .collect()
}

#[tokio::test]
async fn timeout_kills_the_clone() {
    let a = Agent::start();
    let (port, hold) = silent_daemon();
    let started = Instant::now();
    let r = a
        .post(
            "/api/git/checkout",
            json!({"repoUrl": format!("git://127.0.0.1:{port}/x.git"), "timeoutMs": 1500}),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["code"], "GIT_CLONE_FAILED");
    assert!(v["message"].as_str().unwrap().contains("timed out"), "{v}");
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    // Nothing of the clone is left running, and no partial directory remains.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let git_children = git_children(&a);
        if git_children.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "git still running: {git_children:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!a.ws("x").exists());
    drop(hold);
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_clone_and_removes_it() {
    let a = Agent::start();
    // Against the silent daemon git has created the target and waits.
    let (port, hold) = silent_daemon();
    let target = a.ws("gone");
    // `timeoutMs: 0`: no limit, so only the client going away can end this clone.
    let body = json!({
        "repoUrl": format!("git://127.0.0.1:{port}/x.git"),
        "targetDir": "gone",
        "timeoutMs": 0,
    });
    let target_made = async {
        while !target.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = a.post("/api/git/checkout", body) => {
            panic!("the clone answered: {}", String::from_utf8_lossy(&r.body))
        }
        () = target_made => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("git never created the target"),
    }
    // The request was dropped with the select: git is stopped and the partial clone removed
    // (a SIGKILLed git could not clean up after itself).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let git_children = git_children(&a);
        if git_children.is_empty() && !target.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "git {git_children:?} still running or {} left behind",
            target.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(hold);
}
