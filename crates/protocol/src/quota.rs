//! Operator-set bounds: the per-sandbox caps of the server and the per-tenant quotas
//! (`/v1/quota`, `/v1/tenants/{tenant}/quota`).

use serde::{Deserialize, Serialize};

/// Env var through which the server tells a sandbox's agent its cap on running background
/// processes (the server sets it last, over any value in the sandbox's own env).
pub const MAX_PROCESSES_ENV: &str = "SANDPIT_MAX_PROCESSES";

/// Cap on running background processes of an agent not told otherwise.
pub const DEFAULT_MAX_PROCESSES: u64 = 128;

/// The largest limits one sandbox may ask for on this server (set by the operator with
/// `sandpit serve --max-*`). A request above a cap is refused with `LIMIT_EXCEEDED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxCaps {
    /// Largest `limits.memoryMb`.
    pub memory_mb: u64,
    /// Largest `limits.cpus`.
    pub cpus: f64,
    /// Largest `limits.pids`.
    pub pids: u64,
    /// Largest `limits.diskMb`; absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Most ports one sandbox may expose at preview URLs.
    pub exposed_ports: u64,
    /// Most background processes (`/api/process/start`) running at once in one sandbox.
    pub processes: u64,
}

/// A tenant's quota. An absent field is not limited.
///
/// New kinds of usage (e.g. backups) join as further optional fields: a stored quota without
/// them keeps meaning "not limited" for the new kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantQuota {
    /// Sandboxes that exist (running or asleep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<u64>,
    /// Sandboxes running (or starting) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_sandboxes: Option<u64>,
    /// Sum of `limits.memoryMb` of the running sandboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Sum of `limits.diskMb` of all sandboxes (a sandbox must set `diskMb` when this is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
}

/// What a tenant uses now, in the units of [`TenantQuota`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    pub sandboxes: u64,
    pub running_sandboxes: u64,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// `GET /v1/quota`, `GET|PUT /v1/tenants/{tenant}/quota`: a tenant's quota, its usage and the
/// server's per-sandbox caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QuotaInfo {
    pub tenant: String,
    /// The quota in force (the tenant's own, else the server's default).
    pub quota: TenantQuota,
    /// True when the quota is the server's default (no quota was set for this tenant).
    pub is_default: bool,
    pub usage: QuotaUsage,
    pub caps: SandboxCaps,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quota_fields_are_camel_case_and_optional() {
        let q: TenantQuota =
            serde_json::from_value(json!({"sandboxes": 3, "runningSandboxes": 1})).unwrap();
        assert_eq!(q.sandboxes, Some(3));
        assert_eq!(q.running_sandboxes, Some(1));
        assert_eq!(q.memory_mb, None);
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            json!({"sandboxes": 3, "runningSandboxes": 1})
        );
        assert!(serde_json::from_value::<TenantQuota>(json!({"sandboxez": 3})).is_err());
    }
}
