//! `sandpit keys create | ls | revoke | rotate` and `sandpit audit`.

use clap::{Args, Subcommand};
use sandpit_client::protocol::control::{ApiKeyInfo, AuditEntry, CreateKeyResponse};
use sandpit_client::{AuditOptions, Client};

use crate::commands::sandbox::render_table;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a tenant (admin key); prints the key, shown only this once.
    Create {
        /// Tenant: 1-32 characters of [a-z0-9-] (created if new).
        tenant: String,
        /// Print JSON (tenant, key, keyId) instead of the key.
        #[arg(long)]
        json: bool,
    },
    /// List key ids, tenants and times (never the keys).
    Ls {
        /// Only this tenant's keys (another tenant than the key's needs the admin key).
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id: its next request is refused.
    Revoke { key_id: String },
    /// Replace a key by a new one (printed) for the same tenant; the old one is revoked.
    Rotate {
        key_id: String,
        /// Print JSON (tenant, key, keyId) instead of the key.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Whose log (another tenant than the key's needs the admin key).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Most entries to print, newest first (1-500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn keys(client: &Client, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { tenant, json } => print_new(&client.create_key(&tenant).await?, json),
        KeysCommand::Ls { tenant, json } => {
            let list = client.list_keys(tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", keys_table(&list.keys));
            }
            Ok(())
        }
        KeysCommand::Revoke { key_id } => {
            client.revoke_key(&key_id).await?;
            println!("{key_id} revoked");
            Ok(())
        }
        KeysCommand::Rotate { key_id, json } => print_new(&client.rotate_key(&key_id).await?, json),
    }
}

fn print_new(created: &CreateKeyResponse, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(created)?);
    } else {
        println!("{}", created.key);
        eprintln!(
            "key {} of tenant {}: shown only now",
            created.key_id, created.tenant
        );
    }
    Ok(())
}

fn keys_table(keys: &[ApiKeyInfo]) -> String {
    let rows: Vec<[String; 4]> = keys
        .iter()
        .map(|k| {
            [
                k.key_id.clone(),
                k.tenant.clone(),
                k.created_at.clone(),
                k.last_used_at.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render_table(["KEY ID", "TENANT", "CREATED", "LAST USED"], &rows)
}

pub async fn audit(client: &Client, args: AuditArgs) -> anyhow::Result<()> {
    let options = AuditOptions {
        tenant: args.tenant,
        limit: Some(args.limit),
        before: None,
    };
    let log = client.audit(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&log)?);
    } else {
        print!("{}", audit_table(&log.entries));
    }
    Ok(())
}

fn audit_table(entries: &[AuditEntry]) -> String {
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e.at.clone(),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.result.clone(),
                e.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render_table(["AT", "KEY", "ACTION", "TARGET", "RESULT", "DETAIL"], &rows)
}
