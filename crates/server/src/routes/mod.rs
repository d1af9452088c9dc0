//! HTTP handlers, one module per resource.

pub mod audit;
pub mod backups;
pub mod egress;
pub mod env;
pub mod files;
pub mod keys;
pub mod mounts;
pub mod nodes;
pub mod quota;
pub mod sandboxes;
pub mod snapshots;
pub mod system;
pub mod usage;

use axum::extract::FromRequest;
use serde::Serialize;

use crate::error::ApiError;

/// `axum::Json` whose rejections are [`ApiError`]s (400/413/415 with an `ErrorResponse`).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
