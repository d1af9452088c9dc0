//! Code interpreter latencies through the control plane: `1+1` in a warm Python context, context
//! creation cold (first use in a sandbox) and from the warm pool, and print → client. Baseline:
//! `python3 -c '1+1'` started fresh, in the sandbox (sessionless exec) and on the host.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use sandpit_client::protocol::DISABLE_SESSION;
use sandpit_client::protocol::container::{CodeContextInfo, CodeEvent};
use sandpit_client::protocol::control::CreateSandboxRequest;
use sandpit_client::{Client, ContextOptions, ExecOptions, Language, RunOptions, SandboxHandle};

use crate::stats::Samples;
use crate::{Row, Section};

/// No single sample may take longer than this (a stuck run fails the bench, never hangs it).
const SAMPLE_LIMIT: Duration = Duration::from_secs(30);
/// Time the sandbox gets to refill its warm pool between two pooled creations.
const POOL_REFILL: Duration = Duration::from_millis(1500);

/// Sample counts.
pub struct Counts {
    /// `1+1` runs and print → client samples.
    pub runs: usize,
    /// Cold creations (one fresh sandbox each).
    pub cold: usize,
    /// Creations from the warm pool.
    pub pooled: usize,
    /// Fresh `python3 -c '1+1'` starts (in the sandbox and on the host).
    pub baseline: usize,
}

/// The interpreter rows, verdicts and notes.
pub async fn measure(client: &Client, counts: &Counts) -> anyhow::Result<Section> {
    let run = std::process::id();
    let id = format!("interp-{run}");
    let sandbox = start_sandbox(client, &id).await?;
    let result = measure_in(client, &sandbox, counts, run).await;
    client.destroy(&id).await?;
    result
}

async fn measure_in(
    client: &Client,
    sandbox: &SandboxHandle,
    counts: &Counts,
    run: u32,
) -> anyhow::Result<Section> {
    let python = ContextOptions::new(Language::Python);

    // Cold: the first context of a fresh sandbox (no pool started yet).
    eprintln!("interpreter: cold context creation x{}...", counts.cold);
    let mut cold = Samples::default();
    for i in 0..counts.cold {
        let id = format!("interp-cold-{run}-{i}");
        let fresh = start_sandbox(client, &id).await;
        let sample = match fresh {
            Ok(fresh) => timed(fresh.create_context(&python)).await.map(|(d, _)| d),
            Err(e) => Err(e),
        };
        client.destroy(&id).await?;
        cold.push(sample?);
    }

    // Warm pool: the pool refills between two creations.
    eprintln!("interpreter: pooled context creation x{}...", counts.pooled);
    let warm_up = sandbox.create_context(&python).await?;
    sandbox.delete_context(&warm_up.id).await?;
    let mut pooled = Samples::default();
    for _ in 0..counts.pooled {
        tokio::time::sleep(POOL_REFILL).await;
        let (elapsed, context) = timed(sandbox.create_context(&python)).await?;
        pooled.push(elapsed);
        sandbox.delete_context(&context.id).await?;
    }

    eprintln!("interpreter: `1+1` and print → client x{}...", counts.runs);
    let context = sandbox.create_context(&python).await?;
    // Let the pool's refill (a Python start) finish so it does not compete with the samples.
    tokio::time::sleep(POOL_REFILL).await;
    let (one_plus_one, print) = runs(sandbox, &context, counts.runs).await?;
    sandbox.delete_context(&context.id).await?;

    eprintln!(
        "interpreter: fresh `python3 -c '1+1'` x{}...",
        counts.baseline
    );
    let in_sandbox = fresh_in_sandbox(sandbox, counts.baseline).await?;
    let on_host = fresh_on_host(counts.baseline)?;

    Ok(section(Measured {
        one_plus_one,
        print,
        cold,
        pooled,
        in_sandbox,
        on_host,
    }))
}

/// `1+1` round trips and print → client times in one warm context.
async fn runs(
    sandbox: &SandboxHandle,
    context: &CodeContextInfo,
    n: usize,
) -> anyhow::Result<(Samples, Samples)> {
    let options = RunOptions::default();
    for _ in 0..10 {
        one_plus_one(sandbox, context, &options).await?;
    }
    let mut round_trips = Samples::default();
    for _ in 0..n {
        let (elapsed, ()) = timed(one_plus_one(sandbox, context, &options)).await?;
        round_trips.push(elapsed);
    }
    sandbox
        .run_code(&context.id, "import time", &options)
        .await?;
    let mut print = Samples::default();
    for _ in 0..n {
        print.push(print_to_client(sandbox, context, &options).await?);
    }
    Ok((round_trips, print))
}

async fn one_plus_one(
    sandbox: &SandboxHandle,
    context: &CodeContextInfo,
    options: &RunOptions,
) -> anyhow::Result<()> {
    let run = sandbox.run_code(&context.id, "1+1", options).await?;
    if let Some(error) = run.error {
        bail!("`1+1` raised {error}");
    }
    if run.text() != Some("2") {
        bail!("`1+1` gave {:?}", run.results);
    }
    Ok(())
}

/// The code prints the wall-clock time; the sample is the time between that print and the
/// `stdout` event reaching this client (sandbox and host share CLOCK_REALTIME).
async fn print_to_client(
    sandbox: &SandboxHandle,
    context: &CodeContextInfo,
    options: &RunOptions,
) -> anyhow::Result<Duration> {
    let code = "print(time.time_ns(), flush=True)";
    let sample = async {
        let mut events = sandbox.run_code_stream(&context.id, code, options).await?;
        let mut latency = None;
        while let Some(event) = events.next().await {
            let now = now_ns()?;
            match event? {
                CodeEvent::Stdout { text } if latency.is_none() => {
                    let printed: u128 = text.trim().parse().context("printed time")?;
                    latency = Some(Duration::from_nanos(
                        u64::try_from(now.saturating_sub(printed)).unwrap_or(u64::MAX),
                    ));
                }
                CodeEvent::ExecutionComplete { .. } => break,
                CodeEvent::Error { ename, evalue, .. } => bail!("print raised {ename}: {evalue}"),
                _ => {}
            }
        }
        latency.context("no stdout event")
    };
    tokio::time::timeout(SAMPLE_LIMIT, sample)
        .await
        .context("no answer within 30 s")?
}

fn now_ns() -> anyhow::Result<u128> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos())
}

/// Sessionless exec of `python3 -c '1+1'` through the control plane (a fresh interpreter each).
async fn fresh_in_sandbox(sandbox: &SandboxHandle, n: usize) -> anyhow::Result<Samples> {
    let oneshot = ExecOptions::default().session(DISABLE_SESSION);
    let mut samples = Samples::default();
    for i in 0..n + 3 {
        let (elapsed, out) = timed(sandbox.exec("python3 -c '1+1'", &oneshot)).await?;
        if out.exit_code != 0 {
            bail!("python3 -c '1+1' exited {}: {}", out.exit_code, out.stderr);
        }
        if i >= 3 {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// `python3 -c '1+1'` on the host; `None` without a host python3. The interpreter binary is
/// resolved first (`sys.executable`), so wrappers such as pyenv shims are not timed.
fn fresh_on_host(n: usize) -> anyhow::Result<Option<Samples>> {
    let Ok(out) = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
    else {
        return Ok(None);
    };
    let python = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || python.is_empty() {
        return Ok(None);
    }
    let mut samples = Samples::default();
    for _ in 0..n {
        let t = Instant::now();
        let out = Command::new(&python).args(["-c", "1+1"]).output()?;
        samples.push(t.elapsed());
        if !out.status.success() {
            bail!("host {python} -c '1+1' failed");
        }
    }
    Ok(Some(samples))
}

/// A fresh, started sandbox (its first exec done, so later timings exclude the start).
async fn start_sandbox(client: &Client, id: &str) -> anyhow::Result<SandboxHandle> {
    let request = CreateSandboxRequest {
        id: Some(id.to_owned()),
        ..Default::default()
    };
    client.create(&request).await?;
    let sandbox = client.sandbox(id);
    let out = sandbox.exec("true", &ExecOptions::default()).await?;
    if out.exit_code != 0 {
        bail!("`true` exited {} in {id}", out.exit_code);
    }
    Ok(sandbox)
}

async fn timed<T, E, F>(future: F) -> anyhow::Result<(Duration, T)>
where
    E: Into<anyhow::Error>,
    F: Future<Output = Result<T, E>>,
{
    let t = Instant::now();
    let value = tokio::time::timeout(SAMPLE_LIMIT, future)
        .await
        .context("no answer within 30 s")?
        .map_err(Into::into)?;
    Ok((t.elapsed(), value))
}

struct Measured {
    one_plus_one: Samples,
    print: Samples,
    cold: Samples,
    pooled: Samples,
    in_sandbox: Samples,
    on_host: Option<Samples>,
}

fn section(m: Measured) -> Section {
    let mut s = Section::default();
    let ms = |v: f64| format!("{v:.2} ms");
    let ratio = |a: &Samples, b: &Samples| a.p50() / b.p50();
    let checks = [
        ("`1+1` warm p50 ≤ 5 ms", &m.one_plus_one, 50.0, 5.0),
        ("`1+1` warm p99 ≤ 15 ms", &m.one_plus_one, 99.0, 15.0),
        ("context creation cold p50 ≤ 150 ms", &m.cold, 50.0, 150.0),
        (
            "context creation from the pool p50 ≤ 20 ms",
            &m.pooled,
            50.0,
            20.0,
        ),
        ("print → client p50 ≤ 5 ms", &m.print, 50.0, 5.0),
    ];
    for (target, samples, p, limit) in checks {
        let value = samples.percentile(p);
        s.verdicts.push((target.into(), ms(value), value <= limit));
    }
    let host = m
        .on_host
        .as_ref()
        .map(|h| {
            format!(
                "; host `python3 -c '1+1'` p50 {:.2} ms, ratio **{:.3}×**",
                h.p50(),
                ratio(&m.one_plus_one, h)
            )
        })
        .unwrap_or_else(|| "; no python3 on the host".into());
    s.notes.push(format!(
        "Code interpreter: `1+1` in a warm Python context (`POST /v1/sandboxes/{{id}}/api/execute/code`, \
         SSE until `execution_complete`) p50 {:.2} ms against a fresh `python3 -c '1+1'` in the \
         sandbox (sessionless exec through the control plane) p50 {:.2} ms: ratio **{:.3}×**{host}. \
         Cold context creation is the first `POST /api/contexts` of a started sandbox (the Python \
         pool starts then); pooled creations wait {} ms between samples so the pool refills. \
         Print → client: the code prints `time.time_ns()`, the sample is the client's clock when \
         the `stdout` event arrives minus that value.",
        m.one_plus_one.p50(),
        m.in_sandbox.p50(),
        ratio(&m.one_plus_one, &m.in_sandbox),
        POOL_REFILL.as_millis(),
    ));
    let mut row = |name: String, samples: Samples, target: &str| {
        s.rows.push(Row {
            name,
            samples,
            target: target.into(),
        });
    };
    row(
        format!(
            "interpreter: `1+1` in a warm Python context (N={})",
            m.one_plus_one.len()
        ),
        m.one_plus_one,
        "p50 ≤ 5 ms, p99 ≤ 15 ms",
    );
    row(
        format!("interpreter: context creation, cold (N={})", m.cold.len()),
        m.cold,
        "p50 ≤ 150 ms",
    );
    row(
        format!(
            "interpreter: context creation from the warm pool (N={})",
            m.pooled.len()
        ),
        m.pooled,
        "p50 ≤ 20 ms",
    );
    row(
        format!("interpreter: print → client (N={})", m.print.len()),
        m.print,
        "p50 ≤ 5 ms",
    );
    row(
        "baseline: fresh `python3 -c '1+1'` in the sandbox (sessionless exec)".into(),
        m.in_sandbox,
        "",
    );
    if let Some(host) = m.on_host {
        row(
            "baseline: fresh `python3 -c '1+1'` on the host".into(),
            host,
            "",
        );
    }
    s
}
