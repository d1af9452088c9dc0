//! Sessionless commands (`sessionId: "__DISABLE_SESSION__"`) and background processes:
//! `bash -c <cmd>` in its own process group, stdin `/dev/null` or the request's bytes. The run
//! loop ([`Running::finish`]) pumps stdin and output and applies the kill policy of
//! [`super::kill`] to the whole group at the deadline or when the client is gone.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::kill::{ClientGone, Deadline, Phase, StopReason};
use super::stdin::Input;
use super::{Sink, StreamKind, reader};
use crate::reaper::Reaper;

pub use sandpit_protocol::time::TIMEOUT_EXIT_CODE;

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
    pub(crate) stdin: Option<pipe::Sender>,
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
}

/// Starts `shell -c command` in its own process group. With `piped_stdin` the command's stdin
/// is a pipe the caller writes (else `/dev/null`).
pub fn spawn(
    shell: &Path,
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    piped_stdin: bool,
    reaper: &Reaper,
) -> std::io::Result<Running> {
    let mut cmd = Command::new(shell);
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
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
    let stdin = child
        .stdin
        .take()
        .map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)))
        .transpose()?;
    Ok(Running {
        pid,
        exit,
        stdin,
        stdout: reader(stdout)?,
        stderr: reader(stderr)?,
    })
}

impl Running {
    /// The process (and process-group) id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Feeds `input` to the command's stdin (then closes it) and streams the output into
    /// `sink` until the command exits, or is killed at `deadline` or when `gone` fires.
    pub async fn finish(
        self,
        input: Option<Input>,
        mut deadline: Deadline,
        mut gone: ClientGone,
        sink: &mut Sink,
    ) -> Outcome {
        let Running {
            pid,
            mut exit,
            stdin,
            mut stdout,
            mut stderr,
        } = self;
        let mut exit_code: Option<i32> = None;
        let (mut out_open, mut err_open) = (true, true);
        let mut out_buf = vec![0u8; 64 * 1024];
        let mut err_buf = vec![0u8; 64 * 1024];
        let mut client_gone = false;
        let feed = async {
            if let (Some(stdin), Some(input)) = (stdin, input) {
                input.feed(stdin).await;
            }
        };
        tokio::pin!(feed);
        let mut fed = false;

        while out_open || err_open || exit_code.is_none() {
            let reason = tokio::select! {
                // The deadline first, so a flooding command cannot starve its timeout; stdout
                // before stderr when both are ready (closer to the order they were written).
                biased;
                () = deadline.wait() => StopReason::Deadline,
                () = gone.wait(), if !client_gone => {
                    client_gone = true;
                    StopReason::ClientGone
                }
                () = &mut feed, if !fed => { fed = true; continue; }
                r = stdout.read(&mut out_buf), if out_open => {
                    match r {
                        Ok(n) if n > 0 => sink.output(StreamKind::Stdout, &out_buf[..n]).await,
                        _ => out_open = false,
                    }
                    continue;
                }
                r = stderr.read(&mut err_buf), if err_open => {
                    match r {
                        Ok(n) if n > 0 => sink.output(StreamKind::Stderr, &err_buf[..n]).await,
                        _ => err_open = false,
                    }
                    continue;
                }
                code = &mut exit, if exit_code.is_none() => {
                    exit_code = Some(code.unwrap_or(-1));
                    // Background jobs may hold the pipes open; do not wait for them.
                    deadline.drain();
                    continue;
                }
            };
            if exit_code.is_some() {
                break; // drained long enough after the exit
            }
            let signal = match deadline.advance(reason) {
                Phase::Terminating => Signal::SIGTERM,
                Phase::Killed | Phase::Running => Signal::SIGKILL,
            };
            let _ = killpg(Pid::from_raw(pid), signal);
        }
        sink.finish_output().await;
        let timed_out = deadline.timed_out();
        Outcome {
            exit_code: if timed_out {
                TIMEOUT_EXIT_CODE
            } else {
                exit_code.unwrap_or(-1)
            },
            timed_out,
        }
    }
}
