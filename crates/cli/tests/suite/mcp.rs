//! The MCP server (`sandpit mcp` over stdio, `/mcp` over streamable HTTP) driven by the
//! official MCP TypeScript SDK client (crates/mcp/tests/client, `node --test`) against a real
//! server: every tool, a matplotlib plot as a PNG image item, progress and cancellation, and a
//! tenant's key seeing nothing of another tenant's sandboxes.
//! Not `serial_*`: it uses its own server, so nextest runs it beside other tests.

use std::path::PathBuf;

use super::sdk_typescript::{assert_tap_passed, node_suite_ready, node_tap};
use super::support::Served;

#[test]
fn mcp_official_client_over_stdio_and_http() {
    let test = "mcp_official_client_over_stdio_and_http";
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mcp/tests/client");
    let Some(images) = node_suite_ready(test, &client, "@modelcontextprotocol/sdk") else {
        return;
    };
    let served = Served::start(&images);
    let (stdout, stderr) = node_tap(
        &client,
        &["--test-concurrency", "5", "mcp.test.mjs"],
        &served,
        &[("SANDPIT_BIN", env!("CARGO_BIN_EXE_sandpit").as_ref())],
        "node --test (MCP client)",
    );
    assert_tap_passed(&stdout, &stderr, &served, Some(5));
}
