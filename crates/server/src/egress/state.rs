//! A sandbox's stored egress state as the lifecycle uses it: loaded (with its CA made on first
//! start) and changed from API requests.

use std::collections::BTreeMap;

use sandpit_protocol::control::{NetworkPolicy, SandboxInfo, SecretSpec};
use sandpit_protocol::netpolicy::{EgressPolicy, PolicyError};
use sandpit_store::{SandboxNetwork, Store};

use super::{SecretError, error_chain};
use crate::error::{ApiError, ApiResult};

/// The egress state of a sandbox (by internal id); defaults when none is stored.
pub async fn load(store: &dyn Store, internal: &str) -> ApiResult<SandboxNetwork> {
    Ok(store.sandbox_network(internal).await?.unwrap_or_default())
}

/// The state to start a sandbox with: its interception CA is made and stored the first time.
pub async fn load_for_start(store: &dyn Store, internal: &str) -> ApiResult<SandboxNetwork> {
    let mut network = load(store, internal).await?;
    if network.ca.is_none() {
        let ca = super::generate_ca(internal).map_err(|e| {
            ApiError::internal(format!(
                "making the sandbox's egress CA: {}",
                error_chain(&e)
            ))
        })?;
        network.ca = Some(ca);
        store.set_sandbox_network(internal, &network).await?;
    }
    Ok(network)
}

/// Fills the network fields of a sandbox's public view (never secret values).
pub fn fill_info(info: &mut SandboxInfo, network: &SandboxNetwork) {
    info.network = NetworkPolicy::from(&network.policy);
    info.secrets = super::secret_infos(&network.secrets);
}

/// Network policy and secrets given on create or PATCH, validated: the policy parsed into its
/// typed form here, once, at the API edge.
#[derive(Debug, Default)]
pub struct NetworkChanges {
    policy: Option<EgressPolicy>,
    secrets: Option<BTreeMap<String, SecretSpec>>,
    /// The request came with the admin key: a new policy's CIDRs are operator grants.
    by_operator: bool,
}

impl NetworkChanges {
    /// The new policy, when the request sets one.
    pub fn policy(&self) -> Option<&EgressPolicy> {
        self.policy.as_ref()
    }

    pub fn parse(
        policy: Option<&NetworkPolicy>,
        secrets: Option<&BTreeMap<String, SecretSpec>>,
        by_operator: bool,
    ) -> ApiResult<Self> {
        let policy = policy
            .map(EgressPolicy::try_from)
            .transpose()
            .map_err(policy_error)?;
        if let Some(s) = secrets {
            super::merge_secrets(&[], s).map_err(secrets_error)?;
        }
        Ok(NetworkChanges {
            policy,
            secrets: secrets.cloned(),
            by_operator,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.secrets.is_none()
    }

    /// Whether the policy (not only secrets) changes.
    pub fn changes_policy(&self) -> bool {
        self.policy.is_some()
    }

    /// Stores the changes; returns the state before and after. Secrets that keep their name
    /// keep their placeholder.
    pub async fn apply(
        self,
        store: &dyn Store,
        internal: &str,
    ) -> ApiResult<(SandboxNetwork, SandboxNetwork)> {
        let old = load(store, internal).await?;
        let mut network = old.clone();
        if let Some(policy) = self.policy {
            network.policy = policy;
            network.operator_policy = self.by_operator;
        }
        if let Some(specs) = self.secrets {
            network.secrets =
                super::merge_secrets(&network.secrets, &specs).map_err(secrets_error)?;
        }
        store.set_sandbox_network(internal, &network).await?;
        Ok((old, network))
    }
}

/// `VALIDATION_FAILED` naming the allow-list entry that is neither a host pattern nor a CIDR:
/// `network.allow[1]: "exa mple.com" is neither a host name pattern (...) nor a CIDR (...)`,
/// with `field` and `value` in the context.
fn policy_error(e: PolicyError) -> ApiError {
    ApiError::validation(format!("network.{}", error_chain(&e)))
        .context("field", format!("network.allow[{}]", e.index))
        .context("value", e.source.entry)
}

fn secrets_error(e: SecretError) -> ApiError {
    ApiError::validation(format!("secrets: {}", error_chain(&e)))
}

/// The env changes that make a running sandbox's later processes see a new secret set:
/// placeholders of added secrets, unset for removed ones.
pub fn secret_env_changes(
    old: &[sandpit_store::StoredSecret],
    new: &[sandpit_store::StoredSecret],
) -> sandpit_protocol::container::EnvMap {
    let mut env: sandpit_protocol::container::EnvMap = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.name == o.name))
        .map(|o| (o.name.clone(), None))
        .collect();
    for n in new {
        if !old.iter().any(|o| o.name == n.name) {
            env.insert(n.name.clone(), Some(n.placeholder.clone()));
        }
    }
    env
}

/// Best effort: asks `agent` to export `env` in the default session and for later sessions
/// and processes (`POST /api/env`).
pub async fn push_env(
    agent: &crate::agent_client::AgentClient,
    env: sandpit_protocol::container::EnvMap,
) {
    if env.is_empty() {
        return;
    }
    let request = sandpit_protocol::container::SetEnvRequest {
        env,
        session_id: None,
    };
    let call = agent.post_json("/api/env", &request);
    match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e.chain(), "exporting secret placeholders"),
        Err(_) => tracing::warn!("exporting secret placeholders timed out"),
    }
}
