//! [`Store`] on one SQLite database file.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use sandpit_protocol::container::{ProcessInfo, ProcessStatus};
use sandpit_protocol::control::{Isolation, SandboxState};
use sandpit_protocol::quota::TenantQuota;
use sandpit_protocol::time::SleepAfter;

use crate::crypto::{DataKey, is_sealed};
use crate::{
    ApiKeyRecord, ArchivedProcess, AuditRecord, BackupRecord, BackupState, ExposedPortRecord,
    MAX_ARCHIVE_BYTES_PER_SANDBOX, MAX_ARCHIVE_BYTES_PER_TENANT, MAX_ARCHIVED_PER_SANDBOX,
    MAX_AUDIT_PER_TENANT, NewSandbox, NodeRecord, Result, SandboxNetwork, SandboxOptions,
    SandboxRecord, SnapshotRecord, Store, StoreError, StoredMount, key_id_of, migrations,
};

/// SQLite-backed store. One connection behind a mutex: SQLite serialises writers anyway, and
/// every statement here takes microseconds. Calls run on tokio's blocking pool. Secret values
/// and CA private keys are encrypted with the [`DataKey`] it was opened with.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    key: Arc<DataKey>,
}

const COLUMNS: &str = "tenant, id, internal_id, image, state, sleep_after, keep_alive, ephemeral, \
                       env, limits, isolation, created_at, last_active_at, labels, expires_at, \
                       keep_alive_while_busy";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations and
    /// encrypts with `key` any secrets still stored in clear.
    pub fn open(path: &Path, key: DataKey) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Open {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        Self::init(conn, key)
    }

    /// A private in-memory database with a throw-away data key (tests).
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, DataKey::ephemeral()?)
    }

    fn init(mut conn: Connection, key: DataKey) -> Result<Self> {
        // WAL keeps readers off the writer's back; NORMAL sync is durable across process
        // crashes, which is what matters for a registry that is reconciled at start anyway.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted and overwritten content is zeroed, so a value replaced by its ciphertext
        // leaves no copy in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn)?;
        seal_plaintext_rows(&mut conn, &key)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            key: Arc::new(key),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (statements are
            // atomic), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(StoreError::Task)?
    }
}

const BACKUP_COLUMNS: &str = "id, tenant, sandbox_id, dir, name, state, size_bytes, raw_bytes, \
     sha256, created_at, expires_at";

fn backup_row(r: &Row<'_>) -> rusqlite::Result<BackupRecord> {
    Ok(BackupRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        sandbox_id: r.get(2)?,
        dir: r.get(3)?,
        name: r.get(4)?,
        state: BackupState::from_stored(&r.get::<_, String>(5)?),
        size_bytes: r.get::<_, i64>(6)?.max(0) as u64,
        raw_bytes: r.get::<_, i64>(7)?.max(0) as u64,
        sha256: r.get(8)?,
        created_at_ms: r.get(9)?,
        expires_at_ms: r.get(10)?,
    })
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

/// Raw row, decoded outside rusqlite's closure so JSON errors keep their own type.
struct RawRow {
    tenant: String,
    id: String,
    internal_id: String,
    image: String,
    state: String,
    sleep_after: i64,
    keep_alive: bool,
    ephemeral: bool,
    env: String,
    limits: String,
    isolation: String,
    created_at: i64,
    last_active_at: i64,
    labels: String,
    expires_at: Option<i64>,
    keep_alive_while_busy: bool,
}

fn raw_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        tenant: row.get(0)?,
        id: row.get(1)?,
        internal_id: row.get(2)?,
        image: row.get(3)?,
        state: row.get(4)?,
        sleep_after: row.get(5)?,
        keep_alive: row.get(6)?,
        ephemeral: row.get(7)?,
        env: row.get(8)?,
        limits: row.get(9)?,
        isolation: row.get(10)?,
        created_at: row.get(11)?,
        last_active_at: row.get(12)?,
        labels: row.get(13)?,
        expires_at: row.get(14)?,
        keep_alive_while_busy: row.get(15)?,
    })
}

impl TryFrom<RawRow> for SandboxRecord {
    type Error = StoreError;

    fn try_from(r: RawRow) -> Result<Self> {
        let state = SandboxState::parse(&r.state)
            .ok_or_else(|| corrupt(&r.id, format!("unknown state {:?}", r.state)))?;
        let env = serde_json::from_str(&r.env).map_err(|e| corrupt(&r.id, e))?;
        let limits = serde_json::from_str(&r.limits).map_err(|e| corrupt(&r.id, e))?;
        let labels = serde_json::from_str(&r.labels).map_err(|e| corrupt(&r.id, e))?;
        let isolation = Isolation::parse(&r.isolation)
            .ok_or_else(|| corrupt(&r.id, format!("unknown isolation {:?}", r.isolation)))?;
        Ok(SandboxRecord {
            options: SandboxOptions {
                image: r.image,
                sleep_after: SleepAfter::from_secs(u64::try_from(r.sleep_after).unwrap_or(0)),
                keep_alive: r.keep_alive,
                keep_alive_while_busy: r.keep_alive_while_busy,
                ephemeral: r.ephemeral,
                isolation,
                env,
                limits,
                labels,
                expires_at_ms: r.expires_at,
            },
            tenant: r.tenant,
            id: r.id,
            internal_id: r.internal_id,
            state,
            created_at_ms: r.created_at,
            last_active_at_ms: r.last_active_at,
        })
    }
}

const PROCESS_COLUMNS: &str = "sandbox, process_id, pid, command, status, exit_code, \
                               start_time, end_time, session_id, stdout, stderr, \
                               stdout_dropped, stderr_dropped, reason";

/// An `archived_processes` row before its status is decoded.
struct RawProcess {
    status: String,
    reason: Option<String>,
    process: ArchivedProcess,
}

fn raw_process(row: &Row<'_>) -> rusqlite::Result<RawProcess> {
    Ok(RawProcess {
        status: row.get(4)?,
        reason: row.get(13)?,
        process: ArchivedProcess {
            info: ProcessInfo {
                id: row.get(1)?,
                pid: row.get(2)?,
                command: row.get(3)?,
                // Replaced by `decode`.
                status: ProcessStatus::Error,
                exit_code: row.get(5)?,
                start_time: row.get(6)?,
                end_time: row.get(7)?,
                session_id: row.get(8)?,
                // Replaced by `decode`.
                reason: None,
            },
            stdout: row.get(9)?,
            stderr: row.get(10)?,
            stdout_dropped_bytes: row.get::<_, i64>(11)?.max(0) as u64,
            stderr_dropped_bytes: row.get::<_, i64>(12)?.max(0) as u64,
        },
    })
}

impl RawProcess {
    fn decode(self) -> Result<ArchivedProcess> {
        let mut process = self.process;
        process.info.status = serde_json::from_value(serde_json::Value::String(self.status))
            .map_err(|e| corrupt(&process.info.id, e))?;
        process.info.reason = self
            .reason
            .map(|r| serde_json::from_value(serde_json::Value::String(r)))
            .transpose()
            .map_err(|e| corrupt(&process.info.id, e))?;
        Ok(process)
    }
}

/// Deletes the archived processes matching `scope` (a condition on `a`, the archive, with one
/// parameter) beyond the newest `max_rows` or `max_bytes` (command and logs): walking from the
/// newest, the first record that does not fit and every older one go.
fn prune_archive(
    conn: &Connection,
    scope: &str,
    param: &str,
    max_rows: usize,
    max_bytes: u64,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!(
        "SELECT a.rowid, length(CAST(a.command AS BLOB)) + length(CAST(a.stdout AS BLOB)) \
                + length(CAST(a.stderr AS BLOB)) \
         FROM archived_processes a WHERE {scope} \
         ORDER BY a.archived_at DESC, a.start_time DESC"
    ))?;
    let rows = stmt
        .query_map([param], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (mut kept, mut bytes) = (0usize, 0u64);
    let mut full = false;
    let mut delete = conn.prepare("DELETE FROM archived_processes WHERE rowid = ?1")?;
    for (rowid, size) in rows {
        let size = size.max(0) as u64;
        full = full || kept >= max_rows || bytes + size > max_bytes;
        if full {
            delete.execute([rowid])?;
        } else {
            kept += 1;
            bytes += size;
        }
    }
    Ok(())
}

/// Stores `processes` of `sandbox` and prunes to the caps (see
/// [`Store::archive_processes`]); with `require_sandbox`, writes nothing (false) unless the
/// sandbox's record exists.
fn archive(
    c: &mut Connection,
    sandbox: &str,
    processes: &[ArchivedProcess],
    require_sandbox: bool,
) -> Result<bool> {
    let tx = c.transaction()?;
    let tenant: Option<String> = tx
        .query_row(
            "SELECT tenant FROM sandboxes WHERE internal_id = ?1",
            [sandbox],
            |r| r.get(0),
        )
        .optional()?;
    if require_sandbox && tenant.is_none() {
        return Ok(false);
    }
    {
        let mut stmt = tx.prepare(&format!(
            "INSERT OR REPLACE INTO archived_processes ({PROCESS_COLUMNS}, archived_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))?;
        for p in processes {
            let i = &p.info;
            stmt.execute(params![
                sandbox,
                i.id,
                i.pid,
                i.command,
                i.status.as_str(),
                i.exit_code,
                i.start_time,
                i.end_time,
                i.session_id,
                p.stdout,
                p.stderr,
                p.stdout_dropped_bytes as i64,
                p.stderr_dropped_bytes as i64,
                i.reason.map(|r| r.as_str()),
                now_secs(),
            ])?;
        }
    }
    // Bounded: the newest records win (a later sleep, then a later start).
    prune_archive(
        &tx,
        "a.sandbox = ?1",
        sandbox,
        MAX_ARCHIVED_PER_SANDBOX,
        MAX_ARCHIVE_BYTES_PER_SANDBOX,
    )?;
    if let Some(tenant) = tenant {
        prune_archive(
            &tx,
            "a.sandbox IN (SELECT internal_id FROM sandboxes WHERE tenant = ?1)",
            &tenant,
            usize::MAX,
            MAX_ARCHIVE_BYTES_PER_TENANT,
        )?;
    }
    tx.commit()?;
    Ok(true)
}

fn get(conn: &Connection, tenant: &str, id: &str) -> Result<Option<SandboxRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE tenant = ?1 AND id = ?2");
    conn.query_row(&sql, params![tenant, id], raw_row)
        .optional()?
        .map(SandboxRecord::try_from)
        .transpose()
}

/// What authenticates an encrypted column: its row and name.
/// Binds a mount's sealed credentials to its sandbox and path (a row copied elsewhere does
/// not open).
fn mount_seal_context(sandbox: &str, mount_path: &str) -> String {
    format!("sandbox_mounts/{sandbox}/{mount_path}")
}

fn seal_context(sandbox: &str, column: &str) -> String {
    format!("sandbox_network/{sandbox}/{column}")
}

/// Encrypts the secrets and CA keys of rows written before encryption existed, then empties
/// the WAL so no clear copy stays in it.
fn seal_plaintext_rows(conn: &mut Connection, key: &DataKey) -> Result<()> {
    let rows: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT sandbox, secrets, ca_key FROM sandbox_network")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let tx = conn.transaction()?;
    let mut sealed = 0;
    for (sandbox, secrets, ca_key) in rows {
        let clear_key = ca_key.filter(|k| !is_sealed(k));
        if is_sealed(&secrets) && clear_key.is_none() {
            continue;
        }
        let secrets = match is_sealed(&secrets) {
            true => secrets,
            false => key.seal(&seal_context(&sandbox, "secrets"), &secrets)?,
        };
        let ca_key = clear_key
            .map(|k| key.seal(&seal_context(&sandbox, "ca_key"), &k))
            .transpose()?;
        tx.execute(
            "UPDATE sandbox_network SET secrets = ?2, ca_key = COALESCE(?3, ca_key) \
             WHERE sandbox = ?1",
            params![sandbox, secrets, ca_key],
        )?;
        sealed += 1;
    }
    tx.commit()?;
    if sealed > 0 {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

fn api_key_record(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        key_id: r.get(0)?,
        tenant: r.get(1)?,
        created_at_ms: r.get::<_, i64>(2)?.saturating_mul(1000),
        last_used_at_ms: r.get(3)?,
    })
}

const KEY_COLUMNS: &str = "key_id, tenant, created_at, last_used_at";

fn insert_key(conn: &Connection, tenant: &str, key_sha256: &str) -> Result<ApiKeyRecord> {
    let key_id = key_id_of(key_sha256);
    conn.execute(
        "INSERT INTO api_keys (key_sha256, key_id, tenant, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![key_sha256, key_id, tenant, now_secs()],
    )?;
    Ok(conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1"),
        [key_id],
        api_key_record,
    )?)
}

/// The key whose `column` (one of the unique columns `key_sha256` and `key_id`) is `value`.
fn key_where(conn: &Connection, column: &'static str, value: &str) -> Result<Option<ApiKeyRecord>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = ?1");
    Ok(conn.query_row(&sql, [value], api_key_record).optional()?)
}

fn audit_record(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        tenant: r.get(1)?,
        at_ms: r.get(2)?,
        actor: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        result: r.get(6)?,
        detail: r.get(7)?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Maps of strings and plain numbers always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

/// Snapshots matching `filter` (SQL over the `snapshots` columns), oldest first.
fn snapshot_rows(
    c: &rusqlite::Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<SnapshotRecord>> {
    let sql = format!(
        "SELECT id, tenant, name, sandbox_id, image, isolation, size_bytes, created_at \
         FROM snapshots WHERE {filter} ORDER BY created_at, id"
    );
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, tenant, name, sandbox_id, image, isolation, size, created) = row?;
        let isolation = Isolation::parse(&isolation)
            .ok_or_else(|| corrupt(&id, format!("unknown isolation {isolation:?}")))?;
        out.push(SnapshotRecord {
            id,
            tenant,
            name,
            sandbox_id,
            image,
            isolation,
            size_bytes: u64::try_from(size).unwrap_or(0),
            created_at_ms: created,
        });
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn setting_or_init(&self, key: &str, default: &str) -> Result<String> {
        let (key, default) = (key.to_owned(), default.to_owned());
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
                params![key, default],
            )?;
            Ok(
                c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    async fn put_node(&self, node: &NodeRecord) -> Result<()> {
        let node = node.clone();
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO nodes \
                 (id, address, boot_id, capacity, last_heartbeat, registered_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    node.id,
                    node.address,
                    node.boot_id,
                    node.capacity,
                    node.last_heartbeat_ms,
                    node.registered_at_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn node_heartbeat(&self, id: &str, at_ms: i64, capacity: &str) -> Result<()> {
        let (id, capacity) = (id.to_owned(), capacity.to_owned());
        self.with(move |c| {
            c.execute(
                "UPDATE nodes SET last_heartbeat = max(last_heartbeat, ?2), \
                 capacity = CASE WHEN ?2 >= last_heartbeat THEN ?3 ELSE capacity END WHERE id = ?1",
                params![id, at_ms, capacity],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, address, boot_id, capacity, last_heartbeat, registered_at \
                 FROM nodes ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(NodeRecord {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    boot_id: r.get(2)?,
                    capacity: r.get(3)?,
                    last_heartbeat_ms: r.get(4)?,
                    registered_at_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_sandbox_node(&self, sandbox: &str, node: Option<&str>) -> Result<()> {
        let (sandbox, node) = (sandbox.to_owned(), node.map(str::to_owned));
        self.with(move |c| {
            match node {
                Some(node) => c.execute(
                    "INSERT OR REPLACE INTO sandbox_nodes (sandbox, node) VALUES (?1, ?2)",
                    params![sandbox, node],
                )?,
                None => c.execute(
                    "DELETE FROM sandbox_nodes WHERE sandbox = ?1",
                    params![sandbox],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn sandbox_node(&self, sandbox: &str) -> Result<Option<String>> {
        let sandbox = sandbox.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT node FROM sandbox_nodes WHERE sandbox = ?1",
                params![sandbox],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn node_sandbox_counts(&self) -> Result<Vec<(String, u64)>> {
        self.with(move |c| {
            let mut stmt = c.prepare("SELECT node, count(*) FROM sandbox_nodes GROUP BY node")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn ensure_tenant(&self, tenant: &str) -> Result<()> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?1, ?2)",
                params![tenant, now_secs()],
            )?;
            Ok(())
        })
        .await
    }

    async fn add_api_key(&self, tenant: &str, key_sha256: &str) -> Result<ApiKeyRecord> {
        let (tenant, key) = (tenant.to_owned(), key_sha256.to_owned());
        self.with(move |c| {
            let exists: bool = c
                .query_row("SELECT 1 FROM tenants WHERE name = ?1", [&tenant], |_| {
                    Ok(true)
                })
                .optional()?
                .unwrap_or(false);
            if !exists {
                return Err(StoreError::NoSuchTenant(tenant));
            }
            insert_key(c, &tenant, &key)
        })
        .await
    }

    async fn tenant_for_key(&self, key_sha256: &str) -> Result<Option<String>> {
        let key = key_sha256.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT tenant FROM api_keys WHERE key_sha256 = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn api_key(&self, key_sha256: &str) -> Result<Option<ApiKeyRecord>> {
        let digest = key_sha256.to_owned();
        self.with(move |c| key_where(c, "key_sha256", &digest))
            .await
    }

    async fn api_key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>> {
        let key_id = key_id.to_owned();
        self.with(move |c| key_where(c, "key_id", &key_id)).await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let tenant = tenant.map(str::to_owned);
        self.with(move |c| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR tenant = ?1 \
                 ORDER BY tenant, created_at, key_id"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([tenant], api_key_record)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn revoke_api_key(&self, key_id: &str) -> Result<bool> {
        let key_id = key_id.to_owned();
        self.with(move |c| Ok(c.execute("DELETE FROM api_keys WHERE key_id = ?1", [key_id])? > 0))
            .await
    }

    async fn rotate_api_key(&self, key_id: &str, new_sha256: &str) -> Result<Option<ApiKeyRecord>> {
        let (key_id, new_sha256) = (key_id.to_owned(), new_sha256.to_owned());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tenant: Option<String> = tx
                .query_row(
                    "SELECT tenant FROM api_keys WHERE key_id = ?1",
                    [&key_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(tenant) = tenant else {
                return Ok(None);
            };
            tx.execute("DELETE FROM api_keys WHERE key_id = ?1", [&key_id])?;
            let record = insert_key(&tx, &tenant, &new_sha256)?;
            tx.commit()?;
            Ok(Some(record))
        })
        .await
    }

    async fn touch_api_key(&self, key_id: &str, at_ms: i64) -> Result<()> {
        let key_id = key_id.to_owned();
        self.with(move |c| {
            c.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE key_id = ?1",
                params![key_id, at_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let r = record.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO audit_log (tenant, at, actor, action, target, result, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.tenant, r.at_ms, r.actor, r.action, r.target, r.result, r.detail
                ],
            )?;
            // Bounded: everything older than the newest MAX rows of the tenant goes.
            tx.execute(
                "DELETE FROM audit_log WHERE tenant = ?1 AND seq <= \
                 (SELECT seq FROM audit_log WHERE tenant = ?1 ORDER BY seq DESC \
                  LIMIT 1 OFFSET ?2)",
                params![r.tenant, MAX_AUDIT_PER_TENANT as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        tenant: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, tenant, at, actor, action, target, result, detail FROM audit_log \
                 WHERE tenant = ?1 AND seq < COALESCE(?2, 9223372036854775807) \
                 ORDER BY seq DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![tenant, before, limit as i64], audit_record)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn create_sandbox(&self, new: NewSandbox) -> Result<(SandboxRecord, bool)> {
        self.with(move |c| {
            // IMMEDIATE takes the write lock up front, so two creators of the same id (even
            // from two processes) cannot both miss the existing row.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(existing) = get(&tx, &new.tenant, &new.id)? {
                return Ok((existing, false));
            }
            tx.execute(
                "INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?1, ?2)",
                params![new.tenant, now_secs()],
            )?;
            let o = &new.options;
            tx.execute(
                &format!(
                    "INSERT INTO sandboxes ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15)"
                ),
                params![
                    new.tenant,
                    new.id,
                    new.internal_id,
                    o.image,
                    new.state.as_str(),
                    i64::try_from(o.sleep_after.as_secs()).unwrap_or(i64::MAX),
                    o.keep_alive,
                    o.ephemeral,
                    to_json(&o.env),
                    to_json(&o.limits),
                    o.isolation.as_str(),
                    new.now_ms,
                    to_json(&o.labels),
                    o.expires_at_ms,
                    o.keep_alive_while_busy,
                ],
            )?;
            let record = get(&tx, &new.tenant, &new.id)?
                .ok_or_else(|| corrupt(&new.id, "row vanished after insert"))?;
            tx.commit()?;
            Ok((record, true))
        })
        .await
    }

    async fn get_sandbox(&self, tenant: &str, id: &str) -> Result<Option<SandboxRecord>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.with(move |c| get(c, &tenant, &id)).await
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
        let (tenant, after) = (tenant.to_owned(), after.unwrap_or("").to_owned());
        // One `json_extract(labels, '$."key"') = value` per selector, all bound as parameters.
        let mut args: Vec<String> = vec![tenant, after];
        let mut filter = String::new();
        for (key, value) in labels {
            let n = args.len();
            filter.push_str(&format!(
                " AND json_extract(labels, ?{}) = ?{}",
                n + 1,
                n + 2
            ));
            args.push(format!("$.{}", serde_json::Value::String(key.clone())));
            args.push(value.clone());
        }
        self.with(move |c| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT {COLUMNS} FROM sandboxes WHERE tenant = ?1 AND id > ?2{filter} \
                 ORDER BY id LIMIT {limit}"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), raw_row)?;
            rows.map(|r| SandboxRecord::try_from(r?)).collect()
        })
        .await
    }

    async fn expired_sandboxes(&self, now_ms: i64, limit: usize) -> Result<Vec<(String, String)>> {
        self.with(move |c| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = c.prepare(
                "SELECT tenant, id FROM sandboxes WHERE expires_at IS NOT NULL \
                 AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_ms, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn update_options(
        &self,
        tenant: &str,
        id: &str,
        options: &SandboxOptions,
    ) -> Result<bool> {
        let (tenant, id, o) = (tenant.to_owned(), id.to_owned(), options.clone());
        self.with(move |c| {
            let n = c.execute(
                "UPDATE sandboxes SET image = ?3, sleep_after = ?4, keep_alive = ?5, \
                 ephemeral = ?6, env = ?7, limits = ?8, labels = ?9, expires_at = ?10, \
                 keep_alive_while_busy = ?11 \
                 WHERE tenant = ?1 AND id = ?2",
                params![
                    tenant,
                    id,
                    o.image,
                    i64::try_from(o.sleep_after.as_secs()).unwrap_or(i64::MAX),
                    o.keep_alive,
                    o.ephemeral,
                    to_json(&o.env),
                    to_json(&o.limits),
                    to_json(&o.labels),
                    o.expires_at_ms,
                    o.keep_alive_while_busy,
                ],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_state(
        &self,
        tenant: &str,
        id: &str,
        state: SandboxState,
        last_active_ms: Option<i64>,
    ) -> Result<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.with(move |c| {
            let n = c.execute(
                "UPDATE sandboxes SET state = ?3, last_active_at = COALESCE(?4, last_active_at) \
                 WHERE tenant = ?1 AND id = ?2",
                params![tenant, id, state.as_str(), last_active_ms],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn reset_states(&self, from: &[SandboxState], to: SandboxState) -> Result<usize> {
        let from: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        self.with(move |c| {
            let mut changed = 0;
            for state in from {
                changed += c.execute(
                    "UPDATE sandboxes SET state = ?2 WHERE state = ?1",
                    params![state, to.as_str()],
                )?;
            }
            Ok(changed)
        })
        .await
    }

    async fn delete_sandbox(&self, tenant: &str, id: &str) -> Result<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM archived_processes WHERE sandbox IN \
                 (SELECT internal_id FROM sandboxes WHERE tenant = ?1 AND id = ?2)",
                params![tenant, id],
            )?;
            tx.execute(
                "DELETE FROM sandbox_network WHERE sandbox IN \
                 (SELECT internal_id FROM sandboxes WHERE tenant = ?1 AND id = ?2)",
                params![tenant, id],
            )?;
            tx.execute(
                "DELETE FROM sandbox_mounts WHERE sandbox IN \
                 (SELECT internal_id FROM sandboxes WHERE tenant = ?1 AND id = ?2)",
                params![tenant, id],
            )?;
            tx.execute(
                "DELETE FROM sandbox_snapshots WHERE tenant = ?1 AND sandbox_id = ?2",
                params![tenant, id],
            )?;
            let n = tx.execute(
                "DELETE FROM sandboxes WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn archive_processes(
        &self,
        sandbox: &str,
        processes: Vec<ArchivedProcess>,
    ) -> Result<()> {
        let sandbox = sandbox.to_owned();
        self.with(move |c| archive(c, &sandbox, &processes, false).map(|_| ()))
            .await
    }

    async fn checkpoint_processes(
        &self,
        sandbox: &str,
        processes: Vec<ArchivedProcess>,
    ) -> Result<bool> {
        let sandbox = sandbox.to_owned();
        self.with(move |c| archive(c, &sandbox, &processes, true))
            .await
    }

    async fn archived_processes(&self, sandbox: &str) -> Result<Vec<ArchivedProcess>> {
        let sandbox = sandbox.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {PROCESS_COLUMNS} FROM archived_processes WHERE sandbox = ?1 \
                 ORDER BY start_time, process_id"
            ))?;
            let rows = stmt.query_map([sandbox], raw_process)?;
            rows.map(|r| r?.decode()).collect()
        })
        .await
    }

    async fn archived_process(
        &self,
        sandbox: &str,
        process_id: &str,
    ) -> Result<Option<ArchivedProcess>> {
        let (sandbox, process_id) = (sandbox.to_owned(), process_id.to_owned());
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT {PROCESS_COLUMNS} FROM archived_processes \
                     WHERE sandbox = ?1 AND process_id = ?2"
                ),
                params![sandbox, process_id],
                raw_process,
            )
            .optional()?
            .map(RawProcess::decode)
            .transpose()
        })
        .await
    }

    async fn put_exposed_port(&self, record: &ExposedPortRecord) -> Result<()> {
        let r = record.clone();
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO exposed_ports \
                 (tenant, sandbox_id, port, name, token, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    r.tenant,
                    r.sandbox_id,
                    r.port,
                    r.name,
                    r.token,
                    r.created_at_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_exposed_port(&self, tenant: &str, sandbox_id: &str, port: u16) -> Result<bool> {
        let (tenant, sandbox_id) = (tenant.to_owned(), sandbox_id.to_owned());
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM exposed_ports WHERE tenant = ?1 AND sandbox_id = ?2 AND port = ?3",
                params![tenant, sandbox_id, port],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn exposed_ports(&self) -> Result<Vec<ExposedPortRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT tenant, sandbox_id, port, name, token, created_at FROM exposed_ports \
                 ORDER BY tenant, sandbox_id, port",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ExposedPortRecord {
                    tenant: r.get(0)?,
                    sandbox_id: r.get(1)?,
                    port: r.get(2)?,
                    name: r.get(3)?,
                    token: r.get(4)?,
                    created_at_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn sandbox_network(&self, sandbox: &str) -> Result<Option<SandboxNetwork>> {
        let sandbox = sandbox.to_owned();
        let data_key = self.key.clone();
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT policy, secrets, ca_cert, ca_key, operator_policy FROM sandbox_network \
                     WHERE sandbox = ?1",
                    [&sandbox],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, bool>(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((policy, secrets, cert, ca_key, operator_policy)) = row else {
                return Ok(None);
            };
            let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
                id: sandbox.clone(),
                message: format!("network: {e}"),
            };
            let open = |column: &str, value: &str| {
                data_key
                    .open(&seal_context(&sandbox, column), value)
                    .map_err(|e| corrupt(&format!("{column}: {e}")))
            };
            let secrets = open("secrets", &secrets)?;
            let ca_key = ca_key.map(|k| open("ca_key", &k)).transpose()?;
            Ok(Some(SandboxNetwork {
                policy: serde_json::from_str(&policy).map_err(|e| corrupt(&e))?,
                secrets: serde_json::from_str(&secrets).map_err(|e| corrupt(&e))?,
                ca: cert.zip(ca_key),
                operator_policy,
            }))
        })
        .await
    }

    async fn set_sandbox_network(&self, sandbox: &str, network: &SandboxNetwork) -> Result<()> {
        let sandbox = sandbox.to_owned();
        let encode = |e: serde_json::Error| StoreError::Corrupt {
            id: sandbox.clone(),
            message: format!("network: {e}"),
        };
        let policy = serde_json::to_string(&network.policy).map_err(encode)?;
        let secrets = serde_json::to_string(&network.secrets).map_err(encode)?;
        let secrets = self
            .key
            .seal(&seal_context(&sandbox, "secrets"), &secrets)?;
        let (cert, key) = network.ca.clone().unzip();
        let operator_policy = network.operator_policy;
        let key = key
            .map(|k| self.key.seal(&seal_context(&sandbox, "ca_key"), &k))
            .transpose()?;
        self.with(move |c| {
            c.execute(
                "INSERT INTO sandbox_network \
                 (sandbox, policy, secrets, ca_cert, ca_key, operator_policy) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(sandbox) DO UPDATE SET \
                 policy = ?2, secrets = ?3, ca_cert = ?4, ca_key = ?5, operator_policy = ?6",
                params![sandbox, policy, secrets, cert, key, operator_policy],
            )?;
            Ok(())
        })
        .await
    }

    async fn put_mount(&self, sandbox: &str, mount: &StoredMount) -> Result<bool> {
        let sandbox = sandbox.to_owned();
        let m = mount.clone();
        let credentials = serde_json::json!([m.access_key_id, m.secret_access_key]).to_string();
        let credentials = self
            .key
            .seal(&mount_seal_context(&sandbox, &m.mount_path), &credentials)?;
        self.with(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO sandbox_mounts (sandbox, mount_path, bucket, endpoint, \
                 prefix, region, read_only, credentials, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    sandbox,
                    m.mount_path,
                    m.bucket,
                    m.endpoint,
                    m.prefix,
                    m.region,
                    m.read_only,
                    credentials,
                    m.created_at_ms
                ],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_mount(&self, sandbox: &str, mount_path: &str) -> Result<bool> {
        let (sandbox, path) = (sandbox.to_owned(), mount_path.to_owned());
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM sandbox_mounts WHERE sandbox = ?1 AND mount_path = ?2",
                params![sandbox, path],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn mounts(&self, sandbox: &str) -> Result<Vec<StoredMount>> {
        let sandbox = sandbox.to_owned();
        let data_key = self.key.clone();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT mount_path, bucket, endpoint, prefix, region, read_only, credentials, \
                 created_at FROM sandbox_mounts WHERE sandbox = ?1 ORDER BY mount_path",
            )?;
            let rows = stmt
                .query_map([&sandbox], |r| {
                    Ok((
                        StoredMount {
                            mount_path: r.get(0)?,
                            bucket: r.get(1)?,
                            endpoint: r.get(2)?,
                            prefix: r.get(3)?,
                            region: r.get(4)?,
                            read_only: r.get(5)?,
                            access_key_id: String::new(),
                            secret_access_key: String::new(),
                            created_at_ms: r.get(7)?,
                        },
                        r.get::<_, String>(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(rows.len());
            for (mut m, sealed) in rows {
                let corrupt = |message: String| StoreError::Corrupt {
                    id: sandbox.clone(),
                    message: format!("mount {}: {message}", m.mount_path),
                };
                let clear = data_key
                    .open(&mount_seal_context(&sandbox, &m.mount_path), &sealed)
                    .map_err(|e| corrupt(e.to_string()))?;
                let (akid, secret): (String, String) =
                    serde_json::from_str(&clear).map_err(|e| corrupt(e.to_string()))?;
                m.access_key_id = akid;
                m.secret_access_key = secret;
                out.push(m);
            }
            Ok(out)
        })
        .await
    }

    async fn tenant_quota(&self, tenant: &str) -> Result<Option<TenantQuota>> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            let json: Option<String> = c
                .query_row(
                    "SELECT quota FROM tenant_quotas WHERE tenant = ?1",
                    [&tenant],
                    |r| r.get(0),
                )
                .optional()?;
            json.map(|j| {
                serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                    id: tenant.clone(),
                    message: format!("quota: {e}"),
                })
            })
            .transpose()
        })
        .await
    }

    async fn set_tenant_quota(&self, tenant: &str, quota: Option<&TenantQuota>) -> Result<()> {
        let tenant = tenant.to_owned();
        let json =
            quota
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt {
                    id: tenant.clone(),
                    message: format!("quota: {e}"),
                })?;
        self.with(move |c| {
            match json {
                Some(json) => {
                    let exists: bool = c.query_row(
                        "SELECT EXISTS(SELECT 1 FROM tenants WHERE name = ?1)",
                        [&tenant],
                        |r| r.get(0),
                    )?;
                    if !exists {
                        return Err(StoreError::NoSuchTenant(tenant));
                    }
                    c.execute(
                        "INSERT INTO tenant_quotas (tenant, quota, updated_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(tenant) DO UPDATE SET quota = ?2, updated_at = ?3",
                        params![tenant, json, now_secs()],
                    )?;
                }
                None => {
                    c.execute("DELETE FROM tenant_quotas WHERE tenant = ?1", [&tenant])?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn legacy_uid_ranges(&self) -> Result<Vec<(String, u32)>> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT internal_id, uid_base FROM legacy_uid_ranges ORDER BY uid_base")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, base) = row?;
                let base = u32::try_from(base).map_err(|e| corrupt(&id, e))?;
                out.push((id, base));
            }
            Ok(out)
        })
        .await
    }

    async fn create_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        let s = snapshot.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO snapshots (id, tenant, name, sandbox_id, image, isolation, \
                 size_bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    s.id,
                    s.tenant,
                    s.name,
                    s.sandbox_id,
                    s.image,
                    s.isolation.to_string(),
                    i64::try_from(s.size_bytes).unwrap_or(i64::MAX),
                    s.created_at_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_snapshot(&self, tenant: &str, id: &str) -> Result<Option<SnapshotRecord>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.with(move |c| {
            let mut rows = snapshot_rows(c, "tenant = ?1 AND id = ?2", params![tenant, id])?;
            Ok(rows.pop())
        })
        .await
    }

    async fn list_snapshots(&self, tenant: &str) -> Result<Vec<SnapshotRecord>> {
        let tenant = tenant.to_owned();
        self.with(move |c| snapshot_rows(c, "tenant = ?1", params![tenant]))
            .await
    }

    async fn delete_snapshot(&self, tenant: &str, id: &str) -> Result<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM snapshots WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_sandbox_snapshot(
        &self,
        tenant: &str,
        sandbox_id: &str,
        snapshot_id: &str,
    ) -> Result<()> {
        let (tenant, sandbox, snapshot) = (
            tenant.to_owned(),
            sandbox_id.to_owned(),
            snapshot_id.to_owned(),
        );
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO sandbox_snapshots (tenant, sandbox_id, snapshot_id) \
                 VALUES (?1, ?2, ?3)",
                params![tenant, sandbox, snapshot],
            )?;
            Ok(())
        })
        .await
    }

    async fn sandbox_snapshot(&self, tenant: &str, sandbox_id: &str) -> Result<Option<String>> {
        let (tenant, sandbox) = (tenant.to_owned(), sandbox_id.to_owned());
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT snapshot_id FROM sandbox_snapshots WHERE tenant = ?1 AND sandbox_id = ?2",
                params![tenant, sandbox],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn snapshot_users(&self, tenant: &str, snapshot_id: &str) -> Result<Vec<String>> {
        let (tenant, snapshot) = (tenant.to_owned(), snapshot_id.to_owned());
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT u.sandbox_id FROM sandbox_snapshots u JOIN sandboxes s \
                 ON s.tenant = u.tenant AND s.id = u.sandbox_id \
                 WHERE u.tenant = ?1 AND u.snapshot_id = ?2 ORDER BY u.sandbox_id",
            )?;
            let rows = stmt.query_map(params![tenant, snapshot], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn forget_legacy_uid_ranges(&self) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM legacy_uid_ranges", [])?;
            Ok(())
        })
        .await
    }

    async fn insert_backup(&self, record: &BackupRecord) -> Result<()> {
        let r = record.clone();
        self.with(move |c| {
            c.execute(
                &format!("INSERT INTO backups ({BACKUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
                    r.id,
                    r.tenant,
                    r.sandbox_id,
                    r.dir,
                    r.name,
                    r.state.as_str(),
                    r.size_bytes as i64,
                    r.raw_bytes as i64,
                    r.sha256,
                    r.created_at_ms,
                    r.expires_at_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn finish_backup(
        &self,
        id: &str,
        size_bytes: u64,
        raw_bytes: u64,
        sha256: &str,
    ) -> Result<()> {
        let (id, sha256) = (id.to_owned(), sha256.to_owned());
        self.with(move |c| {
            c.execute(
                "UPDATE backups SET state = 'ready', size_bytes = ?2, raw_bytes = ?3, sha256 = ?4 \
                 WHERE id = ?1",
                params![id, size_bytes as i64, raw_bytes as i64, sha256],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_backup(&self, tenant: &str, id: &str) -> Result<Option<BackupRecord>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                backup_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_backups(&self, tenant: &str) -> Result<Vec<BackupRecord>> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {BACKUP_COLUMNS} FROM backups WHERE tenant = ?1 AND state = 'ready' \
                 ORDER BY created_at DESC, id"
            ))?;
            let rows = stmt.query_map([tenant], backup_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_backup(&self, tenant: &str, id: &str) -> Result<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM backups WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn expired_backups(
        &self,
        now_ms: i64,
        stale_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<BackupRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {BACKUP_COLUMNS} FROM backups WHERE expires_at <= ?1 \
                 OR (state = 'creating' AND created_at < ?2) ORDER BY expires_at LIMIT ?3"
            ))?;
            let rows =
                stmt.query_map(params![now_ms, stale_before_ms, limit as i64], backup_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn backup_usage(&self, tenant: &str) -> Result<(u64, u64)> {
        let tenant = tenant.to_owned();
        self.with(move |c| {
            let (n, bytes): (i64, i64) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM backups WHERE tenant = ?1",
                [tenant],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok((n.max(0) as u64, bytes.max(0) as u64))
        })
        .await
    }

    async fn count_by_state(&self) -> Result<Vec<(SandboxState, u64)>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT state, COUNT(*) FROM sandboxes GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (state, n) = row?;
                if let Some(state) = SandboxState::parse(&state) {
                    out.push((state, n.max(0) as u64));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.with(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}
