//! Terminals: one shell on a pseudo-terminal per session id, created on first attach. Output
//! goes into a replay ring and is broadcast to every attached client; the terminal is
//! forgotten when its shell exits, so the next attach starts a fresh one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;

use crate::config::AgentConfig;
use crate::exec::child_env;
// Output still collected after the shell exited (a last prompt, a background job's line).
use crate::exec::kill::DRAIN_AFTER_EXIT;
use crate::exec::session::Sessions;
use crate::reaper::Reaper;

/// Output kept for replay to a newly attached client.
pub const REPLAY_BYTES: usize = 256 * 1024;
/// Terminal size when the client does not give one.
pub const DEFAULT_COLS: u16 = 80;
pub const DEFAULT_ROWS: u16 = 24;
/// Chunks a slow client may fall behind before it skips output.
const BROADCAST_CHUNKS: usize = 1024;

/// Why a terminal could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("invalid shell: {0}")]
    InvalidShell(String),
    #[error("could not open a pseudo-terminal")]
    Open(#[source] std::io::Error),
    #[error("could not start {shell}")]
    Spawn {
        shell: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the clients of a terminal receive.
#[derive(Debug, Clone)]
pub enum PtyEvent {
    Output(Bytes),
    /// The shell exited with this shell-style code (128 + n for signal n); `None` when the
    /// status could not be collected.
    Exit(Option<i32>),
}

/// How to create a terminal that does not exist yet.
#[derive(Debug, Clone, Default)]
pub struct PtyOptions {
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    /// Program to run instead of `bash`.
    pub shell: Option<String>,
}

/// A shell on a pseudo-terminal.
#[derive(Debug)]
pub struct Terminal {
    pid: i32,
    master: AsyncFd<OwnedFd>,
    state: Mutex<State>,
    events: broadcast::Sender<PtyEvent>,
}

#[derive(Debug, Default)]
struct State {
    ring: VecDeque<u8>,
    /// Set once the shell exited (and the exit event was broadcast).
    exit: Option<Option<i32>>,
}

/// A client's view of a terminal at the moment it attached: no output is lost or repeated
/// between `replay` and `events`.
#[derive(Debug)]
pub struct Attachment {
    pub replay: Vec<u8>,
    pub events: broadcast::Receiver<PtyEvent>,
    /// `Some` if the shell had already exited.
    pub exited: Option<Option<i32>>,
}

impl Terminal {
    /// Pid (and session / process-group id) of the shell.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the shell runs a command in the foreground: the terminal's foreground process
    /// group is another than the shell's (job control gives each job a group of its own).
    pub fn runs_command(&self) -> bool {
        nix::unistd::tcgetpgrp(self.master.get_ref()).is_ok_and(|group| group.as_raw() != self.pid)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches a client.
    pub fn attach(&self) -> Attachment {
        let state = self.state();
        Attachment {
            replay: state.ring.iter().copied().collect(),
            events: self.events.subscribe(),
            exited: state.exit,
        }
    }

    /// Types `bytes` into the terminal.
    pub async fn write(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the window size (the shell's foreground job gets SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        rustix::termios::tcsetwinsize(self.master.get_ref(), winsize(cols, rows))
            .map_err(std::io::Error::from)
    }

    /// Appends output to the ring and broadcasts it, under the state lock so an attach sees
    /// each chunk exactly once (in its replay or as an event).
    fn publish(&self, chunk: &[u8]) {
        let mut state = self.state();
        state.ring.extend(chunk);
        let excess = state.ring.len().saturating_sub(REPLAY_BYTES);
        state.ring.drain(..excess);
        let _ = self
            .events
            .send(PtyEvent::Output(Bytes::copy_from_slice(chunk)));
    }

    fn finish(&self, code: Option<i32>) {
        let mut state = self.state();
        state.exit = Some(code);
        let _ = self.events.send(PtyEvent::Exit(code));
    }

    /// One read from the master: `Ok(0)` when the terminal is closed (EIO once every slave
    /// descriptor is gone).
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(Into::into)) {
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn winsize(cols: u16, rows: u16) -> rustix::termios::Winsize {
    rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// The terminals of the agent, by session id.
#[derive(Debug)]
pub struct Terminals {
    config: Arc<AgentConfig>,
    reaper: Arc<Reaper>,
    sessions: Arc<Sessions>,
    map: Mutex<HashMap<String, Arc<Terminal>>>,
}

impl Terminals {
    pub fn new(config: Arc<AgentConfig>, reaper: Arc<Reaper>, sessions: Arc<Sessions>) -> Self {
        Terminals {
            config,
            reaper,
            sessions,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Terminal>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The terminal of session `id`, started with `options` if there is none. Must be called
    /// on the agent's runtime (the terminal's reader task is spawned there).
    pub fn open(
        self: &Arc<Self>,
        id: &str,
        options: &PtyOptions,
    ) -> Result<Arc<Terminal>, PtyError> {
        let mut map = self.map();
        if let Some(terminal) = map.get(id) {
            return Ok(terminal.clone());
        }
        let (terminal, exit) = self.spawn(id, options)?;
        tracing::debug!(session = id, pid = terminal.pid, "terminal started");
        map.insert(id.to_owned(), terminal.clone());
        drop(map);
        tokio::spawn(pump(self.clone(), id.to_owned(), terminal.clone(), exit));
        Ok(terminal)
    }

    /// Kills the terminal of session `id` (its shell's whole session). False if there is none.
    pub fn kill(&self, id: &str) -> bool {
        let terminal = self.map().get(id).cloned();
        terminal.is_some_and(|t| killpg(Pid::from_raw(t.pid), Signal::SIGKILL).is_ok())
    }

    /// Process-group ids of the terminals' shells.
    pub fn pids(&self) -> Vec<i32> {
        self.map().values().map(|t| t.pid).collect()
    }

    /// How many terminals run a command in the foreground.
    pub fn busy(&self) -> usize {
        self.map().values().filter(|t| t.runs_command()).count()
    }

    /// Session ids that have a terminal, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.map().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Starts the shell in the session's cwd and environment if the session exists, else in
    /// the workspace with the agent's environment.
    fn spawn(
        &self,
        id: &str,
        options: &PtyOptions,
    ) -> Result<(Arc<Terminal>, tokio::sync::oneshot::Receiver<i32>), PtyError> {
        let shell = match options.shell.as_deref() {
            None | Some("") => self.config.shell.to_string_lossy().into_owned(),
            Some(s) if s.contains('\0') => {
                return Err(PtyError::InvalidShell("contains a NUL byte".into()));
            }
            Some(s) => s.to_owned(),
        };
        let (mut cwd, mut env) = self.context(Some(id));
        if !cwd.is_dir() {
            cwd = PathBuf::from("/");
        }
        env.insert("TERM".into(), "xterm-256color".into());
        let size = winsize(
            options.cols.filter(|c| *c > 0).unwrap_or(DEFAULT_COLS),
            options.rows.filter(|r| *r > 0).unwrap_or(DEFAULT_ROWS),
        );
        let nix_size = nix::pty::Winsize {
            ws_row: size.ws_row,
            ws_col: size.ws_col,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&nix_size, None).map_err(|e| PtyError::Open(e.into()))?;
        // glibc's openpty does not set close-on-exec; the shell must not hold the master.
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .map_err(|e| PtyError::Open(e.into()))?;
        }
        let stdio = |fd: &OwnedFd| -> Result<Stdio, PtyError> {
            Ok(Stdio::from(fd.try_clone().map_err(PtyError::Open)?))
        };
        let mut cmd = Command::new(&shell);
        cmd.env_clear()
            .envs(&env)
            .current_dir(&cwd)
            .stdin(stdio(&pty.slave)?)
            .stdout(stdio(&pty.slave)?)
            .stderr(stdio(&pty.slave)?);
        sandpit_isolation::process::controlling_terminal(&mut cmd);
        let spawned_at = Instant::now();
        let child = cmd.spawn().map_err(|source| PtyError::Spawn {
            shell: shell.clone(),
            source,
        })?;
        let pid = child.id() as i32;
        let exit = self.reaper.register(pid, spawned_at);
        drop(cmd);
        drop(pty.slave);
        fcntl(&pty.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| PtyError::Open(e.into()))?;
        // `AsyncFd::new` is deprecated for fds the wrapper does not own; this one owns the
        // master exclusively, which is the sound case (and needs no unsafe `register`).
        #[allow(deprecated)]
        let master = AsyncFd::new(pty.master).map_err(PtyError::Open)?;
        let (events, _) = broadcast::channel(BROADCAST_CHUNKS);
        let terminal = Arc::new(Terminal {
            pid,
            master,
            state: Mutex::new(State::default()),
            events,
        });
        Ok((terminal, exit))
    }

    /// The session shell's cwd and (start-up) environment, else the workspace and the
    /// agent's environment.
    fn context(&self, session: Option<&str>) -> (PathBuf, BTreeMap<String, String>) {
        let default_env = || child_env(&self.config, None);
        match session.and_then(|id| self.sessions.get(id)) {
            Some(s) => {
                let env = std::fs::read(format!("/proc/{}/environ", s.pid))
                    .ok()
                    .map(|raw| parse_environ(&raw))
                    .filter(|env| !env.is_empty())
                    .unwrap_or_else(default_env);
                (PathBuf::from(s.cwd()), env)
            }
            None => (self.config.workspace.clone(), default_env()),
        }
    }
}

/// `KEY=value\0...` as in `/proc/<pid>/environ`.
fn parse_environ(raw: &[u8]) -> BTreeMap<String, String> {
    raw.split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (k, v) = entry.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Reads the terminal until its shell exits, then tells the clients and forgets it.
async fn pump(
    terminals: Arc<Terminals>,
    id: String,
    terminal: Arc<Terminal>,
    mut exit: tokio::sync::oneshot::Receiver<i32>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut open = true;
    let mut code: Option<Option<i32>> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let mut deadline = far;
    loop {
        tokio::select! {
            r = terminal.read(&mut buf), if open => match r {
                Ok(n) if n > 0 => terminal.publish(&buf[..n]),
                _ => {
                    open = false;
                    if code.is_some() {
                        break;
                    }
                }
            },
            c = &mut exit, if code.is_none() => {
                code = Some(c.ok());
                if !open {
                    break;
                }
                deadline = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
            }
            () = tokio::time::sleep_until(deadline), if code.is_some() => break,
        }
    }
    {
        let mut map = terminals.map();
        if map.get(&id).is_some_and(|t| Arc::ptr_eq(t, &terminal)) {
            map.remove(&id);
        }
    }
    let code = code.flatten();
    tracing::debug!(session = %id, ?code, "terminal exited");
    terminal.finish(code);
    // Whatever the shell left running on the terminal loses it now.
    let _ = killpg(Pid::from_raw(terminal.pid), Signal::SIGHUP);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_is_parsed() {
        let env = parse_environ(b"A=1\0B=x=y\0\0=skip\0NOEQ\0");
        assert_eq!(env.len(), 2);
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
    }
}
