//! Single files, streamed raw through `/v1/sandboxes/{id}/files/*` in both directions (any
//! size, constant memory; a failed transfer leaves no partial file on either side).

use std::path::Path;

use anyhow::{Context, bail};
use futures::StreamExt;
use sandpit_client::{Download, SandboxHandle};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::local_error;
use crate::progress::bytes_bar;

/// Read size of uploads (one piece on the wire each).
const PIECE: usize = 256 * 1024;

/// Uploads local file `from` (`size` bytes) to `target` in the sandbox.
pub async fn upload(
    sandbox: &SandboxHandle,
    from: &Path,
    size: u64,
    target: &str,
) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(from)
        .await
        .map_err(|e| local_error("cannot read", from, &e))?;
    let bar = bytes_bar(size, "upload");
    let shown = bar.clone();
    let content = ReaderStream::with_capacity(file, PIECE);
    let result = sandbox
        .upload(target, content, move |n| shown.set_position(n))
        .await;
    bar.finish_and_clear();
    result.with_context(|| format!("cannot write {}:{target}", sandbox.id()))?;
    Ok(())
}

/// Uploads stdin to `target` in the sandbox.
pub async fn upload_stdin(sandbox: &SandboxHandle, target: &str) -> anyhow::Result<()> {
    let content = ReaderStream::with_capacity(std_file(&std::io::stdin())?, PIECE);
    sandbox
        .upload(target, content, |_| {})
        .await
        .with_context(|| format!("cannot write {}:{target}", sandbox.id()))?;
    Ok(())
}

/// Downloads `path` of the sandbox to local file `target`; removes it again if the transfer
/// fails.
pub async fn download(sandbox: &SandboxHandle, path: &str, target: &Path) -> anyhow::Result<()> {
    let download = sandbox.download(path).await?;
    let bar = bytes_bar(download.size.unwrap_or(0), "download");
    let shown = bar.clone();
    let result = async {
        let mut file = tokio::fs::File::create(target)
            .await
            .map_err(|e| local_error("cannot create", target, &e))?;
        let written = copy_body(download, &mut file, |n| shown.set_position(n))
            .await
            .with_context(|| format!("writing {}", target.display()))?;
        anyhow::Ok(written)
    }
    .await;
    bar.finish_and_clear();
    if result.is_err() {
        // A partial file looks like a good one; don't leave it behind.
        let _ = tokio::fs::remove_file(target).await;
    }
    result.map(drop)
}

/// Downloads `path` of the sandbox to stdout.
pub async fn download_to_stdout(sandbox: &SandboxHandle, path: &str) -> anyhow::Result<()> {
    let download = sandbox.download(path).await?;
    let mut out = std_file(&std::io::stdout())?;
    copy_body(download, &mut out, |_| {})
        .await
        .context("writing stdout")?;
    Ok(())
}

/// Writes a download's body to `out`; fails if it ends short of its announced size.
async fn copy_body(
    download: Download,
    out: &mut (impl AsyncWriteExt + Unpin),
    progress: impl Fn(u64),
) -> anyhow::Result<u64> {
    let mut body = download.body;
    let mut written = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece?;
        out.write_all(&piece).await?;
        written += piece.len() as u64;
        progress(written);
    }
    out.flush().await?;
    if let Some(size) = download.size
        && size != written
    {
        bail!("download ended after {written} of {size} bytes");
    }
    Ok(written)
}

/// Stdin or stdout as an async file (through tokio's blocking pool, so pipes and files both
/// work without the `io-std` feature).
fn std_file(stream: &impl std::os::fd::AsFd) -> anyhow::Result<tokio::fs::File> {
    let fd = stream.as_fd().try_clone_to_owned()?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(fd)))
}
