//! The Python SDK (sdks/python) against a real server: its pytest suite, and the example of
//! examples/python. Both use the venv scripts/python-sdk.sh makes in target/sdk-python-venv
//! (missing: skipped, or a failure under CI=true).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::support::{Served, images_dir_or_skip};

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
    Command::new(python)
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
    let Some((python, served)) = python_and_server("sdk_python_pytest") else {
        return;
    };
    let sdk = repo().join("sdks/python");
    let output = run_python(
        &python,
        &sdk,
        &["-m", "pytest", "-p", "no:cacheprovider", "tests"],
        &served,
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
