//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::routes::{files, keys, sandboxes};

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
        sandboxes::forward_get,
        sandboxes::forward_post,
        sandboxes::forward_delete,
        files::download,
        files::upload,
        keys::create_key,
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
        sandpit_protocol::ErrorResponse,
        sandpit_protocol::ErrorCode,
        sandpit_protocol::container::FileUploadResponse,
        sandpit_protocol::container::SetEnvRequest,
        sandpit_protocol::container::SetEnvResponse,
        keys::CreateKeyRequest,
        keys::CreateKeyResponse,
    )),
    modifiers(&BearerAuth, &SandboxIdParams),
    tags(
        (name = "sandboxes", description = "Sandbox lifecycle"),
        (name = "forward", description = "The container API of one sandbox"),
        (name = "files", description = "Raw file bytes of one sandbox, any size"),
        (name = "keys", description = "API keys (admin)"),
        (name = "preview", description = "Preview URLs: ports of a sandbox reachable at `{port}-{id}-{token}.{domain}`"),
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
        for item in openapi.paths.paths.values_mut() {
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let params = operation.parameters.iter_mut().flatten();
                for param in params {
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
