//! File endpoints.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::harness::Agent;

#[tokio::test]
async fn text_write_read_round_trip_and_relative_paths() {
    let a = Agent::start();
    let r = a
        .post(
            "/api/write",
            json!({"path": "notes/a.txt", "content": "héllo\nworld", "encoding": "utf-8"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "notes/a.txt");
    assert_eq!(
        std::fs::read_to_string(a.ws("notes/a.txt")).unwrap(),
        "héllo\nworld"
    );
    let v = a
        .post("/api/read", json!({"path": a.ws("notes/a.txt")}))
        .await
        .json();
    assert_eq!(v["content"], "héllo\nworld");
    assert_eq!(v["encoding"], "utf-8");
    assert_eq!(v["isBinary"], false);
    assert_eq!(v["mimeType"], "text/plain");
    assert_eq!(v["size"], 12);
    // Relative paths follow the session's cwd.
    a.sh("s", "cd notes").await;
    let v = a
        .post("/api/read", json!({"path": "a.txt", "sessionId": "s"}))
        .await
        .json();
    assert_eq!(v["content"], "héllo\nworld");
    let v = a
        .post("/api/exists", json!({"path": "a.txt", "sessionId": "s"}))
        .await
        .json();
    assert_eq!(v["exists"], true);
    let v = a.post("/api/exists", json!({"path": "a.txt"})).await.json();
    assert_eq!(v["exists"], false);
}

#[tokio::test]
async fn binary_base64_round_trip() {
    let a = Agent::start();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let r = a
        .post(
            "/api/write",
            json!({"path": "bin.dat", "content": B64.encode(&bytes), "encoding": "base64"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(std::fs::read(a.ws("bin.dat")).unwrap(), bytes);
    let v = a.post("/api/read", json!({"path": "bin.dat"})).await.json();
    assert_eq!(v["isBinary"], true);
    assert_eq!(v["encoding"], "base64");
    assert_eq!(v["size"], 1000);
    assert_eq!(B64.decode(v["content"].as_str().unwrap()).unwrap(), bytes);
    // A PNG is recognised by its magic; base64 can be forced for text.
    let png = [
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, b'I', b'H', b'D', b'R',
    ];
    std::fs::write(a.ws("pic"), png).unwrap();
    let v = a.post("/api/read", json!({"path": "pic"})).await.json();
    assert_eq!(v["mimeType"], "image/png");
    std::fs::write(a.ws("t.json"), "{\"a\":1}").unwrap();
    let v = a
        .post("/api/read", json!({"path": "t.json", "encoding": "base64"}))
        .await
        .json();
    assert_eq!(v["encoding"], "base64");
    assert_eq!(v["mimeType"], "application/json");
    assert_eq!(v["content"], B64.encode("{\"a\":1}"));
    let r = a
        .post(
            "/api/write",
            json!({"path": "x", "content": "!!!not base64", "encoding": "base64"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "VALIDATION_FAILED");
}

#[tokio::test]
async fn write_keeps_mode_and_writes_through_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let a = Agent::start();
    std::fs::write(a.ws("run.sh"), "old").unwrap();
    std::fs::set_permissions(a.ws("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink(a.ws("run.sh"), a.ws("link")).unwrap();
    assert_eq!(
        a.post("/api/write", json!({"path": "link", "content": "new"}))
            .await
            .status,
        200
    );
    assert_eq!(std::fs::read_to_string(a.ws("run.sh")).unwrap(), "new");
    assert!(
        std::fs::symlink_metadata(a.ws("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::metadata(a.ws("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    let leftovers: Vec<_> = std::fs::read_dir(&a.workspace)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("sandpit"))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test]
async fn read_stream_sends_metadata_chunks_and_completion() {
    let a = Agent::start();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(a.ws("big.bin"), &bytes).unwrap();
    let events = a
        .sse_all("/api/read/stream", json!({"path": "big.bin"}))
        .await;
    assert_eq!(events[0]["type"], "metadata");
    assert_eq!(events[0]["isBinary"], true);
    assert_eq!(events[0]["encoding"], "base64");
    assert_eq!(events[0]["size"], 200_000);
    let chunks: Vec<&Value> = events.iter().filter(|e| e["type"] == "chunk").collect();
    assert_eq!(chunks.len(), 4);
    let mut decoded = Vec::new();
    for c in &chunks {
        decoded.extend(B64.decode(c["data"].as_str().unwrap()).unwrap());
    }
    assert_eq!(decoded, bytes);
    assert_eq!(
        B64.decode(chunks[0]["data"].as_str().unwrap())
            .unwrap()
            .len(),
        65_535
    );
    assert_eq!(
        events.last().unwrap(),
        &json!({"type": "complete", "bytesRead": 200_000})
    );

    // Text, with multi-byte characters straddling the chunk size.
    let text = "aé".repeat(50_000);
    std::fs::write(a.ws("t.txt"), &text).unwrap();
    let events = a
        .sse_all("/api/read/stream", json!({"path": "t.txt"}))
        .await;
    assert_eq!(events[0]["encoding"], "utf-8");
    let joined: String = events
        .iter()
        .filter(|e| e["type"] == "chunk")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(joined, text);

    // Errors are events with HTTP 200.
    let events = a
        .sse_all("/api/read/stream", json!({"path": "missing"}))
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "error");
    assert!(events[0]["error"].as_str().unwrap().contains("not found"));
    let events = a.sse_all("/api/read/stream", json!({"nopath": 1})).await;
    assert_eq!(events[0]["type"], "error");
}

#[tokio::test]
async fn read_errors_map_to_codes() {
    let a = Agent::start();
    let r = a.post("/api/read", json!({"path": "nope.txt"})).await;
    assert_eq!(r.status, 404);
    let e = r.json();
    assert_eq!(e["code"], "FILE_NOT_FOUND");
    assert_eq!(e["context"]["path"], "nope.txt");
    let r = a.post("/api/read", json!({"path": a.workspace})).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("IS_DIRECTORY"))
    );
    let big = std::fs::File::create(a.ws("huge")).unwrap();
    big.set_len(33 * 1024 * 1024).unwrap();
    let r = a.post("/api/read", json!({"path": "huge"})).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (413, json!("FILE_TOO_LARGE"))
    );
    std::fs::write(a.ws("plain"), "x").unwrap();
    let r = a.post("/api/read", json!({"path": "plain/child"})).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("NOT_DIRECTORY"))
    );
    for bad in [json!(""), json!("a\u{0}b"), json!("x".repeat(5000))] {
        let r = a.post("/api/read", json!({"path": bad})).await;
        assert_eq!(
            (r.status, r.json()["code"].clone()),
            (400, json!("VALIDATION_FAILED"))
        );
    }
}

#[tokio::test]
async fn delete_rename_move_mkdir() {
    let a = Agent::start();
    std::fs::write(a.ws("f"), "1").unwrap();
    std::fs::create_dir(a.ws("d")).unwrap();
    let r = a.post("/api/delete", json!({"path": "d"})).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("IS_DIRECTORY"))
    );
    let r = a.post("/api/delete", json!({"path": "missing"})).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, json!("FILE_NOT_FOUND"))
    );

    let v = a
        .post("/api/rename", json!({"oldPath": "f", "newPath": "g"}))
        .await
        .json();
    assert_eq!(
        (v["path"].clone(), v["newPath"].clone()),
        (json!("f"), json!("g"))
    );
    assert!(a.ws("g").exists() && !a.ws("f").exists());
    // Into an existing directory, like mv.
    let v = a
        .post(
            "/api/move",
            json!({"sourcePath": "g", "destinationPath": "d"}),
        )
        .await
        .json();
    assert_eq!(v["newPath"], "d");
    assert_eq!(std::fs::read_to_string(a.ws("d/g")).unwrap(), "1");
    let r = a
        .post(
            "/api/move",
            json!({"sourcePath": "nothing", "destinationPath": "x"}),
        )
        .await;
    assert_eq!(r.status, 404);
    // Across filesystems (/dev/shm is a tmpfs).
    if std::path::Path::new("/dev/shm").is_dir() {
        let dest = format!("/dev/shm/sandpit-agent-test-{}", std::process::id());
        let r = a
            .post(
                "/api/move",
                json!({"sourcePath": "d", "destinationPath": dest}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(std::fs::read_to_string(format!("{dest}/g")).unwrap(), "1");
        assert!(!a.ws("d").exists());
        std::fs::remove_dir_all(dest).unwrap();
    }
    let v = a.post("/api/delete", json!({"path": "gone-soon"})).await;
    assert_eq!(v.status, 404);

    let r = a.post("/api/mkdir", json!({"path": "a/b/c"})).await;
    assert_eq!(r.status, 404);
    let v = a
        .post("/api/mkdir", json!({"path": "a/b/c", "recursive": true}))
        .await
        .json();
    assert_eq!(v["recursive"], true);
    assert!(a.ws("a/b/c").is_dir());
    let r = a.post("/api/mkdir", json!({"path": "a"})).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (409, json!("FILE_EXISTS"))
    );
    assert_eq!(
        a.post("/api/mkdir", json!({"path": "a", "recursive": true}))
            .await
            .status,
        200
    );
    std::fs::write(a.ws("a/file"), "").unwrap();
    assert_eq!(
        a.post("/api/delete", json!({"path": "a/file"}))
            .await
            .status,
        200
    );
    assert!(!a.ws("a/file").exists());
}

#[tokio::test]
async fn list_files_reports_entries() {
    use std::os::unix::fs::PermissionsExt;
    let a = Agent::start();
    std::fs::create_dir_all(a.ws("p/sub")).unwrap();
    std::fs::create_dir_all(a.ws("p/.git/objects")).unwrap();
    std::fs::write(a.ws("p/run.sh"), "#!/bin/sh").unwrap();
    std::fs::set_permissions(a.ws("p/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(a.ws("p/sub/inner.txt"), "12345").unwrap();
    std::fs::write(a.ws("p/.hidden"), "").unwrap();
    std::os::unix::fs::symlink("run.sh", a.ws("p/link")).unwrap();

    let v = a.post("/api/list-files", json!({"path": "p"})).await.json();
    let names: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["link", "run.sh", "sub"]);
    assert_eq!(v["count"], 3);
    let run = &v["files"][1];
    assert_eq!(run["type"], "file");
    assert_eq!(run["mode"], "rwxr-xr-x");
    assert_eq!(run["size"], 9);
    assert_eq!(run["relativePath"], "run.sh");
    assert_eq!(run["absolutePath"], a.ws("p/run.sh").to_str().unwrap());
    assert_eq!(
        run["permissions"],
        json!({"readable": true, "writable": true, "executable": true})
    );
    assert!(run["modifiedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["files"][0]["type"], "symlink");
    assert_eq!(v["files"][2]["type"], "directory");

    let v = a
        .post(
            "/api/list-files",
            json!({"path": "p", "options": {"recursive": true}}),
        )
        .await
        .json();
    let rel: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["relativePath"].as_str().unwrap())
        .collect();
    assert_eq!(rel, ["link", "run.sh", "sub", "sub/inner.txt"]);
    let v = a
        .post(
            "/api/list-files",
            json!({"path": "p", "options": {"recursive": true, "includeHidden": true}}),
        )
        .await
        .json();
    let rel: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["relativePath"].as_str().unwrap())
        .collect();
    assert_eq!(
        rel,
        [
            ".git",
            ".git/objects",
            ".hidden",
            "link",
            "run.sh",
            "sub",
            "sub/inner.txt"
        ]
    );

    let r = a.post("/api/list-files", json!({"path": "p/run.sh"})).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("NOT_DIRECTORY"))
    );
    let r = a.post("/api/list-files", json!({"path": "nope"})).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, json!("FILE_NOT_FOUND"))
    );
}
