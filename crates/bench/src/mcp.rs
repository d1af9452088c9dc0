//! MCP `exec` tool round trip over streamable HTTP (`POST /mcp`, `tools/call` of `exec true` on a
//! warm sandbox), with the plain HTTP exec of the same sandbox measured in the same run as the
//! baseline. The MCP client is a minimal JSON-RPC-over-HTTP one written here, so the numbers are
//! the server's, not a client library's.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use sandpit_client::Client;
use serde_json::{Value, json};

use crate::stats::Samples;
use crate::{Row, Section, create_and_exec, exec_true};

/// No single call may take longer than this.
const SAMPLE_LIMIT: Duration = Duration::from_secs(30);
/// The protocol version the bench speaks (the newest the official TypeScript client speaks).
const PROTOCOL_VERSION: &str = "2025-11-25";

/// One MCP session on `/mcp`.
struct McpSession {
    http: reqwest::Client,
    url: String,
    key: String,
    session: String,
    next_id: u64,
}

impl McpSession {
    async fn open(base_url: &str, key: &str) -> anyhow::Result<McpSession> {
        let mut session = McpSession {
            http: reqwest::Client::new(),
            url: format!("{base_url}/mcp"),
            key: key.to_owned(),
            session: String::new(),
            next_id: 0,
        };
        let init = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "sandpit-bench", "version": "0" },
        });
        let (response, session_id) = session.request("initialize", init).await?;
        session.session = session_id.context("initialize answered without Mcp-Session-Id")?;
        if response.get("result").is_none() {
            bail!("initialize failed: {response}");
        }
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let status = session.post(&initialized).send().await?.status();
        if !status.is_success() {
            bail!("notifications/initialized: HTTP {status}");
        }
        Ok(session)
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", PROTOCOL_VERSION)
            .json(body);
        if !self.session.is_empty() {
            request = request.header("Mcp-Session-Id", &self.session);
        }
        request
    }

    /// Sends a request; returns its JSON-RPC response (read from the SSE answer as soon as it
    /// arrives) and the session id header, if any.
    async fn request(
        &mut self,
        method: &str,
        params: Value,
    ) -> anyhow::Result<(Value, Option<String>)> {
        self.next_id += 1;
        let id = self.next_id;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self.post(&body).send().await?;
        if !response.status().is_success() {
            bail!("{method}: HTTP {}", response.status());
        }
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue;
                };
                if let Ok(message) = serde_json::from_str::<Value>(data.trim())
                    && message["id"] == id
                {
                    return Ok((message, session));
                }
            }
        }
        bail!("{method}: the answer ended without a response")
    }

    /// `tools/call` of `exec`; fails unless the command exited 0.
    async fn exec_true(&mut self, sandbox_id: &str) -> anyhow::Result<()> {
        let params = json!({
            "name": "exec",
            "arguments": { "sandbox_id": sandbox_id, "command": "true" },
        });
        let (response, _) =
            tokio::time::timeout(SAMPLE_LIMIT, self.request("tools/call", params)).await??;
        let result = &response["result"];
        if result["isError"] != false || result["structuredContent"]["exitCode"] != 0 {
            bail!("MCP exec true failed: {response}");
        }
        Ok(())
    }
}

/// The MCP row and the plain HTTP exec baseline of the same run, in a sandbox of their own.
pub async fn measure(client: &Client, key: &str, samples: usize) -> anyhow::Result<Section> {
    let id = format!("mcp-{}", std::process::id());
    create_and_exec(client, &id).await?;
    let result = measure_in(client, key, &id, samples).await;
    client.destroy(&id).await?;
    result
}

async fn measure_in(
    client: &Client,
    key: &str,
    id: &str,
    samples: usize,
) -> anyhow::Result<Section> {
    eprintln!("MCP exec round trip x{samples}...");
    let sandbox = client.sandbox(id);
    let mut mcp = McpSession::open(client.base_url(), key).await?;
    for _ in 0..10 {
        mcp.exec_true(id).await?;
        exec_true(&sandbox).await?;
    }
    // Interleaved, so both rows see the same machine load.
    let (mut over_mcp, mut plain) = (Samples::default(), Samples::default());
    for _ in 0..samples {
        let t = Instant::now();
        mcp.exec_true(id).await?;
        over_mcp.push(t.elapsed());
        let t = Instant::now();
        exec_true(&sandbox).await?;
        plain.push(t.elapsed());
    }
    let p50 = over_mcp.p50();
    let ratio = p50 / plain.p50();
    Ok(Section {
        verdicts: vec![(
            "MCP exec tool round trip p50 ≤ 3 ms".into(),
            format!("{p50:.2} ms"),
            p50 <= 3.0,
        )],
        notes: vec![format!(
            "MCP `exec` round trip: `POST /mcp` `tools/call` of `exec` with `true` in an open MCP \
             session (streamable HTTP, SSE answer), which calls `/api/execute/stream` on \
             loopback with the caller's key; ratio to plain `POST /api/execute` of `true` on the \
             same warm sandbox, interleaved in the same run: **{ratio:.2}×**."
        )],
        rows: vec![
            Row {
                name: format!("MCP `exec` tool round trip over HTTP, `true` (N={samples})"),
                samples: over_mcp,
                target: "p50 ≤ 3 ms".into(),
            },
            Row {
                name: format!("baseline: plain HTTP `exec true`, same sandbox (N={samples})"),
                samples: plain,
                target: String::new(),
            },
        ],
    })
}
