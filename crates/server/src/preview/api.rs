//! `POST|GET /v1/sandboxes/{id}/ports`, `DELETE /v1/sandboxes/{id}/ports/{port}`: which ports
//! of a sandbox have preview URLs.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use rand::Rng;
use sandpit_protocol::control::{
    ExposePortRequest, ExposedPort, ExposedPortList, validate_preview_token, validate_sandbox_id,
};
use sandpit_protocol::{ErrorCode, ErrorResponse};
use sandpit_store::ExposedPortRecord;

use super::{Exposure, Previews};
use crate::audit::AuditNote;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::now_ms;
use crate::routes::ApiJson;
use crate::routes::sandboxes::ApiPath;

/// Longest port name.
const MAX_NAME: usize = 64;

/// Expose a port of a sandbox at a preview URL.
///
/// The URL works while the sandbox runs this run: after it sleeps (or the server restarts) it
/// answers 410 `STALE_PREVIEW_URL` until the port is exposed again (a sleeping sandbox is woken
/// by this call). Without `token` a random one is made, so exposing again rotates the URL; the
/// old token then answers 404 `INVALID_TOKEN`. Pass the same `token` to keep the URL.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/ports", operation_id = "exposePort", tag = "preview",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = ExposePortRequest,
    responses(
        (status = 200, description = "Exposed", body = ExposedPort),
        (status = 400, description = "INVALID_PORT_NUMBER (not 1024-65535, or 3128, the egress bridge), VALIDATION_FAILED (token, name) or LIMIT_EXCEEDED (the server's maximum of exposed ports per sandbox)", body = ErrorResponse),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
        (status = 429, description = "QUOTA_EXCEEDED: creating or waking the sandbox would pass the tenant's quota", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn expose(
    State(previews): State<Arc<Previews>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ExposePortRequest>,
) -> ApiResult<(Extension<AuditNote>, ApiJson<ExposedPort>)> {
    validate_sandbox_id(&id).map_err(|m| ApiError::validation(m).context("id", id.as_str()))?;
    check_port(req.port)?;
    if let Some(token) = &req.token {
        validate_preview_token(token).map_err(ApiError::validation)?;
    }
    if let Some(name) = &req.name
        && (name.chars().count() > MAX_NAME || name.chars().any(char::is_control))
    {
        return Err(ApiError::validation(format!(
            "name must be at most {MAX_NAME} characters, without control characters"
        )));
    }
    let token = req.token.unwrap_or_else(random_token);
    let existing = current(&previews, &tenant.name, &id).await?;
    if let Some(other) = existing
        .iter()
        .find(|e| e.record.port != req.port && e.record.token == token)
    {
        return Err(ApiError::validation(format!(
            "token is already used by port {} of this sandbox",
            other.record.port
        )));
    }
    let max = previews.manager.caps().exposed_ports;
    let exposed = existing
        .iter()
        .filter(|e| e.record.port != req.port)
        .count() as u64;
    if exposed >= max {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("sandbox {id:?} already exposes {exposed} ports, this server's maximum"),
        )
        .context("field", "exposedPorts")
        .context("requested", exposed + 1)
        .context("max", max));
    }
    // Wakes the sandbox: the exposure is bound to the run it starts.
    let lease = previews.manager.acquire(&tenant.name, &id).await?;
    let record = ExposedPortRecord {
        tenant: tenant.name.clone(),
        sandbox_id: id.clone(),
        port: req.port,
        name: req.name,
        token,
        created_at_ms: now_ms(),
    };
    previews.store().put_exposed_port(&record).await?;
    let label = previews.label(&tenant.name, &id);
    let answer = view(&previews, &record, &label, false);
    let note = AuditNote::target(format!("{id}:{}", record.port));
    previews.put(Exposure {
        record,
        label,
        run: Some(lease.run),
    });
    Ok((Extension(note), ApiJson(answer)))
}

/// List the exposed ports of a sandbox and their preview URLs.
///
/// `stale: true` marks a URL that answers 410 `STALE_PREVIEW_URL`: the sandbox slept (or the
/// server restarted) since the port was exposed, so the server behind it is gone even after a
/// wake. Start it again and expose the port again.
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}/ports", operation_id = "listExposedPorts", tag = "preview",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Exposed ports", body = ExposedPortList),
        (status = 404, description = "SANDBOX_NOT_FOUND", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(previews): State<Arc<Previews>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<ExposedPortList>> {
    let exposures = current(&previews, &tenant.name, &id).await?;
    let run = previews.manager.current_run(&tenant.name, &id).await;
    let ports = exposures
        .iter()
        .map(|e| view(&previews, &e.record, &e.label, !e.is_live(run)))
        .collect();
    Ok(ApiJson(ExposedPortList { ports }))
}

/// Remove a port's preview URL (it then answers 404 `INVALID_TOKEN`).
#[utoipa::path(
    delete, path = "/v1/sandboxes/{id}/ports/{port}", operation_id = "unexposePort", tag = "preview",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("port" = u16, Path, description = "Exposed port"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "SANDBOX_NOT_FOUND or PORT_NOT_EXPOSED", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn unexpose(
    State(previews): State<Arc<Previews>>,
    Extension(tenant): Extension<Tenant>,
    ApiPath((id, port)): ApiPath<(String, u16)>,
) -> ApiResult<StatusCode> {
    let exposed = current(&previews, &tenant.name, &id)
        .await?
        .iter()
        .any(|e| e.record.port == port);
    if !exposed {
        return Err(ApiError::new(
            ErrorCode::PortNotExposed,
            format!("port {port} of sandbox {id:?} is not exposed"),
        )
        .context("port", port));
    }
    previews
        .store()
        .delete_exposed_port(&tenant.name, &id, port)
        .await?;
    previews.remove(&tenant.name, &id, port);
    Ok(StatusCode::NO_CONTENT)
}

/// The exposures of an existing sandbox, without those left by a destroyed sandbox of the same
/// id (kept so their URLs answer 410).
async fn current(previews: &Previews, tenant: &str, id: &str) -> ApiResult<Vec<Exposure>> {
    let sandbox = previews
        .store()
        .get_sandbox(tenant, id)
        .await?
        .ok_or_else(|| ApiError::sandbox_not_found(id))?;
    let mut exposures = previews.of_sandbox(tenant, id);
    exposures.retain(|e| e.record.created_at_ms >= sandbox.created_at_ms);
    Ok(exposures)
}

fn view(previews: &Previews, r: &ExposedPortRecord, label: &str, stale: bool) -> ExposedPort {
    ExposedPort {
        port: r.port,
        name: r.name.clone(),
        token: r.token.clone(),
        url: previews.config.url(r.port, label, &r.token),
        stale,
    }
}

fn check_port(port: u16) -> ApiResult<()> {
    if port < 1024 {
        return Err(ApiError::new(
            ErrorCode::InvalidPortNumber,
            format!("port {port} cannot be exposed: use 1024-65535"),
        )
        .context("port", port));
    }
    if port == sandpit_protocol::EGRESS_PROXY_PORT {
        return Err(ApiError::new(
            ErrorCode::InvalidPortNumber,
            format!("port {port} is reserved for the sandbox's egress proxy"),
        )
        .context("port", port));
    }
    Ok(())
}

/// 16 characters of `[a-z0-9]`.
fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_tokens_are_valid_and_differ() {
        let a = super::random_token();
        assert!(sandpit_protocol::control::validate_preview_token(&a).is_ok());
        assert_ne!(a, super::random_token());
    }
}
