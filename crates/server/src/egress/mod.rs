//! The server's side of the egress proxy (the `sandpit-egress` crate does the proxying): which
//! sandbox gets which proxy, fed from its stored state ([`Egress`]), that state as the
//! lifecycle loads and changes it ([`state`]), and secrets as the API takes and shows them.

pub mod state;

use std::collections::BTreeMap;
use std::path::Path;

use sandpit_egress::SandboxPolicy;
use sandpit_protocol::control::{EgressLogPage, SecretInfo, SecretSpec};
use sandpit_protocol::netpolicy::EgressPolicy;
use sandpit_store::{SandboxNetwork, StoredSecret};

pub use sandpit_egress::{
    Attached, ClientIo, DEFAULT_MAX_CONNECTIONS_PER_SANDBOX, DEFAULT_MAX_CONNECTIONS_PER_TENANT,
    EgressConfig, EgressError, IpNet, Secret, SecretError, generate_ca,
};
pub use sandpit_protocol::netpolicy::parse_cidr;

/// Why a sandbox's proxy could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Secrets are checked when they are set; a stored one that fails is a broken store.
    #[error("stored secret")]
    Secret(#[source] SecretError),
    #[error(transparent)]
    Proxy(#[from] EgressError),
}

/// The egress proxies of this server's sandboxes, by internal id.
pub struct Egress {
    proxies: sandpit_egress::Egress,
}

impl Egress {
    pub fn new(config: &EgressConfig) -> Result<Self, EgressError> {
        Ok(Egress {
            proxies: sandpit_egress::Egress::new(config)?,
        })
    }

    /// Starts the proxy of sandbox `internal` of `tenant` with its stored state; the driver hands
    /// the returned handle the connections of the sandbox's egress bridge.
    pub fn attach(
        &self,
        tenant: &str,
        internal: &str,
        image_rootfs: &Path,
        network: &SandboxNetwork,
    ) -> Result<Attached, AttachError> {
        let sandbox = sandbox_policy(network).map_err(AttachError::Secret)?;
        let ca = network
            .ca
            .as_ref()
            .map(|(cert, key)| (cert.as_str(), key.as_str()));
        Ok(self
            .proxies
            .attach(tenant, internal, image_rootfs, &sandbox, ca)?)
    }

    /// Applies changed stored state to a running sandbox's proxy (no-op when none runs).
    pub fn update(
        &self,
        tenant: &str,
        internal: &str,
        network: &SandboxNetwork,
    ) -> Result<(), SecretError> {
        let sandbox = sandbox_policy(network)?;
        self.proxies.update(tenant, internal, &sandbox);
        Ok(())
    }

    /// The policy the driver enforces in `full` mode (only operator-granted CIDRs).
    pub fn driver_policy(&self, tenant: &str, network: &SandboxNetwork) -> EgressPolicy {
        let sandbox = SandboxPolicy {
            policy: network.policy.clone(),
            operator_policy: network.operator_policy,
            secrets: Vec::new(),
        };
        self.proxies.driver_policy(tenant, &sandbox)
    }

    /// Stops the proxy of a sandbox and ends its connections.
    pub fn detach(&self, internal: &str) {
        self.proxies.detach(internal);
    }

    /// The egress log of a sandbox (empty when it never used its proxy).
    pub fn log_page(&self, internal: &str) -> EgressLogPage {
        self.proxies.log_page(internal)
    }

    /// `(up, down)` bytes through a sandbox's proxy since the server started.
    pub fn byte_totals(&self, internal: &str) -> (u64, u64) {
        self.proxies.byte_totals(internal)
    }

    /// Drops the egress log of a destroyed sandbox.
    pub fn forget(&self, internal: &str) {
        self.proxies.forget(internal);
    }
}

/// What the proxy enforces for a sandbox, from its stored state.
fn sandbox_policy(network: &SandboxNetwork) -> Result<SandboxPolicy, SecretError> {
    Ok(SandboxPolicy {
        policy: network.policy.clone(),
        operator_policy: network.operator_policy,
        secrets: network
            .secrets
            .iter()
            .map(compile_secret)
            .collect::<Result<_, _>>()?,
    })
}

fn compile_secret(s: &StoredSecret) -> Result<Secret, SecretError> {
    Secret::new(
        &s.name,
        &s.value,
        &s.placeholder,
        &s.hosts,
        s.header.as_deref(),
    )
}

/// The new secret set of a sandbox from an API request: validated; a secret that keeps its
/// name keeps its placeholder (running processes already hold it).
pub fn merge_secrets(
    old: &[StoredSecret],
    specs: &BTreeMap<String, SecretSpec>,
) -> Result<Vec<StoredSecret>, SecretError> {
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
            compile_secret(&secret)?;
            Ok(secret)
        })
        .collect()
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

/// An error and its causes on one line (`a: b: c`), for messages that reach API clients: the
/// egress errors keep their causes as sources rather than in their own text.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
