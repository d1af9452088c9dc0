//! Bucket mount throughput (`--only-mounts`): one file written and read sequentially through a
//! bucket mount (s3fs on the host, attached in the sandbox) against the loopback S3 test server
//! (`sandpit-s3-test-server`: s3s + s3s-fs), and the same bytes moved by a plain S3 client
//! (curl with SigV4, one PUT and one GET) against the same server in the same run.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sandpit_client::protocol::control::CreateSandboxRequest;
use sandpit_client::{Client, ExecOptions, MountOptions, SandboxHandle};
use sandpit_s3_test_server::S3TestServer;

use crate::Section;

const BUCKET: &str = "mount-bench";
/// The target of both directions, MB/s.
const TARGET_MBPS: f64 = 100.0;

pub struct Counts {
    pub mib: u64,
    pub runs: usize,
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn runs(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_curl(mut cmd: Command) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = cmd.output().context("running curl")?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// A file of `mib` MiB of incompressible bytes (xorshift), for both paths.
fn random_file(mib: u64) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(file)
}

async fn timed_exec(sandbox: &SandboxHandle, command: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = sandbox.exec(command, &ExecOptions::default()).await?;
    let took = t.elapsed();
    if out.exit_code != 0 {
        bail!("`{command}` exited {}: {}", out.exit_code, out.stderr);
    }
    Ok(took)
}

pub async fn measure(
    client: &Client,
    s3: &S3TestServer,
    counts: &Counts,
) -> anyhow::Result<Section> {
    let mut section = Section::default();
    let bytes = counts.mib << 20;
    s3.create_bucket(BUCKET)?;
    let source = random_file(counts.mib)?;
    let object = |key: &str| format!("{}/{BUCKET}/{key}", s3.endpoint);
    let mut put = s3.curl();
    put.arg("-T").arg(source.path()).arg(object("seed"));
    run_curl(put)?;

    let id = format!("mount-bench-{}", std::process::id());
    client
        .create(&CreateSandboxRequest {
            id: Some(id.clone()),
            keep_alive: Some(true),
            ..Default::default()
        })
        .await?;
    let sandbox = client.sandbox(&id);
    let options = MountOptions::new(&s3.endpoint, &s3.access_key, &s3.secret_key);
    sandbox.mount_bucket(BUCKET, "/mnt/bench", &options).await?;
    timed_exec(&sandbox, "cp /mnt/bench/seed /workspace/src && sync").await?;

    let (mut write, mut read, mut base_write, mut base_read) = (vec![], vec![], vec![], vec![]);
    for i in 0..counts.runs {
        eprintln!("bucket mount run {}/{}...", i + 1, counts.runs);
        // Written through the mount: cp returns once s3fs has uploaded the file (at close).
        let took = timed_exec(&sandbox, &format!("cp /workspace/src /mnt/bench/w{i}")).await?;
        write.push(mbps(bytes, took));
        // Read back an object the mount never cached (written by the plain client).
        let mut put = s3.curl();
        put.arg("-T")
            .arg(source.path())
            .arg(object(&format!("b{i}")));
        base_write.push(mbps(bytes, run_curl(put)?));
        let took = timed_exec(&sandbox, &format!("cat /mnt/bench/b{i} > /dev/null")).await?;
        read.push(mbps(bytes, took));
        let mut get = s3.curl();
        get.arg("-o").arg("/dev/null").arg(object(&format!("w{i}")));
        base_read.push(mbps(bytes, run_curl(get)?));
    }
    let _ = client.destroy(&id).await;

    let rows = [
        ("write through the mount (`cp` into it)", &write),
        ("baseline: the same bytes, one `curl` PUT", &base_write),
        (
            "read through the mount (`cat` of an uncached object)",
            &read,
        ),
        ("baseline: the same bytes, one `curl` GET", &base_read),
    ];
    let mut table = format!(
        "Bucket mount, {} MiB file, {} runs (MB/s = 10^6 bytes/s; median, then each run):\n\n\
         | measurement | median MB/s | runs | target |\n|---|---:|---|---|\n",
        counts.mib, counts.runs
    );
    for (name, values) in rows {
        let target = if name.starts_with("baseline") {
            ""
        } else {
            "≥ 100 MB/s"
        };
        table.push_str(&format!(
            "| {name} | {:.0} | {} | {target} |\n",
            median(values),
            runs(values)
        ));
    }
    section.notes.push(table);
    section.notes.push(format!(
        "Ratios to the plain client: write {:.2}×, read {:.2}×.",
        median(&write) / median(&base_write),
        median(&read) / median(&base_read)
    ));
    for (what, values) in [("write", &write), ("read", &read)] {
        let m = median(values);
        section.verdicts.push((
            format!("bucket mount sequential {what} ≥ {TARGET_MBPS:.0} MB/s"),
            format!("{m:.0} MB/s"),
            m >= TARGET_MBPS,
        ));
    }
    Ok(section)
}
