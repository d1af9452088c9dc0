//! The sandbox registry of the control plane.
//!
//! [`Store`] is what the server needs from persistent state: tenants and their API keys (kept
//! as SHA-256 digests, never in clear), and one record per sandbox with its options (isolation
//! tier included) and lifecycle state. [`SqliteStore`] implements it on one SQLite file (WAL mode, versioned
//! migrations in [`migrations`]); its blocking calls run on tokio's blocking pool.
//! [`PostgresStore`] implements it on a PostgreSQL database that several control-plane replicas
//! share (its migrations in `postgres_migrations`, numbered as SQLite's).

mod crypto;
mod migrations;
mod postgres;
mod postgres_migrations;
mod sqlite;
#[doc(hidden)]
pub mod test_postgres;

use std::collections::BTreeMap;

use sandpit_protocol::container::ProcessInfo;
use sandpit_protocol::control::{Isolation, Limits, SandboxState};
use sandpit_protocol::netpolicy::EgressPolicy;
use sandpit_protocol::quota::TenantQuota;
use sandpit_protocol::time::SleepAfter;

pub use crypto::{DataKey, DecryptError, KeyError};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The version numbers of the SQLite and the PostgreSQL migrations (kept equal).
#[doc(hidden)]
pub fn migration_versions() -> (Vec<i64>, Vec<i64>) {
    (
        migrations::MIGRATIONS.iter().map(|(v, _)| *v).collect(),
        postgres_migrations::MIGRATIONS
            .iter()
            .map(|(v, _)| *v)
            .collect(),
    )
}

/// A tenant's admission lock ([`Store::lock_tenant`]): held until dropped.
pub struct TenantLock {
    _guard: Option<Box<dyn Send + Sync>>,
}

impl TenantLock {
    /// A lock that holds nothing (a store with one writer needs none).
    pub fn none() -> Self {
        TenantLock { _guard: None }
    }

    /// A lock released when `guard` is dropped.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        TenantLock {
            _guard: Some(Box::new(guard)),
        }
    }
}

impl std::fmt::Debug for TenantLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLock").finish_non_exhaustive()
    }
}

/// Creates (or brings) the database at `path` to the schema as it was before migration
/// `version`, for tests of upgrades.
#[doc(hidden)]
pub fn create_schema_before(path: &std::path::Path, version: i64) -> Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    migrations::migrate_before(&mut conn, version)?;
    Ok(())
}

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("invalid postgres URL: {message}")]
    Url { message: String },
    #[error("cannot open store at {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tenant {0:?} does not exist")]
    NoSuchTenant(String),
    #[error("corrupt record {id}: {message}")]
    Corrupt { id: String, message: String },
    #[error("store task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Options of a sandbox chosen at creation (and partly changeable later).
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxOptions {
    pub image: String,
    pub sleep_after: SleepAfter,
    pub keep_alive: bool,
    /// Running background processes keep the sandbox awake.
    pub keep_alive_while_busy: bool,
    pub ephemeral: bool,
    /// Which driver runs the sandbox (fixed at create).
    pub isolation: Isolation,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub labels: BTreeMap<String, String>,
    /// When the sandbox is to be destroyed (its `ttl`), Unix milliseconds.
    pub expires_at_ms: Option<i64>,
}

/// What the server asks the store to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSandbox {
    pub tenant: String,
    pub id: String,
    /// Name the driver knows the sandbox by (unique across tenants).
    pub internal_id: String,
    pub options: SandboxOptions,
    pub state: SandboxState,
    /// Creation time, Unix milliseconds.
    pub now_ms: i64,
}

/// One sandbox as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub tenant: String,
    pub id: String,
    pub internal_id: String,
    pub options: SandboxOptions,
    pub state: SandboxState,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds.
    pub last_active_at_ms: i64,
}

/// A snapshot as stored (its layers are the driver's, under the same id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Unique across tenants (the driver's name for it).
    pub id: String,
    pub tenant: String,
    pub name: Option<String>,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    pub image: String,
    pub isolation: Isolation,
    pub size_bytes: u64,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// Most archived processes kept per sandbox (the newest).
pub const MAX_ARCHIVED_PER_SANDBOX: usize = 256;
/// Most bytes (command and logs) of archived processes kept per sandbox; the oldest go first.
pub const MAX_ARCHIVE_BYTES_PER_SANDBOX: u64 = 8 * 1024 * 1024;
/// Most bytes of archived processes kept for all sandboxes of one tenant together; the
/// tenant's oldest records (of any of its sandboxes) go first.
pub const MAX_ARCHIVE_BYTES_PER_TENANT: u64 = 64 * 1024 * 1024;

/// A background process of a sandbox kept after the sandbox went to sleep: its final record and
/// logs as the agent last reported them.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedProcess {
    pub info: ProcessInfo,
    pub stdout: String,
    pub stderr: String,
    pub stdout_dropped_bytes: u64,
    pub stderr_dropped_bytes: u64,
}

/// A port of a sandbox exposed at a preview URL. Kept after the sandbox is destroyed, so its
/// URL can answer "gone" rather than "unknown".
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedPortRecord {
    pub tenant: String,
    pub sandbox_id: String,
    pub port: u16,
    pub name: Option<String>,
    pub token: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// Whether a backup's archive is complete in the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupState {
    /// The archive is being written; not listed, not restorable.
    Creating,
    /// The archive is complete and its size and checksum are recorded.
    Ready,
}

impl BackupState {
    /// The state as stored by [`BackupState::as_str`]; anything but "ready" is still being made.
    pub fn from_stored(s: &str) -> Self {
        if s == BackupState::Ready.as_str() {
            BackupState::Ready
        } else {
            BackupState::Creating
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Creating => "creating",
            BackupState::Ready => "ready",
        }
    }
}

/// A backup of a sandbox directory: the archive lives in the object store under a key derived
/// from `id`; this is its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRecord {
    pub id: String,
    pub tenant: String,
    /// The sandbox it was taken from (it may be destroyed since).
    pub sandbox_id: String,
    pub dir: String,
    pub name: Option<String>,
    pub state: BackupState,
    /// Bytes of the compressed archive as stored.
    pub size_bytes: u64,
    /// Bytes of the uncompressed tar stream (caps decompression on restore).
    pub raw_bytes: u64,
    /// Hex SHA-256 of the stored (compressed) archive.
    pub sha256: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds.
    pub expires_at_ms: i64,
}

/// A secret of a sandbox as stored: its value and the placeholder the sandbox sees instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredSecret {
    pub name: String,
    pub value: String,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub header: Option<String>,
    pub placeholder: String,
}

/// The egress state of a sandbox: policy, secrets and its interception CA (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNetwork {
    /// Stored in its wire form; reading it back parses it (checked when it was set).
    pub policy: EgressPolicy,
    pub secrets: Vec<StoredSecret>,
    /// `(certificate, private key)`, PEM; made on first start.
    pub ca: Option<(String, String)>,
    /// The policy was set with the admin key: its CIDRs are operator grants and may open
    /// private ranges (never always-blocked ones). A tenant's change of the policy clears it.
    pub operator_policy: bool,
}

/// A node of a cluster as stored (`sandpit node`, registered at its join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    /// Where its node API listens (`host:port`).
    pub address: String,
    /// Random id of the node daemon's current run: a new one means it restarted.
    pub boot_id: String,
    /// Its last reported capacity (JSON of `sandpit_protocol::control::NodeCapacity`).
    pub capacity: String,
    pub last_heartbeat_ms: i64,
    pub registered_at_ms: i64,
}

/// A bucket mount of a sandbox as stored (the credentials sealed at rest).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredMount {
    /// Absolute path inside the sandbox (unique per sandbox).
    pub mount_path: String,
    pub bucket: String,
    pub endpoint: String,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub read_only: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

impl std::fmt::Debug for StoredMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredMount")
            .field("mount_path", &self.mount_path)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// An API key as listed: never the key, nor its full digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id: the first 16 hex digits of the key's SHA-256.
    pub key_id: String,
    pub tenant: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds; recorded at most once a minute per key.
    pub last_used_at_ms: Option<i64>,
}

/// The public id of a key with this digest (hex SHA-256).
pub fn key_id_of(key_sha256: &str) -> String {
    key_sha256.chars().take(16).collect()
}

/// Most audit rows kept per tenant (the newest).
pub const MAX_AUDIT_PER_TENANT: usize = 1000;

/// One control-plane action in a tenant's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increasing across the log (0 before it is stored).
    pub seq: i64,
    /// Whose log: the tenant the action concerned.
    pub tenant: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Key id of the caller (`admin` for the admin key).
    pub actor: String,
    /// E.g. `sandbox.create`, `key.revoke`.
    pub action: String,
    /// Sandbox id, key id, `sandbox:port`...
    pub target: String,
    /// `ok` or the error code answered.
    pub result: String,
    /// What changed (field names, never values).
    pub detail: Option<String>,
}

/// Persistent state of the control plane. Every method is safe to call concurrently.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value of a setting, storing `default` first if it has none.
    async fn setting_or_init(&self, key: &str, default: &str) -> Result<String>;

    /// Records a node at its join (insert, or replace address, boot id and capacity).
    async fn put_node(&self, node: &NodeRecord) -> Result<()>;

    /// Records a heartbeat of node `id` (no-op for an unknown node).
    async fn node_heartbeat(&self, id: &str, at_ms: i64, capacity: &str) -> Result<()>;

    /// Every node, by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;

    /// Places sandbox `sandbox` (internal id) on `node`; `None` forgets its placement.
    async fn set_sandbox_node(&self, sandbox: &str, node: Option<&str>) -> Result<()>;

    /// The node sandbox `sandbox` (internal id) is placed on.
    async fn sandbox_node(&self, sandbox: &str) -> Result<Option<String>>;

    /// How many sandboxes are placed on each node that has any.
    async fn node_sandbox_counts(&self) -> Result<Vec<(String, u64)>>;

    /// Creates a tenant if it does not exist yet.
    async fn ensure_tenant(&self, tenant: &str) -> Result<()>;

    /// The tenant's admission lock, shared by every handle on the same database (every
    /// control-plane replica): a quota check and the change it admits happen under it. The
    /// default holds nothing, for stores with a single writer process.
    async fn lock_tenant(&self, tenant: &str) -> Result<TenantLock> {
        let _ = tenant;
        Ok(TenantLock::none())
    }

    /// The lock of a periodic job shared by every replica (TTL expiry, backup expiry), if no
    /// other handle holds it now: one replica runs a round, the others skip it. `None` when
    /// another holds it. The default holds nothing, for stores with a single writer process.
    async fn try_lock_job(&self, job: &str) -> Result<Option<TenantLock>> {
        let _ = job;
        Ok(Some(TenantLock::none()))
    }

    /// Records an API key (its SHA-256 digest, hex) for an existing tenant.
    async fn add_api_key(&self, tenant: &str, key_sha256: &str) -> Result<ApiKeyRecord>;

    /// The tenant that owns a key digest.
    async fn tenant_for_key(&self, key_sha256: &str) -> Result<Option<String>>;

    /// The key with this digest.
    async fn api_key(&self, key_sha256: &str) -> Result<Option<ApiKeyRecord>>;

    /// The key with this public id.
    async fn api_key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>>;

    /// Keys of one tenant, or of all, ordered by tenant and creation.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>>;

    /// Deletes a key. Returns false when it did not exist.
    async fn revoke_api_key(&self, key_id: &str) -> Result<bool>;

    /// Replaces a key by one with `new_sha256` for the same tenant, in one transaction.
    /// `None` when the old key does not exist.
    async fn rotate_api_key(&self, key_id: &str, new_sha256: &str) -> Result<Option<ApiKeyRecord>>;

    /// Records the last use of a key.
    async fn touch_api_key(&self, key_id: &str, at_ms: i64) -> Result<()>;

    /// Appends to a tenant's audit log, dropping its oldest rows beyond
    /// [`MAX_AUDIT_PER_TENANT`].
    async fn append_audit(&self, record: &AuditRecord) -> Result<()>;

    /// A tenant's audit rows, newest first, with `seq` below `before` when given.
    async fn list_audit(
        &self,
        tenant: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>>;

    /// Inserts the sandbox, or returns the existing record with the same `(tenant, id)`. The flag is true when it was created by this call.
    async fn create_sandbox(&self, new: NewSandbox) -> Result<(SandboxRecord, bool)>;

    async fn get_sandbox(&self, tenant: &str, id: &str) -> Result<Option<SandboxRecord>>;

    /// A tenant's sandboxes ordered by id, starting after `after` (`usize::MAX`: all).
    async fn list_sandboxes(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SandboxRecord>>;

    /// Like [`Store::list_sandboxes`], only sandboxes carrying every `(key, value)` label.
    async fn list_sandboxes_labelled(
        &self,
        tenant: &str,
        labels: &[(String, String)],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SandboxRecord>>;

    /// `(tenant, id)` of every sandbox whose expiry is at or before `now_ms`, soonest first, at
    /// most `limit`.
    async fn expired_sandboxes(&self, now_ms: i64, limit: usize) -> Result<Vec<(String, String)>>;

    /// Replaces the options of a sandbox. Returns false when it does not exist.
    async fn update_options(
        &self,
        tenant: &str,
        id: &str,
        options: &SandboxOptions,
    ) -> Result<bool>;

    /// Sets the state (and, when given, the last-activity time) of a sandbox.
    async fn set_state(
        &self,
        tenant: &str,
        id: &str,
        state: SandboxState,
        last_active_ms: Option<i64>,
    ) -> Result<bool>;

    /// Moves every sandbox in one of `from` to `to`; returns how many changed.
    async fn reset_states(&self, from: &[SandboxState], to: SandboxState) -> Result<usize>;

    /// Stores processes of the sandbox whose internal id is `sandbox`, replacing records with
    /// the same process id and dropping the oldest beyond [`MAX_ARCHIVED_PER_SANDBOX`],
    /// [`MAX_ARCHIVE_BYTES_PER_SANDBOX`] and the tenant's [`MAX_ARCHIVE_BYTES_PER_TENANT`].
    async fn archive_processes(&self, sandbox: &str, processes: Vec<ArchivedProcess>)
    -> Result<()>;

    /// Like [`Store::archive_processes`], but only while the sandbox's record exists (a
    /// checkpoint racing a destroy must not leave records of a deleted sandbox). Returns
    /// whether it wrote.
    async fn checkpoint_processes(
        &self,
        sandbox: &str,
        processes: Vec<ArchivedProcess>,
    ) -> Result<bool>;

    /// The archived processes of a sandbox (by internal id), oldest start first.
    async fn archived_processes(&self, sandbox: &str) -> Result<Vec<ArchivedProcess>>;

    /// One archived process of a sandbox (by internal id).
    async fn archived_process(
        &self,
        sandbox: &str,
        process_id: &str,
    ) -> Result<Option<ArchivedProcess>>;

    /// Deletes a sandbox record and its archived processes. Returns
    /// false when it did not exist.
    async fn delete_sandbox(&self, tenant: &str, id: &str) -> Result<bool>;

    /// The egress state of the sandbox whose internal id is `sandbox` (`None`: defaults).
    async fn sandbox_network(&self, sandbox: &str) -> Result<Option<SandboxNetwork>>;

    /// Replaces the egress state of a sandbox (by internal id); deleted with the sandbox.
    async fn set_sandbox_network(&self, sandbox: &str, network: &SandboxNetwork) -> Result<()>;

    /// Records a bucket mount of the sandbox whose internal id is `sandbox`. False (nothing
    /// written) when that sandbox already has a mount at the same path.
    async fn put_mount(&self, sandbox: &str, mount: &StoredMount) -> Result<bool>;

    /// Forgets a bucket mount. False when there was none at `mount_path`.
    async fn delete_mount(&self, sandbox: &str, mount_path: &str) -> Result<bool>;

    /// The bucket mounts of a sandbox (by internal id), ordered by path.
    async fn mounts(&self, sandbox: &str) -> Result<Vec<StoredMount>>;

    /// Number of sandboxes per state, over all tenants.
    async fn count_by_state(&self) -> Result<Vec<(SandboxState, u64)>>;

    /// The cheapest round trip to the store (`SELECT 1`), for readiness checks: `Ok` when the
    /// database answers.
    async fn ping(&self) -> Result<()>;

    /// Records an exposed port, replacing the one with the same `(tenant, sandbox_id, port)`.
    async fn put_exposed_port(&self, record: &ExposedPortRecord) -> Result<()>;

    /// Forgets an exposed port. Returns false when it was not recorded.
    async fn delete_exposed_port(&self, tenant: &str, sandbox_id: &str, port: u16) -> Result<bool>;

    /// Every exposed port of every tenant (the server indexes them in memory at start).
    async fn exposed_ports(&self) -> Result<Vec<ExposedPortRecord>>;

    /// The quota set for a tenant (`None`: none was set; the server's default applies).
    async fn tenant_quota(&self, tenant: &str) -> Result<Option<TenantQuota>>;

    /// Sets (`Some`) or removes (`None`) the quota of an existing tenant.
    async fn set_tenant_quota(&self, tenant: &str, quota: Option<&TenantQuota>) -> Result<()>;

    /// `(internal id, first host uid)` of sandboxes whose uid range the store allocated before
    /// migration 12, not yet handed to their driver.
    async fn legacy_uid_ranges(&self) -> Result<Vec<(String, u32)>>;

    /// Forgets the legacy uid ranges once their driver has recorded them.
    async fn forget_legacy_uid_ranges(&self) -> Result<()>;

    /// Records a backup (in state `Creating`, before its archive is written).
    async fn insert_backup(&self, record: &BackupRecord) -> Result<()>;

    /// Marks a backup `Ready` with its archive's sizes and checksum.
    async fn finish_backup(
        &self,
        id: &str,
        size_bytes: u64,
        raw_bytes: u64,
        sha256: &str,
    ) -> Result<()>;

    /// A tenant's backup (any state) by id.
    async fn get_backup(&self, tenant: &str, id: &str) -> Result<Option<BackupRecord>>;

    /// A tenant's `Ready` backups, newest first.
    async fn list_backups(&self, tenant: &str) -> Result<Vec<BackupRecord>>;

    /// Forgets a backup. Returns false when the tenant has none with that id.
    async fn delete_backup(&self, tenant: &str, id: &str) -> Result<bool>;

    /// Backups whose `expires_at` is at or before `now_ms`, and `Creating` ones started before
    /// `stale_before_ms` (an interrupted create), at most `limit`.
    async fn expired_backups(
        &self,
        now_ms: i64,
        stale_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<BackupRecord>>;

    /// `(count, stored bytes)` of a tenant's backups (every state).
    async fn backup_usage(&self, tenant: &str) -> Result<(u64, u64)>;
    /// Stores a new snapshot.
    async fn create_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()>;

    /// A tenant's snapshot.
    async fn get_snapshot(&self, tenant: &str, id: &str) -> Result<Option<SnapshotRecord>>;

    /// A tenant's snapshots, oldest first.
    async fn list_snapshots(&self, tenant: &str) -> Result<Vec<SnapshotRecord>>;

    /// Deletes a tenant's snapshot. Returns false when it did not exist.
    async fn delete_snapshot(&self, tenant: &str, id: &str) -> Result<bool>;

    /// Records that sandbox `(tenant, sandbox_id)` was created from snapshot `snapshot_id`
    /// (forgotten when the sandbox is deleted).
    async fn set_sandbox_snapshot(
        &self,
        tenant: &str,
        sandbox_id: &str,
        snapshot_id: &str,
    ) -> Result<()>;

    /// The snapshot a sandbox was created from.
    async fn sandbox_snapshot(&self, tenant: &str, sandbox_id: &str) -> Result<Option<String>>;

    /// Ids of the existing sandboxes of `tenant` created from snapshot `snapshot_id`.
    async fn snapshot_users(&self, tenant: &str, snapshot_id: &str) -> Result<Vec<String>>;
}
