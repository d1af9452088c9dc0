use sandpit_protocol::control::{Isolation, SandboxState};
use sandpit_protocol::time::SleepAfter;
use sandpit_store::{DataKey, SqliteStore, Store};

use super::Fixture;
use super::new_sandbox;

async fn create_is_create_or_get(f: &Fixture) {
    let store = f.open().await;
    let (first, created) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    assert!(created);
    assert_eq!(first.options.isolation, Isolation::Standard);
    assert_eq!(first.state, SandboxState::Creating);
    assert_eq!(first.options.env["A"], "1");
    assert_eq!(first.options.limits.memory_mb, Some(256));
    let mut again = new_sandbox("t", "a");
    again.options.image = "other".into();
    let (second, created) = store.create_sandbox(again).await.unwrap();
    assert!(!created);
    assert_eq!(second, first, "the existing record is returned unchanged");
}

async fn same_id_in_two_tenants_is_two_sandboxes(f: &Fixture) {
    let store = f.open().await;
    let (a, _) = store.create_sandbox(new_sandbox("t1", "x")).await.unwrap();
    let (b, created) = store.create_sandbox(new_sandbox("t2", "x")).await.unwrap();
    assert!(created);
    assert_ne!(a.internal_id, b.internal_id);
    assert!(store.get_sandbox("t1", "x").await.unwrap().is_some());
    assert!(store.get_sandbox("t3", "x").await.unwrap().is_none());
    assert_eq!(store.list_sandboxes("t2", None, 10).await.unwrap().len(), 1);
}

async fn the_isolation_tier_is_stored(f: &Fixture) {
    let store = f.open().await;
    let mut new = new_sandbox("t", "g");
    new.options.isolation = Isolation::Gvisor;
    store.create_sandbox(new).await.unwrap();
    let rec = store.get_sandbox("t", "g").await.unwrap().unwrap();
    assert_eq!(rec.options.isolation, Isolation::Gvisor);
    let listed = store.list_sandboxes("t", None, 10).await.unwrap();
    assert_eq!(listed[0].options.isolation, Isolation::Gvisor);
}

/// A database from before migration 12 (uid slots in the store): its sandboxes become
/// `standard` and each slot's uid range is kept for the driver, by the old formula.
#[tokio::test]
async fn an_upgrade_keeps_the_uid_ranges_of_old_sandboxes_for_the_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    sandpit_store::create_schema_before(&path, 12).unwrap();
    // Two sandboxes in slots 0 and 3.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO tenants (name, created_at) VALUES ('old', 1);
         INSERT INTO sandboxes (tenant, id, internal_id, image, state, sleep_after, keep_alive,
             ephemeral, env, limits, slot, created_at, last_active_at, labels)
         VALUES ('old', 'a', 'old-a', 'default', 'sleeping', 60, 0, 0, '{}', '{}', 0, 1, 1,
             '{\"k\":\"v\"}'),
                ('old', 'b', 'old-b', 'default', 'running', 60, 1, 0, '{}', '{}', 3, 1, 1, '{}');",
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&path, DataKey::ephemeral().unwrap()).unwrap();
    let a = store.get_sandbox("old", "a").await.unwrap().unwrap();
    assert_eq!(a.options.isolation, Isolation::Standard);
    assert_eq!(
        a.options.labels["k"], "v",
        "the other columns survive the rebuild"
    );
    let b = store.get_sandbox("old", "b").await.unwrap().unwrap();
    assert!(b.options.keep_alive);
    assert_eq!(b.state, SandboxState::Running);
    assert_eq!(
        store.legacy_uid_ranges().await.unwrap(),
        vec![
            ("old-a".to_owned(), 100_000),
            ("old-b".to_owned(), 100_000 + 3 * 65_536)
        ]
    );
    // New sandboxes still go in (no slot column left to fill).
    store.create_sandbox(new_sandbox("old", "c")).await.unwrap();
    store.forget_legacy_uid_ranges().await.unwrap();
    assert!(store.legacy_uid_ranges().await.unwrap().is_empty());
}

async fn concurrent_creates_make_one_record(f: &Fixture) {
    let store = f.open().await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.create_sandbox(new_sandbox("t", "same")).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().1 {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.list_sandboxes("t", None, 100).await.unwrap().len(), 1);
}

async fn list_pages_by_id(f: &Fixture) {
    let store = f.open().await;
    for i in 0..7 {
        store
            .create_sandbox(new_sandbox("t", &format!("sb-{i}")))
            .await
            .unwrap();
    }
    store
        .create_sandbox(new_sandbox("other", "sb-9"))
        .await
        .unwrap();
    let page1 = store.list_sandboxes("t", None, 3).await.unwrap();
    let ids: Vec<_> = page1.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["sb-0", "sb-1", "sb-2"]);
    let page3 = store.list_sandboxes("t", Some("sb-5"), 3).await.unwrap();
    let ids: Vec<_> = page3.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["sb-6"]);
}

async fn state_and_options_updates(f: &Fixture) {
    let store = f.open().await;
    let (rec, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    assert!(
        store
            .set_state("t", "a", SandboxState::Running, Some(5_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_state("t", "zz", SandboxState::Running, None)
            .await
            .unwrap()
    );
    let mut opts = rec.options.clone();
    opts.keep_alive = true;
    opts.keep_alive_while_busy = false;
    opts.sleep_after = SleepAfter::from_secs(5);
    assert!(store.update_options("t", "a", &opts).await.unwrap());
    let got = store.get_sandbox("t", "a").await.unwrap().unwrap();
    assert_eq!(got.state, SandboxState::Running);
    assert_eq!(got.last_active_at_ms, 5_000);
    assert_eq!(got.options, opts);
    store.create_sandbox(new_sandbox("t", "b")).await.unwrap();
    let n = store
        .reset_states(
            &[SandboxState::Running, SandboxState::Creating],
            SandboxState::Sleeping,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        store.count_by_state().await.unwrap(),
        vec![(SandboxState::Sleeping, 2)]
    );
}

#[tokio::test]
async fn state_survives_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/sandpit.db");
    {
        let store = SqliteStore::open(&path, DataKey::ephemeral().unwrap()).unwrap();
        store
            .create_sandbox(new_sandbox("t", "keep"))
            .await
            .unwrap();
        store.ensure_tenant("t").await.unwrap();
        store.add_api_key("t", "digest").await.unwrap();
    }
    let store = SqliteStore::open(&path, DataKey::ephemeral().unwrap()).unwrap();
    let rec = store.get_sandbox("t", "keep").await.unwrap().unwrap();
    assert_eq!(rec.internal_id, "t-keep");
    assert_eq!(
        store.tenant_for_key("digest").await.unwrap().as_deref(),
        Some("t")
    );
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// A sandbox of tenant `t` with these labels.
fn labelled(tenant: &str, id: &str, labels: &[(&str, &str)]) -> sandpit_store::NewSandbox {
    let mut new = new_sandbox(tenant, id);
    new.options.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    new
}

async fn label_filters_are_anded_tenant_scoped_and_paged(f: &Fixture) {
    let store = f.open().await;
    for (tenant, id, labels) in [
        ("t", "a", &[("env", "prod"), ("team", "ml")][..]),
        ("t", "b", &[("env", "prod")][..]),
        ("t", "c", &[("env", "dev"), ("team", "ml")][..]),
        ("t", "d", &[("app.io/name", "web")][..]),
        ("other", "e", &[("env", "prod"), ("team", "ml")][..]),
    ] {
        store
            .create_sandbox(labelled(tenant, id, labels))
            .await
            .unwrap();
    }
    let ids = |records: Vec<sandpit_store::SandboxRecord>| {
        records.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let sel = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    let prod = sel(&[("env", "prod")]);
    let all = store
        .list_sandboxes_labelled("t", &prod, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(all), ["a", "b"]);
    let both = sel(&[("env", "prod"), ("team", "ml")]);
    let found = store
        .list_sandboxes_labelled("t", &both, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(found), ["a"]);
    let dotted = sel(&[("app.io/name", "web")]);
    let found = store
        .list_sandboxes_labelled("t", &dotted, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(found), ["d"]);
    // Pages: one at a time after the cursor.
    let first = store
        .list_sandboxes_labelled("t", &prod, None, 1)
        .await
        .unwrap();
    assert_eq!(ids(first), ["a"]);
    let next = store
        .list_sandboxes_labelled("t", &prod, Some("a"), 1)
        .await
        .unwrap();
    assert_eq!(ids(next), ["b"]);
    // A value that is a JSON-looking string matches nothing, and is not SQL.
    let odd = sel(&[("env", "' OR 1=1 --")]);
    assert!(
        store
            .list_sandboxes_labelled("t", &odd, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn labels_and_expiry_round_trip_and_due_ones_are_found(f: &Fixture) {
    let store = f.open().await;
    let mut soon = labelled("t", "soon", &[("k", "v")]);
    soon.options.expires_at_ms = Some(5_000);
    store.create_sandbox(soon).await.unwrap();
    let mut later = new_sandbox("u", "later");
    later.options.expires_at_ms = Some(9_000);
    store.create_sandbox(later).await.unwrap();
    store
        .create_sandbox(new_sandbox("t", "never"))
        .await
        .unwrap();

    let got = store.get_sandbox("t", "soon").await.unwrap().unwrap();
    assert_eq!(got.options.labels["k"], "v");
    assert_eq!(got.options.expires_at_ms, Some(5_000));
    assert!(store.expired_sandboxes(4_999, 10).await.unwrap().is_empty());
    assert_eq!(
        store.expired_sandboxes(9_000, 10).await.unwrap(),
        [
            ("t".to_owned(), "soon".to_owned()),
            ("u".to_owned(), "later".to_owned())
        ]
    );

    let mut options = got.options.clone();
    options.expires_at_ms = None;
    options.labels.clear();
    assert!(store.update_options("t", "soon", &options).await.unwrap());
    let got = store.get_sandbox("t", "soon").await.unwrap().unwrap();
    assert!(got.options.labels.is_empty());
    assert_eq!(
        store.expired_sandboxes(i64::MAX, 10).await.unwrap(),
        [("u".to_owned(), "later".to_owned())]
    );
}

/// A database from before migration 10: its sandboxes keep the default (running background
/// processes keep them awake).
#[tokio::test]
async fn sandboxes_made_before_the_busy_option_keep_alive_while_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let key = || DataKey::ephemeral().unwrap();
    drop(SqliteStore::open(&path, key()).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "ALTER TABLE sandboxes DROP COLUMN keep_alive_while_busy;
         DELETE FROM schema_migrations WHERE version = 10;
         INSERT INTO tenants (name, created_at) VALUES ('old', 1);
         INSERT INTO sandboxes (tenant, id, internal_id, image, state, sleep_after, keep_alive,
             ephemeral, env, limits, created_at, last_active_at)
         VALUES ('old', 'a', 'old-a', 'default', 'sleeping', 60, 0, 0, '{}', '{}', 1, 1);",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, key()).unwrap();
    let rec = store.get_sandbox("old", "a").await.unwrap().unwrap();
    assert!(rec.options.keep_alive_while_busy);
    assert!(!rec.options.keep_alive);
}

crate::both_backends!(
    create_is_create_or_get,
    same_id_in_two_tenants_is_two_sandboxes,
    the_isolation_tier_is_stored,
    concurrent_creates_make_one_record,
    list_pages_by_id,
    state_and_options_updates,
    label_filters_are_anded_tenant_scoped_and_paged,
    labels_and_expiry_round_trip_and_due_ones_are_found,
);
