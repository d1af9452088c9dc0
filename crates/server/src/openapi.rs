//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
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
        crate::routes::usage::usage,
        crate::routes::mounts::mount,
        crate::routes::mounts::list,
        crate::routes::mounts::unmount,
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
        crate::events::stream,
        crate::ws_auth::issue,
        crate::preview::api::expose,
        crate::preview::api::list,
        crate::preview::api::unexpose,
        crate::routes::backups::create,
        crate::routes::backups::restore,
        crate::routes::backups::list,
        crate::routes::backups::get,
        crate::routes::backups::delete,
        crate::routes::snapshots::create,
        crate::routes::snapshots::list,
        crate::routes::snapshots::get,
        crate::routes::snapshots::delete,
        crate::routes::snapshots::fork,
        crate::routes::snapshots::export,
        crate::routes::snapshots::import,
        crate::routes::system::ready,
        crate::routes::nodes::list,
    ),
    components(schemas(
        sandpit_protocol::control::CreateSandboxRequest,
        sandpit_protocol::control::UpdateSandboxRequest,
        sandpit_protocol::control::SandboxInfo,
        sandpit_protocol::control::SandboxList,
        sandpit_protocol::control::WsTicket,
        sandpit_protocol::control::SandboxState,
        sandpit_protocol::control::Isolation,
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
        sandpit_protocol::control::SandboxEvent,
        sandpit_protocol::control::SandboxEventKind,
        sandpit_protocol::control::EventsLagged,
        sandpit_protocol::backup::CreateBackupRequest,
        sandpit_protocol::backup::BackupCompression,
        sandpit_protocol::backup::BackupInfo,
        sandpit_protocol::backup::BackupList,
        sandpit_protocol::backup::RestoreBackupRequest,
        sandpit_protocol::backup::RestoreBackupResponse,
        sandpit_protocol::control::MountBucketRequest,
        sandpit_protocol::control::MountCredentials,
        sandpit_protocol::control::BucketMountInfo,
        sandpit_protocol::control::BucketMountList,
        sandpit_protocol::control::CreateSnapshotRequest,
        sandpit_protocol::control::SnapshotInfo,
        sandpit_protocol::control::SnapshotList,
        sandpit_protocol::control::ForkRequest,
        sandpit_protocol::control::ForkResponse,
        sandpit_protocol::control::SnapshotExport,
        sandpit_protocol::control::ImportSnapshotRequest,
        sandpit_protocol::control::Readiness,
        sandpit_protocol::control::NodeList,
        sandpit_protocol::control::NodeInfo,
        sandpit_protocol::control::NodeState,
        sandpit_protocol::control::NodeCapacity,
    )),
    modifiers(&BearerAuth, &SandboxIdParams, &CommonErrors),
    tags(
        (name = "sandboxes", description = "Sandbox lifecycle"),
        (name = "forward", description = "The container API of one sandbox"),
        (name = "files", description = "Raw file bytes of one sandbox, any size"),
        (name = "keys", description = "API keys: the admin creates them; a tenant lists, revokes and rotates its own"),
        (name = "mounts", description = "S3 bucket mounts of a sandbox; the credentials stay on the host"),
        (name = "audit", description = "The audit log of control-plane actions, per tenant"),
        (name = "events", description = "Sandbox changes as server-sent events, per tenant"),
        (name = "quotas", description = "Per-tenant quotas and per-sandbox caps"),
        (name = "backups", description = "Backups of sandbox directories in the object store, per tenant"),
        (name = "snapshots", description = "Snapshots of a sandbox's file system, sandboxes created from them, and forks"),
        (name = "system", description = "Probes for load balancers and Kubernetes, no key needed"),
        (name = "preview", description = "Preview URLs: ports of a sandbox reachable at `{port}-{id}-{hash}-{token}.{domain}`"),
        (name = "cluster", description = "Cluster mode: the nodes that run the sandboxes (admin key)"),
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

/// Every operation of the document.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
    })
}

fn has_path_param(operation: &Operation, name: &str) -> bool {
    operation.parameters.iter().flatten().any(|p| {
        matches!(p, RefOr::T(p) if p.name == name && matches!(p.parameter_in, ParameterIn::Path))
    })
}

/// The `{id}` path parameter of every sandbox route gets the rules of
/// `protocol::control::validate_sandbox_id` (letters, digits and `-`, 1-63 chars, no `-` at
/// either end; a few names are reserved), so clients and fuzzers know what is accepted.
struct SandboxIdParams;

/// `validate_sandbox_id` as a pattern (reserved names aside).
const SANDBOX_ID_PATTERN: &str = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$";

impl Modify for SandboxIdParams {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let schema: RefOr<Schema> = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(63))
            .pattern(Some(SANDBOX_ID_PATTERN))
            .into();
        for operation in operations(openapi) {
            for param in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(p) = param
                    && p.name == "id"
                    && matches!(p.parameter_in, ParameterIn::Path)
                {
                    p.schema = Some(schema.clone());
                }
            }
        }
    }
}

/// Errors the shared layers give on any route, documented once here rather than on each
/// handler: 401 from the auth layer (every route with a key), 400 for an invalid `{id}` or
/// other path value, 415 from the JSON body extractor.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorResponse")))
                        .build(),
                )
                .into()
        };
        for operation in operations(openapi) {
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let bad_path = has_path_param(operation, "id");
            let json_body = operation.request_body.as_ref().is_some_and(
                |b| matches!(b, RefOr::T(b) if b.content.contains_key("application/json")),
            );
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description));
            };
            if secured {
                add("401", "UNAUTHORIZED: missing or invalid API key");
            }
            if bad_path {
                add("400", "VALIDATION_FAILED: invalid sandbox id or path value");
            }
            if json_body {
                add(
                    "415",
                    "UNSUPPORTED_MEDIA_TYPE: the body is not `application/json`",
                );
            }
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
