//! Raw file transfers through the control plane (`PUT`/`GET /v1/sandboxes/{id}/files/*`):
//! MB/s each way and how much this process's peak RSS grows meanwhile. The server runs in
//! this process, so a flat peak shows that no hop holds the file in memory.

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use sandpit_client::Client;
use sandpit_client::protocol::control::CreateSandboxRequest;

const MIB: u64 = 1 << 20;

/// One direction's results over all runs.
#[derive(Debug, Default)]
pub struct Direction {
    /// MB/s (10^6 bytes per second) of each run.
    pub mbps: Vec<f64>,
    /// Peak RSS growth of each run, MiB; `None` where the peak could not be reset.
    pub rss_growth_mib: Vec<Option<f64>>,
}

impl Direction {
    pub fn median_mbps(&self) -> f64 {
        let mut sorted = self.mbps.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// Largest growth over the runs.
    pub fn max_growth_mib(&self) -> Option<f64> {
        self.rss_growth_mib
            .iter()
            .copied()
            .collect::<Option<Vec<f64>>>()?
            .into_iter()
            .reduce(f64::max)
    }

    pub fn summary(&self) -> String {
        let runs: Vec<String> = self.mbps.iter().map(|v| format!("{v:.0}")).collect();
        let growth = self
            .max_growth_mib()
            .map_or_else(|| "n/a".to_owned(), |g| format!("{g:.1} MiB"));
        format!(
            "median **{:.0} MB/s** (runs: {}), peak RSS growth {growth}",
            self.median_mbps(),
            runs.join(", ")
        )
    }
}

pub struct Transfer {
    pub mib: u64,
    pub upload: Direction,
    pub download: Direction,
}

/// Uploads and downloads a `mib` MiB file `runs` times through `client`'s server.
pub async fn measure(client: &Client, mib: u64, runs: usize) -> anyhow::Result<Transfer> {
    let id = format!("xfer-{}", std::process::id());
    client
        .create(&CreateSandboxRequest {
            id: Some(id.clone()),
            ..Default::default()
        })
        .await?;
    let result = transfer_runs(client, &id, mib, runs).await;
    client.destroy(&id).await?;
    result
}

async fn transfer_runs(
    client: &Client,
    id: &str,
    mib: u64,
    runs: usize,
) -> anyhow::Result<Transfer> {
    let sandbox = client.sandbox(id);
    let total = mib * MIB;
    // One random MiB sent over and over: the numbers are about the transport, not a generator.
    let block = Bytes::from(
        (0..MIB)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut transfer = Transfer {
        mib,
        upload: Direction::default(),
        download: Direction::default(),
    };
    for _ in 0..runs {
        let pieces = std::iter::repeat_n(block.clone(), mib as usize).map(Ok::<_, std::io::Error>);
        let base = peak_reset();
        let started = Instant::now();
        let written = sandbox
            .upload("bench/big.bin", futures::stream::iter(pieces), |_| {})
            .await
            .context("uploading")?;
        transfer.upload.mbps.push(rate(total, started));
        transfer.upload.rss_growth_mib.push(growth(base));
        if written.size != total {
            bail!(
                "uploaded {} bytes, the server wrote {}",
                total,
                written.size
            );
        }

        let base = peak_reset();
        let started = Instant::now();
        let mut download = sandbox.download("bench/big.bin").await?;
        let mut received = 0u64;
        while let Some(piece) = download.body.next().await {
            received += piece.context("downloading")?.len() as u64;
        }
        transfer.download.mbps.push(rate(total, started));
        transfer.download.rss_growth_mib.push(growth(base));
        if received != total {
            bail!("downloaded {received} of {total} bytes");
        }
    }
    Ok(transfer)
}

fn rate(bytes: u64, started: Instant) -> f64 {
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// `(VmRSS, VmHWM)` of this process, bytes.
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resets the peak RSS to the current RSS (`/proc/self/clear_refs` 5) and returns it.
fn peak_reset() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    rss().map(|(now, _)| now)
}

/// Growth of the peak since [`peak_reset`], MiB.
fn growth(base: Option<u64>) -> Option<f64> {
    let (_, peak) = rss()?;
    Some(peak.saturating_sub(base?) as f64 / MIB as f64)
}
