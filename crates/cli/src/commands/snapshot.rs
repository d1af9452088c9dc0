//! `sandpit snapshot create|ls|show|rm` and `sandpit fork ID --count N`.

use clap::{Args, Subcommand};
use sandpit_client::Client;
use sandpit_client::protocol::control::{ForkRequest, ImportSnapshotRequest, SnapshotInfo};

use super::sandbox::render_table;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Freeze a sandbox's file system into a snapshot; prints its id. A running sandbox sleeps
    /// for it (its processes end) and is woken again.
    Create {
        /// Sandbox id.
        id: String,
        /// A name to recognise the snapshot by.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON instead of the id.
        #[arg(long)]
        json: bool,
    },
    /// List snapshots.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one snapshot as JSON.
    Show {
        /// Snapshot id.
        snapshot: String,
    },
    /// Export a snapshot to the server's object store; prints the object key (import it on
    /// this or another server using the same store).
    Export {
        /// Snapshot id.
        snapshot: String,
        /// Print JSON (key, sizes, SHA-256) instead of the key.
        #[arg(long)]
        json: bool,
    },
    /// Import an export of yours (its object key) as a new snapshot; prints its id.
    Import {
        /// The export's object key.
        #[arg(value_name = "OBJECT_KEY")]
        object_key: String,
        /// Refuse unless the export's SHA-256 is this.
        #[arg(long)]
        sha256: Option<String>,
        /// A name for the new snapshot (default: the exported one's).
        #[arg(long)]
        name: Option<String>,
        /// Print JSON instead of the id.
        #[arg(long)]
        json: bool,
    },
    /// Delete snapshots (refused while sandboxes created from them exist).
    Rm {
        /// Snapshot ids.
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ForkArgs {
    /// Sandbox to fork.
    pub id: String,
    /// Number of children (1-32).
    #[arg(long, short = 'n', default_value_t = 1, conflicts_with = "ids")]
    pub count: u32,
    /// Ids for the children (repeatable; their number is the count).
    #[arg(long = "as", value_name = "ID")]
    pub ids: Vec<String>,
    /// Print JSON (the snapshot and the children) instead of the children's ids.
    #[arg(long)]
    pub json: bool,
}

pub async fn snapshot(client: &Client, command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Create { id, name, json } => {
            let info = client.create_snapshot(&id, name.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("{}", info.id);
            }
        }
        SnapshotCommand::Ls { json } => {
            let list = client.list_snapshots().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", table(&list));
            }
        }
        SnapshotCommand::Show { snapshot } => {
            let info = client.get_snapshot(&snapshot).await?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        SnapshotCommand::Export { snapshot, json } => {
            let bar = crate::progress::spinner(format!("exporting {snapshot}"));
            let exported = client.export_snapshot(&snapshot).await;
            bar.finish_and_clear();
            let exported = exported?;
            if json {
                println!("{}", serde_json::to_string_pretty(&exported)?);
            } else {
                eprintln!(
                    "exported {snapshot}: {} stored, sha256 {}",
                    size(exported.size_bytes),
                    exported.sha256
                );
                println!("{}", exported.object_key);
            }
        }
        SnapshotCommand::Import {
            object_key,
            sha256,
            name,
            json,
        } => {
            let bar = crate::progress::spinner(format!("importing {object_key}"));
            let request = ImportSnapshotRequest {
                object_key,
                sha256,
                name,
            };
            let info = client.import_snapshot(&request).await;
            bar.finish_and_clear();
            let info = info?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!("{}", info.id);
            }
        }
        SnapshotCommand::Rm { snapshots } => {
            for snapshot in snapshots {
                client.delete_snapshot(&snapshot).await?;
                eprintln!("deleted snapshot {snapshot}");
            }
        }
    }
    Ok(())
}

pub async fn fork(client: &Client, args: ForkArgs) -> anyhow::Result<()> {
    let request = if args.ids.is_empty() {
        ForkRequest {
            count: Some(args.count),
            ids: None,
        }
    } else {
        ForkRequest {
            count: None,
            ids: Some(args.ids),
        }
    };
    let forked = client.fork(&args.id, &request).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&forked)?);
        return Ok(());
    }
    eprintln!("snapshot {}", forked.snapshot.id);
    for child in &forked.sandboxes {
        println!("{}", child.id);
    }
    Ok(())
}

/// Bytes as the table shows them.
fn size(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    format!("{:.1} MiB", bytes as f64 / MIB)
}

fn table(list: &[SnapshotInfo]) -> String {
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|s| {
            [
                s.id.clone(),
                s.name.clone().unwrap_or_default(),
                s.sandbox_id.clone(),
                size(s.size_bytes),
                s.created_at.clone(),
            ]
        })
        .collect();
    render_table(["ID", "NAME", "SANDBOX", "SIZE", "CREATED"], &rows)
}
