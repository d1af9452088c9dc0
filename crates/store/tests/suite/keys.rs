use sandpit_store::{SqliteStore, Store, StoreError};

use super::Fixture;

async fn keys_map_to_their_tenant(f: &Fixture) {
    let store = f.open().await;
    store.ensure_tenant("acme").await.unwrap();
    store.ensure_tenant("acme").await.unwrap(); // idempotent
    store.add_api_key("acme", "abc123").await.unwrap();
    assert_eq!(
        store.tenant_for_key("abc123").await.unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(store.tenant_for_key("nope").await.unwrap(), None);
}

async fn key_for_unknown_tenant_is_rejected(f: &Fixture) {
    let store = f.open().await;
    let err = store.add_api_key("ghost", "k").await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchTenant(t) if t == "ghost"));
}

async fn settings_keep_their_first_value(f: &Fixture) {
    let store = f.open().await;
    assert_eq!(
        store.setting_or_init("instance", "one").await.unwrap(),
        "one"
    );
    assert_eq!(
        store.setting_or_init("instance", "two").await.unwrap(),
        "one"
    );
}

async fn keys_are_listed_by_id_revoked_and_rotated(f: &Fixture) {
    let store = f.open().await;
    store.ensure_tenant("a").await.unwrap();
    store.ensure_tenant("b").await.unwrap();
    let a1 = store.add_api_key("a", &"1".repeat(64)).await.unwrap();
    let b1 = store.add_api_key("b", &"2".repeat(64)).await.unwrap();
    assert_eq!(a1.key_id, "1".repeat(16));
    assert_eq!((a1.tenant.as_str(), a1.last_used_at_ms), ("a", None));
    assert_eq!(
        store.list_api_keys(Some("a")).await.unwrap(),
        vec![a1.clone()]
    );
    assert_eq!(store.list_api_keys(None).await.unwrap().len(), 2);

    store.touch_api_key(&b1.key_id, 42).await.unwrap();
    let b1 = store.api_key(&"2".repeat(64)).await.unwrap().unwrap();
    assert_eq!(b1.last_used_at_ms, Some(42));

    let a2 = store
        .rotate_api_key(&a1.key_id, &"3".repeat(64))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a2.key_id.as_str(), a2.tenant.as_str()),
        ("3333333333333333", "a")
    );
    assert_eq!(store.tenant_for_key(&"1".repeat(64)).await.unwrap(), None);
    assert_eq!(
        store
            .rotate_api_key(&a1.key_id, &"4".repeat(64))
            .await
            .unwrap(),
        None
    );

    assert!(store.revoke_api_key(&b1.key_id).await.unwrap());
    assert!(!store.revoke_api_key(&b1.key_id).await.unwrap());
    assert_eq!(store.api_key_by_id(&b1.key_id).await.unwrap(), None);
    assert_eq!(store.list_api_keys(None).await.unwrap(), vec![a2]);
}

/// A database from before migration 8: its keys get ids derived from their digests.
#[tokio::test]
async fn keys_made_before_key_ids_get_one_on_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let key = || sandpit_store::DataKey::ephemeral().unwrap();
    drop(SqliteStore::open(&path, key()).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX api_keys_key_id;
         ALTER TABLE api_keys DROP COLUMN key_id;
         ALTER TABLE api_keys DROP COLUMN last_used_at;
         DROP TABLE audit_log;
         DELETE FROM schema_migrations WHERE version = 8;
         INSERT INTO tenants (name, created_at) VALUES ('old', 1);",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO api_keys (key_sha256, tenant, created_at) VALUES (?1, 'old', 2)",
        [&"ab".repeat(32)],
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, key()).unwrap();
    let listed = store.list_api_keys(Some("old")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, "ab".repeat(8));
    assert_eq!(listed[0].created_at_ms, 2000);
    assert!(store.revoke_api_key(&"ab".repeat(8)).await.unwrap());
}

crate::both_backends!(
    keys_map_to_their_tenant,
    key_for_unknown_tenant_is_rejected,
    settings_keep_their_first_value,
    keys_are_listed_by_id_revoked_and_rotated,
);
