//! Cluster mode: nodes (registered, heart-beating) and where sandboxes are placed.

use sandpit_store::NodeRecord;

use super::Fixture;

fn node(id: &str, boot: &str, at: i64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        address: format!("127.0.0.1:{}", 7000 + id.len()),
        boot_id: boot.into(),
        capacity: "{\"maxSandboxes\":5}".into(),
        last_heartbeat_ms: at,
        registered_at_ms: at,
    }
}

async fn nodes_register_heartbeat_and_hold_placements(f: &Fixture) {
    let store = f.open().await;
    let other = f.open().await;
    assert!(store.list_nodes().await.unwrap().is_empty());
    store
        .put_node(&node("node-b", "boot-1", 100))
        .await
        .unwrap();
    store
        .put_node(&node("node-a", "boot-1", 100))
        .await
        .unwrap();
    // A restarted node joins again: new boot id, same row.
    other
        .put_node(&node("node-b", "boot-2", 150))
        .await
        .unwrap();
    let nodes = store.list_nodes().await.unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["node-a", "node-b"]);
    assert_eq!(nodes[1].boot_id, "boot-2");

    // Heartbeats from two replicas: the newest time wins, an older one never goes back.
    store
        .node_heartbeat("node-a", 300, "{\"running\":1}")
        .await
        .unwrap();
    other
        .node_heartbeat("node-a", 200, "{\"running\":2}")
        .await
        .unwrap();
    store
        .node_heartbeat("node-unknown", 300, "{}")
        .await
        .unwrap();
    let a = &store.list_nodes().await.unwrap()[0];
    assert_eq!(a.last_heartbeat_ms, 300);
    assert_eq!(a.capacity, "{\"running\":1}");
    assert_eq!(store.list_nodes().await.unwrap().len(), 2);

    // Placements: one node per sandbox, counted per node, forgotten on request.
    store
        .set_sandbox_node("sb-1", Some("node-a"))
        .await
        .unwrap();
    store
        .set_sandbox_node("sb-2", Some("node-a"))
        .await
        .unwrap();
    other
        .set_sandbox_node("sb-3", Some("node-b"))
        .await
        .unwrap();
    store
        .set_sandbox_node("sb-3", Some("node-a"))
        .await
        .unwrap();
    assert_eq!(
        other.sandbox_node("sb-3").await.unwrap().as_deref(),
        Some("node-a")
    );
    assert_eq!(other.sandbox_node("sb-9").await.unwrap(), None);
    let mut counts = store.node_sandbox_counts().await.unwrap();
    counts.sort();
    assert_eq!(counts, [("node-a".to_owned(), 3)]);
    other.set_sandbox_node("sb-1", None).await.unwrap();
    assert_eq!(store.sandbox_node("sb-1").await.unwrap(), None);
    assert_eq!(
        store.node_sandbox_counts().await.unwrap(),
        [("node-a".to_owned(), 2)]
    );
}

crate::both_backends!(nodes_register_heartbeat_and_hold_placements);
