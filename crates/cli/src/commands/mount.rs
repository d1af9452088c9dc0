//! `sandpit mount | unmount | mounts`: S3 bucket mounts of a sandbox.

use anyhow::Context;
use clap::Args;
use sandpit_client::protocol::control::BucketMountInfo;
use sandpit_client::{Client, MountOptions};

use crate::commands::sandbox::render_table;

/// Environment variables the keys are read from (never from the command line, where other
/// users of this machine could read them).
pub const ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Sandbox id.
    pub id: String,
    /// Bucket name.
    pub bucket: String,
    /// Directory inside the sandbox (created if missing).
    pub path: String,
    /// S3 endpoint, `http(s)://host[:port]` (the server's operator decides which are allowed).
    #[arg(long)]
    pub endpoint: String,
    /// Show only objects under this key prefix (starts with `/`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Refuse writes (EROFS).
    #[arg(long)]
    pub read_only: bool,
    /// SigV4 region (default us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Mounts with the keys from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
pub async fn mount(client: &Client, args: MountArgs) -> anyhow::Result<()> {
    let key =
        |name: &str| std::env::var(name).with_context(|| format!("set {name} to the bucket's key"));
    let mut options = MountOptions::new(args.endpoint, key(ACCESS_KEY_ENV)?, key(SECRET_KEY_ENV)?)
        .read_only(args.read_only);
    if let Some(prefix) = args.prefix {
        options = options.prefix(prefix);
    }
    if let Some(region) = args.region {
        options = options.region(region);
    }
    let info = client
        .sandbox(&args.id)
        .mount_bucket(&args.bucket, &args.path, &options)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{} mounted at {}:{}", info.bucket, args.id, info.mount_path);
    }
    Ok(())
}

pub async fn unmount(client: &Client, id: &str, path: &str) -> anyhow::Result<()> {
    client.sandbox(id).unmount_bucket(path).await?;
    println!("{id}:{path} unmounted");
    Ok(())
}

pub async fn mounts(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let mounts = client.sandbox(id).bucket_mounts().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&mounts)?);
    } else {
        print!("{}", table(&mounts));
    }
    Ok(())
}

fn table(mounts: &[BucketMountInfo]) -> String {
    let rows: Vec<[String; 5]> = mounts
        .iter()
        .map(|m| {
            [
                m.mount_path.clone(),
                format!("{}{}", m.bucket, m.prefix.as_deref().unwrap_or("")),
                m.endpoint.clone(),
                if m.read_only { "ro" } else { "rw" }.to_owned(),
                if m.mounted { "mounted" } else { "asleep" }.to_owned(),
            ]
        })
        .collect();
    render_table(["PATH", "BUCKET", "ENDPOINT", "MODE", "STATUS"], &rows)
}
