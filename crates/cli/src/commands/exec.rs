//! `sandpit exec`: streams a command's output to the local stdout/stderr.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use sandpit_client::protocol::DISABLE_SESSION;
use sandpit_client::protocol::container::ExecEvent;
use sandpit_client::{Client, ExecOptions};

use crate::cli::ExecArgs;
use crate::shell;

/// Exit code when `--timeout-ms` expires (as coreutils `timeout`).
pub const TIMEOUT_EXIT: i32 = 124;

/// Runs the command; returns its exit code.
pub async fn run(client: &Client, args: ExecArgs) -> anyhow::Result<i32> {
    let command = shell::join(&args.command);
    // Without --session each command gets its own `bash -c` (like `docker exec`): `exit 5`
    // is an exit code, not the end of a shared shell.
    let session_id = args.session.unwrap_or_else(|| DISABLE_SESSION.to_owned());
    let mut options = ExecOptions {
        session_id: Some(session_id),
        cwd: args.cwd,
        timeout_ms: args.timeout_ms,
        ..Default::default()
    };
    for (k, v) in args.env {
        options = options.env(k, v);
    }
    let sandbox = client.sandbox(args.id);
    let streamed = async {
        let events = sandbox.exec_stream(&command, &options).await?;
        print_events(events).await
    };
    match args.timeout_ms {
        None => streamed.await,
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), streamed).await {
            Ok(result) => result,
            Err(_) => {
                eprintln!("error: command timed out after {ms} ms");
                Ok(TIMEOUT_EXIT)
            }
        },
    }
}

async fn print_events(mut events: sandpit_client::EventStream<ExecEvent>) -> anyhow::Result<i32> {
    while let Some(event) = events.next().await {
        match event? {
            ExecEvent::Start { .. } => {}
            ExecEvent::Stdout { data, .. } => write_flush(&mut std::io::stdout().lock(), &data)?,
            ExecEvent::Stderr { data, .. } => write_flush(&mut std::io::stderr().lock(), &data)?,
            ExecEvent::Complete { exit_code, .. } => return Ok(exit_status(exit_code)),
            ExecEvent::Error { error, .. } => bail!("{error}"),
        }
    }
    bail!("the output stream ended before the command completed")
}

fn write_flush(out: &mut impl Write, data: &str) -> std::io::Result<()> {
    out.write_all(data.as_bytes())?;
    out.flush()
}

/// Maps a remote exit code to a local one (0-255; negative codes become 255).
pub fn exit_status(code: i32) -> i32 {
    if (0..=255).contains(&code) { code } else { 255 }
}
