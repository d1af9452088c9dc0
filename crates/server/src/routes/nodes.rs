//! Cluster mode: `GET /v1/nodes` (admin key) and `POST /v1/cluster/join` (a node's join,
//! authenticated by the cluster's join token).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use sandpit_protocol::control::NodeList;
use sandpit_protocol::{ErrorCode, ErrorResponse};

use super::ApiJson;
use crate::AppState;
use crate::auth::Tenant;
use crate::cluster::wire::{JoinRequest, JoinResponse};
use crate::error::{ApiError, ApiResult};

fn cluster(app: &AppState) -> ApiResult<&crate::cluster::ControlPlane> {
    app.cluster.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::RouteNotFound,
            "this server is not in cluster mode (serve --cluster-dir)",
        )
    })
}

/// The cluster's nodes with their state, capacity and number of sandboxes (admin key only).
#[utoipa::path(
    get, path = "/v1/nodes", operation_id = "listNodes", tag = "cluster",
    responses(
        (status = 200, description = "The nodes", body = NodeList),
        (status = 401, description = "Missing or invalid API key", body = ErrorResponse),
        (status = 403, description = "Not the admin key", body = ErrorResponse),
        (status = 404, description = "Not in cluster mode", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Tenant>,
) -> ApiResult<ApiJson<NodeList>> {
    if !caller.admin {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "listing nodes needs the admin key",
        ));
    }
    Ok(ApiJson(cluster(&app)?.nodes().await?))
}

/// A node's join: the cluster's join token buys a node certificate (for the node's own key).
pub async fn join(
    State(app): State<Arc<AppState>>,
    ApiJson(request): ApiJson<JoinRequest>,
) -> ApiResult<ApiJson<JoinResponse>> {
    Ok(ApiJson(cluster(&app)?.join(request).await?))
}
