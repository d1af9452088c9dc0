//! `sandpit start | ps | logs | kill`: background processes.

use std::io::Write;

use anyhow::bail;
use futures::StreamExt;
use sandpit_client::protocol::container::ProcessStreamEvent;
use sandpit_client::{Client, ProcessOptions};

use crate::cli::{KillArgs, LogsArgs, StartArgs};
use crate::commands::exec::exit_status;
use crate::commands::sandbox::render_table;
use crate::interrupted::EndedEarly;
use crate::shell;

pub async fn start(client: &Client, args: StartArgs) -> anyhow::Result<()> {
    let mut options = ProcessOptions {
        process_id: args.process_id,
        session_id: args.session,
        cwd: args.cwd,
        ..Default::default()
    };
    for (k, v) in args.env {
        options = options.env(k, v);
    }
    let process = client
        .sandbox(args.id)
        .start_process(&shell::join(&args.command), &options)
        .await?;
    println!("{}", process.id);
    Ok(())
}

pub async fn ps(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let processes = client.sandbox(id).list_processes().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&processes)?);
        return Ok(());
    }
    let rows: Vec<[String; 6]> = processes
        .iter()
        .map(|p| {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            [
                p.id.clone(),
                opt(p.pid.map(|n| n.to_string())),
                p.status.as_str().to_owned(),
                opt(p.exit_code.map(|n| n.to_string())),
                p.start_time.clone(),
                p.command.clone(),
            ]
        })
        .collect();
    let header = ["ID", "PID", "STATUS", "EXIT", "STARTED", "COMMAND"];
    print!("{}", render_table(header, &rows));
    Ok(())
}

/// Prints the logs; with `--follow` returns the process's exit code once it ends.
pub async fn logs(client: &Client, args: LogsArgs) -> anyhow::Result<i32> {
    let process = client.sandbox(args.id).process(&args.process).await?;
    if !args.follow {
        let logs = process.logs().await?;
        write_flush(&mut std::io::stdout().lock(), &logs.stdout)?;
        write_flush(&mut std::io::stderr().lock(), &logs.stderr)?;
        return Ok(0);
    }
    let mut events = process.stream_logs().await?;
    while let Some(event) = events.next().await {
        match event? {
            ProcessStreamEvent::ProcessInfo { .. } => {}
            ProcessStreamEvent::Stdout { data, .. } => {
                write_flush(&mut std::io::stdout().lock(), &data)?
            }
            ProcessStreamEvent::Stderr { data, .. } => {
                write_flush(&mut std::io::stderr().lock(), &data)?
            }
            ProcessStreamEvent::Exit { exit_code, .. } => return Ok(exit_status(exit_code)),
            ProcessStreamEvent::Error { data, .. } => bail!("{data}"),
        }
    }
    Err(EndedEarly("the output stream ended before the process exited").into())
}

pub async fn kill(client: &Client, args: KillArgs) -> anyhow::Result<()> {
    let sandbox = client.sandbox(args.id);
    match args.process {
        Some(id) if !args.all => {
            sandbox
                .process(&id)
                .await?
                .kill(args.signal.as_deref())
                .await?;
            println!("{id} killed");
        }
        _ => {
            let count = sandbox.kill_all().await?;
            println!("{count} killed");
        }
    }
    Ok(())
}

fn write_flush(out: &mut impl Write, data: &str) -> std::io::Result<()> {
    out.write_all(data.as_bytes())?;
    out.flush()
}
