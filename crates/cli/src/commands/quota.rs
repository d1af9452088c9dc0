//! `sandpit quota [TENANT]`, `sandpit quota set TENANT ...`, `sandpit quota reset TENANT`.

use clap::{Args, Subcommand};
use sandpit_client::Client;
use sandpit_client::protocol::quota::{QuotaInfo, TenantQuota};

use super::sandbox::render_table;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuotaArgs {
    /// Tenant to show (default: the key's own tenant; another tenant needs the admin key).
    pub tenant: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<QuotaCommand>,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Replace a tenant's quota (admin key); a limit left out is unlimited.
    Set {
        tenant: String,
        #[command(flatten)]
        quota: QuotaFlags,
    },
    /// Remove a tenant's own quota so the server's default applies (admin key).
    Reset { tenant: String },
}

/// A quota on the command line (`serve --default-quota-*` uses the same fields).
#[derive(Debug, Args, Clone, Default)]
pub struct QuotaFlags {
    /// Most sandboxes (running or asleep).
    #[arg(long)]
    pub sandboxes: Option<u64>,
    /// Most sandboxes running at once.
    #[arg(long)]
    pub running: Option<u64>,
    /// Most memory (MiB) of the running sandboxes' limits together.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Most disk (MiB) of all sandboxes' limits together (sandboxes must then set --disk-mb).
    #[arg(long)]
    pub disk_mb: Option<u64>,
}

impl QuotaFlags {
    pub fn quota(&self) -> TenantQuota {
        TenantQuota {
            sandboxes: self.sandboxes,
            running_sandboxes: self.running,
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
        }
    }
}

pub async fn run(client: &Client, args: QuotaArgs) -> anyhow::Result<()> {
    let info = match args.command {
        Some(QuotaCommand::Set { tenant, quota }) => {
            client.set_tenant_quota(&tenant, &quota.quota()).await?
        }
        Some(QuotaCommand::Reset { tenant }) => client.reset_tenant_quota(&tenant).await?,
        None => match &args.tenant {
            Some(tenant) => client.tenant_quota(tenant).await?,
            None => client.quota().await?,
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", render(&info));
    }
    Ok(())
}

fn render(info: &QuotaInfo) -> String {
    let limit = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let (q, u) = (&info.quota, &info.usage);
    let rows = [
        [
            "sandboxes".to_owned(),
            limit(q.sandboxes),
            u.sandboxes.to_string(),
        ],
        [
            "running".to_owned(),
            limit(q.running_sandboxes),
            u.running_sandboxes.to_string(),
        ],
        [
            "memory MiB".to_owned(),
            limit(q.memory_mb),
            u.memory_mb.to_string(),
        ],
        [
            "disk MiB".to_owned(),
            limit(q.disk_mb),
            u.disk_mb.to_string(),
        ],
    ];
    let source = if info.is_default {
        "server default"
    } else {
        "own quota"
    };
    let c = &info.caps;
    format!(
        "tenant {} ({source})\n{}per sandbox at most: memory {} MiB, {} cpus, {} pids, disk {} MiB, {} exposed ports, {} background processes\n",
        info.tenant,
        render_table(["", "QUOTA", "USED"], &rows),
        c.memory_mb,
        c.cpus,
        c.pids,
        limit(c.disk_mb),
        c.exposed_ports,
        c.processes,
    )
}

#[cfg(test)]
mod tests {
    use sandpit_client::protocol::quota::{QuotaUsage, SandboxCaps};

    use super::*;

    #[test]
    fn render_shows_quota_usage_and_caps() {
        let info = QuotaInfo {
            tenant: "acme".into(),
            quota: TenantQuota {
                sandboxes: Some(5),
                ..TenantQuota::default()
            },
            is_default: false,
            usage: QuotaUsage {
                sandboxes: 2,
                running_sandboxes: 1,
                memory_mb: 1024,
                disk_mb: 0,
            },
            caps: SandboxCaps {
                memory_mb: 4096,
                cpus: 2.0,
                pids: 4096,
                disk_mb: None,
                exposed_ports: 32,
                processes: 128,
            },
        };
        let text = render(&info);
        assert!(text.starts_with("tenant acme (own quota)\n"), "{text}");
        assert!(text.contains("sandboxes   5      2"), "{text}");
        assert!(text.contains("running     -      1"), "{text}");
        assert!(
            text.contains(
                "memory 4096 MiB, 2 cpus, 4096 pids, disk - MiB, 32 exposed ports, 128 background processes"
            ),
            "{text}"
        );
    }
}
