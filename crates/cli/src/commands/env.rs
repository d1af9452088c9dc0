//! `sandpit env ID K=V... [--unset K]...`: sets or unsets a sandbox's environment variables for
//! every later command, session and process (`POST /v1/sandboxes/{id}/env`).

use sandpit_client::Client;

use crate::commands::target::CreateFlag;

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Sandbox id.
    pub id: String,
    /// Variable to set (an empty value sets it to the empty string).
    #[arg(value_name = "K=V", value_parser = crate::cli::parse_env, required_unless_present = "unset")]
    pub set: Vec<(String, String)>,
    /// Variable to unset (repeatable).
    #[arg(long, short = 'u', value_name = "K")]
    pub unset: Vec<String>,
    #[command(flatten)]
    pub create: CreateFlag,
}

pub async fn run(client: &Client, args: EnvArgs) -> anyhow::Result<()> {
    let set = args.set.into_iter().map(|(k, v)| (k, Some(v)));
    let unset = args.unset.into_iter().map(|k| (k, None));
    let env = set.chain(unset).collect();
    client.sandbox(&args.id).set_env(env).await?;
    println!("{} env updated", args.id);
    Ok(())
}
