//! The audit log of control-plane actions: one middleware records every mutating control
//! route (who, what, when, target, result) in the store, bounded per tenant there.
//!
//! The action and a default target come from the matched route; a handler that knows more (the
//! id of a created sandbox, the fields a PATCH changed, the tenant a key belongs to) adds an
//! [`AuditNote`] to its response. Notes name fields and secrets, never their values.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sandpit_protocol::ErrorCode;
use sandpit_store::AuditRecord;

use crate::AppState;
use crate::auth::Tenant;

/// What a handler adds to the audit row of its request (a response extension).
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// Whose log the row goes to when not the caller's (key actions of the admin).
    pub tenant: Option<String>,
    pub target: Option<String>,
    pub detail: Option<String>,
}

impl AuditNote {
    pub fn target(target: impl Into<String>) -> Self {
        AuditNote {
            target: Some(target.into()),
            ..Self::default()
        }
    }

    pub fn detail(mut self, detail: Option<String>) -> Self {
        self.detail = detail.filter(|d| !d.is_empty());
        self
    }
}

/// `"env, limits, secrets: A, B"` from the names of what a request sets.
pub fn fields_detail<'a>(
    fields: impl IntoIterator<Item = &'a str>,
    secrets: impl IntoIterator<Item = &'a String>,
) -> Option<String> {
    let mut parts: Vec<String> = fields.into_iter().map(str::to_owned).collect();
    let secrets: Vec<&str> = secrets.into_iter().map(String::as_str).collect();
    if !secrets.is_empty() {
        parts.retain(|p| p != "secrets");
        parts.push(format!("secrets: {}", secrets.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The action a route performs, for the routes that are audited.
fn action(method: &http::Method, route: &str) -> Option<&'static str> {
    Some(match (method.as_str(), route) {
        ("POST", "/v1/sandboxes") => "sandbox.create",
        ("PATCH", "/v1/sandboxes/{id}") => "sandbox.update",
        ("DELETE", "/v1/sandboxes/{id}") => "sandbox.destroy",
        ("POST", "/v1/sandboxes/{id}/stop") => "sandbox.stop",
        ("POST", "/v1/sandboxes/{id}/env") => "sandbox.env",
        ("POST", "/v1/sandboxes/{id}/ports") => "port.expose",
        ("DELETE", "/v1/sandboxes/{id}/ports/{port}") => "port.unexpose",
        ("POST", "/v1/keys") => "key.create",
        ("DELETE", "/v1/keys/{keyId}") => "key.revoke",
        ("POST", "/v1/keys/{keyId}/rotate") => "key.rotate",
        _ => return None,
    })
}

/// The target named by the path: `/v1/sandboxes/{id}[/ports/{port}]`, `/v1/keys/{keyId}`.
fn path_target(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "sandboxes", id, "ports", port] => format!("{id}:{port}"),
        ["v1", _, target, ..] => (*target).to_owned(),
        _ => "-".to_owned(),
    }
}

/// Middleware (inside the key check): records audited routes after they answered.
pub async fn record(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let caller = request.extensions().get::<Tenant>().cloned();
    let (Some(action), Some(caller)) = (
        route.and_then(|r| action(request.method(), r.as_str())),
        caller,
    ) else {
        return next.run(request).await;
    };
    let default_target = path_target(request.uri().path());
    let response = next.run(request).await;
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let result = match response.extensions().get::<ErrorCode>() {
        Some(code) => code.as_str(),
        None if response.status().is_success() => "ok".to_owned(),
        None => response.status().as_u16().to_string(),
    };
    let row = AuditRecord {
        seq: 0,
        tenant: note.tenant.unwrap_or(caller.name),
        at_ms: crate::lifecycle::now_ms(),
        actor: caller.key_id,
        action: action.to_owned(),
        target: note.target.unwrap_or(default_target),
        result,
        detail: note.detail,
    };
    // The action happened whatever the log says; a lost row is logged, not answered.
    if let Err(e) = app.manager.store().append_audit(&row).await {
        tracing::error!(error = %e, action, "writing the audit log");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_details_come_from_paths_and_names() {
        assert_eq!(path_target("/v1/sandboxes/box/stop"), "box");
        assert_eq!(path_target("/v1/sandboxes/box/ports/8080"), "box:8080");
        assert_eq!(path_target("/v1/keys/abcd/rotate"), "abcd");
        assert_eq!(path_target("/v1/sandboxes"), "-");
        let names = ["TOKEN".to_owned()];
        assert_eq!(
            fields_detail(["env", "secrets"], &names).as_deref(),
            Some("env, secrets: TOKEN")
        );
        assert_eq!(fields_detail([], []), None);
        assert_eq!(action(&http::Method::GET, "/v1/sandboxes"), None);
    }
}
