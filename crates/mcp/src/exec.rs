//! The `exec` tool: a shell command run to completion with its output streamed from the
//! sandbox (so progress can be reported and cancellation stops it). Output too long for a
//! model's context is clipped, and the whole of it is saved to a file in the sandbox the model
//! can read in parts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rmcp::RoleServer;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use sandpit_client::protocol::container::{ExecEvent, ExitReason};
use sandpit_client::{ExecOptions, SandboxHandle};
use serde_json::json;

use crate::error::{ToolError, ToolResult};
use crate::follow::follow;
use crate::output::{Clipped, clip};
use crate::params::ExecParams;

/// Most bytes of one stream kept in memory: a command printing forever must not exhaust the
/// server. What goes beyond is counted, not kept.
const MAX_KEPT: usize = 8 * 1024 * 1024;

/// Where the full output of clipped commands goes in the sandbox.
const FULL_OUTPUT_DIR: &str = "/tmp/sandpit-mcp";

/// One output stream of a command, bounded to [`MAX_KEPT`] bytes.
#[derive(Default)]
struct Stream {
    text: String,
    dropped: usize,
}

impl Stream {
    fn push(&mut self, data: &str) {
        let room = MAX_KEPT.saturating_sub(self.text.len());
        if data.len() <= room {
            self.text.push_str(data);
        } else {
            let mut cut = room;
            while !data.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&data[..cut]);
            self.dropped += data.len() - cut;
        }
    }
}

/// How the command ended.
struct Exit {
    code: i32,
    timed_out: bool,
    reason: Option<ExitReason>,
}

pub async fn exec(
    sandbox: &SandboxHandle,
    ctx: &RequestContext<RoleServer>,
    params: ExecParams,
) -> ToolResult {
    let mut options = ExecOptions {
        cwd: params.cwd,
        timeout_ms: params.timeout_ms,
        ..ExecOptions::default()
    };
    for (key, value) in params.env.unwrap_or_default() {
        options = options.env(key, value);
    }
    // In a subshell of the sandbox's session: as fast as the session (no new shell process),
    // but an `exit` or `exec` in the command ends the subshell, not the session every later
    // command runs in. (So `cd` and `export` do not carry over to the next call either.)
    let command = format!("(\n{}\n)", params.command);
    let events = sandbox.exec_stream(&command, &options).await?;
    let (mut stdout, mut stderr) = (Stream::default(), Stream::default());
    let mut exit = None;
    let mut failure = None;
    follow(ctx, events, |event| match event {
        ExecEvent::Start { .. } => false,
        ExecEvent::Stdout { data, .. } => {
            stdout.push(&data);
            false
        }
        ExecEvent::Stderr { data, .. } => {
            stderr.push(&data);
            false
        }
        ExecEvent::Complete {
            exit_code,
            timed_out,
            reason,
            ..
        } => {
            exit = Some(Exit {
                code: exit_code,
                timed_out,
                reason,
            });
            true
        }
        ExecEvent::Error { error, .. } => {
            failure = Some(error);
            true
        }
    })
    .await?;
    let exit = match (exit, failure) {
        (Some(exit), _) => exit,
        (None, error) => {
            return Err(ToolError::Command(error.unwrap_or_else(|| {
                "the command ended without an exit code".into()
            })));
        }
    };
    let stdout = shown(sandbox, "stdout", &stdout).await?;
    let stderr = shown(sandbox, "stderr", &stderr).await?;
    Ok(result(&exit, &stdout, &stderr))
}

/// A stream as the model sees it: clipped, with the file holding all of it when it was.
struct Shown {
    clipped: Clipped,
    full_output: Option<String>,
    note: Option<String>,
}

async fn shown(sandbox: &SandboxHandle, name: &str, stream: &Stream) -> Result<Shown, ToolError> {
    let clipped = clip(&stream.text);
    if clipped.omitted == 0 && stream.dropped == 0 {
        return Ok(Shown {
            clipped,
            full_output: None,
            note: None,
        });
    }
    let path = format!("{FULL_OUTPUT_DIR}/{}.{name}", unique_name());
    sandbox.write_file(&path, &stream.text).await?;
    let mut note = format!(
        "[{name} truncated: {} of {} bytes shown; the full {name} is in {path} in the sandbox \
         (read parts of it with exec, e.g. `grep -n ERROR {path}` or `sed -n 100,200p {path}`)]",
        stream.text.len() - clipped.omitted,
        stream.text.len() + stream.dropped,
    );
    if stream.dropped > 0 {
        note.push_str(&format!(
            " [only the first {MAX_KEPT} bytes were kept; {} more were discarded]",
            stream.dropped
        ));
    }
    Ok(Shown {
        clipped,
        full_output: Some(path),
        note: Some(note),
    })
}

/// A name no other output file of this server has: time and a counter.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("exec-{millis}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn result(exit: &Exit, stdout: &Shown, stderr: &Shown) -> CallToolResult {
    let mut text = String::new();
    for (label, shown) in [("stdout", stdout), ("stderr", stderr)] {
        if shown.clipped.text.is_empty() {
            continue;
        }
        text.push_str(&format!("--- {label} ---\n{}", shown.clipped.text));
        if !shown.clipped.text.ends_with('\n') {
            text.push('\n');
        }
        if let Some(note) = &shown.note {
            text.push_str(note);
            text.push('\n');
        }
    }
    text.push_str(&format!("exit code: {}", exit.code));
    if exit.timed_out {
        text.push_str(" (killed: the command timed out)");
    }
    if matches!(exit.reason, Some(ExitReason::Oom)) {
        text.push_str(" (killed: out of memory)");
    }
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({
        "exitCode": exit.code,
        "stdout": stdout.clipped.text,
        "stderr": stderr.clipped.text,
        "timedOut": exit.timed_out,
        "reason": exit.reason,
        "stdoutFile": stdout.full_output,
        "stderrFile": stderr.full_output,
    }));
    result
}
