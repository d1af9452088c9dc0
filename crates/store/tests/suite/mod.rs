mod audit;
mod backups;
mod encryption;
mod keys;
mod mounts;
mod network;
mod nodes;
mod ports;
mod processes;
mod quotas;
mod replicas;
mod sandboxes;
mod snapshots;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sandpit_protocol::control::{Isolation, Limits, SandboxState};
use sandpit_protocol::time::SleepAfter;
use sandpit_store::test_postgres::TestPostgres;
use sandpit_store::{DataKey, NewSandbox, PostgresStore, SandboxOptions, SqliteStore, Store};

/// Runs each named `async fn(&Fixture)` of the module against both backends: as
/// `<module>::sqlite::<name>` and `<module>::postgres::<name>` (a server of its own per test).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = $crate::suite::Fixture::sqlite();
                    super::$name(&fixture).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(fixture) = $crate::suite::Fixture::postgres() else {
                        return;
                    };
                    super::$name(&fixture).await;
                }
            )*
        }
    };
}

/// One database of one backend, opened as often as a test likes (each handle is what one
/// control-plane process would hold).
pub struct Fixture {
    dir: tempfile::TempDir,
    postgres: Option<TestPostgres>,
}

impl Fixture {
    pub fn sqlite() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            postgres: None,
        }
    }

    /// `None` (skip) when PostgreSQL is not installed, outside CI.
    pub fn postgres() -> Option<Fixture> {
        Some(Fixture {
            dir: tempfile::tempdir().unwrap(),
            postgres: Some(TestPostgres::start()?),
        })
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("secrets.key")
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("nested/sandpit.db")
    }

    /// A new handle with the fixture's data key.
    pub async fn open(&self) -> Arc<dyn Store> {
        self.open_with_key(DataKey::load_or_create(&self.key_file()).unwrap())
            .await
    }

    pub async fn open_with_key(&self, key: DataKey) -> Arc<dyn Store> {
        match &self.postgres {
            Some(pg) => Arc::new(PostgresStore::connect(&pg.url(), key).await.unwrap()),
            None => Arc::new(SqliteStore::open(&self.db(), key).unwrap()),
        }
    }

    /// Everything the database holds at rest, as text: the SQLite files, or every row of every
    /// PostgreSQL table.
    pub async fn raw_text(&self) -> String {
        match &self.postgres {
            Some(pg) => {
                let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let tables = client
                    .query(
                        "SELECT table_name::text FROM information_schema.tables \
                         WHERE table_schema = 'public'",
                        &[],
                    )
                    .await
                    .unwrap();
                let mut out = String::new();
                for t in tables {
                    let table: String = t.get(0);
                    for row in client
                        .query(&format!("SELECT t::text FROM \"{table}\" t"), &[])
                        .await
                        .unwrap()
                    {
                        out.push_str(row.get::<_, &str>(0));
                        out.push('\n');
                    }
                }
                out
            }
            None => {
                let mut bytes = std::fs::read(self.db()).unwrap();
                for suffix in ["-wal", "-shm"] {
                    let mut p = self.db().into_os_string();
                    p.push(suffix);
                    bytes.extend(std::fs::read(p).unwrap_or_default());
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }
}

pub fn new_sandbox(tenant: &str, id: &str) -> NewSandbox {
    NewSandbox {
        tenant: tenant.into(),
        id: id.into(),
        internal_id: format!("{tenant}-{id}"),
        options: SandboxOptions {
            image: "default".into(),
            sleep_after: SleepAfter::DEFAULT,
            keep_alive: false,
            keep_alive_while_busy: true,
            ephemeral: false,
            isolation: Isolation::Standard,
            env: BTreeMap::from([("A".into(), "1".into())]),
            limits: Limits {
                memory_mb: Some(256),
                cpus: Some(0.5),
                ..Limits::default()
            },
            labels: BTreeMap::new(),
            expires_at_ms: None,
        },
        state: SandboxState::Creating,
        now_ms: 1_000,
    }
}
