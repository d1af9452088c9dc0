//! `sandpit`: the command line of sandpit (server, sandboxes, exec, files, images).

mod cli;
mod commands;
mod connect;
mod progress;
mod shell;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::commands::{
    cp, exec, expose, git, image, keys, network, process, quota, run, sandbox, serve, watch,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match command {
        Command::Serve(args) => serve::run(args, data_dir.clone()).await?,
        Command::Create(args) => sandbox::create(&client()?, args).await?,
        Command::Ls(args) => sandbox::ls(&client()?, args.json).await?,
        Command::Stop { id } => sandbox::stop(&client()?, &id).await?,
        Command::Rm { ids } => sandbox::rm(&client()?, &ids).await?,
        Command::Exec(args) => return exec::run(&client()?, args).await,
        Command::Run(args) => return run::run(&client()?, args).await,
        Command::Cp { src, dst } => cp::run(&client()?, &src, &dst).await?,
        Command::Shell(args) => {
            let key = connect::api_key(key.as_deref(), &data_dir)?;
            return commands::shell::run(&client()?, &url, &key, args).await;
        }
        Command::Start(args) => process::start(&client()?, args).await?,
        Command::Ps { id, json } => process::ps(&client()?, &id, json).await?,
        Command::Logs(args) => return process::logs(&client()?, args).await,
        Command::Kill(args) => process::kill(&client()?, args).await?,
        Command::Watch { id, path } => watch::run(&client()?, &id, &path).await?,
        Command::Git { command } => git::run(&client()?, command).await?,
        Command::Expose(args) => expose::expose(&client()?, args).await?,
        Command::Unexpose { id, port } => expose::unexpose(&client()?, &id, port).await?,
        Command::Ports { id, json } => expose::ports(&client()?, &id, json).await?,
        Command::Network(args) => network::network(&client()?, args).await?,
        Command::Secret { command } => network::secret(&client()?, command).await?,
        Command::Quota(args) => quota::run(&client()?, args).await?,
        Command::Keys { command } => keys::keys(&client()?, command).await?,
        Command::Audit(args) => keys::audit(&client()?, args).await?,
        Command::Image(args) => {
            let dir = image::images_dir(&args.images, &data_dir);
            image::run(args.command, dir).await?
        }
    }
    Ok(0)
}
