//! Backup records: tenant scoping, listing only finished ones, expiry and stale creates, usage.

use sandpit_store::{BackupRecord, BackupState};

use super::Fixture;

fn record(id: &str, tenant: &str, created: i64, expires: i64) -> BackupRecord {
    BackupRecord {
        id: id.into(),
        tenant: tenant.into(),
        sandbox_id: "sb".into(),
        dir: "/workspace/p".into(),
        name: Some("n".into()),
        state: BackupState::Creating,
        size_bytes: 0,
        raw_bytes: 0,
        sha256: String::new(),
        created_at_ms: created,
        expires_at_ms: expires,
    }
}

async fn backups_are_tenant_scoped_listed_when_ready_and_expire(f: &Fixture) {
    let store = f.open().await;
    store
        .insert_backup(&record("b1", "t1", 10, 1_000))
        .await
        .unwrap();
    store
        .insert_backup(&record("b2", "t1", 20, 5_000))
        .await
        .unwrap();
    store
        .insert_backup(&record("b3", "t2", 30, 5_000))
        .await
        .unwrap();
    // Not listed until finished.
    assert!(store.list_backups("t1").await.unwrap().is_empty());
    store.finish_backup("b1", 100, 400, "ab").await.unwrap();
    store.finish_backup("b3", 7, 9, "cd").await.unwrap();
    let listed = store.list_backups("t1").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "b1");
    assert_eq!(listed[0].state, BackupState::Ready);
    assert_eq!((listed[0].size_bytes, listed[0].raw_bytes), (100, 400));
    assert_eq!(listed[0].sha256, "ab");
    // Another tenant sees nothing of t1's.
    assert!(store.get_backup("t2", "b1").await.unwrap().is_none());
    assert!(!store.delete_backup("t2", "b1").await.unwrap());
    assert!(store.get_backup("t1", "b1").await.unwrap().is_some());
    assert_eq!(store.backup_usage("t1").await.unwrap(), (2, 100));
    // b1 expired at 1000; b2 is a create that never finished (started at 20 < 25).
    let mut gone: Vec<String> = store
        .expired_backups(2_000, 25, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    gone.sort();
    assert_eq!(gone, vec!["b1".to_string(), "b2".to_string()]);
    assert!(store.delete_backup("t1", "b1").await.unwrap());
    assert!(store.get_backup("t1", "b1").await.unwrap().is_none());
}

crate::both_backends!(backups_are_tenant_scoped_listed_when_ready_and_expire,);
