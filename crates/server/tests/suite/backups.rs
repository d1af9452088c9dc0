//! Backups end to end: real sandboxes (LocalDriver, sandpit-agent, the default image), the real
//! object store on the local backend and on a real S3 server (s3s-fs on loopback).
//!
//! Backup → destroy → restore into a new sandbox gives a byte-identical tree (modes, symlinks,
//! empty dirs, a 1 GiB sparse-ish file, unicode names), excludes and .gitignore are honoured, a
//! symlink to /etc/shadow stays a symlink, a missing or expired backup answers its code, a
//! tampered archive fails the restore and leaves the old directory as it was, and another
//! tenant's key can neither see, restore nor delete the backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use sandpit_server::objects::{ObjectStoreConfig, S3Config};
use serde_json::{Value, json};

use super::assert_error;
use super::e2e::Real;

/// Builds the test tree in `/workspace/proj` of sandbox `id`.
const MAKE_TREE: &str = r#"set -e
mkdir -p /workspace/proj && cd /workspace/proj
mkdir -p empty 'sub/deep' 'ünï cødé/日本' node_modules/pkg build
printf 'hello\n' > a.txt
printf '#!/bin/sh\necho hi\n' > x.sh && chmod 751 x.sh
printf 'secret' > private && chmod 600 private
printf 'こんにちは' > 'ünï cødé/日本/ファイル.txt'
ln -s /etc/shadow shadow
ln -s ../../x.sh sub/deep/rel
ln -s /proc/1/root/etc escape
truncate -s 1G sparse
printf 'middle' | dd of=sparse bs=1 seek=536870912 conv=notrunc status=none
head -c 3000000 /dev/urandom > random.bin
printf 'build/\n*.log\n' > .gitignore
printf 'x' > build/out.o
printf 'x' > debug.log
printf 'x' > node_modules/pkg/index.js
chmod 700 sub
"#;

/// Lists a tree with type, mode, size and link target of each entry, and a SHA-256 of each
/// file, leaving out `node_modules`, `build` and `*.log` (what the backup excludes).
const MANIFEST: &str = r#"cd /workspace/proj && \
find . \( -path ./node_modules -o -path ./build -o -name '*.log' \) -prune -o \
  -printf '%p %y %m %s %l\n' | LC_ALL=C sort && \
find . \( -path ./node_modules -o -path ./build -o -name '*.log' \) -prune -o -type f -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum"#;

async fn sh(real: &Real, id: &str, command: &str) -> String {
    let b = real.exec(id, command).await;
    assert_eq!(b["exitCode"], 0, "{command}: {b}");
    b["stdout"].as_str().unwrap_or_default().to_owned()
}

/// `POST /v1/sandboxes/{id}/{what}` with the admin key.
async fn post(real: &Real, id: &str, what: &str, body: Value) -> (u16, Value) {
    real.call(Method::POST, &format!("/v1/sandboxes/{id}/{what}"), body)
        .await
}

async fn create_sandbox(real: &Real, key: &str, id: &str) {
    let (s, b) = real
        .call_as(key, Method::POST, "/v1/sandboxes", json!({"id": id}))
        .await;
    assert!(s == 200 || s == 201, "{b}");
}

/// The object file of a backup on either backend.
fn object_file(root: &Path, id: &str) -> PathBuf {
    root.join("backups").join(format!("{id}.tar.zst"))
}

async fn roundtrip(real: &Real, objects_root: &Path) {
    let key = real.key.clone();
    create_sandbox(real, &key, "bk-src").await;
    sh(real, "bk-src", MAKE_TREE).await;
    let manifest = sh(real, "bk-src", MANIFEST).await;
    assert!(
        manifest.contains("./shadow l 777 11 /etc/shadow"),
        "{manifest}"
    );
    assert!(manifest.contains("./sparse f 644 1073741824"), "{manifest}");

    let (s, backup) = post(
        real,
        "bk-src",
        "backups",
        json!({"dir": "/workspace/proj", "name": "first", "excludes": ["node_modules"],
                   "gitignore": true}),
    )
    .await;
    assert_eq!(s, 201, "{backup}");
    let id = backup["id"].as_str().unwrap().to_owned();
    assert_eq!(backup["dir"], "/workspace/proj");
    assert_eq!(backup["name"], "first");
    let size = backup["sizeBytes"].as_u64().unwrap();
    assert!(size > 3_000_000 && size < 20_000_000, "{backup}");
    // The 1 GiB sparse file is stored as its data (a GNU sparse entry), not as 1 GiB of zeros.
    let raw = backup["rawBytes"].as_u64().unwrap();
    assert!(raw > 3_000_000 && raw < 10_000_000, "{backup}");
    assert!(object_file(objects_root, &id).is_file());

    // Listed, readable; another tenant sees nothing and can do nothing with it.
    let (s, list) = real.call(Method::GET, "/v1/backups", Value::Null).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["backups"][0]["id"], id.as_str());
    let (s, b) = real
        .call(Method::POST, "/v1/keys", json!({"tenant": "other"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let other = b["key"].as_str().unwrap().to_owned();
    let path = format!("/v1/backups/{id}");
    let (s, b) = real.call_as(&other, Method::GET, &path, Value::Null).await;
    assert_error(s, &b, 404, "BACKUP_NOT_FOUND");
    let (s, b) = real
        .call_as(&other, Method::GET, "/v1/backups", Value::Null)
        .await;
    assert_eq!(
        (s, b["backups"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{b}"
    );
    create_sandbox(real, &other, "thief").await;
    let (s, b) = real
        .call_as(
            &other,
            Method::POST,
            "/v1/sandboxes/thief/restore",
            json!({"backupId": id}),
        )
        .await;
    assert_error(s, &b, 404, "BACKUP_NOT_FOUND");
    let (s, b) = real
        .call_as(&other, Method::DELETE, &path, Value::Null)
        .await;
    assert_error(s, &b, 404, "BACKUP_NOT_FOUND");
    assert!(object_file(objects_root, &id).is_file());

    // Destroy the source; restore into a new sandbox over an existing directory.
    let (s, b) = real
        .call(Method::DELETE, "/v1/sandboxes/bk-src", Value::Null)
        .await;
    assert!(s == 200 || s == 204, "{b}");
    create_sandbox(real, &key, "bk-dst").await;
    sh(
        real,
        "bk-dst",
        "mkdir -p /workspace/proj && echo old > /workspace/proj/old.txt",
    )
    .await;
    let (s, done) = post(real, "bk-dst", "restore", json!({"backupId": id})).await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["success"], true);
    assert_eq!(done["dir"], "/workspace/proj");
    let restored = sh(real, "bk-dst", MANIFEST).await;
    assert_eq!(restored, manifest, "restored tree differs");
    let gone = sh(
        real,
        "bk-dst",
        "cd /workspace/proj; for f in node_modules build debug.log old.txt; do \
         test -e $f && echo present $f; done; true",
    )
    .await;
    assert_eq!(gone, "", "excluded or old entries present");
    let du_kib: u64 = sh(real, "bk-dst", "du -k /workspace/proj/sparse | cut -f1")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(
        du_kib < 64 * 1024,
        "the sparse file was restored dense ({du_kib} KiB)"
    );
    let staging = sh(
        real,
        "bk-dst",
        "ls -a /workspace | grep -c sandpit-restore || true",
    )
    .await;
    assert_eq!(staging.trim(), "0", "staging left behind");

    // Into another directory of the same sandbox.
    let (s, done) = post(
        real,
        "bk-dst",
        "restore",
        json!({"backupId": id, "dir": "/tmp/copy"}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    let copy = sh(
        real,
        "bk-dst",
        &MANIFEST.replace("/workspace/proj", "/tmp/copy"),
    )
    .await;
    assert_eq!(copy, manifest);

    // A tampered archive: the restore fails and the directory is as it was.
    sh(real, "bk-dst", "echo changed > /workspace/proj/a.txt").await;
    let before = sh(real, "bk-dst", MANIFEST).await;
    let file = object_file(objects_root, &id);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let (s, b) = post(real, "bk-dst", "restore", json!({"backupId": id})).await;
    assert_error(s, &b, 500, "BACKUP_RESTORE_FAILED");
    assert_eq!(
        sh(real, "bk-dst", MANIFEST).await,
        before,
        "a failed restore changed the tree"
    );
    let staging = sh(
        real,
        "bk-dst",
        "ls -a /workspace | grep -c sandpit-restore || true",
    )
    .await;
    assert_eq!(staging.trim(), "0", "staging left behind");
    // Truncated (an interrupted upload or a lost tail): the same.
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let (s, b) = post(real, "bk-dst", "restore", json!({"backupId": id})).await;
    assert_error(s, &b, 500, "BACKUP_RESTORE_FAILED");
    assert_eq!(sh(real, "bk-dst", MANIFEST).await, before);

    // Missing: an unknown id, and a record whose archive is gone.
    let (s, b) = post(real, "bk-dst", "restore", json!({"backupId": "nope"})).await;
    assert_error(s, &b, 404, "BACKUP_NOT_FOUND");
    std::fs::remove_file(&file).unwrap();
    let (s, b) = post(real, "bk-dst", "restore", json!({"backupId": id})).await;
    assert_error(s, &b, 404, "BACKUP_NOT_FOUND");

    // Deleted by its owner: gone from the list.
    let (s, _) = real.call(Method::DELETE, &path, Value::Null).await;
    assert_eq!(s, 204);
    let (s, b) = real.call(Method::GET, &path, Value::Null).await;
    assert_error(s, &b, 404, "BACKUP_NOT_FOUND");

    // Expired.
    let (s, short) = post(
        real,
        "bk-dst",
        "backups",
        json!({"dir": "/workspace/proj/sub", "ttl": 1}),
    )
    .await;
    assert_eq!(s, 201, "{short}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, b) = post(real, "bk-dst", "restore", json!({"backupId": short["id"]})).await;
    assert_error(s, &b, 400, "BACKUP_EXPIRED");

    // Bad input.
    for body in [
        json!({"dir": "/etc"}),
        json!({"dir": "/workspace/../etc"}),
        json!({"dir": "relative"}),
        json!({"dir": "/workspace/proj", "compression": {"format": "gzip"}}),
        json!({"dir": "/workspace/proj", "ttl": "soon"}),
        json!({"dir": "/workspace/missing"}),
    ] {
        let (s, b) = post(real, "bk-dst", "backups", body.clone()).await;
        assert_error(s, &b, 400, "INVALID_BACKUP_CONFIG");
    }
    let (s, b) = post(real, "nosuch", "backups", json!({"dir": "/workspace"})).await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_backup_roundtrip_local_store() {
    let Some(real) = Real::start().await else {
        return;
    };
    let root = real.data_dir.join("objects");
    roundtrip(&real, &root).await;
    real.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_backup_roundtrip_s3_store() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = sandpit_s3_test_server::start(s3_root.path()).unwrap();
    s3.create_bucket("sandpit-backups").unwrap();
    let config = S3Config {
        bucket: "sandpit-backups".into(),
        region: s3.region.clone(),
        endpoint: Some(s3.endpoint.clone()),
        access_key_id: Some(s3.access_key.clone()),
        secret_access_key: Some(s3.secret_key.clone()),
        session_token: None,
        path_style: true,
        prefix: String::new(),
    };
    let Some(real) = Real::start_with(|c| c.object_store = ObjectStoreConfig::S3(config)).await
    else {
        return;
    };
    // Nothing on the local disk: the objects are in the bucket.
    roundtrip(&real, &s3.root.join("sandpit-backups")).await;
    assert!(!real.data_dir.join("objects").join("backups").exists());
    real.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_backup_quota_refuses() {
    let Some(real) = Real::start_with(|c| {
        c.backup_limits = sandpit_server::backups::BackupLimits {
            max_count: 1,
            max_bytes: 1 << 30,
        };
    })
    .await
    else {
        return;
    };
    let key = real.key.clone();
    create_sandbox(&real, &key, "bk-q").await;
    sh(
        &real,
        "bk-q",
        "mkdir -p /workspace/q && echo 1 > /workspace/q/f",
    )
    .await;
    let (s, b) = post(&real, "bk-q", "backups", json!({"dir": "/workspace/q"})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = post(&real, "bk-q", "backups", json!({"dir": "/workspace/q"})).await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    real.stop().await;
}

/// `/workspace` is a mount point of its own: restore stages inside it and moves entries over.
#[tokio::test(flavor = "multi_thread")]
async fn serial_backup_restore_into_the_workspace_mount_point() {
    let Some(real) = Real::start().await else {
        return;
    };
    let key = real.key.clone();
    create_sandbox(&real, &key, "bk-ws").await;
    sh(
        &real,
        "bk-ws",
        "mkdir -p /workspace/d/e && echo a > /workspace/a && echo b > /workspace/d/b \
         && chmod 700 /workspace/d",
    )
    .await;
    let list = "cd /workspace && find . -printf '%p %y %m %s\\n' | LC_ALL=C sort";
    let before = sh(&real, "bk-ws", list).await;
    let (s, b) = post(&real, "bk-ws", "backups", json!({"dir": "/workspace"})).await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    sh(
        &real,
        "bk-ws",
        "rm /workspace/a && echo c > /workspace/c && rm -r /workspace/d",
    )
    .await;

    // A tampered archive changes nothing, even here.
    let file = object_file(&real.data_dir.join("objects"), &id);
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() - 10]).unwrap();
    let (s, b) = post(&real, "bk-ws", "restore", json!({"backupId": id})).await;
    assert_error(s, &b, 500, "BACKUP_RESTORE_FAILED");
    let changed = sh(&real, "bk-ws", list).await;
    assert!(
        changed.contains("./c f") && !changed.contains("./a f"),
        "{changed}"
    );
    assert!(!changed.contains("sandpit-"), "{changed}");

    std::fs::write(&file, &good).unwrap();
    let (s, b) = post(&real, "bk-ws", "restore", json!({"backupId": id})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sh(&real, "bk-ws", list).await, before);
    real.stop().await;
}
