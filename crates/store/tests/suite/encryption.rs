//! Secrets and CA keys at rest: the raw database never holds them in clear.

use std::path::Path;

use sandpit_protocol::control::{NetworkMode, NetworkPolicy};
use sandpit_protocol::netpolicy::EgressPolicy;
use sandpit_store::{DataKey, SandboxNetwork, SqliteStore, Store, StoreError, StoredSecret};

use super::{Fixture, new_sandbox};

const SECRET: &str = "s3cret-value-7f1c";
const CA_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIca-key-body\n-----END PRIVATE KEY-----";

fn network() -> SandboxNetwork {
    SandboxNetwork {
        policy: EgressPolicy::try_from(NetworkPolicy {
            mode: NetworkMode::Allowlist,
            allow: vec!["policy.example.com".into()],
        })
        .unwrap(),
        secrets: vec![StoredSecret {
            name: "TOKEN".into(),
            value: SECRET.into(),
            hosts: vec!["api.example.com".into()],
            header: None,
            placeholder: "sandpit-secret-TOKEN-x".into(),
        }],
        ca: Some(("CERT".into(), CA_KEY.into())),
        operator_policy: false,
    }
}

/// Every byte of the database and its WAL.
fn raw_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        bytes.extend(std::fs::read(p).unwrap_or_default());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn secrets_and_ca_keys_are_encrypted_at_rest(f: &Fixture) {
    let store = f.open().await;
    let (record, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    store
        .set_sandbox_network(&record.internal_id, &network())
        .await
        .unwrap();
    drop(store);
    let text = f.raw_text().await;
    let bytes = text.as_bytes();
    assert!(
        contains(bytes, "policy.example.com"),
        "policies stay readable: wrong file?"
    );
    assert!(
        !contains(bytes, SECRET),
        "secret value in the database file"
    );
    assert!(
        !contains(bytes, "MIIca-key-body"),
        "CA key in the database file"
    );

    let store = f.open().await;
    assert_eq!(
        store.sandbox_network(&record.internal_id).await.unwrap(),
        Some(network())
    );
    drop(store);
    // Another key cannot read them.
    let store = f.open_with_key(DataKey::ephemeral().unwrap()).await;
    let err = store
        .sandbox_network(&record.internal_id)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn rows_stored_in_clear_before_encryption_are_encrypted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key_file) = (dir.path().join("s.db"), dir.path().join("secrets.key"));
    let store = SqliteStore::open(&db, DataKey::load_or_create(&key_file).unwrap()).unwrap();
    let (record, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    drop(store);
    // As a server before encryption wrote it.
    let secrets = serde_json::to_string(&network().secrets).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO sandbox_network (sandbox, policy, secrets, ca_cert, ca_key) \
         VALUES (?1, '{\"mode\":\"full\",\"allow\":[]}', ?2, 'CERT', ?3)",
        rusqlite::params![record.internal_id, secrets, CA_KEY],
    )
    .unwrap();
    drop(conn);
    assert!(contains(&raw_bytes(&db), SECRET), "the old row is in clear");

    let store = SqliteStore::open(&db, DataKey::load_or_create(&key_file).unwrap()).unwrap();
    let bytes = raw_bytes(&db);
    assert!(
        !contains(&bytes, SECRET),
        "secret left in clear after migration"
    );
    assert!(
        !contains(&bytes, "MIIca-key-body"),
        "CA key left in clear after migration"
    );
    let got = store
        .sandbox_network(&record.internal_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.secrets, got.ca), (network().secrets, network().ca));
}

crate::both_backends!(secrets_and_ca_keys_are_encrypted_at_rest);
