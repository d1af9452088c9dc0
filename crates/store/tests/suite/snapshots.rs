use sandpit_protocol::control::Isolation;
use sandpit_store::SnapshotRecord;

use super::Fixture;
use super::new_sandbox;

fn snapshot(tenant: &str, id: &str, at: i64) -> SnapshotRecord {
    SnapshotRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: Some(format!("name of {id}")),
        sandbox_id: "a".into(),
        image: "default".into(),
        isolation: Isolation::Standard,
        size_bytes: 1 << 30,
        created_at_ms: at,
    }
}

async fn snapshots_are_tenant_scoped_and_track_their_users(f: &Fixture) {
    let store = f.open().await;
    for t in ["t1", "t2"] {
        store.ensure_tenant(t).await.unwrap();
    }
    store
        .create_snapshot(&snapshot("t1", "s2", 2))
        .await
        .unwrap();
    store
        .create_snapshot(&snapshot("t1", "s1", 1))
        .await
        .unwrap();
    store
        .create_snapshot(&snapshot("t2", "s3", 1))
        .await
        .unwrap();
    let ids: Vec<String> = store
        .list_snapshots("t1")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["s1", "s2"], "oldest first, own tenant only");
    assert_eq!(
        store.get_snapshot("t1", "s1").await.unwrap(),
        Some(snapshot("t1", "s1", 1))
    );
    assert_eq!(store.get_snapshot("t2", "s1").await.unwrap(), None);

    // Users: existing sandboxes created from it; the row goes with the sandbox.
    store
        .create_sandbox(new_sandbox("t1", "child"))
        .await
        .unwrap();
    store
        .set_sandbox_snapshot("t1", "child", "s1")
        .await
        .unwrap();
    assert_eq!(store.snapshot_users("t1", "s1").await.unwrap(), ["child"]);
    assert!(store.snapshot_users("t2", "s1").await.unwrap().is_empty());
    assert_eq!(
        store
            .sandbox_snapshot("t1", "child")
            .await
            .unwrap()
            .as_deref(),
        Some("s1")
    );
    store.delete_sandbox("t1", "child").await.unwrap();
    assert!(store.snapshot_users("t1", "s1").await.unwrap().is_empty());
    assert_eq!(store.sandbox_snapshot("t1", "child").await.unwrap(), None);

    assert!(
        !store.delete_snapshot("t2", "s1").await.unwrap(),
        "not t2's"
    );
    assert!(store.delete_snapshot("t1", "s1").await.unwrap());
    assert_eq!(store.get_snapshot("t1", "s1").await.unwrap(), None);
}

crate::both_backends!(snapshots_are_tenant_scoped_and_track_their_users,);
