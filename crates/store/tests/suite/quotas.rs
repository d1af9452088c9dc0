use sandpit_protocol::quota::TenantQuota;
use sandpit_store::StoreError;

use super::Fixture;

async fn tenant_quota_is_set_replaced_and_removed(f: &Fixture) {
    let store = f.open().await;
    store.ensure_tenant("acme").await.unwrap();
    assert_eq!(store.tenant_quota("acme").await.unwrap(), None);
    let first = TenantQuota {
        sandboxes: Some(5),
        memory_mb: Some(2048),
        ..TenantQuota::default()
    };
    store.set_tenant_quota("acme", Some(&first)).await.unwrap();
    assert_eq!(store.tenant_quota("acme").await.unwrap(), Some(first));
    let second = TenantQuota {
        running_sandboxes: Some(1),
        ..TenantQuota::default()
    };
    store.set_tenant_quota("acme", Some(&second)).await.unwrap();
    assert_eq!(store.tenant_quota("acme").await.unwrap(), Some(second));
    store.set_tenant_quota("acme", None).await.unwrap();
    assert_eq!(store.tenant_quota("acme").await.unwrap(), None);
}

async fn quota_of_an_unknown_tenant_is_refused(f: &Fixture) {
    let store = f.open().await;
    let err = store
        .set_tenant_quota("ghost", Some(&TenantQuota::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchTenant(t) if t == "ghost"));
}

crate::both_backends!(
    tenant_quota_is_set_replaced_and_removed,
    quota_of_an_unknown_tenant_is_refused,
);
