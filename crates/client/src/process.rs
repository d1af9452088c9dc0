//! Background processes of one sandbox (`/api/process/*`) and port readiness
//! (`/api/port-watch`).

use std::ops::RangeInclusive;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use sandpit_protocol::ErrorCode;
use sandpit_protocol::container::{
    EnvMap, KillAllResponse, KillResponse, PortWatchEvent, PortWatchEventKind, PortWatchRequest,
    ProcessGetResponse, ProcessInfo, ProcessListResponse, ProcessLogsResponse, ProcessStartRequest,
    ProcessStartResult, ProcessStdinRequest, ProcessStdinResponse, ProcessStreamEvent,
};

use crate::client::percent_encode;
use crate::error::{ClientError, Result};
use crate::sandbox::SandboxHandle;
use crate::sse::{self, EventStream};

/// Options of [`SandboxHandle::start_process`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessOptions {
    /// The id to give the process (`RESOURCE_BUSY` while a running process has it); generated
    /// by the sandbox when absent.
    pub process_id: Option<String>,
    /// Session to start from; the handle's session (if any) when absent.
    pub session_id: Option<String>,
    /// Variables for this process only; `None` values unset a variable.
    pub env: EnvMap,
    /// Working directory of the process.
    pub cwd: Option<String>,
    /// Kill the process after this many milliseconds (exit code 124); absent or `0`: never.
    pub timeout_ms: Option<u64>,
    /// Keep stdin open for [`ProcessHandle::write_stdin`] (else the process reads nothing).
    pub stdin: bool,
}

impl ProcessOptions {
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.process_id = Some(id.into());
        self
    }

    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), Some(value.into()));
        self
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }
}

/// How [`ProcessHandle::wait_for_port`] decides a port is ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PortMode {
    /// A `GET` of the path answers with a status in the range.
    #[default]
    Http,
    /// A TCP connection is accepted.
    Tcp,
}

/// Options of [`ProcessHandle::wait_for_port`]; the sandbox's defaults when `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortWaitOptions {
    pub mode: PortMode,
    /// HTTP path to probe (default `/`).
    pub path: Option<String>,
    /// Accepted HTTP statuses (default 200..=399).
    pub status: Option<RangeInclusive<u16>>,
    /// Time between probes (default 500 ms).
    pub interval: Option<Duration>,
    /// Give up after this long (default: wait as long as the process runs).
    pub timeout: Option<Duration>,
}

/// What [`ProcessHandle::wait_for_log`] looks for in each line of output.
#[derive(Debug, Clone)]
pub enum LogPattern {
    /// The line contains this text.
    Contains(String),
    /// The line matches this expression.
    Regex(regex::Regex),
}

impl LogPattern {
    fn matches(&self, line: &str) -> bool {
        match self {
            LogPattern::Contains(text) => line.contains(text.as_str()),
            LogPattern::Regex(re) => re.is_match(line),
        }
    }
}

impl From<&str> for LogPattern {
    fn from(text: &str) -> Self {
        LogPattern::Contains(text.to_owned())
    }
}

impl From<String> for LogPattern {
    fn from(text: String) -> Self {
        LogPattern::Contains(text)
    }
}

impl From<regex::Regex> for LogPattern {
    fn from(re: regex::Regex) -> Self {
        LogPattern::Regex(re)
    }
}

/// One background process of a sandbox. Cheap to clone; the process lives on when the handle
/// is dropped.
#[derive(Debug, Clone)]
pub struct ProcessHandle {
    /// The process id within the sandbox (`proc_…` or the one asked for).
    pub id: String,
    /// The OS pid inside the sandbox, when known.
    pub pid: Option<u32>,
    sandbox: SandboxHandle,
}

impl SandboxHandle {
    /// Starts `command` (with bash) in the background.
    pub async fn start_process(
        &self,
        command: &str,
        options: &ProcessOptions,
    ) -> Result<ProcessHandle> {
        let body = ProcessStartRequest {
            command: command.to_owned(),
            session_id: options
                .session_id
                .clone()
                .or_else(|| self.session().map(str::to_owned)),
            process_id: options.process_id.clone(),
            timeout_ms: options
                .timeout_ms
                .map(sandpit_protocol::time::TimeoutMs::from_millis),
            env: (!options.env.is_empty()).then(|| options.env.clone()),
            cwd: options.cwd.clone(),
            stdin: options.stdin.then_some(true),
            ..ProcessStartRequest::default()
        };
        let started: ProcessStartResult = self.post("process/start", &body).await?;
        Ok(ProcessHandle {
            id: started.process_id,
            pid: started.pid,
            sandbox: self.clone(),
        })
    }

    /// Every process the sandbox knows of, running or ended.
    pub async fn list_processes(&self) -> Result<Vec<ProcessInfo>> {
        let response: ProcessListResponse = self.get("process/list").await?;
        Ok(response.processes)
    }

    /// A handle on process `id`; `PROCESS_NOT_FOUND` if the sandbox has none by that id.
    pub async fn process(&self, id: &str) -> Result<ProcessHandle> {
        let info = self.process_info(id).await?;
        Ok(ProcessHandle {
            id: info.id,
            pid: info.pid,
            sandbox: self.clone(),
        })
    }

    /// A handle on process `id`, or `None` if the sandbox has none by that id (the seed's
    /// `getProcess`, which answers `null`).
    pub async fn get_process(&self, id: &str) -> Result<Option<ProcessHandle>> {
        match self.process(id).await {
            Ok(handle) => Ok(Some(handle)),
            Err(e) if e.code() == Some(ErrorCode::ProcessNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Kills every running process (and what they left behind); returns how many were running.
    pub async fn kill_all(&self) -> Result<usize> {
        let request = self
            .client()
            .request(Method::DELETE, &self.path("process/kill-all")?);
        let response: KillAllResponse = self.client().json(request).await?;
        Ok(response.cleaned_count)
    }

    async fn process_info(&self, id: &str) -> Result<ProcessInfo> {
        let response: ProcessGetResponse = self.get(&process_endpoint(id, "")?).await?;
        Ok(response.process)
    }
}

impl ProcessHandle {
    /// The process's current record (status, exit code...).
    pub async fn info(&self) -> Result<ProcessInfo> {
        self.sandbox.process_info(&self.id).await
    }

    /// The buffered output so far (the newest 1 MiB of each stream).
    pub async fn logs(&self) -> Result<ProcessLogsResponse> {
        self.sandbox
            .get(&process_endpoint(&self.id, "/logs")?)
            .await
    }

    /// The output as events: `process_info`, the buffered output, live output, and finally
    /// `exit` (or `error` when the exit status is unknown).
    pub async fn stream_logs(&self) -> Result<EventStream<ProcessStreamEvent>> {
        let path = self.sandbox.path(&process_endpoint(&self.id, "/stream")?)?;
        let request = self
            .sandbox
            .client()
            .request(Method::GET, &path)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.sandbox.client().send(request).await?;
        Ok(sse::decode(response.bytes_stream()))
    }

    /// Kills the process tree with `signal` (`"SIGINT"`, `"INT"`...; SIGTERM by default). The
    /// sandbox answers once the tree is gone.
    pub async fn kill(&self, signal: Option<&str>) -> Result<()> {
        let mut path = self.sandbox.path(&process_endpoint(&self.id, "")?)?;
        if let Some(signal) = signal {
            path.push_str("?signal=");
            path.push_str(&percent_encode(signal));
        }
        let request = self.sandbox.client().request(Method::DELETE, &path);
        let _: KillResponse = self.sandbox.client().json(request).await?;
        Ok(())
    }

    /// Writes `bytes` to the process's stdin (started with [`ProcessOptions::stdin`]); with
    /// `close` the process then sees end of input.
    pub async fn write_stdin(&self, bytes: &[u8], close: bool) -> Result<()> {
        use base64::Engine as _;
        let body = ProcessStdinRequest {
            data_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            close,
            ..ProcessStdinRequest::default()
        };
        let _: ProcessStdinResponse = self
            .sandbox
            .post(&process_endpoint(&self.id, "/stdin")?, &body)
            .await?;
        Ok(())
    }

    /// Waits until the process ends and returns its exit code.
    pub async fn wait_for_exit(&self, timeout: Option<Duration>) -> Result<i32> {
        let wait = async {
            let mut events = self.stream_logs().await?;
            while let Some(event) = events.next().await {
                match event? {
                    ProcessStreamEvent::Exit { exit_code, .. } => return Ok(exit_code),
                    ProcessStreamEvent::Error { data, .. } => {
                        return Err(ClientError::Stream(data));
                    }
                    _ => {}
                }
            }
            Err(ended_early(&self.id))
        };
        with_timeout(timeout, wait, || {
            format!("process {} did not exit in time", self.id)
        })
        .await
    }

    /// Waits for a line of output (stdout or stderr, already printed or to come) that matches
    /// `pattern`, and returns it without its line ending. Fails if the process ends first.
    pub async fn wait_for_log(
        &self,
        pattern: impl Into<LogPattern>,
        timeout: Option<Duration>,
    ) -> Result<String> {
        let pattern = pattern.into();
        let wait = async {
            let mut events = self.stream_logs().await?;
            let (mut stdout, mut stderr) = (Lines::default(), Lines::default());
            while let Some(event) = events.next().await {
                let found = match event? {
                    ProcessStreamEvent::Stdout { data, .. } => stdout.push(&data, &pattern),
                    ProcessStreamEvent::Stderr { data, .. } => stderr.push(&data, &pattern),
                    ProcessStreamEvent::Exit { exit_code, .. } => {
                        // A last line without a newline counts too.
                        if let Some(line) = stdout.finish(&pattern).or(stderr.finish(&pattern)) {
                            return Ok(line);
                        }
                        return Err(ClientError::Stream(format!(
                            "process {} exited with code {exit_code} before the log matched",
                            self.id
                        )));
                    }
                    ProcessStreamEvent::Error { data, .. } => {
                        return Err(ClientError::Stream(data));
                    }
                    ProcessStreamEvent::ProcessInfo { .. } => None,
                };
                if let Some(line) = found {
                    return Ok(line);
                }
            }
            Err(ended_early(&self.id))
        };
        with_timeout(timeout, wait, || {
            format!("no log line of process {} matched in time", self.id)
        })
        .await
    }

    /// Waits until `port` inside the sandbox is ready (see [`PortWaitOptions`]). Returns the
    /// HTTP status seen (http mode). Fails if the process exits first.
    pub async fn wait_for_port(&self, port: u16, options: &PortWaitOptions) -> Result<Option<u16>> {
        let body = PortWatchRequest {
            port: i64::from(port),
            mode: Some(
                match options.mode {
                    PortMode::Http => "http",
                    PortMode::Tcp => "tcp",
                }
                .to_owned(),
            ),
            path: options.path.clone(),
            status_min: options.status.as_ref().map(|r| i64::from(*r.start())),
            status_max: options.status.as_ref().map(|r| i64::from(*r.end())),
            process_id: Some(self.id.clone()),
            interval: options
                .interval
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        };
        let wait = async {
            let mut events: EventStream<PortWatchEvent> =
                self.sandbox.post_stream("port-watch", &body).await?;
            while let Some(event) = events.next().await {
                let event = event?;
                match event.kind {
                    PortWatchEventKind::Watching => {}
                    PortWatchEventKind::Ready => return Ok(event.status_code),
                    PortWatchEventKind::ProcessExited => {
                        let code = event
                            .exit_code
                            .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
                        return Err(ClientError::Stream(format!(
                            "process {} exited (code {code}) before port {port} was ready",
                            self.id
                        )));
                    }
                    PortWatchEventKind::Error => {
                        return Err(ClientError::Stream(
                            event.error.unwrap_or_else(|| "port watch failed".into()),
                        ));
                    }
                }
            }
            Err(ClientError::Stream(format!(
                "port watch of {port} ended before the port was ready"
            )))
        };
        with_timeout(options.timeout, wait, || {
            format!("port {port} was not ready in time")
        })
        .await
    }
}

/// `process/<id><suffix>`, the id as one encoded segment.
fn process_endpoint(id: &str, suffix: &str) -> Result<String> {
    if id.is_empty() {
        return Err(ClientError::InvalidArgument("empty process id".into()));
    }
    Ok(format!("process/{}{suffix}", percent_encode(id)))
}

fn ended_early(id: &str) -> ClientError {
    ClientError::Stream(format!("the stream of process {id} ended before its exit"))
}

/// Runs `wait`, failing with [`ClientError::Timeout`] after `timeout` (if any).
pub(crate) async fn with_timeout<T>(
    timeout: Option<Duration>,
    wait: impl Future<Output = Result<T>>,
    message: impl FnOnce() -> String,
) -> Result<T> {
    match timeout {
        None => wait.await,
        Some(limit) => tokio::time::timeout(limit, wait)
            .await
            .unwrap_or_else(|_| Err(ClientError::Timeout(message()))),
    }
}

/// Splits one output stream into lines as its chunks arrive.
#[derive(Default)]
struct Lines {
    partial: String,
}

impl Lines {
    /// Adds a chunk; returns the first complete line that matches.
    fn push(&mut self, data: &str, pattern: &LogPattern) -> Option<String> {
        self.partial.push_str(data);
        let mut found = None;
        let mut consumed = 0;
        for (end, _) in self.partial.match_indices('\n') {
            let line = self.partial[consumed..end].trim_end_matches('\r');
            if pattern.matches(line) {
                found = Some(line.to_owned());
                break;
            }
            consumed = end + 1;
        }
        self.partial.drain(..consumed);
        found
    }

    /// The unterminated last line, if it matches.
    fn finish(&mut self, pattern: &LogPattern) -> Option<String> {
        let line = std::mem::take(&mut self.partial);
        let line = line.trim_end_matches('\r');
        (!line.is_empty() && pattern.matches(line)).then(|| line.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_across_chunks_and_not_partially() {
        let pattern = LogPattern::from("ready");
        let mut lines = Lines::default();
        assert_eq!(lines.push("starting\nrea", &pattern), None);
        assert_eq!(lines.push("dy on 80", &pattern), None);
        assert_eq!(
            lines.push("80\r\nmore\n", &pattern).as_deref(),
            Some("ready on 8080")
        );
        let mut lines = Lines::default();
        assert_eq!(lines.push("no newline ready", &pattern), None);
        assert_eq!(lines.finish(&pattern).as_deref(), Some("no newline ready"));
    }

    #[test]
    fn regex_patterns_match_lines() {
        let pattern = LogPattern::from(regex::Regex::new(r"^port (\d+)$").unwrap());
        let mut lines = Lines::default();
        assert_eq!(
            lines.push("the port 1\nport 42\n", &pattern).as_deref(),
            Some("port 42")
        );
    }

    #[test]
    fn process_ids_are_one_segment() {
        assert_eq!(
            process_endpoint("a/b c", "/logs").unwrap(),
            "process/a%2Fb%20c/logs"
        );
        assert!(process_endpoint("", "").is_err());
    }
}
