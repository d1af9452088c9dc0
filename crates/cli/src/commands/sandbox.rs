//! `sandpit create | ls | info | stop | rm`.

use sandpit_client::Client;
use sandpit_client::protocol::control::{
    CreateSandboxRequest, ExposedPort, Limits, SandboxInfo, SandboxState, SandboxUsage,
};

use crate::cli::{CreateArgs, LsArgs};
use crate::commands::image::human_size;

pub async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<()> {
    let limits = Limits {
        cpus: args.cpus,
        memory_mb: args.memory_mb,
        pids: args.pids,
        disk_mb: args.disk_mb,
    };
    let request = CreateSandboxRequest {
        id: args.id,
        image: args.image,
        sleep_after: args.sleep_after,
        keep_alive: args.keep_alive.then_some(true),
        keep_alive_while_busy: args.keep_alive_while_busy,
        env: (!args.env.is_empty()).then(|| args.env.into_iter().collect()),
        limits: (limits != Limits::default()).then_some(limits),
        ephemeral: args.ephemeral.then_some(true),
        network: args.network.policy(),
        secrets: args.network.secrets()?,
        labels: (!args.labels.is_empty()).then(|| args.labels.into_iter().collect()),
        ttl: args.ttl,
        isolation: args.isolation,
        snapshot: args.snapshot,
    };
    let info = client.create(&request).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{}", info.id);
    }
    Ok(())
}

pub async fn ls(client: &Client, args: &LsArgs) -> anyhow::Result<()> {
    let selectors: Vec<String> = args
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let sandboxes = client.list_labelled(&selectors).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sandboxes)?);
    } else {
        print!("{}", table(&sandboxes));
    }
    Ok(())
}

/// `sandpit info ID`: everything the server knows about one sandbox, and its exposed ports.
pub async fn info(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let info = client.get(id).await?;
    let ports = client.sandbox(id).exposed_ports().await?;
    let usage = client.usage(id).await?;
    if json {
        // The sandbox object as `GET /v1/sandboxes/{id}` returns it, plus `ports` and `usage`.
        let mut value = serde_json::to_value(&info)?;
        value["ports"] = serde_json::to_value(&ports)?;
        value["usage"] = serde_json::to_value(&usage)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", describe(&info, &ports, &usage));
    }
    Ok(())
}

pub async fn stop(client: &Client, id: &str) -> anyhow::Result<()> {
    client.stop(id).await?;
    println!("{id} stopped");
    Ok(())
}

pub async fn rm(client: &Client, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        client.destroy(id).await?;
        println!("{id} removed");
    }
    Ok(())
}

/// `key  value` lines, one per fact (lists one line per entry).
fn describe(info: &SandboxInfo, ports: &[ExposedPort], usage: &SandboxUsage) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("id", info.id.clone()),
        ("state", info.state.as_str().to_owned()),
        ("image", info.image.clone()),
        ("created", info.created_at.clone()),
        ("last active", info.last_active_at.clone()),
        ("sleep after", sleep_after(info)),
        (
            "expires",
            info.expires_at
                .clone()
                .unwrap_or_else(|| "never".to_owned()),
        ),
        ("ephemeral", yes_no(info.ephemeral)),
        ("isolation", info.isolation.as_str().to_owned()),
        ("memory", or_unlimited(info.limits.memory_mb, " MiB")),
        ("cpus", or_unlimited(info.limits.cpus, "")),
        ("pids", or_unlimited(info.limits.pids, "")),
        ("disk", or_unlimited(info.limits.disk_mb, " MiB")),
    ];
    lines.extend(usage_lines(usage));
    lines.extend(
        info.labels
            .iter()
            .map(|(k, v)| ("label", format!("{k}={v}"))),
    );
    lines.push(("network", info.network.mode.as_str().to_owned()));
    lines.extend(info.network.allow.iter().map(|a| ("allow", a.clone())));
    lines.extend(info.secrets.iter().map(|s| {
        let header = s
            .header
            .as_deref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        (
            "secret",
            format!("{} → {}{header}", s.name, s.hosts.join(",")),
        )
    }));
    // Values may be secrets of the user's own; names are enough to see what is set.
    lines.extend(info.env.keys().map(|k| ("env", k.clone())));
    lines.extend(ports.iter().map(|p| {
        let name = p
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let stale = if p.stale { " [stale]" } else { "" };
        ("port", format!("{} {}{name}{stale}", p.port, p.url))
    }));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

/// The usage lines of `sandpit info`; CPU, memory and processes only while running.
fn usage_lines(usage: &SandboxUsage) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if usage.state == SandboxState::Running {
        lines.push(("cpu time", format!("{:.3}s", usage.cpu_usec as f64 / 1e6)));
        lines.push((
            "memory used",
            format!(
                "{} (peak {})",
                human_size(usage.memory_bytes),
                human_size(usage.memory_peak_bytes)
            ),
        ));
        lines.push(("processes", usage.pids.to_string()));
    }
    let bound = if usage.disk_complete { "" } else { " or more" };
    lines.push((
        "disk used",
        format!("{}{bound}", human_size(usage.disk_bytes)),
    ));
    lines.push((
        "egress",
        format!(
            "{} up, {} down",
            human_size(usage.network_bytes_up),
            human_size(usage.network_bytes_down)
        ),
    ));
    lines
}

fn sleep_after(info: &SandboxInfo) -> String {
    if info.keep_alive {
        "never (keep-alive)".to_owned()
    } else if info.keep_alive_while_busy {
        format!("{} (not while processes run)", info.sleep_after_secs)
    } else {
        format!("{} (even while processes run)", info.sleep_after_secs)
    }
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

fn or_unlimited<T: std::fmt::Display>(value: Option<T>, unit: &str) -> String {
    value.map_or_else(|| "unlimited".to_owned(), |v| format!("{v}{unit}"))
}

fn table(sandboxes: &[SandboxInfo]) -> String {
    let rows: Vec<[String; 5]> = sandboxes
        .iter()
        .map(|s| {
            let mut flags = Vec::new();
            if s.keep_alive {
                flags.push("keep-alive");
            }
            if s.ephemeral {
                flags.push("ephemeral");
            }
            [
                s.id.clone(),
                s.state.as_str().to_owned(),
                s.image.clone(),
                s.last_active_at.clone(),
                flags.join(","),
            ]
        })
        .collect();
    render_table(["ID", "STATE", "IMAGE", "LAST ACTIVE", "FLAGS"], &rows)
}

/// Left-aligned columns two spaces apart, one line per row.
pub fn render_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(std::array::from_fn(|i| row[i].as_str())));
    }
    out
}
