//! The egress proxy of sandpit: each running sandbox gets an HTTP proxy serving the connections
//! its driver's egress bridge hands over (the agent inside bridges `127.0.0.1:3128` to
//! `/run/sandpit/egress.sock`), deciding by the sandbox's network policy under the operator's
//! address blocks, and injecting the sandbox's secrets into requests to the
//! hosts they are bound to (HTTPS through TLS interception with a per-sandbox CA that only that
//! sandbox trusts). Every decision goes to the sandbox's bounded egress log.
//!
//! * [`blocks`]: the operator's address blocks above every policy;
//! * [`decision`]: typed denials and the answers programs inside get;
//! * [`log`]: the per-sandbox egress log and byte counting;
//! * `policy`: a sandbox's rules (its typed policy, grants and secrets); `proxy`: the HTTP
//!   proxy; `tls`: interception.
//!
//! The crate knows nothing of the store, the driver or the agent: the control plane hands it
//! typed values ([`EgressPolicy`], [`Secret`]) and byte streams from the sandbox; it gets back the
//! files the sandbox must see (its CA) and binds no socket.

pub mod blocks;
pub mod decision;
pub mod log;
mod policy;
mod proxy;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use ipnet::IpNet;
use rustls::ClientConfig;
use sandpit_protocol::control::EgressLogPage;
use sandpit_protocol::netpolicy::{AllowEntry, EgressPolicy, normalize_host};
use sandpit_protocol::throttle::Throttle;
use tokio_util::sync::CancellationToken;

pub use blocks::AddressBlocks;
pub use policy::{Rules, Secret, SecretError};
pub use proxy::ClientIo;
pub use tls::{HOST_CA_BUNDLE, TlsError, ca_params, generate_ca};

use log::EgressLog;
use proxy::SandboxProxy;
use tls::SandboxCa;

/// The sandbox CA's certificate in the run dir.
pub const CA_NAME: &str = "ca.crt";
/// The image's CA bundle plus the sandbox CA, in the run dir.
pub const BUNDLE_NAME: &str = "ca-bundle.crt";
/// Where images keep their CA bundle (Debian layout).
const IMAGE_CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// The contents of [`BUNDLE_NAME`]: the CA bundle of the image at `image_rootfs` (none when it
/// has no bundle) followed by `ca_pem`. (Cluster nodes build it from their own copy of the
/// image, so the control plane sends only the sandbox CA.)
pub fn ca_bundle(image_rootfs: &Path, ca_pem: &[u8]) -> Vec<u8> {
    let mut bundle = std::fs::read(image_rootfs.join(IMAGE_CA_BUNDLE)).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(ca_pem);
    bundle
}

/// A started proxy: what the sandbox must see in `/run/sandpit` (name, contents) and the
/// handle its bridge's connections go to.
pub struct Attached {
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub proxy: ProxyHandle,
}

/// Serves connections from one sandbox's egress bridge.
#[derive(Clone)]
pub struct ProxyHandle(Arc<SandboxProxy>);

impl ProxyHandle {
    /// Serves `stream` (one connection the sandbox opened) on its own task; after the proxy
    /// was detached it is closed at once.
    pub fn accept(&self, stream: impl ClientIo) {
        self.0.accept(Box::new(stream));
    }
}

/// Operator settings of the egress proxy.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Names resolved without DNS (tests: "api.example.test" → 127.0.0.1).
    pub resolve: BTreeMap<String, IpAddr>,
    /// The operator's blocks (`--egress-block`): never connected to, whatever a policy says.
    pub blocked: Vec<IpNet>,
    /// This host's interface addresses (services bound to `0.0.0.0` listen on them).
    pub host: Vec<IpAddr>,
    /// Ranges the operator declares private (grant-only) besides the built-in ones.
    pub private: Vec<IpNet>,
    /// Ranges taken out of the built-in reserved classes (tests reach loopback servers so).
    pub unblocked: Vec<IpNet>,
    /// Private ranges the operator grants to every sandbox of a tenant, by tenant.
    pub grants: BTreeMap<String, Vec<IpNet>>,
    /// PEM files trusted for upstream TLS besides the host's CA bundle.
    pub extra_roots: Vec<PathBuf>,
    /// Most connections one sandbox keeps open through its proxy (each holds host fds).
    pub max_connections_per_sandbox: usize,
    /// Most connections all sandboxes of one tenant keep open together.
    pub max_connections_per_tenant: usize,
}

/// Default of [`EgressConfig::max_connections_per_sandbox`].
pub const DEFAULT_MAX_CONNECTIONS_PER_SANDBOX: usize = 256;
/// Default of [`EgressConfig::max_connections_per_tenant`]: with up to two fds per connection
/// (sandbox side, upstream) a tenant pins at most ~2048 of the server's descriptors.
pub const DEFAULT_MAX_CONNECTIONS_PER_TENANT: usize = 1024;

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            resolve: BTreeMap::new(),
            blocked: Vec::new(),
            host: Vec::new(),
            private: Vec::new(),
            unblocked: Vec::new(),
            grants: BTreeMap::new(),
            extra_roots: Vec::new(),
            max_connections_per_sandbox: DEFAULT_MAX_CONNECTIONS_PER_SANDBOX,
            max_connections_per_tenant: DEFAULT_MAX_CONNECTIONS_PER_TENANT,
        }
    }
}

/// Errors of setting up the proxies ([`Egress::new`]) or attaching one ([`Egress::attach`]).
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("the sandbox's interception CA")]
    Ca(#[source] TlsError),
    /// The client config for upstream TLS; a bad root file is named by the inner error.
    #[error(transparent)]
    UpstreamTls(TlsError),
}

/// What every sandbox's proxy shares.
pub(crate) struct Shared {
    pub resolve: HashMap<String, IpAddr>,
    pub blocks: AddressBlocks,
    pub upstream_tls: Arc<ClientConfig>,
}

/// The proxies of the running sandboxes and the egress logs of all, by internal id.
pub struct Egress {
    shared: Arc<Shared>,
    /// The operator's per-tenant grants of private ranges.
    grants: BTreeMap<String, Vec<IpNet>>,
    proxies: Mutex<HashMap<String, Arc<SandboxProxy>>>,
    /// Kept while a sandbox sleeps; dropped when it is destroyed ([`Egress::forget`]).
    logs: Mutex<HashMap<String, Arc<EgressLog>>>,
    max_per_sandbox: usize,
    max_per_tenant: usize,
    /// Open-connection slots of each tenant, shared by its sandboxes' proxies (kept for the
    /// server's life: one small entry per tenant that ever ran a sandbox).
    tenant_slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Egress {
    pub fn new(config: &EgressConfig) -> Result<Self, EgressError> {
        let resolve = config
            .resolve
            .iter()
            .map(|(name, ip)| (normalize_host(name), *ip))
            .collect();
        Ok(Egress {
            shared: Arc::new(Shared {
                resolve,
                blocks: AddressBlocks::new(
                    config.blocked.clone(),
                    config.host.clone(),
                    config.private.clone(),
                    config.unblocked.clone(),
                ),
                upstream_tls: tls::upstream_config(&config.extra_roots)
                    .map_err(EgressError::UpstreamTls)?,
            }),
            grants: config.grants.clone(),
            proxies: Mutex::default(),
            logs: Mutex::default(),
            max_per_sandbox: config.max_connections_per_sandbox,
            max_per_tenant: config.max_connections_per_tenant,
            tenant_slots: Mutex::default(),
        })
    }

    fn tenant_slots(&self, tenant: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.tenant_slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.max_per_tenant)))
            .clone()
    }

    /// Starts the proxy of sandbox `internal` of `tenant` (replacing one left from an earlier
    /// run) and returns the files the sandbox needs to trust it (`ca.crt`, and `ca-bundle.crt`:
    /// the image's bundle at `image_rootfs` plus the sandbox CA) with the proxy's handle, to
    /// which the driver hands the connections of the sandbox's egress bridge. `ca`: the
    /// sandbox's interception CA as `(certificate, key)` PEM (none: no interception).
    pub fn attach(
        &self,
        tenant: &str,
        internal: &str,
        image_rootfs: &Path,
        sandbox: &SandboxPolicy,
        ca: Option<(&str, &str)>,
    ) -> Result<Attached, EgressError> {
        self.detach(internal);
        let rules = self.rules(tenant, sandbox);
        let ca = ca
            .map(|(cert, key)| SandboxCa::load(internal, cert, key).map(Arc::new))
            .transpose()
            .map_err(EgressError::Ca)?;
        let mut files = Vec::new();
        if let Some(ca) = &ca {
            files.push((CA_NAME, ca.cert_pem.as_bytes().to_vec()));
            files.push((BUNDLE_NAME, ca_bundle(image_rootfs, ca.cert_pem.as_bytes())));
        }
        let proxy = Arc::new(SandboxProxy {
            sandbox: internal.to_owned(),
            shared: self.shared.clone(),
            rules: RwLock::new(Arc::new(rules)),
            ca,
            log: self.log_of(internal),
            cancel: CancellationToken::new(),
            connections: Arc::new(tokio::sync::Semaphore::new(self.max_per_sandbox)),
            tenant_connections: self.tenant_slots(tenant),
            log_throttle: Throttle::default(),
        });
        self.lock().insert(internal.to_owned(), proxy.clone());
        Ok(Attached {
            files,
            proxy: ProxyHandle(proxy),
        })
    }

    /// Stops the proxy of a sandbox and ends its connections.
    pub fn detach(&self, internal: &str) {
        if let Some(proxy) = self.lock().remove(internal) {
            proxy.cancel.cancel();
            proxy.report_suppressed();
        }
    }

    /// Applies a changed policy or secrets to a running sandbox's proxy (no-op when none runs).
    pub fn update(&self, tenant: &str, internal: &str, sandbox: &SandboxPolicy) {
        let rules = self.rules(tenant, sandbox);
        if let Some(proxy) = self.lock().get(internal) {
            *proxy.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
        }
    }

    /// The egress log of a sandbox (empty when it never used its proxy).
    pub fn log_page(&self, internal: &str) -> EgressLogPage {
        self.logs()
            .get(internal)
            .map(|log| log.page())
            .unwrap_or_default()
    }

    /// `(up, down)` bytes through a sandbox's proxy since the server started (zeros when it
    /// never used it).
    pub fn byte_totals(&self, internal: &str) -> (u64, u64) {
        self.logs()
            .get(internal)
            .map(|log| log.totals())
            .unwrap_or_default()
    }

    /// Drops the egress log of a destroyed sandbox.
    pub fn forget(&self, internal: &str) {
        self.logs().remove(internal);
    }

    fn log_of(&self, internal: &str) -> Arc<EgressLog> {
        self.logs().entry(internal.to_owned()).or_default().clone()
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<EgressLog>>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SandboxProxy>>> {
        self.proxies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the control plane hands the proxy of one sandbox: typed, validated when the request
/// that set them arrived.
#[derive(Debug, Clone, Default)]
pub struct SandboxPolicy {
    pub policy: EgressPolicy,
    /// The policy was set with the admin key: its CIDRs are operator grants and may open
    /// private ranges (never always-blocked ones).
    pub operator_policy: bool,
    pub secrets: Vec<Secret>,
}

impl Egress {
    /// The CIDRs that may open private ranges for a sandbox: its policy's CIDRs when the
    /// operator set it (admin key), and the operator's grants to its tenant.
    fn granted(&self, tenant: &str, sandbox: &SandboxPolicy) -> Vec<IpNet> {
        let own = sandbox.policy.cidrs().filter(|_| sandbox.operator_policy);
        own.chain(self.grants.get(tenant).into_iter().flatten().copied())
            .collect()
    }

    fn rules(&self, tenant: &str, sandbox: &SandboxPolicy) -> Rules {
        Rules {
            policy: sandbox.policy.clone(),
            granted: self.granted(tenant, sandbox),
            secrets: sandbox.secrets.clone(),
        }
    }

    /// The policy the driver enforces in `full` mode: its allow set opens only the private
    /// ranges the operator granted (a tenant's CIDRs grant nothing: public addresses are open
    /// in `full` mode anyway, and always-blocked ranges are refused before the allow set).
    pub fn driver_policy(&self, tenant: &str, sandbox: &SandboxPolicy) -> EgressPolicy {
        let allow = self
            .granted(tenant, sandbox)
            .into_iter()
            .map(AllowEntry::from);
        EgressPolicy::new(sandbox.policy.mode, allow.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_what_failed_and_keep_the_cause_as_source() {
        let egress = Egress::new(&EgressConfig::default()).unwrap();
        let Err(e) = egress.attach(
            "t",
            "sb",
            Path::new("/nonexistent"),
            &SandboxPolicy::default(),
            Some(("junk", "junk")),
        ) else {
            panic!("a junk CA was accepted");
        };
        assert_eq!(e.to_string(), "the sandbox's interception CA");
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(!e.to_string().contains(&source), "{e}: {source}");
    }
}
