//! Keystroke echo round trips on a terminal: one printable byte sent, timed until the shell's
//! echo of it comes back. Through the control plane (`WS /v1/sandboxes/{id}/ws/pty`: client →
//! server → agent → PTY → bash and back) and, as the baseline, on a host PTY with bash attached
//! directly (what a local terminal emulator sees). After each byte a backspace (untimed) keeps
//! the line empty, so readline's echo stays one byte.

use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_tungstenite::tungstenite::Message;

use crate::stats::Samples;

/// No single read may wait longer than this (a silent terminal fails the run, never hangs it).
const READ_LIMIT: Duration = Duration::from_secs(5);
/// Untimed round trips before measuring (the prompt, readline's start-up).
const WARM_UP: usize = 10;
const BACKSPACE: u8 = 0x7f;

pub struct PtyEcho {
    pub sandbox: Samples,
    pub baseline: Samples,
}

/// A terminal a byte can be sent to and output read from.
trait Terminal {
    async fn send(&mut self, byte: u8) -> anyhow::Result<()>;
    /// The next chunk of output.
    async fn read(&mut self) -> anyhow::Result<Vec<u8>>;
}

/// Takes `n` samples through the server at `ws_base` (`ws://ADDR`) in sandbox `id`, and `n` on
/// a host PTY.
pub async fn measure(ws_base: &str, api_key: &str, id: &str, n: usize) -> anyhow::Result<PtyEcho> {
    let url = format!("{ws_base}/v1/sandboxes/{id}/ws/pty?sessionId=bench&access_token={api_key}");
    let mut remote = Remote::connect(&url).await?;
    let sandbox = round_trips(&mut remote, n).await.context("sandbox PTY")?;
    remote.close().await;
    let mut host = Host::spawn()?;
    let baseline = round_trips(&mut host, n).await.context("host PTY");
    host.stop();
    Ok(PtyEcho {
        sandbox,
        baseline: baseline?,
    })
}

async fn round_trips(terminal: &mut impl Terminal, n: usize) -> anyhow::Result<Samples> {
    // Let the prompt arrive, so that only echoes follow.
    settle(terminal).await?;
    let mut samples = Samples::default();
    for i in 0..WARM_UP + n {
        let byte = b'a' + (i % 26) as u8;
        let t = Instant::now();
        terminal.send(byte).await?;
        read_until(terminal, byte).await?;
        let elapsed = t.elapsed();
        terminal.send(BACKSPACE).await?;
        // Readline erases with "\b \b" (or "\b\x1b[K").
        read_until(terminal, b'\x08').await?;
        if i >= WARM_UP {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// Reads until `byte` shows up in the output.
async fn read_until(terminal: &mut impl Terminal, byte: u8) -> anyhow::Result<()> {
    loop {
        let chunk = tokio::time::timeout(READ_LIMIT, terminal.read())
            .await
            .with_context(|| format!("no echo of byte {byte:#x} within 5 s"))??;
        if chunk.contains(&byte) {
            return Ok(());
        }
    }
}

/// Reads output until the terminal has been quiet for 300 ms.
async fn settle(terminal: &mut impl Terminal) -> anyhow::Result<()> {
    let deadline = Instant::now() + READ_LIMIT;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), terminal.read()).await {
            Ok(chunk) => drop(chunk?),
            Err(_) => return Ok(()),
        }
    }
    bail!("the terminal kept printing for 5 s")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A PTY of a sandbox, over the control plane's WebSocket.
struct Remote {
    socket: Socket,
}

impl Remote {
    /// Connects and waits for `{type:'ready'}` (binary replay frames before it are skipped).
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let (socket, _) = tokio::time::timeout(READ_LIMIT, tokio_tungstenite::connect_async(url))
            .await
            .context("WebSocket connect timed out")?
            .context("connecting to /ws/pty")?;
        let mut remote = Remote { socket };
        loop {
            let message = tokio::time::timeout(READ_LIMIT, remote.socket.next())
                .await
                .context("no `ready` within 5 s")?
                .context("the terminal closed before `ready`")??;
            if let Message::Text(text) = message {
                let status: serde_json::Value = serde_json::from_str(&text)?;
                match status["type"].as_str() {
                    Some("ready") => return Ok(remote),
                    _ => bail!("terminal status before `ready`: {text}"),
                }
            }
        }
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

impl Terminal for Remote {
    async fn send(&mut self, byte: u8) -> anyhow::Result<()> {
        Ok(self.socket.send(Message::Binary(vec![byte].into())).await?)
    }

    async fn read(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            match self.socket.next().await.context("the terminal closed")?? {
                Message::Binary(bytes) => return Ok(bytes.to_vec()),
                Message::Text(text) => bail!("terminal status: {text}"),
                Message::Close(_) => bail!("the terminal closed"),
                _ => {}
            }
        }
    }
}

/// bash on a host PTY, read and written through the master end.
struct Host {
    master: AsyncFd<OwnedFd>,
    shell: Child,
}

impl Host {
    fn spawn() -> anyhow::Result<Self> {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).context("openpty")?;
        // The shell must not hold the master, or it would never see its terminal hang up.
        fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        let stdio = || -> anyhow::Result<Stdio> { Ok(Stdio::from(pty.slave.try_clone()?)) };
        let mut cmd = Command::new("bash");
        cmd.args(["--norc", "--noprofile", "-i"])
            .env("TERM", "xterm-256color")
            .env("PS1", "$ ")
            .stdin(stdio()?)
            .stdout(stdio()?)
            .stderr(stdio()?);
        sandpit_isolation::process::controlling_terminal(&mut cmd);
        let shell = cmd.spawn().context("spawning bash on a host PTY")?;
        drop(cmd);
        drop(pty.slave);
        fcntl(&pty.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        // `AsyncFd::new` is deprecated for fds the wrapper does not own; this one owns the
        // master exclusively, which is the sound case.
        #[allow(deprecated)]
        let master = AsyncFd::with_interest(pty.master, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Host { master, shell })
    }

    fn stop(mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

impl Terminal for Host {
    async fn send(&mut self, byte: u8) -> anyhow::Result<()> {
        loop {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), &[byte])?)) {
                Ok(written) => {
                    if written? == 1 {
                        return Ok(());
                    }
                }
                Err(_would_block) => continue,
            }
        }
    }

    async fn read(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), &mut buf)?)) {
                Ok(read) => {
                    let read = read?;
                    if read == 0 {
                        bail!("the host shell hung up");
                    }
                    buf.truncate(read);
                    return Ok(buf);
                }
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn host_round_trips_are_timed() {
        let mut host = Host::spawn().unwrap();
        let samples = round_trips(&mut host, 5).await;
        host.stop();
        let samples = samples.unwrap();
        assert_eq!(samples.len(), 5);
        assert!(samples.p99() < READ_LIMIT.as_secs_f64() * 1000.0);
    }
}
