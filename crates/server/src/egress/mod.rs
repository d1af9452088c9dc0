//! The egress proxy: each running sandbox gets an HTTP proxy on `<run dir>/egress.sock` (the
//! agent inside bridges `127.0.0.1:3128` to it), deciding by the sandbox's network policy,
//! blocking loopback/private/metadata addresses at connect time, and injecting the sandbox's
//! secrets into requests to the hosts they are bound to (HTTPS through TLS interception with a
//! per-sandbox CA that only that sandbox trusts).

mod policy;
mod proxy;
pub mod state;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use ipnet::IpNet;
use rustls::ClientConfig;
use sandpit_protocol::control::{NetworkPolicy, SecretInfo, SecretSpec};
use sandpit_store::{SandboxNetwork, StoredSecret};
use tokio_util::sync::CancellationToken;

pub use policy::{DomainPattern, Rules, default_blocked, parse_cidr, validate_policy};
pub use tls::{HOST_CA_BUNDLE, TlsError, generate_ca};

use proxy::SandboxProxy;
use tls::SandboxCa;

/// The socket's name in the run dir.
pub const SOCKET_NAME: &str = "egress.sock";
/// The sandbox CA's certificate in the run dir.
pub const CA_NAME: &str = "ca.crt";
/// The image's CA bundle plus the sandbox CA, in the run dir.
pub const BUNDLE_NAME: &str = "ca-bundle.crt";
/// Where images keep their CA bundle (Debian layout).
const IMAGE_CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// Operator settings of the egress proxy.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Names resolved without DNS (tests: "api.example.test" → 127.0.0.1).
    pub resolve: BTreeMap<String, IpAddr>,
    /// Addresses never connected to unless a sandbox's policy allows their CIDR.
    pub blocked: Vec<IpNet>,
    /// PEM files trusted for upstream TLS besides the host's CA bundle.
    pub extra_roots: Vec<PathBuf>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            resolve: BTreeMap::new(),
            blocked: default_blocked(),
            extra_roots: Vec::new(),
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
    pub blocked: Vec<IpNet>,
    pub upstream_tls: Arc<ClientConfig>,
}

/// The proxies of the running sandboxes, by internal id.
pub struct Egress {
    shared: Arc<Shared>,
    proxies: Mutex<HashMap<String, Arc<SandboxProxy>>>,
}

impl Egress {
    pub fn new(config: &EgressConfig) -> Result<Self, EgressError> {
        let resolve = config
            .resolve
            .iter()
            .map(|(name, ip)| (policy::normalize_host(name), *ip))
            .collect();
        Ok(Egress {
            shared: Arc::new(Shared {
                resolve,
                blocked: config.blocked.clone(),
                upstream_tls: tls::upstream_config(&config.extra_roots)?,
            }),
            proxies: Mutex::default(),
        })
    }

    /// Starts the proxy of sandbox `internal`: `egress.sock` (0666), `ca.crt` and
    /// `ca-bundle.crt` in `run_dir`. Replaces a proxy left from an earlier run.
    pub fn attach(
        &self,
        internal: &str,
        run_dir: &Path,
        image_rootfs: &Path,
        network: &SandboxNetwork,
    ) -> Result<(), EgressError> {
        self.detach(internal);
        let rules =
            Rules::compile(&network.policy, &network.secrets).map_err(EgressError::Invalid)?;
        let ca = match &network.ca {
            Some((cert, key)) => Some(Arc::new(SandboxCa::load(internal, cert, key)?)),
            None => None,
        };
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| EgressError::Io { what, path, source }
        };
        std::fs::create_dir_all(run_dir).map_err(io("creating", run_dir))?;
        if let Some(ca) = &ca {
            let ca_file = run_dir.join(CA_NAME);
            std::fs::write(&ca_file, &ca.cert_pem).map_err(io("writing", &ca_file))?;
            let mut bundle = std::fs::read(image_rootfs.join(IMAGE_CA_BUNDLE)).unwrap_or_default();
            if !bundle.is_empty() && !bundle.ends_with(b"\n") {
                bundle.push(b'\n');
            }
            bundle.extend_from_slice(ca.cert_pem.as_bytes());
            let bundle_file = run_dir.join(BUNDLE_NAME);
            std::fs::write(&bundle_file, bundle).map_err(io("writing", &bundle_file))?;
        }
        let socket = run_dir.join(SOCKET_NAME);
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", &socket)(e)),
        }
        let listener = bind_in(run_dir, SOCKET_NAME).map_err(io("binding", &socket))?;
        // Sandbox users are unprivileged uids of their own range: anyone may connect.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
            .map_err(io("chmod", &socket))?;
        let proxy = Arc::new(SandboxProxy {
            sandbox: internal.to_owned(),
            shared: self.shared.clone(),
            rules: RwLock::new(Arc::new(rules)),
            ca,
            cancel: CancellationToken::new(),
            connections: Arc::new(tokio::sync::Semaphore::new(proxy::MAX_CONNECTIONS)),
        });
        tokio::spawn(proxy.clone().serve(listener));
        self.lock().insert(internal.to_owned(), proxy);
        Ok(())
    }

    /// Stops the proxy of a sandbox and ends its connections.
    pub fn detach(&self, internal: &str) {
        if let Some(proxy) = self.lock().remove(internal) {
            proxy.cancel.cancel();
        }
    }

    /// Applies a changed policy or secrets to a running sandbox's proxy (no-op when none runs).
    pub fn update(&self, internal: &str, network: &SandboxNetwork) -> Result<(), EgressError> {
        let rules =
            Rules::compile(&network.policy, &network.secrets).map_err(EgressError::Invalid)?;
        if let Some(proxy) = self.lock().get(internal) {
            *proxy.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SandboxProxy>>> {
        self.proxies.lock().unwrap_or_else(|p| p.into_inner())
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

/// Binds a Unix socket at `dir/name` even when that path is longer than `sun_path` (108 bytes)
/// allows, as a long data dir plus a 63-character sandbox id makes it: the bind goes through
/// the short `/proc/self/fd/<dir>/<name>`.
fn bind_in(dir: &Path, name: &str) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(dir)?;
    let short = format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
    let listener = std::os::unix::net::UnixListener::bind(short)?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}
