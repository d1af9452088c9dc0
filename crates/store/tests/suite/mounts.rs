//! Bucket mounts: one per path per sandbox, credentials sealed at rest, gone with the sandbox.

use sandpit_store::StoredMount;

use super::{Fixture, new_sandbox};

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

async fn mounts_are_unique_per_path_sealed_and_deleted_with_the_sandbox(f: &Fixture) {
    let store = f.open().await;
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

    let text = f.raw_text().await;
    assert!(text.contains("bucket-a"), "wrong file?");
    assert!(!text.contains(SECRET), "secret in the database file");
    assert!(
        !text.contains("AKID-visible-to-nobody"),
        "key id in the database file"
    );

    let store = f.open().await;
    assert!(store.delete_mount(sb, "/mnt/a").await.unwrap());
    assert!(!store.delete_mount(sb, "/mnt/a").await.unwrap());
    assert_eq!(store.mounts(sb).await.unwrap(), vec![mount("/mnt/b")]);
    assert!(store.delete_sandbox("t", "a").await.unwrap());
    assert!(store.mounts(sb).await.unwrap().is_empty());
}

crate::both_backends!(mounts_are_unique_per_path_sealed_and_deleted_with_the_sandbox);
