//! Per-tenant quotas and the server's per-sandbox caps (`/v1/quota`,
//! `/v1/tenants/{tenant}/quota`).

use reqwest::Method;
use sandpit_protocol::quota::{QuotaInfo, TenantQuota};

use crate::client::{Client, percent_encode};
use crate::error::Result;

fn tenant_path(tenant: &str) -> String {
    format!("/v1/tenants/{}/quota", percent_encode(tenant))
}

impl Client {
    /// The caller's quota, its usage and the server's per-sandbox caps.
    pub async fn quota(&self) -> Result<QuotaInfo> {
        self.json(self.request(Method::GET, "/v1/quota")).await
    }

    /// A tenant's quota and usage (the admin key, or that tenant's own key).
    pub async fn tenant_quota(&self, tenant: &str) -> Result<QuotaInfo> {
        self.json(self.request(Method::GET, &tenant_path(tenant)))
            .await
    }

    /// Replaces a tenant's quota (admin key only); an absent field is not limited.
    pub async fn set_tenant_quota(&self, tenant: &str, quota: &TenantQuota) -> Result<QuotaInfo> {
        self.json(self.request(Method::PUT, &tenant_path(tenant)).json(quota))
            .await
    }

    /// Removes a tenant's own quota, so the server's default applies (admin key only).
    pub async fn reset_tenant_quota(&self, tenant: &str) -> Result<QuotaInfo> {
        self.json(self.request(Method::DELETE, &tenant_path(tenant)))
            .await
    }
}
