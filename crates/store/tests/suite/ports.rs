use sandpit_store::ExposedPortRecord;

use super::Fixture;

fn record(tenant: &str, id: &str, port: u16, token: &str) -> ExposedPortRecord {
    ExposedPortRecord {
        tenant: tenant.into(),
        sandbox_id: id.into(),
        port,
        name: Some("web".into()),
        token: token.into(),
        created_at_ms: 5,
    }
}

async fn exposed_ports_are_replaced_listed_and_deleted(f: &Fixture) {
    let store = f.open().await;
    store
        .put_exposed_port(&record("t", "a", 8080, "one"))
        .await
        .unwrap();
    store
        .put_exposed_port(&record("t", "a", 3000, "two"))
        .await
        .unwrap();
    store
        .put_exposed_port(&record("u", "a", 8080, "other"))
        .await
        .unwrap();
    // Exposing again replaces (token rotation).
    let mut rotated = record("t", "a", 8080, "three");
    rotated.name = None;
    store.put_exposed_port(&rotated).await.unwrap();
    let all = store.exposed_ports().await.unwrap();
    assert_eq!(
        all,
        vec![
            record("t", "a", 3000, "two"),
            rotated,
            record("u", "a", 8080, "other")
        ]
    );
    assert!(store.delete_exposed_port("t", "a", 3000).await.unwrap());
    assert!(!store.delete_exposed_port("t", "a", 3000).await.unwrap());
    assert_eq!(store.exposed_ports().await.unwrap().len(), 2);
}

crate::both_backends!(exposed_ports_are_replaced_listed_and_deleted,);
