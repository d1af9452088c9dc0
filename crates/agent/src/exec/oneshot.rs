//! Sessionless commands (`sessionId: "__DISABLE_SESSION__"`): `bash -c <cmd>` in its own
//! process group, stdin `/dev/null`. On timeout the group gets SIGTERM, then SIGKILL after 5 s,
//! and the result is exit code 124.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant as TokioInstant, sleep_until};

use super::{Sink, StreamKind, reader};
use crate::reaper::Reaper;

/// Grace period between SIGTERM and SIGKILL after a timeout.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long output is still collected after the command exited while a background job keeps
/// its pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);

/// Exit code of a command that ran out of time.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// How a sessionless command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: i32,
    pub timed_out: bool,
}

/// A started sessionless command.
#[derive(Debug)]
pub struct Running {
    pub(crate) pid: i32,
    pub(crate) exit: tokio::sync::oneshot::Receiver<i32>,
    pub(crate) stdout: tokio::net::unix::pipe::Receiver,
    pub(crate) stderr: tokio::net::unix::pipe::Receiver,
}

/// Starts `shell -c command` in its own process group.
pub fn spawn(
    shell: &Path,
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    reaper: &Reaper,
) -> std::io::Result<Running> {
    let mut cmd = Command::new(shell);
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawned_at = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let exit = reaper.register(pid, spawned_at);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("missing pipe"));
    };
    Ok(Running {
        pid,
        exit,
        stdout: reader(stdout)?,
        stderr: reader(stderr)?,
    })
}

impl Running {
    /// The process (and process-group) id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Streams the output into `sink` until the command exits (or times out and is killed).
    pub async fn finish(self, timeout: Option<Duration>, sink: &mut Sink) -> Outcome {
        let Running {
            pid,
            mut exit,
            mut stdout,
            mut stderr,
        } = self;
        let far_future = TokioInstant::now() + Duration::from_secs(86400 * 365);
        let mut deadline = timeout.map_or(far_future, |t| TokioInstant::now() + t);
        let mut timed_out = false;
        let mut exit_code: Option<i32> = None;
        let (mut out_open, mut err_open) = (true, true);
        let mut out_buf = vec![0u8; 64 * 1024];
        let mut err_buf = vec![0u8; 64 * 1024];

        while out_open || err_open || exit_code.is_none() {
            tokio::select! {
                // The deadline first, so a flooding command cannot starve its timeout; stdout
                // before stderr when both are ready (closer to the order they were written).
                biased;
                () = sleep_until(deadline) => {
                    if exit_code.is_some() {
                        break;
                    }
                    if timed_out {
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                        deadline = far_future;
                    } else {
                        timed_out = true;
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                        deadline = TokioInstant::now() + KILL_GRACE;
                    }
                }
                r = stdout.read(&mut out_buf), if out_open => match r {
                    Ok(n) if n > 0 => sink.output(StreamKind::Stdout, &out_buf[..n]).await,
                    _ => out_open = false,
                },
                r = stderr.read(&mut err_buf), if err_open => match r {
                    Ok(n) if n > 0 => sink.output(StreamKind::Stderr, &err_buf[..n]).await,
                    _ => err_open = false,
                },
                code = &mut exit, if exit_code.is_none() => {
                    exit_code = Some(code.unwrap_or(-1));
                    // Background jobs may hold the pipes open; do not wait for them.
                    deadline = deadline.min(TokioInstant::now() + DRAIN_AFTER_EXIT);
                }
            }
        }
        sink.finish_output().await;
        let exit_code = if timed_out {
            TIMEOUT_EXIT_CODE
        } else {
            exit_code.unwrap_or(-1)
        };
        Outcome {
            exit_code,
            timed_out,
        }
    }
}
