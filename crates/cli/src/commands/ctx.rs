//! `sandpit ctx ls | rm`: a sandbox's code contexts (the interpreters `sandpit run --context`
//! runs in), through the forwarded `/api/contexts`.

use sandpit_client::Client;

use crate::commands::sandbox::render_table;

#[derive(Debug, clap::Subcommand)]
pub enum CtxCommand {
    /// List a sandbox's code contexts.
    Ls {
        /// Sandbox id.
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete code contexts (stops their interpreters; their variables are lost).
    Rm {
        /// Sandbox id.
        id: String,
        /// Context ids.
        #[arg(required = true, value_name = "CONTEXT")]
        contexts: Vec<String>,
    },
}

impl CtxCommand {
    /// The sandbox the command acts on.
    pub fn sandbox_id(&self) -> &str {
        match self {
            CtxCommand::Ls { id, .. } | CtxCommand::Rm { id, .. } => id,
        }
    }
}

pub async fn run(client: &Client, command: CtxCommand) -> anyhow::Result<()> {
    match command {
        CtxCommand::Ls { id, json } => {
            let contexts = client.sandbox(&id).list_contexts().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&contexts)?);
                return Ok(());
            }
            let rows: Vec<[String; 4]> = contexts
                .into_iter()
                .map(|c| {
                    let created = c.created_at.unwrap_or_else(|| "-".into());
                    [c.id, c.language, c.cwd, created]
                })
                .collect();
            print!(
                "{}",
                render_table(["ID", "LANGUAGE", "CWD", "CREATED"], &rows)
            );
        }
        CtxCommand::Rm { id, contexts } => {
            let sandbox = client.sandbox(&id);
            for context in contexts {
                sandbox.delete_context(&context).await?;
                println!("{context} removed");
            }
        }
    }
    Ok(())
}
