//! The audit log of control-plane actions: one middleware records every mutating control
//! route (who, what, when, target, result) in the store, bounded per tenant there.
//!
//! The action and a default target come from the method and path; a handler that knows more (the
//! id of a created sandbox, the fields a PATCH changed, the tenant a key belongs to) adds an
//! [`AuditNote`] to its response. Notes name fields and secrets, never their values.

use std::sync::Arc;

use axum::extract::{Request, State};
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

/// The action of an audited request and the target its path names, from its method and path
/// (`None`: not audited). Only routes that matched reach this (it is a route layer).
fn classify(method: &http::Method, path: &str) -> Option<(&'static str, String)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (action, target) = match (method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "sandboxes"]) => ("sandbox.create", "-".to_owned()),
        ("PATCH", ["v1", "sandboxes", id]) => ("sandbox.update", (*id).to_owned()),
        ("DELETE", ["v1", "sandboxes", id]) => ("sandbox.destroy", (*id).to_owned()),
        ("POST", ["v1", "sandboxes", id, "stop"]) => ("sandbox.stop", (*id).to_owned()),
        ("POST", ["v1", "sandboxes", id, "env"]) => ("sandbox.env", (*id).to_owned()),
        ("POST", ["v1", "sandboxes", id, "ports"]) => ("port.expose", (*id).to_owned()),
        ("POST", ["v1", "sandboxes", id, "mounts"]) => ("mount.create", (*id).to_owned()),
        ("DELETE", ["v1", "sandboxes", id, "mounts"]) => ("mount.delete", (*id).to_owned()),
        ("POST", ["v1", "sandboxes", id, "snapshots"]) => ("snapshot.create", (*id).to_owned()),
        ("POST", ["v1", "sandboxes", id, "fork"]) => ("sandbox.fork", (*id).to_owned()),
        ("DELETE", ["v1", "snapshots", snapshot]) => ("snapshot.delete", (*snapshot).to_owned()),
        ("DELETE", ["v1", "sandboxes", id, "ports", port]) => {
            ("port.unexpose", format!("{id}:{port}"))
        }
        ("POST", ["v1", "sandboxes", id, "backups"]) => ("backup.create", (*id).to_owned()),
        ("POST", ["v1", "sandboxes", id, "restore"]) => ("backup.restore", (*id).to_owned()),
        ("DELETE", ["v1", "backups", id]) => ("backup.delete", (*id).to_owned()),
        ("POST", ["v1", "keys"]) => ("key.create", "-".to_owned()),
        ("DELETE", ["v1", "keys", key]) => ("key.revoke", (*key).to_owned()),
        ("POST", ["v1", "keys", key, "rotate"]) => ("key.rotate", (*key).to_owned()),
        _ => return None,
    };
    Some((action, target))
}

/// Middleware (inside the key check): records audited routes after they answered.
pub async fn record(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let caller = request.extensions().get::<Tenant>().cloned();
    let (Some((action, default_target)), Some(caller)) =
        (classify(request.method(), request.uri().path()), caller)
    else {
        return next.run(request).await;
    };
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
    fn actions_and_targets_come_from_method_and_path() {
        use http::Method;
        let c = |m: Method, p: &str| classify(&m, p).map(|(a, t)| format!("{a} {t}"));
        assert_eq!(
            c(Method::POST, "/v1/sandboxes/box/stop").as_deref(),
            Some("sandbox.stop box")
        );
        assert_eq!(
            c(Method::DELETE, "/v1/sandboxes/box/ports/8080").as_deref(),
            Some("port.unexpose box:8080")
        );
        assert_eq!(
            c(Method::POST, "/v1/keys/abcd/rotate").as_deref(),
            Some("key.rotate abcd")
        );
        assert_eq!(
            c(Method::POST, "/v1/sandboxes").as_deref(),
            Some("sandbox.create -")
        );
        assert_eq!(c(Method::GET, "/v1/sandboxes"), None);
        assert_eq!(c(Method::POST, "/v1/sandboxes/box/api/execute"), None);
        let names = ["TOKEN".to_owned()];
        assert_eq!(
            fields_detail(["env", "secrets"], &names).as_deref(),
            Some("env, secrets: TOKEN")
        );
        assert_eq!(fields_detail([], []), None);
    }
}
