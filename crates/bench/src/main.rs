//! `sandpit-bench`: start, exec, concurrency, memory and wake numbers of sandpit, with
//! baselines (fork+exec, bubblewrap) measured in the same run. A program, not a test.

mod backup;
mod cluster;
mod density;
mod forks;
mod interpreter;
mod machine;
mod mcp;
mod mounts;
mod preview;
mod process_stream;
mod pty_echo;
mod sdk_overhead;
mod soak;
mod stats;
mod tiers;
mod transfer;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use sandpit_client::protocol::DISABLE_SESSION;
use sandpit_client::protocol::container::ExecuteResponse;
use sandpit_client::protocol::control::CreateSandboxRequest;
use sandpit_client::{Client, ExecOptions, SandboxHandle};
use sandpit_image::{DEFAULT_IMAGE, ImageStore};
use sandpit_server::{ServeConfig, Server};

use crate::stats::Samples;

#[derive(Debug, Parser)]
#[command(
    name = "sandpit-bench",
    about = "Measure sandpit against fork+exec and bubblewrap"
)]
struct Args {
    /// Image directory with the default image.
    #[arg(
        long,
        env = "SANDPIT_IMAGES_DIR",
        default_value = "/var/lib/sandpit/images"
    )]
    images_dir: PathBuf,
    /// Write the Markdown report here (and print it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sequential cold create → first exec samples.
    #[arg(long, default_value_t = 50)]
    cold: usize,
    /// Warm exec round trips.
    #[arg(long, default_value_t = 200)]
    warm: usize,
    /// Concurrent create+exec.
    #[arg(long, default_value_t = 50)]
    concurrent: usize,
    /// Idle sandboxes for the memory measurement.
    #[arg(long, default_value_t = 100)]
    idle: usize,
    /// Sleep → wake samples.
    #[arg(long, default_value_t = 20)]
    wake: usize,
    /// Baseline samples (fork+exec, bwrap).
    #[arg(long, default_value_t = 200)]
    baseline: usize,
    /// Size of the raw file upload/download, MiB (0 skips it).
    #[arg(long, default_value_t = 100)]
    transfer_mib: u64,
    /// Upload + download runs.
    #[arg(long, default_value_t = 3)]
    transfer_runs: usize,
    /// Background process start → first streamed log line samples (0 skips them).
    #[arg(long, default_value_t = 100)]
    process_stream: usize,
    /// PTY keystroke echo round trips (0 skips them).
    #[arg(long, default_value_t = 200)]
    pty: usize,
    /// Code interpreter samples: `1+1` runs and print → client (0 skips the interpreter rows).
    #[arg(long, default_value_t = 200)]
    interpreter: usize,
    /// Cold code context creations (a fresh sandbox each).
    #[arg(long, default_value_t = 10)]
    interpreter_cold: usize,
    /// Code context creations from the warm pool.
    #[arg(long, default_value_t = 20)]
    interpreter_pool: usize,
    /// Measure only the code interpreter rows and their baselines.
    #[arg(long)]
    only_interpreter: bool,
    /// Preview-proxy latency samples, each also taken directly (0 skips the preview rows).
    #[arg(long, default_value_t = 2000)]
    preview: usize,
    /// Keep-alive connections of the preview requests/s run.
    #[arg(long, default_value_t = 32)]
    preview_connections: usize,
    /// Duration of each requests/s run, seconds.
    #[arg(long, default_value_t = 5)]
    preview_secs: u64,
    /// Measure only the preview proxy rows and their baselines.
    #[arg(long, conflicts_with = "only_interpreter")]
    only_preview: bool,
    /// Warm `exec('true')` calls through each SDK (TypeScript, Python), each paired with the
    /// same call through a bare HTTP client (0 skips the SDK rows; an SDK whose runtime or
    /// dependencies are missing is skipped with the reason).
    #[arg(long, default_value_t = 300)]
    sdk: usize,
    /// MCP `exec` tool round trips over HTTP, each with a plain HTTP exec (0 skips the MCP rows).
    #[arg(long, default_value_t = 200)]
    mcp: usize,
    /// Measure only the MCP rows and their baseline.
    #[arg(long, conflicts_with_all = ["only_interpreter", "only_preview"])]
    only_mcp: bool,
    /// Cold create → first exec samples per isolation tier (0 skips the tier rows).
    #[arg(long, default_value_t = 20)]
    tier_cold: usize,
    /// Warm exec samples per isolation tier.
    #[arg(long, default_value_t = 100)]
    tier_warm: usize,
    /// Measure only the per-tier start and exec rows (standard and gvisor side by side).
    #[arg(long, conflicts_with_all = ["only_interpreter", "only_preview", "only_mcp"])]
    only_tiers: bool,
    /// Rounds of the `--only-backup` create/restore rows (1 GiB each).
    #[arg(long, default_value_t = 3)]
    backup_rounds: usize,
    /// Measure only the backup rows and their baseline.
    #[arg(long, conflicts_with_all = ["only_interpreter", "only_preview", "only_mcp", "only_tiers"])]
    only_backup: bool,
    /// Size of the file the bucket mount rows move, MiB.
    #[arg(long, default_value_t = 256)]
    mount_mib: u64,
    /// Runs of each bucket mount row.
    #[arg(long, default_value_t = 3)]
    mount_runs: usize,
    /// Measure only the bucket mount rows (s3fs against the loopback S3 test server) and their
    /// plain-S3-client baselines.
    #[arg(long, conflicts_with_all = ["only_interpreter", "only_preview", "only_mcp", "only_tiers"])]
    only_mounts: bool,
    /// Only the cluster rows (issue 15): three in-process nodes behind a replica on a
    /// throw-away PostgreSQL (Debian's postgresql-15) against a single-box server.
    #[arg(long, conflicts_with_all = ["only_interpreter", "only_preview", "only_mcp", "only_tiers", "only_mounts"])]
    only_cluster: bool,
    /// Fork → first exec samples per workspace size, and cold creates as their baseline (0
    /// skips the fork rows).
    #[arg(long, default_value_t = 20)]
    fork: usize,
    /// Measure only the fork rows and their baseline.
    #[arg(long, conflicts_with_all = ["only_interpreter", "only_preview", "only_mcp", "only_tiers"])]
    only_forks: bool,
    /// Measure only density: N idle sandboxes (default 10000) that must all answer an exec;
    /// reports server fds, host memory per sandbox and the creation rate as they accumulate.
    /// Checks the host limits it needs first and says which to raise.
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "10000",
        conflicts_with_all = ["only_interpreter", "only_preview", "only_mcp", "only_tiers", "only_forks"]
    )]
    only_density: Option<usize>,
    /// Run the sustained-load program for this many seconds instead of the benchmark rows:
    /// workers create, use, sleep, wake and destroy sandboxes at full speed while the host and
    /// server series are sampled; fails when one grows beyond its bound.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Seconds between two samples of the soak series.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    soak_interval: u64,
    /// Concurrent soak workers (each runs one sandbox's life after another).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    soak_workers: u64,
    /// Seconds between the server's checkpoints of background-process records (0: off), to
    /// measure what they cost (e.g. the process stream row with 0 and with the default 2).
    #[arg(long, default_value_t = 2)]
    process_checkpoint_secs: u64,
    /// Directory for soak.csv, soak.json and soak.png.
    #[arg(long, default_value = "soak-out")]
    soak_out: PathBuf,
    /// The in-process server's host-memory floor (`serve --min-host-memory-mb`): a density run
    /// on a shared host can stop creating (HOST_MEMORY_LOW) well before the host runs short.
    #[arg(long, value_name = "MIB", default_value_t = sandpit_server::caps::DEFAULT_MIN_HOST_MEMORY_MB)]
    min_host_memory_mb: u64,
}

/// One row of the report.
struct Row {
    name: String,
    samples: Samples,
    target: String,
}

struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// (target, measured value, met?)
    verdicts: Vec<(String, String, bool)>,
}

/// Numbers beyond latency rows that targets are checked against.
struct Facts {
    concurrent_errors: usize,
    mib_per_idle: f64,
    transfer: Option<transfer::Transfer>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDPIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(secs) = args.soak {
        return runtime.block_on(soak_main(&args, secs));
    }
    let machine = machine::describe();
    let report = runtime.block_on(run(&args))?;
    let text = render(&args, &report, &machine);
    println!("{text}");
    if let Some(out) = &args.out {
        let kept = std::fs::read_to_string(out)
            .map(|old| kept_notes(&old).to_owned())
            .unwrap_or_default();
        std::fs::write(out, text + &kept).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Marks where the hand-written part of the report begins (explanations of missed targets); a
/// new run replaces everything above it and keeps the rest.
const KEPT_NOTES_MARKER: &str = "<!-- written by hand below: kept by sandpit-bench -->";

/// The hand-written tail of an earlier report, from the marker on (empty without one).
fn kept_notes(old: &str) -> &str {
    old.find(KEPT_NOTES_MARKER).map_or("", |at| &old[at..])
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    if let Some(n) = args.only_density {
        density::check_limits(n as u64)?;
        let (_data_dir, server, client) = start_server(args).await?;
        let section = density::measure(&client, n).await;
        server.shutdown().await?;
        return Ok(Report::from(section?));
    }
    if args.only_interpreter
        || args.only_preview
        || args.only_mcp
        || args.only_tiers
        || args.only_backup
        || args.only_forks
    {
        return interpreter_report(args).await;
    }
    if args.only_mounts {
        return mounts_report(args).await;
    }
    if args.only_cluster {
        let (_data_dir, server, client) = start_server(args).await?;
        let section = cluster::measure(args, &client).await;
        server.shutdown().await?;
        return Ok(Report::from(section?));
    }
    let rootfs = ImageStore::open(&args.images_dir)?
        .rootfs(DEFAULT_IMAGE)
        .context("the default image is missing (build it with `sandpit image build`)")?;

    eprintln!("baselines...");
    let fork_exec = time_command(args.baseline, || Command::new("true"))?;
    let bwrap = time_command(args.baseline, || {
        let mut cmd = Command::new("bwrap");
        cmd.args(["--unshare-all", "--die-with-parent", "--ro-bind"])
            .arg(&rootfs)
            .args(["/", "--proc", "/proc", "--dev", "/dev", "true"]);
        cmd
    })
    .context("running bwrap (is bubblewrap installed?)")?;

    let (_data_dir, server, client) = start_server(args).await?;

    let result = measure(args, &client).await;
    let interactive = if result.is_ok() {
        Some(measure_interactive(args, &client, &server).await)
    } else {
        None
    };
    let preview = if result.is_ok() && args.preview > 0 {
        Some(measure_preview(args, &client, &server, &rootfs).await)
    } else {
        None
    };
    let mcp = if result.is_ok() && args.mcp > 0 {
        Some(mcp::measure(&client, server.admin_key(), args.mcp).await)
    } else {
        None
    };
    let interpreter = if result.is_ok() && args.interpreter > 0 {
        Some(interpreter::measure(&client, &interpreter_counts(args)).await)
    } else {
        None
    };
    let sdks = if result.is_ok() && args.sdk > 0 {
        let (url, key) = (client.base_url().to_owned(), server.admin_key().to_owned());
        let calls = args.sdk;
        // The SDKs' programs run as child processes; the server keeps serving meanwhile.
        tokio::task::spawn_blocking(move || sdk_overhead::measure(&url, &key, calls)).await?
    } else {
        Section::default()
    };
    let tiers = if result.is_ok() && args.tier_cold > 0 {
        Some(tiers::measure(&client, &tier_counts(args)).await)
    } else {
        None
    };
    let forks = if result.is_ok() && args.fork > 0 {
        Some(forks::measure(&client, args.fork).await)
    } else {
        None
    };
    server.shutdown().await?;
    let (mut rows, mut notes, facts) = result?;
    let interpreter = interpreter.transpose()?.unwrap_or_default();
    let interactive = interactive.transpose()?.unwrap_or_default();
    let preview = preview.transpose()?.unwrap_or_default();
    let mcp = mcp.transpose()?.unwrap_or_default();
    let tiers = tiers.transpose()?.unwrap_or_default();
    let forks = forks.transpose()?.unwrap_or_default();

    let cold = rows[0].samples.clone();
    let warm_p50 = rows[1].samples.p50();
    let cold_ratio = cold.p50() / bwrap.p50();
    notes.insert(
        0,
        format!(
            "Ratios: cold create→exec p50 / bwrap p50 = **{cold_ratio:.2}×**; \
             warm exec p50 / fork+exec p50 = **{:.2}×**.",
            warm_p50 / fork_exec.p50()
        ),
    );
    notes.push(
        "The default-session exec runs `true` in the session's persistent bash (a builtin, no \
         fork); the sessionless row forks `bash -c true` inside the sandbox per call."
            .into(),
    );
    let ms = |v: f64| format!("{v:.2} ms");
    let mut verdicts = vec![
        (
            "cold p50 ≤ 20 ms".into(),
            ms(cold.p50()),
            cold.p50() <= 20.0,
        ),
        (
            "cold p99 ≤ 60 ms".into(),
            ms(cold.p99()),
            cold.p99() <= 60.0,
        ),
        (
            "cold p50 ≤ 2× bwrap p50".into(),
            format!("{cold_ratio:.2}×"),
            cold_ratio <= 2.0,
        ),
        ("warm exec p50 ≤ 3 ms".into(), ms(warm_p50), warm_p50 <= 3.0),
        (
            "≤ 6 MiB per idle sandbox".into(),
            format!("{:.2} MiB", facts.mib_per_idle),
            facts.mib_per_idle <= 6.0,
        ),
        (
            format!(
                "{} concurrent create → exec without errors",
                args.concurrent
            ),
            format!("{} errors", facts.concurrent_errors),
            facts.concurrent_errors == 0,
        ),
    ];
    if let Some(t) = &facts.transfer {
        for (what, direction) in [("upload", &t.upload), ("download", &t.download)] {
            let mbps = direction.median_mbps();
            verdicts.push((
                format!("{} MiB {what} ≥ 300 MB/s", t.mib),
                direction.summary(),
                mbps >= 300.0,
            ));
        }
    }
    for section in [interactive, preview, mcp, interpreter, sdks, tiers, forks] {
        verdicts.extend(section.verdicts);
        notes.extend(section.notes);
        rows.extend(section.rows);
    }
    rows.push(Row {
        name: "baseline: fork+exec `true`".into(),
        samples: fork_exec,
        target: String::new(),
    });
    rows.push(Row {
        name: "baseline: bwrap --unshare-all … true".into(),
        samples: bwrap,
        target: String::new(),
    });
    Ok(Report {
        rows,
        notes,
        verdicts,
    })
}

fn tier_counts(args: &Args) -> tiers::Counts {
    tiers::Counts {
        cold: args.tier_cold,
        warm: args.tier_warm,
    }
}

fn interpreter_counts(args: &Args) -> interpreter::Counts {
    interpreter::Counts {
        runs: args.interpreter,
        cold: args.interpreter_cold,
        pooled: args.interpreter_pool,
        baseline: args.baseline.min(args.interpreter.max(20)),
    }
}

/// `--soak SECONDS`: the sustained-load program against its own in-process server.
async fn soak_main(args: &Args, secs: u64) -> anyhow::Result<()> {
    let (data_dir, server, client) = start_server(args).await?;
    let settings = soak::Settings {
        duration: Duration::from_secs(secs),
        interval: Duration::from_secs(args.soak_interval),
        workers: args.soak_workers as usize,
        out: args.soak_out.clone(),
    };
    let result = soak::run(&client, data_dir.path(), &settings).await;
    server.shutdown().await?;
    result
}

/// An in-process server on a free loopback port with its own state directory (kept alive by the
/// returned guard), and an admin client of it.
async fn start_server(args: &Args) -> anyhow::Result<(tempfile::TempDir, Server, Client)> {
    let data_dir = tempfile::tempdir()?;
    let mut config = ServeConfig::new(data_dir.path().to_path_buf());
    config.listen = ([127, 0, 0, 1], 0).into();
    config.images_dir = args.images_dir.clone();
    config.process_checkpoint_every = Duration::from_secs(args.process_checkpoint_secs);
    config.min_host_memory_mb = args.min_host_memory_mb;
    let server = Server::start(config).await.context("starting the server")?;
    let client = Client::new(format!("http://{}", server.addr()), server.admin_key())?;
    Ok((data_dir, server, client))
}

/// `--only-mounts`: the bucket mount rows against a loopback S3 server of their own.
async fn mounts_report(args: &Args) -> anyhow::Result<Report> {
    let s3_root = tempfile::tempdir()?;
    let s3 = sandpit_s3_test_server::start(s3_root.path())?;
    let data_dir = tempfile::tempdir()?;
    let mut config = ServeConfig::new(data_dir.path().to_path_buf());
    config.listen = ([127, 0, 0, 1], 0).into();
    config.images_dir = args.images_dir.clone();
    config.mount_endpoints = vec![s3.endpoint.clone()];
    let server = Server::start(config).await.context("starting the server")?;
    let client = Client::new(format!("http://{}", server.addr()), server.admin_key())?;
    let counts = mounts::Counts {
        mib: args.mount_mib,
        runs: args.mount_runs,
    };
    let section = mounts::measure(&client, &s3, &counts).await;
    server.shutdown().await?;
    Ok(Report::from(section?))
}

/// `--only-interpreter`, `--only-preview`, `--only-mcp` or `--only-tiers`: that section alone,
/// `--only-interpreter`, `--only-preview`, `--only-mcp`, `--only-tiers` or `--only-forks`: that
/// section alone,
/// against its own server.
async fn interpreter_report(args: &Args) -> anyhow::Result<Report> {
    let (_data_dir, server, client) = start_server(args).await?;
    let section = if args.only_mcp {
        mcp::measure(&client, server.admin_key(), args.mcp).await
    } else if args.only_preview {
        let rootfs = ImageStore::open(&args.images_dir)?.rootfs(DEFAULT_IMAGE)?;
        measure_preview(args, &client, &server, &rootfs).await
    } else if args.only_tiers {
        tiers::measure(&client, &tier_counts(args)).await
    } else if args.only_backup {
        backup::measure(&client, args.backup_rounds.max(1)).await
    } else if args.only_forks {
        forks::measure(&client, args.fork).await
    } else {
        interpreter::measure(&client, &interpreter_counts(args)).await
    };
    server.shutdown().await?;
    Ok(Report::from(section?))
}

/// Runs the sandbox measurements against a started server.
async fn measure(args: &Args, client: &Client) -> anyhow::Result<(Vec<Row>, Vec<String>, Facts)> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let run = std::process::id();

    // (1) Cold create → first exec.
    eprintln!("cold create → exec x{}...", args.cold);
    let (mut cold, mut cold_create, mut cold_exec) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..args.cold {
        let id = format!("cold-{run}-{i}");
        let request = CreateSandboxRequest {
            id: Some(id.clone()),
            ..Default::default()
        };
        let t = Instant::now();
        client.create(&request).await?;
        let created = t.elapsed();
        exec_true(&client.sandbox(&id)).await?;
        cold.push(t.elapsed());
        cold_create.push(created);
        cold_exec.push(t.elapsed() - created);
        client.destroy(&id).await?;
    }
    notes.push(format!(
        "Cold start split: `POST /v1/sandboxes` p50 {:.2} ms (p99 {:.2}), then the first exec p50 {:.2} ms (p99 {:.2}).",
        cold_create.p50(),
        cold_create.p99(),
        cold_exec.p50(),
        cold_exec.p99()
    ));
    rows.push(Row {
        name: format!("cold create → first `exec true` (N={})", cold.len()),
        samples: cold,
        target: "p50 ≤ 20 ms, p99 ≤ 60 ms, ≤ 2× bwrap".into(),
    });

    // (2) Warm exec.
    eprintln!("warm exec x{}...", args.warm);
    let id = format!("warm-{run}");
    create_and_exec(client, &id).await?;
    let sandbox = client.sandbox(&id);
    for _ in 0..10 {
        exec_true(&sandbox).await?;
    }
    let mut warm = Samples::default();
    for _ in 0..args.warm {
        let t = Instant::now();
        exec_true(&sandbox).await?;
        warm.push(t.elapsed());
    }
    rows.push(Row {
        name: format!(
            "warm `exec true` round trip, default session (N={})",
            warm.len()
        ),
        samples: warm,
        target: "p50 ≤ 3 ms".into(),
    });
    let oneshot = ExecOptions::default().session(DISABLE_SESSION);
    let mut sessionless = Samples::default();
    for _ in 0..args.warm {
        let t = Instant::now();
        check_true(&sandbox, sandbox.exec("true", &oneshot).await?)?;
        sessionless.push(t.elapsed());
    }
    rows.push(Row {
        name: format!(
            "warm `exec true`, sessionless `bash -c` (N={})",
            sessionless.len()
        ),
        samples: sessionless,
        target: String::new(),
    });

    // (5) Sleep → wake, on the warm sandbox.
    eprintln!("sleep → wake x{}...", args.wake);
    let mut wake = Samples::default();
    for _ in 0..args.wake {
        client.stop(&id).await?;
        let t = Instant::now();
        exec_true(&sandbox).await?;
        wake.push(t.elapsed());
    }
    client.destroy(&id).await?;

    // (3) Concurrent create + exec.
    eprintln!("{} concurrent create → exec...", args.concurrent);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrent)
        .map(|i| {
            let client = client.clone();
            let id = format!("conc-{run}-{i}");
            tokio::spawn(async move {
                let t = Instant::now();
                let result = create_and_exec(&client, &id).await;
                (id, t.elapsed(), result)
            })
        })
        .collect();
    let mut concurrent = Samples::default();
    let mut errors = Vec::new();
    let mut ids = Vec::new();
    for task in tasks {
        let (id, elapsed, result) = task.await?;
        match result {
            Ok(()) => concurrent.push(elapsed),
            Err(e) => errors.push(format!("{id}: {e:#}")),
        }
        ids.push(id);
    }
    let total = started.elapsed();
    destroy_all(client, &ids).await;
    rows.push(Row {
        name: format!("{} concurrent create → exec (each)", args.concurrent),
        samples: concurrent,
        target: "no errors".into(),
    });
    notes.push(format!(
        "{} concurrent create → exec: **{} errors**, all done in {:.0} ms.{}",
        args.concurrent,
        errors.len(),
        total.as_secs_f64() * 1000.0,
        errors
            .first()
            .map(|e| format!(" First error: `{e}`"))
            .unwrap_or_default()
    ));
    rows.push(Row {
        name: format!(
            "sleep → wake (stop, then first `exec true`; N={})",
            wake.len()
        ),
        samples: wake,
        target: String::new(),
    });

    // (4) Memory per idle sandbox.
    eprintln!("{} idle sandboxes...", args.idle);
    let ids: Vec<String> = (0..args.idle).map(|i| format!("idle-{run}-{i}")).collect();
    let mut started_ok = 0usize;
    for chunk in ids.chunks(10) {
        let results =
            futures::future::join_all(chunk.iter().map(|id| create_and_exec(client, id))).await;
        started_ok += results.iter().filter(|r| r.is_ok()).count();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = machine::descendants();
    let pss = machine::pss_bytes(&pids);
    let (cgroup_bytes, groups) = machine::cgroup_usage(&pids);
    destroy_all(client, &ids).await;
    let per = |bytes: u64| bytes as f64 / started_ok.max(1) as f64 / (1024.0 * 1024.0);
    notes.push(format!(
        "Memory per idle sandbox ({started_ok} running, target ≤ 6 MiB): **{:.2} MiB PSS** \
         (sum of `Pss` in /proc/<pid>/smaps_rollup over all {} sandbox processes — the \
         descendants of the in-process server — divided by {started_ok}); the sandboxes' memory \
         cgroups ({groups} found) charge {:.2} MiB each (`memory.usage_in_bytes`, includes page cache).",
        per(pss),
        pids.len(),
        per(cgroup_bytes),
    ));
    // (6) Raw file transfer through the control plane.
    let transfer = if args.transfer_mib > 0 {
        eprintln!(
            "{} MiB upload + download x{}...",
            args.transfer_mib, args.transfer_runs
        );
        let t = transfer::measure(client, args.transfer_mib, args.transfer_runs.max(1)).await?;
        notes.push(format!(
            "Raw file transfer of {} MiB through the control plane (`PUT`/`GET \
             /v1/sandboxes/{{id}}/files/*`, client → server → agent → overlay file and back): \
             upload {}; download {}. RSS growth is the rise of this process's peak RSS \
             (`VmHWM` after a reset through `/proc/self/clear_refs`; server and client both \
             run in it) during one transfer.",
            t.mib,
            t.upload.summary(),
            t.download.summary()
        ));
        Some(t)
    } else {
        None
    };
    let facts = Facts {
        concurrent_errors: errors.len(),
        mib_per_idle: per(pss),
        transfer,
    };
    Ok((rows, notes, facts))
}

impl From<Section> for Report {
    fn from(section: Section) -> Self {
        Report {
            rows: section.rows,
            notes: section.notes,
            verdicts: section.verdicts,
        }
    }
}

/// Rows, notes and verdicts of one group of measurements.
#[derive(Default)]
struct Section {
    rows: Vec<Row>,
    notes: Vec<String>,
    verdicts: Vec<(String, String, bool)>,
}

/// Background process streaming and PTY echo, in one sandbox of their own.
async fn measure_interactive(
    args: &Args,
    client: &Client,
    server: &Server,
) -> anyhow::Result<Section> {
    let mut section = Section::default();
    if args.process_stream == 0 && args.pty == 0 {
        return Ok(section);
    }
    let id = format!("interactive-{}", std::process::id());
    create_and_exec(client, &id).await?;
    let result = interactive_rows(args, client, server, &id, &mut section).await;
    client.destroy(&id).await?;
    result.map(|()| section)
}

async fn interactive_rows(
    args: &Args,
    client: &Client,
    server: &Server,
    id: &str,
    section: &mut Section,
) -> anyhow::Result<()> {
    let ratio = |a: &Samples, b: &Samples| a.p50() / b.p50();
    if args.process_stream > 0 {
        eprintln!("process start → first log line x{}...", args.process_stream);
        let m = process_stream::measure(
            client.base_url(),
            server.admin_key(),
            id,
            args.process_stream,
        )
        .await?;
        let p50 = m.sandbox.p50();
        section.verdicts.push((
            "process start → first log line p50 ≤ 5 ms".into(),
            format!("{p50:.2} ms"),
            p50 <= 5.0,
        ));
        section.notes.push(format!(
            "Process start → first log line: `POST /api/process/start` of `echo hi`, then `GET \
             /api/process/{{id}}/stream` (replay, then live) until the `stdout` event with the \
             line; the start answer alone takes p50 {:.2} ms. Ratio to host fork+exec → first \
             byte on a pipe: **{:.1}×**.",
            m.start_answer.p50(),
            ratio(&m.sandbox, &m.baseline)
        ));
        section.rows.push(Row {
            name: format!(
                "process start → first streamed log line (N={})",
                m.sandbox.len()
            ),
            samples: m.sandbox,
            target: "p50 ≤ 5 ms".into(),
        });
        section.rows.push(Row {
            name: "baseline: host fork+exec `echo hi` → first byte on a pipe".into(),
            samples: m.baseline,
            target: String::new(),
        });
    }
    if args.pty > 0 {
        eprintln!("PTY keystroke echo x{}...", args.pty);
        let ws_base = client.base_url().replacen("http", "ws", 1);
        let m = pty_echo::measure(&ws_base, server.admin_key(), id, args.pty).await?;
        let p50 = m.sandbox.p50();
        section.verdicts.push((
            "PTY keystroke echo p50 ≤ 2 ms".into(),
            format!("{p50:.2} ms"),
            p50 <= 2.0,
        ));
        section.notes.push(format!(
            "PTY keystroke echo: one byte as a binary frame on `WS /v1/sandboxes/{{id}}/ws/pty` \
             (client → server → agent → PTY → bash's readline and back), timed until its echo \
             arrives; a backspace after each keeps the line empty. Baseline: the same byte on a \
             host PTY with `bash --norc -i` attached, read from the master. Ratio **{:.1}×**.",
            ratio(&m.sandbox, &m.baseline)
        ));
        section.rows.push(Row {
            name: format!(
                "PTY keystroke echo via control plane (N={})",
                m.sandbox.len()
            ),
            samples: m.sandbox,
            target: "p50 ≤ 2 ms".into(),
        });
        section.rows.push(Row {
            name: "baseline: keystroke echo on a host PTY (bash)".into(),
            samples: m.baseline,
            target: String::new(),
        });
    }
    Ok(())
}

/// Preview proxy latency against a direct connection, and requests/s through the proxy.
async fn measure_preview(
    args: &Args,
    client: &Client,
    server: &Server,
    rootfs: &std::path::Path,
) -> anyhow::Result<Section> {
    eprintln!(
        "preview proxy x{} + {} connections for {} s...",
        args.preview, args.preview_connections, args.preview_secs
    );
    let id = format!("preview-{}", std::process::id());
    let result = preview::measure(
        client,
        server.addr(),
        rootfs,
        &id,
        args.preview,
        args.preview_connections.max(1),
        args.preview_secs.max(1),
    )
    .await;
    client.destroy(&id).await?;
    let m = result?;
    let mut section = Section::default();
    let added = m.proxy.p50() - m.direct.p50();
    section.verdicts.push((
        "preview proxy adds ≤ 0.5 ms p50 over a direct connection".into(),
        format!(
            "+{added:.3} ms ({:.3} vs {:.3} ms, {:.2}×)",
            m.proxy.p50(),
            m.direct.p50(),
            m.proxy.p50() / m.direct.p50()
        ),
        added <= 0.5,
    ));
    let rps = m.proxy_load.per_sec();
    section.verdicts.push((
        "≥ 5,000 requests/s through the preview proxy, no errors".into(),
        format!(
            "{rps:.0} req/s, {} errors ({} connections)",
            m.proxy_load.errors, m.connections
        ),
        rps >= 5000.0 && m.proxy_load.errors == 0,
    ));
    section.notes.push(format!(
        "Preview proxy: `GET /` of a 2-byte answer from the same Node program (`http` module, \
         keep-alive), through its preview URL (client → server's Host-routed proxy → agent tunnel \
         over the sandbox's Unix socket → the port inside the sandbox) and directly on the host's \
         loopback, one keep-alive hyper connection each, requests alternating. Added p50 \
         **{added:.3} ms** (ratio **{:.2}×**), added p99 {:.3} ms. Load: {} keep-alive \
         connections from a hyper load generator in the bench process for {:.1} s: through the \
         proxy **{rps:.0} req/s, {} errors**; direct {:.0} req/s, {} errors. The server, the \
         load generator, the agent and Node share the machine's cores.{}",
        m.proxy.p50() / m.direct.p50(),
        m.proxy.p99() - m.direct.p99(),
        m.connections,
        m.proxy_load.elapsed.as_secs_f64(),
        m.proxy_load.errors,
        m.direct_load.per_sec(),
        m.direct_load.errors,
        m.proxy_load
            .first_error
            .as_ref()
            .map(|e| format!(" First proxy error: `{e}`."))
            .unwrap_or_default()
    ));
    section.rows.push(Row {
        name: format!("small GET through the preview proxy (N={})", m.proxy.len()),
        samples: m.proxy,
        target: "≤ direct + 0.5 ms p50".into(),
    });
    section.rows.push(Row {
        name: "baseline: the same GET directly to the same Node program on loopback".into(),
        samples: m.direct,
        target: String::new(),
    });
    Ok(section)
}

async fn create_and_exec(client: &Client, id: &str) -> anyhow::Result<()> {
    let request = CreateSandboxRequest {
        id: Some(id.to_owned()),
        ..Default::default()
    };
    client.create(&request).await?;
    exec_true(&client.sandbox(id)).await
}

/// `n` cold creates → first `exec true` (each sandbox destroyed after), ids `{prefix}-{i}`.
async fn cold_creates(client: &Client, prefix: &str, n: usize) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let t = Instant::now();
        client
            .create(&CreateSandboxRequest {
                id: Some(id.clone()),
                ..Default::default()
            })
            .await?;
        let result = exec_true(&client.sandbox(&id)).await;
        samples.push(t.elapsed());
        client.destroy(&id).await?;
        result?;
    }
    Ok(samples)
}

async fn exec_true(sandbox: &SandboxHandle) -> anyhow::Result<()> {
    check_true(
        sandbox,
        sandbox.exec("true", &ExecOptions::default()).await?,
    )
}

fn check_true(sandbox: &SandboxHandle, out: ExecuteResponse) -> anyhow::Result<()> {
    if out.exit_code != 0 {
        bail!(
            "`true` exited {} in {}: {}",
            out.exit_code,
            sandbox.id(),
            out.stderr
        );
    }
    Ok(())
}

async fn destroy_all(client: &Client, ids: &[String]) {
    let client = Arc::new(client.clone());
    for chunk in ids.chunks(10) {
        futures::future::join_all(chunk.iter().map(|id| {
            let client = client.clone();
            async move {
                if let Err(e) = client.destroy(id).await {
                    eprintln!("warning: destroying {id}: {e}");
                }
            }
        }))
        .await;
    }
}

/// Times `n` runs of a command to completion; each must succeed.
fn time_command(n: usize, make: impl Fn() -> Command) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    for _ in 0..n {
        let mut cmd = make();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let out = cmd.output()?;
        samples.push(t.elapsed());
        if !out.status.success() {
            bail!(
                "{:?} failed: {}",
                cmd,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(samples)
}

fn render(args: &Args, report: &Report, machine: &str) -> String {
    let mut out = String::from("# sandpit benchmarks\n\n");
    out.push_str("Produced by `cargo run --release -p sandpit-bench -- --out docs/benchmarks.md` ");
    out.push_str("(server in-process, HTTP over loopback, default image).\n\n");
    out.push_str(&format!("Machine: {machine}.\n\n"));
    out.push_str(
        "Baselines run in the same process and minute as the sandpit numbers, so the ratios \
         stay meaningful when other work on the machine moves the absolute latencies.\n\n",
    );
    out.push_str(&format!(
        "Parameters: cold N={}, warm N={}, concurrent {}, idle {}, wake N={}, baselines N={}, \
         process stream N={}, PTY echo N={}, preview N={} (load: {} connections, {} s), \
         SDK exec pairs N={}.\n\n",
        args.cold,
        args.warm,
        args.concurrent,
        args.idle,
        args.wake,
        args.baseline,
        args.process_stream,
        args.pty,
        args.preview,
        args.preview_connections,
        args.preview_secs,
        args.sdk
    ));
    out.push_str("| measurement | p50 ms | p95 ms | p99 ms | target |\n|---|---:|---:|---:|---|\n");
    for row in &report.rows {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {} |\n",
            row.name,
            row.samples.p50(),
            row.samples.p95(),
            row.samples.p99(),
            row.target
        ));
    }
    out.push_str("\n| target | measured | met |\n|---|---|---|\n");
    for (target, value, met) in &report.verdicts {
        let met = if *met { "yes" } else { "**no**" };
        out.push_str(&format!("| {target} | {value} | {met} |\n"));
    }
    out.push('\n');
    for note in &report.notes {
        out.push_str(&format!("- {note}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_report_keeps_the_hand_written_tail() {
        let old = format!("# old numbers\n| 1 |\n\n{KEPT_NOTES_MARKER}\n## Missed target\nwhy\n");
        assert_eq!(
            kept_notes(&old),
            format!("{KEPT_NOTES_MARKER}\n## Missed target\nwhy\n")
        );
        assert_eq!(kept_notes("# old numbers only\n"), "");
    }
}
