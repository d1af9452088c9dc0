//! `sandpit cp`: copies one file between this machine and a sandbox; `-` as the local side is
//! stdin (upload) or stdout (download), byte for byte.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use sandpit_client::Client;
use sandpit_client::protocol::control::validate_sandbox_id;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::progress::bytes_bar;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `-`: stdin as a source, stdout as a destination.
    Std,
    Sandbox {
        id: String,
        path: String,
    },
}

impl Location {
    /// `ID:/path` is a sandbox path; anything starting with `/` or `.`, or whose part before
    /// `:` is not a valid sandbox id, is local.
    pub fn parse(s: &str) -> anyhow::Result<Location> {
        if s == "-" {
            return Ok(Location::Std);
        }
        let local = s.starts_with('/') || s.starts_with('.');
        if let Some((id, path)) = s.split_once(':')
            && !local
            && validate_sandbox_id(id).is_ok()
        {
            if path.is_empty() {
                bail!("missing path after {id}: (use {id}:/path)");
            }
            return Ok(Location::Sandbox {
                id: id.to_owned(),
                path: path.to_owned(),
            });
        }
        Ok(Location::Local(PathBuf::from(s)))
    }
}

pub async fn run(client: &Client, src: &str, dst: &str) -> anyhow::Result<()> {
    match (Location::parse(src)?, Location::parse(dst)?) {
        (Location::Local(from), Location::Sandbox { id, path }) => {
            upload(client, &from, &id, &path).await
        }
        (Location::Sandbox { id, path }, Location::Local(to)) => {
            download(client, &id, &path, &to).await
        }
        (Location::Std, Location::Sandbox { id, path }) => {
            if path.ends_with('/') {
                bail!("stdin has no file name: give the full destination path");
            }
            let content = ReaderStream::with_capacity(std_file(&std::io::stdin())?, PIECE);
            client.sandbox(&id).upload(&path, content, |_| {}).await?;
            Ok(())
        }
        (Location::Sandbox { id, path }, Location::Std) => {
            download_to_stdout(client, &id, &path).await
        }
        _ => {
            bail!("one of SRC and DST must be a sandbox path (ID:/path) and the other a local path")
        }
    }
}

/// Read size of uploads (one piece on the wire each).
const PIECE: usize = 256 * 1024;

async fn upload(client: &Client, from: &Path, id: &str, path: &str) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(from)
        .await
        .with_context(|| format!("reading {}", from.display()))?;
    let meta = file
        .metadata()
        .await
        .with_context(|| format!("reading {}", from.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory; cp copies single files", from.display());
    }
    let target = if path.ends_with('/') {
        let name = from.file_name().context("source has no file name")?;
        format!("{path}{}", name.to_string_lossy())
    } else {
        path.to_owned()
    };
    let bar = bytes_bar(meta.len(), "upload");
    let shown = bar.clone();
    let content = ReaderStream::with_capacity(file, PIECE);
    let result = client
        .sandbox(id)
        .upload(&target, content, move |n| shown.set_position(n))
        .await;
    bar.finish_and_clear();
    result?;
    Ok(())
}

async fn download(client: &Client, id: &str, path: &str, to: &Path) -> anyhow::Result<()> {
    let download = client.sandbox(id).download(path).await?;
    let target = if to.is_dir() {
        let name = Path::new(path)
            .file_name()
            .context("source has no file name")?;
        to.join(name)
    } else {
        to.to_path_buf()
    };
    let bar = bytes_bar(download.size.unwrap_or(0), "download");
    let result = async {
        let mut file = tokio::fs::File::create(&target)
            .await
            .with_context(|| format!("creating {}", target.display()))?;
        let mut body = download.body;
        let mut written = 0u64;
        while let Some(piece) = body.next().await {
            let piece = piece?;
            file.write_all(&piece)
                .await
                .with_context(|| format!("writing {}", target.display()))?;
            written += piece.len() as u64;
            bar.set_position(written);
        }
        file.flush().await?;
        if let Some(size) = download.size
            && size != written
        {
            bail!("download ended after {written} of {size} bytes");
        }
        anyhow::Ok(())
    }
    .await;
    bar.finish_and_clear();
    if result.is_err() {
        // A partial file looks like a good one; don't leave it behind.
        let _ = tokio::fs::remove_file(&target).await;
    }
    result
}

/// Stdin or stdout as an async file (through tokio's blocking pool, so pipes and files both
/// work without the `io-std` feature).
fn std_file(stream: &impl std::os::fd::AsFd) -> anyhow::Result<tokio::fs::File> {
    let fd = stream.as_fd().try_clone_to_owned()?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(fd)))
}

async fn download_to_stdout(client: &Client, id: &str, path: &str) -> anyhow::Result<()> {
    let download = client.sandbox(id).download(path).await?;
    let mut out = std_file(&std::io::stdout())?;
    let mut body = download.body;
    let mut written = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece?;
        out.write_all(&piece).await.context("writing stdout")?;
        written += piece.len() as u64;
    }
    out.flush().await?;
    if let Some(size) = download.size
        && size != written
    {
        bail!("download ended after {written} of {size} bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, path: &str) -> Location {
        Location::Sandbox {
            id: id.into(),
            path: path.into(),
        }
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("demo:/w/a.txt").unwrap(),
            sandbox("demo", "/w/a.txt")
        );
        assert_eq!(Location::parse("demo:rel").unwrap(), sandbox("demo", "rel"));
        assert_eq!(
            Location::parse("./demo:x").unwrap(),
            Location::Local("./demo:x".into())
        );
        assert_eq!(
            Location::parse("/tmp/a:b").unwrap(),
            Location::Local("/tmp/a:b".into())
        );
        assert_eq!(
            Location::parse("a_b:c").unwrap(),
            Location::Local("a_b:c".into())
        );
        assert_eq!(
            Location::parse("file.txt").unwrap(),
            Location::Local("file.txt".into())
        );
        assert!(Location::parse("demo:").is_err());
        assert_eq!(Location::parse("-").unwrap(), Location::Std);
    }
}
