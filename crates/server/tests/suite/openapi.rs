//! The committed OpenAPI document matches the code (`SANDPIT_UPDATE_OPENAPI=1` rewrites it).

use std::path::PathBuf;

use super::TestServer;

#[test]
fn committed_openapi_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = sandpit_server::openapi::document_json();
    if std::env::var_os("SANDPIT_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run SANDPIT_UPDATE_OPENAPI=1 cargo test -p sandpit-server openapi"
    );
}

#[tokio::test]
async fn served_document_lists_the_routes() {
    let ts = TestServer::start().await;
    let doc: serde_json::Value = ts
        .get_anonymous("/v1/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/sandboxes",
        "/v1/sandboxes/{id}",
        "/v1/sandboxes/{id}/stop",
        "/v1/keys",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "operationIds must be unique");
    assert!(total >= 10);
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
