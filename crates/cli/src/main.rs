//! `sandpit`: the command line of sandpit (server, sandboxes, exec, files, images).

mod cli;
mod commands;
mod connect;
mod interrupted;
mod progress;
mod shell;

use std::process::ExitCode;

use crate::cli::{Cli, ClusterCommand, Command, FilesCommand, GitCommand};
use crate::commands::cp::Location;
use crate::commands::target::{self, CreateFlag};
use crate::commands::{
    cluster, cp, ctx, env, events, exec, expose, files, git, image, keys, mount, network, process,
    quota, run, sandbox, serve, watch,
};

fn main() -> ExitCode {
    let cli = cli::parse();
    let url = cli.url.clone();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDPIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Err(e) if connect::is_unreachable(&e) => {
            eprintln!("error: cannot reach sandpit at {url} — is `sandpit serve` running?");
            ExitCode::FAILURE
        }
        Err(e) => {
            // Server errors display as `CODE: message`.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; returns the process exit code.
async fn run(cli: Cli) -> anyhow::Result<i32> {
    let Cli {
        url,
        key,
        data_dir,
        command,
    } = cli;
    let client = || connect::client(&url, key.as_deref(), &data_dir);
    // A client for a command that acts on sandbox `id`: the sandbox must exist, or is created
    // with `--create` (the container API would create it silently; see `commands::target`).
    let existing = |id: &str, create: CreateFlag| {
        let id = id.to_owned();
        let client = client();
        async move {
            let client = client?;
            target::ensure(&client, &id, create).await?;
            anyhow::Ok(client)
        }
    };
    // Without `--create`: commands that make no sense on a fresh sandbox.
    let no_create = CreateFlag::default();
    match command {
        Command::Serve(args) => serve::run(*args, data_dir.clone()).await?,
        Command::Cluster {
            command: ClusterCommand::Init { dir },
        } => cluster::init(&dir)?,
        Command::Node(args) => cluster::node(*args, data_dir.clone()).await?,
        Command::Mcp => {
            // stdout carries the protocol: nothing else may print there.
            sandpit_mcp::serve_stdio(&url, &connect::api_key(key.as_deref(), &data_dir)?).await?;
        }
        Command::Create(args) => sandbox::create(&client()?, args).await?,
        Command::Ls(args) => sandbox::ls(&client()?, &args).await?,
        Command::Info { id, json } => sandbox::info(&client()?, &id, json).await?,
        Command::Stop { id } => sandbox::stop(&client()?, &id).await?,
        Command::Rm { ids } => sandbox::rm(&client()?, &ids).await?,
        Command::Exec(args) => {
            // `exec` creates on first use, as the seed system does, and says so.
            let client = client()?;
            target::ensure_or_create(&client, &args.id).await?;
            let id = args.id.clone();
            return interrupted::explained(&client, &id, exec::run(&client, args)).await;
        }
        // `run` checks after reading the code, so a missing file sends nothing.
        Command::Run(args) => {
            let (client, id) = (client()?, args.id.clone());
            return interrupted::explained(&client, &id, run::run(&client, args)).await;
        }
        Command::Cp(args) => {
            let client = match cp_sandbox(&args.src, &args.dst) {
                Some(id) => existing(&id, args.create).await?,
                None => client()?,
            };
            cp::run(&client, &args).await?
        }
        Command::Shell(args) => {
            let key = connect::api_key(key.as_deref(), &data_dir)?;
            let client = existing(&args.id, args.create).await?;
            let id = args.id.clone();
            let shell = commands::shell::run(&client, &url, &key, args);
            return interrupted::explained(&client, &id, shell).await;
        }
        Command::Start(args) => {
            let client = existing(&args.id, args.create).await?;
            process::start(&client, args).await?
        }
        Command::Ps { id, json } => {
            process::ps(&existing(&id, no_create).await?, &id, json).await?
        }
        Command::Logs(args) => {
            let client = existing(&args.id, no_create).await?;
            let id = args.id.clone();
            return interrupted::explained(&client, &id, process::logs(&client, args)).await;
        }
        Command::Kill(args) => {
            let client = existing(&args.id, no_create).await?;
            process::kill(&client, args).await?
        }
        Command::Watch { id, path } => {
            let client = existing(&id, no_create).await?;
            interrupted::explained(&client, &id, watch::run(&client, &id, &path)).await?
        }
        Command::Git { command } => {
            let GitCommand::Clone { id, .. } = &command;
            let client = existing(id, no_create).await?;
            git::run(&client, command).await?
        }
        Command::Expose(args) => {
            let client = existing(&args.id, no_create).await?;
            expose::expose(&client, args).await?
        }
        Command::Unexpose { id, port } => expose::unexpose(&client()?, &id, port).await?,
        Command::Ports { id, json } => expose::ports(&client()?, &id, json).await?,
        Command::Mount(args) => {
            let client = existing(&args.id, no_create).await?;
            mount::mount(&client, args).await?
        }
        Command::Unmount { id, path } => mount::unmount(&client()?, &id, &path).await?,
        Command::Mounts { id, json } => mount::mounts(&client()?, &id, json).await?,
        Command::Network(args) => network::network(&client()?, args).await?,
        Command::Secret { command } => network::secret(&client()?, command).await?,
        Command::Quota(args) => quota::run(&client()?, args).await?,
        Command::Backup { command } => commands::backup::run(&client()?, command).await?,
        Command::Snapshot { command } => commands::snapshot::snapshot(&client()?, command).await?,
        Command::Fork(args) => commands::snapshot::fork(&client()?, args).await?,
        Command::Keys { command } => keys::keys(&client()?, command).await?,
        Command::Audit(args) => keys::audit(&client()?, args).await?,
        Command::Events(args) => events::run(&client()?, args).await?,
        Command::Env(args) => {
            let client = existing(&args.id, args.create).await?;
            env::run(&client, args).await?
        }
        Command::Ctx { command } => {
            let client = existing(command.sandbox_id(), no_create).await?;
            ctx::run(&client, command).await?
        }
        Command::Files { command } => {
            let FilesCommand::Ls { id, .. } = &command;
            let client = existing(id, no_create).await?;
            files::run(&client, command).await?
        }
        Command::Image(args) => {
            let dir = image::images_dir(&args.images, &data_dir);
            image::run(args.command, dir).await?
        }
    }
    Ok(0)
}

/// The sandbox side of a `cp` (if the arguments name one; `cp` itself reports otherwise).
fn cp_sandbox(src: &str, dst: &str) -> Option<String> {
    [src, dst]
        .into_iter()
        .find_map(|side| match Location::parse(side) {
            Ok(Location::Sandbox { id, .. }) => Some(id),
            _ => None,
        })
}
