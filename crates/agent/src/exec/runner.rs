//! The one child-process runner, used by sessionless commands, background processes and git:
//!
//! * [`spawn`] starts a program in a process group of its own (so the whole tree can be
//!   signalled), with piped output and optionally piped stdin, registered with the reaper (the
//!   only waiter of children).
//! * [`Child::run`] feeds its stdin, pumps stdout/stderr into an [`OutputSink`], applies the one
//!   kill policy of [`super::kill`] (SIGTERM to the group and its descendants at the deadline or
//!   when the client is gone, SIGKILL after [`KILL_GRACE`](super::kill::KILL_GRACE)), and after
//!   the exit reads the output for [`DRAIN_AFTER_EXIT`] more while leftover background jobs
//!   hold the pipes open.
//! * Dropping a [`Child`] (or the future of [`Child::run`]) before it exited kills its group:
//!   no caller can leave a command running by accident.
//!
//! Session commands run inside a shell that must survive, so they are stopped differently
//! (`shell.rs`), with the same [`Deadline`] policy and constants.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::kill::{ClientGone, DRAIN_AFTER_EXIT, Deadline, Phase, StopReason};
use super::output::{StreamKind, reader};
use super::stdin::Input;
use super::tree;
use crate::reaper::Reaper;

/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 64 * 1024;

/// Where a running child's output goes.
pub trait OutputSink: Send {
    /// Takes a chunk of one stream (never empty).
    fn output(&mut self, kind: StreamKind, bytes: &[u8]) -> impl Future<Output = ()> + Send;
}

/// What becomes of the rest of the child's process group once the child itself exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Left running (a command's `cmd &` jobs are the user's business) unless the command was
    /// being stopped; their output is still read for [`DRAIN_AFTER_EXIT`].
    Keep,
    /// Killed at once (helpers such as an ssh master must not outlive a git run).
    Kill,
}

/// How a run may be stopped, and what it reads.
#[derive(Debug)]
pub struct Control {
    /// The time limit and the kill policy it drives.
    pub deadline: Deadline,
    /// Fires when nobody waits for the result any more.
    pub gone: ClientGone,
    /// Written to the child's stdin (which must be piped), then closed.
    pub input: Option<Input>,
    pub leftovers: Leftovers,
}

impl Control {
    /// A run limited by `limit` only, leaving background jobs alone.
    pub fn limit(limit: Option<Duration>) -> Self {
        Control {
            deadline: Deadline::start(limit),
            gone: ClientGone::never(),
            input: None,
            leftovers: Leftovers::Keep,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code (128 + n for signal n); `None` when it could not be learnt.
    pub exit_code: Option<i32>,
    /// Set when the run was stopped by the kill policy, and why.
    pub stopped: Option<StopReason>,
    /// The limit the run had.
    pub limit: Option<Duration>,
}

impl Outcome {
    /// Stopped because its time ran out.
    pub fn timed_out(&self) -> bool {
        self.stopped == Some(StopReason::Deadline)
    }
}

/// A started child in a process group of its own (its pid is the group id).
#[derive(Debug)]
pub struct Child {
    pid: i32,
    exit: oneshot::Receiver<i32>,
    stdin: Option<pipe::Sender>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    guard: GroupGuard,
}

/// `program` in `cwd` with exactly `env` (nothing inherited from the agent).
pub fn command(program: impl AsRef<OsStr>, cwd: &Path, env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().envs(env).current_dir(cwd);
    cmd
}

/// Starts `cmd` in a process group of its own with piped stdout/stderr; stdin is a pipe (taken
/// with [`Child::take_stdin`] or fed from [`Control::input`]) if `piped_stdin`, else
/// `/dev/null`.
pub fn spawn(mut cmd: Command, piped_stdin: bool, reaper: &Reaper) -> std::io::Result<Child> {
    cmd.stdin(if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let spawned_at = std::time::Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    // From here on a failure must not leave the child running.
    let guard = GroupGuard {
        pgid: pid,
        armed: true,
    };
    let exit = reaper.register(pid, spawned_at);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("missing pipe"));
    };
    let stdin = child
        .stdin
        .take()
        .map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)))
        .transpose()?;
    Ok(Child {
        pid,
        exit,
        stdin,
        stdout: reader(stdout)?,
        stderr: reader(stderr)?,
        guard,
    })
}

impl Child {
    /// The process (and process-group) id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The stdin pipe, for a caller that writes it itself (a background process's
    /// `POST /api/process/{id}/stdin`).
    pub fn take_stdin(&mut self) -> Option<pipe::Sender> {
        self.stdin.take()
    }

    /// Feeds `control.input`, streams the output into `sink` until the child exited and its
    /// pipes closed (or [`DRAIN_AFTER_EXIT`] passed since the exit), and stops the child's tree
    /// with the kill policy at the deadline or when the client is gone.
    pub async fn run(self, control: Control, sink: &mut impl OutputSink) -> Outcome {
        let Child {
            pid,
            mut exit,
            stdin,
            mut stdout,
            mut stderr,
            mut guard,
        } = self;
        let Control {
            mut deadline,
            mut gone,
            input,
            leftovers,
        } = control;
        let feed = async {
            if let (Some(stdin), Some(input)) = (stdin, input) {
                input.feed(stdin).await;
            }
        };
        tokio::pin!(feed);
        let mut fed = false;
        let mut exit_code: Option<Option<i32>> = None;
        let mut drain_until: Option<Instant> = None;
        let (mut out_open, mut err_open) = (true, true);
        let mut out_buf = vec![0u8; READ_CHUNK];
        let mut err_buf = vec![0u8; READ_CHUNK];

        while out_open || err_open || exit_code.is_none() {
            let reason = tokio::select! {
                // The deadline first, so a flooding child cannot starve its timeout; stdout
                // before stderr when both are ready (closer to the order they were written).
                biased;
                () = deadline.wait(), if exit_code.is_none() => StopReason::Deadline,
                () = gone.wait(), if exit_code.is_none() => StopReason::ClientGone,
                () = sleep_until(drain_until) => break,
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
                    exit_code = Some(code.ok());
                    // What a stopped command left behind is stopped with it, at once.
                    if leftovers == Leftovers::Kill || deadline.stopped().is_some() {
                        signal_tree(pid, Signal::SIGKILL);
                    }
                    // Background jobs may hold the pipes open; do not wait for them long.
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    continue;
                }
            };
            let signal = match deadline.advance(reason) {
                Phase::Terminating => Signal::SIGTERM,
                Phase::Killed | Phase::Running => Signal::SIGKILL,
            };
            signal_tree(pid, signal);
        }
        guard.disarm();
        Outcome {
            exit_code: exit_code.flatten(),
            stopped: deadline.stopped(),
            limit: deadline.limit(),
        }
    }
}

/// Sends `signal` to the group `pgid` and to every descendant of its leader (children that
/// moved to a group of their own).
fn signal_tree(pgid: i32, signal: Signal) {
    tree::signal(pgid, &tree::members(Some(pgid), pgid), signal);
}

/// Sleeps until `at`, forever if there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Kills the child's group when dropped before the child exited: a caller whose future is
/// dropped (its client went away) must not leave the command running.
#[derive(Debug)]
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    /// The child exited and was waited for: its group is no longer ours to kill.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_tree(self.pgid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exec::kill::{KILL_GRACE, client_pair};

    /// Output collected per stream.
    #[derive(Debug, Default)]
    struct Collected {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    }

    impl OutputSink for Collected {
        fn output(&mut self, kind: StreamKind, bytes: &[u8]) -> impl Future<Output = ()> + Send {
            match kind {
                StreamKind::Stdout => self.stdout.extend_from_slice(bytes),
                StreamKind::Stderr => self.stderr.extend_from_slice(bytes),
            }
            std::future::ready(())
        }
    }

    /// Stdout that the test reads while the run goes on.
    #[derive(Debug, Default, Clone)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl OutputSink for Shared {
        fn output(&mut self, kind: StreamKind, bytes: &[u8]) -> impl Future<Output = ()> + Send {
            if kind == StreamKind::Stdout {
                self.0.lock().unwrap().extend_from_slice(bytes);
            }
            std::future::ready(())
        }
    }

    /// A reaper of the children these tests start (the runner's only waiter), polled by a
    /// thread of its own; other tests' children are left to them.
    fn reaper() -> Arc<Reaper> {
        static REAPER: std::sync::OnceLock<Arc<Reaper>> = std::sync::OnceLock::new();
        REAPER
            .get_or_init(|| {
                let reaper = Reaper::new();
                let polled = reaper.clone();
                std::thread::spawn(move || {
                    loop {
                        polled.reap_registered();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                });
                reaper
            })
            .clone()
    }

    fn bash(script: &str) -> Command {
        let env: BTreeMap<String, String> =
            [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into();
        let mut cmd = command("/bin/bash", Path::new("/"), &env);
        cmd.arg("-c").arg(script);
        cmd
    }

    fn start(script: &str) -> Child {
        spawn(bash(script), false, &reaper()).unwrap()
    }

    /// Waits (generously) until `pid` no longer runs.
    async fn gone(pid: i32) -> bool {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if !tree::any_alive(&[pid]) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn output_and_exit_code() {
        let mut sink = Collected::default();
        let outcome = start("echo out; echo err >&2; exit 3")
            .run(Control::limit(None), &mut sink)
            .await;
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(outcome.stopped, None);
        assert_eq!(sink.stdout, b"out\n");
        assert_eq!(sink.stderr, b"err\n");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_sleep_past_its_deadline_is_terminated() {
        let started = Instant::now();
        let mut sink = Collected::default();
        let outcome = start("sleep 60")
            .run(Control::limit(Some(Duration::from_millis(200))), &mut sink)
            .await;
        assert!(outcome.timed_out());
        assert_eq!(outcome.exit_code, Some(128 + Signal::SIGTERM as i32));
        assert_eq!(outcome.limit, Some(Duration::from_millis(200)));
        assert!(started.elapsed() < KILL_GRACE, "SIGTERM was enough");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
        let started = Instant::now();
        let mut sink = Collected::default();
        // The trap is set before the first output; 2 s leave bash time to start on a busy host.
        let outcome = start("trap '' TERM; echo armed; while :; do sleep 0.05; done")
            .run(Control::limit(Some(Duration::from_secs(2))), &mut sink)
            .await;
        assert_eq!(sink.stdout, b"armed\n");
        assert!(outcome.timed_out());
        assert_eq!(outcome.exit_code, Some(128 + Signal::SIGKILL as i32));
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(2) + KILL_GRACE, "{took:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_flood_of_output_cannot_starve_the_deadline() {
        let mut sink = Collected::default();
        let outcome = start("yes")
            .run(Control::limit(Some(Duration::from_millis(300))), &mut sink)
            .await;
        assert!(outcome.timed_out());
        assert!(sink.stdout.starts_with(b"y\ny\n"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn timeout_none_waits_for_the_end() {
        let mut sink = Collected::default();
        let outcome = start("sleep 0.5; echo done")
            .run(
                Control::limit(sandpit_protocol::time::TimeoutMs::NONE.limit()),
                &mut sink,
            )
            .await;
        assert_eq!((outcome.exit_code, outcome.stopped), (Some(0), None));
        assert_eq!(sink.stdout, b"done\n");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn output_after_exit_is_drained_briefly_and_jobs_are_kept() {
        let mut sink = Collected::default();
        let started = Instant::now();
        // The job waits (on the CPU) until its parent is gone, then writes and keeps stdout open.
        let script = "(while kill -0 $$ 2>/dev/null; do :; done; echo late; exec sleep 30) & \
                      echo $!; exit 0";
        let outcome = start(script).run(Control::limit(None), &mut sink).await;
        assert_eq!(outcome.exit_code, Some(0));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "waited for the job"
        );
        let text = String::from_utf8_lossy(&sink.stdout).into_owned();
        let job: i32 = text.lines().next().unwrap().parse().unwrap();
        assert!(text.ends_with("late\n"), "{text:?}");
        assert!(
            tree::any_alive(&[job]),
            "Leftovers::Keep left the job running"
        );
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(job), Signal::SIGKILL);
        assert!(gone(job).await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn leftovers_kill_ends_the_group_after_the_exit() {
        let mut sink = Collected::default();
        let control = Control {
            leftovers: Leftovers::Kill,
            ..Control::limit(None)
        };
        let outcome = start("sleep 30 & echo $!").run(control, &mut sink).await;
        assert_eq!(outcome.exit_code, Some(0));
        let job: i32 = String::from_utf8_lossy(&sink.stdout)
            .trim()
            .parse()
            .unwrap();
        assert!(gone(job).await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_gone_client_stops_the_tree_and_input_is_fed() {
        // A descendant in a group of its own is stopped too.
        let child = spawn(
            bash("read line; echo \"got $line\"; setsid sleep 30 & echo $!; wait"),
            true,
            &reaper(),
        )
        .unwrap();
        let (present, gone_rx) = client_pair();
        let control = Control {
            gone: gone_rx,
            input: Some(Input::Bytes(b"hello\n".to_vec())),
            ..Control::limit(None)
        };
        let stdout = Shared::default();
        let mut sink = stdout.clone();
        let run = tokio::spawn(async move { child.run(control, &mut sink).await });
        let until = Instant::now() + Duration::from_secs(30);
        while stdout.text().lines().count() < 2 {
            assert!(Instant::now() < until, "no output: {:?}", stdout.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(present);
        let outcome = run.await.unwrap();
        assert_eq!(outcome.stopped, Some(StopReason::ClientGone));
        assert!(!outcome.timed_out());
        let text = stdout.text();
        assert!(text.starts_with("got hello\n"), "{text:?}");
        let setsid: i32 = text.lines().nth(1).unwrap().parse().unwrap();
        assert!(
            gone(setsid).await,
            "the descendant in another group was stopped"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropping_the_run_kills_the_group() {
        let child = start("sleep 30");
        let pid = child.pid();
        let mut sink = Collected::default();
        let run = child.run(Control::limit(None), &mut sink);
        let _ = tokio::time::timeout(Duration::from_millis(100), run).await;
        assert!(gone(pid).await);
    }
}
