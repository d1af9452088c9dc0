//! `cp -r`: a directory copied as one tar stream, staged nowhere.
//!
//! Up: the archive is built here (a blocking thread) while its pieces are written to the stdin
//! of `tar -x` started in the sandbox as a background process with an open stdin; the write
//! of each piece waits for the sandbox's pipe, so memory stays flat. Down: `tar -c` runs in the
//! sandbox through the streaming exec with base64 output, and its stdout is unpacked here as
//! it arrives.
//!
//! The archive from a sandbox is not trusted: only directories, regular files and links are
//! unpacked, never outside the target (`..` entries and writes through symlinks are refused),
//! without owners or set-id bits.

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use futures::StreamExt;
use sandpit_client::protocol::DISABLE_SESSION;
use sandpit_client::protocol::container::ExecEvent;
use sandpit_client::{ExecOptions, ProcessOptions, SandboxHandle, decode_output};
use tokio::sync::mpsc;

use crate::progress::bytes_bar;
use crate::shell::quote;

/// Size of the pieces the archive travels in (one stdin write each on the way up).
const PIECE: usize = 1 << 20;
/// Pieces buffered between the tar thread and the network.
const QUEUED: usize = 4;

/// Copies local directory `from` to `target` in the sandbox (created, with missing parents).
pub async fn upload(sandbox: &SandboxHandle, from: &Path, target: &str) -> anyhow::Result<()> {
    let shown = format!("{}:{target}", sandbox.id());
    let total = tree_size(from)?;
    let q = quote(target);
    // Owners are the sandbox user's; modes and times come from the archive.
    let command = format!("mkdir -p -- {q} && exec tar -x --no-same-owner -f - -C {q}");
    // Sessionless: a relative target resolves against the workspace, as for the file API,
    // not against wherever the default session's shell has `cd`-ed to.
    let options = ProcessOptions {
        stdin: true,
        ..ProcessOptions::default()
    }
    .session(DISABLE_SESSION);
    let process = sandbox
        .start_process(&command, &options)
        .await
        .with_context(|| format!("starting tar in the sandbox for {shown}"))?;

    let (tx, mut rx) = mpsc::channel(QUEUED);
    let root = from.to_path_buf();
    let builder = tokio::task::spawn_blocking(move || build_archive(&root, tx));
    let bar = bytes_bar(total, "upload");
    let mut sent = 0u64;
    let mut write_error = None;
    while let Some(piece) = rx.recv().await {
        if let Err(e) = process.write_stdin(&piece, false).await {
            // tar in the sandbox stopped reading (it failed): its stderr says why.
            write_error = Some(e);
            break;
        }
        sent += piece.len() as u64;
        bar.set_position(sent.min(total));
    }
    drop(rx);
    bar.finish_and_clear();
    let built = builder.await.context("the archive builder panicked")?;
    if write_error.is_none() {
        // Closing stdin ends the archive; an archive cut short by a local error makes the
        // sandbox's tar fail, which is then reported below the local error.
        let _ = process.write_stdin(&[], true).await;
    }
    let exit = process.wait_for_exit(None).await?;
    if write_error.is_none() {
        built?;
    }
    if exit != 0 {
        let logs = process.logs().await?;
        bail!("extracting into {shown} failed: {}", logs.stderr.trim());
    }
    if let Some(e) = write_error {
        return Err(e).with_context(|| format!("sending the archive to {shown}"));
    }
    Ok(())
}

/// Copies sandbox directory `path` (`size` bytes, for the progress bar) to local directory
/// `target` (created if missing; its parent exists).
pub async fn download(
    sandbox: &SandboxHandle,
    path: &str,
    size: u64,
    target: &Path,
) -> anyhow::Result<()> {
    let shown = format!("{}:{path}", sandbox.id());
    match std::fs::create_dir(target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
        Err(e) => return Err(super::local_error("cannot create", target, &e)),
    }
    let command = format!("exec tar -c -f - -C {} .", quote(path));
    let options = ExecOptions::default()
        .session(DISABLE_SESSION)
        .binary_output();
    let mut events = sandbox
        .exec_stream(&command, &options)
        .await
        .with_context(|| format!("reading {shown}"))?;

    let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUED);
    let root = target.to_path_buf();
    let unpacker = tokio::task::spawn_blocking(move || unpack(ChannelReader::new(rx), &root));
    let bar = bytes_bar(size, "download");
    let (mut received, mut stderr, mut exit) = (0u64, Vec::new(), None);
    while let Some(event) = events.next().await {
        match event.with_context(|| format!("reading {shown}"))? {
            ExecEvent::Start { .. } => {}
            ExecEvent::Stdout { data, encoding, .. } => {
                let bytes = decode_output(&data, encoding)?;
                received += bytes.len() as u64;
                bar.set_position(received.min(size));
                if tx.send(bytes).await.is_err() {
                    break; // the unpacker failed; its error is reported below
                }
            }
            ExecEvent::Stderr { data, encoding, .. } => {
                stderr.extend(decode_output(&data, encoding)?);
            }
            ExecEvent::Complete { exit_code, .. } => {
                exit = Some(exit_code);
                break;
            }
            ExecEvent::Error { error, .. } => bail!("reading {shown}: {error}"),
        }
    }
    drop(tx);
    drop(events); // stops tar in the sandbox if the unpacker gave up early
    bar.finish_and_clear();
    let unpacked = unpacker.await.context("the unpacker panicked")?;
    let skipped =
        unpacked.with_context(|| format!("unpacking {shown} into {}", target.display()))?;
    let stderr = String::from_utf8_lossy(&stderr);
    match exit {
        Some(0) => {}
        Some(_) => bail!("reading {shown} failed: {}", stderr.trim()),
        None => bail!("reading {shown}: the stream ended before tar finished"),
    }
    if skipped > 0 {
        eprintln!("skipped {skipped} special files (devices, FIFOs, sockets)");
    }
    Ok(())
}

/// Total size of the regular files under `root` (symlinks not followed).
fn tree_size(root: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| super::local_error("cannot read", &dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| super::local_error("cannot read", &dir, &e))?;
            let meta = entry
                .metadata()
                .map_err(|e| super::local_error("cannot read", &entry.path(), &e))?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Writes the tar archive of `root`'s contents (symlinks kept as links) in pieces to `tx`.
fn build_archive(root: &Path, tx: mpsc::Sender<Vec<u8>>) -> anyhow::Result<()> {
    let mut tar = tar::Builder::new(ChannelWriter::new(tx));
    tar.follow_symlinks(false);
    tar.append_dir_all(".", root)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", root.display()))?;
    let mut writer = tar.into_inner().context("finishing the archive")?;
    writer.flush().context("sending the archive")?;
    Ok(())
}

/// Unpacks an archive from the sandbox into `target`; returns how many entries of other kinds
/// (devices, FIFOs...) were skipped.
fn unpack(reader: impl Read, target: &Path) -> anyhow::Result<u64> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false); // no set-id bits
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    let mut skipped = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&path);
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            skipped += 1;
            continue;
        }
        // `false`: a `..` component; an error: an escape through a symlink.
        if !entry
            .unpack_in(target)
            .with_context(|| format!("entry {shown:?}"))?
        {
            bail!("entry {shown:?} points outside the target; refused");
        }
    }
    Ok(skipped)
}

/// The sending end of the archive pipe: collects writes into pieces of [`PIECE`] bytes.
struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(PIECE),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        self.tx
            .blocking_send(piece)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the copy was abandoned"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIECE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The receiving end of the archive pipe, read by the unpacker thread.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            piece: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.piece.len() {
            match self.rx.blocking_recv() {
                Some(piece) => (self.piece, self.at) = (piece, 0),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.piece.len() - self.at);
        out[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Runs `build` on a thread and returns everything it sent.
    fn collect(build: impl FnOnce(mpsc::Sender<Vec<u8>>) + Send + 'static) -> Vec<u8> {
        let (tx, mut rx) = mpsc::channel(QUEUED);
        let thread = std::thread::spawn(move || build(tx));
        let mut all = Vec::new();
        while let Some(piece) = rx.blocking_recv() {
            all.extend(piece);
        }
        thread.join().unwrap();
        all
    }

    fn unpack_bytes(bytes: Vec<u8>, target: &Path) -> anyhow::Result<u64> {
        let (tx, rx) = mpsc::channel(QUEUED);
        let feeder = std::thread::spawn(move || {
            for piece in bytes.chunks(1000) {
                let _ = tx.blocking_send(piece.to_vec());
            }
        });
        let result = unpack(ChannelReader::new(rx), target);
        feeder.join().unwrap();
        result
    }

    #[test]
    fn a_tree_round_trips_through_the_pipe() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/big.bin"), vec![7u8; 3 * PIECE + 5]).unwrap();
        std::fs::write(src.path().join("top.txt"), b"top").unwrap();
        std::os::unix::fs::symlink("top.txt", src.path().join("link")).unwrap();
        assert_eq!(tree_size(src.path()).unwrap(), 3 * PIECE as u64 + 5 + 3);
        let root = src.path().to_path_buf();
        let archive = collect(move |tx| build_archive(&root, tx).unwrap());
        let dst = tempfile::tempdir().unwrap();
        assert_eq!(unpack_bytes(archive, dst.path()).unwrap(), 0);
        assert_eq!(
            std::fs::read(dst.path().join("a/b/big.bin")).unwrap(),
            vec![7u8; 3 * PIECE + 5]
        );
        assert_eq!(std::fs::read(dst.path().join("top.txt")).unwrap(), b"top");
        assert_eq!(
            std::fs::read_link(dst.path().join("link")).unwrap(),
            PathBuf::from("top.txt")
        );
    }

    #[test]
    fn hostile_archives_write_nothing_outside_the_target() {
        let outside = tempfile::tempdir().unwrap();
        // A symlink out of the target, then a file written through it.
        let mut tar = tar::Builder::new(Vec::new());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "esc", outside.path()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(5);
        file.set_mode(0o4755);
        tar.append_data(&mut file, "esc/pwned", &b"owned"[..])
            .unwrap();
        let dst = tempfile::tempdir().unwrap();
        let err = unpack_bytes(tar.into_inner().unwrap(), dst.path()).unwrap_err();
        assert!(format!("{err:#}").contains("outside"), "{err:#}");
        assert!(!outside.path().join("pwned").exists());
    }
}
