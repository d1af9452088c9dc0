//! Bucket mounts: one per path per sandbox, credentials sealed at rest, gone with the sandbox.

use sandpit_store::{DataKey, SqliteStore, Store, StoredMount};

use super::new_sandbox;

const SECRET: &str = "mount-secret-93be1c";

fn mount(path: &str) -> StoredMount {
    StoredMount {
        mount_path: path.into(),
        bucket: "bucket-a".into(),
        endpoint: "http://127.0.0.1:9000".into(),
        prefix: Some("/p/".into()),
        region: None,
        read_only: true,
        access_key_id: "AKID-visible-to-nobody".into(),
        secret_access_key: SECRET.into(),
        created_at_ms: 1,
    }
}

#[tokio::test]
async fn mounts_are_unique_per_path_sealed_and_deleted_with_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key_file) = (dir.path().join("s.db"), dir.path().join("secrets.key"));
    let store = SqliteStore::open(&db, DataKey::load_or_create(&key_file).unwrap()).unwrap();
    let (record, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    let sb = record.internal_id.as_str();
    assert!(store.put_mount(sb, &mount("/mnt/b")).await.unwrap());
    assert!(store.put_mount(sb, &mount("/mnt/a")).await.unwrap());
    assert!(
        !store.put_mount(sb, &mount("/mnt/a")).await.unwrap(),
        "same path twice"
    );
    let listed = store.mounts(sb).await.unwrap();
    assert_eq!(listed, vec![mount("/mnt/a"), mount("/mnt/b")]);
    assert!(store.mounts("other").await.unwrap().is_empty());
    drop(store);

    let mut bytes = std::fs::read(&db).unwrap();
    bytes.extend(std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("bucket-a"), "wrong file?");
    assert!(!text.contains(SECRET), "secret in the database file");
    assert!(
        !text.contains("AKID-visible-to-nobody"),
        "key id in the database file"
    );

    let store = SqliteStore::open(&db, DataKey::load_or_create(&key_file).unwrap()).unwrap();
    assert!(store.delete_mount(sb, "/mnt/a").await.unwrap());
    assert!(!store.delete_mount(sb, "/mnt/a").await.unwrap());
    assert_eq!(store.mounts(sb).await.unwrap(), vec![mount("/mnt/b")]);
    assert!(store.delete_sandbox("t", "a").await.unwrap());
    assert!(store.mounts(sb).await.unwrap().is_empty());
}
