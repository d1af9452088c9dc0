//! `sandpit expose | unexpose | ports`: preview URLs of a sandbox's ports.

use clap::Args;
use sandpit_client::protocol::control::ExposedPort;
use sandpit_client::{Client, ExposeOptions};

use crate::commands::sandbox::render_table;

#[derive(Debug, Args)]
pub struct ExposeArgs {
    /// Sandbox id.
    pub id: String,
    /// Port inside the sandbox (1024–65535).
    pub port: u16,
    /// Label of the port.
    #[arg(long)]
    pub name: Option<String>,
    /// Token of the URL ([a-z0-9_], up to 16 characters; random when absent). A new token
    /// for an exposed port rotates it: the old URL stops working.
    #[arg(long)]
    pub token: Option<String>,
    /// Print JSON instead of the URL.
    #[arg(long)]
    pub json: bool,
}

/// Prints the preview URL.
pub async fn expose(client: &Client, args: ExposeArgs) -> anyhow::Result<()> {
    let options = ExposeOptions {
        name: args.name,
        token: args.token,
    };
    let exposed = client
        .sandbox(args.id)
        .expose_port(args.port, &options)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&exposed)?);
    } else {
        println!("{}", exposed.url);
    }
    Ok(())
}

pub async fn unexpose(client: &Client, id: &str, port: u16) -> anyhow::Result<()> {
    client.sandbox(id).unexpose_port(port).await?;
    println!("{id}:{port} unexposed");
    Ok(())
}

pub async fn ports(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let ports = client.sandbox(id).exposed_ports().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ports)?);
    } else {
        print!("{}", table(&ports));
    }
    Ok(())
}

fn table(ports: &[ExposedPort]) -> String {
    let rows: Vec<[String; 4]> = ports
        .iter()
        .map(|p| {
            [
                p.port.to_string(),
                p.name.clone().unwrap_or_else(|| "-".into()),
                // Stale: the sandbox slept or restarted since; expose the port again.
                if p.stale { "stale" } else { "live" }.to_owned(),
                p.url.clone(),
            ]
        })
        .collect();
    render_table(["PORT", "NAME", "STATUS", "URL"], &rows)
}
