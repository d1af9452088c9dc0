//! The TypeScript SDK's suite (sdks/typescript, `node --test`) against a real server of its own.
//! Not `serial_*`: it uses its own server, so nextest runs it beside other tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::{Served, TestS3, images_dir_or_skip};

/// Whether a missing prerequisite must fail the test (CI) rather than skip it (a developer
/// machine without Node).
pub(super) fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub(super) fn skip_or_fail(test: &str, why: String) {
    assert!(
        !required(),
        "{test}: {why} (CI=true: missing dependencies fail)"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// The default image, when `package` is installed in `dir`'s node_modules (`npm ci`) and the
/// image exists; otherwise `None`, after [`skip_or_fail`].
pub(super) fn node_suite_ready(test: &str, dir: &Path, package: &str) -> Option<PathBuf> {
    if !npm_installed(test, dir, package) {
        return None;
    }
    let images = images_dir_or_skip(test);
    assert!(images.is_some() || !required(), "{test}: no default image");
    images
}

/// Whether `package` is in `dir`'s node_modules (`npm ci` ran); if not, [`skip_or_fail`].
fn npm_installed(test: &str, dir: &Path, package: &str) -> bool {
    let installed = dir.join("node_modules").join(package).exists();
    if !installed {
        skip_or_fail(
            test,
            format!(
                "run `npm ci` in {} first (scripts/test.sh does)",
                dir.display()
            ),
        );
    }
    installed
}

/// Prints a TAP run's output and asserts that no test failed and `passed` tests passed (any
/// number but 0 when `None`).
pub(super) fn assert_tap_passed(stdout: &str, stderr: &str, served: &Served, passed: Option<u32>) {
    println!("{stdout}\n{stderr}");
    assert!(
        stdout.contains("\n# fail 0"),
        "{stdout}\nserver log:\n{}",
        served.log()
    );
    match passed {
        Some(n) => assert!(
            stdout.contains(&format!("\n# pass {n}\n")),
            "not every test ran:\n{stdout}"
        ),
        None => assert!(!stdout.contains("\n# pass 0"), "no test ran:\n{stdout}"),
    }
}

/// Runs `cmd`; on failure panics with its output and `context()`.
pub(super) fn run(cmd: &mut Command, what: &str, context: &dyn Fn() -> String) -> (String, String) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (is Node 20 installed?)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}\n{}",
        output.status,
        context()
    );
    (stdout, stderr)
}

#[test]
fn sdk_typescript_suite() {
    let test = "sdk_typescript_suite";
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sdk = root.join("sdks/typescript");
    let examples = root.join("examples/typescript");
    if !npm_installed(test, &examples, "@sandpit/sdk") {
        return;
    }
    let Some(images) = node_suite_ready(test, &sdk, "typescript") else {
        return;
    };
    // dist/ is what the tests and the example import: build it from the current sources.
    run(
        Command::new("node")
            .args(["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"])
            .current_dir(&sdk),
        "tsc",
        &String::new,
    );
    // Bucket mounts (test/persistence.test.mjs) need a real S3 server the server may reach.
    let s3 = TestS3::start("ts-sdk-bucket");
    let served = Served::start_with(&images, &s3.serve_args());
    let (stdout, stderr) = node_test(&sdk, &served, &s3);
    assert_tap_passed(&stdout, &stderr, &served, None);
}

fn node_test(sdk: &Path, served: &Served, s3: &TestS3) -> (String, String) {
    let s3_env = s3.env_json();
    node_tap(
        sdk,
        // The global WebSocket of Node 20 (terminal()); default from Node 22.
        &[
            "--experimental-websocket",
            "--test-concurrency",
            "4",
            "test/",
        ],
        served,
        &[("SANDPIT_TEST_S3", std::ffi::OsStr::new(&s3_env))],
        "node --test",
    )
}

/// `node --test` with the TAP reporter in `dir` (`args`: more options, then the test files),
/// against `served` (`SANDPIT_URL`, `SANDPIT_KEY`, and `env`); panics with the server's log if
/// node fails. Returns stdout and stderr.
pub(super) fn node_tap(
    dir: &Path,
    args: &[&str],
    served: &Served,
    env: &[(&str, &std::ffi::OsStr)],
    what: &str,
) -> (String, String) {
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter", "tap"])
        .args(args)
        .current_dir(dir)
        .env("SANDPIT_URL", &served.url)
        .env("SANDPIT_KEY", &served.key);
    // The SDKs fall back to these for mountBucket's keys; the tests pass their own.
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "R2_ACCESS_KEY_ID",
        "R2_SECRET_ACCESS_KEY",
    ] {
        node.env_remove(name);
    }
    for (name, value) in env {
        node.env(name, value);
    }
    run(&mut node, what, &|| {
        format!("server log:\n{}", served.log())
    })
}
