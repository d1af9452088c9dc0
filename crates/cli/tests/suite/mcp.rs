//! The MCP server (`sandpit mcp` over stdio, `/mcp` over streamable HTTP) driven by the
//! official MCP TypeScript SDK client (crates/mcp/tests/client, `node --test`) against a real
//! server: every tool, a matplotlib plot as a PNG image item, progress and cancellation, and a
//! tenant's key seeing nothing of another tenant's sandboxes.
//! Not `serial_*`: it uses its own server, so nextest runs it beside other tests.

use std::path::PathBuf;

use super::sdk_typescript::{node_tap, required, skip_or_fail};
use super::support::{Served, images_dir_or_skip};

#[test]
fn mcp_official_client_over_stdio_and_http() {
    let test = "mcp_official_client_over_stdio_and_http";
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mcp/tests/client");
    if !client
        .join("node_modules/@modelcontextprotocol/sdk")
        .exists()
    {
        return skip_or_fail(
            test,
            format!(
                "run `npm ci` in {} first (scripts/test.sh does)",
                client.display()
            ),
        );
    }
    let Some(images) = images_dir_or_skip(test) else {
        assert!(!required(), "{test}: no default image");
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
    println!("{stdout}\n{stderr}");
    assert!(
        stdout.contains("\n# fail 0"),
        "{stdout}\nserver log:\n{}",
        served.log()
    );
    assert!(
        stdout.contains("\n# pass 5"),
        "not every test ran:\n{stdout}"
    );
}
