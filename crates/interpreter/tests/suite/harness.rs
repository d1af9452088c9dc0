//! Runs steps through the Node executor (`node.js`) with `tests/harness.js`, which speaks the
//! fd 3 / fd 4 protocol, and returns the events of each step.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use sandpit_interpreter::prepare_javascript;
use serde_json::{Value, json};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The executor script the agent embeds.
pub fn executor_path() -> PathBuf {
    manifest_dir().join("../agent/src/interpreter/executors/node.js")
}

/// One request, optionally interrupted with SIGINT after some milliseconds.
pub struct Step {
    pub request: Value,
    pub interrupt_after_ms: Option<u64>,
}

impl Step {
    /// A `run` of `source`, prepared as the agent does.
    pub fn cell(source: &str, typescript: bool) -> Self {
        let prepared = match prepare_javascript(source, typescript) {
            Ok(prepared) => prepared,
            Err(error) => panic!("prepare {source:?}: {error}"),
        };
        Self::raw(json!({"op": "run", "code": prepared.code, "async": prepared.is_async}))
    }

    pub fn js(source: &str) -> Self {
        Self::cell(source, false)
    }

    pub fn ts(source: &str) -> Self {
        Self::cell(source, true)
    }

    pub fn raw(request: Value) -> Self {
        Self {
            request,
            interrupt_after_ms: None,
        }
    }

    pub fn interrupt_after(mut self, ms: u64) -> Self {
        self.interrupt_after_ms = Some(ms);
        self
    }
}

/// What the harness saw.
pub struct Transcript {
    /// Events per step, each with `t`: milliseconds since the request was sent.
    pub steps: Vec<Vec<Value>>,
    pub stdout: String,
    pub stderr: String,
}

impl Transcript {
    /// The `text/plain` of the only result of step `i`.
    pub fn text(&self, i: usize) -> String {
        let results: Vec<&Value> = self.of_type(i, "result");
        assert_eq!(results.len(), 1, "step {i}: {:?}", self.steps[i]);
        results[0]["data"]["text/plain"]
            .as_str()
            .unwrap_or_else(|| panic!("step {i}: no text/plain: {:?}", self.steps[i]))
            .to_owned()
    }

    pub fn of_type(&self, i: usize, kind: &str) -> Vec<&Value> {
        self.steps[i].iter().filter(|e| e["type"] == kind).collect()
    }

    /// All stdout text of step `i`.
    pub fn stdout_of(&self, i: usize) -> String {
        self.of_type(i, "stdout")
            .iter()
            .filter_map(|e| e["text"].as_str())
            .collect()
    }

    /// Asserts step `i` ended without an error event.
    pub fn ok(&self, i: usize) -> &Self {
        assert!(
            self.of_type(i, "error").is_empty(),
            "step {i} failed: {:?}",
            self.steps[i]
        );
        self
    }
}

/// Runs `steps` in one fresh executor.
pub fn run(steps: Vec<Step>) -> Transcript {
    let steps_json: Vec<Value> = steps
        .iter()
        .map(|step| match step.interrupt_after_ms {
            Some(ms) => json!({"request": step.request, "interruptAfterMs": ms}),
            None => json!({"request": step.request}),
        })
        .collect();
    // The host's node by default; SANDPIT_TEST_NODE picks another (say, the image's).
    let node = std::env::var("SANDPIT_TEST_NODE").unwrap_or_else(|_| "node".into());
    let mut child = Command::new(node)
        .arg(manifest_dir().join("tests/harness.js"))
        .arg(executor_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node must be installed for these tests");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(Value::Array(steps_json).to_string().as_bytes())
        .expect("write steps");
    let output = child.wait_with_output().expect("harness");
    let transcript: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "harness output ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success(),
        "harness failed: {transcript}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let steps = transcript["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|events| events.as_array().expect("events").clone())
        .collect();
    Transcript {
        steps,
        stdout: transcript["stdout"].as_str().unwrap_or_default().to_owned(),
        stderr: transcript["stderr"].as_str().unwrap_or_default().to_owned(),
    }
}
