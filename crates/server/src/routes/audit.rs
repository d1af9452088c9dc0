//! `GET /v1/audit`: a tenant's audit log, newest first.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use sandpit_protocol::ErrorResponse;
use sandpit_protocol::control::{AuditEntry, AuditList};
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiJson;
use super::sandboxes::{ApiQuery, DEFAULT_PAGE, MAX_PAGE};
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Whose log (another tenant than the caller's needs the admin key).
    pub tenant: Option<String>,
    /// Page size, 1–500 (default 50).
    pub limit: Option<usize>,
    /// `nextBefore` of the previous page: only older entries.
    pub before: Option<i64>,
}

/// Read a tenant's audit log: control-plane actions (create, update, stop, destroy, env,
/// expose, unexpose, key create/revoke/rotate), who did them (key id), when, on what, and the
/// result. The newest 1000 entries per tenant are kept.
#[utoipa::path(
    get, path = "/v1/audit", operation_id = "listAudit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page, newest first", body = AuditList),
        (status = 400, description = "Invalid limit", body = ErrorResponse),
        (status = 403, description = "Another tenant without the admin key (PERMISSION_DENIED)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<ApiJson<AuditList>> {
    let tenant = caller.scope(q.tenant.as_deref())?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(format!("limit must be 1-{MAX_PAGE}")));
    }
    let rows = app
        .manager
        .store()
        .list_audit(&tenant, q.before, limit)
        .await?;
    let next_before = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    let entries = rows
        .into_iter()
        .map(|r| AuditEntry {
            seq: r.seq,
            tenant: r.tenant,
            at: crate::lifecycle::ms_timestamp(r.at_ms),
            actor: r.actor,
            action: r.action,
            target: r.target,
            result: r.result,
            detail: r.detail,
        })
        .collect();
    Ok(ApiJson(AuditList {
        entries,
        next_before,
    }))
}
