//! SDK overhead rows (issue 12's target): warm `exec('true')` through the TypeScript and Python
//! SDKs against the same call made with a bare HTTP client of the same language, in the same run
//! and against the same server. The SDKs' own benchmark scripts take the samples (alternating SDK
//! and bare calls so machine load hits both alike) and print them as JSON; this turns them into
//! report rows. An SDK whose runtime or dependencies are missing is skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::stats::Samples;
use crate::{Row, Section};

/// The target: SDK p50 at most this much above the bare client's p50.
const TARGET_MS: f64 = 0.3;
/// The Python SDK's `run_code('1+1')` target p50.
const RUN_CODE_TARGET_MS: f64 = 3.0;

/// One SDK's benchmark program.
struct Sdk {
    name: &'static str,
    bare: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

/// The repository root (the bench runs from a checkout).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The TypeScript SDK's script, or why it cannot run.
fn typescript(calls: usize) -> Result<Sdk, String> {
    let sdk = repo_root().join("sdks/typescript");
    if !sdk.join("dist/index.js").exists() {
        return Err("sdks/typescript/dist is missing (`npm ci && npm run build` there)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("`node` is not on PATH".into());
    }
    Ok(Sdk {
        name: "TypeScript SDK (`@sandpit/sdk`)",
        bare: "bare `fetch`",
        program: "node".into(),
        args: vec![
            sdk.join("bench/exec-overhead.mjs").display().to_string(),
            calls.to_string(),
            "--json".into(),
        ],
    })
}

/// The Python SDK's script in the venv `scripts/python-sdk.sh` makes, or why it cannot run.
fn python(calls: usize) -> Result<Sdk, String> {
    let root = repo_root();
    let python = root.join("target/sdk-python-venv/bin/python");
    if !python.exists() {
        return Err("target/sdk-python-venv is missing (`scripts/python-sdk.sh` makes it)".into());
    }
    Ok(Sdk {
        name: "Python SDK (`sandpit`, sync)",
        bare: "bare `httpx.Client`",
        program: python,
        args: vec![
            root.join("sdks/python/tools/bench.py")
                .display()
                .to_string(),
            calls.to_string(),
            "--json".into(),
        ],
    })
}

/// Runs both SDKs' programs against the server at `url` (`calls` pairs each).
pub fn measure(url: &str, key: &str, calls: usize) -> Section {
    let mut section = Section::default();
    for sdk in [typescript(calls), python(calls)] {
        let sdk = match sdk {
            Ok(sdk) => sdk,
            Err(why) => {
                eprintln!("SDK rows skipped: {why}");
                section
                    .notes
                    .push(format!("SDK overhead row skipped: {why}."));
                continue;
            }
        };
        eprintln!("{} vs {} x{calls}...", sdk.name, sdk.bare);
        match run(&sdk, url, key) {
            Ok(samples) => add_rows(&mut section, &sdk, samples),
            Err(e) => {
                eprintln!("{}: {e:#}", sdk.name);
                section
                    .notes
                    .push(format!("{} rows failed: {e:#}.", sdk.name));
            }
        }
    }
    section
}

/// The program's JSON line: `{"sdk": [ms], "bare": [ms]}` (TypeScript) or that per call
/// (`{"exec": {...}, "run_code": {...}}`, Python).
fn run(sdk: &Sdk, url: &str, key: &str) -> anyhow::Result<Value> {
    let output = Command::new(&sdk.program)
        .args(&sdk.args)
        .env("SANDPIT_URL", url)
        .env("SANDPIT_KEY", key)
        .output()
        .with_context(|| format!("running {}", sdk.program.display()))?;
    if !output.status.success() {
        bail!(
            "{} exited with {}: {}",
            sdk.program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line in the program's output")?;
    Ok(serde_json::from_str(line)?)
}

fn samples(value: &Value) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    for ms in value.as_array().context("samples must be an array")? {
        let ms = ms.as_f64().context("a sample must be a number")?;
        samples.push(Duration::from_secs_f64(ms / 1000.0));
    }
    Ok(samples)
}

fn add_rows(section: &mut Section, sdk: &Sdk, value: Value) {
    let exec = value.get("exec").unwrap_or(&value);
    let (Ok(with_sdk), Ok(bare)) = (samples(&exec["sdk"]), samples(&exec["bare"])) else {
        section
            .notes
            .push(format!("{}: unreadable samples.", sdk.name));
        return;
    };
    let delta = with_sdk.p50() - bare.p50();
    let ratio = with_sdk.p50() / bare.p50();
    section.rows.push(Row {
        name: format!(
            "{} warm `exec('true')` (N={}; {ratio:.2}× bare, {delta:+.3} ms)",
            sdk.name,
            with_sdk.len()
        ),
        samples: with_sdk,
        target: format!("p50 ≤ bare + {TARGET_MS} ms"),
    });
    section.rows.push(Row {
        name: format!(
            "baseline: {} `POST …/api/execute` `true`, same run (N={})",
            sdk.bare,
            bare.len()
        ),
        samples: bare,
        target: String::new(),
    });
    section.verdicts.push((
        format!("{} exec p50 ≤ bare client p50 + {TARGET_MS} ms", sdk.name),
        format!("{delta:+.3} ms ({ratio:.2}×)"),
        delta <= TARGET_MS,
    ));
    if let Some(code) = value.get("run_code")
        && let Ok(run_code) = samples(&code["sdk"])
    {
        let p50 = run_code.p50();
        section.rows.push(Row {
            name: format!("{} `run_code('1+1')` (N={})", sdk.name, run_code.len()),
            samples: run_code,
            target: format!("p50 ≤ {RUN_CODE_TARGET_MS} ms"),
        });
        section.verdicts.push((
            format!("{} run_code('1+1') p50 ≤ {RUN_CODE_TARGET_MS} ms", sdk.name),
            format!("{p50:.2} ms"),
            p50 <= RUN_CODE_TARGET_MS,
        ));
    }
}
