//! The egress proxy: each running sandbox gets an HTTP proxy serving the connections its
//! driver's egress bridge hands over (the agent inside bridges `127.0.0.1:3128` to
//! `/run/sandpit/egress.sock`), deciding by the sandbox's network policy under
//! the operator's address blocks, and injecting the sandbox's secrets into requests to the
//! hosts they are bound to (HTTPS through TLS interception with a per-sandbox CA that only that
//! sandbox trusts). Every decision goes to the sandbox's bounded egress log.
//!
//! * [`blocks`]: the operator's address blocks above every policy;
//! * [`decision`]: typed denials and the answers programs inside get;
//! * [`log`]: the per-sandbox egress log and byte counting;
//! * `policy`: a sandbox's compiled allow-list and secrets; `proxy`: the HTTP proxy;
//!   [`state`]: the stored egress state; `tls`: interception.

pub mod blocks;
pub mod decision;
pub mod log;
mod policy;
mod proxy;
pub mod state;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use ipnet::IpNet;
use rustls::ClientConfig;
use sandpit_protocol::control::{EgressLogPage, NetworkPolicy, SecretInfo, SecretSpec};
use sandpit_protocol::throttle::Throttle;
use sandpit_store::{SandboxNetwork, StoredSecret};
use tokio_util::sync::CancellationToken;

pub use blocks::AddressBlocks;
pub use policy::{DomainPattern, Rules, parse_cidr, validate_policy};
pub use proxy::ClientIo;
pub use tls::{HOST_CA_BUNDLE, TlsError, generate_ca};

use log::EgressLog;
use proxy::SandboxProxy;
use tls::SandboxCa;

/// The sandbox CA's certificate in the run dir.
pub const CA_NAME: &str = "ca.crt";
/// The image's CA bundle plus the sandbox CA, in the run dir.
pub const BUNDLE_NAME: &str = "ca-bundle.crt";
/// Where images keep their CA bundle (Debian layout).
const IMAGE_CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

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
            private: Vec::new(),
            unblocked: Vec::new(),
            grants: BTreeMap::new(),
            extra_roots: Vec::new(),
            max_connections_per_sandbox: DEFAULT_MAX_CONNECTIONS_PER_SANDBOX,
            max_connections_per_tenant: DEFAULT_MAX_CONNECTIONS_PER_TENANT,
        }
    }
}

/// Errors of attaching a sandbox's proxy.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
            .map(|(name, ip)| (policy::normalize_host(name), *ip))
            .collect();
        let host = sandpit_runtime::network::host_addresses()
            .into_iter()
            .map(IpAddr::V4)
            .collect();
        Ok(Egress {
            shared: Arc::new(Shared {
                resolve,
                blocks: AddressBlocks::new(
                    config.blocked.clone(),
                    host,
                    config.private.clone(),
                    config.unblocked.clone(),
                ),
                upstream_tls: tls::upstream_config(&config.extra_roots)?,
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
    /// the image's bundle at `image_rootfs` plus the sandbox CA) with the proxy's handle.
    pub fn attach(
        &self,
        tenant: &str,
        internal: &str,
        image_rootfs: &Path,
        network: &SandboxNetwork,
    ) -> Result<Attached, EgressError> {
        self.detach(internal);
        let rules = self.compile(tenant, network)?;
        let ca = match &network.ca {
            Some((cert, key)) => Some(Arc::new(SandboxCa::load(internal, cert, key)?)),
            None => None,
        };
        let mut files = Vec::new();
        if let Some(ca) = &ca {
            files.push((CA_NAME, ca.cert_pem.as_bytes().to_vec()));
            let mut bundle = std::fs::read(image_rootfs.join(IMAGE_CA_BUNDLE)).unwrap_or_default();
            if !bundle.is_empty() && !bundle.ends_with(b"\n") {
                bundle.push(b'\n');
            }
            bundle.extend_from_slice(ca.cert_pem.as_bytes());
            files.push((BUNDLE_NAME, bundle));
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
    pub fn update(
        &self,
        tenant: &str,
        internal: &str,
        network: &SandboxNetwork,
    ) -> Result<(), EgressError> {
        let rules = self.compile(tenant, network)?;
        if let Some(proxy) = self.lock().get(internal) {
            *proxy.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
        }
        Ok(())
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

/// The CIDRs that may open private ranges for a sandbox: its policy's CIDRs when the operator
/// set it (admin key), and the operator's grants to its tenant.
fn granted(
    grants: &BTreeMap<String, Vec<IpNet>>,
    tenant: &str,
    network: &SandboxNetwork,
) -> Vec<IpNet> {
    let own = network
        .policy
        .allow
        .iter()
        .filter(|_| network.operator_policy)
        .filter_map(|entry| parse_cidr(entry));
    own.chain(grants.get(tenant).into_iter().flatten().copied())
        .collect()
}

impl Egress {
    fn compile(&self, tenant: &str, network: &SandboxNetwork) -> Result<Rules, EgressError> {
        let granted = granted(&self.grants, tenant, network);
        Rules::compile(&network.policy, &network.secrets, granted).map_err(EgressError::Invalid)
    }

    /// The policy the driver enforces in `full` mode: its allow set opens only the private
    /// ranges the operator granted (a tenant's CIDRs grant nothing: public addresses are open
    /// in `full` mode anyway, and always-blocked ranges are refused before the allow set).
    pub fn driver_policy(&self, tenant: &str, network: &SandboxNetwork) -> NetworkPolicy {
        NetworkPolicy {
            mode: network.policy.mode,
            allow: granted(&self.grants, tenant, network)
                .iter()
                .map(IpNet::to_string)
                .collect(),
        }
    }
}

/// The new secret set of a sandbox from an API request: validated; a secret that keeps its
/// name keeps its placeholder (running processes already hold it).
pub fn merge_secrets(
    old: &[StoredSecret],
    specs: &BTreeMap<String, SecretSpec>,
) -> Result<Vec<StoredSecret>, String> {
    specs
        .iter()
        .map(|(name, spec)| {
            let placeholder = old
                .iter()
                .find(|s| &s.name == name)
                .map(|s| s.placeholder.clone())
                .unwrap_or_else(|| {
                    format!(
                        "sandpit-secret-{name}-{}",
                        hex::encode(rand::random::<[u8; 12]>())
                    )
                });
            let secret = StoredSecret {
                name: name.clone(),
                value: spec.value.clone(),
                hosts: spec.hosts.clone(),
                header: spec.header.clone(),
                placeholder,
            };
            policy::compile_secret(&secret)?;
            Ok(secret)
        })
        .collect()
}

/// Checks a policy from an API request.
pub fn check_policy(policy: &NetworkPolicy) -> Result<(), String> {
    validate_policy(policy).map(|_| ())
}

/// Secrets as the API shows them: never the value.
pub fn secret_infos(secrets: &[StoredSecret]) -> Vec<SecretInfo> {
    secrets
        .iter()
        .map(|s| SecretInfo {
            name: s.name.clone(),
            hosts: s.hosts.clone(),
            header: s.header.clone(),
        })
        .collect()
}

/// `NAME=placeholder` for the sandbox's env.
pub fn secret_env(secrets: &[StoredSecret]) -> impl Iterator<Item = (String, String)> + '_ {
    secrets
        .iter()
        .map(|s| (s.name.clone(), s.placeholder.clone()))
}
