//! Steps many real-server tests share, kept in one place so each test reads as its scenario.

use reqwest::Method;
use serde_json::Value;

use super::e2e::Real;
use super::{created_key, key_request};

impl Real {
    /// Creates the sandbox `body` describes, or gets it if it exists (201 or 200); returns its
    /// info.
    pub(super) async fn ensure_sandbox(&self, body: Value) -> Value {
        let (s, b) = self.call(Method::POST, "/v1/sandboxes", body).await;
        assert!(s == 200 || s == 201, "{b}");
        b
    }

    /// The ids of sandbox `id`'s processes (live and archived), sorted.
    pub(super) async fn process_ids(&self, id: &str) -> Vec<String> {
        let path = format!("/v1/sandboxes/{id}/api/process/list");
        let (s, b) = self.call(Method::GET, &path, Value::Null).await;
        assert_eq!(s, 200, "{b}");
        let mut ids: Vec<String> = b["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Creates an API key for `tenant` with the admin key; returns the key.
    pub(super) async fn create_key(&self, tenant: &str) -> String {
        created_key(
            self.call(Method::POST, "/v1/keys", key_request(tenant))
                .await,
        )
    }
}
