//! The Python SDK (sdks/python) against a real server: its pytest suite, and the example of
//! examples/python. Both use the venv scripts/python-sdk.sh makes in target/sdk-python-venv
//! (missing: skipped, or a failure under CI=true).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::support::{Served, TestS3, images_dir_or_skip};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, or `None` (after a loud SKIPPED line) when it is not there yet.
fn python_or_skip(test: &str) -> Option<PathBuf> {
    let python = repo().join("target/sdk-python-venv/bin/python");
    if python.is_file() {
        return Some(python);
    }
    let hint = "run scripts/python-sdk.sh (scripts/test.sh does)";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: no Python SDK venv at {}: {hint}",
        python.display()
    );
    eprintln!("SKIPPED {test}: no venv at {}: {hint}", python.display());
    None
}

/// `python args...` in `dir` against `served`, with the SDK's source on the path.
fn run_python(python: &Path, dir: &Path, args: &[&str], served: &Served) -> Output {
    run_python_with(python, dir, args, served, &[])
}

/// [`run_python`] with more environment (and never the caller's `AWS_*`/`R2_*` keys, which the
/// SDK's `mount_bucket` would fall back to).
fn run_python_with(
    python: &Path,
    dir: &Path,
    args: &[&str],
    served: &Served,
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(python);
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "R2_ACCESS_KEY_ID",
        "R2_SECRET_ACCESS_KEY",
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .current_dir(dir)
        .env("SANDPIT_URL", &served.url)
        .env("SANDPIT_KEY", &served.key)
        .env("PYTHONPATH", repo().join("sdks/python/src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("running the venv's python")
}

/// The venv's python and a fresh server, or `None` when the test is skipped.
fn python_and_server(test: &str) -> Option<(PathBuf, Served)> {
    let python = python_or_skip(test)?;
    let images = images_dir_or_skip(test)?;
    Some((python, Served::start(&images)))
}

#[test]
fn sdk_python_pytest() {
    let test = "sdk_python_pytest";
    let Some(python) = python_or_skip(test) else {
        return;
    };
    let Some(images) = images_dir_or_skip(test) else {
        return;
    };
    // Bucket mounts (tests/test_persistence.py) need a real S3 server the server may reach.
    let s3 = TestS3::start("py-sdk-bucket");
    let served = Served::start_with(&images, &s3.serve_args());
    let sdk = repo().join("sdks/python");
    let output = run_python_with(
        &python,
        &sdk,
        &["-m", "pytest", "-p", "no:cacheprovider", "tests"],
        &served,
        &[("SANDPIT_TEST_S3", &s3.env_json())],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "pytest failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        served.log()
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.contains(" passed"), "no test ran: {summary}");
    for bad in [" failed", " error", " skipped"] {
        assert!(!summary.contains(bad), "{summary}");
    }
}

#[test]
fn sdk_python_example() {
    let Some((python, served)) = python_and_server("sdk_python_example") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let chart = out.path().join("chart.png");
    let example = repo().join("examples/python/analysis.py");
    let output = run_python(
        &python,
        out.path(),
        &[example.to_str().unwrap(), chart.to_str().unwrap()],
        &served,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        served.log()
    );
    let png = std::fs::read(&chart).expect("the example saved no chart");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(stdout.contains("mean"), "{stdout}");
}
