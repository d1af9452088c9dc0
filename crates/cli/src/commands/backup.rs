//! `sandpit backup create|ls|restore|rm`, and the `serve` flags of the object store backups
//! live in.
//!
//! The archive moves between the sandbox and the object store inside the server, never through
//! the CLI, so the progress shown is a spinner with the elapsed time (on a terminal), not a
//! byte count.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use sandpit_client::Client;
use sandpit_client::protocol::backup::{BackupCompression, BackupInfo, CreateBackupRequest};
use sandpit_server::ServeConfig;
use sandpit_server::backups::BackupLimits;
use sandpit_server::objects::{CredentialsFile, ObjectStoreConfig, S3Config};

use super::sandbox::render_table;
use crate::progress::spinner;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up a directory of a sandbox to the server's object store; prints the backup id.
    Create {
        /// Sandbox id.
        id: String,
        /// Absolute directory under /workspace, /home, /tmp, /var/tmp or /app.
        dir: String,
        /// A name to recognise it by.
        #[arg(long)]
        name: Option<String>,
        /// Time to live (seconds or e.g. `2h`, `7d`; default 3 days).
        #[arg(long)]
        ttl: Option<String>,
        /// Leave out paths matching this gitignore-style glob, relative to DIR (repeatable).
        #[arg(long = "exclude", value_name = "GLOB")]
        excludes: Vec<String>,
        /// Honour the .gitignore files in the tree.
        #[arg(long)]
        gitignore: bool,
        /// zstd level 1-19 (default 1).
        #[arg(long)]
        level: Option<i32>,
        /// Print the backup as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your backups.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a sandbox (atomically replacing the directory).
    Restore {
        /// Sandbox id (the same tenant's; it need not be the one backed up).
        id: String,
        /// Backup id.
        backup: String,
        /// Restore here instead of the backed-up directory.
        #[arg(long)]
        dir: Option<String>,
    },
    /// Delete backups.
    Rm {
        #[arg(required = true)]
        backups: Vec<String>,
    },
}

pub async fn run(client: &Client, command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create {
            id,
            dir,
            name,
            ttl,
            excludes,
            gitignore,
            level,
            json,
        } => {
            let request = CreateBackupRequest {
                dir: dir.clone(),
                name,
                ttl: ttl.map(serde_json::Value::String),
                excludes,
                gitignore,
                compression: level.map(|l| BackupCompression {
                    format: None,
                    level: Some(l),
                }),
            };
            let bar = spinner(format!("backing up {id}:{dir}"));
            let info = client.create_backup(&id, &request).await;
            bar.finish_and_clear();
            let info = info?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                eprintln!(
                    "backed up {id}:{dir}: {} stored ({} uncompressed), expires {}",
                    human(info.size_bytes),
                    human(info.raw_bytes),
                    info.expires_at
                );
                println!("{}", info.id);
            }
        }
        BackupCommand::Ls { json } => {
            let list = client.list_backups().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", render(&list));
            }
        }
        BackupCommand::Restore { id, backup, dir } => {
            let bar = spinner(format!("restoring {backup} into {id}"));
            let done = client.restore_backup(&id, &backup, dir.as_deref()).await;
            bar.finish_and_clear();
            let done = done?;
            eprintln!(
                "restored {} into {id}:{} ({} entries, {})",
                done.id,
                done.dir,
                done.entries,
                human(done.file_bytes)
            );
        }
        BackupCommand::Rm { backups } => {
            for b in backups {
                client.delete_backup(&b).await?;
                eprintln!("deleted {b}");
            }
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn render(list: &[BackupInfo]) -> String {
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|b| {
            [
                b.id.clone(),
                b.name.clone().unwrap_or_default(),
                b.sandbox_id.clone(),
                b.dir.clone(),
                human(b.size_bytes),
                b.created_at.clone(),
                b.expires_at.clone(),
            ]
        })
        .collect();
    render_table(
        ["ID", "NAME", "SANDBOX", "DIR", "SIZE", "CREATED", "EXPIRES"],
        &rows,
    )
}

/// `serve` flags: where backups are stored and the per-tenant caps.
#[derive(Debug, Args, Clone, Default)]
pub struct ObjectStoreFlags {
    /// Directory of the local object store (default `<data-dir>/objects`); ignored with
    /// --s3-bucket.
    #[arg(long, env = "SANDPIT_OBJECT_STORE_DIR", value_name = "DIR")]
    pub object_store_dir: Option<PathBuf>,
    /// Store backups in this S3-compatible bucket instead of a local directory.
    #[arg(long, env = "SANDPIT_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Region of the bucket.
    #[arg(long, env = "SANDPIT_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Endpoint URL of a non-AWS S3 server (`http://127.0.0.1:9000`).
    #[arg(long, env = "SANDPIT_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, env = "SANDPIT_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,
    /// Virtual-hosted-style addressing (`bucket.host`); default is path style.
    #[arg(long)]
    pub s3_virtual_hosted: bool,
    /// JSON file `{"accessKeyId", "secretAccessKey", "sessionToken"?}`; else
    /// SANDPIT_S3_ACCESS_KEY_ID / SANDPIT_S3_SECRET_ACCESS_KEY, else the AWS_* variables.
    #[arg(long, env = "SANDPIT_S3_CREDENTIALS_FILE", value_name = "FILE")]
    pub s3_credentials_file: Option<PathBuf>,
    /// Most backups one tenant keeps (a new one beyond is refused with QUOTA_EXCEEDED).
    #[arg(long, value_name = "N", default_value_t = BackupLimits::default().max_count)]
    pub max_backups_per_tenant: u64,
    /// Most stored bytes of one tenant's backups (a backup that would pass it is refused or
    /// aborted with QUOTA_EXCEEDED).
    #[arg(long, value_name = "BYTES", default_value_t = BackupLimits::default().max_bytes)]
    pub max_backup_bytes_per_tenant: u64,
}

impl ObjectStoreFlags {
    /// Sets the config's object store and backup limits from the flags.
    pub fn apply(self, config: &mut ServeConfig) -> anyhow::Result<()> {
        config.backup_limits = BackupLimits {
            max_count: self.max_backups_per_tenant,
            max_bytes: self.max_backup_bytes_per_tenant,
        };
        if let Some(bucket) = self.s3_bucket {
            let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let (key, secret, token) = match &self.s3_credentials_file {
                Some(path) => {
                    let c = CredentialsFile::load(path)
                        .with_context(|| format!("--s3-credentials-file {}", path.display()))?;
                    (
                        Some(c.access_key_id),
                        Some(c.secret_access_key),
                        c.session_token,
                    )
                }
                None => (
                    env("SANDPIT_S3_ACCESS_KEY_ID"),
                    env("SANDPIT_S3_SECRET_ACCESS_KEY"),
                    env("SANDPIT_S3_SESSION_TOKEN"),
                ),
            };
            config.object_store = ObjectStoreConfig::S3(S3Config {
                bucket,
                region: self.s3_region,
                endpoint: self.s3_endpoint,
                access_key_id: key,
                secret_access_key: secret,
                session_token: token,
                path_style: !self.s3_virtual_hosted,
                prefix: self.s3_prefix,
            });
        } else if let Some(root) = self.object_store_dir {
            config.object_store = ObjectStoreConfig::Local { root };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
