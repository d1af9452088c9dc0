//! Several handles on one database, as several control-plane replicas hold them.

use std::sync::Arc;
use std::time::Duration;

use sandpit_protocol::control::{Isolation, SandboxState};
use sandpit_store::test_postgres::TestPostgres;
use sandpit_store::{DataKey, PostgresStore, Store};

use super::{Fixture, new_sandbox};

/// Two handles (two replicas) race to create the same sandbox: one record, one creator, and
/// every caller gets that record.
async fn two_handles_racing_creates_make_one_record(f: &Fixture) {
    let handles = [f.open().await, f.open().await];
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = handles[i % 2].clone();
            let mut new = new_sandbox("t", "same");
            // Each caller would pick its own internal id; the winner's is kept.
            new.internal_id = format!("t-same-{i}");
            tokio::spawn(async move { store.create_sandbox(new).await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let winner = &results.iter().find(|(_, c)| *c).unwrap().0;
    assert!(
        results.iter().all(|(r, _)| r == winner),
        "one record for all"
    );
    for store in &handles {
        assert_eq!(store.list_sandboxes("t", None, 100).await.unwrap().len(), 1);
    }
}

/// What one replica's admission does: under the tenant's lock, count, then create if the
/// quota allows it. The pause widens the window between check and create.
async fn admit_and_create(store: Arc<dyn Store>, id: String, quota: usize) -> bool {
    let _lock = store.lock_tenant("t").await.unwrap();
    let used = store
        .list_sandboxes("t", None, usize::MAX)
        .await
        .unwrap()
        .len();
    if used >= quota {
        return false;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.create_sandbox(new_sandbox("t", &id)).await.unwrap().1
}

/// The tenant lock is one lock across handles (PostgreSQL advisory lock): racing admissions
/// on two replicas never pass the quota. SQLite has one writer process, so its lock is
/// process-local and this runs on PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tenant_lock_keeps_a_quota_across_handles() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let handles = [f.open().await, f.open().await];
    let quota = 3;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = handles[i % 2].clone();
            tokio::spawn(admit_and_create(store, format!("sb-{i}"), quota))
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    assert_eq!(admitted, quota);
    assert_eq!(
        handles[1]
            .list_sandboxes("t", None, usize::MAX)
            .await
            .unwrap()
            .len(),
        quota
    );
    // Locks of other tenants are independent; a dropped lock is released (re-taken at once,
    // from the other handle).
    let other = handles[0].lock_tenant("u").await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(5), handles[1].lock_tenant("t"))
        .await
        .expect("the tenant lock was not released")
        .unwrap();
    drop((other, again));
    tokio::time::timeout(Duration::from_secs(5), handles[0].lock_tenant("t"))
        .await
        .expect("the tenant lock was not released after drop")
        .unwrap();
}

/// A lock held by one handle blocks the other until released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tenant_lock_blocks_another_handle_until_dropped() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let (a, b) = (f.open().await, f.open().await);
    let held = a.lock_tenant("t").await.unwrap();
    let waiting = tokio::spawn(async move { b.lock_tenant("t").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second replica got a held lock");
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the lock was not released")
        .unwrap()
        .unwrap();
}

/// A periodic job's lock: one handle gets it, the other is told no at once (it skips the
/// round); after release the other gets it. Different jobs do not exclude each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_job_lock_lets_one_replica_run_a_round() {
    let Some(f) = Fixture::postgres() else {
        return;
    };
    let (a, b) = (f.open().await, f.open().await);
    let held = a.try_lock_job("ttl").await.unwrap().expect("free lock");
    assert!(b.try_lock_job("ttl").await.unwrap().is_none());
    assert!(b.try_lock_job("backups").await.unwrap().is_some());
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if b.try_lock_job("ttl").await.unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replicas starting together on an empty database apply each migration once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_together_migrate_once() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.url();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                PostgresStore::connect(&url, DataKey::ephemeral().unwrap()).await
            })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let versions: Vec<i64> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, sandpit_store::migration_versions().1);
}

/// The PostgreSQL schema history keeps SQLite's numbering (a migration added to one is added
/// to the other).
#[test]
fn both_backends_have_the_same_migration_numbers() {
    let (sqlite, postgres) = sandpit_store::migration_versions();
    assert_eq!(sqlite, postgres);
}

/// A PostgreSQL database from before migration 12 (uid slots in the store) upgrades as SQLite
/// does: old sandboxes become `standard` and their uid ranges wait for the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_keeps_the_uid_ranges_of_old_sandboxes() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.url();
    drop(
        PostgresStore::connect_before(&url, DataKey::ephemeral().unwrap(), 12)
            .await
            .unwrap(),
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "INSERT INTO tenants (name, created_at) VALUES ('old', 1);
             INSERT INTO sandboxes (tenant, id, internal_id, image, state, sleep_after,
                 keep_alive, ephemeral, env, limits, slot, created_at, last_active_at, labels)
             VALUES ('old', 'a', 'old-a', 'default', 'sleeping', 60, false, false, '{}', '{}',
                 0, 1, 1, '{\"k\":\"v\"}'),
                    ('old', 'b', 'old-b', 'default', 'running', 60, true, false, '{}', '{}',
                 3, 1, 1, '{}');",
        )
        .await
        .unwrap();
    let store = PostgresStore::connect(&url, DataKey::ephemeral().unwrap())
        .await
        .unwrap();
    let a = store.get_sandbox("old", "a").await.unwrap().unwrap();
    assert_eq!(a.options.isolation, Isolation::Standard);
    assert_eq!(a.options.labels["k"], "v");
    let b = store.get_sandbox("old", "b").await.unwrap().unwrap();
    assert!(b.options.keep_alive && b.options.keep_alive_while_busy);
    assert_eq!(b.state, SandboxState::Running);
    assert_eq!(
        store.legacy_uid_ranges().await.unwrap(),
        vec![
            ("old-a".to_owned(), 100_000),
            ("old-b".to_owned(), 100_000 + 3 * 65_536)
        ]
    );
}

/// A URL that is not one, and a database that is not there, are clear errors, not hangs.
#[tokio::test]
async fn postgres_bad_urls_are_clear_errors() {
    let err = PostgresStore::connect("postgres://[oops", DataKey::ephemeral().unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("invalid postgres URL"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres@/postgres?host={}",
        dir.path().display()
    );
    let started = std::time::Instant::now();
    let err = PostgresStore::connect(&url, DataKey::ephemeral().unwrap())
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    let chain = error_chain(&err);
    assert!(chain.contains("postgres connection"), "{chain}");
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

crate::both_backends!(two_handles_racing_creates_make_one_record);
