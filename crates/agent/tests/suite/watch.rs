//! `/api/watch` (SSE) and `/api/watch/check` with real inotify.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Agent, Sse};

/// Opens a watch stream and checks the `watching` event comes first.
async fn watch(a: &Agent, body: Value) -> (Sse, Value) {
    let mut s = a.sse("/api/watch", body).await;
    let first = next(&mut s).await.expect("watching event");
    assert_eq!(first["type"], "watching", "{first}");
    assert!(first["watchId"].as_str().is_some_and(|id| !id.is_empty()));
    (s, first)
}

async fn next(s: &mut Sse) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("no event within 10 s")
}

/// Events until `done` says enough (or `limit` passes), as (eventType, path) pairs.
async fn collect(s: &mut Sse, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut events = Vec::new();
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.next()).await {
            Ok(Some(e)) => events.push(e),
            Ok(None) | Err(_) => break,
        }
    }
    events
}

fn has(events: &[Value], kind: &str, path: &Path) -> bool {
    events.iter().any(|e| {
        e["type"] == "event" && e["eventType"] == kind && e["path"] == path.to_str().unwrap()
    })
}

/// Kernel inotify watches held by process `pid`.
fn inotify_watches(pid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

#[tokio::test]
async fn watching_first_then_changes() {
    let a = Agent::start();
    let dir = a.ws("w");
    std::fs::create_dir(&dir).unwrap();
    let (mut s, first) = watch(&a, json!({"path": dir.to_str().unwrap()})).await;
    assert_eq!(first["path"], dir.to_str().unwrap());
    let (f, g, sub) = (dir.join("a.txt"), dir.join("b.txt"), dir.join("sub"));
    std::fs::write(&f, "1").unwrap();
    std::fs::create_dir(&sub).unwrap();
    std::fs::rename(&f, &g).unwrap();
    std::fs::remove_file(&g).unwrap();
    let events = collect(&mut s, Duration::from_secs(10), |ev| has(ev, "delete", &g)).await;
    for (kind, path) in [
        ("create", &f),
        ("modify", &f),
        ("move_from", &f),
        ("move_to", &g),
        ("delete", &g),
    ] {
        assert!(has(&events, kind, path), "{kind} {path:?}: {events:#?}");
    }
    let mkdir = events
        .iter()
        .find(|e| e["eventType"] == "create" && e["path"] == sub.to_str().unwrap())
        .unwrap();
    assert_eq!(mkdir["isDirectory"], true);
    assert!(mkdir["timestamp"].is_string());
    s.assert_framing();
}

#[tokio::test]
async fn quick_writes_are_coalesced() {
    let a = Agent::start();
    let dir = a.ws("c");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("hot.txt");
    std::fs::write(&file, "").unwrap();
    let (mut s, _) = watch(&a, json!({"path": "c"})).await;
    {
        use std::io::Write;
        let mut fh = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        for i in 0..100 {
            writeln!(fh, "line {i}").unwrap();
        }
    }
    std::fs::write(dir.join("end"), "").unwrap();
    let end = dir.join("end");
    let events = collect(&mut s, Duration::from_secs(10), |ev| {
        has(ev, "create", &end)
    })
    .await;
    let modifies = events
        .iter()
        .filter(|e| e["eventType"] == "modify" && e["path"] == file.to_str().unwrap())
        .count();
    assert!(
        (1..=10).contains(&modifies),
        "{modifies} modify events for 100 writes"
    );
}

#[tokio::test]
async fn include_exclude_and_defaults() {
    let a = Agent::start();
    let dir = a.ws("f");
    for d in ["f/skip", "f/keep", "f/node_modules"] {
        std::fs::create_dir_all(a.ws(d)).unwrap();
    }
    let (mut inc, _) = watch(&a, json!({"path": "f", "include": ["*.txt"]})).await;
    let (mut exc, _) = watch(&a, json!({"path": "f", "exclude": ["skip"]})).await;
    let (mut def, _) = watch(&a, json!({"path": "f"})).await;
    for f in [
        "a.txt",
        "b.log",
        "skip/c.txt",
        "keep/d.txt",
        "node_modules/e.txt",
    ] {
        std::fs::write(dir.join(f), "x").unwrap();
    }
    let last = dir.join("z.txt");
    std::fs::write(&last, "x").unwrap();
    let done = |ev: &[Value]| has(ev, "create", &last);
    let inc = collect(&mut inc, Duration::from_secs(10), done).await;
    let exc = collect(&mut exc, Duration::from_secs(10), done).await;
    let def = collect(&mut def, Duration::from_secs(10), done).await;
    let created = |events: &[Value], f: &str| has(events, "create", &dir.join(f));
    assert!(created(&inc, "a.txt") && created(&inc, "keep/d.txt") && created(&inc, "skip/c.txt"));
    assert!(!created(&inc, "b.log"), "{inc:#?}");
    assert!(
        created(&exc, "a.txt") && created(&exc, "b.log") && created(&exc, "node_modules/e.txt")
    );
    assert!(!created(&exc, "skip/c.txt"), "{exc:#?}");
    assert!(created(&def, "skip/c.txt") && created(&def, "keep/d.txt"));
    assert!(!created(&def, "node_modules/e.txt"), "{def:#?}");

    let r = a
        .post(
            "/api/watch",
            json!({"path": "f", "include": ["*.txt"], "exclude": ["x"]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "VALIDATION_FAILED");
    let r = a
        .post("/api/watch", json!({"path": "f", "events": ["explode"]}))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn new_subdirectories_are_watched_when_recursive() {
    let a = Agent::start();
    let dir = a.ws("r");
    std::fs::create_dir(&dir).unwrap();
    let (mut rec, _) = watch(&a, json!({"path": "r"})).await;
    let (mut flat, _) = watch(&a, json!({"path": "r", "recursive": false})).await;
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(sub.join("later.txt"), "x").unwrap();
    // Created together with its directories: seen through the catch-up scan at the latest.
    std::fs::create_dir_all(dir.join("deep/er")).unwrap();
    std::fs::write(dir.join("deep/er/now.txt"), "x").unwrap();
    let last = dir.join("last");
    std::fs::write(&last, "").unwrap();
    let done =
        |ev: &[Value]| has(ev, "create", &last) && has(ev, "create", &dir.join("deep/er/now.txt"));
    let rec = collect(&mut rec, Duration::from_secs(10), done).await;
    assert!(has(&rec, "create", &sub.join("later.txt")), "{rec:#?}");
    assert!(
        has(&rec, "create", &dir.join("deep/er/now.txt")),
        "{rec:#?}"
    );
    let flat = collect(&mut flat, Duration::from_secs(3), |ev| {
        has(ev, "create", &last)
    })
    .await;
    assert!(has(&flat, "create", &sub));
    assert!(!has(&flat, "create", &sub.join("later.txt")), "{flat:#?}");
}

#[tokio::test]
async fn missing_path_is_an_error() {
    let a = Agent::start();
    let r = a
        .post("/api/watch", json!({"path": "does/not/exist"}))
        .await;
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "FILE_NOT_FOUND");
    let r = a
        .post("/api/watch/check", json!({"path": "/does/not/exist"}))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn closing_the_stream_removes_the_watch() {
    let a = Agent::start();
    for d in ["g/a/b", "g/c"] {
        std::fs::create_dir_all(a.ws(d)).unwrap();
    }
    let before = inotify_watches(a.pid());
    let (s, _) = watch(&a, json!({"path": "g"})).await;
    assert_eq!(inotify_watches(a.pid()), before + 4, "g, g/a, g/a/b, g/c");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while inotify_watches(a.pid()) != before {
        assert!(Instant::now() < deadline, "inotify watches not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deleting_the_watched_directory_stops_the_stream() {
    let a = Agent::start();
    let dir = a.ws("gone");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), "").unwrap();
    let (mut s, _) = watch(&a, json!({"path": "gone"})).await;
    std::fs::remove_dir_all(&dir).unwrap();
    let events = collect(&mut s, Duration::from_secs(10), |ev| {
        ev.last().is_some_and(|e| e["type"] == "stopped")
    })
    .await;
    assert!(has(&events, "delete", &dir.join("f")), "{events:#?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "stopped", "{events:#?}");
    assert!(last["reason"].as_str().unwrap().contains("deleted"));
    assert!(
        next(&mut s).await.is_none(),
        "the stream ends after stopped"
    );
}

#[tokio::test]
async fn check_changes_across_reconnects() {
    let a = Agent::start();
    let dir = a.ws("t");
    std::fs::create_dir(&dir).unwrap();
    let check = |since: Option<&str>| {
        let mut body = json!({"path": "t"});
        if let Some(since) = since {
            body["since"] = json!(since);
        }
        a.post("/api/watch/check", body)
    };
    let first = check(None).await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let first = first.json();
    assert_eq!(first["success"], true);
    assert_eq!(first["status"], "unchanged");
    assert!(first.get("reason").is_none());
    let v0 = first["version"].as_str().unwrap().to_owned();
    let (id, cursor) = v0.rsplit_once(':').unwrap();
    assert_eq!(cursor, "0");

    assert_eq!(check(Some(&v0)).await.json()["status"], "unchanged");
    std::fs::write(dir.join("new.txt"), "x").unwrap();
    let changed = check(Some(&v0)).await.json();
    assert_eq!(changed["status"], "changed", "{changed}");
    let v1 = changed["version"].as_str().unwrap().to_owned();
    assert_ne!(v1, v0);
    assert_eq!(check(Some(&v1)).await.json()["status"], "unchanged");

    // A token of another watch of this agent: expired; of another agent: restarted.
    let (prefix, _) = id.rsplit_once('-').unwrap();
    let other = check(Some(&format!("{prefix}-999999:0"))).await.json();
    assert_eq!(other["status"], "resync");
    assert_eq!(other["reason"], "expired");
    assert_eq!(other["version"], v1);
    let foreign = check(Some("watch-00000000-1:3")).await.json();
    assert_eq!(foreign["status"], "resync");
    assert_eq!(foreign["reason"], "restarted");

    for bad in [format!("{id}:999"), "garbage".to_owned()] {
        let r = check(Some(&bad)).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["code"], "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn only_the_requested_event_types() {
    let a = Agent::start();
    let dir = a.ws("e");
    std::fs::create_dir(&dir).unwrap();
    let f = dir.join("f");
    std::fs::write(&f, "").unwrap();
    let (mut s, _) = watch(&a, json!({"path": "e", "events": ["attrib", "delete"]})).await;
    std::fs::write(dir.join("ignored"), "x").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::remove_file(&f).unwrap();
    let events = collect(&mut s, Duration::from_secs(10), |ev| has(ev, "delete", &f)).await;
    assert!(has(&events, "attrib", &f), "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| e["eventType"] == "attrib" || e["eventType"] == "delete"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_flood_ends_the_stream_with_a_resync_error() {
    let a = Agent::start();
    let dir = a.ws("flood");
    std::fs::create_dir(&dir).unwrap();
    let (mut s, _) = watch(&a, json!({"path": "flood"})).await;
    // Far more distinct changes than a subscriber may have pending, made while the client
    // reads nothing (so the socket fills up and the queue overflows however fast this runs).
    for i in 0..20_000 {
        std::fs::File::create(dir.join(format!("f{i}"))).unwrap();
    }
    let events = collect(&mut s, Duration::from_secs(60), |ev| {
        ev.last().is_some_and(|e| e["type"] == "error")
    })
    .await;
    let last = events.last().unwrap();
    assert_eq!(
        last["type"],
        "error",
        "{} events, last {last}",
        events.len()
    );
    assert!(last["error"].as_str().unwrap().contains("resync"), "{last}");
    assert!(
        next(&mut s).await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn file_api_writes_show_as_modify_of_the_file() {
    let a = Agent::start();
    let dir = a.ws("api");
    std::fs::create_dir(&dir).unwrap();
    let (mut s, _) = watch(&a, json!({"path": "api", "events": ["modify"]})).await;
    let target = dir.join("w.txt");
    let r = a
        .post(
            "/api/write",
            json!({"path": target.to_str().unwrap(), "content": "x"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let events = collect(&mut s, Duration::from_secs(10), |ev| {
        has(ev, "modify", &target)
    })
    .await;
    assert!(has(&events, "modify", &target), "{events:#?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(".sandpit-write"), "{text}");
}

#[tokio::test]
async fn the_watch_limit_evicts_idle_retained_watches_first() {
    let a = Agent::start_with(|cmd| {
        cmd.env("SANDPIT_MAX_WATCHES", "2");
    });
    for d in ["l1", "l2", "l3", "l4"] {
        std::fs::create_dir(a.ws(d)).unwrap();
    }
    let check = |path: &'static str, since: Option<String>| {
        let mut body = json!({"path": path});
        if let Some(since) = since {
            body["since"] = json!(since);
        }
        a.post("/api/watch/check", body)
    };
    let v1 = check("l1", None).await.json()["version"].clone();
    let v2 = check("l2", None).await.json()["version"].clone();
    // A third retained watch evicts the longest-idle one (l1).
    assert_eq!(check("l3", None).await.status, 200);
    let again = check("l2", v2.as_str().map(String::from)).await.json();
    assert_eq!(again["status"], "unchanged", "l2 is still live");
    let r = check("l1", v1.as_str().map(String::from)).await.json();
    assert_eq!(r["status"], "resync", "{r}");
    assert_eq!(r["reason"], "expired");
    // Streams are never evicted: with two of them open, a third watch is refused.
    let (_s1, _) = watch(&a, json!({"path": "l1", "recursive": false})).await;
    let (_s2, _) = watch(&a, json!({"path": "l2", "recursive": false})).await;
    let r = a.post("/api/watch", json!({"path": "l4"})).await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "RESOURCE_BUSY");
}

#[tokio::test]
async fn a_single_file_can_be_watched() {
    let a = Agent::start();
    let file = a.ws("single.txt");
    std::fs::write(&file, "a").unwrap();
    let (mut s, first) = watch(&a, json!({"path": "single.txt"})).await;
    assert_eq!(first["path"], file.to_str().unwrap());
    {
        use std::io::Write;
        let mut fh = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        fh.write_all(b"b").unwrap();
    }
    let events = collect(&mut s, Duration::from_secs(10), |ev| {
        has(ev, "modify", &file)
    })
    .await;
    assert!(has(&events, "modify", &file), "{events:#?}");
    std::fs::remove_file(&file).unwrap();
    let events = collect(&mut s, Duration::from_secs(10), |ev| {
        ev.last().is_some_and(|e| e["type"] == "stopped")
    })
    .await;
    assert_eq!(events.last().unwrap()["type"], "stopped", "{events:#?}");
}
