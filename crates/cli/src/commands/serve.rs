//! `sandpit serve`.

use std::path::PathBuf;

use anyhow::Context;
use sandpit_image::ImageStore;
use sandpit_protocol::control::Limits;
use sandpit_protocol::quota::TenantQuota;
use sandpit_server::{ServeConfig, Server};

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    raise_nofile();
    let mut config = ServeConfig::new(data_dir.clone());
    config.listen = args.listen;
    config.store = args.store;
    config.cluster_dir = args.cluster_dir;
    config.images_dir = super::image::images_dir(&args.images, &data_dir);
    config.preview_domain = args.preview_domain;
    config.preview_scheme = args.preview_scheme;
    config.preview_port = args.preview_port;
    config.egress_resolve.extend(args.egress_resolve);
    config.egress_blocked.extend(args.egress_block);
    config.egress_private.extend(args.egress_private);
    for (tenant, net) in args.egress_grant {
        config.egress_grants.entry(tenant).or_default().push(net);
    }
    config.egress_extra_roots = args.egress_root;
    config.mount_endpoints = args.mount_endpoint;
    let max = args.maxima;
    config.max_limits = Limits {
        memory_mb: max.max_memory_mb,
        cpus: max.max_cpus,
        pids: max.max_pids,
        disk_mb: max.max_disk_mb,
    };
    config.max_exposed_ports = max.max_exposed_ports;
    config.max_processes = max.max_processes;
    config.max_mounts_per_sandbox = max.max_mounts_per_sandbox;
    let quota = args.default_quota;
    config.default_quota = TenantQuota {
        sandboxes: quota.default_quota_sandboxes,
        running_sandboxes: quota.default_quota_running,
        memory_mb: quota.default_quota_memory_mb,
        disk_mb: quota.default_quota_disk_mb,
    };
    config.metrics_auth = args.metrics_auth;
    config.cgroup_root = args.cgroup_root;
    config.sandbox_sysfs = args.sandbox_sysfs;
    config.min_host_memory_mb = args.min_host_memory_mb;
    config.egress_max_connections_per_sandbox = args.egress_max_connections_per_sandbox;
    config.egress_max_connections_per_tenant = args.egress_max_connections_per_tenant;
    args.object_store.apply(&mut config)?;

    let images_dir = config.images_dir.clone();
    tokio::task::spawn_blocking(move || {
        let store = ImageStore::open(&images_dir)?;
        super::image::ensure_default(&store)
    })
    .await??;

    let server = Server::start(config).await.context("starting the server")?;
    let url = format!("http://{}", server.addr());
    println!("sandpit listening on {url}");
    if server.admin_key_configured() {
        println!(
            "admin key taken from ${} (no key file is written)",
            sandpit_server::ADMIN_KEY_ENV
        );
    } else {
        println!("admin key stored in {}", server.key_file().display());
    }
    println!("try: SANDPIT_URL={url} sandpit exec demo -- echo hello");
    // Until ctrl-c or SIGTERM; then running sandboxes are put to sleep.
    Ok(server.wait().await?)
}

/// Raises the soft `nofile` limit to the hard one: the server keeps about one descriptor per
/// running sandbox (its log pipe), and the usual soft default (1,024) would cap it far below
/// what the host can run. The hard limit is the operator's to raise (docs/operations.md).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("warning: could not raise the open-file limit from {soft} to {hard}: {e}");
    }
}

/// `--egress-resolve NAME=ADDRESS`.
pub fn parse_resolve(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=ADDRESS"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an IP address: {e}"))?;
    Ok((name.to_owned(), addr))
}

/// `--egress-grant TENANT=CIDR`.
pub fn parse_grant(s: &str) -> Result<(String, sandpit_server::egress::IpNet), String> {
    let (tenant, cidr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected TENANT=CIDR"))?;
    Ok((tenant.to_owned(), parse_cidr(cidr)?))
}

/// `--egress-block CIDR` (a bare address blocks that host).
pub fn parse_cidr(s: &str) -> Result<sandpit_server::egress::IpNet, String> {
    sandpit_server::egress::parse_cidr(s).ok_or_else(|| format!("{s:?} is not a CIDR"))
}
