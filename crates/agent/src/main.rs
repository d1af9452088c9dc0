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
    Serve {
        /// Unix socket to create.
        #[arg(long)]
        socket: PathBuf,
        /// Default cwd and base of relative paths (default /workspace, or $SANDPIT_WORKSPACE).
        #[arg(long)]
        workspace: Option<PathBuf>,
    },
    /// Read a LaunchConfig (JSON) from stdin, enter the sandbox, serve on fd 3.
    Launch,
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

fn serve(socket: PathBuf, workspace: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = AgentConfig::from_process_env();
    init_tracing(config.env.get("RUST_LOG").map(String::as_str));
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
        Cmd::Serve { socket, workspace } => serve(socket, workspace),
        Cmd::Launch => launch::launch(),
    }
}

mod launch;
