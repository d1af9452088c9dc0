//! [`Store`] on a PostgreSQL database, shared by any number of control-plane replicas.
//!
//! Where [`crate::SqliteStore`] relies on being the only writer, this relies on PostgreSQL:
//! create-or-get is `INSERT ... ON CONFLICT DO NOTHING` (the primary key decides between racing
//! replicas), multi-statement changes run in transactions, bounded tables are pruned inside the
//! transaction that grows them under a row lock or an advisory lock, and
//! [`Store::lock_tenant`] is a session advisory lock, so a quota check and the change it admits
//! are atomic across replicas.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sandpit_protocol::container::{ProcessInfo, ProcessStatus};
use sandpit_protocol::control::{Isolation, SandboxState};
use sandpit_protocol::quota::TenantQuota;
use sandpit_protocol::time::SleepAfter;
use tokio_postgres::{GenericClient, NoTls, Row};

use crate::crypto::DataKey;
use crate::{
    ApiKeyRecord, ArchivedProcess, AuditRecord, BackupRecord, BackupState, ExposedPortRecord,
    MAX_ARCHIVE_BYTES_PER_SANDBOX, MAX_ARCHIVE_BYTES_PER_TENANT, MAX_ARCHIVED_PER_SANDBOX,
    MAX_AUDIT_PER_TENANT, NewSandbox, NodeRecord, Result, SandboxNetwork, SandboxOptions,
    SandboxRecord, SnapshotRecord, Store, StoreError, StoredMount, TenantLock, key_id_of,
    postgres_migrations,
};

/// Connections per store handle (per replica).
const POOL_SIZE: usize = 16;
/// How long a call waits for a connection (pool full or database unreachable).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL-backed store: a pool of connections to one database. Secret values and CA
/// private keys are sealed with the [`DataKey`] it was opened with, as in SQLite (every replica
/// needs the same key).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    key: Arc<DataKey>,
}

const COLUMNS: &str = "tenant, id, internal_id, image, state, sleep_after, keep_alive, ephemeral, \
                       env, limits, isolation, created_at, last_active_at, labels, expires_at, \
                       keep_alive_while_busy";

const BACKUP_COLUMNS: &str = "id, tenant, sandbox_id, dir, name, state, size_bytes, raw_bytes, \
     sha256, created_at, expires_at";

const PROCESS_COLUMNS: &str = "sandbox, process_id, pid, command, status, exit_code, \
                               start_time, end_time, session_id, stdout, stderr, \
                               stdout_dropped, stderr_dropped, reason";

const KEY_COLUMNS: &str = "key_id, tenant, created_at, last_used_at";

/// Advisory-lock namespace of the per-tenant admission locks (the tenant's hash is the
/// second key).
const TENANT_LOCK_CLASS: i32 = 0x5350_0001;
/// Advisory-lock class of periodic jobs (`Store::try_lock_job`).
const JOB_LOCK_CLASS: i32 = 0x5350_0002;
/// Advisory-lock key serialising a tenant's archive pruning (with the tenant's hash).
const ARCHIVE_LOCK_CLASS: i32 = 0x5350_0002;

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`, or
    /// `?host=/socket/dir` for a Unix socket), applies pending migrations and checks it is
    /// usable.
    pub async fn connect(url: &str, key: DataKey) -> Result<Self> {
        Self::connect_before(url, key, i64::MAX).await
    }

    /// Like [`PostgresStore::connect`], migrating only to the schema before `version` (tests of
    /// upgrades).
    #[doc(hidden)]
    pub async fn connect_before(url: &str, key: DataKey, version: i64) -> Result<Self> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Url {
            message: e.to_string(),
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Url {
                message: e.to_string(),
            })?;
        let store = PostgresStore {
            pool,
            key: Arc::new(key),
        };
        let mut client = store.client().await?;
        postgres_migrations::migrate_before(&mut client, version).await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(StoreError::from)
    }
}

/// A tenant's admission lock: a session advisory lock held on one pooled connection until
/// dropped.
struct PgTenantLock {
    client: Option<deadpool_postgres::Object>,
    key: (i32, String),
}

impl Drop for PgTenantLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let (class, tenant) = self.key.clone();
        let unlock = async move {
            let released = client
                .query_one(
                    "SELECT pg_advisory_unlock($1, hashtext($2))",
                    &[&class, &tenant],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false);
            if !released {
                // Closing the session releases whatever it holds.
                drop(deadpool_postgres::Object::take(client));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(unlock);
            }
            // No runtime: the connection is closed with its task, releasing the lock.
            Err(_) => drop(unlock),
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn corrupt(id: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: message.to_string(),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

fn sandbox_row(r: &Row) -> Result<SandboxRecord> {
    let id: String = r.try_get(1)?;
    let state: String = r.try_get(4)?;
    let state = SandboxState::parse(&state)
        .ok_or_else(|| corrupt(&id, format!("unknown state {state:?}")))?;
    let env: String = r.try_get(8)?;
    let limits: String = r.try_get(9)?;
    let isolation: String = r.try_get(10)?;
    let labels: String = r.try_get(13)?;
    let isolation = Isolation::parse(&isolation)
        .ok_or_else(|| corrupt(&id, format!("unknown isolation {isolation:?}")))?;
    let sleep_after: i64 = r.try_get(5)?;
    Ok(SandboxRecord {
        options: SandboxOptions {
            image: r.try_get(3)?,
            sleep_after: SleepAfter::from_secs(u64::try_from(sleep_after).unwrap_or(0)),
            keep_alive: r.try_get(6)?,
            keep_alive_while_busy: r.try_get(15)?,
            ephemeral: r.try_get(7)?,
            isolation,
            env: serde_json::from_str(&env).map_err(|e| corrupt(&id, e))?,
            limits: serde_json::from_str(&limits).map_err(|e| corrupt(&id, e))?,
            labels: serde_json::from_str(&labels).map_err(|e| corrupt(&id, e))?,
            expires_at_ms: r.try_get(14)?,
        },
        tenant: r.try_get(0)?,
        internal_id: r.try_get(2)?,
        state,
        created_at_ms: r.try_get(11)?,
        last_active_at_ms: r.try_get(12)?,
        id,
    })
}

fn backup_row(r: &Row) -> Result<BackupRecord> {
    Ok(BackupRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        sandbox_id: r.try_get(2)?,
        dir: r.try_get(3)?,
        name: r.try_get(4)?,
        state: BackupState::from_stored(&r.try_get::<_, String>(5)?),
        size_bytes: r.try_get::<_, i64>(6)?.max(0) as u64,
        raw_bytes: r.try_get::<_, i64>(7)?.max(0) as u64,
        sha256: r.try_get(8)?,
        created_at_ms: r.try_get(9)?,
        expires_at_ms: r.try_get(10)?,
    })
}

fn process_row(r: &Row) -> Result<ArchivedProcess> {
    let id: String = r.try_get(1)?;
    let status: String = r.try_get(4)?;
    let reason: Option<String> = r.try_get(13)?;
    let pid: Option<i64> = r.try_get(2)?;
    Ok(ArchivedProcess {
        info: ProcessInfo {
            pid: pid.map(|p| u32::try_from(p).unwrap_or(0)),
            command: r.try_get(3)?,
            status: serde_json::from_value::<ProcessStatus>(serde_json::Value::String(status))
                .map_err(|e| corrupt(&id, e))?,
            exit_code: r.try_get(5)?,
            start_time: r.try_get(6)?,
            end_time: r.try_get(7)?,
            session_id: r.try_get(8)?,
            reason: reason
                .map(|r| serde_json::from_value(serde_json::Value::String(r)))
                .transpose()
                .map_err(|e| corrupt(&id, e))?,
            id,
        },
        stdout: r.try_get(9)?,
        stderr: r.try_get(10)?,
        stdout_dropped_bytes: r.try_get::<_, i64>(11)?.max(0) as u64,
        stderr_dropped_bytes: r.try_get::<_, i64>(12)?.max(0) as u64,
    })
}

fn api_key_row(r: &Row) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        key_id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        created_at_ms: r.try_get::<_, i64>(2)?.saturating_mul(1000),
        last_used_at_ms: r.try_get(3)?,
    })
}

fn audit_row(r: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get(0)?,
        tenant: r.try_get(1)?,
        at_ms: r.try_get(2)?,
        actor: r.try_get(3)?,
        action: r.try_get(4)?,
        target: r.try_get(5)?,
        result: r.try_get(6)?,
        detail: r.try_get(7)?,
    })
}

fn snapshot_row(r: &Row) -> Result<SnapshotRecord> {
    let id: String = r.try_get(0)?;
    let isolation: String = r.try_get(5)?;
    let isolation = Isolation::parse(&isolation)
        .ok_or_else(|| corrupt(&id, format!("unknown isolation {isolation:?}")))?;
    Ok(SnapshotRecord {
        tenant: r.try_get(1)?,
        name: r.try_get(2)?,
        sandbox_id: r.try_get(3)?,
        image: r.try_get(4)?,
        isolation,
        size_bytes: u64::try_from(r.try_get::<_, i64>(6)?).unwrap_or(0),
        created_at_ms: r.try_get(7)?,
        id,
    })
}

const SNAPSHOT_COLUMNS: &str = "id, tenant, name, sandbox_id, image, isolation, size_bytes, \
                                created_at";

/// Binds a mount's sealed credentials to its sandbox and path (same context as SQLite's).
fn mount_seal_context(sandbox: &str, mount_path: &str) -> String {
    format!("sandbox_mounts/{sandbox}/{mount_path}")
}

/// What authenticates an encrypted column: its row and name (same context as SQLite's).
fn seal_context(sandbox: &str, column: &str) -> String {
    format!("sandbox_network/{sandbox}/{column}")
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

async fn get(c: &impl GenericClient, tenant: &str, id: &str) -> Result<Option<SandboxRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE tenant = $1 AND id = $2");
    c.query_opt(&sql, &[&tenant, &id])
        .await?
        .map(|r| sandbox_row(&r))
        .transpose()
}

async fn insert_key(
    c: &impl GenericClient,
    tenant: &str,
    key_sha256: &str,
) -> Result<ApiKeyRecord> {
    let key_id = key_id_of(key_sha256);
    let row = c
        .query_one(
            &format!(
                "INSERT INTO api_keys (key_sha256, key_id, tenant, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING {KEY_COLUMNS}"
            ),
            &[&key_sha256, &key_id, &tenant, &now_secs()],
        )
        .await?;
    api_key_row(&row)
}

async fn key_where(
    c: &impl GenericClient,
    column: &'static str,
    value: &str,
) -> Result<Option<ApiKeyRecord>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = $1");
    c.query_opt(&sql, &[&value])
        .await?
        .map(|r| api_key_row(&r))
        .transpose()
}

/// Deletes the archived processes matching `scope` (a condition on `a` with one parameter)
/// beyond the newest `max_rows` or `max_bytes`, as SQLite's `prune_archive` does.
async fn prune_archive(
    c: &impl GenericClient,
    scope: &str,
    param: &str,
    max_rows: usize,
    max_bytes: u64,
) -> Result<()> {
    let rows = c
        .query(
            &format!(
                "SELECT a.sandbox, a.process_id, (octet_length(a.command) \
                 + octet_length(a.stdout) + octet_length(a.stderr))::bigint \
                 FROM archived_processes a WHERE {scope} \
                 ORDER BY a.archived_at DESC, a.start_time DESC"
            ),
            &[&param],
        )
        .await?;
    let (mut kept, mut bytes, mut full) = (0usize, 0u64, false);
    let (mut sandboxes, mut ids) = (Vec::<String>::new(), Vec::<String>::new());
    for row in rows {
        let size = row.try_get::<_, i64>(2)?.max(0) as u64;
        full = full || kept >= max_rows || bytes + size > max_bytes;
        if full {
            sandboxes.push(row.try_get(0)?);
            ids.push(row.try_get(1)?);
        } else {
            kept += 1;
            bytes += size;
        }
    }
    if !ids.is_empty() {
        c.execute(
            "DELETE FROM archived_processes a USING unnest($1::text[], $2::text[]) AS d(s, p) \
             WHERE a.sandbox = d.s AND a.process_id = d.p",
            &[&sandboxes, &ids],
        )
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn setting_or_init(&self, key: &str, default: &str) -> Result<String> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&key, &default],
        )
        .await?;
        let row = c
            .query_one("SELECT value FROM settings WHERE key = $1", &[&key])
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn put_node(&self, node: &NodeRecord) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO nodes (id, address, boot_id, capacity, last_heartbeat, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
             address = EXCLUDED.address, boot_id = EXCLUDED.boot_id, \
             capacity = EXCLUDED.capacity, last_heartbeat = EXCLUDED.last_heartbeat, \
             registered_at = EXCLUDED.registered_at",
            &[
                &node.id,
                &node.address,
                &node.boot_id,
                &node.capacity,
                &node.last_heartbeat_ms,
                &node.registered_at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn node_heartbeat(&self, id: &str, at_ms: i64, capacity: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE nodes SET last_heartbeat = GREATEST(last_heartbeat, $2), \
             capacity = CASE WHEN $2 >= last_heartbeat THEN $3 ELSE capacity END WHERE id = $1",
            &[&id, &at_ms, &capacity],
        )
        .await?;
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, address, boot_id, capacity, last_heartbeat, registered_at \
                 FROM nodes ORDER BY id COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRecord {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    boot_id: r.try_get(2)?,
                    capacity: r.try_get(3)?,
                    last_heartbeat_ms: r.try_get(4)?,
                    registered_at_ms: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn set_sandbox_node(&self, sandbox: &str, node: Option<&str>) -> Result<()> {
        let c = self.client().await?;
        match node {
            Some(node) => {
                c.execute(
                    "INSERT INTO sandbox_nodes (sandbox, node) VALUES ($1, $2) \
                     ON CONFLICT (sandbox) DO UPDATE SET node = EXCLUDED.node",
                    &[&sandbox, &node],
                )
                .await?
            }
            None => {
                c.execute("DELETE FROM sandbox_nodes WHERE sandbox = $1", &[&sandbox])
                    .await?
            }
        };
        Ok(())
    }

    async fn sandbox_node(&self, sandbox: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT node FROM sandbox_nodes WHERE sandbox = $1",
                &[&sandbox],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn node_sandbox_counts(&self) -> Result<Vec<(String, u64)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT node, count(*) FROM sandbox_nodes GROUP BY node",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(1)?;
                Ok((r.try_get(0)?, n.max(0) as u64))
            })
            .collect()
    }

    async fn ensure_tenant(&self, tenant: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&tenant, &now_secs()],
        )
        .await?;
        Ok(())
    }

    async fn lock_tenant(&self, tenant: &str) -> Result<TenantLock> {
        let c = self.client().await?;
        c.execute(
            "SELECT pg_advisory_lock($1, hashtext($2))",
            &[&TENANT_LOCK_CLASS, &tenant],
        )
        .await?;
        Ok(TenantLock::new(PgTenantLock {
            client: Some(c),
            key: (TENANT_LOCK_CLASS, tenant.to_owned()),
        }))
    }

    async fn try_lock_job(&self, job: &str) -> Result<Option<TenantLock>> {
        let c = self.client().await?;
        let got: bool = c
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&JOB_LOCK_CLASS, &job],
            )
            .await?
            .try_get(0)?;
        Ok(got.then(|| {
            TenantLock::new(PgTenantLock {
                client: Some(c),
                key: (JOB_LOCK_CLASS, job.to_owned()),
            })
        }))
    }

    async fn add_api_key(&self, tenant: &str, key_sha256: &str) -> Result<ApiKeyRecord> {
        let c = self.client().await?;
        let exists = c
            .query_opt("SELECT 1 FROM tenants WHERE name = $1", &[&tenant])
            .await?
            .is_some();
        if !exists {
            return Err(StoreError::NoSuchTenant(tenant.to_owned()));
        }
        // A tenant deleted in between fails the foreign key: a database error, not a ghost key.
        insert_key(&**c, tenant, key_sha256).await
    }

    async fn tenant_for_key(&self, key_sha256: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT tenant FROM api_keys WHERE key_sha256 = $1",
                &[&key_sha256],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn api_key(&self, key_sha256: &str) -> Result<Option<ApiKeyRecord>> {
        let c = self.client().await?;
        key_where(&**c, "key_sha256", key_sha256).await
    }

    async fn api_key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>> {
        let c = self.client().await?;
        key_where(&**c, "key_id", key_id).await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR tenant = $1 \
                     ORDER BY tenant, created_at, key_id"
                ),
                &[&tenant],
            )
            .await?;
        rows.iter().map(api_key_row).collect()
    }

    async fn revoke_api_key(&self, key_id: &str) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM api_keys WHERE key_id = $1", &[&key_id])
            .await?;
        Ok(n > 0)
    }

    async fn rotate_api_key(&self, key_id: &str, new_sha256: &str) -> Result<Option<ApiKeyRecord>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The delete locks the row: a concurrent rotation of the same key finds nothing.
        let tenant = tx
            .query_opt(
                "DELETE FROM api_keys WHERE key_id = $1 RETURNING tenant",
                &[&key_id],
            )
            .await?;
        let Some(tenant) = tenant else {
            return Ok(None);
        };
        let tenant: String = tenant.try_get(0)?;
        let record = insert_key(&*tx, &tenant, new_sha256).await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn touch_api_key(&self, key_id: &str, at_ms: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE api_keys SET last_used_at = $2 WHERE key_id = $1",
            &[&key_id, &at_ms],
        )
        .await?;
        Ok(())
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let r = record;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO audit_log (tenant, at, actor, action, target, result, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &r.tenant, &r.at_ms, &r.actor, &r.action, &r.target, &r.result, &r.detail,
            ],
        )
        .await?;
        tx.execute(
            "DELETE FROM audit_log WHERE tenant = $1 AND seq <= \
             (SELECT seq FROM audit_log WHERE tenant = $1 ORDER BY seq DESC \
              LIMIT 1 OFFSET $2)",
            &[&r.tenant, &(MAX_AUDIT_PER_TENANT as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        tenant: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, tenant, at, actor, action, target, result, detail FROM audit_log \
                 WHERE tenant = $1 AND seq < COALESCE($2, 9223372036854775807) \
                 ORDER BY seq DESC LIMIT $3",
                &[&tenant, &before, &limit_i64(limit)],
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn create_sandbox(&self, new: NewSandbox) -> Result<(SandboxRecord, bool)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&new.tenant, &now_secs()],
        )
        .await?;
        let o = &new.options;
        // The primary key decides between racing creators (of any replica): the loser's
        // insert waits for the winner's commit, then does nothing and reads its row.
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO sandboxes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                     $9, $10, $11, $12, $12, $13, $14, $15) ON CONFLICT (tenant, id) DO NOTHING"
                ),
                &[
                    &new.tenant,
                    &new.id,
                    &new.internal_id,
                    &o.image,
                    &new.state.as_str(),
                    &i64::try_from(o.sleep_after.as_secs()).unwrap_or(i64::MAX),
                    &o.keep_alive,
                    &o.ephemeral,
                    &to_json(&o.env),
                    &to_json(&o.limits),
                    &o.isolation.as_str(),
                    &new.now_ms,
                    &to_json(&o.labels),
                    &o.expires_at_ms,
                    &o.keep_alive_while_busy,
                ],
            )
            .await?;
        let record = get(&*tx, &new.tenant, &new.id)
            .await?
            .ok_or_else(|| corrupt(&new.id, "row vanished after insert"))?;
        tx.commit().await?;
        Ok((record, inserted > 0))
    }

    async fn get_sandbox(&self, tenant: &str, id: &str) -> Result<Option<SandboxRecord>> {
        let c = self.client().await?;
        get(&**c, tenant, id).await
    }

    async fn list_sandboxes(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SandboxRecord>> {
        self.list_sandboxes_labelled(tenant, &[], after, limit)
            .await
    }

    async fn list_sandboxes_labelled(
        &self,
        tenant: &str,
        labels: &[(String, String)],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SandboxRecord>> {
        let after = after.unwrap_or("");
        let limit = limit_i64(limit);
        // One `labels::jsonb ->> key = value` per selector, all bound as parameters.
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&tenant, &after, &limit];
        let mut filter = String::new();
        for (key, value) in labels {
            let n = params.len();
            filter.push_str(&format!(" AND (labels::jsonb ->> ${}) = ${}", n + 1, n + 2));
            params.push(key);
            params.push(value);
        }
        // `COLLATE "C"`: ids compare byte-wise, as in SQLite, whatever the database's locale.
        let sql = format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE tenant = $1 AND id COLLATE \"C\" > $2{filter} \
             ORDER BY id COLLATE \"C\" LIMIT $3"
        );
        let c = self.client().await?;
        let rows = c.query(&sql, &params).await?;
        rows.iter().map(sandbox_row).collect()
    }

    async fn expired_sandboxes(&self, now_ms: i64, limit: usize) -> Result<Vec<(String, String)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT tenant, id FROM sandboxes WHERE expires_at IS NOT NULL \
                 AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
                &[&now_ms, &limit_i64(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn update_options(
        &self,
        tenant: &str,
        id: &str,
        options: &SandboxOptions,
    ) -> Result<bool> {
        let o = options;
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE sandboxes SET image = $3, sleep_after = $4, keep_alive = $5, \
                 ephemeral = $6, env = $7, limits = $8, labels = $9, expires_at = $10, \
                 keep_alive_while_busy = $11 WHERE tenant = $1 AND id = $2",
                &[
                    &tenant,
                    &id,
                    &o.image,
                    &i64::try_from(o.sleep_after.as_secs()).unwrap_or(i64::MAX),
                    &o.keep_alive,
                    &o.ephemeral,
                    &to_json(&o.env),
                    &to_json(&o.limits),
                    &to_json(&o.labels),
                    &o.expires_at_ms,
                    &o.keep_alive_while_busy,
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_state(
        &self,
        tenant: &str,
        id: &str,
        state: SandboxState,
        last_active_ms: Option<i64>,
    ) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE sandboxes SET state = $3, \
                 last_active_at = COALESCE($4, last_active_at) WHERE tenant = $1 AND id = $2",
                &[&tenant, &id, &state.as_str(), &last_active_ms],
            )
            .await?;
        Ok(n > 0)
    }

    async fn reset_states(&self, from: &[SandboxState], to: SandboxState) -> Result<usize> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE sandboxes SET state = $2 WHERE state = ANY($1)",
                &[&from, &to.as_str()],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn delete_sandbox(&self, tenant: &str, id: &str) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let deleted = tx
            .query_opt(
                "DELETE FROM sandboxes WHERE tenant = $1 AND id = $2 RETURNING internal_id",
                &[&tenant, &id],
            )
            .await?;
        if let Some(row) = &deleted {
            let internal: String = row.try_get(0)?;
            for table in ["archived_processes", "sandbox_network", "sandbox_mounts"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE sandbox = $1"),
                    &[&internal],
                )
                .await?;
            }
        }
        tx.execute(
            "DELETE FROM sandbox_snapshots WHERE tenant = $1 AND sandbox_id = $2",
            &[&tenant, &id],
        )
        .await?;
        tx.commit().await?;
        Ok(deleted.is_some())
    }

    async fn archive_processes(
        &self,
        sandbox: &str,
        processes: Vec<ArchivedProcess>,
    ) -> Result<()> {
        archive(self, sandbox, &processes, false).await.map(|_| ())
    }

    async fn checkpoint_processes(
        &self,
        sandbox: &str,
        processes: Vec<ArchivedProcess>,
    ) -> Result<bool> {
        archive(self, sandbox, &processes, true).await
    }

    async fn archived_processes(&self, sandbox: &str) -> Result<Vec<ArchivedProcess>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {PROCESS_COLUMNS} FROM archived_processes WHERE sandbox = $1 \
                     ORDER BY start_time COLLATE \"C\", process_id COLLATE \"C\""
                ),
                &[&sandbox],
            )
            .await?;
        rows.iter().map(process_row).collect()
    }

    async fn archived_process(
        &self,
        sandbox: &str,
        process_id: &str,
    ) -> Result<Option<ArchivedProcess>> {
        let c = self.client().await?;
        c.query_opt(
            &format!(
                "SELECT {PROCESS_COLUMNS} FROM archived_processes \
                 WHERE sandbox = $1 AND process_id = $2"
            ),
            &[&sandbox, &process_id],
        )
        .await?
        .map(|r| process_row(&r))
        .transpose()
    }

    async fn sandbox_network(&self, sandbox: &str) -> Result<Option<SandboxNetwork>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT policy, secrets, ca_cert, ca_key, operator_policy FROM sandbox_network \
                 WHERE sandbox = $1",
                &[&sandbox],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let policy: String = row.try_get(0)?;
        let secrets: String = row.try_get(1)?;
        let cert: Option<String> = row.try_get(2)?;
        let ca_key: Option<String> = row.try_get(3)?;
        let operator_policy: bool = row.try_get(4)?;
        let bad = |e: &dyn std::fmt::Display| corrupt(sandbox, format!("network: {e}"));
        let open = |column: &str, value: &str| {
            self.key
                .open(&seal_context(sandbox, column), value)
                .map_err(|e| bad(&format!("{column}: {e}")))
        };
        let secrets = open("secrets", &secrets)?;
        let ca_key = ca_key.map(|k| open("ca_key", &k)).transpose()?;
        Ok(Some(SandboxNetwork {
            policy: serde_json::from_str(&policy).map_err(|e| bad(&e))?,
            secrets: serde_json::from_str(&secrets).map_err(|e| bad(&e))?,
            ca: cert.zip(ca_key),
            operator_policy,
        }))
    }

    async fn set_sandbox_network(&self, sandbox: &str, network: &SandboxNetwork) -> Result<()> {
        let encode = |e: serde_json::Error| corrupt(sandbox, format!("network: {e}"));
        let policy = serde_json::to_string(&network.policy).map_err(encode)?;
        let secrets = serde_json::to_string(&network.secrets).map_err(encode)?;
        let secrets = self.key.seal(&seal_context(sandbox, "secrets"), &secrets)?;
        let (cert, key) = network.ca.clone().unzip();
        let key = key
            .map(|k| self.key.seal(&seal_context(sandbox, "ca_key"), &k))
            .transpose()?;
        let c = self.client().await?;
        c.execute(
            "INSERT INTO sandbox_network \
             (sandbox, policy, secrets, ca_cert, ca_key, operator_policy) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sandbox) DO UPDATE SET \
             policy = $2, secrets = $3, ca_cert = $4, ca_key = $5, operator_policy = $6",
            &[
                &sandbox,
                &policy,
                &secrets,
                &cert,
                &key,
                &network.operator_policy,
            ],
        )
        .await?;
        Ok(())
    }

    async fn put_mount(&self, sandbox: &str, mount: &StoredMount) -> Result<bool> {
        let m = mount;
        let credentials = serde_json::json!([m.access_key_id, m.secret_access_key]).to_string();
        let credentials = self
            .key
            .seal(&mount_seal_context(sandbox, &m.mount_path), &credentials)?;
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO sandbox_mounts (sandbox, mount_path, bucket, endpoint, prefix, \
                 region, read_only, credentials, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                &[
                    &sandbox,
                    &m.mount_path,
                    &m.bucket,
                    &m.endpoint,
                    &m.prefix,
                    &m.region,
                    &m.read_only,
                    &credentials,
                    &m.created_at_ms,
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_mount(&self, sandbox: &str, mount_path: &str) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM sandbox_mounts WHERE sandbox = $1 AND mount_path = $2",
                &[&sandbox, &mount_path],
            )
            .await?;
        Ok(n > 0)
    }

    async fn mounts(&self, sandbox: &str) -> Result<Vec<StoredMount>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT mount_path, bucket, endpoint, prefix, region, read_only, credentials, \
                 created_at FROM sandbox_mounts WHERE sandbox = $1 \
                 ORDER BY mount_path COLLATE \"C\"",
                &[&sandbox],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mount_path: String = r.try_get(0)?;
            let sealed: String = r.try_get(6)?;
            let bad = |message: String| corrupt(sandbox, format!("mount {mount_path}: {message}"));
            let clear = self
                .key
                .open(&mount_seal_context(sandbox, &mount_path), &sealed)
                .map_err(|e| bad(e.to_string()))?;
            let (access_key_id, secret_access_key): (String, String) =
                serde_json::from_str(&clear).map_err(|e| bad(e.to_string()))?;
            out.push(StoredMount {
                bucket: r.try_get(1)?,
                endpoint: r.try_get(2)?,
                prefix: r.try_get(3)?,
                region: r.try_get(4)?,
                read_only: r.try_get(5)?,
                access_key_id,
                secret_access_key,
                created_at_ms: r.try_get(7)?,
                mount_path,
            });
        }
        Ok(out)
    }

    async fn count_by_state(&self) -> Result<Vec<(SandboxState, u64)>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT state, COUNT(*) FROM sandboxes GROUP BY state", &[])
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let state: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            if let Some(state) = SandboxState::parse(&state) {
                out.push((state, n.max(0) as u64));
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<()> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn put_exposed_port(&self, record: &ExposedPortRecord) -> Result<()> {
        let r = record;
        let c = self.client().await?;
        c.execute(
            "INSERT INTO exposed_ports (tenant, sandbox_id, port, name, token, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, sandbox_id, port) DO UPDATE \
             SET name = EXCLUDED.name, token = EXCLUDED.token, created_at = EXCLUDED.created_at",
            &[
                &r.tenant,
                &r.sandbox_id,
                &i32::from(r.port),
                &r.name,
                &r.token,
                &r.created_at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_exposed_port(&self, tenant: &str, sandbox_id: &str, port: u16) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM exposed_ports WHERE tenant = $1 AND sandbox_id = $2 AND port = $3",
                &[&tenant, &sandbox_id, &i32::from(port)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn exposed_ports(&self) -> Result<Vec<ExposedPortRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT tenant, sandbox_id, port, name, token, created_at FROM exposed_ports \
                 ORDER BY tenant COLLATE \"C\", sandbox_id COLLATE \"C\", port",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let sandbox_id: String = r.try_get(1)?;
                let port: i32 = r.try_get(2)?;
                Ok(ExposedPortRecord {
                    tenant: r.try_get(0)?,
                    port: u16::try_from(port).map_err(|e| corrupt(&sandbox_id, e))?,
                    sandbox_id,
                    name: r.try_get(3)?,
                    token: r.try_get(4)?,
                    created_at_ms: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn tenant_quota(&self, tenant: &str) -> Result<Option<TenantQuota>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT quota FROM tenant_quotas WHERE tenant = $1",
                &[&tenant],
            )
            .await?;
        row.map(|r| {
            let json: String = r.try_get(0)?;
            serde_json::from_str(&json).map_err(|e| corrupt(tenant, format!("quota: {e}")))
        })
        .transpose()
    }

    async fn set_tenant_quota(&self, tenant: &str, quota: Option<&TenantQuota>) -> Result<()> {
        let c = self.client().await?;
        match quota {
            Some(quota) => {
                let json = serde_json::to_string(quota)
                    .map_err(|e| corrupt(tenant, format!("quota: {e}")))?;
                // Inserted only for an existing tenant (in one statement, so a concurrent
                // delete of the tenant cannot slip in between).
                let n = c
                    .execute(
                        "INSERT INTO tenant_quotas (tenant, quota, updated_at) \
                         SELECT name, $2, $3 FROM tenants WHERE name = $1 \
                         ON CONFLICT (tenant) DO UPDATE SET quota = $2, updated_at = $3",
                        &[&tenant, &json, &now_secs()],
                    )
                    .await?;
                if n == 0 {
                    return Err(StoreError::NoSuchTenant(tenant.to_owned()));
                }
            }
            None => {
                c.execute("DELETE FROM tenant_quotas WHERE tenant = $1", &[&tenant])
                    .await?;
            }
        }
        Ok(())
    }

    async fn legacy_uid_ranges(&self) -> Result<Vec<(String, u32)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT internal_id, uid_base FROM legacy_uid_ranges ORDER BY uid_base",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let base: i64 = r.try_get(1)?;
                let base = u32::try_from(base).map_err(|e| corrupt(&id, e))?;
                Ok((id, base))
            })
            .collect()
    }

    async fn forget_legacy_uid_ranges(&self) -> Result<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM legacy_uid_ranges", &[]).await?;
        Ok(())
    }

    async fn insert_backup(&self, record: &BackupRecord) -> Result<()> {
        let r = record;
        let c = self.client().await?;
        c.execute(
            &format!(
                "INSERT INTO backups ({BACKUP_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            &[
                &r.id,
                &r.tenant,
                &r.sandbox_id,
                &r.dir,
                &r.name,
                &r.state.as_str(),
                &(r.size_bytes as i64),
                &(r.raw_bytes as i64),
                &r.sha256,
                &r.created_at_ms,
                &r.expires_at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn finish_backup(
        &self,
        id: &str,
        size_bytes: u64,
        raw_bytes: u64,
        sha256: &str,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE backups SET state = 'ready', size_bytes = $2, raw_bytes = $3, sha256 = $4 \
             WHERE id = $1",
            &[&id, &(size_bytes as i64), &(raw_bytes as i64), &sha256],
        )
        .await?;
        Ok(())
    }

    async fn get_backup(&self, tenant: &str, id: &str) -> Result<Option<BackupRecord>> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE tenant = $1 AND id = $2"),
            &[&tenant, &id],
        )
        .await?
        .map(|r| backup_row(&r))
        .transpose()
    }

    async fn list_backups(&self, tenant: &str) -> Result<Vec<BackupRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {BACKUP_COLUMNS} FROM backups WHERE tenant = $1 AND state = 'ready' \
                     ORDER BY created_at DESC, id COLLATE \"C\""
                ),
                &[&tenant],
            )
            .await?;
        rows.iter().map(backup_row).collect()
    }

    async fn delete_backup(&self, tenant: &str, id: &str) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM backups WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn expired_backups(
        &self,
        now_ms: i64,
        stale_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<BackupRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {BACKUP_COLUMNS} FROM backups WHERE expires_at <= $1 \
                     OR (state = 'creating' AND created_at < $2) ORDER BY expires_at LIMIT $3"
                ),
                &[&now_ms, &stale_before_ms, &limit_i64(limit)],
            )
            .await?;
        rows.iter().map(backup_row).collect()
    }

    async fn backup_usage(&self, tenant: &str) -> Result<(u64, u64)> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0)::bigint FROM backups \
                 WHERE tenant = $1",
                &[&tenant],
            )
            .await?;
        let (n, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok((n.max(0) as u64, bytes.max(0) as u64))
    }

    async fn create_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &format!(
                "INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &s.id,
                &s.tenant,
                &s.name,
                &s.sandbox_id,
                &s.image,
                &s.isolation.as_str(),
                &i64::try_from(s.size_bytes).unwrap_or(i64::MAX),
                &s.created_at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_snapshot(&self, tenant: &str, id: &str) -> Result<Option<SnapshotRecord>> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE tenant = $1 AND id = $2"),
            &[&tenant, &id],
        )
        .await?
        .map(|r| snapshot_row(&r))
        .transpose()
    }

    async fn list_snapshots(&self, tenant: &str) -> Result<Vec<SnapshotRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE tenant = $1 \
                     ORDER BY created_at, id COLLATE \"C\""
                ),
                &[&tenant],
            )
            .await?;
        rows.iter().map(snapshot_row).collect()
    }

    async fn delete_snapshot(&self, tenant: &str, id: &str) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM snapshots WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_sandbox_snapshot(
        &self,
        tenant: &str,
        sandbox_id: &str,
        snapshot_id: &str,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO sandbox_snapshots (tenant, sandbox_id, snapshot_id) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, sandbox_id) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id",
            &[&tenant, &sandbox_id, &snapshot_id],
        )
        .await?;
        Ok(())
    }

    async fn sandbox_snapshot(&self, tenant: &str, sandbox_id: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT snapshot_id FROM sandbox_snapshots WHERE tenant = $1 AND sandbox_id = $2",
                &[&tenant, &sandbox_id],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn snapshot_users(&self, tenant: &str, snapshot_id: &str) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT u.sandbox_id FROM sandbox_snapshots u JOIN sandboxes s \
                 ON s.tenant = u.tenant AND s.id = u.sandbox_id \
                 WHERE u.tenant = $1 AND u.snapshot_id = $2 ORDER BY u.sandbox_id COLLATE \"C\"",
                &[&tenant, &snapshot_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?)
    }
}

/// Archives process records (insert or replace, then prune to the per-sandbox and per-tenant
/// bounds); with `require_sandbox`, only while the sandbox's record exists.
async fn archive(
    store: &PostgresStore,
    sandbox: &str,
    processes: &[ArchivedProcess],
    require_sandbox: bool,
) -> Result<bool> {
    let mut c = store.client().await?;
    let tx = c.transaction().await?;
    let tenant: Option<String> = tx
        .query_opt(
            "SELECT tenant FROM sandboxes WHERE internal_id = $1",
            &[&sandbox],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    if require_sandbox && tenant.is_none() {
        return Ok(false);
    }
    // Pruning reads then deletes: one archiver per tenant at a time, across replicas.
    let lock_key = tenant.as_deref().unwrap_or(sandbox);
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&ARCHIVE_LOCK_CLASS, &lock_key],
    )
    .await?;
    let insert = tx
        .prepare(&format!(
            "INSERT INTO archived_processes ({PROCESS_COLUMNS}, archived_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (sandbox, process_id) DO UPDATE SET pid = EXCLUDED.pid, \
             command = EXCLUDED.command, status = EXCLUDED.status, \
             exit_code = EXCLUDED.exit_code, start_time = EXCLUDED.start_time, \
             end_time = EXCLUDED.end_time, session_id = EXCLUDED.session_id, \
             stdout = EXCLUDED.stdout, stderr = EXCLUDED.stderr, \
             stdout_dropped = EXCLUDED.stdout_dropped, \
             stderr_dropped = EXCLUDED.stderr_dropped, reason = EXCLUDED.reason, \
             archived_at = EXCLUDED.archived_at"
        ))
        .await?;
    for p in processes {
        let i = &p.info;
        tx.execute(
            &insert,
            &[
                &sandbox,
                &i.id,
                &i.pid.map(i64::from),
                &i.command,
                &i.status.as_str(),
                &i.exit_code,
                &i.start_time,
                &i.end_time,
                &i.session_id,
                &p.stdout,
                &p.stderr,
                &(p.stdout_dropped_bytes as i64),
                &(p.stderr_dropped_bytes as i64),
                &i.reason.map(|r| r.as_str()),
                &now_secs(),
            ],
        )
        .await?;
    }
    prune_archive(
        &*tx,
        "a.sandbox = $1",
        sandbox,
        MAX_ARCHIVED_PER_SANDBOX,
        MAX_ARCHIVE_BYTES_PER_SANDBOX,
    )
    .await?;
    if let Some(tenant) = &tenant {
        prune_archive(
            &*tx,
            "a.sandbox IN (SELECT internal_id FROM sandboxes WHERE tenant = $1)",
            tenant,
            usize::MAX,
            MAX_ARCHIVE_BYTES_PER_TENANT,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
