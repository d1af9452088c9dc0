//! The control-plane API (`/v1/sandboxes`). Requests reject unknown fields so a misspelt option
//! is a clear 400, never silently ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::{SleepAfter, Ttl};

/// Default idle time before a sandbox sleeps (`sleepAfter`), in seconds.
pub const DEFAULT_SLEEP_AFTER_SECS: u64 = 600;

/// Name of the image sandboxes use when none is given.
pub const DEFAULT_IMAGE: &str = "default";

/// Serde default of options that are on unless turned off.
fn yes() -> bool {
    true
}

/// A sandbox id: 1–63 chars of `[a-z0-9-]` (upper case accepted and kept), no leading or
/// trailing `-`, not a reserved word. Same rule as the seed's `sanitizeSandboxId`, so ids can
/// be used as DNS labels in preview URLs.
pub fn validate_sandbox_id(id: &str) -> Result<(), String> {
    const RESERVED: [&str; 7] = [
        "www",
        "api",
        "admin",
        "root",
        "system",
        "cloudflare",
        "workers",
    ];
    if id.is_empty() || id.len() > 63 {
        return Err("sandbox id must be 1-63 characters".into());
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err("sandbox id must not start or end with '-'".into());
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err("sandbox id may contain only letters, digits and '-'".into());
    }
    if RESERVED.contains(&id.to_ascii_lowercase().as_str()) {
        return Err(format!("sandbox id {id:?} is reserved"));
    }
    Ok(())
}

/// Most labels one sandbox may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label key and value, in bytes.
pub const MAX_LABEL_KEY_LEN: usize = 63;
pub const MAX_LABEL_VALUE_LEN: usize = 128;

/// A label: the key is 1-63 characters of `[A-Za-z0-9._/-]` starting with a letter or digit;
/// the value 0-128 characters of `[A-Za-z0-9._/:@+-]`. Neither may hold `=` or `,`, so a
/// `label=k=v` filter is unambiguous; the limits keep what a tenant can store bounded.
pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    let key_ok = (1..=MAX_LABEL_KEY_LEN).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    if !key_ok {
        return Err(format!(
            "label key {key:?} must be 1-{MAX_LABEL_KEY_LEN} characters of A-Z, a-z, 0-9, '.', \
             '_', '/', '-', starting with a letter or digit"
        ));
    }
    let value_ok = value.len() <= MAX_LABEL_VALUE_LEN
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '@' | '+' | '-')
        });
    if !value_ok {
        return Err(format!(
            "label {key:?}: value must be at most {MAX_LABEL_VALUE_LEN} characters of A-Z, \
             a-z, 0-9, '.', '_', '/', ':', '@', '+', '-'"
        ));
    }
    Ok(())
}

/// A `k=v` label selector (`GET /v1/sandboxes?label=k=v`, `sandpit ls --label k=v`).
pub fn parse_label_selector(selector: &str) -> Result<(String, String), String> {
    let (key, value) = selector
        .split_once('=')
        .ok_or_else(|| format!("label selector {selector:?} must be key=value"))?;
    validate_label(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Resource limits of one sandbox. Every field is optional on input; the server fills defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// CPU quota in cores (e.g. 0.5, 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in MiB (no swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Maximum number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Disk limit of the sandbox's writable layer in MiB (enforced where the filesystem allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
}

/// How strongly a sandbox is isolated from the host: which driver runs it. Chosen at create,
/// kept for the sandbox's life.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Linux namespaces, seccomp and cgroups on the host kernel.
    #[default]
    Standard,
    /// gVisor (`runsc`): the sandbox's system calls go to a user-space kernel.
    Gvisor,
}

impl Isolation {
    pub const ALL: [Isolation; 2] = [Isolation::Standard, Isolation::Gvisor];

    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Standard => "standard",
            Isolation::Gvisor => "gvisor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Creating,
    Running,
    Sleeping,
    Destroyed,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Sleeping => "sleeping",
            SandboxState::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Creating,
            Self::Running,
            Self::Sleeping,
            Self::Destroyed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// Outbound network access of a sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only: every request through the egress proxy is refused.
    #[default]
    None,
    /// Only the hosts and CIDRs in `allow`, through sandpit's egress proxy.
    Allowlist,
    /// Direct user-mode networking; host loopback, link-local and metadata addresses stay
    /// blocked, private ranges open only for CIDRs the operator granted.
    Full,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Allowlist => "allowlist",
            NetworkMode::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::None, Self::Allowlist, Self::Full]
            .into_iter()
            .find(|mode| mode.as_str() == s)
    }
}

/// Network policy of a sandbox; changeable at runtime (`PATCH`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    #[serde(default)]
    pub mode: NetworkMode,
    /// Domain patterns with an optional port ("example.com", "*.example.com",
    /// "example.com:443") and CIDRs ("10.1.0.0/16", "203.0.113.7/32").
    #[serde(default)]
    pub allow: Vec<String>,
}

/// What the egress proxy did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EgressDecision {
    /// Relayed.
    Allowed,
    /// Refused by a rule (the program got 403 `EGRESS_DENIED`).
    Denied,
    /// Allowed, but the destination could not be reached (502).
    Failed,
}

/// One request or connection through a sandbox's egress proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EgressLogEntry {
    /// When it was decided (RFC 3339).
    pub time: String,
    pub host: String,
    pub port: u16,
    /// `http` (a plain request) or `connect` (a tunnel, HTTPS included).
    pub kind: String,
    pub decision: EgressDecision,
    /// The rule that refused (`allow-list`, `always-blocked`, `operator-block`,
    /// `operator-only`, `host-address`, `network-none`, `allow-list-address`,
    /// `allow-list-port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it was refused or failed, as the program inside was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes sent to the destination (so far, while open).
    pub bytes_up: u64,
    /// Bytes received from the destination.
    pub bytes_down: u64,
}

/// `GET /v1/sandboxes/{id}/egress-log`: the newest entries, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EgressLogPage {
    pub entries: Vec<EgressLogEntry>,
    /// Older entries dropped from the bounded log.
    pub dropped: u64,
}

/// A secret bound to destination hosts. Inside the sandbox the env var named after the secret
/// holds only a placeholder; the egress proxy replaces the placeholder by `value` in request
/// headers to `hosts` (and sets `header` to `value` when given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    pub value: String,
    /// Host names ("api.example.com", "*.example.com") the secret may be sent to.
    pub hosts: Vec<String>,
    /// A header set to the value on every request to `hosts` (e.g. "Authorization" with a value
    /// "Bearer ..."); absent: only placeholders are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// A secret as the control plane reports it: never its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub name: String,
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// `POST /v1/sandboxes`: create a sandbox, or return the existing one with this id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// The key of the sandbox; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Idle time before sleeping: seconds, or a string such as "30s", "5m", "1h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub sleep_after: Option<SleepAfter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<bool>,
    /// Whether running background processes keep the sandbox awake past `sleepAfter`
    /// (default true; `false`: it sleeps on idle even while they run, which ends them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_while_busy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// When true, the writable layer is discarded when the sandbox sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    /// Isolation tier (`standard` by default, `gvisor`); fixed for the sandbox's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// Outbound network policy; default `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPolicy>,
    /// Secrets by env var name (`[A-Za-z_][A-Za-z0-9_]*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, SecretSpec>>,
    /// Labels (at most 32; see `validate_label`), for `GET /v1/sandboxes?label=k=v`. On an
    /// existing sandbox they are merged as by PATCH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Time to live: the sandbox is destroyed this long after the request (seconds, or a string
    /// such as "30m", "2h"; `0`: no expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub ttl: Option<Ttl>,
    /// Start from this snapshot's file system (its id, `GET /v1/snapshots`) instead of a fresh
    /// image; `image` and `isolation`, if given, must be the snapshot's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// `PATCH /v1/sandboxes/{id}`: change options of an existing sandbox. On a running sandbox,
/// `limits.cpus`, `limits.memoryMb` and `limits.pids` apply at once (its cgroups change);
/// `limits.diskMb` and `env` apply at its next start (listed in the answer's `pendingRestart`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateSandboxRequest {
    /// Idle time before sleeping: seconds, or a string such as "30s", "5m", "1h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub sleep_after: Option<SleepAfter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<bool>,
    /// Whether running background processes keep the sandbox awake past `sleepAfter`
    /// (default true; `false`: it sleeps on idle even while they run, which ends them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_while_busy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Replaces the network policy; applies at once to a running sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPolicy>,
    /// Replaces the whole set of secrets; applies at once to the egress proxy. A secret that
    /// keeps its name keeps its placeholder; a new one's env var is exported to the default
    /// session and to sessions and processes started afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, SecretSpec>>,
    /// Merged into the labels: a string sets a label, `null` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Option<String>>>,
    /// A new time to live, counted from this request (`0`: no expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub ttl: Option<Ttl>,
}

/// A sandbox as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    pub id: String,
    pub image: String,
    pub state: SandboxState,
    /// `sleepAfter` in whole seconds.
    #[cfg_attr(feature = "openapi", schema(value_type = u64, minimum = 1))]
    pub sleep_after_secs: SleepAfter,
    /// Never sleeps on idle (only on `stop`).
    pub keep_alive: bool,
    /// While a background process runs (`/api/process/start`, `execute` with `background`),
    /// the sandbox counts as active and does not sleep on idle; it sleeps `sleepAfter` after
    /// the last one ends. Open requests, streams, terminals and preview traffic keep it awake
    /// whatever this says. Default true.
    #[serde(default = "yes")]
    pub keep_alive_while_busy: bool,
    pub ephemeral: bool,
    /// The isolation tier the sandbox runs under.
    #[serde(default)]
    pub isolation: Isolation,
    pub env: BTreeMap<String, String>,
    /// Effective limits (defaults filled in).
    pub limits: Limits,
    pub created_at: String,
    pub last_active_at: String,
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Secrets without their values.
    #[serde(default)]
    pub secrets: Vec<SecretInfo>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the sandbox will be destroyed (its `ttl` ran out); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Only in the answer to a change of a running sandbox: the changed options that take
    /// effect at its next start, not now (`limits.diskMb`, `env`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// Cluster mode only: the id of the node the sandbox is placed on (absent on a single box
    /// and before placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A node's state in `GET /v1/nodes`: `down` once it missed heartbeats for more than 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Ready,
    Down,
}

/// What a node reports about itself in its heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeCapacity {
    /// CPUs of the node's host.
    pub cpus: u32,
    /// Memory of the node's host, in MiB.
    pub memory_mb: u64,
    /// Most sandboxes the node runs at once (`sandpit node --max-sandboxes`).
    pub max_sandboxes: u64,
    /// Sandboxes running on the node now.
    pub running: u64,
    /// Images present in the node's image store.
    #[serde(default)]
    pub images: Vec<String>,
}

/// One node of a cluster (`GET /v1/nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: String,
    /// Where the control plane reaches the node API (mutually authenticated TLS).
    pub address: String,
    pub state: NodeState,
    pub capacity: NodeCapacity,
    /// Sandboxes placed on the node (running or asleep).
    pub sandboxes: u64,
    /// The last heartbeat the control plane received.
    pub last_heartbeat_at: String,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeList {
    pub nodes: Vec<NodeInfo>,
}

/// `GET /v1/sandboxes/{id}/usage`: what a sandbox uses now. A sandbox that is not running
/// reports zero CPU, memory and processes (its cgroups are gone while it sleeps), and its disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxUsage {
    pub state: SandboxState,
    /// CPU time used by the current run, in microseconds.
    pub cpu_usec: u64,
    /// Memory charged to the sandbox now (page cache included), in bytes.
    pub memory_bytes: u64,
    /// The most memory charged during the current run, in bytes.
    pub memory_peak_bytes: u64,
    /// Processes and threads now.
    pub pids: u64,
    /// Bytes of the sandbox's writable layer (its files), kept across sleep.
    pub disk_bytes: u64,
    /// False when the writable layer had too many files (or levels) to count them all:
    /// `diskBytes` is then a lower bound.
    pub disk_complete: bool,
    /// Bytes sent through the sandbox's egress proxy since the server started (`allowlist`
    /// mode; direct `full`-mode traffic is not counted).
    pub network_bytes_up: u64,
    /// Bytes received through the egress proxy since the server started.
    pub network_bytes_down: u64,
}

/// `GET /v1/sandboxes?limit=&cursor=&label=k=v`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxInfo>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /readyz`: whether a control-plane replica can serve requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// True when every check passed (status 200); false with status 503.
    pub ready: bool,
    /// The names of the checks that failed (empty when ready).
    pub not_ready: Vec<String>,
    /// Each check by name (`store`): `ok`, or why it is not ready.
    pub checks: BTreeMap<String, String>,
}

/// Most children one fork makes.
pub const MAX_FORK_COUNT: u32 = 32;
/// Longest snapshot name, in bytes.
pub const MAX_SNAPSHOT_NAME: usize = 128;

/// `POST /v1/sandboxes/{id}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// A name to recognise it by (1-128 bytes, no control characters; not unique).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An immutable snapshot of a sandbox's file system (image + writable layer). Processes and
/// memory are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sandbox it was taken of (which may be gone since).
    pub sandbox_id: String,
    /// The image under it: sandboxes created from it run that image.
    pub image: String,
    /// Bytes of writable-layer data it holds above the image (layers it shares with its
    /// sandbox and other snapshots included).
    pub size_bytes: u64,
    pub created_at: String,
}

/// `GET /v1/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotInfo>,
}

/// `POST /v1/sandboxes/{id}/fork`: snapshot the sandbox and create `count` sandboxes from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForkRequest {
    /// How many children (1-32; default 1, or the number of `ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Ids for the children (generated when absent); none may exist yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// Where exports of snapshots are kept in the server's object store (keys start with it).
pub const SNAPSHOT_EXPORT_PREFIX: &str = "snapshot-exports/";

/// The answer of `POST /v1/snapshots/{id}/export`: the snapshot's archive in the server's
/// object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SnapshotExport {
    /// The object's key (`snapshot-exports/<tenant>/<snapshot>-<random>.tar.zst`); pass it to
    /// `POST /v1/snapshots/import` on this or another server using the same store.
    pub object_key: String,
    /// Bytes of the stored (zstd-compressed) archive.
    pub size_bytes: u64,
    /// Bytes of the uncompressed archive.
    pub raw_bytes: u64,
    /// Hex SHA-256 of the stored archive.
    pub sha256: String,
    /// The snapshot exported.
    pub snapshot_id: String,
}

/// `POST /v1/snapshots/import`: a snapshot from an export of the caller's tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportSnapshotRequest {
    /// The export's `objectKey`.
    pub object_key: String,
    /// If given, must equal the export's SHA-256 (checked before anything is read, and the
    /// archive is checked against it while it is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A name for the new snapshot (default: the exported snapshot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The answer to a fork: the snapshot it took and the children, running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ForkResponse {
    pub snapshot: SnapshotInfo,
    pub sandboxes: Vec<SandboxInfo>,
}

/// `POST /v1/sandboxes/{id}/ws-ticket`: a single-use credential for one WebSocket upgrade of
/// that sandbox (`?ticket=`), for clients that cannot send an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WsTicket {
    pub ticket: String,
    /// After this instant the ticket is refused.
    pub expires_at: String,
}

/// What happened to a sandbox, in a [`SandboxEvent`] of `GET /v1/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SandboxEventKind {
    /// The record exists (state `creating`); `started` follows, or `destroyed` if the first
    /// start failed.
    Created,
    /// The sandbox runs (state `running`).
    Started,
    /// The sandbox went to sleep (state `sleeping`): idle, `stop`, or its agent died.
    Stopped,
    /// Its options (labels, limits, env, keepAlive, network…) changed.
    Updated,
    /// It is gone (state `destroyed`): `DELETE`, an expired `ttl`, or a failed first start.
    Destroyed,
}

/// SSE event name of [`SandboxEvent`]s on `GET /v1/events`.
pub const EVENT_SANDBOX: &str = "sandbox";
/// SSE event name of the first event of `GET /v1/events`: the stream is subscribed, changes
/// from here on will arrive (its data is `{}`).
pub const EVENT_READY: &str = "ready";
/// SSE event name sent when a slow reader missed events (data [`EventsLagged`]): list the
/// sandboxes again to catch up.
pub const EVENT_LAGGED: &str = "lagged";

/// One change of one of the tenant's sandboxes (`GET /v1/events`, SSE `event: sandbox`, the SSE
/// `id` is `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxEvent {
    /// Increases with every event this server run sends (over all tenants, so a tenant's
    /// stream may skip numbers).
    pub seq: u64,
    pub sandbox_id: String,
    pub kind: SandboxEventKind,
    /// The state after the change.
    pub state: SandboxState,
    /// When it happened (RFC 3339, UTC).
    pub at: String,
}

/// Data of an SSE `event: lagged` on `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventsLagged {
    /// How many events (of all tenants) this stream missed.
    pub missed: u64,
}

/// `POST /v1/sandboxes/{id}/ports`: make a port inside the sandbox reachable at a preview URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExposePortRequest {
    /// 1024-65535.
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `[a-z0-9_]{1,16}`; a random one when absent (so exposing again rotates the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// One exposed port and its preview URL
/// (`{scheme}://{port}-{label}-{token}.{domain}:{port}/`, the label being the sandbox's internal id:
/// `{id lowercased}-{12 hex}`, unique across tenants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExposedPort {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub token: String,
    pub url: String,
    /// True when the URL answers 410 `STALE_PREVIEW_URL`: the sandbox slept, restarted or was
    /// recreated since the port was exposed, so whatever listened on it is gone. Start the
    /// server again and expose the port again (same `token` to keep the URL).
    #[serde(default)]
    pub stale: bool,
}

/// `GET /v1/sandboxes/{id}/ports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExposedPortList {
    pub ports: Vec<ExposedPort>,
}

/// `POST /v1/keys`: the admin creates an API key for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Tenant the key belongs to (created if new): 1–32 chars of `[a-z0-9-]`, no `-` at
    /// either end.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
    )]
    pub tenant: String,
}

/// A new API key (create or rotate). The key is shown once; the server keeps only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyResponse {
    pub tenant: String,
    pub key: String,
    /// Public id of the key: what listing, revoking and the audit log name it by.
    #[serde(default)]
    pub key_id: String,
}

/// An API key as listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    /// The first 16 hex digits of the key's SHA-256.
    pub key_id: String,
    pub tenant: String,
    pub created_at: String,
    /// Precise to a minute; absent when never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyList {
    pub keys: Vec<ApiKeyInfo>,
}

/// One control-plane action of a tenant's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Increasing; pass the last one as `before` for the next (older) page.
    pub seq: i64,
    pub tenant: String,
    pub at: String,
    /// Key id of the caller (`admin` for the admin key).
    pub actor: String,
    /// `sandbox.create`, `sandbox.update`, `sandbox.stop`, `sandbox.destroy`, `sandbox.expire`
    /// (actor `ttl`), `sandbox.env`,
    /// `port.expose`, `port.unexpose`, `key.create`, `key.revoke`, `key.rotate`.
    pub action: String,
    /// Sandbox id, `sandbox:port` or key id.
    pub target: String,
    /// `ok`, or the error code answered.
    pub result: String,
    /// What changed: field and secret names, never values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /v1/audit`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// `before` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// A preview token: `[a-z0-9_]{1,16}` (the seed's rule).
pub fn validate_preview_token(token: &str) -> Result<(), String> {
    let ok = (1..=16).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("token must be 1-16 characters of a-z, 0-9 and '_'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_follow_the_seed_rule() {
        assert!(validate_sandbox_id("user-123").is_ok());
        assert!(validate_sandbox_id("").is_err());
        assert!(validate_sandbox_id("-a").is_err());
        assert!(validate_sandbox_id("a_b").is_err());
        assert!(validate_sandbox_id("a/../b").is_err());
        assert!(validate_sandbox_id("admin").is_err());
        assert!(validate_sandbox_id(&"a".repeat(64)).is_err());
    }

    #[test]
    fn labels_are_bounded_and_selectors_parse() {
        assert!(validate_label("team", "ml-infra").is_ok());
        assert!(validate_label("app.kubernetes.io/name", "").is_ok());
        assert!(validate_label("", "x").is_err());
        assert!(validate_label("-x", "x").is_err());
        assert!(validate_label("a=b", "x").is_err());
        assert!(validate_label("a", "x,y").is_err());
        assert!(validate_label("a", "has space").is_err());
        assert!(validate_label(&"k".repeat(64), "x").is_err());
        assert!(validate_label("k", &"v".repeat(129)).is_err());
        assert_eq!(
            parse_label_selector("env=prod"),
            Ok(("env".to_owned(), "prod".to_owned()))
        );
        assert!(parse_label_selector("env").is_err());
        assert!(parse_label_selector("env=a=b").is_err());
    }

    #[test]
    fn unknown_options_are_rejected() {
        let err =
            serde_json::from_value::<CreateSandboxRequest>(json!({"id": "a", "sleepAfterr": 3}));
        assert!(err.is_err());
        let err = serde_json::from_value::<CreateSandboxRequest>(json!({"limits": {"memory": 3}}));
        assert!(err.is_err());
        let ok: CreateSandboxRequest = serde_json::from_value(
            json!({"id": "a", "sleepAfter": "30s", "limits": {"memoryMb": 256}}),
        )
        .unwrap();
        assert_eq!(ok.limits.unwrap().memory_mb, Some(256));
    }
}

/// Keys of an S3-compatible bucket. They reach only the host's FUSE process, never the sandbox,
/// and are never answered back.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for MountCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MountCredentials(..)")
    }
}

/// `POST /v1/sandboxes/{id}/mounts`: show an S3 bucket as a directory inside the sandbox (the
/// seed's `mountBucket(bucket, mountPath, {endpoint, credentials, prefix, readOnly})`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountBucketRequest {
    /// 3-63 characters of `[a-z0-9.-]` (S3 bucket naming).
    pub bucket: String,
    /// Absolute directory inside the sandbox (created if missing); not `/`, nor under `/proc`,
    /// `/sys`, `/dev` or `/run/sandpit`.
    pub mount_path: String,
    /// `http(s)://host[:port]` of the S3 API; must be allowed by the server's mount policy.
    pub endpoint: String,
    /// Required (`MISSING_CREDENTIALS` without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<MountCredentials>,
    /// `/dir/`: only objects under it are visible, relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Writes fail with EROFS.
    #[serde(default)]
    pub read_only: bool,
    /// SigV4 signing region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The seed's `r2` / `s3` / `gcs`; accepted for compatibility, all are spoken as S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// A bucket mount of a sandbox as listed (never its credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BucketMountInfo {
    pub bucket: String,
    pub mount_path: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// True while the sandbox runs with the mount up; a sleeping sandbox's mounts come back
    /// when it wakes (false then, or when re-mounting at wake failed).
    pub mounted: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// `GET /v1/sandboxes/{id}/mounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BucketMountList {
    pub mounts: Vec<BucketMountInfo>,
}
