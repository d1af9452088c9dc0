//! Which sandbox a command acts on. Commands reach sandboxes through routes that create one on
//! first use, so a typo'd id would silently make a new sandbox: commands that act on an existing
//! sandbox check it exists first, and create it only when asked to (`--create`).

use anyhow::bail;
use sandpit_client::Client;
use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::control::CreateSandboxRequest;

/// The `--create` flag of commands that act on existing sandboxes.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct CreateFlag {
    /// Create the sandbox (with default options) if it does not exist; without it an unknown
    /// id is an error.
    #[arg(long)]
    pub create: bool,
}

/// Checks that sandbox `id` exists; with `create`, creates it if it does not (saying so on
/// stderr).
pub async fn ensure(client: &Client, id: &str, create: CreateFlag) -> anyhow::Result<()> {
    if exists(client, id).await? {
        return Ok(());
    }
    if !create.create {
        bail!("no sandbox {id} — create it with `sandpit create {id}` or pass --create");
    }
    create_announced(client, id).await
}

/// Like [`ensure`] with `--create` always on: `exec` creates on first use, as the seed does,
/// but says so, so that a typo does not go unnoticed.
pub async fn ensure_or_create(client: &Client, id: &str) -> anyhow::Result<()> {
    if exists(client, id).await? {
        return Ok(());
    }
    create_announced(client, id).await
}

async fn exists(client: &Client, id: &str) -> anyhow::Result<bool> {
    match client.get(id).await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(ErrorCode::SandboxNotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn create_announced(client: &Client, id: &str) -> anyhow::Result<()> {
    let request = CreateSandboxRequest {
        id: Some(id.to_owned()),
        ..Default::default()
    };
    client.create(&request).await?;
    eprintln!("created sandbox {id}");
    Ok(())
}
