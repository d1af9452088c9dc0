//! `--only-density N` (issue 16): N idle sandboxes on one server. Checks the operator limits the
//! run needs before it starts (and says which to raise), creates the sandboxes (keep-alive, so
//! none sleeps), then checks that every one answers an exec, and reports the server's file
//! descriptors, the host memory each sandbox costs (`MemAvailable` before and after: PSS of its
//! processes plus what the kernel keeps for it), and the creation rate per block of sandboxes as
//! the number of live ones grows.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use sandpit_client::Client;
use sandpit_client::protocol::control::CreateSandboxRequest;

use crate::stats::Samples;
use crate::{Row, Section, exec_true, machine};

/// Creates (and later execs and destroys) this many sandboxes at once.
const CONCURRENCY: usize = 16;
/// Descriptors the server may hold per running sandbox before the run counts as a failure
/// (the ceiling issue 16 is about: at 2 per sandbox a `nofile` of 20,000 stops at 10,000).
const MAX_FDS_PER_SANDBOX: f64 = 1.5;

/// A host limit the run needs.
struct Need {
    what: &'static str,
    have: u64,
    need: u64,
    raise: &'static str,
}

fn read_sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Raises the soft `nofile` limit to the hard one, then checks what `n` sandboxes need: file
/// descriptors of this process (the server runs in it), pids and threads, user, mount, pid and
/// network namespaces, and memory (at least 2 MiB per sandbox). Fails with every limit to raise.
pub fn check_limits(n: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let mut needs = vec![Need {
        what: "hard RLIMIT_NOFILE of the server process",
        have: hard,
        // Up to MAX_FDS_PER_SANDBOX per sandbox (more fails the run anyway), plus the
        // concurrent creates' sockets and pipes and the server's own.
        need: (n as f64 * MAX_FDS_PER_SANDBOX) as u64 + 64 * CONCURRENCY as u64 + 1024,
        raise: "`ulimit -Hn` (LimitNOFILE= for a systemd unit, nofile in limits.conf)",
    }];
    // Each sandbox: its init (the agent, a few threads) plus the server's log copier thread.
    for (what, path, per, raise) in [
        (
            "kernel.pid_max",
            "/proc/sys/kernel/pid_max",
            8,
            "sysctl kernel.pid_max",
        ),
        (
            "kernel.threads-max",
            "/proc/sys/kernel/threads-max",
            8,
            "sysctl kernel.threads-max",
        ),
        (
            "user.max_user_namespaces",
            "/proc/sys/user/max_user_namespaces",
            1,
            "sysctl user.max_user_namespaces",
        ),
        (
            "user.max_mnt_namespaces",
            "/proc/sys/user/max_mnt_namespaces",
            1,
            "sysctl user.max_mnt_namespaces",
        ),
        (
            "user.max_pid_namespaces",
            "/proc/sys/user/max_pid_namespaces",
            1,
            "sysctl user.max_pid_namespaces",
        ),
        (
            "user.max_net_namespaces",
            "/proc/sys/user/max_net_namespaces",
            1,
            "sysctl user.max_net_namespaces",
        ),
    ] {
        if let Some(have) = read_sysctl(path) {
            needs.push(Need {
                what,
                have,
                need: n * per + 1024,
                raise,
            });
        }
    }
    if let Some(available) = mem_available_kb() {
        needs.push(Need {
            what: "MemAvailable (MiB; 2 MiB per sandbox plus the server's 512 MiB floor)",
            have: available / 1024,
            need: n * 2 + 1024,
            raise: "a bigger host, or a smaller N",
        });
    }
    let short: Vec<String> = needs
        .iter()
        .filter(|l| l.have < l.need)
        .map(|l| {
            format!(
                "  {}: {} < {} needed for {n} sandboxes; raise it with {}",
                l.what, l.have, l.need, l.raise
            )
        })
        .collect();
    if !short.is_empty() {
        bail!(
            "this host's limits are too low for --only-density {n}:\n{}",
            short.join("\n")
        );
    }
    Ok(())
}

fn mem_available_kb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Runs `op` over `ids` with [`CONCURRENCY`] at a time; returns the errors.
async fn for_all<F, Fut>(ids: &[String], op: F) -> Vec<String>
where
    F: Fn(String) -> Fut + Clone,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures::StreamExt;
    futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let op = op.clone();
            async move { op(id.clone()).await.err().map(|e| format!("{id}: {e:#}")) }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|e| async move { e })
        .collect()
        .await
}

pub async fn measure(client: &Client, n: usize) -> anyhow::Result<Section> {
    let mut section = Section::default();
    let run = std::process::id();
    let client = Arc::new(client.clone());
    let ids: Vec<String> = (0..n).map(|i| format!("dens-{run}-{i}")).collect();
    let block = if n <= 2000 { 100 } else { 1000 };
    let fds_before = open_fds();
    let mem_before = mem_available_kb().unwrap_or(0);
    let create = {
        let client = client.clone();
        move |id: String| {
            let client = client.clone();
            async move {
                client
                    .create(&CreateSandboxRequest {
                        id: Some(id.clone()),
                        keep_alive: Some(true),
                        ..Default::default()
                    })
                    .await?;
                exec_true(&client.sandbox(&id)).await
            }
        }
    };
    let mut rates = Vec::new();
    let mut create_errors = Vec::new();
    let all = Instant::now();
    for (i, chunk) in ids.chunks(block).enumerate() {
        let t = Instant::now();
        let errors = for_all(chunk, create.clone()).await;
        let secs = t.elapsed().as_secs_f64();
        let rate = (chunk.len() - errors.len()) as f64 / secs;
        eprintln!(
            "  sandboxes {}..{}: {rate:.1}/s, {} errors, server fds {}, MemAvailable {} MiB",
            i * block,
            i * block + chunk.len(),
            errors.len(),
            open_fds(),
            mem_available_kb().unwrap_or(0) / 1024
        );
        rates.push((i * block, chunk.len(), rate));
        create_errors.extend(errors);
    }
    let create_secs = all.elapsed().as_secs_f64();
    // Let the started agents settle before memory is read.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let fds_after = open_fds();
    let mem_after = mem_available_kb().unwrap_or(0);
    let pids = machine::descendants();
    let pss = machine::pss_bytes(&pids);
    eprintln!("checking that all {n} answer an exec...");
    let t = Instant::now();
    let exec_errors = {
        let client = client.clone();
        for_all(&ids, move |id| {
            let client = client.clone();
            async move { exec_true(&client.sandbox(&id)).await }
        })
        .await
    };
    let check_secs = t.elapsed().as_secs_f64();
    let live = n - create_errors.len();
    let per = |x: f64| x / live.max(1) as f64;
    let fds_per = per(fds_after.saturating_sub(fds_before) as f64);
    let host_mib = per(mem_before.saturating_sub(mem_after) as f64 / 1024.0);
    let pss_mib = per(pss as f64 / (1024.0 * 1024.0));
    eprintln!("destroying...");
    let destroy_errors = {
        let client = client.clone();
        for_all(&ids, move |id| {
            let client = client.clone();
            async move { Ok(client.destroy(&id).await?) }
        })
        .await
    };
    let mut samples = Samples::default();
    for (_, len, rate) in &rates {
        // One sample per sandbox of the block: its mean creation time at the block's rate.
        for _ in 0..*len {
            samples.push(std::time::Duration::from_secs_f64(1.0 / rate.max(1e-9)));
        }
    }
    section.rows.push(Row {
        name: format!("density: create → exec of {n} idle sandboxes, {CONCURRENCY} at a time"),
        samples,
        target: "every one answers".into(),
    });
    let rate_list: Vec<String> = rates
        .iter()
        .map(|(from, len, rate)| format!("{from}–{}: {rate:.0}/s", from + len))
        .collect();
    section.notes.push(format!(
        "Density ({n} idle keep-alive sandboxes, created {CONCURRENCY} at a time in {create_secs:.0} s): \
         **{} create errors, {} of {live} failed the exec check** ({check_secs:.0} s for all). \
         Server fds {fds_before} → {fds_after}: **{fds_per:.2} per sandbox**. Host `MemAvailable` \
         {} → {} MiB: **{host_mib:.2} MiB per sandbox**, of which {pss_mib:.2} MiB PSS of its \
         processes and {:.2} MiB kernel memory (page tables, slab, overlay and proc inodes). \
         Creation rate by live sandboxes: {}. Destroy errors: {}.",
        create_errors.len(),
        exec_errors.len(),
        mem_before / 1024,
        mem_after / 1024,
        host_mib - pss_mib,
        rate_list.join(", "),
        destroy_errors.len(),
    ));
    for e in create_errors.iter().chain(&exec_errors).take(5) {
        section.notes.push(format!("First errors: `{e}`"));
    }
    let answered = create_errors.is_empty() && exec_errors.is_empty();
    section.verdicts.push((
        format!("{n} idle sandboxes all answer an exec"),
        format!(
            "{} create + {} exec failures",
            create_errors.len(),
            exec_errors.len()
        ),
        answered,
    ));
    section.verdicts.push((
        format!("server fds per idle sandbox ≤ {MAX_FDS_PER_SANDBOX}"),
        format!("{fds_per:.2}"),
        fds_per <= MAX_FDS_PER_SANDBOX,
    ));
    Ok(section)
}
