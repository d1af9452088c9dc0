//! `sandpit exec`: sends the local stdin (unless it is a terminal) to a command and streams its
//! output, byte for byte, to the local stdout/stderr. The timeout is the server's: at the
//! deadline the command is killed and the exit code is 124; interrupting `sandpit exec`
//! (closing the stream) stops the command too.

use std::io::{IsTerminal, Read, Write};

use anyhow::bail;
use futures::StreamExt;
use sandpit_client::protocol::DISABLE_SESSION;
use sandpit_client::protocol::container::ExecEvent;
use sandpit_client::{Client, ExecOptions, decode_output};

use crate::cli::ExecArgs;
use crate::interrupted::EndedEarly;
use crate::shell;

/// Runs the command; returns its exit code.
pub async fn run(client: &Client, args: ExecArgs) -> anyhow::Result<i32> {
    let command = shell::join(&args.command);
    // Without --session each command gets its own `bash -c` (like `docker exec`): `exit 5`
    // is an exit code, not the end of a shared shell.
    let session_id = args.session.unwrap_or_else(|| DISABLE_SESSION.to_owned());
    let stdin = if args.no_stdin || std::io::stdin().is_terminal() {
        None
    } else {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes)?;
        // Empty input reads the same as none (`/dev/null`), which costs the sandbox less.
        (!bytes.is_empty()).then_some(bytes)
    };
    let mut options = ExecOptions {
        session_id: Some(session_id),
        cwd: args.cwd,
        timeout_ms: args.timeout_ms,
        stdin,
        binary_output: true,
        ..Default::default()
    };
    for (k, v) in args.env {
        options = options.env(k, v);
    }
    let sandbox = client.sandbox(args.id);
    let events = sandbox.exec_stream(&command, &options).await?;
    print_events(events).await
}

async fn print_events(mut events: sandpit_client::EventStream<ExecEvent>) -> anyhow::Result<i32> {
    while let Some(event) = events.next().await {
        match event? {
            ExecEvent::Start { .. } => {}
            ExecEvent::Stdout { data, encoding, .. } => {
                write_flush(
                    &mut std::io::stdout().lock(),
                    &decode_output(&data, encoding)?,
                )?;
            }
            ExecEvent::Stderr { data, encoding, .. } => {
                write_flush(
                    &mut std::io::stderr().lock(),
                    &decode_output(&data, encoding)?,
                )?;
            }
            ExecEvent::Complete { exit_code, .. } => return Ok(exit_status(exit_code)),
            ExecEvent::Error { error, .. } => bail!("{error}"),
        }
    }
    Err(EndedEarly("the output stream ended before the command completed").into())
}

fn write_flush(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

/// Maps a remote exit code to a local one (0-255; negative codes become 255).
pub fn exit_status(code: i32) -> i32 {
    if (0..=255).contains(&code) { code } else { 255 }
}
