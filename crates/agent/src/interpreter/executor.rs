//! One executor process (a Python or Node helper) and its protocol: requests go to its fd 3
//! and events come back on its fd 4, one JSON object per line; its stdout and stderr pipes
//! (subprocess output, raw fd writes) are merged into the same event stream.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use sandpit_protocol::throttle::Throttle;

use crate::reaper::Reaper;

/// How long an executor may take to report `ready`.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long fd 4 is still read after the process exited (its last events may be in flight).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Events buffered between the pipes and the consumer; a full channel stops the readers, so a
/// flooding program is slowed down by a slow client instead of filling memory.
const EVENT_CAPACITY: usize = 64;

/// What to start: program, arguments, environment, working directory.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
}

/// An event of an executor, in the order it was read.
#[derive(Debug)]
pub enum Event {
    /// One line of fd 4.
    Wire(Wire),
    /// Bytes the process wrote to its stdout/stderr pipe.
    Stdout(String),
    Stderr(String),
    /// The sync marker of run `n` came through the stdout or the stderr pipe: everything the
    /// run's subprocesses wrote to that pipe before it was already delivered.
    Sync(u64),
    /// The process is gone (exit code, shell style).
    Exited(i32),
}

/// What an executor writes to its original stdout/stderr pipes at the end of a run
/// (`\0sandpit-sync:<run>\0`), so output of subprocesses is not overtaken by `done`.
const SYNC_PREFIX: &[u8] = b"\0sandpit-sync:";

/// The executor → agent messages of fd 4.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Wire {
    Ready,
    Unavailable {
        #[serde(default)]
        message: String,
    },
    Stdout {
        #[serde(default)]
        text: String,
    },
    Stderr {
        #[serde(default)]
        text: String,
    },
    Result {
        #[serde(default)]
        data: Map<String, Value>,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    Error {
        #[serde(default)]
        ename: String,
        #[serde(default)]
        evalue: String,
        #[serde(default)]
        traceback: Vec<String>,
    },
    Done {
        #[serde(default)]
        execution_count: u64,
    },
    /// Anything else is ignored (forward compatibility).
    #[serde(other)]
    Unknown,
}

/// Why an executor could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program (or a module it needs) is missing.
    #[error("{0}")]
    NotAvailable(String),
    #[error("interpreter failed to start: {0}")]
    Failed(String),
}

/// A started executor. Dropping it kills its process group.
#[derive(Debug)]
pub struct Executor {
    pid: i32,
    requests: pipe::Sender,
    events: mpsc::Receiver<Event>,
    exited: bool,
}

impl Executor {
    /// Starts the process and waits for its `ready`.
    pub async fn spawn(spec: &Spec, reaper: &Reaper) -> Result<Executor, SpawnError> {
        let mut executor = Self::start(spec, reaper).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SpawnError::NotAvailable(format!("{} is not installed", spec.program))
            } else {
                SpawnError::Failed(format!("{}: {e}", spec.program))
            }
        })?;
        let mut output = String::new();
        let wait = async {
            loop {
                match executor.events.recv().await {
                    Some(Event::Wire(Wire::Ready)) => return Ok(()),
                    Some(Event::Wire(Wire::Unavailable { message })) => {
                        return Err(SpawnError::NotAvailable(message));
                    }
                    Some(Event::Stdout(t) | Event::Stderr(t)) => output.push_str(&t),
                    Some(Event::Exited(code)) => {
                        return Err(SpawnError::Failed(format!(
                            "{} exited with code {code} before it was ready: {}",
                            spec.program,
                            output.trim()
                        )));
                    }
                    None => return Err(SpawnError::Failed("event stream ended".into())),
                    Some(_) => {}
                }
            }
        };
        match tokio::time::timeout(SPAWN_TIMEOUT, wait).await {
            Ok(Ok(())) => Ok(executor),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SpawnError::Failed(format!(
                "{} was not ready after {}s",
                spec.program,
                SPAWN_TIMEOUT.as_secs()
            ))),
        }
    }

    fn start(spec: &Spec, reaper: &Reaper) -> std::io::Result<Executor> {
        let (req_read, req_write) = cloexec_pipe()?;
        let (ev_read, ev_write) = cloexec_pipe()?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir(existing_dir(&spec.cwd))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        sandpit_isolation::process::pass_fd(&mut cmd, req_read, 3);
        sandpit_isolation::process::pass_fd(&mut cmd, ev_write, 4);
        let spawned_at = Instant::now();
        let mut child = cmd.spawn()?;
        // The child's ends live in `cmd`'s hooks: close them here, or EOF never comes.
        drop(cmd);
        let pid = child.id() as i32;
        let exit = reaper.register(pid, spawned_at);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(std::io::Error::other("missing pipe"));
        };
        let (tx, events) = mpsc::channel(EVENT_CAPACITY);
        let wire = tokio::spawn(read_wire(
            pipe::Receiver::from_owned_fd(ev_read)?,
            tx.clone(),
        ));
        tokio::spawn(read_output(crate::exec::reader(stdout)?, tx.clone(), false));
        tokio::spawn(read_output(crate::exec::reader(stderr)?, tx.clone(), true));
        tokio::spawn(async move {
            let code = exit.await.unwrap_or(-1);
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, wire).await;
            let _ = tx.send(Event::Exited(code)).await;
        });
        Ok(Executor {
            pid,
            requests: pipe::Sender::from_owned_fd(req_write)?,
            events,
            exited: false,
        })
    }

    /// Sends one request line.
    pub async fn send(&mut self, request: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.requests.write_all(&line).await
    }

    /// The next event; `None` once the process exited and everything was read.
    pub async fn next(&mut self) -> Option<Event> {
        if self.exited {
            return None;
        }
        let event = self.events.recv().await;
        if matches!(event, Some(Event::Exited(_)) | None) {
            self.exited = true;
        }
        event
    }

    /// Drops events left over from earlier output (a background thread printing between
    /// runs). Returns false if the process is gone.
    pub fn discard_pending(&mut self) -> bool {
        while let Ok(event) = self.events.try_recv() {
            if matches!(event, Event::Exited(_)) {
                self.exited = true;
            }
        }
        !self.exited
    }

    /// SIGINT to the process group (Python: KeyboardInterrupt).
    pub fn interrupt(&self) {
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGINT);
    }

    /// SIGKILL to the process group.
    pub fn kill(&self) {
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if !self.exited {
            self.kill();
        }
    }
}

/// A pipe whose ends are close-on-exec and numbered above 4, so placing them at fds 3 and 4
/// in the child cannot overwrite one with the other.
fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok((high_fd(&r)?, high_fd(&w)?))
}

fn high_fd(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 10)?)
}

/// The working directory to start in: `cwd` if it exists (contexts change it later), else `/`.
fn existing_dir(cwd: &str) -> &str {
    if Path::new(cwd).is_dir() { cwd } else { "/" }
}

/// Longest fd 4 line accepted (a result with a large image stays well below); a longer one is
/// skipped up to its newline without being buffered.
const MAX_EVENT_LINE: usize = 32 * 1024 * 1024;

/// Lines of fd 4 that are not events, for the whole agent. The code a context runs shares its
/// process with the executor, so it can write anything to fd 4: such lines are dropped, and only
/// their count and length ever reach the log, at a bounded rate.
static BAD_EVENTS: std::sync::LazyLock<Throttle> = std::sync::LazyLock::new(Throttle::default);

async fn read_wire(receiver: pipe::Receiver, tx: mpsc::Sender<Event>) {
    let mut reader = BufReader::with_capacity(64 * 1024, receiver);
    let mut line = Vec::new();
    loop {
        let wire = match read_line_capped(&mut reader, &mut line, MAX_EVENT_LINE).await {
            Ok(Line::Eof) | Err(_) => return,
            Ok(Line::TooLong(len)) => {
                bad_event(len);
                continue;
            }
            Ok(Line::Complete) => match serde_json::from_slice::<Wire>(&line) {
                Ok(wire) => wire,
                Err(_) => {
                    bad_event(line.len());
                    continue;
                }
            },
        };
        if tx.send(Event::Wire(wire)).await.is_err() {
            return;
        }
    }
}

fn bad_event(len: usize) {
    let log = BAD_EVENTS.allow(|suppressed| {
        tracing::warn!(suppressed, "similar bad executor events suppressed");
    });
    if log {
        tracing::warn!(bytes = len, "bad executor event dropped");
    }
}

/// How a capped line read ended.
#[derive(Debug, PartialEq)]
enum Line {
    /// `buf` holds one line (with its newline, unless the stream ended first).
    Complete,
    /// The line was longer than the cap: skipped (this many bytes), `buf` is empty.
    TooLong(usize),
    Eof,
}

/// Reads one line into `buf` (cleared first), buffering at most `max` bytes of it.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut skipped = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (skipped, buf.is_empty()) {
                (0, true) => Line::Eof,
                (0, false) => Line::Complete,
                (n, _) => Line::TooLong(n),
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let used = chunk.len();
        if skipped == 0 && buf.len() + used <= max {
            buf.extend_from_slice(chunk);
        } else {
            skipped += std::mem::take(buf).len() + used;
        }
        reader.consume(used);
        if done {
            return Ok(if skipped == 0 {
                Line::Complete
            } else {
                Line::TooLong(skipped)
            });
        }
    }
}

async fn read_output(mut receiver: pipe::Receiver, tx: mpsc::Sender<Event>, stderr: bool) {
    let wrap = |text: String| {
        if stderr {
            Event::Stderr(text)
        } else {
            Event::Stdout(text)
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match receiver.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        for piece in split_syncs(&mut carry) {
            let event = match piece {
                Piece::Text(text) => wrap(text),
                Piece::Sync(run) => Event::Sync(run),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
    if !carry.is_empty() {
        let _ = tx
            .send(wrap(String::from_utf8_lossy(&carry).into_owned()))
            .await;
    }
}

/// Output of a pipe: text, or a sync marker.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Sync(u64),
}

/// Splits what was read so far into text and sync markers; an incomplete marker or UTF-8
/// sequence at the end stays in `bytes` for the next read.
fn split_syncs(bytes: &mut Vec<u8>) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let text_end;
    let mut consumed = 0;
    loop {
        let rest = &bytes[consumed..];
        let Some(at) = find(rest, SYNC_PREFIX) else {
            // A marker may start in the last bytes: keep a possible prefix of it.
            let keep = (1..SYNC_PREFIX.len().min(rest.len() + 1))
                .rev()
                .find(|k| rest.ends_with(&SYNC_PREFIX[..*k]))
                .unwrap_or(0);
            text_end = bytes.len() - keep;
            break;
        };
        let digits_from = consumed + at + SYNC_PREFIX.len();
        let digits = bytes[digits_from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        match bytes.get(digits_from + digits) {
            None => {
                // Incomplete marker: keep it.
                text_end = consumed + at;
                break;
            }
            Some(0) if digits > 0 => {
                let run = std::str::from_utf8(&bytes[digits_from..digits_from + digits])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                let mut text = bytes[consumed..consumed + at].to_vec();
                if !text.is_empty() {
                    pieces.push(Piece::Text(take_utf8_all(&mut text)));
                }
                pieces.push(Piece::Sync(run));
                consumed = digits_from + digits + 1;
            }
            Some(_) => {
                // Not a marker after all: skip its first byte as text.
                let mut text = bytes[consumed..consumed + at + 1].to_vec();
                pieces.push(Piece::Text(take_utf8_all(&mut text)));
                consumed += at + 1;
            }
        }
    }
    let mut text = bytes[consumed..text_end].to_vec();
    let tail = bytes.split_off(text_end);
    let mut leftover = Vec::new();
    if !text.is_empty() {
        let t = take_utf8(&mut text);
        leftover = text;
        if !t.is_empty() {
            pieces.push(Piece::Text(t));
        }
    }
    leftover.extend_from_slice(&tail);
    *bytes = leftover;
    merge_text(pieces)
}

/// Adjacent text pieces as one.
fn merge_text(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match (out.last_mut(), piece) {
            (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
            (_, piece) => out.push(piece),
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// All of `bytes` as text (an incomplete trailing sequence becomes U+FFFD too).
fn take_utf8_all(bytes: &mut Vec<u8>) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    bytes.clear();
    text
}

/// Takes the longest prefix of `bytes` that does not end inside a UTF-8 sequence (invalid
/// bytes become U+FFFD); an incomplete trailing sequence stays for the next read.
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let tail = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = tail;
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_reads_is_kept_whole() {
        let mut carry = "aé".as_bytes()[..2].to_vec();
        assert_eq!(take_utf8(&mut carry), "a");
        carry.extend_from_slice(&"é".as_bytes()[1..]);
        assert_eq!(take_utf8(&mut carry), "é");
        assert!(carry.is_empty());
        let mut bad = vec![b'x', 0xff, b'y'];
        assert_eq!(take_utf8(&mut bad), "x\u{fffd}y");
    }

    #[test]
    fn sync_markers_are_split_from_output() {
        let mut bytes = b"a\0sandpit-sync:7\0b\0sandp".to_vec();
        assert_eq!(
            split_syncs(&mut bytes),
            [
                Piece::Text("a".into()),
                Piece::Sync(7),
                Piece::Text("b".into())
            ]
        );
        assert_eq!(bytes, b"\0sandp", "a possible marker start is kept");
        bytes.extend_from_slice(b"it-sync:12\0\0x\0");
        assert_eq!(
            split_syncs(&mut bytes),
            [Piece::Sync(12), Piece::Text("\0x".into())]
        );
        assert_eq!(bytes, b"\0", "a trailing NUL may start a marker");
        bytes.extend_from_slice(b"yz");
        assert_eq!(split_syncs(&mut bytes), [Piece::Text("\0yz".into())]);
        let mut fake = b"\0sandpit-sync:x\0".to_vec();
        assert_eq!(
            split_syncs(&mut fake),
            [Piece::Text("\0sandpit-sync:x".into())]
        );
        assert_eq!(fake, b"\0");
    }

    #[tokio::test]
    async fn long_lines_are_skipped_without_being_buffered() {
        let input: &[u8] = b"short\n0123456789abcdef\nnext\nend";
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            match read_line_capped(&mut reader, &mut buf, 8).await.unwrap() {
                Line::Eof => break,
                Line::Complete => lines.push(String::from_utf8(buf.clone()).unwrap()),
                Line::TooLong(n) => lines.push(format!("<{n}>")),
            }
            assert!(buf.len() <= 8);
        }
        assert_eq!(lines, ["short\n", "<17>", "next\n", "end"]);
    }

    #[test]
    fn wire_events_parse() {
        let w: Wire = serde_json::from_str(r#"{"type":"done","execution_count":3}"#).unwrap();
        assert!(matches!(w, Wire::Done { execution_count: 3 }));
        let w: Wire = serde_json::from_str(r#"{"type":"whatever","x":1}"#).unwrap();
        assert!(matches!(w, Wire::Unknown));
    }
}
