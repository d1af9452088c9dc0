//! `sandpit events`: follow the tenant's sandbox changes (`GET /v1/events`).

use clap::Args;
use futures::StreamExt;
use sandpit_client::{Client, Event};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Whose sandboxes (another tenant than the key's needs the admin key).
    #[arg(long)]
    pub tenant: Option<String>,
    /// One JSON object per line instead of columns.
    #[arg(long)]
    pub json: bool,
}

/// Prints one line per change until interrupted (or the server goes away).
pub async fn run(client: &Client, args: EventsArgs) -> anyhow::Result<()> {
    let mut events = client.events(args.tenant.as_deref()).await?;
    eprintln!("following sandbox changes (Ctrl-C to stop)");
    while let Some(event) = events.next().await {
        match event? {
            Event::Sandbox(e) if args.json => println!("{}", serde_json::to_string(&e)?),
            Event::Sandbox(e) => println!(
                "{}  {}  {}  {}",
                e.at,
                e.sandbox_id,
                serde_json::to_value(e.kind)?.as_str().unwrap_or("?"),
                e.state.as_str()
            ),
            Event::Lagged(l) if args.json => {
                println!("{}", serde_json::json!({"lagged": l.missed}))
            }
            Event::Lagged(l) => {
                eprintln!("missed {} events: run `sandpit ls` to catch up", l.missed)
            }
        }
    }
    Ok(())
}
