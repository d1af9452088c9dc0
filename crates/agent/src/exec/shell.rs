//! One persistent `bash` per session, driven through pipes.
//!
//! The agent writes a small script per command to bash's stdin. The script keeps the command
//! text in a single-quoted variable, applies the per-command env and cwd, runs the command with
//! `eval` in the shell itself (so `cd`, `export`, functions and aliases persist, and a syntax
//! error only fails that `eval`), restores env and cwd, then prints a random marker on stdout and
//! on stderr and `"<exit code> <$PWD>\0"` on fd 3, a pipe that only the agent reads. Output before
//! the markers is the command's output, byte for byte.
//!
//! Stopping a command without losing the session (timeout, client gone): the command runs in
//! the shell itself, so the shell cannot simply be killed. The agent sends the shell SIGUSR2,
//! whose trap (see [`PRELUDE`]) turns on a DEBUG trap that skips every further command of the
//! `eval` (and returns from the user's functions), and signals the processes the command
//! started (SIGTERM, then SIGKILL after the grace). The shell then reaches the markers with its
//! state (cwd, variables) intact. A command that defeats this (it traps SIGUSR2, or spins in a
//! loop of skipped builtins) costs the session: after one more grace the shell's whole process
//! group is killed.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::fcntl::OFlag;
use rand::Rng;
use sandpit_protocol::container::EnvMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::kill::{ClientGone, Deadline, StopReason};
use super::output::MarkerScanner;
use super::stdin::Input;
use super::tree;
use super::{Sink, StreamKind, quote, reader};
use crate::reaper::Reaper;

/// Size of one read from an output pipe.
const READ_CHUNK: usize = 64 * 1024;

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The shell exited (the user ran `exit`, or it was killed).
    #[error("shell exited with code {0}")]
    Exited(i32),
    #[error("could not start the shell: {0}")]
    Spawn(#[source] std::io::Error),
    /// The command could not be stopped on its own, so its shell was killed.
    #[error("the command did not stop; its session shell was killed")]
    Stopped(StopReason),
    #[error("could not set up the command's stdin: {0}")]
    Stdin(#[source] std::io::Error),
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub exit_code: i32,
    /// The shell's `$PWD` after the command.
    pub cwd: String,
    /// Set when the command was stopped (its deadline passed or its client went away).
    pub stopped: Option<StopReason>,
}

/// What to run: the command text and its scoped env and cwd.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec<'a> {
    pub command: &'a str,
    pub env: Option<&'a EnvMap>,
    pub cwd: Option<&'a str>,
    /// A FIFO the command reads as stdin (else `/dev/null`).
    pub stdin: Option<&'a Path>,
}

/// The agent's ends of a session shell's pipes. Owned by the session's command lock.
#[derive(Debug)]
pub struct ShellIo {
    /// Pid (and process-group id) of the shell.
    pid: i32,
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    control: pipe::Receiver,
    exit: Option<oneshot::Receiver<i32>>,
    /// Bytes that arrived after a marker (output of background jobs), shown with the next
    /// command.
    stdout_rest: Vec<u8>,
    stderr_rest: Vec<u8>,
    control_rest: Vec<u8>,
    stdout_eof: bool,
    stderr_eof: bool,
    /// The first command also carries [`PRELUDE`].
    fresh: bool,
}

/// Starts `shell --noprofile --norc` in its own process group. Returns its pid and pipes.
pub fn spawn(
    shell: &Path,
    env: &BTreeMap<String, String>,
    cwd: &Path,
    reaper: &Reaper,
) -> Result<(i32, ShellIo), ShellError> {
    let (control_r, control_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| ShellError::Spawn(std::io::Error::from(e)))?;
    let mut cmd = Command::new(shell);
    cmd.args(["--noprofile", "--norc"])
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // fd 3 of the shell is the control pipe (the isolation crate holds the pre-exec dup2).
    sandpit_isolation::process::pass_fd(&mut cmd, control_w, 3);
    let spawned_at = Instant::now();
    let mut child = cmd.spawn().map_err(ShellError::Spawn)?;
    // Registering right after the spawn, without an await in between, so the reaper cannot
    // see the exit first; `spawned_at` covers the case anyway.
    let pid = child.id() as i32;
    let exit = reaper.register(pid, spawned_at);
    drop(cmd); // closes our copy of the control pipe's write end
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ShellError::Spawn(std::io::Error::other("missing pipe")));
    };
    let io = (|| {
        Ok::<_, std::io::Error>(ShellIo {
            pid,
            stdin: pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?,
            stdout: reader(stdout)?,
            stderr: reader(stderr)?,
            control: reader(control_r)?,
            exit: Some(exit),
            stdout_rest: Vec::new(),
            stderr_rest: Vec::new(),
            control_rest: Vec::new(),
            stdout_eof: false,
            stderr_eof: false,
            fresh: true,
        })
    })()
    .map_err(ShellError::Spawn)?;
    Ok((pid, io))
}

/// A fresh random marker, split in two halves that the script prints separately, so the marker
/// never appears literally in the script (`set -x` / `set -v` echo it to stderr).
fn new_marker() -> (String, String) {
    let mut rng = rand::rng();
    let hex: String = (0..32)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect();
    (
        format!("\u{1}SANDPIT{}", &hex[..16]),
        format!("{}\u{1}", &hex[16..]),
    )
}

/// The script for one command and the marker that ends its output.
pub fn script(spec: &CommandSpec<'_>) -> (String, Vec<u8>) {
    let (left, right) = new_marker();
    let mut s = String::with_capacity(spec.command.len() + 512);
    s.push_str(&format!("__sp_cmd={}\n", quote(spec.command)));
    let env: Vec<(&String, &Option<String>)> = spec.env.into_iter().flatten().collect();
    for (i, (key, value)) in env.iter().enumerate() {
        // Remember value and export flag, then apply.
        s.push_str(&format!(
            "if [[ -v {key} ]]; then __sp_s{i}=1; __sp_v{i}=\"${key}\"; [[ ${{{key}@a}} == *x* ]] && __sp_x{i}=1 || __sp_x{i}=0; else __sp_s{i}=0; fi\n"
        ));
        match value {
            Some(v) => s.push_str(&format!("builtin export {key}={}\n", quote(v))),
            None => s.push_str(&format!("builtin unset {key}\n")),
        }
    }
    // The command sees none of the agent's descriptors (fd 3, the saved stdout/stderr).
    // `__sp_busy` marks the eval as stoppable (see PRELUDE); `__sp_busy=` is the one command
    // the stop trap lets through, so it clears the flag and keeps the exit code.
    let stdin = spec
        .stdin
        .map_or_else(|| "/dev/null".to_owned(), |p| quote(&p.to_string_lossy()));
    let run = format!(
        "__sp_busy=1\nbuiltin eval \"$__sp_cmd\" <{stdin} 3>&- {{__sp_o}}>&- {{__sp_e}}>&-\n__sp_busy= __sp_rc=$?\n[[ -n ${{__sp_stopped-}} ]] && {{ builtin trap - DEBUG; builtin shopt -u extdebug; __sp_stopped=; }}\n"
    );
    match spec.cwd {
        Some(cwd) => {
            let q = quote(cwd);
            s.push_str(&format!(
                "__sp_prev=\"$PWD\"\nif builtin cd -- {q} >/dev/null 2>&1; then\n{run}builtin cd -- \"$__sp_prev\" >/dev/null 2>&1\nelse\nbuiltin printf 'Failed to change directory to %s\\n' {q} >&2\n__sp_rc=1\nfi\n"
            ));
        }
        None => s.push_str(&run),
    }
    for (i, (key, _)) in env.iter().enumerate() {
        s.push_str(&format!(
            "if [[ $__sp_s{i} == 1 ]]; then {key}=\"$__sp_v{i}\"; if [[ $__sp_x{i} == 1 ]]; then builtin export {key}; else builtin export -n {key}; fi; else builtin unset {key}; fi\n"
        ));
    }
    let (l, r) = (quote(&left), quote(&right));
    s.push_str(&format!(
        "builtin printf '%s%s' {l} {r} >&\"$__sp_o\"\nbuiltin printf '%s%s' {l} {r} >&\"$__sp_e\"\nbuiltin printf '%d %s\\0' \"$__sp_rc\" \"$PWD\" >&3\nbuiltin unset __sp_cmd __sp_rc __sp_prev"
    ));
    for i in 0..env.len() {
        s.push_str(&format!(" __sp_s{i} __sp_v{i} __sp_x{i}"));
    }
    s.push('\n');
    (s, format!("{left}{right}").into_bytes())
}

/// Lines run once when a session shell starts.
/// Markers go to copies of the original stdout/stderr, so a command that redirects the
/// shell's own (`exec >/dev/null`) cannot make the agent wait forever.
///
/// The SIGUSR2 trap stops a running command (while `__sp_busy` is set): with `extdebug`, a DEBUG
/// trap that fails skips each further command, one that returns 2 returns from the current
/// function, and `break 1000` leaves every enclosing loop. `__sp_guard` decides (only the
/// epilogue's `__sp_busy=` line passes); `__sp_status` hands its verdict to bash.
pub const PRELUDE: &str = concat!(
    "shopt -s expand_aliases\nexec {__sp_o}>&1 {__sp_e}>&2\n",
    "__sp_guard() { [[ -z ${__sp_busy-} || $BASH_COMMAND == '__sp_busy= __sp_rc=$?' ]] && return 0; (( ${#FUNCNAME[@]} > 1 )) && return 2; return 1; }\n",
    "__sp_status() { return \"$1\"; }\n",
    "builtin trap '[[ -n ${__sp_busy-} ]] && { __sp_stopped=1; builtin shopt -s extdebug; builtin trap \"__sp_guard; __sp_r=\\$?; (( __sp_r )) && builtin break 1000 2>/dev/null; __sp_status \\$__sp_r\" DEBUG; }' USR2\n",
);

/// A session command's stdin: a private FIFO its script redirects from (a running shell
/// cannot be handed a new pipe), removed when dropped.
#[derive(Debug)]
pub struct StdinFifo {
    path: PathBuf,
}

impl StdinFifo {
    /// Creates the FIFO (mode 0600) in the temp directory.
    pub fn create() -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!(".sandpit-stdin-{:016x}", rand::random::<u64>()));
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        Ok(StdinFifo { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Feeds `input` once the command opened the FIFO, then closes it (the command sees EOF).
    /// Opening for writing only after the reader is there matters: a FIFO that had no reader
    /// when its last writer closed loses its data, and the reader would then wait forever.
    async fn feed(&self, input: Input) {
        loop {
            match pipe::OpenOptions::new().open_sender(&self.path) {
                Ok(sender) => return input.feed(sender).await,
                // ENXIO: no reader yet.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                Err(_) => return,
            }
        }
    }
}

impl Drop for StdinFifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How a session command may be stopped: its deadline, its client, and stdin to feed.
#[derive(Debug)]
pub struct RunControl {
    pub deadline: Deadline,
    pub gone: ClientGone,
    pub stdin: Option<(StdinFifo, Input)>,
}

impl ShellIo {
    /// Runs one command script and streams its output into `sink` until its markers and status
    /// arrive, or the shell exits. At the deadline or when the client is gone the command is
    /// stopped (see the module doc).
    pub async fn run(
        &mut self,
        script: &str,
        marker: &[u8],
        sink: &mut Sink,
        control: RunControl,
    ) -> Result<Status, ShellError> {
        let RunControl {
            mut deadline,
            mut gone,
            stdin: input,
        } = control;
        let shell_pid = self.pid;
        let ShellIo {
            pid: _,
            stdin,
            stdout,
            stderr,
            control,
            exit,
            stdout_rest,
            stderr_rest,
            control_rest,
            stdout_eof,
            stderr_eof,
            fresh,
        } = self;
        let Some(exit_rx) = exit.as_mut() else {
            return Err(ShellError::Exited(-1));
        };
        if let Ok(code) = exit_rx.try_recv() {
            *exit = None;
            return Err(ShellError::Exited(code));
        }

        let mut out = MarkerScanner::new(marker);
        let mut err = MarkerScanner::new(marker);
        let mut out_done = *stdout_eof;
        let mut err_done = *stderr_eof;
        // Output of background jobs that arrived between commands goes to this command.
        feed(
            &mut out,
            StreamKind::Stdout,
            &std::mem::take(stdout_rest),
            stdout_rest,
            sink,
        )
        .await;
        feed(
            &mut err,
            StreamKind::Stderr,
            &std::mem::take(stderr_rest),
            stderr_rest,
            sink,
        )
        .await;

        // Processes already running (background jobs of earlier commands) are not this
        // command's to kill when it is stopped.
        let before: Vec<i32> = tree::members(Some(shell_pid), shell_pid);
        let script = if std::mem::take(fresh) {
            format!("{PRELUDE}{script}")
        } else {
            script.to_owned()
        };
        let write = stdin.write_all(script.as_bytes());
        tokio::pin!(write);
        let feed_stdin = async {
            if let Some((fifo, input)) = input {
                fifo.feed(input).await;
            }
        };
        tokio::pin!(feed_stdin);
        let mut fed = false;
        let mut written = false;
        let mut client_gone = false;
        let mut stops = 0u8;
        let mut status: Option<Status> = None;
        let mut out_buf = vec![0u8; READ_CHUNK];
        let mut err_buf = vec![0u8; READ_CHUNK];
        let mut ctl_buf = [0u8; 4096];

        loop {
            out_done |= out.found();
            err_done |= err.found();
            if out_done && err_done && status.is_some() && written {
                break;
            }
            let reason = tokio::select! {
                // Shell exit first; stdout before stderr when both are ready (closer to the order
                // they were written).
                biased;
                code = &mut *exit_rx => {
                    *exit = None;
                    return Err(ended(&deadline, stops, code.unwrap_or(-1)));
                }
                () = deadline.wait(), if status.is_none() => StopReason::Deadline,
                () = gone.wait(), if !client_gone && status.is_none() => {
                    client_gone = true;
                    StopReason::ClientGone
                }
                r = &mut write, if !written => {
                    written = true;
                    if r.is_err() {
                        // EPIPE: the shell is gone; its status follows.
                        let code = exit_rx.await.unwrap_or(-1);
                        *exit = None;
                        return Err(ShellError::Exited(code));
                    }
                    continue;
                }
                () = &mut feed_stdin, if written && !fed => { fed = true; continue; }
                r = stdout.read(&mut out_buf), if !out_done => {
                    match r {
                        Ok(n) if n > 0 => feed(&mut out, StreamKind::Stdout, &out_buf[..n], stdout_rest, sink).await,
                        // EOF: the command closed the shell's stdout (or the shell is gone).
                        _ => {
                            *stdout_eof = true;
                            out_done = true;
                            let held = out.take_pending();
                            sink.output(StreamKind::Stdout, &held).await;
                        }
                    }
                    continue;
                }
                r = stderr.read(&mut err_buf), if !err_done => {
                    match r {
                        Ok(n) if n > 0 => feed(&mut err, StreamKind::Stderr, &err_buf[..n], stderr_rest, sink).await,
                        _ => {
                            *stderr_eof = true;
                            err_done = true;
                            let held = err.take_pending();
                            sink.output(StreamKind::Stderr, &held).await;
                        }
                    }
                    continue;
                }
                r = control.read(&mut ctl_buf), if status.is_none() => {
                    match r {
                        Ok(n) if n > 0 => {
                            control_rest.extend_from_slice(&ctl_buf[..n]);
                            if let Some(end) = control_rest.iter().position(|&b| b == 0) {
                                let record: Vec<u8> = control_rest.drain(..=end).collect();
                                status = Some(parse_status(&record[..end]));
                            }
                        }
                        _ => {
                            let code = exit_rx.await.unwrap_or(-1);
                            *exit = None;
                            return Err(ended(&deadline, stops, code));
                        }
                    }
                    continue;
                }
            };
            stops += 1;
            deadline.advance(reason);
            stop_command(shell_pid, &before, stops);
        }
        sink.finish_output().await;
        let mut status = status.ok_or(ShellError::Exited(-1))?;
        status.stopped = deadline.stopped();
        Ok(status)
    }
}

/// Why the shell is gone: killed by the last step of [`stop_command`], or exited by itself.
fn ended(deadline: &Deadline, stops: u8, code: i32) -> ShellError {
    match deadline.stopped() {
        Some(reason) if stops > 2 => ShellError::Stopped(reason),
        _ => ShellError::Exited(code),
    }
}

/// One step of stopping a session command: 1: SIGUSR2 to the shell (skip the rest of the
/// command) and SIGTERM to the processes it started; 2: the same with SIGKILL; 3: SIGKILL to
/// the shell's whole group (the command would not stop).
fn stop_command(shell_pid: i32, before: &[i32], step: u8) {
    let signal = match step {
        1 => Signal::SIGTERM,
        2 => Signal::SIGKILL,
        _ => {
            let _ = killpg(Pid::from_raw(shell_pid), Signal::SIGKILL);
            return;
        }
    };
    let _ = kill(Pid::from_raw(shell_pid), Signal::SIGUSR2);
    for pid in tree::members(Some(shell_pid), shell_pid) {
        if pid != shell_pid && !before.contains(&pid) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

/// Feeds bytes through a marker scanner into the sink; bytes after the marker are kept in
/// `rest` for the next command.
async fn feed(
    scanner: &mut MarkerScanner,
    kind: StreamKind,
    bytes: &[u8],
    rest: &mut Vec<u8>,
    sink: &mut Sink,
) {
    if bytes.is_empty() {
        return;
    }
    let scan = scanner.feed(bytes);
    sink.output(kind, &scan.output).await;
    if let Some(after) = scan.after_marker {
        rest.extend_from_slice(&after);
    }
}

fn parse_status(record: &[u8]) -> Status {
    let text = String::from_utf8_lossy(record);
    let (code, cwd) = text.split_once(' ').unwrap_or((&text, ""));
    Status {
        exit_code: code.trim().parse().unwrap_or(-1),
        cwd: cwd.to_owned(),
        stopped: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_never_contains_the_marker() {
        let env: EnvMap = [
            ("A".to_string(), Some("it's".to_string())),
            ("B".into(), None),
        ]
        .into();
        let spec = CommandSpec {
            command: "echo hi",
            env: Some(&env),
            cwd: Some("/tmp"),
            stdin: None,
        };
        let (script, marker) = script(&spec);
        let marker = String::from_utf8(marker).unwrap();
        assert!(!script.contains(&marker));
        assert!(script.contains("builtin export A='it'\\''s'"));
        assert!(script.contains("builtin unset B"));
    }

    #[test]
    fn status_record_parses() {
        assert_eq!(
            parse_status(b"3 /tmp/a b"),
            Status {
                exit_code: 3,
                cwd: "/tmp/a b".into(),
                stopped: None,
            }
        );
    }
}
