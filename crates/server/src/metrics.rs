//! Prometheus metrics, one recorder per server (no global recorder, so several servers can run
//! in one process, as the tests do).

use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::SandboxState;

static META: Metadata<'static> = Metadata::new("sandpit_server", Level::INFO, None);

const SANDBOXES: &str = "sandpit_sandboxes";
const STARTS: &str = "sandpit_sandbox_starts_total";
const EXEC_DURATION: &str = "sandpit_exec_duration_seconds";
const ERRORS: &str = "sandpit_errors_total";

/// The server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    starts: Counter,
    exec_duration: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let buckets = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let recorder = match PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(EXEC_DURATION.into()), &buckets)
        {
            Ok(b) => b.build_recorder(),
            // Only fails on an empty bucket list; fall back to summaries.
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            (name, unit, SharedString::const_str(help))
        };
        for (name, unit, help) in [
            describe(SANDBOXES, None, "Sandboxes by lifecycle state"),
            describe(STARTS, None, "Sandbox starts (creations and wake-ups)"),
            describe(
                EXEC_DURATION,
                Some(Unit::Seconds),
                "Latency of forwarded /api/execute calls",
            ),
            describe(ERRORS, None, "Control-plane error responses by code"),
        ] {
            recorder.describe_counter(name.into(), unit, help);
        }
        let handle = recorder.handle();
        let starts = recorder.register_counter(&Key::from_name(STARTS), &META);
        let exec_duration = recorder.register_histogram(&Key::from_name(EXEC_DURATION), &META);
        Metrics {
            recorder,
            handle,
            starts,
            exec_duration,
        }
    }

    pub fn sandbox_started(&self) {
        self.starts.increment(1);
    }

    pub fn exec_finished(&self, elapsed: Duration) {
        self.exec_duration.record(elapsed.as_secs_f64());
    }

    pub fn error(&self, code: ErrorCode) {
        let key = Key::from_parts(ERRORS, vec![Label::new("code", code.as_str())]);
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// Prometheus text; `counts` are the current sandboxes per state (missing states are 0).
    pub fn render(&self, counts: &[(SandboxState, u64)]) -> String {
        for state in [
            SandboxState::Creating,
            SandboxState::Running,
            SandboxState::Sleeping,
        ] {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            let key = Key::from_parts(SANDBOXES, vec![Label::new("state", state.as_str())]);
            self.recorder.register_gauge(&key, &META).set(n as f64);
        }
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
