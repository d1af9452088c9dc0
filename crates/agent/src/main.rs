//! `sandpit-agent`: `serve --socket PATH` (host-side dev/test mode) or `launch` (enter the
//! sandbox described on stdin, then serve on the socket passed as fd 3).

use std::io::IsTerminal;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sandpit_agent::AgentConfig;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "sandpit-agent",
    version,
    about = "The sandpit in-sandbox agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bind PATH and serve the container API on it (no isolation).
    Serve(ServeArgs),
    /// Read a LaunchConfig (JSON) from stdin, enter the sandbox, serve on fd 3.
    Launch,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Unix socket to create.
    #[arg(long)]
    socket: PathBuf,
    /// Default cwd and base of relative paths (default /workspace, or $SANDPIT_WORKSPACE).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Serve the egress bridge (127.0.0.1:3128 to /run/sandpit/egress.sock), as in launch
    /// mode: for a sandbox whose runtime (gVisor) starts the agent with `serve`.
    #[arg(long)]
    egress_bridge: bool,
    /// The agent's tracing filter; without it, $RUST_LOG (default `warn`).
    #[arg(long)]
    log_filter: Option<String>,
}

pub(crate) fn init_tracing(rust_log: Option<&str>) {
    let filter = rust_log
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        socket,
        workspace,
        egress_bridge,
        log_filter,
    } = args;
    let mut config = AgentConfig::from_process_env();
    init_tracing(
        log_filter
            .as_deref()
            .or(config.env.get("RUST_LOG").map(String::as_str)),
    );
    if egress_bridge {
        config.egress_bridge = Some(sandpit_agent::egress_bridge::BridgeConfig::default());
    }
    if let Some(workspace) = workspace {
        config.workspace = workspace;
    }
    if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(&socket)
            .with_context(|| format!("removing stale {}", socket.display()))?;
    }
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    // Orphans of our commands come back to us, as they would to PID 1 in a sandbox.
    if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(%err, "could not become a child subreaper");
    }
    tracing::info!(socket = %socket.display(), "serving");
    sandpit_agent::run(listener, config).context("agent failed")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(args) => serve(args),
        Cmd::Launch => launch::launch(),
    }
}

mod launch;
