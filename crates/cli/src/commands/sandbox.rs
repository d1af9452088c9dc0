//! `sandpit create | ls | stop | rm`.

use sandpit_client::Client;
use sandpit_client::protocol::control::{CreateSandboxRequest, Limits, SandboxInfo};

use crate::cli::CreateArgs;

pub async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<()> {
    let limits = Limits {
        cpus: args.cpus,
        memory_mb: args.memory_mb,
        pids: args.pids,
        disk_mb: args.disk_mb,
    };
    let request = CreateSandboxRequest {
        id: args.id,
        image: args.image,
        sleep_after: args.sleep_after.map(serde_json::Value::String),
        keep_alive: args.keep_alive.then_some(true),
        env: (!args.env.is_empty()).then(|| args.env.into_iter().collect()),
        limits: (limits != Limits::default()).then_some(limits),
        ephemeral: args.ephemeral.then_some(true),
        network: args.network.policy(),
        secrets: args.network.secrets()?,
    };
    let info = client.create(&request).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{}", info.id);
    }
    Ok(())
}

pub async fn ls(client: &Client, json: bool) -> anyhow::Result<()> {
    let sandboxes = client.list_all().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sandboxes)?);
    } else {
        print!("{}", table(&sandboxes));
    }
    Ok(())
}

pub async fn stop(client: &Client, id: &str) -> anyhow::Result<()> {
    client.stop(id).await?;
    println!("{id} stopped");
    Ok(())
}

pub async fn rm(client: &Client, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        client.destroy(id).await?;
        println!("{id} removed");
    }
    Ok(())
}

fn table(sandboxes: &[SandboxInfo]) -> String {
    let rows: Vec<[String; 5]> = sandboxes
        .iter()
        .map(|s| {
            let mut flags = Vec::new();
            if s.keep_alive {
                flags.push("keep-alive");
            }
            if s.ephemeral {
                flags.push("ephemeral");
            }
            [
                s.id.clone(),
                s.state.as_str().to_owned(),
                s.image.clone(),
                s.last_active_at.clone(),
                flags.join(","),
            ]
        })
        .collect();
    render_table(["ID", "STATE", "IMAGE", "LAST ACTIVE", "FLAGS"], &rows)
}

/// Left-aligned columns two spaces apart, one line per row.
pub fn render_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(std::array::from_fn(|i| row[i].as_str())));
    }
    out
}
