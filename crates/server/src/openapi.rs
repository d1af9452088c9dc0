//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{files, keys, quota, sandboxes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sandpit control plane",
        description = "Sandboxes for untrusted code. Every /v1 route except /v1/openapi.json needs `Authorization: Bearer <key>`. Errors are `ErrorResponse` bodies; see docs/api.md.",
        license(name = "Apache-2.0"),
    ),
    paths(
        sandboxes::create,
        sandboxes::list,
        sandboxes::get,
        sandboxes::update,
        sandboxes::destroy,
        sandboxes::stop,
        crate::routes::env::set_env,
        crate::routes::egress::egress_log,
        sandboxes::forward_get,
        sandboxes::forward_post,
        sandboxes::forward_delete,
        files::download,
        files::upload,
        keys::create_key,
        quota::own,
        quota::get,
        quota::set,
        quota::reset,
        keys::list_keys,
        keys::revoke_key,
        keys::rotate_key,
        crate::routes::audit::list,
        crate::ws_auth::issue,
        crate::preview::api::expose,
        crate::preview::api::list,
        crate::preview::api::unexpose,
    ),
    components(schemas(
        sandpit_protocol::control::CreateSandboxRequest,
        sandpit_protocol::control::UpdateSandboxRequest,
        sandpit_protocol::control::SandboxInfo,
        sandpit_protocol::control::SandboxList,
        sandpit_protocol::control::WsTicket,
        sandpit_protocol::control::SandboxState,
        sandpit_protocol::control::Limits,
        sandpit_protocol::control::ExposePortRequest,
        sandpit_protocol::control::ExposedPort,
        sandpit_protocol::control::ExposedPortList,
        sandpit_protocol::control::EgressLogPage,
        sandpit_protocol::control::EgressLogEntry,
        sandpit_protocol::control::EgressDecision,
        sandpit_protocol::ErrorResponse,
        sandpit_protocol::ErrorCode,
        sandpit_protocol::container::FileUploadResponse,
        sandpit_protocol::container::SetEnvRequest,
        sandpit_protocol::container::SetEnvResponse,
        sandpit_protocol::quota::TenantQuota,
        sandpit_protocol::quota::QuotaUsage,
        sandpit_protocol::quota::QuotaInfo,
        sandpit_protocol::quota::SandboxCaps,
        sandpit_protocol::control::CreateKeyRequest,
        sandpit_protocol::control::CreateKeyResponse,
        sandpit_protocol::control::ApiKeyInfo,
        sandpit_protocol::control::ApiKeyList,
        sandpit_protocol::control::AuditEntry,
        sandpit_protocol::control::AuditList,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "sandboxes", description = "Sandbox lifecycle"),
        (name = "forward", description = "The container API of one sandbox"),
        (name = "files", description = "Raw file bytes of one sandbox, any size"),
        (name = "keys", description = "API keys: the admin creates them; a tenant lists, revokes and rotates its own"),
        (name = "audit", description = "The audit log of control-plane actions, per tenant"),
        (name = "quotas", description = "Per-tenant quotas and per-sandbox caps"),
        (name = "preview", description = "Preview URLs: ports of a sandbox reachable at `{port}-{id}-{hash}-{token}.{domain}`"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The document served at `GET /v1/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed in `docs/openapi.json` (pretty, trailing newline).
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}
