//! Per-tenant quotas: how many sandboxes a tenant has and runs, and the memory and disk they
//! claim, checked against the tenant's quota (or the server's default) before a sandbox is
//! created or started.
//!
//! Race-free: a check and the change it admits happen under one async lock per tenant. A new
//! sandbox's record is inserted under that lock (state `creating` counts as running); a wake
//! registers the sandbox as starting under it, and the registration lasts until the store says
//! `running` (or the start failed). So twenty concurrent creates see each other's admissions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::{Limits, SandboxState};
use sandpit_protocol::quota::{QuotaUsage, TenantQuota};
use sandpit_store::{SandboxRecord, Store};

use crate::error::{ApiError, ApiResult};

/// What an admission adds to a tenant's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// A new sandbox that starts at once.
    Create,
    /// An existing sandbox that starts.
    Wake,
    /// An existing sandbox whose limits change (only its disk share can grow).
    Resize,
    /// A running sandbox whose memory grows at once (a live PATCH): its new memory claim must
    /// fit beside the other running sandboxes', like a start's; it adds no running sandbox.
    GrowRunning,
}

/// The claims of one sandbox, its effective limits resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub memory_mb: u64,
    /// `None`: the sandbox's writable layer has no size limit.
    pub disk_mb: Option<u64>,
}

impl Claim {
    /// The claim of `limits` (defaults already filled in); unlimited memory claims `max_memory`.
    pub fn of(limits: &Limits, max_memory_mb: u64) -> Self {
        Claim {
            memory_mb: limits.memory_mb.unwrap_or(max_memory_mb),
            disk_mb: limits.disk_mb,
        }
    }
}

/// A tenant's usage from its records, leaving out sandbox `except` (the one being admitted);
/// `starting` are ids being woken right now (counted as running).
pub fn usage(
    records: &[SandboxRecord],
    starting: &HashSet<String>,
    except: Option<&str>,
    claim: impl Fn(&SandboxRecord) -> Claim,
) -> QuotaUsage {
    let mut u = QuotaUsage::default();
    for r in records.iter().filter(|r| Some(r.id.as_str()) != except) {
        let c = claim(r);
        u.sandboxes += 1;
        u.disk_mb += c.disk_mb.unwrap_or(0);
        let running = matches!(r.state, SandboxState::Running | SandboxState::Creating)
            || starting.contains(&r.id);
        if running {
            u.running_sandboxes += 1;
            u.memory_mb += c.memory_mb;
        }
    }
    u
}

/// Refuses a demand that would take the tenant past its quota (`QUOTA_EXCEEDED`, naming the
/// quota, the usage and the request).
pub fn check(
    tenant: &str,
    quota: &TenantQuota,
    usage: &QuotaUsage,
    demand: Demand,
    claim: Claim,
) -> ApiResult<()> {
    let exceeded = |field: &str, what: String, quota: u64, used: u64, asked: u64| {
        ApiError::new(
            ErrorCode::QuotaExceeded,
            format!("tenant {tenant:?} quota exceeded: {what}"),
        )
        .context("tenant", tenant)
        .context("field", field)
        .context("quota", quota)
        .context("usage", used)
        .context("requested", asked)
    };
    let starts = matches!(demand, Demand::Create | Demand::Wake);
    let claims_memory = starts || demand == Demand::GrowRunning;
    if demand == Demand::Create
        && let Some(q) = quota.sandboxes
        && usage.sandboxes + 1 > q
    {
        return Err(exceeded(
            "sandboxes",
            format!("at most {q} sandboxes ({} exist)", usage.sandboxes),
            q,
            usage.sandboxes,
            1,
        ));
    }
    if starts
        && let Some(q) = quota.running_sandboxes
        && usage.running_sandboxes + 1 > q
    {
        return Err(exceeded(
            "runningSandboxes",
            format!(
                "at most {q} running sandboxes ({} running; stop one first)",
                usage.running_sandboxes
            ),
            q,
            usage.running_sandboxes,
            1,
        ));
    }
    if claims_memory
        && let Some(q) = quota.memory_mb
        && usage.memory_mb + claim.memory_mb > q
    {
        return Err(exceeded(
            "memoryMb",
            format!(
                "running sandboxes may use {q} MiB of memory in all ({} MiB in use, {} MiB asked)",
                usage.memory_mb, claim.memory_mb
            ),
            q,
            usage.memory_mb,
            claim.memory_mb,
        ));
    }
    if let Some(q) = quota.disk_mb {
        let Some(disk) = claim.disk_mb else {
            return Err(exceeded(
                "diskMb",
                format!("sandboxes must set limits.diskMb (disk quota {q} MiB)"),
                q,
                usage.disk_mb,
                0,
            ));
        };
        if usage.disk_mb + disk > q {
            return Err(exceeded(
                "diskMb",
                format!(
                    "sandboxes may use {q} MiB of disk in all ({} MiB in use, {disk} MiB asked)",
                    usage.disk_mb
                ),
                q,
                usage.disk_mb,
                disk,
            ));
        }
    }
    Ok(())
}

/// Per-tenant admission: the lock a check and its change happen under, and the sandboxes being
/// woken.
#[derive(Default)]
pub struct Gate {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `(tenant, id)` of sandboxes admitted to start whose state is not `running` yet.
    starting: Arc<Mutex<HashSet<(String, String)>>>,
}

/// A held admission lock ([`Gate::lock`]).
pub struct Admission {
    // Released first: the shared lock, then this process's.
    _shared: sandpit_store::TenantLock,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

/// Keeps a woken sandbox counted as running until dropped (after the store records it).
pub struct Starting {
    key: (String, String),
    set: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Gate {
    /// The tenant's admission lock (entries are few: one per tenant): this process's, then
    /// the store's ([`Store::lock_tenant`]), which other control-plane replicas sharing the
    /// database take too.
    pub async fn lock(&self, store: &dyn Store, tenant: &str) -> ApiResult<Admission> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(tenant.to_owned()).or_default().clone()
        };
        let local = lock.lock_owned().await;
        let shared = store.lock_tenant(tenant).await?;
        Ok(Admission {
            _shared: shared,
            _local: local,
        })
    }

    /// Ids of the tenant's sandboxes being woken (call under the tenant's lock).
    pub fn starting(&self, tenant: &str) -> HashSet<String> {
        let set = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        set.iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Counts `(tenant, id)` as running until the returned guard is dropped (call under the
    /// tenant's lock).
    pub fn mark_starting(&self, tenant: &str, id: &str) -> Starting {
        let key = (tenant.to_owned(), id.to_owned());
        self.starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        Starting {
            key,
            set: self.starting.clone(),
        }
    }
}

/// The quota in force for a tenant and whether it is the default.
pub async fn effective_quota(
    store: &dyn Store,
    tenant: &str,
    default: &TenantQuota,
) -> ApiResult<(TenantQuota, bool)> {
    Ok(match store.tenant_quota(tenant).await? {
        Some(q) => (q, false),
        None => (default.clone(), true),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sandpit_store::SandboxOptions;

    use super::*;

    fn record(id: &str, state: SandboxState, memory: u64, disk: Option<u64>) -> SandboxRecord {
        SandboxRecord {
            tenant: "t".into(),
            id: id.into(),
            internal_id: id.into(),
            options: SandboxOptions {
                image: "default".into(),
                sleep_after: sandpit_protocol::time::SleepAfter::from_secs(60),
                keep_alive: false,
                keep_alive_while_busy: true,
                ephemeral: false,
                isolation: Default::default(),
                env: BTreeMap::new(),
                limits: Limits {
                    memory_mb: Some(memory),
                    disk_mb: disk,
                    ..Limits::default()
                },
                labels: BTreeMap::new(),
                expires_at_ms: None,
            },
            state,
            created_at_ms: 0,
            last_active_at_ms: 0,
        }
    }

    fn claim(r: &SandboxRecord) -> Claim {
        Claim::of(&r.options.limits, 4096)
    }

    #[test]
    fn usage_counts_running_starting_and_all_disk() {
        let records = [
            record("a", SandboxState::Running, 100, Some(10)),
            record("b", SandboxState::Sleeping, 200, Some(20)),
            record("c", SandboxState::Creating, 300, None),
            record("d", SandboxState::Sleeping, 400, Some(40)),
        ];
        let starting = HashSet::from(["d".to_owned()]);
        let u = usage(&records, &starting, None, claim);
        assert_eq!(
            u,
            QuotaUsage {
                sandboxes: 4,
                running_sandboxes: 3,
                memory_mb: 800,
                disk_mb: 70,
            }
        );
        let u = usage(&records, &starting, Some("a"), claim);
        assert_eq!((u.sandboxes, u.running_sandboxes, u.memory_mb), (3, 2, 700));
    }

    #[test]
    fn each_quota_refuses_what_would_pass_it() {
        let used = QuotaUsage {
            sandboxes: 2,
            running_sandboxes: 1,
            memory_mb: 512,
            disk_mb: 100,
        };
        let small = Claim {
            memory_mb: 256,
            disk_mb: Some(50),
        };
        let q = |f: fn(&mut TenantQuota)| {
            let mut q = TenantQuota::default();
            f(&mut q);
            q
        };
        let allowed = |quota: TenantQuota, demand: Demand, claim: Claim| {
            check("t", &quota, &used, demand, claim).unwrap();
        };
        let refused = |quota: TenantQuota, demand: Demand, claim: Claim| {
            let e = check("t", &quota, &used, demand, claim).unwrap_err();
            assert_eq!(e.code(), ErrorCode::QuotaExceeded);
            e.0.context["field"].as_str().unwrap().to_owned()
        };
        assert_eq!(
            refused(q(|q| q.sandboxes = Some(2)), Demand::Create, small),
            "sandboxes"
        );
        allowed(q(|q| q.sandboxes = Some(3)), Demand::Create, small);
        // Waking or resizing does not add a sandbox.
        allowed(q(|q| q.sandboxes = Some(2)), Demand::Wake, small);
        assert_eq!(
            refused(q(|q| q.running_sandboxes = Some(1)), Demand::Wake, small),
            "runningSandboxes"
        );
        allowed(q(|q| q.running_sandboxes = Some(1)), Demand::Resize, small);
        assert_eq!(
            refused(q(|q| q.memory_mb = Some(767)), Demand::Create, small),
            "memoryMb"
        );
        allowed(q(|q| q.memory_mb = Some(768)), Demand::Wake, small);
        // A live memory increase is claimed at once, without counting a running sandbox more.
        assert_eq!(
            refused(q(|q| q.memory_mb = Some(767)), Demand::GrowRunning, small),
            "memoryMb"
        );
        allowed(
            q(|q| {
                q.memory_mb = Some(768);
                q.running_sandboxes = Some(1);
            }),
            Demand::GrowRunning,
            small,
        );
        allowed(q(|q| q.memory_mb = Some(1)), Demand::Resize, small);
        assert_eq!(
            refused(q(|q| q.disk_mb = Some(149)), Demand::Resize, small),
            "diskMb"
        );
        allowed(q(|q| q.disk_mb = Some(150)), Demand::Create, small);
        let no_disk = Claim {
            disk_mb: None,
            ..small
        };
        assert_eq!(
            refused(q(|q| q.disk_mb = Some(10_000)), Demand::Create, no_disk),
            "diskMb"
        );
        allowed(TenantQuota::default(), Demand::Create, no_disk);
    }

    #[test]
    fn starting_marks_last_as_long_as_their_guard() {
        let gate = Gate::default();
        let a = gate.mark_starting("t", "a");
        let _b = gate.mark_starting("u", "b");
        assert_eq!(gate.starting("t"), HashSet::from(["a".to_owned()]));
        drop(a);
        assert!(gate.starting("t").is_empty());
    }
}
