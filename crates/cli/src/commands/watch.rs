//! `sandpit watch`: one line per file-system change until interrupted.

use std::io::Write;

use anyhow::bail;
use futures::StreamExt;
use sandpit_client::protocol::container::WatchEvent;
use sandpit_client::{Client, WatchOptions};

pub async fn run(client: &Client, id: &str, path: &str) -> anyhow::Result<()> {
    let mut events = client
        .sandbox(id)
        .watch(path, &WatchOptions::default())
        .await?;
    let mut out = std::io::stdout().lock();
    // One listener for the whole run, so a ctrl-c between two events is not missed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = &mut ctrl_c => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        match event? {
            WatchEvent::Watching { path, .. } => eprintln!("watching {path}"),
            WatchEvent::Event {
                event_type,
                path,
                is_directory,
                ..
            } => {
                let kind = serde_json::to_value(event_type)?;
                let kind = kind.as_str().unwrap_or("change");
                let slash = if is_directory { "/" } else { "" };
                writeln!(out, "{kind} {path}{slash}")?;
                out.flush()?;
            }
            WatchEvent::Stopped { reason } => {
                eprintln!("stopped: {reason}");
                return Ok(());
            }
            WatchEvent::Error { error } => bail!("{error}"),
        }
    }
}
