//! The published `@cloudflare/sandbox` client (compat/, `node --test`) against a real server.

use std::path::PathBuf;
use std::process::Command;

use super::support::{Served, images_dir_or_skip};

#[test]
fn serial_compat_node() {
    let compat = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../compat");
    if !compat.join("node_modules/@cloudflare/sandbox").is_dir() {
        eprintln!(
            "SKIPPED serial_compat_node: run `npm ci` in {} first",
            compat.display()
        );
        return;
    }
    let Some(images) = images_dir_or_skip("serial_compat_node") else {
        return;
    };
    let served = Served::start(&images);
    let output = Command::new("node")
        .args([
            // The global WebSocket of Node 20 (test/websocket.test.mjs); default from Node 22.
            "--experimental-websocket",
            "--import",
            "./register.mjs",
            "--test",
            "--test-reporter",
            "tap",
            "test/",
        ])
        .current_dir(&compat)
        .env("SANDPIT_URL", &served.url)
        .env("SANDPIT_KEY", &served.key)
        .output()
        .expect("running node (is Node 20 installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "node --test failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        served.log()
    );
    assert!(stdout.contains("\n# fail 0"), "{stdout}");
    assert!(!stdout.contains("\n# pass 0"), "no test ran:\n{stdout}");
}
