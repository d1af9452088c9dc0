//! Snapshot export and import through the object store, end to end on real sandboxes: the
//! local store on one server, and a real S3 server (s3s-fs on loopback) shared by two servers
//! with separate data dirs (a snapshot moving between machines). Checked: the imported
//! snapshot gives sandboxes the same files (owners, modes, symlinks, deleted image files,
//! replaced directories), another tenant can neither export nor import, a corrupt or truncated
//! archive fails with SNAPSHOT_IMPORT_FAILED and leaves no snapshot, layer or staging file.

use std::path::{Path, PathBuf};

use reqwest::Method;
use sandpit_server::objects::{ObjectStoreConfig, S3Config};
use serde_json::{Value, json};

use super::e2e::Real;
use super::{assert_error, created_key, key_request};

/// The files the test makes, and how it lists them (type, owner, mode, link target, content).
const MAKE: &str = "set -e; mkdir -p /workspace/proj/empty /workspace/proj/sub \
    && echo hello > /workspace/proj/a.txt && chmod 640 /workspace/proj/a.txt \
    && echo mine > /workspace/proj/owned && chown 1000:1000 /workspace/proj/owned \
    && ln -s a.txt /workspace/proj/link && chmod 4755 /workspace/proj/sub \
    && head -c 3000000 /dev/urandom > /workspace/proj/random.bin \
    && rm /etc/issue && rm -rf /etc/apt && mkdir /etc/apt && echo new > /etc/apt/only";
const LIST: &str = "cd /workspace/proj && find . -printf '%p %y %U:%G %m %l\\n' | LC_ALL=C sort \
    && sha256sum a.txt owned random.bin && ls -A /etc/apt && (test -e /etc/issue && echo has-issue || true)";

async fn out(rs: &Real, key: &str, id: &str, command: &str) -> String {
    let (s, b) = rs.exec_as(key, id, command).await;
    assert_eq!(s, 200, "{id}: {command}: {b}");
    assert_eq!(b["exitCode"], 0, "{id}: {command}: {b}");
    b["stdout"].as_str().unwrap_or_default().to_owned()
}

async fn create(rs: &Real, key: &str, body: Value) {
    let (s, b) = rs.call_as(key, Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
}

/// Makes the tree in a new sandbox, snapshots it; returns (snapshot id, listing).
async fn snapshot_of_tree(rs: &Real) -> (String, String) {
    create(rs, &rs.key, json!({"id": "src"})).await;
    out(rs, &rs.key, "src", MAKE).await;
    let listing = out(rs, &rs.key, "src", LIST).await;
    assert!(listing.contains("./owned f 1000:1000 644"), "{listing}");
    assert!(!listing.contains("has-issue"), "{listing}");
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes/src/snapshots",
            json!({"name": "to-export"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    (b["id"].as_str().unwrap().to_owned(), listing)
}

async fn export(rs: &Real, key: &str, snapshot: &str) -> (u16, Value) {
    rs.call_as(
        key,
        Method::POST,
        &format!("/v1/snapshots/{snapshot}/export"),
        Value::Null,
    )
    .await
}

async fn import(rs: &Real, key: &str, body: Value) -> (u16, Value) {
    rs.call_as(key, Method::POST, "/v1/snapshots/import", body)
        .await
}

/// Snapshot ids of the caller's tenant.
async fn snapshot_ids(rs: &Real, key: &str) -> Vec<String> {
    let (s, b) = rs
        .call_as(key, Method::GET, "/v1/snapshots", Value::Null)
        .await;
    assert_eq!(s, 200, "{b}");
    b["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Imports `key` into a new snapshot, a sandbox from it, and checks its files equal `listing`.
async fn import_and_check(rs: &Real, key: &str, sha: &str, listing: &str, sandbox: &str) {
    let (s, b) = import(rs, &rs.key, json!({"objectKey": key, "sha256": sha})).await;
    assert_eq!(s, 201, "{b}");
    let imported = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b["name"], "to-export");
    assert_eq!(b["image"], "default");
    create(rs, &rs.key, json!({"id": sandbox, "snapshot": imported})).await;
    let copy = out(rs, &rs.key, sandbox, LIST).await;
    assert_eq!(copy, listing);
    // The copy is a sandbox like any: it writes to its own layer.
    out(
        rs,
        &rs.key,
        sandbox,
        "echo changed > /workspace/proj/a.txt && touch /etc/issue",
    )
    .await;
}

/// Corrupts the stored archive `file` (a byte in the middle flipped, then cut in half): each
/// import fails with SNAPSHOT_IMPORT_FAILED and leaves no snapshot, layer or staging file.
async fn corrupt_imports_leave_nothing(rs: &Real, key: &str, file: &Path) {
    let good = std::fs::read(file).unwrap();
    let before = snapshot_ids(rs, &rs.key).await;
    let layers = dir_entries(&rs.data_dir.join("layers"));
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    let half = good[..good.len() / 2].to_vec();
    for (what, bytes) in [("flipped", flipped), ("truncated", half)] {
        std::fs::write(file, &bytes).unwrap();
        let (s, b) = import(rs, &rs.key, json!({"objectKey": key})).await;
        assert_error(s, &b, 500, "SNAPSHOT_IMPORT_FAILED");
        assert!(
            b["message"].as_str().unwrap().contains("nothing was kept"),
            "{what}: {b}"
        );
        assert_eq!(snapshot_ids(rs, &rs.key).await, before, "{what}");
        assert_eq!(dir_entries(&rs.data_dir.join("layers")), layers, "{what}");
        assert_eq!(
            dir_entries(&rs.data_dir.join("imports")),
            Vec::<String>::new(),
            "{what}"
        );
    }
    std::fs::write(file, &good).unwrap();
}

/// Another tenant: cannot export the snapshot, nor import the export (not even knowing its
/// key and digest), nor name another key of the store.
async fn other_tenant_is_refused(rs: &Real, snapshot: &str, key: &str, sha: &str) {
    let other = created_key(
        rs.call(Method::POST, "/v1/keys", key_request("other"))
            .await,
    );
    let (s, b) = export(rs, &other, snapshot).await;
    assert_error(s, &b, 404, "SNAPSHOT_NOT_FOUND");
    let (s, b) = import(rs, &other, json!({"objectKey": key, "sha256": sha})).await;
    assert_error(s, &b, 404, "SNAPSHOT_EXPORT_NOT_FOUND");
    let theirs = key.replacen("/default/", "/other/", 1);
    let (s, b) = import(rs, &other, json!({"objectKey": theirs})).await;
    assert_error(s, &b, 404, "SNAPSHOT_EXPORT_NOT_FOUND");
    for bad in [
        "backups/x.tar.zst",
        "snapshot-exports/other/../default/x.tar.zst",
    ] {
        let (s, b) = import(rs, &other, json!({"objectKey": bad})).await;
        assert_error(s, &b, 400, "VALIDATION_FAILED");
    }
    assert!(snapshot_ids(rs, &other).await.is_empty());
}

/// Exports `snapshot`; returns (key, sha256) after checking the answer.
async fn export_ok(rs: &Real, snapshot: &str) -> (String, String) {
    let (s, b) = export(rs, &rs.key, snapshot).await;
    assert_eq!(s, 201, "{b}");
    let key = b["objectKey"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with(&format!("snapshot-exports/default/{snapshot}-"))
            && key.ends_with(".tar.zst"),
        "{key}"
    );
    assert_eq!(b["snapshotId"], snapshot);
    let size = b["sizeBytes"].as_u64().unwrap();
    assert!(size > 3_000_000 && size < 10_000_000, "{b}");
    assert!(b["rawBytes"].as_u64().unwrap() > 3_000_000, "{b}");
    (key, b["sha256"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_snapshot_export_import_local_store() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let (snapshot, listing) = snapshot_of_tree(&rs).await;
    let (key, sha) = export_ok(&rs, &snapshot).await;
    let file: PathBuf = rs.data_dir.join("objects").join(&key);
    assert!(file.is_file(), "{}", file.display());
    assert!(
        rs.data_dir
            .join("objects")
            .join(format!("{key}.json"))
            .is_file()
    );

    // A malformed expectation and one that is not the export's are the caller's mistakes.
    let (s, b) = import(&rs, &rs.key, json!({"objectKey": key, "sha256": "00"})).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, b) = import(
        &rs,
        &rs.key,
        json!({"objectKey": key, "sha256": "ab".repeat(32)}),
    )
    .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    corrupt_imports_leave_nothing(&rs, &key, &file).await;
    other_tenant_is_refused(&rs, &snapshot, &key, &sha).await;
    let missing = key.replace(".tar.zst", "x.tar.zst");
    let (s, b) = import(&rs, &rs.key, json!({"objectKey": missing})).await;
    assert_error(s, &b, 404, "SNAPSHOT_EXPORT_NOT_FOUND");
    let (s, b) = export(&rs, &rs.key, "snap-nosuch").await;
    assert_error(s, &b, 404, "SNAPSHOT_NOT_FOUND");

    // The original snapshot deleted (and its sandbox destroyed): the import does not need it.
    let (s, b) = rs
        .call(Method::DELETE, "/v1/sandboxes/src", Value::Null)
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = rs
        .call(
            Method::DELETE,
            &format!("/v1/snapshots/{snapshot}"),
            Value::Null,
        )
        .await;
    assert_eq!(s, 204, "{b}");
    import_and_check(&rs, &key, &sha, &listing, "copy").await;
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_snapshot_moves_between_servers_through_s3() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = sandpit_s3_test_server::start(s3_root.path()).unwrap();
    s3.create_bucket("sandpit-snapshots").unwrap();
    let config = S3Config {
        bucket: "sandpit-snapshots".into(),
        region: s3.region.clone(),
        endpoint: Some(s3.endpoint.clone()),
        access_key_id: Some(s3.access_key.clone()),
        secret_access_key: Some(s3.secret_key.clone()),
        session_token: None,
        path_style: true,
        prefix: "shared".into(),
    };
    let first_config = config.clone();
    let Some(first) =
        Real::start_with(|c| c.object_store = ObjectStoreConfig::S3(first_config)).await
    else {
        return;
    };
    let (snapshot, listing) = snapshot_of_tree(&first).await;
    let (key, sha) = export_ok(&first, &snapshot).await;
    let file = s3.root.join("sandpit-snapshots").join("shared").join(&key);
    assert!(file.is_file(), "{}", file.display());
    assert!(!first.data_dir.join("objects").join(&key).exists());
    let first_dir = first.data_dir.clone();
    first.stop().await;

    // A second server with its own data dir and the same bucket.
    let Some(second) = Real::start_with(|c| c.object_store = ObjectStoreConfig::S3(config)).await
    else {
        return;
    };
    assert_ne!(second.data_dir, first_dir);
    corrupt_imports_leave_nothing(&second, &key, &file).await;
    other_tenant_is_refused(&second, "snap-unknown", &key, &sha).await;
    import_and_check(&second, &key, &sha, &listing, "moved").await;
    second.stop().await;
}
