//! Cluster rows (issue 15, `--only-cluster`): three in-process nodes (`sandpit node`'s daemon,
//! each with its own data dir, uid range and cgroup) behind one control-plane replica on a
//! throw-away PostgreSQL, all on loopback, against a single-box server measured in the same
//! run. Rows: cold create → first exec through the replica onto a remote node vs the single
//! box; placement of 200 sandboxes over the three nodes (largest share) and the creation rate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use sandpit_client::Client;
use sandpit_client::protocol::control::{CreateSandboxRequest, SandboxInfo};
use sandpit_server::cluster::node::{self, NodeConfig, NodeDaemon};
use sandpit_server::cluster::pki;
use sandpit_server::{ServeConfig, Server, StoreBackend};
use sandpit_store::test_postgres::TestPostgres;

use crate::stats::Samples;
use crate::{Args, Row, Section, cold_creates};

/// Nodes of the cluster.
const NODES: u32 = 3;
/// Sandboxes placed for the placement row.
const PLACED: usize = 200;
/// Sandboxes created on the single box for the creation-rate baseline.
const SINGLE_PLACED: usize = 100;
/// Creations in flight at once for the placement row.
const PARALLEL: usize = 8;

struct Cluster {
    _pg: TestPostgres,
    _dir: tempfile::TempDir,
    server: Server,
    nodes: Vec<NodeDaemon>,
    client: Client,
}

async fn start_cluster(args: &Args) -> anyhow::Result<Cluster> {
    let pg = TestPostgres::start().context("PostgreSQL (postgresql-15 from Debian) is needed")?;
    let dir = tempfile::tempdir()?;
    let cluster_dir = dir.path().join("cluster");
    let token = pki::init(&cluster_dir)?;
    let mut config = ServeConfig::new(dir.path().join("replica"));
    config.listen = ([127, 0, 0, 1], 0).into();
    config.images_dir = args.images_dir.clone();
    config.store = StoreBackend::parse(&pg.url()).map_err(anyhow::Error::msg)?;
    config.cluster_dir = Some(cluster_dir);
    let server = Server::start(config)
        .await
        .context("starting the replica")?;
    let url = format!("http://{}", server.addr());
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let data_dir = dir.path().join(format!("node-{i}"));
        let config = NodeConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            advertise: None,
            health_listen: None,
            data_dir,
            images_dir: args.images_dir.clone(),
            agent_bin: sandpit_server::find_agent_binary()
                .context("no sandpit-agent (set SANDPIT_AGENT_BIN)")?,
            join_url: url.clone(),
            token: token.clone(),
            node_id: Some(format!("bench-node-{i}")),
            first_uid: 1_500_000_000 + i * 100_000_000,
            cgroup_root: format!("/sandpit-bench-{}-{i}", std::process::id()),
            max_sandboxes: 100,
        };
        nodes.push(node::start(config).await?);
    }
    let client = Client::new(url, server.admin_key())?;
    Ok(Cluster {
        _pg: pg,
        _dir: dir,
        server,
        nodes,
        client,
    })
}

pub async fn measure(args: &Args, single_box: &Client) -> anyhow::Result<Section> {
    let mut section = Section::default();
    let run = std::process::id();
    let cluster = start_cluster(args).await?;
    let result = measure_on(args, single_box, &cluster.client, run).await;
    for node in cluster.nodes {
        node.shutdown().await;
    }
    cluster.server.shutdown().await?;
    let (rows, notes, verdicts) = result?;
    section.rows = rows;
    section.notes = notes;
    section.verdicts = verdicts;
    Ok(section)
}

type Measured = (Vec<Row>, Vec<String>, Vec<(String, String, bool)>);

async fn measure_on(
    args: &Args,
    single_box: &Client,
    cluster: &Client,
    run: u32,
) -> anyhow::Result<Measured> {
    let (mut rows, mut notes, mut verdicts) = (Vec::new(), Vec::new(), Vec::new());
    let n = args.cold.max(5);
    // Alternating blocks, so drift of the machine's load hits both alike.
    let (mut local, mut remote) = (Samples::default(), Samples::default());
    for round in 0..2 {
        eprintln!(
            "cluster: cold create → exec x{} (single box, round {round})...",
            n / 2
        );
        for s in cold_creates(single_box, &format!("cl-local-{run}-{round}"), n / 2)
            .await?
            .ms()
        {
            local.push(Duration::from_secs_f64(*s / 1000.0));
        }
        eprintln!(
            "cluster: cold create → exec x{} (remote node, round {round})...",
            n / 2
        );
        for s in cold_creates(cluster, &format!("cl-remote-{run}-{round}"), n / 2)
            .await?
            .ms()
        {
            remote.push(Duration::from_secs_f64(*s / 1000.0));
        }
    }
    let ratio = remote.p50() / local.p50();
    verdicts.push((
        "cold create → first exec through a replica onto a remote node: p50 ≤ 15 ms".into(),
        format!(
            "{:.2} ms ({ratio:.2}× the single box's {:.2} ms)",
            remote.p50(),
            local.p50()
        ),
        remote.p50() <= 15.0,
    ));
    rows.push(Row {
        name: format!("cold create → first exec, single box (N={})", local.len()),
        samples: local,
        target: "baseline".into(),
    });
    rows.push(Row {
        name: format!(
            "cold create → first exec, replica → remote node (N={})",
            remote.len()
        ),
        samples: remote,
        target: "p50 ≤ 15 ms".into(),
    });

    // The same burst on the single box: what creating costs on this machine without a
    // cluster (a smaller one, this is only the baseline).
    eprintln!("cluster: creating {SINGLE_PLACED} sandboxes on the single box...");
    let prefix = format!("cl-single-{run}");
    let (single, single_elapsed) = create_burst(single_box, &prefix, SINGLE_PLACED).await;
    destroy_burst(single_box, &prefix, SINGLE_PLACED).await;
    let mut single_latency = Samples::default();
    let single_ok = single.iter().filter(|(info, _)| info.is_ok()).count();
    for (_, took) in &single {
        single_latency.push(*took);
    }
    let single_rate = single_ok as f64 / single_elapsed.as_secs_f64();
    notes.push(format!(
        "Baseline: the single box created {single_ok} of {SINGLE_PLACED} the same way in {:.1} s ({single_rate:.1} creations/s).",
        single_elapsed.as_secs_f64()
    ));
    rows.push(Row {
        name: format!(
            "create on the single box, {PARALLEL} in flight (N={})",
            single_latency.len()
        ),
        samples: single_latency,
        target: "baseline".into(),
    });

    eprintln!("cluster: placing {PLACED} sandboxes over {NODES} nodes...");
    let prefix = format!("cl-place-{run}");
    let (creates, elapsed) = create_burst(cluster, &prefix, PLACED).await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut latency = Samples::default();
    let mut failed = 0;
    for (info, took) in creates {
        match info {
            Ok(info) => {
                *per_node.entry(info.node.unwrap_or_default()).or_default() += 1;
                latency.push(took);
            }
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    notes.push(format!("first failed create of the placement row: {e}"));
                }
            }
        }
    }
    let placed: usize = per_node.values().sum();
    let max_share = per_node.values().copied().max().unwrap_or(0) as f64 * 100.0 / PLACED as f64;
    let rate = placed as f64 / elapsed.as_secs_f64();
    notes.push(format!(
        "Placement of {PLACED} sandboxes ({PARALLEL} creates in flight, ephemeral) over {NODES} nodes: {per_node:?}; {failed} failed; {placed} in {:.1} s.",
        elapsed.as_secs_f64()
    ));
    verdicts.push((
        format!("placement of {PLACED} sandboxes over {NODES} nodes: no node above 40 %"),
        format!("largest share {max_share:.1} %"),
        failed == 0 && max_share <= 40.0,
    ));
    verdicts.push((
        "sustained ≥ 50 creations/s across the cluster".into(),
        format!("{rate:.1} creations/s (single box: {single_rate:.1})"),
        rate >= 50.0,
    ));
    rows.push(Row {
        name: format!(
            "create on the cluster, {PARALLEL} in flight (N={})",
            latency.len()
        ),
        samples: latency,
        target: "≥ 50 creations/s".into(),
    });
    eprintln!("cluster: destroying the placed sandboxes...");
    destroy_burst(cluster, &prefix, PLACED).await;
    Ok((rows, notes, verdicts))
}

type Created = (anyhow::Result<SandboxInfo>, Duration);

/// Creates `{prefix}-{i}` for i < n (ephemeral), [`PARALLEL`] in flight: each answer with
/// its latency, and the time of the whole burst.
async fn create_burst(client: &Client, prefix: &str, n: usize) -> (Vec<Created>, Duration) {
    let t = Instant::now();
    let creates = futures::stream::iter(0..n)
        .map(|i| async move {
            let started = Instant::now();
            let info = client
                .create(&CreateSandboxRequest {
                    id: Some(format!("{prefix}-{i}")),
                    ephemeral: Some(true),
                    ..Default::default()
                })
                .await
                .map_err(anyhow::Error::from);
            (info, started.elapsed())
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
    (creates, t.elapsed())
}

async fn destroy_burst(client: &Client, prefix: &str, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let _ = client.destroy(&format!("{prefix}-{i}")).await;
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
}
