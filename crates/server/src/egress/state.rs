//! A sandbox's stored egress state as the lifecycle uses it: loaded (with its CA made on first
//! start) and changed from API requests.

use std::collections::BTreeMap;

use sandpit_protocol::control::{NetworkPolicy, SandboxInfo, SecretSpec};
use sandpit_store::{SandboxNetwork, Store};

use crate::error::{ApiError, ApiResult};

/// The egress state of a sandbox (by internal id); defaults when none is stored.
pub async fn load(store: &dyn Store, internal: &str) -> ApiResult<SandboxNetwork> {
    Ok(store.sandbox_network(internal).await?.unwrap_or_default())
}

/// The state to start a sandbox with: its interception CA is made and stored the first time.
pub async fn load_for_start(store: &dyn Store, internal: &str) -> ApiResult<SandboxNetwork> {
    let mut network = load(store, internal).await?;
    if network.ca.is_none() {
        let ca = super::generate_ca(internal)
            .map_err(|e| ApiError::internal(format!("making the sandbox's egress CA: {e}")))?;
        network.ca = Some(ca);
        store.set_sandbox_network(internal, &network).await?;
    }
    Ok(network)
}

/// Fills the network fields of a sandbox's public view (never secret values).
pub fn fill_info(info: &mut SandboxInfo, network: &SandboxNetwork) {
    info.network = network.policy.clone();
    info.secrets = super::secret_infos(&network.secrets);
}

/// Network policy and secrets given on create or PATCH, validated.
#[derive(Debug, Default)]
pub struct NetworkChanges {
    policy: Option<NetworkPolicy>,
    secrets: Option<BTreeMap<String, SecretSpec>>,
}

impl NetworkChanges {
    pub fn parse(
        policy: Option<&NetworkPolicy>,
        secrets: Option<&BTreeMap<String, SecretSpec>>,
    ) -> ApiResult<Self> {
        if let Some(p) = policy {
            super::check_policy(p).map_err(|m| ApiError::validation(format!("network: {m}")))?;
        }
        if let Some(s) = secrets {
            super::merge_secrets(&[], s)
                .map_err(|m| ApiError::validation(format!("secrets: {m}")))?;
        }
        Ok(NetworkChanges {
            policy: policy.cloned(),
            secrets: secrets.cloned(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.secrets.is_none()
    }

    /// Stores the changes; returns the new state. Secrets that keep their name keep their
    /// placeholder.
    pub async fn apply(self, store: &dyn Store, internal: &str) -> ApiResult<SandboxNetwork> {
        let mut network = load(store, internal).await?;
        if let Some(policy) = self.policy {
            network.policy = policy;
        }
        if let Some(specs) = self.secrets {
            network.secrets = super::merge_secrets(&network.secrets, &specs)
                .map_err(|m| ApiError::validation(format!("secrets: {m}")))?;
        }
        store.set_sandbox_network(internal, &network).await?;
        Ok(network)
    }
}
