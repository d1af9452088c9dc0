//! API keys (`/v1/keys`) and the audit log (`/v1/audit`).

use reqwest::Method;
use sandpit_protocol::control::{ApiKeyList, AuditList, CreateKeyRequest, CreateKeyResponse};

use crate::client::{Client, percent_encode};
use crate::error::Result;

/// One page request of [`Client::audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditOptions {
    /// Whose log (another tenant than the key's needs the admin key).
    pub tenant: Option<String>,
    /// Page size; the server picks a default when absent.
    pub limit: Option<u32>,
    /// `next_before` of the previous page.
    pub before: Option<i64>,
}

fn with_query(path: &str, query: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<String> = query
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", percent_encode(v))))
        .collect();
    match pairs.is_empty() {
        true => path.to_owned(),
        false => format!("{path}?{}", pairs.join("&")),
    }
}

impl Client {
    /// Creates an API key for `tenant` (admin key only). The key is in the answer only.
    pub async fn create_key(&self, tenant: &str) -> Result<CreateKeyResponse> {
        let body = CreateKeyRequest {
            tenant: tenant.to_owned(),
        };
        self.json(self.request(Method::POST, "/v1/keys").json(&body))
            .await
    }

    /// Lists keys (ids, never keys): the caller's tenant's, `tenant`'s (admin), or with the
    /// admin key and no tenant every tenant's.
    pub async fn list_keys(&self, tenant: Option<&str>) -> Result<ApiKeyList> {
        let path = with_query("/v1/keys", &[("tenant", tenant.map(str::to_owned))]);
        self.json(self.request(Method::GET, &path)).await
    }

    /// Revokes a key by id; its next request is refused.
    pub async fn revoke_key(&self, key_id: &str) -> Result<()> {
        let path = format!("/v1/keys/{}", percent_encode(key_id));
        self.empty(self.request(Method::DELETE, &path)).await
    }

    /// Replaces a key by a new one for the same tenant; the old one is revoked.
    pub async fn rotate_key(&self, key_id: &str) -> Result<CreateKeyResponse> {
        let path = format!("/v1/keys/{}/rotate", percent_encode(key_id));
        self.json(self.request(Method::POST, &path)).await
    }

    /// One page of the audit log, newest first.
    pub async fn audit(&self, options: &AuditOptions) -> Result<AuditList> {
        let path = with_query(
            "/v1/audit",
            &[
                ("tenant", options.tenant.clone()),
                ("limit", options.limit.map(|l| l.to_string())),
                ("before", options.before.map(|b| b.to_string())),
            ],
        );
        self.json(self.request(Method::GET, &path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_skip_absent_values_and_encode_the_rest() {
        assert_eq!(with_query("/v1/keys", &[("tenant", None)]), "/v1/keys");
        assert_eq!(
            with_query(
                "/v1/audit",
                &[("tenant", Some("a b".into())), ("limit", Some("5".into()))]
            ),
            "/v1/audit?tenant=a%20b&limit=5"
        );
    }
}
