//! One slirp4netns process: user-mode networking for a sandbox's network namespace (`full`
//! mode). It runs on the host with `--disable-host-loopback`, its own sandbox and seccomp
//! filter, and exits when the driver closes its exit pipe (also when the server dies).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;

use crate::network::TAP_DEVICE;

const READY_FD: i32 = 3;
const EXIT_FD: i32 = 4;

/// A running slirp4netns; [`Slirp::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Slirp {
    child: tokio::process::Child,
    /// Write end of the exit pipe: closing it makes slirp4netns exit.
    exit: Option<OwnedFd>,
}

impl Slirp {
    /// Starts slirp4netns for the network namespace of `pid` and waits until the tap device is
    /// configured (address 10.0.2.100/24, default route via 10.0.2.2).
    pub(crate) async fn start(
        bin: &Path,
        pid: u32,
        log: &Path,
        timeout: Duration,
    ) -> std::io::Result<Slirp> {
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (exit_r, exit_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let log = std::fs::File::create(log)?;
        let mut cmd = std::process::Command::new(bin);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
        ])
        .arg(format!("--ready-fd={READY_FD}"))
        .arg(format!("--exit-fd={EXIT_FD}"))
        .arg(pid.to_string())
        .arg(TAP_DEVICE)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
        sandpit_isolation::process::pass_fds(
            &mut cmd,
            vec![(ready_w, READY_FD), (exit_r, EXIT_FD)],
        );
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd.spawn()?;
        drop(cmd); // closes our copies of the child's ends
        let mut slirp = Slirp {
            child,
            exit: Some(exit_w),
        };
        let mut ready = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_r)?;
        let mut byte = [0u8; 1];
        let outcome = tokio::time::timeout(timeout, ready.read(&mut byte)).await;
        match outcome {
            Ok(Ok(1)) => Ok(slirp),
            Ok(Ok(_)) => {
                let status = slirp.child.wait().await.ok();
                Err(std::io::Error::other(format!(
                    "slirp4netns exited before it was ready ({status:?}); see its log"
                )))
            }
            Ok(Err(e)) => {
                slirp.stop().await;
                Err(e)
            }
            Err(_) => {
                slirp.stop().await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("slirp4netns was not ready within {timeout:?}"),
                ))
            }
        }
    }

    /// Whether the process still runs (reaps it if it exited).
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills and reaps the process (the exit pipe is only the safety net for a dying server:
    /// slirp4netns notices it within a poll interval of up to ~2 s).
    pub(crate) async fn stop(mut self) {
        self.exit = None;
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}
