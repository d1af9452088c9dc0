//! Background process start → first log line at a streaming client: `POST
//! /v1/sandboxes/{id}/api/process/start` of `echo hi`, then `GET .../api/process/{pid}/stream`
//! (the SDK's `startProcess` + `streamProcessLogs`), timed until the first `stdout` event with
//! the line. Baseline: fork+exec of `echo hi` on the host, timed to the first byte on its pipe.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use sandpit_client::protocol::container::{
    ProcessStartRequest, ProcessStartResult, ProcessStreamEvent,
};

use crate::stats::Samples;

/// No single sample may take longer than this (a stuck stream fails the run, never hangs it).
const SAMPLE_LIMIT: Duration = Duration::from_secs(10);

pub struct ProcessStream {
    /// Start request sent → first `stdout` event with the line received.
    pub sandbox: Samples,
    /// Start request sent → its answer (the part of `sandbox` spent before the stream opens).
    pub start_answer: Samples,
    /// Host fork+exec → first byte on the pipe.
    pub baseline: Samples,
}

/// Takes `n` samples in sandbox `id` of the server at `base_url` (and `n` baseline samples).
pub async fn measure(
    base_url: &str,
    api_key: &str,
    id: &str,
    n: usize,
) -> anyhow::Result<ProcessStream> {
    let http = reqwest::Client::new();
    let api = format!("{base_url}/v1/sandboxes/{id}/api/process");
    let mut result = ProcessStream {
        sandbox: Samples::default(),
        start_answer: Samples::default(),
        baseline: Samples::default(),
    };
    // Warm-up: connections, the session's shell, page cache.
    for _ in 0..5 {
        sample(&http, &api, api_key).await?;
    }
    for _ in 0..n {
        let (total, answer) = tokio::time::timeout(SAMPLE_LIMIT, sample(&http, &api, api_key))
            .await
            .context("no first log line within 10 s")??;
        result.sandbox.push(total);
        result.start_answer.push(answer);
    }
    for _ in 0..n {
        result.baseline.push(host_first_byte()?);
    }
    Ok(result)
}

/// One start + stream; returns (time to the first line, time to the start answer).
async fn sample(
    http: &reqwest::Client,
    api: &str,
    api_key: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let request = ProcessStartRequest {
        command: "echo hi".into(),
        ..Default::default()
    };
    let t = Instant::now();
    let started: ProcessStartResult = http
        .post(format!("{api}/start"))
        .bearer_auth(api_key)
        .json(&request)
        .send()
        .await?
        .error_for_status()
        .context("POST /api/process/start")?
        .json()
        .await?;
    let answer = t.elapsed();
    let response = http
        .get(format!("{api}/{}/stream", started.process_id))
        .bearer_auth(api_key)
        .send()
        .await?
        .error_for_status()
        .context("GET /api/process/{id}/stream")?;
    let mut body = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk?);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
            match parse(&frame)? {
                Some(ProcessStreamEvent::Stdout { data, .. }) if data.contains("hi") => {
                    return Ok((t.elapsed(), answer));
                }
                Some(ProcessStreamEvent::Exit { .. } | ProcessStreamEvent::Error { .. }) => {
                    bail!("the stream ended without the line `hi`")
                }
                _ => {}
            }
        }
    }
    bail!("the stream closed without the line `hi`")
}

/// The event in one SSE frame (`data: {json}` lines); `None` for frames without data.
fn parse(frame: &[u8]) -> anyhow::Result<Option<ProcessStreamEvent>> {
    let text = std::str::from_utf8(frame).context("SSE frame is not UTF-8")?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_str(&data.join("\n")).context("SSE event")?,
    ))
}

/// fork+exec `echo hi` with a pipe, timed until its first byte arrives.
fn host_first_byte() -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut child = Command::new("echo")
        .arg("hi")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning echo")?;
    let mut byte = [0u8; 1];
    let read = child
        .stdout
        .as_mut()
        .context("echo's stdout")?
        .read(&mut byte)?;
    let elapsed = t.elapsed();
    child.wait()?;
    if read != 1 || byte[0] != b'h' {
        bail!("echo wrote nothing");
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stdout_frames() {
        let frame = br#"data: {"type":"stdout","data":"hi\n","processId":"p","timestamp":"t"}

"#;
        let event = parse(frame).unwrap();
        assert!(matches!(event, Some(ProcessStreamEvent::Stdout { data, .. }) if data == "hi\n"));
        assert!(parse(b": keep-alive\n\n").unwrap().is_none());
        assert!(parse(b"data: {not json}\n\n").is_err());
    }

    #[test]
    fn host_baseline_reads_the_first_byte() {
        assert!(host_first_byte().unwrap() < SAMPLE_LIMIT);
    }
}
