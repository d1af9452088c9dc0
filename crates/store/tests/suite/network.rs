use sandpit_protocol::control::{NetworkMode, NetworkPolicy};
use sandpit_protocol::netpolicy::EgressPolicy;
use sandpit_store::{SandboxNetwork, StoredSecret};

use super::Fixture;
use super::new_sandbox;

async fn network_state_round_trips_is_replaced_and_goes_with_the_sandbox(f: &Fixture) {
    let store = f.open().await;
    let (record, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    assert_eq!(
        store.sandbox_network(&record.internal_id).await.unwrap(),
        None
    );
    let first = SandboxNetwork {
        policy: EgressPolicy::try_from(NetworkPolicy {
            mode: NetworkMode::Allowlist,
            allow: vec!["*.example.com".into(), "10.0.0.0/8".into()],
        })
        .unwrap(),
        secrets: vec![StoredSecret {
            name: "TOKEN".into(),
            value: "s3cret".into(),
            hosts: vec!["api.example.com".into()],
            header: Some("Authorization".into()),
            placeholder: "sandpit-secret-TOKEN-x".into(),
        }],
        ca: None,
        operator_policy: false,
    };
    let mut second = first.clone();
    second.ca = Some(("CERT".into(), "KEY".into()));
    second.operator_policy = true;
    second.policy.mode = NetworkMode::Full;
    // The second write replaces the first.
    for net in [first, second] {
        store
            .set_sandbox_network(&record.internal_id, &net)
            .await
            .unwrap();
        assert_eq!(
            store.sandbox_network(&record.internal_id).await.unwrap(),
            Some(net)
        );
    }
    assert!(store.delete_sandbox("t", "a").await.unwrap());
    assert_eq!(
        store.sandbox_network(&record.internal_id).await.unwrap(),
        None
    );
}

crate::both_backends!(network_state_round_trips_is_replaced_and_goes_with_the_sandbox,);
