//! Outbound network policy and secrets of a sandbox (`PATCH /v1/sandboxes/{id}` with `network`
//! or `secrets`), its egress log (`GET /v1/sandboxes/{id}/egress-log`), and small constructors
//! for the policy types.

use std::collections::BTreeMap;

use reqwest::Method;
use sandpit_protocol::control::{
    EgressLogPage, NetworkMode, NetworkPolicy, SandboxInfo, SecretSpec, UpdateSandboxRequest,
};

use crate::client::{Client, check_id};
use crate::error::Result;

/// Loopback only (the default): every request through the egress proxy is refused.
pub fn no_network() -> NetworkPolicy {
    NetworkPolicy::default()
}

/// Only these domain patterns (`example.com`, `*.example.com`, `example.com:443` for one port)
/// and CIDRs (`10.1.0.0/16`),
/// through sandpit's egress proxy. CIDRs open private ranges only when the admin key sets the
/// policy; loopback, link-local/metadata and the operator's blocks never open.
pub fn allowlist<S: Into<String>>(allow: impl IntoIterator<Item = S>) -> NetworkPolicy {
    NetworkPolicy {
        mode: NetworkMode::Allowlist,
        allow: allow.into_iter().map(Into::into).collect(),
    }
}

/// Direct user-mode networking; host loopback, link-local and metadata addresses and the
/// operator's blocks stay blocked; private ranges open only for CIDRs the admin key set.
pub fn full_network<S: Into<String>>(allow: impl IntoIterator<Item = S>) -> NetworkPolicy {
    NetworkPolicy {
        mode: NetworkMode::Full,
        allow: allow.into_iter().map(Into::into).collect(),
    }
}

/// A secret sent to `hosts` only; inside the sandbox its env var holds a placeholder.
pub fn secret<S: Into<String>>(
    value: impl Into<String>,
    hosts: impl IntoIterator<Item = S>,
) -> SecretSpec {
    SecretSpec {
        value: value.into(),
        hosts: hosts.into_iter().map(Into::into).collect(),
        header: None,
    }
}

impl Client {
    /// Replaces the network policy of a sandbox; a running sandbox gets it at once (also
    /// processes already running).
    pub async fn set_network(&self, id: &str, policy: &NetworkPolicy) -> Result<SandboxInfo> {
        let request = UpdateSandboxRequest {
            network: Some(policy.clone()),
            ..Default::default()
        };
        self.update(id, &request).await
    }

    /// Replaces the whole set of secrets of a sandbox (an empty map removes them all). The
    /// answer lists them without values.
    pub async fn set_secrets(
        &self,
        id: &str,
        secrets: &BTreeMap<String, SecretSpec>,
    ) -> Result<SandboxInfo> {
        let request = UpdateSandboxRequest {
            secrets: Some(secrets.clone()),
            ..Default::default()
        };
        self.update(id, &request).await
    }

    /// The sandbox's egress log: each request or connection through its egress proxy (host,
    /// port, allowed/denied/failed with the rule and reason, bytes up and down), oldest first.
    pub async fn egress_log(&self, id: &str) -> Result<EgressLogPage> {
        check_id(id)?;
        let path = format!("/v1/sandboxes/{id}/egress-log");
        self.json(self.request(Method::GET, &path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_serialize_as_the_wire_format() {
        let policy = allowlist(["*.example.com", "10.1.0.0/16"]);
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            serde_json::json!({"mode": "allowlist", "allow": ["*.example.com", "10.1.0.0/16"]})
        );
        assert_eq!(
            serde_json::to_value(no_network()).unwrap(),
            serde_json::json!({"mode": "none", "allow": []})
        );
        assert_eq!(full_network::<&str>([]).mode, NetworkMode::Full);
        let mut s = secret("v", ["api.example.com"]);
        s.header = Some("Authorization".into());
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"value": "v", "hosts": ["api.example.com"], "header": "Authorization"})
        );
    }
}
