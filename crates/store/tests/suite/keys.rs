use sandpit_store::{SqliteStore, Store, StoreError};

#[tokio::test]
async fn keys_map_to_their_tenant() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.ensure_tenant("acme").await.unwrap();
    store.ensure_tenant("acme").await.unwrap(); // idempotent
    store.add_api_key("acme", "abc123").await.unwrap();
    assert_eq!(
        store.tenant_for_key("abc123").await.unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(store.tenant_for_key("nope").await.unwrap(), None);
}

#[tokio::test]
async fn key_for_unknown_tenant_is_rejected() {
    let store = SqliteStore::open_in_memory().unwrap();
    let err = store.add_api_key("ghost", "k").await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchTenant(t) if t == "ghost"));
}

#[tokio::test]
async fn settings_keep_their_first_value() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(
        store.setting_or_init("instance", "one").await.unwrap(),
        "one"
    );
    assert_eq!(
        store.setting_or_init("instance", "two").await.unwrap(),
        "one"
    );
}
