//! The route table: every (method, path) the agent serves, probed through the real binary with
//! an empty request. The expected table was generated from the router as it was before the
//! routes moved into their areas (`routes()` per area), so a route dropped, added or answering
//! differently in that move fails here.

use bytes::Bytes;
use serde_json::Value;

use super::harness::{Agent, Resp};

/// Methods tried on every path; any not in [`ROUTES`] must get the unknown-route envelope.
const PROBE_METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// (method, path, status, fingerprint of the answer to an empty request). `x` stands for a
/// path parameter.
const ROUTES: [(&str, &str, u16, &str); 43] = [
    ("GET", "/api/ping", 200, "status,success,timestamp"),
    ("GET", "/api/version", 200, "success,timestamp,version"),
    (
        "GET",
        "/api/activity",
        200,
        "busyTerminals,runningProcesses",
    ),
    ("POST", "/api/execute", 400, "VALIDATION_FAILED"),
    ("POST", "/api/execute/stream", 400, "VALIDATION_FAILED"),
    ("POST", "/api/session/create", 400, "VALIDATION_FAILED"),
    ("GET", "/api/session/list", 200, "data,success,timestamp"),
    ("POST", "/api/session/delete", 400, "VALIDATION_FAILED"),
    ("POST", "/api/read", 400, "VALIDATION_FAILED"),
    (
        "POST",
        "/api/read/stream",
        200,
        "data: {\"type\":\"error\",\"error\":\"Invalid request body: EOF while parsing a value at line 1 column 0\"}\n\n",
    ),
    ("POST", "/api/write", 400, "VALIDATION_FAILED"),
    ("POST", "/api/delete", 400, "VALIDATION_FAILED"),
    ("POST", "/api/rename", 400, "VALIDATION_FAILED"),
    ("POST", "/api/move", 400, "VALIDATION_FAILED"),
    ("POST", "/api/mkdir", 400, "VALIDATION_FAILED"),
    ("POST", "/api/list-files", 400, "VALIDATION_FAILED"),
    ("POST", "/api/exists", 400, "VALIDATION_FAILED"),
    ("POST", "/api/env", 400, "VALIDATION_FAILED"),
    ("POST", "/api/process/start", 400, "VALIDATION_FAILED"),
    (
        "GET",
        "/api/process/list",
        200,
        "processes,success,timestamp",
    ),
    (
        "DELETE",
        "/api/process/kill-all",
        200,
        "cleanedCount,success,timestamp",
    ),
    ("GET", "/api/process/x", 404, "PROCESS_NOT_FOUND"),
    ("DELETE", "/api/process/x", 404, "PROCESS_NOT_FOUND"),
    ("GET", "/api/process/x/logs", 404, "PROCESS_NOT_FOUND"),
    ("GET", "/api/process/x/stream", 404, "PROCESS_NOT_FOUND"),
    ("POST", "/api/process/x/stdin", 400, "VALIDATION_FAILED"),
    ("POST", "/api/port-watch", 400, "VALIDATION_FAILED"),
    ("GET", "/api/contexts", 200, "contexts,success,timestamp"),
    ("POST", "/api/contexts", 400, "VALIDATION_FAILED"),
    ("DELETE", "/api/contexts/x", 404, "CONTEXT_NOT_FOUND"),
    ("POST", "/api/execute/code", 400, "VALIDATION_FAILED"),
    (
        "GET",
        "/api/interpreter/health",
        200,
        "status,success,timestamp",
    ),
    ("POST", "/api/git/checkout", 400, "VALIDATION_FAILED"),
    ("POST", "/api/watch", 400, "VALIDATION_FAILED"),
    ("POST", "/api/watch/check", 400, "VALIDATION_FAILED"),
    ("GET", "/api/files/raw", 400, "VALIDATION_FAILED"),
    ("PUT", "/api/files/raw", 400, "VALIDATION_FAILED"),
    ("POST", "/api/backup/archive", 400, "VALIDATION_FAILED"),
    ("POST", "/api/backup/extract", 400, "VALIDATION_FAILED"),
    (
        "GET",
        "/ws",
        400,
        "Connection header did not include 'upgrade'",
    ),
    (
        "GET",
        "/api/ws",
        400,
        "Connection header did not include 'upgrade'",
    ),
    ("GET", "/ws/pty", 400, "VALIDATION_FAILED"),
    ("GET", "/tunnel/x", 400, "INVALID_PORT"),
];

fn is_unknown_route(r: &Resp) -> bool {
    r.status == 404
        && serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| {
            v["code"] == "UNKNOWN_ERROR" && v["message"] == "The requested endpoint was not found"
        })
}

/// What identifies an answer to an empty request: the error code of an envelope, the field
/// names of another JSON answer (its values carry timestamps), else the body text.
fn fingerprint(r: &Resp) -> String {
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(Value::Object(map)) => match map.get("code") {
            Some(code) => code.as_str().unwrap_or_default().to_owned(),
            None => map.keys().cloned().collect::<Vec<_>>().join(","),
        },
        _ => String::from_utf8_lossy(&r.body).into_owned(),
    }
}

#[tokio::test]
async fn the_route_table_is_unchanged() {
    let a = Agent::start();
    let mut paths: Vec<&str> = ROUTES.iter().map(|(_, path, _, _)| *path).collect();
    paths.dedup();
    let mut served = Vec::new();
    for path in paths {
        for method in PROBE_METHODS {
            let r = a.raw(method, path, Bytes::new()).await;
            if !is_unknown_route(&r) {
                served.push((method, path, r.status, fingerprint(&r)));
            }
        }
        // CORS preflight answers on every path.
        let r = a.raw("OPTIONS", path, Bytes::new()).await;
        assert_eq!(r.status, 200, "OPTIONS {path}");
        assert_eq!(
            r.headers["access-control-allow-methods"],
            "GET, POST, PUT, DELETE, OPTIONS"
        );
    }
    let expected: Vec<_> = ROUTES
        .iter()
        .map(|(method, path, status, print)| (*method, *path, *status, (*print).to_owned()))
        .collect();
    assert_eq!(served, expected);
}
