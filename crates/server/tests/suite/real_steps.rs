//! Steps many real-server tests share, kept in one place so each test reads as its scenario.

use reqwest::Method;
use serde_json::Value;

use super::e2e::Real;

impl Real {
    /// Creates the sandbox `body` describes, or gets it if it exists (201 or 200); returns its
    /// info.
    pub(super) async fn ensure_sandbox(&self, body: Value) -> Value {
        let (s, b) = self.call(Method::POST, "/v1/sandboxes", body).await;
        assert!(s == 200 || s == 201, "{b}");
        b
    }
}
