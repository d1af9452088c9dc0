//! The sandbox lifecycle: create-or-get, wake, sleep, destroy, the idle reaper and activity
//! tracking.
//!
//! States: `creating → running → sleeping → running … → (deleted)`. Every lifecycle change of
//! one sandbox happens under that sandbox's async mutex ([`Entry::inner`]), so start, stop and
//! destroy never overlap and concurrent first calls for a new id create exactly one sandbox.
//! Forwarded requests take the same mutex only long enough to find (or start) the agent and to
//! count themselves in-flight; the reaper checks the in-flight count under the mutex too, so it
//! can never stop a sandbox that a request is about to use.
//!
//! Lifecycle calls no feature: features that must act when a sandbox starts or stops (the
//! process archive captures logs just before a stop) implement [`LifecycleListener`] and are
//! subscribed when the server is built ([`Manager::subscribe`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sandpit_image::{ImageError, ImageStore};
use sandpit_protocol::container::EnvMap;
use sandpit_protocol::control::{
    BucketMountInfo, BucketMountList, CreateSandboxRequest, DEFAULT_IMAGE, EgressLogPage,
    Isolation, Limits, MountBucketRequest, SandboxEventKind, SandboxInfo, SandboxState,
    SandboxUsage, UpdateSandboxRequest, validate_sandbox_id,
};
use sandpit_protocol::quota::{MAX_PROCESSES_ENV, QuotaInfo, SandboxCaps, TenantQuota};
use sandpit_protocol::time::{SleepAfter, Ttl, timestamp};
use sandpit_protocol::{ErrorChain, ErrorCode, display_chain};
use sandpit_runtime::{Driver, DriverError, EgressEndpoint, RunFile, SandboxSpec, Started};
use sandpit_store::{
    AuditRecord, NewSandbox, SandboxOptions, SandboxRecord, SnapshotRecord, Store,
};
use sha2::{Digest, Sha256};

use crate::agent_client::AgentClient;
use crate::caps;
use crate::drivers::Drivers;
use crate::egress::state::NetworkChanges;
use crate::egress::{self, Egress};
use crate::error::{ApiError, ApiResult};
use crate::labels::LabelChanges;
use crate::metrics::Metrics;
use crate::quota::{self, Claim, Demand, Gate};

mod snapshots;
mod transfer;

/// Wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn ms_timestamp(ms: i64) -> String {
    timestamp(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// The driver's name for a sandbox: `<id lowercased, cut>-<12 hex of sha256(instance, tenant,
/// id)>`. Unique per (tenant, id) (case-sensitive ids stay distinct through the hash) and per
/// data dir (`instance` is a random id kept in the store: servers with different data dirs share
/// the host's cgroup group), a valid hostname of at most 63 chars, and safe as a path component.
pub fn internal_id(instance: &str, tenant: &str, id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(instance.as_bytes());
    hasher.update([0]);
    hasher.update(tenant.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    let hash = hex::encode(hasher.finalize());
    let stem: String = id.to_ascii_lowercase().chars().take(50).collect();
    format!("{}-{}", stem.trim_end_matches('-'), &hash[..12])
}

/// One sandbox as the running server tracks it.
pub struct Entry {
    pub tenant: String,
    pub id: String,
    pub internal: String,
    inner: tokio::sync::Mutex<Inner>,
    in_flight: AtomicUsize,
    last_activity_ms: AtomicI64,
    /// Mirrors `inner.started.is_some()` so the reaper can skip idle entries without locking.
    running: AtomicBool,
    /// The last run a stop, destroy or shutdown ended (0: none): requests it cut short are
    /// interrupted by a caller, not failed by the sandbox.
    ended_run: AtomicU64,
    /// Which of the three ended it ([`EndReason`] as a number).
    ended_reason: AtomicU8,
}

/// What ended a run on request; requests and streams it cut short say so
/// (`OPERATION_INTERRUPTED`, see [`EndReason::error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Stopped,
    Destroyed,
    Shutdown,
}

impl EndReason {
    const ALL: [EndReason; 3] = [
        EndReason::Stopped,
        EndReason::Destroyed,
        EndReason::Shutdown,
    ];

    /// The `reason` context field of the error.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Stopped => "stopped",
            EndReason::Destroyed => "destroyed",
            EndReason::Shutdown => "shutdown",
        }
    }

    /// The error of a request or stream of sandbox `id` this cut short.
    pub fn error(self, id: &str) -> ApiError {
        let message = match self {
            EndReason::Stopped => format!("sandbox {id} was stopped"),
            EndReason::Destroyed => format!("sandbox {id} was destroyed"),
            EndReason::Shutdown => format!("sandbox {id} was put to sleep: the server shut down"),
        };
        ApiError::new(ErrorCode::OperationInterrupted, message)
            .context("sandboxId", id)
            .context("reason", self.as_str())
    }
}

#[derive(Default)]
struct Inner {
    /// Cached store record; `None` until loaded or when the sandbox does not exist.
    record: Option<SandboxRecord>,
    started: Option<Started>,
    /// Number of the current run (see [`Lease::run`]).
    run: u64,
}

/// The sandbox a lifecycle event is about.
#[derive(Debug, Clone, Copy)]
pub struct SandboxRef<'a> {
    pub tenant: &'a str,
    /// The caller's id.
    pub id: &'a str,
    /// The driver's (and the store's per-sandbox tables') id.
    pub internal: &'a str,
}

/// Longest time a stop waits for [`LifecycleListener::about_to_stop`] of all listeners; the
/// driver stops the sandbox afterwards whatever they are doing.
pub const ABOUT_TO_STOP_BUDGET: Duration = Duration::from_secs(3);

/// What a feature is told about sandboxes starting and stopping. Calls happen under the
/// sandbox's lock, in this order for one run: `started`, `about_to_stop`, `stopped`.
#[async_trait::async_trait]
pub trait LifecycleListener: Send + Sync {
    /// The sandbox runs and its agent answers.
    fn started(&self, _sandbox: SandboxRef<'_>) {}

    /// The sandbox is about to be stopped (put to sleep) and its agent still answers. The
    /// driver stops it only after every listener returned, or after [`ABOUT_TO_STOP_BUDGET`].
    async fn about_to_stop(&self, _sandbox: SandboxRef<'_>, _agent: &AgentClient) {}

    /// The sandbox's processes are gone.
    fn stopped(&self, _sandbox: SandboxRef<'_>) {}

    /// Any change of the sandbox's record or state, once it happened (what `GET /v1/events`
    /// streams): created, started, stopped, options updated, destroyed.
    fn changed(&self, _sandbox: SandboxRef<'_>, _kind: SandboxEventKind, _state: SandboxState) {}
}

fn stored_to_mount(m: sandpit_store::StoredMount) -> sandpit_runtime::bucket::BucketMount {
    sandpit_runtime::bucket::BucketMount {
        bucket: m.bucket,
        mount_path: m.mount_path.into(),
        endpoint: m.endpoint,
        region: m.region,
        prefix: m.prefix,
        read_only: m.read_only,
        access_key_id: m.access_key_id,
        secret_access_key: m.secret_access_key,
    }
}

fn mount_info(m: &sandpit_store::StoredMount, mounted: bool) -> BucketMountInfo {
    BucketMountInfo {
        bucket: m.bucket.clone(),
        mount_path: m.mount_path.clone(),
        endpoint: m.endpoint.clone(),
        prefix: m.prefix.clone(),
        read_only: m.read_only,
        region: m.region.clone(),
        mounted,
        created_at: ms_timestamp(m.created_at_ms),
    }
}

/// A driver's refusal of a mount as the API answers it.
fn mount_error(e: DriverError, id: &str) -> ApiError {
    let error = match e {
        DriverError::MountFailed { message, .. } => ApiError::new(
            ErrorCode::S3fsMountError,
            format!("S3FS mount failed: {message}"),
        ),
        DriverError::Unsupported(m) => ApiError::new(ErrorCode::InvalidMountConfig, m),
        DriverError::InvalidSpec(m) => ApiError::new(ErrorCode::InvalidMountConfig, m),
        e => ApiError::new(ErrorCode::BucketMountError, e.to_string()),
    };
    error.context("sandboxId", id)
}

/// Runs started by this server, counted from 1.
static RUNS: AtomicU64 = AtomicU64::new(0);

impl Entry {
    fn as_ref(&self) -> SandboxRef<'_> {
        SandboxRef {
            tenant: &self.tenant,
            id: &self.id,
            internal: &self.internal,
        }
    }

    fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::SeqCst);
    }

    /// Requests and streams open right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// What ended run `run` (see [`Lease::run`]), if a stop, destroy or shutdown did.
    pub fn ended_by(&self, run: u64) -> Option<EndReason> {
        if run == 0 || self.ended_run.load(Ordering::SeqCst) != run {
            return None;
        }
        EndReason::ALL
            .get(usize::from(self.ended_reason.load(Ordering::SeqCst)))
            .copied()
    }

    /// Records that the current run is being ended on request (the caller holds the lock).
    fn end_on_request(&self, inner: &Inner, reason: EndReason) {
        if inner.started.is_some() {
            // The reason first: a reader that sees the run also sees its reason.
            self.ended_reason.store(reason as u8, Ordering::SeqCst);
            self.ended_run.store(inner.run, Ordering::SeqCst);
        }
    }
}

/// Keeps a sandbox awake while a forwarded request or stream is open; dropping it records the
/// end of the activity (and, for `/api/execute`, its latency).
pub struct ActivityGuard {
    entry: Arc<Entry>,
    exec: Option<(Instant, Arc<Metrics>)>,
}

impl ActivityGuard {
    /// Records the guard's lifetime as an exec latency when dropped.
    pub fn time_exec(&mut self, metrics: Arc<Metrics>) {
        self.exec = Some((Instant::now(), metrics));
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.entry.touch();
        self.entry.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some((start, metrics)) = self.exec.take() {
            metrics.exec_finished(start.elapsed());
        }
    }
}

/// A sandbox ready for a forwarded request.
pub struct Lease {
    /// The sandbox's agent.
    pub agent: AgentClient,
    /// The driver's id of this run of the agent.
    pub pid: u32,
    pub guard: ActivityGuard,
    pub entry: Arc<Entry>,
    /// Identifies this run of the sandbox among all runs of this server (preview URLs are
    /// bound to one run).
    pub run: u64,
}

/// Options fixed at create (a create-or-get that asks for other values is a conflict).
struct FixedOptions {
    image: String,
    ephemeral: bool,
    isolation: Isolation,
}

/// Options given on create/patch, validated.
struct OptionChanges {
    sleep_after: Option<SleepAfter>,
    keep_alive: Option<bool>,
    keep_alive_while_busy: Option<bool>,
    env: Option<BTreeMap<String, String>>,
    limits: Option<Limits>,
    labels: Option<LabelChanges>,
    /// A new expiry (`Some(None)`: none).
    expires_at_ms: Option<Option<i64>>,
}

/// The expiry a `ttl` given now asks for: `None` for no expiry.
fn expiry_of(ttl: Ttl) -> Option<i64> {
    ttl.duration().map(|d| now_ms() + d.as_millis() as i64)
}

impl OptionChanges {
    fn parse(
        sleep_after: Option<SleepAfter>,
        keep_alive: Option<bool>,
        keep_alive_while_busy: Option<bool>,
        env: Option<&BTreeMap<String, String>>,
        limits: Option<&Limits>,
        caps: &SandboxCaps,
    ) -> ApiResult<Self> {
        if let Some(env) = env {
            for (k, v) in env {
                if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                    return Err(ApiError::validation(format!("env: invalid variable {k:?}")));
                }
            }
        }
        if let Some(l) = limits {
            validate_limits(l)?;
            caps::check(l, caps)?;
        }
        Ok(OptionChanges {
            sleep_after,
            keep_alive,
            keep_alive_while_busy,
            env: env.cloned(),
            limits: limits.cloned(),
            labels: None,
            expires_at_ms: None,
        })
    }

    /// Adds label changes and a `ttl` (counted from now).
    fn with_labels_and_ttl(mut self, labels: Option<LabelChanges>, ttl: Option<Ttl>) -> Self {
        self.labels = labels;
        self.expires_at_ms = ttl.map(expiry_of);
        self
    }

    fn is_empty(&self) -> bool {
        self.sleep_after.is_none()
            && self.keep_alive.is_none()
            && self.keep_alive_while_busy.is_none()
            && self.env.is_none()
            && self.limits.is_none()
            && self.labels.is_none()
            && self.expires_at_ms.is_none()
    }

    fn apply(self, options: &mut SandboxOptions) -> ApiResult<()> {
        if let Some(labels) = self.labels {
            labels.apply(&mut options.labels)?;
        }
        if let Some(expiry) = self.expires_at_ms {
            options.expires_at_ms = expiry;
        }
        if let Some(s) = self.sleep_after {
            options.sleep_after = s;
        }
        if let Some(k) = self.keep_alive {
            options.keep_alive = k;
        }
        if let Some(k) = self.keep_alive_while_busy {
            options.keep_alive_while_busy = k;
        }
        if let Some(env) = self.env {
            options.env = env;
        }
        if let Some(l) = self.limits {
            options.limits = merge_limits(&l, &options.limits);
        }
        Ok(())
    }
}

fn validate_limits(l: &Limits) -> ApiResult<()> {
    if let Some(c) = l.cpus
        && !(c.is_finite() && c > 0.0 && c <= 1024.0)
    {
        return Err(ApiError::validation(
            "limits.cpus must be a number of cores > 0",
        ));
    }
    if l.memory_mb == Some(0) || l.pids == Some(0) || l.disk_mb == Some(0) {
        return Err(ApiError::validation("limits must be greater than zero"));
    }
    Ok(())
}

/// `primary`'s fields where set, else `fallback`'s.
fn merge_limits(primary: &Limits, fallback: &Limits) -> Limits {
    Limits {
        cpus: primary.cpus.or(fallback.cpus),
        memory_mb: primary.memory_mb.or(fallback.memory_mb),
        pids: primary.pids.or(fallback.pids),
        disk_mb: primary.disk_mb.or(fallback.disk_mb),
    }
}

/// What the operator allows sandboxes and tenants.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Limits for every field a sandbox leaves unset (within `caps`).
    pub default_limits: Limits,
    pub caps: SandboxCaps,
    pub default_quota: TenantQuota,
    /// The tier of sandboxes whose create leaves `isolation` out (and of implicit creates).
    pub default_isolation: Isolation,
    /// No sandbox is created or started while the host's `MemAvailable` is below this (MiB;
    /// 0: no floor).
    pub min_host_memory_mb: u64,
}

/// Owns every sandbox of the server.
pub struct Manager {
    store: Arc<dyn Store>,
    drivers: Drivers,
    images: ImageStore,
    default_limits: Limits,
    /// The largest limits one sandbox may have.
    caps: SandboxCaps,
    /// The quota of tenants without one of their own.
    default_quota: TenantQuota,
    default_isolation: Isolation,
    /// See [`Bounds::min_host_memory_mb`].
    min_host_memory_mb: u64,
    /// Per-tenant admission against quotas.
    gate: Gate,
    metrics: Arc<Metrics>,
    /// The egress proxies of running sandboxes.
    egress: Egress,
    /// Random id of this data dir (see [`internal_id`]).
    instance: String,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Features told about starts and stops.
    listeners: Vec<Arc<dyn LifecycleListener>>,
    /// Endpoints bucket mounts may use.
    mount_policy: crate::mounts::MountPolicy,
    /// Held while a snapshot is deleted or a sandbox starts using one.
    snapshot_lock: tokio::sync::Mutex<()>,
    /// Cluster mode: other replicas share the store and the sandboxes, so a start or a
    /// shutdown of this process leaves the sandboxes' states alone.
    cluster: bool,
}

impl Manager {
    /// A manager; the first one on a data dir picks its random instance id.
    pub async fn new(
        store: Arc<dyn Store>,
        drivers: Drivers,
        images: ImageStore,
        bounds: Bounds,
        metrics: Arc<Metrics>,
        egress: Egress,
    ) -> ApiResult<Self> {
        let fresh = hex::encode(rand::random::<[u8; 8]>());
        let instance = store.setting_or_init("instance_id", &fresh).await?;
        Ok(Manager {
            store,
            drivers,
            images,
            default_limits: bounds.default_limits,
            caps: bounds.caps,
            default_quota: bounds.default_quota,
            min_host_memory_mb: bounds.min_host_memory_mb,
            default_isolation: bounds.default_isolation,
            gate: Gate::default(),
            metrics,
            egress,
            instance,
            entries: Mutex::default(),
            listeners: Vec::new(),
            mount_policy: Default::default(),
            snapshot_lock: tokio::sync::Mutex::new(()),
            cluster: false,
        })
    }

    /// Cluster mode (call while building the server): see [`Manager::reconcile`] and
    /// [`Manager::sleep_all`].
    pub fn set_cluster(&mut self, cluster: bool) {
        self.cluster = cluster;
    }

    /// Sets which endpoints bucket mounts may use (call while building the server).
    pub fn set_mount_policy(&mut self, policy: crate::mounts::MountPolicy) {
        self.mount_policy = policy;
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Tells `listener` about every start and stop from now on (call while building the
    /// server).
    pub fn subscribe(&mut self, listener: Arc<dyn LifecycleListener>) {
        self.listeners.push(listener);
    }

    /// Tells every listener that `entry` changed.
    fn announce(&self, entry: &Entry, kind: SandboxEventKind) {
        let state = match kind {
            SandboxEventKind::Created => SandboxState::Creating,
            SandboxEventKind::Started => SandboxState::Running,
            SandboxEventKind::Stopped => SandboxState::Sleeping,
            SandboxEventKind::Destroyed => SandboxState::Destroyed,
            SandboxEventKind::Updated if entry.running.load(Ordering::SeqCst) => {
                SandboxState::Running
            }
            SandboxEventKind::Updated => SandboxState::Sleeping,
        };
        for listener in &self.listeners {
            listener.changed(entry.as_ref(), kind, state);
        }
    }

    /// Lets every listener act on a sandbox about to stop, within [`ABOUT_TO_STOP_BUDGET`].
    async fn announce_stop(&self, entry: &Entry, agent: &AgentClient) {
        let all = futures::future::join_all(
            self.listeners
                .iter()
                .map(|l| l.about_to_stop(entry.as_ref(), agent)),
        );
        if tokio::time::timeout(ABOUT_TO_STOP_BUDGET, all)
            .await
            .is_err()
        {
            tracing::warn!(sandbox = %entry.id, "listeners of the stop ran out of time");
        }
    }

    /// The driver that runs sandboxes of `isolation`.
    fn driver(&self, isolation: Isolation) -> ApiResult<&Arc<dyn Driver>> {
        self.drivers.get(isolation)
    }

    /// The driver of a tier that can take snapshots, or SNAPSHOT_UNSUPPORTED.
    fn snapshot_driver(&self, isolation: Isolation) -> ApiResult<Arc<dyn Driver>> {
        let driver = self.driver(isolation)?;
        if !driver.supports_snapshots() {
            return Err(ApiError::new(
                ErrorCode::SnapshotUnsupported,
                format!("snapshots are not supported for isolation tier {isolation}"),
            ));
        }
        Ok(driver.clone())
    }

    /// The driver of a loaded sandbox (the caller holds its lock).
    fn driver_of(&self, inner: &Inner) -> ApiResult<&Arc<dyn Driver>> {
        self.driver(
            inner
                .record
                .as_ref()
                .map(|r| r.options.isolation)
                .unwrap_or_default(),
        )
    }

    /// The per-sandbox caps of this server.
    pub fn caps(&self) -> &SandboxCaps {
        &self.caps
    }

    /// A tenant's quota in force, its usage and the caps (`GET /v1/quota`).
    pub async fn quota_info(&self, tenant: &str) -> ApiResult<QuotaInfo> {
        let (quota, is_default) =
            quota::effective_quota(self.store.as_ref(), tenant, &self.default_quota).await?;
        let usage = {
            let _admission = self.gate.lock(self.store.as_ref(), tenant).await?;
            let records = self.store.list_sandboxes(tenant, None, usize::MAX).await?;
            quota::usage(&records, &self.gate.starting(tenant), None, |r| {
                self.claim(&r.options.limits)
            })
        };
        Ok(QuotaInfo {
            tenant: tenant.to_owned(),
            quota,
            is_default,
            usage,
            caps: self.caps.clone(),
        })
    }

    /// What a sandbox with these (stored) limits claims of its tenant's quota.
    fn claim(&self, limits: &Limits) -> Claim {
        Claim::of(
            &merge_limits(limits, &self.default_limits),
            self.caps.memory_mb,
        )
    }

    /// Checks that `demand` for sandbox `id` with `limits` fits the tenant's quota. Call under
    /// the tenant's admission lock ([`Gate::lock`]) and make the change before releasing it.
    async fn admit(
        &self,
        tenant: &str,
        id: &str,
        demand: Demand,
        limits: &Limits,
    ) -> ApiResult<()> {
        let (quota, _) =
            quota::effective_quota(self.store.as_ref(), tenant, &self.default_quota).await?;
        if quota == TenantQuota::default() {
            return Ok(());
        }
        let records = self.store.list_sandboxes(tenant, None, usize::MAX).await?;
        let usage = quota::usage(&records, &self.gate.starting(tenant), Some(id), |r| {
            self.claim(&r.options.limits)
        });
        quota::check(tenant, &quota, &usage, demand, self.claim(limits))
    }

    /// Stores option changes of an existing sandbox. A new disk limit, and more memory for a
    /// running sandbox, are admitted against the tenant's quota first; new cpu, memory and pids
    /// limits of a running sandbox are applied to it at once, under the same admission lock
    /// (a refusal by the kernel leaves both the sandbox and the record unchanged). Returns the
    /// record and the changed options that wait for the next start.
    async fn save_options(
        &self,
        entry: &Entry,
        inner: &mut Inner,
        mut record: SandboxRecord,
        changes: OptionChanges,
    ) -> ApiResult<(SandboxRecord, Vec<String>)> {
        let running = inner.started.is_some();
        let mut pending = Vec::new();
        if running && changes.env.is_some() {
            pending.push("env".to_owned());
        }
        let resized = changes.limits.as_ref().is_some_and(|l| l.disk_mb.is_some());
        if running && resized {
            pending.push("limits.diskMb".to_owned());
        }
        let before = merge_limits(&record.options.limits, &self.default_limits);
        changes.apply(&mut record.options)?;
        let after = merge_limits(&record.options.limits, &self.default_limits);
        let live = running
            && (before.cpus, before.memory_mb, before.pids)
                != (after.cpus, after.memory_mb, after.pids);
        let grows = self.claim(&after).memory_mb > self.claim(&before).memory_mb;
        let demand = if live && grows {
            Some(Demand::GrowRunning)
        } else if resized {
            Some(Demand::Resize)
        } else {
            None
        };
        let _admission = match demand {
            Some(demand) => {
                let lock = self.gate.lock(self.store.as_ref(), &entry.tenant).await?;
                self.admit(&entry.tenant, &entry.id, demand, &record.options.limits)
                    .await?;
                Some(lock)
            }
            None => None,
        };
        if live {
            self.apply_limits(entry, record.options.isolation, &after)
                .await?;
        }
        let saved = self
            .store
            .update_options(&entry.tenant, &entry.id, &record.options)
            .await;
        if let Err(e) = saved {
            if live {
                // Best effort: the sandbox goes back to the limits its record still has.
                if let Ok(driver) = self.driver(record.options.isolation) {
                    let _ = driver.set_limits(&entry.internal, &before).await;
                }
            }
            return Err(e.into());
        }
        inner.record = Some(record.clone());
        Ok((record, pending))
    }

    /// Writes new limits into a running sandbox (its cgroups).
    async fn apply_limits(
        &self,
        entry: &Entry,
        isolation: Isolation,
        limits: &Limits,
    ) -> ApiResult<()> {
        self.driver(isolation)?
            .set_limits(&entry.internal, limits)
            .await
            .map_err(|e| {
                let error = match e {
                    DriverError::LimitsRefused { message, .. } => {
                        ApiError::new(ErrorCode::ResourceBusy, message)
                    }
                    DriverError::InvalidSpec(m) => ApiError::validation(m),
                    e => ApiError::internal(format!("applying the limits: {}", ErrorChain(&e))),
                };
                error.context("sandboxId", entry.id.as_str())
            })
    }

    /// Starts a sleeping sandbox once its tenant's quota allows one more running.
    async fn wake(
        &self,
        entry: &Entry,
        inner: &mut Inner,
        record: &SandboxRecord,
    ) -> ApiResult<()> {
        let _starting = {
            let _admission = self.gate.lock(self.store.as_ref(), &entry.tenant).await?;
            self.admit(
                &entry.tenant,
                &entry.id,
                Demand::Wake,
                &record.options.limits,
            )
            .await?;
            self.gate.mark_starting(&entry.tenant, &entry.id)
        };
        self.start(entry, inner, record).await
    }

    /// The driver's (and the process archive's) name of sandbox `(tenant, id)`.
    pub fn internal_id_of(&self, tenant: &str, id: &str) -> String {
        internal_id(&self.instance, tenant, id)
    }

    /// The entry of `(tenant, id)`, created on first use. Entries are never removed, so two
    /// callers can never end up holding different mutexes for the same sandbox.
    fn entry(&self, tenant: &str, id: &str) -> Arc<Entry> {
        let internal = internal_id(&self.instance, tenant, id);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .entry(internal.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    tenant: tenant.to_owned(),
                    id: id.to_owned(),
                    internal,
                    inner: tokio::sync::Mutex::default(),
                    in_flight: AtomicUsize::new(0),
                    last_activity_ms: AtomicI64::new(0),
                    running: AtomicBool::new(false),
                    ended_run: AtomicU64::new(0),
                    ended_reason: AtomicU8::new(0),
                })
            })
            .clone()
    }

    fn existing_entry(&self, tenant: &str, id: &str) -> Option<Arc<Entry>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&internal_id(&self.instance, tenant, id))
            .cloned()
    }

    /// The entry of a sandbox that exists (so unknown ids never grow the entry map).
    async fn known_entry(&self, tenant: &str, id: &str) -> ApiResult<Arc<Entry>> {
        if let Some(entry) = self.existing_entry(tenant, id) {
            return Ok(entry);
        }
        if self.store.get_sandbox(tenant, id).await?.is_none() {
            return Err(ApiError::sandbox_not_found(id));
        }
        Ok(self.entry(tenant, id))
    }

    fn all_entries(&self) -> Vec<Arc<Entry>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.values().cloned().collect()
    }

    /// Locks a sandbox's entry and loads its record (`SANDBOX_NOT_FOUND` when it is gone).
    async fn lock_loaded<'a>(
        &self,
        entry: &'a Entry,
    ) -> ApiResult<(tokio::sync::MutexGuard<'a, Inner>, SandboxRecord)> {
        let mut inner = entry.inner.lock().await;
        let record = self
            .load(entry, &mut inner)
            .await?
            .ok_or_else(|| ApiError::sandbox_not_found(&entry.id))?;
        Ok((inner, record))
    }

    /// The cached record, loaded from the store the first time.
    async fn load(&self, entry: &Entry, inner: &mut Inner) -> ApiResult<Option<SandboxRecord>> {
        if inner.record.is_none() {
            inner.record = self.store.get_sandbox(&entry.tenant, &entry.id).await?;
        }
        Ok(inner.record.clone())
    }

    /// Public view of a record, with the in-memory activity time when newer.
    async fn info(&self, record: &SandboxRecord) -> ApiResult<SandboxInfo> {
        let mut last_active = record.last_active_at_ms;
        if let Some(entry) = self.existing_entry(&record.tenant, &record.id) {
            last_active = last_active.max(entry.last_activity_ms.load(Ordering::SeqCst));
        }
        let o = &record.options;
        let mut info = SandboxInfo {
            id: record.id.clone(),
            image: o.image.clone(),
            state: record.state,
            sleep_after_secs: o.sleep_after,
            keep_alive: o.keep_alive,
            keep_alive_while_busy: o.keep_alive_while_busy,
            ephemeral: o.ephemeral,
            isolation: o.isolation,
            env: o.env.clone(),
            limits: merge_limits(&o.limits, &self.default_limits),
            created_at: ms_timestamp(record.created_at_ms),
            last_active_at: ms_timestamp(last_active),
            network: Default::default(),
            secrets: Vec::new(),
            labels: o.labels.clone(),
            expires_at: o.expires_at_ms.map(ms_timestamp),
            pending_restart: Vec::new(),
            node: match self.driver(o.isolation) {
                Ok(driver) => driver.node_of(&record.internal_id).await,
                Err(_) => None,
            },
        };
        let network = egress::state::load(self.store.as_ref(), &record.internal_id).await?;
        egress::state::fill_info(&mut info, &network);
        Ok(info)
    }

    fn image_rootfs(&self, image: &str) -> ApiResult<(PathBuf, Vec<(String, String)>)> {
        let not_found = || {
            ApiError::new(
                ErrorCode::ImageNotFound,
                format!("image {image:?} not found"),
            )
            .context("image", image)
        };
        match self.images.info(image) {
            Ok(info) => {
                let rootfs = self.images.rootfs(image).map_err(|_| not_found())?;
                let env = info
                    .config
                    .env
                    .iter()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                Ok((rootfs, env))
            }
            Err(ImageError::NotFound(_) | ImageError::InvalidName { .. }) => Err(not_found()),
            Err(e) => Err(ApiError::internal(format!(
                "image {image:?}: {}",
                ErrorChain(&e)
            ))),
        }
    }

    /// Starts a stopped sandbox (under its lock) and records it as running.
    async fn start(
        &self,
        entry: &Entry,
        inner: &mut Inner,
        record: &SandboxRecord,
    ) -> ApiResult<()> {
        let o = &record.options;
        let limits = merge_limits(&o.limits, &self.default_limits);
        // Records made before the operator lowered a cap: refuse rather than start above it.
        caps::check(&limits, &self.caps).map_err(|e| e.context("sandboxId", entry.id.as_str()))?;
        caps::check_host_memory(self.min_host_memory_mb)
            .map_err(|e| e.context("sandboxId", entry.id.as_str()))?;
        let (image_rootfs, image_env) = self.image_rootfs(&o.image)?;
        let mut env = image_env;
        env.retain(|(k, _)| !o.env.contains_key(k));
        env.extend(o.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // Secrets: the sandbox sees placeholders only; its proxy is up before it starts.
        let network = egress::state::load_for_start(self.store.as_ref(), &entry.internal).await?;
        env.retain(|(k, _)| !network.secrets.iter().any(|s| &s.name == k));
        env.extend(egress::secret_env(&network.secrets));
        // Last, over any value of the sandbox's own env: the agent's process cap.
        env.retain(|(k, _)| k != MAX_PROCESSES_ENV);
        env.push((
            MAX_PROCESSES_ENV.to_owned(),
            self.caps.processes.to_string(),
        ));
        let driver = self.driver(o.isolation)?;
        let proxy = self
            .egress
            .attach(&entry.tenant, &entry.internal, &image_rootfs, &network)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::SandboxStartFailed,
                    format!(
                        "sandbox failed to start: egress proxy: {}",
                        egress::error_chain(&e)
                    ),
                )
                .context("sandboxId", entry.id.as_str())
            })?;
        let run_files = proxy
            .files
            .into_iter()
            .map(|(name, contents)| RunFile {
                name: name.to_owned(),
                contents,
            })
            .collect();
        let handle = proxy.proxy;
        let mounts = self
            .store
            .mounts(&entry.internal)
            .await?
            .into_iter()
            .map(stored_to_mount)
            .collect();
        let spec = SandboxSpec {
            id: entry.internal.clone(),
            image: o.image.clone(),
            limits,
            env,
            ephemeral: o.ephemeral,
            network: self.egress.driver_policy(&entry.tenant, &network),
            run_files,
            egress: Some(EgressEndpoint::new(move |stream| handle.accept(stream))),
            mounts,
        };
        let started = driver.start(&spec).await.map_err(|e| {
            self.egress.detach(&entry.internal);
            tracing::warn!(sandbox = %entry.id, tenant = %entry.tenant, error = %ErrorChain(&e), "start failed");
            let error = match &e {
                // The spec's limits or env are what the driver refused: the caller's input.
                DriverError::InvalidSpec(m) => ApiError::validation(m.clone()),
                DriverError::ImageNotFound(image) => ApiError::new(
                    ErrorCode::ImageNotFound,
                    format!("image {image:?} not found"),
                )
                .context("image", image.as_str()),
                DriverError::NodeUnavailable { node, .. } => {
                    ApiError::new(ErrorCode::NodeUnavailable, e.to_string())
                        .context("node", node.as_str())
                }
                _ => ApiError::new(
                    ErrorCode::SandboxStartFailed,
                    format!("sandbox failed to start: {}", ErrorChain(&e)),
                ),
            };
            error.context("sandboxId", entry.id.as_str())
        })?;
        tracing::info!(sandbox = %entry.id, tenant = %entry.tenant, pid = started.pid, "sandbox started");
        self.metrics.sandbox_started();
        entry.touch();
        let now = now_ms();
        self.store
            .set_state(&entry.tenant, &entry.id, SandboxState::Running, Some(now))
            .await?;
        inner.started = Some(started);
        inner.run = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        entry.running.store(true, Ordering::SeqCst);
        if let Some(r) = inner.record.as_mut() {
            r.state = SandboxState::Running;
            r.last_active_at_ms = now;
        }
        for listener in &self.listeners {
            listener.started(entry.as_ref());
        }
        self.announce(entry, SandboxEventKind::Started);
        Ok(())
    }

    /// Stops a running sandbox (under its lock); it becomes `sleeping`.
    async fn sleep(&self, entry: &Entry, inner: &mut Inner) -> ApiResult<()> {
        let was_running = inner.started.is_some();
        if let Some(started) = inner.started.take() {
            entry.running.store(false, Ordering::SeqCst);
            self.announce_stop(entry, &AgentClient::new(started.agent.clone()))
                .await;
            let stopped = match self.driver_of(inner) {
                Ok(driver) => driver
                    .stop(&entry.internal)
                    .await
                    .map_err(|e| display_chain(&e)),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = stopped {
                tracing::warn!(sandbox = %entry.id, error = %e, "stop failed");
            }
            self.egress.detach(&entry.internal);
            for listener in &self.listeners {
                listener.stopped(entry.as_ref());
            }
            tracing::info!(sandbox = %entry.id, tenant = %entry.tenant, "sandbox asleep");
        }
        let last = entry.last_activity_ms.load(Ordering::SeqCst);
        let last = (last > 0).then_some(last);
        self.store
            .set_state(&entry.tenant, &entry.id, SandboxState::Sleeping, last)
            .await?;
        if let Some(r) = inner.record.as_mut() {
            r.state = SandboxState::Sleeping;
            if let Some(last) = last {
                r.last_active_at_ms = last;
            }
        }
        if was_running {
            self.announce(entry, SandboxEventKind::Stopped);
        }
        Ok(())
    }

    /// Creates the record and starts the sandbox (the caller holds the entry lock and knows the
    /// record does not exist). A failed first start leaves nothing behind.
    async fn create_locked(
        &self,
        entry: &Entry,
        inner: &mut Inner,
        fixed: FixedOptions,
        changes: OptionChanges,
        network: NetworkChanges,
        snapshot: Option<&SnapshotRecord>,
    ) -> ApiResult<SandboxRecord> {
        let driver = self.driver(fixed.isolation)?.clone();
        self.image_rootfs(&fixed.image)?;
        caps::check_host_memory(self.min_host_memory_mb)?;
        let mut options = SandboxOptions {
            image: fixed.image,
            sleep_after: SleepAfter::DEFAULT,
            keep_alive: false,
            keep_alive_while_busy: true,
            ephemeral: fixed.ephemeral,
            isolation: fixed.isolation,
            env: BTreeMap::new(),
            limits: Limits::default(),
            labels: BTreeMap::new(),
            expires_at_ms: None,
        };
        changes.apply(&mut options)?;
        caps::check(
            &merge_limits(&options.limits, &self.default_limits),
            &self.caps,
        )?;
        let new = NewSandbox {
            tenant: entry.tenant.clone(),
            id: entry.id.clone(),
            internal_id: entry.internal.clone(),
            options,
            state: SandboxState::Creating,
            now_ms: now_ms(),
        };
        let (record, _) = {
            // The record (state `creating`) counts against the quota from here on.
            let _admission = self.gate.lock(self.store.as_ref(), &entry.tenant).await?;
            self.admit(
                &entry.tenant,
                &entry.id,
                Demand::Create,
                &new.options.limits,
            )
            .await?;
            self.store.create_sandbox(new).await?
        };
        inner.record = Some(record.clone());
        self.announce(entry, SandboxEventKind::Created);
        let seeded = match snapshot {
            Some(snapshot) => self.seed_from(entry, driver.as_ref(), snapshot).await,
            None => Ok(()),
        };
        let started = match seeded {
            Ok(()) => match self.change_network(entry, inner, network).await {
                Ok(()) => self.start(entry, inner, &record).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            inner.record = None;
            if let Err(de) = driver.destroy(&entry.internal).await {
                tracing::warn!(sandbox = %entry.id, error = %de, "cleanup after failed start");
            }
            self.store.delete_sandbox(&entry.tenant, &entry.id).await?;
            self.egress.forget(&entry.internal);
            self.announce(entry, SandboxEventKind::Destroyed);
            return Err(e);
        }
        Ok(inner.record.clone().unwrap_or(record))
    }

    /// `POST /v1/sandboxes`: create-or-get. Returns the sandbox and whether it was created.
    /// `by_operator`: the request came with the admin key (its network CIDRs are grants).
    pub async fn create(
        &self,
        tenant: &str,
        by_operator: bool,
        req: CreateSandboxRequest,
    ) -> ApiResult<(SandboxInfo, bool)> {
        let id = match req.id {
            Some(id) => id,
            None => format!("sb-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        };
        validate_sandbox_id(&id).map_err(|m| ApiError::validation(m).context("id", id.as_str()))?;
        let changes = OptionChanges::parse(
            req.sleep_after,
            req.keep_alive,
            req.keep_alive_while_busy,
            req.env.as_ref(),
            req.limits.as_ref(),
            &self.caps,
        )?
        .with_labels_and_ttl(
            req.labels.as_ref().map(LabelChanges::set).transpose()?,
            req.ttl,
        );
        let network =
            NetworkChanges::parse(req.network.as_ref(), req.secrets.as_ref(), by_operator)?;
        let snapshot = match &req.snapshot {
            Some(snapshot) => Some(
                self.snapshot_for_create(tenant, snapshot, req.image.as_deref(), req.isolation)
                    .await?,
            ),
            None => None,
        };
        let entry = self.entry(tenant, &id);
        let mut inner = entry.inner.lock().await;
        if let Some(mut record) = self.load(&entry, &mut inner).await? {
            if let Some(snapshot) = &snapshot {
                let from = self.store.sandbox_snapshot(tenant, &id).await?;
                if from.as_deref() != Some(snapshot.id.as_str()) {
                    return Err(ApiError::new(
                        ErrorCode::SandboxConflict,
                        format!(
                            "sandbox {id:?} exists and was not created from snapshot {:?}",
                            snapshot.id
                        ),
                    )
                    .context("sandboxId", id.as_str()));
                }
            }
            let conflict = |field: &str, existing: String| {
                ApiError::new(
                    ErrorCode::SandboxConflict,
                    format!("sandbox {id:?} exists with a different {field} ({existing})"),
                )
                .context("sandboxId", id.as_str())
            };
            if let Some(image) = &req.image
                && *image != record.options.image
            {
                return Err(conflict("image", record.options.image));
            }
            if let Some(e) = req.ephemeral
                && e != record.options.ephemeral
            {
                return Err(conflict("ephemeral", record.options.ephemeral.to_string()));
            }
            if let Some(i) = req.isolation
                && i != record.options.isolation
            {
                return Err(conflict("isolation", record.options.isolation.to_string()));
            }
            // Like the seed's getSandbox(id, options): mutable options are (re)applied.
            let changed = !changes.is_empty() || !network.is_empty();
            if !changes.is_empty() {
                (record, _) = self
                    .save_options(&entry, &mut inner, record, changes)
                    .await?;
            }
            self.change_network(&entry, &inner, network).await?;
            if changed {
                self.announce(&entry, SandboxEventKind::Updated);
            }
            return Ok((self.info(&record).await?, false));
        }
        let fixed = match &snapshot {
            Some(snapshot) => FixedOptions {
                image: snapshot.image.clone(),
                ephemeral: req.ephemeral.unwrap_or(false),
                isolation: snapshot.isolation,
            },
            None => FixedOptions {
                image: req.image.unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
                ephemeral: req.ephemeral.unwrap_or(false),
                isolation: req.isolation.unwrap_or(self.default_isolation),
            },
        };
        let record = self
            .create_locked(
                &entry,
                &mut inner,
                fixed,
                changes,
                network,
                snapshot.as_ref(),
            )
            .await?;
        Ok((self.info(&record).await?, true))
    }

    pub async fn get(&self, tenant: &str, id: &str) -> ApiResult<SandboxInfo> {
        let record = self
            .store
            .get_sandbox(tenant, id)
            .await?
            .ok_or_else(|| ApiError::sandbox_not_found(id))?;
        self.info(&record).await
    }

    /// A page of the tenant's sandboxes and the cursor of the next one.
    pub async fn list(
        &self,
        tenant: &str,
        labels: &[(String, String)],
        cursor: Option<&str>,
        limit: usize,
    ) -> ApiResult<(Vec<SandboxInfo>, Option<String>)> {
        let mut records = self
            .store
            .list_sandboxes_labelled(tenant, labels, cursor, limit + 1)
            .await?;
        let more = records.len() > limit;
        records.truncate(limit);
        let next = if more {
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        let mut infos = Vec::with_capacity(records.len());
        for r in &records {
            infos.push(self.info(r).await?);
        }
        Ok((infos, next))
    }

    /// `PATCH /v1/sandboxes/{id}`; `by_operator` as for [`Manager::create`].
    pub async fn update(
        &self,
        tenant: &str,
        by_operator: bool,
        id: &str,
        req: UpdateSandboxRequest,
    ) -> ApiResult<SandboxInfo> {
        let changes = OptionChanges::parse(
            req.sleep_after,
            req.keep_alive,
            req.keep_alive_while_busy,
            req.env.as_ref(),
            req.limits.as_ref(),
            &self.caps,
        )?
        .with_labels_and_ttl(
            req.labels.as_ref().map(LabelChanges::merge).transpose()?,
            req.ttl,
        );
        let network =
            NetworkChanges::parse(req.network.as_ref(), req.secrets.as_ref(), by_operator)?;
        let entry = self.known_entry(tenant, id).await?;
        let (mut inner, record) = self.lock_loaded(&entry).await?;
        if let Some(policy) = network.policy() {
            // A tier that cannot run the policy refuses it before anything is stored.
            self.driver(record.options.isolation)?
                .check_network(policy)
                .map_err(|e| ApiError::validation(e.to_string()))?;
        }
        let (record, pending_restart) = self
            .save_options(&entry, &mut inner, record, changes)
            .await?;
        self.change_network(&entry, &inner, network).await?;
        self.announce(&entry, SandboxEventKind::Updated);
        Ok(SandboxInfo {
            pending_restart,
            ..self.info(&record).await?
        })
    }

    /// Stores network policy and secret changes and applies them at once to a running sandbox:
    /// its proxy's rules, the driver's networking mode, and the placeholders of added or
    /// removed secrets in the agent's env.
    async fn change_network(
        &self,
        entry: &Entry,
        inner: &Inner,
        changes: NetworkChanges,
    ) -> ApiResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let policy_changed = changes.changes_policy();
        let (old, network) = changes.apply(self.store.as_ref(), &entry.internal).await?;
        let Some(started) = &inner.started else {
            return Ok(());
        };
        self.egress
            .update(&entry.tenant, &entry.internal, &network)
            .map_err(|e| ApiError::internal(egress::error_chain(&e)))?;
        if policy_changed {
            self.driver_of(inner)?
                .set_network(
                    &entry.internal,
                    &self.egress.driver_policy(&entry.tenant, &network),
                )
                .await
                .map_err(|e| {
                    ApiError::internal(format!("applying the network policy: {}", ErrorChain(&e)))
                        .context("sandboxId", entry.id.as_str())
                })?;
        }
        let env = egress::state::secret_env_changes(&old.secrets, &network.secrets);
        egress::state::push_env(&AgentClient::new(started.agent.clone()), env).await;
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) variables of the sandbox's stored env (applied at its
    /// next start; `POST /v1/sandboxes/{id}/env`).
    pub async fn merge_env(&self, tenant: &str, id: &str, changes: &EnvMap) -> ApiResult<()> {
        let entry = self.known_entry(tenant, id).await?;
        let (mut inner, mut record) = self.lock_loaded(&entry).await?;
        for (key, value) in changes {
            match value {
                Some(v) => record.options.env.insert(key.clone(), v.clone()),
                None => record.options.env.remove(key),
            };
        }
        self.store
            .update_options(tenant, id, &record.options)
            .await?;
        inner.record = Some(record);
        self.announce(&entry, SandboxEventKind::Updated);
        Ok(())
    }

    /// `POST /v1/sandboxes/{id}/mounts`: mounts a bucket in the sandbox (woken first) and
    /// records it, so every later start mounts it again.
    pub async fn mount_bucket(
        &self,
        tenant: &str,
        id: &str,
        req: &MountBucketRequest,
    ) -> ApiResult<BucketMountInfo> {
        let mount = crate::mounts::validate(req)?;
        self.mount_policy.check(&mount.endpoint).await?;
        let entry = self.known_entry(tenant, id).await?;
        let (mut inner, record) = self.lock_loaded(&entry).await?;
        let path = mount.mount_path.display().to_string();
        let stored = self.store.mounts(&entry.internal).await?;
        if stored.iter().any(|m| m.mount_path == path) {
            return Err(ApiError::new(
                ErrorCode::InvalidMountConfig,
                format!("{path} is already a bucket mount of this sandbox"),
            )
            .context("mountPath", path.as_str()));
        }
        // Checked under the sandbox's lock: concurrent mounts cannot pass the cap together.
        self.mount_policy.check_count(stored.len())?;
        if inner.started.is_none() {
            self.wake(&entry, &mut inner, &record).await?;
        }
        entry.touch();
        self.driver_of(&inner)?
            .mount(&entry.internal, &mount)
            .await
            .map_err(|e| mount_error(e, id))?;
        let created_at_ms = now_ms();
        let row = sandpit_store::StoredMount {
            mount_path: path.clone(),
            bucket: mount.bucket.clone(),
            endpoint: mount.endpoint.clone(),
            prefix: mount.prefix.clone(),
            region: mount.region.clone(),
            read_only: mount.read_only,
            access_key_id: mount.access_key_id.clone(),
            secret_access_key: mount.secret_access_key.clone(),
            created_at_ms,
        };
        if let Err(e) = self.store.put_mount(&entry.internal, &row).await {
            let _ = self
                .driver_of(&inner)?
                .unmount(&entry.internal, &mount.mount_path)
                .await;
            return Err(e.into());
        }
        Ok(mount_info(&row, true))
    }

    /// `DELETE /v1/sandboxes/{id}/mounts?path=`: unmounts and forgets a bucket mount.
    pub async fn unmount_bucket(&self, tenant: &str, id: &str, path: &str) -> ApiResult<()> {
        let path = crate::mounts::mount_path(path)?;
        let entry = self.known_entry(tenant, id).await?;
        let (inner, _) = self.lock_loaded(&entry).await?;
        if !self.store.delete_mount(&entry.internal, &path).await? {
            return Err(ApiError::new(
                ErrorCode::InvalidMountConfig,
                format!("no bucket mount at {path} in this sandbox"),
            )
            .context("mountPath", path.as_str()));
        }
        if inner.started.is_some() {
            match self
                .driver_of(&inner)?
                .unmount(&entry.internal, std::path::Path::new(&path))
                .await
            {
                Ok(()) | Err(DriverError::NotMounted { .. }) => {}
                Err(e) => {
                    return Err(ApiError::new(ErrorCode::BucketUnmountError, e.to_string())
                        .context("sandboxId", id));
                }
            }
        }
        Ok(())
    }

    /// `GET /v1/sandboxes/{id}/mounts`.
    pub async fn list_mounts(&self, tenant: &str, id: &str) -> ApiResult<BucketMountList> {
        let entry = self.known_entry(tenant, id).await?;
        let (inner, _) = self.lock_loaded(&entry).await?;
        let stored = self.store.mounts(&entry.internal).await?;
        let up = match (&inner.started, self.driver_of(&inner)) {
            (Some(_), Ok(driver)) => driver.mounted(&entry.internal).await,
            _ => Vec::new(),
        };
        let mounts = stored
            .iter()
            .map(|m| mount_info(m, up.iter().any(|p| p.as_os_str() == m.mount_path.as_str())))
            .collect();
        Ok(BucketMountList { mounts })
    }

    /// `POST /v1/sandboxes/{id}/stop`: sleep now, whatever is in flight.
    pub async fn stop(&self, tenant: &str, id: &str) -> ApiResult<SandboxInfo> {
        let entry = self.known_entry(tenant, id).await?;
        let (mut inner, _) = self.lock_loaded(&entry).await?;
        entry.end_on_request(&inner, EndReason::Stopped);
        self.sleep(&entry, &mut inner).await?;
        let record = inner
            .record
            .clone()
            .ok_or_else(|| ApiError::sandbox_not_found(id))?;
        self.info(&record).await
    }

    /// `DELETE /v1/sandboxes/{id}`: processes, writable layer and record are gone.
    pub async fn destroy(&self, tenant: &str, id: &str) -> ApiResult<()> {
        let entry = self.known_entry(tenant, id).await?;
        let (mut inner, _) = self.lock_loaded(&entry).await?;
        self.destroy_locked(&entry, &mut inner).await
    }

    /// Destroys a loaded sandbox (the caller holds its lock).
    async fn destroy_locked(&self, entry: &Entry, inner: &mut Inner) -> ApiResult<()> {
        let (tenant, id) = (entry.tenant.as_str(), entry.id.as_str());
        entry.end_on_request(inner, EndReason::Destroyed);
        inner.started = None;
        entry.running.store(false, Ordering::SeqCst);
        self.egress.detach(&entry.internal);
        self.driver_of(inner)?
            .destroy(&entry.internal)
            .await
            .map_err(|e| {
                ApiError::internal(format!("destroying sandbox {id:?}: {}", ErrorChain(&e)))
                    .context("sandboxId", id)
            })?;
        self.store.delete_sandbox(tenant, id).await?;
        self.egress.forget(&entry.internal);
        inner.record = None;
        self.announce(entry, SandboxEventKind::Destroyed);
        tracing::info!(sandbox = %id, tenant = %tenant, "sandbox destroyed");
        Ok(())
    }

    /// Destroys every sandbox whose `ttl` ran out, recording each in its tenant's audit log
    /// (`sandbox.expire`, actor `ttl`). Called by the reaper.
    pub async fn reap_expired(&self) {
        /// Sandboxes destroyed per pass at most; the rest go on the next ticks.
        const BATCH: usize = 16;
        let due = match self.store.expired_sandboxes(now_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "listing expired sandboxes");
                return;
            }
        };
        for (tenant, id) in due {
            let result = match self.destroy_if_expired(&tenant, &id).await {
                Ok(false) => continue,
                Ok(true) => {
                    tracing::info!(sandbox = %id, tenant = %tenant, "sandbox expired");
                    "ok".to_owned()
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, tenant = %tenant, error = %e, "destroying an expired sandbox");
                    e.0.code.as_str()
                }
            };
            let row = AuditRecord {
                seq: 0,
                tenant,
                at_ms: now_ms(),
                actor: "ttl".to_owned(),
                action: "sandbox.expire".to_owned(),
                target: id,
                result,
                detail: None,
            };
            if let Err(e) = self.store.append_audit(&row).await {
                tracing::error!(error = %e, "writing the audit log");
            }
        }
    }

    /// Destroys the sandbox if its expiry (checked again under its lock: a PATCH may just have
    /// moved it) has passed. False when it had not, or the sandbox is gone.
    async fn destroy_if_expired(&self, tenant: &str, id: &str) -> ApiResult<bool> {
        let entry = self.entry(tenant, id);
        let mut inner = entry.inner.lock().await;
        let Some(record) = self.load(&entry, &mut inner).await? else {
            return Ok(false);
        };
        if record.options.expires_at_ms.is_none_or(|at| at > now_ms()) {
            return Ok(false);
        }
        if let Err(e) = self.destroy_locked(&entry, &mut inner).await {
            // Retried a minute later, not on every tick (each failure is audited).
            const RETRY_MS: i64 = 60_000;
            let mut options = record.options;
            options.expires_at_ms = Some(now_ms() + RETRY_MS);
            self.store.update_options(tenant, id, &options).await?;
            inner.record = self.store.get_sandbox(tenant, id).await?;
            return Err(e);
        }
        Ok(true)
    }

    /// `GET /v1/sandboxes/{id}/usage`: what the tenant's sandbox uses now (does not wake it).
    pub async fn usage(&self, tenant: &str, id: &str) -> ApiResult<SandboxUsage> {
        let record = self
            .store
            .get_sandbox(tenant, id)
            .await?
            .ok_or_else(|| ApiError::sandbox_not_found(id))?;
        let used = self
            .driver(record.options.isolation)?
            .usage(&record.internal_id)
            .await
            .map_err(|e| {
                ApiError::internal(format!("reading the usage of {id:?}: {}", ErrorChain(&e)))
            })?;
        let (up, down) = self.egress.byte_totals(&record.internal_id);
        // A sandbox that is not running has no processes: whatever a leftover cgroup says.
        let live = |v: u64| {
            if record.state == SandboxState::Running {
                v
            } else {
                0
            }
        };
        Ok(SandboxUsage {
            state: record.state,
            cpu_usec: live(used.cpu_usec),
            memory_bytes: live(used.memory_bytes),
            memory_peak_bytes: live(used.memory_peak_bytes),
            pids: live(used.pids),
            disk_bytes: used.disk_bytes,
            disk_complete: used.disk_complete,
            network_bytes_up: up,
            network_bytes_down: down,
        })
    }

    /// `GET /v1/sandboxes/{id}/egress-log`: the tenant's sandbox's egress log.
    pub async fn egress_log(&self, tenant: &str, id: &str) -> ApiResult<EgressLogPage> {
        let record = self
            .store
            .get_sandbox(tenant, id)
            .await?
            .ok_or_else(|| ApiError::sandbox_not_found(id))?;
        Ok(self.egress.log_page(&record.internal_id))
    }

    /// A running sandbox for a forwarded request: created with defaults if unknown, woken if
    /// asleep. The returned guard keeps it awake.
    pub async fn acquire(&self, tenant: &str, id: &str) -> ApiResult<Lease> {
        let entry = self.entry(tenant, id);
        let mut inner = entry.inner.lock().await;
        if inner.started.is_none() {
            match self.load(&entry, &mut inner).await? {
                Some(record) => self.wake(&entry, &mut inner, &record).await?,
                None => {
                    let changes = OptionChanges::parse(None, None, None, None, None, &self.caps)?;
                    let network = NetworkChanges::default();
                    let fixed = FixedOptions {
                        image: DEFAULT_IMAGE.into(),
                        ephemeral: false,
                        isolation: self.default_isolation,
                    };
                    self.create_locked(&entry, &mut inner, fixed, changes, network, None)
                        .await?;
                }
            }
        }
        Self::lease(&entry, &inner).ok_or_else(|| ApiError::internal("sandbox did not start"))
    }

    /// A lease on a sandbox that runs now, without waking or creating it (preview URLs must
    /// not wake sandboxes).
    pub async fn lease_running(&self, tenant: &str, id: &str) -> Option<Lease> {
        let entry = self.existing_entry(tenant, id)?;
        if !entry.running.load(Ordering::SeqCst) {
            return None;
        }
        let inner = entry.inner.lock().await;
        Self::lease(&entry, &inner)
    }

    /// Whether this is a control-plane replica of a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Cluster mode: a lease on a sandbox the store records as running, wherever it was
    /// started (another replica's sandboxes are reached on their node, not woken when asleep).
    pub async fn lease_running_in_cluster(&self, tenant: &str, id: &str) -> Option<Lease> {
        if let Some(lease) = self.lease_running(tenant, id).await {
            return Some(lease);
        }
        let record = self.store.get_sandbox(tenant, id).await.ok()??;
        if record.state != SandboxState::Running {
            return None;
        }
        self.acquire(tenant, id).await.ok()
    }

    /// The agent of sandbox `(tenant, id)` if it runs now and no start or stop holds it,
    /// without counting activity or keeping it awake (background work such as the process
    /// checkpoints must not stop a sandbox from going to sleep).
    pub fn running_agent(&self, tenant: &str, id: &str) -> Option<AgentClient> {
        let entry = self.existing_entry(tenant, id)?;
        if !entry.running.load(Ordering::SeqCst) {
            return None;
        }
        let inner = entry.inner.try_lock().ok()?;
        let started = inner.started.as_ref()?;
        Some(AgentClient::new(started.agent.clone()))
    }

    /// The run of sandbox `(tenant, id)` if it runs now (see [`Lease::run`]); nothing is
    /// woken or counted as activity.
    pub async fn current_run(&self, tenant: &str, id: &str) -> Option<u64> {
        let entry = self.existing_entry(tenant, id)?;
        if !entry.running.load(Ordering::SeqCst) {
            return None;
        }
        let inner = entry.inner.lock().await;
        inner.started.as_ref().map(|_| inner.run)
    }

    /// Counts a request in flight on a started sandbox (the caller holds the entry lock).
    fn lease(entry: &Arc<Entry>, inner: &Inner) -> Option<Lease> {
        let started = inner.started.as_ref()?;
        entry.in_flight.fetch_add(1, Ordering::SeqCst);
        entry.touch();
        Some(Lease {
            agent: AgentClient::new(started.agent.clone()),
            pid: started.pid,
            guard: ActivityGuard {
                entry: entry.clone(),
                exec: None,
            },
            entry: entry.clone(),
            run: inner.run,
        })
    }

    /// Called when nothing accepts connections to a sandbox's agent any more (it died: crash, OOM
    /// kill): unless another caller already restarted it, the driver cleans up what is left and
    /// the sandbox is recorded asleep, so the next [`Manager::acquire`] starts it afresh.
    pub async fn agent_gone(&self, entry: &Entry, pid: u32) {
        let mut inner = entry.inner.lock().await;
        if inner.started.as_ref().is_none_or(|s| s.pid != pid) {
            return;
        }
        tracing::warn!(sandbox = %entry.id, tenant = %entry.tenant, pid, "sandbox agent died");
        if let Err(e) = self.sleep(entry, &mut inner).await {
            tracing::warn!(sandbox = %entry.id, error = %e, "recording dead sandbox");
        }
    }

    /// One pass of the reaper: sleeps every running sandbox with nothing in flight whose idle
    /// time reached its `sleepAfter` (never `keepAlive` ones, nor `keepAliveWhileBusy` ones
    /// whose background processes or terminal commands run), and records sandboxes whose agent died as asleep (the
    /// driver cleans up what is left; the next call starts them again).
    pub async fn reap(&self) {
        let mut running = self.all_entries();
        running.retain(|e| e.running.load(Ordering::SeqCst));
        // Agents are asked concurrently (a slow one delays no other sandbox) and without the
        // lock (no request waits for an answer; one that comes meanwhile is activity, which
        // `reap_one` sees).
        let busy = futures::future::join_all(running.iter().map(|entry| async move {
            match Self::idle_unless_busy(entry) {
                Some(agent) => crate::activity::is_busy(&agent).await,
                None => false,
            }
        }))
        .await;
        for (entry, busy) in running.iter().zip(busy) {
            if busy {
                // Running processes and terminal commands are activity: the sandbox sleeps
                // `sleepAfter` after the last one ends, and its agent is asked again only then.
                entry.touch();
            } else {
                self.reap_one(entry).await;
            }
        }
    }

    /// The agent of a sandbox that is idle but keeps awake while busy: it is
    /// asked whether anything runs before it is put to sleep.
    fn idle_unless_busy(entry: &Entry) -> Option<AgentClient> {
        let inner = entry.inner.try_lock().ok()?;
        let (record, started) = (inner.record.as_ref()?, inner.started.as_ref()?);
        (record.options.keep_alive_while_busy && Self::idle_ms(entry, record).is_some())
            .then(|| AgentClient::new(started.agent.clone()))
    }

    /// How long a sandbox has been idle, if long enough to sleep it.
    fn idle_ms(entry: &Entry, record: &SandboxRecord) -> Option<i64> {
        let idle_ms = now_ms() - entry.last_activity_ms.load(Ordering::SeqCst);
        let idle = !record.options.keep_alive
            && entry.in_flight() == 0
            && idle_ms
                >= i64::try_from(record.options.sleep_after.duration().as_millis())
                    .unwrap_or(i64::MAX);
        idle.then_some(idle_ms)
    }

    /// Sleeps one sandbox if it is idle or its agent died.
    async fn reap_one(&self, entry: &Entry) {
        // Busy means someone is starting, stopping or leasing it right now: not idle.
        let Ok(mut inner) = entry.inner.try_lock() else {
            return;
        };
        let (Some(record), Some(_)) = (inner.record.clone(), inner.started.as_ref()) else {
            return;
        };
        let idle_ms = Self::idle_ms(entry, &record);
        let dead = match self.driver(record.options.isolation) {
            Ok(driver) => idle_ms.is_none() && !driver.is_running(&entry.internal).await,
            Err(_) => false,
        };
        if idle_ms.is_some() || dead {
            tracing::info!(sandbox = %entry.id, ?idle_ms, dead, "putting sandbox to sleep");
            if let Err(e) = self.sleep(entry, &mut inner).await {
                tracing::warn!(sandbox = %entry.id, error = %e, "sleeping sandbox");
            }
        }
    }

    /// At server start: the driver stops leftovers of a previous run, and every sandbox the
    /// store thought running is recorded as sleeping (it wakes on next use).
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        // Store migration 12: uid ranges the store allocated go to the driver that owns them now.
        let legacy = self.store.legacy_uid_ranges().await?;
        if !legacy.is_empty() {
            self.drivers.standard().adopt_uid_ranges(&legacy).await?;
            self.store.forget_legacy_uid_ranges().await?;
            tracing::info!(
                count = legacy.len(),
                "uid ranges handed to the local driver"
            );
        }
        for (tier, driver) in self.drivers.iter() {
            let found = driver.reconcile().await?;
            if !found.is_empty() {
                tracing::info!(
                    count = found.len(),
                    isolation = %tier,
                    "stopped sandboxes left by a previous run"
                );
            }
        }
        if self.cluster {
            // Sandboxes run on the nodes, which reconcile themselves; other replicas use them.
            return Ok(());
        }
        let n = self
            .store
            .reset_states(
                &[SandboxState::Running, SandboxState::Creating],
                SandboxState::Sleeping,
            )
            .await?;
        if n > 0 {
            tracing::info!(count = n, "sandboxes marked asleep after restart");
        }
        Ok(())
    }

    /// At shutdown: every running sandbox goes to sleep (in cluster mode they keep running on
    /// their nodes for the other replicas: only this process's streams to them end).
    pub async fn sleep_all(&self) {
        for entry in self.all_entries() {
            let mut inner = entry.inner.lock().await;
            entry.end_on_request(&inner, EndReason::Shutdown);
            if self.cluster {
                inner.started = None;
                entry.running.store(false, Ordering::SeqCst);
                continue;
            }
            if inner.started.is_some()
                && let Err(e) = self.sleep(&entry, &mut inner).await
            {
                tracing::warn!(sandbox = %entry.id, error = %e, "sleeping at shutdown");
            }
        }
        for (_, driver) in self.drivers.iter() {
            driver.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ids_are_hostnames_and_distinct() {
        let long = "a".repeat(63);
        for (t, id) in [
            ("default", "Foo"),
            ("default", "foo"),
            ("acme", "foo"),
            ("x", &long[..]),
        ] {
            let name = internal_id("i", t, id);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'));
        }
        assert_ne!(
            internal_id("i", "default", "Foo"),
            internal_id("i", "default", "foo")
        );
        assert_ne!(internal_id("i", "a", "x"), internal_id("i", "b", "x"));
        assert_ne!(internal_id("i", "a", "x"), internal_id("j", "a", "x"));
        assert_eq!(internal_id("i", "a", "x"), internal_id("i", "a", "x"));
    }

    #[test]
    fn limits_merge_field_by_field() {
        let d = Limits {
            cpus: Some(1.0),
            memory_mb: Some(512),
            pids: Some(100),
            disk_mb: None,
        };
        let m = merge_limits(
            &Limits {
                memory_mb: Some(64),
                ..Limits::default()
            },
            &d,
        );
        assert_eq!(
            m,
            Limits {
                memory_mb: Some(64),
                ..d
            }
        );
    }
}
