//! `sandpit files ls ID PATH`: a directory listing of a sandbox.

use sandpit_client::Client;
use sandpit_client::protocol::container::{FileInfo, FileType, ListFilesOptions};

use crate::commands::image::human_size;
use crate::commands::sandbox::render_table;

#[derive(Debug, clap::Subcommand)]
pub enum FilesCommand {
    /// List a directory of a sandbox (mode, size, modification time, name; directories end
    /// with `/`).
    Ls {
        /// Sandbox id.
        id: String,
        /// Directory.
        #[arg(default_value = "/workspace")]
        path: String,
        /// Include everything below the directory (names relative to it).
        #[arg(long, short = 'R')]
        recursive: bool,
        /// Include names starting with `.`.
        #[arg(long, short = 'a')]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, command: FilesCommand) -> anyhow::Result<()> {
    let FilesCommand::Ls {
        id,
        path,
        recursive,
        all,
        json,
    } = command;
    let options = ListFilesOptions {
        recursive: Some(recursive),
        include_hidden: Some(all),
    };
    let files = client.sandbox(&id).list_files(&path, &options).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&files)?);
    } else {
        print!("{}", table(&files));
    }
    Ok(())
}

fn table(files: &[FileInfo]) -> String {
    let rows: Vec<[String; 4]> = files
        .iter()
        .map(|f| {
            let suffix = if f.file_type == FileType::Directory {
                "/"
            } else {
                ""
            };
            [
                f.mode.clone(),
                human_size(f.size),
                f.modified_at.clone(),
                format!("{}{suffix}", f.relative_path),
            ]
        })
        .collect();
    render_table(["MODE", "SIZE", "MODIFIED", "NAME"], &rows)
}
