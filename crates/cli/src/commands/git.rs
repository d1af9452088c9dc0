//! `sandpit git clone`.

use sandpit_client::{Client, GitOptions};

use crate::cli::GitCommand;

pub async fn run(client: &Client, command: GitCommand) -> anyhow::Result<()> {
    match command {
        GitCommand::Clone {
            id,
            repo,
            branch,
            depth,
            target_dir,
        } => {
            let options = GitOptions {
                branch,
                depth,
                target_dir,
                timeout_ms: None,
            };
            let done = client.sandbox(id).git_checkout(&repo, &options).await?;
            println!("{} ({})", done.target_dir, done.branch);
        }
    }
    Ok(())
}
