//! `sandpit cluster init` and `sandpit node`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sandpit_server::cluster::{node, pki};

use crate::cli::NodeArgs;

pub fn init(dir: &Path) -> anyhow::Result<()> {
    let token = pki::init(dir).with_context(|| format!("initialising {}", dir.display()))?;
    println!("{token}");
    eprintln!(
        "cluster CA and join token written to {} (serve --cluster-dir {0}; node --token …)",
        dir.display()
    );
    Ok(())
}

pub async fn node(args: NodeArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    let images_dir = super::image::images_dir(&args.images, &data_dir);
    let config = node::NodeConfig {
        listen: args.listen,
        advertise: args.advertise,
        health_listen: args.health_listen,
        images_dir,
        agent_bin: sandpit_server::find_agent_binary()
            .unwrap_or_else(|| PathBuf::from("sandpit-agent")),
        join_url: args.join,
        token: args.token,
        node_id: args.node_id,
        first_uid: args.first_uid,
        cgroup_root: args.cgroup_root,
        max_sandboxes: args.max_sandboxes,
        data_dir,
    };
    let daemon = node::start(config).await.context("starting the node")?;
    println!(
        "sandpit node {} serving its API on {}",
        daemon.id(),
        daemon.addr()
    );
    if let Some(health) = daemon.health_addr() {
        println!("health on http://{health}/healthz");
    }
    daemon.wait().await
}
